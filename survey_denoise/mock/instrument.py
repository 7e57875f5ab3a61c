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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..grid import C_KMS
from ..rng import standard_normal


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
    """

    name: str
    log10_start: float
    npix: int
    dlog10: float = 1e-4
    resolution: float = 2000.0
    sky: float = 7.0
    gain_knots: tuple[float, ...] = (3800.0, 3900.0, 4500.0, 5400.0, 6100.0, 7200.0, 8400.0, 9200.0)
    gain_values: tuple[float, ...] = (8.0, 11.0, 16.0, 19.0, 24.0, 27.0, 26.0, 18.0)
    exposure_range: tuple[float, float] = (0.6, 1.6)
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
        return C_KMS / self.resolution / 2.3548

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

    def exposure(self, u: np.ndarray) -> np.ndarray:
        """Exposure factors from uniforms ``u`` (n,)."""
        lo, hi = np.log(self.exposure_range)
        return np.exp(lo + (hi - lo) * u)

    def observe(self, flux: np.ndarray, ids: np.ndarray, seed: int, exposure_u: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Noisy flux and ivar (float32) for noise-free ``flux``; noise keyed by galaxy id."""
        sigma = self.sigma(flux, self.exposure(exposure_u))
        noise = standard_normal(seed, f"mock-noise-{self.name}", ids, flux.shape[1])
        return (flux + sigma * noise).astype(np.float32), (1.0 / sigma**2).astype(np.float32)


SDSS = Instrument(name="sdss", log10_start=3.5798, npix=3841)
"""SDSS DR7-like: 3800-9200 A, 69 km/s pixels, R ~ 2000."""

INSTRUMENTS = {"sdss": SDSS}
