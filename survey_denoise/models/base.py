"""The interface every de-noiser shares, in the scikit-learn style.

``__init__`` stores hyper-parameters only; :meth:`Denoiser.fit` learns and
returns ``self`` (learned state ends in ``_``); :meth:`Denoiser.encode`
gives the latent mean, :meth:`Denoiser.decode` maps it back to a spectrum
and :meth:`Denoiser.denoise` does both.  :meth:`Denoiser.save` writes one
folder (artefact + ``card.json`` + ``uncertainty.npz``) and
:meth:`Denoiser.load` reads it back, checking the card against the data it
will be applied to.

Uncertainty: ``denoise(X, return_var=True)`` also gives, per galaxy and
pixel, the variance of the de-noised flux about the *true* spectrum.  After
training, :func:`held_out_residuals` compares the de-noised validation
galaxies with their targets and removes the targets' own flux variance
(``1/w - 2e-6`` from the loss weights, paper eq. 3), since a noisy target
inflates every residual.  A network trained with the Gaussian likelihood
predicts its variance per galaxy and pixel; the held-out residuals fix one
scale factor for it (``variance_scale``, set so that 68.27 % of held-out
pixels lie within 1 sigma: a network over-confident on unseen galaxies
is widened).  A model that predicts none (PCA, a ``paper``-preset AE/VAE)
gets a held-out residual variance per pixel (its 68.27 % quantile over
galaxies), the same for every galaxy.  The method is
recorded in the card's ``uncertainty`` section.

Inputs are float32 arrays (n_galaxy, n_pixel) of normalised flux, or
rest-frame Datasets (then the grid and normalisation come from the
dataset's attrs and are recorded in, or checked against, the card).
"""

from __future__ import annotations

import abc
import inspect
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..grid import GRID
from . import card as cards
from .data import SOFTENING, SpectraPairs, as_flux, iter_rows, model_input, split

UNCERTAINTY_FILE = "uncertainty.npz"
"""Per-pixel held-out residual variance, saved next to the artefact (plain arrays)."""


def target_variance(w: np.ndarray) -> np.ndarray:
    """The target's own flux variance behind loss weights ``w = 1/(t + 2e-6)``; NaN where ``w = 0``.

    Parameters
    ----------
    w : ndarray
        Pixel weights, (normalised flux)^-2.

    Returns
    -------
    ndarray
        ``t`` in (normalised flux)^2, float64.
    """
    w = np.asarray(w, np.float64)
    with np.errstate(divide="ignore"):
        return np.where(w > 0, np.maximum(1.0 / np.where(w > 0, w, 1.0) - SOFTENING, 0.0), np.nan)


ONE_SIGMA = 0.6827
"""Fraction of a Gaussian within 1 sigma: the held-out coverage the variances are set to."""
TWO_SIGMA = 0.9545
"""Fraction within 2 sigma: line errors are also set to cover this (:func:`line_error_scales`)."""

MAX_FRAC = 0.5
"""Largest fractional term of a line error (:func:`line_error_scales`); searched in steps of 0.005."""

CORRELATION_WINDOW = 5
"""Lags 1 ... 4 of the pixel-error correlation are measured (a line and its wings; ~276 km/s a pixel)."""

MIN_ERROR_RATIO = 0.5
"""Median de-noised / target line error below which the targets cannot calibrate a line:
at 0.5 the de-noised error adds only 12 % to the combined one."""

MIN_LINE_ROWS = 30
"""Held-out galaxies whose target detects a line needed to calibrate that line's errors."""

CALIBRATION_ROWS = 5_000
"""Held-out galaxies kept in memory for the calibration (the first ones, if more; ~100 MB)."""


