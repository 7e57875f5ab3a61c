"""Clusters: local workers, TLS between scheduler and clients, batch-system settings."""

import asyncio
import os

import dask.config
import pytest
from distributed import Client
from distributed.comm import connect as comm_connect
from distributed.security import Security

from survey_denoise.cluster import (
    WORKER_ENV,
    UnknownCluster,
    connect,
    jobqueue_cluster,
    jobqueue_kwargs,
    jobqueue_settings,
    local_cluster,
)


def _env(name):
    return os.environ.get(name)


def test_local_workers_are_single_threaded_with_pinned_libraries():
    lines = []
    with connect("local", n_workers=2, echo=lines.append) as client:
        info = client.scheduler_info(n_workers=-1)["workers"]
        assert len(info) == 2 and all(w["nthreads"] == 1 for w in info.values())
        envs = client.run(lambda: {k: os.environ.get(k) for k in WORKER_ENV})
        assert all(env == WORKER_ENV for env in envs.values())
        # glibc's adaptive malloc, not Dask's MALLOC_TRIM_THRESHOLD_ (worker.malloc-trim-threshold)
        assert set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {None}
        assert client.scheduler.address.startswith("tls://")  # TLS by default
        assert sum(client.gather(client.map(lambda x: x * x, range(10)))) == 285
    assert lines and "dashboard http" in lines[0]


def test_workers_do_not_inherit_a_stray_malloc_trim_threshold(monkeypatch):
    # As another cluster's nanny leaves it in this process (distributed's own behaviour).
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with connect("local", n_workers=1, echo=None) as client:
        assert set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {None}
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # put back


def test_a_malloc_trim_threshold_in_the_config_reaches_the_workers():
    with dask.config.set({"survey-denoise.worker.malloc-trim-threshold": 65536}):
        with connect("local", n_workers=1, echo=None) as client:
            seen = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert set(seen.values()) == {"65536"}
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ  # the driver's own environment is left alone


_worker_tick = lambda dask_worker: dask_worker._tick_interval  # noqa: E731
_scheduler_tick = lambda dask_scheduler: dask_scheduler._tick_interval  # noqa: E731


def test_the_tick_interval_setting_reaches_the_scheduler_and_workers():
    with connect("local", n_workers=1, echo=None) as client:
        assert client.run_on_scheduler(_scheduler_tick) == 1.0  # the package default, 1s
        assert set(client.run(_worker_tick).values()) == {1.0}
    with dask.config.set({"survey-denoise.tick-interval": "250ms"}):
        with connect("local", n_workers=1, echo=None) as client:
            assert client.run_on_scheduler(_scheduler_tick) == 0.25
            assert set(client.run(_worker_tick).values()) == {0.25}
    with dask.config.set({"survey-denoise.tick-interval": None}):  # Dask's own setting
        with connect("local", n_workers=1, echo=None) as client:
            assert client.run_on_scheduler(_scheduler_tick) == 0.02
    assert dask.config.get("distributed.admin.tick.interval") == "20ms"  # left as it was


def test_client_without_the_clusters_credentials_cannot_connect():
    security = Security.temporary()
    with local_cluster(1, security=security) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        with Client(cluster, security=security) as client:
            assert client.submit(lambda: 42).result() == 42
        # A client that fails to connect keeps the global scheduler setting it
        # made, so these attempts must not become the default client.
        # No credentials at all.
        with pytest.raises((OSError, TypeError, ValueError)):
            Client(address, timeout="3s", set_as_default=False)
        # Valid-looking credentials of another cluster (another user's own).
        with pytest.raises(OSError):
            Client(address, security=Security.temporary(), timeout="3s",
                   set_as_default=False)
        # Plain TCP to the TLS port: no handshake. Tried with one comm on a loop of
        # this thread; a third failing Client would start a third IO-loop thread,
        # which a loaded 2-core machine once took over Client's 10 s to start.
        with pytest.raises(OSError):
            asyncio.run(_plain_tcp(address.replace("tls://", "tcp://")))


