"""Gas-phase metallicities from strong-line ratios, with the reason when there is none.

Calibrations (Pettini & Pagel 2004, MNRAS 348, L59):

* O3N2 = log10(([OIII]5007 / Hβ) / ([NII]6583 / Hα)),
  12 + log(O/H) = 8.73 − 0.32 × O3N2, valid for −1 < O3N2 < 1.9;
* N2 = log10([NII]6583 / Hα),
  12 + log(O/H) = 8.90 + 0.57 × N2, valid for −2.5 < N2 < −0.3.

A calibration is a fit to HII regions of known (T_e-based) O/H, and
galaxies scatter about it: 1σ = 0.14 dex for O3N2 and 0.18 dex for N2
(as PP04 quote with their eqs. 3 and 1; the ionisation parameter at fixed
O/H moves the line ratios).
So a metallicity carries two errors: ``oh_err_stat``, the line-flux errors
propagated through the index (what a repeat observation would change), and
``oh_err``, that and the calibration's own scatter in quadrature (how far
the true O/H may be).  A mock whose true O/H and noise-free fluxes are both
known checks each against its own truth (:mod:`survey_denoise.science.mzr_test`).

A metallicity is measured only where the fit succeeded, the Hα S/N exceeds a
threshold (15 by default, as in Scourfield et al. 2023 following Scholte &
Saintonge 2023), every line in the ratio has a positive flux, and the index
lies inside the calibration's range.  Optionally the galaxy must also be
star-forming on the BPT diagram (below the Kauffmann et al. 2003 or the
Kewley et al. 2001 curve), which matters for real data; the mock MZR sample is
star-forming by construction.

Every function is vectorised over numpy arrays; :func:`metallicity` works on a
whole line-flux catalogue (the columns of ``survey_denoise.fitting``) and
returns one row per galaxy with the metallicity, its error and a bit mask of
the reasons it is missing.  The line ratios are ratios of lines close in
wavelength, so normalised and physical fluxes give the same answer.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..fitting.catalogue import not_covered
from ..flags import FIT_INFORMATIONAL

LN10 = float(np.log(10.0))


class OHFlag(enum.IntFlag):
    """Why a galaxy has no metallicity (bits may combine)."""

    OK = 0
    FIT_FAILED = 1
    """The line fit of this galaxy did not succeed (catalogue ``status``)."""
    MISSING_LINE = 2
    """A needed flux or flux error is NaN or missing."""
    LOW_HALPHA_SNR = 4
    """Hα S/N at or below the threshold."""
    NONPOSITIVE_FLUX = 8
    """A line of the ratio has zero or negative flux: the logarithm is undefined."""
    LOW_LINE_SNR = 16
    """A line of the ratio (other than Hα) is below its optional S/N threshold."""
    OUT_OF_RANGE = 32
    """The index is outside the calibration's validity range."""
    NOT_STAR_FORMING = 64
    """Above the chosen BPT demarcation curve (AGN or composite)."""


@dataclass(frozen=True)
class Calibration:
    """A linear strong-line calibration 12 + log(O/H) = intercept + slope × index.

    Attributes
    ----------
    name : str
        Short name (``"o3n2"``, ``"n2"``).
    intercept, slope : float
        Coefficients of the linear relation (dex, dex per dex).
    valid : tuple of float
        Open interval of the index where the calibration holds.
    lines : tuple of str
        Catalogue keys the index needs.
    reference : str
        Where the numbers come from.
    scatter : float
        1σ scatter (dex) of the calibrating sample's O/H about the relation:
        the error of a metallicity from noise-free fluxes.
    """

    name: str
    intercept: float
    slope: float
    valid: tuple[float, float]
    lines: tuple[str, ...]
    reference: str
    scatter: float


O3N2 = Calibration(
    "o3n2", 8.73, -0.32, (-1.0, 1.9), ("oiii_5007", "hbeta", "nii_6583", "halpha"),
    "Pettini & Pagel 2004, MNRAS 348, L59, eq. 3", 0.14,
)
N2 = Calibration(
    "n2", 8.90, 0.57, (-2.5, -0.3), ("nii_6583", "halpha"),
    "Pettini & Pagel 2004, MNRAS 348, L59, eq. 1", 0.18,
)
CALIBRATIONS: dict[str, Calibration] = {c.name: c for c in (O3N2, N2)}

BPT_CURVES: dict[str, tuple[float, float, float]] = {
    # log([OIII]/Hβ) = a / (log([NII]/Hα) − b) + c
    "kauffmann03": (0.61, 0.05, 1.30),  # Kauffmann et al. 2003, MNRAS 346, 1055, eq. 1
    "kewley01": (0.61, 0.47, 1.19),  # Kewley et al. 2001, ApJ 556, 121, eq. 5
}


def _log_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(np.asarray(num, float) / np.asarray(den, float))
    return np.where(np.isfinite(out), out, np.nan)


