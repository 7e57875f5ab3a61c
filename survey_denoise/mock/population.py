"""A galaxy population with known truth: masses, star formation, metals, dust.

Every galaxy gets one row of uniform random numbers from its own stream
(:func:`survey_denoise.rng.galaxy_rng` keyed by seed, purpose and id), and
every property is a deterministic, vectorised transform of that row.  A
galaxy's properties therefore do not depend on which other galaxies are
drawn with it, on chunking, or on the number of workers.

The relations (cited in ``data/mock_priors.yaml``): class fractions of
Scourfield et al. (2023); main sequence of Speagle et al. (2014); gas-phase
metallicity from the fundamental metallicity relation of Curti et al.
(2020); stellar metallicity after Gallazzi et al. (2005); Halpha
attenuation vs mass of Garn & Best (2010) with E(B-V)_star = 0.44
E(B-V)_gas (Calzetti et al. 2000); delayed-tau star-formation histories plus
a constant last-100-Myr component that sets today's SFR and optional bursts;
the ~10-Myr SFR that the lines see scatters log-normally about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
from scipy.special import ndtri

from .. import ssp
from ..rng import galaxy_rng
from .priors import CLASSES, Priors, default_priors

# Columns of the per-galaxy uniform row; adding a column at the end keeps
# every existing galaxy's draws unchanged.
U_COLUMNS = (
    "class", "z", "logmass", "ms_offset", "age", "tau", "burst", "burst_frac", "burst_age",
    "oh", "zstar", "dust", "sigma_star", "sigma_gas", "fibre",
    "o3n2", "n2", "r2", "s2", "oi", "neiii", "hei", "sii_ratio",
    "agn_lum", "agn_n2", "agn_o3", "agn_s2", "agn_oi", "agn_r2", "agn_heii", "agn_av",
    "broad_fwhm", "broad_ratio", "exposure",
    "sfr10", "logu", "floor",
)
U = {name: i for i, name in enumerate(U_COLUMNS)}
LINE_ONLY_COLUMNS = (
    "oh", "o3n2", "n2", "r2", "s2", "oi", "neiii", "hei", "sii_ratio",
    "agn_lum", "agn_n2", "agn_o3", "agn_s2", "agn_oi", "agn_r2", "agn_heii", "agn_av",
    "broad_fwhm", "broad_ratio", "sfr10", "logu", "floor",
)
"""Uniform columns that set line fluxes and nothing the stellar continuum depends on.

A broad-line AGN's power-law continuum follows its broad Halpha, so for that
class these columns do touch the continuum (:func:`redraw_lines` leaves it be).
The line widths (``sigma_gas``) are line-only too but are kept: they set how
a line is measured, not how bright it is."""
PURPOSE = "mock-population"
YOUNG_BINS = int(np.searchsorted(ssp.AGE_BIN_EDGES_YR, 1.0e8))
"""Age bins making up the 'current' constant star formation (0 to ~100 Myr)."""
HALPHA_WINDOW = (6480.0, 6650.0)
"""Rest range (A) whose mean stellar continuum is the reference of the line-floor EW."""


def uniforms(seed: int, ids: Sequence[int]) -> np.ndarray:
    """Per-galaxy uniform draws, shape (n_galaxy, len(U_COLUMNS)), float64 in (0, 1)."""
    out = np.empty((len(ids), len(U_COLUMNS)))
    for i, g in enumerate(ids):
        out[i] = galaxy_rng(seed, PURPOSE, int(g)).random(len(U_COLUMNS))
    return np.clip(out, 1e-12, 1 - 1e-12)


def _normal(u: np.ndarray, pair: Sequence[float]) -> np.ndarray:
    return pair[0] + pair[1] * ndtri(u)


def _between(u: np.ndarray, lo, hi) -> np.ndarray:
    return lo + (hi - lo) * u


@cache
def _distance_table(h0: float, om0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=h0, Om0=om0)
    zz = np.linspace(0.0, 1.0, 2001)
    return zz, cosmo.luminosity_distance(zz).to_value("Mpc"), cosmo.age(zz).to_value("Gyr")


def luminosity_distance_mpc(z: np.ndarray, priors: Priors) -> np.ndarray:
    """Luminosity distance (Mpc) in the priors' cosmology (tabulated, z <= 1)."""
    zz, dl, _ = _distance_table(priors.cosmology["H0"], priors.cosmology["Om0"])
    return np.interp(z, zz, dl)


