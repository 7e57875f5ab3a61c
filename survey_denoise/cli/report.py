"""``survey-denoise report RUN_DIR --out report.html``."""

from __future__ import annotations

from pathlib import Path

import click

from .common import UserError


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="HTML file to write (default: RUN_DIR/report.html); figures go to <stem>_files/ beside it.")
@click.option("--title", default=None, help="Title of the page (default: the run's name).")
def report(run_dir: Path, out: Path | None, title: str | None) -> None:
    """Write a static HTML report of a pipeline run (opens without a server)."""
    from ..report import build_report

    try:
        path = build_report(run_dir, out, title=title)
    except ValueError as err:
        raise UserError(str(err)) from None
    click.echo(f"wrote {path} (figures and tables in {path.parent / (path.stem + '_files')})")
