"""Systematic line-flux (and line-width) errors: what a fitter's formal errors leave out.

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
  is off by a fraction ``frac`` of its flux;
* the formal error itself can be short wherever the noise is: pPXF's
  covariance is a Fisher matrix at the best fit, and its scatter over
  noise draws is 5-8 % larger; the fast fitter's is further off, most on
  the DESI-like mock.  That part grows with the noise, not with the line,
  so it is a ``scale`` (>= 1) on the formal error.

The terms differ between instruments (resolution, sampling, depth): the
SDSS-like mock's bright lines need a profile term of 0.2 % of the flux
for pPXF, which on the deeper DESI-like mock more than doubled bright lines'
errors, so a survey can have constants of its own (:func:`constants`).

The total error is these added in quadrature to the formal one::

    err**2 = (scale * err_stat)**2 + (frac * F)**2 + (ew * C)**2 + ew_mix * F * C

(``F = max(flux, 0)``, ``C`` the continuum)
with ``continuum`` the median flux density of the good pixels on both
sides of the line (:func:`local_continuum`, between :data:`INNER_KMS` and
:data:`OUTER_KMS` from the line centre).  The constants, per fitting
method and line, live in ``data/line_systematics.yaml`` with how they were
measured: by maximum likelihood (:func:`calibrate`) on a mock whose true
fluxes are known, the SDSS-like mock by default, and a survey's own mock
where the default ones do not transfer to it (:func:`constants`).  They
are calibrated on the mock, not on real spectra; a line or method without
constants keeps its formal errors.

The fitted line width (the catalogue's ``line_sigma``) gets the same four
terms (:func:`width_constants`, ``widths:`` in the same file), with the
width in place of the flux and :func:`width_lever` in place of the
continuum: a continuum the model misses reads a weak line on strong
absorption too narrow or too wide (on the mock, -0.03 to -0.04 dex below an
equivalent width of 1 Angstrom), and a bright line's width is off by a
fraction (+0.4 to +1 %, the profile on the grid).  They are calibrated by
``benchmarks/line_width.py --fit-systematics``.

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
"""Per method and line: ``frac`` (fraction of the flux), ``ew`` and ``ew_mix`` (Angstrom), ``scale`` (default 1); per method, provenance."""
INNER_KMS = 700.0
"""Inner edge of the continuum side bands, km/s from the line centre (the fitting window's half-width)."""
DEFAULT_SURVEY = "sdss"
"""The mock survey the default constants are calibrated on; other surveys' own sit under ``surveys``."""
OUTER_KMS = 3000.0
"""Outer edge of the continuum side bands, km/s from the line centre."""


@cache
def _file() -> dict:
    import yaml

    return yaml.safe_load(CONSTANTS_FILE.read_text())


PROVENANCE = {"methods": "provenance", "widths": "width_provenance"}
"""Per table of the constants file (line fluxes, line width): the key of its provenance beside it."""


def _table(method: str, survey: str | None, section: str = "methods") -> tuple[dict, dict]:
    """(constants, provenance) of ``method`` in ``section``: the survey's own where it has them, else the default."""
    own = ((_file().get("surveys") or {}).get(survey) or {}) if survey else {}
    where = own if ((own.get(section) or {}).get(method)) else _file()
    return (where.get(section) or {}).get(method) or {}, (where.get(PROVENANCE[section]) or {}).get(method) or {}


def write_constants(section: str, method: str, table: dict, meta: dict) -> Path:
    """Replace one method's constants and provenance in the shipped file, keeping everything else.

    ``section`` is ``"methods"`` (line fluxes, per line) or ``"widths"`` (the
    line width).  Calibrated on the default survey's mock (``meta["survey"]``)
    they are the method's default constants; on another survey's, that
    survey's own (``surveys:``).  ``meta`` holds ``design``, ``survey``,
    ``seed``, ``n`` and ``command``.
    """
    import yaml

    text = CONSTANTS_FILE.read_text()
    head = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    body = yaml.safe_load(text) or {}
    where = body if meta["survey"] == DEFAULT_SURVEY else body.setdefault("surveys", {}).setdefault(meta["survey"], {})
    what = " (line widths)" if section == "widths" else ""
    where.setdefault(PROVENANCE[section], {})[method] = {
        "summary": f"{method}{what}: calibrated on the {meta['design']} {meta['survey']} mock, "
                   f"seed {meta['seed']}, {meta['n']} galaxies ({meta['command']})", **meta}
    where.setdefault(section, {})[method] = table
    CONSTANTS_FILE.write_text(head + yaml.safe_dump(body, sort_keys=False))
    _file.cache_clear()
    return CONSTANTS_FILE


def constants(method: str, survey: str | None = None) -> dict[str, tuple[float, float, float, float]]:
    """The systematic constants of a fitting method: key -> (frac, ew, ew_mix, scale).

    ``ew`` and ``ew_mix`` in Angstrom; ``scale`` is 1 where the file has
    none.  A ``survey`` (a store's ``attrs["survey"]``, e.g. ``"desi"``) with
    constants of its own for the method gets that table whole (a line it
    leaves out keeps its formal error); any other gets the default ones
    (calibrated on the SDSS-like mock).  Returns an empty dict
    for a method without calibrated constants.
    """
    table, _ = _table(method, survey)
    return {k: (float(v.get("frac", 0.0)), float(v.get("ew", 0.0)), float(v.get("ew_mix", 0.0)),
                float(v.get("scale", 1.0)))
            for k, v in table.items()}


def provenance(method: str = "fast", survey: str | None = None) -> str:
    """One line saying where a method's constants come from (for a catalogue's ``attrs``); "" without."""
    return str(_table(method, survey)[1].get("summary", ""))


def store_survey(attrs: Mapping) -> str | None:
    """The survey whose constants a store's spectra take, from its attributes.

    The constants belong to the instrument that recorded the spectra
    (resolution, sampling): a store degraded to stand for another survey's
    noise (``survey_simulated_from``) keeps its own instrument's.  A store
    ingested from several surveys has a ``survey`` per galaxy instead,
    which :func:`apply` takes over this.
    """
    return attrs.get("survey_simulated_from") or attrs.get("survey")


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


def total_error(err_stat, flux, continuum, frac: float, ew: float, ew_mix: float = 0.0,
                scale: float = 1.0) -> np.ndarray:
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
    scale : float
        Factor on the formal error (>= 1 as calibrated).

    Returns
    -------
    ndarray
        ``sqrt((scale * err_stat)**2 + (frac * flux)**2 + (ew * continuum)**2 + ew_mix * flux * continuum)``;
        NaN where ``err_stat`` is.
    """
    f = np.clip(np.nan_to_num(np.asarray(flux, np.float64)), 0.0, None)
    c = np.abs(np.nan_to_num(np.asarray(continuum, np.float64)))
    return np.sqrt((scale * np.asarray(err_stat, np.float64)) ** 2 + (frac * f) ** 2 + (ew * c) ** 2
                   + ew_mix * f * c)


def width_constants(method: str, survey: str | None = None) -> tuple[float, float, float, float] | None:
    """The line width's systematic constants of a fitting method: (frac, ew, ew_mix, scale), or None.

    As :func:`constants`, for ``line_sigma``: ``widths:`` in the constants
    file (a survey's own under ``surveys:``, else the default), with
    :func:`width_lever` standing for the continuum in :func:`total_error`.
    """
    entry, _ = _table(method, survey, "widths")
    if not entry:
        return None
    return (float(entry.get("frac", 0.0)), float(entry.get("ew", 0.0)), float(entry.get("ew_mix", 0.0)),
            float(entry.get("scale", 1.0)))


def width_provenance(method: str, survey: str | None = None) -> str:
    """One line saying where a method's line-width constants come from; "" without."""
    return str(_table(method, survey, "widths")[1].get("summary", ""))


WIDTH_MIN_SNR = 3.0
"""Least S/N of a spectrum's best line for the width's continuum term (:func:`width_lever`)."""


def width_lever(width, flux, flux_err, continuum) -> np.ndarray:
    """What the line width's systematic error grows with: ``width x C / F`` of the spectrum's best line.

    A continuum that the fitter's model misses by a fixed equivalent width
    under a line of equivalent width ``W = F / C`` moves the fitted width by
    a fraction that grows as ``1 / W`` (on the mock, -0.03 to -0.04 dex at
    W < 1 Angstrom, ~0 at 3-10 Angstrom: ``benchmarks/line_width.py``), so
    ``ew x`` this lever, Angstrom x km/s / Angstrom, is its part of the
    width's error.  The line is the one of highest S/N, which weighs most
    in the width; where no line reaches :data:`WIDTH_MIN_SNR` the width is
    not read from the lines at all (the prior's, or unconstrained) and the
    lever is 0.

    Parameters
    ----------
    width : ndarray (n,)
        Fitted line width, km/s.
    flux, flux_err, continuum : ndarray (n, k)
        Per line: flux, its formal error (same unit) and the local continuum
        flux density (:func:`local_continuum`, in the flux's unit per Angstrom).

    Returns
    -------
    ndarray (n,)
        km/s per Angstrom of equivalent width; 0 where no line is detected.
    """
    flux, flux_err, continuum = (np.asarray(a, np.float64) for a in (flux, flux_err, continuum))
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(np.isfinite(flux / flux_err), flux / flux_err, -np.inf)
        best = np.argmax(snr, axis=1)
        rows = np.arange(flux.shape[0])
        ratio = np.abs(np.nan_to_num(continuum[rows, best])) / flux[rows, best]
    detected = snr[rows, best] >= WIDTH_MIN_SNR
    return np.where(detected & np.isfinite(ratio), np.nan_to_num(np.asarray(width, np.float64)) * ratio, 0.0)


def apply(fit: Mapping, wavelength: np.ndarray, flux: np.ndarray, good: np.ndarray,
          method: str, survey: str | np.ndarray | None = None, *, scale: bool = True) -> dict:
    """A fit with systematic errors added: ``flux_err`` total, ``flux_err_stat`` formal.

    Parameters
    ----------
    fit : mapping
        A fitter's output (``flux``, ``flux_err``: {key: (n,)}).
    wavelength, flux, good
        The fitted spectra, as for :func:`local_continuum`.
    method : str
        The fitting method whose constants (:func:`constants`) are used.
    survey : str or ndarray of str (n,), optional
        The spectra's survey, one for all or one per spectrum (a store
        ingested from several surveys): picks the constants (:func:`constants`).
    scale : bool
        Apply the constants' ``scale`` to ``flux_err``.  False where those
        errors are not the fitter's formal ones under pixel noise: a
        de-noised store's line errors come from the de-noiser's own
        held-out calibration, which already holds what the scale stands for.

    Returns
    -------
    dict
        ``fit`` with ``flux_err`` replaced by the total and ``flux_err_stat``
        added; fluxes unchanged.  With a ``width_err``, the same for the
        line width (``width_err_stat`` added; :func:`width_constants`).
    """
    n = np.asarray(flux).shape[0]
    if survey is None or isinstance(survey, str):
        labels = np.full(n, survey or "", dtype=object)
    else:  # one per spectrum, of whatever string dtype the store kept (fixed, variable-width, object)
        labels = np.array([str(v) for v in np.ravel(survey)], dtype=object)
    groups = {str(label): np.flatnonzero(labels == label) for label in np.unique(labels)}
    tables = {label: constants(method, label or None) for label in groups}
    widths = {label: width_constants(method, label or None) for label in groups} if "width_err" in fit else {}
    out = dict(fit)
    out["flux_err_stat"] = dict(fit["flux_err"])
    if "width_err" in fit:
        out["width_err_stat"] = np.asarray(fit["width_err"], np.float64)
    keys = list(fit["flux_err"]) if any(widths.values()) else \
        [k for k in fit["flux_err"] if any(k in t for t in tables.values())]
    if not keys:
        return out
    cont = local_continuum(wavelength, flux, good, keys)
    out["flux_err"] = {k: np.array(v, np.float64, copy=True) for k, v in fit["flux_err"].items()}
    for j, key in enumerate(keys):
        for label, rows in groups.items():
            if key in tables[label]:
                frac, ew, ew_mix, factor = tables[label][key]
                out["flux_err"][key][rows] = total_error(fit["flux_err"][key][rows], fit["flux"][key][rows],
                                                         cont[rows, j], frac, ew, ew_mix, factor if scale else 1.0)
    if any(widths.values()):
        lever = width_lever(fit["width"], np.stack([fit["flux"][k] for k in keys], 1),
                            np.stack([fit["flux_err"][k] for k in keys], 1), cont)
        out["width_err"] = out["width_err_stat"].copy()
        for label, rows in groups.items():
            if widths[label]:
                frac, ew, ew_mix, factor = widths[label]
                out["width_err"][rows] = total_error(out["width_err_stat"][rows], fit["width"][rows], lever[rows],
                                                     frac, ew, ew_mix, factor if scale else 1.0)
    return out


def calibrate(resid, err_stat, true, continuum) -> tuple[float, float, float, float]:
    """Maximum-likelihood ``(frac, ew, ew_mix, scale)`` for one line from fits of known truth.

    The residuals ``fitted - true`` are taken as Gaussian with the variance
    of :func:`total_error`, and a flux the fitter clipped to 0 as the chance
    of any value <= 0, ``Phi(-true / sigma)`` (a censored likelihood):
    read as Gaussian residuals, a line below its noise, whose fluxes are
    either 0 or pushed up by the noise, looks like a large fractional error
    (the fast fitter's DESI-like [OIII]4363 came out at 15 %).  The terms
    are functions of the *true* flux here, though :func:`apply` can only
    give them the fitted one: for a faint line the fitted flux is mostly
    noise, the galaxies the noise pushed up have both the largest fitted
    flux and the largest residual, and a fractional term read off the
    fitted flux soaks that up (29 % on a simulated line at S/N 0-3 with no
    fractional error at all; 0 from the true flux).  Where the fractional
    terms matter, bright lines, the two fluxes agree.  Each galaxy's term
    (``(r / sigma)^2``, or ``-2 log Phi``) is capped at 25 so that a few
    gross failures do not set the constants.

    Parameters
    ----------
    resid, err_stat, true, continuum : array_like (n,)
        Fitted minus true flux, formal error, true flux, local continuum.

    Returns
    -------
    (float, float, float, float)
        ``frac`` (fraction of the flux), ``ew`` and ``ew_mix`` (Angstrom),
        all >= 0, and ``scale`` >= 1: the terms only add to the formal
        error, never shrink it.
    """
    from scipy.optimize import minimize
    from scipy.special import log_ndtr

    r, e, t, c = (np.asarray(a, np.float64) for a in (resid, err_stat, true, continuum))
    ok = np.isfinite(r) & np.isfinite(e) & (e > 0) & np.isfinite(t)
    r, e, t, c = r[ok], e[ok], t[ok], c[ok]
    # A fitted flux of exactly 0 is one the fitter clipped; a signed fitter's negative ones are measured.
    clipped = np.abs(r + t) <= 1e-9 * e

    def unpack(p):
        frac, ew, ew_mix, excess = np.abs(p)
        return frac, ew, ew_mix, 1.0 + excess

    def nll(p):
        v = total_error(e, t, c, *unpack(p)) ** 2
        measured = np.log(v) + np.minimum(r**2 / v, 25.0)
        censored = np.minimum(-2.0 * log_ndtr(r / np.sqrt(v)), 25.0)
        return float(np.sum(np.where(clipped, censored, measured)))

    options = {"xatol": 1e-5, "fatol": 1e-4, "maxiter": 8000}
    starts = ([0.02, 0.1, 0.02, 0.0], [0.001, 0.001, 0.001, 0.05], [0.1, 0.5, 0.1, 0.0], [0.001, 0.001, 0.001, 0.3])
    best = min((minimize(nll, start, method="Nelder-Mead", options=options) for start in starts),
               key=lambda m: m.fun)
    return tuple(float(v) for v in unpack(best.x))
