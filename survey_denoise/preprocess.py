"""Pre-processing: observed-frame spectra -> rest frame, on the grid, normalised.

Three lazy, chunk-wise stages (``Dataset -> Dataset``), each a thin
:func:`xarray.apply_ufunc` wrapper around a numpy kernel of this module:

:func:`to_rest_frame`
    Shift every spectrum to its rest frame by ``1 + z`` and rebin it onto
    the grid with :func:`survey_denoise.resample.rebin` (flux conserving,
    inverse variances propagated, bad pixels excluded, uncovered grid pixels
    masked with ``ivar = 0``, never extrapolated).
:func:`resample`
    Rebin rest-frame spectra from one grid onto another (no shift).
:func:`normalise`
    Divide each spectrum by a recorded convention (``l2``, ``sum``,
    ``median``); ``norm`` is multiplied by the same factor so that
    ``physical = flux * norm`` always holds.

:func:`preprocess` chains the first and the last.

Flux-density convention.  A raw spectrum is a flux density per *observed*
Angstrom.  In the rest frame it is stored per *rest* Angstrom:
``f_rest(lambda) = (1 + z) * f_obs(lambda * (1 + z))`` (and ``ivar / (1 + z)**2``),
so that integrating ``flux * norm`` over rest-frame Angstrom gives the
observed line flux in 1e-17 erg/s/cm2, the quantity line catalogues report.
The same convention is used by the mock survey's rest-frame output.

Flags (:mod:`survey_denoise.flags`), ORed into ``flags`` and never cleared:

================== ==========================================================
BAD_FLUX           some flux or ivar value is NaN/inf (those pixels are masked)
NO_IVAR            no pixel with ``ivar > 0`` that is not masked
NO_REDSHIFT        ``z`` missing or not finite
NEGATIVE_REDSHIFT  ``z < 0``
LOW_COVERAGE       the spectrum covers none of the catalogue's lines (or, with
                   the explicit cut ``min_coverage``, fewer than that
                   fraction of the grid pixels are usable)
PARTIAL_COVERAGE   the grid reaches beyond the spectrum's good wavelength range
BAD_NORM           the normalisation factor is zero, negative or not finite
================== ==========================================================

Coverage is data, not a reason to drop.  A spectrum that covers only part
of the grid (DESI above z ~ 0.24, where 9824 A observed falls below 7900 A
rest) keeps its row and its flux; the grid pixels it does not cover are
masked with ``ivar = 0``, and ``lines_covered`` records which of the
catalogue's lines it covers (the window rule of
:mod:`survey_denoise.line_windows`: the line, its fitting window and
continuum on both sides).  Only a spectrum that covers none of them is
dropped (LOW_COVERAGE): it has nothing to measure.  The fraction of usable
grid pixels is kept as ``coverage``; ``min_coverage`` (default None, no
cut) adds a pixel-fraction cut for users who want one, e.g. for training a
de-noiser on fully covered spectra only.

A spectrum with any :data:`~survey_denoise.flags.DROP` bit (including bits
set by a reader) leaves with ``flux = 0``, ``ivar = 0``, ``mask = True`` but
keeps its row and its per-galaxy variables; a bad spectrum never stops a
chunk.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .flags import DROP, Flag
from .grid import GRID, Grid
from .line_windows import covered_lines, lines_covered_attrs, to_bits
from .resample import DEFAULT_MIN_FRACTION, edges_from_centres, good_pixels, rebin
from .schema import FLUX_UNIT, NORMS, add_provenance, validate

NORMALISED_UNIT = "1"
"""Units of a normalised flux and its ivar: dimensionless (CF and astropy spelling)."""

DEFAULT_MIN_COVERAGE: float | None = None
"""Least fraction of grid pixels a spectrum must cover to be kept: None, no pixel-fraction cut.

