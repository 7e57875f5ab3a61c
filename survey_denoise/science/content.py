"""What a de-noised spectrum holds at a line, read without a fitter.

A fitter's flux for a de-noised line mixes two things: what the de-noiser
put into the spectrum, and how the fitter splits that between line and
continuum.  Two fitters can disagree on the same spectrum (pPXF's stellar
templates with a multiplicative polynomial against the fast fitter's
template components with additive polynomials), and a target met with one
and missed with the other says nothing about the de-noiser until the
spectrum itself is measured.

On the mock the original spectrum (the de-noiser's target) and the true
line fluxes are known, so the flux the de-noiser added at a line is the
integral of ``denoised - original`` over the pixels of the line
(:func:`line_excess`), and what the de-noised spectrum holds there is the
true flux plus that excess (:func:`held_flux`).  The original's own noise
is zero-mean: it scatters the figure of one galaxy, not the median of
many.  The continuum cancels where the de-noiser reproduced it; where it
did not, a continuum offset under the line counts as line flux, so the
figure speaks for lines that stand above the de-noiser's continuum errors
(Hα, [NII], [OIII]5007 and [SII] in emission-line galaxies) and not for
[OIII]4363 or the Balmer lines of absorption-dominated galaxies, where
the continuum errors are larger than the line.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .. import lines
from ..grid import Grid

HALF_PIXELS = 1
"""Pixels on each side of the line's own pixel summed by :func:`line_excess`.

On the 825-pixel grid a pixel is 276 km/s wide, so three pixels hold more
than 95 % of a line of sigma <= 170 km/s (gas plus instrument) and stop
short of the nearest neighbour of a Table 6 line ([NII]6548, 2.4 pixels
from Hα)."""


def line_pixels(wavelength: np.ndarray, centre: float, half_pixels: int = HALF_PIXELS) -> np.ndarray:
    """Indices of the pixel nearest ``centre`` and ``half_pixels`` on each side.

    Parameters
    ----------
    wavelength : ndarray (npix,)
        Pixel centres, Angstrom, increasing.
    centre : float
        Line centre, Angstrom (same frame as ``wavelength``).
    half_pixels : int
        Pixels on each side.

    Returns
    -------
    ndarray of int
        Empty when ``centre`` lies outside the pixels.
    """
    lam = np.asarray(wavelength, np.float64)
    if lam.size == 0 or not lam[0] <= centre <= lam[-1]:
        return np.zeros(0, int)
    j = int(np.argmin(np.abs(lam - centre)))
    return np.arange(max(j - half_pixels, 0), min(j + half_pixels + 1, lam.size))


def line_excess(flux: np.ndarray, reference: np.ndarray, grid: Grid, centre: float,
                half_pixels: int = HALF_PIXELS) -> np.ndarray:
    """Flux ``flux`` holds at a line beyond ``reference``: the sum of their difference over the line's pixels.

    Parameters
    ----------
    flux, reference : ndarray (n, npix)
        Flux densities of the same galaxies on ``grid``, in one unit (e.g.
        1e-17 erg/s/cm2/Angstrom): de-noised and original spectra.
    grid : Grid
        The spectra's wavelength grid.
    centre : float
        Line centre, Angstrom, in the grid's frame.
    half_pixels : int
        See :data:`HALF_PIXELS`.

    Returns
    -------
    ndarray (n,)
        Flux density x Angstrom (the line-flux unit of the catalogues); NaN
        where a pixel of the line is not finite in either spectrum, or the
        line is off the grid.
    """
    f = np.atleast_2d(np.asarray(flux, np.float64))
    r = np.atleast_2d(np.asarray(reference, np.float64))
    if f.shape != r.shape or f.shape[1] != grid.npix:
        raise ValueError(f"flux {f.shape} and reference {r.shape} must both be (n, {grid.npix})")
    pix = line_pixels(grid.wavelength, centre, half_pixels)
    if pix.size == 0:
        return np.full(f.shape[0], np.nan)
    return ((f[:, pix] - r[:, pix]) * grid.widths[pix]).sum(axis=1)  # NaN propagates


def held_flux(denoised: xr.Dataset, original: xr.Dataset, true_flux: dict[str, np.ndarray],
              half_pixels: int = HALF_PIXELS) -> dict[str, np.ndarray]:
    """Per line, the flux a de-noised spectrum holds: the true flux plus :func:`line_excess`.

    Parameters
    ----------
    denoised, original : Dataset
        The same galaxies in the same order (``flux``, ``norm``; ``mask``
        optional), on one grid; fluxes are compared as ``flux * norm``.
    true_flux : dict of str to ndarray (n,)
        True fluxes by catalogue key, in the unit of ``flux * norm`` x Angstrom.
    half_pixels : int
        See :data:`HALF_PIXELS`.

    Returns
    -------
    dict of str to ndarray (n,)
        NaN where either spectrum masks a pixel of the line.
    """
    if not np.array_equal(denoised["galaxy"].values, original["galaxy"].values):
        raise ValueError("the de-noised and original datasets must hold the same galaxies in the same order")
    for name, ds in (("de-noised", denoised), ("original", original)):
        if ds["wavelength"].attrs.get("frame") != "rest":
            raise ValueError(f"the {name} dataset is not in the rest frame: a line's pixels move with z")
    grid = Grid.from_dataset(original)
    if not grid.matches(denoised["wavelength"].values):
        raise ValueError("the de-noised and original datasets are on different grids")
    spectra = []
    for ds in (denoised, original):
        f = np.asarray(ds["flux"].values, np.float64) * np.asarray(ds["norm"].values, np.float64)[:, None]
        if "mask" in ds:
            f = np.where(np.asarray(ds["mask"].values, bool), np.nan, f)
        spectra.append(f)
    return {k: np.asarray(t, np.float64) + line_excess(*spectra, grid, lines.wavelength(k), half_pixels)
            for k, t in true_flux.items()}
