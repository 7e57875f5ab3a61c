"""Noise models and ``degrade``: make clean rest-frame spectra noisy, reproducibly.

:class:`UniformNoise`
    Gaussian noise of one sigma in normalised flux units at every pixel (the
    paper: sigma = 0.04 on unit-normalised spectra).
:class:`DesiNoise`
    Wavelength-dependent Gaussian noise in physical units (1e-17
    erg/s/cm2/A) in the *observed* frame, from the median noise of real
    DESI coadds (``data/desi_noise.ecsv``, rebuilt by
    ``python -m survey_denoise.noise build-desi COADD...``).

:func:`degrade` adds either to a rest-frame dataset, optionally after moving
every galaxy to ``z_target`` (the paper's DESI-like test: z = 0.1).

Moving a galaxy from z to z_target.  For a flux density per *rest* Angstrom
(the convention of :mod:`survey_denoise.preprocess`),
``f_rest = L_lambda / (4 pi d_L(z)^2)``, so

    f_rest(z_target) = f_rest(z) * (d_L(z) / d_L(z_target))**2

with no ``(1 + z)`` factor; line fluxes scale the same way.  (Per
*observed* Angstrom the factor is ``(d_L(z) / d_L(z_target))**2 * (1 + z) /
(1 + z_target)``, because ``f_obs = f_rest / (1 + z)``.)  The spectrum is
then placed at ``lambda_obs = lambda_rest * (1 + z_target)``, the DESI noise
of those observed pixels is drawn in observed units (sigma per observed
Angstrom, averaged over the DESI pixels a grid pixel spans, so
``sigma / sqrt(n)``), converted back to per rest Angstrom (times
``1 + z_target``) and added.  ``z`` becomes ``z_target``; the old value is
kept as ``z_original`` and the factor as ``dimming``.  Distances come from an
astropy cosmology (default Planck18), recorded in ``attrs["cosmology"]``.

Inverse variance of the result.  By default (``combine=False``) the input is
treated as noise-free truth, as the paper does: ``ivar`` describes the added
noise only (``1 / sigma**2``).  With ``combine=True`` the input's own
variance (dimmed with the flux) is added: ``ivar = 1 / (var_in + sigma**2)``.

Re-normalisation.  As in the paper, the noisy spectrum is normalised again
with the dataset's convention (``attrs["norm_convention"]``); ``norm`` is
updated so that ``flux * norm`` is still the physical flux density.

Reproducibility.  Every draw comes from :func:`survey_denoise.rng.standard_normal`,
one stream per (seed, model, galaxy id): the same seed gives the same noise
for a galaxy whatever the chunking, the number of workers or the order.
Masked pixels stay masked (flux 0, ivar 0); dropped spectra stay zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import xarray as xr

from .flags import DROP, Flag
from .grid import Grid
from .preprocess import norm_factor
from .resample import edges_from_centres, good_pixels, rebin
from .rng import standard_normal
from .schema import FLUX_UNIT, add_provenance, validate

DESI_CURVE = Path(__file__).parent / "data" / "desi_noise.ecsv"
"""The shipped DESI noise curve."""

_DROP = np.uint32(DROP)


@dataclass(frozen=True)
class UniformNoise:
    """Gaussian noise of ``sigma`` normalised flux units at every pixel.

    Parameters
    ----------
    sigma : float
        Standard deviation in normalised units (paper: 0.04 on unit-L2 spectra).
    combine : bool
        Add the input's own variance to the output's (default: the added noise only).
    renormalise : bool
        Normalise again after adding the noise (the paper does).
    """

    sigma: float = 0.04
    combine: bool = False
    renormalise: bool = True
    purpose = "noise-uniform"
    survey = None  # simulates no survey's observations: the store keeps its own

    def __post_init__(self) -> None:
        if not (np.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"UniformNoise needs sigma > 0, got {self.sigma}")

    def describe(self) -> dict:
        """JSON-ready description, stored in ``attrs["noise"]``."""
        return {"model": "uniform", "sigma": self.sigma, "units": "normalised flux",
                "combine": self.combine, "renormalise": self.renormalise}


@dataclass(frozen=True)
class DesiNoise:
    """DESI-like noise: sigma(lambda_obs) in 1e-17 erg/s/cm2/A per DESI pixel.

    Parameters
    ----------
    curve : str or Path, optional
        ECSV file with ``wavelength`` (observed, A) and ``sigma_median``
        columns (default: the shipped curve, :data:`DESI_CURVE`).
    scale : float
        Multiplies sigma (e.g. 2 for a quarter of the exposure time).
    exptime : float, optional
        Exposure time to simulate, seconds (DESI's bright-time survey, BGS,
        aims at 180 s of effective time).  The curve's sigma is multiplied by
        ``sqrt(curve_exptime / exptime)``, the sky-limited scaling, where
        ``curve_exptime`` is the median coadd exposure time of the targets
        the curve was built from (``meta["exptime"]``).  Default: the curve's
        own depth.  The shipped curve comes from two deep coadds (11,000 and
        24,000 s), some 100 times BGS depth.
    combine, renormalise : bool
        As for :class:`UniformNoise`.
    """

    curve: str | Path = DESI_CURVE
    scale: float = 1.0
    exptime: float | None = None
    combine: bool = False
    renormalise: bool = True
    purpose = "noise-desi"
    survey = "desi"  # the store now stands for DESI observations
    _table: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"DesiNoise needs scale > 0, got {self.scale}")
        if self.exptime is not None and not (np.isfinite(self.exptime) and self.exptime > 0):
            raise ValueError(f"DesiNoise needs exptime > 0 seconds, got {self.exptime}")

    @property
    def depth_factor(self) -> float:
        """Sigma multiplier for ``exptime``: ``scale * sqrt(curve_exptime / exptime)``."""
        if self.exptime is None:
            return self.scale
        curve_exptime = self.table.meta.get("exptime")
        if curve_exptime is None:
            raise ValueError(f"{self.curve}: the noise curve records no exposure time (meta 'exptime'); "
                             "rebuild it with 'python -m survey_denoise.noise build-desi' or use scale")
        return self.scale * float(np.sqrt(float(curve_exptime) / self.exptime))

    @classmethod
    def from_coadds(cls, coadds: Sequence[str | Path], out: str | Path | None = None, **kwargs) -> DesiNoise:
        """Derive the curve from DESI coadds (redrock files beside them), optionally saving it.

        Without ``out`` the curve lives in memory only.
        """
        table = build_desi_curve(coadds)
        if out is not None:
            write_curve(table, out)
            return cls(curve=Path(out), **kwargs)
        return cls(curve="<memory>", _table=table, **kwargs)

    @cached_property
    def table(self):
        """The curve as an :class:`astropy.table.Table`."""
        if self._table is not None:
            return self._table
        from astropy.table import Table

        path = Path(self.curve)
        if not path.exists():
            raise FileNotFoundError(f"{path}: DESI noise curve not found; build one with "
                                    "'python -m survey_denoise.noise build-desi COADD...'")
        return Table.read(path, format="ascii.ecsv")

    @cached_property
    def _edges_and_ivar(self) -> tuple[np.ndarray, np.ndarray]:
        wave = np.asarray(self.table["wavelength"], dtype=np.float64)
        sigma = np.asarray(self.table["sigma_median"], dtype=np.float64) * self.depth_factor
        return edges_from_centres(wave), 1.0 / sigma**2

    def sigma_rest(self, rest_edges: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Noise sigma per rest-frame pixel, in 1e-17 erg/s/cm2 per *rest* Angstrom.

        Parameters
        ----------
        rest_edges : ndarray, shape (npix + 1,)
            Rest-frame pixel edges, Angstrom.
        z : ndarray, shape (n,)
            Redshift at which each spectrum is observed.

        Returns
        -------
        ndarray, shape (n, npix)
            NaN where the DESI range does not cover a pixel.
        """
        z = np.atleast_1d(np.asarray(z, dtype=np.float64))
        edges, ivar = self._edges_and_ivar
        # One rebin per distinct redshift: with z_target every galaxy of a
        # chunk shares one curve, and the rebin was most of degrade's time.
        zu, inverse = np.unique(z, return_inverse=True)
        n = zu.size
        # Observed pixel = rest pixel * (1 + z): rebin the DESI variance onto
        # it (the variance of the mean of the DESI pixels it spans).
        res = rebin(np.zeros((n, ivar.size)), np.broadcast_to(ivar, (n, ivar.size)), None, edges,
                    np.asarray(rest_edges, dtype=np.float64), scale=1.0 / (1.0 + zu))
        with np.errstate(divide="ignore"):
            sigma_obs = np.where(res.mask, np.nan, 1.0 / np.sqrt(np.where(res.mask, 1.0, res.ivar)))
        return (sigma_obs * (1.0 + zu)[:, None])[inverse.reshape(-1)]

    def describe(self) -> dict:
        """JSON-ready description, stored in ``attrs["noise"]``."""
        meta = dict(self.table.meta)
        return {"model": "desi", "curve": Path(str(self.curve)).name, "scale": self.scale,
                "exptime": self.exptime, "curve_exptime": meta.get("exptime"),
                "sigma_factor": self.depth_factor,
                "units": FLUX_UNIT + " (observed frame)", "curve_version": meta.get("version"),
                "curve_sources": meta.get("sources"), "combine": self.combine,
                "renormalise": self.renormalise}


