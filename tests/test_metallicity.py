"""Strong-line metallicities: hand-computed values, validity and S/N cuts, errors, BPT."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from survey_denoise.lines import catalogue_keys
from survey_denoise.science.metallicity import (
    N2,
    O3N2,
    OHFlag,
    bpt_star_forming,
    flag_counts,
    metallicity,
    n2_index,
    o3n2_index,
    oh_from_index,
)


def make_catalogue(rows: list[dict], err_frac: float = 0.01, snr: float = 50.0) -> pd.DataFrame:
    """A catalogue in the fitting module's column layout from per-line fluxes."""
    out = []
    for i, r in enumerate(rows):
        row = {"galaxy": f"g{i}", "z": 0.03, "norm": 2.0, "status": r.get("status", 0),
               "chi2": 1.0, "method": "fast"}
        for key in catalogue_keys():
            f = r.get(key, 1.0)
            e = r.get(f"{key}_err", abs(f) * err_frac if f else 0.01)
            row[f"{key}_flux"] = f
            row[f"{key}_flux_err"] = e
            row[f"{key}_flux_norm"] = f / 2.0
            row[f"{key}_flux_norm_err"] = e / 2.0
            row[f"{key}_snr"] = r.get(f"{key}_snr", snr)
        out.append(row)
    return pd.DataFrame(out)


GOOD = {"oiii_5007": 2.0, "hbeta": 1.0, "nii_6583": 0.5, "halpha": 2.0}


def test_o3n2_by_hand():
    # O3N2 = log10((2/1)/(0.5/2)) = log10(8) = 0.903090; 8.73 - 0.32*0.903090 = 8.441011
    x = o3n2_index(2.0, 1.0, 0.5, 2.0)
    assert x == pytest.approx(0.9030900, abs=1e-6)
    assert oh_from_index(x, O3N2) == pytest.approx(8.4410112, abs=1e-6)
    cat = metallicity(make_catalogue([GOOD]))
    assert cat["oh"].iloc[0] == pytest.approx(8.4410112, abs=1e-6)
    assert bool(cat["has_oh"].iloc[0]) and cat["oh_flags"].iloc[0] == 0


def test_n2_by_hand():
    # N2 = log10(0.5/2) = -0.602060; 8.90 + 0.57*(-0.602060) = 8.556826
    x = n2_index(0.5, 2.0)
    assert x == pytest.approx(-0.6020600, abs=1e-6)
    assert oh_from_index(x, N2) == pytest.approx(8.5568258, abs=1e-6)
    cat = metallicity(make_catalogue([GOOD]), calibration="n2")
    assert cat["oh"].iloc[0] == pytest.approx(8.5568258, abs=1e-6)
    # N2's own scatter is PP04's 0.18 dex; a noise-free catalogue's error is that alone
    exact = make_catalogue([GOOD]).assign(**{f"{k}_flux_err": 0.0 for k in ("nii_6583", "halpha")})
    m = metallicity(exact, calibration="n2")
    assert m["oh_err_stat"].iloc[0] == 0.0
    assert m["oh_err"].iloc[0] == pytest.approx(0.18)
    assert m.attrs["calibration_scatter"] == 0.18


