"""PCA de-noiser: keep the leading principal components of the noise-added spectra.

As in the paper (§3.1), scikit-learn's PCA is fit on the noise-added
spectra only (the clean spectra are used for the validation metric); a
spectrum is de-noised by projecting it onto the components and back.
Training sets too large for memory are fit with ``IncrementalPCA``, one
galaxy chunk at a time.

The fitted state is three plain arrays, saved as ``model.npz`` and read with
``allow_pickle=False``: loading a model folder runs no code from it, so a
PCA model from an untrusted source is as safe to load as its card.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Denoiser
from .data import iter_rows

IN_MEMORY_ROWS = 200_000
"""Above this many training spectra, fit chunk by chunk with IncrementalPCA."""


class PCADenoiser(Denoiser):
    """Principal-component de-noiser.

    Parameters
    ----------
    latent : int
        Number of components kept (the paper: 2, 4, 6, 10).
    seed : int, optional
        Seed of the randomised SVD and of the validation split.
    """

    kind = "pca"
    artefact = "model.npz"
    output_in_input_norm = True

    def __init__(self, latent: int = 6, seed: int | None = 0) -> None:
        super().__init__(latent=latent, seed=seed)

    @property
    def n_components(self) -> int:
        """Alias of ``latent``, scikit-learn's name."""
        return self.latent

    def _fit(self, pairs, parts) -> dict[str, list[float]]:
        from sklearn.decomposition import PCA, IncrementalPCA

        if parts.train.size > IN_MEMORY_ROWS:
            pca = IncrementalPCA(n_components=self.latent)
            for x, _, _ in iter_rows(pairs, parts.train):
                if x.shape[0] >= self.latent:
                    pca.partial_fit(x)
        else:
            x = np.concatenate([x for x, _, _ in iter_rows(pairs, parts.train)])
            pca = PCA(n_components=self.latent, random_state=parts.seed).fit(x)
        self.components_ = pca.components_.astype(np.float32)
        self.mean_ = pca.mean_.astype(np.float32)
        self.explained_variance_ratio_ = pca.explained_variance_ratio_.astype(np.float64)
        return {"explained_variance_ratio": self.explained_variance_ratio_.tolist()}

    def _encode(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) @ self.components_.T

    def _decode(self, Z: np.ndarray) -> np.ndarray:
        return (Z @ self.components_ + self.mean_).astype(np.float32)

    def _save_artefact(self, path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, components=self.components_, mean=self.mean_,
                     explained_variance_ratio=self.explained_variance_ratio_)

    def _load_artefact(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as f:
            self.components_ = f["components"]
            self.mean_ = f["mean"]
            self.explained_variance_ratio_ = f["explained_variance_ratio"]
        if self.components_.shape[0] != self.latent:
            raise ValueError(f"{path}: {self.components_.shape[0]} components but the card says "
                             f"latent={self.latent}")
