"""Where a pipeline computes: a local cluster, a batch system, or a running scheduler.

``connect(spec)`` yields a connected :class:`distributed.Client` for

- ``"local"``: a :class:`distributed.LocalCluster` of single-threaded worker
  processes (BLAS and TensorFlow pinned to one thread each, so Dask's
  parallelism is the only parallelism);
- ``"slurm"``, ``"pbs"``, ``"lsf"`` or a path to a cluster YAML file: a
  dask-jobqueue cluster whose jobs run the workers, scaled adaptively between
  a minimum and a maximum number of jobs (settings: ``cluster/slurm.yaml``
  and the defaults in ``survey_denoise/data/survey_denoise.yaml``);
- ``tcp://host:port``, ``tls://host:port`` or a scheduler JSON file: a
  scheduler started elsewhere.

Scheduler and workers talk TLS with temporary self-signed credentials
(:meth:`distributed.security.Security.temporary`) unless a config turns it
off: on a shared machine anyone can reach a scheduler's port, and a Dask
scheduler runs whatever code its clients send.  Batch-system workers get the
credentials as files in ``shared-temp-directory`` (written by dask-jobqueue,
mode 0600, removed when the cluster closes).  For the same reason the
dashboard, which has no login and shows every worker's address, listens on
127.0.0.1 only (``dashboard-address``; reach it through an SSH tunnel).

While a client is open, each worker the scheduler loses unexpectedly is
reported by name (Dask itself recomputes its tasks silently), and a scheduler
address that does not answer within ``scheduler.connect-timeout`` seconds is
an :class:`UnknownCluster`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.config
import yaml

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

CONFIG_KEY = "survey-denoise"
DEFAULTS_FILE = Path(__file__).parent / "data" / "survey_denoise.yaml"
CLUSTER_DIR = Path("cluster")  # where `--cluster slurm` looks for slurm.yaml
SYSTEMS = ("slurm", "pbs", "lsf")


def _register_defaults() -> dict:
    defaults = yaml.safe_load(DEFAULTS_FILE.read_text())
    dask.config.update_defaults(defaults)
    return defaults


_DEFAULTS = _register_defaults()


def setting(key: str) -> Any:
    """A ``survey-denoise`` setting from ``dask.config`` (defaults, user files, env)."""
    return dask.config.get(f"{CONFIG_KEY}.{key}")


# --------------------------------------------------------------------------
# Batch systems: one config shape, each system maps only what differs.


class UnknownCluster(ValueError):
    """A ``--cluster`` value or cluster file that cannot be used."""


@dataclass(frozen=True)
class JobSystem:
    """How one batch system's settings become dask-jobqueue keywords.

    Attributes
    ----------
    name : str
        ``slurm``, ``pbs`` or ``lsf``.
    cluster_class : str
        dask-jobqueue class name.
    renames : dict
        Our key -> the class's keyword, where the class names it differently.
    own_keys : tuple of str
        Keys only this system understands (passed through, hyphens -> underscores).
    """

    name: str
    cluster_class: str
    renames: dict[str, str] = field(default_factory=dict)
    own_keys: tuple[str, ...] = ()


JOB_SYSTEMS = {
    "slurm": JobSystem("slurm", "SLURMCluster"),
    "pbs": JobSystem("pbs", "PBSCluster", own_keys=("resource-spec",)),
    # LSF has projects where SLURM and PBS have accounts.
    "lsf": JobSystem("lsf", "LSFCluster", renames={"account": "project"}, own_keys=("use-stdin",)),
}

# Keys every system shares, and the dask-jobqueue keyword each becomes.
_COMMON = {
    "cores": "cores", "processes": "processes", "memory": "memory", "walltime": "walltime",
    "queue": "queue", "account": "account", "job-directives": "job_extra_directives",
    "job-directives-skip": "job_directives_skip", "interface": "interface",
    "local-directory": "local_directory", "log-directory": "log_directory",
    "python": "python", "death-timeout": "death_timeout", "job-name": "job_name",
}
_OURS = {"system", "lifetime", "lifetime-stagger", "adapt", "tls", "shared-temp-directory",
         "dashboard-address", "job-script-prologue"}


def _merge(*layers: dict) -> dict:
    return dask.config.merge(*[layer or {} for layer in layers])


def jobqueue_settings(spec: str) -> dict:
    """Effective settings of a batch-system cluster.

    Layers, later wins: package defaults for the system, the cluster file
    (``spec`` itself if it is a path, else ``cluster/<system>.yaml`` when it
    exists), then whatever ``dask.config`` holds that differs from the
    defaults (``dask.config.set``, the user's Dask config files,
    ``DASK_SURVEY_DENOISE__*`` environment variables).

    Raises
    ------
    UnknownCluster
        For an unknown system, an unreadable file or unknown keys (named).
    """
    path = Path(spec).expanduser()
    if spec in SYSTEMS:
        system, path = spec, CLUSTER_DIR / f"{spec}.yaml"
        from_file = _read_cluster_file(path) if path.exists() else {}
    else:
        from_file = _read_cluster_file(path)
        system = from_file.get("system", "slurm")
    if system not in JOB_SYSTEMS:
        raise UnknownCluster(f"{path}: system {system!r} is not one of {', '.join(SYSTEMS)}")
    default = _DEFAULTS[CONFIG_KEY]["jobqueue"][system]
    live = _hyphenated(dask.config.get(f"{CONFIG_KEY}.jobqueue.{system}", default={}))
    # Files and environment as they are now (dask.config read them at import).
    now = _hyphenated(dask.config.get(f"{CONFIG_KEY}.jobqueue.{system}", default={},
                                      config=dask.config.collect()))
    settings = _merge(default, from_file, _changed(live, default), now)
    settings["system"] = system
    known = set(_COMMON) | _OURS | set(JOB_SYSTEMS[system].own_keys)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UnknownCluster(f"{path}: unknown key(s) {', '.join(unknown)} for a {system} "
                             f"cluster; known: {', '.join(sorted(known))}")
    return settings


def _hyphenated(tree: Any) -> Any:
    # Environment variables arrive as DASK_..._LIFETIME_STAGGER -> "lifetime_stagger".
    if isinstance(tree, dict):
        return {str(k).replace("_", "-"): _hyphenated(v) for k, v in tree.items()}
    return tree


def _changed(live: dict, default: dict) -> dict:
    # What user files, environment variables or dask.config.set changed
    # relative to the package defaults: those win over the cluster file.
    out = {}
    for key, value in live.items():
        if isinstance(value, dict) and isinstance(default.get(key), dict):
            sub = _changed(value, default[key])
            if sub:
                out[key] = sub
        elif key not in default or value != default[key]:
            out[key] = value
    return out


def _read_cluster_file(path: Path) -> dict:
    if not path.is_file():
        raise UnknownCluster(f"{path}: no such cluster file (use 'local', one of "
                             f"{', '.join(SYSTEMS)}, a scheduler address or a cluster YAML file)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UnknownCluster(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise UnknownCluster(f"{path}: expected a mapping of cluster settings")
    return data


def jobqueue_kwargs(settings: dict, security: object | None = None) -> dict:
    """dask-jobqueue constructor keywords for effective ``settings``."""
    system = JOB_SYSTEMS[settings["system"]]
    kwargs: dict[str, Any] = {}
    for key, kw in _COMMON.items():
        if settings.get(key) is not None:
            kwargs[system.renames.get(key, kw)] = settings[key]
    if kwargs.get("log_directory"):
        # Written into the job script's #SBATCH/#PBS lines, where no shell
        # expands "~" or "$VAR": expand here, on the submitting machine.
        kwargs["log_directory"] = os.path.expanduser(os.path.expandvars(kwargs["log_directory"]))
    for key in system.own_keys:
        if settings.get(key) is not None:
            kwargs[key.replace("-", "_")] = settings[key]
    if kwargs.get("processes") is None:
        kwargs["processes"] = int(settings["cores"])  # single-threaded workers
    extra = []
    if settings.get("lifetime"):
        extra += ["--lifetime", str(settings["lifetime"])]
        if settings.get("lifetime-stagger"):
            extra += ["--lifetime-stagger", str(settings["lifetime-stagger"])]
    kwargs["worker_extra_args"] = extra
    kwargs["job_script_prologue"] = [f"export {k}={v}" for k, v in WORKER_ENV.items()] \
        + list(settings.get("job-script-prologue") or [])
    kwargs["scheduler_options"] = {
        "dashboard_address": settings.get("dashboard-address", "127.0.0.1:0")}
    if security is not None:
        kwargs["security"] = security
        directory = Path(os.path.expandvars(settings["shared-temp-directory"])).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)  # the credentials are the keys to the scheduler
        kwargs["shared_temp_directory"] = str(directory)
    return kwargs


def jobqueue_cluster(spec: str, *, tls: bool | None = None):
    """A dask-jobqueue cluster (no jobs submitted yet) for ``spec``.

    Parameters
    ----------
    spec : str
        ``slurm``, ``pbs``, ``lsf`` or a cluster YAML file.
    tls : bool, optional
        Override the settings' ``tls``.
    """
    import dask_jobqueue

    settings = jobqueue_settings(spec)
    security = temporary_security() if (settings["tls"] if tls is None else tls) else None
    cls = getattr(dask_jobqueue, JOB_SYSTEMS[settings["system"]].cluster_class)
    cluster = cls(**jobqueue_kwargs(settings, security))
    cluster.survey_denoise_settings = settings
    return cluster


# --------------------------------------------------------------------------
# Local clusters and TLS.


def temporary_security():
    """Self-signed TLS credentials valid for this cluster only (kept in memory)."""
    from distributed.security import Security

    return Security.temporary()


def local_cluster(n_workers: int | None = None, threads_per_worker: int = 1, **kwargs):
    """A :class:`distributed.LocalCluster` of worker processes with pinned threads.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: ``survey-denoise.local.n-workers``, else
        the number of cores).
    threads_per_worker : int
        Dask threads per worker.
    **kwargs
        Passed to :class:`distributed.LocalCluster` (e.g. ``security=``).
    """
    from distributed import LocalCluster

    n_workers = n_workers or setting("local.n-workers") or os.cpu_count() or 1
    kwargs.setdefault("dashboard_address", setting("local.dashboard-address"))
    kwargs.setdefault("memory_limit", setting("local.memory-limit"))
    kwargs.setdefault("silence_logs", 40)
    return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                        processes=True, env=dict(WORKER_ENV), **kwargs)


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def connect(spec: str = "local", n_workers: int | None = None, *, tls: bool | None = None,
            echo: Callable[[str], None] | None = _echo) -> Iterator[object]:
    """Yield a connected ``distributed.Client`` for a cluster spec; close what was started.

    Parameters
    ----------
    spec : str
        ``"local"``; ``"slurm"``, ``"pbs"``, ``"lsf"`` or a cluster YAML file;
        a scheduler address (``tcp://host:port`` / ``tls://host:port``) or a
        scheduler JSON file.
    n_workers : int, optional
        Workers of a local cluster; for a batch system, a fixed number of
        jobs instead of adaptive scaling.
    tls : bool, optional
        Override the config's TLS setting for a cluster started here.
    echo : callable, optional
        Where the dashboard link is reported (default: stderr; None: silent).

    Raises
    ------
    UnknownCluster
        If ``spec`` names nothing usable.
    """
    # A Client that fails to connect leaves its global ``scheduler`` setting
    # behind, and every later compute in this process would then ask for a
    # client that does not exist; put the caller's setting back whatever happens.
    scheduler = dask.config.get("scheduler", None)
    logger = logging.getLogger("distributed.scheduler")
    logger.addFilter(_EXPLAINED)
    try:
        yield from _connect(spec, n_workers, tls, echo or (lambda message: None))
    finally:
        logger.removeFilter(_EXPLAINED)
        dask.config.set(scheduler=scheduler)


class _ExplainedByCaller(logging.Filter):
    # The scheduler logs a task whose workers died as an ERROR line; the
    # caller receives the KilledWorker and explains it (explain_killed_worker),
    # so that line would only be a second, less useful error message.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Task %s marked as failed because %d workers died")


_EXPLAINED = _ExplainedByCaller()


def explain_killed_worker(err: BaseException) -> str:
    """One line for a :class:`distributed.KilledWorker`: what ran out, what to change.

    Workers that die while running the same task are, for this package's
    tasks, nearly always killed by their nanny for passing their memory limit.
    """
    from dask.utils import format_bytes, key_split

    worker = getattr(err, "last_worker", None)
    limit = getattr(worker, "memory_limit", None)
    name = key_split(getattr(err, "task", "?"))
    per_worker = f" of {format_bytes(limit)}" if limit else ""
    tries = getattr(err, "allowed_failures", 0) + 1
    return (f"{tries} worker(s) died running task {name!r}, most likely out of memory (limit"
            f"{per_worker} per worker); use smaller chunks (--chunk-size, or chunk: in a pipeline "
            "config), a smaller --batch-size (stages.denoise.batch_size) when de-noising, or more "
            "memory per worker (fewer --workers; DASK_SURVEY_DENOISE__LOCAL__MEMORY_LIMIT, or "
            "memory: in the cluster file)")


def _connect(spec: str, n_workers: int | None, tls: bool | None,
             echo: Callable[[str], None]) -> Iterator[object]:
    from distributed import Client

    if spec == "local":
        use_tls = setting("local.tls") if tls is None else tls
        security = temporary_security() if use_tls else None
        threads = int(setting("local.threads-per-worker"))
        with local_cluster(n_workers, threads, security=security) as cluster, \
                Client(cluster, security=security) as client, _lost_workers_reported(client, echo):
            echo(f"local cluster: {len(cluster.workers)} workers, dashboard {client.dashboard_link}")
            yield client
    elif "://" in spec:
        with _remote_client(spec, address=spec) as client, _lost_workers_reported(client, echo):
            echo(f"scheduler {spec}: dashboard {client.dashboard_link}")
            yield client
    elif spec.endswith(".json") and Path(spec).is_file():
        with _remote_client(spec, scheduler_file=spec) as client, \
                _lost_workers_reported(client, echo):
            echo(f"scheduler from {spec}: dashboard {client.dashboard_link}")
            yield client
    elif spec in SYSTEMS or spec.endswith((".yaml", ".yml")):
        with jobqueue_cluster(spec, tls=tls) as cluster:
            settings = cluster.survey_denoise_settings
            if n_workers:
                cluster.scale(jobs=n_workers)
            else:
                cluster.adapt(minimum_jobs=settings["adapt"]["minimum-jobs"],
                              maximum_jobs=settings["adapt"]["maximum-jobs"])
            with Client(cluster, security=cluster.security) as client, \
                    _lost_workers_reported(client, echo):
                echo(f"{settings['system']} cluster: dashboard {client.dashboard_link}")
                client.wait_for_workers(1, timeout=setting("scheduler.worker-start-timeout"))
                yield client
    else:
        raise UnknownCluster(f"unknown cluster {spec!r}: use 'local', one of {', '.join(SYSTEMS)}, "
                             "a cluster YAML file or a scheduler address")


@contextlib.contextmanager
def _lost_workers_reported(client, echo: Callable[[str], None]) -> Iterator[None]:
    """Report each worker the scheduler loses unexpectedly, while ``client`` is in use.

    Dask recomputes a lost worker's tasks elsewhere without a word; a
    worker that keeps dying (memory, walltime, a failing node) should be
    seen before it costs the run.
    """
    def report(event: tuple) -> None:
        message = event[1]
        if not (isinstance(message, dict) and message.get("action") == "remove-worker"
                and not message.get("expected")):
            return
        tasks = len(message.get("processing-tasks") or ()) + len(message.get("lost-computed-tasks")
                                                                   or ())
        echo(f"warning: worker {message.get('worker')} was lost (killed for memory, past its "
             f"walltime, or its node failed); {tasks} of its task(s) will run on other workers")

    client.subscribe_topic("all", report)
    try:
        yield
    finally:
        # Unsubscribe before the client closes, or the scheduler writes its
        # last events to a closed connection and logs a traceback.
        with contextlib.suppress(Exception):
            client.unsubscribe_topic("all")


def _remote_client(spec: str, **where):
    """A Client of a scheduler started elsewhere, or an UnknownCluster saying why not.

    Connecting waits ``scheduler.connect-timeout`` seconds (Dask's own
    default is 30 s of silence); a ``tls://`` address needs the TLS files in
    Dask's configuration, without which ``distributed`` fails deep inside
    with an unrelated TypeError.
    """
    from distributed import Client
    from distributed.security import Security

    security = Security()
    address = where.get("address", "")
    if address.startswith("tls://") and not (security.tls_ca_file and security.tls_client_cert):
        raise UnknownCluster(
            f"--cluster {spec}: a tls:// scheduler needs TLS credentials; set "
            "distributed.comm.tls.ca-file and distributed.comm.tls.client.cert/key in Dask's "
            "configuration (e.g. DASK_DISTRIBUTED__COMM__TLS__CA_FILE=...)")
    timeout = float(setting("scheduler.connect-timeout"))
    try:
        return Client(**where, timeout=f"{timeout}s")
    except OSError as err:  # connect() puts back the scheduler setting a failed Client leaves
        raise UnknownCluster(
            f"--cluster {spec}: no scheduler answered within {timeout:g} s ({err}); check the "
            "address, or wait longer with DASK_SURVEY_DENOISE__SCHEDULER__CONNECT_TIMEOUT="
            "SECONDS") from None
