"""Are the errors honest?  Coverage of measured values by their 1- and 2-sigma errors.

For Gaussian errors that are right, 68.3 % of ``|measured - true|`` fall
within 1 sigma and 95.4 % within 2 sigma.  :func:`coverage` counts these
fractions, overall and in bins of the true value (an error model can be
right for bright lines and wrong for faint ones); :func:`line_coverage`
applies it to a line catalogue against a truth table, per line and per bin
of log10 true flux; :func:`pixel_coverage` to de-noised spectra against
the true spectra, pixel by pixel.  All are pure functions of arrays and
frames.

:data:`TARGET` is the band a calibrated error should land in on a few
thousand values: 60-76 % within 1 sigma and 90-98 % within 2 sigma.  On a
bin of a few dozen values the band is narrower than the counting noise (at
60 values one standard error of a 1-sigma fraction is 6 %, and 60 of 60
within 2 sigma happens 6 % of the time with exact errors), so each
fraction also carries the exact binomial test against the Gaussian one
(``p_<k>sigma``), and :func:`tally` counts the bins that are out of the
band and those that differ from the Gaussian fraction beyond chance.

The Gaussian fractions are not what exact errors give a flux that cannot
be negative.  Both fitters keep line fluxes >= 0 (as pPXF does), so a
line at true S/N ~ 0 is measured as ``max(0, true + noise)``: the half of
the draws pushed below 0 land on 0, within 1 sigma of the truth, and 84 %
(not 68 %) fall within 1 sigma, 98 % within 2.  :func:`coverage` therefore
also gives, per bin, the fraction expected if every error were exact and
the measurement so clipped (``expected_<k>sigma``, :func:`clipped_fraction`
from each value's own true S/N); it equals the Gaussian fraction once the
true S/N passes k, and is the reference against which the faint bins'
over-coverage is to be read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

TARGET = {1.0: (0.60, 0.76), 2.0: (0.90, 0.98)}
"""Acceptable fraction within k sigma, k -> (low, high)."""
COVERAGE_LINES = ("halpha", "hdelta", "sii_6716", "oiii_5007", "nii_6583")
"""The Table 6 lines whose coverage is measured ([OIII]4363 is rarely detected on the mock)."""
SIGNIFICANCE = 0.01
"""A bin's fraction differs from the Gaussian one when its two-sided binomial p-value is below this."""


def gaussian_fraction(k: float) -> float:
    """Fraction of a Gaussian within ``k`` sigma of its mean (0.6827 at 1, 0.9545 at 2)."""
    return math.erf(k / math.sqrt(2.0))


def clipped_fraction(k: float, snr) -> np.ndarray:
    """Chance that ``|max(0, t + e N(0, 1)) - t| <= k e``, for true S/N ``snr = t / e`` (t >= 0).

    The fraction within ``k`` sigma that exact Gaussian errors give a
    measurement clipped at 0: ``Phi(k)`` (0.841 at 1, 0.977 at 2) up to
    ``snr = k``, since every draw clipped to 0 is then within ``k`` sigma,
    and :func:`gaussian_fraction` above, where none is.
    """
    s = np.clip(np.asarray(snr, np.float64), 0.0, None)
    above = stats.norm.cdf(k) - stats.norm.cdf(np.maximum(-k, -s))  # measured > 0, within k
    at_zero = np.where(s <= k, stats.norm.cdf(-s), 0.0)  # measured 0: within k while t <= k e
    return above + at_zero


def _fractions(z: np.ndarray, levels: Sequence[float]) -> dict[str, float]:
    out = {}
    for k in levels:
        inside = int(np.sum(z <= k))
        out[f"within_{k:g}sigma"] = inside / z.size if z.size else float("nan")
        out[f"p_{k:g}sigma"] = (float(stats.binomtest(inside, z.size, gaussian_fraction(k)).pvalue)
                                if z.size else float("nan"))
    return out


