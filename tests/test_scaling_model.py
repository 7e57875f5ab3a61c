"""benchmarks/scaling_model.py: the projection computes its formula; the smoke run writes its JSON."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("scaling_model",
                                                      ROOT / "benchmarks" / "scaling_model.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return mod


COSTS = {"c_spec": 2e-3, "c_chunk": 0.5, "c_sched": 1e-3, "tasks_per_chunk": 100, "chunk": 1000,
         "c_driver": 1.0, "stores": 1, "t_start": 20.0, "t_load": 3.0}


def test_doubling_workers_halves_the_compute_term_only(model):
    one = model.project(1e7, 100, **COSTS)
    two = model.project(1e7, 200, **COSTS)
    assert two["compute"] == pytest.approx(one["compute"] / 2)
    assert two["ideal"] == pytest.approx(one["ideal"] / 2)
    for serial in ("scheduler", "driver", "start"):
        assert two[serial] == one[serial]


def test_terms_are_the_formula(model):
    r = model.project(1e7, 100, **COSTS)
    n_chunks = 10_000
    assert r["n_chunks"] == n_chunks and r["n_tasks"] == n_chunks * 100
    assert r["compute"] == pytest.approx((1e7 * 2e-3 + n_chunks * 0.5) / 100)
    assert r["scheduler"] == pytest.approx(n_chunks * 100 * 1e-3)
    assert r["driver"] == pytest.approx(n_chunks * 1.0)
    assert r["seconds"] == pytest.approx(r["compute"] + r["scheduler"] + r["driver"] + 23.0)
    assert r["efficiency"] == pytest.approx(1e7 * 2e-3 / 100 / r["seconds"])
    assert r["limit"] == "driver"
    assert r["task_seconds"] == pytest.approx(1000 * 2e-3 + 0.5) and r["lost_fraction"] == 0
    # A partial last chunk is still a chunk.
    assert model.project(1e7 + 1, 100, **COSTS)["n_chunks"] == n_chunks + 1


def test_file_system_overlaps_compute_and_binds_when_slower(model):
    fast_fs = model.project(1e7, 100, **COSTS, bytes_per_spectrum=1e4, fs_bytes_per_s=1e12)
    slow_fs = model.project(1e7, 100, **COSTS, bytes_per_spectrum=1e4, fs_bytes_per_s=1e6)
    base = model.project(1e7, 100, **COSTS)
    assert fast_fs["seconds"] == pytest.approx(base["seconds"])  # hidden behind compute
    assert slow_fs["fs_bandwidth"] == pytest.approx(1e5)
    assert slow_fs["seconds"] == pytest.approx(base["seconds"] - base["compute"] + 1e5)
    assert slow_fs["limit"] == "fs_bandwidth"


def test_efficiency_falls_with_workers_and_rises_with_chunk(model):
    effs = [model.project(1e7, w, **COSTS)["efficiency"] for w in (10, 100, 1000)]
    assert effs[0] > effs[1] > effs[2] > 0
    big = {**COSTS, "chunk": 10_000}
    assert model.project(1e7, 100, **big)["efficiency"] > model.project(1e7, 100, **COSTS)["efficiency"]


def test_whole_chunks_in_waves_leave_workers_idle(model):
    # 10 chunks on 40 workers: one wave of one chunk, 30 workers idle.
    r = model.project(1e4, 40, **COSTS)
    assert r["compute"] == pytest.approx(1000 * 2e-3 + 0.5)
    assert r["ideal"] == pytest.approx(1e4 * 2e-3 / 40)
    # 11 chunks on 10 workers: two waves.
    assert model.project(1.1e4, 10, **COSTS)["compute"] == pytest.approx(2 * 2.5)


def test_lifetime_redoes_a_start_and_half_a_chunk(model):
    r = model.project(1e7, 100, **COSTS, lifetime=3600.0)
    lost = (23.0 + 2.5 / 2) / 3600.0
    assert r["lost_fraction"] == pytest.approx(lost)
    assert r["compute"] == pytest.approx(100 * 2.5 * (1 + lost))
    never = model.project(1e7, 100, **{**COSTS, "chunk": 2_000_000}, lifetime=3600.0)
    assert math.isinf(never["seconds"]) and never["efficiency"] == 0 and never["limit"] == "lifetime"


@pytest.mark.slow
def test_smoke_run_writes_inputs_predictions_and_cross_check(tmp_path):
    out = tmp_path / "scaling_model.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling_model.py"), "--smoke",
                          "--out", str(out), "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=800, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(out.read_text())
    inp = result["inputs"]
    for key in ("c_sched", "tasks_per_chunk", "t_start", "t_load", "c_spec_fast", "c_spec_ppxf",
                "c_driver_per_store_chunk", "bytes_per_spectrum"):
        assert math.isfinite(inp[key]) and inp[key] > 0, key
    assert inp["c_spec_ppxf"] > inp["c_spec_fast"]
    rows = result["predictions"]
    assert {(r["fitter"], r["workers"]) for r in rows} >= {
        (f, w) for f in ("fast", "ppxf") for w in (10, 100, 1000)}
    # A chunk longer than the workers' lifetime never ends: no time (null), efficiency 0.
    assert all(0 <= r["efficiency"] <= 1 for r in rows)
    assert all((r["seconds"] is None) == (r["limit"] == "lifetime") for r in rows)
    cc = result["cross_check_1e6"]
    assert cc["measured_seconds"] == pytest.approx(1637.85)
    assert cc["predicted"]["seconds"] > 0
    assert "10^6 on 2 workers: predicted" in res.stdout
