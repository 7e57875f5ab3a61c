"""The spectra data model: one schema, validated at every boundary.

A spectra dataset is an :class:`xarray.Dataset` with dimensions
``(galaxy, wavelength)``, chunked along ``galaxy`` only:

========== ==================== ======== =============================================
name       dims                 dtype    meaning
========== ==================== ======== =============================================
flux       galaxy, wavelength   float32  flux density (1e-17 erg/s/cm2/A, or normalised)
ivar       galaxy, wavelength   float32  inverse variance of flux; 0 = no information
mask       galaxy, wavelength   bool     bad pixel
wavelength wavelength           float64  Angstrom, vacuum; attrs["frame"] observed|rest
galaxy     galaxy               str/int  survey id
z          galaxy               float64  redshift
norm       galaxy               float64  physical flux = normalised flux * norm
flags      galaxy               uint32   :mod:`survey_denoise.flags` bits
========== ==================== ======== =============================================

Other galaxy-level variables (truth, survey metadata) may ride along on the
``galaxy`` dimension.  Pre-processing adds two: ``coverage`` (float32, units
1: fraction of grid pixels usable) and ``lines_covered`` (uint32, units 1:
bit ``i`` set when the spectrum covers catalogue line
``survey_denoise.lines.catalogue_keys()[i]`` with its fitting window and
continuum, see :mod:`survey_denoise.line_windows`; the names are in its
``flag_meanings`` attribute).  A de-noised store adds ``extrapolated`` (galaxy,
wavelength, bool): pixels the input did not have, predicted by the model,
with ivar 0 (:mod:`survey_denoise.inference`; flag ``DENOISE_EXTRAPOLATED``),
and ``amplitude``, ``amplitude_err`` (galaxy, float64, units 1): the factor
that put the model's output on the input's normalisation, and its error.
:func:`validate` is public so that users and tests
check the same contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from .grid import Grid

SCHEMA_VERSION = 1
FLUX_UNIT = "1e-17 erg / (s cm2 Angstrom)"
FRAMES = ("observed", "rest")
NORMS = ("none", "l2", "sum", "median")

TRUTH_PREFIX = "true_"
"""Prefix of the per-galaxy truth a mock store carries beside its spectra (``true_halpha_flux`` …)."""

_SPECTRAL = {"flux": (np.float32,), "ivar": (np.float32,), "mask": (np.bool_, np.uint8)}
_PER_GALAXY = {"z": (np.float64,), "norm": (np.float64,), "flags": (np.uint32,)}


def truth_variables(ds: xr.Dataset) -> list[str]:
    """Names of the mock truth variables (:data:`TRUTH_PREFIX`) in ``ds``, in name order."""
    return sorted(str(v) for v in ds.data_vars if str(v).startswith(TRUTH_PREFIX))


def without_truth(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` less its mock truth variables: what a model or a fitter reads.

    The truth travels in every store of a mock run, a few dozen per-galaxy
    variables of one small chunk each; reading a subset of galaxies with them
    costs a task per variable and chunk, for values the truth table holds.
    """
    return ds.drop_vars(truth_variables(ds))


class SchemaError(ValueError):
    """A dataset does not follow the spectra schema; the message says what to fix."""


def _fail(msg: str, where: str | None) -> None:
    prefix = f"{where}: " if where else ""
    raise SchemaError(prefix + msg)


def validate(ds: xr.Dataset, *, frame: str | None = None, grid: Grid | None = None,
             where: str | None = None) -> xr.Dataset:
    """Check that ``ds`` follows the spectra schema; return it unchanged.

    Only metadata is inspected (names, dims, dtypes, chunks, coordinates), so
    validating a lazy survey-size dataset costs nothing.

    Parameters
    ----------
    ds : xarray.Dataset
        Dataset to check.
    frame : {"observed", "rest"}, optional
        Required wavelength frame.  A rest-frame dataset must sit on a grid.
    grid : Grid, optional
        Grid a rest-frame dataset must sit on (default: the one recorded in
        ``ds.attrs["grid"]``, else :data:`~survey_denoise.grid.GRID`; see
        :meth:`~survey_denoise.grid.Grid.from_dataset`).
    where : str, optional
        Name of the file or stage, prefixed to error messages.

    Returns
    -------
    xarray.Dataset
        ``ds`` itself, so ``validate`` can be chained.

    Raises
    ------
    SchemaError
        Naming the variable and the problem.
    """
    if not isinstance(ds, xr.Dataset):
        _fail(f"expected an xarray.Dataset, got {type(ds).__name__}", where)
    for dim in ("galaxy", "wavelength"):
        if dim not in ds.dims:
            _fail(f"dimension {dim!r} is missing (dims are {tuple(ds.dims)})", where)
    for name, dtypes in {**_SPECTRAL, **_PER_GALAXY}.items():
        dims = ("galaxy", "wavelength") if name in _SPECTRAL else ("galaxy",)
        if name not in ds.variables:
            _fail(f"variable {name!r} is missing", where)
        var = ds[name]
        if var.dims != dims:
            _fail(f"variable {name!r} has dims {var.dims}, expected {dims}", where)
        if var.dtype.type not in dtypes:
            want = " or ".join(np.dtype(d).name for d in dtypes)
            _fail(f"variable {name!r} has dtype {var.dtype}, expected {want}", where)
    if "galaxy" not in ds.coords:
        _fail("coordinate 'galaxy' (survey ids) is missing", where)
    if ds.indexes["galaxy"].has_duplicates:
        dup = ds.indexes["galaxy"][ds.indexes["galaxy"].duplicated()][:3].tolist()
        _fail(f"coordinate 'galaxy' has duplicate ids, e.g. {dup}", where)
    if "wavelength" not in ds.coords:
        _fail("coordinate 'wavelength' is missing", where)
    wave = ds["wavelength"]
    if wave.dtype != np.float64:
        _fail(f"coordinate 'wavelength' has dtype {wave.dtype}, expected float64", where)
    wave_values = wave.values
    if not np.all(np.isfinite(wave_values)) or np.any(np.diff(wave_values) <= 0):
        _fail("coordinate 'wavelength' must be finite and strictly increasing", where)
    got_frame = wave.attrs.get("frame")
    if got_frame not in FRAMES:
        _fail(f"wavelength.attrs['frame'] is {got_frame!r}, expected one of {FRAMES}", where)
    if frame is not None and got_frame != frame:
        _fail(f"wavelength frame is {got_frame!r}, this step needs {frame!r}", where)
    if got_frame == "rest":
        if grid is None:
            try:
                grid = Grid.from_dataset(ds)
            except ValueError as err:
                _fail(str(err), where)
        want = grid
        if not want.matches(wave_values):
            _fail(f"rest-frame wavelength axis ({wave_values.size} pixels, "
                  f"{wave_values[0]:.1f}-{wave_values[-1]:.1f} A) does not match the grid "
                  f"{want.to_dict()}", where)
    norm = ds.attrs.get("norm_convention", "none")
    if norm not in NORMS:
        _fail(f"attrs['norm_convention'] is {norm!r}, expected one of {NORMS}", where)
    for name in _SPECTRAL:
        chunks = ds[name].chunks
        if chunks is not None and len(chunks[1]) > 1:
            _fail(f"variable {name!r} is chunked along wavelength {chunks[1]}; "
                  "chunk along 'galaxy' only", where)
    return ds


