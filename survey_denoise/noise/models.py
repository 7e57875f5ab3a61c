"""Noise models: what noise to add, and how much at each pixel.

:class:`UniformNoise`
    Gaussian noise of one sigma in normalised flux units at every pixel (the
    paper: sigma = 0.04 on unit-normalised spectra).
:class:`DesiNoise`
    Wavelength-dependent Gaussian noise in physical units (1e-17
    erg/s/cm2/A) in the *observed* frame, from the median noise of real
    DESI coadds (``data/desi_noise.ecsv``, rebuilt by
    ``survey-denoise noise-curve COADD...``, see :mod:`.desi_curve`).

Adding them to spectra is :func:`survey_denoise.noise.degrade.degrade`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..resample import edges_from_centres, rebin
from ..schema import FLUX_UNIT

DESI_CURVE = Path(__file__).parent.parent / "data" / "desi_noise.ecsv"
"""The shipped DESI noise curve."""


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
    OPTIONS = ("sigma",)  # what a config or the command line may set

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
    OPTIONS = ("scale", "exptime")  # what a config or the command line may set
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
                             "rebuild it with 'survey-denoise noise-curve' or use scale")
        return self.scale * float(np.sqrt(float(curve_exptime) / self.exptime))

    @classmethod
    def from_coadds(cls, coadds: Sequence[str | Path], out: str | Path | None = None, **kwargs) -> DesiNoise:
        """Derive the curve from DESI coadds (redrock files beside them), optionally saving it.

        Without ``out`` the curve lives in memory only.
        """
        from .desi_curve import build_desi_curve, write_curve

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
                                    "'survey-denoise noise-curve COADD...'")
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


NOISE_MODELS: dict[str, type[UniformNoise] | type[DesiNoise]] = {"uniform": UniformNoise, "desi": DesiNoise}
"""Noise models by the name a config or ``degrade --noise`` gives.  A new model
is a class with ``OPTIONS`` (its settable fields; the first is what
``NAME:VALUE`` sets), ``purpose``, ``survey`` and ``describe()``, added here
and to :func:`~survey_denoise.noise.degrade.degrade_kernel`."""


def make_noise(name: str, **options: float | None) -> UniformNoise | DesiNoise:
    """The noise model registered as ``name``, with the options that are not None.

    ``name`` may carry its first option as ``NAME:VALUE`` (``uniform:0.04``
    is sigma 0.04, ``desi:2`` is scale 2).

    Raises
    ------
    ValueError
        For an unknown name, a bad value, or an option the model does not take
        (e.g. ``exptime`` for uniform noise).
    """
    name, _, value = name.partition(":")
    if name not in NOISE_MODELS:
        raise ValueError(f"unknown noise '{name}' (known: {', '.join(NOISE_MODELS)})")
    cls = NOISE_MODELS[name]
    given = {k: v for k, v in options.items() if v is not None}
    if value:
        try:
            given[cls.OPTIONS[0]] = float(value)
        except ValueError:
            raise ValueError(f"'{name}:{value}': {value!r} is not a number") from None
    for key in given:
        if key not in cls.OPTIONS:
            takers = [n for n, c in NOISE_MODELS.items() if key in c.OPTIONS]
            raise ValueError(f"{key} applies to {' or '.join(takers) or 'no'} noise only")
    return cls(**given)
