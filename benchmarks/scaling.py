"""Strong scaling, 1 -> 2 workers: the pPXF path and the fast path, LocalCluster and SLURM.

pPXF path: a fixed set of DESI-like spectra (rest-frame mock, L2-normalised,
DESI noise at z = 0.1; prepared once, not timed) fitted with
``fit_lines(method="ppxf")`` and written to a catalogue store with
:func:`survey_denoise.io.store.write_store`, on 1 and then 2 workers.
Every worker first builds its templates (timed separately: a once-per-worker
cost, not a per-spectrum one).  The time spent inside the ``ppxf`` call
itself is measured on the workers by a timer wrapped around
``ppxf.ppxf.ppxf``, so that

* per-spectrum overhead of the pipeline = (task compute time - pPXF time) /
  pPXF time, with task compute times from Dask's task stream (everything a
  chunk does besides pPXF: reading, masks, gas templates, catalogue rows,
  writing);
* whole-run overhead = (workers x wall - pPXF time) / pPXF time (adds the
  scheduler, idle workers at the end, the driver);
* parallel efficiency = T(1 worker) / (2 x T(2 workers)).

Fast path: the whole chain of ``benchmarks/end_to_end.py`` (mock ->
normalise -> degrade -> fast fit -> catalogue, stores on disk) on 1 and 2
workers.

With a running SLURM (``sinfo`` answers; ``cluster/slurm-up.sh`` starts a
single-node one) the pPXF path is repeated with 1 and 2 worker jobs through
``survey_denoise.cluster.connect("cluster/slurm.yaml")`` (found beside this folder).

Writes ``benchmarks/results/scaling.json``.
Usage: ``python benchmarks/scaling.py [--ppxf-n 64] [--fast-n 20000] [--slurm auto|no]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import cloudpickle  # noqa: E402
import end_to_end  # noqa: E402
from end_to_end import config_for, run_one, worker_cpu  # noqa: E402

# Batch-system workers cannot import this folder: ship its functions by value.
cloudpickle.register_pickle_by_value(end_to_end)

RESULTS = Path(__file__).parent / "results"
SLURM_FILE = Path(__file__).resolve().parents[1] / "cluster" / "slurm.yaml"


# ------------------------------------------------------------ on the workers


def _install_ppxf_timer() -> None:
    """Wrap ``ppxf.ppxf.ppxf`` so the worker adds up the time spent in it."""
    import ppxf.ppxf as mod

    if getattr(mod.ppxf, "timed", False):
        mod.ppxf.totals[:] = [0.0, 0]
        return
    inner = mod.ppxf

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            timed.totals[0] += time.perf_counter() - t
            timed.totals[1] += 1

    timed.timed, timed.totals = True, [0.0, 0]
    mod.ppxf = timed


def _ppxf_totals() -> list:
    import ppxf.ppxf as mod

    return list(getattr(mod.ppxf, "totals", [0.0, 0]))


def _warm_templates() -> float:
    """Build the worker's pPXF templates (cached per process); seconds taken."""
    t = time.perf_counter()
    from survey_denoise.fitting import VELSCALE_RATIO
    from survey_denoise.fitting.templates import stellar_templates
    from survey_denoise.grid import GRID

    stellar_templates(GRID.velscale, VELSCALE_RATIO, (GRID.wave_min * 0.95, GRID.wave_max * 1.05), None)
    return time.perf_counter() - t


# ------------------------------------------------------------ driver


def prepare(n: int, chunk: int, path: Path) -> None:
    """DESI-like noisy spectra for the pPXF runs (2 local workers; not timed)."""
    import numpy as np

    from survey_denoise.cluster import connect
    from survey_denoise.io.store import write_store
    from survey_denoise.mock import MockConfig, generate
    from survey_denoise.noise import DesiNoise, degrade
    from survey_denoise.preprocess import normalise

    if path.exists():
        return
    ds = generate(np.arange(n) + 7_000_000, MockConfig(seed=5, rest=True), chunk_size=chunk)
    ds = degrade(normalise(ds, "l2"), DesiNoise(), seed=9, z_target=0.1)
    with connect("local", n_workers=2, echo=None) as client:
        write_store(ds, path, client=client, progress=False, label="prepare")