# ----------------------------------------------------------------- the curve


def build_desi_curve(coadds: Sequence[str | Path]):
    """Median noise of DESI coadds per observed pixel, as an astropy Table.

    Each coadd is read with :func:`survey_denoise.io.desi.read_desi` (arms
    merged by inverse-variance weighting); sigma = 1 / sqrt(ivar) of every
    good pixel (mask 0, ivar > 0) of every target, and per wavelength the
    median and 16th / 84th percentiles over the targets.  Wavelengths that no
    target covers are filled by linear interpolation (``n_spectra`` = 0).
    """
    from astropy.table import Table

    from .io.desi import read_desi

    if not coadds:
        raise ValueError("build_desi_curve needs at least one coadd")
    reads = [read_desi(c) for c in coadds]
    wave = reads[0]["wavelength"].values
    for ds in reads[1:]:
        wave = np.union1d(wave, ds["wavelength"].values)
    rows = []
    for ds in reads:
        block = np.full((ds.sizes["galaxy"], wave.size), np.nan)
        good = good_pixels(ds["flux"].values, ds["ivar"].values, ds["mask"].values)
        sigma = np.where(good, 1.0 / np.sqrt(np.where(good, ds["ivar"].values, 1.0)), np.nan)
        block[:, np.searchsorted(wave, ds["wavelength"].values)] = sigma
        rows.append(block)
    sigma = np.vstack(rows)
    n = np.sum(np.isfinite(sigma), axis=0)
    stats = {}
    covered = n > 0
    for name, q in (("sigma_median", 50), ("sigma_p16", 16), ("sigma_p84", 84)):
        values = np.full(wave.size, np.nan)
        values[covered] = np.nanpercentile(sigma[:, covered], q, axis=0)
        values[~covered] = np.interp(wave[~covered], wave[covered], values[covered])
        stats[name] = np.float32(values)
    table = Table({"wavelength": wave, **stats, "n_spectra": n.astype(np.int32)})
    table["wavelength"].unit = "Angstrom"
    table["wavelength"].description = "observed-frame vacuum wavelength (DESI coadd pixel centre)"
    for name, what in (("sigma_median", "median"), ("sigma_p16", "16th percentile"),
                       ("sigma_p84", "84th percentile")):
        table[name].unit = "1e-17 erg / (s cm2 Angstrom)"
        table[name].description = f"{what} over targets of 1/sqrt(ivar) per DESI pixel"
    table["n_spectra"].description = "targets with a good pixel here (0: interpolated)"
    table.meta.update({
        "title": "DESI-like noise per observed pixel for survey_denoise.noise.DesiNoise",
        "version": 1,
        "sources": ["DESI Collaboration spectra (https://data.desi.lbl.gov), as the coadd and redrock "
                    "test files of fastspecfit (github.com/desihub/fastspecfit, test/data):"]
                   + [f"{Path(c).name} ({int(ds.sizes['galaxy'])} target(s), redshifts from the redrock file "
                    "beside it)" for c, ds in zip(coadds, reads, strict=True)],
        "method": "sigma = 1/sqrt(ivar) of good pixels of every target (B, R, Z arms merged by "
                  "inverse-variance weighting, survey_denoise.io.desi.read_desi); median and "
                  "16/84th percentiles over targets per wavelength",
        "command": "python -m survey_denoise.noise build-desi " + " ".join(Path(c).name for c in coadds),
        "n_targets": int(sigma.shape[0]),
    })
    exptimes = np.concatenate([np.asarray(ds["fibermap_coadd_exptime"].values, dtype=np.float64)
                               for ds in reads if "fibermap_coadd_exptime" in ds])
    exptimes = exptimes[np.isfinite(exptimes) & (exptimes > 0)]
    if exptimes.size:
        # Raw coadd exposure time stands in for effective time: the coadds do
        # not carry EFFTIME, and DesiNoise(exptime=...) needs only a depth.
        table.meta["exptime"] = round(float(np.median(exptimes)), 1)
        table.meta["exptime_note"] = ("median COADD_EXPTIME (s) of the targets; DesiNoise(exptime=t) "
                                      "multiplies sigma by sqrt(exptime / t)")
    return table


