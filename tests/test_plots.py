"""Figures: each builds from plain inputs, draws what it should and saves a real PNG."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from _mzr_sample import synthetic_catalogues, synthetic_truth

from survey_denoise import plots
from survey_denoise.grid import GRID
from survey_denoise.science.mzr_test import mzr_test


def _png_ok(path):
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.02  # not a blank canvas


def test_mzr_panels(tmp_path):
    truth = synthetic_truth(600, seed=1)
    res = mzr_test(synthetic_catalogues(truth), truth)
    fig = plots.mzr_panels(res.galaxies, save=tmp_path / "fig10.png")
    # three MZR panels + three histograms + a colour bar
    assert len(fig.axes) == 7
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("σ =" in t for t in texts)
    assert fig.axes[0].get_title() == "Original spectra"
    _png_ok(tmp_path / "fig10.png")


def test_line_flux_comparison(tmp_path):
    rng = np.random.default_rng(0)
    x = 10 ** rng.uniform(0, 3, 500)
    orig = {"halpha": x, "hbeta": x / 3, "oiii_5007": x / 2, "nii_6583": x / 4}
    pred = {k: v * 10 ** rng.normal(0, 0.2, v.size) for k, v in orig.items()}
    fig = plots.line_flux_comparison(orig, pred, sigma={"halpha": "σ = 0.20 dex"},
                                     save=tmp_path / "fig9.png")
    assert len(fig.axes) == 4
    assert "σ = 0.20 dex" in fig.axes[0].texts[0].get_text()
    _png_ok(tmp_path / "fig9.png")


def test_figure9_draws_limits_error_bars_and_both_scatters(tmp_path):
    from survey_denoise.science import metrics

    rng = np.random.default_rng(3)
    ids = [f"g{i}" for i in range(200)]
    true = 10 ** rng.uniform(0, 3, 200)

    def cat(flux, err):
        return pd.DataFrame({"galaxy": ids, **{c: v for k in metrics.TABLE6_LINES
                                                for c, v in ((f"{k}_flux", flux), (f"{k}_flux_err", err))}})

    noisy_flux = np.where(true > 10, true * 10 ** rng.normal(0, 0.1, 200), 0.0)
    scores = metrics.score_catalogues(
        {"vae": cat(noisy_flux, np.full(200, 5.0))}, cat(true, np.full(200, 0.1)),
        pd.DataFrame({"galaxy": ids, **{f"true_{k}_flux": true for k in metrics.TABLE6_LINES}}))
    fig = plots.figure9(scores, "vae", save=tmp_path / "fig9.png")
    _png_ok(tmp_path / "fig9.png")
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "Hα"
    note = fig.axes[0].texts[0].get_text()
    n_upper = int((noisy_flux == 0).sum())
    assert f"N = 200 ({n_upper} limits)" in note and "σ_fill" in note and "σ vs truth" in note
    with pytest.raises(KeyError, match="no scores for method 'pca'"):
        plots.figure9(scores, "pca")


def test_mse_vs_latent(tmp_path):
    tab = pd.DataFrame({"model": ["pca"] * 4 + ["ae"] * 4 + ["vae"] * 4,
                        "latent_dim": [2, 4, 6, 10] * 3,
                        "mse": [3, 3.1, 3.2, 3.4, 2.5, 2.2, 2.1, 2.1, 2.4, 2.0, 1.9, 1.9]})
    fig = plots.mse_vs_latent(tab, save=tmp_path / "fig7.png")
    assert len(fig.axes[0].lines) == 3
    _png_ok(tmp_path / "fig7.png")
    with pytest.raises(KeyError, match="latent_dim"):
        plots.mse_vs_latent(tab.drop(columns="latent_dim"))


def test_example_spectra(tmp_path):
    w = GRID.wavelength
    rng = np.random.default_rng(0)
    clean = 1 + np.exp(-0.5 * ((w - 6564.6) / 3) ** 2)[None, :] * np.array([[1.0], [2.0]])
    noisy = clean + rng.normal(0, 0.1, clean.shape)
    fig = plots.example_spectra(w, clean, noisy, {"vae": clean * 1.01, "pca": clean * 0.98},
                                ids=["a", "b"], save=tmp_path / "fig8.png")
    assert len(fig.axes) == 4
    assert len(fig.axes[0].lines) == 4  # noisy, original, two reconstructions
    _png_ok(tmp_path / "fig8.png")


def test_latent_space(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 6))
    cls = np.array(["emission", "absorption", "quiescent"])[rng.integers(0, 3, 300)]
    fig = plots.latent_space(z, cls, save=tmp_path / "fig6.png")
    assert len(fig.axes) == 6  # corner of 4 dimensions: 3 + 2 + 1 panels
    _png_ok(tmp_path / "fig6.png")
    with pytest.raises(ValueError, match="d >= 2"):
        plots.latent_space(z[:, :1], cls)


def test_line_without_data_says_so_and_axes_carry_units():
    rng = np.random.default_rng(0)
    x = 10 ** rng.uniform(0, 2, 40)
    fig = plots.line_flux_comparison({"halpha": x, "hdelta": np.full(40, np.nan)},
                                     {"halpha": x * 1.1, "hdelta": np.full(40, np.nan)},
                                     sigma={"halpha": "σ = 0.04 dex"})
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert not any("nan" in t for t in texts)
    assert any("no fluxes to compare" in t for t in texts)
    drawn = [ax for ax in fig.axes if ax.axison]
    assert len(drawn) == 1
    assert "erg/s/cm²" in drawn[0].get_xlabel() and "erg/s/cm²" in drawn[0].get_ylabel()


def test_loss_curves_show_the_reconstruction_term_of_a_negative_likelihood(tmp_path):
    from survey_denoise.models.figures import loss_curves

    # A Gaussian likelihood's total is negative; on a log axis it would draw nothing (and warn).
    history = {"loss": [-900.0, -1500.0, -1700.0], "val_loss": [-800.0, -1400.0, -1500.0],
               "reconstruction": [1400.0, 900.0, 700.0], "val_reconstruction": [1500.0, 1000.0, 800.0],
               "learning_rate": [1e-4, 1e-4, 1e-5]}
    fig = loss_curves(history, save=tmp_path / "loss.png")
    ax = fig.axes[0]
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [history["reconstruction"],
                                                                  history["val_reconstruction"]]
    assert "reconstruction" in ax.get_ylabel()
    _png_ok(tmp_path / "loss.png")
    mse = loss_curves({"loss": [3.0, 2.0], "val_loss": [3.5, 2.5]})
    assert [list(line.get_ydata()) for line in mse.axes[0].get_lines()] == [[3.0, 2.0], [3.5, 2.5]]
