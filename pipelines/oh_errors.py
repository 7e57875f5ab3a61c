"""Are a run's metallicity errors honest?  O/H coverage of the truth, per case, cut and error rule.

Takes the folder of an MZR run (``pipelines/mzr_test.py``: the mock's truth,
the held-out galaxies and the catalogue of each science case) and measures,
for each Hα S/N cut of ``--snr`` and each case, on its measured galaxies:

* ``total``: how often ``|oh - true O/H|`` falls within ``oh_err`` (the
  line-flux errors and the calibration's scatter);
* ``stat``: how often ``|oh - O/H of the noise-free lines|`` falls within
  ``oh_err_stat`` (the line-flux errors alone, through the index);

twice: with each line's total flux error (``<key>_flux_err``, formal and
systematic, what the catalogue states) and with its formal part alone
(``<key>_flux_err_stat``).  The fitter's systematic terms are calibrated on
each line's flux; in a ratio of lines they partly cancel, and the two rules
bracket what the index's error should be.  A cut below the science stage's
15 measures the errors where a de-noiser's Hα is fainter than the MZR needs.

    python pipelines/oh_errors.py runs/mzr_desi
    python pipelines/oh_errors.py runs/mzr_desi --snr 15 3 --out oh_errors.json

Writes ``RUN/science/oh_errors.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

RULES = ("total", "formal")
"""Which line-flux errors go into the index: as stated, or their formal part."""


def measure(frames: dict[str, pd.DataFrame], truth: pd.DataFrame, calibration: str, cut: float) -> tuple:
    from survey_denoise.science.mzr_test import mzr_test

    r = mzr_test(frames, truth, calibration=calibration, min_halpha_snr=cut, noisy_case=None)
    rows = []
    for case, g in r.galaxies.items():
        sel = g["has_oh"].to_numpy(bool)
        s = r.summary.loc[case]
        row = {"case": case, "min_halpha_snr": cut, "n_measured": int(sel.sum()),
               "median_oh_err": float(s["median_oh_err"]), "median_oh_err_stat": float(s["median_oh_err_stat"])}
        for name in ("total", "stat"):
            for k in (1, 2):
                row[f"{name}_within_{k}sigma"] = float(s.get(f"oh_{name}_within_{k}sigma", np.nan))
        if "true_lines_oh" in g and sel.sum() > 1:
            row["sd_vs_true_lines"] = float(np.std((g["oh"] - g["true_lines_oh"])[sel], ddof=1))
        if "std_vs_true" in s:
            row["sd_vs_true"] = float(s["std_vs_true"])
        rows.append(row)
    return rows, r.coverage


def main(argv: list[str] | None = None) -> None:
    from survey_denoise.fitting.catalogue import formal_errors
    from survey_denoise.pipeline.products import catalogue_frames

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the MZR run's folder")
    ap.add_argument("--snr", type=float, nargs="+", default=[15.0, 3.0], help="Hα S/N cuts")
    ap.add_argument("--truth", type=Path, default=None, help="truth table (default: RUN/truth.parquet)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    config = json.loads((args.run / "run.json").read_text())["config"]
    science = config["stages"]["science"]
    truth = pd.read_parquet(args.truth or args.run / "truth.parquet")
    held = args.run / "heldout.parquet"
    if held.exists():
        keep = set(pd.read_parquet(held)["galaxy"].astype(str))
        truth = truth[truth["galaxy"].astype(str).isin(keep)].reset_index(drop=True)
    frames = catalogue_frames({case: args.run / f"catalogue-{store}.zarr" for case, store in science["cases"].items()},
                              truth["galaxy"].to_numpy())
    rows, bins = [], []
    for rule in RULES:
        used = frames if rule == "total" else {c: formal_errors(f) for c, f in frames.items()}
        for cut in args.snr:
            r, cov = measure(used, truth, science["calibration"], cut)
            rows += [{"flux_errors": rule, **x} for x in r]
            if cov is not None:
                bins.append(cov.assign(flux_errors=rule, min_halpha_snr=cut))
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
    out = args.out or args.run / "science" / "oh_errors.json"
    out.write_text(json.dumps({
        "run": str(args.run), "calibration": science["calibration"], "galaxies": len(truth),
        "coverage": "total: |oh - true_oh| within oh_err; stat: |oh - true_lines_oh| within oh_err_stat",
        "summary": table.replace({np.nan: None}).to_dict(orient="records"),
        "bins": (pd.concat(bins).replace({np.nan: None}).to_dict(orient="records") if bins else []),
    }, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