def o3n2_index(oiii_5007, hbeta, nii_6583, halpha) -> np.ndarray:
    """O3N2 = log10(([OIII]5007/Hβ) / ([NII]6583/Hα)); NaN where undefined."""
    return _log_ratio(oiii_5007, hbeta) - _log_ratio(nii_6583, halpha)


def n2_index(nii_6583, halpha) -> np.ndarray:
    """N2 = log10([NII]6583/Hα); NaN where undefined."""
    return _log_ratio(nii_6583, halpha)


def strong_line_index(fluxes: Mapping[str, np.ndarray], calibration: Calibration | str = O3N2) -> np.ndarray:
    """The calibration's index (dex) from line fluxes keyed by catalogue key.

    Parameters
    ----------
    fluxes : mapping of str to array
        At least ``calibration.lines``; any common flux unit.
    calibration : Calibration or str
        :data:`O3N2` or :data:`N2`.
    """
    cal = CALIBRATIONS[calibration] if isinstance(calibration, str) else calibration
    if cal.name == "o3n2":
        return o3n2_index(fluxes["oiii_5007"], fluxes["hbeta"], fluxes["nii_6583"], fluxes["halpha"])
    return n2_index(fluxes["nii_6583"], fluxes["halpha"])


def index_error(fluxes: Sequence[np.ndarray], errors: Sequence[np.ndarray]) -> np.ndarray:
    """1σ error of a sum/difference of log10 fluxes, to first order.

    σ(index)² = Σ (σ_i / (ln 10 · f_i))² for independent line errors.
    """
    var = np.zeros(np.broadcast(*fluxes).shape)
    for f, e in zip(fluxes, errors, strict=True):
        with np.errstate(divide="ignore", invalid="ignore"):
            var = var + (np.asarray(e, float) / (LN10 * np.asarray(f, float))) ** 2
    return np.sqrt(var)


def oh_from_index(index, calibration: Calibration | str = O3N2) -> np.ndarray:
    """12 + log(O/H) from the index, without applying the validity range."""
    cal = CALIBRATIONS[calibration] if isinstance(calibration, str) else calibration
    return cal.intercept + cal.slope * np.asarray(index, float)


def in_range(index, calibration: Calibration | str = O3N2) -> np.ndarray:
    """True where the index lies strictly inside the calibration's validity range."""
    cal = CALIBRATIONS[calibration] if isinstance(calibration, str) else calibration
    x = np.asarray(index, float)
    with np.errstate(invalid="ignore"):
        return (x > cal.valid[0]) & (x < cal.valid[1])


