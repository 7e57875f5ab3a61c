"""Training the Keras de-noisers: Adam 1e-4, batch 64, a plateau rule, two presets.

The learning-rate rule of Scourfield et al. (2023, §3.2): if the monitored
loss has not fallen by at least 10 % within 5 epochs, divide the learning
rate by 10; if it still has not within 5 more epochs, stop.  The rule is a
pure object (:class:`PlateauRule`, unit-tested on loss histories) wrapped by
a Keras callback (:func:`plateau_callback`), which also keeps the weights of
the best epoch and puts them back when training ends.

:data:`PRESETS` names two sets of training choices: ``"paper"`` (the
paper's dropout tables, weighted MSE, the 10 % rule, last-epoch weights)
and ``"default"`` (measured on the mock; the reasons are in
:data:`REASONS`, copied into every model card, and in docs/models.md).

:class:`KerasDenoiser` is the shared body of
:class:`~survey_denoise.models.ae.AEDenoiser` and
:class:`~survey_denoise.models.vae.VAEDenoiser`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from .base import Denoiser
from .checkpoint import TrainingCheckpoint, checkpoint_callback, fingerprint, resume
from .coverage import CoverageMasks
from .data import CONDITIONINGS, ESTIMATES, batches, iter_rows

log = logging.getLogger(__name__)
"""One INFO line per epoch (:func:`epoch_log`); a pipeline run copies them into its ``run.log``."""

PREDICT_BATCH = 8192
"""Spectra per forward pass at inference (large batches keep the matmuls efficient)."""


NOISE_DRAWS = ("fixed", "per-epoch")
"""The training inputs' noise: the stored draw, or the store's noise drawn again every epoch."""

PRESETS: dict[str, dict] = {
    "paper": {"likelihood": "mse", "dropout": None, "patience": 5, "min_delta": 0.1,
              "restore_best": False, "conditioning": "none", "coverage": "none", "noise_draws": "fixed",
              "estimate": "mean"},
    "default": {"likelihood": "gaussian", "dropout": 0.0, "patience": 5, "min_delta": 0.002,
                "restore_best": True, "conditioning": "ivar", "coverage": "desi-bgs",
                "noise_draws": "per-epoch", "estimate": "mean"},
}
"""Training choices by name; ``dropout: None`` is the paper's Table 4/5 rate for the latent size."""

REASONS: dict[str, dict[str, str]] = {
    "paper": {"preset": "Scourfield et al. (2023) §3.2 and Tables 4-5, as published"},
    "default": {
        "likelihood": "Gaussian likelihood with a predicted per-pixel variance: every de-noised "
                      "pixel gets its own error (the weighted MSE gives none)",
        "dropout": "0: the paper's rates (0.5-0.9) were chosen on real SDSS; on the mock (4-d VAE, "
                   "2,400 galaxies, 15 epochs) test MSE is 5.20e-6 at dropout 0, 5.26e-6 at 0.1, "
                   "5.78e-6 at 0.3 and 8.51e-6 at the paper's 0.7, and the line errors are best "
                   "calibrated at 0 (benchmarks/results/calibration_dropout_sweep.json, "
                   "docs/models.md); over-fitting is left to early stopping with the best weights",
        "early_stopping": "stop after 5 + 5 epochs without a 0.2 % fall and keep the best epoch's "
                          "weights: the paper's 10 % threshold stops networks that still improve "
                          "by 1-2 % per epoch",
        "conditioning": "ivar: the network sees each pixel's weight ivar/(ivar + ivar_ref) beside its "
                        "flux, and a missing pixel as missing (weight 0), not as zero flux; on the "
                        "DESI-like MZR mock (4-d VAE, 2,400 galaxies, 15 epochs, two seeds) [NII] "
                        "0.25 dex against 0.29/0.28 without, other lines within 0.025 dex "
                        "(benchmarks/results/conditioning_mzr*.json, docs/models.md)",
        "coverage": "desi-bgs: training inputs lose the pixels DESI (3600-9824 A) would not observe "
                    "at a redshift drawn from a BGS-like distribution (z 0.01-0.5, median 0.2); "
                    "without, a red end cut as at z = 0.4 raised [NII] from 0.28 to 0.37 dex and "
                    "left 12-27 % of Halpha within 1 sigma; with, red-cut scores stay within 0.04 "
                    "dex of full-coverage ones (docs/models.md)",
        "estimate": "mean: the squared error, as the paper trains; the median (absolute error), "
                    "measured beside it (4-d VAE, 10,000 held-out galaxies, fast fitter), lowers "
                    "Halpha by 0.07-0.10 dex in the four bins above the faintest true-flux bin but "
                    "not in it (+0.57 against +0.61), at 0.006-0.064 dex more scatter on every "
                    "Table 6 line (docs/models.md)",
        "noise_draws": "per-epoch: the inputs are the clean spectra with a new draw of the degraded "
                       "store's own noise every epoch, so a network cannot learn its training "
                       "galaxies' noise; calibration benchmark (4-d VAE, 2,400 galaxies, 15 epochs, "
                       "five seeds): Halpha 0.41-0.46 dex against 0.48-0.51 with the stored draw, test "
                       "MSE 6.8-7.3e-6 against 7.3-7.7e-6, held-out variance scale 0.6-1.2 (3.5 with "
                       "the stored draw); full-size Table 6, fast fitter: [OIII]5007 and [NII] 0.06 "
                       "dex lower, [OIII]4363 0.12 higher (docs/models.md). Data without a noise "
                       "record (arrays, real repeat observations) keep their own noise",
    },
}


