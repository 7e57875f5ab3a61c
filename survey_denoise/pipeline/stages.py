"""How each configured stage calls the library: config section -> lazy Dataset.

One small function per stage, each importing its library module only when
the stage runs (a pipeline without a denoise stage never imports
TensorFlow).  Nothing here computes or writes: the runner does, except
:func:`train`, which fits on the driver and saves the model folder (the one
place a model is trained, for a run's train step and for ``survey-denoise
train`` alike), and :func:`catalogue_files` and :func:`truth_file`, which the runner sends
to a worker (:func:`in_one_task`).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING

import dask
import numpy as np
import pandas as pd
import xarray as xr

from .params import Combine, Degrade, Denoise, Fit, Preprocess, Train

if TYPE_CHECKING:
    from ..models import Denoiser
    from .config import MockInput, PipelineConfig


def mock(cfg: MockInput, chunk: int) -> xr.Dataset:
    """A lazy mock survey; its truth rides along as ``true_*`` variables on ``galaxy``."""
    from ..mock import MockConfig, generate, select
    from ..mock.designs import config_for

    kwargs = config_for(cfg.design, cfg.survey, cfg.z)
    ids = select(cfg.design, cfg.n, cfg.seed, z_range=kwargs.get("z_range"))
    kwargs.update(seed=cfg.seed, survey=cfg.survey, rest=cfg.frame == "rest")
    return generate(ids, MockConfig(**kwargs), chunk_size=chunk, design=cfg.design)


def truth_file(store: Path, path: Path) -> None:
    """The truth table of a written mock store, as Parquet with units."""
    from ..io.store import open_store
    from ..mock import write_truth as write
    from ..schema import truth_variables

    raw = open_store(store)
    write(raw[["z", *truth_variables(raw)]], path)


def ingest(config: PipelineConfig, client) -> tuple[xr.Dataset, list]:
    """Real survey files, read on the cluster."""
    from ..io.ingest import ingest as ingest_files

    files = config.input.files
    paths = sorted({p for pattern in files.paths for p in glob(pattern)})
    selection = files.select.selection() if files.select is not None else None
    options = None if selection is None else [{"selection": selection}] * len(paths)
    return ingest_files(paths, files.format, client=client, progress=False,
                        chunk_size=config.chunk, options=options)


def preprocess(ds: xr.Dataset, cfg: Preprocess) -> xr.Dataset:
    """Observed-frame spectra -> rest frame, normalised; rest-frame spectra are only normalised."""
    from ..preprocess import normalise
    from ..preprocess import preprocess as run

    if ds["wavelength"].attrs.get("frame") == "rest":
        return normalise(ds, cfg.norm)
    kwargs = {"norm": cfg.norm}
    if cfg.min_coverage is not None:
        kwargs["min_coverage"] = cfg.min_coverage
    return run(ds, **kwargs)


def degrade(ds: xr.Dataset, cfg: Degrade) -> xr.Dataset:
    from ..noise import degrade as run

    return run(ds, cfg.noise_model(), seed=cfg.seed, z_target=cfg.z_target, cosmology=cfg.cosmology)


def holdout(n: int, cfg: Train) -> np.ndarray:
    """Sorted positions of the galaxies the train stage never sees (``cfg.holdout`` of ``n``)."""
    n_out = cfg.n_heldout(n)
    if n_out >= n:
        from .config import ConfigError  # config imports the stages through the registry

        raise ConfigError(f"stages.train.holdout: {n_out} held out of {n} galaxies leaves none to "
                          "train on")
    return np.sort(np.random.default_rng([cfg.seed, 0x401D]).permutation(n)[:n_out])


def train(noisy: xr.Dataset, clean: xr.Dataset, cfg: Train, out: Path, *,
          echo: Callable[[str], None] | None = None, checkpoint: Path | None = None,
          **options) -> Denoiser:
    """Train a de-noiser on two stores and save it in ``out``: artefact, card, ``loss.png``.

    Parameters
    ----------
    noisy, clean : xarray.Dataset
        Noise-added rest-frame spectra and their clean twins (same galaxies).
    cfg : Train
        Kind, latent size and training options.
    out : Path
        The model folder to write (the AE/VAE loss curves as ``loss.png`` in it).
    echo : callable, optional
        Gets one line naming the model before it trains.
    checkpoint : Path, optional
        AE/VAE: a folder for the training's state (saved every ~30 s of epochs); a
        training killed before its model was saved goes on from it
        (:mod:`~survey_denoise.models.checkpoint`). The caller removes it.
    **options
        :func:`~survey_denoise.models.build_model` options that replace ``cfg``'s
        (``verbose``; a search's ``units`` and ``dropout``).

    Returns
    -------
    Denoiser
        The fitted model; its card (``card_``) holds the metrics and history.

    Raises
    ------
    ValueError
        When the stores cannot train the model (too few usable spectra, ...).
    """
    from ..models import build_model
    from ..models.figures import loss_curves

    model = build_model(cfg.kind, cfg.latent, **{**cfg.options(), **options})
    if echo is not None:
        echo(f"train: {model!r} on {noisy.sizes['galaxy']} galaxies")
    resumable = checkpoint is not None and "checkpoint" in inspect.signature(model.fit).parameters
    model.fit(noisy, clean, validation_split=cfg.validation_split,
              **({"checkpoint": checkpoint} if resumable else {}))
    model.save(out)
    if cfg.kind != "pca":  # PCA has no epochs
        loss_curves(model.card_["history"], title=f"{cfg.kind.upper()}, latent {cfg.latent}",
                    save=Path(out) / "loss.png",
                    estimate=model.card_["architecture"]["estimate"])
    return model


def denoise(ds: xr.Dataset, model_dir: Path, cfg: Denoise) -> xr.Dataset:
    from ..inference import denoise as run

    return run(ds, model_dir, batch_size=cfg.batch_size, n_samples=cfg.samples, seed=cfg.seed,
               input_detections=cfg.input_detections)


def fit(ds: xr.Dataset, cfg: Fit) -> xr.Dataset:
    from ..fitting import fit_lines

    kwargs = {"method": cfg.method}
    if cfg.templates is not None:
        kwargs["templates"] = str(cfg.templates)
    if cfg.width_prior == "none":
        kwargs["width_prior"] = None
    kwargs["weights_prior"] = cfg.weights_prior or None
    kwargs["prior_test"] = cfg.prior_test or None
    if cfg.signed:
        kwargs["signed"] = True
    return fit_lines(ds, **kwargs)


def combine(denoised: xr.Dataset, noisy: xr.Dataset, cfg: Combine) -> xr.Dataset:
    """The combined catalogue of a de-noised store's catalogue and its input's (lazy, chunked)."""
    from ..fitting.combine import combine_catalogues

    return combine_catalogues(denoised, noisy)


def catalogue_files(store: Path, path: Path) -> None:
    """Parquet and FITS (``path`` and its ``.fits`` sibling) of a written catalogue store."""
    from ..fitting.catalogue import write_catalogue as write
    from ..io.store import open_store

    write(open_store(store, spectra=False), path)


def in_one_task(client, func: Callable, *args):
    """``func(*args)`` as one task on ``client``'s cluster; here when ``client`` is None.

    For work on whole catalogues and models (catalogue files, report
    products): the driver, which also runs the scheduler, only plans and
    records.  Futures among ``args`` (nested in dicts too) arrive as their
    values.
    """
    if client is None:
        return func(*args)
    key = f"{func.__name__.strip('_').replace('_', '-')}-{time.time_ns()}"
    return client.submit(_synchronous, func, *args, pure=False, key=key).result()


def _synchronous(func: Callable, *args):
    # A compute inside a task would otherwise go back to the scheduler, as one
    # task per variable and chunk of every lazy array it reads.
    with dask.config.set(scheduler="synchronous"):
        return func(*args)


def catalogue_frame(cat: xr.Dataset) -> pd.DataFrame:
    """A (small, per-galaxy) catalogue store as a DataFrame keyed by ``galaxy``."""
    frame = cat.compute().to_dataframe().reset_index()
    for name in frame.columns:
        if frame[name].dtype.kind == "T" or str(frame[name].dtype).startswith("StringDType"):
            frame[name] = frame[name].astype(str)
    return frame
