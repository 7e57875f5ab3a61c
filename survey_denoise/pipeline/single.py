"""A stand-alone command's one-step plan, carried out.

``survey-denoise preprocess|degrade|denoise|fit IN --out OUT`` each build a
:meth:`Plan.single <survey_denoise.pipeline.plan.Plan.single>` and execute
it here: the step's inputs are resolved as the runner resolves them (the
store, then paths such as a model folder), the stage's registered kernel
builds the lazy output, and :func:`~survey_denoise.io.store.write_store`
writes it chunk by chunk, the same writer a run uses, so ``--resume``
finishes only the chunks without a marker and ``--overwrite`` swaps in the
new store when complete.  A command writes no run folder and no
``run.json``: its output is the one store (and, for a fit, the catalogue's
Parquet and FITS beside it).

``survey-denoise train KIND --noisy N --clean C --out MODEL`` is carried out
by :func:`train_step`: an optional random search on the cluster, then
:func:`~.stages.train`, the function a run's train step calls, into a
staged folder that replaces ``MODEL`` only once the new model is saved.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .registry import STAGES


def run_step(plan, client, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
             echo: Callable[[str], None] = print):
    """Carry out the single step of ``plan`` on ``client``.

    Parameters
    ----------
    plan : Plan
        A one-step plan (:meth:`~survey_denoise.pipeline.plan.Plan.single`).
    client : distributed.Client
        Where the chunks are computed.
    resume, overwrite : bool
        Finish an interrupted write of the same store; replace an existing one.
    progress : bool
        A progress bar over the chunks (over the epochs, for ``train``).
    echo : callable
        Where ``train``'s one-line messages go.

    Returns
    -------
    WriteReport or Denoiser
        Chunks planned and written, seconds; for ``train``, the saved model.
    """
    from ..io.store import write_store

    if plan.steps[-1].stage == "train":
        return train_step(plan, client, overwrite=overwrite, progress=progress, echo=echo)
    (step,) = plan.steps
    ds = build(plan)
    out = plan.folder / step.outputs[0]
    catalogue = step.stage == "fit"
    label = f"fit ({plan.params(step).method})" if catalogue else step.stage
    report = write_store(ds, out, resume=resume, overwrite=overwrite, client=client,
                         progress=progress, label=label, spectra=not catalogue)
    if catalogue:
        from ..io.outputs import replacing
        from .stages import catalogue_files, in_one_task

        with replacing(*(plan.folder / name for name in step.outputs[1:])) as staged:
            in_one_task(client, catalogue_files, out, staged[0])
    return report


def build(plan):
    """The lazy output of the single step of ``plan``: its kernel on its resolved inputs.

    Raises
    ------
    ValueError
        From the kernel, when the parameters do not fit the data.
    """
    from ..io.store import open_store

    (step,) = plan.steps
    source = plan.config.input.store
    inputs = [open_store(source.path, frame=source.frame), *(Path(name) for name in step.inputs[1:])]
    return STAGES[step.stage].kernel(*inputs, plan.params(step))


def train_step(plan, client=None, *, overwrite: bool = False, progress: bool = True,
               echo: Callable[[str], None] = print):
    """Carry out a ``train`` plan: its random search (if planned) on ``client``, then the training here.

    Parameters
    ----------
    plan : Plan
        From :meth:`~survey_denoise.pipeline.plan.Plan.single` with stage ``train``.
    client : distributed.Client, optional
        Where the search's trials run; needed only with ``plan.search``.
    overwrite : bool
        Replace an existing model folder (the old one stays until the new one is saved).
    progress : bool
        A bar over the epochs.
    echo : callable
        Where the one-line messages go.

    Returns
    -------
    Denoiser
        The saved model.

    Raises
    ------
    FileExistsError
        If the model folder exists and ``overwrite`` is not set.
    ValueError
        When the stores cannot train the model.
    """
    from ..io.outputs import replacing
    from ..io.store import open_store
    from .stages import train

    step = plan.steps[-1]
    cfg = plan.params(step)
    final = plan.folder / step.outputs[0].rstrip("/")
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; pass --overwrite to replace it")
    noisy, clean = (open_store(path, frame="rest") for path in step.inputs)
    options = {"verbose": 1 if progress else 0}
    # Beside the model folder, so the same command started again after a kill
    # finds the training's last epoch there and goes on from it.
    checkpoint = final.with_name(final.name + ".checkpoint")
    with replacing(final) as (out,):  # an old model stays until the new one is saved
        if plan.search is not None:
            options.update(_search(plan, client, out, final, echo))
        model = train(noisy, clean, cfg, out, echo=echo, checkpoint=checkpoint, **options)
    resumed = getattr(model, "resumed_at_", None)
    if resumed:
        echo(f"train: went on after epoch {resumed}, from the checkpoint a stopped run left in {checkpoint}")
    if note := model.cap_note():
        # Not trained out: its last state lets a larger cap go on instead of starting again.
        echo(f"train: {note}; the same command with a larger --epochs and --overwrite "
             f"goes on after epoch {model.epochs_run_} from {checkpoint}")
    else:
        shutil.rmtree(checkpoint, ignore_errors=True)
    return model


def _search(plan, client, out: Path, final: Path, echo: Callable[[str], None]) -> dict:
    """The random search's best architecture (``units``, ``dropout``); its table in ``out``."""
    from ..models.search import random_search

    cfg, search = plan.params(plan.steps[-1]), plan.search
    noisy, clean = plan.steps[-1].inputs
    out.mkdir(parents=True, exist_ok=True)
    echo(f"search: {search.trials} trials x <= {search.epochs} epochs on the cluster")
    best, _ = random_search(cfg.kind, cfg.latent, noisy, clean, n_trials=search.trials,
                            epochs=search.epochs, seed=cfg.seed, client=client,
                            table=out / "search.csv", preset=cfg.preset)
    echo(f"search: best trial {best['trial']}: dropout {best['dropout']}, units "
         f"{best['units']}, final validation loss {best['score']:.4g} "
         f"(all trials in {final / 'search.csv'})")
    return {"units": best["units"], "dropout": best["dropout"]}
