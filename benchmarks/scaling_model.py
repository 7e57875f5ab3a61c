"""Wall time of a 10^7-galaxy run on 10-1,000 SLURM workers, projected from costs measured here.

``scaling.py`` measures strong scaling from 1 to 2 workers; this script
measures the costs that decide what happens far beyond that, and puts them
in one explicit model (:func:`project`; docs/scaling.md):

* the scheduler's cost per task: graphs of 3-task chains (read -> work ->
  write, one chain per chunk) of trivial tasks at several sizes, computed
  on a LocalCluster from :func:`survey_denoise.cluster.connect` (TLS, 2
  single-threaded workers); wall and the driver's CPU (client and
  scheduler share the driver process) each fitted as a + c x n_tasks by
  least squares (graph building, submission, scheduling and the results
  coming back are all in it); the model uses the CPU slope, which other
  users' load changes least;
* worker start-up (a worker process joining a running scheduler, then its
  first import of the package and Keras) and the model load
  (:func:`survey_denoise.models.load_model` of a saved default VAE, first
  and second time in that worker);
* per-spectrum worker CPU of each stage on one in-memory chunk, one thread:
  mock (rest frame), normalise, degrade (DESI noise), denoise (the saved
  VAE), the fast fitter and pPXF on a few spectra (templates built before
  the clock starts: a per-worker cost, also reported), both fitters on the
  DESI-like noisy spectra.  The fast fitter's cost depends on its input
  (its active set changes more often on poor spectra): on the output of
  this run's one-epoch VAE it is also timed, as ``fast_on_denoised``, for
  the record only;
* tasks per chunk the scheduler runs for the real fused chain (mock -> ...
  -> fast fit; Dask's task stream).

The driver's cost per written chunk (building the store's region writes,
``io/store.py``) and the bytes per spectrum are taken from the measured 10^6
run (``results/end_to_end_1e6.json``), not re-measured.

Writes ``benchmarks/results/scaling_model.json`` and prints the projection.
Usage: ``python benchmarks/scaling_model.py [--smoke] [--out PATH] [--reproject]``
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # per-spectrum costs are per core

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import cloudpickle  # noqa: E402
import scaling  # noqa: E402
from scaling import _warm_templates  # noqa: E402

# Workers cannot import this folder: ship its functions by value.
cloudpickle.register_pickle_by_value(scaling)

RESULTS = Path(__file__).parent / "results"
E2E_1E6 = RESULTS / "end_to_end_1e6.json"

SIZES = {
    "full": {"tasks": (1_000, 10_000, 30_000), "chunks": (250, 1000), "ppxf": 3, "train": 512},
    "smoke": {"tasks": (150, 300, 600), "chunks": (20, 60), "ppxf": 1, "train": 128},
}

ASSUMED = {
    "fs_bytes_per_s": 10e9,
    "fs_creates_per_s": 5_000.0,
}
"""Not measured here (no parallel file system): a mid-size Lustre/GPFS's aggregate bandwidth
(bytes/s) and the share of its metadata server's file creations one run can expect (files/s)."""


# ------------------------------------------------------------------ the model


