"""Training data for the de-noisers: (noisy, clean, weight) read chunk by chunk.

A :class:`SpectraPairs` pairs a noise-added set of spectra with the clean
originals, either two in-memory arrays or two rest-frame Datasets (usually
Zarr stores opened lazily).  It reads one galaxy chunk at a time, so a
training set larger than memory streams from disk; :func:`split` draws the
validation galaxies at random with a recorded seed, and :func:`batches`
turns a split into a Keras ``PyDataset`` that shuffles chunk order and rows
within a chunk every epoch (reading each chunk once per epoch).

Pixel weights follow the paper (eq. 3): ``w = 1 / (sigma^2 + 2e-6)`` with
``sigma`` the flux error of the *original* spectrum, the target ``y`` the
loss compares the prediction with (``sigma^2 = 1/ivar`` of the clean store),
written as ``ivar / (1 + 2e-6 ivar)`` so that ``ivar = 0`` gives ``w = 0``
without a division by zero.  The softening 2e-6 (normalised flux^2) is of
the order of an SDSS spectrum's own variance; it caps the weight of a
noise-free pixel at 5e5.  The added noise does not enter: it is the input's
uncertainty, not the target's.  (Weighting by the noisy ivar instead, ≈
1,400 per pixel for sigma = 0.04, makes the reconstruction term ~300 times
weaker against the VAE's KL term, and the VAE's posterior collapses onto
the prior: every galaxy decodes to the mean spectrum.)

A noise-conditioned network (``with_ivar``) reads the noisy input's ivar
too: each input row is ``(flux, ivar)``, ``2 * npix`` wide, with ivar 0 and
flux 0 wherever the input pixel is missing (ivar <= 0, masked, or a
non-finite flux or ivar; :func:`model_input`).  With ``coverage`` set (a
:class:`~survey_denoise.models.coverage.CoverageMasks`), the batches of
:func:`batches` also remove the input pixels a survey would not have
observed at a redshift drawn per galaxy; the target and its weights are
untouched, so the loss still counts every pixel the target covers.  With
:meth:`SpectraPairs.redraw_noise` called (Datasets made by ``degrade``
only), the training batches' inputs are the clean spectra with a new
realisation of the store's own noise every epoch
(:mod:`survey_denoise.noise.redraw`); validation keeps the stored draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import numpy as np

from ..flags import DROP

SOFTENING = 2e-6
"""Variance added to every pixel's sigma^2 before inverting (Portillo et al. 2020), normalised flux^2."""

CONDITIONINGS = ("none", "ivar")
"""What a network sees: the flux alone, or the flux and its inverse variance (:func:`model_input`)."""

ESTIMATES = ("mean", "median")
"""What a de-noised spectrum aims at, given the noisy one (the loss of :mod:`.networks`)."""

ARRAY_CHUNK = 4096
"""Rows per chunk when the training data are in-memory arrays."""


