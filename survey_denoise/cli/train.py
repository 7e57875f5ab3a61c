"""``survey-denoise train`` and ``survey-denoise evaluate``: de-noisers from stores.

``train pca|ae|vae --noisy STORE --clean STORE --latent K --out MODEL_DIR``
fits a model on a noise-added store and its clean twin (batches streamed
from Zarr), shows a bar over epochs with the loss, saves the model folder (artefact +
card) and the loss curves (``loss.png``).  ``--search N`` first runs the
paper's random search (N trials of at most 25 epochs; table
``search.csv``) and trains the best architecture for ``--epochs``.
``--preset paper`` trains with the paper's choices (Table 4/5 dropout,
weighted MSE, the 10 % plateau rule, last-epoch weights); the default
preset's choices and their reasons are in docs/models.md and the card.

``evaluate MODEL_DIR --noisy STORE --clean STORE`` prints the test MSE.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..models.coverage import SURVEYS
from ..models.training import PRESETS
from .common import UserError, client_for, cluster_option, no_progress_option, workers_option


def _open(path: Path):
    from ..io.store import open_store

    return open_store(path, frame="rest")


@click.command()
@click.argument("kind", type=click.Choice(["pca", "ae", "vae"]))
@click.option("--noisy", required=True, type=click.Path(path_type=Path), help="Noise-added rest-frame store.")
@click.option("--clean", required=True, type=click.Path(path_type=Path), help="Clean store (same galaxies).")
@click.option("--latent", type=click.IntRange(min=1), default=6, show_default=True,
              help="Latent dimensions (PCA: components).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Model folder to write.")
@click.option("--search", "n_search", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random-search trials before the final training (AE/VAE; the paper: 100).")
@click.option("--search-epochs", type=click.IntRange(min=1), default=25, show_default=True,
              help="Most epochs per search trial.")
@click.option("--epochs", type=click.IntRange(min=1), default=200, show_default=True,
              help="Most epochs of the final training (the plateau rule may stop earlier).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="default", show_default=True,
              help="AE/VAE training choices: 'paper' (Scourfield et al. 2023 as published) or "
                   "'default' (measured on the mock; docs/models.md).")
@click.option("--conditioning", type=click.Choice(["none", "ivar"]), default=None,
              help="AE/VAE input: flux alone, or flux and ivar (masked pixels as missing) [preset's].")
@click.option("--coverage", type=click.Choice(["none", *SURVEYS]), default=None,
              help="AE/VAE training coverage masks: 'none' or 'desi-bgs' (DESI 3600-9824 A at "
                   "BGS-like redshifts) [preset's].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of weights, dropout, shuffling and the validation split.")
@click.option("--validation-split", type=click.FloatRange(0, 1, max_open=True), default=0.2,
              show_default=True, help="Fraction of galaxies held out for validation.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model folder.")
@cluster_option
@workers_option
@no_progress_option
def train(kind, noisy, clean, latent, out, n_search, search_epochs, epochs, preset, conditioning,
          coverage, seed, validation_split, overwrite, cluster, workers, no_progress) -> None:
    """Train a PCA, AE or VAE de-noiser on the stores NOISY -> CLEAN."""
    from ..io.outputs import check_outputs, replacing
    from ..models import model_class
    from ..models.figures import loss_curves

    check_outputs([out], [noisy, clean], overwrite=overwrite)
    ds_noisy, ds_clean = _open(noisy), _open(clean)  # refuses foreign or incomplete stores now
    params = {"seed": seed}
    if kind != "pca":
        params.update(epochs=epochs, verbose=0 if no_progress else 1, preset=preset,
                      conditioning=conditioning, coverage=coverage)
    if n_search and kind == "pca":
        raise UserError("--search is for ae and vae (PCA has only --latent)")
    final = out
    with replacing(final) as (out,):  # an old model stays until the new one is saved
        if n_search:
            from ..models.search import random_search

            out.mkdir(parents=True, exist_ok=True)
            click.echo(f"search: {n_search} trials x <= {search_epochs} epochs on the cluster")
            with client_for(cluster, workers) as client:
                best, _ = random_search(kind, latent, str(noisy), str(clean), n_trials=n_search,
                                        epochs=search_epochs, seed=seed, client=client,
                                        table=out / "search.csv", preset=preset)
            click.echo(f"search: best trial {best['trial']}: dropout {best['dropout']}, units "
                       f"{best['units']}, final validation loss {best['score']:.4g} "
                       f"(all trials in {final / 'search.csv'})")
            params.update(units=best["units"], dropout=best["dropout"])
        model = model_class(kind)(latent, **params)
        click.echo(f"train: {model!r} on {ds_noisy.sizes['galaxy']} galaxies")
        try:
            model.fit(ds_noisy, ds_clean, validation_split=validation_split)
        except ValueError as err:
            raise UserError(f"{noisy}: {err}") from None
        model.save(out)
        metrics = model.card_["metrics"]
        if kind != "pca":
            loss_curves(model.card_["history"], title=f"{kind.upper()}, latent {latent}",
                        save=out / "loss.png")
    mse = metrics.get("val_mse", metrics.get("train_mse"))
    click.echo(f"train: saved {final} (validation MSE {mse:.4g}, {metrics['train_seconds']:.1f} s)")


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--noisy", required=True, type=click.Path(path_type=Path), help="Noise-added test store.")
@click.option("--clean", required=True, type=click.Path(path_type=Path), help="Clean test store.")
def evaluate(model_dir: Path, noisy: Path, clean: Path) -> None:
    """Print the test MSE of the model MODEL_DIR on NOISY -> CLEAN (read chunk by chunk)."""
    import numpy as np

    from ..models import load_model
    from ..models.data import SpectraPairs

    ds_noisy, ds_clean = _open(noisy), _open(clean)
    model = load_model(model_dir, expect=ds_noisy)
    try:
        pairs = SpectraPairs(ds_noisy, ds_clean)
    except ValueError as err:
        raise UserError(f"{noisy}, {clean}: {err}") from None
    rows = np.flatnonzero(pairs.usable)
    mse = model.stream_mse(pairs, rows)
    click.echo(f"test MSE: {mse:.6g} (normalised flux^2 per pixel, {rows.size} spectra, "
               f"{model.kind} latent {model.latent})")
