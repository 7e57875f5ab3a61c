"""The line-flux catalogue: one row per galaxy, units recorded, Parquet and FITS.

Columns (DESIGN.md): ``galaxy``, ``z``, ``norm``, ``status`` (0 = fitted,
else :class:`~survey_denoise.flags.Flag` bits FIT_FAILED / FIT_NO_COVERAGE),
``flags`` (the spectrum's own bits from earlier stages), ``chi2`` (per
degree of freedom), ``method``, ``line_sigma``, ``line_sigma_err`` and
``line_sigma_err_stat`` (the fitted line width, its total error and the
formal part of it, km/s; the systematic part as for the fluxes, from
:func:`survey_denoise.fitting.systematics.width_constants`), ``prior_dchi2`` (the fast
fitter's test of its stellar-weights prior), and for each key of
:func:`survey_denoise.lines.catalogue_keys`:

* ``<key>_flux``, ``<key>_flux_err``: integrated line flux, 1e-17 erg/s/cm2
  (observed, not corrected for dust), and its total 1-sigma error;
* ``<key>_flux_err_stat``: the fitter's formal (statistical) part of that
  error; the rest is the systematic part of
  :mod:`survey_denoise.fitting.systematics` (optional: catalogues written
  before it existed lack it);
* ``<key>_flux_norm``, ``<key>_flux_norm_err``: the same in normalised units,
  i.e. the integral of the normalised flux density over rest-frame Angstrom
  (so ``flux = flux_norm * norm``);
* ``<key>_snr``: ``flux / flux_err``;
* ``<key>_status``: 0, or :data:`~survey_denoise.flags.Flag.LINE_NOT_COVERED`
  when the observed spectrum does not cover the line with its fitting
  window and continuum (:mod:`survey_denoise.line_windows`); in a
  de-noised catalogue, :data:`~survey_denoise.flags.Flag.LINE_NOT_IN_INPUT`
  where the spectrum the de-noiser read does not detect the line (the
  value comes from the model's prior, not from the galaxy's data).

A line the spectrum does not cover is *missing*: NaN flux and NaN error,
status LINE_NOT_COVERED, never 0 (a zero flux with an error is an upper
limit, which an uncovered line is not).  Every line of a failed fit is NaN
too (the galaxy's ``status`` says why); the row is always there.  Units travel as FITS ``TUNIT`` and as Parquet field
metadata (``unit``, ``description``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .. import lines
from ..flags import Flag
from ..schema import FLUX_UNIT

PHYSICAL_UNIT = "1e-17 erg / (s cm2)"
"""Unit of ``<key>_flux`` columns."""
VELOCITY_UNIT = "km / s"
"""Unit of ``line_sigma`` and its error."""
NORM_UNIT = "Angstrom"
"""Unit of ``<key>_flux_norm`` columns (normalised flux density is dimensionless)."""


def columns() -> dict[str, tuple[str, str, str]]:
    """Every column: name -> (numpy dtype, unit, description), in catalogue order."""
    out = {
        "galaxy": ("object", "", "survey id"),
        "z": ("float64", "", "redshift"),
        "norm": ("float64", FLUX_UNIT, "physical flux density = normalised * norm"),
        "status": ("uint32", "", "0 = fitted; else Flag bits FIT_FAILED / FIT_NO_COVERAGE (no fluxes), FIT_PRIOR_REJECTED (fitted without the weights prior), FIT_WIDTH_AT_LIMIT (line_sigma a bound)"),
        "flags": ("uint32", "", "spectrum flags from earlier stages (survey_denoise.flags)"),
        "chi2": ("float64", "", "chi^2 per degree of freedom of the fit"),
        "method": ("object", "", "fitting method (ppxf, ppxf-native, fast)"),
        "line_sigma": ("float64", VELOCITY_UNIT, "emission-line width, Gaussian sigma as the lines appear "
                       "on the fitted grid (gas and instrument together); NaN where not fitted, and for "
                       "de-noised spectra (the decoder's line shape, not the galaxy's)"),
        "line_sigma_err": ("float64", VELOCITY_UNIT, "line_sigma 1-sigma error (total); NaN where the fit "
                           "does not constrain it"),
        "line_sigma_err_stat": ("float64", VELOCITY_UNIT, "line_sigma 1-sigma error, formal part (the fast "
                                "fitter's: under its width prior, if any)"),
        "prior_dchi2": ("float64", "", "rise of chi^2 under the fast fitter's stellar-weights prior, "
                        "in units of the free fit's reduced chi^2 (NaN: not tested)"),
    }
    for key in lines.catalogue_keys():
        label = key
        out[f"{key}_flux"] = ("float64", PHYSICAL_UNIT, f"{label} integrated flux")
        out[f"{key}_flux_err"] = ("float64", PHYSICAL_UNIT, f"{label} flux 1-sigma error (total)")
        out[f"{key}_flux_err_stat"] = ("float64", PHYSICAL_UNIT,
                                       f"{label} flux 1-sigma error, formal part (systematics left out)")
        out[f"{key}_flux_norm"] = ("float64", NORM_UNIT, f"{label} flux, normalised units")
        out[f"{key}_flux_norm_err"] = ("float64", NORM_UNIT, f"{label} flux error, normalised units")
        out[f"{key}_snr"] = ("float64", "", f"{label} signal-to-noise ratio")
        out[f"{key}_status"] = ("uint32", "", f"{label}: 0, or Flag bits LINE_NOT_COVERED "
                                f"({int(Flag.LINE_NOT_COVERED)}): not observed, flux NaN; "
                                f"LINE_NOT_IN_INPUT ({int(Flag.LINE_NOT_IN_INPUT)}): de-noised, "
                                "and the de-noiser's input alone does not detect it")
    return out


def optional_columns() -> tuple[str, ...]:
    """Columns that a catalogue written by an older version may lack."""
    return tuple(f"{key}_flux_err_stat" for key in lines.catalogue_keys()) + FIT_DETAIL


FIT_DETAIL = ("line_sigma", "line_sigma_err", "line_sigma_err_stat", "prior_dchi2")
"""Per-galaxy fit details that catalogues written before them lack."""


def from_fit(galaxy: np.ndarray, z: np.ndarray, norm: np.ndarray, flags: np.ndarray,
             fit: Mapping, method: str, frame_factor: np.ndarray | float = 1.0,
             covered: np.ndarray | None = None, input_detected: np.ndarray | None = None) -> xr.Dataset:
    """Catalogue rows from a fitter's output.

    Parameters
    ----------
    galaxy, z, norm, flags : ndarray (n,)
        Per-galaxy values of the fitted spectra.
    fit : mapping
        ``flux`` and ``flux_err`` ({key: (n,)}, in the spectra's flux-density
        units x rest-frame Angstrom), ``chi2`` (n,), ``status`` (n,);
        optionally ``flux_err_stat`` (the formal part of ``flux_err``;
        default: all of it), ``width`` and ``width_err`` (the line sigma and
        its total error, km/s; optionally ``width_err_stat``, its formal
        part) and ``prior_dchi2`` (default: NaN).
    method : str
        Recorded in the ``method`` column.
    frame_factor : float or ndarray (n,)
        Extra factor to physical flux (``1 + z`` when the flux density was per
        observed Angstrom on a rest-frame axis; 1 on the rest-frame grid).
    covered : ndarray of bool (n, n_keys), optional
        Whether each spectrum covers each of :func:`survey_denoise.lines.catalogue_keys`
        (:func:`survey_denoise.line_windows.covered_lines`); an uncovered line
        gets NaN flux and error and ``<key>_status`` LINE_NOT_COVERED.
        Default: every line covered.
    input_detected : ndarray of bool (n, n_keys), optional
        De-noised spectra: whether the spectrum the de-noiser read detects
        each line; a covered line it does not detect gets ``<key>_status``
        LINE_NOT_IN_INPUT.  Default: no such bit.
    """
    n = len(galaxy)
    keys = lines.catalogue_keys()
    covered = np.ones((n, len(keys)), bool) if covered is None else np.asarray(covered, bool).reshape(n, len(keys))
    if input_detected is not None:
        input_detected = np.asarray(input_detected, bool).reshape(n, len(keys))
    norm = np.asarray(norm, np.float64)
    scale = norm * np.broadcast_to(np.asarray(frame_factor, np.float64), (n,))
    data = {
        "z": np.asarray(z, np.float64), "norm": norm,
        "status": np.asarray(fit["status"], np.uint32), "flags": np.asarray(flags, np.uint32),
        "chi2": np.asarray(fit["chi2"], np.float64), "method": np.full(n, method, dtype=object),
        "line_sigma": np.asarray(fit.get("width", np.full(n, np.nan)), np.float64),
        "line_sigma_err": np.asarray(fit.get("width_err", np.full(n, np.nan)), np.float64),
        "line_sigma_err_stat": np.asarray(fit.get("width_err_stat", fit.get("width_err", np.full(n, np.nan))),
                                          np.float64),
        "prior_dchi2": np.asarray(fit.get("prior_dchi2", np.full(n, np.nan)), np.float64),
    }
    for j, key in enumerate(keys):
        f = np.where(covered[:, j], np.asarray(fit["flux"][key], np.float64), np.nan)
        e = np.where(covered[:, j], np.asarray(fit["flux_err"][key], np.float64), np.nan)
        e_stat = np.where(covered[:, j], np.asarray(fit.get("flux_err_stat", fit["flux_err"])[key],
                                                    np.float64), np.nan)
        data[f"{key}_flux"] = f * scale
        data[f"{key}_flux_err"] = e * scale
        data[f"{key}_flux_err_stat"] = e_stat * scale
        data[f"{key}_flux_norm"] = f * (scale / norm)
        data[f"{key}_flux_norm_err"] = e * (scale / norm)
        with np.errstate(divide="ignore", invalid="ignore"):
            data[f"{key}_snr"] = np.where(e > 0, f / e, np.nan)
        status = np.where(covered[:, j], 0, int(Flag.LINE_NOT_COVERED))
        if input_detected is not None:
            status |= np.where(covered[:, j] & ~input_detected[:, j], int(Flag.LINE_NOT_IN_INPUT), 0)
        data[f"{key}_status"] = status.astype(np.uint32)
    cols = columns()
    return xr.Dataset(
        {name: ("galaxy", values, _var_attrs(cols[name])) for name, values in data.items()},
        coords={"galaxy": np.asarray(galaxy)})


def formal_errors(cat: pd.DataFrame, keys=None) -> pd.DataFrame:
    """The catalogue with each line's ``<key>_flux_err`` replaced by its formal part, ``<key>_flux_err_stat``.

    What the systematic terms (:mod:`.systematics`) change is measured by
    scoring the same fit both ways.

    Parameters
    ----------
    cat : DataFrame
        A line catalogue (physical-unit columns).
    keys : sequence of str, optional
        The lines to replace (default: every line with a ``_flux_err_stat`` column).
    """
    if keys is None:
        keys = [c[: -len("_flux_err_stat")] for c in cat.columns if c.endswith("_flux_err_stat")]
    return cat.assign(**{f"{k}_flux_err": cat[f"{k}_flux_err_stat"] for k in keys})


def not_covered(cat: pd.DataFrame, key: str) -> np.ndarray:
    """Whether line ``key`` of each row is missing because the spectrum did not cover it.

    Reads ``<key>_status`` (LINE_NOT_COVERED); False where the column is
    absent (catalogues written before it existed) or the row has no value
    (a galaxy absent from a catalogue that was re-indexed).

    Returns
    -------
    ndarray of bool (n_rows,)
    """
    return _status_bit(cat, key, Flag.LINE_NOT_COVERED)


def not_in_input(cat: pd.DataFrame, key: str) -> np.ndarray:
    """Whether line ``key`` of each de-noised row is one the de-noiser's input does not detect.

    Reads ``<key>_status`` (LINE_NOT_IN_INPUT); False where the column is
    absent, the row has no value, or the catalogue is not of de-noised
    spectra.

    Returns
    -------
    ndarray of bool (n_rows,)
    """
    return _status_bit(cat, key, Flag.LINE_NOT_IN_INPUT)


def _status_bit(cat: pd.DataFrame, key: str, bit: Flag) -> np.ndarray:
    name = f"{key}_status"
    if name not in cat.columns:
        return np.zeros(len(cat), bool)
    status = cat[name].to_numpy(np.float64)
    bits = np.where(np.isfinite(status), status, 0).astype(np.int64)
    return (bits & int(bit)) != 0


def _var_attrs(spec: tuple[str, str, str]) -> dict:
    _, unit, description = spec
    return {"units": unit, "description": description} if unit else {"description": description}


def template(galaxy: np.ndarray, chunks: tuple[int, ...]) -> xr.Dataset:
    """An empty lazy catalogue for ids ``galaxy`` in ``chunks`` (for ``xr.map_blocks``)."""
    import dask.array as da

    galaxy = np.asarray(galaxy)
    data = {}
    for name, (dtype, unit, description) in columns().items():
        if name == "galaxy":
            continue
        dt = np.dtype(dtype)
        data[name] = ("galaxy", da.empty(galaxy.size, dtype=dt, chunks=(tuple(chunks),)),
                      _var_attrs((dtype, unit, description)))
    return xr.Dataset(data, coords={"galaxy": galaxy})


def to_frame(cat: xr.Dataset | pd.DataFrame) -> pd.DataFrame:
    """The catalogue as a DataFrame in catalogue column order (computes a lazy Dataset)."""
    if isinstance(cat, xr.Dataset):
        frame = cat.compute().to_dataframe().reset_index()
    else:
        frame = cat.copy()
    missing = [c for c in columns() if c not in frame.columns and c not in optional_columns()]
    if missing:
        raise ValueError(f"catalogue lacks columns {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for name in ("galaxy", "method"):
        if frame[name].dtype.kind not in "iu":
            frame[name] = frame[name].astype(str).astype(object)
    extra = [c for c in frame.columns if c not in columns()]
    return frame[[c for c in columns() if c in frame.columns] + extra]


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in (".parquet", ".fits", ".fit") else path
    return stem.with_suffix(".parquet"), stem.with_suffix(".fits")


ROWS_PER_PART = 65_536  # galaxies read, converted and written at a time (~55 MB of catalogue)


def write_catalogue(cat: xr.Dataset | pd.DataFrame, path: str | Path,
                    meta: Mapping[str, object] | None = None, *,
                    rows_per_part: int = ROWS_PER_PART) -> tuple[Path, Path]:
    """Write a catalogue as Parquet and FITS side by side, a part of the rows at a time.

    A Dataset (a catalogue store) is read ``rows_per_part`` galaxies at a
    time and each part is appended to both files (a Parquet row group; rows
    of the one FITS binary table), so memory stays that of one part however
    many galaxies there are.  The files are the same as from writing every
    row at once: string columns get the width of their longest value over
    all rows.

    Parameters
    ----------
    cat : xarray.Dataset or DataFrame
        From :func:`survey_denoise.fitting.fit_lines`, or a catalogue store
        opened lazily.
    path : str or Path
        ``name.parquet``, ``name.fits`` or ``name``: both ``name.parquet`` and
        ``name.fits`` are written.
    meta : mapping, optional
        Extra metadata (JSON-able), e.g. provenance; ``cat.attrs`` is used too.
    rows_per_part : int
        Galaxies per part.

    Returns
    -------
    (Path, Path)
        The Parquet and FITS files.
    """
    import pyarrow.parquet as pq

    info = {**dict(cat.attrs), **(meta or {})}
    info = {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in info.items()}
    pq_path, fits_path = _paths(path)
    pq_path.parent.mkdir(parents=True, exist_ok=True)
    n = int(cat.sizes["galaxy"]) if isinstance(cat, xr.Dataset) else len(cat)
    bounds = list(range(0, n, rows_per_part)) or [0]
    widths = _string_widths(cat, bounds, rows_per_part)
    writer, fits_file = None, _FitsTable(fits_path, n, info)
    try:
        for start in bounds:
            part = cat.isel(galaxy=slice(start, start + rows_per_part)) if isinstance(cat, xr.Dataset) \
                else cat.iloc[start:start + rows_per_part]
            frame = to_frame(part)
            table = _arrow_table(frame, info, widths)
            if writer is None:
                writer = pq.ParquetWriter(pq_path, table.schema)
            writer.write_table(table)
            fits_file.append(_astropy_table(frame, widths))
    finally:
        if writer is not None:
            writer.close()
        fits_file.close()
    if fits_file.rows != n:
        raise ValueError(f"{fits_path}: wrote {fits_file.rows} of {n} rows")
    return pq_path, fits_path


def _string_widths(cat: xr.Dataset | pd.DataFrame, bounds: list[int], rows: int) -> dict[str, int]:
    """Longest value (characters, at least 1) of each string column over every row."""
    if isinstance(cat, pd.DataFrame):
        frame = to_frame(cat)
        return {c: _width(frame[c]) for c in frame.columns if frame[c].dtype.kind not in "biufc"}
    names = [str(k) for k, v in cat.variables.items() if v.dims == ("galaxy",) and v.dtype.kind not in "biufc"]
    widths = dict.fromkeys(names, 1)
    for start in bounds:
        part = cat[[k for k in names if k != "galaxy"]].isel(galaxy=slice(start, start + rows)).compute()
        for name in names:
            widths[name] = max(widths[name], _width(pd.Series(part[name].values)))
    return widths


def _width(values: pd.Series) -> int:
    return max(1, int(values.astype(str).str.len().max() or 1)) if len(values) else 1


def _arrow_table(frame: pd.DataFrame, info: dict[str, str], widths: dict[str, int]):
    """One part as an Arrow table with the catalogue's schema (units, descriptions, metadata)."""
    import pyarrow as pa

    cols = columns()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = []
    for f in table.schema:
        _, unit, description = cols.get(f.name, ("", "", ""))
        fields.append(f.with_metadata({"unit": unit, "description": description}))
    # astropy's Parquet reader sizes string columns from these keys.
    lengths = {f"table::len::{c}".encode(): str(widths[c]).encode() for c in frame.columns if c in widths}
    schema = pa.schema(fields, metadata={**{k.encode(): v.encode() for k, v in info.items()},
                                         **lengths, b"survey_denoise": b"line catalogue"})
    return table.cast(schema)


