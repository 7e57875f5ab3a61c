"""Pipelines on a real SLURM through dask-jobqueue (start one with cluster/slurm-up.sh)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _services import require
from test_pipeline import _wait_for_partial, assert_same_outputs, small_config, write_config

from survey_denoise.io.store import missing_chunks
from survey_denoise.pipeline import load_config, run_pipeline

CLI = str(Path(sys.executable).parent / "survey-denoise")


def _slurm_state() -> str | None:
    """Why SLURM cannot be used here, or None if it can."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on this machine; run cluster/slurm-up.sh as root"
    res = subprocess.run(["sinfo", "-h", "-o", "%a %t"], capture_output=True, text=True, timeout=30)
    if res.returncode != 0 or not res.stdout.strip():
        return f"no SLURM controller answers ({res.stderr.strip()[:200]}); run cluster/slurm-up.sh"
    return None


pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module", autouse=True)
def _slurm_is_up():
    # Module scope, so that it runs before the module's local reference run.
    require(_slurm_state())


def cluster_file(tmp_path: Path, name: str, jobs: int = 2) -> Path:
    """Two single-core worker jobs, logs and TLS credentials under tmp_path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "system": "slurm", "name": name, "cores": 1, "memory": "2GiB", "walltime": "00:15:00",
        "log-directory": str(tmp_path / "logs"), "local-directory": str(tmp_path / "scratch"),
        "shared-temp-directory": str(tmp_path / "tls"), "scheduler-options": {"dashboard_address": ":0"},
        "lifetime": None, "adapt": {"minimum-jobs": jobs, "maximum-jobs": jobs}, "tls": True}))
    return path


def jobs_named(name: str) -> list[str]:
    res = subprocess.run(["squeue", "-h", "-n", name, "-t", "RUNNING", "-o", "%i"],
                         capture_output=True, text=True, timeout=30)
    return res.stdout.split()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local") / "run"
    cfg = load_config(write_config(folder.parent / "c.yaml", small_config(folder)))
    run_pipeline(cfg, workers=2, progress=False, echo=lambda m: None)
    return folder


def test_pipeline_on_slurm_equals_the_local_run(local_run, tmp_path):
    folder = tmp_path / "run"
    model = str(local_run / "model") if (local_run / "model").exists() else None
    cfg = load_config(write_config(tmp_path / "c.yaml", small_config(folder, model=model)))
    lines = []
    summary = run_pipeline(cfg, cluster=str(cluster_file(tmp_path, "sd-equal")), progress=False,
                           echo=lines.append)
    assert any(line.startswith("slurm cluster: dashboard http") for line in lines)
    assert summary.galaxies == 48
    assert_same_outputs(local_run, folder)
    # The workers really were SLURM jobs: their logs are in the log directory.
    assert list((tmp_path / "logs").glob("sd-equal-*.err"))
    for _ in range(30):  # jobs end when the cluster closes
        if not jobs_named("sd-equal"):
            break
        time.sleep(1)
    assert not jobs_named("sd-equal"), "worker jobs left running"


# Lambdas, not module functions: they are pickled by value, and a batch job's
# workers cannot import this test module.
_worker_tick = lambda dask_worker: dask_worker._tick_interval  # noqa: E731
_scheduler_tick = lambda dask_scheduler: dask_scheduler._tick_interval  # noqa: E731


def test_slurm_workers_run_with_pinned_threads_and_glibc_malloc(tmp_path, monkeypatch):
    from survey_denoise.cluster import WORKER_ENV, connect

    # sbatch passes this process's environment on; a nanny of an earlier local
    # cluster may have left Dask's value there.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with connect(str(cluster_file(tmp_path, "sd-env", jobs=1)), echo=None) as client:
        names = (*WORKER_ENV, "MALLOC_TRIM_THRESHOLD_")
        envs = list(client.run(lambda: {k: os.environ.get(k) for k in names}).values())
        ticks = set(client.run(_worker_tick).values()) | {client.run_on_scheduler(_scheduler_tick)}
    assert ticks == {1.0}  # the package's tick-interval, in the job's workers too
    assert envs and all(env == {**WORKER_ENV, "MALLOC_TRIM_THRESHOLD_": None} for env in envs), envs


def test_scancel_of_a_worker_job_mid_run_loses_nothing(local_run, tmp_path):
    folder = tmp_path / "run"
    model = str(local_run / "model") if (local_run / "model").exists() else None
    cfg = write_config(tmp_path / "c.yaml", small_config(folder, model=model))
    spec = cluster_file(tmp_path, "sd-cancel")
    proc = subprocess.Popen([CLI, "run", str(cfg), "--cluster", str(spec), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_partial(folder, proc, timeout=300)
        jobs = jobs_named("sd-cancel")
        assert len(jobs) == 2, jobs
        subprocess.run(["scancel", jobs[0]], check=True, timeout=30)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["scancel", "-n", "sd-cancel"], timeout=30)
    assert proc.returncode == 0, err[-3000:]
    assert "48 spectra processed" in out
    # The job was cancelled while its worker ran (SLURM says so in the job's log).
    log = (tmp_path / "logs" / f"sd-cancel-{jobs[0]}.err").read_text()
    assert f"JOB {jobs[0]} ON" in log and "CANCELLED" in log, log[-2000:]
    for store in folder.glob("*.zarr"):
        assert missing_chunks(store) == [], store.name
    assert_same_outputs(local_run, folder)
