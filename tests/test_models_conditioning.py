"""De-noisers that see the noise and know what they were not shown: conditioning, coverage masks."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from _denoise_data import SIGMA, datasets, spectra

from survey_denoise.flags import Flag
from survey_denoise.grid import GRID
from survey_denoise.inference import denoise
from survey_denoise.models import AEDenoiser, VAEDenoiser, load_model, read_card
from survey_denoise.models.coverage import CoverageMasks
from survey_denoise.models.data import SpectraPairs, model_input
from survey_denoise.models.training import standardisation

SMALL = {"units": [64, 32], "dropout": 0.0, "batch_size": 32, "learning_rate": 1e-3, "seed": 3}
RED_AT_Z04 = GRID.wavelength * 1.4 > 9824.0  # pixels DESI does not see for a galaxy at z = 0.4


@pytest.fixture(scope="module")
def arrays():
    noisy, clean = spectra(400, seed=21)
    rng = np.random.default_rng(22)
    # Per-galaxy noise levels, so the ivar carries information.
    ivar = np.broadcast_to(rng.uniform(0.5, 2.0, (400, 1)) / SIGMA ** 2, noisy.shape).astype(np.float32)
    return noisy, clean, ivar


@pytest.fixture(scope="module")
def conditioned(arrays):
    noisy, clean, ivar = arrays
    return AEDenoiser(4, conditioning="ivar", coverage="desi-bgs", epochs=3, **SMALL).fit(
        noisy[:300], clean[:300], input_ivar=ivar[:300])


def test_missing_pixels_are_flux_zero_and_weight_zero():
    flux = np.array([[1.0, 2.0, np.nan, 4.0]], np.float32)
    ivar = np.array([[1.0, 0.0, 5.0, 2.0]], np.float32)
    mask = np.array([[False, False, False, True]])
    x = model_input(flux, ivar, mask, with_ivar=True)
    assert x.shape == (1, 8)
    np.testing.assert_array_equal(x, [[1, 0, 0, 0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(model_input(flux, ivar, mask, with_ivar=False), [[1, 2, 0, 4]])


def test_masked_input_flux_changes_nothing(conditioned, arrays):
    noisy, _, ivar = arrays
    x, iv = noisy[300:340].copy(), ivar[300:340].copy()
    iv[:, RED_AT_Z04] = 0
    base, var = conditioned.denoise(x, return_var=True, ivar=iv)
    for junk in (0.0, 50.0, -3.0, np.nan):
        y = x.copy()
        y[:, RED_AT_Z04] = junk
        out, out_var = conditioned.denoise(y, return_var=True, ivar=iv)
        np.testing.assert_array_equal(out, base)
        np.testing.assert_array_equal(out_var, var)
    # A pixel that is present does matter, and so does its weight.
    y = x.copy()
    y[:, RED_AT_Z04] = 50.0
    assert not np.allclose(conditioned.denoise(y, ivar=ivar[300:340]), base)
    assert not np.allclose(conditioned.denoise(x, ivar=ivar[300:340] * 4), conditioned.denoise(
        x, ivar=ivar[300:340]))


def test_unconditioned_model_reads_masked_flux(arrays):
    """The paper's network sees a masked pixel's flux: the reason for the option."""
    noisy, clean, _ = arrays
    model = AEDenoiser(4, conditioning="none", coverage="none", epochs=1, **SMALL).fit(noisy[:300], clean[:300])
    y = noisy[300:320].copy()
    y[:, RED_AT_Z04] = 50.0
    assert not np.allclose(model.denoise(y), model.denoise(noisy[300:320]))
    assert model.card_["architecture"]["conditioning"] == "none"


def test_card_records_conditioning_and_coverage(conditioned):
    arch, choices = conditioned.card_["architecture"], conditioned.card_["training_choices"]
    assert arch["conditioning"] == "ivar" and arch["ivar_ref"] == pytest.approx(625.0, rel=0.4)
    assert choices["conditioning"] == "ivar"
    assert choices["coverage"]["survey"] == "desi-bgs"
    assert choices["coverage"]["wave_obs"] == [3600.0, 9824.0]
    assert conditioned.card_["hyperparameters"]["conditioning"] == "ivar"


def test_coverage_masks_remove_what_the_survey_misses():
    masks = CoverageMasks.from_spec("desi-bgs", seed=1)
    np.testing.assert_array_equal(masks.covered(GRID.wavelength, np.array([0.4]))[0], ~RED_AT_Z04)
    assert masks.covered(GRID.wavelength, np.array([0.1])).all()
    z = masks.redshifts(20_000, "k", 0)
    assert 0.01 <= z.min() and z.max() <= 0.5 and 0.17 < np.median(z) < 0.23
    np.testing.assert_array_equal(z, masks.redshifts(20_000, "k", 0))
    assert not np.array_equal(z, masks.redshifts(20_000, "other", 0))
    custom = CoverageMasks.from_spec({"wave_obs": [3800, 9000], "z_range": [0.3, 0.3]})
    assert custom.redshifts(3, "k", 0).tolist() == [0.3] * 3
    with pytest.raises(ValueError, match="unknown coverage survey 'sdss'"):
        CoverageMasks.from_spec("sdss")
    with pytest.raises(ValueError, match="unknown coverage survey"):
        AEDenoiser(4, coverage="sdss")
    with pytest.raises(ValueError, match="conditioning must be one of"):
        AEDenoiser(4, conditioning="sigma")


def test_training_batches_lose_uncovered_input_pixels_but_keep_the_target():
    noisy, clean = spectra(64, seed=5)
    pairs = SpectraPairs(noisy, clean)
    pairs.with_ivar = True
    pairs.coverage = CoverageMasks(z_range=(0.4, 0.4))
    x, y, w = pairs.load(0, "epoch-0")
    assert x.shape == (64, 2 * GRID.npix)
    assert (x[:, :GRID.npix][:, RED_AT_Z04] == 0).all() and (x[:, GRID.npix:][:, RED_AT_Z04] == 0).all()
    assert (x[:, GRID.npix:][:, ~RED_AT_Z04] > 0).all()
    np.testing.assert_array_equal(y, clean)
    assert (w > 0).all()
    full = pairs.load(0)[0]  # no draw key: the inputs as given (calibration, statistics)
    assert (full[:, GRID.npix:] > 0).all()


def test_loss_ignores_target_pixels_the_target_does_not_cover():
    import keras

    from survey_denoise.models.networks import SpectrumAutoencoder

    noisy, clean = spectra(16, seed=6)
    w = np.full(clean.shape, 1e4, np.float32)
    w[:, RED_AT_Z04] = 0
    other = clean.copy()
    other[:, RED_AT_Z04] = 7.0
    for likelihood in ("mse", "gaussian"):
        net = SpectrumAutoencoder(GRID.npix, 2, [16], 0.0, likelihood=likelihood, conditioning="ivar")
        net.build((None, 2 * GRID.npix))
        pred = net(model_input(noisy, np.ones_like(noisy), with_ivar=True))
        loss = [float(keras.ops.convert_to_numpy(net.compute_loss(y=t, y_pred=pred, sample_weight=w)))
                for t in (clean, other)]
        assert np.isfinite(loss[0]) and loss[0] == loss[1], likelihood


def test_target_statistics_count_only_covered_target_pixels():
    noisy, clean = spectra(64, seed=7)
    w = np.full(clean.shape, 1e4, np.float32)
    w[:, RED_AT_Z04] = 0
    other = clean.copy()
    other[:, RED_AT_Z04] = 0.0  # what an uncovered target pixel holds after as_flux
    a = standardisation(SpectraPairs(noisy, clean, w), np.arange(64))
    b = standardisation(SpectraPairs(noisy, other, w), np.arange(64))
    assert a["output_offset"] == b["output_offset"] and a["output_scale"] == b["output_scale"]


def _strip_conditioning(folder):
    """Make a saved model look like one written before the option (no conditioning anywhere)."""
    path = folder / "model.keras"
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    inner = config["config"]
    assert inner.pop("conditioning") == "none"
    inner.pop("ivar_ref")
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    card = json.loads((folder / "card.json").read_text())
    for section in ("hyperparameters", "training_choices", "architecture"):
        for key in ("conditioning", "coverage", "ivar_ref"):
            card[section].pop(key, None)
    (folder / "card.json").write_text(json.dumps(card))


def test_a_model_saved_before_conditioning_loads_and_runs(tmp_path, arrays):
    noisy, clean, _ = arrays
    model = VAEDenoiser(4, conditioning="none", coverage="none", epochs=1, **SMALL).fit(noisy[:200], clean[:200])
    before = model.denoise(noisy[300:310], return_var=True)
    folder = model.save(tmp_path / "old")
    _strip_conditioning(folder)
    assert "conditioning" not in read_card(folder)["hyperparameters"]
    old = load_model(folder)
    assert not old.conditioned and old.model_.conditioning == "none"
    for a, b in zip(old.denoise(noisy[300:310], return_var=True), before, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    ds_noisy, _ = datasets(12, seed=9)
    out = denoise(ds_noisy, folder).compute()
    assert np.isfinite(out["flux"].values).all() and not out["extrapolated"].values.any()


def test_denoised_store_flags_extrapolated_pixels(tmp_path):
    noisy, clean = datasets(240, seed=13)
    model = VAEDenoiser(4, conditioning="ivar", coverage="desi-bgs", epochs=2, **SMALL)
    folder = model.fit(noisy.isel(galaxy=slice(0, 200)), clean.isel(galaxy=slice(0, 200))).save(tmp_path / "m")
    test = noisy.isel(galaxy=slice(200, None)).copy(deep=True)
    cut = np.zeros((40, GRID.npix), bool)
    cut[:10] = RED_AT_Z04  # the red end lost, as at z = 0.4
    cut[10, 100] = True  # one bad pixel
    test["ivar"] = test["ivar"].where(~cut, np.float32(0))
    test["mask"] = test["mask"] | cut
    out = denoise(test, folder).compute()
    ext = out["extrapolated"].values
    np.testing.assert_array_equal(ext, cut)
    assert "prediction" in out["extrapolated"].attrs["description"]
    assert (out["ivar"].values[cut] == 0).all() and (out["ivar"].values[~cut] > 0).all()
    assert np.isfinite(out["flux"].values).all() and (out["flux"].values[cut] != 0).any()
    flagged = (out["flags"].values & int(Flag.DENOISE_EXTRAPOLATED)) != 0
    np.testing.assert_array_equal(flagged, cut.any(axis=1))