def preset_settings(name: str) -> dict:
    """The training choices of preset ``name`` (a copy).

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name])


class PlateauRule:
    """The paper's learning-rate rule as a state machine fed one loss per epoch.

    Parameters
    ----------
    patience : int
        Epochs allowed for the loss to fall by ``min_delta`` (the paper: 5).
    min_delta : float
        Required relative fall (the paper: 0.1, i.e. 10 %).
    factor : float
        Learning-rate divisor on a plateau (the paper: 10).
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.1, factor: float = 10.0) -> None:
        self.patience, self.min_delta, self.factor = patience, min_delta, factor
        self.reference: float | None = None
        self.wait = 0
        self.reduced = False

    def update(self, loss: float) -> str:
        """Feed one epoch's loss; return ``"ok"``, ``"reduce"`` or ``"stop"``.

        The fall is relative to ``|reference|``, so a negative loss (a
        Gaussian negative log-likelihood) must also fall to count.
        """
        if self.reference is None or loss <= self.reference - self.min_delta * abs(self.reference):
            # A 10 % fall resets the count and forgives an earlier reduction.
            self.reference, self.wait, self.reduced = float(loss), 0, False
            return "ok"
        self.wait += 1
        if self.wait < self.patience:
            return "ok"
        self.wait = 0
        if self.reduced:
            return "stop"
        self.reduced = True
        return "reduce"


def plateau_callback(rule: PlateauRule, monitor: str = "val_loss", restore_best: bool = False):
    """A Keras callback applying ``rule`` to ``logs[monitor]``.

    Without it (no validation set) the training value is used: ``monitor``
    without its ``val_`` prefix, else ``loss``.

    With ``restore_best`` the weights of the epoch with the lowest monitored
    loss are put back when training ends; the callback's ``best_epoch``
    (0-based, None before the first finite loss) says which it was, and its
    ``ended`` why training stopped early (``"plateau rule"`` or
    ``"non-finite loss"``; None while it has not).
    """
    import keras

    class PlateauCallback(keras.callbacks.Callback):
        best_epoch: int | None = None
        best_loss = math.inf
        best_weights = None
        ended: str | None = None

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            loss = logs.get(monitor, logs.get(monitor.removeprefix("val_"), logs.get("loss")))
            if loss is None or not math.isfinite(loss):
                if loss is not None:
                    self.model.stop_training, self.ended = True, "non-finite loss"
                return
            if loss < self.best_loss:
                self.best_loss, self.best_epoch = float(loss), epoch
                if restore_best:
                    self.best_weights = self.model.get_weights()
            action = rule.update(float(loss))
            lr = self.model.optimizer.learning_rate
            if action == "reduce":
                lr.assign(float(lr.numpy()) / rule.factor)
            elif action == "stop":
                self.model.stop_training, self.ended = True, "plateau rule"
            logs["learning_rate"] = float(lr.numpy())

        def on_train_end(self, logs=None):
            if restore_best and self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return PlateauCallback()


