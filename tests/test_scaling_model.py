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
         "c_driver": 1.0, "t_start": 20.0, "t_load": 3.0}


def test_doubling_workers_halves_the_compute_term_only(model):
    one = model.project(1e7, 100, **COSTS)
    two = model.project(1e7, 200, **COSTS)
    assert two["compute"] == pytest.approx(one["compute"] / 2)
    assert two["ideal"] == pytest.approx(one["ideal"] / 2)
    for serial in ("scheduler", "driver", "products", "start"):
        assert two[serial] == one[serial]


def test_terms_are_the_formula(model):
    r = model.project(1e7, 100, **COSTS)
    n_chunks = 10_000
    assert r["n_chunks"] == n_chunks and r["n_units"] == n_chunks and r["n_tasks"] == n_chunks * 101
    assert r["compute"] == pytest.approx((1e7 * 2e-3 + n_chunks * 0.5) / 100)
    assert r["scheduler"] == pytest.approx(n_chunks * 101 * 1e-3)
    assert r["driver"] == pytest.approx(n_chunks * 1.0)
    assert r["seconds"] == pytest.approx(r["compute"] + r["scheduler"] + r["driver"] + 23.0)
    assert r["efficiency"] == pytest.approx(1e7 * 2e-3 / 100 / r["seconds"])
    assert r["limit"] == "driver"
    assert r["task_seconds"] == pytest.approx(1000 * 2e-3 + 0.5) and r["lost_fraction"] == 0
    # A partial last chunk is still a chunk.
    assert model.project(1e7 + 1, 100, **COSTS)["n_chunks"] == n_chunks + 1


def test_products_step_is_serial_and_does_not_grow_with_the_survey(model):
    base = model.project(1e7, 100, **COSTS)
    r = model.project(1e7, 100, **COSTS, t_products=12.0)
    assert r["products"] == 12.0
    assert r["seconds"] == pytest.approx(base["seconds"] + 12.0)
    assert model.project(1e8, 1000, **COSTS, t_products=12.0)["products"] == r["products"]


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


def test_units_of_shards_set_the_scheduler_files_and_driver(model):
    # 10^4 chunks in units of 8 (the last one short): a task per chunk, 1,250
    # write tasks and 1,250 x 41 files.
    store = model.Store(chunks_per_shard=8, files_per_unit=41)
    r = model.project(1e7, 100, **{**COSTS, "tasks_per_chunk": 1.0, "c_driver": 0.01},
                      c_unit=0.2, c_cull=1e-5, stores=(store,), fs_creates_per_s=100.0)
    n_chunks, units = 10_000, 1_250
    assert r["n_units"] == units and r["n_tasks"] == n_chunks + units and r["chunks_per_shard"] == [8]
    assert r["scheduler"] == pytest.approx((n_chunks + units) * 1e-3)
    assert r["fs_metadata"] == pytest.approx(units * 41 / 100.0)
    assert r["driver"] == pytest.approx(n_chunks * 0.01 + units * (0.2 + 1e-5 * n_chunks))
    # Two stores: each its own units and files; the per-chunk cost once per store.
    two = model.project(1e7, 100, **{**COSTS, "tasks_per_chunk": 1.0, "c_driver": 0.01},
                        stores=(store, model.Store(1, 3)), fs_creates_per_s=100.0)
    assert two["n_units"] == units + n_chunks
    assert two["fs_metadata"] == pytest.approx((units * 41 + n_chunks * 3) / 100.0)
    assert two["driver"] == pytest.approx(2 * n_chunks * 0.01)


def test_chunks_are_the_work_items_whatever_the_unit(model):
    # 10^4 chunks of 2.5 s: a shard of 10 chunks is computed as 10 tasks,
    # which spread over the workers, and written by one more.
    costs = {**COSTS, "stores": (model.Store(10, 0),)}
    r = model.project(1e7, 2000, **costs)
    assert r["task_seconds"] == pytest.approx(2.5) and r["chunk_seconds"] == pytest.approx(2.5)
    assert r["compute"] == pytest.approx(5 * 2.5)  # five waves of 2,000 chunks
    assert r["compute"] == model.project(1e7, 2000, **COSTS)["compute"]
    # A chunk, not a unit, must end within the workers' lifetime.
    assert model.project(1e7, 100, **costs, lifetime=10.0)["limit"] != "lifetime"
    never = model.project(1e7, 100, **costs, lifetime=2.0)
    assert never["limit"] == "lifetime" and math.isinf(never["seconds"])


