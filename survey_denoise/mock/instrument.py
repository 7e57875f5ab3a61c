"""Survey instruments for the mock: observed wavelength grid, resolution, noise.

An :class:`Instrument` owns everything survey-specific about observing a
mock galaxy, so the generator never asks which survey it is simulating.

SDSS (DR7 spectrographs)
    Pixels of 1e-4 in log10(lambda) (69 km/s) from 3800 to 9200 A,
    resolution R ~ 2000 (sigma_inst ~ 64 km/s).  Noise:
    ``var = (f + sky) / g(lambda) / exposure``: Poisson-like noise of object
    plus sky, with a throughput curve g and sky level read off the real
    SDSS spectra shipped with pPXF (NGC 3073: f ~ 170, sigma ~ 4.1 at
    3900 A and ~ 2.2 at 7200 A; sky ~ 7e-17 erg/s/cm2/A), and an exposure
    factor that varies from plate to plate (log-uniform 0.6-1.6).  A galaxy
    with a fibre continuum of 20e-17 erg/s/cm2/A then has S/N ~ 15 per pixel
    in the r band, as typical SDSS DR7 main-sample spectra.

DESI (:class:`DesiInstrument`)
    3600-9823 A, the range of a DESI coadd.  Sampling: 7786 pixels of
    5.6e-5 in log10(lambda) (38.7 km/s) - as many pixels as a DESI coadd's
    0.8 A linear ones, equal to them at 6200 A, finer blueward (0.46 A at
    3600 A) and coarser redward (1.27 A at 9823 A).  A log grid because the
    generator shifts a log-lambda working spectrum by ln(1 + z); at 38.7
    km/s the line spread function (FWHM 100 km/s) is sampled by 2.6 pixels.
    Resolution: one R = 3000 (sigma_inst = 42 km/s).  DESI's R runs from
    ~2000 at 3600 A to ~5000 at 9800 A (FWHM ~ 1.8 A throughout); at the
    mock's redshifts the catalogued lines fall at 3800-6900 A, where R is
    ~2100-3800, and the gas dispersion (>= 50 km/s) dominates their widths
    anyway.  The stellar continuum keeps MILES' 2.5 A FWHM, a little coarser
    than DESI's.  Noise: the DESI curve of :class:`survey_denoise.noise.DesiNoise`
    (median sigma of real coadds per 0.8 A pixel, which is background -
    sky and read noise - for DESI's faint targets), rebinned to each pixel
    as a variance density, plus the object's own shot noise, with a slope
    measured on the real coadd (:class:`DesiInstrument`).  The shot term
    matters for the bright low-z galaxies of the mock: a continuum of
    ~10e-17 erg/s/cm2/A doubles the variance at 6800 A.  DESI adjusts
    exposure times to reach a fixed effective depth, so the exposure factor
    is 1 for every spectrum.  At the curve's depth (deep coadds, ~100 times
    BGS's); :meth:`DesiInstrument.at_depth` gives BGS's 180 s.  Fibres 1.5
    arcsec across.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from ..grid import Grid
from ..noise import DesiNoise
from ..resample import edges_from_centres, rebin
from ..rng import standard_normal
from ..spectrographs import RESOLUTION, sigma_kms


@dataclass(frozen=True)
class Instrument:
    """How a survey samples, blurs and measures a spectrum.

    Attributes
    ----------
    name : str
    log10_start : float
        log10 of the first pixel centre (Angstrom, vacuum).
    npix : int
        Number of pixels, spaced by ``dlog10`` in log10(lambda).
    dlog10 : float
        Pixel step in log10(lambda).
    resolution : float
        Spectral resolving power R = lambda / FWHM.
    sky : float
        Sky level, 1e-17 erg/s/cm2/A (smooth; no sky lines).
    gain_knots, gain_values : tuple
        Throughput-and-gain curve g(lambda) (flux units per variance unit).
    exposure_range : tuple
        Log-uniform range of the per-spectrum exposure factor.
    fibre_diameter_arcsec, seeing_arcsec : float
        Fibre diameter and typical seeing FWHM (SDSS: 3 and 1.4 arcsec), for
        :func:`~survey_denoise.mock.population.fibre_fraction_at`.
    """

    name: str
    log10_start: float
    npix: int
    dlog10: float = 1e-4
    resolution: float = RESOLUTION["sdss"]
    sky: float = 7.0
    gain_knots: tuple[float, ...] = (3800.0, 3900.0, 4500.0, 5400.0, 6100.0, 7200.0, 8400.0, 9200.0)
    gain_values: tuple[float, ...] = (8.0, 11.0, 16.0, 19.0, 24.0, 27.0, 26.0, 18.0)
    exposure_range: tuple[float, float] = (0.6, 1.6)
    fibre_diameter_arcsec: float = 3.0
    seeing_arcsec: float = 1.4
    extra: dict = field(default_factory=dict)

    @property
    def wavelength(self) -> np.ndarray:
        """Pixel centres, Angstrom (vacuum)."""
        return 10 ** (self.log10_start + self.dlog10 * np.arange(self.npix))

    @property
    def dlnlam(self) -> float:
        return self.dlog10 * np.log(10)

    @property
    def sigma_inst_kms(self) -> float:
        """Instrumental Gaussian sigma, km/s."""
        return sigma_kms(self.resolution)

    def sigma(self, flux: np.ndarray, exposure: np.ndarray,
              wavelength: np.ndarray | None = None) -> np.ndarray:
        """Noise sigma per native pixel for noise-free observed ``flux`` (n, npix).

        Parameters
        ----------
        flux : ndarray (n, npix)
            Observed-frame flux density, 1e-17 erg/s/cm2/A.
        exposure : ndarray (n,)
            Exposure factors.
        wavelength : ndarray, optional
            Observed wavelengths of ``flux`` (default: the native pixels), either
            (npix,) or (n, npix).
        """
        wave = self.wavelength if wavelength is None else wavelength
        gain = np.interp(wave, self.gain_knots, self.gain_values)
        var = (np.maximum(flux, 0.0) + self.sky) / np.atleast_2d(gain) / exposure[:, None]
        return np.sqrt(var)

    def sigma_rest(self, flux: np.ndarray, exposure: np.ndarray, grid: Grid, z: np.ndarray) -> np.ndarray:
        """Noise sigma per rest-frame ``grid`` pixel, 1e-17 erg/s/cm2 per *rest* Angstrom.

        The native pixels a grid pixel spans, averaged: a grid pixel of
        ``grid.dlnlam`` holds ``grid.dlnlam / self.dlnlam`` native pixels, so
        sigma falls by the square root of that.

        Parameters
        ----------
        flux : ndarray (n, npix)
            Noise-free rest-frame flux density on ``grid``, 1e-17 erg/s/cm2/A.
        exposure : ndarray (n,)
            Exposure factors.
        grid : Grid
            The rest-frame grid.
        z : ndarray (n,)
            Redshifts.
        """
        zfac = (1 + z)[:, None]
        sigma = self.sigma(flux / zfac, exposure, grid.wavelength[None, :] * zfac)
        return sigma * zfac * np.sqrt(self.dlnlam / grid.dlnlam)

    def exposure(self, u: np.ndarray) -> np.ndarray:
        """Exposure factors from uniforms ``u`` (n,)."""
        lo, hi = np.log(self.exposure_range)
        return np.exp(lo + (hi - lo) * u)

    def at_depth(self, exptime: float) -> Instrument:
        """This instrument at an effective exposure time of ``exptime`` seconds.

        Raises
        ------
        ValueError
            The instrument's noise has no exposure-time scaling (only DESI's has).
        """
        raise ValueError(f"the {self.name} instrument has no exposure-time scaling; "
                         "only desi takes an exposure time")

    def observe(self, flux: np.ndarray, ids: np.ndarray, seed: int, exposure_u: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Noisy flux and ivar (float32) for noise-free ``flux``; noise keyed by galaxy id."""
        sigma = self.sigma(flux, self.exposure(exposure_u))
        noise = standard_normal(seed, f"mock-noise-{self.name}", ids, flux.shape[1])
        return (flux + sigma * noise).astype(np.float32), (1.0 / sigma**2).astype(np.float32)