def project(n: float, workers: int, *, c_spec: float, c_chunk: float, c_sched: float,
            tasks_per_chunk: float, chunk: int, c_driver: float, stores: int, t_start: float,
            t_load: float, lifetime: float = math.inf,
            bytes_per_spectrum: float = 0.0, files_per_chunk: float = 0.0,
            fs_bytes_per_s: float = math.inf, fs_creates_per_s: float = math.inf) -> dict:
    """Projected wall time of one run, term by term.

    ``T = t_start + t_load + max(compute, N b / B, F / R) + n_tasks c_sched + n_chunks stores c_driver``

    ``compute = ceil(n_chunks / W) t_task (1 + lost)``, with ``t_task = (N /
    n_chunks) c_spec + c_chunk`` the worker time of one chunk (whole chunks
    in waves over the workers: fewer chunks than workers leaves workers
    idle) and ``lost = (t_start + t_load + t_task / 2) / lifetime`` the work
    redone when a worker retires at its ``--lifetime`` (its start again and,
    on average, half a chunk); a chunk longer than the lifetime never ends
    (``inf``).  ``n_chunks = ceil(N / chunk)``, ``n_tasks = n_chunks x
    tasks_per_chunk``, ``F = n_chunks x files_per_chunk``.  Compute and
    file-system traffic overlap (different workers at different moments);
    the scheduler and the driver are one process each and are added in full
    (pessimistic where they have a core of their own and overlap with the
    workers).  Efficiency = ideal / T with ideal = ``N c_spec / W``.

    Parameters
    ----------
    n : float
        Spectra.
    workers : int
        Single-threaded workers, one core each.
    c_spec : float
        Worker CPU per spectrum, s.
    c_chunk : float
        Worker CPU per chunk whatever its length (set-up, tracing), s.
    c_sched : float
        Scheduler (and client) cost per task, s.
    tasks_per_chunk : float
        Tasks in the graph per chunk.
    chunk : int
        Spectra per chunk.
    c_driver : float
        Driver CPU per written chunk of one store, s.
    stores : int
        Stores written per chunk.
    t_start, t_load : float
        Worker start-up (process, imports) and model load, s.
    lifetime : float
        Worker ``--lifetime``, s (inf: workers never retire).
    bytes_per_spectrum : float
        Read plus written, bytes.
    files_per_chunk : float
        Files created per chunk (all stores).
    fs_bytes_per_s, fs_creates_per_s : float
        Aggregate file-system bandwidth (bytes/s) and file creations per second.

    Returns
    -------
    dict
        Every term (s), ``seconds``, ``efficiency`` and ``limit``: ``"compute"`` when
        it is at least half of ``T``, ``"lifetime"`` when a chunk outlives a worker,
        else the largest other term's name.
    """
    n_chunks = math.ceil(n / chunk)
    t_task = n / n_chunks * c_spec + c_chunk
    lost = (t_start + t_load + t_task / 2) / lifetime if t_task < lifetime else math.inf
    terms = {
        "compute": math.ceil(n_chunks / workers) * t_task * (1 + lost),
        "fs_bandwidth": n * bytes_per_spectrum / fs_bytes_per_s,
        "fs_metadata": n_chunks * files_per_chunk / fs_creates_per_s,
        "scheduler": n_chunks * tasks_per_chunk * c_sched,
        "driver": n_chunks * stores * c_driver,
        "start": t_start + t_load,
    }
    parallel = max(terms["compute"], terms["fs_bandwidth"], terms["fs_metadata"])
    total = parallel + terms["scheduler"] + terms["driver"] + terms["start"]
    others = {k: v for k, v in terms.items() if k != "compute"}
    ideal = n * c_spec / workers
    if math.isinf(lost):
        limit = "lifetime"
    elif terms["compute"] >= total - terms["compute"]:
        limit = "compute"
    else:
        limit = max(others, key=others.get)
    return {"n": n, "workers": workers, "chunk": chunk, "n_chunks": n_chunks,
            "n_tasks": n_chunks * tasks_per_chunk, "task_seconds": t_task, "lost_fraction": lost,
            **terms, "seconds": total, "ideal": ideal, "efficiency": ideal / total, "limit": limit}


# ------------------------------------------------------------------ measuring


def scheduler_cost(client, sizes) -> dict:
    """Least-squares ``cost = a + c x n_tasks`` over graphs of 3-task chains of trivial tasks.

    Both the wall time and the driver's CPU time (the client and the
    LocalCluster's scheduler share the driver process) are fitted; on a
    shared machine the CPU time is the one other people's load changes little.
    """
    points = []
    for n_tasks in sizes:
        chunks = n_tasks // 3
        dsk = {}
        for i in range(chunks):
            dsk[("read", i)] = (int, i)
            dsk[("work", i)] = (operator.neg, ("read", i))
            dsk[("write", i)] = (operator.abs, ("work", i))
        keys = [("write", i) for i in range(chunks)]
        t, cpu = time.perf_counter(), time.process_time()
        client.get(dsk, keys, sync=True)
        points.append((3 * chunks, time.perf_counter() - t, time.process_time() - cpu))
    x, wall, cpu = np.array(points, float).T
    slope, intercept = np.polyfit(x, wall, 1)
    cpu_slope, cpu_intercept = np.polyfit(x, cpu, 1)
    return {"points_tasks_wall_cpu": [[int(a), round(b, 4), round(c, 4)] for a, b, c in points],
            "wall_seconds_per_task": float(slope), "wall_fixed_seconds": float(intercept),
            "cpu_seconds_per_task": float(cpu_slope), "cpu_fixed_seconds": float(cpu_intercept),
            "load_average": round(os.getloadavg()[0], 2)}


