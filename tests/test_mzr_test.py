"""The three-way MZR test on synthetic catalogues with known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _mzr_sample import synthetic_catalogue, synthetic_catalogues, synthetic_truth

from survey_denoise.science.mzr import SCHOLTE24, slope
from survey_denoise.science.mzr_test import (
    MZRTest,
    format_comparison,
    log_sfr,
    mzr_test,
    true_lines_oh,
)


@pytest.fixture(scope="module")
def sample():
    truth = synthetic_truth(3000, seed=5)
    return truth, synthetic_catalogues(truth)


@pytest.fixture(scope="module")
def result(sample):
    truth, cats = sample
    return mzr_test(cats, truth)


def test_fractions_follow_the_signal_to_noise(sample, result):
    truth, cats = sample
    s = result.summary
    assert list(s.index) == ["original", "desi", "vae"]
    assert (s["n_total"] == len(truth)).all()
    # the fraction equals the share of galaxies passing Halpha S/N > 15 (other cuts rarely bite)
    for case, cat in cats.items():
        expected = np.mean(cat["halpha_snr"] > 15)
        assert s.loc[case, "fraction"] == pytest.approx(expected, abs=0.02)
    assert s.loc["original", "fraction"] > 0.95
    assert s.loc["desi", "fraction"] < 0.3
    assert s.loc["desi", "flag_low_halpha_snr"] > 0.7 * len(truth)
    # the survivors of the noisy case are biased to high SFR, hence to high mass
    assert s.loc["desi", "median_logmass_measured"] > s.loc["desi", "median_logmass_all"] + 0.1
    assert s.loc["desi", "ks_mass"] > s.loc["original", "ks_mass"]


def test_scatter_matches_truth_and_noise(sample, result):
    truth, _ = sample
    s = result.summary
    true_std = np.std(truth["true_oh"] - SCHOLTE24(truth["true_logmass"]), ddof=1)
    # nearly noiseless original: the scatter is the intrinsic one
    assert s.loc["original", "scatter_std"] == pytest.approx(true_std, abs=0.01)
    assert abs(s.loc["original", "bias_vs_true"]) < 0.005
    assert s.loc["original", "std_vs_true"] < s.loc["vae", "std_vs_true"]
    assert s.loc["vae", "scatter_std"] > s.loc["original", "scatter_std"]
    # the line errors propagated are consistent with the scatter against the truth (which the
    # synthetic lines follow exactly: no calibration scatter to add)
    assert s.loc["vae", "median_oh_err_stat"] == pytest.approx(s.loc["vae", "std_vs_true"], rel=0.3)


def test_every_case_is_also_compared_on_the_same_galaxies(sample, result):
    truth, _ = sample
    s = result.summary
    common = np.logical_and.reduce([g["has_oh"].to_numpy(bool) for g in result.galaxies.values()])
    assert 0 < common.sum() <= s["n_measured"].min()
    assert (s["n_common"] == common.sum()).all()
    for case, g in result.galaxies.items():
        by_hand = np.std(g["oh"][common] - SCHOLTE24(g["logmass"][common]), ddof=1)
        assert s.loc[case, "scatter_std_common"] == pytest.approx(by_hand)
        d = (g["oh"] - g["true_oh"])[common]
        assert s.loc[case, "std_vs_true_common"] == pytest.approx(np.std(d, ddof=1))
    # the noisy case's own sample is not the others': on its galaxies the original is tighter
    assert s.loc["original", "scatter_std_common"] < s.loc["desi", "scatter_std_common"]
    assert s.loc["desi", "std_vs_true_common"] > s.loc["vae", "std_vs_true_common"]
    assert result.settings["n_common"] == common.sum()
    assert result.settings["n_measurable_noisy"] == s.loc["desi", "n_measured"]
    text = format_comparison(result)
    assert f"on the same {common.sum()} galaxies" in text
    assert f"spectra alone (no de-noising): {s.loc['desi', 'n_measured']} of {len(truth)}" in text
    c = result.comparison()
    assert (c["ours_n_common"] == common.sum()).all()

    # A case that measures none leaves the others' common set as it was.
    truth, cats = sample
    none = cats["vae"].copy()
    none["halpha_snr"] = 1.0
    with_none = mzr_test({**cats, "none": none}, truth).summary
    assert with_none.loc["none", "n_measured"] == 0
    assert (with_none["n_common"] == common.sum()).all()
    assert with_none.loc["desi", "scatter_std_common"] == pytest.approx(s.loc["desi", "scatter_std_common"])


def test_sfr_trend_survives_in_good_data(result):
    s = result.summary
    assert s.loc["original", "sfr_spearman_r"] > 0.5
    assert s.loc["original", "sfr_slope"] == pytest.approx(0.1, abs=0.03)
    assert s.loc["vae", "sfr_spearman_r"] > 0.2


def test_missing_galaxies_count_as_unmeasured(sample):
    truth, cats = sample
    short = {"original": cats["original"].iloc[: len(truth) // 2]}
    r = mzr_test(short, truth)
    g = r.galaxies["original"]
    assert len(g) == len(truth)
    assert not g["has_oh"].iloc[len(truth) // 2:].any()
    assert r.summary.loc["original", "fraction"] <= 0.5
    assert r.summary.loc["original", "flag_missing_line"] >= len(truth) // 2


@pytest.mark.parametrize("fill", ["nan", "stale values"])
def test_galaxies_whose_lines_were_not_observed_are_missing_not_faint(sample, fill):
    from survey_denoise.flags import Flag
    from survey_denoise.science.metallicity import OHFlag

    truth, cats = sample
    cat = cats["original"].copy()
    red = np.arange(len(cat)) % 3 == 0       # z too high: Halpha and [NII] beyond the spectrum
    for key in ("halpha", "nii_6583", "nii_6548"):
        if fill == "nan":  # as the fitters write an uncovered line
            for col in ("flux", "flux_err", "flux_norm", "flux_norm_err", "snr"):
                cat[f"{key}_{col}"] = np.where(red, np.nan, cat[f"{key}_{col}"])
        cat[f"{key}_status"] = np.where(red, int(Flag.LINE_NOT_COVERED), 0).astype(np.uint32)
    r = mzr_test({"original": cat, "full": cats["original"]}, truth.iloc[:-5])  # 5 galaxies absent
    g, full = r.galaxies["original"], r.galaxies["full"]
    sel = red[:-5]
    flags = g["oh_flags"].to_numpy()
    assert full["has_oh"].to_numpy()[sel].mean() > 0.9
    assert not g["has_oh"].to_numpy()[sel].any()
    assert np.all(flags[sel] & int(OHFlag.MISSING_LINE))
    assert not np.any(flags[sel] & int(OHFlag.NONPOSITIVE_FLUX))
    np.testing.assert_array_equal(g["oh"].to_numpy()[~sel], full["oh"].to_numpy()[~sel])
    assert r.summary.loc["original", "n_measured"] == (full["has_oh"].to_numpy() & ~sel).sum()


def test_a_sample_too_small_for_a_main_sequence_still_gets_fractions_and_scatter(sample):
    truth, cats = sample
    few = truth.iloc[:20].reset_index(drop=True)
    r = mzr_test({"original": cats["original"]}, few)
    row = r.summary.loc["original"]
    assert row["n_total"] == 20 and row["n_measured"] > 15
    assert np.isfinite(row["scatter_std"]) and np.isnan(row["sfr_spearman_r"])


def test_comparison_table_and_text(result):
    c = result.comparison()
    assert c.loc["original", "paper_scatter_dex"] == 0.09
    assert c.loc["vae", "paper_scatter_dex"] == 0.12
    assert pd.isna(c.loc["desi", "paper_scatter_dex"])  # the paper gives none
    assert c.loc["vae", "ours_fraction"] == pytest.approx(result.summary.loc["vae", "fraction"], abs=1e-3)
    text = format_comparison(result)
    assert "DESI-like + 6-d VAE" in text and "0.09" in text and "0.12" in text


def test_mzr_slope_follows_the_truth_and_is_compared_with_the_originals(sample, result):
    truth, _ = sample
    s, c = result.summary, result.comparison()
    true = slope(truth["true_logmass"], truth["true_oh"])
    assert s.loc["original", "mzr_slope"] == pytest.approx(true["slope"], abs=3 * s.loc["original", "mzr_slope_err"])
    # the noisier the catalogue, the fewer galaxies in the range and the wider the error;
    # the noisiest keeps too few low-mass galaxies for a slope
    assert s.loc["desi", "mzr_slope_n"] < s.loc["vae", "mzr_slope_n"] < s.loc["original", "mzr_slope_n"]
    assert s.loc["vae", "mzr_slope_err"] > s.loc["original", "mzr_slope_err"]
    assert s.loc["desi", "mzr_slope_n"] < 10 and np.isnan(c.loc["desi", "ours_mzr_slope"])
    assert c.loc["original", "ours_mzr_slope_ratio"] == pytest.approx(1.0)
    assert c.loc["vae", "ours_mzr_slope_ratio"] == pytest.approx(
        s.loc["vae", "mzr_slope"] / s.loc["original", "mzr_slope"])
    rel = np.hypot(*(s.loc[k, "mzr_slope_err"] / s.loc[k, "mzr_slope"] for k in ("vae", "original")))
    assert c.loc["vae", "ours_mzr_slope_ratio_err"] == pytest.approx(c.loc["vae", "ours_mzr_slope_ratio"] * rel)
    assert c.loc["original", "ours_mzr_slope_ratio_err"] == 0.0
    assert result.settings["slope_range"] == [9.1, 10.1]
    # on the galaxies both measure, noise without bias leaves the slope where it was
    truth, cats = sample
    two = mzr_test({"original": cats["original"], "vae": cats["vae"]}, truth).summary
    a, b = two["mzr_slope_common"], two["mzr_slope_err_common"]
    assert abs(a["vae"] - a["original"]) < 3 * np.hypot(b["vae"], b["original"])
    text = format_comparison(result)
    assert "MZR slope over log M* 9.1-10.1" in text and "x the original's" in text
    assert f"DESI-like, z = 0.1: - ({s.loc['desi', 'mzr_slope_n']} galaxies)" in text
    # results saved before slopes were measured still compare, without a slope
    old = MZRTest(galaxies=result.galaxies, binned=result.binned, settings=result.settings,
                  summary=s.drop(columns=["mzr_slope", "mzr_slope_err", "mzr_slope_n"]))
    assert old.comparison()["ours_mzr_slope_ratio"].isna().all()
    assert "MZR slope" not in format_comparison(old)


def test_a_slope_changed_by_selection_alone_is_told_from_one_changed_by_the_oh(sample, result):
    """A harsher Hα cut keeps, at low mass, only high-SFR (here metal-richer) galaxies."""
    truth, cats = sample
    cut = cats["original"].copy()
    for col in ("halpha_flux_err", "halpha_flux_norm_err"):
        cut[col] = cut[col] * 4.0
    cut["halpha_snr"] = cut["halpha_flux"] / cut["halpha_flux_err"]
    r = mzr_test({"original": cats["original"], "cut": cut, "vae": cats["vae"]}, truth)
    s, c = r.summary, r.comparison()
    # same fluxes, so the same O/H wherever both measure: the matched slopes agree exactly
    assert 0.2 < s.loc["cut", "fraction"] < 0.8
    assert s.loc["cut", "mzr_slope_matched"] == pytest.approx(s.loc["cut", "mzr_slope_matched_reference"])
    assert c.loc["cut", "ours_mzr_slope_matched_ratio"] == pytest.approx(1.0)
    assert c.loc["cut", "ours_mzr_slope_matched_ratio_err"] == pytest.approx(0.0, abs=1e-9)
    assert s.loc["cut", "mzr_slope_n_matched"] == s.loc["cut", "mzr_slope_n"]
    # ...yet its own slope is flatter, and the true O/H of its galaxies says why
    err = np.hypot(s.loc["cut", "mzr_slope_err_true"], s.loc["original", "mzr_slope_err_true"])
    assert s.loc["cut", "mzr_slope_true"] < s.loc["original", "mzr_slope_true"] - 3 * err
    assert c.loc["cut", "ours_mzr_slope_ratio"] < 0.9
    assert s.loc["cut", "mzr_slope"] == pytest.approx(s.loc["cut", "mzr_slope_true"],
                                                      abs=3 * s.loc["cut", "mzr_slope_err"])
    assert s.loc["original", "mzr_slope_true"] == pytest.approx(
        slope(truth["true_logmass"], truth["true_oh"])["slope"], abs=0.01)
    text = format_comparison(r)
    assert "both measure, against the original spectra's slope there: cut: " in text
    assert f"({s.loc['cut', 'mzr_slope_n_matched']} galaxies, 1.00 ± 0.00x)" in text
    # the noisier VAE case: the paired error is far below that of two independent slopes
    v = c.loc["vae"]
    assert 0 < v["ours_mzr_slope_matched_ratio_err"] < 0.5 * v["ours_mzr_slope_ratio_err"]
    assert abs(v["ours_mzr_slope_matched_ratio"] - 1) < 3 * v["ours_mzr_slope_matched_ratio_err"]
    assert "slope of the true O/H of each case's own measured galaxies (what" in text
    assert "true lines" not in text  # the synthetic truth has no line fluxes
    # results saved before the split was measured compare without it
    old = MZRTest(galaxies=r.galaxies, binned=r.binned, settings=r.settings,
                  summary=s.drop(columns=[k for k in s.columns if "matched" in k or k.endswith("_true")]))
    assert old.comparison()["ours_mzr_slope_matched_ratio"].isna().all()
    assert "both measure, against" not in format_comparison(old)


def test_the_calibration_on_noise_free_lines_splits_its_own_bias_from_the_noise(sample):
    """With the truth's line fluxes, the slope the calibration itself gives is measured."""
    truth, cats = sample
    noiseless = synthetic_catalogue(truth, 1e9, 0)
    truth = truth.assign(**{f"true_{k}_flux": noiseless[f"{k}_flux"].to_numpy()
                            for k in ("oiii_5007", "hbeta", "nii_6583", "halpha")})
    # the synthetic lines invert PP04 O3N2 exactly: the calibration adds nothing
    exact = true_lines_oh(truth, "o3n2")
    np.testing.assert_allclose(exact, truth["true_oh"], atol=1e-6)
    assert true_lines_oh(truth.drop(columns="true_hbeta_flux"), "o3n2") is None
    assert true_lines_oh(truth.drop(columns="true_hbeta_flux"), "n2") is not None
    # an [OIII]/Hβ that rises with mass at fixed O/H (say, a floor of other gas) flattens it
    biased = truth.assign(true_oiii_5007_flux=truth["true_oiii_5007_flux"]
                          * 10 ** (0.1 * (truth["true_logmass"] - 10.0)))
    for t, shift in ((truth, 0.0), (biased, -0.032)):
        r = mzr_test(cats, t)
        s = r.summary
        assert np.isnan(s.loc["desi", "mzr_slope_true_lines"])  # too few galaxies, as for its own slope
        for case in ("original", "vae"):
            assert s.loc[case, "mzr_slope_true_lines"] == pytest.approx(s.loc[case, "mzr_slope_true"] + shift,
                                                                        abs=1e-6)
        assert "true_lines_oh" in r.galaxies["vae"]
    assert f"(true lines {s.loc['vae', 'mzr_slope_true_lines']:+.3f})" in format_comparison(r)


