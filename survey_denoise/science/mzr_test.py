"""The three-way MZR test of Scourfield et al. (2023), Figure 10.

One mock star-forming sample is measured three times: from the original
spectra, from the same spectra made DESI-like (dimmed to z = 0.1, DESI noise),
and from those DESI-like spectra de-noised by the 6-d VAE.  For each line
catalogue this module reports how many galaxies get a metallicity, whether
they are a biased subset in mass, the scatter about the reference MZR, the
slope of the relation below its turnover, and whether the SFR dependence at
fixed mass survives.

:func:`mzr_test` takes the catalogues and the truth table (plain DataFrames)
so a pipeline can call it after the fitting stage; :class:`MZRTest` holds the
results and writes/reads them as CSV + Parquet for the report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .calibration import coverage
from .metallicity import CALIBRATIONS, flag_counts, metallicity, oh_from_index, strong_line_index
from .mzr import (
    SCHOLTE24,
    SLOPE_RANGE,
    ReferenceMZR,
    binned_mzr,
    default_bins,
    running_median,
    scatter,
    sfr_trend,
    slope,
    slope_ratio,
)

PAPER: dict[str, dict[str, object]] = {
    # Scourfield et al. (2023) §5 and Fig. 10.  The paper gives the scatter for the
    # original and VAE cases only, and describes the measurable fractions in words.
    "original": {"scatter": 0.09, "fraction": "most (reference sample)", "sfr_trend": "lower Z at lower SFR"},
    "desi": {"scatter": None, "fraction": "small: most galaxies fail Hα S/N > 15", "sfr_trend": "lost"},
    "vae": {"scatter": 0.12, "fraction": "similar to original", "sfr_trend": "lower Z at lower SFR (kept)"},
}
"""Published numbers (or their verbal description) for the comparison table."""

LABELS = {"original": "original spectra", "desi": "DESI-like, z = 0.1", "vae": "DESI-like + 6-d VAE",
          "combined": "VAE and DESI-like combined"}

REFERENCE_CASE = "original"
"""The case the others' MZR slopes are divided by in :meth:`MZRTest.comparison`."""

OH_EDGES = (7.8, 8.2, 8.4, 8.6, 8.8, 9.2)
"""Bins of true 12 + log(O/H) in which :func:`oh_coverage` counts the errors' coverage."""


def log_sfr(truth: pd.DataFrame, column: str = "true_sfr", is_log: bool | None = None) -> np.ndarray:
    """log10 SFR (M_sun/yr) from a truth column; linear unless the name says ``log``."""
    if column not in truth.columns:
        raise KeyError(f"truth table has no column {column!r} (columns: {list(truth.columns)})")
    v = truth[column].to_numpy(dtype=float)
    if is_log is None:
        is_log = "log" in column
    if is_log:
        return v
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log10(v), np.nan)