def write_curve(table, path: str | Path) -> Path:
    """Write a noise curve as ECSV (wavelengths to 1e-4 A, sigmas to 5 significant digits)."""
    path = Path(path)
    table = table.copy()
    table["wavelength"][:] = np.round(np.asarray(table["wavelength"], dtype=np.float64), 4)
    for name in ("sigma_median", "sigma_p16", "sigma_p84"):
        table[name][:] = [float(f"{v:.5g}") for v in np.asarray(table[name])]
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path


# ----------------------------------------------------------------- degrade


def dimming_factor(z: np.ndarray, z_target: float, cosmology: str = "Planck18") -> np.ndarray:
    """``(d_L(z) / d_L(z_target))**2``: flux (per rest A) ratio when moving z -> z_target."""
    cosmo = _cosmology(cosmology)
    z = np.asarray(z, dtype=np.float64)
    ok = np.isfinite(z) & (z >= 0)
    d = np.where(ok, cosmo.luminosity_distance(np.where(ok, z, 0.0)).value, np.nan)
    return (d / cosmo.luminosity_distance(z_target).value) ** 2


def _cosmology(name: str):
    from astropy import cosmology

    if name not in cosmology.available:
        raise ValueError(f"unknown cosmology {name!r}; use one of {', '.join(cosmology.available)}")
    return getattr(cosmology, name)


