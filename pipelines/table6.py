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
predicted set; :func:`survey_denoise.science.metrics.compare_catalogues`
scores each model against the original spectra's fluxes (physical units),
and :func:`~survey_denoise.science.metrics.table6` lays them out.  The
noise-added spectra themselves are scored too, as the baseline a
de-noiser must beat.

Writes under ``--out`` (default ``pipelines/results``): ``table6.csv``,
``table6.md`` (the table, the paper's beside it, and a header saying exactly
what was run) and ``figure9-<model>.png``; models and catalogues go to
``--work`` (default ``runs/table6``).

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
from survey_denoise.science.metrics import (  # noqa: E402
    TABLE6_LINES,
    compare_catalogues,
    figure9,
    summary,
    table6,
)

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
    results, cats = {}, {}
    for kind in MODELS:
        with dask.config.set(scheduler="synchronous"):
            predicted = denoise(te_noisy, models[kind]["folder"]).compute()
        cats[kind] = fit(predicted, method)
        write_catalogue(cats[kind], work / "catalogues" / f"{kind}.parquet")
        results[kind] = compare_catalogues(cat_orig, cats[kind])
        figure9(cat_orig, cats[kind], save=out / f"figure9-{kind}.png")
    cats["noise-added"] = fit(te_noisy, method)
    results["noise-added"] = compare_catalogues(cat_orig, cats["noise-added"])
    t_fit = time.perf_counter() - t0

    table = table6(results)
    table.to_csv(out / "table6.csv")
    offsets = pd.concat({m: summary(r).set_index("line")["median_offset"] for m, r in results.items()}, axis=1)
    header = {
        "command": command,
        "galaxies": {"total": int(noisy.sizes["galaxy"]), "train": int(train.size), "test": int(test.size),
                     "validation_split": cfg["validation_split"]},
        "mock": {"design": cfg["design"], "seed": cfg["seed"], "frame": "rest (grid), SDSS-like noise"},
        "noise": cfg["noise"], "fit_method": method, "flux": "physical (1e-17 erg/s/cm2)",
        "models": {k: {"epochs_run": v["epochs"], "max_epochs": None if k == "pca" else cfg["epochs"],
                       "trained_here": v["trained"], "seconds": round(v["seconds"], 1),
                       "folder": str(v["folder"])} for k, v in models.items()},
        "seconds": {"data": round(t_data, 1), "fits": round(t_fit, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
    }
    text = ["# Table 6 on the mock survey", "",
            "Scatter (dex) of log10(flux from predicted spectra / flux from original spectra), "
            "4-d models, over all points (σ) and over filled bins (σ_fill); "
            "'noise-added' is the un-de-noised input.", "",
            "What was run:", "", "```json", json.dumps(header, indent=1), "```", "",
            "## This run", "", markdown(table),
            "## The paper (Scourfield et al. 2023, Table 6; SDSS DR7, pPXF)", "",
            markdown(paper_table(table)),
            "## Median offset log10(predicted / original), dex", "",
            _offsets_markdown(offsets), ""]
    (out / "table6.md").write_text("\n".join(text))
    print("\n".join(text[-9:]))
    return table


def _offsets_markdown(offsets: pd.DataFrame) -> str:
    out = ["| line | " + " | ".join(offsets.columns) + " |", "|---" * (offsets.shape[1] + 1) + "|"]
    out += [f"| {k} | " + " | ".join(f"{v:+.3f}" for v in row) + " |" for k, row in offsets.iterrows()]
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
