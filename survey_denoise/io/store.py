"""Zarr stores of spectra: open with a clear error, write restartably.

Layout.  Every variable along ``galaxy`` is stored in Zarr v3 shards: a read
chunk is the dataset's galaxy chunk times the whole of every other dimension
(whole spectra, the unit every stage reads), and a shard (one file) holds
``chunks_per_shard`` consecutive read chunks.  A store of 10^6 galaxies is
then some 40 files per shard and a few tens of shards, where one file per
chunk and variable made tens of thousands (:func:`chunks_per_shard`).

Writing is by write unit: one shard of every variable.  On a cluster each
of the unit's chunks is computed by one task (its whole chain, run by the
synchronous scheduler on the worker), and one task writes the unit's shards
from their blocks with Zarr directly and then drops a marker
``chunk-NNNNNN`` (NNNNNN: the unit's first chunk) into the store's
``.progress/`` folder, so no two tasks ever write to the same file and the
driver only submits units and counts them.  A later call with
``resume=True`` writes only the units without a marker.  A unit whose write
was cut short by a crash has no marker, so it is simply written again: its
shard files are removed and written whole, giving the same bytes.

``.progress/plan.json`` records what the store is for: its galaxy chunks and
chunks per shard, a digest of the galaxy ids, its variables and the
parameters of every step that made it (flattened from
``attrs["provenance"]`` and the other attributes, with their SHA-256).  A
resume with other galaxies, chunks, variables or parameters is refused,
naming what differs, so a store never mixes chunks made two ways.  A store
appears under its name only once its metadata and plan are written (it is
initialised under a staging name and renamed), so a crash during
initialisation leaves nothing to resume; and ``overwrite`` writes the new
store beside the old one and swaps them only when it is complete
(:mod:`survey_denoise.io.outputs`).

Stores written before sharding (one file per chunk, a plan without
``chunks_per_shard``, one marker per chunk) are read and resumed as stores
of one chunk per shard.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path

import numpy as np
import xarray as xr

from ..schema import SchemaError, validate
from .outputs import install, replacing, staging

PROGRESS_DIR = ".progress"

SHARD_BYTES = 256 * 2**20
"""Uncompressed bytes of one write unit (a shard of every variable) at most.

The task writing a unit holds it whole, so this bounds its memory.  At 256 MiB
a unit is about 33,000 mock spectra (flux, ivar, mask and ~36 per-galaxy
columns), so a 10^6-galaxy store has ~31 shards per variable."""

MIN_UNITS = 8
"""Fewest write units a store with that many chunks is split into (parallel
writes, and the work a crash can lose)."""

# Encoding keys describing the source store's layout, not the data.
_LAYOUT_KEYS = ("chunks", "shards", "preferred_chunks")


@dataclass
class WriteReport:
    """What :func:`write_store` did.

    Attributes
    ----------
    path : Path
        The store.
    n_chunks : int
        Galaxy chunks in the store.
    written : list of int
        Chunks written by this call (the others were already complete).
    seconds : float
        Wall-clock time of the call.
    chunks_per_shard : int
        Galaxy chunks per shard, the write unit.
    units_submitted : int
        Write units (tasks) the driver submitted.
    """

    path: Path
    n_chunks: int
    written: list[int] = field(default_factory=list)
    seconds: float = 0.0
    chunks_per_shard: int = 1
    units_submitted: int = 0

    @property
    def skipped(self) -> int:
        """Chunks found complete and not written again."""
        return self.n_chunks - len(self.written)


def open_store(path: str | Path, *, frame: str | None = None, check: bool = True,
               spectra: bool = True, dask: bool = True) -> xr.Dataset:
    """Open a store lazily (Dask-backed, one Dask chunk per Zarr chunk).

    Parameters
    ----------
    path : str or Path
        Zarr store written by survey_denoise.
    frame : {"observed", "rest"}, optional
        Frame the caller needs; anything else is refused.
    check : bool
        Check that the store was written completely (and, for spectra, the schema).
    spectra : bool
        The store holds spectra (validated against the schema); False for
        galaxy-only tables such as line catalogues.
    dask : bool
        False: lazily indexed arrays that Zarr reads itself, every chunk of a
        variable in one call, for a table read whole in one process (a task
        per variable and chunk would cost more than the reading).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    SchemaError
        If ``path`` is not a Zarr store, is not a spectra store, or is incomplete.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such store")
    try:
        ds = xr.open_zarr(path, zarr_format=3, consolidated=False, chunks={} if dask else None)
    except Exception as err:  # zarr raises many types for foreign or truncated stores
        raise SchemaError(f"{path}: not a readable Zarr v3 store ({type(err).__name__}: {err})") from None
    if check:
        if spectra:
            validate(ds, frame=frame, where=str(path))
        missing = missing_chunks(path)
        if missing:
            raise SchemaError(
                f"{path}: store is incomplete ({len(missing)} of {n_chunks(path)} galaxy "
                f"chunks unwritten, e.g. {missing[:5]}); rerun the step that wrote it with --resume")
    return ds


