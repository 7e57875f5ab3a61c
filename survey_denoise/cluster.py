"""Where a pipeline computes: a local cluster, SLURM, or a running scheduler.

``connect("local")`` starts a :class:`distributed.LocalCluster` of
single-threaded worker processes (BLAS and TensorFlow pinned to one thread
each, so Dask's parallelism is the only parallelism).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# One thread per worker process for every numerical library: with two BLAS
# threads per process a pPXF fit runs 4x slower on a 2-core machine.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def local_cluster(n_workers: int | None = None, threads_per_worker: int = 1, **kwargs):
    """A :class:`distributed.LocalCluster` of worker processes with pinned threads.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: number of cores).
    threads_per_worker : int
        Dask threads per worker.
    **kwargs
        Passed to :class:`distributed.LocalCluster`.
    """
    from distributed import LocalCluster

    n_workers = n_workers or os.cpu_count() or 1
    kwargs.setdefault("dashboard_address", ":0")
    kwargs.setdefault("silence_logs", 40)
    return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                        processes=True, env=dict(WORKER_ENV), **kwargs)


@contextlib.contextmanager
def connect(spec: str = "local", n_workers: int | None = None) -> Iterator[object]:
    """Yield a connected ``distributed.Client`` for a cluster spec; close what was started.

    Parameters
    ----------
    spec : str
        ``"local"`` for a new LocalCluster, or a scheduler address
        (``tcp://host:port`` / ``tls://host:port``).
    n_workers : int, optional
        Workers of a local cluster.
    """
    from distributed import Client

    if spec == "local":
        with local_cluster(n_workers) as cluster, Client(cluster) as client:
            yield client
    elif "://" in spec:
        with Client(spec) as client:
            yield client
    else:
        raise ValueError(f"unknown cluster {spec!r}: use 'local', 'slurm' or a scheduler address")