def held_out_residuals(model, pairs: SpectraPairs, rows: np.ndarray) -> dict:
    """Per-pixel residual variance about the truth, and the predicted variance's scale.

    Both are set by 1-sigma coverage on held-out galaxies rather than by the
    mean squared residual: pixel errors are far from Gaussian (most pixels
    are reproduced closely, pixels on strong lines of a few galaxies are
    not), and a mean dominated by those few would leave the rest covered
    90 % of the time instead of 68 %.  With the target's own variance ``t``
    (from the weights) and the residual ``r = d - y``:

    * ``pixel_var`` (npix,): per pixel, the 68.27 % quantile over galaxies of
      ``r^2 - t`` (for ``r ~ N(0, m + t)`` that is ``m``, the error about the
      truth), floored at 1e-3 of its median (no pixel is known exactly);
    * the target is compared in the output's normalisation (for a PCA
      model, the noisy input's: ``y x`` :func:`frame_ratio` per galaxy);
    * ``variance_scale``: for a model predicting ``v``, the ``s`` with which
      68.27 % of held-out pixels have ``r^2 <= s v + t`` (bisection), else 1.

    Pixels with zero weight (masked targets) are left out, and for a
    noise-conditioned model (``pairs.with_ivar``) so are pixels missing from
    the input: their prediction is an extrapolation, which the de-noised
    store gives no ivar (:mod:`survey_denoise.inference`).  At most
    :data:`CALIBRATION_ROWS` galaxies are used.

    * ``pixel_correlation``: the correlation of the errors of pixels ``L =
      1 ... CORRELATION_WINDOW - 1`` apart, ``sum r_i r_(i+L) / sum (r_i^2 -
      t_i)`` clipped to [-1, 1] (the targets' noise is independent between
      pixels, so it enters the denominator only and is removed there).  The
      line fitter uses it to turn pixel errors into line errors.

    Returns
    -------
    dict
        ``pixel_var`` (float64), ``variance_scale`` (float),
        ``pixel_correlation`` (list of float, by lag), ``n_galaxy``, and
        ``held_out``: the galaxies' de-noised spectra, targets (in the
        output's normalisation), variances, inputs (their own
        normalisation), the inputs' ivar (:func:`input_ivar`) and
        :func:`frame_ratio` per galaxy (``input_norm_ratio``), for
        :func:`line_error_scales` and :func:`line_noise_gains`.
    """
    predicts = model.predicts_variance()
    pairs.with_ivar = model.conditioned
    rows = np.sort(rows)[:CALIBRATION_ROWS]
    factor = np.ones(rows.size)
    if model.output_in_input_norm:
        # The output keeps the noisy input's normalisation; the target has its own.
        factor = _frame_ratio_at(pairs, rows)
    r2, tv, vv, dd, yy, xx, n = [], [], [], [], [], [], 0
    lagged = np.zeros(CORRELATION_WINDOW)
    for x, y, w in iter_rows(pairs, rows):
        f = factor[n:n + x.shape[0], None]
        d, v = model._denoise_var(x) if predicts else (model._denoise(x), None)
        r = d.astype(np.float64) - y * f
        dd.append(np.asarray(d, np.float32))
        xx.append(np.asarray(x[:, :pairs.npix], np.float32))
        yy.append(np.asarray(y * f, np.float32))
        if pairs.with_ivar:
            w = np.where(x[:, pairs.npix:] > 0, w, 0.0)
        r = np.where(np.isfinite(r) & (w > 0), r, 0.0)
        for lag in range(1, CORRELATION_WINDOW):
            lagged[lag] += float(np.sum(r[:, lag:] * r[:, :-lag]))
        r2.append(r ** 2)
        # The target's variance, then its rescaling: the softening belongs to the
        # weights in the target's own normalisation, and subtracting it after
        # dividing w by f^2 < 1 would clip most pixels' variance to 0.
        tv.append(target_variance(w) * f ** 2)
        if predicts:
            vv.append(np.asarray(v, np.float64))
        n += x.shape[0]
    r2, t = np.concatenate(r2), np.concatenate(tv)
    good = np.isfinite(r2) & np.isfinite(t)
    model_sq = float(np.sum(np.where(good, r2 - np.where(good, t, 0.0), 0.0)))
    rho = (np.clip(lagged[1:] / model_sq, -1.0, 1.0) if model_sq > 0
           else np.ones(CORRELATION_WINDOW - 1)).tolist()
    excess = np.where(good, r2 - np.where(good, t, 0.0), np.nan)
    with np.errstate(all="ignore"):
        pixel_var = np.nanquantile(excess, ONE_SIGMA, axis=0) if excess.size else np.full(pairs.npix, np.nan)
    positive = pixel_var[np.isfinite(pixel_var) & (pixel_var > 0)]
    floor = 1e-3 * float(np.median(positive)) if positive.size else 1e-12
    pixel_var = np.where(np.isfinite(pixel_var), np.maximum(pixel_var, floor),
                         float(np.max(positive)) if positive.size else floor)
    scale = 1.0
    if predicts:
        v = np.concatenate(vv)
        ok = good & np.isfinite(v) & (v > 0)
        scale = float(np.exp(_coverage_scale(r2[ok], v[ok], t[ok], (-12.0, 12.0))))
    var = (scale * v if predicts else np.broadcast_to(pixel_var, r2.shape)).astype(np.float32)
    held = {"denoised": np.concatenate(dd), "target": np.concatenate(yy),
            "target_var": t.astype(np.float32), "var": var, "good": good & (t > 0),
            "input": np.concatenate(xx), "input_ivar": input_ivar(pairs, rows),
            "input_norm_ratio": _frame_ratio_at(pairs, rows)}
    return {"pixel_var": pixel_var, "variance_scale": scale, "pixel_correlation": rho,
            "n_galaxy": int(n), "held_out": held}


def _coverage_scale(sq: np.ndarray, var: np.ndarray, floor: np.ndarray, bounds: tuple[float, float],
                    level: float = ONE_SIGMA) -> float:
    """log s with which ``level`` of ``sq <= s var + floor`` hold, by bisection within ``bounds`` (log s)."""
    lo, hi = bounds
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if np.mean(sq <= np.exp(mid) * var + floor) < level:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def input_ivar(pairs: SpectraPairs, rows: np.ndarray) -> np.ndarray | None:
    """The noisy input's inverse variance at ``rows`` (sorted), 0 on masked pixels; None if unknown.

    Datasets carry it; arrays only when given ``input_ivar`` (an array
    without one has no noise to speak of, and no gain can be measured).
    """
    if pairs.is_dataset:
        import dask

        with dask.config.set(scheduler="synchronous"):
            part = pairs.noisy[["ivar", "mask"]].isel(galaxy=rows).compute()
        iv = np.asarray(part["ivar"].values, np.float32)
        return np.where(np.isfinite(iv) & ~np.asarray(part["mask"].values, bool), iv, np.float32(0))
    if pairs.input_ivar is None:
        return None
    iv = np.asarray(pairs.input_ivar[rows], np.float32)
    return np.where(np.isfinite(iv), iv, np.float32(0))


