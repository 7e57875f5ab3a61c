"""Coverage of true values by their errors: the pure functions behind benchmarks/calibration.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_denoise.science.calibration import (
    clipped_fraction,
    coverage,
    in_target,
    line_coverage,
    pixel_coverage,
    tally,
)


def test_honest_gaussian_errors_cover_68_and_95_percent():
    rng = np.random.default_rng(1)
    true = 10 ** rng.uniform(0, 3, 20000)
    err = 0.1 * true + 1.0
    table = coverage(true + err * rng.standard_normal(true.size), err, true, edges=[0, 1, 2, 3])
    assert list(table["bin"]) == ["[0, 1)", "[1, 2)", "[2, 3)", "all"]
    assert table["count"].iloc[-1] == 20000 and table["count"].iloc[:3].sum() == 20000
    np.testing.assert_allclose(table["within_1sigma"], 0.683, atol=0.02)
    np.testing.assert_allclose(table["within_2sigma"], 0.954, atol=0.01)
    assert in_target(table)


def test_errors_too_small_or_too_large_fall_outside_the_target():
    rng = np.random.default_rng(2)
    true = np.ones(5000)
    measured = true + rng.standard_normal(true.size)
    assert not in_target(coverage(measured, np.full(5000, 0.3), true))
    assert not in_target(coverage(measured, np.full(5000, 3.0), true))
    assert in_target(coverage(measured, np.ones(5000), true))


def test_small_bins_are_judged_against_counting_noise():
    rng = np.random.default_rng(5)
    true = 10 ** rng.uniform(0, 3, 600)
    edges = np.linspace(0, 3, 11)                   # ten bins of ~60 values
    z = rng.standard_normal(true.size)
    honest = coverage(true + z, np.ones(true.size), true, edges=edges)
    # exact errors: out of the band in some bins, as 60 values allow, but never beyond chance
    t = tally(honest)
    assert t["measures"] == 20 and t["in_band"] + t["too_small"] + t["too_wide"] == 20
    assert t["narrow"] == t["wide"] == 0 and (honest["p_1sigma"] > 0.01).all()
    # 60 of 60 within 2 sigma is out of the band yet happens 6 % of the time with exact errors
    full = coverage(np.r_[np.full(41, 0.5), np.full(19, 1.5)], np.ones(60), np.zeros(60))
    assert full["within_2sigma"].iloc[-1] == 1.0 and full["p_2sigma"].iloc[-1] == pytest.approx(0.116, abs=0.01)
    t = tally(full.assign(bin="one bin"))
    assert (t["in_band"], t["too_wide"], t["wide"]) == (1, 1, 0)
    # errors off by a factor 2 either way are told apart from chance in most bins
    short = tally(coverage(true + z, np.full(true.size, 0.5), true, edges=edges))
    long = tally(coverage(true + z, np.full(true.size, 2.0), true, edges=edges))
    assert short["narrow"] >= 15 and short["wide"] == 0
    assert long["wide"] >= 10 and long["narrow"] == 0


def test_fluxes_clipped_at_zero_are_judged_against_what_exact_errors_give_them():
    # every draw clipped to 0 is within k sigma while the truth is: Phi(k) up to a true S/N of k
    np.testing.assert_allclose(clipped_fraction(1.0, [0.0, 0.5, 0.99, 1.01, 20.0]),
                               [0.8413, 0.8413, 0.8413, 0.6827, 0.6827], atol=1e-4)
    np.testing.assert_allclose(clipped_fraction(2.0, [0.0, 20.0]), [0.9772, 0.9545], atol=1e-4)
    rng = np.random.default_rng(8)
    true = rng.uniform(0, 6, 40000)  # true S/N 0-6, exact errors of 1
    signed = true + rng.standard_normal(true.size)
    edges = [-9, np.log10(0.5), np.log10(3), 1]
    table = coverage(np.clip(signed, 0, None), np.ones(true.size), true, edges=edges)
    faint, bright = table.iloc[0], table.iloc[2]
    # the faintest bin is over-covered, as a non-negative measurement must be, and matches its expectation
    assert faint["within_1sigma"] > 0.8 and faint["within_1sigma"] == pytest.approx(faint["expected_1sigma"], abs=0.01)
    assert faint["within_2sigma"] == pytest.approx(faint["expected_2sigma"], abs=0.005)
    assert bright["expected_1sigma"] == pytest.approx(0.683, abs=0.005)
    t = tally(table)
    assert t["wide"] >= 2 and t["wide_clipped"] == t["narrow_clipped"] == 0
    # errors too long are still told apart: clipping explains the faint bins, not a general excess
    assert tally(coverage(np.clip(signed, 0, None), np.full(true.size, 1.5), true, edges=edges))["wide_clipped"] >= 4
    # signed measurements are judged against the Gaussian fractions
    signed_table = coverage(signed, np.ones(true.size), true, edges=edges)
    np.testing.assert_allclose(signed_table["expected_1sigma"], 0.6827, atol=1e-4)
    assert tally(signed_table)["wide"] == 0


def test_bad_entries_are_left_out_and_lengths_checked():
    table = coverage([1.0, np.nan, 2.0, 3.0], [1.0, 1.0, 0.0, 1.0], [1.5, 1.0, 2.0, 5.0])
    assert table["count"].iloc[-1] == 2 and table["within_1sigma"].iloc[-1] == 0.5
    with pytest.raises(ValueError, match="differ in length"):
        coverage([1.0], [1.0, 2.0], [1.0])


def test_line_coverage_matches_galaxies_by_id_and_bins_true_flux():
    rng = np.random.default_rng(3)
    n = 2000
    true = 10 ** rng.uniform(0.5, 2.5, n)
    err = 0.2 * true
    ids = np.arange(n)
    cat = pd.DataFrame({"galaxy": ids[::-1], "halpha_flux": (true + err * rng.standard_normal(n))[::-1],
                        "halpha_flux_err": err[::-1]})
    truth = pd.DataFrame({"galaxy": ids.astype(str), "halpha_flux": true})
    table = line_coverage(cat, truth, keys=("halpha",), n_bins=4)["halpha"]
    assert len(table) == 5 and table["count"].iloc[-1] == n
    np.testing.assert_allclose(table["within_1sigma"], 0.683, atol=0.06)
    # Errors halved for the faint half: the faint bins fall short, the bright ones do not.
    cat.loc[cat["halpha_flux"] < 30, "halpha_flux_err"] /= 2
    table = line_coverage(cat, truth, keys=("halpha",), n_bins=4)["halpha"]
    assert table["within_1sigma"].iloc[0] < 0.5 and table["within_1sigma"].iloc[3] > 0.6


def test_pixel_coverage_uses_ivar_and_leaves_out_masked_pixels():
    rng = np.random.default_rng(4)
    true = rng.normal(size=(50, 100))
    sigma = rng.uniform(0.1, 2.0, true.shape)
    denoised = true + sigma * rng.standard_normal(true.shape)
    ivar = 1 / sigma ** 2
    ivar[0] = 0
    mask = np.zeros(true.shape, bool)
    mask[1] = True
    out = pixel_coverage(denoised, ivar, true, mask)
    assert out["count"] == 48 * 100
    assert abs(out["within_1sigma"] - 0.683) < 0.03 and abs(out["within_2sigma"] - 0.954) < 0.02