async def _plain_tcp(address: str) -> None:
    comm = await comm_connect(address, timeout="3s")
    try:
        await comm.write({"op": "identity"})
        await comm.read()
    finally:
        comm.abort()


def test_unknown_cluster_spec_is_named():
    with pytest.raises(UnknownCluster, match="unknown cluster 'sge'"):
        with connect("sge"):
            pass
    with pytest.raises(UnknownCluster, match="no such cluster file"):
        jobqueue_settings("nowhere/slurm-site.yaml")


def test_settings_layers_defaults_file_then_environment(tmp_path, monkeypatch):
    path = tmp_path / "site.yaml"
    path.write_text("system: slurm\ncores: 4\nqueue: short\naccount: astro\n"
                    "adapt: {maximum-jobs: 10}\n")
    settings = jobqueue_settings(str(path))
    assert settings["cores"] == 4 and settings["queue"] == "short"
    assert settings["adapt"] == {"minimum-jobs": 1, "maximum-jobs": 10}  # merged, not replaced
    assert settings["walltime"] == "01:00:00"  # package default
    monkeypatch.setenv("DASK_JOBQUEUE__SLURM__QUEUE", "long")
    assert jobqueue_settings(str(path))["queue"] == "long"
    with dask.config.set({"jobqueue.slurm.cores": 8}):
        assert jobqueue_settings(str(path))["cores"] == 8
    path.write_text("system: slurm\npartition: short\n")
    with pytest.raises(UnknownCluster, match="unknown key.*partition"):
        jobqueue_settings(str(path))


