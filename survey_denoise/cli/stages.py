"""Sub-commands that run one stage from a store to a new store.

``survey-denoise preprocess IN --out OUT``: raw (observed) -> rest frame, on the grid, normalised.
``survey-denoise degrade IN --out OUT --noise uniform:0.04|desi``: add noise to a rest-frame store.
``survey-denoise denoise IN --model MODEL_DIR --out OUT``: de-noise a rest-frame store.

Their options are the stages' declared parameters
(:mod:`survey_denoise.pipeline.params`), with the same defaults as a
pipeline config.  Each is a one-step plan
(:meth:`~survey_denoise.pipeline.plan.Plan.single`), which ``--check``
prints as ``run --check`` prints a run's.  Each opens its input lazily
(refusing an incomplete or foreign store before any cluster starts),
builds the stage's lazy dataset with its registered kernel and executes
the plan (:mod:`survey_denoise.pipeline.single`): the store is written chunk
by chunk on the cluster with a progress bar; ``--resume`` finishes an
interrupted run.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline.params import Degrade, Denoise, Preprocess
from .common import UserError, client_for, cluster_option, no_progress_option, workers_option
from .params import declared

check_option = click.option("--check", "check_only", is_flag=True,
                            help="Only check the input and print the one-step plan; run nothing.")


def _store_options(command):
    """Options every store-to-store stage takes."""
    decorators = [
        click.argument("store_in", metavar="IN", type=click.Path(path_type=Path)),
        click.option("--out", "out", required=True, type=click.Path(path_type=Path),
                     help="Zarr store to write."),
        cluster_option,
        workers_option,
        click.option("--overwrite", is_flag=True, help="Replace an existing output store."),
        click.option("--resume", is_flag=True, help="Finish an interrupted write of the same output."),
        check_option,
        no_progress_option,
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


@click.command()
@_store_options
@declared(Preprocess)
def preprocess(store_in: Path, out: Path, cluster: str, workers: int | None, overwrite: bool,
               resume: bool, check_only: bool, no_progress: bool, params: Preprocess) -> None:
    """Shift the spectra of raw store IN to the rest frame, resample onto the grid, normalise."""
    _check_out(out, overwrite, resume, store_in)
    _execute(_plan("preprocess", params, store_in, out, cluster, frame="observed"), check_only,
             workers, overwrite, resume, not no_progress)


@click.command()
@_store_options
@declared(Degrade)
def degrade(store_in: Path, out: Path, cluster: str, workers: int | None, overwrite: bool, resume: bool,
            check_only: bool, no_progress: bool, params: Degrade) -> None:
    """Add noise to the rest-frame spectra of store IN."""
    _check_out(out, overwrite, resume, store_in)
    _execute(_plan("degrade", params, store_in, out, cluster), check_only, workers, overwrite, resume,
             not no_progress, where=f"{store_in}: ")


@click.command()
@_store_options
@declared(Denoise)
def denoise(store_in: Path, out: Path, cluster: str, workers: int | None, overwrite: bool,
            resume: bool, check_only: bool, no_progress: bool, params: Denoise) -> None:
    """De-noise the rest-frame spectra of store IN with the saved model given by --model."""
    from ..models import check_loadable

    model_dir = Path(params.model)
    _check_out(out, overwrite, resume, store_in, model_dir)
    plan = _plan("denoise", params, store_in, out, cluster, extra=(str(model_dir),))
    _execute(plan, check_only, workers, overwrite, resume, not no_progress,
             # once here, not once per task on the cluster
             check=lambda: check_loadable(model_dir))


def _plan(stage: str, params, store_in: Path, out: Path, cluster: str, **how):
    from ..pipeline.plan import Plan

    return Plan.single(stage, params, store_in, out, cluster=cluster, **how)


def _execute(plan, check_only: bool, workers: int | None, overwrite: bool, resume: bool,
             progress: bool, *, where: str = "", check=None) -> None:
    """Print the plan (``--check``) or carry it out; a kernel's ValueError is the user's."""
    from ..io.store import open_store
    from ..pipeline.single import build

    if check_only:
        click.echo(repr(plan))
        return
    source = plan.config.input.store
    open_store(source.path, frame=source.frame)  # a foreign or incomplete store: its own error
    try:
        build(plan)  # opens the input and builds the graph: refused before a cluster starts
        if check is not None:
            check()
    except ValueError as err:  # SchemaError included: a model made for other data
        raise UserError(f"{where}{err}") from None
    out = plan.folder / plan.steps[0].outputs[0]
    _write(plan, out, workers, overwrite, resume, plan.steps[0].stage, progress)


def _check_out(out: Path, overwrite: bool, resume: bool, *inputs: Path) -> None:
    from ..io.outputs import check_outputs

    if overwrite and resume:
        raise UserError("--overwrite and --resume exclude each other")
    check_outputs([out], inputs, overwrite=overwrite, resume=resume, resumable=[out])


def _write(plan, out: Path, workers: int | None, overwrite: bool, resume: bool,
           label: str, progress: bool = True) -> None:
    from .. import flags as flagbits
    from ..io.store import open_store

    with client_for(plan.cluster, workers) as client:
        report = plan.execute(client, resume=resume, overwrite=overwrite, progress=progress)
    written = open_store(out)
    counts = flagbits.count(written["flags"].values)
    dropped = int(flagbits.dropped(written["flags"].values).sum())
    click.echo(f"{label}: {written.sizes['galaxy']} galaxies into {out} ({report.n_chunks} chunk(s), "
               f"{len(report.written)} written now, {report.seconds:.1f} s); {dropped} dropped")
    if counts:
        click.echo("flags: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
