"""Pipelines from YAML: config checks, a run on a LocalCluster, SIGKILL and --resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from _cli import kill_once_written

from survey_denoise.grid import GRID
from survey_denoise.io.store import completed_chunks, missing_chunks, n_chunks, open_store
from survey_denoise.pipeline import ConfigError, load_config, plan, redone_chunks, run_pipeline

CLI = str(Path(sys.executable).parent / "survey-denoise")
REPO = Path(__file__).resolve().parent.parent

def small_config(out: Path, *, n: int = 48, chunk: int = 6, model: str | None = None) -> dict:
    """mock -> preprocess -> degrade -> (train PCA on half) -> denoise -> fit (fast) -> science."""
    stages = {"preprocess": {"norm": "l2"},
              "degrade": {"noise": "uniform", "sigma": 0.04, "seed": 5}}
    if model is None:
        stages["train"] = {"kind": "pca", "latent": 4, "holdout": 0.5}
    stages["denoise"] = {"model": model or "train"}
    stages["fit"] = {"method": "fast", "stores": ["preprocessed", "denoised"]}
    stages["science"] = {"cases": {"original": "preprocessed", "pca": "denoised"}}
    return {"name": "test", "input": {"mock": {"n": n, "design": "natural", "seed": 4}},
            "chunk": chunk, "stages": stages, "outputs": {"dir": str(out)},
            "report": {"html": False}}  # the report is tested in test_run_report


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def stores_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.zarr"))


def assert_same_outputs(a: Path, b: Path) -> None:
    assert stores_of(a) == stores_of(b) and stores_of(a)
    for name in stores_of(a):
        spectra = not name.startswith("catalogue")
        da, db = open_store(a / name, spectra=spectra), open_store(b / name, spectra=spectra)
        ids = da["galaxy"].values
        assert len(set(ids.tolist())) == ids.size, f"{name}: duplicated galaxies"
        xr.testing.assert_identical(da.load(), db.load())
    # heldout.parquet exists only where the run trained its own model
    tables = {p.name for p in a.glob("*.parquet")} & {p.name for p in b.glob("*.parquet")}
    # the latent coordinates are of the held-out galaxies only where the run trained its model
    tables.discard("latent.parquet")
    assert {"truth.parquet", "catalogue-denoised.parquet"} <= tables
    for table in sorted(tables):
        pd.testing.assert_frame_equal(pd.read_parquet(a / table), pd.read_parquet(b / table))


# ---------------------------------------------------------------- config checks


def test_config_problems_are_reported_together_before_any_work(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", {
        "name": "x", "input": {"mock": {"n": 10, "desing": "mzr"}},
        "stages": {"denoise": {"model": "train"}, "bogus": {}}, "outputs": {"dir": "o"}})
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert "unknown key 'input.mock.desing'" in msg and "unknown key 'stages.bogus'" in msg
    assert "\n" not in msg and msg.startswith(str(bad))

    missing = write_config(tmp_path / "missing.yaml", {
        "name": "x", "input": {"files": {"paths": [str(tmp_path / "nowhere-*.fits")]}},
        "stages": {"preprocess": {}, "denoise": {"model": str(tmp_path / "no-model")},
                   "fit": {"stores": ["degraded"]}},
        "outputs": {"dir": str(tmp_path / "run")}})
    with pytest.raises(ConfigError) as err:
        load_config(missing)
    msg = str(err.value)
    for part in ("no file matches", "no-model: no such model folder",
                 "stages.denoise.input: 'degraded' is not made",
                 "stages.fit.stores: 'degraded' is not made"):
        assert part in msg, part
    assert not (tmp_path / "run").exists()

    with pytest.raises(FileNotFoundError, match="no such pipeline config"):
        load_config(tmp_path / "absent.yaml")


def test_a_combined_catalogue_needs_both_fitted_catalogues_and_the_combine_stage(tmp_path):
    base = {"name": "x", "input": {"mock": {"n": 10}}, "outputs": {"dir": str(tmp_path / "run")},
            "stages": {"preprocess": {}, "degrade": {"sigma": 0.04}, "train": {"kind": "pca", "latent": 2},
                       "denoise": {"model": "train"}, "fit": {"stores": ["preprocessed", "denoised"]},
                       "combine": {},
                       "science": {"cases": {"original": "preprocessed", "both": "combined"}}}}
    with pytest.raises(ConfigError, match="stages.combine: stages.fit.stores must hold both 'denoised' "
                                          "and the de-noiser's input 'degraded'"):
        load_config(write_config(tmp_path / "a.yaml", base))
    base["stages"]["fit"]["stores"].append("degraded")
    steps = plan(load_config(write_config(tmp_path / "b.yaml", base))).steps
    names = [s.name for s in steps]
    assert names.index("combine") > names.index("fit-degraded")
    combine = steps[names.index("combine")]
    assert combine.inputs == ("catalogue-denoised", "catalogue-degraded")
    assert combine.outputs[0] == "catalogue-combined.zarr"
    assert "catalogue-combined" in steps[names.index("science")].inputs
    del base["stages"]["combine"]
    with pytest.raises(ConfigError, match="stages.science.cases.both: 'combined' needs a stages.combine"):
        load_config(write_config(tmp_path / "c.yaml", base))


def test_model_made_for_another_grid_or_normalisation_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    grid = dict(GRID.to_dict(), npix=GRID.npix + 1)
    (model / "card.json").write_text(json.dumps({"kind": "pca", "grid": grid,
                                                 "norm_convention": "sum"}))
    cfg = write_config(tmp_path / "c.yaml", {
        "name": "x", "input": {"mock": {"n": 10}},
        "stages": {"preprocess": {"norm": "l2"}, "degrade": {"sigma": 0.04},
                   "denoise": {"model": str(model)}},
        "outputs": {"dir": str(tmp_path / "run")}})
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "trained on the grid" in str(err.value) and f"{GRID.npix + 1} pixels" in str(err.value)
    (model / "card.json").write_text(json.dumps({"kind": "pca", "grid": GRID.to_dict(),
                                                 "norm_convention": "sum"}))
    with pytest.raises(ConfigError, match="trained on 'sum'-normalised spectra"):
        load_config(cfg)
    (model / "card.json").write_text(json.dumps({"kind": "pca", "grid": GRID.to_dict(),
                                                 "norm_convention": "l2"}))
    assert load_config(cfg).stages.denoise.model == str(model)


def test_a_training_whose_model_nothing_uses_is_refused(tmp_path):
    from _denoise_data import datasets

    from survey_denoise.models import PCADenoiser

    noisy, clean = datasets(40, seed=3)
    model = PCADenoiser(latent=2).fit(noisy, clean).save(tmp_path / "pca")
    config = small_config(tmp_path / "run", model=str(model))
    assert load_config(write_config(tmp_path / "ok.yaml", config)).stages.train is None
    config["stages"]["train"] = {"kind": "pca", "latent": 4}
    with pytest.raises(ConfigError, match="stages.train: trains a model that nothing uses") as err:
        load_config(write_config(tmp_path / "both.yaml", config))
    assert "--set stages.train=null" in str(err.value)
    # the remedy the message names works from the command line
    fixed = load_config(tmp_path / "both.yaml", overrides=["stages.train=null"])
    assert fixed.stages.train is None and fixed.stages.denoise.model == str(model)


def test_shipped_pipelines_are_valid():
    # Anchored to the repository: a glob relative to the working directory
    # finds nothing when pytest runs from elsewhere, and the test would pass.
    shipped = sorted((REPO / "pipelines").glob("*.yaml"))
    assert shipped, f"no pipelines/*.yaml under {REPO}"
    for path in shipped:
        try:
            load_config(path)
        except ConfigError as err:
            # Only a model that a previous pipeline makes may be missing.
            assert "no such model folder" in str(err), str(err)


def test_cli_reports_config_errors_in_one_line(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", {"name": "x", "input": {}, "outputs": {"dir": "o"}})
    res = subprocess.run([CLI, "run", str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "give exactly one of mock, files, store" in res.stderr


# ---------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run on a LocalCluster of 2 workers."""
    folder = tmp_path_factory.mktemp("ref") / "run"
    summary = run_pipeline(load_config(write_config(folder.parent / "c.yaml", small_config(folder))),
                           workers=2, progress=False, echo=lambda m: None)
    return folder, summary


