"""Table 6 of Scourfield et al. (2023) on the mock: line fluxes of original vs predicted spectra.

The data are Figure 7's (:func:`figure7.make_data` and its seeded split): the
uniform-Halpha mock on the grid, unit L2 norm ("original", with the mock's
SDSS-like noise and ivar), sigma = 0.04 noise added ("noise-added"),
``n_train`` train / the rest test.  The 4-d PCA, AE and VAE (the paper's
Table 4-5 architectures and training rules unless told otherwise) are
trained on the training set, or loaded from ``--models-from`` (e.g. Figure
7's ``runs/figure7/models``: the same data and split when its config is
unchanged).  The test set's noise-added spectra are de-noised with
:func:`survey_denoise.inference.denoise`, and lines are fitted
(:func:`survey_denoise.fitting.fit_lines`) on the original and on every
predicted set; :func:`survey_denoise.science.metrics.score_catalogues`
scores every model, and the noise-added spectra themselves (the baseline a
de-noiser must beat), on the same test galaxies: against the original
spectra's fluxes (the paper's measure, physical units) and against the
mock's true fluxes, with zero or negative fits counted as upper limits
(never dropped), the painted-line rate (true flux below 3x the noise-added
spectrum's flux error, de-noised S/N > 3) and the median over-prediction in
the faintest true-flux bin.

Writes under ``--out`` (default ``pipelines/results``): ``table6.csv`` (the
paper's layout, against the original), ``table6_scores.csv`` (one row per
line and method: N, limits, missing fits, sigma and sigma_fill against the
original and the truth, painted rate, faint-bin offset),
``table6_bins.csv`` (per bin of true flux), ``table6_coverage.csv`` (coverage of the true
fluxes by each catalogue's errors, per line and bin), ``table6.md`` (all of it, the
paper's table beside ours, and a header saying exactly what was run) and
``figure9-<model>.png``; models and catalogues go to ``--work`` (default
``runs/table6``).

Usage::

    python pipelines/table6.py [--n 10000] [--n-train 8000] [--epochs 200]
        [--method ppxf|fast] [--models-from DIR] [--out DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dask  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from figure7 import make_data, read_config  # noqa: E402

from survey_denoise.fitting import fit_lines  # noqa: E402
from survey_denoise.fitting.catalogue import to_frame, write_catalogue  # noqa: E402
from survey_denoise.inference import denoise  # noqa: E402
from survey_denoise.models import model_class  # noqa: E402
from survey_denoise.plots import figure9  # noqa: E402
from survey_denoise.science.calibration import COVERAGE_LINES, line_coverage  # noqa: E402
from survey_denoise.science.metrics import TABLE6_LINES, score_catalogues, table6  # noqa: E402

HERE = Path(__file__).parent
LATENT = 4
MODELS = ("pca", "ae", "vae")
PAPER = {  # Scourfield et al. (2023) Table 6: (sigma, sigma_fill) in dex, 4-d models, pPXF on SDSS
    "pca": {"halpha": (0.44, 0.31), "hdelta": (0.56, 0.39), "oiii_4363": (1.00, 0.59),
            "sii_6716": (0.58, 0.37), "oiii_5007": (0.70, 0.56), "nii_6583": (0.64, 0.51)},
    "ae": {"halpha": (0.41, 0.34), "hdelta": (0.54, 0.34), "oiii_4363": (0.71, 0.59),
           "sii_6716": (0.55, 0.42), "oiii_5007": (0.52, 0.41), "nii_6583": (0.62, 0.52)},
    "vae": {"halpha": (0.36, 0.29), "hdelta": (0.45, 0.37), "oiii_4363": (0.74, 0.63),
            "sii_6716": (0.52, 0.38), "oiii_5007": (0.55, 0.44), "nii_6583": (0.56, 0.45)},
}


def split(cfg: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Figure 7's train/test split (same seed, same rule), so its models can be reused."""
    order = np.random.default_rng(cfg["seed"]).permutation(n)
    return np.sort(order[:cfg["n_train"]]), np.sort(order[cfg["n_train"]:])