def test_slurm_job_script_has_lifetime_tls_and_thread_pinning(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(f"system: slurm\ncores: 2\nmemory: 3GiB\nqueue: debug\naccount: astro\n"
                    f"walltime: '00:20:00'\nlifetime: 15m\nlifetime-stagger: 2m\n"
                    f"job-extra-directives: ['--qos=low']\nshared-temp-directory: {tmp_path / 'tls'}\n")
    with dask.config.set({"jobqueue.slurm.scheduler-options.dashboard_address": ":0"}):
        with jobqueue_cluster(str(path)) as cluster:
            script = cluster.job_script()
            assert cluster.scheduler_address.startswith("tls://")
    for line in ("#SBATCH -p debug", "#SBATCH -A astro", "#SBATCH --cpus-per-task=2",
                 "#SBATCH -t 00:20:00", "#SBATCH --qos=low", "export OMP_NUM_THREADS=1",
                 "unset MALLOC_TRIM_THRESHOLD_",
                 "export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON=\"{'MALLOC_TRIM_THRESHOLD_': None}\"",
                 "export DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=1s", "--lifetime 15m", "--lifetime-stagger 2m", "--nworkers 2", "--nthreads 1",
                 "--tls-ca-file", "--tls-key"):
        assert line in script, line
    assert oct((tmp_path / "tls").stat().st_mode)[-3:] == "700"


@pytest.mark.parametrize("system, account, header", [("pbs", "account", "#PBS -A astro"),
                                                     ("lsf", "project", '#BSUB -P "astro"')])
def test_pbs_and_lsf_use_the_same_shape(tmp_path, system, account, header):
    path = tmp_path / f"{system}.yaml"
    path.write_text(f"system: {system}\ncores: 2\nmemory: 4GiB\n{account}: astro\nqueue: q\n")
    settings = jobqueue_settings(str(path))
    kwargs = jobqueue_kwargs(settings)
    assert kwargs["processes"] == 2 and "security" not in kwargs
    with dask.config.set({f"jobqueue.{system}.scheduler-options.dashboard_address": ":0"}):
        with jobqueue_cluster(str(path), tls=False) as cluster:
            script = cluster.job_script()
    assert header in script and "--lifetime 55m" in script
    assert "--tls-ca-file" not in script


def test_log_directory_is_expanded_before_it_reaches_the_job_script(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SD_SCRATCH", "scratch")
    path = tmp_path / "site.yaml"
    path.write_text("system: slurm\ncores: 1\nmemory: 1GiB\nlog-directory: ~/$SD_SCRATCH/logs\n"
                    "local-directory: $TMPDIR\n")
    kwargs = jobqueue_kwargs(jobqueue_settings(str(path)))
    assert kwargs["log_directory"] == str(tmp_path / "scratch" / "logs")
    # The node-local directory is the node's own $TMPDIR, expanded there.
    assert kwargs["local_directory"] == "$TMPDIR"


def _listening(port):
    import psutil

    return {c.laddr.ip for c in psutil.Process().net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_dashboard_listens_on_loopback_only_and_serves_its_pages():
    import urllib.request

    with connect("local", n_workers=1, echo=None) as client:
        port = client.scheduler_info()["services"]["dashboard"]
        assert _listening(port) == {"127.0.0.1"}  # not 0.0.0.0: no login, shows addresses
        page = urllib.request.urlopen(client.dashboard_link, timeout=30).read().decode()
    assert "needs bokeh" not in page and "Dask" in page


def test_batch_scheduler_dashboard_is_loopback_by_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the defaults are found beside the package, not here
    for system in ("slurm", "pbs", "lsf"):
        kwargs = jobqueue_kwargs(jobqueue_settings(system))
        assert kwargs["scheduler_options"]["dashboard_address"] == "127.0.0.1:8787"
    from pathlib import Path

    shipped = Path(__file__).parents[1] / "cluster" / "slurm.yaml"
    kwargs = jobqueue_kwargs(jobqueue_settings(str(shipped)))
    assert kwargs["scheduler_options"]["dashboard_address"] == "127.0.0.1:8787"


def test_unreachable_or_credential_less_scheduler_is_named_quickly():
    import time

    with pytest.raises(UnknownCluster, match="TLS credentials"):
        with connect("tls://127.0.0.1:1", echo=None):
            pass
    t0 = time.perf_counter()
    with dask.config.set({"survey-denoise.scheduler.connect-timeout": 1}):
        with pytest.raises(UnknownCluster, match="no scheduler answered within 1 s"):
            with connect("tcp://127.0.0.1:1", echo=None):
                pass
    assert time.perf_counter() - t0 < 10


def _slow(i):
    import time

    time.sleep(3)
    return i


def test_a_lost_worker_is_reported_by_name(capfd):
    import signal
    import time

    lines = []
    with connect("local", n_workers=2, echo=lines.append) as client:
        futures = client.map(_slow, range(4))
        time.sleep(1.5)
        address, pid = next(iter(client.run(os.getpid).items()))
        os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker; Dask recomputes
        assert client.gather(futures) == [0, 1, 2, 3]
        time.sleep(0.5)
        # Read before the cluster closes: a worker whose heartbeat is in flight
        # while LocalCluster shuts down logs a comm-closed traceback of its own
        # (dask/distributed#7105), which says nothing about the loss reported here.
        during_the_run = capfd.readouterr().err
    lost = [line for line in lines if "was lost" in line]
    assert len(lost) == 1 and address in lost[0] and "task(s)" in lost[0], lines
    assert "Traceback" not in during_the_run, during_the_run


def test_users_jobqueue_yaml_and_environment_override_the_shipped_defaults(tmp_path):
    import subprocess
    import sys

    # What dask-jobqueue copies into ~/.config/dask on first import (its own
    # defaults) must not hide this package's; a value the user changed must win.
    (tmp_path / "jobqueue.yaml").write_text(
        "jobqueue:\n  slurm:\n    walltime: '00:30:00'\n    name: dask-worker\n    queue: mine\n")
    code = ("from survey_denoise.cluster import jobqueue_settings as s; x = s('slurm'); "
            "print(x['walltime'], x['name'], x['queue'], x['memory'], x['lifetime'])")
    env = {**os.environ, "DASK_CONFIG": str(tmp_path), "DASK_JOBQUEUE__SLURM__MEMORY": "9GiB",
           "DASK_SURVEY_DENOISE__BATCH__LIFETIME": "20m"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.split() == ["01:00:00", "survey-denoise", "mine", "9GiB", "20m"], out.stderr
