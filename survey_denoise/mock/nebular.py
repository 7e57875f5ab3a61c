"""Emission-line fluxes tied to each galaxy's star formation, metals, dust and AGN.

Star-forming gas
    Halpha from the SFR of the last ~10 Myr (Kennicutt & Evans 2012), which
    scatters log-normally about the 100-Myr SFR that shapes the continuum
    (bursty star formation), scaled by the fibre fraction and the
    luminosity distance; other Balmer lines from Case-B
    ratios (``case_b`` in the line list); every line attenuated with the
    Cardelli et al. (1989) curve at the gas E(B-V), so the Balmer decrement
    measures the dust.  Metal lines from the gas-phase metallicity through
    published strong-line calibrations inverted consistently: [NII]/Halpha
    and [OIII]/Hbeta from the Pettini & Pagel (2004) N2 and O3N2 calibrations
    (so PP04 O3N2 applied to the true fluxes recovers 12+log(O/H) to within
    the scatter set in the priors), [OII] and [SII] from the Curti et
    al. (2017, 2020) R2 and S2 polynomials, [OIII]4363 from an electron
    temperature falling with abundance, and fixed doublet ratios from the
    line list.  At fixed O/H the ionisation parameter scatters and moves
    [OIII]/Hbeta up and [NII]/Halpha down, so that PP04 O3N2 of the true
    lines scatters about the MZR as SDSS fibre spectra do (about 0.1 dex;
    the priors YAML gives the sources).  The bagpipes
    Cloudy grids are not used: the strong-line route makes the metallicity
    truth exactly the quantity the science stages measure.
Narrow-line AGN
    Nuclear narrow lines (not scaled by the fibre fraction) placed above the
    Kewley et al. (2001) maximum-starburst line in the [NII] BPT diagram.
Retired-galaxy floor
    Every galaxy's old stars (HOLMES) ionise gas with EW(Halpha) ~ 1 A against
    their continuum and LIER ratios (Stasinska et al. 2008; Cid Fernandes et
    al. 2011; Belfiore et al. 2016), added to its HII-region or AGN lines: it
    dominates in absorption and quiescent galaxies, whose residual star
    formation gives HII-region ratios.
Broad-line AGN
    Broad Balmer lines with FWHM 2000-5000 km/s and a power-law continuum.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from .. import lines as L
from .. import ssp
from ..spectrographs import FWHM_PER_SIGMA
from .dust import cardelli
from .population import U
from .priors import CLASSES, Priors, default_priors

MPC_CM = 3.0856775814913673e24
FLUX_SCALE = 1e-17
"""Physical flux unit of the schema, erg/s/cm2."""
N2_MAX = 0.2
"""Largest log [NII]6583/Halpha of HII regions (the Kewley et al. 2001 line diverges at 0.47)."""
KEWLEY_MARGIN = 0.05
"""Least distance (dex in [OIII]/Hbeta) of HII-region ratios below the Kewley et al. (2001) line."""


def kewley01(n2: np.ndarray) -> np.ndarray:
    """Kewley et al. (2001) maximum-starburst line: log([OIII]5007/Hbeta) vs log([NII]6583/Halpha).

    Valid for log([NII]/Halpha) < 0.47 (the asymptote); returns -inf beyond it.
    """
    n2 = np.asarray(n2, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(n2 < 0.47, 0.61 / (n2 - 0.47) + 1.19, -np.inf)


def pp04_o3n2(oiii5007, hbeta, nii6583, halpha) -> np.ndarray:
    """12 + log(O/H) from the Pettini & Pagel (2004) O3N2 calibration."""
    o3n2 = np.log10((np.asarray(oiii5007) / hbeta) / (np.asarray(nii6583) / halpha))
    return 8.73 - 0.32 * o3n2


def _poly(coeffs, x):
    return sum(c * x**i for i, c in enumerate(coeffs))


def _n(u, pair):
    return pair[0] + pair[1] * ndtri(u)


def line_fluxes(props: dict[str, np.ndarray], priors: Priors | None = None) -> dict[str, np.ndarray]:
    """Observed (attenuated, in-fibre) narrow-line fluxes of every line in the line list.

    Parameters
    ----------
    props : dict
        Output of :func:`survey_denoise.mock.population.draw`.
    priors : Priors, optional

    Returns
    -------
    dict
        ``{line key: flux}`` in 1e-17 erg/s/cm2 for every key of
        :func:`survey_denoise.lines.all_lines`, plus ``"broad_halpha"``,
        ``"broad_hbeta"``, ``"broad_hgamma"``, ``"broad_hdelta"`` (zero except
        for broad-line AGN), ``"broad_sigma"`` (km/s) and ``"agn_continuum"``
        (f_lambda at 5100 A rest, 1e-17 erg/s/cm2/A).
    """
    p = priors or default_priors()
    u, cls = props["u"], props["class"]
    n = cls.size
    lines = L.all_lines()
    four_pi_d2 = 4 * np.pi * (props["dl_mpc"] * MPC_CM) ** 2
    is_agn = cls >= CLASSES.index("nlagn")
    is_blagn = cls == CLASSES.index("blagn")

    # Intrinsic Halpha: star formation of the last ~10 Myr in the fibre; for AGN the NLR.
    l_ha_sf = 10 ** (props["logsfr10"] + p.halpha_sfr_log_c)
    ha_sf = l_ha_sf * props["fibre_frac"] / four_pi_d2 / FLUX_SCALE
    ag = p.agn_lines
    ha_agn = 10 ** _n(u[:, U["agn_lum"]], ag["log_halpha_lum"]) / four_pi_d2 / FLUX_SCALE
    ha = np.where(is_agn, ha_agn, ha_sf)
    hbeta = ha / lines["halpha"].case_b

    # Line ratios relative to Hbeta (o3, r2, heii) or Halpha (n2, s2, oi), log10.
    # HII regions: strong-line calibrations of O/H, moved along the ionisation
    # parameter at fixed O/H ([OIII] up, [NII] down with U).
    sfp, ion = p.star_forming_lines, p.ionisation
    oh = props["oh"]
    dlogu = ion["logu_scatter"] * ndtri(u[:, U["logu"]])
    n2_sf = (oh - 8.90) / 0.57 + sfp["n2_scatter"] * ndtri(u[:, U["n2"]]) + ion["dn2_dlogu"] * dlogu
    o3n2_sf = ((8.73 - oh) / 0.32 + sfp["o3n2_scatter"] / 0.32 * ndtri(u[:, U["o3n2"]])
               + (ion["do3_dlogu"] - ion["dn2_dlogu"]) * dlogu)
    # No HII region lies above the maximum-starburst line, the envelope of
    # photoionisation models over all U (Kewley et al. 2001): high U at low O/H stops there.
    n2_sf = np.minimum(n2_sf, N2_MAX)
    o3_sf = np.minimum(o3n2_sf + n2_sf, kewley01(n2_sf) - KEWLEY_MARGIN)
    x = oh - 8.69
    r2_sf = _poly(sfp["r2_poly"], x) + sfp["r2_scatter"] * ndtri(u[:, U["r2"]])
    s2_sf = _poly(sfp["s2_poly"], x) + sfp["s2_scatter"] * ndtri(u[:, U["s2"]])
    oi_sf = s2_sf + _n(u[:, U["oi"]], sfp["oi_over_sii"])

    n2_agn = _n(u[:, U["agn_n2"]], ag["n2"]).clip(-0.6, 0.4)
    above = np.maximum(_n(u[:, U["agn_o3"]], ag["o3_above_kewley"]), 0.05)
    o3_agn = np.maximum(kewley01(n2_agn), -1.0) + above
    s2_agn = _n(u[:, U["agn_s2"]], ag["s2"])
    oi_agn = _n(u[:, U["agn_oi"]], ag["oi"])
    r2_agn = _n(u[:, U["agn_r2"]], ag["r2"])
    heii_agn = _n(u[:, U["agn_heii"]], ag["heii"])

    def pick(sf, agn):
        return np.where(is_agn, agn, sf)

    n2, o3 = pick(n2_sf, n2_agn), pick(o3_sf, o3_agn)
    s2, oi, r2 = pick(s2_sf, s2_agn), pick(oi_sf, oi_agn), pick(r2_sf, r2_agn)

    # Retired-galaxy floor (HOLMES / DIG), added to every galaxy: an EW against
    # the old stars' continuum, LIER ratios; it dominates where star formation is weak.
    # It shares the AGN ratios' uniforms: in an AGN the floor is negligible.
    rt = p.retired_lines
    ew_floor = 10 ** _n(u[:, U["floor"]], rt["log_ew_halpha"])
    ha_ret = (ew_floor * props["lum_halpha_old"] * ssp.L_SUN_ERG_S * props["fibre_frac"]
              / four_pi_d2 / FLUX_SCALE)
    hb_ret = ha_ret / lines["halpha"].case_b
    n2_ret = _n(u[:, U["agn_n2"]], rt["n2"])
    o3_ret = _n(u[:, U["agn_o3"]], rt["o3"])
    s2_ret, oi_ret, r2_ret = (_n(u[:, U[c]], rt[k]) for c, k in
                              (("agn_s2", "s2"), ("agn_oi", "oi"), ("agn_r2", "r2")))

    out = {k: np.zeros(n) for k in lines}
    for k, line in lines.items():
        if line.case_b > 0:
            out[k] = (hbeta + hb_ret) * line.case_b
    out["nii_6583"] = ha * 10**n2 + ha_ret * 10**n2_ret
    oiii_main, oiii_ret = hbeta * 10**o3, hb_ret * 10**o3_ret
    out["oiii_5007"] = oiii_main + oiii_ret
    r2_lin = hbeta * 10**r2 + hb_ret * 10**r2_ret
    # [OII]3729/3726 ~ 1.45 at n_e ~ 100 cm^-3 (Osterbrock & Ferland 2006)
    out["oii_3726"], out["oii_3729"] = r2_lin / 2.45, r2_lin * 1.45 / 2.45
    s2_tot = ha * 10**s2 + ha_ret * 10**s2_ret
    ratio = np.clip(_n(u[:, U["sii_ratio"]], sfp["sii_ratio"]), 0.5, 1.44)
    out["sii_6731"] = s2_tot / (1 + ratio)
    out["sii_6716"] = s2_tot - out["sii_6731"]
    out["oi_6300"] = ha * 10**oi + ha_ret * 10**oi_ret
    out["neiii_3869"] = out["oiii_5007"] * 10 ** _n(u[:, U["neiii"]], sfp["neiii_over_oiii"])
    out["hei_5876"] = (hbeta + hb_ret) * 10 ** _n(u[:, U["hei"]], sfp["hei_over_hbeta"])
    out["heii_4686"] = np.where(is_agn, hbeta * 10**heii_agn, 0.0)
    # [OIII]4363 from T_e (Osterbrock & Ferland 2006 eq. 5.4, n_e = 100 cm^-3):
    # (4959 + 5007) / 4363 = 7.90 exp(3.29e4 / T) / (1 + 4.5e-4 n_e / T^0.5);
    # AGN and the floor's low-density warm gas at ~1.5e4 K.
    te = np.where(is_agn, 1.5e4, sfp["te_t0"] * 10 ** (sfp["te_slope"] * (oh - 8.2)))

    def r_te(t):
        return 7.90 * np.exp(3.29e4 / t) / (1 + 4.5e-2 / np.sqrt(t))

    for k, line in lines.items():
        if line.doublet_of is not None:
            out[k] = out[line.doublet_of] * line.doublet_ratio
    o3_sum = 1.0 + lines["oiii_4959"].doublet_ratio
    out["oiii_4363"] = o3_sum * (oiii_main / r_te(te) + oiii_ret / r_te(1.5e4))
    out["halpha_floor"] = ha_ret

    # Dust: Cardelli curve at the gas E(B-V); AGN narrow lines their own A_V.
    av_agn = ag["balmer_decrement_av"][0] + ag["balmer_decrement_av"][1] * np.abs(ndtri(u[:, U["agn_av"]]))
    ebv = np.where(is_agn, av_agn / 3.1, props["ebv_gas"])
    for k, line in lines.items():
        out[k] = out[k] * 10 ** (-0.4 * cardelli(np.array(line.wavelength)) * ebv)
    out["halpha_floor"] = out["halpha_floor"] * 10 ** (-0.4 * cardelli(np.array(L.wavelength("halpha"))) * ebv)

    # Broad-line AGN: broad Balmer lines over the narrow Halpha, Case-B-like decrement.
    bl = p.broad_lines
    broad_ha = np.where(is_blagn, out["halpha"] * 10 ** _n(u[:, U["broad_ratio"]], bl["log_broad_over_narrow"]), 0.0)
    out["broad_halpha"] = broad_ha
    out["broad_hbeta"] = broad_ha / bl["decrement"]
    out["broad_hgamma"] = out["broad_hbeta"] * lines["hgamma"].case_b
    out["broad_hdelta"] = out["broad_hbeta"] * lines["hdelta"].case_b
    fwhm = bl["fwhm_kms"][0] + (bl["fwhm_kms"][1] - bl["fwhm_kms"][0]) * u[:, U["broad_fwhm"]]
    out["broad_sigma"] = fwhm / FWHM_PER_SIGMA
    # Greene & Ho (2005) eq. 1: L_Halpha,broad = 5.25e42 (lambda L_5100 / 1e44)^1.157 erg/s
    l_ha_b = broad_ha * FLUX_SCALE * four_pi_d2
    lam_l5100 = 1e44 * (np.maximum(l_ha_b, 1e-30) / 5.25e42) ** (1 / 1.157)
    out["agn_continuum"] = np.where(is_blagn, lam_l5100 / 5100.0 / four_pi_d2 / FLUX_SCALE, 0.0)
    out["ebv_lines"] = ebv
    return out


def catalogue_fluxes(fluxes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fluxes of the catalogue keys (blends summed), 1e-17 erg/s/cm2, narrow lines only."""
    return {k: sum(fluxes[c] for c in L.components(k)) for k in L.catalogue_keys()}
