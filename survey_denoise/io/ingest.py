"""Read many survey files at once into one raw spectra dataset.

Files are read in parallel (Dask futures on a cluster, else a thread pool),
each by the reader that :mod:`~survey_denoise.io.registry` finds for it.  A
file that cannot be read (missing, truncated, not FITS, of another survey, a
DESI coadd without its redrock file...) does not stop the run: it is reported
as :class:`Skipped` with the reason, and the others go on.  So are galaxies
whose id was already read from an earlier file (the first one is kept).

The spectra are placed on one common observed wavelength axis without
resampling (the survey's own lattice, see ``Reader.common_axis``): pixels a
spectrum does not cover get ``flux = 0``, ``ivar = 0``, ``mask = True``.
Per-galaxy variables that only some files have (DESI FIBERMAP columns differ
between data releases) are filled for the others with NaN (floats), -1
(signed integers), 0 (unsigned), False (booleans) or "" (strings).
Variables ``source_file`` and ``survey`` record the file each galaxy came
from and the reader that read it.

A reader may select galaxies as it reads (DESI: ``options={"selection":
...}``); it then returns ``attrs["selection_removed"]`` (cut -> number
removed), which the ingest adds up over the files and records in its
provenance step (:func:`selection_removed` reads it back).  A file whose
galaxies were all removed is read, not skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..schema import FLUX_UNIT, SCHEMA_VERSION, add_provenance, validate
from . import registry

DEFAULT_CHUNK_SIZE = 1000
"""Galaxies per Dask/Zarr chunk of an ingested store (about 70 MB of DESI spectra)."""

_SPECTRAL_FILL = {"flux": np.float32(0), "ivar": np.float32(0), "mask": True}
_SPECTRAL_DIMS = ("galaxy", "wavelength")


@dataclass(frozen=True)
class Skipped:
    """A file (or one galaxy of a file) left out of an ingest, and why.

    Attributes
    ----------
    path : str
        The file as given.
    reason : str
        What was wrong, in words.
    galaxy : str, optional
        The galaxy id, when only one galaxy of the file was left out.
    """

    path: str
    reason: str
    galaxy: str | None = None

    def __str__(self) -> str:
        what = f"{self.path} [galaxy {self.galaxy}]" if self.galaxy is not None else self.path
        return f"{what}: {self.reason}"


class NothingRead(registry.ReadError):
    """None of the files given to :func:`ingest` could be read.

    Attributes
    ----------
    skipped : list of Skipped
        Every file, with its reason.
    """

    def __init__(self, skipped: list[Skipped], why: str | None = None):
        self.skipped = skipped
        if why is not None:
            super().__init__(why)
            return
        shown = "; ".join(str(s) for s in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        super().__init__(f"none of the {len(skipped)} files could be read: {shown}{more}")


def summarise(skipped: Sequence[Skipped], n_files: int | None = None) -> str:
    """A human-readable summary of what an ingest left out (one line per item)."""
    if not skipped:
        return "nothing skipped"
    files = len({s.path for s in skipped if s.galaxy is None})
    galaxies = sum(s.galaxy is not None for s in skipped)
    head = f"skipped {files} file(s)" + (f" of {n_files}" if n_files is not None else "")
    if galaxies:
        head += f" and {galaxies} duplicate galaxy id(s)"
    return "\n".join([head + ":"] + [f"  {s}" for s in skipped])


def selection_removed(ds: xr.Dataset) -> dict[str, int]:
    """Targets each reader-side selection cut removed during the ingest that made ``ds``."""
    for step in reversed(json.loads(ds.attrs.get("provenance", "[]"))):
        if step.get("step") == "ingest":
            return dict(step.get("selection_removed", {}))
    return {}


def selection_summary(removed: Mapping[str, int]) -> str:
    """E.g. ``removed 120 target(s): target 80, spectype 30, zwarn 10, z 0``."""
    total = sum(removed.values())
    return (f"removed {total} target(s): "
            + ", ".join(f"{cut} {n}" for cut, n in removed.items()))


def _read_one(path: str, fmt: str | None, options: Mapping[str, Any]):
    """Read a file; return (dataset, None) or (None, reason).  Runs on a worker."""
    try:
        return registry.read(path, fmt, **options), None
    except Exception as err:  # any failure of one file is reported, never fatal
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        prefix = f"{path}: "
        text = text[len(prefix):] if text.startswith(prefix) else text
        if not isinstance(err, registry.ReadError | FileNotFoundError):
            text = f"{type(err).__name__}: {text}"
        return None, text


def _light(result):
    """A read result without its spectra (they stay on the worker): ``(dataset, reason)``.

    The spectral variables' dtypes and attrs travel in ``attrs["_spectra"]``,
    so the driver can describe them lazily (:func:`_lazy_spectra`).
    """
    ds, reason = result
    if ds is None:
        return result
    names = [n for n, v in ds.data_vars.items() if v.dims == _SPECTRAL_DIMS]
    light = ds.drop_vars(names)
    light.attrs = {**ds.attrs, "_spectra": {n: (ds[n].dtype.str, dict(ds[n].attrs)) for n in names}}
    return light, reason


def _spectral_block(result, name: str, keep: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """One file's ``name`` array, galaxies ``keep``, on the common ``axis``.  Runs on a worker."""
    var = result[0][name].isel(galaxy=keep)
    return var.reindex(wavelength=axis, fill_value=_SPECTRAL_FILL[name]).values