def tasks_per_chunk(client, model: Path, n: int, chunks: int = 4) -> dict:
    """Tasks the scheduler runs per chunk for the fused mock -> ... -> fast-fit chain."""
    from distributed import get_task_stream

    from survey_denoise import inference
    from survey_denoise.fitting import fit_lines
    from survey_denoise.mock import MockConfig, generate
    from survey_denoise.noise import DesiNoise, degrade
    from survey_denoise.preprocess import normalise

    ids = np.arange(n * chunks) + 6_000_000
    chain = fit_lines(inference.denoise(degrade(normalise(
        generate(ids, MockConfig(seed=1, rest=True), chunk_size=n), "l2"),
        DesiNoise(), seed=3, z_target=0.1), model), "fast")
    with get_task_stream(client) as ts:
        t = time.perf_counter()
        client.compute(chain, sync=True)
        wall = time.perf_counter() - t
    return {"tasks_per_chunk": len(ts.data) / chunks, "graph_tasks_per_chunk":
            len(chain.__dask_graph__()) / chunks, "files_per_chunk": len(chain.variables),
            "chunks": chunks, "chunk": n, "seconds": wall}


def _import_stack() -> float:
    t = time.perf_counter()
    import keras  # noqa: F401

    import survey_denoise.inference  # noqa: F401
    from survey_denoise.models import VAEDenoiser  # noqa: F401
    return time.perf_counter() - t


def _load(path: str) -> float:
    from survey_denoise.models import load_model

    t = time.perf_counter()
    load_model(path)
    return time.perf_counter() - t


def worker_costs(client, model: Path) -> dict:
    """A worker joining the running cluster, its first imports, and the model load (twice)."""
    before = set(client.scheduler_info()["workers"])
    t = time.perf_counter()
    client.cluster.scale(len(before) + 1)
    while not set(client.scheduler_info()["workers"]) - before:
        time.sleep(0.05)
    join = time.perf_counter() - t
    new = sorted(set(client.scheduler_info()["workers"]) - before)[0]
    imports = client.run(_import_stack, workers=[new])[new]
    first = client.run(_load, str(model), workers=[new])[new]
    again = client.run(_load, str(model), workers=[new])[new]
    templates = client.run(_warm_templates, workers=[new])[new]
    return {"join_seconds": join, "import_seconds": imports, "load_first_seconds": first,
            "load_again_seconds": again, "ppxf_templates_seconds": templates}


def stage_costs(sizes: tuple[int, int], n_ppxf: int, model: Path) -> dict:
    """Worker CPU of each stage on one in-memory chunk (one thread), split into per chunk and per spectrum.

    Each stage is timed on chunks of two sizes ``n1 < n2``; ``cost(n) = a + b n``
    through both gives ``a`` (s per chunk: set-up, templates, tracing) and
    ``b`` (s per spectrum).  pPXF is timed on ``n_ppxf`` spectra after its
    templates are built (their build is a per-worker cost, see :func:`worker_costs`).
    """
    import dask

    from survey_denoise import inference
    from survey_denoise.fitting import fit_lines
    from survey_denoise.mock import MockConfig, generate
    from survey_denoise.noise import DesiNoise, degrade
    from survey_denoise.preprocess import normalise

    raw: dict[int, dict[str, float]] = {}

    def clock(n, name, make):
        with dask.config.set(scheduler="synchronous"):
            t = time.process_time()
            ds = make().load()
            raw.setdefault(n, {})[name] = time.process_time() - t
        return ds

    for n in (sizes[0], *sizes):  # the first pass fills the per-process caches and is discarded
        ids = np.arange(n) + 5_000_000 + n
        mock = clock(n, "mock", lambda ids=ids, n=n: generate(ids, MockConfig(seed=1, rest=True),
                                                             chunk_size=n))
        norm = clock(n, "normalise", lambda mock=mock: normalise(mock, "l2"))
        noisy = clock(n, "degrade", lambda norm=norm: degrade(norm, DesiNoise(), seed=3, z_target=0.1))
        den = clock(n, "denoise", lambda noisy=noisy: inference.denoise(noisy, model))
        clock(n, "fast", lambda noisy=noisy: fit_lines(noisy, "fast"))
        clock(n, "fast_on_denoised", lambda den=den: fit_lines(den, "fast"))
    n1, n2 = sizes
    per_spectrum, per_chunk = {}, {}
    for k in raw[n2]:
        slope = (raw[n2][k] - raw[n1][k]) / (n2 - n1)
        # A timing too noisy to show a per-chunk part: all of it per spectrum.
        per_spectrum[k] = slope if 0 < slope * n2 <= raw[n2][k] else raw[n2][k] / n2
        per_chunk[k] = raw[n2][k] - per_spectrum[k] * n2
    _warm_templates()
    with dask.config.set(scheduler="synchronous"):
        t = time.process_time()
        fit_lines(noisy.isel(galaxy=slice(0, n_ppxf)), "ppxf").load()
        per_spectrum["ppxf"] = (time.process_time() - t) / n_ppxf
    per_chunk["ppxf"] = per_chunk["fast"]  # the catalogue's assembly, common to both (approx.)
    return {"per_spectrum_seconds": per_spectrum, "per_chunk_seconds": per_chunk,
            "chunk_seconds": {str(n): v for n, v in raw.items()}, "chunks": list(sizes),
            "ppxf_spectra": n_ppxf}