def test_run_writes_every_stage_and_a_run_log(reference):
    folder, summary = reference
    for name in stores_of(folder):
        assert missing_chunks(folder / name) == [], name
    first = "raw.zarr" if (folder / "raw.zarr").exists() else "preprocessed.zarr"
    raw = open_store(folder / first)
    assert raw.sizes["galaxy"] == 48 and n_chunks(folder / first) == 8
    truth = pd.read_parquet(folder / "truth.parquet")
    np.testing.assert_array_equal(truth["galaxy"].to_numpy(), raw["galaxy"].values)
    assert summary.galaxies == 48 and summary.failed <= summary.flagged <= 48
    log = json.loads((folder / "run.json").read_text())
    assert log["status"] == "complete" and log["config"]["name"] == "test"
    assert {"numpy", "scipy", "dask", "distributed", "xarray", "zarr"} <= set(log["versions"])
    inv = log["invocations"][0]
    assert inv["summary"]["galaxies"] == 48 and not inv["resume"]
    assert all(rec["seconds"] >= 0 and rec["skipped"] == 0 for rec in inv["stages"].values())
    assert "wrote 8 of 8 chunks" in (folder / "run.log").read_text()


def test_science_measures_only_the_galaxies_held_out_of_training(reference):
    folder, _ = reference
    held = pd.read_parquet(folder / "heldout.parquet")["galaxy"]
    card = json.loads((folder / "model" / "card.json").read_text())
    assert held.size == 24 and held.is_unique and card["training"]["n_galaxy"] == 48 - 24
    summary = pd.read_csv(folder / "science" / "mzr_test" / "summary.csv", index_col=0)
    assert list(summary.index) == ["original", "pca"]
    assert (summary["n_total"] == 24).all()
    for case in summary.index:
        measured = pd.read_parquet(folder / "science" / "mzr_test" / f"galaxies_{case}.parquet")
        assert set(measured["galaxy"]) == set(held)