def test_metallicity_errors_are_checked_against_their_own_truths(sample):
    """oh_err_stat must cover the calibration on noise-free lines, oh_err the true O/H."""
    truth, _ = sample
    rng = np.random.default_rng(17)
    # the galaxies' line ratios follow PP04 at an O/H 0.14 dex (PP04's own scatter) off the true one
    lines = truth.assign(true_oh=truth["true_oh"] + rng.normal(0.0, 0.14, len(truth)))
    noiseless = synthetic_catalogue(lines, 1e9, 0)
    truth = truth.assign(**{f"true_{k}_flux": noiseless[f"{k}_flux"].to_numpy()
                            for k in ("oiii_5007", "hbeta", "nii_6583", "halpha")})
    honest = synthetic_catalogue(lines, 8.0, 1)
    # errors stated at half their size: the S/N doubles, the scatter does not
    short = honest.assign(**{c: honest[c] / 2 for c in honest.columns if c.endswith("_err")},
                          **{c: honest[c] * 2 for c in honest.columns if c.endswith("_snr")})
    r = mzr_test({"original": honest, "short": short}, truth)
    s = r.summary
    for name in ("stat", "total"):
        assert 0.62 <= s.loc["original", f"oh_{name}_within_1sigma"] <= 0.74
        assert 0.92 <= s.loc["original", f"oh_{name}_within_2sigma"] <= 0.98
    # the line errors alone do not cover the true O/H: the calibration's scatter is most of the error
    g = r.galaxies["original"][r.galaxies["original"]["has_oh"]]
    assert np.mean(np.abs(g["oh"] - g["true_oh"]) <= g["oh_err_stat"]) < 0.4
    assert s.loc["original", "median_oh_err"] == pytest.approx(np.hypot(s.loc["original", "median_oh_err_stat"],
                                                                        0.14), rel=0.05)
    # line errors stated too small: at this S/N the calibration's scatter hides them in the total,
    # so only the check against the noise-free lines catches them
    assert s.loc["short", "oh_stat_within_1sigma"] < 0.45
    assert s.loc["short", "oh_total_within_1sigma"] == pytest.approx(s.loc["original", "oh_total_within_1sigma"],
                                                                     abs=0.02)
    cov = r.coverage
    assert set(cov["error"]) == {"stat", "total"} and set(cov["case"]) == {"original", "short"}
    binned = cov[(cov["bin"] != "all") & (cov["case"] == "original") & (cov["error"] == "stat")]
    assert len(binned) >= 3 and (binned["count"] >= 20).all()
    assert binned["count"].sum() <= int(s.loc["original", "n_measured"])
    text = format_comparison(r)
    assert "O/H errors" in text and f"{s.loc['short', 'oh_stat_within_1sigma']:.2f}" in text