def test_culling_the_store_graph_makes_the_driver_quadratic_in_chunks(model):
    # Each unit's cull walks the whole store's graph: at a fixed unit size,
    # twice the chunks is twice the units, each twice as dear.
    costs = {**COSTS, "c_driver": 0.0, "c_cull": 1e-4, "stores": (model.Store(4, 0),)}
    one = model.project(1e7, 100, **costs)
    two = model.project(2e7, 100, **costs)
    assert two["driver"] == pytest.approx(4 * one["driver"])
    assert one["driver"] == pytest.approx(2_500 * 1e-4 * 10_000)


def test_catalogue_shards_follow_the_store_module(model):
    from survey_denoise.io.store import chunks_per_shard

    inp = {"catalogue_bytes_per_galaxy": 800, "catalogue_files_per_unit": 99}
    for n, chunk in ((1e7, 1000), (1e7, 20_000), (1e5, 5000)):
        got = model.catalogue(inp, n, chunk)
        n_chunks = math.ceil(n / chunk)
        assert got == model.Store(chunks_per_shard(n_chunks, chunk * 800), 99)
    # 10^4 chunks of 800 kB: 335 to a 256 MiB shard.
    assert model.catalogue(inp, 1e7, 1000).chunks_per_shard == 335
    # Sized to 1,000 workers, 4 units each: 10^4 chunks in units of 2.
    assert model.catalogue(inp, 1e7, 1000, min_units=4000).chunks_per_shard == 2


def test_predictions_keep_every_worker_busy_with_few_shards(model):
    inp = {"c_spec_fast": 2e-3, "c_chunk_fast": 0.0, "c_spec_ppxf": 0.3, "c_chunk_ppxf": 0.0,
           "c_sched": 1e-3, "tasks_per_chunk": 1.0, "tasks_per_unit": 1.0, "c_driver": 0.0, "c_unit": 0.1,
           "c_cull": 0.0, "t_products": 0.0, "t_start": 30.0, "t_load": 3.0, "t_templates_ppxf": 9.0,
           "bytes_per_spectrum": 7e3, "catalogue_bytes_per_galaxy": 800, "catalogue_files_per_unit": 99}
    rows = model.predictions(inp, lifetime=math.inf)
    for r in rows:
        assert r["compute"] == pytest.approx(math.ceil(r["n_chunks"] / r["workers"]) * r["chunk_seconds"])
    # The rule's ~28 shards of 10^7 catalogue rows do not idle 1,000 workers.
    big = [r for r in rows if r["workers"] == 1000 and r["fitter"] == "fast" and r["chunk"] == 1000]
    assert big and all(r["n_units"] < 1000 and r["compute"] < 10 * 2.0 + 1e-9 for r in big)


def test_default_e2e_is_the_newest_run(model, tmp_path, monkeypatch):
    monkeypatch.setattr(model, "RESULTS", tmp_path)
    assert model.default_e2e() == tmp_path / "end_to_end_1e6.json"
    (tmp_path / "end_to_end_1e6_new.json").write_text("{}")
    assert model.default_e2e() == tmp_path / "end_to_end_1e6_new.json"
    (tmp_path / "end_to_end_1e6_driver.json").write_text("{}")
    assert model.default_e2e() == tmp_path / "end_to_end_1e6_driver.json"


