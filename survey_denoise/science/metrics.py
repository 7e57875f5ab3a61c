"""How far two line catalogues disagree, in dex: the paper's Table 6 and Figure 9.

For one line, take the galaxies with a positive, finite flux in both
catalogues (a failed or absent line has no logarithm) and
``d = log10(flux_b) - log10(flux_a)``:

* ``sigma`` — the standard deviation of ``d`` over all those points;
* ``sigma_fill`` — the same over the points in *filled* bins only: the range
  of ``log10(flux_a)`` is cut into ``n_bins`` equal bins and a bin is filled
  when it holds more than ``N / (n_bins + 1)`` points (Scourfield et al.
  2023, Sect. 4.2: at least as many as a uniform distribution would put there);
* per bin: the count, whether it is filled, and the 16th/50th/84th
  percentiles of ``log10(flux_b)`` (Figure 9's error bars) and of ``d``.

Catalogue ``a`` is the reference (the original spectra), ``b`` the one
judged (a de-noised or noisy version, or another fitting method).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import lines

TABLE6_LINES = ("halpha", "hdelta", "oiii_4363", "sii_6716", "oiii_5007", "nii_6583")
"""Lines of the paper's Table 6 and Figure 9, in its order."""
N_BINS = 10
"""Bins in the reference flux (the paper's choice)."""


@dataclass
class LineScatter:
    """Disagreement of one line between two catalogues.

    Attributes
    ----------
    line : str
        Catalogue key.
    n : int
        Points with a positive, finite flux in both catalogues.
    n_total : int
        Galaxies in both catalogues.
    sigma, sigma_fill : float
        Standard deviation (dex) of ``log10(b / a)`` over all points / filled bins.
    median_offset : float
        Median of ``log10(b / a)``, dex.
    bins : DataFrame
        One row per bin: ``lo``, ``hi``, ``centre`` (log10 flux of ``a``),
        ``count``, ``filled``, ``p16``/``p50``/``p84`` (log10 flux of ``b``) and
        ``d16``/``d50``/``d84`` (of ``log10(b / a)``).
    """

    line: str
    n: int
    n_total: int
    sigma: float
    sigma_fill: float
    median_offset: float
    bins: pd.DataFrame


