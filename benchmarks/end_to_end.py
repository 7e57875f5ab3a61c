"""End-to-end throughput: mock -> preprocess -> degrade -> denoise -> fit (fast) -> catalogue.

Runs the real pipeline machinery (:class:`survey_denoise.pipeline.runner.Runner`
on the LocalCluster of :func:`survey_denoise.cluster.connect`, every stage
written to a Zarr store on disk) for each ``--n``, with a fresh cluster per
size, and reports:

* seconds per stage and in total, spectra/s and spectra/s/core;
* peak resident memory of every worker: the kernel's own high-water mark
  (``ru_maxrss``) at the end of each size, and the highest sampled RSS per
  stage (a thread in the driver polls every worker with ``client.run``);
* bytes written (size on disk of each store) and read (the input store of
  each stage is read once, so its size);
* how time and memory grow with ``n`` (time per spectrum should be flat,
  memory per worker must be);
* files per store, and what they would be at ``--extrapolate`` galaxies with
  the same chunk (exact arithmetic from the store's shard layout in
  ``.progress/plan.json``, not a measurement);
* the driver's CPU seconds (this process) against the workers', split by
  thread: the main thread (the pipeline driver: planning, graph building,
  records), the event loop (the LocalCluster's scheduler and the client's
  comms), Python pools (reads of small tables) and native pools
  (TensorFlow, for the report products), with the scheduler's task
  transitions.

The mock input is either ``rest`` (spectra made directly on the rest-frame
grid: the fast path, which keeps the mock out of the critical path; the
preprocess stage then only normalises, and the rebinning onto the grid is
timed by ``benchmarks/preprocess.py``) or ``observed`` (SDSS-like observed
frame, then the full preprocess stage).  A small VAE is trained once through the
same pipeline (``--train-n`` galaxies) unless ``--model`` names one.

Writes ``benchmarks/results/end_to_end.json``.
Usage::

    python benchmarks/end_to_end.py --n 10000 100000 --mock rest --noise desi
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process so far."""
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def thread_cpu_s() -> dict[int, float]:
    """CPU seconds of each live thread of this process, by native id (Linux: from /proc)."""
    import psutil

    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}


def thread_roles() -> dict[int, str]:
    """What each Python thread of this process is: the driver, Dask's event loop, a pool."""
    roles = {}
    for t in threading.enumerate():
        if t is threading.main_thread():
            roles[t.native_id] = "main"
        elif "loop" in t.name.lower() or "offload" in t.name.lower():
            roles[t.native_id] = "event loop (scheduler, client comms)"  # and its offload thread
        else:
            roles[t.native_id] = "Python threads (read pools, samplers)"
    return roles


def cpu_by_role(before: dict[int, float], after: dict[int, float], roles: dict[int, str],
                total: float) -> dict[str, float]:
    """CPU seconds between two :func:`thread_cpu_s` snapshots, summed by role.

    Threads without a Python object are native (TensorFlow's and BLAS's pools
    in the driver, e.g. for the report products); threads that ended between
    the snapshots are what the process total leaves over.
    """
    out: dict[str, float] = {}
    for tid, sec in after.items():
        role = roles.get(tid, "native threads (TensorFlow, BLAS)")
        out[role] = out.get(role, 0.0) + sec - before.get(tid, 0.0)
    out["threads that ended"] = max(0.0, total - sum(out.values()))
    return {k: round(v, 2) for k, v in out.items()}


def _transitions(dask_scheduler=None) -> int:
    return int(dask_scheduler.transition_counter)


def worker_cpu(client) -> float:
    """Total CPU seconds used so far by the workers of ``client``."""
    return sum(client.run(_cpu_s).values())


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class RssSampler:
    """Poll the RSS of every worker of ``client`` every ``period`` seconds in a thread.

    The workers are processes on this machine, so their RSS is read from
    the operating system by process id: a ``client.run`` per sample would be
    a round trip through the scheduler, whose CPU counts as the driver's.
    """

    def __init__(self, client, period: float = 1.0) -> None:
        self.client, self.period = client, period
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._pids: dict[str, int] = {}

    def _rss(self) -> dict[str, float]:
        import psutil

        if not self._pids:
            self._pids = self.client.run(os.getpid)
        try:
            return {w: psutil.Process(pid).memory_info().rss / 2**20 for w, pid in self._pids.items()}
        except psutil.NoSuchProcess:  # a worker restarted: find the new processes next time
            self._pids = {}
            raise

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter(), self._rss()))
            except Exception:  # a worker restarting: skip this sample
                pass
            self._stop.wait(self.period)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float = float("-inf"), end: float = float("inf")) -> float:
        """Highest RSS (MB) of any one worker between ``start`` and ``end``."""
        vals = [v for t, rss in self.samples if start <= t <= end for v in rss.values()]
        return max(vals) if vals else float("nan")