def train_model(n: int, path: Path) -> None:
    """A default-architecture VAE, one epoch on mock spectra, saved (only its size matters here)."""
    import dask

    from survey_denoise.mock import MockConfig, generate
    from survey_denoise.models import VAEDenoiser
    from survey_denoise.noise import DesiNoise, degrade
    from survey_denoise.preprocess import normalise

    clean = normalise(generate(np.arange(n), MockConfig(seed=4, rest=True), chunk_size=n), "l2")
    noisy = normalise(degrade(clean, DesiNoise(), seed=5, z_target=0.1), "l2")
    with dask.config.set(scheduler="synchronous"):
        clean, noisy = clean.load(), noisy.load()
    VAEDenoiser(6, epochs=1).fit(noisy, clean).save(path)


# ------------------------------------------------------------------ run


def inputs_from(measured: dict, e2e: dict) -> dict:
    """The model's inputs: measured costs, and the 10^6 run's driver cost and bytes."""
    run = e2e["runs"][0]
    stages = run["stages"]
    written = sum(s["chunks"] for s in stages.values())
    b, a = measured["stages"]["per_spectrum_seconds"], measured["stages"]["per_chunk_seconds"]
    chains = {"fast": ("normalise", "denoise", "fast"), "ppxf": ("normalise", "denoise", "ppxf"),
              "chain_1e6": ("mock", "normalise", "degrade", "denoise", "fast")}
    return {
        "c_sched": measured["scheduler"]["cpu_seconds_per_task"],
        "tasks_per_chunk": measured["graph"]["tasks_per_chunk"],
        "t_start": measured["worker"]["join_seconds"] + measured["worker"]["import_seconds"],
        "t_load": measured["worker"]["load_first_seconds"],
        "t_templates_ppxf": measured["worker"]["ppxf_templates_seconds"],
        **{f"c_spec_{k}": sum(b[x] for x in v) for k, v in chains.items()},
        **{f"c_chunk_{k}": sum(a[x] for x in v) for k, v in chains.items()},
        "c_driver_per_store_chunk": run["driver_cpu_seconds"] / written,
        "bytes_per_spectrum": (stages["mock"]["bytes_written"] + stages["fit-denoised"]["bytes_written"])
        / run["n"],
        "files_per_chunk": measured["graph"]["files_per_chunk"],
    }


def default_lifetime() -> float:
    """The package's default worker ``--lifetime`` (``survey_denoise.yaml``, batch section), s."""
    import yaml
    from dask.utils import parse_timedelta

    import survey_denoise

    path = Path(survey_denoise.__file__).parent / "data" / "survey_denoise.yaml"
    return float(parse_timedelta(yaml.safe_load(path.read_text())["survey-denoise"]["batch"]["lifetime"]))


def predictions(inp: dict, n: float = 1e7, workers=(10, 100, 1000),
                chunks=(1000, 5000, 20000), lifetime: float | None = None) -> list[dict]:
    """Both fitters, each worker count and chunk size: one :func:`project` row each."""
    lifetime = default_lifetime() if lifetime is None else lifetime
    rows = []
    for fitter in ("fast", "ppxf"):
        for chunk in chunks:
            for w in workers:
                row = project(n, w, c_spec=inp[f"c_spec_{fitter}"],
                              c_chunk=inp[f"c_chunk_{fitter}"], c_sched=inp["c_sched"],
                              tasks_per_chunk=inp["tasks_per_chunk"], chunk=chunk,
                              c_driver=inp["c_driver_per_store_chunk"], stores=1,
                              t_start=inp["t_start"] + (inp["t_templates_ppxf"] if fitter == "ppxf"
                                                        else 0.0),
                              t_load=inp["t_load"], lifetime=lifetime,
                              bytes_per_spectrum=inp["bytes_per_spectrum"],
                              files_per_chunk=inp["files_per_chunk"], **ASSUMED)
                rows.append({"fitter": fitter, **row})
    return rows