def scatter_dex(flux_a: np.ndarray, flux_b: np.ndarray, *, n_bins: int = N_BINS,
                line: str = "") -> LineScatter:
    """Scatter in dex between two flux arrays of the same galaxies.

    Parameters
    ----------
    flux_a, flux_b : ndarray (n,)
        Reference and judged fluxes (same unit); non-positive or non-finite
        values are left out.
    n_bins : int
        Bins in ``log10(flux_a)`` between its smallest and largest value.
    line : str
        Label stored in the result.
    """
    a = np.asarray(flux_a, np.float64)
    b = np.asarray(flux_b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    la, lb = np.log10(a[ok]), np.log10(b[ok])
    d = lb - la
    n = int(ok.sum())
    nan = float("nan")
    rows = []
    sigma_fill = nan
    if n >= 2:
        edges = np.linspace(la.min(), la.max(), n_bins + 1)
        which = np.clip(np.searchsorted(edges, la, side="right") - 1, 0, n_bins - 1)
        filled_points = np.zeros(n, bool)
        for i in range(n_bins):
            sel = which == i
            count = int(sel.sum())
            filled = count > n / (n_bins + 1)
            filled_points |= sel & filled
            p = np.percentile(lb[sel], [16, 50, 84]) if count else [nan] * 3
            q = np.percentile(d[sel], [16, 50, 84]) if count else [nan] * 3
            rows.append({"lo": edges[i], "hi": edges[i + 1], "centre": 0.5 * (edges[i] + edges[i + 1]),
                         "count": count, "filled": filled, "p16": p[0], "p50": p[1], "p84": p[2],
                         "d16": q[0], "d50": q[1], "d84": q[2]})
        if filled_points.sum() >= 2:
            sigma_fill = float(np.std(d[filled_points]))
    columns = ["lo", "hi", "centre", "count", "filled", "p16", "p50", "p84", "d16", "d50", "d84"]
    return LineScatter(line=line, n=n, n_total=int(a.size),
                       sigma=float(np.std(d)) if n >= 2 else nan, sigma_fill=sigma_fill,
                       median_offset=float(np.median(d)) if n else nan,
                       bins=pd.DataFrame(rows, columns=columns))


def _joined(cat_a: pd.DataFrame, cat_b: pd.DataFrame, column: str, keys: Sequence[str]) -> pd.DataFrame:
    cols = [f"{k}_{column}" for k in keys]
    for name, cat in (("a", cat_a), ("b", cat_b)):
        missing = [c for c in ["galaxy"] + cols if c not in cat.columns]
        if missing:
            raise KeyError(f"catalogue {name} lacks columns {missing}")
    left = cat_a[["galaxy"] + cols].assign(galaxy=cat_a["galaxy"].astype(str))
    right = cat_b[["galaxy"] + cols].assign(galaxy=cat_b["galaxy"].astype(str))
    return left.merge(right, on="galaxy", suffixes=("_a", "_b"), validate="one_to_one")


def compare_catalogues(cat_a: pd.DataFrame, cat_b: pd.DataFrame, *,
                       keys: Sequence[str] = TABLE6_LINES, column: str = "flux",
                       n_bins: int = N_BINS) -> dict[str, LineScatter]:
    """Per-line scatter between two catalogues, matched on ``galaxy``.

    Parameters
    ----------
    cat_a, cat_b : DataFrame
        Reference and judged catalogues (:func:`~survey_denoise.fitting.catalogue.read_catalogue`).
    keys : sequence of str
        Line keys (default: Table 6's).
    column : {"flux", "flux_norm"}
        Physical or normalised fluxes.
    """
    joined = _joined(cat_a, cat_b, column, keys)
    return {k: scatter_dex(joined[f"{k}_{column}_a"].to_numpy(float), joined[f"{k}_{column}_b"].to_numpy(float),
                           n_bins=n_bins, line=k) for k in keys}


def summary(scatters: Mapping[str, LineScatter]) -> pd.DataFrame:
    """One row per line: ``line``, ``label``, ``n``, ``n_total``, ``sigma``, ``sigma_fill``, ``median_offset``."""
    table = lines.all_lines()
    return pd.DataFrame([{"line": k, "label": table[k].label if k in table else k, "n": s.n,
                          "n_total": s.n_total, "sigma": s.sigma, "sigma_fill": s.sigma_fill,
                          "median_offset": s.median_offset} for k, s in scatters.items()])


def bin_table(scatters: Mapping[str, LineScatter]) -> pd.DataFrame:
    """All lines' bins in one long table (a ``line`` column first)."""
    return pd.concat([s.bins.assign(line=k)[["line", *s.bins.columns]] for k, s in scatters.items()],
                     ignore_index=True)


def table6(results: Mapping[str, Mapping[str, LineScatter]], keys: Sequence[str] = TABLE6_LINES,
           digits: int = 2) -> pd.DataFrame:
    """The paper's Table 6 layout: one row per model, (line, sigma | sigma_fill) columns.

    Parameters
    ----------
    results : mapping of model name to the output of :func:`compare_catalogues`
    """
    table = lines.all_lines()
    cols = pd.MultiIndex.from_product([[table[k].label for k in keys], ["σ", "σ_fill"]])
    data = []
    for res in results.values():
        row = []
        for k in keys:
            s = res.get(k)
            row += [round(s.sigma, digits), round(s.sigma_fill, digits)] if s else [np.nan, np.nan]
        data.append(row)
    return pd.DataFrame(data, index=pd.Index(list(results), name="model"), columns=cols)


def figure9(cat_a: pd.DataFrame, cat_b: pd.DataFrame, *, keys: Sequence[str] = TABLE6_LINES,
            column: str = "flux", save: str | Path | None = None):
    """Figure 9: judged vs reference flux per line, with sigma and sigma_fill in each panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..plots import line_flux_comparison

    joined = _joined(cat_a, cat_b, column, keys)
    scatters = compare_catalogues(cat_a, cat_b, keys=keys, column=column)
    table = lines.all_lines()
    text = {k: f"σ = {s.sigma:.2f} dex\nσ_fill = {s.sigma_fill:.2f} dex" for k, s in scatters.items()}
    return line_flux_comparison({k: joined[f"{k}_{column}_a"].to_numpy(float) for k in keys},
                                {k: joined[f"{k}_{column}_b"].to_numpy(float) for k in keys},
                                sigma=text, labels={k: table[k].label for k in keys if k in table},
                                save=save)