def frame_ratio(noisy, clean) -> np.ndarray:
    """Per galaxy, the factor from the clean store's normalised flux to the noisy one's.

    ``dimming x norm_clean / norm_noisy``: physical flux is normalised flux
    x ``norm``, and an input moved to another redshift was dimmed by
    ``dimming`` (:func:`survey_denoise.noise.degrade`; 1 where the store has
    none) before its noise was added.  NaN where a norm or the dimming is
    not positive and finite.
    """
    nn = np.asarray(noisy["norm"].values, np.float64)
    nc = np.asarray(clean["norm"].values, np.float64)
    dim = np.asarray(noisy["dimming"].values, np.float64) if "dimming" in noisy else np.ones(nn.size)
    ok = np.isfinite(nn) & np.isfinite(nc) & np.isfinite(dim) & (nn > 0) & (nc > 0) & (dim > 0)
    return np.where(ok, dim * nc / np.where(ok, nn, 1.0), np.nan)


def _frame_ratio_at(pairs: SpectraPairs, rows: np.ndarray) -> np.ndarray:
    """:func:`frame_ratio` at ``rows``: 1 for arrays, and where it is not defined."""
    if not pairs.is_dataset:
        return np.ones(rows.size)
    r = frame_ratio(pairs.noisy, pairs.clean)[rows]
    return np.where(np.isfinite(r), r, 1.0)


def fit_targets(held: dict, grid) -> dict:
    """Signed fast fits of the held-out targets with their own variance (shared by the line calibrations)."""
    from ..fitting import fast

    good = held["good"]
    with np.errstate(divide="ignore"):
        w_tgt = np.where(good, 1.0 / held["target_var"].astype(np.float64), 0.0)
    return fast.fit_batch(held["target"], w_tgt, good, grid=grid, nonnegative=False, width_prior=None)


def line_noise_gains(held: dict, grid, *, output_in_input_norm: bool,
                     prior: tuple[float, float] | None = None,
                     target_fit: dict | None = None) -> dict[str, float]:
    """Per catalogue line, the share of its input's noise a de-noised line flux follows.

    The gain ``g`` of :func:`survey_denoise.fitting.combine.noise_gain`,
    measured at training time so that a saved model can combine its line
    fluxes with its input's on data without targets
    (:func:`survey_denoise.fitting.combine.combine_catalogues`).  The
    held-out galaxies are fitted three times (fast fitter, signed, width
    from the chi^2): the de-noised spectra, scaled onto their inputs as
    inference scales them (:func:`survey_denoise.inference.amplitude`, with
    the training set's ``prior``), the inputs with their ivar, and the
    targets.  All three are compared in the target's frame: an AE/VAE's
    target is in the clean normalisation, so the input and its scaled
    de-noised spectrum are divided by :func:`frame_ratio` (``dimming x
    norm_clean / norm_noisy``, ``held["input_norm_ratio"]``); a PCA's
    output and target are in the input's already.

    Returns
    -------
    dict
        ``{key: g}``; empty when the inputs' noise is not known (arrays
        given without ``input_ivar``); NaN for a line with fewer than 10
        galaxies measured in all three.
    """
    import pandas as pd

    from .. import lines
    from ..fitting import fast
    from ..fitting.combine import noise_gain
    from ..inference import amplitude

    if held.get("input_ivar") is None:
        return {}
    x, ivar = held["input"].astype(np.float64), held["input_ivar"].astype(np.float64)
    d = held["denoised"].astype(np.float64)
    if output_in_input_norm:
        scale, q = np.ones(x.shape[0]), np.ones(x.shape[0])
    else:
        scale, _ = amplitude(d, x, ivar, prior)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        q = held["input_norm_ratio"]
    den_factor = (scale / q)[:, None]
    good = held["good"]
    with np.errstate(divide="ignore"):
        w_den = np.where(good, 1.0 / (held["var"].astype(np.float64) * den_factor ** 2), 0.0)
    use_in = (ivar > 0) & np.isfinite(x)
    fits = {
        "denoised": fast.fit_batch(d * den_factor, w_den, good, grid=grid, nonnegative=False,
                                   width_prior=None),
        "noisy": fast.fit_batch(np.where(use_in, x / q[:, None], 0.0), np.where(use_in, ivar * q[:, None] ** 2, 0.0),
                                use_in, grid=grid, nonnegative=False, width_prior=None),
        "target": target_fit if target_fit is not None else fit_targets(held, grid)}
    keys = lines.catalogue_keys()
    frames = {name: pd.DataFrame({**{f"{k}_flux": fit["flux"][k] for k in keys},
                                  **{f"{k}_flux_err": fit["flux_err"][k] for k in keys}})
              for name, fit in fits.items()}
    return noise_gain(frames["denoised"], frames["noisy"], frames["target"], keys)


