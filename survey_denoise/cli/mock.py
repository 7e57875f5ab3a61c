"""``survey-denoise mock``: a mock survey with known truth, written to a raw store."""

from __future__ import annotations

from pathlib import Path

import click

from .common import UserError, client_for, cluster_option, no_progress_option, workers_option


@click.command("mock")
@click.option("--n", "n", required=True, type=click.IntRange(min=1), help="Number of galaxies.")
@click.option("--design", type=click.Choice(["uniform-halpha", "mzr", "natural", "bgs"]),
              default="natural", show_default=True,
              help="Sampling design (bgs: DESI's Bright Galaxy Survey, r < 19.5, z 0.01-0.5, "
                   "BGS depth; needs --survey desi).")
@click.option("--survey", type=click.Choice(["sdss", "desi"]), default="sdss", show_default=True,
              help="Instrument whose sampling, resolution and noise to simulate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Survey seed.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Zarr store to write.")
@click.option("--truth", "truth", type=click.Path(path_type=Path), default=None,
              help="Also write the truth table (Parquet) here.")
@click.option("--rest", is_flag=True,
              help="Write rest-frame spectra directly on the grid (fast path) instead of observed frame.")
@click.option("--no-noise", "no_noise", is_flag=True, help="Noise-free flux (ivar still from the noise model).")
@click.option("--z-min", type=float, default=None,
              help="Lowest redshift [default: priors, 0.024; bgs: 0.01].")
@click.option("--z-max", type=float, default=None,
              help="Highest redshift [default: priors, 0.05; bgs: 0.5].")
@click.option("--chunk-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Galaxies per chunk.")
@cluster_option
@workers_option
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@click.option("--resume", is_flag=True, help="Finish an interrupted write of the same survey.")
@no_progress_option
def mock(n, design, survey, seed, out, truth, rest, no_noise, z_min, z_max, chunk_size,
         cluster, workers, overwrite, resume, no_progress) -> None:
    """Generate a mock survey (spectra + truth) in the raw schema."""
    from ..io.outputs import check_outputs, replacing
    from ..io.store import open_store, write_store
    from ..mock import MockConfig, generate, select, write_truth
    from ..mock.designs import bgs_z_range, config_for
    from ..mock.priors import default_priors

    if overwrite and resume:
        raise UserError("--overwrite and --resume exclude each other")
    check_outputs([out, truth], overwrite=overwrite, resume=resume, resumable=[out])
    if design == "bgs":
        # Its own range (n(z) to 0.5; the SSPs reach DESI's blue end to z ~ 0.75), checked by config_for.
        lo, hi = bgs_z_range()
        z_range = (z_min if z_min is not None else lo, z_max if z_max is not None else hi)
    else:
        p = default_priors()
        z_range = (z_min if z_min is not None else p.redshift["min"],
                   z_max if z_max is not None else p.redshift["max"])
        if not 0 < z_range[0] < z_range[1] <= 0.25:
            raise UserError(f"need 0 < z-min < z-max <= 0.25, got {z_range}")
    try:
        kwargs = config_for(design, survey, z_range)
        ids = select(design, n, seed, z_range=z_range)
    except ValueError as err:
        raise UserError(str(err)) from None
    cfg = MockConfig(seed=seed, survey=survey, rest=rest, noise=not no_noise, **kwargs)
    ds = generate(ids, cfg, chunk_size=chunk_size, design=design)
    with client_for(cluster, workers) as client:
        report = write_store(ds, out, resume=resume, overwrite=overwrite, client=client,
                             progress=not no_progress, label="mock")
    if truth is not None:
        with replacing(truth) as (staged,):
            write_truth(open_store(out), staged)
    click.echo(f"mock: {n} galaxies ({design}, {survey}, seed {seed}) into {out} "
               f"({report.n_chunks} chunk(s), {len(report.written)} written, {report.seconds:.1f} s)"
               + (f"; truth table {truth}" if truth is not None else ""))
