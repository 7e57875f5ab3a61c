"""Sub-commands that run one stage from a store to a new store.

``survey-denoise preprocess IN --out OUT``: raw (observed) -> rest frame, on the grid, normalised.
``survey-denoise degrade IN --out OUT --noise uniform:0.04|desi``: add noise to a rest-frame store.
``survey-denoise denoise IN --model MODEL_DIR --out OUT``: de-noise a rest-frame store.

Their options are the stages' declared parameters
(:mod:`survey_denoise.pipeline.params`), with the same defaults as a
pipeline config, and each calls the stage's registered kernel.  Each opens
its input lazily (refusing an incomplete or foreign store before
any cluster starts), builds the stage's lazy dataset and writes it chunk by
chunk on the cluster with a progress bar; ``--resume`` finishes an
interrupted run.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline.params import Degrade, Denoise, Preprocess
from ..pipeline.registry import STAGES
from .common import UserError, client_for, cluster_option, no_progress_option, workers_option
from .params import declared


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
        no_progress_option,
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


@click.command()
@_store_options
@declared(Preprocess)
def preprocess(store_in: Path, out: Path, cluster: str, workers: int | None, overwrite: bool,
               resume: bool, no_progress: bool, params: Preprocess) -> None:
    """Shift the spectra of raw store IN to the rest frame, resample onto the grid, normalise."""
    from ..io.store import open_store

    _check_out(out, overwrite, resume, store_in)
    ds = open_store(store_in, frame="observed")
    _write(STAGES["preprocess"].kernel(ds, params), out, cluster, workers, overwrite, resume,
           "preprocess", not no_progress)


@click.command()
@_store_options
@declared(Degrade)
def degrade(store_in: Path, out: Path, cluster: str, workers: int | None, overwrite: bool, resume: bool,
            no_progress: bool, params: Degrade) -> None:
    """Add noise to the rest-frame spectra of store IN."""
    from ..io.store import open_store

    _check_out(out, overwrite, resume, store_in)
    ds = open_store(store_in, frame="rest")
    try:
        result = STAGES["degrade"].kernel(ds, params)
    except ValueError as err:
        raise UserError(f"{store_in}: {err}") from None
    _write(result, out, cluster, workers, overwrite, resume, "degrade", not no_progress)


@click.command()
@_store_options
@declared(Denoise)
def denoise(store_in: Path, out: Path, cluster: str, workers: int | None, overwrite: bool,
            resume: bool, no_progress: bool, params: Denoise) -> None:
    """De-noise the rest-frame spectra of store IN with the saved model given by --model."""
    from ..io.store import open_store
    from ..models import check_loadable

    model_dir = Path(params.model)
    _check_out(out, overwrite, resume, store_in, model_dir)
    ds = open_store(store_in, frame="rest")
    try:
        result = STAGES["denoise"].kernel(ds, model_dir, params)
        check_loadable(model_dir)  # once here, not once per task on the cluster
    except ValueError as err:  # SchemaError included: a model made for other data
        raise UserError(str(err)) from None
    _write(result, out, cluster, workers, overwrite, resume, "denoise", not no_progress)


def _check_out(out: Path, overwrite: bool, resume: bool, *inputs: Path) -> None:
    from ..io.outputs import check_outputs

    if overwrite and resume:
        raise UserError("--overwrite and --resume exclude each other")
    check_outputs([out], inputs, overwrite=overwrite, resume=resume, resumable=[out])


def _write(ds, out: Path, cluster: str, workers: int | None, overwrite: bool, resume: bool,
           label: str, progress: bool = True) -> None:
    from .. import flags as flagbits
    from ..io.store import open_store, write_store

    with client_for(cluster, workers) as client:
        report = write_store(ds, out, resume=resume, overwrite=overwrite, client=client,
                             progress=progress, label=label)
    written = open_store(out)
    counts = flagbits.count(written["flags"].values)
    dropped = int(flagbits.dropped(written["flags"].values).sum())
    click.echo(f"{label}: {written.sizes['galaxy']} galaxies into {out} ({report.n_chunks} chunk(s), "
               f"{len(report.written)} written now, {report.seconds:.1f} s); {dropped} dropped")
    if counts:
        click.echo("flags: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