A spectrum is dropped only when it covers none of the catalogue's lines
(see the module notes).  The former default, 0.9, dropped every DESI
galaxy above z ~ 0.34 (sooner where pixels are masked) although its
strong lines were all observed."""

METHODS = tuple(m for m in NORMS if m != "none")
"""Normalisation conventions :func:`normalise` offers."""

_SPECTRAL = ("flux", "ivar", "mask")
_DROP = np.uint32(DROP)


# ----------------------------------------------------------------- kernels


def rest_frame_kernel(
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    z: np.ndarray,
    flags: np.ndarray,
    *,
    edges_in: np.ndarray,
    edges_out: np.ndarray,
    shift: bool = True,
    min_coverage: float | None = DEFAULT_MIN_COVERAGE,
    min_pixel_coverage: float = DEFAULT_MIN_FRACTION,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rebin one chunk of spectra onto ``edges_out``, shifting to the rest frame.

    Parameters
    ----------
    flux, ivar, mask : ndarray, shape (n_galaxy, n_in)
        Flux density (1e-17 erg/s/cm2/A, or normalised), inverse variance, bad pixels.
    z : ndarray, shape (n_galaxy,)
        Redshifts (used only when ``shift``).
    flags : ndarray of uint32, shape (n_galaxy,)
        Flags so far.
    edges_in : ndarray, shape (n_in + 1,)
        Input pixel edges, Angstrom (observed frame when ``shift``).
    edges_out : ndarray, shape (n_out + 1,)
        Grid pixel edges, Angstrom (rest frame).
    shift : bool
        Divide the input wavelengths by ``1 + z`` and multiply the flux density
        by ``1 + z`` (observed -> rest); False for rest-frame input.
    min_coverage : float or None
        Least fraction of grid pixels left usable for the spectrum to be kept
        (None: no such cut; a spectrum covering no catalogue line is dropped either way).
    min_pixel_coverage : float
        Least fraction of a grid pixel good input must cover for it to be usable.

    Returns
    -------
    flux, ivar : ndarray of float32, shape (n_galaxy, n_out)
    mask : ndarray of bool, shape (n_galaxy, n_out)
    flags : ndarray of uint32, shape (n_galaxy,)
    coverage : ndarray of float32, shape (n_galaxy,)
        Fraction of grid pixels usable.
    lines_covered : ndarray of uint32, shape (n_galaxy,)
        Catalogue lines covered, as bits (:mod:`survey_denoise.line_windows`); 0 when dropped.
    """
    n_gal, n_out = flux.shape[0], edges_out.size - 1
    flags = np.array(flags, dtype=np.uint32, copy=True).reshape(n_gal)
    z = np.asarray(z, dtype=np.float64).reshape(n_gal)
    mask = np.asarray(mask, dtype=bool)
    finite = np.isfinite(flux) & np.isfinite(ivar)
    flags[~finite.all(axis=1)] |= np.uint32(Flag.BAD_FLUX)
    good = good_pixels(flux, ivar, mask)
    has_good = good.any(axis=1)
    flags[~has_good] |= np.uint32(Flag.NO_IVAR)
    if shift:
        flags[~np.isfinite(z)] |= np.uint32(Flag.NO_REDSHIFT)
        flags[np.isfinite(z) & (z < 0)] |= np.uint32(Flag.NEGATIVE_REDSHIFT)

    out_flux = np.zeros((n_gal, n_out), np.float32)
    out_ivar = np.zeros((n_gal, n_out), np.float32)
    out_mask = np.ones((n_gal, n_out), bool)
    coverage = np.zeros(n_gal, np.float32)
    covered = np.zeros(n_gal, np.uint32)
    ok = (flags & _DROP) == 0
    if ok.any():
        one_plus_z = (1.0 + z[ok]) if shift else np.ones(int(ok.sum()))
        res = rebin(flux[ok], ivar[ok], ~good[ok], edges_in, edges_out, scale=1.0 / one_plus_z,
                    min_fraction=min_pixel_coverage)
        # Per observed Angstrom -> per rest Angstrom (see the module notes).
        out_flux[ok] = res.flux * one_plus_z[:, None]
        out_ivar[ok] = res.ivar / one_plus_z[:, None] ** 2
        out_mask[ok] = res.mask
        coverage[ok] = 1.0 - res.mask.mean(axis=1)
        rows = np.flatnonzero(ok)
        centres = np.sqrt(edges_out[1:] * edges_out[:-1])
        covered[ok] = to_bits(covered_lines(centres, ~res.mask & (res.ivar > 0)))
        low = covered[ok] == 0
        if min_coverage is not None:
            low |= coverage[ok] < min_coverage
        flags[rows[low]] |= np.uint32(Flag.LOW_COVERAGE)
        # Good wavelength range of each spectrum, in the output frame.
        first = np.argmax(good[ok], axis=1)
        last = good.shape[1] - 1 - np.argmax(good[ok][:, ::-1], axis=1)
        lo, hi = edges_in[first] / one_plus_z, edges_in[last + 1] / one_plus_z
        partial = (lo > edges_out[0]) | (hi < edges_out[-1])
        flags[rows[partial]] |= np.uint32(Flag.PARTIAL_COVERAGE)
    _blank_dropped(out_flux, out_ivar, out_mask, flags)
    covered[(flags & _DROP) != 0] = 0
    return out_flux, out_ivar, out_mask, flags, coverage, covered