def _astropy_table(frame: pd.DataFrame, widths: dict[str, int]):
    """One part as an astropy Table: units, descriptions, string columns at their full width."""
    from astropy.table import Table

    t = Table.from_pandas(frame)
    cols = columns()
    for name in t.colnames:
        if name in widths:
            t[name] = t[name].astype(f"U{widths[name]}")
        _, unit, description = cols.get(name, ("", "", ""))
        if unit:
            t[name].unit = unit
        t[name].description = description
    return t


class _FitsTable:
    """A FITS file with one binary table of ``n`` rows, appended a part at a time.

    The header is the one astropy writes for the first part, with the row
    count of the whole table; each part's rows are the bytes astropy writes
    for that part alone (the same columns and formats, so the same record
    layout); the data end with the zero padding FITS asks for.
    """

    def __init__(self, path: Path, n: int, info: dict[str, str]) -> None:
        self.path, self.n, self.info = path, n, info
        self.file = None
        self.rows = 0
        self.header_text: str | None = None  # the first part's, with the whole table's NAXIS2

    def append(self, table) -> None:
        import io

        from astropy.io import fits

        if self.info:  # one card (long strings continue): FITS keywords are 8 characters
            table.meta["SDMETA"] = json.dumps(self.info)
        buffer = io.BytesIO()
        table.write(buffer, format="fits")  # astropy's own header: units, descriptions, meta
        raw = buffer.getvalue()
        with fits.open(io.BytesIO(raw)) as hdus:
            where, header = hdus.fileinfo(1), hdus[1].header.copy()
        data = raw[where["datLoc"]:where["datLoc"] + header["NAXIS1"] * header["NAXIS2"]]
        rows = header["NAXIS2"]
        header["NAXIS2"] = self.n
        text = header.tostring()
        if self.file is None:
            self.header_text = text
            self.file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
            self.file.write(raw[:where["hdrLoc"]])  # the primary HDU
            self.file.write(text.encode("ascii"))
        elif text != self.header_text:
            raise ValueError(f"{self.path}: a part's FITS columns differ from the first part's")
        self.file.write(data)
        self.rows += rows

    def close(self) -> None:
        if self.file is None:
            return
        size = self.file.tell()
        self.file.write(b"\0" * (-size % 2880))
        self.file.close()
        self.file = None


