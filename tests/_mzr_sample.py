"""A small synthetic star-forming sample with line catalogues of three noise levels.

Used by the MZR-test, plot and report tests.  Line fluxes follow the Pettini &
Pagel (2004) calibrations inverted, so the O3N2 metallicity of a noiseless
catalogue equals the true one; the three catalogues differ only in the flux
errors actually drawn and reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from survey_denoise.lines import catalogue_keys
from survey_denoise.science.mzr import SCHOLTE24


def synthetic_truth(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    logmass = rng.uniform(9.0, 11.0, n)
    dsfr = rng.normal(0.0, 0.3, n)
    logsfr = 0.8 * (logmass - 10.0) + dsfr
    # positive coupling: lower metallicity at lower SFR, as in the paper's Fig. 10
    true_oh = SCHOLTE24(logmass) + 0.1 * dsfr + rng.normal(0.0, 0.04, n)
    return pd.DataFrame({"galaxy": [f"mock-{i:05d}" for i in range(n)], "true_logmass": logmass,
                         "true_sfr": 10**logsfr, "true_oh": true_oh,
                         "true_class": np.where(rng.random(n) < 0.5, "emission", "absorption")})


def synthetic_catalogue(truth: pd.DataFrame, snr_scale: float, seed: int,
                        method: str = "fast") -> pd.DataFrame:
    """Line catalogue whose S/N of each line is ``snr_scale`` × sqrt(flux)."""
    rng = np.random.default_rng(seed)
    oh = truth["true_oh"].to_numpy()
    n2 = (oh - 8.90) / 0.57
    o3n2 = (8.73 - oh) / 0.32
    ha = 10 ** (2.0 + 0.8 * np.log10(truth["true_sfr"].to_numpy()))
    true = {"halpha": ha, "hbeta": ha / 2.86, "nii_6583": ha * 10**n2}
    true["oiii_5007"] = true["hbeta"] * 10 ** (o3n2 + n2)
    true["nii_6548"] = true["nii_6583"] / 3.05
    true["oiii_4959"] = true["oiii_5007"] / 2.98
    n = len(truth)
    cat = {"galaxy": truth["galaxy"].to_numpy(), "z": np.full(n, 0.03), "norm": np.full(n, 3.0),
           "status": np.zeros(n, np.int32), "chi2": np.ones(n), "method": [method] * n}
    for key in catalogue_keys():
        f = true.get(key, ha * 0.05)
        err = np.sqrt(f) / snr_scale
        obs = f + rng.normal(0.0, 1.0, n) * err
        cat[f"{key}_flux"] = obs
        cat[f"{key}_flux_err"] = err
        cat[f"{key}_flux_norm"] = obs / 3.0
        cat[f"{key}_flux_norm_err"] = err / 3.0
        cat[f"{key}_snr"] = obs / err
    return pd.DataFrame(cat)


def synthetic_catalogues(truth: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {"original": synthetic_catalogue(truth, 8.0, 1),
            "desi": synthetic_catalogue(truth, 0.8, 2),
            "vae": synthetic_catalogue(truth, 4.0, 3)}