def cosmic_age_gyr(z: np.ndarray, priors: Priors) -> np.ndarray:
    """Age of the Universe at redshift ``z``, Gyr."""
    zz, _, age = _distance_table(priors.cosmology["H0"], priors.cosmology["Om0"])
    return np.interp(z, zz, age)


def main_sequence(logmass: np.ndarray, z: np.ndarray, priors: Priors) -> np.ndarray:
    """log SFR (M_sun/yr) of the Speagle et al. (2014) main sequence."""
    p, t = priors.main_sequence, cosmic_age_gyr(z, priors)
    return (p["a1"] - p["a2"] * t) * logmass - (p["b1"] - p["b2"] * t)


def fmr_oh(logmass: np.ndarray, logsfr: np.ndarray, priors: Priors) -> np.ndarray:
    """12 + log(O/H) of the Curti et al. (2020) fundamental metallicity relation."""
    p = priors.fmr
    log_m0 = p["m0"] + p["m1"] * logsfr
    return p["Z0"] - p["gamma"] / p["beta"] * np.log10(1 + 10 ** (-p["beta"] * (logmass - log_m0)))


def _delayed_tau_cum(t: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Mass formed from 0 to t by SFR ~ t exp(-t/tau) (units tau^2)."""
    t = np.maximum(t, 0.0)
    return tau**2 - tau * np.exp(-t / tau) * (t + tau)


def _overlap(a0, a1, b0, b1):
    return np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0, None)


def sfh_weights(age_yr, tau_yr, burst_frac, burst_age_yr, burst_len_yr=1e8):
    """Mass formed per lookback-age bin for a delayed-tau history plus a burst.

    Returns
    -------
    weights : ndarray (n, n_age_bins)
        Sums to one per galaxy.
    sfr_now : ndarray (n,)
        Current SFR per unit mass formed, 1/yr.
    """
    e = ssp.AGE_BIN_EDGES_YR
    a, tau = age_yr[:, None], tau_yr[:, None]
    cum = _delayed_tau_cum(a - e[None, :], tau)          # mass formed before lookback e
    w = (cum[:, :-1] - cum[:, 1:]) / _delayed_tau_cum(a, tau)
    sfr_now = age_yr * np.exp(-age_yr / tau_yr) / _delayed_tau_cum(age_yr, tau_yr)
    b0, b1 = burst_age_yr[:, None], burst_age_yr[:, None] + burst_len_yr
    wb = _overlap(e[None, :-1], e[None, 1:], b0, b1) / burst_len_yr
    f = burst_frac[:, None]
    return (1 - f) * w + f * wb, (1 - burst_frac) * sfr_now


_TAU_GRID_GYR = np.geomspace(0.03, 300.0, 96)


def _invert_tau(age_gyr: np.ndarray, ssfr_per_gyr_formed: np.ndarray) -> np.ndarray:
    """tau (Gyr) at which a delayed-tau history of age T has today's SFR per mass formed = target.

    SFR/M_formed = T exp(-T/tau) / G(T) grows monotonically with tau (to 2/T);
    targets out of reach give the end of the tau grid.
    """
    t, tau = age_gyr[:, None], _TAU_GRID_GYR[None, :]
    s = t * np.exp(-t / tau) / _delayed_tau_cum(t, tau)
    target = ssfr_per_gyr_formed[:, None] * 1e9
    k = np.clip((s < target).sum(1), 1, _TAU_GRID_GYR.size - 1)
    rows = np.arange(age_gyr.size)
    s0, s1 = np.log(s[rows, k - 1] + 1e-300), np.log(s[rows, k] + 1e-300)
    f = np.clip((np.log(target[:, 0]) - s0) / np.maximum(s1 - s0, 1e-12), 0.0, 1.0)
    return np.exp(np.log(_TAU_GRID_GYR[k - 1]) + f * np.log(_TAU_GRID_GYR[k] / _TAU_GRID_GYR[k - 1]))


def draw(seed: int, ids: Sequence[int], *, priors: Priors | None = None,
         z_range: tuple[float, float] | None = None,
         classes: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Draw the properties of galaxies ``ids``.

    Parameters
    ----------
    seed : int
        Survey seed.
    ids : sequence of int
        Galaxy ids (the random stream of each galaxy is keyed by its id).
    priors : Priors, optional
        Default: the packaged ``mock_priors.yaml``.
    z_range : (float, float), optional
        Redshift range (default: the priors'); redshifts are uniform in
        comoving volume (p(z) ~ z^2 at these distances).
    classes : sequence of str, optional
        Restrict to these classes (fractions renormalised), e.g. ``["emission"]``.

    Returns
    -------
    dict of ndarray
        Keys: ``class`` (int8 index into :data:`CLASSES`), ``z``, ``logmass``
        (log M*/M_sun, living), ``logsfr`` (log M_sun/yr, last 100 Myr),
        ``logsfr10`` (log M_sun/yr, last ~10 Myr: what the lines see),
        ``lum_halpha_old`` (L_sun/A, intrinsic continuum near Halpha of the
        stars older than 100 Myr, whole galaxy),
        ``oh`` (12+log O/H), ``logzstar`` (log Z*/Z_sun), ``ebv_star``,
        ``ebv_gas`` (mag), ``sigma_star``, ``sigma_gas`` (km/s), ``fibre_frac``,
        ``age_gyr``, ``tau_gyr``, ``burst_frac``, ``burst_age_gyr``,
        ``mass_weighted_age_gyr``, ``dl_mpc``, ``sfh`` (n, n_age_bins: M_sun
        formed per age bin, whole galaxy), ``zweights`` (n, n_z: SSP
        metallicity weights), ``u`` (the uniform rows).
    """
    p = priors or default_priors()
    ids = np.asarray(ids)
    u = uniforms(seed, ids)
    n = ids.size
    names = list(classes) if classes is not None else list(CLASSES)
    unknown = set(names) - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown class(es) {sorted(unknown)}; known: {CLASSES}")
    frac = np.array([p.classes[c].fraction if c in names else 0.0 for c in CLASSES])
    cls = np.searchsorted(np.cumsum(frac / frac.sum()), u[:, U["class"]]).astype(np.int8)
    cls = np.minimum(cls, len(CLASSES) - 1)

    def per_class(attr: str, col: str, kind: str) -> np.ndarray:
        out = np.empty(n)
        for k, c in enumerate(CLASSES):
            sel = cls == k
            if sel.any():
                lo, hi = getattr(p.classes[c], attr)
                uu = u[sel, U[col]]
                out[sel] = _normal(uu, (lo, hi)) if kind == "normal" else _between(uu, lo, hi)
        return out

    zmin, zmax = z_range or (p.redshift["min"], p.redshift["max"])
    z = (zmin**3 + u[:, U["z"]] * (zmax**3 - zmin**3)) ** (1 / 3)
    logmass = np.clip(per_class("logmass", "logmass", "normal"), p.mass["min"], p.mass["max"])
    target_logsfr = main_sequence(logmass, z, p) + per_class("ms_offset", "ms_offset", "normal")

    age = np.minimum(per_class("age_gyr", "age", "uniform"), cosmic_age_gyr(z, p) - 0.1)
    has_burst = u[:, U["burst"]] < np.array([p.classes[c].burst_prob for c in CLASSES])[cls]
    bfrac = np.where(has_burst, per_class("burst_frac", "burst_frac", "uniform"), 0.0)
    bage = per_class("burst_age_gyr", "burst_age", "uniform")
    # tau is chosen so that the delayed-tau part carries a class-dependent share
    # of today's target SFR (the rest comes from the last 100 Myr), so the SFH,
    # the stellar mass and the SFR (hence Halpha) stay consistent.
    share = per_class("tau_share", "tau", "uniform")
    tau = _invert_tau(age, share * 10**target_logsfr / 10**logmass * 0.55 / (1 - bfrac))
    shape, sfr_shape = sfh_weights(age * 1e9, tau * 1e9, bfrac, np.minimum(bage, age) * 1e9)

    zstar_p = p.stellar_metallicity
    logzstar = np.clip(zstar_p["zero"] + zstar_p["slope"] * (logmass - 10.5)
                       + zstar_p["scatter"] * ndtri(u[:, U["zstar"]]), zstar_p["min"], zstar_p["max"])
    zw = metallicity_weights(logzstar)                         # (n, n_z)
    live = ssp.load_library().live_frac                         # (n_z, n_age)
    live_g = zw @ live                                          # (n, n_age)
    young = np.zeros(ssp.N_AGE_BINS)
    young[:YOUNG_BINS] = np.diff(ssp.AGE_BIN_EDGES_YR)[:YOUNG_BINS]
    young /= young.sum()
    live_shape = (shape * live_g).sum(1)
    live_young = (young[None, :] * live_g).sum(1)
    mstar, sfr_t = 10**logmass, 10**target_logsfr
    t_young = ssp.AGE_BIN_EDGES_YR[YOUNG_BINS]
    m_shape = (mstar - sfr_t * t_young * live_young) / np.maximum(live_shape - sfr_shape * t_young * live_young, 1e-3)
    sfr_y = sfr_t - m_shape * sfr_shape
    passive = (sfr_y < 0) | (m_shape <= 0)
    m_shape = np.where(passive, mstar / live_shape, m_shape)
    sfr_y = np.where(passive, 0.0, sfr_y)
    sfh = m_shape[:, None] * shape + (sfr_y * t_young)[:, None] * young[None, :]
    logsfr = np.log10(sfr_y + m_shape * sfr_shape + 1e-30)
    ages_mid = np.sqrt(np.maximum(ssp.AGE_BIN_EDGES_YR[:-1], 1e6) * ssp.AGE_BIN_EDGES_YR[1:])
    mwa = (sfh * live_g * ages_mid).sum(1) / (sfh * live_g).sum(1) / 1e9

    logsfr10, oh = _line_drivers(u, logmass, logsfr, p)
    # Old stars (> 100 Myr) power the retired-galaxy line floor (HOLMES).
    old = sfh.copy()
    old[:, :YOUNG_BINS] = 0.0
    lum_old = ((zw[:, :, None] * old[:, None, :]).reshape(n, -1)
               @ ssp.templates_on(*HALPHA_WINDOW, 16)).mean(1)

    d = p.dust
    x = logmass - 10.0
    gb = d["garn_best"]
    a_ha_sf = gb[0] + gb[1] * x + gb[2] * x**2 + gb[3] * x**3 + d["scatter"] * ndtri(u[:, U["dust"]])
    a_ha_passive = d["passive_width"] * np.abs(ndtri(u[:, U["dust"]]))
    star_forming = cls == CLASSES.index("emission")
    a_ha = np.clip(np.where(star_forming, a_ha_sf, a_ha_passive), 0.0, 3.5)
    from .dust import cardelli
    halpha_wave = 6564.6
    ebv_gas = a_ha / cardelli(np.array(halpha_wave))
    ebv_star = d["stellar_to_gas"] * ebv_gas

    ss = p.sigma_star
    sigma_star = np.clip(10 ** (ss["zero"] + ss["slope"] * (logmass - 10.5)
                                + ss["scatter"] * ndtri(u[:, U["sigma_star"]])), ss["min"], ss["max"])
    sg = p.sigma_gas
    is_agn = cls >= CLASSES.index("nlagn")
    mu = np.where(is_agn, sg["agn"][0], sg["star_forming"][0])
    sd = np.where(is_agn, sg["agn"][1], sg["star_forming"][1])
    sigma_gas = np.clip(10 ** (mu + sd * ndtri(u[:, U["sigma_gas"]])), sg["min"], sg["max"])
    ff = p.fibre_fraction
    fibre = np.clip(10 ** _normal(u[:, U["fibre"]], (ff["log_mean"], ff["scatter"])), ff["min"], ff["max"])

    return {
        "class": cls, "z": z, "logmass": logmass, "logsfr": logsfr, "logsfr10": logsfr10,
        "lum_halpha_old": lum_old, "oh": oh,
        "logzstar": logzstar, "ebv_star": ebv_star, "ebv_gas": ebv_gas,
        "sigma_star": sigma_star, "sigma_gas": sigma_gas, "fibre_frac": fibre,
        "age_gyr": age, "tau_gyr": tau, "burst_frac": bfrac, "burst_age_gyr": bage,
        "mass_weighted_age_gyr": mwa, "dl_mpc": luminosity_distance_mpc(z, p),
        "sfh": sfh, "zweights": zw, "u": u,
    }


def _line_drivers(u: np.ndarray, logmass: np.ndarray, logsfr: np.ndarray,
                  p: Priors) -> tuple[np.ndarray, np.ndarray]:
    """The ~10-Myr SFR and the gas-phase O/H: the properties drawn from :data:`LINE_ONLY_COLUMNS`."""
    # Lines see the last ~10 Myr, which scatter about the 100-Myr SFR of the SFH.
    logsfr10 = logsfr + _normal(u[:, U["sfr10"]], p.stochastic_sfr["log_sfr10_over_sfr100"])
    fp = p.fmr
    oh = np.clip(fmr_oh(logmass, logsfr, p) + fp["scatter"] * ndtri(u[:, U["oh"]]), fp["min"], fp["max"])
    return logsfr10, oh


def redraw_lines(props: dict[str, np.ndarray], rng: np.random.Generator, *,
                 priors: Priors | None = None) -> dict[str, np.ndarray]:
    """The same galaxies with their emission lines drawn again: a draw from p(lines | continuum).

    Every property in :data:`LINE_ONLY_COLUMNS` is redrawn from ``rng``, and
    what is derived from those columns (``logsfr10``, ``oh``) recomputed, so
    :func:`~survey_denoise.mock.nebular.line_fluxes` of the result is a draw
    of the lines from the population's own distribution given everything
    that shapes the stellar continuum (which is left exactly as it was).
    Broad-line AGN are returned unchanged, since their continuum follows
    their lines.

    Parameters
    ----------
    props : dict of ndarray
        Output of :func:`draw` (or rows of it: ``u``, ``class``, ``logmass``
        and ``logsfr`` are needed; other keys are copied through).
    rng : numpy.random.Generator
        Source of the new uniforms.
    priors : Priors, optional
        Default: the packaged ``mock_priors.yaml``.

    Returns
    -------
    dict of ndarray
        A shallow copy of ``props`` with new ``u``, ``logsfr10`` and ``oh``.
    """
    p = priors or default_priors()
    u = props["u"].copy()
    keep = props["class"] == CLASSES.index("blagn")
    cols = [U[c] for c in LINE_ONLY_COLUMNS]
    fresh = np.clip(rng.random((u.shape[0], len(cols))), 1e-12, 1 - 1e-12)
    u[:, cols] = np.where(keep[:, None], u[:, cols], fresh)
    logsfr10, oh = _line_drivers(u, props["logmass"], props["logsfr"], p)
    return {**props, "u": u, "logsfr10": logsfr10, "oh": oh}


_EXP_B = 1.6783
"""b of an exponential (Sersic n = 1) profile: half the light within R_e."""
_X = np.geomspace(1e-3, 1e3, 4001)
_F = 1 - (1 + _EXP_B * _X) * np.exp(-_EXP_B * _X)


def fibre_fraction_at(frac: np.ndarray, z: np.ndarray, diameter_arcsec: float, seeing_arcsec: float,
                      priors: Priors | None = None) -> np.ndarray:
    """Fraction of a galaxy's light in a fibre of ``diameter_arcsec`` at redshift ``z``.

    The population's fibre fractions (``frac``) are those of a 3-arcsec SDSS
    fibre at z ~ 0.04 (priors ``fibre_fraction``).  Each is read as the
    half-light radius of an exponential light profile that puts ``frac``
    inside that fibre, with the seeing's half-light radius (FWHM / 2) added
    in quadrature; the same physical radius is then seen at ``z``
    (angular-diameter distance of the priors' cosmology) through the new
    fibre and seeing.  Cheap and crude (one profile shape for every galaxy),
    but it keeps a galaxy at z = 0.4 from showing a 1.5-arcsec fibre the
    quarter of its light that a 3-arcsec one saw at z = 0.04.

    Parameters
    ----------
    frac : ndarray (n,)
        Fibre fractions of the reference fibre at the reference redshift.
    z : ndarray (n,)
        Redshifts.
    diameter_arcsec, seeing_arcsec : float
        Fibre diameter and seeing FWHM, arcsec.
    priors : Priors, optional

    Returns
    -------
    ndarray (n,)
        Fibre fractions, clipped to the priors' range.
    """
    p = priors or default_priors()
    ff = p.fibre_fraction
    z = np.asarray(z, np.float64)
    z_ref = ff["reference_z"]
    da = luminosity_distance_mpc(z, p) / (1 + z) ** 2
    da_ref = float(luminosity_distance_mpc(np.array(z_ref), p)) / (1 + z_ref) ** 2
    # R / R_e at the reference: invert the enclosed-light curve.
    x_ref = np.interp(np.clip(frac, _F[0], _F[-1]), _F, _X)
    re_ref = ff["reference_diameter_arcsec"] / 2 / x_ref                     # arcsec, seeing included
    re_gal = np.sqrt(np.maximum(re_ref**2 - (ff["reference_seeing_arcsec"] / 2) ** 2, 0.0))
    re_new = np.hypot(re_gal * da_ref / da, seeing_arcsec / 2)
    x = diameter_arcsec / 2 / re_new
    return np.clip(np.interp(x, _X, _F), ff["min"], ff["max"])


def metallicity_weights(logzstar: np.ndarray) -> np.ndarray:
    """Linear weights in log Z between the two bracketing SSP metallicities, (n, n_z)."""
    logz = np.log10(ssp.load_library().metallicity)
    x = np.clip(logzstar, logz[0], logz[-1])
    i = np.clip(np.searchsorted(logz, x) - 1, 0, logz.size - 2)
    t = (x - logz[i]) / (logz[i + 1] - logz[i])
    w = np.zeros((x.size, logz.size))
    rows = np.arange(x.size)
    w[rows, i] = 1 - t
    w[rows, i + 1] = t
    return w
