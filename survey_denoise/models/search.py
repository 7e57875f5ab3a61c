"""Random hyper-parameter search for the AE and VAE, as in the paper (§3.2).

Each trial draws a dropout rate (0-0.9, step 0.1: 0, no dropout, is in the
space), a number of encoder
layers (2-4) and their widths (100-1000, step 100, each no wider than the
previous), trains for at most ``epochs`` (the paper: 25) and is scored by
its final validation loss, averaged over ``executions`` repeats.  The best
trial is the one with the lowest score; the caller retrains it for longer
(the paper: 200 epochs).

A plain sampler rather than KerasTuner: the space is four numbers, trials
are independent, and a plain function maps directly onto Dask tasks
(``client.map``), so trials run in parallel on the cluster's workers.
Every trial and the choice are written to a CSV table.
"""

from __future__ import annotations

import time
from pathlib import Path

import dask
import numpy as np
import pandas as pd

DROPOUTS = np.round(np.arange(0.0, 0.91, 0.1), 1)
WIDTHS = np.arange(100, 1001, 100)
LAYERS = (2, 3, 4)


def sample_trials(n: int, seed: int) -> list[dict]:
    """``n`` random architectures: ``{"trial", "dropout", "units"}`` (widths non-increasing)."""
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n):
        depth = int(rng.choice(LAYERS))
        units = [int(rng.choice(WIDTHS))]
        for _ in range(depth - 1):
            units.append(int(rng.choice(WIDTHS[WIDTHS <= units[-1]])))
        trials.append({"trial": i, "dropout": float(rng.choice(DROPOUTS)), "units": units})
    return trials


def run_trial(kind: str, latent: int, trial: dict, noisy, clean, *, epochs: int, seed: int,
              executions: int = 1, validation_split: float = 0.2, preset: str = "default") -> dict:
    """Train one architecture ``executions`` times; return the trial with its scores.

    ``noisy``/``clean`` may be store paths, so a Dask worker opens them itself.
    """
    from . import model_class

    t0 = time.perf_counter()
    finals, epochs_run = [], []
    for k in range(executions):
        model = model_class(kind)(latent, units=trial["units"], dropout=trial["dropout"],
                                  epochs=epochs, seed=seed + k, preset=preset)
        # The stores are read in this thread.  Inside a Dask task, computing their
        # arrays would otherwise go to the cluster's scheduler; the task secedes
        # while it waits, and its worker starts another trial on the same core.
        with dask.config.set(scheduler="synchronous"):
            # The same validation galaxies for every trial, so scores compare.
            model.fit(noisy, clean, validation_split=validation_split, seed=seed)
        hist = model.card_["history"]
        # The Gaussian likelihood's total holds sum(log v); trials compare on the
        # reconstruction term, the paper's loss.
        watched = "reconstruction" if "reconstruction" in hist and model.predicts_variance() else "loss"
        losses = hist.get(f"val_{watched}", hist[watched])
        # Scored at the epoch whose weights the model keeps.
        best = model.card_.get("training_choices", {}).get("best_epoch")
        kept = best if best is not None and model.settings()["restore_best"] else -1
        finals.append(losses[kept])
        epochs_run.append(len(hist["loss"]))
    # Wall time of every execution with its error calibration: what a trial costs on this worker.
    return {**trial, "score": float(np.mean(finals)), "final_val_losses": finals,
            "epochs_run": epochs_run, "seconds": time.perf_counter() - t0}


def random_search(kind: str, latent: int, noisy, clean, *, n_trials: int, epochs: int = 25,
                  seed: int = 0, executions: int = 1, client=None,
                  table: str | Path | None = None, preset: str = "default") -> tuple[dict, pd.DataFrame]:
    """Run ``n_trials`` random trials; return the best trial and the table of all.

    Parameters
    ----------
    kind : {"ae", "vae"}
        Which network.
    latent : int
        Latent dimensions.
    noisy, clean : arrays, Datasets or store paths
        Training data (paths are best with a ``client``).
    n_trials, epochs : int
        Trials, and the most epochs each (the paper: 100 x 25).
    seed : int
        Seed of the sampled architectures, initial weights and validation split.
    executions : int
        Trainings per trial; the score is the mean final validation loss.
    client : distributed.Client, optional
        Run trials as Dask tasks (one per trial); default: one after another here.
    table : path, optional
        CSV of every finished trial and a ``chosen`` column, rewritten as
        each trial finishes.
    preset : str
        Training choices of every trial (see :data:`~.training.PRESETS`);
        the trial's dropout and widths replace the preset's.
    """
    if n_trials < 1:
        raise ValueError(f"a search needs at least one trial, got n_trials={n_trials}")
    return run_trials(kind, latent, sample_trials(n_trials, seed), noisy, clean, epochs=epochs,
                      seed=seed, executions=executions, client=client, table=table, preset=preset)


def run_trials(kind: str, latent: int, trials: list[dict], noisy, clean, *, epochs: int = 25,
               seed: int = 0, executions: int = 1, client=None, table: str | Path | None = None,
               preset: str = "default") -> tuple[dict, pd.DataFrame]:
    """Train and score the given trials; return the best trial and the table of all.

    :func:`random_search` on architectures chosen elsewhere: a search's
    trials again at another dropout rate, or a shortlist with more
    executions.  ``trials`` are dicts with ``trial`` (an int id),
    ``dropout`` and ``units``; the other parameters are those of
    :func:`random_search`.
    """
    if kind not in ("ae", "vae"):
        raise ValueError(f"random search is for the ae and vae models, not {kind!r}")
    if not trials:
        raise ValueError("no trials to run")
    kwargs = {"epochs": epochs, "seed": seed, "executions": executions, "preset": preset}
    results: list[dict] = []
    if client is not None:
        from distributed import as_completed

        n = len(trials)
        futures = client.map(run_trial, [kind] * n, [latent] * n, trials,
                             [noisy] * n, [clean] * n, pure=False, **kwargs)
        finished = (f.result() for f in as_completed(futures))
    else:
        finished = (run_trial(kind, latent, t, noisy, clean, **kwargs) for t in trials)
    for result in finished:
        results.append(result)
        # Rewritten after every trial: a search stopped part-way keeps what it ran.
        frame = trial_table(results, kind, latent)
        if table is not None:
            write_table(frame, table)
    best = frame.loc[frame["chosen"], "trial"].item()
    return next(r for r in results if r["trial"] == best), frame


def trial_table(results: list[dict], kind: str, latent: int) -> pd.DataFrame:
    """Finished trials in trial order, with a ``chosen`` column (lowest score)."""
    frame = pd.DataFrame(results).sort_values("trial", ignore_index=True)
    frame.insert(1, "kind", kind)
    frame.insert(2, "latent", latent)
    frame["layers"] = frame["units"].map(len)
    frame["chosen"] = frame.index == int(frame["score"].idxmin())
    return frame


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """The trial table as CSV, list columns as space-separated numbers."""
    out = frame.copy()
    for col in ("units", "final_val_losses", "epochs_run"):
        out[col] = out[col].map(lambda v: " ".join(str(x) for x in v))
    tmp = Path(path).with_suffix(".tmp")
    out.to_csv(tmp, index=False)
    tmp.replace(path)
