"""The Keras networks of the paper's autoencoders (Scourfield et al. 2023, §3.2).

Encoder: Dense layers of decreasing width, each followed by LeakyReLU
(negative slope 0.3) and Dropout; then the latent layer with no activation
(one Dense for the AE; a mean and a log-variance Dense plus sampling for the
VAE).  The decoder mirrors the encoder (widths reversed, same activation and
dropout) and ends in a linear ``Dense(npix)``.

Loss: ``0.5 * sum_pixels w * (x' - y)^2`` per spectrum, averaged over the
batch, with ``w`` the per-pixel weights passed as Keras' ``sample_weight``;
the VAE adds the KL divergence of its posterior from a standard normal.

Every class is registered with ``keras.saving.register_keras_serializable``
so ``model.keras`` files load with ``safe_mode=True`` (no lambdas).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

PACKAGE = "survey_denoise"
LEAKY_SLOPE = 0.3


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(layers.Layer):
    """Draw ``z = mean + exp(logvar / 2) * eps`` with ``eps ~ N(0, 1)`` (reparameterisation)."""

    def __init__(self, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        mean, logvar = inputs
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * logvar) * eps

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


def _stack(x, units: Sequence[int], dropout: float, prefix: str, seed: int | None):
    for i, n in enumerate(units):
        x = layers.Dense(int(n), name=f"{prefix}_dense_{i}")(x)
        x = layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=f"{prefix}_leaky_{i}")(x)
        x = layers.Dropout(dropout, seed=None if seed is None else seed + i,
                           name=f"{prefix}_dropout_{i}")(x)
    return x


def build_encoder(npix: int, latent: int, units: Sequence[int], dropout: float, *,
                  variational: bool, seed: int | None = None) -> keras.Model:
    """Spectrum (npix) -> latent code, or (mean, log-variance) for the VAE."""
    inputs = keras.Input(shape=(npix,), name="spectrum")
    x = _stack(inputs, units, dropout, "encoder", seed)
    if variational:
        mean = layers.Dense(latent, name="z_mean")(x)
        logvar = layers.Dense(latent, name="z_log_var")(x)
        return keras.Model(inputs, [mean, logvar], name="encoder")
    return keras.Model(inputs, layers.Dense(latent, name="z")(x), name="encoder")


def build_decoder(npix: int, latent: int, units: Sequence[int], dropout: float, *,
                  seed: int | None = None) -> keras.Model:
    """Latent vector -> spectrum (npix), mirroring the encoder, linear output."""
    inputs = keras.Input(shape=(latent,), name="latent")
    x = _stack(inputs, list(units)[::-1], dropout, "decoder", None if seed is None else seed + 100)
    return keras.Model(inputs, layers.Dense(npix, name="spectrum_out")(x), name="decoder")


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
    """

    def __init__(self, npix: int, latent: int, units: Sequence[int], dropout: float,
                 variational: bool = False, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.npix, self.latent, self.units = int(npix), int(latent), [int(u) for u in units]
        self.dropout, self.variational, self.seed = float(dropout), bool(variational), seed
        self.encoder = build_encoder(npix, latent, self.units, dropout, variational=variational, seed=seed)
        self.decoder = build_decoder(npix, latent, self.units, dropout, seed=seed)
        self.sampling = Sampling(seed=seed, name="sampling") if variational else None

    def build(self, input_shape) -> None:
        # The encoder and decoder are functional models, built when constructed.
        self.built = True

    def call(self, x, training: bool = False):
        if not self.variational:
            return self.decoder(self.encoder(x, training=training), training=training)
        mean, logvar = self.encoder(x, training=training)
        # KL(q(z|x) || N(0, 1)) per spectrum, averaged over the batch (ELBO, Kingma & Welling 2014).
        kl = -0.5 * ops.sum(1.0 + logvar - ops.square(mean) - ops.exp(logvar), axis=-1)
        self.add_loss(ops.mean(kl))
        z = self.sampling([mean, logvar]) if training else mean
        return self.decoder(z, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        sq = ops.square(y_pred - y)
        if sample_weight is not None:
            sq = sq * ops.cast(sample_weight, sq.dtype)
        loss = ops.mean(0.5 * ops.sum(sq, axis=-1))
        for extra in self.losses:
            loss = loss + extra
        return loss

    def get_config(self) -> dict:
        return {**super().get_config(), "npix": self.npix, "latent": self.latent, "units": self.units,
                "dropout": self.dropout, "variational": self.variational, "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)
