"""De-noisers of rest-frame spectra: PCA, autoencoder (AE) and variational autoencoder (VAE).

All three share :class:`~survey_denoise.models.base.Denoiser` (fit / encode /
decode / denoise / save / load) and save to a folder with a JSON model card
(:mod:`~survey_denoise.models.card`).  ``denoise(X, return_var=True)`` also
gives each de-noised pixel's variance about the true spectrum; the AE/VAE
training presets are in :mod:`~survey_denoise.models.training`
(docs/models.md).  The Keras models are imported only
when used, so working with a PCA model never imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Denoiser, NotFittedError
from .card import check, read_card
from .pca import PCADenoiser

# TensorFlow's C++ start-up chatter is noise for a command-line tool.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["KINDS", "AEDenoiser", "Denoiser", "NotFittedError", "PCADenoiser", "UnreadableModel",
           "VAEDenoiser", "build_model", "check", "check_loadable", "load_model", "read_card"]


def __getattr__(name: str):
    if name == "AEDenoiser":
        from .ae import AEDenoiser

        return AEDenoiser
    if name == "VAEDenoiser":
        from .vae import VAEDenoiser

        return VAEDenoiser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


KINDS = ("pca", "ae", "vae")
"""De-noiser kinds, as a card's ``kind``, ``train KIND`` and ``stages.train.kind`` name them."""


def build_model(kind: str, latent: int, **options) -> Denoiser:
    """A new de-noiser of ``kind``, given the options its class takes.

    Options the class has no parameter for (``epochs`` for PCA) are left out,
    so one set of training options serves every kind.
    """
    import inspect

    cls = model_class(kind)
    accepted = inspect.signature(cls.__init__).parameters
    return cls(latent, **{k: v for k, v in options.items() if k in accepted})


def model_class(kind: str) -> type[Denoiser]:
    """The de-noiser class for a card's ``kind`` ("pca", "ae" or "vae")."""
    if kind == "pca":
        return PCADenoiser
    if kind in ("ae", "vae"):
        return __getattr__(f"{kind.upper()}Denoiser")
    raise ValueError(f"unknown model kind {kind!r}; expected pca, ae or vae")


def load_model(path: str | Path, expect=None) -> Denoiser:
    """Load any saved de-noiser folder; check it against the Dataset ``expect`` if given.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a model folder.
    SchemaError
        If the card is unreadable, or ``expect`` is on another grid or normalisation.
    """
    return model_class(read_card(path)["kind"]).load(path, expect=expect)


class UnreadableModel(ValueError):
    """A model folder whose card reads but whose artefact does not load (truncated, damaged)."""


def check_loadable(path: str | Path) -> None:
    """Load a saved model once, here, and say in one line which file is broken if it fails.

    Call it on the driver before a cluster starts: a damaged artefact would
    otherwise fail every task of a de-noising run, each with its own
    traceback, and leave an empty output store behind.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a model folder, or its artefact is missing.
    SchemaError
        If the card is unreadable.
    UnreadableModel
        If the artefact (``model.npz``, ``model.keras``) cannot be loaded.
    """
    from ..schema import SchemaError

    card = read_card(path)
    artefact = Path(path) / str(card.get("artefact", "?"))
    if not artefact.is_file():
        raise FileNotFoundError(f"{artefact}: the model's {card.get('artefact')} is missing")
    try:
        load_model(path)
    except (FileNotFoundError, SchemaError):
        raise
    except Exception as err:  # whatever numpy, zipfile or Keras says about a damaged file
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        raise UnreadableModel(
            f"{artefact}: cannot load the model ({type(err).__name__}: {reason}); the file is "
            "damaged or truncated: copy it again or train the model again") from None