def test_cross_check_writes_the_runs_own_stores(model):
    run = {"n": 1_000_000, "workers": 2, "chunk": 5000, "seconds": 2000.0, "worker_cpu_seconds": 3000.0,
           "worker_cpu_ms_per_spectrum": 3.0, "driver_cpu_seconds": 100.0,
           "driver_cpu_seconds_by_thread": {"main": 30.0, "event loop (scheduler, client comms)": 50.0},
           "stores": {"catalogue-denoised.zarr": {"chunks_per_shard": 25, "galaxy_variables": 98},
                      "raw.zarr": {"chunks_per_shard": 6, "galaxy_variables": 39}},
           "stages": {}}
    inp = {"c_spec_chain_1e6": 2e-3, "c_chunk_chain_1e6": 0.1, "c_sched": 0.01, "tasks_per_chunk": 1.0,
           "tasks_per_unit": 1.0,
           "c_driver": 0.0, "c_unit": 0.5, "c_cull": 0.0, "t_products": 0.0, "t_start": 30.0,
           "t_load": 3.0}
    cc = model.cross_check(inp, {"runs": [run], "git": "abc"}, "x.json")
    units = 8 + 34  # 200 chunks in 25s and in 6s
    assert cc["stores"] == [[25, 99], [6, 40]]
    assert cc["predicted"]["n_units"] == units
    assert cc["predicted"]["driver"] == pytest.approx(units * 0.5)
    assert cc["predicted"]["scheduler"] == pytest.approx((2 * 200 + units) * 0.01)
    assert cc["predicted_with_measured_compute"] == pytest.approx(
        cc["predicted"]["seconds"] - cc["predicted"]["compute"] + 1500.0)
    assert cc["measured_driver_main_thread_seconds"] == 30.0 and cc["source"] == "x.json"


@pytest.mark.slow
def test_smoke_run_writes_inputs_predictions_and_cross_check(tmp_path):
    out = tmp_path / "scaling_model.json"
    e2e = ROOT / "benchmarks" / "results" / "end_to_end_1e6_f0bc19f.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling_model.py"), "--smoke",
                          "--out", str(out), "--work", str(tmp_path / "work"), "--e2e", str(e2e)],
                         capture_output=True, text=True, timeout=800, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(out.read_text())
    inp = result["inputs"]
    for key in ("c_sched", "tasks_per_chunk", "tasks_per_unit", "t_start", "t_load", "c_spec_fast", "c_spec_ppxf",
                "driver_cpu_per_written_chunk", "bytes_per_spectrum", "catalogue_bytes_per_galaxy"):
        assert math.isfinite(inp[key]) and inp[key] > 0, key
    assert inp["c_spec_ppxf"] > inp["c_spec_fast"]
    # The writer hands the scheduler one task per chunk and one per write unit
    # (a shard's worth of chunks), not the chain's hundred-odd tasks per chunk.
    write = result["measured"]["write"]
    assert write["units"] == 8 // write["chunks_per_shard"]
    assert write["tasks_per_chunk"] == pytest.approx(1.0)
    assert write["tasks_per_unit"] == pytest.approx(1.0)
    assert write["graph_tasks_per_chunk"] > 50
    # At most one data file per galaxy variable and write unit (a unit that is all fill
    # value is not written).
    assert write["store"]["data_files"] <= write["store"]["galaxy_variables"] * write["units"]
    assert inp["catalogue_files_per_unit"] == write["store"]["galaxy_variables"] + 1
    scan = result["measured"]["driver"]
    assert len(scan["points_chunks_k_seconds"]) == 4
    assert all(t > 0 for *_, t in scan["points_chunks_k_seconds"])
    rows = result["predictions"]
    assert {(r["fitter"], r["workers"]) for r in rows} >= {
        (f, w) for f in ("fast", "ppxf") for w in (10, 100, 1000)}
    # A chunk longer than the workers' lifetime never ends: no time (null), efficiency 0.
    assert all(0 <= r["efficiency"] <= 1 for r in rows)
    assert all((r["seconds"] is None) == (r["limit"] == "lifetime") for r in rows)
    cc = result["cross_check_1e6"]
    assert cc["measured_seconds"] == pytest.approx(3428.12) and cc["source"] == e2e.name
    assert cc["stores"] == [[25, 99], [6, 40]]
    assert cc["predicted"]["seconds"] > 0
    assert "10^6 on 2 workers (end_to_end_1e6_f0bc19f.json): predicted" in res.stdout
