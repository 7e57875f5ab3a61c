"""One line flux from two measurements of a galaxy: its de-noised spectrum's and its input's.

A de-noiser's line flux and the flux of the same line in the spectrum it
read are two estimates of one quantity, each with an honest error, and
their errors are correlated: the de-noiser passes part of its input's noise
through.  For each line a single number describes that, the *noise gain*
``g``: how much of a change in the input's line flux, at fixed truth, the
de-noised flux follows (0: none, as a de-noiser that ignores the line's
pixels; 1: all of it).  The covariance of the two errors is then
``c = g sigma_in^2``, and the best linear unbiased combination is

    w = (sigma_in^2 - c) / (sigma_in^2 + sigma_den^2 - 2 c)
    F = w F_den + (1 - w) F_in
    sigma^2 = w^2 sigma_den^2 + (1 - w)^2 sigma_in^2 + 2 w (1 - w) c

with ``w`` held within [0, 1] (a weight outside would extrapolate past both
measurements on a covariance that is itself estimated).  Two more guards
keep the stated error from shrinking on an estimated correlation: a
negative gain counts as 0 (a de-noiser that moves against its input's
noise is not a thing the gain's estimate can tell from its own noise, and
treating the errors as independent then states the combined error too
wide, never too narrow), and the correlation ``c / (sigma_in sigma_den)``
is held at most :data:`MAX_CORRELATION` (at 1, two measurements of
different errors combine to an error of 0).  Where the input measures a line well the
combination follows the input; where the input's line is buried in noise,
the de-noiser's prior carries it; and neither can make the combined error
wider than the narrower of the two.

:func:`noise_gain` measures ``g`` on galaxies whose noise-free (or
low-noise) target spectrum is known: the input's difference from the
target is the added noise alone, and the regression of the de-noised
difference on it is ``g``.  A trained model measures it on its held-out
galaxies (:func:`survey_denoise.models.base.line_noise_gains`) and records
it in its card; the de-noised store, and its catalogue, carry it in
``attrs["denoise_line_noise_gain"]``, so :func:`combine_catalogues` combines
two catalogue stores of new galaxies without any target.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from .. import lines
from ..flags import Flag

GAIN_FLOOR = 1e-12
"""Fraction of the input's variance kept where the target's own variance would cancel it."""

MAX_CORRELATION = 0.95
"""Largest correlation of the two errors :func:`combine_lines` uses."""


def noise_gain(denoised: pd.DataFrame, noisy: pd.DataFrame, target: pd.DataFrame,
               keys=None) -> dict[str, float]:
    """Per line, the share of the input's noise that the de-noised flux follows.

    Parameters
    ----------
    denoised, noisy, target : DataFrame
        Catalogues of the same galaxies, row for row, in the same frame and
        units (``<key>_flux``, ``<key>_flux_err``): the de-noised spectra,
        the spectra the de-noiser read, and their targets (the spectra the
        inputs were made from by adding noise).
    keys : sequence of str, optional
        Lines (default: every catalogue line).

    Returns
    -------
    dict
        ``{key: g}``; NaN where fewer than 10 galaxies have all three.
        ``g = sum(a b / v) / sum(a^2 / v)`` with ``a = F_in - F_target``
        (the added noise), ``b = F_den - F_target`` and ``v`` the added
        noise's variance, ``sigma_in^2 - sigma_target^2``.
    """
    out = {}
    for key in keys or lines.catalogue_keys():
        f, e = f"{key}_flux", f"{key}_flux_err"
        fd = denoised[f].to_numpy(np.float64)
        fn, en = noisy[f].to_numpy(np.float64), noisy[e].to_numpy(np.float64)
        ft, et = target[f].to_numpy(np.float64), target[e].to_numpy(np.float64)
        ok = np.isfinite(fd) & np.isfinite(fn) & np.isfinite(en) & np.isfinite(ft) & np.isfinite(et) & (en > 0)
        if ok.sum() < 10:
            out[key] = float("nan")
            continue
        a, b = (fn - ft)[ok], (fd - ft)[ok]
        v = np.maximum(en[ok] ** 2 - et[ok] ** 2, GAIN_FLOOR * en[ok] ** 2)
        out[key] = float(np.sum(a * b / v) / np.sum(a * a / v))
    return out


def _covariance(g: float, en, ed):
    """Covariance of the input's and the de-noised errors: ``g sigma_in^2``, g >= 0, correlation capped."""
    return np.minimum(max(g, 0.0) * en ** 2, MAX_CORRELATION * en * ed)


def _weight(ed, en, c):
    """Weight of the de-noised flux in the best linear unbiased combination, within [0, 1]."""
    den = en ** 2 + ed ** 2 - 2 * c
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(den > 0, (en ** 2 - c) / np.where(den > 0, den, 1.0), 0.5), 0.0, 1.0)


