"""Survey redshift distributions n(z): declared once, used by the mock and the de-noisers.

A distribution has the form of Smail et al. (1994),
``n(z) ∝ z^2 exp(-(z / z0)^1.5)`` on ``z_range``.  ``"desi-bgs"`` (z0 =
0.14 on 0.01-0.5, median z ≈ 0.20) is about DESI's Bright Galaxy Survey:
r < 19.5 (bright sample), median z ≈ 0.2, z < 0.6 (Hahn et al. 2023, AJ
165, 253; target selection of Ruiz-Macias et al. 2020, RNAAS 4, 187); 32 %
of it lies above z = 0.24, 4 % above z = 0.4.  Its users:

- :mod:`survey_denoise.models.coverage` draws the coverage masks a de-noiser
  is trained with from it;
- the mock's ``bgs`` design (:mod:`survey_denoise.mock.designs`) draws its
  candidates' redshifts from it before the magnitude limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NODES = 2049


@dataclass(frozen=True)
class SmailNz:
    """``n(z) ∝ z^2 exp(-(z / z0)^1.5)`` on ``z_range``.

    Parameters
    ----------
    z_range : (float, float)
        Lowest and highest redshift.
    z0 : float
        Scale of the distribution (median ≈ 1.4 z0 on a wide range).
    """

    z_range: tuple[float, float]
    z0: float

    def pdf(self, z: np.ndarray) -> np.ndarray:
        """Unnormalised n(z) (0 outside ``z_range``)."""
        z = np.asarray(z, np.float64)
        inside = (z >= self.z_range[0]) & (z <= self.z_range[1])
        return np.where(inside, z**2 * np.exp(-(z / self.z0) ** 1.5), 0.0)

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """Redshifts at cumulative fractions ``u`` in [0, 1] (inverse CDF, trapezoid on 2049 nodes)."""
        zlo, zhi = self.z_range
        u = np.asarray(u, np.float64)
        if zhi == zlo:
            return np.full(u.shape, zlo)
        z = np.linspace(zlo, zhi, _NODES)
        pdf = z**2 * np.exp(-(z / self.z0) ** 1.5)
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(z))])
        return np.interp(u * cdf[-1], cdf, z)


NZ: dict[str, SmailNz] = {
    "desi-bgs": SmailNz(z_range=(0.01, 0.5), z0=0.14),
}
"""Named survey redshift distributions (module notes)."""