def _du(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _files(path: Path) -> int:
    return sum(1 for f in path.rglob("*") if f.is_file())


def store_files(path: Path, n_target: int) -> dict:
    """Files in a store now, and at ``n_target`` galaxies with the same chunk and variables.

    The projection is arithmetic on the layout: one file per galaxy variable
    and shard (a shard that is all fill value is not written, so it is an upper
    bound), one marker per shard, and the store's other (metadata) files.
    """
    import math

    import zarr

    plan = json.loads((path / ".progress" / "plan.json").read_text())
    chunk, n_chunks = plan["chunks"][0], len(plan["chunks"])
    per_shard = plan.get("chunks_per_shard", 1)  # absent: one file per chunk
    group = zarr.open_group(path, mode="r", zarr_format=3)
    arrays = {name: a for name, a in group.arrays() if "galaxy" in (a.metadata.dimension_names or ())}
    n_data = sum(_files(path / name / "c") for name in arrays if (path / name / "c").exists())
    n_markers = len(list((path / ".progress").glob("chunk-*")))
    other = _files(path) - n_data - n_markers
    target_chunks = math.ceil(n_target / chunk)
    if "chunks_per_shard" in plan:
        from survey_denoise.io.store import chunks_per_shard

        # The default rule at the target size, from this store's bytes per chunk.
        row = sum(int(np.prod(a.shape[1:])) * a.dtype.itemsize for a in arrays.values())
        per_target = chunks_per_shard(target_chunks, row * chunk)
    else:
        per_target = 1
    units = math.ceil(target_chunks / per_target)
    return {"files": _files(path), "data_files": n_data, "chunks": n_chunks, "chunks_per_shard": per_shard,
            "galaxy_variables": len(arrays),
            f"files_at_{n_target}": len(arrays) * units + units + other,
            f"chunks_per_shard_at_{n_target}": per_target}


def _load() -> float:
    return os.getloadavg()[0]


def config_for(n: int, out: Path, args, model: str | None, train: bool = False) -> dict:
    """A pipeline config (YAML shape) for one benchmark size."""
    # With a rest-frame mock the preprocess stage only normalises (L2).
    stages: dict = {"preprocess": {"norm": "l2"}}
    stages["degrade"] = ({"noise": "desi", "z_target": 0.1, "seed": 9} if args.noise == "desi"
                         else {"noise": "uniform", "sigma": 0.04, "seed": 9})
    if train:
        stages["train"] = {"kind": "vae", "latent": 6, "epochs": args.epochs, "seed": 3}
        stages["denoise"] = {"model": "train", "batch_size": args.batch}
    elif model is not None:
        stages["denoise"] = {"model": model, "batch_size": args.batch,
                             "input_detections": not getattr(args, "no_input_detections", False)}
    if not train:
        stages["fit"] = {"method": "fast", "stores": ["denoised" if "denoise" in stages else "degraded"]}
    outputs = {"dir": str(out)}
    if getattr(args, "fuse", False) and not train:
        outputs["keep"] = []  # only the mock input and the catalogue are written
    return {"name": f"end-to-end-{n}", "input": {"mock": {
                "n": n, "design": "natural", "survey": args.survey, "seed": 42, "frame": args.mock}},
            "chunk": args.chunk, "stages": stages, "outputs": outputs}


def _can_denoise() -> bool:
    import importlib.util

    return importlib.util.find_spec("survey_denoise.inference") is not None


def run_one(raw_config: dict, workers: int, n_target: int = 1_000_000) -> dict:
    """One pipeline run on a fresh LocalCluster; the figures of every stage."""
    from survey_denoise.cluster import connect
    from survey_denoise.pipeline.config import PipelineConfig, check
    from survey_denoise.pipeline.runner import Runner

    config = PipelineConfig.model_validate(raw_config)
    problems = check(config)
    if problems:
        raise SystemExit("; ".join(problems))
    folder = Path(config.outputs.dir)
    shutil.rmtree(folder, ignore_errors=True)
    n = config.input.mock.n
    ends: dict[str, float] = {}
    cpu_at: dict[str, float] = {}
    driver_at: dict[str, tuple[float, float]] = {}

    class Timed(Runner):
        def _record(self, name, record):  # stamp when each stage ends, the workers' and driver's CPU
            ends[name] = time.perf_counter()
            cpu_at[name] = worker_cpu(self.client)
            driver_at[name] = (time.process_time(), time.thread_time())
            super()._record(name, record)

    with connect("local", n_workers=workers, echo=None) as client:
        client.run(_rss_mb)  # workers up before the clock starts
        load0 = _load()
        cpu0, driver0, threads0 = worker_cpu(client), time.process_time(), thread_cpu_s()
        main0 = time.thread_time()
        transitions0 = client.run_on_scheduler(_transitions)
        with RssSampler(client) as sampler:
            t0 = time.perf_counter()
            summary = Timed(config, client, progress=False, echo=lambda m: None).run()
            wall = time.perf_counter() - t0
        cpu = worker_cpu(client) - cpu0
        driver = time.process_time() - driver0
        roles = cpu_by_role(threads0, thread_cpu_s(), thread_roles(), time.process_time() - driver0)
        main = roles.get("main", 0.0)
        transitions = client.run_on_scheduler(_transitions) - transitions0
        peaks = sorted(client.run(_peak_rss_mb).values())
    inputs = {"mock": None, "preprocess": "raw.zarr", "degrade": "preprocessed.zarr", "train": "degraded.zarr",
              "denoise": "degraded.zarr", "fit-degraded": "degraded.zarr",
              "fit-denoised": "denoised.zarr"}
    stages = {}
    before, driver_before = cpu0, (driver0, main0)
    for name, rec in summary.stages.items():
        end = ends[name]
        stage_cpu, before = cpu_at[name] - before, cpu_at[name]
        (proc, thread), driver_before = (
            (a - b for a, b in zip(driver_at[name], driver_before, strict=True)), driver_at[name])
        stages[name] = {
            "worker_cpu_ms_per_spectrum": round(1e3 * stage_cpu / n, 3),
            # the driver's CPU since the stage before ended: all threads, and the main one
            "driver_cpu_seconds": round(proc, 2), "driver_main_thread_cpu_seconds": round(thread, 2),
            "seconds": round(rec.seconds, 2), "chunks": rec.n_chunks,
            "spectra_per_s_per_core": round(n / rec.seconds / workers, 1) if rec.seconds > 0.5 else None,
            "fused": bool(rec.notes.get("fused")),
            "peak_rss_mb_worker_sampled": round(sampler.peak(end - rec.seconds, end), 1),
            "bytes_written": _du(folder / rec.output),
            "files_written": _files(folder / rec.output) if (folder / rec.output).exists() else 0,
            "bytes_read": _du(folder / inputs[name]) if inputs.get(name) else 0}
    return {"n": n, "workers": workers, "chunk": config.chunk, "seconds": round(wall, 2),
            "spectra_per_s": round(n / wall, 1), "spectra_per_s_per_core": round(n / wall / workers, 1),
            # CPU time is what other users' load does not change (much): the
            # workers' CPU seconds per spectrum, and the driver's (scheduler).
            "worker_cpu_seconds": round(cpu, 2), "worker_cpu_ms_per_spectrum": round(1e3 * cpu / n, 3),
            "driver_cpu_seconds": round(driver, 2),
            "driver_cpu_share_of_workers": round(driver / cpu, 4) if cpu else None,
            "driver_main_thread_cpu_seconds": round(main, 2),
            "driver_main_thread_share_of_workers": round(main / cpu, 4) if cpu else None,
            "driver_cpu_seconds_by_thread": roles,
            # Each task goes through ~4 scheduler transitions (released, waiting,
            # processing, memory, ...): the scheduler's work grows with them.
            "scheduler_transitions": transitions,
            "event_loop_ms_per_transition": round(
                1e3 * roles.get("event loop (scheduler, client comms)", 0.0) / transitions, 3)
            if transitions else None,
            "stores": {p.name: store_files(p, n_target) for p in sorted(folder.glob("*.zarr"))
                       if (p / ".progress" / "plan.json").exists()},
            "peak_rss_mb_per_worker": [round(p, 1) for p in peaks],
            "peak_rss_mb_per_worker_sampled": round(sampler.peak(), 1),
            "bytes_on_disk": _du(folder), "load_average_start": round(load0, 2),
            "load_average_end": round(_load(), 2), "stages": stages}


def extrapolate(largest: dict, target: int) -> dict:
    """Linear in n from the largest measured size (time per spectrum is flat, see the table)."""
    scale = target / largest["n"]
    return {"n": target, "from_n": largest["n"], "seconds": round(largest["seconds"] * scale, 1),
            "hours": round(largest["seconds"] * scale / 3600, 3),
            "bytes_on_disk": int(largest["bytes_on_disk"] * scale),
            "peak_rss_mb_per_worker": max(largest["peak_rss_mb_per_worker"]),
            "note": "extrapolated, not measured: seconds and bytes scale linearly with n at fixed "
                    "chunk size; memory per worker is set by the chunk, not by n"}


def table(runs: list[dict]) -> str:
    rows = [f"{'n':>9} {'stage':<14}{'seconds':>9}{'sp/s/core':>11}{'cpu ms/sp':>11}"
            f"{'peak MB/wkr':>13}{'written MB':>12}{'driver s':>10}{'main s':>8}"]
    for r in runs:
        for name, st in r["stages"].items():
            rate = st["spectra_per_s_per_core"] or float("nan")
            rows.append(f"{r['n']:>9} {name:<14}{st['seconds']:>9.1f}{rate:>11.1f}"
                        f"{st['worker_cpu_ms_per_spectrum']:>11.3f}{st['peak_rss_mb_worker_sampled']:>13.0f}"
                        f"{st['bytes_written'] / 1e6:>12.1f}{st['driver_cpu_seconds']:>10.1f}"
                        f"{st['driver_main_thread_cpu_seconds']:>8.1f}")
        rows.append(f"{r['n']:>9} {'TOTAL':<14}{r['seconds']:>9.1f}{r['spectra_per_s_per_core']:>11.1f}"
                    f"{r['worker_cpu_ms_per_spectrum']:>11.3f}{max(r['peak_rss_mb_per_worker']):>13.0f}"
                    f"{r['bytes_on_disk'] / 1e6:>12.1f}{r['driver_cpu_seconds']:>10.1f}"
                    f"{r['driver_main_thread_cpu_seconds']:>8.1f}")
    for r in runs:
        rows.append(f"{r['n']:>9} driver CPU {r['driver_cpu_seconds']:.1f} s = "
                    f"{100 * (r['driver_cpu_share_of_workers'] or 0):.1f} % of the workers' "
                    f"{r['worker_cpu_seconds']:.1f} s; {r['scheduler_transitions']} scheduler transitions")
        rows.append(f"{r['n']:>9}   by thread: " + ", ".join(
            f"{role} {sec:.1f} s" for role, sec in r["driver_cpu_seconds_by_thread"].items()))
        for name, st in r["stores"].items():
            at = [k for k in st if k.startswith("files_at_")][0]
            rows.append(f"{r['n']:>9} {name:<22}{st['files']:>7} files, {st['chunks']} chunks, "
                        f"{st['chunks_per_shard']} per shard; {st[at]} at n={at[9:]} (layout arithmetic)")
    rows.append("cpu ms/sp: worker CPU per spectrum; peak MB/wkr: sampled RSS per stage, "
                "ru_maxrss (largest worker) in TOTAL; a fused stage runs inside the next one; "
                "driver s / main s: the driver's CPU (all threads / main thread) since the stage before")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--mock", choices=["rest", "observed"], default="rest")
    ap.add_argument("--survey", choices=["sdss", "desi"], default="sdss")
    ap.add_argument("--noise", choices=["desi", "uniform"], default="desi")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=4096, help="VAE inference batch")
    ap.add_argument("--model", help="a saved de-noiser folder (default: train a small VAE)")
    ap.add_argument("--train-n", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--no-denoise", action="store_true")
    ap.add_argument("--no-input-detections", action="store_true",
                    help="de-noise without recording which lines the input detects (its cost)")
    ap.add_argument("--fuse", action="store_true",
                    help="outputs.keep: [] (stages fused, no intermediate stores)")
    ap.add_argument("--work", default="/tmp/survey-denoise-bench", help="scratch folder for the stores")
    ap.add_argument("--keep", action="store_true", help="keep the stores of every size")
    ap.add_argument("--extrapolate", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(RESULTS / "end_to_end.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    result: dict = {"command": "python benchmarks/end_to_end.py " + " ".join(
                        os.sys.argv[1:]), "mock": args.mock, "survey": args.survey,
                    "noise": args.noise, "fused": args.fuse, "chunk": args.chunk,
                    "input_detections": not args.no_input_detections,
                    "cores": os.cpu_count(),
                    "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                          text=True).stdout.strip()}
    model = args.model
    denoise = not args.no_denoise and (model is not None or _can_denoise())
    if denoise and model is None:
        t = time.perf_counter()
        train = run_one(config_for(args.train_n, work / "train", args, None, train=True), args.workers)
        model = str(work / "train" / "model")
        result["train"] = {"n": args.train_n, "epochs": args.epochs, "seconds": round(time.perf_counter() - t, 1),
                           "stages": train["stages"]}
    result["denoise"] = model if denoise else "skipped (survey_denoise.inference not available)"
    runs = []
    for n in args.n:
        out = work / f"n{n}"
        runs.append(run_one(config_for(n, out, args, model if denoise else None), args.workers,
                            args.extrapolate or 1_000_000))
        print(table(runs[-1:]), flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    result["runs"] = runs
    largest = max(runs, key=lambda r: r["n"])
    if args.extrapolate and all(r["n"] < args.extrapolate for r in runs):
        result["extrapolated"] = extrapolate(largest, args.extrapolate)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(runs))
    if "extrapolated" in result:
        e = result["extrapolated"]
        print(f"extrapolated to n={e['n']}: {e['seconds']:.0f} s ({e['hours']:.2f} h), "
              f"{e['bytes_on_disk'] / 1e9:.1f} GB on disk (not measured)")


if __name__ == "__main__":
    main()