def degrade_kernel(flux, ivar, mask, z, norm, flags, galaxy, *, noise, seed: int,
                   z_target: float | None, cosmology: str, method: str, rest_edges: np.ndarray):
    """Add ``noise`` to one chunk of rest-frame spectra (see the module notes).

    Returns flux, ivar (float32), mask (bool), z, norm, dimming (float64), flags (uint32).
    """
    n_gal, npix = flux.shape
    flags = np.array(flags, dtype=np.uint32, copy=True).reshape(n_gal)
    norm = np.asarray(norm, dtype=np.float64).reshape(n_gal)
    z = np.asarray(z, dtype=np.float64).reshape(n_gal)
    good = good_pixels(flux, ivar, mask) & ((flags & _DROP) == 0)[:, None]
    eps = standard_normal(seed, noise.purpose, np.asarray(galaxy).reshape(n_gal), npix).astype(np.float64)
    dim = np.ones(n_gal)
    z_out = z.copy()
    # `noisy` is in units where physical = noisy * base; `keep` is the factor
    # that returns it to the input's units when not re-normalising.
    if isinstance(noise, UniformNoise):
        base, keep = norm, np.ones(n_gal)
        signal, var_in = flux, 1.0 / np.where(good, ivar, 1.0)
        sigma = np.full((n_gal, npix), noise.sigma)
    else:
        if z_target is not None:
            dim = dimming_factor(z, z_target, cosmology)
            z_out = np.full(n_gal, float(z_target))
        unusable = ~(np.isfinite(z_out) & (z_out >= 0) & np.isfinite(dim) & (dim > 0))
        flags[unusable & ((flags & _DROP) == 0)] |= np.uint32(Flag.NO_REDSHIFT)
        good &= ((flags & _DROP) == 0)[:, None]
        base, keep = np.ones(n_gal), norm
        sigma = np.full((n_gal, npix), np.nan)
        live = (flags & _DROP) == 0
        if live.any():
            sigma[live] = noise.sigma_rest(rest_edges, z_out[live])
        flags[live & np.any(good & ~np.isfinite(sigma), axis=1)] |= np.uint32(Flag.PARTIAL_COVERAGE)
        good &= np.isfinite(sigma)
        factor = (norm * dim)[:, None]
        signal = flux * factor
        var_in = factor**2 / np.where(good, ivar, 1.0)
    sigma = np.where(good, sigma, 0.0)
    noisy = np.where(good, signal + sigma * eps, 0.0)
    var = sigma**2 + (np.where(good, var_in, 0.0) if noise.combine else 0.0)
    new_ivar = np.where(good, 1.0 / np.where(good, var, 1.0), 0.0)

    live = (flags & _DROP) == 0
    k = keep
    if noise.renormalise and method != "none":
        k = norm_factor(noisy, good, method)
        bad = live & ~(np.isfinite(k) & (k > 0))
        flags[bad] |= np.uint32(Flag.BAD_NORM)
        live &= ~bad
    k = np.where(live, k, 1.0)
    out_flux = (noisy / k[:, None]).astype(np.float32)
    out_ivar = (new_ivar * (k * k)[:, None]).astype(np.float32)
    out_mask = ~good
    out_norm = np.where(live, base * k, norm)
    out_flux[~live], out_ivar[~live], out_mask[~live] = 0.0, 0.0, True
    return out_flux, out_ivar, out_mask, z_out, out_norm, dim, flags


