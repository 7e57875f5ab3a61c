"""Batched de-noising of a rest-frame dataset, chunk by chunk, on the workers.

:func:`denoise` is a lazy stage ``Dataset -> Dataset``.  The model card is
checked against the dataset before any graph is built; each worker process
then loads the model once (a per-process cache keyed by the model folder and
the hash of its card, so a re-saved model is reloaded) and runs every chunk
through it in large batches.  Before TensorFlow starts in a worker its
intra-op thread pool is sized to the worker's Dask threads, so Dask and
TensorFlow do not both spread over all cores.

Output, per galaxy:

* ``flux``: the de-noised spectrum (posterior-mean decode; with
  ``n_samples = K > 0``, the mean of K decodes from the VAE's posterior),
  in the input's normalisation, so ``flux x norm`` is physical in the
  input's frame: an AE/VAE predicts the clean spectrum normalised on its
  own, whose scale relative to the input differs per galaxy (the noise
  adds to the input's norm; moved to another redshift, the dimming
  changes it by a factor that varies ~0.2 dex across a survey), so each
  galaxy's output is scaled by ``amplitude``: its own input's least-squares
  amplitude, combined with the training set's norm ratio and its spread
  (:func:`amplitude`).  A PCA model reconstructs the input in the
  input's normalisation and is not rescaled (amplitude 1);
* ``amplitude``, ``amplitude_err`` (per galaxy): that factor and its 1σ
  error from the input's noise (a common fractional error of every
  de-noised line of the galaxy);
* ``ivar``: per galaxy and pixel, ``1 / var`` with ``var`` the model's
  variance of the de-noised flux about the true spectrum (predicted by a
  network trained with the Gaussian likelihood, else the held-out residual
  variance per pixel; see :mod:`survey_denoise.models.base` and the card's
  ``uncertainty``), plus, when ``n_samples > 0``, the spread of the K
  decodes squared; rescaled with the flux.  ``ivar = 0`` where the input
  pixel was missing (see ``extrapolated``).  The rule is recorded in ``attrs["denoise_ivar"]``,
  and the correlation of pixel errors at lags 1-4 (measured on held-out
  galaxies) in ``attrs["denoise_pixel_correlation"]``, and the factor per
  line that held-out galaxies put on the fast fitter's line errors, and the
  fractional term they add, in ``attrs["denoise_line_error_scale"]`` (lines at
  or above the formal S/N ``attrs["denoise_line_error_snr_split"]``),
  ``attrs["denoise_line_error_scale_faint"]`` (below it) and
  ``attrs["denoise_line_error_frac"]``; per line, the share of the input's
  noise the de-noised line flux follows, in
  ``attrs["denoise_line_noise_gain"]`` (for
  :func:`~survey_denoise.fitting.combine.combine_catalogues`);
* ``extrapolated`` (bool, per galaxy and pixel): the input did not have
  the pixel (masked, ``ivar <= 0`` or a non-finite flux: outside the
  observed coverage, or a bad pixel), so the de-noised flux there is the
  model's prediction from the pixels it did see, not a de-noised
  measurement.  Its ``ivar`` is 0: the held-out calibration never scores
  these pixels (:func:`~survey_denoise.models.base.held_out_residuals`),
  so no honest error is known for them, and a line fitted on them would
  be measured from the training population rather than from the galaxy;
  with ivar 0 the fitters treat the line as not covered.  A galaxy with
  any such pixel gets ``DENOISE_EXTRAPOLATED``;
* ``flux_std`` (only when ``n_samples > 0``): spread of the K decodes (a
  part of the error only; the fitters use ``ivar``);
* ``lines_detected_input`` (uint32 bits, like ``lines_covered``): the
  catalogue lines the *input* spectrum detects on its own, S/N >= 3 in a
  fast fit with its systematic terms
  (:func:`survey_denoise.fitting.detected_lines`).  A de-noiser draws the
  lines the data cannot show from what it learned of similar galaxies; the
  line catalogue marks those (``<key>_status`` LINE_NOT_IN_INPUT), so a
  user can tell a line this galaxy's data support from one the model's
  prior supplies;
* ``flags``: ``DENOISE_FAILED`` where the model returned non-finite values,
  or where its output could not be scaled onto the input (no positive
  amplitude in the input and no training-set ratio to fall back on; flux
  0, ivar 0).  Spectra already dropped upstream pass through
  unchanged, with their flags.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from .fitting import DETECTED_SNR, DETECTION_WIDTH_KMS, INPUT_DETECTIONS, systematics
from .flags import DROP, Flag
from .grid import Grid
from .line_windows import lines_covered_attrs, to_bits
from .models.card import card_hash, check, read_card
from .schema import add_provenance, validate

_MODELS: dict[tuple[str, str], object] = {}
_LOCK = threading.Lock()
LOADS: Counter = Counter()
"""Models loaded by this process, keyed by (model folder, card hash)."""
CALLS: Counter = Counter()
"""Chunks de-noised by this process, keyed like :data:`LOADS`."""


def load_counts() -> dict[str, int]:
    """Loads and chunk calls in this process (query workers with ``client.run(load_counts)``)."""
    return {"loads": sum(LOADS.values()), "calls": sum(CALLS.values())}


def _match_threads() -> None:
    """Size TensorFlow's thread pools to this Dask worker's threads (before TF starts)."""
    try:
        from distributed import get_worker

        nthreads = get_worker().state.nthreads
    except (ImportError, ValueError):
        return
    import keras

    if keras.backend.backend() != "tensorflow":
        return  # another Keras back-end sizes its own pools
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(nthreads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already running in this process; its pools are fixed.


def cached_model(model_dir: str, digest: str):
    """The model of ``model_dir``, loaded once per process for a given card hash."""
    from .models import load_model, read_card

    key = (model_dir, digest)
    with _LOCK:
        if key not in _MODELS:
            if read_card(model_dir)["kind"] != "pca":
                _match_threads()
            _MODELS[key] = load_model(model_dir)
            LOADS[key] += 1
        CALLS[key] += 1
        return _MODELS[key]


def denoise_block(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, flags: np.ndarray,
                  ids: np.ndarray, *, model_dir: str, digest: str, batch_size: int, n_samples: int,
                  seed: int) -> np.ndarray:
    """De-noise one chunk: returns (3, n, npix) float32 — mean, total variance, spread.

    ``ivar`` and ``mask`` are read by a noise-conditioned model only.
    Spread is 0 if K = 0.  Dropped spectra come back as they went in
    (variance and spread 0); rows the model turns non-finite stay
    non-finite so the caller can flag them.
    """
    model = cached_model(model_dir, digest)
    flags = np.asarray(flags).reshape(-1)
    out = np.zeros((3, *flux.shape), np.float32)
    out[0] = flux
    keep = np.flatnonzero((flags & int(DROP)) == 0)
    # Overflow to inf/NaN is a per-spectrum failure, flagged by the caller.
    with np.errstate(over="ignore", invalid="ignore"):
        _run_batches(model, (flux, ivar, mask), ids, keep, out, batch_size, n_samples, seed)
    return out


def _run_batches(model, spectra, ids, keep, out, batch_size, n_samples, seed) -> None:
    from .models.data import model_input
    from .rng import standard_normal

    conditioned = bool(getattr(model, "conditioned", False))
    for i in range(0, keep.size, batch_size):
        rows = keep[i:i + batch_size]
        flux, ivar, mask = (a[rows] for a in spectra)
        if n_samples > 0:
            latent = int(model.latent)
            # Draws keyed by galaxy id: the result does not depend on the chunking.
            eps = standard_normal(seed, "vae-posterior", np.asarray(ids).reshape(-1)[rows],
                                  n_samples * latent)
            eps = eps.reshape(rows.size, n_samples, latent).transpose(1, 0, 2)
            out[0, rows], out[1, rows], out[2, rows] = model.denoise(
                flux, n_samples=n_samples, eps=eps, return_var=True,
                ivar=np.where(np.asarray(mask, bool), np.float32(0), ivar))
        else:
            out[0, rows], out[1, rows] = model._denoise_var(
                model_input(flux, ivar, mask, with_ivar=conditioned))


def _input_detections(flux, ivar, mask, flags, survey=None, *, grid: Grid, store_survey=None) -> np.ndarray:
    """Bits of the catalogue lines each input spectrum of a chunk detects (0 for dropped ones).

    ``survey`` (n, 1), where the store has one per galaxy, else ``store_survey``
    for all, picks the systematic constants of the detection's errors.
    """
    from .fitting import detected_lines

    labels = store_survey if survey is None else np.asarray(survey).reshape(-1)
    found = detected_lines(flux, ivar, mask, grid, labels)
    found[(np.asarray(flags).reshape(-1) & int(DROP)) != 0] = False
    return to_bits(found)


def amplitude(model, flux, ivar, prior: tuple[float, float] | None = None):
    """Per galaxy, the factor that scales a de-noised spectrum onto its input, and its error.

    An AE/VAE predicts the clean spectrum in the clean spectrum's own
    normalisation; a store keeps the input's.  Their ratio is not one
    number: the input's norm includes its noise, and an input moved to
    another redshift was dimmed by a factor that differs per galaxy (the
    DESI-like test: 0.21 dex across its galaxies).  Two estimates are
    combined, inverse-variance weighted in log:

    * the galaxy's own: the weighted least-squares amplitude of the model
      spectrum ``m`` in the input ``x``, ``s = sum(w x m) / sum(w m^2)``
      with ``w = ivar``, of 1-sigma error ``1 / sqrt(sum(w m^2))`` (4 %
      for a unit-L2 spectrum with the paper's sigma = 0.04 per pixel);
    * the training set's: ``prior = (ratio, log10_scatter)``, the median
      and spread of ``dimming x norm_clean / norm_noisy`` over the training
      galaxies (the card's ``output_norm``,
      :func:`~survey_denoise.models.base.frame_ratio`).  Where the norms differ only by the
      noise's power, as in the paper's set-up, the spread is ~2 % and
      outweighs a noisy input's own amplitude; where they differ by a
      dimming it is wide and the galaxy's own amplitude decides.

    Parameters
    ----------
    model, flux : array (n, npix)
        De-noised spectra (model normalisation) and the input's flux (its
        normalisation); numpy or dask.
    ivar : array (n, npix)
        The input's inverse variance (normalised flux^-2), 0 where a pixel
        is not to be used.
    prior : (float, float), optional
        ``(ratio, log10_scatter)``; without one (or a scatter of 0) the
        galaxy's own amplitude alone.

    Returns
    -------
    scale, scale_err : array (n,)
        float64, dimensionless.  Where the input gives no positive
        amplitude (no pixel with weight, no signal) the prior's ratio and
        spread, or NaN without a prior.
    """
    lib = da if isinstance(model, da.Array) else np
    w = lib.where(lib.isfinite(model) & lib.isfinite(flux) & (ivar > 0), ivar, 0).astype(np.float64)
    m = lib.where(w > 0, model, 0).astype(np.float64)
    x = lib.where(w > 0, flux, 0).astype(np.float64)
    info = (w * m * m).sum(axis=1)
    own = lib.where(info > 0, (w * x * m).sum(axis=1) / lib.where(info > 0, info, 1.0), np.nan)
    ok = own > 0
    # Weights of log s: (s / sigma_s)^2 = own^2 info; 0 where the input gives no amplitude.
    w_own = lib.where(ok, own * own * info, 0.0)
    log_own = lib.log(lib.where(ok, own, 1.0))
    ratio, scatter = prior if prior is not None else (1.0, 0.0)
    w_prior = 1.0 / (scatter * np.log(10)) ** 2 if scatter > 0 else 0.0
    total = w_own + w_prior
    safe = lib.where(total > 0, total, 1.0)
    log_s = (w_own * log_own + w_prior * np.log(ratio)) / safe
    scale = lib.where(total > 0, lib.exp(log_s), np.nan)
    return scale, lib.where(total > 0, scale / lib.sqrt(safe), np.nan)


def _uncertainty(card: dict, model_dir: str) -> dict:
    unc = card.get("uncertainty")
    if not unc:
        raise ValueError(f"model {model_dir} was saved without an uncertainty model (card version "
                         f"{card.get('card_version', 1)}): its de-noised pixels would get no honest "
                         "error; retrain it with this version of survey_denoise")
    return unc


def denoise(ds: xr.Dataset, model_dir: str | Path, *, batch_size: int = 4096, n_samples: int = 0,
            seed: int = 0, input_detections: bool = True) -> xr.Dataset:
    """De-noise a rest-frame dataset lazily, one galaxy chunk per task.

    Parameters
    ----------
    ds : xarray.Dataset
        Rest-frame spectra on the model's grid and normalisation.
    model_dir : str or Path
        A saved model folder (``card.json`` + artefact).
    batch_size : int
        Spectra per forward pass inside a chunk.
    n_samples : int
        VAE only: decode this many draws from the latent posterior; the
        spread gives ``flux_std`` and ``ivar``.
    seed : int
        Seed of the posterior draws (streams keyed by galaxy id).
    input_detections : bool
        Record ``lines_detected_input``: one single-width fast fit of each
        input spectrum (:func:`survey_denoise.fitting.detected_lines`; +2 %
        of the workers' CPU in ``benchmarks/end_to_end.py --fuse``).

    Returns
    -------
    xarray.Dataset
        Same galaxies and variables, de-noised ``flux`` and model ``ivar``.

    Raises
    ------
    SchemaError
        If the data are not rest-frame, or are on another grid or
        normalisation than the model was trained on.
    """
    model_dir = str(Path(model_dir).resolve())
    validate(ds, frame="rest", where="denoise input")
    card = read_card(model_dir)
    check(card, ds, where=f"model {model_dir}")
    if n_samples > 0 and card["kind"] != "vae":
        raise ValueError(f"n_samples > 0 needs a VAE; {model_dir} holds a '{card['kind']}' model")
    unc = _uncertainty(card, model_dir)
    digest = card_hash(model_dir)

    flux = ds["flux"].data
    if not isinstance(flux, da.Array):
        flux = da.from_array(flux, chunks=(min(4096, flux.shape[0]), flux.shape[1]))
    gchunks = (flux.chunks[0],)
    flags = da.asarray(ds["flags"].data).rechunk(gchunks)
    ivar_in = da.asarray(ds["ivar"].data).rechunk(flux.chunks)
    mask = da.asarray(ds["mask"].data).astype(bool).rechunk(flux.chunks)
    ids = np.asarray(ds["galaxy"].values)
    # Integer ids stay integers: the random streams are keyed by the id's value.
    ids = da.from_array(ids if ids.dtype.kind in "iu" else ids.astype(object), chunks=gchunks)
    stacked = da.map_blocks(
        denoise_block, flux, ivar_in, mask, flags[:, None], ids[:, None], model_dir=model_dir,
        digest=digest,
        batch_size=int(batch_size), n_samples=int(n_samples), seed=int(seed),
        new_axis=0, chunks=((3,), *flux.chunks), dtype=np.float32, name="denoise-" + digest[:8],
        meta=np.empty((0, 0, 0), np.float32))
    missing = mask | ~(ivar_in > 0) | ~da.isfinite(flux) | ~da.isfinite(ivar_in)
    dropped = (flags & int(DROP)) != 0
    if card["kind"] == "pca":  # reconstructs the input in the input's normalisation
        scale, err = da.ones_like(flags, dtype=np.float64), da.zeros_like(flags, dtype=np.float64)
    else:
        norms = card.get("output_norm") or {}
        prior = (float(norms["ratio"]), float(norms["log10_scatter"])) if "log10_scatter" in norms else None
        scale, err = amplitude(stacked[0], flux, da.where(missing, 0, ivar_in), prior)
        scale = da.where(dropped, 1.0, scale)  # passed through as they came
    s32 = scale.astype(np.float32)[:, None]
    mean, std, var = stacked[0] * s32, stacked[2] * s32, stacked[1] * s32 ** 2
    failed = ~(da.isfinite(mean).all(axis=1) & (scale > 0)) & ~dropped
    extrapolated = missing & ~(dropped | failed)[:, None]
    bad = failed[:, None] | missing | dropped[:, None]
    new_flux = da.where(failed[:, None], np.float32(0), mean).astype(np.float32)
    ivar = da.where(var > 0, 1.0 / da.maximum(var, np.float32(1e-30)), 0)
    ivar = da.where(bad | ~da.isfinite(ivar), np.float32(0), ivar).astype(np.float32)
    new_flags = da.where(failed, flags | np.uint32(Flag.DENOISE_FAILED), flags)
    new_flags = da.where(extrapolated.any(axis=1), new_flags | np.uint32(Flag.DENOISE_EXTRAPOLATED),
                         new_flags).astype(np.uint32)

    if input_detections:
        per_galaxy = ()
        if "survey" in ds:  # ingested from several surveys: each galaxy's own constants
            labels = np.asarray(ds["survey"].values).astype(str).astype(object)
            per_galaxy = (da.from_array(labels, chunks=gchunks)[:, None],)
        detected = da.map_blocks(_input_detections, flux, ivar_in, mask, flags[:, None], *per_galaxy,
                                 grid=Grid.from_dataset(ds), store_survey=systematics.store_survey(ds.attrs),
                                 drop_axis=1,
                                 dtype=np.uint32, meta=np.empty((0,), np.uint32))

    dims = ("galaxy", "wavelength")
    out = ds.copy()
    out["flux"] = xr.Variable(dims, new_flux, ds["flux"].attrs)
    out["ivar"] = xr.Variable(dims, ivar, ds["ivar"].attrs)
    out["flags"] = xr.Variable(("galaxy",), new_flags, ds["flags"].attrs)
    out["extrapolated"] = xr.Variable(dims, extrapolated, {
        "description": "the input did not have this pixel (masked, ivar 0 or outside the observed "
                       "coverage): the de-noised flux is a prediction from the other pixels, its ivar 0",
        "flag": "DENOISE_EXTRAPOLATED"})
    if input_detections:
        out[INPUT_DETECTIONS] = xr.Variable(("galaxy",), detected, {
            **lines_covered_attrs(), "long_name": "catalogue lines the de-noiser's input spectrum detects",
            "rule": (f"S/N >= {DETECTED_SNR:g} in a fast fit of the input (its ivar, one line width "
                     f"of {DETECTION_WIDTH_KMS:g} km/s, its survey's systematic terms added)")})
    elif INPUT_DETECTIONS in out:
        out = out.drop_vars(INPUT_DETECTIONS)  # a de-noised store's input: not this store's
    good_scale = ~failed & da.isfinite(scale)
    out["amplitude"] = xr.Variable(("galaxy",), da.where(good_scale, scale, np.nan), {
        "units": "", "description": "factor from the model's output to the input's normalisation, "
                                    "fitted to the galaxy's input (1 for PCA, NaN where failed)"})
    out["amplitude_err"] = xr.Variable(("galaxy",), da.where(good_scale, err, np.nan), {
        "units": "", "description": "1-sigma error of amplitude (the input's noise and the "
                                    "training set's spread of norm ratios)"})
    if n_samples > 0:
        out["flux_std"] = xr.Variable(dims, da.where(bad, np.float32(0), std).astype(np.float32),
                                      {**ds["flux"].attrs, "description": "spread of the VAE decodes"})
    rule = f"1/var, var = {unc['method']}" + (
        f" + spread^2 of {n_samples} posterior decodes" if n_samples > 0 else "")
    out.attrs = add_provenance(ds.attrs, "denoise", model=model_dir, kind=card["kind"],
                               card_sha256=digest, n_samples=int(n_samples), seed=int(seed),
                               batch_size=int(batch_size), ivar=rule)
    out.attrs["denoise_ivar"] = rule
    # Pixel errors of a decoded spectrum are correlated; the line fitter reads this.
    if "pixel_correlation" in unc:
        out.attrs["denoise_pixel_correlation"] = [float(r) for r in unc["pixel_correlation"]]
    # and the factor and fractional term per line that its held-out galaxies put on those line errors
    for name in ("line_error_scale", "line_error_scale_faint", "line_error_snr_split", "line_error_frac"):
        if name in unc:
            out.attrs[f"denoise_{name}"] = {k: float(v) for k, v in unc[name].items()}
    # and how much of its input's noise each line follows, for combining the two catalogues
    if "line_noise_gain" in unc:
        # None (JSON null) where the model could not measure it
        out.attrs["denoise_line_noise_gain"] = {k: (None if v is None or not np.isfinite(v) else float(v))
                                                for k, v in unc["line_noise_gain"].items()}
    return out
