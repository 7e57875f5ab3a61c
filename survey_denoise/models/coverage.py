"""Coverage masks for training: which rest-frame pixels a survey would not have observed.

A galaxy at redshift ``z`` observed over ``wave_obs = (lo, hi)`` Angstrom
covers the rest-frame pixels with ``lo <= lambda_rest (1 + z) <= hi``.  For
DESI (3600-9824 A) every grid pixel (3700-7900 A) is covered below z ≈
0.24; at z = 0.4 the grid ends at 7017 A, at z = 0.5 at 6549 A (Halpha
lost).  Training draws one redshift per galaxy from the target survey's
redshift distribution and sets the noisy input's ivar (and flux) to 0
outside that coverage, so the network learns to de-noise partially covered
spectra; the clean target keeps its own pixels, and the loss counts only
those (its weights).

The redshift distribution is ``p(z) ∝ z^2 exp(-(z / z0)^1.5)`` on
``z_range`` (:class:`survey_denoise.redshifts.SmailNz`).  The default,
``"desi-bgs"``, is :data:`survey_denoise.redshifts.NZ` ``["desi-bgs"]``, the
one declaration of DESI's Bright Galaxy Survey n(z) that the mock's ``bgs``
design draws from too: median z ≈ 0.20 on 0.01-0.5 (Hahn et al. 2023, AJ
165, 253); 32 % of its galaxies lie above z = 0.24 and miss the grid's red
end, 4 % above z = 0.4.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ..redshifts import NZ, SmailNz


@dataclass(frozen=True)
class CoverageMasks:
    """A survey's observed range and redshift distribution, drawn as rest-frame coverage masks.

    Parameters
    ----------
    wave_obs : (float, float)
        Observed wavelength range, Angstrom (vacuum).
    z_range : (float, float)
        Redshifts drawn, lowest and highest.
    z0 : float
        Scale of ``p(z) ∝ z^2 exp(-(z / z0)^1.5)``.
    seed : int
        Seed of the draws (with the draw key and galaxy row).
    """

    wave_obs: tuple[float, float] = (3600.0, 9824.0)
    z_range: tuple[float, float] = (0.01, 0.5)
    z0: float = 0.14
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.wave_obs)
        zlo, zhi = (float(v) for v in self.z_range)
        if not (0 < lo < hi):
            raise ValueError(f"coverage masks need 0 < wave_obs[0] < wave_obs[1], got {self.wave_obs}")
        if not (0 <= zlo <= zhi):
            raise ValueError(f"coverage masks need 0 <= z_range[0] <= z_range[1], got {self.z_range}")
        if not self.z0 > 0:
            raise ValueError(f"coverage masks need z0 > 0, got {self.z0}")
        object.__setattr__(self, "wave_obs", (lo, hi))
        object.__setattr__(self, "z_range", (zlo, zhi))

    @classmethod
    def from_spec(cls, spec: str | Mapping | None, seed: int = 0) -> CoverageMasks | None:
        """``None``/``"none"``: no masks; a name of :data:`SURVEYS`; or a mapping of the fields."""
        if spec is None or spec == "none":
            return None
        if isinstance(spec, str):
            if spec not in SURVEYS:
                raise ValueError(f"unknown coverage survey {spec!r}; choose one of "
                                 f"{['none', *sorted(SURVEYS)]} or give wave_obs, z_range, z0")
            return cls(**{**SURVEYS[spec], "seed": seed})
        unknown = set(spec) - {"wave_obs", "z_range", "z0"}
        if unknown:
            raise ValueError(f"coverage masks take wave_obs, z_range and z0, not {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in spec.items()},
                   seed=seed)

    def to_dict(self) -> dict:
        """JSON-ready description (for the model card)."""
        out = asdict(self)
        out.update(wave_obs=list(self.wave_obs), z_range=list(self.z_range),
                   distribution="p(z) ~ z^2 exp(-(z/z0)^1.5) on z_range")
        return out

    def redshifts(self, n: int, key: str, start: int) -> np.ndarray:
        """``n`` redshifts for rows ``start ... start + n - 1``, reproducible from ``(seed, key, start)``."""
        if self.z_range[1] == self.z_range[0]:
            return np.full(n, self.z_range[0])
        rng = np.random.default_rng([int(self.seed), zlib.crc32(key.encode()), int(start)])
        return SmailNz(self.z_range, self.z0).quantile(rng.random(n))

    def covered(self, wavelength: np.ndarray, z: np.ndarray) -> np.ndarray:
        """(n, npix) bool: rest-frame pixels ``wavelength`` (Angstrom) observed at redshifts ``z``."""
        obs = np.asarray(wavelength, np.float64)[None, :] * (1.0 + np.asarray(z, np.float64)[:, None])
        return (obs >= self.wave_obs[0]) & (obs <= self.wave_obs[1])


SURVEYS: dict[str, dict] = {
    "desi-bgs": {"wave_obs": (3600.0, 9824.0), "z_range": NZ["desi-bgs"].z_range, "z0": NZ["desi-bgs"].z0},
}
"""Named target surveys for training coverage masks (module notes)."""