SDSS = Instrument(name="sdss", log10_start=3.5798, npix=3841)
"""SDSS DR7-like: 3800-9200 A, 69 km/s pixels, R ~ 2000."""


DESI_PIXEL = 0.8
"""Width (A) of a DESI coadd pixel, the pixel of the DESI noise curve's sigmas."""


@dataclass(frozen=True)
class DesiInstrument(Instrument):
    """DESI-like: background noise from the DESI noise curve plus the object's shot noise.

    Only the noise differs from :class:`Instrument` (sampling and resolution
    are its fields).  Variance is handled as a density, variance x width, so
    that a pixel of any width gets the noise DESI would give it:

        var(pixel) = ( <sigma_DESI^2 * 0.8 A> + s(lambda) * 0.8 A * max(f, 0) )
                     / width / exposure

    where ``<.>`` is the mean over the pixel of the curve
    (:class:`~survey_denoise.noise.DesiNoise`, rebinned exactly with
    :func:`~survey_denoise.resample.rebin`), and ``s`` the shot-noise slope
    (variance per unit flux density in a 0.8 A pixel).

    Attributes
    ----------
    noise : DesiNoise
        The background curve (default: the shipped one).
    shot_knots, shot_values : tuple
        ``s(lambda)``, (1e-17 erg/s/cm2/A) per 0.8 A pixel, linear between
        knots and constant beyond.  Measured on the strong emission lines of
        the z = 0.369 target of ``coadd-4-80613-thru20210324.fits``
        (fastspecfit test data) by fitting ``1/ivar = a + s * flux`` over the
        pixels within 5 A of each line: [OII] at 5103 A: 0.0027; Hbeta and
        [OIII] at 6656-6855 A: 0.0017-0.0022; Halpha at 8985 A: 0.0010.
        Blueward of 5100 A nothing constrains it and the 5100 A value is kept
        (an underestimate: DESI's throughput falls in the blue).
    shot_exptime : float
        COADD_EXPTIME (s) of the target ``shot_values`` were measured on.

    The depth is the noise curve's (``noise.exptime`` None: the deep coadds
    it was built from) or ``noise.exptime`` seconds (:meth:`at_depth`): the
    background variance then scales by ``noise.depth_factor**2`` (DesiNoise's
    own sky-limited scaling) and the shot term by ``shot_exptime / exptime``
    (shot variance per unit flux goes as 1 / exposure time).
    """

    noise: DesiNoise = DesiNoise()
    shot_knots: tuple[float, ...] = (5100.0, 6800.0, 9000.0)
    shot_values: tuple[float, ...] = (0.0027, 0.0019, 0.0010)
    shot_exptime: float = 10973.0

    def at_depth(self, exptime: float) -> DesiInstrument:
        """This instrument at ``exptime`` seconds of effective time (BGS nominal: 180 s)."""
        return replace(self, noise=DesiNoise(curve=self.noise.curve, exptime=float(exptime)))

    @cached_property
    def _curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Curve centres, edges and background variance density (variance x width)."""
        wave = np.asarray(self.noise.table["wavelength"], dtype=np.float64)
        sigma = np.asarray(self.noise.table["sigma_median"], dtype=np.float64) * self.noise.depth_factor
        edges = edges_from_centres(wave)
        return wave, edges, sigma**2 * np.diff(edges)

    def _background_density(self, obs_edges: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        """Mean background variance density over pixels ``obs_edges`` (rows: ``edges * scale``^-1)."""
        wave, edges, dens = self._curve
        n = 1 if scale is None else scale.size
        res = rebin(np.broadcast_to(dens, (n, dens.size)), np.ones((n, dens.size)), None, edges,
                    obs_edges, scale=scale)
        # Pixels beyond the curve: its nearest value, as the SDSS gain curve is extended.
        centres = np.sqrt(obs_edges[:-1] * obs_edges[1:])[None, :] / (1.0 if scale is None else scale[:, None])
        return np.where(res.mask, np.interp(centres, wave, dens), res.flux)

    @cached_property
    def _native_background(self) -> np.ndarray:
        w = self.wavelength
        edges = np.exp(np.concatenate([np.log(w) - self.dlnlam / 2, [np.log(w[-1]) + self.dlnlam / 2]]))
        return self._background_density(edges)[0]

    def _shot_density(self, flux: np.ndarray, wave: np.ndarray) -> np.ndarray:
        slope = np.interp(wave, self.shot_knots, self.shot_values)
        if self.noise.exptime is not None:
            slope = slope * (self.shot_exptime / self.noise.exptime)
        return slope * DESI_PIXEL * np.maximum(flux, 0.0)

    def sigma(self, flux: np.ndarray, exposure: np.ndarray,
              wavelength: np.ndarray | None = None) -> np.ndarray:
        """Noise sigma per native pixel (see the class notes), 1e-17 erg/s/cm2/A."""
        if wavelength is None:
            wave, background = self.wavelength, self._native_background
        else:
            wave = np.asarray(wavelength, dtype=np.float64)
            _, _, dens = self._curve
            background = np.interp(wave, self._curve[0], dens)
        var = (background + self._shot_density(flux, wave)) / (wave * self.dlnlam)
        return np.sqrt(var / exposure[:, None])

    def sigma_rest(self, flux: np.ndarray, exposure: np.ndarray, grid: Grid, z: np.ndarray) -> np.ndarray:
        """Noise sigma per rest-frame ``grid`` pixel (per rest A), the curve averaged exactly."""
        zfac = (1 + z)[:, None]
        obs_wave = grid.wavelength[None, :] * zfac
        background = self._background_density(np.asarray(grid.edges), 1.0 / (1 + z))
        var = (background + self._shot_density(flux / zfac, obs_wave)) / (np.diff(grid.edges)[None, :] * zfac)
        return np.sqrt(var / exposure[:, None]) * zfac


DESI = DesiInstrument(name="desi", log10_start=float(np.log10(3600.0)), npix=7786, dlog10=5.6e-5,
                      resolution=RESOLUTION["desi"], exposure_range=(1.0, 1.0), fibre_diameter_arcsec=1.5,
                      seeing_arcsec=1.1)
"""DESI-like: 3600-9823 A in 7786 log pixels of 38.7 km/s, R = 3000, noise from the DESI curve."""

INSTRUMENTS = {"sdss": SDSS, "desi": DESI}
