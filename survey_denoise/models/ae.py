"""Autoencoder de-noiser (Scourfield et al. 2023, §3.2; best architectures of Table 4)."""

from __future__ import annotations

from .training import KerasDenoiser


class AEDenoiser(KerasDenoiser):
    """Dense autoencoder trained on (noise-added -> clean) spectra with the weighted MSE loss.

    Parameters
    ----------
    latent : int
        Latent dimensions.
    units : sequence of int, optional
        Encoder widths, widest first (2-4 layers, each <= the previous); the
        decoder mirrors them.  Default: the paper's Table 4 for the nearest
        latent size.
    dropout : float, optional
        Dropout after every intermediate layer (default: Table 4).
    epochs : int
        Maximum epochs (the paper's final models: 200); the plateau rule may stop earlier.
    batch_size : int
        Spectra per gradient step (the paper: 64).
    learning_rate : float
        Adam's initial learning rate (the paper: 1e-4).
    patience, min_delta : int, float
        The plateau rule: epochs allowed for a relative fall of ``min_delta``.
    seed : int, optional
        Seed of initial weights, dropout, shuffling and the validation split.
    verbose : int
        Progress display while training: 0 nothing, 1 a bar over epochs with
        the latest losses, 2 Keras' one line per epoch.
    standardise : bool
        Wrap the network in a fixed standardisation of its input and output
        computed from the training set (mean spectra, overall spreads; see
        :func:`~survey_denoise.models.training.standardisation`), saved with
        the model.  Without it the paper's networks stay on the mean spectrum
        on unit-L2 data (see :mod:`~survey_denoise.models.networks`).
    """

    kind = "ae"
    variational = False
    # latent size -> (dropout, encoder widths), Table 4 of the paper.
    DEFAULTS = {2: (0.8, (900, 800, 400, 300)), 4: (0.5, (900, 900, 500, 400)),
                6: (0.7, (1000, 900, 800, 800)), 10: (0.9, (900, 800, 800, 600))}
