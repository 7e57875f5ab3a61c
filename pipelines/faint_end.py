"""What a de-noised spectrum holds at each Table 6 line, against what the fitters read from it.

Table 6's faint-end figure (the median over-prediction of the de-noised
line in the faintest bin of true flux) is a fitter's reading, and pPXF and
the fast fitter read the same de-noised spectra differently.  This script
takes one case folder of a Table 6 run (``RUN/vae``, with the held-out
galaxies, the truth, the original and de-noised stores and their
catalogues) and prints, per line and per bin of true flux, on the galaxies
Table 6 scores:

* ``held``: log10 of (true flux + what the de-noised spectrum holds at the
  line beyond the original, :func:`survey_denoise.science.content.held_flux`)
  over the true flux: the de-noiser's own over-prediction, no fitter involved;
* the run's fitter (its catalogue of the de-noised spectra), and the fast
  fitter on the same spectra when the run used pPXF;
* the same fitters on the original spectra (``*_original``): how each reads
  a faint line where no de-noiser is involved;
* all as medians in dex, with the galaxies counted.

The original spectra are the de-noiser's target and, on the mock, carry
the survey's noise: zero-mean, so it scatters ``held`` but does not move
its median.

It writes the table to ``--out`` (default ``CASE/faint_end.json``).

    python pipelines/faint_end.py runs/table6/vae
    python pipelines/faint_end.py runs/table6/vae --bins 1     # the faintest bin only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def offsets(true: np.ndarray, judged: np.ndarray, which: np.ndarray, n_bins: int) -> list[dict]:
    """Per bin: count and median log10(judged / true), a non-positive judged flux counting as -inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(judged > 0, np.log10(judged / true), -np.inf)
    return [{"count": int((which == b).sum()),
             "offset": float(np.median(d[which == b])) if (which == b).any() else float("nan")}
            for b in range(n_bins)]


def measure(case: Path, n_bins: int | None = None, refit: bool = True) -> pd.DataFrame:
    """The table for one case folder (rows: line, bin; columns as in the module docstring)."""
    from survey_denoise import fit_lines, held_flux, open_store, read_catalogue
    from survey_denoise.fitting.catalogue import to_frame
    from survey_denoise.science.metrics import (
        N_BINS,
        TABLE6_LINES,
        bin_index,
        censor,
        common_mask,
        log_edges,
    )

    n_bins = N_BINS if n_bins is None else n_bins
    run = json.loads((case / "run.json").read_text())["config"]
    method = run["stages"]["fit"]["method"]
    held = pd.read_parquet(case / "heldout.parquet")["galaxy"].to_numpy()
    truth = pd.read_parquet(case / "truth.parquet").set_index("galaxy").loc[held]
    cats = {s: read_catalogue(case / f"catalogue-{s}.parquet").set_index("galaxy").loc[held]
            for s in ("preprocessed", "degraded", "denoised")}
    denoised = open_store(case / "denoised.zarr").sel(galaxy=held).load()
    original = open_store(case / "preprocessed.zarr").sel(galaxy=held).load()
    dimming = original["dimming"].values if "dimming" in original else 1.0
    true = {k: truth[f"true_{k}_flux"].to_numpy(float) * dimming for k in TABLE6_LINES}
    spectrum = held_flux(denoised, original, true)
    readers = {method: cats["denoised"], f"{method}_original": cats["preprocessed"]}
    if refit and method != "fast":
        for name, ds in (("fast", denoised), ("fast_original", original)):
            readers[name] = to_frame(fit_lines(ds, "fast").compute()).set_index("galaxy").loc[held]

    rows = []
    for k in TABLE6_LINES:
        # Table 6's sample: every catalogue holds a value (measured or limit) and the truth is > 0.
        cens = {s: censor(c[f"{k}_flux"].to_numpy(float), c[f"{k}_flux_err"].to_numpy(float))[0]
                for s, c in cats.items()}
        common = common_mask({**cens, "truth": true[k]}) & np.isfinite(spectrum[k])
        if common.sum() < 2:
            continue
        t = true[k][common]
        edges = log_edges(t, n_bins)
        which = bin_index(np.log10(t), edges)
        columns = {"held": offsets(t, spectrum[k][common], which, n_bins)}
        for name, c in readers.items():
            v = censor(c[f"{k}_flux"].to_numpy(float), c[f"{k}_flux_err"].to_numpy(float))[0][common]
            columns[name] = offsets(t, v, which, n_bins)
        for b in range(n_bins):
            rows.append({"line": k, "bin": b, "log_true_lo": edges[b], "log_true_hi": edges[b + 1],
                         "count": columns["held"][b]["count"],
                         **{name: col[b]["offset"] for name, col in columns.items()}})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", type=Path, help="a Table 6 case folder (e.g. runs/table6/vae)")
    ap.add_argument("--bins", type=int, default=None, help="print the faintest N bins (default: all)")
    ap.add_argument("--no-refit", action="store_true", help="skip the fast fit of a pPXF run's spectra")
    ap.add_argument("--out", type=Path, default=None, help="JSON table (default: CASE/faint_end.json)")
    args = ap.parse_args(argv)

    table = measure(args.case, refit=not args.no_refit)
    shown = table if args.bins is None else table[table["bin"] < args.bins]
    print("median log10(value / true), dex; held: what the de-noised spectrum holds at the line")
    print(shown.to_string(index=False, float_format=lambda x: f"{x:+.3f}"))
    out = args.out or args.case / "faint_end.json"
    config = json.loads((args.case / "run.json").read_text())["config"]
    out.write_text(json.dumps({"case": args.case.name, "config": config, "rows": table.to_dict("records")},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
