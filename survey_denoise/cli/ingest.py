"""``survey-denoise ingest {sdss,desi,auto} FILE... --out STORE``: survey files to a raw store."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

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
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--from-list", "from_list", type=click.Path(path_type=Path), default=None,
              help="Text file of coadds or folders, one per line (relative to the list's "
                   "folder; '#' starts a comment), read besides PATHS.")
@click.option("--redrock", "redrock", multiple=True, type=click.Path(path_type=Path),
              help="Redrock file of a coadd, once per coadd in the same order (coadd files "
                   "only) [default: redrock-*.fits beside each coadd-*.fits].")
@click.option("--spectype", default=None, metavar="TYPES",
              help="Keep only these redrock SPECTYPEs, comma-separated (e.g. GALAXY).  "
                   "[default: any]")
@click.option("--zwarn-max", type=int, default=None,
              help="Keep only ZWARN <= this (0: no redshift warning).  [default: any]")
@click.option("--z-min", type=float, default=None, help="Keep only Z >= this.  [default: none]")
@click.option("--z-max", type=float, default=None, help="Keep only Z <= this.  [default: none]")
@click.option("--target", default=None, metavar="BITS",
              help="Keep only targets with any of these main-survey targeting bits, "
                   "comma-separated names from DESI_TARGET or BGS_TARGET (e.g. "
                   "BGS_BRIGHT,BGS_FAINT or BGS_ANY).  [default: any]")
@_common_options
def desi(paths, from_list, redrock, spectype, zwarn_max, z_min, z_max, target, **kwargs) -> None:
    """DESI coadds with redshifts from the redrock files beside them.

    PATHS are coadd-*.fits files or folders walked for them at any depth, e.g.
    a healpix tree healpix/main/bright/100/10016/coadd-main-bright-10016.fits.
    Targets failing a selection option are dropped before their spectra are
    read; the summary says how many each cut removed.
    """
    from ..io.desi import find_coadds, read_file_list
    from ..io.desi_select import TargetSelection

    listed = read_file_list(from_list) if from_list is not None else []
    if not paths and not listed:
        raise UserError("give coadd files or folders (PATHS), or --from-list FILE")
    if redrock and (from_list is not None or any(Path(p).is_dir() for p in paths)):
        raise UserError("--redrock pairs coadd files one by one; it cannot be used with folders "
                        "or --from-list (their redrock files are found beside each coadd)")
    coadds = find_coadds([*paths, *listed])
    if not coadds:
        raise UserError(f"no coadd-*.fits under {', '.join(map(str, [*paths, *listed]))}")
    if redrock and len(redrock) != len(coadds):
        raise UserError(f"--redrock was given {len(redrock)} time(s) for {len(coadds)} coadd(s); "
                        "give it once per coadd, or not at all")
    try:
        selection = TargetSelection.from_options(spectype=spectype, zwarn_max=zwarn_max,
                                                 z_min=z_min, z_max=z_max, target=target)
    except ValueError as err:
        raise UserError(str(err)) from None
    options = [{"redrock": str(r)} for r in redrock] if redrock else [{} for _ in coadds]
    if selection is not None:
        options = [{**o, "selection": selection} for o in options]
    ds = _run(coadds, "desi", options, **kwargs)
    _warn_unmatched(ds, coadds, redrock)


def _warn_unmatched(ds, coadds, redrock) -> None:
    """Warn, with counts, for each coadd whose targets its redrock file does not all hold.

    A redrock file of another coadd matches no target: every galaxy is kept,
    flagged NO_REDSHIFT, and would silently drop out at preprocessing.
    """
    from ..flags import Flag
    from ..io.desi import redrock_path

    missing = (ds["flags"].values & int(Flag.NO_REDSHIFT)) != 0
    if not missing.any():
        return
    # Counted per file in one pass: a healpix tree has thousands of coadds.
    names, inverse = np.unique(ds["source_file"].values, return_inverse=True)
    totals = np.bincount(inverse, minlength=names.size)
    misses = np.bincount(inverse, weights=missing, minlength=names.size).astype(int)
    index = {Path(c).name: i for i, c in enumerate(coadds)}
    for name, n, n_missing in zip(names.tolist(), totals.tolist(), misses.tolist(), strict=True):
        if n_missing:
            i = index[name]
            rr = Path(redrock[i]) if redrock else redrock_path(coadds[i])
            click.echo(f"warning: {name}: {n - n_missing} of its {n} target(s) found "
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
    from ..io.ingest import (
        DEFAULT_CHUNK_SIZE,
        NothingRead,
        selection_removed,
        selection_summary,
        summarise,
    )
    from ..io.ingest import ingest as ingest_files
    from ..io.outputs import check_outputs
    from ..io.store import write_store

    if overwrite and resume:
        raise UserError("--overwrite and --resume exclude each other")
    inputs = [*files, *(o["redrock"] for o in options or [] if "redrock" in o)]
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
    removed = selection_removed(ds)
    if removed:
        click.echo(f"selection ({options[0]['selection'].describe()}) "
                   f"{selection_summary(removed)}")
    if skipped:
        click.echo(summarise(skipped, len(files)), err=True)
    return ds


def _n_files(skipped) -> int:
    return len({s.path for s in skipped if s.galaxy is None})
