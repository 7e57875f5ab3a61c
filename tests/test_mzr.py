"""Reference MZR, scatter, binned MZR, slope and the SFR trend on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from survey_denoise.science.mzr import (
    SCHOLTE24,
    ReferenceMZR,
    binned_mzr,
    residuals,
    running_median,
    scatter,
    sfr_trend,
    slope,
    slope_ratio,
)


@pytest.mark.parametrize(
    ("logm", "expected"),
    [
        # Z0 - gamma/beta * log10(1 + 10**(-beta*(logm - logM0))), worked by hand:
        (10.49, 8.854 - 0.2439 / 1.2 * np.log10(2.0)),  # = 8.792816 at the turnover
        (9.49, 8.854 - 0.20325 * np.log10(1 + 10**1.2)),  # = 8.604699
        (8.49, 8.854 - 0.20325 * np.log10(1 + 10**2.4)),  # = 8.365849
        (12.0, 8.854 - 0.20325 * np.log10(1 + 10**-1.812)),  # = 8.852649
    ],
)
def test_reference_mzr_matches_published_form(logm, expected):
    assert SCHOLTE24(logm) == pytest.approx(expected, abs=1e-9)


def test_reference_mzr_numbers_by_hand():
    np.testing.assert_allclose(SCHOLTE24([10.49, 9.49, 8.49, 12.0]),
                               [8.792816, 8.604699, 8.365849, 8.852649], atol=2e-6)
    # low-mass slope tends to gamma, high-mass value to Z0
    assert (SCHOLTE24(7.0) - SCHOLTE24(6.0)) == pytest.approx(0.2439, abs=1e-3)
    assert SCHOLTE24(14.0) == pytest.approx(8.854, abs=1e-4)
    assert "2408.03996" in SCHOLTE24.to_dict()["reference"]


def test_scatter_about_reference():
    rng = np.random.default_rng(1)
    m = rng.uniform(8.5, 11.0, 20000)
    z = SCHOLTE24(m) + 0.05 + rng.normal(0, 0.1, m.size)
    s = scatter(m, z)
    assert s["n"] == m.size
    assert s["std"] == pytest.approx(0.1, abs=0.003)
    assert s["nmad"] == pytest.approx(0.1, abs=0.004)
    assert s["offset"] == pytest.approx(0.05, abs=0.003)
    assert s["rms"] == pytest.approx(np.hypot(0.1, 0.05), abs=0.003)
    np.testing.assert_allclose(residuals(m, z), z - SCHOLTE24(m))
    # NaNs ignored; fewer than two points gives NaN
    z[:10] = np.nan
    assert scatter(m, z)["n"] == m.size - 10
    assert np.isnan(scatter([9.0], [8.5])["std"])


def test_other_reference():
    flat = ReferenceMZR(Z0=8.7, logM0=0.0, gamma=0.0, beta=1.0, reference="flat")
    np.testing.assert_allclose(flat([8.0, 10.0]), 8.7)
    assert scatter([9, 10, 11], [8.6, 8.7, 8.8], flat)["std"] == pytest.approx(0.1)


def test_binned_mzr_exact_percentiles():
    # bin [9, 9.5): metallicities 8.00..8.99 in steps of 0.01 (100 values)
    m = np.full(100, 9.2)
    z = 8.0 + 0.01 * np.arange(100)
    # bin [9.5, 10): three galaxies only -> not filled with min_count 10
    m = np.r_[m, [9.7, 9.8, 9.9], [np.nan], [10.2]]
    z = np.r_[z, [8.5, 8.6, 8.7], [8.8], [np.nan]]
    tab = binned_mzr(m, z, bins=[9.0, 9.5, 10.0, 10.5], min_count=10)
    assert tab["n"].tolist() == [100, 3, 0]
    assert tab["filled"].tolist() == [True, False, False]
    row = tab.iloc[0]
    assert row["p50"] == pytest.approx(np.percentile(z[:100], 50))
    assert row["p16"] == pytest.approx(8.1584, abs=1e-9)  # linear interpolation at 0.16*99
    assert row["p84"] == pytest.approx(8.8316, abs=1e-9)
    assert tab.iloc[1]["p50"] == pytest.approx(8.6)
    assert np.isnan(tab.iloc[2]["p50"])
    np.testing.assert_allclose(tab["centre"], [9.25, 9.75, 10.25])


def test_binned_mzr_recovers_known_relation_and_default_fill_rule():
    rng = np.random.default_rng(2)
    m = rng.uniform(9.0, 11.0, 40000)
    z = 8.0 + 0.3 * (m - 9.0) + rng.normal(0, 0.1, m.size)
    tab = binned_mzr(m, z, bins=np.arange(9.0, 11.01, 0.1))
    truth = 8.0 + 0.3 * (tab["centre"] - 9.0)
    np.testing.assert_allclose(tab["p50"], truth, atol=0.01)
    np.testing.assert_allclose((tab["p84"] - tab["p16"]) / 2, 0.1, atol=0.01)
    assert tab["filled"].all()  # 2000 per bin > 40000 / 21
    # a bin with few galaxies is not filled under the default N/(n_bins+1) rule
    m2 = np.r_[m[:2000] * 0 + 9.05, [10.95]]
    tab2 = binned_mzr(m2, np.r_[z[:2000], [9.0]], bins=[9.0, 9.1, 10.9, 11.0])
    assert tab2["filled"].tolist() == [True, False, False]


def test_running_median_interpolates_and_refuses_empty():
    f = running_median(np.repeat([9.25, 9.75], 50), np.repeat([1.0, 2.0], 50), bins=[9, 9.5, 10])
    np.testing.assert_allclose(f([9.25, 9.5, 9.75, 8.0, 11.0]), [1.0, 1.5, 2.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="no mass bin"):
        running_median([9.1], [1.0], bins=[9, 9.5])


@pytest.mark.parametrize("coupling", [0.15, -0.15])
def test_sfr_trend_sign_and_slope(coupling):
    rng = np.random.default_rng(3)
    m = rng.uniform(9.0, 11.0, 20000)
    dsfr = rng.normal(0, 0.3, m.size)
    logsfr = 0.8 * (m - 10.0) + dsfr
    z = SCHOLTE24(m) + coupling * dsfr + rng.normal(0, 0.03, m.size)
    t = sfr_trend(m, z, logsfr, bins=np.arange(9.0, 11.01, 0.1))
    assert t["n"] == m.size
    assert np.sign(t["spearman_r"]) == np.sign(coupling)
    assert abs(t["spearman_r"]) > 0.7 and t["p_value"] < 1e-10
    assert t["slope"] == pytest.approx(coupling, abs=0.01)


def test_sfr_trend_none_and_too_few():
    rng = np.random.default_rng(4)
    m = rng.uniform(9.0, 11.0, 5000)
    t = sfr_trend(m, SCHOLTE24(m) + rng.normal(0, 0.1, m.size), rng.normal(0, 0.3, m.size))
    assert abs(t["spearman_r"]) < 0.05
    assert np.isnan(sfr_trend(m[:5], m[:5], m[:5])["spearman_r"])


def test_slope_recovers_a_known_relation_inside_its_range_only():
    rng = np.random.default_rng(6)
    m = rng.uniform(8.5, 11.5, 4000)
    inside = (m >= 9.1) & (m <= 10.1)
    # steep in the range, flat above it and a different slope below it: only the range counts
    rise = np.where(m < 9.1, 8.0 + 0.6 * (m - 9.1), 8.0 + 0.3 * (m - 9.1))
    z = np.where(m > 10.1, 8.3, rise) + rng.normal(0, 0.05, m.size)
    s = slope(m, z)
    assert s["n"] == inside.sum()
    assert s["slope"] == pytest.approx(0.3, abs=3 * s["slope_err"])
    # the bootstrap error is the least-squares one: sigma / (std(M) sqrt(n))
    expected_err = 0.05 / (np.std(m[inside]) * np.sqrt(inside.sum()))
    assert s["slope_err"] == pytest.approx(expected_err, rel=0.3)
    # another range is another answer
    assert slope(m, z, (8.6, 9.0))["slope"] == pytest.approx(0.6, abs=0.05)


def test_slope_ignores_non_finite_values_and_refuses_too_few():
    m = np.linspace(9.2, 10.0, 12)
    z = 8.0 + 0.2 * m
    assert slope(np.append(m, [np.nan, 9.5]), np.append(z, [8.0, np.inf]))["slope"] == pytest.approx(0.2)
    few = slope(m[:9], z[:9])
    assert few["n"] == 9 and np.isnan(few["slope"]) and np.isnan(few["slope_err"])
    flat = slope(np.full(20, 9.5), np.linspace(8, 9, 20))
    assert flat["n"] == 20 and np.isnan(flat["slope"])


def test_slope_ratio_of_the_same_galaxies_has_a_paired_error():
    rng = np.random.default_rng(8)
    m = rng.uniform(9.0, 10.2, 3000)
    # a wide intrinsic scatter, shared; a measurement that flattens by 10 % with small noise
    ref = 8.0 + 0.2 * m + rng.normal(0, 0.15, m.size)
    oh = 8.0 + 0.9 * (ref - 8.0) + 0.08 + rng.normal(0, 0.01, m.size)
    r = slope_ratio(m, oh, ref)
    inside = (m >= 9.1) & (m <= 10.1)
    assert r["n"] == inside.sum()
    assert r["slope"] == pytest.approx(slope(m, oh)["slope"]) and r["slope_ref"] == pytest.approx(slope(m, ref)["slope"])
    assert r["ratio"] == pytest.approx(0.9, abs=3 * r["ratio_err"])
    # the galaxies' shared scatter cancels: far below the independent-slopes error
    s_a, s_b = slope(m, oh), slope(m, ref)
    independent = r["ratio"] * np.hypot(s_a["slope_err"] / s_a["slope"], s_b["slope_err"] / s_b["slope"])
    assert 0 < r["ratio_err"] < 0.25 * independent
    # any non-finite value drops the galaxy from both fits
    oh2 = oh.copy()
    oh2[inside.nonzero()[0][:10]] = np.nan
    assert slope_ratio(m, oh2, ref)["n"] == inside.sum() - 10
    few = slope_ratio(m[:5], oh[:5], ref[:5])
    assert np.isnan(few["ratio"]) and np.isnan(few["ratio_err"])


def test_slope_ratio_error_is_not_set_by_one_resample():
    # 220 galaxies whose reference slope is 3 sigma from 0: a few bootstrap resamples put it
    # near 0 and their ratios far out; the standard deviation of the ratios was 4.5 here.
    rng = np.random.default_rng(22)
    m = rng.uniform(9.1, 10.1, 220)
    ref = 8.0 + 0.15 * m + rng.normal(0, 0.17, m.size)
    oh = ref + rng.normal(0, 0.12, m.size)
    r = slope_ratio(m, oh, ref)
    assert 0.1 < r["ratio_err"] < 0.6, r
