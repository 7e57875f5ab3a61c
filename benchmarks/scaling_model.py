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
* what a run's store writer does (``io/store.py``, :func:`write_store`):
  the fused chain (mock -> normalise -> degrade -> denoise -> fast fit)
  written as a catalogue on the cluster, with the scheduler's task stream
  and transition counter (a task per chunk, which computes the chunk's
  whole chain, and one per write unit, which writes one shard of every
  variable), the driver process's CPU split by thread (main: culling,
  splitting by chunk and pickling each unit's graph, submitting; event loop: the
  in-process scheduler and the client's comms), and the store's files;
* the driver's cost per write unit as the store grows: the main thread's
  CPU to cull one unit's graph (:func:`survey_denoise.io.store._chunk_graphs`)
  out of the store's graph, materialised once per store as the writer does
  (that once-per-store cost is timed too), at three store sizes and two
  units sizes, fitted as ``c_unit + c_driver k + c_cull n_chunks`` (``k``
  chunks per unit; ``c_cull`` is what still grows with the store).

The bytes per spectrum and the report's products step (worker tasks on the
test galaxies only, so a fixed time whatever the survey's size) are taken
from a measured 10^6 run (``--e2e``, default
``results/end_to_end_1e6_driver.json`` if present), which is also the
cross-check; its driver CPU is not an input.

Writes ``benchmarks/results/scaling_model.json`` and prints the projection.
Usage: ``python benchmarks/scaling_model.py [--smoke] [--out PATH] [--e2e PATH] [--reproject]``
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
from typing import NamedTuple

os.environ.setdefault("OMP_NUM_THREADS", "1")  # per-spectrum costs are per core

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import cloudpickle  # noqa: E402
import scaling  # noqa: E402
from scaling import _warm_templates  # noqa: E402

# Workers cannot import this folder: ship its functions by value.
cloudpickle.register_pickle_by_value(scaling)

RESULTS = Path(__file__).parent / "results"
LOOP = "event loop (scheduler, client comms)"
"""``end_to_end.thread_roles``'s name for the thread running the scheduler and the client's comms."""


def default_e2e() -> Path:
    """The newest measured 10^6 run: ``end_to_end_1e6_driver.json`` if present, else an older one."""
    for name in ("end_to_end_1e6_driver.json", "end_to_end_1e6_new.json"):
        if (RESULTS / name).exists():
            return RESULTS / name
    return RESULTS / "end_to_end_1e6.json"

SIZES = {
    "full": {"tasks": (1_000, 10_000, 30_000), "chunks": (250, 1000), "ppxf": 3, "train": 512,
             "write": (1000, 16), "idle": 10.0, "scan_chunks": (200, 1000, 4000), "scan_k": (1, 16)},
    "smoke": {"tasks": (150, 300, 600), "chunks": (20, 60), "ppxf": 1, "train": 128,
              "write": (20, 8), "idle": 2.0, "scan_chunks": (20, 60), "scan_k": (1, 4)},
}

ASSUMED = {
    "fs_bytes_per_s": 10e9,
    "fs_creates_per_s": 5_000.0,
}
"""Not measured here (no parallel file system): a mid-size Lustre/GPFS's aggregate bandwidth
(bytes/s) and the share of its metadata server's file creations one run can expect (files/s)."""


# ------------------------------------------------------------------ the model


class Store(NamedTuple):
    """One store a run writes, as the model sees it.

    Attributes
    ----------
    chunks_per_shard : int
        Galaxy chunks per write unit (one shard of every variable, one write task).
    files_per_unit : float
        Files created per unit: one per galaxy variable, and its marker.
    """

    chunks_per_shard: int = 1
    files_per_unit: float = 0.0


