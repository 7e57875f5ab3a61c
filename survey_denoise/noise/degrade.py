"""``degrade``: make clean rest-frame spectra noisy with a noise model, reproducibly.

:func:`degrade` adds a :mod:`noise model <survey_denoise.noise.models>` to a
rest-frame dataset, optionally after moving every galaxy to ``z_target``
(the paper's DESI-like test: z = 0.1); :func:`degrade_kernel` is its
per-chunk numpy kernel.

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

import json

import numpy as np
import xarray as xr

from ..flags import DROP, Flag
from ..grid import Grid
from ..preprocess import norm_factor
from ..resample import good_pixels
from ..rng import standard_normal
from ..schema import add_provenance, validate
from .models import DesiNoise, UniformNoise

_DROP = np.uint32(DROP)


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