def chunks_per_shard(n_chunks: int, chunk_bytes: int, *, shard_bytes: int = SHARD_BYTES,
                     min_units: int = MIN_UNITS) -> int:
    """Galaxy chunks per shard: as many as fit in ``shard_bytes``, keeping ``min_units`` units.

    Parameters
    ----------
    n_chunks : int
        Galaxy chunks in the store.
    chunk_bytes : int
        Uncompressed bytes of one galaxy chunk, all variables together.
    shard_bytes : int
        Most uncompressed bytes of one shard of every variable (what one
        write task holds), bytes.
    min_units : int
        Fewest shards when the store has at least that many chunks.

    Returns
    -------
    int
        At least 1.
    """
    by_memory = shard_bytes // max(chunk_bytes, 1)
    by_units = n_chunks // max(min_units, 1)
    return int(max(1, min(by_memory, by_units)))


def _chunk_bytes(ds: xr.Dataset, chunk: int) -> int:
    total = 0
    for var in ds.variables.values():
        if "galaxy" in var.dims:
            per_galaxy = int(np.prod([n for d, n in var.sizes.items() if d != "galaxy"]))
            total += per_galaxy * var.dtype.itemsize * chunk
    return total


def _plan(ds: xr.Dataset, per_shard: int | None = None) -> dict:
    chunks = _galaxy_chunks(ds)
    if per_shard is None:
        per_shard = chunks_per_shard(len(chunks), _chunk_bytes(ds, chunks[0]))
    ids = np.asarray(ds["galaxy"].values)
    digest = hashlib.sha256("\n".join(map(str, ids)).encode() if ids.dtype.kind in "OUT" else ids.tobytes())
    params = parameters(ds.attrs)
    return {"chunks": list(chunks), "chunks_per_shard": int(per_shard),
            "galaxy_sha256": digest.hexdigest(),
            "variables": sorted(map(str, ds.data_vars)),
            "parameters_sha256": hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest(),
            "parameters": params}


def parameters(attrs: dict) -> dict[str, str]:
    """The parameters a dataset was made with, flat: ``{"degrade.seed": "2", ...}``.

    Every step of ``attrs["provenance"]`` (the stage's own parameters and
    those of every step that made its inputs) gives ``STEP.NAME`` keys
    (``STEP#2.NAME`` for a repeated step); every other attribute gives
    ``attrs.NAME``.  Values are JSON text, so they compare exactly.

    Parameters
    ----------
    attrs : dict
        Dataset attributes, with ``provenance`` as written by
        :func:`survey_denoise.schema.add_provenance`.

    Returns
    -------
    dict of str to str
        Parameter name -> JSON value, as recorded in ``.progress/plan.json``.
    """
    flat: dict[str, str] = {}
    attrs = dict(attrs)
    try:
        steps = json.loads(attrs.pop("provenance", "[]"))
    except (TypeError, json.JSONDecodeError):
        steps = []
    seen: dict[str, int] = {}
    for step in steps if isinstance(steps, list) else []:
        step = dict(step) if isinstance(step, dict) else {"value": step}
        name = str(step.pop("step", "step"))
        seen[name] = seen.get(name, 0) + 1
        prefix = name if seen[name] == 1 else f"{name}#{seen[name]}"
        _flatten(prefix, step, flat)
    for key, value in attrs.items():
        _flatten(f"attrs.{key}", value, flat)
    return flat