def project(n: float, workers: int, *, c_spec: float, c_chunk: float, c_sched: float, chunk: int,
            t_start: float, t_load: float, stores: tuple[Store, ...] = (Store(),),
            tasks_per_chunk: float = 1.0, tasks_per_unit: float = 1.0, c_driver: float = 0.0,
            c_unit: float = 0.0,
            c_cull: float = 0.0, t_products: float = 0.0, lifetime: float = math.inf,
            bytes_per_spectrum: float = 0.0, fs_bytes_per_s: float = math.inf,
            fs_creates_per_s: float = math.inf) -> dict:
    """Projected wall time of one run, term by term.

    ``T = t_start + t_load + max(compute, N b / B, F / R) + scheduler + driver + t_products``

    ``n_chunks = ceil(N / chunk)``.  Each chunk's chain is one task, so the
    work items are the chunks, each ``t_chunk = (N / n_chunks) c_spec +
    c_chunk`` long, and ``compute = ceil(n_chunks / W) t_chunk (1 + lost)``
    (whole chunks in waves over the workers: fewer chunks than workers
    leaves workers idle); ``lost = (t_start + t_load + t_chunk / 2) /
    lifetime`` is the work redone when a worker retires at its
    ``--lifetime`` (its start again and, on average, half a chunk); a chunk
    longer than the lifetime never ends (``inf``).  Each store is written
    in ``n_units = ceil(n_chunks / k)`` units of ``k`` chunks, each unit one
    short write task.  Summed over the stores:

    * ``scheduler = (n_chunks tasks_per_chunk + n_units tasks_per_unit) c_sched``;
    * ``driver = n_chunks c_driver + n_units (c_unit + c_cull n_chunks)``:
      ``c_driver`` holds the chunk's share of building and materialising
      the store's graph once; ``c_cull`` is what a unit's cull still costs
      per chunk of the store;
    * ``F = n_units files_per_unit``.

    ``t_products`` is the report's products step after the stores are
    written: a few worker tasks on at most ``report.test_galaxies``
    galaxies, so it does not grow with ``N``.

    Compute and file-system traffic overlap (different workers at
    different moments); the scheduler and the driver are single threads
    and are added in full (pessimistic where they have a core of their own
    and overlap with the workers).  Efficiency = ideal / T with ideal =
    ``N c_spec / W``.

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
        Scheduler (and client comms) cost per task, s.
    chunk : int
        Spectra per chunk.
    t_start, t_load : float
        Worker start-up (process, imports) and model load, s.
    stores : tuple of Store
        The stores written.
    tasks_per_chunk, tasks_per_unit : float
        Scheduler tasks per chunk of a written store, and per write unit.
    c_driver : float
        Driver CPU per written chunk, s.
    c_unit : float
        Driver CPU per write unit, s.
    c_cull : float
        Driver CPU per write unit per chunk of its store, s.
    t_products : float
        Wall time of the report's products step, s.
    lifetime : float
        Worker ``--lifetime``, s (inf: workers never retire).
    bytes_per_spectrum : float
        Read plus written, bytes.
    fs_bytes_per_s, fs_creates_per_s : float
        Aggregate file-system bandwidth (bytes/s) and file creations per second.

    Returns
    -------
    dict
        Every term (s), ``n_units`` (all stores), ``n_tasks``, ``task_seconds``
        (one chunk), ``chunk_seconds``, ``seconds``, ``efficiency`` and ``limit``:
        ``"compute"`` when it is at least half of ``T``, ``"lifetime"`` when a
        chunk outlives a worker, else the largest other term's name.
    """
    n_chunks = math.ceil(n / chunk)
    units = [math.ceil(n_chunks / max(1, s.chunks_per_shard)) for s in stores]
    t_chunk = n / n_chunks * c_spec + c_chunk
    t_task = t_chunk
    lost = (t_start + t_load + t_task / 2) / lifetime if t_task < lifetime else math.inf
    n_tasks = len(stores) * n_chunks * tasks_per_chunk + sum(units) * tasks_per_unit
    terms = {
        "compute": math.ceil(n_chunks / workers) * t_task * (1 + lost),
        "fs_bandwidth": n * bytes_per_spectrum / fs_bytes_per_s,
        "fs_metadata": sum(u * s.files_per_unit for u, s in zip(units, stores, strict=True)) / fs_creates_per_s,
        "scheduler": n_tasks * c_sched,
        "driver": len(stores) * n_chunks * c_driver + sum(units) * (c_unit + c_cull * n_chunks),
        "products": t_products,
        "start": t_start + t_load,
    }
    parallel = max(terms["compute"], terms["fs_bandwidth"], terms["fs_metadata"])
    total = parallel + terms["scheduler"] + terms["driver"] + terms["products"] + terms["start"]
    others = {k: v for k, v in terms.items() if k != "compute"}
    ideal = n * c_spec / workers
    if math.isinf(lost):
        limit = "lifetime"
    elif terms["compute"] >= total - terms["compute"]:
        limit = "compute"
    else:
        limit = max(others, key=others.get)
    return {"n": n, "workers": workers, "chunk": chunk, "n_chunks": n_chunks,
            "chunks_per_shard": [s.chunks_per_shard for s in stores], "n_units": sum(units),
            "n_tasks": n_tasks, "task_seconds": t_task, "chunk_seconds": t_chunk,
            "lost_fraction": lost,
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


def fused_chain(model: Path, n: int, chunks: int, first_id: int = 6_000_000):
    """The fused mock -> normalise -> degrade -> denoise -> fast-fit chain: a lazy catalogue."""
    from survey_denoise import inference
    from survey_denoise.fitting import fit_lines
    from survey_denoise.mock import MockConfig, generate
    from survey_denoise.noise import DesiNoise, degrade
    from survey_denoise.preprocess import normalise

    ids = np.arange(n * chunks) + first_id
    return fit_lines(inference.denoise(degrade(normalise(
        generate(ids, MockConfig(seed=1, rest=True), chunk_size=n), "l2"),
        DesiNoise(), seed=3, z_target=0.1), model), "fast")


def write_run(client, model: Path, n: int, chunks: int, folder: Path, idle: float = 5.0) -> dict:
    """What the store writer costs: the fused chain written as a catalogue on the cluster.

    Counts the scheduler's tasks (task stream) and transitions, the driver
    process's CPU (client and LocalCluster scheduler share it) split by
    thread as ``end_to_end.py`` does, and the store's files, now and at 10^6
    galaxies by the layout's arithmetic.  The event loop also spends CPU
    with nothing to schedule (heartbeats, the task stream's plugin): its
    rate over ``idle`` seconds before the write is taken off before the
    cost per task is worked out.
    """
    from dask.utils import key_split
    from distributed import get_task_stream
    from end_to_end import _transitions, cpu_by_role, store_files, thread_cpu_s, thread_roles

    from survey_denoise.io.store import write_store

    path = folder / "write.zarr"
    shutil.rmtree(path, ignore_errors=True)
    chain = fused_chain(model, n, chunks)
    transitions0 = client.run_on_scheduler(_transitions)
    with get_task_stream(client) as ts:
        before, t = thread_cpu_s(), time.perf_counter()
        time.sleep(idle)
        idle_roles = cpu_by_role(before, thread_cpu_s(), thread_roles(), 0.0)
        idle_rate = idle_roles.get(LOOP, 0.0) / (time.perf_counter() - t)
        t, cpu, threads0 = time.perf_counter(), time.process_time(), thread_cpu_s()
        rep = write_store(chain, path, client=client, progress=False, spectra=False, label="catalogue")
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        roles = cpu_by_role(threads0, thread_cpu_s(), thread_roles(), cpu)
    transitions = client.run_on_scheduler(_transitions) - transitions0
    chunk_tasks = sum(1 for t in ts.data if key_split(t["key"]) == "chunk")
    files = store_files(path, 1_000_000)
    import zarr

    group = zarr.open_group(path, mode="r", zarr_format=3)
    row = sum(int(np.prod(a.shape[1:])) * a.dtype.itemsize for _, a in group.arrays()
              if "galaxy" in (a.metadata.dimension_names or ()))
    loop = roles.get(LOOP, 0.0) - idle_rate * wall
    return {"chunks": chunks, "chunk": n, "seconds": wall, "units": rep.units_submitted,
            "chunks_per_shard": rep.chunks_per_shard, "tasks": len(ts.data),
            "chunk_tasks": chunk_tasks, "write_tasks": len(ts.data) - chunk_tasks,
            "tasks_per_unit": (len(ts.data) - chunk_tasks) / rep.units_submitted,
            "tasks_per_chunk": chunk_tasks / chunks, "transitions": transitions,
            "driver_cpu_seconds": cpu, "driver_cpu_seconds_by_thread": roles,
            "driver_cpu_per_chunk": cpu / chunks,
            "main_cpu_per_unit": roles.get("main", 0.0) / rep.units_submitted,
            "event_loop_idle_cpu_per_second": idle_rate,
            "event_loop_cpu_per_task": max(0.0, loop) / max(1, len(ts.data)),
            "graph_tasks_per_chunk": len(chain.__dask_graph__()) / chunks,
            "bytes_per_galaxy_uncompressed": row, "store": files,
            "files_per_chunk": files["files"] / chunks}


def driver_scan(model: Path, store_chunks: tuple[int, ...], ks: tuple[int, ...],
                units: int = 3) -> dict:
    """The driver's CPU and memory for a store's graph and its write units, by store and unit size.

    For each store of ``store_chunks`` chunks (of 10 spectra: the graph does
    not depend on the chunk's length): the main thread's CPU and the
    process's resident memory to build the fused chain's lazy graph; the
    first unit, which materialises the store's graph for every unit as the
    writer does (less a later unit's cost: ``c_materialise n_chunks``);
    then, for each unit of ``k`` chunks, the mean over ``units`` units of
    :func:`survey_denoise.io.store._unit_task` plus
    :func:`~survey_denoise.io.store._chunk_graphs` (what the writer's driver does
    per unit).  Least squares: ``build = c_graph n_chunks`` (+ a constant),
    ``memory = m_graph n_chunks`` (+ a constant), ``materialise =
    c_materialise n_chunks`` and ``unit = c_unit + c_driver k + c_cull n_chunks``.
    """
    import gc

    import psutil

    from survey_denoise.io import store

    fused_chain(model, 10, 2)  # imports and first-call caches, not the graph's cost
    proc = psutil.Process()
    points, builds, firsts = [], [], []
    for n_chunks in store_chunks:
        gc.collect()
        rss, t = proc.memory_info().rss, time.process_time()
        ds = store._variable_length_strings(fused_chain(model, 10, n_chunks))
        ds.__dask_graph__()  # materialised as the writer's first unit does
        builds.append((n_chunks, time.process_time() - t, proc.memory_info().rss - rss))
        starts = np.concatenate([[0], np.cumsum(store._galaxy_chunks(ds))]).astype(int)
        path = Path("/nonexistent/scan.zarr")  # only named in the graph, never written
        whole: dict = {}  # shared by the store's units, as in the writer
        rss, t = proc.memory_info().rss, time.process_time()
        store._chunk_graphs(store._unit_task(ds, path, 0, starts, 1), whole)
        first, grown = time.process_time() - t, proc.memory_info().rss - rss
        for k in ks:
            t = time.process_time()
            for i in range(units):
                store._chunk_graphs(store._unit_task(ds, path, (i + 1) * k, starts, k), whole)
            points.append((n_chunks, k, (time.process_time() - t) / units))
        one = [p[2] for p in points if p[0] == n_chunks and p[1] == 1]
        firsts.append((n_chunks, first - (one[0] if one else 0.0), grown))
        del ds, whole
    x = np.array([[1.0, k, c] for c, k, _ in points])
    y = np.array([p[2] for p in points])
    (c_unit, c_driver, c_cull), *_ = np.linalg.lstsq(x, y, rcond=None)
    c, build, memory = np.array(builds, float).T
    return {"points_chunks_k_seconds": [[c, k, round(t, 4)] for c, k, t in points],
            "points_chunks_build_seconds_rss_bytes": [[int(a), round(b, 3), int(m)] for a, b, m in builds],
            "points_chunks_materialise_seconds_rss_bytes": [[c, round(t, 4), int(m)] for c, t, m in firsts],
            "c_materialise": float(np.polyfit(*np.array(firsts, float)[:, :2].T, 1)[0]),
            "m_materialise": float(np.polyfit(*np.array(firsts, float)[:, [0, 2]].T, 1)[0]),
            "c_unit": float(c_unit), "c_driver": float(c_driver), "c_cull": float(c_cull),
            "c_graph": float(np.polyfit(c, build, 1)[0]), "m_graph": float(np.polyfit(c, memory, 1)[0])}


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
    """The model's inputs: measured costs, and the measured 10^6 run's bytes and products step per spectrum."""
    run = e2e["runs"][0]
    stages = run["stages"]
    b, a = measured["stages"]["per_spectrum_seconds"], measured["stages"]["per_chunk_seconds"]
    write, scan = measured["write"], measured["driver"]
    chains = {"fast": ("normalise", "denoise", "fast"), "ppxf": ("normalise", "denoise", "ppxf"),
              "chain_1e6": ("mock", "normalise", "degrade", "denoise", "fast")}
    return {
        # A unit task carries its pickled graph: the event loop's CPU per task
        # of the measured write, less its idle rate; a trivial task's where
        # that is below what the idle rate lets one resolve.
        "c_sched": max(write["event_loop_cpu_per_task"], measured["scheduler"]["cpu_seconds_per_task"]),
        "c_sched_trivial": measured["scheduler"]["cpu_seconds_per_task"],
        "c_sched_unit_less_idle": write["event_loop_cpu_per_task"],
        "c_sched_unit_upper": write["driver_cpu_seconds_by_thread"].get(LOOP, 0.0) / max(1, write["tasks"]),
        "tasks_per_unit": write["tasks_per_unit"], "tasks_per_chunk": write.get("tasks_per_chunk", 0.0),
        "t_start": measured["worker"]["join_seconds"] + measured["worker"]["import_seconds"],
        "t_load": measured["worker"]["load_first_seconds"],
        "t_templates_ppxf": measured["worker"]["ppxf_templates_seconds"],
        **{f"c_spec_{k}": sum(b[x] for x in v) for k, v in chains.items()},
        **{f"c_chunk_{k}": sum(a[x] for x in v) for k, v in chains.items()},
        # Per chunk: building its part of the lazy graph, materialising it
        # (once per store), and culling and pickling it within its unit.
        "c_driver": max(0.0, scan["c_driver"]) + max(0.0, scan["c_graph"]) + max(0.0, scan["c_materialise"]),
        "c_driver_unit_per_chunk": scan["c_driver"], "c_graph": scan["c_graph"],
        "c_unit": max(0.0, scan["c_unit"]), "c_cull": max(0.0, scan["c_cull"]),
        "driver_graph_bytes_per_chunk": scan["m_graph"],
        "driver_materialised_bytes_per_chunk": scan["m_materialise"],
        "driver_cpu_per_written_chunk": write["driver_cpu_per_chunk"],
        "bytes_per_spectrum": (stages["mock"]["bytes_written"] + stages["fit-denoised"]["bytes_written"])
        / run["n"],
        # Not measured here: the products step of the 10^6 run (worker tasks
        # on the test galaxies, a fixed cost).
        "t_products": stages.get("products", {}).get("seconds", 0.0),
        "c_materialise": scan["c_materialise"],
        "catalogue_bytes_per_galaxy": write["bytes_per_galaxy_uncompressed"],
        "catalogue_files_per_unit": write["store"]["galaxy_variables"] + 1,
    }


def default_lifetime() -> float:
    """The package's default worker ``--lifetime`` (``survey_denoise.yaml``, batch section), s."""
    import yaml
    from dask.utils import parse_timedelta

    import survey_denoise

    path = Path(survey_denoise.__file__).parent / "data" / "survey_denoise.yaml"
    return float(parse_timedelta(yaml.safe_load(path.read_text())["survey-denoise"]["batch"]["lifetime"]))


def catalogue(inp: dict, n: float, chunk: int, min_units: int | None = None) -> Store:
    """The catalogue store at ``n`` galaxies in chunks of ``chunk``: the store module's shards.

    ``min_units`` (default the store module's ``MIN_UNITS``) is the fewest
    write units the rule keeps when there are enough chunks.
    """
    from survey_denoise.io.store import MIN_UNITS, chunks_per_shard

    n_chunks = math.ceil(n / chunk)
    k = chunks_per_shard(n_chunks, chunk * inp["catalogue_bytes_per_galaxy"],
                         min_units=MIN_UNITS if min_units is None else min_units)
    return Store(k, inp["catalogue_files_per_unit"])


def serial(inp: dict) -> dict:
    """The driver's and scheduler's inputs of :func:`project`."""
    return {k: inp[k] for k in ("c_sched", "tasks_per_chunk", "tasks_per_unit", "c_driver", "c_unit", "c_cull",
                                "t_products")}


def predictions(inp: dict, n: float = 1e7, workers=(10, 100, 1000),
                chunks=(1000, 5000, 20000), lifetime: float | None = None) -> list[dict]:
    """Both fitters, each worker count and chunk size: one :func:`project` row each.

    The catalogue is sharded by the store module's rule.
    """
    lifetime = default_lifetime() if lifetime is None else lifetime
    rows = []
    for fitter in ("fast", "ppxf"):
        for chunk in chunks:
            for w in workers:
                store = catalogue(inp, n, chunk)
                row = project(n, w, c_spec=inp[f"c_spec_{fitter}"],
                              c_chunk=inp[f"c_chunk_{fitter}"], chunk=chunk,
                              stores=(store,), **serial(inp),
                              t_start=inp["t_start"] + (inp["t_templates_ppxf"] if fitter == "ppxf"
                                                        else 0.0),
                              t_load=inp["t_load"], lifetime=lifetime,
                              bytes_per_spectrum=inp["bytes_per_spectrum"], **ASSUMED)
                rows.append({"fitter": fitter, **row})
    return rows


def cross_check(inp: dict, e2e: dict, source: str = "") -> dict:
    """The model's prediction for a measured 10^6 run (2 workers, its chunks, its stores).

    The stores and their chunks per shard are the run's own (its ``stores``
    record; one chunk per shard for a run before sharding).  Besides the
    whole, the serial terms are set against what the run's driver measured:
    the driver term against its main thread, the scheduler term against its
    event loop; and ``predicted_with_measured_compute`` swaps the compute term
    for the run's own worker CPU over its workers, so that what is left
    to compare is the serial part.
    """
    run = e2e["runs"][0]
    n_chunks = math.ceil(run["n"] / run["chunk"])
    # The catalogue first: the fused chain is computed in its units.
    named = sorted(run.get("stores", {}).items(), key=lambda item: not item[0].startswith("catalogue"))
    stores = tuple(Store(st["chunks_per_shard"], st["galaxy_variables"] + 1)
                   for _, st in named) or (Store(), Store())
    pred = project(run["n"], run["workers"], c_spec=inp["c_spec_chain_1e6"],
                   c_chunk=inp["c_chunk_chain_1e6"], chunk=run["chunk"], stores=stores,
                   **serial(inp), t_start=inp["t_start"], t_load=inp["t_load"])
    measured_compute = run["worker_cpu_seconds"] / run["workers"]
    threads = run.get("driver_cpu_seconds_by_thread", {})
    return {"source": source, "git": e2e.get("git"), "n_chunks": n_chunks,
            "stores": [list(s) for s in stores], "predicted": pred,
            "predicted_with_measured_compute": pred["seconds"] - pred["compute"] + measured_compute,
            "measured_seconds": run["seconds"], "measured_compute_seconds": measured_compute,
            "measured_worker_cpu_ms_per_spectrum": run["worker_cpu_ms_per_spectrum"],
            "measured_driver_cpu_seconds": run["driver_cpu_seconds"],
            "measured_driver_main_thread_seconds": threads.get("main"),
            "measured_event_loop_seconds": threads.get(LOOP),
            "measured_scheduler_transitions": run.get("scheduler_transitions"),
            "ratio_predicted_to_measured": pred["seconds"] / run["seconds"]}


def table(rows: list[dict]) -> str:
    rows = [{k: math.inf if v is None else v for k, v in r.items()} for r in rows]
    lines = [f"{'fitter':<6}{'chunk':>7}{'k':>5}{'units':>6}{'workers':>8}{'hours':>8}{'task s':>8}"
             f"{'compute':>9}{'sched':>8}{'driver':>8}{'prod':>6}{'start':>7}{'fs':>7}{'eff':>6}  limit"]
    for r in rows:
        fs = max(r["fs_bandwidth"], r["fs_metadata"])
        lines.append(f"{r['fitter']:<6}{r['chunk']:>7}{r['chunks_per_shard'][0]:>5}{r['n_units']:>6}"
                     f"{r['workers']:>8}{r['seconds'] / 3600:>8.2f}"
                     f"{r['task_seconds']:>8.0f}{r['compute']:>9.0f}{r['scheduler']:>8.1f}{r['driver']:>8.1f}"
                     f"{r['products']:>6.0f}"
                     f"{r['start']:>7.0f}{fs:>7.1f}{r['efficiency']:>6.2f}  {r['limit']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (tests)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/survey-denoise-scaling-model"))
    ap.add_argument("--out", type=Path, default=RESULTS / "scaling_model.json")
    ap.add_argument("--e2e", type=Path, default=None,
                    help="a measured 10^6 run of benchmarks/end_to_end.py (bytes per spectrum, "
                         "products step, cross-check); default: results/end_to_end_1e6_driver.json "
                         "if present")
    ap.add_argument("--tasks", type=int, nargs=3, default=None,
                    help="trivial-task graph sizes for the scheduler's cost (default 1000 10000 30000)")
    ap.add_argument("--reproject", action="store_true",
                    help="measure nothing: recompute the projection from --out's measurements")
    args = ap.parse_args(argv)
    e2e_path = args.e2e or default_e2e()
    e2e = json.loads(e2e_path.read_text())
    source = e2e_path.name
    if args.reproject:
        result = json.loads(args.out.read_text())
        result["inputs"] = inp = inputs_from(result["measured"], e2e)
        result["command_reproject"] = "python benchmarks/scaling_model.py --reproject" + (
            f" --e2e {args.e2e}" if args.e2e else "")
        result["lifetime_seconds"] = default_lifetime()
        result["predictions"] = predictions(inp)
        result.pop("predictions_4_units_per_worker", None)
        result["cross_check_1e6"] = cross_check(inp, e2e, source)
        args.out.write_text(json.dumps(finite(result), indent=1) + "\n")
        report(result)
        return 0
    sizes = dict(SIZES["smoke" if args.smoke else "full"])
    if args.tasks:
        sizes["tasks"] = tuple(args.tasks)
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
        measured["write"] = write_run(client, model, *sizes["write"], args.work, sizes["idle"])
        print(f"write: {measured['write']} ({time.perf_counter() - t0:.0f} s)", flush=True)
        measured["worker"] = worker_costs(client, model)
    print(f"worker: {measured['worker']}", flush=True)
    measured["driver"] = driver_scan(model, sizes["scan_chunks"], sizes["scan_k"])
    print(f"driver per unit: {measured['driver']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    inp = inputs_from(measured, e2e)
    rows = predictions(inp)
    result |= {"measured": measured, "inputs": inp, "lifetime_seconds": default_lifetime(),
               "predictions": rows,
               "cross_check_1e6": cross_check(inp, e2e, source),
               "load_average_end": round(os.getloadavg()[0], 2),
               "seconds": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(finite(result), indent=1) + "\n")
    report(result)
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0


def finite(node):
    """The JSON tree with infinities as None (a write unit that outlives its worker never ends)."""
    if isinstance(node, dict):
        return {k: finite(v) for k, v in node.items()}
    if isinstance(node, list):
        return [finite(v) for v in node]
    return None if isinstance(node, float) and not math.isfinite(node) else node


def report(result: dict) -> None:
    print(table(result["predictions"]))
    cc = result["cross_check_1e6"]
    pred = cc["predicted"]
    print(f"10^6 on 2 workers ({cc['source']}): predicted {pred['seconds']:.0f} s, measured "
          f"{cc['measured_seconds']:.0f} s (ratio {cc['ratio_predicted_to_measured']:.2f}); "
          f"{cc['predicted_with_measured_compute']:.0f} s with the run's own worker CPU; "
          f"driver {pred['driver']:.0f} s predicted, main thread {cc['measured_driver_main_thread_seconds']} s "
          f"measured; scheduler {pred['scheduler']:.0f} s predicted, event loop "
          f"{cc['measured_event_loop_seconds']} s measured")


if __name__ == "__main__":
    sys.exit(main())
