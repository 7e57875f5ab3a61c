"""Numerical kernels of spectral synthesis, batched over galaxies (plain numpy).

All spectra here are 2-D arrays ``(n_galaxy, n_pixel)`` on log-lambda grids;
nothing loops over galaxies.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from ..grid import C_KMS


def log_grid(wave_min: float, dlnlam: float, npix: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres and edges (Angstrom) of a log grid starting at ``wave_min`` with step ``dlnlam``."""
    ln = np.log(wave_min) + dlnlam * np.arange(npix)
    edges = np.exp(np.concatenate([ln - dlnlam / 2, [ln[-1] + dlnlam / 2]]))
    return np.exp(ln), edges


def broaden(flux: np.ndarray, sigma_pix: np.ndarray) -> np.ndarray:
    """Convolve each row with a Gaussian of ``sigma_pix`` pixels (sub-pixel widths allowed).

    Multiplies by the analytic Fourier transform of the Gaussian (as pPXF
    does, Cappellari 2017), so widths below one pixel are handled exactly
    for band-limited input.  Rows are treated as periodic: keep a margin
    of several sigma at both ends and crop it afterwards.
    """
    npix = flux.shape[1]
    nfft = 1 << int(np.ceil(np.log2(npix)))
    freq = np.fft.rfftfreq(nfft)
    kernel = np.exp(-2.0 * (np.pi * freq[None, :] * sigma_pix[:, None]) ** 2)
    ft = np.fft.rfft(flux, n=nfft, axis=1)
    return np.fft.irfft(ft * kernel, n=nfft, axis=1)[:, :npix]


def add_gaussians(flux: np.ndarray, edges: np.ndarray, centre: np.ndarray, total: np.ndarray,
                  sigma_kms: np.ndarray, nsigma: float = 7.0) -> None:
    """Add one Gaussian line per row, integrated exactly over pixels, in place.

    Parameters
    ----------
    flux : ndarray (n, npix)
        Flux density, modified in place (units of ``total`` per Angstrom).
    edges : ndarray (npix + 1,)
        Pixel edges, Angstrom (log-uniform).
    centre : ndarray (n,)
        Line centres, Angstrom.
    total : ndarray (n,)
        Integrated line fluxes.
    sigma_kms : ndarray (n,)
        Gaussian sigma, km/s.
    nsigma : float
        Half-width of the window that receives flux (the rest, < 3e-12, is dropped).
    """
    n, npix = flux.shape
    keep = (total != 0) & (centre > edges[0]) & (centre < edges[-1])
    if not keep.any():
        return
    rows = np.nonzero(keep)[0]
    c, f, s = centre[rows], total[rows], centre[rows] * sigma_kms[rows] / C_KMS
    dln = np.log(edges[-1] / edges[0]) / npix
    half = int(np.ceil(nsigma * np.max(s / c) / dln)) + 1
    ic = np.searchsorted(edges, c) - 1
    idx = ic[:, None] + np.arange(-half, half + 1)[None, :]
    valid = (idx >= 0) & (idx < npix)
    idx = np.clip(idx, 0, npix - 1)
    lo = ndtr((edges[idx] - c[:, None]) / s[:, None])
    hi = ndtr((edges[idx + 1] - c[:, None]) / s[:, None])
    dens = f[:, None] * (hi - lo) / (edges[idx + 1] - edges[idx]) * valid
    # indices within a row are unique except where clipped (and those carry 0)
    np.add.at(flux, (np.broadcast_to(rows[:, None], idx.shape), idx), dens)
