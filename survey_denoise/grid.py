"""The rest-frame wavelength grid every de-noiser and the fast fitter work on.

Scourfield et al. (2023) resample each spectrum onto 825 pixels spaced
uniformly in log wavelength between 3700 and 7900 Angstrom (vacuum, rest
frame).  This module is the only place that knows those numbers; everything
else asks for :data:`GRID` or builds its own :class:`Grid`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np

C_KMS = 299_792.458
"""Speed of light in km/s."""


@dataclass(frozen=True)
class Grid:
    """A wavelength grid uniform in log(lambda).

    Parameters
    ----------
    wave_min, wave_max : float
        Centres of the first and last pixel, Angstrom (vacuum).
    npix : int
        Number of pixels.
    """

    wave_min: float = 3700.0
    wave_max: float = 7900.0
    npix: int = 825

    def __post_init__(self) -> None:
        if not (0 < self.wave_min < self.wave_max) or self.npix < 2:
            raise ValueError(
                f"a grid needs 0 < wave_min < wave_max and npix >= 2, got "
                f"{self.wave_min}, {self.wave_max}, {self.npix}"
            )

    @cached_property
    def wavelength(self) -> np.ndarray:
        """Pixel centres, Angstrom (float64, read-only)."""
        wave = np.geomspace(self.wave_min, self.wave_max, self.npix)
        wave.flags.writeable = False
        return wave

    @cached_property
    def dlnlam(self) -> float:
        """Pixel width in natural log of wavelength (dimensionless)."""
        return float(np.log(self.wave_max / self.wave_min) / (self.npix - 1))

    @property
    def velscale(self) -> float:
        """Pixel width as a velocity, km/s (about 276 km/s for the paper grid)."""
        return C_KMS * self.dlnlam

    @cached_property
    def edges(self) -> np.ndarray:
        """Pixel edges (npix + 1), Angstrom: geometric mid-points of the centres."""
        ln = np.log(self.wavelength)
        inner = 0.5 * (ln[1:] + ln[:-1])
        edges = np.exp(np.concatenate([[ln[0] - 0.5 * self.dlnlam], inner,
                                       [ln[-1] + 0.5 * self.dlnlam]]))
        edges.flags.writeable = False
        return edges

    @property
    def widths(self) -> np.ndarray:
        """Pixel widths, Angstrom."""
        return np.diff(self.edges)

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready description, stored in dataset attrs and model cards."""
        return {"wave_min": self.wave_min, "wave_max": self.wave_max, "npix": self.npix,
                "spacing": "log", "medium": "vacuum", "unit": "Angstrom"}

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        """Inverse of :meth:`to_dict`."""
        return cls(float(d["wave_min"]), float(d["wave_max"]), int(d["npix"]))

    @classmethod
    def from_wavelength(cls, wavelength: np.ndarray) -> Grid:
        """Recover the grid that produced ``wavelength``; refuse anything else.

        Raises
        ------
        ValueError
            If ``wavelength`` is not log-uniform to 1e-9 relative precision.
        """
        wavelength = np.asarray(wavelength, dtype=np.float64)
        if wavelength.ndim != 1 or wavelength.size < 2:
            raise ValueError("wavelength must be a 1-D array of at least 2 values")
        grid = cls(float(wavelength[0]), float(wavelength[-1]), wavelength.size)
        if not np.allclose(grid.wavelength, wavelength, rtol=1e-9, atol=0):
            raise ValueError("wavelength axis is not uniform in log(lambda)")
        return grid

    @classmethod
    def from_dataset(cls, ds) -> Grid:
        """The rest-frame grid of a spectra dataset; the one place that reads it.

        ``attrs["grid"]`` (written by pre-processing and the mock) when
        present; without it the wavelength axis must be the paper's
        :data:`GRID`.  Either way the axis must hold the grid's pixel centres.

        Parameters
        ----------
        ds : xarray.Dataset
            Rest-frame spectra, with a ``wavelength`` coordinate (Angstrom).

        Raises
        ------
        ValueError
            If ``attrs["grid"]`` is not a grid description, or the
            wavelength axis is missing or does not match the grid.
        """
        if "grid" in ds.attrs:
            try:
                grid = cls.from_dict(json.loads(ds.attrs["grid"]))
            except (TypeError, KeyError, ValueError) as err:
                raise ValueError(f"attrs['grid'] = {ds.attrs['grid']!r} is not a grid description "
                                 f"(wave_min, wave_max, npix): {err}") from None
            source = f"attrs['grid'] {grid.to_dict()}"
        else:
            grid, source = GRID, "the paper grid (the dataset has no attrs['grid'])"
        if "wavelength" not in ds.coords:
            raise ValueError("the dataset has no 'wavelength' coordinate, so it has no grid")
        wave = np.asarray(ds["wavelength"].values)
        if not grid.matches(wave):
            span = f"{wave[0]:.1f}-{wave[-1]:.1f} A" if wave.size else "empty"
            raise ValueError(f"rest-frame wavelength axis ({wave.size} pixels, {span}) does not match "
                             f"{source}; resample it with `survey-denoise preprocess`, which "
                             "records the grid")
        return grid

    def matches(self, wavelength: np.ndarray, rtol: float = 1e-7) -> bool:
        """True if ``wavelength`` holds this grid's pixel centres."""
        wavelength = np.asarray(wavelength)
        return wavelength.shape == (self.npix,) and bool(
            np.allclose(wavelength, self.wavelength, rtol=rtol, atol=0))


GRID = Grid()
"""The paper's grid: 825 log-spaced pixels, 3700-7900 Angstrom, vacuum, rest frame."""