@dataclass
class MZRTest:
    """Results of :func:`mzr_test`.

    Attributes
    ----------
    galaxies : dict of str to DataFrame
        Per case, one row per galaxy of the truth table: ``galaxy``,
        ``logmass``, ``logsfr``, ``true_oh`` (if known), ``oh``, ``oh_err``,
        ``oh_err_stat``, ``oh_flags``, ``has_oh`` and, where the truth has
        them, ``true_lines_oh`` (:func:`true_lines_oh`).
    summary : DataFrame
        One row per case (see :func:`mzr_test`).
    binned : dict of str to DataFrame
        Per case, :func:`~survey_denoise.science.mzr.binned_mzr` of the measured galaxies.
    settings : dict
        Calibration, S/N cut, reference MZR, column names; with a bound,
        ``n_bound_line`` and ``n_bound_tied``: galaxies whose Hα S/N
        bound exceeds the cut.
    bound : DataFrame, optional
        Per galaxy of the sample, the highest Hα S/N the noisy spectra
        allow (:func:`~survey_denoise.science.bound.snr_bound`):
        ``galaxy``, ``snr_line``, ``snr_tied``.
    coverage : DataFrame, optional
        :func:`oh_coverage` of the measured galaxies (None without a true O/H).
    """

    galaxies: dict[str, pd.DataFrame]
    summary: pd.DataFrame
    binned: dict[str, pd.DataFrame]
    settings: dict = field(default_factory=dict)
    bound: pd.DataFrame | None = None
    coverage: pd.DataFrame | None = None

    def comparison(self) -> pd.DataFrame:
        """Paper vs ours: scatter, measurable fraction and MZR slope per case.

        ``ours_mzr_slope_ratio`` divides each case's slope by that of
        :data:`REFERENCE_CASE` (NaN without it, or in results saved before
        slopes were measured), ``ours_mzr_slope_ratio_err`` its error (the two
        bootstrap errors as if independent); ``ours_mzr_slope_matched_ratio``
        and ``ours_mzr_slope_matched_ratio_err`` do so on the galaxies both
        measure (a paired bootstrap), and ``ours_mzr_slope_true`` is the
        slope of the true O/H of the case's own galaxies (NaN where unknown).
        """
        rows = []
        has_ref = "mzr_slope" in self.summary and REFERENCE_CASE in self.summary.index
        ref = self.summary.loc[REFERENCE_CASE, "mzr_slope"] if has_ref else np.nan
        ref_err = self.summary.loc[REFERENCE_CASE, "mzr_slope_err"] if has_ref else np.nan
        for case, row in self.summary.iterrows():
            case_slope = float(row["mzr_slope"]) if "mzr_slope" in row else np.nan
            case_err = float(row["mzr_slope_err"]) if "mzr_slope_err" in row else np.nan
            ratio = case_slope / ref if np.isfinite(ref) and ref != 0 else np.nan
            if not np.isfinite(ratio) or case_slope == 0:
                ratio_err = np.nan
            elif case == REFERENCE_CASE:
                ratio_err = 0.0  # 1 by definition
            else:
                # the two samples' bootstrap errors, as if independent (they overlap)
                ratio_err = abs(ratio) * np.hypot(case_err / case_slope, ref_err / ref)
            paper = PAPER.get(str(case), {})
            rows.append({
                "case": case,
                "label": LABELS.get(str(case), str(case)),
                "paper_scatter_dex": paper.get("scatter"),
                "ours_scatter_dex": round(float(row["scatter_std"]), 3),
                "paper_fraction": paper.get("fraction"),
                "ours_fraction": round(float(row["fraction"]), 3),
                "ours_n_measured": int(row["n_measured"]),
                "paper_sfr_trend": paper.get("sfr_trend"),
                "ours_sfr_spearman_r": round(float(row["sfr_spearman_r"]), 3),
                "ours_n_common": int(row["n_common"]) if "n_common" in row else None,
                "ours_scatter_common_dex": (round(float(row["scatter_std_common"]), 3)
                                            if "scatter_std_common" in row else None),
                "ours_mzr_slope": case_slope,
                "ours_mzr_slope_err": float(row["mzr_slope_err"]) if "mzr_slope_err" in row else np.nan,
                "ours_mzr_slope_n": int(row["mzr_slope_n"]) if "mzr_slope_n" in row else 0,
                "ours_mzr_slope_ratio": ratio,
                "ours_mzr_slope_ratio_err": ratio_err,
                "ours_mzr_slope_matched_ratio": float(row.get("mzr_slope_matched_ratio", np.nan)),
                "ours_mzr_slope_matched_ratio_err": float(row.get("mzr_slope_matched_ratio_err", np.nan)),
                "ours_mzr_slope_true": float(row["mzr_slope_true"]) if "mzr_slope_true" in row else np.nan,
            })
        return pd.DataFrame(rows).set_index("case")

    def save(self, directory: str | Path) -> Path:
        """Write ``summary.csv``, ``comparison.csv``, ``binned_<case>.csv``,
        ``galaxies_<case>.parquet``, ``settings.json``, (with a truth)
        ``oh_coverage.csv`` and (with a bound) ``bound.parquet`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.summary.to_csv(d / "summary.csv")
        self.comparison().to_csv(d / "comparison.csv")
        for case, tab in self.binned.items():
            tab.to_csv(d / f"binned_{case}.csv", index=False)
        for case, tab in self.galaxies.items():
            tab.to_parquet(d / f"galaxies_{case}.parquet", index=False)
        (d / "settings.json").write_text(json.dumps(self.settings, indent=2, default=str))
        if self.bound is not None:
            self.bound.to_parquet(d / "bound.parquet", index=False)
        if self.coverage is not None:
            self.coverage.to_csv(d / "oh_coverage.csv", index=False)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> MZRTest:
        """Read what :meth:`save` wrote."""
        d = Path(directory)
        if not (d / "summary.csv").exists():
            raise FileNotFoundError(f"{d} holds no MZR test results (summary.csv missing)")
        summary = pd.read_csv(d / "summary.csv", index_col=0)
        cases = [str(c) for c in summary.index]
        galaxies = {c: pd.read_parquet(d / f"galaxies_{c}.parquet") for c in cases
                    if (d / f"galaxies_{c}.parquet").exists()}
        binned = {c: pd.read_csv(d / f"binned_{c}.csv") for c in cases if (d / f"binned_{c}.csv").exists()}
        settings = json.loads((d / "settings.json").read_text()) if (d / "settings.json").exists() else {}
        bound = pd.read_parquet(d / "bound.parquet") if (d / "bound.parquet").exists() else None
        cov = pd.read_csv(d / "oh_coverage.csv") if (d / "oh_coverage.csv").exists() else None
        return cls(galaxies=galaxies, summary=summary, binned=binned, settings=settings, bound=bound,
                   coverage=cov)


def true_lines_oh(truth: pd.DataFrame, calibration: str = "o3n2") -> np.ndarray | None:
    """12 + log(O/H) from the calibration applied to the truth's noise-free line fluxes.

    Parameters
    ----------
    truth : DataFrame
        Needs ``true_<key>_flux`` for every line of the calibration.
    calibration : {"o3n2", "n2"}

    Returns
    -------
    ndarray or None
        One value per row of ``truth`` (NaN where an index is undefined,
        whatever the calibration's validity range); None without the columns.
    """
    cal = CALIBRATIONS[calibration]
    cols = {k: f"true_{k}_flux" for k in cal.lines}
    if not set(cols.values()) <= set(truth.columns):
        return None
    return oh_from_index(strong_line_index({k: truth[c].to_numpy(float) for k, c in cols.items()}, cal), cal)


OH_CHECKS = {"total": ("oh_err", "true_oh"), "stat": ("oh_err_stat", "true_lines_oh")}
"""What each metallicity error must cover: error column -> truth column.

``oh_err`` (line-flux errors and the calibration's scatter) the true O/H;
``oh_err_stat`` (line-flux errors alone) the calibration applied to the
noise-free line fluxes, which is what a noise-free spectrum would give."""


def oh_coverage(galaxies: Mapping[str, pd.DataFrame], edges=OH_EDGES) -> pd.DataFrame | None:
    """Are the metallicity errors honest?  Coverage of each case's truths by its errors.

    Parameters
    ----------
    galaxies : mapping of case to DataFrame
        :attr:`MZRTest.galaxies` (``oh``, ``oh_err``, ``oh_err_stat``,
        ``has_oh`` and ``true_oh`` and/or ``true_lines_oh``).
    edges : sequence of float
        Bins of the true value, 12 + log(O/H).

    Returns
    -------
    DataFrame or None
        :func:`~survey_denoise.science.calibration.coverage` rows of the
        measured galaxies (bins with at least 20), with ``case`` and
        ``error`` (a key of :data:`OH_CHECKS`) in front; None where no
        case has a truth column.
    """
    parts = []
    for case, g in galaxies.items():
        sel = g["has_oh"].to_numpy(bool)
        for name, (err, true) in OH_CHECKS.items():
            if err not in g or true not in g:
                continue
            t = coverage(g["oh"].to_numpy(float)[sel], g[err].to_numpy(float)[sel],
                         g[true].to_numpy(float)[sel], edges=edges, log_bins=False, min_count=20)
            parts.append(t.assign(case=case, error=name))
    if not parts:
        return None
    out = pd.concat(parts, ignore_index=True)
    return out[["case", "error", *[c for c in out.columns if c not in ("case", "error")]]]


def _join(cat: pd.DataFrame, truth: pd.DataFrame, case: str) -> pd.DataFrame:
    if "galaxy" not in cat.columns:
        raise KeyError(f"catalogue {case!r} has no 'galaxy' column")
    cat = cat.assign(galaxy=cat["galaxy"].astype(str))
    if cat["galaxy"].duplicated().any():
        raise ValueError(f"catalogue {case!r} lists some galaxies twice")
    keyed = cat.set_index("galaxy")
    # ids are compared as text (a catalogue may store them as strings); rows follow ``truth``
    return keyed.reindex(truth["galaxy"].astype(str).to_numpy()).reset_index(names="galaxy")


def mzr_test(
    catalogues: Mapping[str, pd.DataFrame],
    truth: pd.DataFrame,
    *,
    calibration: str = "o3n2",
    min_halpha_snr: float = 15.0,
    reference: ReferenceMZR = SCHOLTE24,
    bins=None,
    mass_column: str = "true_logmass",
    sfr_column: str | None = None,
    sfr_is_log: bool | None = None,
    noisy_case: str | None = "desi",
    bound: pd.DataFrame | None = None,
    slope_range: tuple[float, float] = SLOPE_RANGE,
) -> MZRTest:
    """Run the three-way MZR test on line catalogues of the same galaxies.

    Parameters
    ----------
    catalogues : mapping of case name to DataFrame
        Line-flux catalogues (``survey_denoise.fitting`` columns), e.g.
        ``{"original": ..., "desi": ..., "vae": ...}``.  Galaxies missing from
        a catalogue count as not measured.
    truth : DataFrame
        The mock truth table: ``galaxy``, ``mass_column`` (log10 M*/M_sun),
        ``sfr_column`` and optionally ``true_oh``.  It defines the sample.
    calibration, min_halpha_snr
        Passed to :func:`~survey_denoise.science.metallicity.metallicity`.
    reference : ReferenceMZR
        Curve the scatter is measured about.
    bins : array_like, optional
        Mass bin edges for the binned MZRs and running medians.
    sfr_column : str, optional
        Truth column of the SFR; default ``true_logsfr`` if present (the mock's
        log10 M_sun/yr), else ``true_sfr`` (linear M_sun/yr).
    sfr_is_log : bool, optional
        Whether ``sfr_column`` is already log10; default: only if its name says ``log``.
    noisy_case : str, optional
        The case measured on the noisy spectra without de-noising (default
        ``"desi"``; ignored when not among ``catalogues``): its measurable count
        is recorded as ``settings["n_measurable_noisy"]``.
    bound : DataFrame, optional
        :func:`~survey_denoise.science.bound.snr_bound` of the noisy
        spectra (``galaxy``, ``snr_line``, ``snr_tied``): how many of the
        sample could reach the Hα cut at all, whatever de-noised them.
    slope_range : (float, float)
        log10(M*/M_sun) range of the MZR slope
        (:func:`~survey_denoise.science.mzr.slope`).

    Returns
    -------
    MZRTest
        ``summary`` columns: ``n_total``, ``n_measured``, ``fraction``,
        ``median_logmass_all``, ``median_logmass_measured``, ``ks_mass`` (KS
        statistic, measured vs all), ``scatter_std``, ``scatter_rms``,
        ``scatter_offset``, ``scatter_nmad``, ``median_oh_err``,
        ``median_oh_err_stat``, ``bias_vs_true``/``std_vs_true`` (if
        ``true_oh`` is known), ``oh_total_within_1sigma`` and ``_2sigma``
        (the fraction of ``|oh - true_oh|`` within ``oh_err``) and
        ``oh_stat_within_1sigma`` and ``_2sigma`` (of ``|oh -
        true_lines_oh|`` within ``oh_err_stat``) where the truth allows,
        ``sfr_spearman_r``, ``sfr_p_value``, ``sfr_slope``, ``mzr_slope``,
        ``mzr_slope_err`` and ``mzr_slope_n`` (dex per dex over
        ``slope_range``, bootstrap error, galaxies in the range), one
        ``flag_<reason>`` count per :class:`OHFlag` bit, and on the galaxies
        measurable in every case that measures any: ``n_common``, ``scatter_std_common``,
        ``scatter_offset_common``, ``median_oh_err_common``,
        ``mzr_slope_common``, ``mzr_slope_err_common`` and (with
        ``true_oh``) ``bias_vs_true_common``/``std_vs_true_common``; to
        tell selection from measurement, ``mzr_slope_true`` and
        ``mzr_slope_err_true`` (the true O/H of the case's own measured
        galaxies), ``mzr_slope_true_lines`` and ``mzr_slope_err_true_lines``
        (with ``true_<key>_flux`` columns: the calibration applied to their
        noise-free line fluxes, :func:`true_lines_oh`) and, on the galaxies
        the case and :data:`REFERENCE_CASE` both measure,
        ``mzr_slope_n_matched`` (those in the mass range),
        ``mzr_slope_matched``, ``mzr_slope_matched_reference``,
        ``mzr_slope_matched_ratio`` and ``mzr_slope_matched_ratio_err``
        (:func:`~survey_denoise.science.mzr.slope_ratio`).  ``coverage``
        holds the same coverage per bin of the truth (:func:`oh_coverage`).
    """
    for col in ("galaxy", mass_column):
        if col not in truth.columns:
            raise KeyError(f"truth table has no column {col!r} (columns: {list(truth.columns)})")
    if sfr_column is None:
        sfr_column = "true_logsfr" if "true_logsfr" in truth.columns else "true_sfr"
    edges = default_bins() if bins is None else np.asarray(bins, float)
    logmass = truth[mass_column].to_numpy(dtype=float)
    logsfr = log_sfr(truth, sfr_column, sfr_is_log)
    true_oh = truth["true_oh"].to_numpy(float) if "true_oh" in truth.columns else None
    lines_oh = true_lines_oh(truth, calibration)
    # The main sequence comes from the whole sample, so a selected sub-sample's
    # SFR residuals are measured against the same line in every case.
    try:
        main_sequence = running_median(logmass, logsfr, edges)
    except ValueError:
        main_sequence = None  # too few galaxies per mass bin: no SFR trend, the rest stands

    rows, galaxies, binned = {}, {}, {}
    for case, cat in catalogues.items():
        joined = _join(cat, truth, case)
        m = metallicity(joined, calibration=calibration, min_halpha_snr=min_halpha_snr)
        # galaxies absent from the catalogue: every line missing
        g = pd.DataFrame({"galaxy": truth["galaxy"].to_numpy(), "logmass": logmass, "logsfr": logsfr,
                          "oh": m["oh"].to_numpy(), "oh_err": m["oh_err"].to_numpy(),
                          "oh_err_stat": m["oh_err_stat"].to_numpy(), "oh_flags": m["oh_flags"].to_numpy(), "has_oh": m["has_oh"].to_numpy()})
        if true_oh is not None:
            g["true_oh"] = true_oh
        if lines_oh is not None:
            g["true_lines_oh"] = lines_oh
        galaxies[case] = g
        sel = g["has_oh"].to_numpy()
        n_meas = int(sel.sum())
        sc = scatter(logmass[sel], g["oh"][sel], reference)
        tr = (sfr_trend(logmass[sel], g["oh"].to_numpy()[sel], logsfr[sel],
                        main_sequence=main_sequence, bins=edges) if main_sequence is not None
              else {"spearman_r": np.nan, "p_value": np.nan, "slope": np.nan})
        ks = (stats.ks_2samp(logmass[sel], logmass[np.isfinite(logmass)]).statistic
              if n_meas > 0 else np.nan)
        row = {
            "n_total": len(g), "n_measured": n_meas, "fraction": n_meas / max(len(g), 1),
            "median_logmass_all": float(np.nanmedian(logmass)) if len(g) else np.nan,
            "median_logmass_measured": float(np.median(logmass[sel])) if n_meas else np.nan,
            "ks_mass": float(ks),
            "scatter_std": sc["std"], "scatter_rms": sc["rms"], "scatter_offset": sc["offset"],
            "scatter_nmad": sc["nmad"],
            "median_oh_err": float(np.median(g["oh_err"][sel])) if n_meas else np.nan,
            "median_oh_err_stat": float(np.median(g["oh_err_stat"][sel])) if n_meas else np.nan,
        }
        if true_oh is not None:
            d = (g["oh"] - g["true_oh"]).to_numpy()[sel]
            row["bias_vs_true"] = float(np.median(d)) if n_meas else np.nan
            row["std_vs_true"] = float(np.std(d, ddof=1)) if n_meas > 1 else np.nan
        row.update({"sfr_spearman_r": tr["spearman_r"], "sfr_p_value": tr["p_value"],
                    "sfr_slope": tr["slope"]})
        sl = slope(logmass[sel], g["oh"].to_numpy()[sel], slope_range)
        row.update({"mzr_slope": sl["slope"], "mzr_slope_err": sl["slope_err"], "mzr_slope_n": sl["n"]})
        row.update({f"flag_{k}": v for k, v in flag_counts(g["oh_flags"]).items() if k != "measured"})
        rows[case] = row
        binned[case] = binned_mzr(logmass[sel], g["oh"].to_numpy()[sel], edges)

    # A case that measures no galaxy (a de-noiser whose honest errors pass none) would
    # leave no galaxies to compare the others on; it is left out of the common set.
    common = np.ones(len(truth), bool)
    for g in galaxies.values():
        if g["has_oh"].any():
            common &= g["has_oh"].to_numpy(bool)
    n_common = int(common.sum())
    for case, g in galaxies.items():
        rows[case].update(_on_common(g, logmass, common, reference, true_oh is not None, slope_range))
        rows[case].update(_selection(g, galaxies.get(REFERENCE_CASE), logmass, slope_range))

    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.index.name = "case"
    noisy = noisy_case if noisy_case in catalogues else None
    settings = {"calibration": calibration, "min_halpha_snr": min_halpha_snr,
                "reference": reference.to_dict(), "bins": edges.tolist(),
                "mass_column": mass_column, "sfr_column": sfr_column, "cases": list(catalogues),
                "slope_range": list(slope_range),
                "n_common": n_common, "noisy_case": noisy,
                "n_measurable_noisy": int(rows[noisy]["n_measured"]) if noisy else None}
    if bound is not None:
        bound = _join(bound, truth, "bound")[["galaxy", "snr_line", "snr_tied"]]
        for col in ("line", "tied"):
            settings[f"n_bound_{col}"] = int(np.sum(bound[f"snr_{col}"].to_numpy(float) > min_halpha_snr))
    cov = oh_coverage(galaxies)
    if cov is not None:
        pooled = cov[cov["bin"] == "all"].set_index(["case", "error"])
        for (case, name), r in pooled.iterrows():
            for k in (1, 2):
                summary.loc[case, f"oh_{name}_within_{k}sigma"] = r[f"within_{k}sigma"]
    return MZRTest(galaxies=galaxies, summary=summary, binned=binned, settings=settings, bound=bound,
                   coverage=cov)


def _on_common(g: pd.DataFrame, logmass: np.ndarray, common: np.ndarray, reference: ReferenceMZR,
               with_truth: bool, slope_range: tuple[float, float]) -> dict[str, float]:
    """One case's scatter, slope, errors and bias on the galaxies measurable in every case."""
    oh = g["oh"].to_numpy(float)[common]
    n = int(common.sum())
    sc = scatter(logmass[common], oh, reference)
    out = {"n_common": n, "scatter_std_common": sc["std"], "scatter_offset_common": sc["offset"],
           "median_oh_err_common": float(np.median(g["oh_err"].to_numpy(float)[common])) if n else np.nan}
    sl = slope(logmass[common], oh, slope_range)
    out.update({"mzr_slope_common": sl["slope"], "mzr_slope_err_common": sl["slope_err"]})
    if with_truth:
        d = oh - g["true_oh"].to_numpy(float)[common]
        out["bias_vs_true_common"] = float(np.median(d)) if n else np.nan
        out["std_vs_true_common"] = float(np.std(d, ddof=1)) if n > 1 else np.nan
    return out


def _selection(g: pd.DataFrame, ref: pd.DataFrame | None, logmass: np.ndarray,
               slope_range: tuple[float, float]) -> dict[str, float]:
    """Split a case's slope into which galaxies it measures and what it measures for them.

    An Hα S/N cut keeps, at low mass, only the galaxies of high SFR, and O/H
    depends on SFR at fixed mass: a case that measures fewer galaxies has
    another true MZR, whatever its O/H errors.  So the slope is also given on
    the galaxies this case and :data:`REFERENCE_CASE` both measure (the
    reference's slope there too), for the true O/H of this case's own
    galaxies, and for the calibration applied to their noise-free line
    fluxes (what the strong-line method itself makes of them).
    """
    sel = g["has_oh"].to_numpy(bool)
    out: dict[str, float] = {}
    for col, suffix in (("true_oh", "true"), ("true_lines_oh", "true_lines")):
        if col in g:
            t = slope(logmass[sel], g[col].to_numpy(float)[sel], slope_range)
            out.update({f"mzr_slope_{suffix}": t["slope"], f"mzr_slope_err_{suffix}": t["slope_err"]})
    if ref is not None:
        both = sel & ref["has_oh"].to_numpy(bool)
        r = slope_ratio(logmass[both], g["oh"].to_numpy(float)[both], ref["oh"].to_numpy(float)[both],
                        slope_range)
        out.update({"mzr_slope_n_matched": r["n"], "mzr_slope_matched": r["slope"],
                    "mzr_slope_matched_reference": r["slope_ref"],
                    "mzr_slope_matched_ratio": r["ratio"], "mzr_slope_matched_ratio_err": r["ratio_err"]})
    return out


def format_comparison(result: MZRTest) -> str:
    """The paper-vs-ours table as fixed-width text for a terminal."""
    tab = result.comparison()
    lines = [f"{'case':<24} {'scatter paper':>13} {'scatter ours':>12} {'fraction ours':>13} "
             f"{'N':>6} {'SFR r ours':>10}  paper fraction"]
    for _, r in tab.iterrows():
        ps = "-" if r["paper_scatter_dex"] is None or pd.isna(r["paper_scatter_dex"]) else f"{r['paper_scatter_dex']:.2f}"
        lines.append(f"{r['label']:<24} {ps:>13} {r['ours_scatter_dex']:>12.3f} {r['ours_fraction']:>13.3f} "
                     f"{r['ours_n_measured']:>6d} {r['ours_sfr_spearman_r']:>10.3f}  "
                     f"{'-' if r['paper_fraction'] is None or pd.isna(r['paper_fraction']) else r['paper_fraction']}")
    if "ours_n_common" in tab and tab["ours_n_common"].notna().all():
        n_common = int(tab["ours_n_common"].iloc[0])
        same = "; ".join(f"{r['label']}: {r['ours_scatter_common_dex']:.3f}" for _, r in tab.iterrows())
        lines.append(f"on the same {n_common} galaxies (measurable in every case that measures any), "
                     f"scatter (dex): {same}")
    return "\n".join(lines + slopes(result) + reach(result) + oh_errors(result))


def oh_errors(result: MZRTest) -> list[str]:
    """A sentence on how often each case's O/H errors cover the truth (:func:`oh_coverage`)."""
    if result.coverage is None:
        return []
    pooled = result.coverage[result.coverage["bin"] == "all"]
    what = {"total": "oh_err covers the true O/H", "stat": "oh_err_stat covers the calibration's O/H "
            "of the noise-free lines"}
    parts = []
    for case, rows in pooled.groupby("case", sort=False):
        checks = [f"{what[r['error']]} {r['within_1sigma']:.2f} / {r['within_2sigma']:.2f}"
                  for _, r in rows.iterrows() if r["count"] > 0]
        parts.append(f"{LABELS.get(str(case), str(case))}: " + (", ".join(checks) or "none measured"))
    return ["O/H errors, fraction within 1 / 2 sigma (Gaussian 0.68 / 0.95): " + "; ".join(parts)]


def slopes(result: MZRTest) -> list[str]:
    """A sentence on each case's MZR slope and its ratio to the original spectra's."""
    if "mzr_slope" not in result.summary:
        return []
    tab = result.comparison()
    lo, hi = result.settings.get("slope_range", SLOPE_RANGE)
    parts = []
    for case, r in tab.iterrows():
        if not np.isfinite(r["ours_mzr_slope"]):
            parts.append(f"{r['label']}: - ({r['ours_mzr_slope_n']} galaxies)")
            continue
        ratio = (f", {r['ours_mzr_slope_ratio']:.2f} ± {r['ours_mzr_slope_ratio_err']:.2f}x the original's"
                 if np.isfinite(r["ours_mzr_slope_ratio"]) and case != REFERENCE_CASE else "")
        parts.append(f"{r['label']}: {r['ours_mzr_slope']:+.3f} ± {r['ours_mzr_slope_err']:.3f} "
                     f"({r['ours_mzr_slope_n']} galaxies{ratio})")
    return [f"MZR slope over log M* {lo:g}-{hi:g} (dex per dex): " + "; ".join(parts)] + _selection_lines(result)


def _selection_lines(result: MZRTest) -> list[str]:
    """Sentences that split each case's slope into its selection and its O/H."""
    s = result.summary
    ref = LABELS.get(REFERENCE_CASE, REFERENCE_CASE)
    out = []
    if "mzr_slope_matched" in s:
        parts = [f"{LABELS.get(str(c), str(c))}: {r['mzr_slope_matched']:+.3f} against "
                 f"{r['mzr_slope_matched_reference']:+.3f} ({int(r['mzr_slope_n_matched'])} galaxies, "
                 f"{r['mzr_slope_matched_ratio']:.2f} ± {r['mzr_slope_matched_ratio_err']:.2f}x)"
                 for c, r in s.iterrows() if c != REFERENCE_CASE and np.isfinite(r["mzr_slope_matched"])]
        if parts:
            out.append(f"MZR slope on the galaxies each case and the {ref} both measure, against the "
                       f"{ref}'s slope there: " + "; ".join(parts))
    if "mzr_slope_true" in s:
        lines = "mzr_slope_true_lines" in s
        parts = []
        for c, r in s.iterrows():
            if not np.isfinite(r["mzr_slope_true"]):
                continue
            part = f"{LABELS.get(str(c), str(c))}: {r['mzr_slope_true']:+.3f} ± {r['mzr_slope_err_true']:.3f}"
            if lines:
                part += f" (true lines {r['mzr_slope_true_lines']:+.3f})"
            parts.append(part)
        if parts:
            how = (f"; in brackets, {str(result.settings.get('calibration', 'the calibration')).upper()} applied to "
                   "their noise-free line fluxes (the selection and the calibration)" if lines else "")
            out.append("slope of the true O/H of each case's own measured galaxies (what its selection "
                       f"alone makes of the MZR){how}: " + "; ".join(parts))
    return out


def reach(result: MZRTest) -> list[str]:
    """Sentences on how many galaxies the noisy spectra make measurable, and at most could."""
    out = []
    noisy = result.settings.get("noisy_case")
    if noisy and result.settings.get("n_measurable_noisy") is not None and noisy in result.summary.index:
        total = int(result.summary.loc[noisy, "n_total"])
        out.append(f"measurable from the {LABELS.get(noisy, noisy)} spectra alone (no de-noising): "
                   f"{result.settings['n_measurable_noisy']} of {total}")
    if result.settings.get("n_bound_tied") is not None:
        total = int(result.summary["n_total"].iloc[0])
        cut = result.settings["min_halpha_snr"]
        out.append(f"at most {result.settings['n_bound_line']} of {total} can reach Hα S/N > {cut:g} "
                   f"from the noisy spectra's noise, {result.settings['n_bound_tied']} with every "
                   "line ratio known (Cramér-Rao bound at the true fluxes); a de-noiser that "
                   "passes more takes the rest from its prior")
    return out