def line_error_scales(held: dict, correlation: list[float], grid, *,
                      target_fit: dict | None = None) -> dict[str, dict[str, float]]:
    """Per catalogue line, the error model that makes de-noised line errors cover held-out targets.

    The pixel variance is calibrated over all pixels at once, and its
    correlation model is one set of lags for the whole spectrum, so the
    line errors the fast fitter derives from them can be too wide for one
    line and too narrow for another; and a decoder's error on a bright
    line grows with the line (a line drawn 20 % too strong is 20 % off
    however bright it is), which no pixel variance of the output carries.
    The held-out galaxies of :func:`held_out_residuals` are fitted twice
    with the fast fitter: the de-noised spectra with their calibrated
    variance and pixel correlation, and the targets with their own
    variance.  Both fits are signed (``nonnegative=False``): differences of
    fluxes clipped at 0 understate the error of a faint line (on pure
    noise, by a factor ~2.5).

    The de-noised error becomes ``sqrt((s sigma_den)^2 + (f F_den)^2)``
    (``f = 0`` below the split), with ``s`` set per half of the held-out
    galaxies by the de-noised
    line's own formal S/N (``F_den / sigma_den``, signed, before any
    factor; the fitter sees that S/N when it applies the model):
    ``scale`` at or above the median, ``snr_split``, and ``scale_faint``
    below it.  Each is calibrated on its own half.  A factor measured on
    bright lines and applied to faint ones shrank the faint errors of
    lines the decoder under-draws (a bright [OIII] drawn faint); a fixed
    split at S/N 3 left too few galaxies above it (the formal de-noised
    errors are wide before the factor).

    - ``f`` is the smallest of 0, 0.005, ... :data:`MAX_FRAC` with which,
      ``scale`` refitted to the bright half, the brighter half of that
      half (by de-noised S/N) is covered as well (the largest when none
      is; ``bright_covered`` says which).  A line drawn
      20 % too strong is 20 % off however bright it is; one factor leaves
      the brightest lines' errors too narrow.  Where ``f F_den`` alone
      covers them, ``scale`` falls to its lower bound (``at_bound``).
    - Each ``s`` is the smallest that puts 68.27 % of its half's
      ``|F_den - F_target|`` within ``sqrt((s sigma_den)^2 + (f F_den)^2 +
      sigma_target^2)`` (no ``f`` in the faint half) and 95.45 % within
      twice that, the target's own
      noise allowed for, as in the pixel calibration.  The differences
      have wider tails than a Gaussian's (a decoder that misses a line
      misses it by far): set at 1 sigma alone, the 2-sigma intervals, and
      the S/N cuts, would be too narrow.

    A half with fewer than :data:`MIN_LINE_ROWS` galaxies keeps ``s = 1``
    (and the bright one ``f = 0``), and so does one whose differences the
    target's noise alone covers 68.27 % of the time, or whose de-noised
    errors are a median below :data:`MIN_ERROR_RATIO` of the target's
    (noisy targets: the de-noised error cannot be told from them, and
    shrinking it would be a guess).  ``s`` is bounded to [1/20, 20].

    Returns
    -------
    dict
        ``{key: {"scale": s, "scale_faint": s, "frac": f, "snr_split":
        S/N, "n": galaxies of the bright half, "n_faint": of the faint,
        "at_bound": bool, "at_bound_faint": bool (``scale_faint`` at a
        bound), "bright_covered": bool, "identified": False
        where the bright half kept s and f, "identified_faint": the same
        for the faint}}``.
    """
    from .. import lines
    from ..fitting import fast

    good = held["good"]
    with np.errstate(divide="ignore"):
        w_den = np.where(good, 1.0 / held["var"].astype(np.float64), 0.0)
    # Widths from the chi^2 alone, as the catalogue fits de-noised spectra: a width prior
    # weighed by each fit's stated errors would pull the two fits of one line to different
    # widths, and the flux difference that makes is not the de-noiser's error.
    den = fast.fit_batch(held["denoised"], w_den, good, grid=grid, correlation=tuple(correlation),
                         nonnegative=False, width_prior=None)
    tgt = target_fit if target_fit is not None else fit_targets(held, grid)
    out = {}
    for key in lines.catalogue_keys():
        fd, ed = den["flux"][key], den["flux_err"][key]
        fc, ec = tgt["flux"][key], tgt["flux_err"][key]
        use = np.isfinite(fd) & np.isfinite(ed) & np.isfinite(fc) & np.isfinite(ec) & (ed > 0) & (ec > 0)
        gap, fd, ed, ec = np.abs(fd - fc)[use], fd[use], ed[use], ec[use]
        snr = fd / ed
        split = float(np.median(snr)) if snr.size else 0.0
        bright = snr >= split
        model = {"scale": 1.0, "frac": 0.0, "at_bound": False, "bright_covered": False,
                 "identified": _identifiable(gap[bright], ed[bright], ec[bright])}
        if model["identified"]:
            model.update(_line_error_model(gap[bright] ** 2, ed[bright] ** 2, fd[bright], ec[bright] ** 2))
        faint = ~bright
        model["identified_faint"] = _identifiable(gap[faint], ed[faint], ec[faint])
        model["scale_faint"], model["at_bound_faint"] = 1.0, False
        if model["identified_faint"]:
            # No fractional term below the split: it is set on the bright lines, and
            # on a faint one (or one clipped to 0 in a catalogue) it would stand in for s.
            at = _covering_scale(gap[faint] ** 2, ed[faint] ** 2, ec[faint] ** 2)
            model["scale_faint"] = float(np.exp(0.5 * at))
            model["at_bound_faint"] = _at_bound(at)
        out[key] = {**model, "snr_split": split, "n": int(bright.sum()), "n_faint": int(faint.sum())}
    return out


