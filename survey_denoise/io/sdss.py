"""SDSS ``spec`` / ``spec-lite`` FITS files: one spectrum each, in the raw schema.

The file layout (SDSS DR8 and later, BOSS and legacy alike):

* HDU ``COADD``: table with ``loglam`` (log10 vacuum wavelength, Angstrom),
  ``flux`` (1e-17 erg/s/cm2/A), ``ivar`` and ``and_mask`` (pixel bits bad in
  every exposure);
* HDU ``SPECOBJ``: one row with ``PLATE``, ``MJD``, ``FIBERID``, ``Z``,
  ``Z_ERR``, ``ZWARNING``, ``CLASS``, ``SUBCLASS``, ``PLUG_RA``, ``PLUG_DEC``.

SDSS spectra sit on one global lattice, ``log10(lambda) = 1e-4 * i`` for
integer ``i``; each spectrum starts at its own ``i``.  The wavelengths here are
computed from ``i`` (not from the stored float32 ``loglam``) so that pixels of
different spectra compare exactly and :func:`common_axis` can line them up
without resampling.

The galaxy id is ``"PPPP-MMMMM-FFFF"`` (plate-mjd-fiber, zero-padded as in
SDSS file names).  Per-galaxy variables besides the schema's: ``spectype``
(CLASS), ``subtype`` (SUBCLASS), ``zwarn`` (ZWARNING), ``z_err``, ``plate``,
``mjd``, ``fiberid``, ``ra``, ``dec`` (degrees).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ..flags import Flag
from ..schema import FLUX_UNIT, add_provenance, make_spectra
from .registry import ReadError, open_fits, register

LOGLAM_STEP = 1e-4
"""Step of the SDSS log10-wavelength lattice."""

_COADD_COLUMNS = ("loglam", "flux", "ivar", "and_mask")
_SPECOBJ_COLUMNS = ("PLATE", "MJD", "FIBERID", "Z", "ZWARNING", "CLASS")


def lattice_wavelength(index: np.ndarray) -> np.ndarray:
    """Vacuum wavelength (Angstrom) of SDSS lattice pixels ``index``."""
    return 10.0 ** (np.asarray(index, dtype=np.int64) * LOGLAM_STEP)


def lattice_index(wavelength: np.ndarray) -> np.ndarray:
    """Lattice index of SDSS wavelengths (Angstrom), the inverse of :func:`lattice_wavelength`."""
    return np.rint(np.log10(np.asarray(wavelength, dtype=np.float64)) / LOGLAM_STEP).astype(np.int64)


def identify_sdss(hdul) -> bool:
    """True for an SDSS spec/spec-lite file (a ``COADD`` table with loglam, and ``SPECOBJ``)."""
    names = {h.name for h in hdul}
    if not {"COADD", "SPECOBJ"} <= names:
        return False
    columns = getattr(hdul["COADD"], "columns", None)
    return columns is not None and set(_COADD_COLUMNS) <= {c.lower() for c in columns.names}


def read_sdss(path: str | Path) -> xr.Dataset:
    """Read one SDSS spec or spec-lite FITS file.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    xarray.Dataset
        One galaxy, observed frame, vacuum wavelengths on the SDSS log10
        lattice, flux and ivar in 1e-17 erg/s/cm2/A units, ``norm = 1``.
        ``mask`` is ``and_mask != 0`` or ``ivar <= 0`` or a non-finite value.
        ``flags``: REDSHIFT_WARNING if ZWARNING != 0, NOT_GALAXY if CLASS is
        not GALAXY, BAD_FLUX if any flux/ivar was NaN or inf (those pixels get
        flux 0, ivar 0 and are masked).

    Raises
    ------
    FileNotFoundError, ReadError
        Naming the file and what is missing.
    """
    path = Path(path)
    with open_fits(path) as hdul:
        if not identify_sdss(hdul):
            raise ReadError(f"{path}: not an SDSS spec file (needs HDUs COADD with "
                            f"{list(_COADD_COLUMNS)} and SPECOBJ; found {[h.name for h in hdul]})")
        coadd = hdul["COADD"].data
        specobj = hdul["SPECOBJ"].data
        missing = [c for c in _SPECOBJ_COLUMNS if c not in specobj.columns.names]
        if missing or len(specobj) != 1:
            raise ReadError(f"{path}: SPECOBJ must have one row with columns {list(_SPECOBJ_COLUMNS)} "
                            f"(rows: {len(specobj)}, missing: {missing})")
        loglam = np.asarray(coadd["loglam"], dtype=np.float64)
        flux = np.asarray(coadd["flux"], dtype=np.float32)
        ivar = np.asarray(coadd["ivar"], dtype=np.float32)
        and_mask = np.asarray(coadd["and_mask"], dtype=np.int64)
        row = specobj[0]
        meta = {
            "plate": int(row["PLATE"]), "mjd": int(row["MJD"]), "fiberid": int(row["FIBERID"]),
            "z": float(row["Z"]), "zwarn": int(row["ZWARNING"]),
            "spectype": str(row["CLASS"]).strip(),
            "subtype": str(row["SUBCLASS"]).strip() if "SUBCLASS" in specobj.columns.names else "",
            "z_err": float(row["Z_ERR"]) if "Z_ERR" in specobj.columns.names else np.nan,
            "ra": float(row["PLUG_RA"]) if "PLUG_RA" in specobj.columns.names else np.nan,
            "dec": float(row["PLUG_DEC"]) if "PLUG_DEC" in specobj.columns.names else np.nan,
        }

    index = np.rint(loglam / LOGLAM_STEP).astype(np.int64)
    if np.any(np.abs(loglam - index * LOGLAM_STEP) > 0.05 * LOGLAM_STEP) or np.any(np.diff(index) <= 0):
        raise ReadError(f"{path}: COADD loglam is not on the SDSS 1e-4 log10 lattice "
                        "(or not increasing); cannot place it without resampling")

    bad_value = ~(np.isfinite(flux) & np.isfinite(ivar))
    flags = Flag(0)
    if bad_value.any():
        flags |= Flag.BAD_FLUX
        flux = np.where(bad_value, np.float32(0), flux)
        ivar = np.where(bad_value, np.float32(0), ivar)
    ivar = np.maximum(ivar, np.float32(0))
    mask = (and_mask != 0) | (ivar <= 0) | bad_value
    if meta["zwarn"] != 0:
        flags |= Flag.REDSHIFT_WARNING
    if meta["spectype"].upper() != "GALAXY":
        flags |= Flag.NOT_GALAXY

    galaxy = f"{meta['plate']:04d}-{meta['mjd']:05d}-{meta['fiberid']:04d}"
    extra = {key: np.array([meta[key]]) for key in
             ("spectype", "subtype", "zwarn", "z_err", "plate", "mjd", "fiberid", "ra", "dec")}
    attrs = add_provenance({"survey": "sdss", "flux_unit": FLUX_UNIT}, "read_sdss", file=path.name)
    ds = make_spectra(flux[None, :], ivar[None, :], lattice_wavelength(index), np.array([galaxy]),
                      np.array([meta["z"]]), frame="observed", mask=mask[None, :],
                      flags=np.array([int(flags)], dtype=np.uint32), extra=extra, attrs=attrs)
    ds["ra"].attrs["units"] = ds["dec"].attrs["units"] = "deg"
    return ds


def common_axis(wavelengths: Sequence[np.ndarray]) -> np.ndarray:
    """The contiguous stretch of the SDSS lattice covering all ``wavelengths`` (Angstrom)."""
    lo = min(int(lattice_index(w).min()) for w in wavelengths)
    hi = max(int(lattice_index(w).max()) for w in wavelengths)
    return lattice_wavelength(np.arange(lo, hi + 1))


register("sdss", identify_sdss, read_sdss, common_axis)