def coverage(measured, error, true, *, edges: Sequence[float] | None = None,
             levels: Sequence[float] = (1.0, 2.0), log_bins: bool = True,
             min_count: int = 1, clipped: bool | None = None) -> pd.DataFrame:
    """Fraction of ``|measured - true| / error`` within each of ``levels``, per bin of ``true``.

    Parameters
    ----------
    measured, error, true : array_like (n,)
        Measurements, their 1-sigma errors and the true values (one unit).
        Entries with a non-finite value or ``error <= 0`` are left out.
    edges : sequence of float, optional
        Bin edges of the true value (of log10 true value if ``log_bins``);
        default: one bin holding everything.
    levels : sequence of float
        Multiples of the error counted.
    log_bins : bool
        Bin in log10 of the true value (then true values <= 0 are left out
        of the binned rows, kept in the "all" row).
    min_count : int
        Bins with fewer values are dropped.
    clipped : bool, optional
        Whether the measurements are clipped at 0 (sets
        ``expected_<k>sigma``); default: when none is negative.

    Returns
    -------
    pandas.DataFrame
        One row per bin plus a last row ``bin = "all"``: ``lo``, ``hi``
        (bin edges; NaN for "all"), ``count``, ``within_<k>sigma`` for each
        level, ``p_<k>sigma`` (two-sided exact binomial p-value of that
        fraction against :func:`gaussian_fraction`), ``expected_<k>sigma``
        (the mean over the bin of :func:`clipped_fraction` at each value's
        ``true / error`` if clipped, else the Gaussian fraction) and
        ``median_z`` (median ``|measured - true| / error``).
    """
    m, e, t = (np.asarray(a, np.float64).ravel() for a in (measured, error, true))
    if not (m.shape == e.shape == t.shape):
        raise ValueError(f"measured, error and true differ in length: {m.size}, {e.size}, {t.size}")
    ok = np.isfinite(m) & np.isfinite(e) & np.isfinite(t) & (e > 0)
    if clipped is None:
        clipped = not np.any(m[ok] < 0)
    z = np.abs(m[ok] - t[ok]) / e[ok]
    expect = {k: clipped_fraction(k, t[ok] / e[ok]) if clipped else np.full(z.size, gaussian_fraction(k))
              for k in levels}
    t = t[ok]

    def expected(sel):
        return {f"expected_{k:g}sigma": float(np.mean(v[sel])) if sel.any() else float("nan")
                for k, v in expect.items()}

    rows = []
    if edges is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log10(t) if log_bins else t
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            sel = (x >= lo) & (x < hi)
            if sel.sum() >= max(min_count, 1):
                rows.append({"bin": f"[{lo:g}, {hi:g})", "lo": float(lo), "hi": float(hi),
                             "count": int(sel.sum()), **_fractions(z[sel], levels), **expected(sel),
                             "median_z": float(np.median(z[sel]))})
    everything = np.ones(z.size, bool)
    rows.append({"bin": "all", "lo": np.nan, "hi": np.nan, "count": int(z.size),
                 **_fractions(z, levels), **expected(everything),
                 "median_z": float(np.median(z)) if z.size else np.nan})
    return pd.DataFrame(rows)


def in_target(table: pd.DataFrame, row: str = "all") -> bool:
    """Whether the ``row`` of a :func:`coverage` table lies in :data:`TARGET` at every level."""
    r = table.set_index("bin").loc[row]
    return all(lo <= r[f"within_{k:g}sigma"] <= hi for k, (lo, hi) in TARGET.items()
               if f"within_{k:g}sigma" in r)