def degrade(ds: xr.Dataset, noise: UniformNoise | DesiNoise, *, seed: int,
            z_target: float | None = None, cosmology: str = "Planck18") -> xr.Dataset:
    """Noisy copy of rest-frame spectra (lazy, chunk-wise, reproducible per galaxy).

    Parameters
    ----------
    ds : xarray.Dataset
        Rest-frame spectra (e.g. from :func:`~survey_denoise.preprocess.preprocess`).
    noise : UniformNoise or DesiNoise
        The noise model.
    seed : int
        Random seed; with the galaxy id it fixes every draw.
    z_target : float, optional
        Move every galaxy to this redshift first (DesiNoise only).
    cosmology : str
        astropy cosmology name for the luminosity distances.

    Returns
    -------
    xarray.Dataset
        Same galaxies, chunks and per-galaxy variables; ``attrs["noise"]``,
        ``attrs["cosmology"]`` (with ``z_target``) and provenance record
        what was done.  The clean input is not kept (it is ``ds``).  A
        noise model that simulates a survey (DesiNoise) makes it the store's
        ``attrs["survey"]``; the input's is kept in ``survey_simulated_from``.
    """
    validate(ds, frame="rest", where="degrade")
    method = ds.attrs.get("norm_convention", "none")
    if isinstance(noise, UniformNoise):
        if method == "none":
            raise ValueError("UniformNoise is in normalised units: normalise the spectra first "
                             "(survey_denoise.preprocess.normalise)")
        if z_target is not None:
            raise ValueError("moving galaxies to z_target needs a physical noise model (DesiNoise)")
    elif not isinstance(noise, DesiNoise):
        raise TypeError(f"noise must be UniformNoise or DesiNoise, got {type(noise).__name__}")
    if z_target is not None and not (np.isfinite(z_target) and z_target > 0):
        raise ValueError(f"z_target must be positive, got {z_target}")
    attrs = dict(ds.attrs)
    if noise.survey is not None:
        attrs["survey_simulated_from"] = attrs.get("survey", "unknown")
        attrs["survey"] = noise.survey
    params = {"noise": noise.describe(), "seed": int(seed), "z_target": z_target}
    if z_target is not None:
        cosmo = _cosmology(cosmology)
        attrs["cosmology"] = json.dumps({"name": cosmology, "H0": cosmo.H0.value, "Om0": cosmo.Om0,
                                         "Tcmb0": cosmo.Tcmb0.value, "Ob0": cosmo.Ob0}, default=str)
        params["cosmology"] = cosmology
    grid = Grid.from_dataset(ds)
    chunks = ds["flux"].chunks
    per_gal = {n: ds[n] if chunks is None else ds[n].chunk({"galaxy": chunks[0]})
               for n in ("z", "norm", "flags")}
    ids = xr.DataArray(np.asarray(ds["galaxy"].values), dims="galaxy")
    if chunks is not None:
        ids = ids.chunk({"galaxy": chunks[0]})
    kwargs = {"noise": noise, "seed": int(seed), "z_target": z_target, "cosmology": cosmology,
              "method": method, "rest_edges": np.asarray(grid.edges)}
    flux, ivar, mask, z, norm, dim, flags = xr.apply_ufunc(
        degrade_kernel, ds["flux"], ds["ivar"], ds["mask"], per_gal["z"], per_gal["norm"],
        per_gal["flags"], ids,
        input_core_dims=[["wavelength"]] * 3 + [[]] * 4,
        output_core_dims=[["wavelength"]] * 3 + [[]] * 4,
        dask="parallelized", kwargs=kwargs,
        output_dtypes=[np.float32, np.float32, bool, np.float64, np.float64, np.float64, np.uint32])
    out = ds.copy()
    for name, values in (("flux", flux), ("ivar", ivar), ("mask", mask), ("norm", norm), ("flags", flags)):
        out[name] = values.transpose(*ds[name].dims).assign_attrs(ds[name].attrs)
    if z_target is not None:
        out["z_original"] = ds["z"]
        out["z"] = z.assign_attrs(ds["z"].attrs)
        out["dimming"] = dim.assign_attrs(long_name="(d_L(z_original) / d_L(z))**2 applied to the flux")
    out.attrs = add_provenance(attrs, "degrade", **params)
    out.attrs["noise"] = json.dumps({**noise.describe(), "seed": int(seed), "z_target": z_target},
                                    default=str)
    return validate(out, frame="rest", where="degrade")


# ----------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m survey_denoise.noise build-desi COADD... [--out FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m survey_denoise.noise",
                                     description="Build the DESI noise curve from coadds.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-desi", help="median noise per observed pixel of DESI coadds")
    build.add_argument("coadds", nargs="+", type=Path, help="coadd-*.fits (redrock-*.fits beside each)")
    build.add_argument("--out", type=Path, default=DESI_CURVE, help=f"ECSV to write [{DESI_CURVE}]")
    args = parser.parse_args(argv)
    table = build_desi_curve(args.coadds)
    write_curve(table, args.out)
    print(f"wrote {args.out}: {len(table)} pixels, {table.meta['n_targets']} target(s), "
          f"{table['wavelength'][0]:.1f}-{table['wavelength'][-1]:.1f} A")
    return 0


if __name__ == "__main__":
    sys.exit(main())
