"""The Keras networks of the paper's autoencoders (Scourfield et al. 2023, §3.2).

Encoder: Dense layers of decreasing width, each followed by LeakyReLU
(negative slope 0.3) and Dropout; then the latent layer with no activation
(one Dense for the AE; a mean and a log-variance Dense plus sampling for the
VAE).  The decoder mirrors the encoder (widths reversed, same activation and
dropout) and ends in a linear ``Dense(npix)``.

Two fixed, saved transformations wrap the paper's network (they change
neither its layers nor its loss): the input is standardised and the output
de-standardised with the training set's mean spectra and overall spreads,
and kernels fed by a Dropout layer start with their Glorot variance scaled
by ``1 - rate``.  Without them, on unit-L2 spectra (≈ 0.035 per pixel,
galaxy-to-galaxy spread ≈ 0.008) and the paper's dropout rates, the
network first collapses onto the mean spectrum and needs hundreds of
steps to leave it, longer than the paper's plateau rule waits.

Loss, per spectrum and averaged over the batch (the VAE adds the KL
divergence of its posterior from a standard normal):

``likelihood``:

* ``"mse"`` (the paper): ``0.5 * sum_pixels w * (x' - y)^2`` with ``w`` the
  per-pixel weights passed as Keras' ``sample_weight``;
* ``"gaussian"``: the same weighted MSE for the spectrum, plus a second
  linear decoder head, the log-variance ``s`` of the spectrum's error about
  the *true* spectrum, trained by the Gaussian negative log-likelihood
  ``0.5 * sum_pixels [log(v) + r^2 / v]`` with ``v = exp(s) + t`` and the
  residual ``r = x' - y`` held fixed (no gradient to the spectrum).  ``t =
  1/w - 2e-6`` is the target's own flux variance (paper eq. 3 read
  backwards; 0 for noise-free targets); pixels with ``w = 0`` are left out.
  The target is the true spectrum plus its own noise, so ``E[r^2] =
  (error about the truth)^2 + t``: fitting ``exp(s)`` alone would teach the
  network the target's noise as well.  The heteroscedastic loss is that of
  Nix & Weigend (1994) and Kendall & Gal (2017); the fixed residual keeps
  the spectrum trained exactly as in the paper, avoiding the known failure
  of a joint likelihood, which lets the network explain hard pixels (the
  lines) by a large variance instead of fitting them (Seitzer et al.
  2022; measured here: Halpha correlation with the truth 0.30 instead of
  0.8 after 12 epochs).  The weighted MSE alone is logged as
  ``reconstruction``, which the training's plateau rule watches.

``estimate``, what the de-noised spectrum aims at:

* ``"mean"`` (the paper): the squared error above; the network learns the
  mean of the clean spectrum given the noisy one;
* ``"median"``: the squared error replaced by the absolute error
  ``sum_pixels sqrt(w) * |x' - y|``, the negative log-likelihood of a
  Laplace distribution of scale ``1/sqrt(w)`` up to constants; the
  network learns each pixel's median (Koenker & Bassett 1978).  A mean
  regresses a faint line towards the population's (the faint end of
  docs/models.md); the median of a skewed posterior sits below its mean.
  The variance head is unchanged: its residual is taken about the median,
  so its variance is the median's mean squared error, which is what a
  flux error about it must hold.  This term is the logged
  ``reconstruction``.

Conditioning on the noise (``conditioning="ivar"``): the encoder's input
is the spectrum *and* its inverse variance, ``2 * npix`` numbers, which
:class:`ConditionedInput` turns into two channels of ``npix``: the
standardised flux, set to 0 (the mean spectrum's value) wherever the
pixel is missing, and the pixel's weight ``ivar / (ivar + ivar_ref)``,
bounded in [0, 1) and 0 exactly where the pixel is missing (``ivar = 0``).
A missing pixel is therefore told apart from a pixel whose flux is 0, and
its flux value never reaches the network.  ``ivar_ref`` is the median
positive input ivar of the training set (a typical pixel gets 0.5).

Every class is registered with ``keras.saving.register_keras_serializable``
so ``model.keras`` files load with ``safe_mode=True`` (no lambdas).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import keras
from keras import layers, ops

from .data import CONDITIONINGS, ESTIMATES

PACKAGE = "survey_denoise"
LEAKY_SLOPE = 0.3
LOSSES = ("mse", "gaussian")
LOGVAR_RANGE = (-16.0, 8.0)
"""Clip of the log-variance head (standardised units: variance 1e-7 to 3e3 x the output spread^2)."""
SOFTENING = 2e-6
"""The weights' softening (:data:`survey_denoise.models.data.SOFTENING`), subtracted to recover ``t``."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(layers.Layer):
    """Draw ``z = mean + exp(logvar / 2) * eps`` with ``eps ~ N(0, 1)`` (reparameterisation)."""

    def __init__(self, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        mean, logvar = inputs
        # eps in the means' dtype, so the layer also runs under a mixed-precision policy.
        eps = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
        return mean + ops.exp(0.5 * logvar) * eps

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


def _draw(rng: random.Random | None) -> int | None:
    """A seed as Keras draws one for an unseeded initialiser or layer; None leaves it to Keras.

    Keras draws those seeds from Python's global ``random``.  In a Dask
    worker the event loop draws from it too, at times of its own, so a
    network built there would start from other weights on every run; a
    private stream seeded like the global one gives the same seeds, in the
    same order, wherever the network is built.
    """
    return None if rng is None else rng.randint(1, int(1e9))


def _init(dropout: float, after_dropout: bool, rng: random.Random | None = None):
    """Glorot-uniform kernels, shrunk by ``1 - dropout`` for a layer fed by a Dropout layer.

    Keras' (inverted) dropout multiplies the second moment of its output by
    ``1 / (1 - rate)`` during training; with plain Glorot weights the
    training-time activations therefore grow by that factor at every one of
    the 8-10 dropout layers (x 256 in variance at rate 0.5, x 15,000 at 0.7),
    the network's first move is to shrink every weight, and it sits for
    hundreds of steps on the mean spectrum before the plateau rule stops it.
    Scaling the variance by ``1 - rate`` keeps the training-time variance
    constant through the stack (Hendrycks & Gimpel 2016, "Adjusting for
    dropout variance in batch normalization and weight initialization").
    """
    scale = 1.0 - dropout if after_dropout else 1.0
    return keras.initializers.VarianceScaling(scale, mode="fan_avg", distribution="uniform",
                                              seed=_draw(rng))


def _stack(x, units: Sequence[int], dropout: float, prefix: str, seed: int | None,
           rng: random.Random | None = None):
    for i, n in enumerate(units):
        x = layers.Dense(int(n), name=f"{prefix}_dense_{i}",
                         kernel_initializer=_init(dropout, after_dropout=i > 0, rng=rng))(x)
        x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{prefix}_leaky_{i}")(x)
        # Keras draws a seed for an unseeded Dropout only when its rate is > 0.
        drop_seed = seed + i if seed is not None else (_draw(rng) if dropout > 0 else None)
        x = layers.Dropout(dropout, seed=drop_seed, name=f"{prefix}_dropout_{i}")(x)
    return x


def _affine(npix: int, offset: Sequence[float] | None, scale: float, *, invert: bool, name: str):
    """``(x - offset) * scale`` (or its inverse, ``x / scale + offset``) as a fixed Keras layer."""
    offset = [0.0] * npix if offset is None else [float(v) for v in offset]
    # Normalization divides by sqrt(variance): variance 1/scale^2 multiplies by scale.
    return layers.Normalization(mean=offset, variance=[1.0 / float(scale) ** 2] * npix,
                                invert=invert, name=name)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConditionedInput(layers.Layer):
    """(flux, ivar), ``2 * npix`` -> (standardised flux or 0 if missing, weight), ``2 * npix``.

    A pixel is missing where ``ivar <= 0`` (or ``ivar`` is not finite); its
    flux is replaced by 0 with ``where``, so neither its value nor a NaN
    there reaches the network.  The weight is ``ivar / (ivar + ivar_ref)``.
    """

    def __init__(self, npix: int, offset: Sequence[float] | None = None, scale: float = 1.0,
                 ivar_ref: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.npix, self.scale, self.ivar_ref = int(npix), float(scale), float(ivar_ref)
        self.offset = None if offset is None else [float(v) for v in offset]

    def call(self, x):
        flux, ivar = x[..., :self.npix], x[..., self.npix:]
        present = ops.logical_and(ops.isfinite(ivar), ivar > 0)
        ivar = ops.where(present, ivar, ops.zeros_like(ivar))
        offset = 0.0 if self.offset is None else ops.convert_to_tensor(self.offset, dtype=flux.dtype)
        flux = ops.where(present, (flux - offset) * self.scale, ops.zeros_like(flux))
        return ops.concatenate([flux, ivar / (ivar + self.ivar_ref)], axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "npix": self.npix, "offset": self.offset,
                "scale": self.scale, "ivar_ref": self.ivar_ref}


def build_encoder(npix: int, latent: int, units: Sequence[int], dropout: float, *,
                  variational: bool, seed: int | None = None, scale: float = 1.0,
                  offset: Sequence[float] | None = None, conditioning: str = "none",
                  ivar_ref: float = 1.0, rng: random.Random | None = None) -> keras.Model:
    """Spectrum (npix) -> latent code, or (mean, log-variance) for the VAE.

    The spectrum enters the first Dense layer as ``(x - offset) * scale``
    (see :class:`SpectrumAutoencoder`).  With ``conditioning="ivar"`` the
    input is ``(flux, ivar)``, ``2 * npix`` wide (:class:`ConditionedInput`).
    ``rng`` draws the initial weights' seeds (None: Keras' global stream).
    """
    if conditioning == "ivar":
        inputs = keras.Input(shape=(2 * npix,), name="spectrum_and_ivar")
        x = ConditionedInput(npix, offset, scale, ivar_ref, name="conditioned_input")(inputs)
    else:
        inputs = keras.Input(shape=(npix,), name="spectrum")
        x = inputs
        if scale != 1.0 or offset is not None:
            x = _affine(npix, offset, scale, invert=False, name="input_scale")(x)
    x = _stack(x, units, dropout, "encoder", seed, rng)
    # One initialiser, so the two VAE heads start from the same kernel.
    init = _init(dropout, after_dropout=bool(units), rng=rng)
    if variational:
        mean = layers.Dense(latent, name="z_mean", kernel_initializer=init)(x)
        logvar = layers.Dense(latent, name="z_log_var", kernel_initializer=init)(x)
        return keras.Model(inputs, [mean, logvar], name="encoder")
    return keras.Model(inputs, layers.Dense(latent, name="z", kernel_initializer=init)(x),
                       name="encoder")


@keras.saving.register_keras_serializable(package=PACKAGE)
class LogVariance(layers.Layer):
    """Standardised log-variance ``s`` -> log-variance in flux units, ``clip(s) - 2 log(scale)``."""

    def __init__(self, scale: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, s):
        import math

        return ops.clip(s, *LOGVAR_RANGE) - 2.0 * math.log(self.scale)

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale}


def build_decoder(npix: int, latent: int, units: Sequence[int], dropout: float, *,
                  seed: int | None = None, scale: float = 1.0,
                  offset: Sequence[float] | None = None, heteroscedastic: bool = False,
                  rng: random.Random | None = None) -> keras.Model:
    """Latent vector -> spectrum (npix), mirroring the encoder, linear output.

    The linear output ``o`` is returned as ``o / scale + offset`` (see
    :class:`SpectrumAutoencoder`).  With ``heteroscedastic`` the decoder
    returns ``[spectrum, log-variance]``, the second from its own linear
    head on the last hidden layer, in (normalised flux)^2; its bias starts
    at 0, a variance of one output spread^2 (the error of the mean spectrum).
    ``rng`` as for :func:`build_encoder`.
    """
    inputs = keras.Input(shape=(latent,), name="latent")
    x = _stack(inputs, list(units)[::-1], dropout, "decoder", None if seed is None else seed + 100,
               rng)
    out = layers.Dense(npix, name="spectrum_out",
                       kernel_initializer=_init(dropout, after_dropout=bool(units), rng=rng))(x)
    if scale != 1.0 or offset is not None:
        out = _affine(npix, offset, scale, invert=True, name="output_scale")(out)
    if not heteroscedastic:
        return keras.Model(inputs, out, name="decoder")
    s = layers.Dense(npix, name="logvar_out",
                     kernel_initializer=_init(dropout, after_dropout=bool(units), rng=rng))(x)
    return keras.Model(inputs, [out, LogVariance(scale, name="logvar_scale")(s)], name="decoder")


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpectrumAutoencoder(keras.Model):
    """An AE (``variational=False``) or VAE of spectra with the paper's weighted loss.

    Parameters
    ----------
    npix : int
        Pixels per spectrum (the grid's ``npix``).
    latent : int
        Latent dimensions.
    units : sequence of int
        Encoder widths, widest first; the decoder uses them reversed.
    dropout : float
        Dropout rate after every intermediate layer.
    variational : bool
        VAE (mean, log-variance, sampling and KL term) instead of a plain AE.
    seed : int, optional
        Seed of dropout and latent sampling.
    likelihood : {"mse", "gaussian"}
        The paper's weighted MSE, or the Gaussian likelihood with a
        predicted per-pixel variance (module notes).
    estimate : {"mean", "median"}
        What the de-noised spectrum aims at: the mean (the paper's squared
        error) or each pixel's median (absolute error) of the clean
        spectrum given the noisy one (module notes).  Models saved before
        the option have ``"mean"``.
    input_offset, input_scale : sequence of float (npix), float
        Fixed standardisation of the input: the encoder sees
        ``(x - input_offset) * input_scale``.
    output_offset, output_scale : sequence of float (npix), float
        Fixed de-standardisation of the output: the decoder returns
        ``o / output_scale + output_offset`` for its linear output ``o``.
        The four are set once from the training set (see
        :class:`~survey_denoise.models.training.KerasDenoiser`) and saved
        with the model, so inputs, outputs and loss stay in normalised flux.
        None / 1 (the defaults, and what models saved without them get) is
        no transformation.
    conditioning : {"none", "ivar"}
        The spectrum alone (the paper), or the spectrum and its inverse
        variance, ``2 * npix`` inputs (module notes).  Models saved before
        the option have ``"none"``.
    ivar_ref : float
        The ivar given weight 0.5 (``conditioning="ivar"``), (normalised flux)^-2.
    init_seed : int, optional
        Seed of the stream that seeds the initial weights (and dropout and
        sampling when ``seed`` is None), so that a network built in a Dask
        worker starts where one built here does.  None: Keras' global stream.
        Not saved: a loaded model's weights replace the initial ones.
    """

    def __init__(self, npix: int, latent: int, units: Sequence[int], dropout: float,
                 variational: bool = False, seed: int | None = None,
                 input_offset: Sequence[float] | None = None, input_scale: float = 1.0,
                 output_offset: Sequence[float] | None = None, output_scale: float = 1.0,
                 likelihood: str = "mse", conditioning: str = "none", ivar_ref: float = 1.0,
                 init_seed: int | None = None, estimate: str = "mean", **kwargs) -> None:
        super().__init__(**kwargs)
        if likelihood not in LOSSES:
            raise ValueError(f"likelihood must be one of {LOSSES}, got {likelihood!r}")
        if estimate not in ESTIMATES:
            raise ValueError(f"estimate must be one of {ESTIMATES}, got {estimate!r}")
        self.estimate = estimate
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        self.conditioning, self.ivar_ref = conditioning, float(ivar_ref)
        # Not ``self.loss``: Keras' compile owns that name.
        self.likelihood = likelihood
        self.reconstruction = keras.metrics.Mean(name="reconstruction")
        self.npix, self.latent, self.units = int(npix), int(latent), [int(u) for u in units]
        self.dropout, self.variational, self.seed = float(dropout), bool(variational), seed
        self.input_offset = None if input_offset is None else [float(v) for v in input_offset]
        self.output_offset = None if output_offset is None else [float(v) for v in output_offset]
        self.input_scale, self.output_scale = float(input_scale), float(output_scale)
        rng = None if init_seed is None else random.Random(init_seed)
        self.encoder = build_encoder(npix, latent, self.units, dropout, variational=variational,
                                     seed=seed, scale=self.input_scale, offset=self.input_offset,
                                     conditioning=conditioning, ivar_ref=self.ivar_ref, rng=rng)
        self.decoder = build_decoder(npix, latent, self.units, dropout, seed=seed,
                                     scale=self.output_scale, offset=self.output_offset,
                                     heteroscedastic=likelihood == "gaussian", rng=rng)
        self.sampling = (Sampling(seed=seed if seed is not None else _draw(rng), name="sampling")
                         if variational else None)

    def build(self, input_shape) -> None:
        # The encoder and decoder are functional models, built when constructed.
        self.built = True

    def call(self, x, training: bool = False):
        """The de-noised spectrum; for ``likelihood="gaussian"`` it and its log-variance, concatenated."""
        if not self.variational:
            z = self.encoder(x, training=training)
        else:
            mean, logvar = self.encoder(x, training=training)
            # KL(q(z|x) || N(0, 1)) per spectrum, averaged over the batch (ELBO, Kingma & Welling 2014).
            kl = -0.5 * ops.sum(1.0 + logvar - ops.square(mean) - ops.exp(logvar), axis=-1)
            self.add_loss(ops.mean(kl))
            z = self.sampling([mean, logvar]) if training else mean
        out = self.decoder(z, training=training)
        # One tensor, so Keras' fit passes both halves to compute_loss.
        return ops.concatenate(out, axis=-1) if self.likelihood == "gaussian" else out

    @property
    def input_width(self) -> int:
        """Numbers per input row: ``npix``, or ``2 * npix`` (flux and ivar) when conditioned."""
        return 2 * self.npix if self.conditioning == "ivar" else self.npix

    @property
    def metrics(self):
        return [*super().metrics, self.reconstruction]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # The loss in float32 whatever the layers compute in (mixed_bfloat16 on GPUs).
        y_pred = ops.cast(y_pred, "float32")
        pred = y_pred[..., :self.npix] if self.likelihood == "gaussian" else y_pred
        sq = ops.square(pred - y)
        w = None if sample_weight is None else ops.cast(sample_weight, sq.dtype)
        if self.estimate == "median":
            dev = ops.abs(pred - y)
            loss = ops.mean(ops.sum(dev if w is None else dev * ops.sqrt(w), axis=-1))
        else:
            loss = ops.mean(0.5 * ops.sum(sq if w is None else sq * w, axis=-1))
        self.reconstruction.update_state(loss)
        if self.likelihood == "gaussian":
            logvar = y_pred[..., self.npix:]
            w = ops.ones_like(sq) / SOFTENING if w is None else w
            good = ops.cast(w > 0, sq.dtype)
            target_var = ops.maximum(1.0 / ops.maximum(w, 1e-30) - SOFTENING, 0.0) * good
            var = ops.exp(logvar) + target_var
            nll = good * (ops.log(var) + ops.stop_gradient(sq) / var)
            loss = loss + ops.mean(0.5 * ops.sum(nll, axis=-1))
        for extra in self.losses:
            loss = loss + ops.cast(extra, loss.dtype)
        return loss

    def get_config(self) -> dict:
        return {**super().get_config(), "npix": self.npix, "latent": self.latent, "units": self.units,
                "dropout": self.dropout, "variational": self.variational, "seed": self.seed,
                "input_offset": self.input_offset, "input_scale": self.input_scale,
                "output_offset": self.output_offset, "output_scale": self.output_scale,
                "likelihood": self.likelihood, "conditioning": self.conditioning,
                "ivar_ref": self.ivar_ref, "estimate": self.estimate}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)