def get_model(kind: str, cfg: dict, train_noisy, train_clean, work: Path, models_from: Path | None) -> dict:
    """Train (or load) one 4-d model; its folder and what was done."""
    folder = work / "models" / f"{kind}-{LATENT}"
    if models_from is not None and (models_from / f"{kind}-{LATENT}" / "card.json").exists():
        folder = models_from / f"{kind}-{LATENT}"
        card = json.loads((folder / "card.json").read_text())
        return {"folder": folder, "trained": False, "epochs": len(card.get("history", {}).get("loss", [])),
                "seconds": 0.0}
    params = {"seed": cfg["seed"]} if kind == "pca" else {"seed": cfg["seed"], "epochs": cfg["epochs"]}
    t0 = time.perf_counter()
    model = model_class(kind)(LATENT, **params).fit(train_noisy, train_clean,
                                                     validation_split=cfg["validation_split"])
    seconds = time.perf_counter() - t0
    model.save(folder)
    hist = model.card_["history"]
    return {"folder": folder, "trained": True, "epochs": len(hist.get("loss", [])), "seconds": seconds,
            "val_mse": model.card_["metrics"].get("val_mse")}


def fit(ds, method: str):
    with dask.config.set(scheduler="synchronous"):
        return to_frame(fit_lines(ds.chunk({"galaxy": 250}), method=method).compute())


