"""A stand-alone stage command is a one-step plan: ``--check`` prints it as ``run --check`` prints a
run's, and its store is the one the same stage writes inside ``survey-denoise run``."""

from __future__ import annotations

import re

import dask
import numpy as np
import pytest
from _cli import run

from survey_denoise.io.store import open_store, write_store

HEADER = re.compile(r"^\s+step\s+where\s+reads\s+writes\s+mode\s+chunks$", re.M)


def _header(text: str) -> list[str]:
    return HEADER.search(text).group(0).split()


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """A small run from an observed-frame mock through every store-to-store stage."""
    tmp = tmp_path_factory.mktemp("plan")
    config = tmp / "c.yaml"
    config.write_text(
        f"name: c\ninput: {{mock: {{n: 40, seed: 5}}}}\nchunk: 20\noutputs: {{dir: {tmp / 'run'}}}\n"
        "stages: {preprocess: {}, degrade: {sigma: 0.05, seed: 3}, train: {kind: pca, latent: 2},\n"
        "         denoise: {model: train}, fit: {method: fast, stores: [denoised]}}\n"
        "report: {examples: 0, latent: false, reconstruction: false, scores: false, html: false}\n")
    return config, tmp / "run"


@pytest.fixture(scope="module")
def small_stores(tmp_path_factory):
    """An observed-frame store, its rest-frame twin and a PCA trained on it, made in this process."""
    from survey_denoise.models import PCADenoiser
    from survey_denoise.preprocess import preprocess
    from survey_denoise.schema import make_spectra

    tmp = tmp_path_factory.mktemp("stores")
    rng = np.random.default_rng(0)
    obs = 10 ** (np.log10(3600.0) + 1e-4 * np.arange(4000))
    flux = rng.uniform(5, 10, (40, 1)) + rng.normal(0, 0.1, (40, obs.size))
    raw = make_spectra(flux, np.full(flux.shape, 100.0), obs, np.arange(40), np.full(40, 0.04),
                       frame="observed")
    write_store(raw.chunk({"galaxy": 20}), tmp / "raw.zarr", progress=False)
    with dask.config.set(scheduler="synchronous"):
        write_store(preprocess(open_store(tmp / "raw.zarr")), tmp / "rest.zarr", progress=False)
        PCADenoiser(latent=2).fit(open_store(tmp / "rest.zarr"), open_store(tmp / "rest.zarr")).save(tmp / "model")
    return tmp


def test_every_stage_command_checks_as_a_one_step_plan(pipeline_run, small_stores, tmp_path):
    check = run("run", pipeline_run[0], "--check")
    assert check.returncode == 0, check.stderr
    header = _header(check.stdout)
    stores = small_stores
    commands = {
        "preprocess": ("preprocess", stores / "raw.zarr", "--out", tmp_path / "p.zarr"),
        "degrade": ("degrade", stores / "rest.zarr", "--out", tmp_path / "d.zarr", "--sigma", "0.05"),
        "denoise": ("denoise", stores / "rest.zarr", "--model", stores / "model", "--out", tmp_path / "n.zarr"),
        "fit": ("fit", stores / "rest.zarr", "--method", "fast", "--out", tmp_path / "cat"),
    }
    for stage, args in commands.items():
        result = run(*args, "--check")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"plan '{stage}': 40 galaxies in chunks of 20, cluster local")
        assert _header(result.stdout) == header
        rows = result.stdout.split("chunks\n")[-1].strip().splitlines()
        assert rows[0].split()[:2] == [stage, "cluster"], result.stdout
        assert rows[0].split()[-2:] == ["written", "2"]
        assert not list(tmp_path.iterdir())                 # --check writes nothing


def _row(text: str, step: str) -> list[str]:
    """The first line of ``step``'s row in a printed plan, split into words."""
    rows = text.split("chunks\n")[-1].splitlines()
    return next(r.split() for r in rows if r.split()[:1] == [step])