def pixel_weights(ivar: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Softened inverse-variance weights ``1 / (1/ivar + 2e-6)``; 0 where ``ivar <= 0`` or masked.

    Parameters
    ----------
    ivar : ndarray
        Inverse variance, (normalised flux)^-2.
    mask : ndarray of bool, optional
        Bad pixels (weight 0).
    """
    ivar = np.asarray(ivar, dtype=np.float64)
    good = np.isfinite(ivar) & (ivar > 0)
    if mask is not None:
        good &= ~np.asarray(mask, dtype=bool)
    w = np.where(good, ivar / (1.0 + SOFTENING * np.where(good, ivar, 0.0)), 0.0)
    return w.astype(np.float32)


def model_input(flux, ivar=None, mask=None, *, with_ivar: bool) -> np.ndarray:
    """The network's input rows: flux alone, or ``(flux, ivar)`` with missing pixels zeroed.

    Parameters
    ----------
    flux : ndarray (n, npix)
        Normalised flux.
    ivar : ndarray (n, npix), optional
        Its inverse variance, (normalised flux)^-2.  None (arrays without
        errors): every finite-flux pixel gets ivar 1.
    mask : ndarray of bool (n, npix), optional
        Bad pixels (missing).
    with_ivar : bool
        Return ``(flux, ivar)``, ``2 * npix`` wide, instead of the flux alone.

    Returns
    -------
    ndarray
        float32, (n, npix) or (n, 2 npix).  Missing pixels (ivar <= 0 or not
        finite, masked, or non-finite flux) have flux 0 and ivar 0.
    """
    x = as_flux(flux)
    if not with_ivar:
        return x
    raw = np.asarray(flux, np.float32)
    iv = np.ones_like(x) if ivar is None else np.asarray(ivar, np.float32)
    good = np.isfinite(raw) & np.isfinite(iv) & (iv > 0)
    if mask is not None:
        good &= ~np.asarray(mask, bool)
    zero = np.float32(0)
    return np.concatenate([np.where(good, x, zero), np.where(good, iv, zero)], axis=1)


def remove_pixels(x: np.ndarray, missing: np.ndarray, with_ivar: bool) -> np.ndarray:
    """Input rows ``x`` (see :func:`model_input`) with the ``missing`` (n, npix) pixels set to 0."""
    npix = missing.shape[1]
    x = x.copy()
    x[:, :npix][missing] = 0
    if with_ivar:
        x[:, npix:][missing] = 0
    return x


def as_flux(x) -> np.ndarray:
    """Float32 spectra with non-finite values set to 0 (the network cannot take NaN)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"spectra must be a 2-D array (n_galaxy, n_pixel), got shape {x.shape}")
    return np.where(np.isfinite(x), x, np.float32(0))