_LOG_S2_BOUNDS = (2 * np.log(1 / 20), 2 * np.log(20.0))
"""Bounds of a line-error factor s, on log s^2."""


def _identifiable(gap, ed, ec) -> bool:
    """Whether a factor on the de-noised errors ``ed`` can be told from targets of errors ``ec``.

    Not with too few galaxies, nor where the target's own noise covers the
    differences or so dominates them that the de-noised error moves the
    combined one by little.
    """
    return bool(gap.size >= MIN_LINE_ROWS and np.mean(gap <= ec) < ONE_SIGMA
                and np.median(ed / ec) >= MIN_ERROR_RATIO)


def _covering_scale(sq, var, floor) -> float:
    """log s^2 with which ``sqrt(s^2 var + floor)`` covers the gaps ``sqrt(sq)`` at 1 and 2 sigma.

    68.27 % within 1x and 95.45 % within 2x: differences with wider tails
    than a Gaussian's would otherwise leave 2-sigma intervals, and S/N cuts,
    too narrow.  The larger of the two factors.
    """
    return max(_coverage_scale(sq, var, floor, _LOG_S2_BOUNDS),
               _coverage_scale(sq / 4.0, var, floor, _LOG_S2_BOUNDS, level=TWO_SIGMA))


def _covered(sq, var, floor) -> bool:
    """Whether ``sqrt(var + floor)`` covers the gaps ``sqrt(sq)`` at 1 and 2 sigma."""
    total = var + floor
    return bool(np.mean(sq <= total) >= ONE_SIGMA and np.mean(sq <= 4.0 * total) >= TWO_SIGMA)


def _line_error_model(sq, var, flux, floor) -> dict:
    """``scale`` and ``frac`` of :func:`line_error_scales` from squared gaps, fluxes and variances."""
    snr = flux / np.sqrt(var)
    bright = snr >= np.median(snr)
    flux_sq = flux**2
    for frac in np.linspace(0.0, MAX_FRAC, 101):
        extra = floor + frac**2 * flux_sq
        at = _covering_scale(sq, var, extra)
        covered = _covered(sq[bright], np.exp(at) * var[bright], extra[bright])
        if covered:
            break
    return {"scale": float(np.exp(0.5 * at)), "frac": float(frac), "bright_covered": covered,
            "at_bound": _at_bound(at)}


def _at_bound(log_s2: float) -> bool:
    """Whether a factor's bisection ended at a bound of :data:`_LOG_S2_BOUNDS`."""
    lo, hi = _LOG_S2_BOUNDS
    return bool(min(log_s2 - lo, hi - log_s2) < 2e-6)


def output_norm(noisy, clean) -> dict:
    """How the network's output relates to the input's normalisation, for the card.

    The AE/VAE learn the *clean* spectrum in the clean spectrum's own
    normalisation, while a de-noised store keeps the noisy input's ``norm``
    (physical = flux x norm).  The two norms differ: the noisy spectrum was
    normalised again after the noise was added, so for unit-L2 spectra with
    sigma = 0.04 its norm is ≈ sqrt(1 + 825 sigma^2) ≈ 1.52 times the clean
    one (0.18 dex); an input moved to another redshift was also dimmed.
    ``ratio`` is the median of :func:`frame_ratio` (``dimming x norm_clean /
    norm_noisy``) over the training galaxies, and ``log10_scatter`` its
    spread: the prior of :func:`survey_denoise.inference.amplitude`.  1 for
    arrays (no norms known).
    """
    noisy, clean = _open(noisy), _open(clean)
    if not (hasattr(noisy, "data_vars") and hasattr(clean, "data_vars")):
        return {"ratio": 1.0, "rule": "arrays: output in the input's normalisation"}
    r = frame_ratio(noisy, clean)
    r = r[np.isfinite(r)]
    if not r.size:
        return {"ratio": 1.0, "rule": "no finite norms in the training data"}
    return {"ratio": float(np.median(r)),
            "rule": "median dimming x norm_clean / norm_noisy of the training galaxies",
            "log10_scatter": float(np.std(np.log10(r)))}


class NotFittedError(RuntimeError):
    """The de-noiser is used before :meth:`Denoiser.fit` or :meth:`Denoiser.load`."""


def _open(X):
    """A store path becomes its lazy Dataset; anything else is returned as is."""
    if isinstance(X, (str, Path)):
        from ..io.store import open_store

        return open_store(X, frame="rest")
    return X