def make_spectra(
    flux: np.ndarray,
    ivar: np.ndarray,
    wavelength: np.ndarray,
    galaxy: np.ndarray,
    z: np.ndarray,
    *,
    frame: str,
    mask: np.ndarray | None = None,
    norm: np.ndarray | None = None,
    flags: np.ndarray | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Build a schema-valid spectra dataset from numpy arrays.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_galaxy, n_wavelength)
        Flux density (1e-17 erg/s/cm2/A unless ``attrs`` says otherwise) and
        its inverse variance.
    wavelength : ndarray, shape (n_wavelength,)
        Vacuum wavelengths, Angstrom.
    galaxy : ndarray, shape (n_galaxy,)
        Survey ids.
    z : ndarray, shape (n_galaxy,)
        Redshifts (NaN where unknown).
    frame : {"observed", "rest"}
        Frame of ``wavelength``.
    mask : ndarray of bool, optional
        Bad pixels (default: ``ivar <= 0``).
    norm : ndarray, optional
        Normalisation factors (default 1: physical units).
    flags : ndarray of uint32, optional
        :mod:`~survey_denoise.flags` bits (default 0).
    extra : mapping, optional
        More per-galaxy variables, each of shape (n_galaxy,).
    attrs : mapping, optional
        Dataset attributes (provenance, conventions).

    Returns
    -------
    xarray.Dataset
        A validated dataset.
    """
    flux = np.asarray(flux, dtype=np.float32)
    ivar = np.asarray(ivar, dtype=np.float32)
    n_gal = flux.shape[0]
    mask = (ivar <= 0) if mask is None else np.asarray(mask, dtype=bool)
    data_vars = {
        "flux": (("galaxy", "wavelength"), flux, {"units": FLUX_UNIT}),
        "ivar": (("galaxy", "wavelength"), ivar, {"units": f"({FLUX_UNIT})-2"}),
        "mask": (("galaxy", "wavelength"), mask),
        "z": ("galaxy", np.asarray(z, dtype=np.float64)),
        "norm": ("galaxy", np.ones(n_gal) if norm is None else np.asarray(norm, dtype=np.float64),
                 {"units": FLUX_UNIT}),
        "flags": ("galaxy", np.zeros(n_gal, np.uint32) if flags is None
                  else np.asarray(flags, dtype=np.uint32)),
    }
    for name, values in (extra or {}).items():
        data_vars[name] = ("galaxy", np.asarray(values))
    ds = xr.Dataset(
        data_vars,
        coords={
            "galaxy": np.asarray(galaxy),
            "wavelength": ("wavelength", np.asarray(wavelength, dtype=np.float64),
                           {"units": "Angstrom", "frame": frame, "medium": "vacuum"}),
        },
        attrs={"schema_version": SCHEMA_VERSION, "norm_convention": "none", **(attrs or {})},
    )
    return validate(ds)


def add_provenance(attrs: Mapping[str, Any], step: str, **params: Any) -> dict[str, Any]:
    """Return a copy of ``attrs`` with one more step appended to ``attrs["provenance"]``.

    Provenance is a JSON list (stored as a string so every Zarr and NetCDF
    back-end keeps it) of ``{"step": ..., "version": ..., **params}``.
    """
    from . import __version__

    out = dict(attrs)
    history = json.loads(out.get("provenance", "[]"))
    history.append({"step": step, "version": __version__, **params})
    out["provenance"] = json.dumps(history, default=str)
    return out