def bpt_star_forming(log_nii_ha, log_oiii_hb, curve: str = "kauffmann03") -> np.ndarray:
    """True below the BPT demarcation ``curve`` (and left of its asymptote).

    Parameters
    ----------
    log_nii_ha, log_oiii_hb : array_like
        log10([NII]6583/Hα) and log10([OIII]5007/Hβ).
    curve : {"kauffmann03", "kewley01"}
        Kauffmann et al. (2003) empirical or Kewley et al. (2001) theoretical
        maximum-starburst line.
    """
    if curve not in BPT_CURVES:
        raise ValueError(f"unknown BPT curve {curve!r}; choose one of {sorted(BPT_CURVES)}")
    a, b, c = BPT_CURVES[curve]
    x = np.asarray(log_nii_ha, float)
    y = np.asarray(log_oiii_hb, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        below = y < a / (x - b) + c
        return np.isfinite(x) & np.isfinite(y) & (x < b) & below


def fit_succeeded(status) -> np.ndarray:
    """Interpret a catalogue ``status`` column: 0 or only :data:`~survey_denoise.flags.FIT_INFORMATIONAL` bits (or "ok") mean the fit succeeded."""
    s = pd.Series(status)
    if pd.api.types.is_bool_dtype(s):
        return ~s.to_numpy()
    if pd.api.types.is_numeric_dtype(s):
        # Any bit but the informational ones (FIT_PRIOR_REJECTED) is a failure; a galaxy
        # missing from the catalogue (NaN) was not fitted.
        v = s.to_numpy(dtype=np.float64)
        known = np.isfinite(v) & (v >= 0)
        return known & ((np.where(known, v, 1).astype(np.int64) & ~int(FIT_INFORMATIONAL)) == 0)
    return s.astype(str).str.lower().isin(["ok", "0", "success", "converged"]).to_numpy()


def _column(cat: pd.DataFrame, key: str, suffix: str) -> np.ndarray:
    name = f"{key}_{suffix}"
    if name not in cat.columns:
        return np.full(len(cat), np.nan)
    # a line the spectrum did not cover is missing, never faint
    return np.where(not_covered(cat, key), np.nan, cat[name].to_numpy(dtype=float))


def metallicity(
    cat: pd.DataFrame,
    *,
    calibration: str = "o3n2",
    min_halpha_snr: float = 15.0,
    min_line_snr: float | None = None,
    bpt: str | None = None,
    units: str = "physical",
) -> pd.DataFrame:
    """Metallicity of every galaxy in a line-flux catalogue.

    Parameters
    ----------
    cat : DataFrame
        Catalogue with ``<key>_flux``, ``<key>_flux_err`` (or ``_flux_norm``,
        ``_flux_norm_err``) and ``<key>_snr`` columns; ``galaxy`` and ``status``
        are used when present.  Missing line columns, NaN fluxes or errors and
        lines whose ``<key>_status`` says LINE_NOT_COVERED (not observed)
        count as missing lines (OHFlag.MISSING_LINE), not as faint ones.
    calibration : {"o3n2", "n2"}
        Pettini & Pagel (2004) calibration.
    min_halpha_snr : float
        Hα S/N must exceed this (paper: 15).
    min_line_snr : float or None
        Optional S/N floor for the other lines of the ratio.
    bpt : {None, "kauffmann03", "kewley01"}
        Keep only galaxies below this BPT curve (needs [OIII], Hβ, [NII], Hα).
    units : {"physical", "norm"}
        Which flux columns to use (the ratio is the same up to rounding).

    Returns
    -------
    DataFrame
        Same index as ``cat``: ``galaxy`` (if present), ``index`` (O3N2 or N2,
        dex), ``oh`` (12 + log(O/H), NaN where not measurable), ``oh_err``
        (1σ, dex: the line-flux errors and the calibration's scatter in
        quadrature), ``oh_err_stat`` (1σ, dex: the line-flux errors alone),
        ``oh_flags`` (:class:`OHFlag` bits, 0 = measured) and
        ``has_oh`` (bool).
    """
    if calibration not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {calibration!r}; choose one of {sorted(CALIBRATIONS)}")
    if units not in ("physical", "norm"):
        raise ValueError(f"units must be 'physical' or 'norm', not {units!r}")
    cal = CALIBRATIONS[calibration]
    fsuf, esuf = ("flux", "flux_err") if units == "physical" else ("flux_norm", "flux_norm_err")
    need = set(cal.lines) | ({"oiii_5007", "hbeta", "nii_6583", "halpha"} if bpt else set())
    f = {k: _column(cat, k, fsuf) for k in need}
    e = {k: _column(cat, k, esuf) for k in need}
    snr = {k: _column(cat, k, "snr") for k in need}
    n = len(cat)
    flags = np.zeros(n, dtype=np.int64)

    if "status" in cat.columns:
        flags |= np.where(fit_succeeded(cat["status"]), 0, int(OHFlag.FIT_FAILED))
    missing = np.zeros(n, bool)
    nonpos = np.zeros(n, bool)
    for k in cal.lines:
        missing |= ~np.isfinite(f[k]) | ~np.isfinite(e[k])
        with np.errstate(invalid="ignore"):
            nonpos |= np.isfinite(f[k]) & (f[k] <= 0)
    flags |= np.where(missing, int(OHFlag.MISSING_LINE), 0)
    flags |= np.where(nonpos, int(OHFlag.NONPOSITIVE_FLUX), 0)
    ha_snr = snr["halpha"]
    with np.errstate(invalid="ignore"):
        flags |= np.where(~(ha_snr > min_halpha_snr), int(OHFlag.LOW_HALPHA_SNR), 0)
        if min_line_snr is not None:
            low = np.zeros(n, bool)
            for k in cal.lines:
                if k != "halpha":
                    low |= ~(snr[k] > min_line_snr)
            flags |= np.where(low, int(OHFlag.LOW_LINE_SNR), 0)

    index = strong_line_index(f, cal)
    index_err = index_error([f[k] for k in cal.lines], [e[k] for k in cal.lines])
    flags |= np.where(np.isfinite(index) & ~in_range(index, cal), int(OHFlag.OUT_OF_RANGE), 0)
    if bpt is not None:
        sf = bpt_star_forming(n2_index(f["nii_6583"], f["halpha"]),
                              _log_ratio(f["oiii_5007"], f["hbeta"]), bpt)
        flags |= np.where(sf, 0, int(OHFlag.NOT_STAR_FORMING))

    ok = flags == 0
    out = pd.DataFrame(index=cat.index)
    if "galaxy" in cat.columns:
        out["galaxy"] = cat["galaxy"].to_numpy()
    out["index"] = index
    out["oh"] = np.where(ok, oh_from_index(index, cal), np.nan)
    stat = abs(cal.slope) * index_err
    out["oh_err"] = np.where(ok, np.hypot(stat, cal.scatter), np.nan)
    out["oh_err_stat"] = np.where(ok, stat, np.nan)
    out["oh_flags"] = flags
    out["has_oh"] = ok
    out.attrs.update(calibration=cal.name, reference=cal.reference, calibration_scatter=cal.scatter,
                     min_halpha_snr=min_halpha_snr, min_line_snr=min_line_snr, bpt=bpt)
    return out


def flag_counts(flags) -> dict[str, int]:
    """How many galaxies carry each :class:`OHFlag` bit (a galaxy may count twice)."""
    flags = np.asarray(flags, dtype=np.int64)
    out = {"measured": int(np.sum(flags == 0))}
    for bit in OHFlag:
        if bit.value:
            out[bit.name.lower()] = int(np.sum((flags & bit.value) != 0))
    return out
