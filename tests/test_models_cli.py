"""The train, evaluate and denoise commands, and the random search, on small stores."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from _cli import kill_once_written, run_in_process
from _denoise_data import datasets, spectra

from survey_denoise.io.store import open_store, write_store
from survey_denoise.models import load_model
from survey_denoise.models.search import random_search, run_trials, sample_trials


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    noisy, clean = datasets(160, seed=41)
    for name, ds in (("noisy", noisy), ("clean", clean)):
        write_store(ds.chunk({"galaxy": 40}), root / f"{name}.zarr", progress=False)
    test_noisy, test_clean = datasets(60, seed=42, prefix="t")
    for name, ds in (("test_noisy", test_noisy), ("test_clean", test_clean)):
        write_store(ds.chunk({"galaxy": 30}), root / f"{name}.zarr", progress=False)
    return root



def test_train_vae_prints_epochs_saves_card_and_loss_figure(stores, tmp_path, capsys):
    out = tmp_path / "vae"
    code, text, err = run_in_process(["train", "vae", "--noisy", stores / "noisy.zarr", "--clean",
                            stores / "clean.zarr", "--latent", 2, "--epochs", 2, "--out", out], capsys)
    assert code == 0, err
    assert "| 2/2 [" in err and "epoch" in err and "saved" in text
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "vae" and card["architecture"]["units"] == [1000, 900, 600, 200]
    assert len(card["history"]["loss"]) == 2
    assert (out / "loss.png").stat().st_size > 1000
    code, text, err = run_in_process(["evaluate", out, "--noisy", stores / "test_noisy.zarr",
                            "--clean", stores / "test_clean.zarr"], capsys)
    assert code == 0, err
    mse = float(text.split("test MSE: ")[1].split()[0])
    model = load_model(out)
    expect = model.score(open_store(stores / "test_noisy.zarr"), open_store(stores / "test_clean.zarr"))
    assert np.isclose(mse, expect, rtol=1e-4)


def test_recalibrate_gives_a_model_saved_without_gains_the_ones_its_training_measured(stores, tmp_path, capsys):
    out = tmp_path / "ae"
    code, _, err = run_in_process(["train", "ae", "--noisy", stores / "noisy.zarr", "--clean",
                                   stores / "clean.zarr", "--latent", 2, "--epochs", 2, "--out", out,
                                   "--no-progress"], capsys)
    assert code == 0, err
    card = json.loads((out / "card.json").read_text())
    measured = json.loads(json.dumps(card["uncertainty"]))
    assert set(measured["line_noise_gain"]) >= {"halpha", "oiii_5007"}
    # as a model from before the gains were measured
    for key in ("line_noise_gain", "line_noise_gain_rule"):
        del card["uncertainty"][key]
    (out / "card.json").write_text(json.dumps(card))
    code, text, err = run_in_process(["recalibrate", out, "--noisy", stores / "noisy.zarr",
                                      "--clean", stores / "clean.zarr"], capsys)
    assert code == 0, err
    again = json.loads((out / "card.json").read_text())
    assert again["uncertainty"]["line_noise_gain"] == measured["line_noise_gain"]
    assert again["uncertainty"]["line_error_scale"] == measured["line_error_scale"]
    assert again["history"] == card["history"] and "recalibrated" in again
    assert "recalibrate:" in text and "noise gains" in text
    # other galaxies are not the ones it was trained on
    code, _, err = run_in_process(["recalibrate", out, "--noisy", stores / "test_noisy.zarr",
                                   "--clean", stores / "test_clean.zarr"], capsys)
    assert code != 0 and "needs the data the model was trained on" in err


def test_train_killed_part_way_goes_on_from_its_last_epoch_when_run_again(stores, tmp_path, capsys):
    out = tmp_path / "ae"
    args = ["train", "ae", "--noisy", stores / "noisy.zarr", "--clean", stores / "clean.zarr",
            "--latent", 2, "--epochs", 40, "--out", out, "--no-progress"]
    state = tmp_path / "ae.checkpoint" / "state.json"
    kill_once_written([sys.executable, "-c", "from survey_denoise.cli import main; main()", *args], state)
    assert not out.exists()
    done = json.loads(state.read_text())["epochs_done"]

    code, text, err = run_in_process(args, capsys)  # the same command again
    assert code == 0, err
    assert f"went on after epoch {done}" in text
    card = json.loads((out / "card.json").read_text())
    assert card["training_choices"]["resumed_after_epoch"] == done
    assert len(card["history"]["loss"]) > done
    assert not (tmp_path / "ae.checkpoint").exists()


def test_train_that_ended_at_its_cap_goes_on_under_a_larger_one(stores, tmp_path, capsys):
    def train(epochs, out, *extra):
        args = ["train", "ae", "--noisy", stores / "noisy.zarr", "--clean", stores / "clean.zarr",
                "--latent", 2, "--epochs", epochs, "--out", out, "--no-progress", *extra]
        code, text, err = run_in_process(args, capsys)
        assert code == 0, err
        return text, json.loads((out / "card.json").read_text())

    out = tmp_path / "ae"
    text, card = train(3, out)
    assert "stopped at its cap of 3 epochs" in text and "goes on after epoch 3" in text
    assert card["training_choices"]["ended"] == "epoch cap"
    assert (tmp_path / "ae.checkpoint" / "state.json").exists()

    text, card = train(5, out, "--overwrite")
    assert "went on after epoch 3" in text
    _, whole = train(5, tmp_path / "whole")  # the larger cap from the start
    assert card["history"] == whole["history"] and card["training_choices"]["epochs_run"] == 5
    for a, b in zip(load_model(out).model_.get_weights(), load_model(tmp_path / "whole").model_.get_weights(),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_pca_then_denoise_a_store(stores, tmp_path, capsys):
    model = tmp_path / "pca"
    code, _, err = run_in_process(["train", "pca", "--noisy", stores / "noisy.zarr", "--clean",
                         stores / "clean.zarr", "--latent", 4, "--out", model], capsys)
    assert code == 0, err
    code, _, err = run_in_process(["denoise", stores / "test_noisy.zarr", "--model", model, "--out",
                         tmp_path / "den.zarr", "--workers", 1], capsys)
    assert code == 0, err
    den, noisy = open_store(tmp_path / "den.zarr"), open_store(stores / "test_noisy.zarr")
    np.testing.assert_allclose(den["flux"].values, load_model(model).denoise(noisy), rtol=1e-5, atol=1e-7)
    assert "lines_detected_input" in den  # on by default; switched off for throughput
    code, _, err = run_in_process(["denoise", stores / "test_noisy.zarr", "--model", model, "--out",
                         tmp_path / "bare.zarr", "--workers", 1, "--no-input-detections"], capsys)
    assert code == 0, err
    bare = open_store(tmp_path / "bare.zarr")
    assert "lines_detected_input" not in bare
    np.testing.assert_array_equal(bare["flux"].values, den["flux"].values)
    # Same model against a store of another normalisation: one line, exit 2.
    other, _ = datasets(10, norm="sum")
    write_store(other.chunk({"galaxy": 10}), tmp_path / "sum.zarr", progress=False)
    code, _, err = run_in_process(["denoise", tmp_path / "sum.zarr", "--model", model, "--out",
                         tmp_path / "x.zarr"], capsys)
    assert code == 2 and "'l2'-normalised" in err and "Traceback" not in err
    code, _, err = run_in_process(["evaluate", tmp_path / "nowhere", "--noisy", stores / "test_noisy.zarr",
                         "--clean", stores / "test_clean.zarr"], capsys)
    assert code == 2 and "no such model folder" in err


def test_sampled_architectures_follow_the_papers_ranges():
    trials = sample_trials(300, seed=1)
    for t in trials:
        assert 2 <= len(t["units"]) <= 4 and 0 <= t["dropout"] <= 0.9
        assert all(u % 100 == 0 and 100 <= u <= 1000 for u in t["units"])
        assert all(b <= a for a, b in zip(t["units"], t["units"][1:], strict=False))
    assert {len(t["units"]) for t in trials} == {2, 3, 4}
    assert len({t["dropout"] for t in trials}) == 10
    assert sample_trials(5, seed=2) == sample_trials(5, seed=2)


def test_random_search_scores_trials_and_writes_the_table(tmp_path):
    noisy, clean = spectra(96, seed=43)
    best, table = random_search("ae", 2, noisy, clean, n_trials=3, epochs=2, seed=5,
                                table=tmp_path / "search.csv")
    assert len(table) == 3 and table["chosen"].sum() == 1
    assert best["score"] == table["score"].min()
    saved = pd.read_csv(tmp_path / "search.csv")
    assert list(saved["trial"]) == [0, 1, 2] and saved["chosen"].sum() == 1
    assert saved.loc[saved["chosen"], "units"].item() == " ".join(map(str, best["units"]))
    assert (saved["seconds"] > 0).all()  # what each trial cost, to size a larger search


def test_given_trials_repeat_a_search_exactly_and_run_at_another_dropout(tmp_path):
    noisy, clean = spectra(96, seed=43)
    _, table = random_search("ae", 2, noisy, clean, n_trials=2, epochs=2, seed=5)
    trials = sample_trials(2, seed=5)
    # A training is repeatable from its seeds (on the same number of threads),
    # so a search's table can be checked by running its trials again.
    _, again = run_trials("ae", 2, trials, noisy, clean, epochs=2, seed=5)
    assert again["score"].tolist() == table["score"].tolist()
    at_zero = [{**t, "dropout": 0.0, "sampled_dropout": t["dropout"]} for t in trials]
    best, zero = run_trials("ae", 2, at_zero, noisy, clean, epochs=2, seed=5,
                            table=tmp_path / "rerun.csv")
    saved = pd.read_csv(tmp_path / "rerun.csv")
    assert (saved["dropout"] == 0).all() and saved["chosen"].sum() == 1
    assert saved["sampled_dropout"].tolist() == [t["dropout"] for t in trials]
    assert best["score"] == zero["score"].min()
    with pytest.raises(ValueError, match="no trials"):
        run_trials("ae", 2, [], noisy, clean)


def test_search_trials_run_on_a_cluster_from_store_paths(stores, tmp_path):
    from distributed import Client, LocalCluster, get_task_stream

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client, \
            get_task_stream(client) as stream:
        best, table = random_search("ae", 2, str(stores / "noisy.zarr"), str(stores / "clean.zarr"),
                                    n_trials=2, epochs=1, seed=5, client=client,
                                    table=tmp_path / "search.csv")
        workers = set(client.scheduler_info()["workers"])
    trained = [t for t in stream.data if str(t["key"]).startswith("run_trial")]
    assert len(trained) == 2 and {t["worker"] for t in trained} <= workers
    # Each trial reads its stores itself: no task but the trials reaches the
    # cluster (reads sent back to it let a worker start a second trial on its core).
    assert [str(t["key"]) for t in stream.data if t not in trained] == []
    assert list(table["trial"]) == [0, 1] and np.isfinite(table["score"]).all()
    assert best["score"] == table["score"].min()
    assert list(pd.read_csv(tmp_path / "search.csv")["trial"]) == [0, 1]


def test_a_search_stopped_part_way_keeps_the_trials_it_finished(tmp_path, monkeypatch):
    from survey_denoise.models import search

    noisy, clean = spectra(96, seed=43)
    real = search.run_trial

    def dies_on_the_third(kind, latent, trial, *args, **kwargs):
        if trial["trial"] == 2:
            raise KeyboardInterrupt("stopped")
        return real(kind, latent, trial, *args, **kwargs)

    monkeypatch.setattr(search, "run_trial", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        search.random_search("ae", 2, noisy, clean, n_trials=4, epochs=1, seed=5,
                             table=tmp_path / "search.csv")
    saved = pd.read_csv(tmp_path / "search.csv")
    assert list(saved["trial"]) == [0, 1] and saved["chosen"].sum() == 1
    assert np.isfinite(saved["score"]).all()

def test_train_preset_paper_records_the_papers_choices_and_matches_the_yaml_default(stores, tmp_path,
                                                                                   capsys):
    import click

    from survey_denoise.cli.train import train
    from survey_denoise.pipeline.params import Train

    out = tmp_path / "ae"
    code, _, err = run_in_process(["train", "ae", "--noisy", stores / "noisy.zarr", "--clean", stores / "clean.zarr",
                         "--latent", 4, "--epochs", 1, "--preset", "paper", "--out", out], capsys)
    assert code == 0, err
    card = json.loads((out / "card.json").read_text())
    choices = card["training_choices"]
    assert choices["preset"] == "paper" and choices["likelihood"] == "mse"
    assert choices["dropout"] == card["architecture"]["dropout"] == 0.5  # Table 4, latent 4
    assert (choices["min_delta"], choices["restore_best"]) == (0.1, False)
    assert card["uncertainty"]["predicted"] is False
    # One default, two entry points.
    option = next(p for p in train.params if isinstance(p, click.Option) and p.name == "preset")
    assert option.default == Train().preset == "default"
    assert Train(preset="paper").preset == "paper"
    code, _, err = run_in_process(["train", "ae", "--noisy", stores / "noisy.zarr", "--clean", stores / "clean.zarr",
                         "--preset", "tuned", "--out", tmp_path / "x"], capsys)
    assert code == 2 and "tuned" in err