def test_metallicity_errors_of_a_run_are_measured_at_other_cuts_and_rules(reference, tmp_path):
    """pipelines/oh_errors.py re-reads a run: at the run's own cut it is the science stage's test."""
    import importlib.util

    folder, _ = reference
    spec = importlib.util.spec_from_file_location("oh_errors", Path(__file__).resolve().parents[1]
                                                  / "pipelines" / "oh_errors.py")
    oh_errors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oh_errors)
    oh_errors.main([str(folder), "--snr", "15", "0", "--out", str(tmp_path / "oh.json")])
    rows = pd.DataFrame(json.loads((tmp_path / "oh.json").read_text())["summary"])
    assert len(rows) == 2 * 2 * 2  # rules x cuts x cases
    science = pd.read_csv(folder / "science" / "mzr_test" / "summary.csv", index_col=0)
    at15 = rows[(rows["flux_errors"] == "total") & (rows["min_halpha_snr"] == 15)].set_index("case")
    for case in science.index:
        assert at15.loc[case, "n_measured"] == science.loc[case, "n_measured"]
        assert at15.loc[case, "median_oh_err"] == pytest.approx(science.loc[case, "median_oh_err"], nan_ok=True)
    for rule in ("total", "formal"):
        sub = rows[rows["flux_errors"] == rule].pivot(index="case", columns="min_halpha_snr", values="n_measured")
        assert (sub[0.0] >= sub[15.0]).all()
    # the formal part of a line's error is never above its total
    both = rows[rows["min_halpha_snr"] == 0].pivot(index="case", columns="flux_errors", values="median_oh_err_stat")
    assert (both["formal"] <= both["total"] + 1e-12).all()


def test_second_run_in_the_same_folder_needs_resume_and_the_same_config(reference, tmp_path):
    folder, _ = reference
    cfg = load_config(write_config(tmp_path / "c.yaml", small_config(folder)))
    with pytest.raises(FileExistsError, match="--resume"):
        run_pipeline(cfg, workers=1, progress=False, echo=lambda m: None)
    changed = load_config(write_config(tmp_path / "d.yaml", small_config(folder, n=40)))
    with pytest.raises(ConfigError, match="config changed.*input"):
        run_pipeline(changed, workers=1, resume=True, progress=False, echo=lambda m: None)


