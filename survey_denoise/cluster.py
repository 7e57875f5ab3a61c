"""Where a pipeline computes: a local cluster, a batch system, or a running scheduler.

``connect(spec)`` yields a connected :class:`distributed.Client` for

- ``"local"``: a :class:`distributed.LocalCluster` of single-threaded worker
  processes (BLAS and TensorFlow pinned to one thread each, so Dask's
  parallelism is the only parallelism);
- ``"slurm"``, ``"pbs"``, ``"lsf"`` or a path to a cluster YAML file: a
  dask-jobqueue cluster whose jobs run the workers, scaled adaptively between
  a minimum and a maximum number of jobs (settings: dask-jobqueue's own
  ``jobqueue.<system>`` configuration, with this package's defaults in
  ``survey_denoise/data/jobqueue.yaml``, and ``survey-denoise.batch`` in
  ``survey_denoise/data/survey_denoise.yaml``; a cluster file overrides
  both);
- ``tcp://host:port``, ``tls://host:port`` or a scheduler JSON file: a
  scheduler started elsewhere.

Scheduler and workers talk TLS with temporary self-signed credentials
(:meth:`distributed.security.Security.temporary`) unless a config turns it
off: on a shared machine anyone can reach a scheduler's port, and a Dask
scheduler runs whatever code its clients send.  Batch-system workers get the
credentials as files in ``shared-temp-directory`` (written by dask-jobqueue,
mode 0600, removed when the cluster closes).  For the same reason the
dashboard, which has no login and shows every worker's address, listens on
127.0.0.1 only (``local.dashboard-address``, and the batch scheduler's
``scheduler-options: {dashboard_address: ...}``; reach it through an SSH tunnel).

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
JOBQUEUE_DEFAULTS_FILE = Path(__file__).parent / "data" / "jobqueue.yaml"
SYSTEMS = ("slurm", "pbs", "lsf")
CLUSTER_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster"}
BATCH_KEYS = ("lifetime", "lifetime-stagger", "adapt", "tls")
"""This package's own batch-cluster settings (``survey-denoise.batch``); every
other key of a cluster file is dask-jobqueue's (``jobqueue.<system>``)."""


def _register_defaults() -> dict:
    defaults = yaml.safe_load(DEFAULTS_FILE.read_text())
    dask.config.update_defaults(defaults)
    return defaults


_DEFAULTS = _register_defaults()


def setting(key: str) -> Any:
    """A ``survey-denoise`` setting from ``dask.config`` (defaults, user files, env)."""
    return dask.config.get(f"{CONFIG_KEY}.{key}")


# --------------------------------------------------------------------------
# Batch systems: dask-jobqueue's own configuration, with this package's defaults.


class UnknownCluster(ValueError):
    """A ``--cluster`` value or cluster file that cannot be used."""


def _register_jobqueue_defaults() -> None:
    # After dask-jobqueue's own defaults (registered when it is imported), so
    # that ours replace them; values a user set in Dask's config files or
    # environment stay, as for any package's defaults (dask.config.update_defaults).
    import dask_jobqueue

    if _JOBQUEUE_REGISTERED and "slurm" in dask.config.config.get("jobqueue", {}):
        return
    if "slurm" not in dask.config.config.get("jobqueue", {}):
        # A dask.config.set of a jobqueue key made before dask-jobqueue was
        # imported removes the whole section when it ends: register it again.
        own = Path(dask_jobqueue.__file__).parent / "jobqueue.yaml"
        dask.config.update_defaults(yaml.safe_load(own.read_text()))
    dask.config.update_defaults(yaml.safe_load(JOBQUEUE_DEFAULTS_FILE.read_text()))
    _JOBQUEUE_REGISTERED.append(True)


_JOBQUEUE_REGISTERED: list[bool] = []


def jobqueue_settings(spec: str) -> dict:
    """Effective settings of a batch-system cluster, one flat mapping.

    dask-jobqueue's ``jobqueue.<system>`` keys and this package's
    :data:`BATCH_KEYS` (``survey-denoise.batch``).  Layers, later wins:
    defaults (dask-jobqueue's, then ``data/jobqueue.yaml`` and
    ``data/survey_denoise.yaml``), the cluster file when ``spec`` is a path,
    then whatever Dask's configuration holds that differs from the defaults
    (the user's Dask config files, ``DASK_JOBQUEUE__*`` and
    ``DASK_SURVEY_DENOISE__BATCH__*`` environment variables,
    ``dask.config.set``).

    Raises
    ------
    UnknownCluster
        For an unknown system, an unreadable file or unknown keys (named).
    """
    _register_jobqueue_defaults()
    if spec in SYSTEMS:
        system, path, from_file = spec, spec, {}
    else:
        path = Path(spec).expanduser()
        from_file = _hyphenated(_read_cluster_file(path))
        system = from_file.pop("system", "slurm")
    if system not in SYSTEMS:
        raise UnknownCluster(f"{path}: system {system!r} is not one of {', '.join(SYSTEMS)}")
    defaults = dask.config.merge(*dask.config.defaults)
    env = dask.config.collect_env()
    layers = []
    for section in (("jobqueue", system), (CONFIG_KEY, "batch")):
        key = ".".join(section)
        default = _hyphenated(dask.config.get(key, config=defaults))
        live = _hyphenated(dask.config.get(key, default={}))
        # Environment variables set after Dask read them at import.
        now = _hyphenated(dask.config.get(key, default={}, config=env))
        file_part = {k: v for k, v in from_file.items() if (k in BATCH_KEYS) == (section[0] == CONFIG_KEY)}
        layers.append(dask.config.merge(default, file_part, _changed(live, default), now))
    known = set(_hyphenated(dask.config.get(f"jobqueue.{system}", config=defaults))) | set(BATCH_KEYS)
    unknown = sorted((set(from_file) | set(layers[0])) - known)
    if unknown:
        raise UnknownCluster(f"{path}: unknown key(s) {', '.join(unknown)} for a {system} cluster; "
                             f"known: system, {', '.join(sorted(known))} (dask-jobqueue's "
                             f"jobqueue.{system} keys and survey-denoise's {', '.join(BATCH_KEYS)})")
    return {"system": system, **layers[0], **{k: layers[1][k] for k in BATCH_KEYS}}


