"""Broad-band magnitudes of mock galaxies, for magnitude-limited designs.

Cheap by design: the continuum is made on a coarse rest-frame log grid
(:data:`DLNLAM`, 100 times coarser than DESI's pixels) rather than at the
spectrum's resolution, which a band-averaged flux does not need.
"""

from __future__ import annotations

import numpy as np

from .priors import Priors, default_priors

C_AA_S = 2.99792458e18
"""Speed of light, Angstrom/s."""
DLNLAM = 2e-3
"""Log step of the rest-frame grid the band flux is integrated on."""


def r_magnitude(props: dict[str, np.ndarray], fluxes: dict[str, np.ndarray],
                priors: Priors | None = None) -> np.ndarray:
    """Total r-band AB magnitude of the stellar (+ AGN) continuum of each galaxy.

    The band is a top-hat over the priors' ``bgs.r_band`` (observed
    Angstrom); the magnitude is that of the photon-weighted mean f_nu over it,
    ``<f_nu> = int f_lambda lambda dlambda / int (c / lambda) dlambda``.  The
    whole galaxy counts (fibre fraction 1); emission lines are left out.

    Parameters
    ----------
    props : dict
        :func:`survey_denoise.mock.population.draw` output.
    fluxes : dict
        :func:`survey_denoise.mock.nebular.line_fluxes` output (its AGN continuum).
    priors : Priors, optional

    Returns
    -------
    ndarray (n,)
        AB magnitudes.
    """
    from .generate import _continuum_rest

    p = priors or default_priors()
    lo, hi = (float(v) for v in p.bgs["r_band"])
    z = np.asarray(props["z"], np.float64)
    w0 = lo / (1 + z.max()) * np.exp(-2 * DLNLAM)
    npix = int(np.ceil(np.log(hi / (1 + z.min()) / w0) / DLNLAM)) + 3
    whole = {**props, "fibre_frac": np.ones_like(z)}
    cont = _continuum_rest(whole, fluxes, w0, DLNLAM, npix)    # f_rest, 1e-17 erg/s/cm2/A
    edges = w0 * np.exp(DLNLAM * (np.arange(npix + 1) - 0.5))
    mid = w0 * np.exp(DLNLAM * np.arange(npix))
    # f_obs(lambda) = f_rest(lambda / (1 + z)) / (1 + z), so int f_obs lambda dlambda over the
    # band is (1 + z) int f_rest lambda_r dlambda_r over the band shifted to the rest frame.
    a, b = lo / (1 + z), hi / (1 + z)
    frac = np.clip((np.minimum(edges[1:], b[:, None]) - np.maximum(edges[:-1], a[:, None]))
                   / np.diff(edges)[None, :], 0.0, 1.0)
    integral = (1 + z) * (cont * mid[None, :] * np.diff(edges)[None, :] * frac).sum(1) * 1e-17
    fnu = integral / (C_AA_S * np.log(hi / lo))
    return -2.5 * np.log10(np.maximum(fnu, 1e-60)) - 48.6
