"""A sweep's Table 6 as Markdown, with the paper's Table 6 beside it.

:func:`~survey_denoise.pipeline.sweep.gather` writes ``table6.md`` from the
gathered ``sweep-table6*.csv`` tables of a sweep over the de-noiser
(``pipelines/table6.yaml``): one row per variant's de-noised spectra and one
for the noise-added input, sigma and sigma_fill (dex) against the original
spectra (the paper's measure) and against the mock's truth, the paper's
numbers, the galaxy counts, painted lines and the faint end, and the
coverage of the true fluxes by the fitted errors.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..science.calibration import SIGNIFICANCE, tally
from ..science.metrics import TABLE6_LINES

PAPER = {  # Scourfield et al. (2023) Table 6: (sigma, sigma_fill) in dex, 4-d models, pPXF on SDSS
    "pca": {"halpha": (0.44, 0.31), "hdelta": (0.56, 0.39), "oiii_4363": (1.00, 0.59),
            "sii_6716": (0.58, 0.37), "oiii_5007": (0.70, 0.56), "nii_6583": (0.64, 0.51)},
    "ae": {"halpha": (0.41, 0.34), "hdelta": (0.54, 0.34), "oiii_4363": (0.71, 0.59),
           "sii_6716": (0.55, 0.42), "oiii_5007": (0.52, 0.41), "nii_6583": (0.62, 0.52)},
    "vae": {"halpha": (0.36, 0.29), "hdelta": (0.45, 0.37), "oiii_4363": (0.74, 0.63),
            "sii_6716": (0.52, 0.38), "oiii_5007": (0.55, 0.44), "nii_6583": (0.56, 0.45)},
}
NOISY = "noise-added"


def _labelled(table: pd.DataFrame, keys: list[str], method: str = "method") -> pd.DataFrame:
    """Rows named by the variant (de-noised) or ``noise-added`` (the first variant's noisy)."""
    variant = table[keys].astype(str).agg("-".join, axis=1)
    case = table[method]
    keep = (case == "denoised") | (variant == variant.iloc[0])
    name = np.where(case == "denoised", variant, np.where(case == "noisy", NOISY, case))
    out = table.assign(name=name)[keep.to_numpy()]
    # the original, the noise-added input, then the variants in sweep order, per line
    order = {n: i for i, n in enumerate(["original", NOISY, *dict.fromkeys(variant)])}
    rank = out["line"].map({k: i for i, k in enumerate(dict.fromkeys(out["line"]))})
    return out.assign(_r=rank, _n=out["name"].map(order)).sort_values(["_r", "_n"], kind="stable") \
        .drop(columns=["_r", "_n"])


def _wide(table: pd.DataFrame, sigma: str, fill: str) -> pd.DataFrame:
    lines = [k for k in TABLE6_LINES if k in set(table["line"])]
    rows = {}
    for name, sub in table.groupby("name", sort=False):
        by = sub.set_index("line")
        rows[name] = [by.at[k, c] if k in by.index else np.nan for k in lines for c in (sigma, fill)]
    cols = pd.MultiIndex.from_tuples([(k, s) for k in lines for s in ("sigma", "sigma_fill")])
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols)


def _grid(table: pd.DataFrame) -> str:
    heads = [f"{line} {stat}" for line, stat in table.columns]
    out = ["| | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    out += [f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for name, row in table.iterrows()]
    return "\n".join(out) + "\n"


def _rows(frame: pd.DataFrame, cols: list[str]) -> str:
    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in frame[cols].itertuples(index=False)]
    return "\n".join(out) + "\n"