class Denoiser(abc.ABC):
    """A de-noiser of rest-frame spectra on the grid.

    Parameters
    ----------
    latent : int
        Latent dimensions (AE/VAE) or principal components (PCA).
    seed : int, optional
        Seed of the weights' initialisation, dropout and the validation split
        (None: drawn at random and recorded in the card).
    """

    kind: ClassVar[str]
    artefact: ClassVar[str]
    output_in_input_norm: ClassVar[bool] = False
    """Whether de-noised spectra keep the noisy input's normalisation (PCA) or the target's (AE/VAE)."""

    def __init__(self, latent: int = 6, seed: int | None = 0) -> None:
        self.latent = latent
        self.seed = seed

    # -- scikit-learn conventions ------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters, as passed to ``__init__``."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _require_fitted(self) -> None:
        if not hasattr(self, "card_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() or load() first")

    # -- training ------------------------------------------------------------------
    def fit(self, noisy, clean, weights=None, validation_split: float = 0.2,
            seed: int | None = None, *, input_ivar=None) -> Denoiser:
        """Learn from noise-added spectra and their clean originals.

        Parameters
        ----------
        noisy, clean : ndarray (n, npix), Dataset, or store path
            Noise-added input and clean target (same galaxies, same order).
        weights : ndarray (n, npix), optional
            Per-pixel loss weights (default from the clean target's ``ivar``; see
            :class:`~survey_denoise.models.data.SpectraPairs`).
        validation_split : float
            Fraction of galaxies held out at random for validation.
        seed : int, optional
            Seed of the validation split (default: the model's ``seed``; if
            both are None, one is drawn and recorded).
        input_ivar : ndarray (n, npix), optional
            Arrays only: the noisy input's inverse variance, (normalised
            flux)^-2, for a noise-conditioned model (default: 1 for every
            finite pixel); Datasets carry their own.

        Returns
        -------
        self
        """
        noisy, clean = _open(noisy), _open(clean)
        pairs = SpectraPairs(noisy, clean, weights, input_ivar=input_ivar)
        facts = cards.data_facts(noisy) if pairs.is_dataset else {
            "grid": GRID.to_dict() if pairs.npix == GRID.npix else None,
            "norm_convention": None, "noise_model": None, "data_id": None, "n_galaxy": pairs.n}
        if facts["grid"] is None:
            raise ValueError(f"arrays have {pairs.npix} pixels but the grid has {GRID.npix}; "
                             "pass rest-frame Datasets to train on another grid")
        seed = self.seed if seed is None else seed
        parts = split(pairs, validation_split, seed)
        t0 = time.perf_counter()
        history = self._fit(pairs, parts)
        metrics = {"train_seconds": time.perf_counter() - t0}
        if parts.validation.size:
            metrics["val_mse"] = self.stream_mse(pairs, parts.validation)
        else:
            metrics["train_mse"] = self.stream_mse(pairs, parts.train)
        from ..grid import Grid

        uncertainty, norms = self._calibrate(noisy, clean, pairs, parts, Grid.from_dict(facts["grid"]))
        self.card_ = {
            "kind": self.kind, "card_version": cards.CARD_VERSION, "artefact": self.artefact,
            "grid": facts["grid"], "norm_convention": facts["norm_convention"],
            "noise_model": facts["noise_model"],
            "training": {"data_id": facts["data_id"], "n_galaxy": pairs.n,
                         "n_train": int(parts.train.size), "n_validation": int(parts.validation.size),
                         "validation_split": validation_split, "validation_seed": parts.seed,
                         "source": getattr(noisy, "encoding", {}).get("source")},
            "hyperparameters": self.get_params(), "seed": self.seed,
            "history": history, "metrics": metrics, "versions": cards.package_versions(),
            "uncertainty": uncertainty,
        }
        if norms is not None:
            self.card_["output_norm"] = norms
        return self

    def _calibrate(self, noisy, clean, pairs: SpectraPairs, parts, grid) -> tuple[dict, dict | None]:
        """The held-out uncertainty model (the card's ``uncertainty``) and the output's norm ratio.

        Sets ``pixel_var_`` and ``variance_scale_``.  ``parts`` is the
        training's split: the validation galaxies are the held-out ones
        (the training galaxies when there are none).
        """
        held = parts.validation if parts.validation.size else parts.train
        self.variance_scale_ = 1.0
        resid = held_out_residuals(self, pairs, held)
        self.pixel_var_ = resid["pixel_var"].astype(np.float32)
        self.variance_scale_ = resid["variance_scale"]
        held_out = resid.pop("held_out")
        norms = None if self.output_in_input_norm else output_norm(noisy, clean)
        target_fit = fit_targets(held_out, grid)
        lines_cal = line_error_scales(held_out, resid["pixel_correlation"], grid, target_fit=target_fit)
        prior = (norms["ratio"], norms["log10_scatter"]) if norms and "log10_scatter" in norms else None
        gains = line_noise_gains(held_out, grid, output_in_input_norm=self.output_in_input_norm,
                                 prior=prior, target_fit=target_fit)
        del held_out
        uncertainty = {
            "method": ("predicted per pixel (Gaussian likelihood) x variance_scale (held-out 1-sigma "
                       "coverage 68.27 %)" if self.predicts_variance() else
                       "held-out residual variance per pixel (68.27 % quantile of r^2 - t)"),
            "predicted": self.predicts_variance(), "variance_scale": self.variance_scale_,
            "pixel_correlation": resid["pixel_correlation"],
            "line_error_scale": {k: v["scale"] for k, v in lines_cal.items()},
            "line_error_scale_faint": {k: v["scale_faint"] for k, v in lines_cal.items()},
            "line_error_snr_split": {k: v["snr_split"] for k, v in lines_cal.items()},
            "line_error_frac": {k: v["frac"] for k, v in lines_cal.items()},
            "line_error_calibration": {
                "rule": "fast fitter, signed fluxes, held-out galaxies in halves by the de-noised line's "
                        "formal S/N (at or above snr_split, the median: scale; below: scale_faint): "
                        "68.27 % of |F_den - F_target| within sqrt((s sigma_den)^2 + (f F_den)^2 + "
                        "sigma_target^2) and 95.45 % within twice that (f = 0 below the split), f the "
                        "smallest with which the brighter half of the bright half is covered too",
                "n": {k: v["n"] for k, v in lines_cal.items()},
                "n_faint": {k: v["n_faint"] for k, v in lines_cal.items()},
                "not_identified": sorted(k for k, v in lines_cal.items() if not v["identified"]),
                "not_identified_faint": sorted(k for k, v in lines_cal.items()
                                               if not v["identified_faint"]),
                "at_bound": sorted(k for k, v in lines_cal.items() if v["at_bound"]),
                "at_bound_faint": sorted(k for k, v in lines_cal.items() if v["at_bound_faint"]),
                "bright_not_covered": sorted(k for k, v in lines_cal.items()
                                             if v["identified"] and not v["bright_covered"])},
            **({"line_noise_gain": {k: (round(v, 6) if np.isfinite(v) else None) for k, v in gains.items()},
                "line_noise_gain_rule": (
                    "per line, sum(a b / v) / sum(a^2 / v) over held-out galaxies: a = F_in - F_target, "
                    "b = F_den - F_target, v = sigma_in^2 - sigma_target^2 (fast fitter, signed; the "
                    "de-noised spectrum scaled onto its input as inference scales it; all in the "
                    "target's normalisation); survey_denoise.fitting.combine")} if gains else {}),
            "rows": "validation" if parts.validation.size else "training (no validation split)",
            "n_galaxy": resid["n_galaxy"],
            "target_noise": "accounted for: r^2 = (d - y)^2 compared with var + t, "
                            "t = 1/w - 2e-6 the target's flux variance",
            "median_pixel_var": float(np.median(self.pixel_var_)), "file": UNCERTAINTY_FILE}
        return uncertainty, norms

    def recalibrate(self, noisy, clean, *, input_ivar=None) -> Denoiser:
        """Measure the held-out uncertainty model again, with this version, without training.

        A model saved by an earlier version lacks what later versions
        measure after training (the noise gains of
        :func:`line_noise_gains`, for instance).  This draws the training's
        validation galaxies again (the card's ``validation_seed`` and
        ``validation_split``) from the data it was trained on and replaces
        the card's ``uncertainty`` (and ``output_norm``) and the per-pixel
        variance; the network is unchanged.

        Parameters
        ----------
        noisy, clean : Dataset, store path, or ndarray (n, npix)
            The training data, as given to :meth:`fit`.
        input_ivar : ndarray (n, npix), optional
            Arrays only, as for :meth:`fit`.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If the data are not the galaxies the model was trained on.
        """
        from ..grid import Grid

        self._require_fitted()
        noisy, clean = _open(noisy), _open(clean)
        pairs = SpectraPairs(noisy, clean, input_ivar=input_ivar)
        training = self.card_["training"]
        facts = cards.data_facts(noisy) if pairs.is_dataset else {"data_id": None, "n_galaxy": pairs.n}
        if facts["n_galaxy"] != training["n_galaxy"] or (
                training.get("data_id") and facts["data_id"] != training["data_id"]):
            raise ValueError(f"recalibrate needs the data the model was trained on: {training['n_galaxy']} "
                             f"galaxies (id {training.get('data_id')}), got {facts['n_galaxy']} "
                             f"(id {facts['data_id']})")
        parts = split(pairs, float(training["validation_split"]), int(training["validation_seed"]))
        uncertainty, norms = self._calibrate(noisy, clean, pairs, parts, Grid.from_dict(self.card_["grid"]))
        self.card_["uncertainty"] = uncertainty
        if norms is not None:
            self.card_["output_norm"] = norms
        from .. import __version__

        self.card_["recalibrated"] = {"version": __version__}
        return self

    def predicts_variance(self) -> bool:
        """Whether the model predicts its own per-galaxy, per-pixel variance."""
        return False

    @property
    def conditioned(self) -> bool:
        """Whether the model reads each pixel's inverse variance with its flux."""
        return False

    def cap_note(self) -> str | None:
        """A line to print when the epoch cap, not the plateau rule, ended the training; else None."""
        return None

    @abc.abstractmethod
    def _fit(self, pairs: SpectraPairs, parts) -> dict[str, list[float]]:
        """Learn from ``pairs`` (training rows ``parts.train``); return the loss history."""

    def stream_mse(self, pairs: SpectraPairs, rows: np.ndarray) -> float:
        """Mean squared error per pixel of the de-noised ``rows`` of ``pairs``, read chunk by chunk."""
        pairs.with_ivar = self.conditioned  # the model's own input rows
        total, count = 0.0, 0
        for x, y, _ in iter_rows(pairs, rows):
            total += float(np.sum((self._denoise(x) - y) ** 2, dtype=np.float64))
            count += y.size
        return total / count

    # -- inference -----------------------------------------------------------------
    def _input(self, X, ivar=None, mask=None) -> np.ndarray:
        """The model's input rows for spectra ``X`` (with their ``ivar``, ``mask`` if conditioned)."""
        X = _open(X)
        if hasattr(X, "data_vars"):
            self._require_fitted()
            cards.check(self.card_, X, where=type(self).__name__)
            if self.conditioned:
                ivar, mask = X["ivar"].values, X["mask"].values
            X = X["flux"].values
        if ivar is None and self.conditioned:
            # Arrays without errors: every finite pixel is a typical one (weight 0.5).
            ref = float(getattr(getattr(self, "model_", None), "ivar_ref", 1.0))
            ivar = np.full(np.shape(X), ref, np.float32)
        return model_input(X, ivar, mask, with_ivar=self.conditioned)

    def encode(self, X, *, ivar=None) -> np.ndarray:
        """Latent means (n, latent) of spectra ``X`` (``ivar``: see :meth:`denoise`)."""
        self._require_fitted()
        return self._encode(self._input(X, ivar))

    transform = encode

    def decode(self, Z) -> np.ndarray:
        """Spectra (n, npix) decoded from latent vectors ``Z``."""
        self._require_fitted()
        return self._decode(np.asarray(Z, np.float32))

    def denoise(self, X, return_var: bool = False, *, ivar=None):
        """De-noised spectra: encode the mean, decode it (float32, (n, npix)).

        With ``return_var`` also their variance about the true spectrum,
        (normalised flux)^2, (n, npix) float32 (see the module notes).
        ``ivar`` ((n, npix), arrays only) is the input's inverse variance,
        read by a noise-conditioned model (default: 1 for every finite
        pixel; 0 or a non-finite flux marks a pixel missing); a Dataset
        gives its own ``ivar`` and ``mask``.
        """
        self._require_fitted()
        X = self._input(X, ivar)
        return self._denoise_var(X) if return_var else self._denoise(X)

    def _denoise(self, X: np.ndarray) -> np.ndarray:
        return self._decode(self._encode(X))

    def _denoise_var(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._decode_var(self._encode(X))

    def _decode_var(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = self._decode(Z)
        if getattr(self, "pixel_var_", None) is None:
            raise NotFittedError(f"{type(self).__name__} has no uncertainty model (saved before "
                                 f"card version {cards.CARD_VERSION}); retrain it")
        return mean, np.broadcast_to(self.pixel_var_, mean.shape).astype(np.float32)

    def score(self, noisy, clean) -> float:
        """Mean squared error per pixel of the de-noised ``noisy`` against ``clean``."""
        clean = _open(clean)
        y = clean["flux"].values if hasattr(clean, "data_vars") else clean
        return float(np.mean((self.denoise(noisy) - as_flux(y)) ** 2, dtype=np.float64))

    @abc.abstractmethod
    def _encode(self, X: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _decode(self, Z: np.ndarray) -> np.ndarray: ...

    # -- persistence ---------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model folder ``path`` (artefact + ``card.json``); return it."""
        self._require_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save_artefact(path / self.artefact)
        with open(path / UNCERTAINTY_FILE, "wb") as fh:
            np.savez(fh, pixel_var=self.pixel_var_)
        cards.write_card(self.card_, path)
        return path

    @classmethod
    def load(cls, path: str | Path, expect=None) -> Denoiser:
        """Read a model folder; check it against ``expect`` (a Dataset) if given.

        Raises
        ------
        SchemaError
            If the folder holds another kind of model, or ``expect`` is on
            another grid or normalisation.
        """
        from ..schema import SchemaError

        card = cards.read_card(path)
        if card["kind"] != cls.kind:
            raise SchemaError(f"{path} holds a '{card['kind']}' model, not '{cls.kind}'")
        if expect is not None:
            cards.check(card, expect, where=str(path))
        params = {k: v for k, v in card["hyperparameters"].items()
                  if k in inspect.signature(cls.__init__).parameters}
        model = cls(**params)
        model._load_artefact(Path(path) / card["artefact"])
        model.card_ = card
        unc = card.get("uncertainty")
        if unc is not None:
            with np.load(Path(path) / unc.get("file", UNCERTAINTY_FILE), allow_pickle=False) as f:
                model.pixel_var_ = f["pixel_var"]
            model.variance_scale_ = float(unc["variance_scale"])
        return model

    @abc.abstractmethod
    def _save_artefact(self, path: Path) -> None: ...

    @abc.abstractmethod
    def _load_artefact(self, path: Path) -> None: ...