def ppxf_run(client, store: Path, out: Path, workers: int) -> dict:
    """Fit ``store`` with pPXF on ``client``; wall time, pPXF time and task time."""
    from distributed import get_task_stream

    from survey_denoise.fitting import fit_lines
    from survey_denoise.io.store import open_store, write_store

    client.wait_for_workers(workers, timeout=300)
    warm = client.run(_warm_templates)
    client.run(_install_ppxf_timer)
    shutil.rmtree(out, ignore_errors=True)
    ds = open_store(store, frame="rest")
    n = int(ds.sizes["galaxy"])
    cpu0 = worker_cpu(client)
    driver0 = time.process_time()
    with get_task_stream(client) as ts:
        t = time.perf_counter()
        write_store(fit_lines(ds, "ppxf"), out, client=client, progress=False, label="ppxf",
                    spectra=False)
        wall = time.perf_counter() - t
    cpu = worker_cpu(client) - cpu0
    # The driver (graph building, the scheduler of a LocalCluster or of the
    # SLURM jobs) shares the 2 cores with the workers.
    driver = time.process_time() - driver0
    totals = client.run(_ppxf_totals)
    ppxf_s = sum(v[0] for v in totals.values())
    calls = sum(v[1] for v in totals.values())
    # Per worker: an idle worker while the other computes is load imbalance,
    # not overhead of the fits.
    busy: dict = {}
    for task in ts.data:
        for s in task["startstops"]:
            if s["action"] == "compute":
                busy[task["worker"]] = busy.get(task["worker"], 0.0) + s["stop"] - s["start"]
    task_s = sum(busy.values())
    return {"workers": workers, "n": n, "seconds": round(wall, 2),
            "compute_seconds_per_worker": sorted(round(v, 2) for v in busy.values()),
            "fits_per_s": round(n / wall, 3), "fits_per_s_per_worker": round(n / wall / workers, 3),
            "ppxf_calls": calls, "ppxf_seconds": round(ppxf_s, 2),
            "ppxf_seconds_per_fit": round(ppxf_s / max(calls, 1), 4),
            "task_compute_seconds": round(task_s, 2), "worker_cpu_seconds": round(cpu, 2),
            "driver_cpu_seconds": round(driver, 2),
            "overhead_per_spectrum": round((task_s - ppxf_s) / ppxf_s, 4) if ppxf_s else None,
            "overhead_whole_run": round((workers * wall - ppxf_s) / ppxf_s, 4) if ppxf_s else None,
            "template_build_seconds_per_worker": [round(v, 2) for v in warm.values()],
            "load_average": round(os.getloadavg()[0], 2)}


def efficiency(one: dict, two: dict) -> float:
    return round(one["seconds"] / (2 * two["seconds"]), 3)


def cpu_ratio(one: dict, two: dict) -> float:
    """Worker CPU seconds on 1 worker / on 2: below 1 when the work itself grows with workers."""
    return round(one["worker_cpu_seconds"] / two["worker_cpu_seconds"], 3)


