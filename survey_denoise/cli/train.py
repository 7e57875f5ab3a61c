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
Like the other stage commands it is a one-step plan
(:meth:`~survey_denoise.pipeline.plan.Plan.single`; the search, if any, a
step before it) that ``--check`` prints, carried out by
:func:`~survey_denoise.pipeline.single.train_step` with the same
:func:`~survey_denoise.pipeline.stages.train` as a run's train step.

``evaluate MODEL_DIR --noisy STORE --clean STORE`` prints the test MSE.

``recalibrate MODEL_DIR --noisy STORE --clean STORE`` measures a saved
model's held-out uncertainty model again with this version, on the
validation galaxies of its training, and rewrites its card (the network is
unchanged): for models saved before the noise gains were measured.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..models import KINDS
from ..pipeline.params import Train
from .common import UserError, client_for, cluster_option, no_progress_option, workers_option
from .params import declared
from .stages import check_option


def _open(path: Path):
    from ..io.store import open_store

    return open_store(path, frame="rest")


@click.command()
@click.argument("kind", type=click.Choice(KINDS))
@click.option("--noisy", required=True, type=click.Path(path_type=Path), help="Noise-added rest-frame store.")
@click.option("--clean", required=True, type=click.Path(path_type=Path), help="Clean store (same galaxies).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Model folder to write.")
@click.option("--search", "n_search", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random-search trials before the final training (AE/VAE; the paper: 100).")
@click.option("--search-epochs", type=click.IntRange(min=1), default=25, show_default=True,
              help="Most epochs per search trial.")
@declared(Train, skip=("kind",))
@click.option("--overwrite", is_flag=True, help="Replace an existing model folder.")
@cluster_option
@workers_option
@check_option
@no_progress_option
def train(kind, noisy, clean, out, n_search, search_epochs, params: Train, overwrite, cluster,
          workers, check_only, no_progress) -> None:
    """Train a PCA, AE or VAE de-noiser on the stores NOISY -> CLEAN."""
    from contextlib import nullcontext

    from ..io.outputs import check_outputs
    from ..pipeline.plan import Plan, Search

    check_outputs([out], [noisy, clean], overwrite=overwrite)
    _open(noisy), _open(clean)  # refuses foreign or incomplete stores now
    if n_search and kind == "pca":
        raise UserError("--search is for ae and vae (PCA has only --latent)")
    search = Search(n_search, search_epochs) if n_search else None
    plan = Plan.single("train", params, noisy, out, extra=(str(clean),), cluster=cluster,
                       search=search)
    if check_only:
        click.echo(repr(plan))
        return
    # The cluster runs the search's trials; the training itself runs in this process.
    with client_for(cluster, workers) if search else nullcontext() as client:
        try:
            model = plan.execute(client, overwrite=overwrite, progress=not no_progress,
                                 echo=click.echo)
        except ValueError as err:
            raise UserError(f"{noisy}: {err}") from None
    metrics = model.card_["metrics"]
    mse = metrics.get("val_mse", metrics.get("train_mse"))
    click.echo(f"train: saved {out} (validation MSE {mse:.4g}, {metrics['train_seconds']:.1f} s)")


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


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--noisy", required=True, type=click.Path(path_type=Path),
              help="The noise-added store the model was trained on.")
@click.option("--clean", required=True, type=click.Path(path_type=Path),
              help="The clean store the model was trained on.")
def recalibrate(model_dir: Path, noisy: Path, clean: Path) -> None:
    """Measure MODEL_DIR's held-out uncertainty model again on its training's validation galaxies."""
    from ..models import load_model

    ds_noisy, ds_clean = _open(noisy), _open(clean)
    model = load_model(model_dir, expect=ds_noisy)
    try:
        model.recalibrate(ds_noisy, ds_clean)
    except ValueError as err:
        raise UserError(f"{model_dir}: {err}") from None
    model.save(model_dir)
    gains = model.card_["uncertainty"].get("line_noise_gain", {})
    shown = ", ".join(f"{k} {v:+.3f}" for k, v in gains.items() if v is not None and k in ("halpha", "oiii_5007"))
    click.echo(f"recalibrate: {model_dir} ({model.card_['uncertainty']['n_galaxy']} held-out galaxies; "
               f"noise gains {shown or 'not measured'})")