def cross_check(inp: dict, e2e: dict) -> dict:
    """The model's prediction for the measured 10^6 run (2 workers, chunks of 5,000, 2 stores)."""
    run = e2e["runs"][0]
    pred = project(run["n"], run["workers"], c_spec=inp["c_spec_chain_1e6"],
                   c_chunk=inp["c_chunk_chain_1e6"], c_sched=inp["c_sched"],
                   tasks_per_chunk=inp["tasks_per_chunk"], chunk=run["chunk"],
                   c_driver=inp["c_driver_per_store_chunk"], stores=2, t_start=inp["t_start"],
                   t_load=inp["t_load"])
    return {"predicted": pred, "measured_seconds": run["seconds"],
            "measured_worker_cpu_ms_per_spectrum": run["worker_cpu_ms_per_spectrum"],
            "ratio_predicted_to_measured": pred["seconds"] / run["seconds"]}


def table(rows: list[dict]) -> str:
    rows = [{k: math.inf if v is None else v for k, v in r.items()} for r in rows]
    lines = [f"{'fitter':<6}{'chunk':>7}{'workers':>8}{'hours':>8}{'task s':>8}{'compute':>9}"
             f"{'sched':>8}{'driver':>8}{'start':>7}{'fs':>7}{'eff':>6}  limit"]
    for r in rows:
        fs = max(r["fs_bandwidth"], r["fs_metadata"])
        lines.append(f"{r['fitter']:<6}{r['chunk']:>7}{r['workers']:>8}{r['seconds'] / 3600:>8.2f}"
                     f"{r['task_seconds']:>8.0f}{r['compute']:>9.0f}{r['scheduler']:>8.0f}{r['driver']:>8.0f}"
                     f"{r['start']:>7.0f}{fs:>7.0f}{r['efficiency']:>6.2f}  {r['limit']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (tests)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/survey-denoise-scaling-model"))
    ap.add_argument("--out", type=Path, default=RESULTS / "scaling_model.json")
    ap.add_argument("--reproject", action="store_true",
                    help="measure nothing: recompute the projection from --out's measurements")
    args = ap.parse_args(argv)
    if args.reproject:
        result = json.loads(args.out.read_text())
        e2e = json.loads(E2E_1E6.read_text())
        result["inputs"] = inp = inputs_from(result["measured"], e2e)
        result["command_reproject"] = "python benchmarks/scaling_model.py --reproject"
        result["lifetime_seconds"] = default_lifetime()
        result["predictions"] = predictions(inp)
        result["cross_check_1e6"] = cross_check(inp, e2e)
        args.out.write_text(json.dumps(finite(result), indent=1) + "\n")
        report(result)
        return 0
    sizes = SIZES["smoke" if args.smoke else "full"]
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.work / "vae"
    shutil.rmtree(model, ignore_errors=True)
    from survey_denoise.cluster import connect

    result: dict = {"command": "python benchmarks/scaling_model.py " + " ".join(
        sys.argv[1:] if argv is None else argv), "cores": os.cpu_count(),
        "load_average_start": round(os.getloadavg()[0], 2), "sizes": sizes, "assumed": ASSUMED}
    train_model(sizes["train"], model)
    measured = {"stages": stage_costs(sizes["chunks"], sizes["ppxf"], model)}
    print(f"per spectrum (s): {measured['stages']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    with connect("local", n_workers=2, echo=None) as client:
        measured["scheduler"] = scheduler_cost(client, sizes["tasks"])
        print(f"scheduler: {measured['scheduler']} ({time.perf_counter() - t0:.0f} s)", flush=True)
        measured["graph"] = tasks_per_chunk(client, model, sizes["chunks"][0])
        measured["worker"] = worker_costs(client, model)
    print(f"worker: {measured['worker']}", flush=True)
    e2e = json.loads(E2E_1E6.read_text())
    inp = inputs_from(measured, e2e)
    rows = predictions(inp)
    result |= {"measured": measured, "inputs": inp, "lifetime_seconds": default_lifetime(),
               "predictions": rows,
               "cross_check_1e6": cross_check(inp, e2e),
               "load_average_end": round(os.getloadavg()[0], 2),
               "seconds": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(finite(result), indent=1) + "\n")
    report(result)
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0


def finite(node):
    """The JSON tree with infinities as None (a chunk that outlives its worker never ends)."""
    if isinstance(node, dict):
        return {k: finite(v) for k, v in node.items()}
    if isinstance(node, list):
        return [finite(v) for v in node]
    return None if isinstance(node, float) and not math.isfinite(node) else node


def report(result: dict) -> None:
    print(table(result["predictions"]))
    cc = result["cross_check_1e6"]
    print(f"10^6 on 2 workers: predicted {cc['predicted']['seconds']:.0f} s, measured "
          f"{cc['measured_seconds']:.0f} s (ratio {cc['ratio_predicted_to_measured']:.2f})")


if __name__ == "__main__":
    sys.exit(main())