def read_catalogue(path: str | Path) -> pd.DataFrame:
    """Read a catalogue written by :func:`write_catalogue` (``.parquet`` or ``.fits``).

    Returns
    -------
    DataFrame
        Catalogue columns; ``frame.attrs["units"]`` maps column -> unit string,
        ``frame.attrs["meta"]`` holds the file metadata.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If it is not a line catalogue (columns missing).
    """
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".parquet")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such catalogue")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        units = {f.name: (f.metadata or {}).get(b"unit", b"").decode() for f in table.schema}
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()
                if k != b"pandas" and not k.startswith(b"table::")}
        frame = table.to_pandas()
    else:
        from astropy.table import Table

        t = Table.read(path, format="fits")
        units = {c: (t[c].unit.to_string() if t[c].unit is not None else "") for c in t.colnames}
        meta = json.loads(t.meta.get("SDMETA", "{}"))
        for c in t.colnames:
            t[c].unit = None
        frame = t.to_pandas()
        for name in ("galaxy", "method"):
            if name in frame and frame[name].dtype.kind in "OSU":
                frame[name] = frame[name].map(lambda v: v.decode() if isinstance(v, bytes) else str(v))
    missing = [c for c in columns() if c not in frame.columns and c not in optional_columns()]
    if missing:
        raise ValueError(f"{path}: not a line catalogue (missing columns {missing[:5]})")
    frame.attrs["units"] = units
    frame.attrs["meta"] = meta
    return frame
