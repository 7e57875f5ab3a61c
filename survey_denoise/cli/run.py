"""``survey-denoise run CONFIG.yaml``: a whole pipeline from a YAML config."""

from __future__ import annotations

from pathlib import Path

import click

from .common import UserError, cluster_option, no_progress_option, workers_option


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@cluster_option
@workers_option
@click.option("--resume", is_flag=True,
              help="Finish an interrupted run in the config's output folder: only missing "
                   "chunks are computed.")
@click.option("--overwrite", is_flag=True,
              help="Replace the run already in the output folder (it is deleted).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the run here instead of the config's outputs.dir.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change one config value before the check, e.g. --set input.mock.n=2000 "
                   "--set stages.fit.method=fast (repeatable; VALUE is read as YAML).")
@click.option("--check", "check_only", is_flag=True,
              help="Only check the config (and print the plan); run nothing.")
@no_progress_option
def run(config: Path, cluster: str, workers: int | None, resume: bool, overwrite: bool,
        out: Path | None, overrides: tuple[str, ...], check_only: bool, no_progress: bool) -> None:
    """Run the pipeline described by CONFIG (see pipelines/*.yaml)."""
    from distributed import KilledWorker

    from ..cluster import UnknownCluster, explain_killed_worker
    from ..io.ingest import NothingRead
    from ..pipeline import ConfigError, load_config, run_pipeline
    from ..pipeline.sweep import describe

    try:
        cfg = load_config(config, out=out, overrides=overrides)
        if check_only:
            click.echo(f"{config}: ok")
            click.echo(describe(cfg, cluster))
            return
        run_pipeline(cfg, cluster=cluster, workers=workers, resume=resume,
                     progress=not no_progress, echo=click.echo, overwrite=overwrite)
    except (ConfigError, UnknownCluster, NothingRead) as err:
        raise UserError(str(err)) from None
    except KilledWorker as err:
        raise UserError(explain_killed_worker(err)) from None