def test_train_checks_as_a_one_step_plan(pipeline_run, small_stores, tmp_path):
    check = run("run", pipeline_run[0], "--check")
    assert check.returncode == 0, check.stderr
    rest, out = small_stores / "rest.zarr", tmp_path / "m"
    args = ("train", "pca", "--noisy", rest, "--clean", rest, "--latent", 2, "--out", out)
    result = run(*args, "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("plan 'train': 40 galaxies in chunks of 20, cluster local")
    assert _header(result.stdout) == _header(check.stdout)
    mine, theirs = _row(result.stdout, "train"), _row(check.stdout, "train")
    assert mine[:2] == theirs[:2] == ["train", "driver"] and mine[-2:] == theirs[-2:] == ["written", "-"]
    from survey_denoise.pipeline.params import Train
    from survey_denoise.pipeline.plan import Plan, Search

    plan = Plan.single("train", Train(kind="pca", latent=2), rest, out, extra=(str(rest),))
    assert result.stdout == repr(plan) + "\n"
    (step,) = plan.steps
    assert (step.inputs, step.outputs, step.where, step.chunks) == ((str(rest),) * 2, ("m/",), "driver", None)
    # A search is a step of its own, on the cluster, before the training.
    result = run("train", "ae", *args[2:], "--search", 3, "--search-epochs", 2, "--check")
    assert result.returncode == 0, result.stderr
    assert _row(result.stdout, "search")[:2] == ["search", "cluster"]
    searched = Plan.single("train", Train(kind="ae", latent=2), rest, out, extra=(str(rest),),
                           search=Search(3, 2))
    assert result.stdout == repr(searched) + "\n"
    assert [s.outputs for s in searched.steps] == [("m/search.csv",), ("m/",)]
    assert not list(tmp_path.iterdir())                 # --check writes nothing


@pytest.mark.slow
def test_stage_commands_write_what_the_run_writes(pipeline_run, tmp_path):
    config, folder = pipeline_run
    if not (folder / "run.json").exists():
        made = run("run", config, "--workers", "1", "--no-progress")
        assert made.returncode == 0, made.stderr
    steps = [
        ("preprocess", folder / "raw.zarr", "--out", tmp_path / "preprocessed.zarr"),
        ("degrade", tmp_path / "preprocessed.zarr", "--out", tmp_path / "degraded.zarr",
         "--sigma", "0.05", "--seed", "3"),
        ("train", "pca", "--noisy", tmp_path / "degraded.zarr", "--clean", tmp_path / "preprocessed.zarr",
         "--latent", "2", "--out", tmp_path / "model"),
        ("denoise", tmp_path / "degraded.zarr", "--model", tmp_path / "model", "--out", tmp_path / "denoised.zarr"),
        ("fit", tmp_path / "denoised.zarr", "--method", "fast", "--out", tmp_path / "catalogue-denoised"),
    ]
    for args in steps:
        result = run(*args, "--workers", "1", "--no-progress")
        assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "model" / "model.npz") as mine, np.load(folder / "model" / "model.npz") as theirs:
        assert sorted(mine) == sorted(theirs) == ["components", "explained_variance_ratio", "mean"]
        for name in mine:
            np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)
    for name in ("preprocessed", "degraded", "denoised"):
        mine, theirs = open_store(tmp_path / f"{name}.zarr"), open_store(folder / f"{name}.zarr")
        assert mine.equals(theirs), name
    mine = open_store(tmp_path / "catalogue-denoised.zarr", spectra=False)
    assert mine.equals(open_store(folder / "catalogue-denoised.zarr", spectra=False))
    assert (tmp_path / "catalogue-denoised.parquet").exists() and (tmp_path / "catalogue-denoised.fits").exists()


@pytest.mark.slow
def test_train_command_and_run_train_an_ae_the_same_way(tmp_path):
    """Both write the model folder through one function: artefact, card and loss curves."""
    import json

    config = tmp_path / "ae.yaml"
    config.write_text(
        f"name: ae\ninput: {{mock: {{n: 40, seed: 5}}}}\nchunk: 20\noutputs: {{dir: {tmp_path / 'run'}}}\n"
        "stages: {preprocess: {}, degrade: {sigma: 0.05, seed: 3}, train: {kind: ae, latent: 2, epochs: 1}}\n"
        "report: {examples: 0, latent: false, reconstruction: false, scores: false, html: false}\n")
    made = run("run", config, "--workers", "1", "--no-progress")
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "run"
    result = run("train", "ae", "--noisy", folder / "degraded.zarr", "--clean", folder / "preprocessed.zarr",
                 "--latent", 2, "--epochs", 1, "--out", tmp_path / "ae", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "train: AEDenoiser(latent=2" in result.stdout and f"saved {tmp_path / 'ae'}" in result.stdout
    cards = {}
    for where in (tmp_path / "ae", folder / "model"):
        assert (where / "model.keras").is_file()
        assert (where / "loss.png").stat().st_size > 1000
        cards[where.name] = json.loads((where / "card.json").read_text())
    mine, theirs = cards["ae"], cards["model"]
    assert mine["kind"] == theirs["kind"] == "ae" and len(mine["history"]["loss"]) == 1
    for key in ("architecture", "hyperparameters", "training_choices", "grid", "seed"):
        assert mine[key] == theirs[key], key