def epoch_bar(epochs: int, desc: str = "train", initial: int = 0):
    """A Keras callback showing a progress bar over epochs with the latest losses.

    Parameters
    ----------
    epochs : int
        Most epochs of the run (the bar's total; the plateau rule may stop earlier).
    desc : str
        Label of the bar.
    initial : int
        Epochs already done (a resumed training).
    """
    import keras
    from tqdm.auto import tqdm

    class EpochBar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, initial=initial, desc=desc, unit="epoch", leave=True)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            shown = {k: f"{logs[k]:.4g}" for k in ("loss", "val_loss") if k in logs}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return EpochBar()


def epoch_log(epochs: int, desc: str, plateau) -> object:
    """A Keras callback writing one line per epoch to :data:`log`: losses, learning rate, best epoch.

    A training of 10^5 spectra runs for tens of minutes inside a pipeline
    whose other stages report per chunk; these lines let a run's ``run.log``
    say how far it has got and whether the plateau rule is about to stop it.

    Parameters
    ----------
    epochs : int
        Most epochs of the run (the plateau rule may stop earlier).
    desc : str
        The line's label (the model kind).
    plateau : keras.callbacks.Callback
        The :func:`plateau_callback` of the same run, for its best epoch; it
        must come before this callback so the learning rate it sets is logged.
    """
    import time

    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            shown = ", ".join(f"{k} {float(v):.5g}" for k, v in logs.items() if k != "learning_rate")
            lr = logs.get("learning_rate")
            best = "" if plateau.best_epoch is None else f"; best epoch {plateau.best_epoch + 1}"
            log.info("%s: epoch %d of at most %d in %.1f s: %s%s%s", desc, epoch + 1, epochs,
                     time.perf_counter() - self.t0, shown,
                     "" if lr is None else f", learning rate {lr:.3g}", best)

    return EpochLog()


def standardisation(pairs, rows: np.ndarray) -> dict:
    """Fixed input/output transformation of the network from the training rows.

    Offsets are the mean noisy input and the mean clean target spectrum;
    scales are 1 / the root-mean-square deviation from them over all pixels
    (one number each, so relative pixel values are untouched).  On unit-L2
    spectra with sigma = 0.04 noise the input scale is ≈ 37 and the output
    scale ≈ 130: the network then sees and predicts numbers of order one,
    and starts from the mean spectrum instead of a random one.  Read chunk
    by chunk (sums in float64).

    Only pixels the target covers (weight > 0) enter the output's; for a
    noise-conditioned network (``pairs.with_ivar``) only pixels the input
    has enter the input's, and ``ivar_ref``, the median positive input ivar
    (every 97th value), is returned too.
    """
    npix = pairs.npix
    sx, sy, qx, qy, nx, ny = (np.zeros(npix) for _ in range(6))
    sample = []
    for x, y, w in iter_rows(pairs, rows):
        x, y = x.astype(np.float64), y.astype(np.float64)
        if pairs.with_ivar:
            iv, x = x[:, npix:], x[:, :npix]
            gx = iv > 0
            sample.append(iv[gx][::97])
        else:
            gx = np.ones(x.shape, bool)
        gy = w > 0
        x, y = np.where(gx, x, 0.0), np.where(gy, y, 0.0)
        sx += x.sum(axis=0)
        sy += y.sum(axis=0)
        qx += (x * x).sum(axis=0)
        qy += (y * y).sum(axis=0)
        nx += gx.sum(axis=0)
        ny += gy.sum(axis=0)

    def moments(s, q, n):
        seen = n > 0
        m = np.where(seen, s / np.where(seen, n, 1.0), 0.0)
        v = (q / np.where(seen, n, 1.0) - m * m)[seen]
        r = math.sqrt(max(float(np.mean(v)), 0.0)) if v.size else 0.0
        return m, (1.0 / r if r > 0 else 1.0)

    (mx, kx), (my, ky) = moments(sx, qx, nx), moments(sy, qy, ny)
    out = {"input_offset": mx.tolist(), "input_scale": kx,
           "output_offset": my.tolist(), "output_scale": ky}
    if pairs.with_ivar:
        ivar = np.concatenate(sample) if sample else np.zeros(0)
        out["ivar_ref"] = float(np.median(ivar)) if ivar.size else 1.0
    return out


