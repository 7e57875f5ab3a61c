"""The best line S/N any estimator could reach from a spectrum's noise (a Cramér–Rao bound).

A de-noiser cannot create information: whatever it outputs, an honest error
on a line flux can be no smaller than what the noisy spectrum itself
allows, plus what the population (the model's prior) knew beforehand.
This module computes that limit per galaxy, so a target such as "as many
galaxies above Hα S/N 15 as in the original spectra" can be checked for
reachability before any model is trained.

For a line of known profile ``g`` (per Angstrom, unit integral, pixel
averaged) on a known continuum, with independent Gaussian pixel noise of
inverse variance ``w``, the Fisher information on the flux ``F`` is
``sum_p w_p g_p**2``, so no unbiased estimate has ``S/N`` above

    F * sqrt(sum_p w_p g_p**2).

Two more generous bounds are given:

* **tied**: every line's flux known up to one common factor (all line
  ratios exact).  The model is ``A * T`` with ``T = sum_i F_i g_i`` and
  ``A = 1`` at the truth; the bound on A's S/N is ``sqrt(sum_p w_p
  T_p**2)``, and Hα's estimate ``A F_Hα`` has the same S/N.  Overlapping
  lines are counted once; a blend such as [OII]3727 is one Gaussian at its
  members' mean wavelength (narrower than the doublet).
* **tied + prior**: a log-normal prior on the line of width ``prior_dex``
  (what the rest of the spectrum predicts; on the mock, the scatter of the
  10-Myr SFR about the 100-Myr one that shapes the continuum) adds
  ``1 / (ln 10 * prior_dex)**2`` to the squared S/N.

The line widths used are the gas's own dispersion with no instrumental
broadening and the pixel averaging of the grid; a narrower line gives a
higher bound, so this errs towards the generous side, as a bound should.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from .. import lines
from ..fitting.fast import gaussian_profile
from ..grid import Grid
from ..resample import good_pixels


def _profiles(edges: np.ndarray, centre: float, sigma_kms: np.ndarray) -> np.ndarray:
    """(n, npix) unit-integral Gaussians, one per galaxy width (1/Angstrom)."""
    widths, inverse = np.unique(np.round(np.asarray(sigma_kms, float), 1), return_inverse=True)
    table = np.stack([gaussian_profile(edges, centre, max(float(s), 1.0)) for s in widths])
    return table[inverse.reshape(-1)]


def snr_bound(ds: xr.Dataset, true_flux: Mapping[str, np.ndarray], sigma_kms: np.ndarray, *,
              line: str = "halpha", prior_dex: float | None = None) -> pd.DataFrame:
    """Per galaxy, the highest S/N on ``line`` that the noise of ``ds`` allows.

    Parameters
    ----------
    ds : xarray.Dataset
        Rest-frame spectra (``flux``, ``ivar``, ``mask``, ``norm``; physical
        flux density = ``flux x norm``, 1e-17 erg/s/cm2/A) on a grid.
    true_flux : mapping of line key to ndarray
        True integrated fluxes per galaxy, in the physical units of ``ds``
        (1e-17 erg/s/cm2; for a spectrum moved to another redshift, the
        truth times its dimming).  Must include ``line``; every other line
        given is tied in the ``tied`` bounds.
    sigma_kms : ndarray
        Per galaxy, the lines' Gaussian sigma (km/s).
    line : str
        The line whose S/N is bounded (default Hα).
    prior_dex : float, optional
        Width (dex) of a log-normal prior on the line that a model could
        know from the rest of the spectrum; adds ``snr_tied_prior``.

    Returns
    -------
    DataFrame
        One row per galaxy: ``galaxy``, ``snr_line`` (the line alone),
        ``snr_tied`` (all given lines tied) and, with ``prior_dex``,
        ``snr_tied_prior``.  NaN where the spectrum has no usable pixel
        on the line or its true flux is not positive.
    """
    if line not in true_flux:
        raise KeyError(f"true_flux has no {line!r} (keys: {sorted(true_flux)})")
    centres = {k: lines.wavelength(k) for k in true_flux}  # a blend sits at its members' mean
    edges = Grid.from_dataset(ds).edges
    good = good_pixels(ds["flux"].values, ds["ivar"].values, ds["mask"].values)
    norm = np.asarray(ds["norm"].values, float)
    # ivar of the physical flux density: physical = flux x norm
    w = np.where(good, ds["ivar"].values, 0.0) / norm[:, None] ** 2
    sigma = np.broadcast_to(np.asarray(sigma_kms, float), norm.shape)

    def profile(key: str) -> np.ndarray:
        return _profiles(edges, centres[key], sigma)

    g = profile(line)
    f_line = np.asarray(true_flux[line], float)
    info_line = np.sum(w * g * g, axis=1)
    template = np.zeros_like(w)
    for key, f in true_flux.items():
        f = np.nan_to_num(np.clip(np.asarray(f, float), 0.0, None))
        template += f[:, None] * (g if key == line else profile(key))
    with np.errstate(invalid="ignore", divide="ignore"):
        on_line = (info_line > 0) & (f_line > 0)
        snr_line = np.where(on_line, f_line * np.sqrt(info_line), np.nan)
        snr_tied = np.where(on_line, np.sqrt(np.sum(w * template * template, axis=1)), np.nan)
    out = pd.DataFrame({"galaxy": ds["galaxy"].values, "snr_line": snr_line, "snr_tied": snr_tied})
    if prior_dex is not None:
        if not prior_dex > 0:
            raise ValueError(f"prior_dex must be positive, got {prior_dex}")
        out["snr_tied_prior"] = np.sqrt(snr_tied**2 + 1.0 / (np.log(10.0) * prior_dex) ** 2)
    return out
