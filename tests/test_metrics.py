"""Scoring of line catalogues, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_denoise.science import metrics


def _pair():
    # log10 of the reference flux: five at 0, one at 0.5, five at 1; offsets in
    # dex chosen so that the sums of squares are easy.
    la = np.array([0, 0, 0, 0, 0, 0.5, 1, 1, 1, 1, 1.0])
    d = np.array([0.1, -0.1, 0.1, -0.1, 0, 1.0, 0.2, -0.2, 0.2, -0.2, 0])
    return 10**la, 10 ** (la + d)


def test_sigma_and_sigma_fill_by_hand():
    a, b = _pair()
    s = metrics.scatter_dex(a, b, n_bins=3, line="halpha")
    assert s.n == 11 and s.n_upper == 0
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


def test_identical_fluxes_have_no_scatter():
    x = 10 ** np.linspace(0, 3, 50)
    s = metrics.scatter_dex(x, x)
    assert s.sigma == 0 and s.sigma_fill == 0 and s.bins["filled"].all()


def test_scatter_refuses_to_drop_non_positive_fluxes():
    # the old scorer left zeros and NaNs out without a word
    with pytest.raises(ValueError, match="2 fluxes are not finite and > 0.*censor"):
        metrics.scatter_dex(np.array([1.0, 2.0, np.nan]), np.array([2.0, 0.0, 3.0]), line="halpha")


def test_too_few_points_give_nan():
    s = metrics.scatter_dex(np.array([1.0]), np.array([2.0]))
    assert s.n == 1 and np.isnan(s.sigma) and np.isnan(s.sigma_fill)


def test_censor_turns_zero_and_negative_fits_into_upper_limits():
    flux = np.array([5.0, 0.0, -2.0, np.nan, 0.0, np.nan])
    err = np.array([1.0, 2.0, 0.5, 3.0, np.nan, np.nan])
    value, upper = metrics.censor(flux, err, limit_sigma=1.0)
    np.testing.assert_allclose(value, [5.0, 2.0, 0.5, 3.0, np.nan, np.nan])
    np.testing.assert_array_equal(upper, [False, True, True, True, False, False])
    value3, _ = metrics.censor(flux, err, limit_sigma=3.0)
    np.testing.assert_allclose(value3[:4], [5.0, 6.0, 1.5, 9.0])


def test_upper_limits_are_points_of_sigma_fill():
    # reference log fluxes 0 (x4) and 1 (x4); the judged fits of two faint
    # galaxies are zero with error 10: limits at 10, 1 dex too high.
    a = np.r_[np.ones(4), np.full(4, 10.0)]
    flux = np.r_[1.0, 1.0, 0.0, 0.0, np.full(4, 10.0)]
    err = np.r_[1.0, 1.0, 10.0, 10.0, np.ones(4)]
    b, up = metrics.censor(flux, err)
    s = metrics.scatter_dex(a, b, upper_b=up, n_bins=2)
    assert s.n == 8 and s.n_upper == 2
    assert list(s.bins["count"]) == [4, 4] and list(s.bins["n_upper"]) == [2, 0]
    # both bins hold > 8/3 points (they would not without the limits: 2 of 6 points)
    assert s.bins["filled"].all()
    d = np.r_[0, 0, 1, 1, 0, 0, 0, 0.0]
    assert s.sigma == pytest.approx(np.std(d)) and s.sigma_fill == pytest.approx(np.std(d))


def test_common_mask_needs_a_value_everywhere():
    ok = metrics.common_mask({"a": np.array([1.0, np.nan, 2.0, 3.0]), "b": np.array([1.0, 1.0, 0.0, 3.0])})
    np.testing.assert_array_equal(ok, [True, False, False, True])


def test_painted_rate_of_a_known_case():
    true = np.array([1.0, 1.0, 1.0, 1.0, 10.0, 10.0, 1.0])
    floor = metrics.detection_floor(np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, np.nan]))
    np.testing.assert_allclose(floor[:6], 3.0)
    # S/N 5 (painted), 0.5, 2, missing fit; two bright ones detected (not faint); unknown floor
    flux = np.array([5.0, 0.5, 4.0, np.nan, 20.0, 20.0, 50.0])
    err = np.array([1.0, 1.0, 2.0, np.nan, 1.0, 1.0, 1.0])
    rate, n_painted, n_faint = metrics.painted_rate(true, floor, flux, err)
    assert (n_painted, n_faint) == (1, 4) and rate == pytest.approx(0.25)
    assert np.isnan(metrics.painted_rate(np.array([10.0]), np.array([3.0]), np.array([1.0]),
                                         np.array([1.0]))[0])


def test_spurious_lines_of_a_known_case():
    true = np.array([0.0, 2.0, 10.0, 10.0, 10.0, 10.0, np.nan])
    flux = np.array([4.0, 3.5, 11.0, 16.0, 2.0, np.nan, 5.0])
    err = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # absent line; truth below 3 errors; recovered; 6 errors off; not detected; no fit; no truth
    np.testing.assert_array_equal(metrics.spurious_lines(true, flux, err),
                                  [True, True, False, True, False, False, False])


def test_binned_offsets_and_faint_offset_by_hand():
    true = np.array([1.0, 1.0, 1.0, 100.0, 100.0])
    judged = np.array([10.0, 10.0, 1.0, 100.0, 10.0])
    ref = np.array([1.0, 1.0, 1.0, 100.0, 100.0])
    up = np.array([True, False, False, False, False])
    tab = metrics.binned_offsets(true, judged, ref, upper=up, edges=np.array([0.0, 1.0, 2.0]))
    assert list(tab["count"]) == [3, 2] and list(tab["n_upper"]) == [1, 0]
    assert tab["offset_truth"].tolist() == pytest.approx([1.0, -0.5])
    assert tab["sigma_truth"].iloc[0] == pytest.approx(np.std([1.0, 1.0, 0.0]))
    assert tab["offset_orig"].tolist() == pytest.approx([1.0, -0.5])
    offset, count = metrics.faint_offset(true, judged, np.array([-1.0, 0.0, 1.0, 2.0]))
    # the first bin is empty: the faintest bin holding galaxies is used
    assert offset == pytest.approx(1.0) and count == 3


def _catalogue(ids, flux, err):
    cat = pd.DataFrame({"galaxy": ids})
    for key in metrics.TABLE6_LINES:
        cat[f"{key}_flux"] = flux
        cat[f"{key}_flux_err"] = err
    return cat


def _survey():
    """40 galaxies: 20 bright (true 100) and 20 faint (true 1); noisy errors 1."""
    ids = [f"g{i}" for i in range(40)]
    true = np.r_[np.full(20, 100.0), np.ones(20)]
    sign = np.where(np.arange(40) % 2, 1.0, -1.0)
    truth = pd.DataFrame({"galaxy": ids, **{f"true_{k}_flux": true for k in metrics.TABLE6_LINES}})
    original = _catalogue(ids, true, np.full(40, 0.1))
    keeps = true * 10 ** (np.where(true > 10, 0.1, 0.2) * sign)      # +-0.1 dex bright, +-0.2 faint
    keeper = _catalogue(ids, keeps, np.full(40, 0.1))
    # the same fits, but the faint lines come out at zero (err 3: limits 0.48 dex high)
    dropper = _catalogue(ids, np.where(true > 10, keeps, 0.0), np.r_[np.full(20, 0.1), np.full(20, 3.0)])
    noisy = _catalogue(ids, true + sign * 0.5, np.ones(40))
    return ids, truth, original, keeper, dropper, noisy


def test_a_method_that_drops_faint_galaxies_does_not_score_better():
    ids, truth, original, keeper, dropper, noisy = _survey()
    sc = metrics.score_catalogues({"keeper": keeper, "dropper": dropper, "noisy": noisy}, original, truth,
                                  noisy="noisy", n_bins=2)
    s = sc.summary.set_index(["method", "line"])
    k, d = s.loc[("keeper", "halpha")], s.loc[("dropper", "halpha")]
    assert k["n"] == d["n"] == 40 and d["n_upper"] == 20 and k["n_upper"] == 0
    assert k["sigma_orig"] == pytest.approx(np.sqrt(0.025)) and k["sigma_truth"] == pytest.approx(np.sqrt(0.025))
    assert d["sigma_orig"] > k["sigma_orig"] and d["sigma_fill_truth"] > k["sigma_fill_truth"]
    # scoring positive fluxes only (the old rule) would have ranked the dropper first
    old = np.log10(dropper["halpha_flux"].to_numpy()[:20] / 100.0)
    assert np.std(old) < k["sigma_orig"] - 0.05
    # faint-bin over-prediction: the limits sit 0.48 dex high, the keeper's median is 0
    assert d["faint_offset"] == pytest.approx(np.log10(3.0)) and k["faint_offset"] == pytest.approx(0.0)
    counts = sc.counts.set_index(["method", "line"])
    assert counts.loc[("dropper", "halpha"), "n_upper"] == 20 and (sc.counts["n_common"] == 40).all()


def test_failed_fits_shrink_the_common_set_for_every_method():
    ids, truth, original, keeper, dropper, noisy = _survey()
    failed = keeper.copy()
    faint = np.arange(40) >= 20
    for k in metrics.TABLE6_LINES:
        failed.loc[faint, [f"{k}_flux", f"{k}_flux_err"]] = np.nan
    failed = failed.iloc[:-1]                              # and one galaxy absent altogether
    sc = metrics.score_catalogues({"keeper": keeper, "failed": failed}, original, truth, n_bins=2)
    counts = sc.counts.set_index(["method", "line"])
    assert counts.loc[("failed", "hdelta"), "n_missing"] == 20
    assert counts.loc[("keeper", "hdelta"), "n_missing"] == 0
    s = sc.summary.set_index(["method", "line"])
    assert s.loc[("keeper", "hdelta"), "n"] == s.loc[("failed", "hdelta"), "n"] == 20
    assert s.loc[("failed", "hdelta"), "sigma_orig"] == pytest.approx(s.loc[("keeper", "hdelta"), "sigma_orig"])


@pytest.mark.parametrize("fill", ["nan", "zero with an error"])
def test_lines_the_spectrum_did_not_cover_are_missing_not_limits(fill):
    from survey_denoise.flags import Flag

    ids, truth, original, keeper, dropper, noisy = _survey()
    partial = keeper.copy()
    red = np.arange(40) % 4 == 0                     # 10 galaxies whose red end was not observed
    for k in ("halpha", "nii_6583", "sii_6716"):
        partial[f"{k}_flux"] = np.where(red, np.nan if fill == "nan" else 0.0, partial[f"{k}_flux"])
        partial[f"{k}_flux_err"] = np.where(red, np.nan if fill == "nan" else 3.0, partial[f"{k}_flux_err"])
        partial[f"{k}_status"] = np.where(red, int(Flag.LINE_NOT_COVERED), 0).astype(np.uint32)
    for k in ("hdelta", "oiii_5007"):
        partial[f"{k}_status"] = np.zeros(40, np.uint32)
    sc = metrics.score_catalogues({"keeper": keeper, "partial": partial}, original, truth, n_bins=2)
    counts = sc.counts.set_index(["method", "line"])
    s = sc.summary.set_index(["method", "line"])
    for k in ("halpha", "nii_6583", "sii_6716"):
        row = counts.loc[("partial", k)]
        assert row["n_missing"] == 10 and row["n_upper"] == 0 and row["n_common"] == 30, (k, row)
        assert s.loc[("partial", k), "sigma_truth"] == pytest.approx(s.loc[("keeper", k), "sigma_truth"])
    for k in ("hdelta", "oiii_5007"):                # covered lines: every galaxy scored
        assert counts.loc[("partial", k), "n_missing"] == 0 and counts.loc[("partial", k), "n_common"] == 40


def test_painted_rate_and_bins_through_the_catalogues():
    ids, truth, original, keeper, dropper, noisy = _survey()
    painter = keeper.copy()
    painter["halpha_flux"] = np.r_[np.full(20, 100.0), np.full(20, 5.0)]   # faint lines at S/N 50
    truth.loc[39, "true_halpha_flux"] = 0.0                                # absent from the mock
    sc = metrics.score_catalogues({"painter": painter, "dropper": dropper, "noisy": noisy}, original,
                                  truth, noisy="noisy", n_bins=2)
    s = sc.summary.set_index(["method", "line"])
    assert s.loc[("painter", "halpha"), "painted_rate"] == 1.0
    # painted at 5 +- 0.1 where the truth is 1 (or 0): none of it is supported
    assert s.loc[("painter", "halpha"), "spurious_rate"] == 1.0
    recovered = keeper.copy()                                              # 1 +- 0.2 at S/N 5
    recovered["halpha_flux"], recovered["halpha_flux_err"] = np.r_[np.full(20, 100.0), np.ones(20)], 0.2
    sc_r = metrics.score_catalogues({"recovered": recovered, "noisy": noisy}, original, truth,
                                    noisy="noisy", n_bins=2).summary.set_index(["method", "line"])
    # below the input's floor, so painted; within its honest error, so not spurious,
    # except the line absent from the mock
    assert sc_r.loc[("recovered", "halpha"), "painted_rate"] == 1.0
    assert sc_r.loc[("recovered", "halpha"), "spurious_rate"] == pytest.approx(1 / 20)
    # the absent line has no log (not in the scatter) but its painting counts
    assert s.loc[("painter", "halpha"), "n"] == 39 and s.loc[("painter", "halpha"), "n_faint"] == 20
    assert s.loc[("dropper", "halpha"), "painted_rate"] == 0.0
    assert s.loc[("noisy", "halpha"), "painted_rate"] == 0.0          # S/N 1.5 and 0.5
    assert s.loc[("noisy", "halpha"), "spurious_rate"] == 0.0
    assert np.isnan(s.loc[("original", "halpha"), "painted_rate"])
    assert s.loc[("original", "halpha"), "sigma_truth"] == pytest.approx(0.0)
    b = sc.bins[(sc.bins["line"] == "halpha") & (sc.bins["method"] == "painter")]
    assert list(b["count"]) == [19, 20] and b["offset_truth"].iloc[0] == pytest.approx(np.log10(5))
    table = metrics.table6(sc)
    assert list(table.index) == ["painter", "dropper", "noisy"]
    assert table.columns[0] == ("Hα", "σ") and table.columns[1] == ("Hα", "σ_fill")
    truth_table = metrics.table6(sc, against="truth")
    assert truth_table.loc["painter", ("Hα", "σ")] > 0.3


def test_score_without_truth_still_gives_the_papers_measure():
    ids, truth, original, keeper, dropper, noisy = _survey()
    sc = metrics.score_catalogues({"keeper": keeper}, original, n_bins=2)
    row = sc.summary.set_index(["method", "line"]).loc[("keeper", "halpha")]
    assert row["sigma_orig"] == pytest.approx(np.sqrt(0.025)) and np.isnan(row["sigma_truth"])
    assert sc.bins.empty


def test_score_names_missing_columns_and_cases():
    ids, truth, original, keeper, dropper, noisy = _survey()
    with pytest.raises(KeyError, match="catalogue 'b' lacks"):
        metrics.score_catalogues({"b": pd.DataFrame({"galaxy": ids})}, original)
    with pytest.raises(KeyError, match="truth table lacks"):
        metrics.score_catalogues({"b": keeper}, original, truth[["galaxy"]])
    with pytest.raises(KeyError, match="noisy catalogue 'x'"):
        metrics.score_catalogues({"b": keeper}, original, truth, noisy="x")
