"""Attenuation curves: Calzetti et al. (2000) for stars, Cardelli et al. (1989) for gas.

Both return k(lambda) = A_lambda / E(B-V) for vacuum wavelengths in
Angstrom; the attenuated flux is ``f * 10**(-0.4 * k * ebv)``.
"""

from __future__ import annotations

import numpy as np


def calzetti(wave: np.ndarray, r_v: float = 4.05) -> np.ndarray:
    """Calzetti et al. (2000, ApJ 533, 682) eq. 4, for 1200 A - 2.2 micron.

    Parameters
    ----------
    wave : array_like
        Rest-frame wavelength, Angstrom.
    r_v : float
        Total-to-selective attenuation (4.05 +- 0.80 in the paper).
    """
    x = 1e4 / np.asarray(wave, dtype=np.float64)  # inverse micron
    blue = 2.659 * (-2.156 + 1.509 * x - 0.198 * x**2 + 0.011 * x**3) + r_v
    red = 2.659 * (-1.857 + 1.040 * x) + r_v
    return np.where(x > 1e4 / 6300.0, blue, red)


def cardelli(wave: np.ndarray, r_v: float = 3.1) -> np.ndarray:
    """Cardelli, Clayton & Mathis (1989, ApJ 345, 245) eqs. 2-3: optical and near-infrared.

    Parameters
    ----------
    wave : array_like
        Rest-frame wavelength, Angstrom (valid 3030 A - 3.3 micron).
    r_v : float
        Total-to-selective extinction.
    """
    x = 1e4 / np.asarray(wave, dtype=np.float64)
    y = x - 1.82
    a_opt = (1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4
             + 0.01979 * y**5 - 0.77530 * y**6 + 0.32999 * y**7)
    b_opt = (1.41338 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4
             - 0.62251 * y**5 + 5.30260 * y**6 - 2.09002 * y**7)
    a_ir = 0.574 * x**1.61
    b_ir = -0.527 * x**1.61
    a = np.where(x >= 1.1, a_opt, a_ir)
    b = np.where(x >= 1.1, b_opt, b_ir)
    return r_v * (a + b / r_v)
