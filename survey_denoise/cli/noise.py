"""``survey-denoise noise-curve COADD...``: build the DESI noise curve from DESI coadds."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("noise-curve")
@click.argument("coadds", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ECSV file to write [default: the curve shipped with the package].")
def noise_curve(coadds: tuple[Path, ...], out: Path | None) -> None:
    """Median noise per observed pixel of DESI COADDS (coadd-*.fits, redrock-*.fits beside each)."""
    from ..noise import DESI_CURVE, build_desi_curve, write_curve

    out = DESI_CURVE if out is None else out
    table = build_desi_curve(list(coadds))
    write_curve(table, out)
    click.echo(f"wrote {out}: {len(table)} pixels, {table.meta['n_targets']} target(s), "
               f"{table['wavelength'][0]:.1f}-{table['wavelength'][-1]:.1f} A")
