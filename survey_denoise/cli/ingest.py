"""``survey-denoise ingest {sdss,desi,auto} FILE... --out STORE``: survey files to a raw store."""

from __future__ import annotations

from pathlib import Path

import click

from .common import UserError, client_for, cluster_option, no_progress_option, workers_option


def _common_options(command):
    """Options every ``ingest`` sub-command takes."""
    decorators = [
        click.option("--out", "out", required=True, type=click.Path(path_type=Path),
                     help="Zarr store to write (raw, observed frame)."),
        cluster_option,
        workers_option,
        click.option("--chunk-size", type=click.IntRange(min=1), default=None,
                     help="Galaxies per chunk of the store.  [default: 1000]"),
        click.option("--overwrite", is_flag=True, help="Replace an existing store."),
        click.option("--resume", is_flag=True,
                     help="Finish an interrupted write of the same files into the --out store."),
        no_progress_option,
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


@click.group()
def ingest() -> None:
    """Read SDSS or DESI spectra files into a raw Zarr store.

    Files that cannot be read are reported by name, with the reason, and the
    rest are ingested; the command fails only when no file could be read.
    """


@ingest.command("sdss")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@_common_options
def sdss(files, **kwargs) -> None:
    """SDSS spec / spec-lite FITS FILES (one spectrum each)."""
    _run(files, "sdss", None, **kwargs)


@ingest.command("desi")
@click.argument("coadds", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--redrock", "redrock", multiple=True, type=click.Path(path_type=Path),
              help="Redrock file of a coadd, once per coadd in the same order "
                   "[default: redrock-*.fits beside each coadd-*.fits].")
@_common_options
def desi(coadds, redrock, **kwargs) -> None:
    """DESI coadd-*.fits COADDS, with redshifts from their redrock files."""
    if redrock and len(redrock) != len(coadds):
        raise UserError(f"--redrock was given {len(redrock)} time(s) for {len(coadds)} coadd(s); "
                        "give it once per coadd, or not at all")
    options = [{"redrock": str(r)} for r in redrock] if redrock else None
    ds = _run(coadds, "desi", options, **kwargs)
    _warn_unmatched(ds, coadds, redrock)


def _warn_unmatched(ds, coadds, redrock) -> None:
    """Warn, with counts, for each coadd whose targets its redrock file does not all hold.

    A redrock file of another coadd matches no target: every galaxy is kept,
    flagged NO_REDSHIFT, and would silently drop out at preprocessing.
    """
    from ..flags import Flag
    from ..io.desi import redrock_path

    files = ds["source_file"].values
    missing = (ds["flags"].values & int(Flag.NO_REDSHIFT)) != 0
    for i, coadd in enumerate(coadds):
        mine = files == Path(coadd).name
        n_missing = int(missing[mine].sum())
        if n_missing:
            rr = Path(redrock[i]) if redrock else redrock_path(coadd)
            n = int(mine.sum())
            click.echo(f"warning: {Path(coadd).name}: {n - n_missing} of its {n} target(s) found "
                       f"in {rr.name}; the other {n_missing} are kept without a redshift "
                       "(NO_REDSHIFT): is it this coadd's redrock file?", err=True)


@ingest.command("auto")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@_common_options
def auto(files, **kwargs) -> None:
    """FILES of any known survey, each recognised by its contents."""
    _run(files, None, None, **kwargs)


def _run(files, fmt, options, *, out: Path, cluster: str, workers: int | None,
         chunk_size: int | None, overwrite: bool, resume: bool, no_progress: bool) -> None:
    from ..io.ingest import DEFAULT_CHUNK_SIZE, NothingRead, summarise
    from ..io.ingest import ingest as ingest_files
    from ..io.outputs import check_outputs
    from ..io.store import write_store

    if overwrite and resume:
        raise UserError("--overwrite and --resume exclude each other")
    inputs = [*files, *(o["redrock"] for o in options or [])]
    check_outputs([out], inputs, overwrite=overwrite, resume=resume, resumable=[out])
    with client_for(cluster, workers) as client:
        try:
            ds, skipped = ingest_files(files, fmt, client=client, progress=not no_progress,
                                       chunk_size=chunk_size or DEFAULT_CHUNK_SIZE, options=options)
        except NothingRead as err:
            raise UserError(str(err)) from None
        report = write_store(ds, out, resume=resume, overwrite=overwrite, client=client,
                             progress=not no_progress, label="write")
    wave = ds["wavelength"].values
    click.echo(f"ingested {ds.sizes['galaxy']} galaxies from {len(files) - _n_files(skipped)} of "
               f"{len(files)} file(s) into {out} ({report.n_chunks} chunk(s), "
               f"{wave.size} pixels {wave[0]:.1f}-{wave[-1]:.1f} A observed)")
    if skipped:
        click.echo(summarise(skipped, len(files)), err=True)
    return ds


def _n_files(skipped) -> int:
    return len({s.path for s in skipped if s.galaxy is None})