def test_physical_and_normalised_units_agree():
    cat = make_catalogue([GOOD, {**GOOD, "oiii_5007": 0.7}])
    a = metallicity(cat, units="physical")
    b = metallicity(cat, units="norm")
    np.testing.assert_allclose(a["oh"], b["oh"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a["oh_err"], b["oh_err"], rtol=1e-12)


def test_halpha_snr_cut_is_strict_and_configurable():
    rows = [{**GOOD, "halpha_snr": 15.0}, {**GOOD, "halpha_snr": 15.01}, {**GOOD, "halpha_snr": 9.0}]
    cat = make_catalogue(rows)
    m = metallicity(cat)
    assert m["has_oh"].tolist() == [False, True, False]
    assert m["oh_flags"].iloc[0] == OHFlag.LOW_HALPHA_SNR
    assert np.isnan(m["oh"].iloc[0]) and np.isnan(m["oh_err"].iloc[0]) and np.isnan(m["oh_err_stat"].iloc[0])
    assert metallicity(cat, min_halpha_snr=5.0)["has_oh"].tolist() == [True, True, True]


def test_o3n2_validity_range():
    # O3N2 = log10(oiii/hbeta) - log10(0.25): choose oiii for O3N2 = -1.05, -0.95, 1.85, 1.95
    rows = [{**GOOD, "oiii_5007": 10 ** (x + np.log10(0.25))} for x in (-1.05, -0.95, 1.85, 1.95)]
    m = metallicity(make_catalogue(rows))
    assert m["has_oh"].tolist() == [False, True, True, False]
    assert (m["oh_flags"].iloc[[0, 3]] == int(OHFlag.OUT_OF_RANGE)).all()
    np.testing.assert_allclose(m["index"], [-1.05, -0.95, 1.85, 1.95], atol=1e-12)


def test_n2_validity_range():
    rows = [{**GOOD, "nii_6583": 2.0 * 10 ** x} for x in (-2.6, -2.4, -0.35, -0.25)]
    m = metallicity(make_catalogue(rows), calibration="n2")
    assert m["has_oh"].tolist() == [False, True, True, False]


def test_missing_nonpositive_failed_and_line_snr_flags():
    rows = [
        {**GOOD, "nii_6583": np.nan},
        {**GOOD, "oiii_5007": -0.1},
        {**GOOD, "hbeta": 0.0},
        {**GOOD, "status": 3},
        {**GOOD, "oiii_5007_snr": 2.0},
    ]
    m = metallicity(make_catalogue(rows), min_line_snr=3.0)
    fl = m["oh_flags"].to_numpy()
    assert fl[0] & OHFlag.MISSING_LINE
    assert fl[1] & OHFlag.NONPOSITIVE_FLUX
    assert fl[2] & OHFlag.NONPOSITIVE_FLUX
    assert fl[3] == OHFlag.FIT_FAILED
    assert fl[4] == OHFlag.LOW_LINE_SNR
    assert not m["has_oh"].any()
    counts = flag_counts(fl)
    assert counts["measured"] == 0 and counts["nonpositive_flux"] == 2
    # without the line S/N floor the last galaxy is measured
    assert metallicity(make_catalogue(rows))["has_oh"].tolist() == [False] * 4 + [True]


def test_missing_columns_mean_missing_lines():
    cat = make_catalogue([GOOD]).drop(columns=["oiii_5007_flux", "oiii_5007_flux_err"])
    m = metallicity(cat)
    assert m["oh_flags"].iloc[0] & OHFlag.MISSING_LINE
    # N2 does not need [OIII]
    assert metallicity(cat, calibration="n2")["has_oh"].iloc[0]


def _oh(fl):
    return 8.73 - 0.32 * (np.log10(fl[0] / fl[1]) - np.log10(fl[2] / fl[3]))


@settings(max_examples=50, deadline=None)
@given(
    fluxes=st.lists(st.floats(0.1, 100.0), min_size=4, max_size=4),
    fracs=st.lists(st.floats(0.001, 0.2), min_size=4, max_size=4),
)
def test_error_propagation_matches_numerical_derivative(fluxes, fracs):
    f = np.array(fluxes)
    e = f * np.array(fracs)
    grad = np.empty(4)
    for i in range(4):
        h = 1e-6 * f[i]
        up, dn = f.copy(), f.copy()
        up[i] += h
        dn[i] -= h
        grad[i] = (_oh(up) - _oh(dn)) / (2 * h)
    expected = np.sqrt(np.sum((grad * e) ** 2))
    row = dict(zip(["oiii_5007", "hbeta", "nii_6583", "halpha"], f, strict=True))
    row.update({f"{k}_err": v for k, v in zip(["oiii_5007", "hbeta", "nii_6583", "halpha"], e, strict=True)})
    m = metallicity(make_catalogue([row]), min_halpha_snr=0.0)
    index = m["index"].iloc[0]
    if -1 < index < 1.9:
        assert m["oh_err_stat"].iloc[0] == pytest.approx(expected, rel=1e-5)
        # the calibration's own scatter (PP04: 0.14 dex for O3N2) in quadrature
        assert m["oh_err"].iloc[0] == pytest.approx(np.hypot(expected, 0.14), rel=1e-5)
        assert m["oh"].iloc[0] == pytest.approx(_oh(f), abs=1e-10)
    else:
        assert not m["has_oh"].iloc[0]


@settings(max_examples=50, deadline=None)
@given(scale=st.floats(1e-3, 1e3), oiii=st.floats(0.2, 20.0))
def test_ratio_is_scale_free_and_monotonic(scale, oiii):
    base = {**GOOD, "oiii_5007": oiii}
    scaled = {k: v * scale for k, v in base.items()}
    brighter = {**base, "oiii_5007": oiii * 1.1}
    m = metallicity(make_catalogue([base, scaled, brighter]), min_halpha_snr=0.0)
    assert m["index"].iloc[1] == pytest.approx(m["index"].iloc[0], abs=1e-9)
    # more [OIII] relative to Hbeta -> higher O3N2 -> lower metallicity (where valid)
    assert m["index"].iloc[2] > m["index"].iloc[0]


def test_bpt_curves():
    # Kauffmann 2003 at log N2 = -0.5: 0.61/(-0.55) + 1.3 = 0.190909
    assert bpt_star_forming(-0.5, 0.18, "kauffmann03")
    assert not bpt_star_forming(-0.5, 0.20, "kauffmann03")
    # Kewley 2001 at log N2 = -0.5: 0.61/(-0.97) + 1.19 = 0.561134
    assert bpt_star_forming(-0.5, 0.55, "kewley01")
    assert not bpt_star_forming(-0.5, 0.57, "kewley01")
    # right of the asymptotes nothing is star-forming
    assert not bpt_star_forming(0.1, -2.0, "kauffmann03")
    assert bpt_star_forming(0.1, -2.0, "kewley01")
    assert not bpt_star_forming(np.nan, 0.0)
    with pytest.raises(ValueError, match="unknown BPT curve"):
        bpt_star_forming(0.0, 0.0, "baldwin")


def test_bpt_selection_in_catalogue():
    sf = GOOD  # log N2 = -0.602, log O3 = 0.301: below Kauffmann (0.61/-0.652+1.3 = 0.364)
    agn = {"oiii_5007": 10.0, "hbeta": 1.0, "nii_6583": 2.0, "halpha": 2.0}  # log N2 = 0
    m = metallicity(make_catalogue([sf, agn]), calibration="n2", bpt="kauffmann03")
    assert m["has_oh"].tolist() == [True, False]
    assert m["oh_flags"].iloc[1] & OHFlag.NOT_STAR_FORMING


def test_bad_options():
    cat = make_catalogue([GOOD])
    with pytest.raises(ValueError, match="unknown calibration"):
        metallicity(cat, calibration="r23")
    with pytest.raises(ValueError, match="units"):
        metallicity(cat, units="jansky")
