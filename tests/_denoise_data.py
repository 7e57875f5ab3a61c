"""Small smooth synthetic spectra on the grid for the de-noiser tests.

A few Gaussian emission lines on smooth continua, unit L2 norm, uniform
Gaussian noise of sigma = 0.04 per pixel (the paper's set-up, in miniature).
"""

from __future__ import annotations

import json

import numpy as np

from survey_denoise.grid import GRID, Grid
from survey_denoise.schema import make_spectra

SIGMA = 0.04
LINES = (3728.5, 4862.7, 5008.2, 6564.6, 6585.3, 6718.3)


def spectra(n: int, seed: int = 0, grid: Grid = GRID) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) float32 arrays of shape (n, grid.npix)."""
    rng = np.random.default_rng(seed)
    w = grid.wavelength
    x = (w - w.mean()) / (w.max() - w.min())
    flux = 1 + rng.normal(0, 0.6, (n, 1)) * x + rng.normal(0, 0.4, (n, 1)) * x ** 2
    strength = rng.lognormal(0, 1, (n, 1)) * (rng.random((n, 1)) < 0.7)
    for centre in LINES:
        flux = flux + strength * rng.lognormal(0, 0.5, (n, 1)) * np.exp(-0.5 * ((w - centre) / 3.0) ** 2)
    clean = flux / np.linalg.norm(flux, axis=1, keepdims=True)
    noisy = clean + rng.normal(0, SIGMA, clean.shape)
    return noisy.astype(np.float32), clean.astype(np.float32)


def datasets(n: int, seed: int = 0, *, norm: str = "l2", grid: Grid = GRID, prefix: str = "g"):
    """(noisy, clean) schema-valid rest-frame Datasets of the same galaxies."""
    noisy, clean = spectra(n, seed, grid)
    ids = np.array([f"{prefix}{i:05d}" for i in range(n)])
    attrs = {"norm_convention": norm, "grid": json.dumps(grid.to_dict())}
    z = np.full(n, 0.03)
    ivar = np.full(noisy.shape, 1 / SIGMA ** 2, np.float32)
    ds_noisy = make_spectra(noisy, ivar, grid.wavelength, ids, z, frame="rest", attrs=attrs)
    ds_clean = make_spectra(clean, np.full_like(ivar, 1e6), grid.wavelength, ids, z, frame="rest",
                            attrs=attrs)
    return ds_noisy, ds_clean