def _wait_for_partial(folder: Path, proc: subprocess.Popen, timeout: float = 240) -> str:
    """Poll until some store of the run is partly written; return its name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        for store in folder.glob("*.zarr"):
            try:
                done, total = len(completed_chunks(store)), n_chunks(store)
            except Exception:  # plan not written yet
                continue
            if 0 < done < total - 2:
                return store.name
        time.sleep(0.02)
    raise AssertionError("no store was ever partly written")


def _session_survivors(session: int, timeout: float = 30) -> str:
    """Processes of ``session`` still alive after ``timeout`` s (``ps`` lines), or ``""``.

    A worker learns of its parent's death when its end of the parent pipe
    closes, and exits from a thread that needs the interpreter: on a loaded
    machine that takes a moment, so the check waits for it rather than sampling
    once.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = subprocess.run(["pgrep", "-s", str(session)], capture_output=True, text=True)
        pids = alive.stdout.split()
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not pids:
        return ""
    ps = subprocess.run(["ps", "-o", "pid,etime,args", "-p", ",".join(pids)],
                        capture_output=True, text=True)
    return ps.stdout


@pytest.mark.slow
def test_sigkill_of_the_driver_then_resume_equals_an_uninterrupted_run(reference, tmp_path):
    ref_folder, _ = reference
    model = str(ref_folder / "model") if (ref_folder / "model").exists() else None
    folder = tmp_path / "run"
    # Many small chunks so that the kill lands in the middle of a stage.
    ref_cfg = small_config(ref_folder, model=model)
    cfg = write_config(tmp_path / "c.yaml", dict(ref_cfg, outputs={"dir": str(folder)}))
    proc = subprocess.Popen([CLI, "run", str(cfg), "--workers", "2", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        partial = _wait_for_partial(folder, proc)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers must not outlive it
        proc.wait(timeout=30)
        leftover = _session_survivors(proc.pid)
        assert leftover == "", f"worker processes outlived the killed driver:\n{leftover}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    missing = {name: missing_chunks(folder / name) for name in stores_of(folder)}
    assert missing[partial], "the kill did not interrupt a store"
    before = set(stores_of(folder))

    res = subprocess.run([CLI, "run", str(cfg), "--workers", "2", "--resume", "--no-progress"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "spectra processed" in res.stdout

    # Only the missing chunks were redone, counted from the run log.
    log = json.loads((folder / "run.json").read_text())
    assert log["status"] == "complete" and len(log["invocations"]) == 2
    assert log["invocations"][0]["status"] == "running"  # killed: never finished
    resumed = log["invocations"][1]["stages"]
    stage_of = {rec["output"]: rec for rec in resumed.values()}
    for name in stores_of(folder):
        rec = stage_of[name]
        expect = missing[name] if name in before else list(range(n_chunks(folder / name)))
        assert rec["written"] == expect, name
        assert rec["skipped"] == rec["n_chunks"] - len(expect), name
    counts = redone_chunks(folder)[1]
    assert sum(counts.values()) == sum(len(stage_of[n]["written"]) for n in stores_of(folder)) \
        + counts.get("train", 0)

    # Identical to the uninterrupted run, no galaxy missing or duplicated.
    assert_same_outputs(ref_folder, folder)


@pytest.mark.slow
def test_sigkill_during_training_then_resume_goes_on_from_the_last_epoch(tmp_path):
    from survey_denoise.models import load_model, read_card

    def config(folder: Path) -> dict:
        cfg = small_config(folder, n=96, chunk=24)
        cfg["stages"]["train"] = {"kind": "ae", "latent": 2, "epochs": 10, "holdout": 0.25, "seed": 3}
        # Only the stages up to the de-noised store: what comes after reads it and is
        # resumed like any other stage (test_sigkill_of_the_driver_then_resume_...).
        del cfg["stages"]["fit"], cfg["stages"]["science"]
        cfg["report"] = {"examples": 0, "latent": False, "reconstruction": False, "scores": False,
                         "html": False}
        return cfg

    # One worker: the training and the de-noising share its TensorFlow (what is
    # tested is the training's resume, not the spread of tasks).
    whole = tmp_path / "whole"
    run_pipeline(load_config(write_config(tmp_path / "w.yaml", config(whole))), workers=1,
                 progress=False, echo=lambda m: None)
    epochs = len(read_card(whole / "model")["history"]["loss"])
    assert epochs > 3, "the training must outlast the kill"

    folder = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", config(folder))
    state = folder / "model.checkpoint" / "state.json"
    kill_once_written([CLI, "run", cfg, "--workers", "1", "--no-progress"], state)
    done = json.loads(state.read_text())["epochs_done"]
    assert 1 <= done < epochs and not (folder / "model" / ".complete").exists()

    res = subprocess.run([CLI, "run", str(cfg), "--workers", "1", "--resume", "--no-progress"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    card = read_card(folder / "model")
    assert card["training_choices"]["resumed_after_epoch"] == done
    assert f"ae: resuming after epoch {done} of at most 10" in (folder / "run.log").read_text()
    assert not (folder / "model.checkpoint").exists()  # removed once the model is saved
    # The same network as the uninterrupted training's, so the same de-noised spectra and errors.
    # (The card's line-error calibration may differ in the 12th digit: it sums on the driver's
    # BLAS threads, whose order no two processes need repeat.)
    assert card["history"] == read_card(whole / "model")["history"]
    a, b = (load_model(f / "model") for f in (whole, folder))
    for x, y in zip(a.model_.get_weights(), b.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
    a, b = (open_store(f / "denoised.zarr") for f in (whole, folder))
    for name in ("flux", "ivar"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_bad_spectra_become_flags_not_a_failed_run(tmp_path):
    from survey_denoise.flags import Flag
    from survey_denoise.io.store import write_store
    from survey_denoise.schema import make_spectra

    n, wave = 12, np.geomspace(3800.0, 9200.0, 3000)
    rng = np.random.default_rng(1)
    z = rng.uniform(0.03, 0.05, n)
    flux = 5 + rng.normal(0, 0.3, (n, wave.size))
    flux += 40 * np.exp(-0.5 * ((wave[None, :] - 6564.6 * (1 + z[:, None])) / 3.0) ** 2)
    ivar = np.full((n, wave.size), 11.0)
    z[3] = np.nan            # no redshift
    ivar[7] = 0.0            # no information at all
    flux[9, :] = np.nan      # broken flux
    raw = make_spectra(flux.astype(np.float32), ivar.astype(np.float32), wave,
                       np.arange(100, 100 + n), z, frame="observed").chunk(galaxy=4)
    write_store(raw, tmp_path / "in.zarr", progress=False)
    cfg = write_config(tmp_path / "c.yaml", {
        "name": "bad", "input": {"store": {"path": str(tmp_path / "in.zarr")}}, "chunk": 4,
        "stages": {"preprocess": {"norm": "l2"}, "fit": {"method": "fast"}},
        "outputs": {"dir": str(tmp_path / "run")}})
    summary = run_pipeline(load_config(cfg), workers=1, progress=False, echo=lambda m: None)
    assert summary.galaxies == n and summary.flagged >= 3
    flags = open_store(tmp_path / "run" / "preprocessed.zarr")["flags"].values
    assert all(flags[i] != 0 for i in (3, 7, 9)) and flags[0] & int(Flag.NO_REDSHIFT) == 0
    cat = pd.read_parquet(tmp_path / "run" / "catalogue-preprocessed.parquet")
    assert sorted(cat["galaxy"].tolist()) == list(range(100, 100 + n))  # failed fits keep their row


@pytest.mark.slow
def test_worker_process_killed_mid_run_costs_only_its_tasks(reference, tmp_path):
    from distributed import Client

    from survey_denoise.cluster import local_cluster

    ref_folder, _ = reference
    model = str(ref_folder / "model") if (ref_folder / "model").exists() else None
    folder = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", small_config(folder, model=model))
    with local_cluster(2) as cluster, Client(cluster) as client:
        proc = subprocess.Popen([CLI, "run", str(cfg), "--cluster", cluster.scheduler_address,
                                 "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            _wait_for_partial(folder, proc)
            pids = client.run(os.getpid)
            os.kill(next(iter(pids.values())), signal.SIGKILL)  # the nanny starts a new one
            out, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "48 spectra processed" in out
    assert_same_outputs(ref_folder, folder)