def _read_all(paths: list[str], fmt, options: list[Mapping[str, Any]], client, progress) -> list:
    """Read every file; on a cluster each result keeps its spectra on the worker.

    Returns (dataset, reason) per path; with a client, datasets are light
    (see :func:`_light`) and ``results[i][2]`` is the future of the full read.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc="ingest", unit="file")
    results: list = [None] * len(paths)
    try:
        if client is not None:
            from distributed import as_completed as dist_as_completed

            reads = client.map(_read_one, paths, [fmt] * len(paths), options, pure=False)
            # Only the per-galaxy variables come to the driver; the spectra are
            # taken from the read futures by the tasks that write the store.
            futures = client.map(_light, reads, pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            for fut in dist_as_completed(futures):
                i = index[fut.key]
                try:
                    ds, reason = fut.result()
                    results[i] = (ds, reason, reads[i] if ds is not None else None)
                except Exception as err:  # a worker lost while reading (memory, crash)
                    results[i] = (None, f"worker failed: {type(err).__name__}: {err}", None)
                fut.release()
                if results[i][2] is None:
                    reads[i].release()
                if bar is not None:
                    bar.update(1)
        else:
            workers = min(len(paths), 2 * (os.cpu_count() or 1), 16) or 1
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_read_one, p, fmt, o): i
                           for i, (p, o) in enumerate(zip(paths, options, strict=True))}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results


def ingest(
    paths: Iterable[str | Path],
    fmt: str | None = None,
    client: object | None = None,
    progress: bool = True,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    options: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[xr.Dataset, list[Skipped]]:
    """Read survey files into one raw, observed-frame spectra dataset.

    Parameters
    ----------
    paths : iterable of str or Path
        Survey files (SDSS spec FITS, DESI coadds...).
    fmt : str, optional
        Format of every file (``"sdss"``, ``"desi"``...); found per file when
        not given.
    client : distributed.Client, optional
        Read on this cluster's workers (else in a local thread pool).
    progress : bool
        Show a progress bar over the files.
    chunk_size : int
        Galaxies per chunk of the returned dataset.
    options : sequence of mapping, optional
        Per-file keyword arguments for the reader, in the order of ``paths``
        (e.g. ``{"redrock": path}`` for a DESI coadd).

    Returns
    -------
    dataset : xarray.Dataset
        Schema-valid, chunked along ``galaxy``, galaxies in file order; attrs
        record the files, the reader(s) and the package version.
    skipped : list of Skipped
        Files that could not be read and duplicate galaxies left out.

    Raises
    ------
    NothingRead
        If no file could be read.
    """
    paths = [str(p) for p in paths]
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    options = [dict(o) for o in options] if options is not None else [{} for _ in paths]
    if len(options) != len(paths):
        raise ValueError(f"{len(options)} reader options for {len(paths)} files")
    if fmt is not None:
        registry.get_reader(fmt)  # an unknown format is the caller's error, not a file's
    if not paths:
        raise NothingRead([])

    skipped: list[Skipped] = []
    kept: list[tuple[str, xr.Dataset]] = []
    seen: dict[Any, str] = {}
    removed: dict[str, int] = {}
    on_workers: dict[str, tuple[Any, np.ndarray]] = {}  # path -> (read future, galaxies kept)
    for path, (ds, reason, *remote) in zip(paths, _read_all(paths, fmt, options, client, progress),
                                           strict=True):
        if ds is None:
            skipped.append(Skipped(path, reason))
            continue
        # A reader that selects targets says how many each cut removed.
        for cut, n in ds.attrs.pop("selection_removed", {}).items():
            removed[cut] = removed.get(cut, 0) + int(n)
        ids = ds["galaxy"].values
        if ids.size == 0:
            continue
        dup = np.array([g in seen for g in ids.tolist()], dtype=bool)
        for g in ids[dup].tolist():
            skipped.append(Skipped(path, f"duplicate galaxy id, already read from {seen[g]}",
                                   galaxy=str(g)))
        if dup.all():
            continue
        keep = np.flatnonzero(~dup)
        ds = ds.isel(galaxy=keep) if dup.any() else ds
        seen.update(dict.fromkeys(ds["galaxy"].values.tolist(), path))
        if remote and remote[0] is not None:
            on_workers[path] = (remote[0], keep)
        kept.append((path, ds))
    if not kept:
        if removed and len(skipped) < len(paths):
            raise NothingRead(skipped, f"the selection removed every target of the files read "
                                       f"({selection_summary(removed)})")
        raise NothingRead(skipped)

    combined = _combine(kept, client, on_workers)
    readers = sorted({ds.attrs.get("survey", "?") for _, ds in kept})
    attrs = {"schema_version": SCHEMA_VERSION, "norm_convention": "none", "flux_unit": FLUX_UNIT,
             "survey": ",".join(readers)}
    selected = {"selection_removed": removed} if removed else {}
    attrs = add_provenance(attrs, "ingest", reader=",".join(readers),
                           files=[p for p, _ in kept], skipped=[str(s) for s in skipped],
                           **selected)
    combined.attrs = attrs
    validate(combined, frame="observed", where="ingest")
    return combined.chunk({"galaxy": chunk_size, "wavelength": -1}), skipped


def _combine(kept: list[tuple[str, xr.Dataset]], client=None,
             on_workers: Mapping[str, tuple[Any, np.ndarray]] | None = None) -> xr.Dataset:
    """Concatenate readers' datasets along galaxy on one common wavelength axis.

    A file in ``on_workers`` came as a light dataset; its spectra are made
    lazily from its read future (on ``client``), see :func:`_lazy_spectra`.
    """
    on_workers = on_workers or {}
    surveys = {ds.attrs.get("survey") for _, ds in kept}
    fmt = surveys.pop() if len(surveys) == 1 else None
    axis = registry.common_axis(fmt, [ds["wavelength"].values for _, ds in kept])
    id_kinds = {ds["galaxy"].dtype.kind for _, ds in kept}
    extras: dict[str, np.dtype] = {}
    for _, ds in kept:
        for name, var in ds.data_vars.items():
            if var.dims == ("galaxy",) and name not in extras:
                extras[name] = var.dtype

    parts = []
    for path, ds in kept:
        if not np.isin(ds["wavelength"].values, axis).all():
            raise registry.ReadError(f"{path}: its wavelengths do not lie on the common axis")
        ds = ds.reindex(wavelength=axis, fill_value=_SPECTRAL_FILL)
        if path in on_workers:
            ds = ds.assign(_lazy_spectra(ds, axis, client, *on_workers[path]))
        n = ds.sizes["galaxy"]
        ds = ds.assign(source_file=("galaxy", np.full(n, Path(path).name)),
                       survey=("galaxy", np.full(n, str(ds.attrs.get("survey", "")))))
        for name, dtype in extras.items():
            if name not in ds:
                ds[name] = ("galaxy", np.full(ds.sizes["galaxy"], _fill_for(dtype)).astype(
                    dtype if dtype.kind not in "UST" else str))
        if len(id_kinds) > 1:  # string and integer ids in one run: compare them as strings
            ds = ds.assign_coords(galaxy=ds["galaxy"].values.astype(str))
        ds.attrs = {}
        parts.append(ds)
    out = xr.concat(parts, dim="galaxy", data_vars="minimal", coords="minimal",
                    compat="override", join="exact", combine_attrs="override")
    out["wavelength"].attrs = dict(kept[0][1]["wavelength"].attrs)
    for name in ("flux", "ivar", "mask"):
        out[name] = out[name].astype(parts[0][name].dtype)
    return out


def _lazy_spectra(light: xr.Dataset, axis: np.ndarray, client, future,
                  keep: np.ndarray) -> dict[str, xr.DataArray]:
    """Dask arrays of a light dataset's spectra, cut from its read future on the worker holding it.

    Each array is backed by a future (which the array's graph keeps alive; a
    delayed call on the read future would not), so the read result is freed
    once its blocks are made.
    """
    import dask.array as da

    out = {}
    for name, (dtype, attrs) in light.attrs["_spectra"].items():
        block = client.submit(_spectral_block, future, name, keep, axis, pure=False)
        data = da.from_delayed(block, shape=(keep.size, axis.size), dtype=np.dtype(dtype))
        out[name] = xr.DataArray(data, dims=_SPECTRAL_DIMS, attrs=attrs)
    return out


def _fill_for(dtype: np.dtype):
    kind = np.dtype(dtype).kind
    return {"f": np.nan, "c": np.nan, "i": -1, "u": 0, "b": False}.get(kind, "")
