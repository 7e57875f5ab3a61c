"""Batched de-noising of datasets: lazy, flagged, checked, one model load per worker."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
from _denoise_data import datasets

from survey_denoise.flags import Flag
from survey_denoise.grid import Grid
from survey_denoise.inference import denoise, load_counts
from survey_denoise.models import PCADenoiser, VAEDenoiser
from survey_denoise.schema import SchemaError, validate


@pytest.fixture(scope="module")
def pca_dir(tmp_path_factory):
    noisy, clean = datasets(300, seed=31)
    return PCADenoiser(4).fit(noisy, clean).save(tmp_path_factory.mktemp("m") / "pca")


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    noisy, clean = datasets(200, seed=32)
    model = VAEDenoiser(2, units=[32, 16], dropout=0.1, epochs=2, learning_rate=1e-3)
    return model.fit(noisy, clean).save(tmp_path_factory.mktemp("m") / "vae")


def test_denoise_is_lazy_flags_failures_and_passes_dropped_spectra(pca_dir):
    ds, clean = datasets(90, seed=33)
    ds["flags"].values[3] = np.uint32(Flag.NO_IVAR)
    ds["flux"].values[5] = 3e38  # finite input the model overflows on
    ds["mask"].values[8, :20] = True
    ds = ds.chunk({"galaxy": 25})
    out = denoise(ds, pca_dir, batch_size=16)
    assert out["flux"].chunks == ds["flux"].chunks
    validate(out, frame="rest")
    with dask.config.set(scheduler="synchronous"):
        res = out.compute()
    model = PCADenoiser.load(pca_dir)
    keep = np.setdiff1d(np.arange(90), [3, 5])
    np.testing.assert_allclose(res["flux"].values[keep], model.denoise(ds["flux"].values[keep]),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(res["flux"].values[3], ds["flux"].values[3])
    assert res["flags"].values[5] & Flag.DENOISE_FAILED and res["flux"].values[5].sum() == 0
    assert not np.any(res["flags"].values[keep] & Flag.DENOISE_FAILED)
    assert np.all(res["ivar"].values[[3, 5]] == 0) and np.all(res["ivar"].values[8, :20] == 0)
    # PCA predicts no variance: the held-out residual variance per pixel (no longer one constant).
    np.testing.assert_allclose(res["ivar"].values[0], 1 / model.pixel_var_, rtol=1e-5)
    assert res["ivar"].values[0].std() > 0.1 * res["ivar"].values[0].mean()
    assert "held-out residual variance" in out.attrs["denoise_ivar"]
    # PCA reconstructs the input in the input's normalisation: nothing to scale, no error added.
    assert np.all(res["amplitude"].values[keep] == 1) and np.all(res["amplitude_err"].values[keep] == 0)
    step = json.loads(out.attrs["provenance"])[-1]
    assert step["step"] == "denoise" and step["kind"] == "pca" and len(step["card_sha256"]) == 64
    mse_in = np.mean((ds["flux"].values[keep] - clean["flux"].values[keep]) ** 2)
    assert np.mean((res["flux"].values[keep] - clean["flux"].values[keep]) ** 2) < mse_in / 5


def test_store_and_catalogue_say_which_lines_the_input_alone_detects(pca_dir):
    # A de-noiser draws lines the noisy data cannot show; the catalogue marks them.
    from survey_denoise.fitting import DETECTED_SNR, detected_lines, fit_lines
    from survey_denoise.fitting.catalogue import not_covered, not_in_input, to_frame
    from survey_denoise.line_windows import from_bits

    ds, clean = datasets(120, seed=34)
    ds["flags"].values[4] = np.uint32(Flag.NO_IVAR)
    ds = ds.chunk({"galaxy": 50})
    with dask.config.set(scheduler="synchronous"):
        out = denoise(ds, pca_dir).compute()
        den, inp = to_frame(fit_lines(out)), to_frame(fit_lines(ds))
    grid = Grid.from_dataset(ds)
    expect = detected_lines(ds["flux"].values, ds["ivar"].values, ds["mask"].values, grid)
    expect[4] = False  # dropped: nothing is detected
    got = from_bits(out["lines_detected_input"].values)
    np.testing.assert_array_equal(got, expect)
    assert "S/N >= 3" in out["lines_detected_input"].attrs["rule"]
    # The input's own catalogue (five line widths to the detection's one) nearly always agrees.
    snr = (inp["halpha_flux"] / inp["halpha_flux_err"]).to_numpy()
    fitted = np.isfinite(snr)
    assert np.mean((snr >= DETECTED_SNR)[fitted] == got[fitted, _key("halpha")]) >= 0.95
    # Both kinds occur: galaxies without lines, and lines drowned by sigma = 0.04.
    halpha = got[:, _key("halpha")]
    assert 5 <= halpha.sum() <= 110
    for key in ("halpha", "hbeta", "oiii_5007"):
        flagged = not_in_input(den, key)
        np.testing.assert_array_equal(flagged, ~got[:, _key(key)] & ~not_covered(den, key))
        assert not not_in_input(inp, key).any()  # a spectrum that was not de-noised is its own input


def test_input_detections_take_each_galaxys_survey_constants(pca_dir, monkeypatch):
    # The detection's errors carry the fast fitter's systematic terms of the spectra's survey, as
    # the catalogue's do: a store attribute for all, or a survey per galaxy (ingested stores).
    from survey_denoise.fitting import detected_lines, systematics
    from survey_denoise.line_windows import from_bits

    shipped = systematics._file()
    # A survey whose Halpha error is at least its flux: never S/N >= 3.
    own = {"methods": {"fast": {"halpha": {"frac": 1.0}}}, "provenance": {"fast": {"summary": "test"}}}
    monkeypatch.setattr(systematics, "_file", lambda: {**shipped, "surveys": {"desi": own}})
    n = 120
    ds, _ = datasets(n, seed=34)
    grid = Grid.from_dataset(ds)
    default = detected_lines(ds["flux"].values, ds["ivar"].values, ds["mask"].values, grid)
    h = _key("halpha")
    even = np.arange(n) % 2 == 0
    assert default[even, h].any() and default[~even, h].any()
    with dask.config.set(scheduler="synchronous"):
        whole = denoise(ds.assign_attrs(survey="desi").chunk({"galaxy": 25}), pca_dir).compute()
        labels = np.where(even, "sdss", "desi")
        mixed = denoise(ds.assign(survey=("galaxy", labels)).chunk({"galaxy": 25}), pca_dir).compute()
    # (the survey's table replaces the default whole: its other lines keep their formal errors)
    own_calls = detected_lines(ds["flux"].values, ds["ivar"].values, ds["mask"].values, grid, "desi")
    assert not own_calls[:, h].any()
    got = from_bits(whole["lines_detected_input"].values)
    np.testing.assert_array_equal(got, own_calls)
    got = from_bits(mixed["lines_detected_input"].values)
    np.testing.assert_array_equal(got[even], default[even])
    np.testing.assert_array_equal(got[~even], own_calls[~even])
    # degraded to stand for another survey's noise: its own instrument's constants
    sim = denoise(ds.assign_attrs(survey="desi", survey_simulated_from="sdss").chunk({"galaxy": 25}), pca_dir)
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(from_bits(sim["lines_detected_input"].values), default)


def _key(key):
    from survey_denoise import lines

    return lines.catalogue_keys().index(key)


def test_mismatch_refused_before_any_graph(pca_dir):
    with pytest.raises(SchemaError, match="'l2'-normalised.*'sum'-normalised"):
        denoise(datasets(10, norm="sum")[0].chunk({"galaxy": 5}), pca_dir)
    with pytest.raises(SchemaError, match="800 pixels"):
        denoise(datasets(10, grid=Grid(3700.0, 7900.0, 800))[0].chunk({"galaxy": 5}), pca_dir)
    with pytest.raises(ValueError, match="needs a VAE"):
        denoise(datasets(10)[0], pca_dir, n_samples=3)


def test_vae_samples_give_spread_and_ivar_independent_of_chunking(vae_dir):
    ds, _ = datasets(40, seed=34)
    with dask.config.set(scheduler="synchronous"):
        a = denoise(ds.chunk({"galaxy": 7}), vae_dir, n_samples=4).compute()
        b = denoise(ds.chunk({"galaxy": 40}), vae_dir, n_samples=4, batch_size=8).compute()
    np.testing.assert_allclose(a["flux"].values, b["flux"].values, rtol=1e-5, atol=1e-7)
    assert np.all(a["flux_std"].values > 0)
    np.testing.assert_allclose(a["ivar"].values, b["ivar"].values, rtol=1e-4)
    # The total variance is the model's own plus the spread of the decodes.
    _, var = VAEDenoiser.load(vae_dir).denoise(ds["flux"].values, return_var=True)
    spread = a["flux_std"].values.astype(np.float64) ** 2
    assert np.all(1 / a["ivar"].values > spread) and np.all(1 / a["ivar"].values > 0.5 * var)


def test_local_cluster_loads_the_model_once_per_worker(vae_dir):
    from distributed import Client

    from survey_denoise.cluster import local_cluster

    ds, _ = datasets(120, seed=35)
    with dask.config.set(scheduler="synchronous"):
        ref = denoise(ds.chunk({"galaxy": 120}), vae_dir, n_samples=2).compute()
    lazy = denoise(ds.chunk({"galaxy": 10}), vae_dir, n_samples=2)
    with local_cluster(2, dashboard_address=None) as cluster, Client(cluster) as client:
        first = lazy.compute()
        again = lazy.compute()
        counts = client.run(load_counts)
    assert len(counts) == 2
    assert sum(c["calls"] for c in counts.values()) == 24  # 12 chunks, computed twice
    for c in counts.values():
        assert c["loads"] == (1 if c["calls"] else 0), counts
    np.testing.assert_allclose(first["flux"].values, ref["flux"].values, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(first["flux"].values, again["flux"].values)


def test_amplitude_recovers_the_scale_and_its_error():
    from survey_denoise.inference import amplitude

    rng = np.random.default_rng(5)
    model, _ = datasets(400, seed=36)
    m = model["flux"].values.astype(np.float64)
    truth = 10 ** rng.uniform(-0.5, 0.5, m.shape[0])
    ivar = np.full(m.shape, 400.0)
    ivar[:, :300] = 0  # unused pixels: their flux must not matter
    flux = truth[:, None] * m + rng.normal(0, 0.05, m.shape)
    flux[:, :300] = np.nan
    scale, err = amplitude(m, flux, ivar)
    pull = (scale - truth) / err
    assert abs(np.mean(pull)) < 0.2 and 0.85 < np.std(pull) < 1.15
    none, none_err = amplitude(m[:2], flux[:2], np.zeros_like(ivar[:2]))
    assert np.all(np.isnan(none)) and np.all(np.isnan(none_err))
    # A training-set ratio known to 0.002 % outweighs a 2-5 % measurement; one known to
    # 0.5 dex does not, and it alone stands where the input has no signal.
    tight, tight_err = amplitude(m, flux, ivar, prior=(0.5, 1e-5))
    np.testing.assert_allclose(tight, 0.5, rtol=1e-3)
    assert np.all(tight_err <= 1e-5 * np.log(10) * tight)
    wide, _ = amplitude(m, flux, ivar, prior=(0.5, 0.5))
    np.testing.assert_allclose(wide, scale, rtol=0.02)
    fallback, fallback_err = amplitude(m[:2], flux[:2], np.zeros_like(ivar[:2]), prior=(0.5, 0.5))
    np.testing.assert_allclose(fallback, 0.5)
    np.testing.assert_allclose(fallback_err, 0.5 * 0.5 * np.log(10))


def test_denoised_spectra_are_physical_in_the_inputs_frame_whatever_the_training_norms(tmp_path):
    """Inputs dimmed by a factor that differs per galaxy (moved to another redshift): the
    de-noised ``flux x norm`` follows each galaxy's own input, not the training set's median."""
    rng = np.random.default_rng(37)

    def dimmed(n, seed):
        noisy, clean = datasets(n, seed=seed)
        factor = 10 ** rng.uniform(-1.2, -0.6, n)  # physical input = factor x clean
        return noisy.assign(norm=("galaxy", factor)), clean, factor

    noisy, clean, _ = dimmed(200, 38)
    folder = VAEDenoiser(2, units=[32, 16], dropout=0.1, epochs=2, learning_rate=1e-3).fit(
        noisy, clean).save(tmp_path / "vae")
    test, test_clean, factor = dimmed(40, 39)
    with dask.config.set(scheduler="synchronous"):
        den = denoise(test.chunk({"galaxy": 20}), folder, input_detections=False).compute()
    physical = (den["flux"] * den["norm"]).sum("wavelength").values
    expected = factor * (test_clean["flux"] * test_clean["norm"]).sum("wavelength").values
    offset = np.log10(physical / expected)
    assert abs(np.median(offset)) < 0.02 and np.std(offset) < 0.03, offset
    # Here the model's normalisation is the input's: the amplitude only mends the decode's own scale.
    np.testing.assert_allclose(den["amplitude"].values, 1.0, atol=0.2)
    # sigma = 0.04 per pixel of a unit spectrum: the input sets its amplitude to ~4 %.
    assert np.all(den["amplitude_err"].values < 0.05 * den["amplitude"].values)
    # Its error is common to every line of the galaxy, in the total error and not the formal part.
    from survey_denoise.fitting import fit_lines

    cat = fit_lines(den, method="fast").compute()
    assert "amplitude_err / amplitude" in cat.attrs["flux_err_rule"]
    frac = (den["amplitude_err"] / den["amplitude"]).values
    without = fit_lines(den.drop_vars(["amplitude", "amplitude_err"]), method="fast").compute()
    for key in ("halpha", "oiii_5007"):
        flux, err = cat[f"{key}_flux"].values, cat[f"{key}_flux_err"].values
        np.testing.assert_allclose(err ** 2, without[f"{key}_flux_err"].values ** 2 + (frac * flux) ** 2,
                                   rtol=1e-6)
        np.testing.assert_array_equal(cat[f"{key}_flux_err_stat"].values, without[f"{key}_flux_err_stat"].values)
