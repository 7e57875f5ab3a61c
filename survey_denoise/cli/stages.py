"""Sub-commands that run one stage from a store to a new store.

``survey-denoise preprocess IN --out OUT``: raw (observed) -> rest frame, on the grid, normalised.
``survey-denoise degrade IN --out OUT --noise uniform:0.04|desi``: add noise to a rest-frame store.
``survey-denoise denoise IN --model MODEL_DIR --out OUT``: de-noise a rest-frame store.

Each opens its input lazily (refusing an incomplete or foreign store before
any cluster starts), builds the stage's lazy dataset and writes it chunk by
chunk on the cluster with a progress bar; ``--resume`` finishes an
interrupted run.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import UserError, client_for, cluster_option, no_progress_option, workers_option


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
@click.option("--norm", type=click.Choice(["l2", "sum", "median"]), default="l2", show_default=True,
              help="Normalisation convention (l2 reproduces the paper's tables).")
@click.option("--min-coverage", type=click.FloatRange(0, 1), default=None,
              help="Least fraction of grid pixels a spectrum must cover.  [default: none; only a "
                   "spectrum covering none of the catalogue's lines is dropped]")
def preprocess(store_in: Path, out: Path, cluster: str, workers: int | None, overwrite: bool,
               resume: bool, no_progress: bool, norm: str, min_coverage: float | None) -> None:
    """Shift the spectra of raw store IN to the rest frame, resample onto the grid, normalise."""
    from ..io.store import open_store
    from ..preprocess import DEFAULT_MIN_COVERAGE
    from ..preprocess import preprocess as run

    _check_out(out, overwrite, resume, store_in)
    ds = open_store(store_in, frame="observed")
    coverage = DEFAULT_MIN_COVERAGE if min_coverage is None else min_coverage
    result = run(ds, norm=norm, min_coverage=coverage)
    _write(result, out, cluster, workers, overwrite, resume, "preprocess", not no_progress)


@click.command()
@_store_options
@click.option("--noise", "noise_spec", required=True, metavar="uniform[:SIGMA]|desi[:SCALE]",
              help="uniform:0.04 (sigma in normalised units) or desi (DESI-like, physical units; "
                   "desi:2 doubles its sigma).")
@click.option("--z-target", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Move every galaxy to this redshift first (desi noise only).")
@click.option("--exptime", type=click.FloatRange(min=0, min_open=True), default=None,
              help="DESI exposure time to simulate, seconds (BGS: 180; default the noise curve's "
                   "own depth; desi noise only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (per galaxy streams).")
@click.option("--cosmology", default="Planck18", show_default=True,
              help="astropy cosmology for luminosity distances (with --z-target).")
def degrade(store_in: Path, out: Path, cluster: str, workers: int | None, overwrite: bool, resume: bool,
            no_progress: bool, noise_spec: str, z_target: float | None, exptime: float | None,
            seed: int, cosmology: str) -> None:
    """Add noise to the rest-frame spectra of store IN."""
    from ..io.store import open_store
    from ..noise import degrade as run

    _check_out(out, overwrite, resume, store_in)
    model = parse_noise(noise_spec)
    if exptime is not None:
        from dataclasses import replace

        from ..noise import DesiNoise

        if not isinstance(model, DesiNoise):
            raise UserError("--exptime applies to --noise desi only")
        model = replace(model, exptime=exptime)
    ds = open_store(store_in, frame="rest")
    try:
        result = run(ds, model, seed=seed, z_target=z_target, cosmology=cosmology)
    except ValueError as err:
        raise UserError(f"{store_in}: {err}") from None
    _write(result, out, cluster, workers, overwrite, resume, "degrade", not no_progress)


@click.command()
@_store_options
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Saved model folder (from `survey-denoise train`).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Spectra per forward pass.")
@click.option("--samples", type=click.IntRange(min=0), default=0, show_default=True,
              help="VAE only: posterior decodes per spectrum; their spread gives flux_std and widens ivar.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the posterior draws.")
def denoise(store_in: Path, out: Path, cluster: str, workers: int | None, overwrite: bool,
            resume: bool, no_progress: bool, model_dir: Path, batch_size: int, samples: int,
            seed: int) -> None:
    """De-noise the rest-frame spectra of store IN with the saved model given by --model."""
    from ..inference import denoise as run
    from ..io.store import open_store
    from ..models import check_loadable

    _check_out(out, overwrite, resume, store_in, model_dir)
    ds = open_store(store_in, frame="rest")
    try:
        result = run(ds, model_dir, batch_size=batch_size, n_samples=samples, seed=seed)
        check_loadable(model_dir)  # once here, not once per task on the cluster
    except ValueError as err:  # SchemaError included: a model made for other data
        raise UserError(str(err)) from None
    _write(result, out, cluster, workers, overwrite, resume, "denoise", not no_progress)


def parse_noise(spec: str):
    """``uniform[:SIGMA]`` or ``desi[:SCALE]`` -> a noise model.

    Raises
    ------
    UserError
        For anything else, saying what is accepted.
    """
    from ..noise import DesiNoise, UniformNoise

    name, _, value = spec.partition(":")
    try:
        number = float(value) if value else None
        if name == "uniform":
            return UniformNoise(0.04 if number is None else number)
        if name == "desi":
            return DesiNoise(scale=1.0 if number is None else number)
    except ValueError as err:
        raise UserError(f"--noise {spec!r}: {err}") from None
    raise UserError(f"--noise {spec!r}: use uniform[:SIGMA] (e.g. uniform:0.04) or desi[:SCALE]")


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
