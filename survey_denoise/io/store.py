"""Zarr stores of spectra: open with a clear error, write restartably.

Writing is chunk by chunk along ``galaxy`` with Zarr region writes.  After a
chunk's write has finished, the driver drops a marker file into the store's
``.progress/`` folder; a later call with ``resume=True`` writes only the
chunks without a marker.  A chunk whose write was cut short by a crash has
no marker, so it is simply written again: region writes are idempotent.

``.progress/plan.json`` records what the store is for: its galaxy chunks, a
digest of the galaxy ids, its variables and the parameters of every step
that made it (flattened from ``attrs["provenance"]`` and the other
attributes, with their SHA-256).  A resume with other galaxies, chunks,
variables or parameters is refused, naming what differs, so a store never
mixes chunks made two ways.  A store appears under its name only once its
metadata and plan are written (it is initialised under a staging name and
renamed), so a crash during initialisation leaves nothing to resume; and
``overwrite`` writes the new store beside the old one and swaps them only
when it is complete (:mod:`survey_denoise.io.outputs`).
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
from .outputs import install, replacing, staging

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
    params = parameters(ds.attrs)
    return {"chunks": list(chunks), "galaxy_sha256": digest.hexdigest(),
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
    final = path
    if path.exists():
        if resume:
            _check_resume(path, _read_plan(path), plan)
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

    todo = missing_chunks(path)
    starts = np.concatenate([[0], np.cumsum(plan["chunks"])]).astype(int)
    report = WriteReport(path=final, n_chunks=len(plan["chunks"]))
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