def tally(table: pd.DataFrame, alpha: float = SIGNIFICANCE) -> dict[str, int]:
    """Count a coverage table's per-bin fractions (the ``"all"`` rows left out) against the target.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`coverage` rows, of one or many tables concatenated.
    alpha : float
        Significance of the binomial test.

    Returns
    -------
    dict of str to int
        ``measures`` (bins x levels), ``in_band``, ``too_small`` and
        ``too_wide`` against :data:`TARGET`; ``narrow`` and ``wide``: the
        fractions below or above the Gaussian one with ``p_<k>sigma <
        alpha`` (errors too short or too long beyond counting noise);
        ``narrow_clipped`` and ``wide_clipped``: the same against
        ``expected_<k>sigma`` where the table has it (a binomial test at the
        bin's mean expected fraction: conservative, as the spread of a sum
        of unequal chances is smaller).
    """
    rows = table[table["bin"] != "all"]
    out = dict.fromkeys(("measures", "in_band", "too_small", "too_wide", "narrow", "wide",
                         "narrow_clipped", "wide_clipped"), 0)
    for k, (lo, hi) in TARGET.items():
        col = f"within_{k:g}sigma"
        if col not in rows:
            continue
        v = rows[col].to_numpy(float)
        p = rows[f"p_{k:g}sigma"].to_numpy(float)
        known = np.isfinite(v)
        v, p = v[known], p[known]
        off = p < alpha
        out["measures"] += v.size
        out["in_band"] += int(np.sum((v >= lo) & (v <= hi)))
        out["too_small"] += int(np.sum(v < lo))
        out["too_wide"] += int(np.sum(v > hi))
        out["narrow"] += int(np.sum(off & (v < gaussian_fraction(k))))
        out["wide"] += int(np.sum(off & (v > gaussian_fraction(k))))
        if f"expected_{k:g}sigma" in rows:
            for frac, n, want in rows.loc[known, [col, "count", f"expected_{k:g}sigma"]].to_numpy(float):
                if stats.binomtest(round(frac * n), int(n), want).pvalue < alpha:
                    out["narrow_clipped" if frac < want else "wide_clipped"] += 1
    return out


def line_coverage(catalogue: pd.DataFrame, truth: pd.DataFrame, *,
                  keys: Sequence[str] = COVERAGE_LINES, n_bins: int = 5,
                  edges: Sequence[float] | None = None, min_count: int = 20) -> dict[str, pd.DataFrame]:
    """Coverage of true line fluxes by the catalogue's ``<key>_flux_err``, per line.

    Parameters
    ----------
    catalogue : pandas.DataFrame
        ``galaxy``, ``<key>_flux`` and ``<key>_flux_err`` (one flux unit).
    truth : pandas.DataFrame
        ``galaxy`` and ``<key>_flux``, the true fluxes in the same unit.
    keys : sequence of str
        Catalogue keys of the lines.
    n_bins : int
        Bins of log10 true flux, equally wide between the 2nd and 98th
        percentiles of the positive true fluxes (ignored if ``edges``).
    edges : sequence of float, optional
        Shared bin edges in log10 true flux.
    min_count : int
        Bins with fewer galaxies are dropped.

    Returns
    -------
    dict of str to pandas.DataFrame
        Per key, the :func:`coverage` table.
    """
    cat = catalogue.assign(galaxy=catalogue["galaxy"].astype(str)).set_index("galaxy")
    tr = truth.assign(galaxy=truth["galaxy"].astype(str)).set_index("galaxy")
    common = tr.index.intersection(cat.index)
    out = {}
    for key in keys:
        true = tr.loc[common, f"{key}_flux"].to_numpy(float)
        fit = cat.loc[common, f"{key}_flux"].to_numpy(float)
        err = cat.loc[common, f"{key}_flux_err"].to_numpy(float)
        bins = edges
        if bins is None:
            pos = np.log10(true[true > 0])
            lo, hi = (np.percentile(pos, [2, 98]) if pos.size else (0.0, 1.0))
            bins = np.linspace(lo, hi, n_bins + 1)
            bins[-1] += 1e-9  # the top value lands in the last bin
        out[key] = coverage(fit, err, true, edges=bins, min_count=min_count)
    return out


def pixel_coverage(denoised, ivar, true, mask=None, *,
                   levels: Sequence[float] = (1.0, 2.0)) -> dict[str, float]:
    """Fraction of de-noised pixels within k sigma (``sigma = 1/sqrt(ivar)``) of the true spectrum.

    Parameters
    ----------
    denoised, ivar, true : array_like (n, npix)
        De-noised flux, its inverse variance and the true flux (one unit).
    mask : array_like of bool (n, npix), optional
        Pixels to leave out; pixels with ``ivar <= 0`` are always left out.

    Returns
    -------
    dict
        ``count`` and ``within_<k>sigma`` for each level.
    """
    d, iv, t = (np.asarray(a, np.float64) for a in (denoised, ivar, true))
    ok = np.isfinite(d) & np.isfinite(iv) & np.isfinite(t) & (iv > 0)
    if mask is not None:
        ok &= ~np.asarray(mask, bool)
    z = np.abs(d[ok] - t[ok]) * np.sqrt(iv[ok])
    return {"count": int(z.size), **_fractions(z, levels)}