def norm_factor(flux: np.ndarray, good: np.ndarray, method: str) -> np.ndarray:
    """Normalisation factor of each row over its good pixels.

    ``l2``: the Euclidean norm (unit L2 norm afterwards; the convention that
    reproduces the paper's PCA tables); ``sum``: the sum of the pixel values
    (total flux unity, in pixel units); ``median``: the median pixel value.
    Rows without good pixels get NaN.
    """
    if method not in METHODS:
        raise ValueError(f"unknown normalisation {method!r}; use one of {METHODS}")
    good = good & np.isfinite(flux)
    flux = np.where(good, np.asarray(flux, dtype=np.float64), 0.0)
    if method == "l2":
        k = np.sqrt(np.sum(flux * flux, axis=1))
    elif method == "sum":
        k = np.sum(flux, axis=1)
    else:
        k = np.full(flux.shape[0], np.nan)
        some = good.any(axis=1)
        # Only rows with a good pixel: an all-NaN row would warn, and silencing
        # warnings is not thread-safe under Dask's threaded workers.
        k[some] = np.nanmedian(np.where(good[some], flux[some], np.nan), axis=1)
    return np.where(good.any(axis=1), k, np.nan)


def normalise_kernel(
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    norm: np.ndarray,
    flags: np.ndarray,
    *,
    method: str = "l2",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normalise one chunk: ``flux / k``, ``ivar * k**2``, ``norm * k``.

    Rows already dropped are left as they are; a row whose factor is not
    positive and finite is flagged BAD_NORM and dropped.

    Returns
    -------
    flux, ivar : ndarray of float32
    mask : ndarray of bool
    norm : ndarray of float64
    flags : ndarray of uint32
    """
    n_gal = flux.shape[0]
    flags = np.array(flags, dtype=np.uint32, copy=True).reshape(n_gal)
    norm = np.array(norm, dtype=np.float64, copy=True).reshape(n_gal)
    mask = np.array(mask, dtype=bool, copy=True)
    good = good_pixels(flux, ivar, mask)
    k = norm_factor(flux, good, method)
    ok = (flags & _DROP) == 0
    bad = ok & ~(np.isfinite(k) & (k > 0) & np.isfinite(k * norm))
    flags[bad] |= np.uint32(Flag.BAD_NORM)
    ok &= ~bad
    k = np.where(ok, k, 1.0)
    out_flux = (np.where(good, flux, 0.0) / k[:, None]).astype(np.float32)
    out_ivar = (np.where(good, ivar, 0.0) * (k * k)[:, None]).astype(np.float32)
    mask |= ~good
    norm[ok] *= k[ok]
    _blank_dropped(out_flux, out_ivar, mask, flags)
    return out_flux, out_ivar, mask, norm, flags


def _blank_dropped(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, flags: np.ndarray) -> None:
    dropped = (flags & _DROP) != 0
    flux[dropped] = 0.0
    ivar[dropped] = 0.0
    mask[dropped] = True


# ----------------------------------------------------------------- stages


def to_rest_frame(ds: xr.Dataset, *, grid: Grid = GRID, min_coverage: float | None = DEFAULT_MIN_COVERAGE,
                  min_pixel_coverage: float = DEFAULT_MIN_FRACTION) -> xr.Dataset:
    """Observed-frame spectra -> rest frame on ``grid`` (lazy, chunk-wise).

    Parameters
    ----------
    ds : xarray.Dataset
        Raw spectra (observed frame), numpy- or Dask-backed.
    grid : Grid
        Rest-frame grid.
    min_coverage : float, optional
        Least fraction of grid pixels a spectrum must cover (else LOW_COVERAGE,
        dropped); default None, no such cut.  A spectrum covering none of the
        catalogue's lines is dropped either way.
    min_pixel_coverage : float
        Least fraction of a grid pixel that good pixels must cover for it to be usable.

    Returns
    -------
    xarray.Dataset
        Rest-frame spectra per rest Angstrom (see the module notes), float32,
        with per-galaxy ``coverage`` (fraction of grid pixels usable),
        ``lines_covered`` (bits of the catalogue lines covered) and flags.
    """
    validate(ds, frame="observed", where="to_rest_frame")
    out = _rebin_stage(ds, grid, shift=True, min_coverage=min_coverage,
                       min_pixel_coverage=min_pixel_coverage)
    out.attrs = add_provenance(out.attrs, "to_rest_frame", grid=grid.to_dict(),
                               min_coverage=min_coverage, min_pixel_coverage=min_pixel_coverage)
    return out


def resample(ds: xr.Dataset, *, grid: Grid = GRID, min_coverage: float | None = DEFAULT_MIN_COVERAGE,
             min_pixel_coverage: float = DEFAULT_MIN_FRACTION) -> xr.Dataset:
    """Rest-frame spectra on one grid -> ``grid`` (lazy, chunk-wise, no shift).

    Same parameters as :func:`to_rest_frame`; the input must be rest frame.
    """
    validate(ds, frame="rest", where="resample")
    out = _rebin_stage(ds, grid, shift=False, min_coverage=min_coverage,
                       min_pixel_coverage=min_pixel_coverage)
    out.attrs = add_provenance(out.attrs, "resample", grid=grid.to_dict(),
                               min_coverage=min_coverage, min_pixel_coverage=min_pixel_coverage)
    return out


def normalise(ds: xr.Dataset, method: str = "l2") -> xr.Dataset:
    """Normalise every spectrum by ``method`` (``l2``, ``sum`` or ``median``); lazy.

    ``norm`` is multiplied by the factor, so ``flux * norm`` stays the
    physical flux density; ``attrs["norm_convention"]`` records ``method``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown normalisation {method!r}; use one of {', '.join(METHODS)}")
    validate(ds, where="normalise")
    per_gal = _aligned(ds, ("norm", "flags"))
    flux, ivar, mask, norm, flags = xr.apply_ufunc(
        normalise_kernel, ds["flux"], ds["ivar"], ds["mask"], per_gal["norm"], per_gal["flags"],
        input_core_dims=[["wavelength"]] * 3 + [[], []],
        output_core_dims=[["wavelength"]] * 3 + [[], []],
        dask="parallelized", kwargs={"method": method},
        output_dtypes=[np.float32, np.float32, bool, np.float64, np.uint32])
    out = ds.copy()
    for name, values in (("flux", flux), ("ivar", ivar), ("mask", mask), ("norm", norm), ("flags", flags)):
        out[name] = values.transpose(*ds[name].dims).assign_attrs(ds[name].attrs)
    # A normalised flux is dimensionless; the physical unit moves to `norm`.
    described = f"normalised ({method}); flux * norm is in {FLUX_UNIT}"
    out["flux"].attrs.update(units=NORMALISED_UNIT, normalisation=described)
    out["ivar"].attrs.update(units=NORMALISED_UNIT)
    out["norm"].attrs.update(units=FLUX_UNIT)
    out.attrs = add_provenance({**ds.attrs, "norm_convention": method, "flux_unit": NORMALISED_UNIT},
                               "normalise", method=method)
    return out


def preprocess(ds: xr.Dataset, *, grid: Grid = GRID, norm: str = "l2",
               min_coverage: float | None = DEFAULT_MIN_COVERAGE) -> xr.Dataset:
    """Raw observed-frame spectra -> rest frame, on ``grid``, normalised (lazy).

    Parameters
    ----------
    ds : xarray.Dataset
        Raw spectra (observed frame, physical units), e.g. from
        :func:`~survey_denoise.io.store.open_store`.
    grid : Grid
        Rest-frame grid (default: the paper's).
    norm : {"l2", "sum", "median"}
        Normalisation convention.
    min_coverage : float, optional
        Least fraction of grid pixels a spectrum must cover; default None (no
        pixel-fraction cut: only a spectrum covering none of the catalogue's
        lines is dropped).

    Returns
    -------
    xarray.Dataset
        Schema-valid rest-frame dataset, chunked like ``ds`` along galaxy;
        nothing is computed.
    """
    _check_min_coverage(min_coverage)
    return normalise(to_rest_frame(ds, grid=grid, min_coverage=min_coverage), norm)


def _aligned(ds: xr.Dataset, names: tuple[str, ...]) -> dict[str, xr.DataArray]:
    """Per-galaxy variables chunked like ``flux`` (so outputs keep the spectra's chunks)."""
    chunks = ds["flux"].chunks
    if chunks is None:
        return {n: ds[n] for n in names}
    return {n: ds[n].chunk({"galaxy": chunks[0]}) for n in names}


def _check_min_coverage(min_coverage: float | None) -> None:
    if min_coverage is not None and not 0 <= min_coverage <= 1:
        raise ValueError(f"min_coverage must be between 0 and 1 (or None), got {min_coverage}")


def _rebin_stage(ds: xr.Dataset, grid: Grid, *, shift: bool, min_coverage: float | None,
                 min_pixel_coverage: float) -> xr.Dataset:
    _check_min_coverage(min_coverage)
    per_gal = _aligned(ds, ("z", "flags"))
    kwargs = {"edges_in": edges_from_centres(ds["wavelength"].values), "edges_out": np.asarray(grid.edges),
              "shift": shift, "min_coverage": min_coverage, "min_pixel_coverage": min_pixel_coverage}
    flux, ivar, mask, flags, coverage, covered = xr.apply_ufunc(
        rest_frame_kernel, ds["flux"], ds["ivar"], ds["mask"], per_gal["z"], per_gal["flags"],
        input_core_dims=[["wavelength"]] * 3 + [[], []],
        output_core_dims=[["wavelength"]] * 3 + [[], [], []],
        exclude_dims={"wavelength"}, dask="parallelized", kwargs=kwargs,
        output_dtypes=[np.float32, np.float32, bool, np.uint32, np.float32, np.uint32],
        dask_gufunc_kwargs={"output_sizes": {"wavelength": grid.npix}})
    wave = xr.DataArray(np.array(grid.wavelength), dims="wavelength",
                        attrs={"units": "Angstrom", "frame": "rest", "medium": "vacuum"})
    # Per-galaxy variables ride along; other spectral variables cannot be rebinned blindly.
    keep = {n: v for n, v in ds.data_vars.items()
            if v.dims == ("galaxy",) and n not in ("flags",)}
    unit = FLUX_UNIT if ds.attrs.get("norm_convention", "none") == "none" else NORMALISED_UNIT
    out = xr.Dataset(
        {**keep,
         "flux": flux.transpose("galaxy", "wavelength").assign_attrs(
             units=unit, density="per rest-frame Angstrom: (1 + z) x observed flux density"),
         "ivar": ivar.transpose("galaxy", "wavelength").assign_attrs(units=f"({unit})-2"),
         "mask": mask.transpose("galaxy", "wavelength"),
         "flags": flags, "coverage": coverage.assign_attrs(
             long_name="fraction of grid pixels usable"),
         "lines_covered": covered.assign_attrs(lines_covered_attrs())},
        coords={"galaxy": ds["galaxy"], "wavelength": wave},
        attrs={**ds.attrs, "grid": json.dumps(grid.to_dict())})
    return validate(out, frame="rest", grid=grid, where="to_rest_frame")