def test_save_load_round_trip(result, tmp_path):
    result.save(tmp_path / "mzr")
    back = MZRTest.load(tmp_path / "mzr")
    pd.testing.assert_frame_equal(back.summary, result.summary, check_names=False)
    for case in result.galaxies:
        pd.testing.assert_frame_equal(back.galaxies[case], result.galaxies[case])
        pd.testing.assert_frame_equal(back.binned[case], result.binned[case])
    assert back.settings["min_halpha_snr"] == 15.0
    assert back.settings["reference"]["Z0"] == SCHOLTE24.Z0
    pd.testing.assert_frame_equal(back.coverage, result.coverage)
    assert (tmp_path / "mzr" / "comparison.csv").exists()
    with pytest.raises(FileNotFoundError, match="no MZR test results"):
        MZRTest.load(tmp_path / "nothing")


def test_input_errors(sample):
    truth, cats = sample
    with pytest.raises(KeyError, match="true_logmass"):
        mzr_test(cats, truth.drop(columns="true_logmass"))
    with pytest.raises(KeyError, match="'galaxy' column"):
        mzr_test({"x": cats["original"].drop(columns="galaxy")}, truth)
    dup = pd.concat([cats["original"].iloc[:2], cats["original"].iloc[:1]])
    with pytest.raises(ValueError, match="twice"):
        mzr_test({"x": dup}, truth)