class KerasDenoiser(Denoiser):
    """Shared body of the AE and VAE de-noisers (see their docstrings for parameters)."""

    artefact = "model.keras"
    variational: ClassVar[bool]
    DEFAULTS: ClassVar[Mapping[int, tuple[float, Sequence[int]]]]
    _checkpoint: Path | None = None  # set by fit() for the length of one training

    def __init__(self, latent: int = 6, *, preset: str = "default",
                 units: Sequence[int] | None = None, dropout: float | None = None,
                 likelihood: str | None = None, epochs: int = 200, batch_size: int = 64,
                 learning_rate: float = 1e-4, patience: int | None = None,
                 min_delta: float | None = None, restore_best: bool | None = None,
                 conditioning: str | None = None, coverage: str | Mapping | None = None,
                 noise_draws: str | None = None, estimate: str | None = None, seed: int | None = 0,
                 verbose: int = 0, standardise: bool = True) -> None:
        super().__init__(latent=latent, seed=seed)
        preset_settings(preset)  # refuses an unknown name now, not after loading the data
        self.preset = preset
        self.standardise = standardise
        self.units = None if units is None else [int(u) for u in units]
        self.dropout = dropout
        self.likelihood = likelihood
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.min_delta = min_delta
        self.restore_best = restore_best
        if conditioning is not None and conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        self.conditioning = conditioning
        CoverageMasks.from_spec(coverage)  # refuses a bad description now
        self.coverage = dict(coverage) if isinstance(coverage, Mapping) else coverage
        if noise_draws is not None and noise_draws not in NOISE_DRAWS:
            raise ValueError(f"noise_draws must be one of {NOISE_DRAWS}, got {noise_draws!r}")
        self.noise_draws = noise_draws
        if estimate is not None and estimate not in ESTIMATES:
            raise ValueError(f"estimate must be one of {ESTIMATES}, got {estimate!r}")
        self.estimate = estimate
        self.verbose = verbose

    def settings(self) -> dict:
        """The training choices used: those given, else the preset's (dropout: see :meth:`architecture`)."""
        out = preset_settings(self.preset)
        for key in ("likelihood", "patience", "min_delta", "restore_best", "conditioning", "coverage",
                    "noise_draws", "estimate"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["dropout"] = self.architecture()[0]
        return out

    def architecture(self) -> tuple[float, list[int]]:
        """(dropout, units) used: given ones, else the preset's dropout and the paper's widths.

        The widths (and, for the ``paper`` preset, the dropout) are the
        paper's best for the nearest latent size (Tables 4-5).
        """
        nearest = min(self.DEFAULTS, key=lambda k: (abs(k - self.latent), k))
        dropout, units = self.DEFAULTS[nearest]
        preset = preset_settings(self.preset)["dropout"]
        dropout = dropout if preset is None else preset
        return (dropout if self.dropout is None else float(self.dropout),
                list(units) if self.units is None else list(self.units))

    @property
    def conditioned(self) -> bool:
        """Whether the network takes (flux, ivar): the trained network's setting, else the settings'."""
        net = getattr(self, "model_", None)
        if net is not None:
            return getattr(net, "conditioning", "none") == "ivar"
        return self.settings()["conditioning"] == "ivar"

    def coverage_masks(self) -> CoverageMasks | None:
        """The training coverage masks of the settings (None: inputs as given)."""
        return CoverageMasks.from_spec(self.settings()["coverage"], seed=self.seed or 0)

    def predicts_variance(self) -> bool:
        """Whether the network has the Gaussian likelihood's variance head."""
        net = getattr(self, "model_", None)
        if net is not None:
            return getattr(net, "likelihood", "mse") == "gaussian"
        return self.settings()["likelihood"] == "gaussian"

    def _build(self, npix: int, transform: dict | None = None, init_seed: int | None = None):
        import keras

        from .networks import SpectrumAutoencoder

        dropout, units = self.architecture()
        if any(b > a for a, b in zip(units, units[1:], strict=False)):
            raise ValueError(f"encoder widths must not increase, got {units}")
        opts = self.settings()
        model = SpectrumAutoencoder(npix, self.latent, units, dropout, variational=self.variational,
                                    seed=self.seed, name=self.kind, likelihood=opts["likelihood"],
                                    conditioning=opts["conditioning"], estimate=opts["estimate"],
                                    init_seed=init_seed,
                                    **(transform or {}))
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate))
        model.build((None, model.input_width))
        return model

    def _fit(self, pairs, parts) -> dict[str, list[float]]:
        import keras

        # The split's seed is always set (drawn when none was given), so a run
        # can be repeated from its card; it also seeds the initial weights,
        # through a stream of the network's own (networks._draw).
        keras.utils.set_random_seed(parts.seed)
        pairs.with_ivar = self.settings()["conditioning"] == "ivar"
        pairs.coverage = self.coverage_masks()
        self.noise_draws_, self.noise_note_ = self.settings()["noise_draws"], None
        if self.noise_draws_ == "per-epoch":
            try:
                pairs.redraw_noise()
            except ValueError as err:
                if self.noise_draws is not None:  # asked for by name: refused
                    raise
                # The preset's choice applies where the data allow it: arrays,
                # or a noisy store not made by degrade (real repeat observations),
                # train on the noise they carry; the card says so.
                self.noise_draws_, self.noise_note_ = "fixed", f"the preset's per-epoch draws not possible: {err}"
        transform = standardisation(pairs, parts.train) if self.standardise else None
        if transform is None and pairs.with_ivar:
            transform = {"ivar_ref": standardisation(pairs, parts.train)["ivar_ref"]}
        self.model_ = self._build(pairs.npix, transform, init_seed=parts.seed)
        train = batches(pairs, parts.train, self.batch_size, shuffle=True, seed=parts.seed)
        val = (batches(pairs, parts.validation, max(self.batch_size, 1024), shuffle=False)
               if parts.validation.size else None)
        opts = self.settings()
        rule = PlateauRule(opts["patience"], opts["min_delta"])
        # The Gaussian likelihood's total is dominated by sum(log v), thousands of
        # nats, so a relative threshold on it would not see the spectrum improve.
        watched = "reconstruction" if opts["likelihood"] == "gaussian" else "loss"
        monitor = f"val_{watched}" if val is not None else watched
        callback = plateau_callback(rule, monitor, restore_best=opts["restore_best"])
        callbacks = [callback, epoch_log(self.epochs, self.kind, callback)]
        start, history, ended = 0, {}, None
        self.resumed_at_ = None
        if self._checkpoint is not None:
            # The epoch cap and the bar do not change what an epoch does: a training
            # stopped at its cap may go on under a larger one.
            params = {k: v for k, v in self.get_params().items() if k not in ("verbose", "epochs")}
            # The data enter through the first chunk and the standardisation, which
            # sums every training spectrum: other spectra give another key.
            content = [*pairs.load(0), *(np.atleast_1d(v) for v in (transform or {}).values())]
            saved = TrainingCheckpoint(self._checkpoint, fingerprint(
                {**params, "split_seed": parts.seed}, pairs.npix, parts.train, parts.validation,
                content))
            state = saved.load()
            if state is not None:
                start, history, ended = resume(state, self.model_, callback, rule)
                self.resumed_at_ = start
                log.info("%s: resuming after epoch %d of at most %d from %s", self.kind, start,
                         self.epochs, saved.folder)
            callbacks.append(checkpoint_callback(saved, callback, rule, history))
        if self.verbose == 1:  # Keras' own bar counts batches; ours counts epochs
            callbacks.append(epoch_bar(self.epochs, desc=self.kind, initial=start))
        if start < self.epochs and ended is None:
            train.start_at(start)
            # shuffle=False: the batches shuffle themselves, chunk by chunk, from the
            # split's seed.  Keras' shuffle would reorder them across chunks with
            # Python's global random: each chunk read many times an epoch and, in a
            # Dask worker whose event loop draws from that stream too, an order no
            # second run repeats.
            fitted = self.model_.fit(train, validation_data=val, epochs=self.epochs, shuffle=False,
                                     initial_epoch=start, callbacks=callbacks,
                                     verbose=2 if self.verbose == 2 else 0)
            if self._checkpoint is None:
                history = fitted.history
        elif callback.best_weights is not None:  # done before the kill: end as that training ended
            self.model_.set_weights(callback.best_weights)
        self.epochs_run_ = len(history.get("loss", []))
        self.best_epoch_ = callback.best_epoch
        self.monitor_ = monitor
        self.ended_ = callback.ended or "epoch cap"
        if self.ended_ == "epoch cap":  # beside the epoch lines; commands echo it themselves
            log.info("%s: %s", self.kind, self.cap_note())
        return {k: [float(v) for v in vals] for k, vals in history.items()}

    def cap_note(self) -> str | None:
        # Such a network may not be trained out: by the rule's own measure its
        # monitored loss had not stopped falling.
        if getattr(self, "ended_", None) != "epoch cap":
            return None
        best = "none" if self.best_epoch_ is None else self.best_epoch_ + 1
        return (f"stopped at its cap of {self.epochs} epochs before the plateau rule ended it "
                f"(best epoch {best}): more epochs may still improve it")

    def fit(self, noisy, clean, weights=None, validation_split: float = 0.2, seed=None, *,
            input_ivar=None, checkpoint: str | Path | None = None):
        """Train; see :meth:`Denoiser.fit <survey_denoise.models.base.Denoiser.fit>`.

        Parameters
        ----------
        checkpoint : str or Path, optional
            A folder for the training's state, saved every ~30 s of epochs
            (:mod:`~survey_denoise.models.checkpoint`). If it holds the state
            of this same training (settings less the epoch cap, data, split),
            training goes on after its last epoch and ends as the
            uninterrupted one would: one that ended at a smaller cap goes on
            to this one. The caller removes it once it is not needed.
        """
        self._checkpoint = None if checkpoint is None else Path(checkpoint)
        try:
            super().fit(noisy, clean, weights, validation_split, seed, input_ivar=input_ivar)
        finally:
            self._checkpoint = None
        dropout, units = self.architecture()
        opts = self.settings()
        self.card_["training_choices"] = {
            "preset": self.preset, **opts, "monitor": self.monitor_, "best_epoch": self.best_epoch_,
            "epochs_run": self.epochs_run_, "ended": self.ended_,
            "noise_draws": self.noise_draws_,
            **({"noise_draws_note": self.noise_note_} if self.noise_note_ else {}),
            "weights": "best epoch" if opts["restore_best"] else "last epoch",
            **({"resumed_after_epoch": self.resumed_at_} if self.resumed_at_ else {}),
            "reasons": REASONS[self.preset]}
        net = self.model_
        self.card_["architecture"] = {
            "dropout": dropout, "units": units, "latent": self.latent, "leaky_relu_slope": 0.3,
            "variational": self.variational, "likelihood": net.likelihood,
            "estimate": net.estimate, "kernel_init": "glorot_uniform x (1 - dropout) after dropout",
            # The offsets (two mean spectra) are in the Keras file's config.
            "standardised": net.input_offset is not None,
            "input_scale": net.input_scale, "output_scale": net.output_scale,
            "conditioning": net.conditioning,
            **({"ivar_ref": net.ivar_ref,
                "input": "(flux, ivar) -> (standardised flux, 0 if missing; ivar / (ivar + ivar_ref))"}
               if net.conditioning == "ivar" else {})}
        masks = self.coverage_masks()
        self.card_["training_choices"]["coverage"] = (
            {"survey": self.settings()["coverage"], **masks.to_dict()} if masks is not None else "none")
        return self

    # -- inference -------------------------------------------------------------------
    @staticmethod
    def _batched(fn, X: np.ndarray) -> list[np.ndarray]:
        from keras import ops

        outs = []
        for i in range(0, max(X.shape[0], 1), PREDICT_BATCH):
            out = fn(X[i:i + PREDICT_BATCH])
            outs.append([ops.convert_to_numpy(o)
                         for o in (out if isinstance(out, (list, tuple)) else [out])])
        return [np.concatenate(parts) for parts in zip(*outs, strict=True)]

    def _encode(self, X: np.ndarray) -> np.ndarray:
        out = self._batched(lambda b: self.model_.encoder(b, training=False), X)
        return out[0]

    def _decode(self, Z: np.ndarray) -> np.ndarray:
        return self._batched(lambda b: self.model_.decoder(b, training=False), Z)[0].astype(np.float32)

    def _decode_var(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self.model_, "likelihood", "mse") != "gaussian":
            return super()._decode_var(Z)
        mean, logvar = self._batched(lambda b: self.model_.decoder(b, training=False), Z)
        return mean.astype(np.float32), self._predicted_var(logvar)

    def _denoise(self, X: np.ndarray) -> np.ndarray:
        whole = self._traced(X.shape[1])
        return self._batched(whole, X)[0].astype(np.float32)

    def _denoise_var(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self.model_, "likelihood", "mse") != "gaussian":
            return super()._denoise_var(X)
        mean, logvar = self._batched(self._traced(X.shape[1]), X)
        return mean.astype(np.float32), self._predicted_var(logvar)

    def _predicted_var(self, logvar: np.ndarray) -> np.ndarray:
        # variance_scale_ is 1 while the held-out calibration itself runs.
        scale = getattr(self, "variance_scale_", 1.0)
        return (scale * np.exp(logvar.astype(np.float64))).astype(np.float32)

    def __getstate__(self) -> dict:
        # A traced graph cannot be pickled; it is traced again on first use.
        return {k: v for k, v in self.__dict__.items() if k != "_traced_fn"}

    def _traced(self, npix: int):
        """Encoder (posterior mean) -> decoder as one traced TensorFlow graph (TensorFlow back-end).

        Two eager Keras calls with a NumPy round trip between them reached
        55-72 % of the float32 matmul limit at batches >= 1024 and 13 % at 64;
        one graph reaches 72-122 % and 58 % (``benchmarks/inference.py``).
        Traced once per network and spectrum length, for any batch size.
        """
        cached = getattr(self, "_traced_fn", None)
        if cached is not None and cached[0] is self.model_ and cached[1] == npix:
            return cached[2]
        import keras

        net = self.model_

        def whole(x):
            z = net.encoder(x, training=False)
            return net.decoder(z[0] if isinstance(z, (list, tuple)) else z, training=False)

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            whole = tf.function(whole, input_signature=[tf.TensorSpec([None, npix], tf.float32)])
        # Under another back-end (JAX, PyTorch: a GPU machine without
        # TensorFlow) the two calls run eagerly.

        self._traced_fn = (net, npix, whole)
        return whole

    # -- persistence -----------------------------------------------------------------
    def _save_artefact(self, path: Path) -> None:
        self.model_.save(path)

    def _load_artefact(self, path: Path) -> None:
        import keras

        from . import networks  # noqa: F401  (registers the custom classes)

        self.model_ = keras.saving.load_model(path, safe_mode=True, compile=False)
