"""Recovered vs true line fluxes on the mock, for pPXF and for the fast fitter.

A uniform-Halpha mock (SDSS-like, observed frame, with noise: the
"original" spectra), pre-processed onto the grid (``l2``), fitted with both
methods; every catalogued line's fitted physical flux is compared with the
truth table's ``true_<key>_flux`` (1e-17 erg/s/cm2) by
:func:`survey_denoise.science.metrics.compare_catalogues`, truth as the
reference: per line the median of log10(fit / true) (bias) and its
standard deviation (scatter), overall and per bin of true flux, with the
16th/50th/84th percentiles.  pPXF runs on the first ``--n-ppxf`` galaxies,
the fast fitter on all ``--n``; the fast fitter is also scored on the pPXF
subset, so the two methods are compared on the same galaxies.

    OMP_NUM_THREADS=1 python benchmarks/recovery.py [--n 3000] [--n-ppxf 300] [--seed 11]

Writes ``benchmarks/results/recovery.json`` and ``recovery.png``.  One
process, Dask's synchronous scheduler: one core.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dask  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from survey_denoise import lines  # noqa: E402
from survey_denoise.fitting import fit_lines  # noqa: E402
from survey_denoise.fitting.catalogue import to_frame  # noqa: E402
from survey_denoise.mock import MockConfig, generate, select  # noqa: E402
from survey_denoise.preprocess import preprocess  # noqa: E402
from survey_denoise.science.metrics import censor, common_mask, scatter_dex  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KEYS = tuple(lines.catalogue_keys())


def truth_frame(ds) -> pd.DataFrame:
    """The truth in catalogue layout: ``galaxy`` and ``<key>_flux`` (physical)."""
    cols = {f"{k}_flux": ds[f"true_{k}_flux"].values for k in KEYS}
    return pd.DataFrame({"galaxy": ds["galaxy"].values.astype(str), **cols})


def score(truth: pd.DataFrame, cat: pd.DataFrame) -> dict:
    """Per line: summary numbers and the per-bin table, JSON-ready.

    Fits at or below zero count as upper limits at their 1-sigma error
    (:func:`~survey_denoise.science.metrics.censor`), as Table 6 counts
    them; galaxies whose line the truth lacks, or the fit did not measure,
    are left out (``n`` says how many are scored).
    """
    labels = {k: line.label for k, line in lines.all_lines().items()}
    fitted = cat.assign(galaxy=cat["galaxy"].astype(str)).set_index("galaxy").loc[truth["galaxy"]]
    out = {}
    for k in KEYS:
        true = truth[f"{k}_flux"].to_numpy(float)
        flux = fitted[f"{k}_flux"].to_numpy(float)
        value, upper = censor(flux, fitted[f"{k}_flux_err"].to_numpy(float))
        ok = common_mask({"true": true, "fit": value})
        if ok.sum() < 2:
            continue
        s = scatter_dex(true[ok], value[ok], upper_b=upper[ok], line=k)
        out[k] = {"label": labels.get(k, k), "n": s.n, "n_true_positive": int(np.sum(true > 0)),
                  "n_fit_nonpositive": int(np.sum((true > 0) & ~(flux > 0))),
                  "bias_dex": s.median_offset, "sigma_dex": s.sigma, "sigma_fill_dex": s.sigma_fill,
                  "bins": s.bins.replace({np.nan: None}).to_dict(orient="records")}
    return out


def print_table(name: str, res: dict) -> None:
    print(f"\n{name}: log10(fit / true), dex (bins of log10 true flux, 1e-17 erg/s/cm2)")
    print(f"{'line':<13}{'n':>6}{'<=0':>6}{'bias':>8}{'sigma':>8}{'s_fill':>8}   per-bin median [16-84 half-width]")
    for r in res.values():
        bins = "  ".join(f"{b['centre']:.1f}:{b['d50']:+.2f}[{(b['d84'] - b['d16']) / 2:.2f}]"
                         for b in r["bins"] if b["count"] >= 10)
        print(f"{r['label']:<13}{r['n']:>6}{r['n_fit_nonpositive']:>6}{r['bias_dex']:>+8.3f}"
              f"{r['sigma_dex']:>8.3f}{r['sigma_fill_dex']:>8.3f}   {bins}")


def figure(results: dict, path: Path) -> None:
    """Median and 16-84 % band of log10(fit / true) against true flux, per line and method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 4, sharex=True).ravel()
    for ax, k in zip(axes, KEYS, strict=False):
        for name, colour in (("fast", "C0"), ("ppxf", "C3")):
            bins = [b for b in results[name].get(k, {"bins": []})["bins"] if b["count"] >= 10]
            if not bins:
                continue
            x = [b["centre"] for b in bins]
            ax.fill_between(x, [b["d16"] for b in bins], [b["d84"] for b in bins], color=colour, alpha=0.2)
            ax.plot(x, [b["d50"] for b in bins], color=colour, marker="o", ms=3, label=name)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylim(-1, 1)
        ax.set_title(results["fast"].get(k, {"label": k})["label"], fontsize=9)
    for ax in axes[len(KEYS):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.supxlabel("log10 true flux (1e-17 erg/s/cm2)")
    fig.supylabel("log10(fitted / true)")
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="galaxies (fast fitter)")
    ap.add_argument("--n-ppxf", type=int, default=300, help="first galaxies also fitted by pPXF")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=RESULTS / "recovery.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    with dask.config.set(scheduler="synchronous"):
        ids = select("uniform-halpha", args.n, args.seed)
        raw = generate(ids, MockConfig(seed=args.seed, survey="sdss"), chunk_size=500,
                       design="uniform-halpha").compute()
        t_mock = time.perf_counter() - t0
        rest = preprocess(raw.chunk({"galaxy": 500})).compute()
        truth = truth_frame(raw)
        t1 = time.perf_counter()
        cat_fast = to_frame(fit_lines(rest, method="fast").compute())
        t_fast = time.perf_counter() - t1
        t1 = time.perf_counter()
        sub = rest.isel(galaxy=slice(0, args.n_ppxf)).chunk({"galaxy": 50})
        cat_ppxf = to_frame(fit_lines(sub, method="ppxf").compute())
        t_ppxf = time.perf_counter() - t1
    sub_truth = truth.iloc[:args.n_ppxf]
    results = {"fast": score(truth, cat_fast), "ppxf": score(sub_truth, cat_ppxf),
               "fast_on_ppxf_subset": score(sub_truth, cat_fast)}
    for name, res in results.items():
        print_table(name, res)
    status = {name: cat["status"].value_counts().to_dict() for name, cat in
              (("fast", cat_fast), ("ppxf", cat_ppxf))}
    meta = {"command": f"OMP_NUM_THREADS=1 python benchmarks/recovery.py --n {args.n} --n-ppxf {args.n_ppxf} "
                       f"--seed {args.seed}",
            "mock": {"design": "uniform-halpha", "survey": "sdss", "frame": "observed, with noise",
                     "seed": args.seed, "n": args.n, "n_ppxf": args.n_ppxf},
            "preprocess": "survey_denoise.preprocess.preprocess (GRID, l2)",
            "reference": "truth table true_<key>_flux (1e-17 erg/s/cm2); judged: fitted <key>_flux",
            "seconds": {"mock": t_mock, "fast": t_fast, "ppxf": t_ppxf,
                        "total": time.perf_counter() - t0},
            "fit_status_counts": {m: {str(k): int(v) for k, v in s.items()} for m, s in status.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **results}, indent=1, default=float))
    png = args.out.with_suffix(".png")
    figure(results, png)
    print(f"\nmock {t_mock:.0f} s, fast {t_fast:.1f} s ({args.n}), pPXF {t_ppxf:.0f} s ({args.n_ppxf}); "
          f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
