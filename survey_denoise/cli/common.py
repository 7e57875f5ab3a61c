"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from ..schema import SchemaError


class UserError(Exception):
    """An error caused by the user's input; reported in one line, no traceback."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, SchemaError, FileNotFoundError, FileExistsError, IsADirectoryError,
    NotADirectoryError, PermissionError,
)

cluster_option = click.option(
    "--cluster", "cluster", default="local", show_default=True,
    help="Where to compute: 'local' (a Dask LocalCluster), 'slurm' "
         "(dask-jobqueue's jobqueue.slurm config), a cluster YAML file (see cluster/slurm.yaml) or a "
         "scheduler address (tcp://host:port, tls://host:port with TLS files in Dask's config).",
)
no_progress_option = click.option(
    "--no-progress", "no_progress", is_flag=True,
    help="No progress bars (for logs and batch jobs).")
workers_option = click.option(
    "--workers", type=click.IntRange(min=1), default=None,
    help="Number of local worker processes (default: one per core).",
)


@contextlib.contextmanager
def client_for(cluster: str, workers: int | None = None) -> Iterator[object]:
    """A connected ``distributed.Client`` for ``--cluster``, closed on exit."""
    from distributed import KilledWorker

    from ..cluster import UnknownCluster, connect, explain_killed_worker

    try:
        with connect(cluster, n_workers=workers) as client:
            yield client
    except UnknownCluster as err:
        raise UserError(str(err)) from None
    except KilledWorker as err:
        raise UserError(explain_killed_worker(err)) from None
