"""``survey-denoise info STORE``: what is in a store, readable at a glance.

Works on every store the package writes: spectra (raw or rest frame) and
galaxy-only tables such as line catalogues, complete or interrupted, and on
Parquet catalogues.  Only
metadata and the small per-galaxy ``flags``/``status`` and ``z`` columns are
read, so it is quick on a survey-size store.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click
import numpy as np


@click.command()
@click.argument("store", type=click.Path(path_type=Path))
def info(store: Path) -> None:
    """Summarise STORE: sizes, frame, chunks, flag counts, provenance."""
    click.echo(describe_store(store))


def describe_store(path: str | Path) -> str:
    """A multi-line, human-readable summary of a store written by survey_denoise.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    SchemaError
        If ``path`` is not a readable Zarr store.
    """
    from .. import flags as flagbits
    from ..grid import Grid
    from ..io.store import PROGRESS_DIR, completed_chunks, n_chunks, open_store
    from ..schema import SchemaError

    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        return _describe_parquet(path)
    ds = open_store(path, check=False, spectra=False)
    spectra = {"flux", "ivar"} <= set(ds.variables) and "wavelength" in ds.dims
    rows: list[tuple[str, str]] = [
        ("store", f"{path} (Zarr v3, {_human_bytes(_disk_size(path))} on disk)"),
        ("kind", "spectra" if spectra else "galaxy table"),
        ("sizes", ", ".join(f"{dim} {n}" for dim, n in ds.sizes.items())),
    ]
    if "survey" in ds.attrs:
        rows.append(("survey", str(ds.attrs["survey"])))
    if spectra:
        wave = ds["wavelength"]
        frame = wave.attrs.get("frame", "?")
        values = wave.values
        text = (f"{frame} frame, {values.size} pixels, {values[0]:.1f}-{values[-1]:.1f} "
                f"{wave.attrs.get('units', 'Angstrom')} ({wave.attrs.get('medium', 'vacuum')})")
        if "grid" in ds.attrs:
            try:
                grid = Grid.from_dataset(ds).to_dict()
                text += f"; grid {', '.join(f'{k}={v}' for k, v in grid.items())}"
            except ValueError as err:
                text += f"; {err}"
        rows.append(("wavelength", text))
        conv = ds.attrs.get("norm_convention", "none")
        rows.append(("norm", f"{conv}" + (" (physical units: " + str(ds["flux"].attrs.get("units", "?"))
                                         + ")" if conv == "none" else
                                         " (physical flux = flux * norm)")))
    chunks = ds.chunks.get("galaxy") if ds.chunks else None
    if chunks:
        rows.append(("chunks", f"{len(chunks)} along galaxy, up to {max(chunks)} galaxies each"))
    if (path / PROGRESS_DIR / "plan.json").exists():
        done, total = len(completed_chunks(path)), n_chunks(path)
        state = "complete" if done == total else "INCOMPLETE: rerun the writing step with --resume"
        rows.append(("written", f"{done} of {total} chunks ({state})"))
    else:
        rows.append(("written", "no completion markers (not written by survey_denoise?)"))
    if "z" in ds.variables and ds["z"].dims == ("galaxy",) and ds.sizes.get("galaxy"):
        z = np.asarray(ds["z"].values, dtype=np.float64)
        ok = np.isfinite(z)
        text = (f"{np.min(z[ok]):.4g} to {np.max(z[ok]):.4g} (median {np.median(z[ok]):.4g})"
                if ok.any() else "none finite")
        rows.append(("redshift", text + (f"; {np.count_nonzero(~ok)} missing" if (~ok).any() else "")))
    flag_var = next((v for v in ("flags", "status") if v in ds.variables
                     and ds[v].dims == ("galaxy",)), None)
    if flag_var is not None:
        counts = flagbits.count(np.asarray(ds[flag_var].values))
        rows.append((flag_var, ", ".join(f"{k} {n}" for k, n in counts.items()) or "none set"))
    rows.append(("variables", _variables(ds)))
    try:
        steps = json.loads(ds.attrs.get("provenance", "[]"))
    except json.JSONDecodeError:
        raise SchemaError(f"{path}: attrs['provenance'] is not JSON") from None
    lines = [_step(i, s) for i, s in enumerate(steps, 1)] or ["none recorded"]
    rows.append(("provenance", lines[0]))
    rows.extend(("", line) for line in lines[1:])
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _describe_parquet(path: Path) -> str:
    """Summary of a Parquet catalogue: rows, columns, status counts, provenance metadata."""
    import pyarrow.parquet as pq

    from .. import flags as flagbits
    from ..schema import SchemaError

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError... for foreign files
        raise SchemaError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
    names = pf.schema_arrow.names
    rows: list[tuple[str, str]] = [
        ("file", f"{path} (Parquet, {_human_bytes(path.stat().st_size)})"),
        ("kind", "galaxy table"),
        ("sizes", f"galaxy {pf.metadata.num_rows}, {len(names)} columns"),
    ]
    flag_col = next((c for c in ("status", "flags") if c in names), None)
    if flag_col is not None:
        counts = flagbits.count(pf.read(columns=[flag_col]).column(0).to_numpy())
        rows.append((flag_col, ", ".join(f"{k} {n}" for k, n in counts.items()) or "none set"))
    rows.append(("columns", ", ".join(names)))
    meta = {k.decode(): v.decode() for k, v in (pf.schema_arrow.metadata or {}).items()
            if not k.startswith(b"pandas") and not k.startswith(b"ARROW")}
    try:
        steps = json.loads(meta.pop("provenance", "[]"))
    except json.JSONDecodeError:
        steps = []
    lines = [_step(i, s) for i, s in enumerate(steps, 1)] or ["none recorded"]
    rows.append(("provenance", lines[0]))
    rows.extend(("", line) for line in lines[1:])
    if meta:
        rows.append(("metadata", ", ".join(sorted(meta))))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _variables(ds) -> str:
    """Variables with dtype and dims; families of many per-galaxy columns shown as one entry."""
    names = sorted(map(str, ds.data_vars))
    families: dict[str, list[str]] = {}
    for name in names:
        if "_" in name:
            families.setdefault(name.split("_", 1)[0], []).append(name)
    big = {prefix for prefix, members in families.items() if len(members) > 5}
    parts, shown = [], set()
    for name in names:
        prefix = name.split("_", 1)[0] if "_" in name else None
        if prefix in big:
            if prefix not in shown:
                shown.add(prefix)
                parts.append(f"{prefix}_* ({len(families[prefix])} per-galaxy columns)")
            continue
        parts.append(f"{name} {ds[name].dtype} ({', '.join(ds[name].dims)})")
    return "; ".join(parts)


def _step(i: int, step: dict) -> str:
    params = {k: v for k, v in step.items() if k not in ("step", "version")}
    shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    return f"{i}. {step.get('step', '?')} (v{step.get('version', '?')})" + (f": {shown}" if shown else "")


_PATH = re.compile(r"(?<!\S)(?:~|\.{1,2})?/(?:[^\s/]*/)*([^\s/]+)")  # absolute or ./ paths


def _short(value) -> str:
    if isinstance(value, list | tuple):
        if len(value) > 3:
            return f"[{len(value)} items: {', '.join(_short(v) for v in value[:2])}, ...]"
        return "[" + ", ".join(_short(v) for v in value) + "]"
    text = str(value)
    # Paths shrink to their last part, also inside a sentence ("/data/x.fits:
    # no such file"); a ratio in a sentence ("constant 1/val_mse = ...") is
    # not a path.
    if isinstance(value, str) and os.sep in text:
        text = Path(text).name if not any(c.isspace() for c in text) else _PATH.sub(r"\1", text)
    return text if len(text) <= 60 else text[:57] + "..."


def _disk_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