def markdown(table: pd.DataFrame) -> str:
    heads = [f"{line} {stat}" for line, stat in table.columns]
    out = ["| model | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for name, row in table.iterrows():
        out.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    return "\n".join(out) + "\n"


def paper_table(like: pd.DataFrame) -> pd.DataFrame:
    rows = [[v for k in TABLE6_LINES for v in PAPER[m][k]] for m in MODELS]
    return pd.DataFrame(rows, index=pd.Index([f"{m} (paper)" for m in MODELS], name="model"),
                        columns=like.columns)


def run(cfg: dict, method: str, out: Path, work: Path, models_from: Path | None, command: str) -> pd.DataFrame:
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (work / "catalogues").mkdir(parents=True, exist_ok=True)
    noisy, original = make_data(cfg)
    train, test = split(cfg, noisy.sizes["galaxy"])
    te_noisy, te_clean = noisy.isel(galaxy=test), original.isel(galaxy=test)
    truth = pd.DataFrame({"galaxy": te_clean["galaxy"].values,
                          **{f"true_{k}_flux": te_clean[f"true_{k}_flux"].values for k in TABLE6_LINES}})
    t_data = time.perf_counter() - t_start

    models = {}
    for kind in MODELS:
        models[kind] = get_model(kind, cfg, noisy.isel(galaxy=train), original.isel(galaxy=train),
                                 work, models_from)
        print(f"{kind}: {'trained' if models[kind]['trained'] else 'loaded'} "
              f"({models[kind]['epochs']} epochs, {models[kind]['seconds']:.0f} s)", flush=True)

    t0 = time.perf_counter()
    cat_orig = fit(te_clean, method)
    write_catalogue(cat_orig, work / "catalogues" / "original.parquet")
    cats = {}
    for kind in MODELS:
        with dask.config.set(scheduler="synchronous"):
            predicted = denoise(te_noisy, models[kind]["folder"]).compute()
        cats[kind] = fit(predicted, method)
        write_catalogue(cats[kind], work / "catalogues" / f"{kind}.parquet")
    cats["noise-added"] = fit(te_noisy, method)
    write_catalogue(cats["noise-added"], work / "catalogues" / "noise-added.parquet")
    t_fit = time.perf_counter() - t0

    scores = score_catalogues(cats, cat_orig, truth, noisy="noise-added")
    for kind in (*MODELS, "noise-added"):
        figure9(scores, kind, save=out / f"figure9-{kind}.png")
    table = table6(scores)
    table.to_csv(out / "table6.csv")
    every = scores.counts.rename(columns={"n_measured": "n_measured_all", "n_upper": "n_upper_all",
                                          "n_missing": "n_missing_all"})
    long = scores.summary.merge(every, on=["line", "method"], how="left")
    long.to_csv(out / "table6_scores.csv", index=False)
    scores.bins.to_csv(out / "table6_bins.csv", index=False)
    calib = coverage_table(cats, cat_orig, truth)
    calib.to_csv(out / "table6_coverage.csv", index=False)
    header = {
        "command": command,
        "galaxies": {"total": int(noisy.sizes["galaxy"]), "train": int(train.size), "test": int(test.size),
                     "validation_split": cfg["validation_split"]},
        "mock": {"design": cfg["design"], "seed": cfg["seed"], "frame": "rest (grid), SDSS-like noise"},
        "noise": cfg["noise"], "fit_method": method, "flux": "physical (1e-17 erg/s/cm2)",
        "scoring": {**scores.settings, "upper_limit": "flux <= 0 -> limit_sigma x flux error",
                    "common_set": "test galaxies with a flux or limit in every catalogue and a true flux > 0"},
        "models": {k: {"epochs_run": v["epochs"], "max_epochs": None if k == "pca" else cfg["epochs"],
                       "trained_here": v["trained"], "seconds": round(v["seconds"], 1),
                       "folder": str(v["folder"])} for k, v in models.items()},
        "seconds": {"data": round(t_data, 1), "fits": round(t_fit, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
    }
    text = ["# Table 6 on the mock survey", "",
            "Scatter (dex) of log10(flux from predicted spectra / reference flux), 4-d models, over all "
            "points (σ) and over filled bins (σ_fill), every method on the same test galaxies (the "
            "common set); a line fitted at zero flux is an upper limit at "
            f"{scores.settings['limit_sigma']:g}x its flux error, scored at that value, never dropped. "
            "'noise-added' is the un-de-noised input.", "",
            "What was run:", "", "```json", json.dumps(header, indent=1), "```", "",
            "## Against the original spectra's fluxes (the paper's measure)", "", markdown(table),
            "## Against the mock's true fluxes (bins in true flux)", "", markdown(table6(scores, against="truth")),
            "## The paper (Scourfield et al. 2023, Table 6; SDSS DR7, pPXF)", "",
            markdown(paper_table(table)),
            "## Galaxies per line and method", "",
            "Over all test galaxies: measured (flux > 0), upper limits, missing (failed fit); "
            "N common: scored for every method.", "", _counts_markdown(scores.counts),
            "## Painted lines and the faint end", "",
            f"Painted: share of galaxies whose true flux is below {scores.settings['snr']:g}x the "
            f"noise-added spectrum's flux error that the method reports at S/N > {scores.settings['snr']:g} "
            "(n painted / n faint).  Faint offset: median log10(method / true), dex, in the faintest "
            "true-flux bin (limits at their value).  Median offsets against the original and the truth, dex.",
            "", _faint_markdown(scores.summary),
            "## Per bin of true flux: median log10(method / true) (σ), dex", "",
            _bins_markdown(scores.bins),
            "## Are the errors honest?  Coverage of the true flux by the fitted errors", "",
            "Fraction of |fitted - true| within 1σ and 2σ of the catalogue's flux error, per bin "
            "of log10 true flux (5 bins between the 2nd and 98th percentiles; bins with < 20 "
            "galaxies left out); calibrated errors give 60-76 % and 90-98 %.", "",
            _coverage_markdown(calib), ""]
    (out / "table6.md").write_text("\n".join(text))
    print(markdown(table))
    print(_faint_markdown(scores.summary))
    return table


def coverage_table(cats: dict[str, pd.DataFrame], original: pd.DataFrame,
                   truth: pd.DataFrame) -> pd.DataFrame:
    """Coverage of the true fluxes by each catalogue's errors, per line and true-flux bin."""
    true = truth.rename(columns={f"true_{k}_flux": f"{k}_flux" for k in TABLE6_LINES})
    # bins come from the true fluxes alone, so every method gets the same ones
    rows = [tab.assign(line=k, method=method)
            for method, cat in {"original": original, **cats}.items()
            for k, tab in line_coverage(cat, true, keys=COVERAGE_LINES).items()]
    return pd.concat(rows, ignore_index=True)


def _coverage_markdown(calib: pd.DataFrame) -> str:
    out = []
    for line, sub in calib.groupby("line", sort=False):
        methods = list(dict.fromkeys(sub["method"]))
        bins = list(dict.fromkeys(sub["bin"]))
        out += [f"**{line}**", "", "| log10 true flux | " + " | ".join(methods) + " |",
                "|---" * (len(methods) + 1) + "|"]
        for b in bins:
            cells = []
            for m in methods:
                r = sub[(sub["method"] == m) & (sub["bin"] == b)]
                cells.append("-" if r.empty else
                             f"{r['within_1sigma'].iloc[0]:.2f} / {r['within_2sigma'].iloc[0]:.2f} "
                             f"({r['count'].iloc[0]})")
            out.append(f"| {b} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def _counts_markdown(counts: pd.DataFrame) -> str:
    out = ["| line | method | measured | upper limits | missing | N common |", "|---" * 6 + "|"]
    out += [f"| {r.line} | {r.method} | {r.n_measured} | {r.n_upper} | {r.n_missing} | {r.n_common} |"
            for r in counts.itertuples()]
    return "\n".join(out) + "\n"


def _faint_markdown(summary: pd.DataFrame) -> str:
    out = ["| line | method | N | limits | offset vs original | offset vs truth | painted | faint offset (N) |",
           "|---" * 8 + "|"]
    for r in summary.itertuples():
        painted = "-" if np.isnan(r.painted_rate) else f"{r.painted_rate:.3f} ({r.n_painted}/{r.n_faint})"
        out.append(f"| {r.line} | {r.method} | {r.n} | {r.n_upper} | {r.offset_orig:+.3f} | {r.offset_truth:+.3f} "
                   f"| {painted} | {r.faint_offset:+.3f} ({r.n_faint_bin}) |")
    return "\n".join(out) + "\n"


def _bins_markdown(bins: pd.DataFrame) -> str:
    out = []
    for line, sub in bins.groupby("line", sort=False):
        methods = list(dict.fromkeys(sub["method"]))
        out += [f"**{line}**", "", "| log10 true flux | N | " + " | ".join(methods) + " |",
                "|---" * (len(methods) + 2) + "|"]
        first = sub[sub["method"] == methods[0]]
        for i, (lo, hi, count) in enumerate(zip(first["lo"], first["hi"], first["count"], strict=True)):
            cells = []
            for m in methods:
                r = sub[sub["method"] == m].iloc[i]
                cells.append("-" if r["count"] == 0 else f"{r['offset_truth']:+.2f} ({r['sigma_truth']:.2f})")
            out.append(f"| {lo:.2f} to {hi:.2f} | {count} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "experiments" / "models.yaml",
                    help="data settings (Figure 7's config by default)")
    ap.add_argument("--n", type=int, help="galaxies (train = 80 %% unless --n-train)")
    ap.add_argument("--n-train", type=int)
    ap.add_argument("--epochs", type=int, help="maximum epochs for AE and VAE [config: 200]")
    ap.add_argument("--method", choices=("ppxf", "fast"), default="ppxf")
    ap.add_argument("--models-from", type=Path, help="folder with pca-4/, ae-4/, vae-4/ to reuse")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--work", type=Path, default=Path("runs/table6"))
    args = ap.parse_args(argv)
    cfg = read_config(args)
    command = "python pipelines/table6.py " + " ".join(argv if argv is not None else sys.argv[1:])
    return run(cfg, args.method, args.out, args.work, args.models_from, command.strip())


if __name__ == "__main__":
    main()