def _flatten(prefix: str, value, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = json.dumps(value, sort_keys=True, default=str)


def _check_resume(path: Path, old: dict, new: dict) -> None:
    """Refuse to resume ``path`` (planned as ``old``) with a dataset planned as ``new``."""
    hint = ("; delete it, write elsewhere, or pass --overwrite (an interrupted --overwrite "
            "leaves the old store in place)")
    what = [k for k in ("galaxy_sha256", "chunks", "variables") if old.get(k) != new[k]]
    if what:
        names = {"galaxy_sha256": "galaxies", "chunks": "chunks", "variables": "variables"}
        raise SchemaError(f"{path}: cannot resume, the store was planned for other "
                          f"{', '.join(names[k] for k in what)}" + hint)
    if "parameters" not in old:  # planned before parameters were recorded: ask its metadata
        old = {"parameters": parameters(xr.open_zarr(path, zarr_format=3, consolidated=False).attrs)}
    was, now = old["parameters"], new["parameters"]
    differ = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
    if differ:
        shown = "; ".join(f"{k}: store {was.get(k, '(none)')}, now {now.get(k, '(none)')}"
                          for k in differ[:4])
        more = f" (and {len(differ) - 4} more)" if len(differ) > 4 else ""
        raise SchemaError(f"{path}: cannot resume, the store was made with other parameters "
                          f"({shown}{more})" + hint)


def _galaxy_chunks(ds: xr.Dataset) -> tuple[int, ...]:
    chunks = ds.chunks.get("galaxy") if ds.chunks else None
    return tuple(chunks) if chunks else (ds.sizes["galaxy"],)


def n_chunks(path: str | Path) -> int:
    """Number of galaxy chunks a store was planned with."""
    return len(_read_plan(Path(path))["chunks"])


def _read_plan(path: Path) -> dict:
    try:
        return json.loads((path / PROGRESS_DIR / "plan.json").read_text())
    except FileNotFoundError:
        raise SchemaError(f"{path}: not written by survey_denoise (no {PROGRESS_DIR}/plan.json)") from None


def _per_shard(plan: dict) -> int:
    return int(plan.get("chunks_per_shard", 1))  # 1: written before sharding


def completed_chunks(path: str | Path) -> list[int]:
    """Indices of the galaxy chunks whose write finished."""
    path = Path(path)
    folder = path / PROGRESS_DIR
    firsts = [int(p.name.split("-")[1]) for p in folder.glob("chunk-*")]
    if not firsts:
        return []
    plan = _read_plan(path)
    n, k = len(plan["chunks"]), _per_shard(plan)
    return sorted({c for f in firsts for c in range(f, min(f + k, n))})


def missing_chunks(path: str | Path) -> list[int]:
    """Indices of the galaxy chunks not (completely) written yet."""
    done = set(completed_chunks(path))
    return [i for i in range(n_chunks(path)) if i not in done]


def write_store(
    ds: xr.Dataset,
    path: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    client: object | None = None,
    progress: bool | Callable[[int, int], None] = True,
    label: str = "write",
    spectra: bool = True,
    shard_chunks: int | None = None,
) -> WriteReport:
    """Compute ``ds`` chunk by chunk and write it to a Zarr v3 store.

    Parameters
    ----------
    ds : xarray.Dataset
        A schema-valid spectra dataset, usually lazy.
    path : str or Path
        Output store.
    resume : bool
        If the store exists and was planned for the same galaxies, chunks,
        variables and parameters, write only the chunks not yet complete;
        any difference is refused (:class:`~survey_denoise.schema.SchemaError`
        naming it).
    overwrite : bool
        Replace an existing store: the new one is written beside it (under
        :func:`~survey_denoise.io.outputs.staging`) and swapped in when complete.
    client : distributed.Client, optional
        Cluster to compute on (default: the current client if there is one,
        else Dask's local threads).
    progress : bool or callable
        Show a progress bar counting galaxies, or call ``progress(done, total)``
        (galaxies written, galaxies in the store) as each chunk finishes.
    label : str
        Name shown on the progress bar.
    spectra : bool
        Validate ``ds`` as spectra; False for galaxy-only tables (catalogues),
        which need only a ``galaxy`` coordinate.
    shard_chunks : int, optional
        Galaxy chunks per shard (the write unit) of a new store; default
        :func:`chunks_per_shard`.  A resumed store keeps its own.

    Returns
    -------
    WriteReport
    """
    t0 = time.perf_counter()
    if spectra:
        validate(ds, where=label)
    elif "galaxy" not in ds.coords:
        raise SchemaError(f"{label}: a table needs a 'galaxy' coordinate")
    path = Path(path)
    _check_regular(ds, label)
    plan = _plan(ds, shard_chunks)
    final = path
    if path.exists():
        if resume:
            old = _read_plan(path)
            _check_resume(path, old, plan)
            plan["chunks_per_shard"] = _per_shard(old)  # the layout on disk wins
        elif overwrite:
            # The old store stays whole until the new one is complete.
            path = staging(final) / final.name
        else:
            raise FileExistsError(f"{path} exists; pass --resume to finish it or --overwrite to replace it")
    ds = _variable_length_strings(ds)
    if path != final:
        shutil.rmtree(path.parent, ignore_errors=True)  # left by a killed overwrite
        path.parent.mkdir()
        _initialise(ds, path, plan)
    elif not path.exists():
        with replacing(path) as (tmp,):  # the store appears only with its plan
            _initialise(ds, tmp, plan)

    starts = np.concatenate([[0], np.cumsum(plan["chunks"])]).astype(int)
    k, n = _per_shard(plan), len(plan["chunks"])
    missing = set(missing_chunks(path))
    todo = [u for u in range(0, n, k) if missing & set(range(u, min(u + k, n)))]
    report = WriteReport(path=final, n_chunks=n, chunks_per_shard=k)
    sizes = np.diff(starts)
    # Counted in galaxies, the unit a user sizes a run in; "0/1 chunk" said nothing.
    on_done = _progress_callback(progress, int(sizes.sum()), label,
                                 initial=int(sizes.sum() - sizes[sorted(missing)].sum()))
    try:
        for first in _run_units(ds, path, todo, starts, k, client, report):
            chunks = list(range(first, min(first + k, n)))
            report.written.extend(chunks)
            on_done(int(sizes[chunks].sum()))
    except BaseException:
        if path != final:  # an overwrite cannot be resumed: keep the old store only
            shutil.rmtree(path.parent, ignore_errors=True)
        raise
    finally:
        on_done(None)
    if path != final:
        install(path, final)
        path.parent.rmdir()
    report.seconds = time.perf_counter() - t0
    return report


def _check_regular(ds: xr.Dataset, label: str) -> None:
    chunks = _galaxy_chunks(ds)
    if any(c != chunks[0] for c in chunks[:-1]) or chunks[-1] > chunks[0]:
        raise SchemaError(f"{label}: galaxy chunks must be equal but for a smaller last one to be "
                          f"stored, got {chunks[:6]}{'...' if len(chunks) > 6 else ''}; "
                          "rechunk with ds.chunk(galaxy=N)")


def _variable_length_strings(ds: xr.Dataset) -> xr.Dataset:
    # Zarr v3 has a specification for variable-length UTF-8 strings only;
    # fixed-width numpy unicode would be written with an unstable encoding.
    # numpy's StringDType maps onto it without loading dask arrays.
    text = np.dtypes.StringDType()
    fixed = [name for name, var in ds.variables.items() if var.dtype.kind in "UO"]
    return ds.assign({name: ds[name].astype(text) for name in fixed if name not in ds.dims}) \
        .assign_coords({name: ds[name].astype(text) for name in fixed if name in ds.dims})


def _initialise(ds: xr.Dataset, path: Path, plan: dict) -> None:
    # Metadata and the numpy-backed variables only; the dask-backed ones
    # arrive unit by unit (_write_unit).
    chunk = plan["chunks"][0]
    shard = chunk * _per_shard(plan)
    template = ds.copy()
    for var in template.variables.values():
        encoding = {k: v for k, v in var.encoding.items() if k not in _LAYOUT_KEYS}
        if "galaxy" in var.dims:
            encoding["chunks"] = tuple(chunk if d == "galaxy" else n for d, n in var.sizes.items())
            encoding["shards"] = tuple(shard if d == "galaxy" else n for d, n in var.sizes.items())
        var.encoding = encoding
    # Nothing is computed; safe_chunks is about dask writes, which never run here.
    template.to_zarr(path, mode="w", compute=False, zarr_format=3, consolidated=False,
                     safe_chunks=False)
    # The progress folder is itself an (empty) Zarr group, so that Zarr
    # recognises it when listing the store; the markers are plain files in it.
    import zarr

    zarr.open_group(path / PROGRESS_DIR, mode="w", zarr_format=3)
    (path / PROGRESS_DIR / "plan.json").write_text(json.dumps(plan))


def _unit_task(ds: xr.Dataset, path: Path, first: int, starts, k: int):
    """One write unit: its shard of every dask-backed variable and the blocks it is made of.

    The write reads the unit's blocks of every variable straight from their
    upstream tasks, so a chunk's shared upstream work (a mock chunk, a fit) is
    computed once, with no slice, concatenation or write task per variable
    (~250 tasks a catalogue chunk).  On a cluster :func:`_submit_unit` runs it
    as a task per chunk and one write task.  Returns None if the unit has no
    dask-backed variable (nothing to write).
    """
    from dask.base import tokenize

    start, stop = int(starts[first]), int(starts[min(first + k, len(starts) - 1)])
    aligned = tuple(int(c) for c in np.diff(starts))
    names, layouts, blocks, arrays, axes = [], [], [], [], []
    for name, var in ds.variables.items():
        if "galaxy" not in var.dims or not hasattr(var.data, "dask"):
            continue
        axis = var.dims.index("galaxy")
        data = var.data
        if data.chunks[axis] != aligned:
            data = data.rechunk({axis: aligned})
        encoding = {key: v for key, v in var.encoding.items() if key not in _LAYOUT_KEYS}
        names.append(name)
        layouts.append((var.dims, dict(var.attrs), encoding))
        axes.append(axis)
        blocks.append(_along(data.__dask_keys__(), axis, first, first + k))
        arrays.append(data)
    if not names:
        return None
    key = f"write-unit-{tokenize(str(path), first, *arrays)}"
    write = partial(_write_unit, path=str(path), names=tuple(names), layouts=tuple(layouts),
                    start=start, stop=stop, shard=first // k, marker=f"chunk-{first:06d}")
    return _Unit(key, write, blocks, tuple(axes), arrays)


@dataclass(frozen=True)
class _Unit:
    """A write unit: ``write(blocks)`` writes its shard from each variable's block keys."""

    key: str
    write: Callable
    blocks: list
    axes: tuple
    arrays: list

    def delayed(self):
        """The unit as one Dask task that depends on every block (computed locally)."""
        from dask.delayed import Delayed
        from dask.highlevelgraph import HighLevelGraph

        graph = HighLevelGraph.from_collections(self.key, {self.key: (self.write, self.blocks)},
                                                dependencies=self.arrays)
        return Delayed(self.key, graph)


def _along(keys: list, axis: int, lo: int, hi: int) -> list:
    """The nested block keys ``lo:hi`` along ``axis`` (a dask array's ``__dask_keys__``)."""
    return keys[lo:hi] if axis == 0 else [_along(sub, axis - 1, lo, hi) for sub in keys]


def _write_unit(blocks: list, *, path: str, names: tuple, layouts: tuple, start: int, stop: int,
                shard: int, marker: str) -> int:
    """Write one unit: every variable's shard, then its marker.  Runs on a worker."""
    for name, nested, layout in zip(names, blocks, layouts, strict=True):
        _write_shard(np.block(nested), path=path, variable=name, layout=layout, start=start,
                     stop=stop, shard=shard)
    # Marked only after every shard is written: a unit without its marker is rewritten whole.
    Path(path, PROGRESS_DIR, marker).touch()
    return len(names)


def _write_shard(values: np.ndarray, *, path: str, variable: str, layout: tuple, start: int,
                 stop: int, shard: int) -> None:
    """Write one variable's galaxies ``start:stop`` (one shard) to ``path``.  Runs on a worker."""
    import zarr

    name = variable
    dims, attrs, encoding = layout
    array = zarr.open_array(store=path, path=name, mode="r+", zarr_format=3)
    axis = dims.index("galaxy")
    # A shard left by an interrupted write is replaced, never merged into, so
    # a resumed store has the same bytes as one written in one go.
    key = array.metadata.encode_chunk_key(tuple(shard if i == axis else 0 for i in range(len(dims))))
    Path(path, name, key).unlink(missing_ok=True)
    array[tuple(slice(start, stop) if i == axis else slice(None) for i in range(len(dims)))] = \
        _encoded(name, dims, values, attrs, encoding)


def _encoded(name, dims, values, attrs, encoding) -> np.ndarray:
    """``values`` as xarray's ``to_zarr`` stores them (CF encoding: fill values, times...)."""
    from xarray.backends.zarr import encode_zarr_variable

    var = xr.Variable(dims, values, attrs, encoding)
    return np.asarray(encode_zarr_variable(var, name=name, zarr_format=3).data)


def _run_units(ds, path, todo, starts, k, client, report):
    """Yield the first chunk of each unit as its write finishes."""
    if client is None:
        try:
            from distributed import get_client
            client = get_client()
        except (ImportError, ValueError):
            client = None
    if client is None:
        import dask
        for first in todo:
            report.units_submitted += 1
            unit = _unit_task(ds, path, first, starts, k)
            if unit is None:
                (path / PROGRESS_DIR / f"chunk-{first:06d}").touch()
            else:
                dask.compute(unit.delayed())
            yield first
        return
    from distributed import as_completed

    # Keep only a few chunks per worker thread in flight: submitting every
    # unit at once lets workers read far ahead and hold many chunks in memory.
    window = max(2, -(-2 * sum(client.nthreads().values()) // k))
    pending = iter(todo)
    whole: dict = {}  # the store's graph, materialised once for every unit (_chunk_graphs)

    def submit(first):
        report.units_submitted += 1
        unit = _unit_task(ds, path, first, starts, k)
        if unit is None:
            (path / PROGRESS_DIR / f"chunk-{first:06d}").touch()
            return client.submit(int, first, pure=False)
        return _submit_unit(client, unit, whole)

    futures = {submit(first): first for first in itertools.islice(pending, window)}
    queue = as_completed(list(futures))
    for fut in queue:
        try:
            fut.result()  # re-raise a task's error here, in the driver
        except BaseException:
            _settle([f for f in futures if f is not fut])
            raise
        for first in itertools.islice(pending, 1):
            nxt = submit(first)
            futures[nxt] = first
            queue.add(nxt)
        yield futures.pop(fut)


SETTLE_TIMEOUT_S = 600.0
"""Longest wait, after a unit fails, for the units already in flight to finish (:func:`_settle`)."""


def _settle(futures) -> None:
    """Wait for the units still in flight when another failed, keeping what they write.

    A running task cannot be called back: dropped, it still writes its shard
    and marks its chunks done, later than the error reached the caller, so
    a resume planned at once would redo or miss them.  Waiting lets them
    finish (nothing they computed is lost) and leaves the store's progress
    settled when the error is raised.  Errors of these units are left to
    the resume; past :data:`SETTLE_TIMEOUT_S` the error is raised anyway.
    """
    from distributed import wait

    if futures:
        try:
            wait(futures, timeout=SETTLE_TIMEOUT_S)
        except Exception:  # a timeout, or a cluster going down: the first error is the one to report
            pass


def _submit_unit(client, unit: _Unit, whole: dict | None = None):
    """Submit a write unit as one task per chunk and one write task; the write's future.

    A fused chain makes a few hundred tasks per chunk (a task per variable
    per stage); handed to the scheduler one by one they cost more of the
    driver's CPU than the workers spend on some stages.  Here each chunk's
    part of the graph (:func:`_chunk_graphs`) runs as one task
    (:func:`_run_graph`, the synchronous scheduler on the worker, each
    intermediate freed as soon as it is used) and returns that chunk's
    blocks, and one more task writes the shard from them
    (:func:`_write_parts`).  Chunks still spread over the workers, however
    many chunks a shard holds.
    """
    # Keys new to each submission: a resumed write in the same client must not
    # be handed an earlier attempt's failed task that the scheduler still holds.
    tag = uuid.uuid4().hex[:8]
    # Futures in a graph (data already on the cluster, e.g. files read by
    # ``ingest``) reach the task as its dependencies.
    parts = [client.submit(_run_graph, graph, keys, outside, key=f"chunk-{j}-{unit.key}-{tag}", pure=False)
             for j, (graph, keys, outside) in enumerate(_chunk_graphs(unit, whole))]
    return client.submit(_write_parts, parts, unit.write, unit.axes, key=f"{unit.key}-{tag}", pure=False)


def _chunk_graphs(unit: _Unit, whole: dict | None = None) -> list[tuple[bytes, list, dict]]:
    """Per chunk of ``unit``: its culled graph (pickled), its blocks' keys (by variable), its futures.

    Each chunk's graph is culled out of the whole store's, materialised into
    ``whole`` the first time (the same dict is passed for every unit of a
    store): a cull of the whole high-level graph for each unit made the
    driver's cost grow as units x chunks.  Futures
    (results already held on the cluster) are taken out of each graph and
    returned by key, to be passed to the task as its dependencies.  Graphs
    are pickled here so that the scheduler does not unpack their tasks as
    arguments.
    """
    from dask.core import flatten
    from dask.highlevelgraph import HighLevelGraph
    from dask.optimization import cull
    from distributed import Future
    from distributed.protocol.pickle import dumps

    blocks, axes = unit.blocks, unit.axes
    graph = {} if whole is None else whole
    if not set(flatten(blocks)) <= graph.keys():
        # Layer by layer (to_dict): a key looked up in a high-level graph may
        # scan every layer, and a mock's graph has a layer per chunk.
        graph.update(HighLevelGraph.merge(*(a.__dask_graph__() for a in unit.arrays)).to_dict())
    n_chunks = max(len(_along_size(b, axis)) for b, axis in zip(blocks, axes, strict=True))
    out = []
    for j in range(n_chunks):
        keys = [_along(b, axis, j, j + 1) for b, axis in zip(blocks, axes, strict=True)]
        sub, _ = cull(graph, list(flatten(keys)))
        outside = {k: sub.pop(k) for k in [k for k, v in sub.items() if isinstance(v, Future)]}
        out.append((dumps(sub), keys, outside))
    return out


def _along_size(keys: list, axis: int) -> list:
    return keys if axis == 0 else _along_size(keys[0], axis - 1)


def _run_graph(graph: bytes, keys: list, outside: dict | None = None) -> list:
    """One chunk's blocks of every variable, computed here from its graph.  Runs on a worker.

    ``outside`` holds the values of the keys the graph uses but does not define.
    """
    from dask._task_spec import DataNode
    from dask.local import get_sync
    from distributed.protocol.pickle import loads

    _return_free_memory()
    dsk = loads(graph)
    dsk.update({k: DataNode(k, v) for k, v in (outside or {}).items()})
    return _as_lists(get_sync(dsk, keys))


@cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _return_free_memory() -> None:
    """Hand the memory the previous chunks freed back to the system (glibc only).

    Workers keep glibc's adaptive malloc (``worker.malloc-trim-threshold``),
    which reuses freed memory instead of faulting it in again, so they run
    the kernels 2-3x faster but keep what they freed.  Trimming once per
    chunk keeps a worker's memory flat over a long run at the cost of one
    chunk's page faults.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _as_lists(nested):
    """Dask returns nested keys' results as tuples; ``np.block`` arranges lists only."""
    return [_as_lists(x) for x in nested] if isinstance(nested, list | tuple) else nested


def _write_parts(parts: list, write, axes: tuple) -> int:
    """Join the chunks' blocks of each variable along ``galaxy`` and write the unit.  Runs on a worker."""
    blocks = [_concat_along([part[i] for part in parts], axis) for i, axis in enumerate(axes)]
    return write(blocks)


def _concat_along(nested: list, axis: int) -> list:
    """Nested block lists, one per chunk (each one block long on ``axis``), as one nested list."""
    if axis == 0:
        return [b for part in nested for b in part]
    return [_concat_along([part[i] for part in nested], axis - 1) for i in range(len(nested[0]))]


def _progress_callback(progress, total: int, label: str, initial: int):
    if callable(progress):
        state = {"done": initial}

        def cb(n):
            if n is not None:
                state["done"] += n
                progress(state["done"], total)
        return cb
    if not progress:
        return lambda n: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, desc=label, unit="galaxy", leave=True)

    def cb(n):
        if n is None:
            bar.close()
        else:
            bar.update(n)
    return cb
