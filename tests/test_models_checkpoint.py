"""A training killed after some epochs goes on from its checkpoint and ends as the uninterrupted one."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from _denoise_data import datasets, spectra

from survey_denoise.io.store import open_store, write_store
from survey_denoise.models import AEDenoiser, VAEDenoiser
from survey_denoise.models.checkpoint import STATE_JSON, STATE_NPZ
from survey_denoise.noise import UniformNoise, degrade

SMALL = {"units": [64, 32], "dropout": 0.1, "batch_size": 32, "learning_rate": 1e-3}


def assert_same_network(a, b) -> None:
    for x, y in zip(a.model_.get_weights(), b.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.card_["history"] == b.card_["history"]
    assert a.best_epoch_ == b.best_epoch_


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A clean store and its degraded twin: the VAE draws fresh noise every epoch from them."""
    root = tmp_path_factory.mktemp("stores")
    _, clean = datasets(160, seed=13)
    write_store(clean.chunk({"galaxy": 64}), root / "clean.zarr", progress=False)
    write_store(degrade(open_store(root / "clean.zarr"), UniformNoise(0.04), seed=3),
                root / "noisy.zarr", progress=False)
    return str(root / "noisy.zarr"), str(root / "clean.zarr")


def test_a_vae_on_fresh_noise_resumed_after_two_epochs_equals_the_uninterrupted_one(stores, tmp_path,
                                                                                   caplog):
    whole = VAEDenoiser(2, epochs=5, seed=1, **SMALL).fit(*stores)
    # A training that ended after two epochs leaves the state a kill after the second would.
    with caplog.at_level(logging.INFO, logger="survey_denoise.models"):
        first = VAEDenoiser(2, epochs=2, seed=1, **SMALL).fit(*stores, checkpoint=tmp_path / "ck")
    assert json.loads((tmp_path / "ck" / STATE_JSON).read_text())["epochs_done"] == 2
    assert len(first.card_["history"]["loss"]) == 2
    # The cap ended it, not the plateau rule: the card and the log say it may not be trained out.
    assert first.card_["training_choices"]["ended"] == "epoch cap"
    assert first.card_["training_choices"]["epochs_run"] == 2
    assert "vae: stopped at its cap of 2 epochs before the plateau rule" in caplog.text
    resumed = VAEDenoiser(2, epochs=5, seed=1, **SMALL).fit(*stores, checkpoint=tmp_path / "ck")
    assert whole.card_["training_choices"]["noise_draws"] == "per-epoch"
    assert_same_network(whole, resumed)
    assert resumed.card_["training_choices"]["resumed_after_epoch"] == 2
    assert "resumed_after_epoch" not in whole.card_["training_choices"]
    np.testing.assert_array_equal(whole.denoise(spectra(4, seed=2)[0]),
                                  resumed.denoise(spectra(4, seed=2)[0]))


def test_a_training_the_plateau_rule_had_stopped_is_not_trained_further(tmp_path):
    noisy, clean = spectra(128, seed=11)
    # A zero learning rate keeps the loss flat: the rule reduces at epoch 5 and stops at 10.
    opts = {"units": [16, 8], "dropout": 0.0, "learning_rate": 0.0, "batch_size": 64, "seed": 1,
            "restore_best": True}
    whole = AEDenoiser(2, epochs=30, **opts).fit(noisy, clean, checkpoint=tmp_path / "ck")
    assert whole.epochs_run_ == 11
    assert whole.card_["training_choices"]["ended"] == "plateau rule" and whole.cap_note() is None
    # A larger cap does not train on what the rule had ended.
    again = AEDenoiser(2, epochs=60, **opts).fit(noisy, clean, checkpoint=tmp_path / "ck")
    assert_same_network(whole, again)
    assert again.epochs_run_ == 11 and again.card_["history"]["learning_rate"][-1] == 0.0
    assert again.card_["training_choices"]["ended"] == "plateau rule"


def test_a_checkpoint_of_another_training_or_a_damaged_one_is_not_resumed(tmp_path, caplog):
    noisy, clean = spectra(128, seed=11)
    AEDenoiser(2, epochs=2, seed=1, **SMALL).fit(noisy, clean, checkpoint=tmp_path / "ck")
    fresh = AEDenoiser(2, epochs=3, seed=1, **SMALL).fit(noisy, clean)
    with caplog.at_level(logging.INFO, logger="survey_denoise.models"):
        # other galaxies: the same settings, so only the fingerprint of the data tells them apart
        other = AEDenoiser(2, epochs=1, seed=1, **SMALL).fit(*spectra(128, seed=12),
                                                              checkpoint=tmp_path / "ck")
    assert "resumed_after_epoch" not in other.card_["training_choices"]
    assert "of another training" in caplog.text
    caplog.clear()

    AEDenoiser(2, epochs=2, seed=1, **SMALL).fit(noisy, clean, checkpoint=tmp_path / "ck2")
    path = tmp_path / "ck2" / STATE_NPZ
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.INFO, logger="survey_denoise.models"):
        damaged = AEDenoiser(2, epochs=3, seed=1, **SMALL).fit(noisy, clean, checkpoint=tmp_path / "ck2")
    assert "unreadable" in caplog.text
    assert_same_network(fresh, damaged)  # trained from its first epoch, as if no state were there


def test_state_is_saved_after_the_first_and_last_epochs_and_every_so_many_seconds(tmp_path,
                                                                                 monkeypatch):
    from survey_denoise.models import checkpoint

    saved = []
    real = checkpoint.TrainingCheckpoint.save
    monkeypatch.setattr(checkpoint.TrainingCheckpoint, "save",
                        lambda self, meta, arrays: (saved.append(meta["epochs_done"]),
                                                    real(self, meta, arrays)))
    noisy, clean = spectra(128, seed=11)
    monkeypatch.setattr(checkpoint, "SAVE_EVERY", 3600.0)
    AEDenoiser(2, epochs=5, seed=1, **SMALL).fit(noisy, clean, checkpoint=tmp_path / "a")
    assert saved == [1, 5]
    saved.clear()
    monkeypatch.setattr(checkpoint, "SAVE_EVERY", 0.0)
    AEDenoiser(2, epochs=5, seed=1, **SMALL).fit(noisy, clean, checkpoint=tmp_path / "b")
    assert saved == [1, 2, 3, 4, 5]
