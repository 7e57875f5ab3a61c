"""Zarr stores of spectra: open with a clear error, write restartably.

Writing is chunk by chunk along ``galaxy`` with Zarr region writes.  After a
chunk's write has finished, the driver drops a marker file into the store's
``.progress/`` folder; a later call with ``resume=True`` writes only the
chunks without a marker.  A chunk whose write was cut short by a crash has
no marker, so it is simply written again: region writes are idempotent.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from ..schema import SchemaError, validate

PROGRESS_DIR = ".progress"


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
    """

    path: Path
    n_chunks: int
    written: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skipped(self) -> int:
        """Chunks found complete and not written again."""
        return self.n_chunks - len(self.written)


def open_store(path: str | Path, *, frame: str | None = None, check: bool = True,
               spectra: bool = True) -> xr.Dataset:
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
        ds = xr.open_zarr(path, zarr_format=3, consolidated=False, chunks={})
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


def _plan(ds: xr.Dataset) -> dict:
    chunks = _galaxy_chunks(ds)
    ids = np.asarray(ds["galaxy"].values)
    digest = hashlib.sha256("\n".join(map(str, ids)).encode() if ids.dtype.kind in "OUT" else ids.tobytes())
    return {"chunks": list(chunks), "galaxy_sha256": digest.hexdigest(),
            "variables": sorted(map(str, ds.data_vars))}


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


def completed_chunks(path: str | Path) -> list[int]:
    """Indices of the galaxy chunks whose write finished."""
    folder = Path(path) / PROGRESS_DIR
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("chunk-*"))


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
) -> WriteReport:
    """Compute ``ds`` chunk by chunk and write it to a Zarr v3 store.

    Parameters
    ----------
    ds : xarray.Dataset
        A schema-valid spectra dataset, usually lazy.
    path : str or Path
        Output store.
    resume : bool
        If the store exists and was planned for the same galaxies and chunks,
        write only the chunks not yet complete.
    overwrite : bool
        Replace an existing store.
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
    plan = _plan(ds)
    if path.exists():
        if resume:
            old = _read_plan(path)
            if old != plan:
                raise SchemaError(
                    f"{path}: cannot resume, the store was planned for other galaxies, chunks or "
                    "variables; delete it or write elsewhere")
        elif overwrite:
            shutil.rmtree(path)
        else:
            raise FileExistsError(f"{path} exists; pass --resume to finish it or --overwrite to replace it")
    ds = _variable_length_strings(ds)
    if not path.exists():
        _initialise(ds, path, plan)

    todo = missing_chunks(path)
    starts = np.concatenate([[0], np.cumsum(plan["chunks"])]).astype(int)
    report = WriteReport(path=path, n_chunks=len(plan["chunks"]))
    sizes = np.diff(starts)
    # Counted in galaxies, the unit a user sizes a run in; "0/1 chunk" said nothing.
    on_done = _progress_callback(progress, int(sizes.sum()), label,
                                 initial=int(sizes.sum() - sizes[todo].sum()))
    fixed = [v for v in ds.variables if "galaxy" not in ds[v].dims]
    try:
        for i in _run_regions(ds.drop_vars(fixed), path, todo, starts, client):
            (path / PROGRESS_DIR / f"chunk-{i:06d}").touch()
            report.written.append(i)
            on_done(int(sizes[i]))
    finally:
        on_done(None)
    report.seconds = time.perf_counter() - t0
    return report


def _variable_length_strings(ds: xr.Dataset) -> xr.Dataset:
    # Zarr v3 has a specification for variable-length UTF-8 strings only;
    # fixed-width numpy unicode would be written with an unstable encoding.
    # numpy's StringDType maps onto it without loading dask arrays.
    text = np.dtypes.StringDType()
    fixed = [name for name, var in ds.variables.items() if var.dtype.kind in "UO"]
    return ds.assign({name: ds[name].astype(text) for name in fixed if name not in ds.dims}) \
        .assign_coords({name: ds[name].astype(text) for name in fixed if name in ds.dims})


def _initialise(ds: xr.Dataset, path: Path, plan: dict) -> None:
    # Metadata and the small non-galaxy coordinates only; data arrive by region.
    ds.to_zarr(path, mode="w", compute=False, zarr_format=3, consolidated=False)
    # The progress folder is itself an (empty) Zarr group, so that Zarr
    # recognises it when listing the store; the markers are plain files in it.
    import zarr

    zarr.open_group(path / PROGRESS_DIR, mode="w", zarr_format=3)
    (path / PROGRESS_DIR / "plan.json").write_text(json.dumps(plan))


def _run_regions(ds, path, todo, starts, client):
    """Yield chunk indices as their region writes finish."""
    def region(i: int):
        sub = ds.isel(galaxy=slice(starts[i], starts[i + 1]))
        return sub.to_zarr(path, region={"galaxy": slice(int(starts[i]), int(starts[i + 1]))},
                           compute=False, zarr_format=3, consolidated=False)

    if client is None:
        try:
            from distributed import get_client
            client = get_client()
        except (ImportError, ValueError):
            client = None
    if client is None:
        import dask
        for i in todo:
            dask.compute(region(i))
            yield i
        return
    from distributed import as_completed

    # Keep only a few chunks per worker thread in flight: submitting every
    # chunk at once lets workers read far ahead and hold many chunks in memory.
    window = max(2, 2 * sum(client.nthreads().values()))
    pending = iter(todo)
    futures = {client.compute(region(i)): i for i in itertools.islice(pending, window)}
    queue = as_completed(list(futures))
    for fut in queue:
        fut.result()  # re-raise a task's error here, in the driver
        for i in itertools.islice(pending, 1):
            nxt = client.compute(region(i))
            futures[nxt] = i
            queue.add(nxt)
        yield futures.pop(fut)


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
