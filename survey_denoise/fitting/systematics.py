"""Systematic line-flux errors: what a fitter's formal errors leave out.

A fitter's formal error (``(A^T W A)^-1`` for the fast fitter) is the error
of the fit *if the model were right*.  It is not:

* the continuum basis (stellar PCA + Legendre polynomials) does not fit
  every stellar population's Balmer absorption under Halpha, Hbeta, Hdelta
  exactly, so part of the continuum leaks into or out of the line.  That
  error grows with the continuum under the line: an equivalent width
  ``ew`` (Angstrom) times the local continuum flux density.  It is larger
  where young stars (deep, broad Balmer absorption) dominate the light,
  which the line's own equivalent width ``W = flux / continuum`` traces:
  measured on the mock, the effective systematic equivalent width grows
  as ``sqrt(ew**2 + ew_mix * W)``, so a star-forming galaxy's Halpha
  (W ~ 30 Angstrom) gets ~0.5 Angstrom and a retired one's (W ~ 1
  Angstrom) ~0.1 Angstrom;
* the line profile is a Gaussian of a width from a discrete grid,
  interpolated, and doublet ratios and blends are fixed, so a bright line
  is off by a fraction ``frac`` of its flux.

The total error is these added in quadrature to the formal one::

    err**2 = err_stat**2 + (frac * F)**2 + (ew * C)**2 + ew_mix * F * C

(``F = max(flux, 0)``, ``C`` the continuum)
with ``continuum`` the median flux density of the good pixels on both
sides of the line (:func:`local_continuum`, between :data:`INNER_KMS` and
:data:`OUTER_KMS` from the line centre).  The constants, per fitting
method and line, live in ``data/line_systematics.yaml`` with how they were
measured: by maximum likelihood (:func:`calibrate`) on a mock whose true
fluxes are known.  They are calibrated on the mock, not on real spectra;
a line or method without constants keeps its formal errors.

Part of what these terms cover is a bias, not noise: on the mock the fast
fitter reads bright Balmer lines 1-4 % low (Hbeta, Hgamma: the fractional
terms) and faint Hdelta high.  Errors that must cover a bias cannot reach
68 % within 1 sigma and 95 % within 2 sigma at once; a sample of
star-forming galaxies only falls short at 1 sigma (docs/line_errors.md
gives the measured coverage).  On real spectra the fast fitter and pPXF
differ by more than these terms (docs/line_errors.md): they are a floor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from .. import lines
from ..grid import C_KMS

CONSTANTS_FILE = Path(__file__).parent.parent / "data" / "line_systematics.yaml"
"""Per method and line: ``frac`` (fraction of the flux), ``ew`` and ``ew_mix`` (Angstrom); per method, provenance."""
INNER_KMS = 700.0
"""Inner edge of the continuum side bands, km/s from the line centre (the fitting window's half-width)."""
OUTER_KMS = 3000.0
"""Outer edge of the continuum side bands, km/s from the line centre."""


@cache
def _file() -> dict:
    import yaml

    return yaml.safe_load(CONSTANTS_FILE.read_text())


def constants(method: str) -> dict[str, tuple[float, float, float]]:
    """The systematic constants of a fitting method: key -> (frac, ew, ew_mix), ew and ew_mix in Angstrom.

    Returns an empty dict for a method without calibrated constants.
    """
    table = (_file().get("methods") or {}).get(method) or {}
    return {k: (float(v.get("frac", 0.0)), float(v.get("ew", 0.0)), float(v.get("ew_mix", 0.0)))
            for k, v in table.items()}


def provenance(method: str = "fast") -> str:
    """One line saying where a method's constants come from (for a catalogue's ``attrs``); "" without."""
    return str(((_file().get("provenance") or {}).get(method) or {}).get("summary", ""))


def local_continuum(wavelength: np.ndarray, flux: np.ndarray, good: np.ndarray,
                    keys: Sequence[str]) -> np.ndarray:
    """Median flux density of the good pixels beside each line.

    Parameters
    ----------
    wavelength : ndarray (npix,)
        Pixel centres, Angstrom.
    flux : ndarray (n, npix)
        Flux density (any unit).
    good : ndarray of bool (n, npix)
        Pixels to use.
    keys : sequence of str
        Catalogue keys of the lines.

    Returns
    -------
    ndarray (n, len(keys))
        In the unit of ``flux``; NaN where a line has no good side-band pixel.
    """
    wavelength = np.asarray(wavelength, np.float64)
    flux = np.where(good, np.asarray(flux, np.float64), np.nan)
    out = np.full((flux.shape[0], len(keys)), np.nan)
    for j, key in enumerate(keys):
        dv = np.abs(wavelength / lines.wavelength(key) - 1.0) * C_KMS
        band = (dv > INNER_KMS) & (dv < OUTER_KMS)
        if band.any():
            side = flux[:, band]
            # Rows without a good side-band pixel stay NaN. They are skipped rather
            # than silenced: warning filters are process-wide, so changing them in
            # one of Dask's worker threads races with every other thread.
            some = np.isfinite(side).any(axis=1)
            out[some, j] = np.nanmedian(side[some], axis=1)
    return out


def total_error(err_stat, flux, continuum, frac: float, ew: float, ew_mix: float = 0.0) -> np.ndarray:
    """Formal and systematic errors added in quadrature.

    Parameters
    ----------
    err_stat : array_like
        Formal (statistical) flux error, flux-density unit x Angstrom.
    flux : array_like
        Fitted line flux (same unit); negative values count as 0.
    continuum : array_like
        Local continuum flux density (flux-density unit); NaN counts as 0.
    frac : float
        Systematic error as a fraction of the line flux.
    ew : float
        Systematic equivalent width, Angstrom.
    ew_mix : float
        Growth of the squared systematic equivalent width with the line's
        equivalent width, Angstrom.

    Returns
    -------
    ndarray
        ``sqrt(err_stat**2 + (frac * flux)**2 + (ew * continuum)**2 + ew_mix * flux * continuum)``;
        NaN where ``err_stat`` is.
    """
    f = np.clip(np.nan_to_num(np.asarray(flux, np.float64)), 0.0, None)
    c = np.abs(np.nan_to_num(np.asarray(continuum, np.float64)))
    return np.sqrt(np.asarray(err_stat, np.float64) ** 2 + (frac * f) ** 2 + (ew * c) ** 2 + ew_mix * f * c)


def apply(fit: Mapping, wavelength: np.ndarray, flux: np.ndarray, good: np.ndarray,
          method: str) -> dict:
    """A fit with systematic errors added: ``flux_err`` total, ``flux_err_stat`` formal.

    Parameters
    ----------
    fit : mapping
        A fitter's output (``flux``, ``flux_err``: {key: (n,)}).
    wavelength, flux, good
        The fitted spectra, as for :func:`local_continuum`.
    method : str
        The fitting method whose constants (:func:`constants`) are used.

    Returns
    -------
    dict
        ``fit`` with ``flux_err`` replaced by the total and ``flux_err_stat``
        added; fluxes unchanged.
    """
    table = constants(method)
    keys = [k for k in fit["flux_err"] if k in table]
    out = dict(fit)
    out["flux_err_stat"] = dict(fit["flux_err"])
    if not keys:
        return out
    cont = local_continuum(wavelength, flux, good, keys)
    out["flux_err"] = dict(fit["flux_err"])
    for j, key in enumerate(keys):
        out["flux_err"][key] = total_error(fit["flux_err"][key], fit["flux"][key], cont[:, j], *table[key])
    return out


def calibrate(resid, err_stat, flux, continuum) -> tuple[float, float, float]:
    """Maximum-likelihood ``(frac, ew, ew_mix)`` for one line from fits of known truth.

    The residuals ``fitted - true`` are taken as Gaussian with the variance
    of :func:`total_error`; each galaxy's term ``(r / sigma)^2`` is capped at
    25 so that a few gross failures do not set the constants.

    Parameters
    ----------
    resid, err_stat, flux, continuum : array_like (n,)
        Fitted minus true flux, formal error, fitted flux, local continuum.

    Returns
    -------
    (float, float, float)
        ``frac`` (fraction of the flux), ``ew`` and ``ew_mix`` (Angstrom), all >= 0.
    """
    from scipy.optimize import minimize

    r, e, f, c = (np.asarray(a, np.float64) for a in (resid, err_stat, flux, continuum))
    ok = np.isfinite(r) & np.isfinite(e) & (e > 0)
    r, e, f, c = r[ok], e[ok], f[ok], c[ok]

    def nll(p):
        v = total_error(e, f, c, *np.abs(p)) ** 2
        return float(np.sum(np.log(v) + np.minimum(r**2 / v, 25.0)))

    options = {"xatol": 1e-5, "fatol": 1e-4, "maxiter": 4000}
    best = min((minimize(nll, start, method="Nelder-Mead", options=options)
                for start in ([0.02, 0.1, 0.02], [0.001, 0.001, 0.001], [0.1, 0.5, 0.1])), key=lambda m: m.fun)
    return tuple(float(v) for v in np.abs(best.x))
