"""User errors of the command line that used to end in tracebacks: one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import _data
from _cli import assert_user_error, run

NGC3073 = str(_data.NGC3073)


def test_unknown_cluster_is_one_line(tmp_path):
    result = run("ingest", "sdss", NGC3073, "--out", tmp_path / "a.zarr", "--cluster", "foo")
    assert_user_error(result, "unknown cluster 'foo'")
    result = run("preprocess", tmp_path / "a.zarr", "--out", tmp_path / "b.zarr", "--cluster", "foo")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_tls_scheduler_without_credentials_is_one_line(tmp_path):
    result = run("ingest", "sdss", NGC3073, "--out", tmp_path / "a.zarr",
                 "--cluster", "tls://127.0.0.1:1")
    assert_user_error(result, "tls://127.0.0.1:1", "TLS credentials")


def test_unreachable_scheduler_gives_up_after_the_configured_timeout(tmp_path):
    env = {**os.environ, "DASK_SURVEY_DENOISE__SCHEDULER__CONNECT_TIMEOUT": "2"}
    result = subprocess.run(
        [sys.executable, "-c", "from survey_denoise.cli import main; main()", "ingest", "sdss",
         NGC3073, "--out", str(tmp_path / "a.zarr"), "--cluster", "tcp://127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, env=env)
    assert_user_error(result, "tcp://127.0.0.1:1", "within 2 s", "CONNECT_TIMEOUT")


def _files_config(tmp_path, paths, fmt=None, out="run"):
    import yaml

    files = {"paths": [str(p) for p in paths]}
    if fmt is not None:
        files["format"] = fmt
    path = tmp_path / "files.yaml"
    path.write_text(yaml.safe_dump({"name": "files", "input": {"files": files}, "chunk": 2,
                                    "outputs": {"dir": str(tmp_path / out)}}))
    return path


def test_unknown_file_format_fails_the_check(tmp_path):
    config = _files_config(tmp_path, [NGC3073], fmt="sdsss")
    assert_user_error(run("run", config, "--check"), "input.files.format", "'sdsss'", "sdss")
    assert not (tmp_path / "run").exists()


def _junk(tmp_path, name="junk.fits"):
    path = tmp_path / name
    path.write_text("not a FITS file")
    return path


def test_pipeline_with_no_readable_file_is_one_line(tmp_path):
    config = _files_config(tmp_path, [_junk(tmp_path), _junk(tmp_path, "junk2.fits")])
    result = run("run", config, "--workers", "1", "--no-progress")
    assert_user_error(result, "none of the 2 files could be read", "junk.fits")


def test_files_skipped_by_a_pipeline_are_in_the_summary(tmp_path):
    config = _files_config(tmp_path, [NGC3073, _junk(tmp_path)])
    result = run("run", config, "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 file(s)" in result.stdout and "junk.fits" in result.stdout, result.stdout


def test_rerun_says_how_to_proceed_and_overwrite_replaces_the_run(tmp_path):
    config = _files_config(tmp_path, [NGC3073])
    first = run("run", config, "--workers", "1", "--no-progress")
    assert first.returncode == 0, first.stderr
    (tmp_path / "run" / "stale.txt").write_text("left from the first run")

    again = run("run", config, "--workers", "1", "--no-progress")
    assert_user_error(again, "holds a run already", "--resume", "--overwrite", "--out")
    assert_user_error(run("run", config, "--overwrite", "--resume"), "exclude")

    replaced = run("run", config, "--workers", "1", "--no-progress", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert not (tmp_path / "run" / "stale.txt").exists()
    assert "spectra/s" in replaced.stdout

    # A resume of the finished run computes nothing and claims no throughput.
    resumed = run("run", config, "--workers", "1", "--no-progress", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "spectra/s" not in resumed.stdout and "nothing to compute" in resumed.stdout


def _truncated_pca(tmp_path):
    from _denoise_data import datasets

    from survey_denoise.io.store import write_store
    from survey_denoise.models import PCADenoiser

    noisy, clean = datasets(40, seed=3)
    store = tmp_path / "noisy.zarr"
    write_store(noisy.chunk({"galaxy": 10}), store, progress=False)
    model = PCADenoiser(latent=2).fit(noisy, clean).save(tmp_path / "pca")
    artefact = model / "model.npz"
    artefact.write_bytes(artefact.read_bytes()[: artefact.stat().st_size // 2])
    return store, model


def test_truncated_model_is_one_line_before_any_task(tmp_path):
    store, model = _truncated_pca(tmp_path)
    result = run("denoise", store, "--model", model, "--out", tmp_path / "d.zarr", "--workers", "1")
    assert_user_error(result, "model.npz", "truncated")
    assert not (tmp_path / "d.zarr").exists()

    import yaml

    config = tmp_path / "denoise.yaml"
    config.write_text(yaml.safe_dump({
        "name": "d", "input": {"store": {"path": str(store), "frame": "rest"}},
        "stages": {"denoise": {"model": str(model), "input": "preprocessed"}},
        "outputs": {"dir": str(tmp_path / "run")}}))
    result = run("run", config, "--workers", "1", "--no-progress")
    assert_user_error(result, "stages.denoise.model", "model.npz", "truncated")
    assert not (tmp_path / "run").exists()


def _hog():
    import time

    import numpy as np

    held = np.ones(int(1.5e8))  # 1.2 GB, three times the worker's limit
    time.sleep(5)
    return float(held[0])


def test_workers_out_of_memory_say_what_ran_out_and_what_to_change(capfd):
    import dask.config
    import pytest

    from survey_denoise.cli.common import UserError, client_for

    settings = {"survey-denoise.local.memory-limit": "400MB",
                "distributed.scheduler.allowed-failures": 0}
    with dask.config.set(settings), pytest.raises(UserError) as err:
        with client_for("local", 1) as client:
            client.submit(_hog).result()
    message = str(err.value)
    for fragment in ("task 'hog'", "out of memory", "381.47 MiB per worker", "--chunk-size",
                     "--batch-size",
                     "MEMORY_LIMIT"):
        assert fragment in message, message
    assert "marked as failed" not in capfd.readouterr().err


def test_ingest_desi_of_an_sdss_file_says_it_is_not_a_desi_coadd(tmp_path):
    result = run("ingest", "desi", NGC3073, "--out", tmp_path / "a.zarr", "--workers", "1")
    assert_user_error(result, "NGC3073_SDSS_DR18.fits", "not a DESI coadd")
    assert "redrock" not in result.stderr


def test_redrock_of_another_coadd_is_warned_with_counts(tmp_path):
    coadd, other = _data.DESI_COADDS
    result = run("ingest", "desi", coadd, "--redrock", _data.DESI_DIR / ("redrock-" + other.name[6:]),
                 "--out", tmp_path / "a.zarr", "--workers", "1")
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, result.stderr
    assert coadd.name in warning[0] and "0 of its 1 target(s)" in warning[0]
    assert "redrock-special-dark-27247.fits" in warning[0]
    right = run("ingest", "desi", coadd, "--out", tmp_path / "b.zarr", "--workers", "1")
    assert right.returncode == 0 and "warning:" not in right.stderr, right.stderr
