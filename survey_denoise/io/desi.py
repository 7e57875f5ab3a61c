"""DESI ``coadd-*.fits`` + ``redrock-*.fits`` pairs, in the raw schema.

A coadd holds many targets (rows of ``FIBERMAP``) observed through three
spectrograph arms; HDUs ``{B,R,Z}_WAVELENGTH``, ``_FLUX`` (1e-17
erg/s/cm2/A), ``_IVAR`` and ``_MASK`` (non-zero = bad).  The redshifts live in
HDU ``REDSHIFTS`` of the matching redrock file, matched here by ``TARGETID``
(never by row order).

Arm merge.  The arms share one linear vacuum-wavelength lattice (0.8 A), so
each arm's pixels land on lattice pixels without resampling.  Where arms
overlap (about 5760-5800 A and 7520-7620 A) the merged pixel combines the
arms' *good* pixels (mask 0, ivar > 0, finite) by inverse-variance weighting:
``ivar = sum(ivar_i)``, ``flux = sum(ivar_i * flux_i) / ivar``.  A merged
pixel is masked only when none of its contributing pixels is good (a bad
pixel in one arm is simply outweighed by a good one in the other); it then
has ``ivar = 0`` and, for inspection only, the plain mean of the arms'
finite fluxes.

Per-galaxy variables besides the schema's: ``spectype``, ``subtype``,
``zwarn``, ``z_err``, ``deltachi2`` from REDSHIFTS; ``ra``, ``dec`` (degrees,
TARGET_RA/DEC); and every scalar FIBERMAP column as ``fibermap_<lowercase>``.
Flags: REDSHIFT_WARNING (ZWARN != 0), NOT_GALAXY (SPECTYPE != GALAXY),
NO_REDSHIFT (target missing from REDSHIFTS), BAD_FLUX (NaN/inf pixels, which
are masked).

At survey scale the coadds sit in a healpix tree (``healpix/main/bright/100/
10016/coadd-main-bright-10016.fits`` with its redrock file beside it):
:func:`find_coadds` walks folders and :func:`read_file_list` reads a list of
paths; a :class:`~survey_denoise.io.desi_select.TargetSelection` given to
:func:`read_desi` drops targets before their arms are merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ..flags import Flag
from ..schema import FLUX_UNIT, add_provenance, make_spectra
from .desi_select import TargetSelection
from .registry import ReadError, open_fits, register

_LATTICE_TOLERANCE = 0.01  # Angstrom: how far a pixel may sit from the lattice


def identify_desi(hdul) -> bool:
    """True for a DESI coadd (a ``FIBERMAP`` and at least one ``*_WAVELENGTH``/``*_FLUX`` pair)."""
    names = {h.name for h in hdul}
    return "FIBERMAP" in names and bool(_arms(names))


def _arms(names: set[str]) -> list[str]:
    arms = [n[: -len("_WAVELENGTH")] for n in names if n.endswith("_WAVELENGTH")]
    return sorted((a for a in arms if {f"{a}_FLUX", f"{a}_IVAR"} <= names), key=_arm_order)


def _arm_order(arm: str) -> int:
    return "BRZ".find(arm[0]) if arm and arm[0] in "BRZ" else 99


def redrock_path(coadd: str | Path) -> Path:
    """The redrock file beside a coadd: ``coadd-X.fits`` -> ``redrock-X.fits``.

    Raises
    ------
    ReadError
        If the coadd's name does not start with ``coadd-``.
    """
    coadd = Path(coadd)
    if not coadd.name.startswith("coadd-"):
        raise ReadError(f"{coadd}: cannot guess the redrock file for a coadd not named "
                        "coadd-*.fits; give it explicitly (--redrock)")
    return coadd.with_name("redrock-" + coadd.name[len("coadd-"):])


def find_coadds(paths: Sequence[str | Path]) -> list[Path]:
    """DESI coadds under ``paths``: a file is taken as given, a directory is walked for ``coadd-*.fits``.

    Walks a healpix tree (``healpix/<survey>/<program>/<group>/<pixel>/
    coadd-<survey>-<program>-<pixel>.fits``), a tile tree, or any folder, at any
    depth.  Each coadd's redrock file is the one beside it (:func:`redrock_path`);
    a coadd without one is found here and reported as skipped by the ingest.

    Returns
    -------
    list of Path
        Given files in order (missing ones too: the ingest reports them),
        each directory's coadds sorted by path; a coadd reached twice is
        listed once.
    """
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_dir():
            found.update(dict.fromkeys(sorted(path.rglob("coadd-*.fits"))))
        else:  # a missing file is the ingest's to report, with the others read
            found[path] = None
    return list(found)


def read_file_list(path: str | Path) -> list[Path]:
    """Paths listed in a text file, one per line (blank lines and ``#`` comments ignored).

    Relative paths are relative to the list file's folder, so a list written
    beside a tree works from any directory.

    Raises
    ------
    FileNotFoundError
        If the list file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file list")
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entry = Path(line).expanduser()
            out.append(entry if entry.is_absolute() else path.parent / entry)
    return out


def lattice_step(wavelength: np.ndarray) -> float:
    """Pixel step (Angstrom) of a linear DESI wavelength array, rounded to 1e-6 A."""
    return float(np.round(np.median(np.diff(np.asarray(wavelength, dtype=np.float64))), 6))


def read_desi(coadd: str | Path, redrock: str | Path | None = None,
              selection: TargetSelection | None = None) -> xr.Dataset:
    """Read the targets of a DESI coadd, with redshifts from its redrock file.

    Parameters
    ----------
    coadd : str or Path
        ``coadd-*.fits``.
    redrock : str or Path, optional
        Matching redrock file (default: beside the coadd, ``coadd-`` replaced
        by ``redrock-``).
    selection : TargetSelection, optional
        Keep only the targets that pass it; the others' spectra are never
        merged.  Default: every target.

    Returns
    -------
    xarray.Dataset
        One row per FIBERMAP target kept (galaxy id = TARGETID, int64), arms
        merged onto one observed-frame vacuum wavelength axis (see the module
        notes), physical units, ``norm = 1``.  With a selection,
        ``attrs["selection_removed"]`` holds the targets each cut removed
        (a dict; it may remove them all, leaving zero galaxies).

    Raises
    ------
    FileNotFoundError
        If the coadd or the redrock file does not exist.
    ReadError
        If either file is not what it should be (names the file and the HDU).
    """
    coadd = Path(coadd)
    with open_fits(coadd) as hdul:
        names = {h.name for h in hdul}
        # What the file is comes first: an SDSS file is "not a DESI coadd",
        # not a coadd whose redrock file cannot be guessed.
        if not identify_desi(hdul):
            raise ReadError(f"{coadd}: not a DESI coadd (needs FIBERMAP and B/R/Z_WAVELENGTH, "
                            f"_FLUX, _IVAR; found {sorted(names)})")
        redrock = redrock_path(coadd) if redrock is None else Path(redrock)
        if not redrock.exists():
            raise FileNotFoundError(f"{coadd}: its redrock file {redrock} does not exist; "
                                    "give the right one with --redrock")
        fibermap = _table(hdul["FIBERMAP"].data)
        targetid = fibermap.pop("TARGETID", None)
        if targetid is None:
            raise ReadError(f"{coadd}: FIBERMAP has no TARGETID column")
        targetid = targetid.astype(np.int64)
        unique, counts = np.unique(targetid, return_counts=True)
        if np.any(counts > 1):
            raise ReadError(f"{coadd}: FIBERMAP repeats TARGETIDs {unique[counts > 1][:5].tolist()}")
        zinfo = _redshifts(redrock, targetid)
        removed = None
        if selection is not None:
            # Selected before the arms are touched: dropped targets cost no merge.
            keep, removed = selection.apply({"TARGETID": targetid, **fibermap}, zinfo, str(coadd))
            rows = np.flatnonzero(keep)
            targetid = targetid[rows]
            fibermap = {k: v[rows] for k, v in fibermap.items()}
            zinfo = {k: v[rows] for k, v in zinfo.items()}
        else:
            rows = None
        arms = {a: _read_arm(hdul, a, names, coadd, rows, unique.size) for a in _arms(names)}

    wavelength, flux, ivar, mask, bad_value = merge_arms(list(arms.values()), str(coadd))

    flags = np.zeros(targetid.size, np.uint32)
    flags[bad_value] |= np.uint32(Flag.BAD_FLUX)
    flags[~zinfo["found"]] |= np.uint32(Flag.NO_REDSHIFT)
    flags[zinfo["found"] & (zinfo["zwarn"] != 0)] |= np.uint32(Flag.REDSHIFT_WARNING)
    flags[zinfo["found"] & (np.char.upper(zinfo["spectype"]) != "GALAXY")] |= np.uint32(Flag.NOT_GALAXY)

    extra = {k: zinfo[k] for k in ("spectype", "subtype", "zwarn", "z_err", "deltachi2")}
    extra["ra"] = fibermap.get("TARGET_RA", np.full(targetid.size, np.nan))
    extra["dec"] = fibermap.get("TARGET_DEC", np.full(targetid.size, np.nan))
    extra.update({f"fibermap_{name.lower()}": values for name, values in fibermap.items()})
    extra_params = {} if selection is None else {"selection": selection.describe()}
    attrs = add_provenance({"survey": "desi", "flux_unit": FLUX_UNIT}, "read_desi",
                           file=coadd.name, redrock=redrock.name, **extra_params)
    if removed is not None:
        attrs["selection_removed"] = removed
    ds = make_spectra(flux, ivar, wavelength, targetid, zinfo["z"], frame="observed", mask=mask,
                      flags=flags, extra=extra, attrs=attrs)
    ds["ra"].attrs["units"] = ds["dec"].attrs["units"] = "deg"
    return ds


def _read_arm(hdul, arm: str, names: set[str], path: Path, rows: np.ndarray | None,
              n_target: int):
    """One arm's (wavelength, flux, ivar, mask), of the FIBERMAP ``rows`` only (None: all)."""
    wave = np.asarray(hdul[f"{arm}_WAVELENGTH"].data, dtype=np.float64)
    unit = str(hdul[f"{arm}_FLUX"].header.get("BUNIT", "10**-17"))
    if "-17" not in unit:
        raise ReadError(f"{path}: {arm}_FLUX is in {unit!r}, expected 1e-17 erg/(s cm2 Angstrom)")

    def image(name, dtype=None):
        data = np.atleast_2d(hdul[name].data)
        if data.shape[0] != n_target:
            raise ReadError(f"{path}: {name} has {data.shape[0]} rows, FIBERMAP {n_target}")
        data = data if rows is None else data[rows]
        return np.asarray(data, dtype=dtype)

    flux = image(f"{arm}_FLUX", np.float32)
    ivar = image(f"{arm}_IVAR", np.float32)
    if f"{arm}_MASK" in names:
        mask = image(f"{arm}_MASK") != 0
    else:
        mask = np.zeros(flux.shape, bool)
    if not (flux.shape == ivar.shape == mask.shape and flux.shape[1] == wave.size):
        raise ReadError(f"{path}: arm {arm} arrays disagree in shape (wavelength {wave.shape}, "
                        f"flux {flux.shape}, ivar {ivar.shape}, mask {mask.shape})")
    return wave, flux, ivar, mask


def merge_arms(arms: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
               where: str = "coadd"):
    """Merge spectrograph arms sharing a linear wavelength lattice, without resampling.

    Parameters
    ----------
    arms : sequence of (wavelength, flux, ivar, mask)
        Per arm: wavelengths (n_pix,) in Angstrom, and flux, ivar, mask
        (n_target, n_pix); mask non-zero/True = bad.
    where : str
        Name used in error messages.

    Returns
    -------
    wavelength : ndarray (n_merged,)
        Contiguous lattice from the bluest to the reddest arm pixel.
    flux, ivar : ndarray (n_target, n_merged), float32
        Inverse-variance-weighted mean and summed ivar of the good arm pixels.
    mask : ndarray of bool
        True where no arm has a good pixel.
    bad_value : ndarray of bool (n_target,)
        Targets with any NaN/inf flux or ivar in any arm.
    """
    step = lattice_step(arms[0][0])
    indices = []
    for wave, *_ in arms:
        if lattice_step(wave) != step:
            raise ReadError(f"{where}: arms have different pixel steps "
                            f"({[lattice_step(a[0]) for a in arms]} A); cannot merge without resampling")
        idx = np.rint(wave / step).astype(np.int64)
        if np.any(np.abs(wave - idx * step) > _LATTICE_TOLERANCE) or np.any(np.diff(idx) != 1):
            raise ReadError(f"{where}: arm wavelengths are not on a common {step} A lattice")
        indices.append(idx)
    lo = min(int(i[0]) for i in indices)
    hi = max(int(i[-1]) for i in indices)
    n_target = arms[0][1].shape[0]
    shape = (n_target, hi - lo + 1)
    sum_w = np.zeros(shape)
    sum_wf = np.zeros(shape)
    sum_f = np.zeros(shape)  # plain sums, for pixels with no good arm pixel
    n_f = np.zeros(shape)
    bad_value = np.zeros(n_target, bool)
    for idx, (_, flux, ivar, mask) in zip(indices, arms, strict=True):
        # A slice (each arm is contiguous on the lattice): += works in place,
        # where fancy indexing would copy out and back every accumulator.
        cols = slice(int(idx[0]) - lo, int(idx[-1]) - lo + 1)
        finite_f = np.isfinite(flux)
        finite = finite_f & np.isfinite(ivar)
        bad_value |= ~finite.all(axis=1)
        good = finite & (ivar > 0) & (np.asarray(mask) == 0)
        w = np.where(good, ivar, 0.0)
        sum_w[:, cols] += w
        sum_wf[:, cols] += w * np.where(good, flux, 0.0)
        sum_f[:, cols] += np.where(finite_f, flux, 0.0)
        n_f[:, cols] += finite_f
    has_good = sum_w > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.where(has_good, sum_wf / np.where(has_good, sum_w, 1.0),
                        np.where(n_f > 0, sum_f / np.maximum(n_f, 1), 0.0))
    wavelength = np.arange(lo, hi + 1) * step
    return (wavelength, flux.astype(np.float32), sum_w.astype(np.float32), ~has_good, bad_value)


def _table(data) -> dict[str, np.ndarray]:
    """Scalar columns of a FITS table as native-endian numpy arrays (strings stripped)."""
    out = {}
    for name in data.columns.names:
        values = np.asarray(data[name])
        if values.ndim != 1:
            continue  # vector columns do not fit a per-galaxy variable
        if values.dtype.kind in "SU":
            values = np.char.strip(values.astype(str))
        else:
            values = values.astype(values.dtype.newbyteorder("="))
        out[name] = values
    return out


def _redshifts(redrock: Path, targetid: np.ndarray) -> dict[str, np.ndarray]:
    with open_fits(redrock) as hdul:
        if "REDSHIFTS" not in hdul:
            raise ReadError(f"{redrock}: not a redrock file (no REDSHIFTS HDU; found "
                            f"{[h.name for h in hdul]})")
        table = _table(hdul["REDSHIFTS"].data)
    for col in ("TARGETID", "Z", "ZWARN", "SPECTYPE"):
        if col not in table:
            raise ReadError(f"{redrock}: REDSHIFTS has no {col} column")
    rr_id = table["TARGETID"].astype(np.int64)
    order = {int(t): i for i, t in enumerate(rr_id)}  # first row wins if repeated
    rows = np.array([order.get(int(t), -1) for t in targetid], dtype=np.int64)
    found = rows >= 0
    take = np.where(found, rows, 0)

    def column(name, fill, dtype):
        if name not in table or rr_id.size == 0:
            return np.full(targetid.size, fill, dtype=dtype)
        return np.where(found, table[name][take].astype(dtype), fill)

    return {
        "found": found,
        "z": column("Z", np.nan, np.float64),
        "z_err": column("ZERR", np.nan, np.float64),
        "zwarn": column("ZWARN", -1, np.int64),
        "deltachi2": column("DELTACHI2", np.nan, np.float64),
        "spectype": column("SPECTYPE", "", str),
        "subtype": column("SUBTYPE", "", str),
    }


def common_axis(wavelengths: Sequence[np.ndarray]) -> np.ndarray:
    """The contiguous stretch of the shared linear lattice covering all ``wavelengths``."""
    step = lattice_step(wavelengths[0])
    lo = min(int(np.rint(w[0] / step)) for w in wavelengths)
    hi = max(int(np.rint(w[-1] / step)) for w in wavelengths)
    return np.arange(lo, hi + 1) * step


register("desi", identify_desi, read_desi, common_axis)