def _hyphenated(tree: Any) -> dict:
    # Environment variables arrive as DASK_..._LIFETIME_STAGGER -> "lifetime_stagger".
    # Only our names are hyphenated: scheduler-options holds Scheduler keywords.
    out = {}
    for key, value in dict(tree or {}).items():
        key = str(key).replace("_", "-")
        out[key] = _hyphenated(value) if key == "adapt" else value
    return out


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
    """dask-jobqueue constructor keywords for effective ``settings``.

    Each ``jobqueue.<system>`` key becomes the keyword of the same name with
    underscores (dask-jobqueue's own convention), except ``name``, which its
    config uses for the job name (``job_name``); null values are left out,
    so dask-jobqueue applies its own.
    """
    kwargs: dict[str, Any] = {}
    for key, value in settings.items():
        if key in BATCH_KEYS or key == "system" or value is None:
            continue
        kwargs["job_name" if key == "name" else key.replace("-", "_")] = value
    if kwargs.get("log_directory"):
        # Written into the job script's #SBATCH/#PBS lines, where no shell
        # expands "~" or "$VAR": expand here, on the submitting machine.
        kwargs["log_directory"] = os.path.expanduser(os.path.expandvars(kwargs["log_directory"]))
    if kwargs.get("processes") is None:
        kwargs["processes"] = int(settings["cores"])  # single-threaded workers
    extra = list(kwargs.get("worker_extra_args") or [])
    if settings.get("lifetime"):
        extra += ["--lifetime", str(settings["lifetime"])]
        if settings.get("lifetime-stagger"):
            extra += ["--lifetime-stagger", str(settings["lifetime-stagger"])]
    kwargs["worker_extra_args"] = extra
    # The nannies in the job read MALLOC_TRIM_THRESHOLD_ from their Dask config; a
    # dict-valued variable keeps the key's case (dask lower-cases variable names).
    # The job's own environment is set too: sbatch passes on the submitting
    # process's, where another cluster's nanny may have left Dask's value.
    trim = setting("worker.malloc-trim-threshold")
    kwargs["job_script_prologue"] = [f"export {k}={v}" for k, v in WORKER_ENV.items()] \
        + ["unset MALLOC_TRIM_THRESHOLD_" if trim is None else f"export MALLOC_TRIM_THRESHOLD_={trim}",
           f"export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON=\"{{'MALLOC_TRIM_THRESHOLD_': {trim!r}}}\""] \
        + [f"export DASK_{key.upper().replace('.', '__').replace('-', '_')}={value}"
           for key, value in server_config().items()] \
        + list(settings.get("job-script-prologue") or [])
    kwargs["scheduler_options"] = {"dashboard_address": "127.0.0.1:0",
                                   **dict(settings.get("scheduler-options") or {})}
    kwargs.pop("shared_temp_directory", None)
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
    cls = getattr(dask_jobqueue, CLUSTER_CLASSES[settings["system"]])
    with dask.config.set(server_config()):  # the scheduler runs in this process
        cluster = cls(**jobqueue_kwargs(settings, security))
    cluster.survey_denoise_settings = settings
    return cluster


# --------------------------------------------------------------------------
# Local clusters and TLS.


def temporary_security():
    """Self-signed TLS credentials valid for this cluster only (kept in memory)."""
    from distributed.security import Security

    return Security.temporary()


def _nanny_malloc(trim: int | None) -> dict[str, Any]:
    """The Dask setting that gives worker processes MALLOC_TRIM_THRESHOLD_ ``trim`` (None: unset)."""
    return {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": trim}


def server_config() -> dict[str, Any]:
    """Dask settings for the scheduler, nannies and workers this package starts.

    Set while a cluster is made: a server reads them when it is constructed,
    and a nanny hands its config to the worker process it spawns.
    """
    tick = setting("tick-interval")
    return {} if tick is None else {"distributed.admin.tick.interval": tick}


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
    trim = setting("worker.malloc-trim-threshold")
    with _malloc_environment(trim), dask.config.set({**_nanny_malloc(trim), **server_config()}):
        # Each nanny reads the environment of its worker process when it is made.
        return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                            processes=True, env=dict(WORKER_ENV), **kwargs)


@contextlib.contextmanager
def _malloc_environment(value: int | None) -> Iterator[None]:
    """This process's MALLOC_TRIM_THRESHOLD_ as the setting says, while workers are spawned.

    Spawned workers inherit this process's environment, where another
    cluster's nanny may have left Dask's value (a nanny copies its workers'
    environment into its own process); afterwards it is put back as it was.
    """
    key = "MALLOC_TRIM_THRESHOLD_"
    before = os.environ.get(key)
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = str(value)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


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
