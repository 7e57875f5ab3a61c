"""Variational autoencoder de-noiser (Scourfield et al. 2023, §3.2; Table 5), with uncertainties.

Besides the de-noised spectrum decoded from the posterior mean, the VAE can
decode ``K`` draws from its latent posterior ``N(mean, exp(logvar))`` and
return their mean and standard deviation per pixel.  The spread alone is
not an error bar: a collapsed posterior gives a spread ten times smaller
than the actual error.  With ``return_var`` the total variance is returned,
the model's variance about the truth (averaged over the draws) plus the
spread squared (the law of total variance).
"""

from __future__ import annotations

import numpy as np

from .training import KerasDenoiser


class VAEDenoiser(KerasDenoiser):
    """Dense VAE trained on (noise-added -> clean) spectra: weighted MSE + KL divergence.

    Parameters are those of :class:`~survey_denoise.models.ae.AEDenoiser`;
    the default architectures are the paper's Table 5.
    """

    kind = "vae"
    variational = True
    # latent size -> (dropout, encoder widths), Table 5 of the paper.
    DEFAULTS = {2: (0.8, (1000, 900, 600, 200)), 4: (0.7, (1000, 1000, 700, 500)),
                6: (0.5, (800, 800, 700, 600)), 10: (0.9, (900, 900, 600, 400))}

    def _encode_both(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, logvar = self._batched(lambda b: self.model_.encoder(b, training=False), X)
        return mean, logvar

    def _encode(self, X: np.ndarray) -> np.ndarray:
        return self._encode_both(X)[0]

    def encode(self, X, return_logvar: bool = False, *, ivar=None):
        """Latent posterior means (n, latent); with ``return_logvar`` also the log-variances."""
        self._require_fitted()
        mean, logvar = self._encode_both(self._input(X, ivar))
        return (mean, logvar) if return_logvar else mean

    def denoise(self, X, n_samples: int = 0, *, eps: np.ndarray | None = None,
                seed: int | None = None, return_var: bool = False, ivar=None):
        """De-noised spectra; with ``n_samples = K > 0`` also their spread.

        Parameters
        ----------
        X : ndarray (n, npix) or Dataset
            Noisy spectra.
        n_samples : int
            0: decode the posterior mean, return one array.  K > 0: decode K
            draws ``z = mean + exp(logvar/2) eps`` and return ``(mean, std)``
            of the K decodes, each (n, npix) float32.
        eps : ndarray (K, n, latent), optional
            The standard-normal draws (e.g. keyed by galaxy id, so results do
            not depend on chunking); default drawn from ``seed``.
        seed : int, optional
            Seed of the draws when ``eps`` is not given (default: the model's seed).
        return_var : bool
            Also return the total variance about the true spectrum,
            (normalised flux)^2: ``(mean, var)`` for K = 0, ``(mean, var,
            std)`` for K > 0.
        ivar : ndarray (n, npix), optional
            The input's inverse variance, for a noise-conditioned model (see
            :meth:`~survey_denoise.models.base.Denoiser.denoise`).
        """
        self._require_fitted()
        X = self._input(X, ivar)
        if n_samples <= 0:
            return self._denoise_var(X) if return_var else self._denoise(X)
        mean, logvar = self._encode_both(X)
        if eps is None:
            rng = np.random.default_rng(self.seed if seed is None else seed)
            eps = rng.standard_normal((n_samples, *mean.shape), dtype=np.float32)
        eps = np.asarray(eps, np.float32)
        if eps.shape != (n_samples, *mean.shape):
            raise ValueError(f"eps has shape {eps.shape}, expected {(n_samples, *mean.shape)}")
        scale = np.exp(0.5 * logvar)
        # Welford-free two-pass is fine: K decodes of (n, npix) are summed in float64.
        total = np.zeros((X.shape[0], self.model_.npix), np.float64)
        total_sq = np.zeros_like(total)
        model_var = np.zeros_like(total)
        for k in range(n_samples):
            d, v = self._decode_var(mean + scale * eps[k]) if return_var else \
                (self._decode(mean + scale * eps[k]), 0.0)
            d = d.astype(np.float64)
            total += d
            total_sq += d * d
            model_var += v
        avg = total / n_samples
        var = np.maximum(total_sq / n_samples - avg * avg, 0.0)
        std = np.sqrt(var).astype(np.float32)
        if return_var:
            return avg.astype(np.float32), (model_var / n_samples + var).astype(np.float32), std
        return avg.astype(np.float32), std