def slurm_running() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and any(s in res.stdout for s in ("idle", "mix", "alloc"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ppxf-n", type=int, default=64)
    ap.add_argument("--ppxf-chunk", type=int, default=8)
    ap.add_argument("--fast-n", type=int, default=20_000)
    ap.add_argument("--fast-chunk", type=int, default=2500)
    ap.add_argument("--model", help="a saved de-noiser: the fast path then includes denoise")
    ap.add_argument("--slurm", choices=["auto", "no"], default="auto")
    ap.add_argument("--skip", nargs="*", default=[], choices=["ppxf", "fast", "slurm"])
    ap.add_argument("--work", default="/tmp/survey-denoise-scaling")
    ap.add_argument("--out", default=str(RESULTS / "scaling.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from survey_denoise.cluster import connect

    result: dict = {"command": "python benchmarks/scaling.py " + " ".join(sys.argv[1:]),
                    "cores": os.cpu_count(), "load_average_start": round(os.getloadavg()[0], 2)}
    store = work / f"ppxf-input-{args.ppxf_n}-{args.ppxf_chunk}.zarr"
    if "ppxf" not in args.skip or "slurm" not in args.skip:
        prepare(args.ppxf_n, args.ppxf_chunk, store)

    if "ppxf" not in args.skip:
        runs = []
        for w in (1, 2):
            with connect("local", n_workers=w, echo=None) as client:
                runs.append(ppxf_run(client, store, work / "ppxf-cat.zarr", w))
            print(f"ppxf local {w} worker(s): {runs[-1]}", flush=True)
        result["ppxf_local"] = {"runs": runs, "efficiency": efficiency(*runs),
                                "cpu_ratio": cpu_ratio(*runs)}

    if "fast" not in args.skip:
        ns = argparse.Namespace(mock="rest", survey="sdss", noise="desi", chunk=args.fast_chunk,
                                batch=4096, epochs=0)
        runs = []
        for w in (1, 2):
            out = work / f"fast-{w}"
            r = run_one(config_for(args.fast_n, out, ns, args.model), w)
            shutil.rmtree(out, ignore_errors=True)
            runs.append({k: r[k] for k in ("workers", "n", "seconds", "spectra_per_s_per_core",
                                           "worker_cpu_seconds", "peak_rss_mb_per_worker",
                                           "load_average_start")}
                        | {"stages": {k: v["seconds"] for k, v in r["stages"].items()}})
            print(f"fast local {w} worker(s): {runs[-1]}", flush=True)
        per_stage = {k: round(runs[0]["stages"][k] / (2 * runs[1]["stages"][k]), 3)
                     for k in runs[0]["stages"]}
        result["fast_local"] = {"runs": runs, "efficiency": efficiency(*runs),
                                "cpu_ratio": cpu_ratio(*runs),
                                "efficiency_per_stage": per_stage}

    if "slurm" not in args.skip and args.slurm == "auto":
        if not slurm_running():
            result["ppxf_slurm"] = "not measured: no running SLURM (start one with cluster/slurm-up.sh)"
        else:
            runs = []
            try:
                for jobs in (1, 2):
                    with connect(str(SLURM_FILE), n_workers=jobs, echo=None) as client:
                        runs.append(ppxf_run(client, store, work / "ppxf-cat-slurm.zarr", jobs))
                    print(f"ppxf slurm {jobs} job(s): {runs[-1]}", flush=True)
                result["ppxf_slurm"] = {"runs": runs, "efficiency": efficiency(*runs),
                                "cpu_ratio": cpu_ratio(*runs)}
            except Exception as err:  # e.g. jobs left pending behind other users' jobs
                result["ppxf_slurm"] = {"runs": runs, "error": f"{type(err).__name__}: {err}"}

    result["load_average_end"] = round(os.getloadavg()[0], 2)
    for key in ("ppxf_local", "fast_local", "ppxf_slurm"):
        if isinstance(result.get(key), dict):
            result[key]["command"] = result["command"]
    # Sections not measured in this run (--skip) keep their figures from the last run.
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    result = {**{k: v for k, v in old.items() if k in ("ppxf_local", "fast_local", "ppxf_slurm")},
              **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'path':<14}{'workers':>8}{'seconds':>9}{'per s/wkr':>11}{'efficiency':>11}{'overhead':>10}")
    for key in ("ppxf_local", "ppxf_slurm", "fast_local"):
        block = result.get(key)
        if not isinstance(block, dict) or "runs" not in block:
            continue
        for r in block["runs"]:
            rate = r.get("fits_per_s_per_worker", r.get("spectra_per_s_per_core"))
            over = r.get("overhead_per_spectrum")
            print(f"{key:<14}{r['workers']:>8}{r['seconds']:>9.1f}{rate:>11.2f}"
                  f"{block.get('efficiency', float('nan')):>11.3f}"
                  f"{'' if over is None else f'{100 * over:.1f} %':>10}")


if __name__ == "__main__":
    main()