def _error(w, ed, en, c):
    """1-sigma error of ``w F_den + (1 - w) F_in``."""
    return np.sqrt(np.maximum(w ** 2 * ed ** 2 + (1 - w) ** 2 * en ** 2 + 2 * w * (1 - w) * c, 0.0))


def combine_lines(denoised: pd.DataFrame, noisy: pd.DataFrame, gain: Mapping[str, float]) -> pd.DataFrame:
    """The combined line catalogue of a de-noised store and the store it was made from.

    Parameters
    ----------
    denoised, noisy : DataFrame
        Catalogues of the same galaxies, row for row, in the same frame
        (a de-noised store keeps its input's normalisation, so their fluxes
        compare directly): the de-noised spectra's and their inputs'.
    gain : mapping
        Per line, the noise gain (:func:`noise_gain`; below 0 taken as 0);
        a line without a finite gain keeps the input's measurement.

    Returns
    -------
    DataFrame
        The input's catalogue (galaxy columns, line widths) with every
        line's ``flux``, ``flux_err``, ``flux_err_stat`` (the formal parts
        combined with the same weights), ``flux_norm``, ``flux_norm_err``
        and ``snr`` combined, ``<key>_weight`` (the de-noised flux's weight,
        0-1) added, and ``<key>_status`` the OR of both catalogues' bits; a
        line only one catalogue measured keeps that one's value.  ``method``
        is ``combined:<input method>``.
    """
    if len(denoised) != len(noisy) or not np.array_equal(
            np.asarray(denoised["galaxy"]).astype(str), np.asarray(noisy["galaxy"]).astype(str)):
        raise ValueError("combine needs the same galaxies, in the same order, in both catalogues")
    out = noisy.copy()
    out["method"] = "combined:" + noisy["method"].astype(str)
    weights = {}
    for key in lines.catalogue_keys():
        g = float(gain.get(key, np.nan))
        cols = {s: f"{key}_{s}" for s in ("flux", "flux_err", "flux_err_stat", "flux_norm", "flux_norm_err")}
        fd, ed = (denoised[cols[s]].to_numpy(np.float64) for s in ("flux", "flux_err"))
        fn, en = (noisy[cols[s]].to_numpy(np.float64) for s in ("flux", "flux_err"))
        both = np.isfinite(fd) & np.isfinite(ed) & (ed > 0) & np.isfinite(fn) & np.isfinite(en) & (en > 0)
        only_den = np.isfinite(fd) & np.isfinite(ed) & ~(np.isfinite(fn) & np.isfinite(en))
        if not np.isfinite(g):
            both[:], only_den[:] = False, False
        # One weight for every unit: normalised fluxes and errors are the physical ones over the norm.
        w = np.where(both, _weight(ed, en, _covariance(g, en, ed)), np.where(only_den, 1.0, 0.0))
        for s, e in (("flux", "flux_err"), ("flux_norm", "flux_norm_err")):
            a, ea = denoised[cols[s]].to_numpy(np.float64), denoised[cols[e]].to_numpy(np.float64)
            b, eb = noisy[cols[s]].to_numpy(np.float64), noisy[cols[e]].to_numpy(np.float64)
            out[cols[s]] = np.where(both, w * a + (1 - w) * b, np.where(only_den, a, b))
            out[cols[e]] = np.where(both, _error(w, ea, eb, _covariance(g, eb, ea)), np.where(only_den, ea, eb))
        if cols["flux_err_stat"] in noisy and cols["flux_err_stat"] in denoised:
            sd = denoised[cols["flux_err_stat"]].to_numpy(np.float64)
            sn = noisy[cols["flux_err_stat"]].to_numpy(np.float64)
            stat = _error(w, sd, sn, _covariance(g, sn, sd) if np.isfinite(g) else 0.0)
            out[cols["flux_err_stat"]] = np.where(both, stat, np.where(only_den, sd, sn))
        flux, ferr = out[cols["flux"]].to_numpy(np.float64), out[cols["flux_err"]].to_numpy(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{key}_snr"] = np.where(ferr > 0, flux / ferr, np.nan)
        weights[f"{key}_weight"] = np.where(both | only_den, w, np.where(np.isfinite(fn), 0.0, np.nan))
        out[f"{key}_status"] = (noisy[f"{key}_status"].to_numpy(np.uint32)
                                | (denoised[f"{key}_status"].to_numpy(np.uint32)
                                   & np.uint32(Flag.LINE_NOT_IN_INPUT)))
    return pd.concat([out, pd.DataFrame(weights, index=out.index)], axis=1)


GAIN_ATTR = "denoise_line_noise_gain"
"""Attribute of a de-noised store, and of its catalogue, holding the model's gains per line."""


def recorded_gain(attrs: Mapping) -> dict[str, float]:
    """The gains a de-noised catalogue carries (:data:`GAIN_ATTR`), as floats; empty if none."""
    value = attrs.get(GAIN_ATTR) or {}
    value = json.loads(value) if isinstance(value, str) else value
    return {k: (float("nan") if v is None else float(v)) for k, v in dict(value).items()}


def combine_catalogues(denoised: xr.Dataset, noisy: xr.Dataset,
                       gain: Mapping[str, float] | None = None) -> xr.Dataset:
    """Lazily combine a de-noised store's catalogue with its input's, chunk by chunk.

    Parameters
    ----------
    denoised, noisy : xarray.Dataset
        Catalogue stores (:func:`survey_denoise.fitting.fit_lines`) of the
        same galaxies in the same order: the de-noised spectra's and those
        of the spectra the de-noiser read.
    gain : mapping, optional
        Per line, the noise gain (default: the one the de-noised catalogue
        carries, :data:`GAIN_ATTR`); a line without a finite one keeps the
        input's measurement (weight 0).

    Returns
    -------
    xarray.Dataset
        Lazy, chunked as ``denoised``: the columns of :func:`combine_lines`
        (with their units), the input catalogue's attrs with a ``combine``
        step in the provenance, and ``flux_err_rule`` saying how the errors
        were combined.

    Raises
    ------
    ValueError
        When the galaxies differ, or no gain is given or recorded (a model
        trained before gains were measured: recalibrate it,
        :meth:`~survey_denoise.models.base.Denoiser.recalibrate`).
    """
    steps = [step.get("step") for step in json.loads(denoised.attrs.get("provenance") or "[]")]
    if gain is None and "denoise" not in steps:
        raise ValueError("the first catalogue is not of de-noised spectra (no 'denoise' step in its "
                         "provenance)")
    if gain is None and GAIN_ATTR not in denoised.attrs:
        raise ValueError("the de-noised catalogue carries no line noise gains (attrs "
                         f"{GAIN_ATTR!r}): its model was trained before they were measured; "
                         "measure them ('survey-denoise recalibrate MODEL_DIR'), de-noise again, "
                         "or pass gain")
    # A line whose gain the model could not measure (too few validation galaxies) keeps the input's.
    gain = dict(gain) if gain is not None else recorded_gain(denoised.attrs)
    if denoised.sizes["galaxy"] != noisy.sizes["galaxy"] or not np.array_equal(
            np.asarray(denoised["galaxy"].values).astype(str), np.asarray(noisy["galaxy"].values).astype(str)):
        raise ValueError("combine needs catalogues of the same galaxies in the same order "
                         f"({denoised.sizes['galaxy']} and {noisy.sizes['galaxy']} rows)")
    if denoised.chunks:
        noisy = noisy.chunk({"galaxy": denoised.chunks["galaxy"]})
    else:
        noisy = noisy.chunk({"galaxy": -1})
        denoised = denoised.chunk({"galaxy": -1})
    template = noisy.copy()
    for key in lines.catalogue_keys():
        template[f"{key}_weight"] = xr.zeros_like(noisy[f"{key}_flux"]).assign_attrs(
            description=f"{key}: weight of the de-noised flux in the combined flux (0: the input's alone)")
    template["method"] = template["method"].astype(object)
    out = xr.map_blocks(_combine_block, denoised, args=[noisy], kwargs={"gain": gain}, template=template)
    from ..schema import add_provenance

    out.attrs = add_provenance(noisy.attrs, "combine", gain={k: _json_float(v) for k, v in gain.items()},
                               denoised_provenance=json.loads(denoised.attrs.get("provenance", "[]")))
    out.attrs["flux_err_rule"] = (
        "best linear unbiased combination of the de-noised and the input's line flux, their errors "
        "correlated by c = g sigma_in^2 (g: the de-noiser's noise gain per line, below 0 taken as 0; "
        f"correlation at most {MAX_CORRELATION}); de-noised weight w within [0, 1]; "
        "sigma^2 = w^2 sigma_den^2 + (1 - w)^2 sigma_in^2 + 2 w (1 - w) c")
    return out


def _json_float(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _combine_block(denoised: xr.Dataset, noisy: xr.Dataset, gain: Mapping[str, float]) -> xr.Dataset:
    frame = combine_lines(_frame(denoised), _frame(noisy), gain)
    out = xr.Dataset(coords={"galaxy": noisy["galaxy"].values})
    for name in frame.columns:
        if name == "galaxy":
            continue
        values = frame[name].to_numpy()
        attrs = noisy[name].attrs if name in noisy else {}
        if name in noisy and noisy[name].dtype.kind in "iuf":
            values = values.astype(noisy[name].dtype)
        out[name] = ("galaxy", values if name != "method" else values.astype(object), attrs)
    return out


def _frame(cat: xr.Dataset) -> pd.DataFrame:
    frame = cat.compute().to_dataframe().reset_index()
    for name in ("galaxy", "method"):
        if name in frame and frame[name].dtype.kind not in "iuf":
            frame[name] = frame[name].astype(str)
    return frame