class SpectraPairs:
    """Noisy and clean spectra (and pixel weights), readable one galaxy chunk at a time.

    Parameters
    ----------
    noisy, clean : ndarray (n, npix) or xarray.Dataset
        Noise-added input and clean target, row for row the same galaxies.
    weights : ndarray (n, npix), optional
        Per-pixel loss weights.  Default for Datasets: :func:`pixel_weights`
        of the clean (target) ``ivar`` and ``mask``; for arrays, whose
        targets carry no errors: the weight of a noise-free pixel,
        ``1 / 2e-6``, everywhere.
    input_ivar : ndarray (n, npix), optional
        Arrays only: the noisy input's inverse variance, read when
        ``with_ivar`` (default: 1 for every finite pixel).  Datasets give
        their own ``ivar`` and ``mask``.

    Attributes
    ----------
    with_ivar : bool
        Rows of the input are ``(flux, ivar)`` (:func:`model_input`); set by
        a noise-conditioned model before it reads.
    coverage : CoverageMasks or None
        Coverage masks applied by :meth:`load` when given a draw key.
    noise_record : NoiseRecord or None
        Set by :meth:`redraw_noise`: :meth:`load` draws the input's noise
        again when given a noise key.
    noise_edges : ndarray or None
        Pixel edges of the clean store's grid, Å, read once by
        :meth:`redraw_noise` for every redrawn chunk.
    """

    def __init__(self, noisy, clean, weights=None, input_ivar=None) -> None:
        self.with_ivar = False
        self.coverage = None
        self.noise_record = None
        self.noise_edges = None
        self.wavelength = None
        self.is_dataset = hasattr(noisy, "data_vars")
        if self.is_dataset != hasattr(clean, "data_vars"):
            raise TypeError("noisy and clean must both be arrays or both be Datasets")
        if self.is_dataset:
            ids_n, ids_c = noisy["galaxy"].values, clean["galaxy"].values
            if ids_n.shape != ids_c.shape or not np.array_equal(ids_n, ids_c):
                raise ValueError("noisy and clean datasets hold different galaxies (or in another "
                                 "order); degrade the clean store to make its noisy twin")
            self.n, self.npix = noisy.sizes["galaxy"], noisy.sizes["wavelength"]
            chunks = noisy["flux"].chunks
            sizes = chunks[0] if chunks is not None else (self.n,)
            self.usable = ((noisy["flags"].values & int(DROP)) == 0) & \
                          ((clean["flags"].values & int(DROP)) == 0)
            self.wavelength = np.asarray(noisy["wavelength"].values, np.float64)
        else:
            noisy, clean = as_flux(noisy), as_flux(clean)
            if noisy.shape != clean.shape:
                raise ValueError(f"noisy {noisy.shape} and clean {clean.shape} spectra differ in shape")
            self.n, self.npix = noisy.shape
            sizes = [min(ARRAY_CHUNK, self.n - s) for s in range(0, self.n, ARRAY_CHUNK)]
            self.usable = np.ones(self.n, bool)
            if input_ivar is not None:
                input_ivar = np.broadcast_to(np.asarray(input_ivar, np.float32), noisy.shape)
            if weights is None:
                weights = np.float32(1.0 / SOFTENING)
        if weights is not None:
            weights = np.broadcast_to(np.asarray(weights, np.float32), (self.n, self.npix))
        self.noisy, self.clean, self.weights, self.input_ivar = noisy, clean, weights, input_ivar
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    @property
    def n_chunks(self) -> int:
        return len(self.starts) - 1

    def redraw_noise(self) -> None:
        """Let :meth:`load` draw the noisy input again from the clean target (see the module notes).

        Raises
        ------
        ValueError
            For in-memory arrays (they record no noise model), or a noisy
            store whose noise cannot be drawn again
            (:meth:`~survey_denoise.noise.redraw.NoiseRecord.from_dataset`).
        """
        if not self.is_dataset:
            raise ValueError("drawing the noise again needs the noisy and clean Datasets (a store made "
                             "by 'degrade' from the clean one), not arrays")
        from ..grid import Grid
        from ..noise.redraw import NoiseRecord

        self.noise_record = NoiseRecord.from_dataset(self.noisy, self.clean)
        self.noise_edges = Grid.from_dataset(self.clean).edges

    def load(self, c: int, draw: str | None = None,
             noise_draw: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chunk ``c`` as (model input, clean flux, weights), float32 (rows, npix or 2 npix).

        With ``draw`` (a key such as ``"epoch-3"``) and :attr:`coverage`
        set, input pixels outside a coverage drawn per galaxy are removed
        (:func:`remove_pixels`); the same key draws the same masks.  With
        ``noise_draw`` and :attr:`noise_record` set, the input is the clean
        target with that key's realisation of the store's noise instead of
        the stored noisy spectra.
        """
        a, b = int(self.starts[c]), int(self.starts[c + 1])
        if not self.is_dataset:
            ivar = None if self.input_ivar is None else self.input_ivar[a:b]
            x = model_input(self.noisy[a:b], ivar, with_ivar=self.with_ivar)
            y, w = self.clean[a:b], np.asarray(self.weights[a:b])
        else:
            # Synchronous: the reader runs inside Keras' loop; a Zarr chunk is one task.
            names = ["flux", "ivar", "mask"] if self.with_ivar else ["flux"]
            redraw = noise_draw is not None and self.noise_record is not None
            with dask.config.set(scheduler="synchronous"):
                target = self.clean[["flux", "ivar", "mask", "z", "norm", "flags"]
                                    if redraw else ["flux", "ivar", "mask"]].isel(galaxy=slice(a, b)).compute()
                if redraw:
                    inp = dict(zip(("flux", "ivar", "mask"), self.noise_record.draw(
                        target, self.noise_edges, noise_draw), strict=True))
                else:
                    inp = {k: v.values for k, v in self.noisy[names].isel(galaxy=slice(a, b)).compute().items()}
            x = (model_input(inp["flux"], inp["ivar"], inp["mask"], with_ivar=True)
                 if self.with_ivar else as_flux(inp["flux"]))
            y = as_flux(target["flux"].values)
            w = (np.asarray(self.weights[a:b]) if self.weights is not None
                 else pixel_weights(target["ivar"].values, target["mask"].values))
        if draw is not None and self.coverage is not None:
            from ..grid import GRID

            wave = self.wavelength if self.wavelength is not None else GRID.wavelength
            z = self.coverage.redshifts(b - a, draw, a)
            x = remove_pixels(x, ~self.coverage.covered(wave, z), self.with_ivar)
        return x, y, w


@dataclass(frozen=True)
class Split:
    """Training and validation rows (global galaxy indices, sorted) and the split's seed."""

    train: np.ndarray
    validation: np.ndarray
    seed: int


def split(pairs: SpectraPairs, fraction: float, seed: int | None) -> Split:
    """Draw ``fraction`` of the usable galaxies at random as validation.

    ``seed=None`` draws a fresh seed from the OS; either way the seed used is
    returned, so the split can be recorded and redrawn.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation_split must be in [0, 1), got {fraction}")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    rows = np.flatnonzero(pairs.usable)
    if rows.size == 0:
        raise ValueError("no usable training spectra (all are flagged as dropped)")
    perm = np.random.default_rng(seed).permutation(rows)
    n_val = int(round(fraction * rows.size))
    return Split(np.sort(perm[n_val:]), np.sort(perm[:n_val]), int(seed))


def iter_rows(pairs: SpectraPairs, rows: np.ndarray):
    """Yield (noisy, clean, weights) for ``rows``, one chunk at a time, in order."""
    for c in range(pairs.n_chunks):
        a, b = pairs.starts[c], pairs.starts[c + 1]
        local = rows[(rows >= a) & (rows < b)] - a
        if local.size:
            x, y, w = pairs.load(c)
            yield x[local], y[local], w[local]


def batches(pairs: SpectraPairs, rows: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0):
    """A Keras ``PyDataset`` of (noisy, clean, weights) batches over ``rows``.

    Batches never straddle a chunk, so each chunk is read once per epoch; with
    ``shuffle`` the chunk order and the rows within each chunk are redrawn
    every epoch from ``seed`` and the epoch number.  With ``pairs.coverage``
    set, coverage masks are drawn afresh every epoch when shuffling (an
    augmentation), and once for all epochs otherwise (validation: its loss
    stays comparable between epochs).  With ``pairs.noise_record`` set, the
    input's noise is drawn afresh every epoch when shuffling; otherwise the
    stored draw is read.
    """
    import keras

    class _Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self.cached: tuple[int, tuple] | None = None
            self.per_chunk = []
            for c in range(pairs.n_chunks):
                a, b = pairs.starts[c], pairs.starts[c + 1]
                self.per_chunk.append(rows[(rows >= a) & (rows < b)])
            self.plan = self._plan()

        def _plan(self) -> list[tuple[int, np.ndarray]]:
            rng = np.random.default_rng([seed, self.epoch])
            order = rng.permutation(pairs.n_chunks) if shuffle else range(pairs.n_chunks)
            plan = []
            for c in order:
                r = rng.permutation(self.per_chunk[c]) if shuffle else self.per_chunk[c]
                plan += [(int(c), r[i:i + batch_size]) for i in range(0, r.size, batch_size)]
            return plan

        def __len__(self) -> int:
            return len(self.plan)

        def __getitem__(self, idx: int):
            c, r = self.plan[idx]
            if self.cached is None or self.cached[0] != c:
                draw = f"train-{seed}-{self.epoch}" if shuffle else f"fixed-{seed}"
                keys = {}
                if pairs.coverage is not None:
                    keys["draw"] = draw
                if shuffle and pairs.noise_record is not None:
                    keys["noise_draw"] = draw
                self.cached = (c, pairs.load(c, **keys))
            x, y, w = self.cached[1]
            local = r - pairs.starts[c]
            return x[local], y[local], w[local]

        def start_at(self, epoch: int) -> None:
            """Serve epoch ``epoch`` next (a resumed training): its order, masks and noise."""
            if epoch != self.epoch:
                self.epoch, self.cached = epoch, None
                self.plan = self._plan()

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.plan = self._plan()
            if shuffle and (pairs.coverage is not None or pairs.noise_record is not None):
                self.cached = None  # this epoch's masks and noise are drawn anew

    return _Batches()
