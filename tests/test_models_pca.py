"""PCA de-noiser: learns, round-trips through its folder, refuses data it was not made for."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _denoise_data import datasets, spectra

from survey_denoise.grid import Grid
from survey_denoise.io.store import write_store
from survey_denoise.models import PCADenoiser, load_model, read_card
from survey_denoise.models.card import check
from survey_denoise.schema import SchemaError


def test_pca_denoises_better_than_the_noisy_input_and_worse_with_too_many_components():
    noisy, clean = spectra(400, seed=1)
    test_noisy, test_clean = spectra(200, seed=2)
    raw = float(np.mean((test_noisy - test_clean) ** 2))
    mse = {k: PCADenoiser(k).fit(noisy, clean).score(test_noisy, test_clean) for k in (4, 100)}
    assert mse[4] < raw / 10
    # Components beyond the signal's few dimensions only add noise back (paper §4).
    assert mse[100] > mse[4]


def test_save_load_denoise_identical_and_card_complete(tmp_path):
    ds_noisy, ds_clean = datasets(300, seed=3)
    model = PCADenoiser(4, seed=7).fit(ds_noisy, ds_clean, validation_split=0.25)
    folder = model.save(tmp_path / "pca")
    again = load_model(folder, expect=ds_noisy)
    assert isinstance(again, PCADenoiser) and again.latent == 4
    np.testing.assert_array_equal(again.denoise(ds_noisy), model.denoise(ds_noisy))
    np.testing.assert_array_equal(again.encode(ds_noisy), model.encode(ds_noisy))
    card = read_card(folder)
    assert card == json.loads(json.dumps(model.card_, default=str))
    assert card["kind"] == "pca" and card["artefact"] == "model.npz"
    assert Grid.from_dict(card["grid"]) == Grid()
    assert card["norm_convention"] == "l2"
    assert card["training"]["n_galaxy"] == 300 and card["training"]["n_validation"] == 75
    assert card["training"]["validation_seed"] == 7
    assert card["hyperparameters"] == {"latent": 4, "seed": 7}
    assert 0 < card["metrics"]["val_mse"] < 1e-3
    assert {"numpy", "scipy", "scikit-learn", "survey_denoise"} <= set(card["versions"])
    assert len(card["history"]["explained_variance_ratio"]) == 4


def test_validation_split_is_random_per_run_and_recorded():
    noisy, clean = spectra(100, seed=4)
    a = PCADenoiser(2, seed=None).fit(noisy, clean)
    b = PCADenoiser(2, seed=None).fit(noisy, clean)
    assert a.card_["training"]["validation_seed"] != b.card_["training"]["validation_seed"]
    c = PCADenoiser(2, seed=None).fit(noisy, clean, seed=a.card_["training"]["validation_seed"])
    assert c.card_["metrics"]["val_mse"] == a.card_["metrics"]["val_mse"]


def test_card_mismatch_refused_naming_both_values(tmp_path):
    ds_noisy, ds_clean = datasets(120, seed=5)
    folder = PCADenoiser(2).fit(ds_noisy, ds_clean).save(tmp_path / "pca")
    other_norm, _ = datasets(20, seed=6, norm="sum")
    with pytest.raises(SchemaError, match="'l2'-normalised.*'sum'-normalised"):
        load_model(folder, expect=other_norm)
    other_grid, _ = datasets(20, seed=6, grid=Grid(3700.0, 7900.0, 800))
    with pytest.raises(SchemaError, match="825 pixels.*800 pixels"):
        load_model(folder, expect=other_grid)
    model = load_model(folder)
    with pytest.raises(SchemaError, match="normalised"):
        model.denoise(other_norm)
    with pytest.raises(SchemaError, match="grid"):
        check(read_card(folder), {"grid": Grid(3600.0, 7900.0, 825).to_dict(), "norm_convention": "l2"})


def test_loading_runs_no_pickled_code(tmp_path):
    noisy, clean = spectra(60, seed=8)
    folder = PCADenoiser(2).fit(noisy, clean).save(tmp_path / "pca")
    # An artefact holding Python objects (a pickle) is refused, not unpickled.
    np.savez(folder / "model.npz", components=np.array([object()], dtype=object),
             mean=np.zeros(825), explained_variance_ratio=np.zeros(2))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_model(folder)


def test_fit_from_zarr_stores_on_disk(tmp_path):
    ds_noisy, ds_clean = datasets(150, seed=9)
    write_store(ds_noisy.chunk({"galaxy": 40}), tmp_path / "noisy.zarr", progress=False)
    write_store(ds_clean.chunk({"galaxy": 40}), tmp_path / "clean.zarr", progress=False)
    from_store = PCADenoiser(3).fit(tmp_path / "noisy.zarr", tmp_path / "clean.zarr")
    in_memory = PCADenoiser(3).fit(ds_noisy["flux"].values, ds_clean["flux"].values)
    np.testing.assert_allclose(np.abs(from_store.components_), np.abs(in_memory.components_), atol=1e-4)
    assert from_store.card_["training"]["data_id"] is not None
    assert from_store.card_["norm_convention"] == "l2"