def test_log_sfr_column_conventions():
    t = pd.DataFrame({"true_sfr": [1.0, 10.0, 0.0], "true_logsfr": [0.0, 1.0, -1.0]})
    np.testing.assert_allclose(log_sfr(t), [0.0, 1.0, np.nan])
    np.testing.assert_allclose(log_sfr(t, "true_logsfr"), [0.0, 1.0, -1.0])
    with pytest.raises(KeyError, match="no column"):
        log_sfr(t, "sfr")


def test_a_noise_bound_counts_the_galaxies_that_could_pass_and_is_saved(sample, tmp_path):
    truth, cats = sample
    rng = np.random.default_rng(3)
    line = rng.uniform(0, 30, len(truth))
    line[0] = 40.0  # a galaxy that would pass, left out of the bound below
    # rows in another order, one galaxy the sample lacks, one of the sample missing
    bound = pd.DataFrame({"galaxy": truth["galaxy"].astype(str), "snr_line": line,
                          "snr_tied": line * 1.1}).iloc[::-1].iloc[:-1]
    bound = pd.concat([bound, pd.DataFrame({"galaxy": ["elsewhere"], "snr_line": [99.0],
                                            "snr_tied": [99.0]})])
    result = mzr_test(cats, truth, bound=bound)
    assert result.settings["n_bound_line"] == int(np.sum(line[1:] > 15))
    assert result.settings["n_bound_tied"] == int(np.sum(line[1:] * 1.1 > 15))
    assert list(result.bound["galaxy"]) == list(truth["galaxy"].astype(str))
    assert np.isnan(result.bound["snr_line"].iloc[0])
    assert f"at most {result.settings['n_bound_line']} of {len(truth)}" in format_comparison(result)
    again = MZRTest.load(result.save(tmp_path / "t"))
    pd.testing.assert_frame_equal(again.bound, result.bound)
    assert again.settings["n_bound_tied"] == result.settings["n_bound_tied"]
    assert mzr_test(cats, truth).bound is None