def table6_markdown(config: dict, keys: list[str], tables: dict[str, pd.DataFrame]) -> str:
    """The Markdown page of a sweep's Table 6.

    Parameters
    ----------
    config : dict
        The sweep's config (JSON data), shown as what was run.
    keys : list of str
        The swept columns of the gathered tables (e.g. ``["kind"]``).
    tables : dict of str to DataFrame
        The gathered ``table6_scores`` and, when made, ``table6_coverage``.
    """
    scores = _labelled(tables["table6_scores"], keys)
    ours = _wide(scores[scores["name"] != "original"], "sigma_orig", "sigma_fill_orig")
    truth = _wide(scores, "sigma_truth", "sigma_fill_truth")
    kinds = [k for k in PAPER if k in set(scores["name"])] or list(PAPER)
    paper = pd.DataFrame([[v for k in ours.columns.get_level_values(0)[::2] for v in PAPER[m][k]]
                          for m in kinds], index=[f"{m} (paper)" for m in kinds], columns=ours.columns)
    text = ["# Table 6 on the mock survey", "",
            "Scatter (dex) of log10(flux from predicted spectra / reference flux) over all points "
            "(sigma) and over filled bins (sigma_fill).  Within a variant every case is scored on the "
            "same held-out galaxies (zero fits are upper limits at 1x their error, never dropped); "
            f"'{NOISY}' is the un-de-noised input, shown as scored with the first variant.", "",
            "What was run:", "", "```json", json.dumps(config, indent=1), "```", "",
            "## Against the original spectra's fluxes (the paper's measure)", "", _grid(ours),
            "## Against the mock's true fluxes (bins in true flux)", "", _grid(truth),
            "## The paper (Scourfield et al. 2023, Table 6; SDSS DR7, pPXF)", "", _grid(paper),
            "## Galaxies, painted lines and the faint end", "",
            "measured / limits / missing over all held-out galaxies, N common: scored for every case; "
            "painted: share of galaxies with true flux below 3x the noisy error reported at S/N > 3; "
            "painted, input: those of them the catalogue does not mark LINE_NOT_IN_INPUT (the "
            "de-noiser's input alone detects the line); "
            "spurious: painted lines whose true flux is below 3x the case's own error or outside "
            "2 of its errors (the truth does not support them; for the noisy case, every painted line); "
            "faint offset: median log10(case / true) in the faintest true-flux bin (dex).", "",
            _rows(scores, ["line", "name", "n_measured_all", "n_upper_all", "n_missing_all", "n_common",
                           "offset_orig", "offset_truth", "painted_rate", "painted_rate_input", "spurious_rate",
                           "faint_offset"])]
    cov = tables.get("table6_coverage")
    if cov is not None:
        cov = _labelled(cov, keys)
        text += ["## Are the errors honest?  Coverage of the true flux by the fitted errors", "",
                 "Fraction of |fitted - true| within 1 and 2 flux errors, over all true-flux bins; "
                 "calibrated errors give 0.60-0.76 and 0.90-0.98 (per bin: sweep-table6_coverage.csv).",
                 "", _rows(cov[cov["bin"] == "all"], ["line", "name", "count", "within_1sigma",
                                                       "within_2sigma"]
                           + [c for c in ("expected_1sigma", "expected_2sigma") if c in cov])]
        if "expected_1sigma" in cov:
            text += ["expected: what exact errors give fluxes clipped at 0, as the fitters' are "
                     "(84 % / 98 % for a line below its noise, the Gaussian 68 % / 95 % above it).", ""]
        if "p_1sigma" in cov:
            per_bin = pd.DataFrame([{"name": name, **tally(sub)}
                                    for name, sub in cov.groupby("name", sort=False)])
            text += ["Per bin of true flux (every line, both levels): fractions in the band, below "
                     "and above it, and those below (narrow) or above (wide) the Gaussian fraction "
                     f"beyond counting noise (two-sided binomial p < {SIGNIFICANCE:g}); the same "
                     "against the expected fraction of fluxes clipped at 0 (narrow_clipped, wide_clipped).", "",
                     _rows(per_bin, ["name", "measures", "in_band", "too_small", "too_wide", "narrow",
                                     "wide"] + (["narrow_clipped", "wide_clipped"] if "expected_1sigma" in cov else []))]
    return "\n".join(text)
