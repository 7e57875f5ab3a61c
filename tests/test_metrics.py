"""Scatter metrics of two line catalogues, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_denoise.science import metrics


def _pair():
    # log10 of the reference flux: five at 0, one at 0.5, five at 1 (then a
    # zero and a NaN that must be left out); offsets in dex chosen so that the
    # sums of squares are easy.
    la = np.array([0, 0, 0, 0, 0, 0.5, 1, 1, 1, 1, 1.0])
    d = np.array([0.1, -0.1, 0.1, -0.1, 0, 1.0, 0.2, -0.2, 0.2, -0.2, 0])
    a = np.r_[10**la, 0.0, np.nan]
    b = np.r_[10 ** (la + d), 5.0, 5.0]
    return a, b


def test_sigma_and_sigma_fill_by_hand():
    a, b = _pair()
    s = metrics.scatter_dex(a, b, n_bins=3, line="halpha")
    assert s.n == 11 and s.n_total == 13
    # all 11 points: mean 1/11, sum of squares 1.2
    assert s.sigma == pytest.approx(np.sqrt(1.2 / 11 - 1 / 121))
    # 3 bins, a bin is filled with > 11/4 points: the middle one (1 point) is not
    assert list(s.bins["count"]) == [5, 1, 5]
    assert list(s.bins["filled"]) == [True, False, True]
    assert s.sigma_fill == pytest.approx(np.sqrt(0.2 / 10))
    assert s.median_offset == pytest.approx(0.0)
    first = s.bins.iloc[0]
    assert first["d50"] == pytest.approx(0.0)
    assert first["p16"] == pytest.approx(np.percentile([0.1, -0.1, 0.1, -0.1, 0], 16))
    assert first["lo"] == 0 and s.bins.iloc[-1]["hi"] == 1


def test_identical_catalogues_have_no_scatter():
    x = 10 ** np.linspace(0, 3, 50)
    s = metrics.scatter_dex(x, x)
    assert s.sigma == 0 and s.sigma_fill == 0 and s.bins["filled"].all()


def test_too_few_points_give_nan():
    s = metrics.scatter_dex(np.array([1.0, np.nan]), np.array([2.0, 3.0]))
    assert s.n == 1 and np.isnan(s.sigma) and np.isnan(s.sigma_fill)


def _catalogue(ids, fluxes):
    cat = pd.DataFrame({"galaxy": ids})
    for key in metrics.TABLE6_LINES:
        cat[f"{key}_flux"] = fluxes
    return cat


def test_compare_matches_galaxies_and_lays_out_table6(tmp_path):
    a, b = _pair()
    ids = [f"g{i}" for i in range(a.size)]
    cat_a = _catalogue(ids, a)
    cat_b = _catalogue(ids[::-1], b[::-1])          # other row order: matched by id
    res = metrics.compare_catalogues(cat_a, cat_b, n_bins=3)
    assert res["halpha"].sigma == pytest.approx(np.sqrt(1.2 / 11 - 1 / 121))
    table = metrics.table6({"VAE": res, "PCA": res})
    assert list(table.index) == ["VAE", "PCA"]
    assert table.columns[0] == ("Hα", "σ") and table.columns[1] == ("Hα", "σ_fill")
    assert table.loc["VAE", ("[OIII]4363", "σ_fill")] == pytest.approx(round(np.sqrt(0.02), 2))
    assert set(metrics.bin_table(res)["line"]) == set(metrics.TABLE6_LINES)
    assert list(metrics.summary(res)["line"]) == list(metrics.TABLE6_LINES)
    fig = metrics.figure9(cat_a, cat_b, save=tmp_path / "fig9.png")
    assert (tmp_path / "fig9.png").stat().st_size > 1000 and len(fig.axes) == 6


def test_compare_names_missing_columns():
    with pytest.raises(KeyError, match="catalogue b lacks"):
        metrics.compare_catalogues(_catalogue(["a"], [1.0]), pd.DataFrame({"galaxy": ["a"]}))
