"""Which lines a spectrum covers: the window rule, tied lines and the lines_covered bits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from survey_denoise import lines
from survey_denoise.grid import C_KMS, GRID
from survey_denoise.line_windows import (
    covered_at,
    covered_lines,
    from_bits,
    tied_lines,
    to_bits,
    window,
)

WAVE = np.asarray(GRID.wavelength)
HALPHA = lines.wavelength("halpha")


def _good_below(limit):
    return (WAVE < limit)[None, :]


def test_a_line_needs_its_window_and_continuum_on_both_sides():
    c0, l0, l1, c1 = window(HALPHA)
    assert c0 < l0 < HALPHA < l1 < c1
    assert covered_at(WAVE, np.ones((1, WAVE.size), bool), HALPHA)[0]
    assert covered_at(WAVE, _good_below(c1 + 1), HALPHA)[0]
    assert not covered_at(WAVE, _good_below(l1 + 1), HALPHA)[0]    # no red continuum
    assert not covered_at(WAVE, _good_below(HALPHA + 2), HALPHA)[0]  # half a profile
    assert not covered_at(WAVE, ~_good_below(l0 - 1), HALPHA)[0]   # no blue continuum


def test_an_isolated_bad_pixel_does_not_uncover_a_line():
    good = np.ones((1, WAVE.size), bool)
    good[0, np.argmin(np.abs(WAVE - HALPHA))] = False
    assert covered_at(WAVE, good, HALPHA)[0]


def test_tied_lines_are_covered_together():
    assert tied_lines("oiii_5007") == tied_lines("oiii_4959") == ("oiii_4959", "oiii_5007")
    assert tied_lines("oii_3727") == ("oii_3726", "oii_3729")
    assert tied_lines("halpha") == ("halpha",)
    # [NII]6583 observed, [NII]6548 not: the doublet (one template) is not measured.
    good = ~((WAVE > 6520) & (WAVE < 6560))[None, :]
    got = dict(zip(["nii_6548", "nii_6583", "halpha"],
                   covered_lines(WAVE, good, ["nii_6548", "nii_6583", "halpha"])[0], strict=True))
    assert got == {"nii_6548": False, "nii_6583": False, "halpha": False}


@settings(max_examples=30, deadline=None)
@given(limit=st.floats(3700.0, 7950.0))
def test_a_red_cut_uncovers_lines_from_the_red_end_only(limit):
    covered = covered_lines(WAVE, _good_below(limit))[0]
    keys = lines.catalogue_keys()
    for key, c in zip(keys, covered, strict=True):
        reddest = max(window(lines.wavelength(m))[3] for m in tied_lines(key))
        if reddest < limit - 4:
            assert c, (key, limit)
        bluest_end = min(window(lines.wavelength(m))[2] for m in tied_lines(key))
        if limit < bluest_end:
            assert not c, (key, limit)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=13, max_size=13), min_size=1, max_size=6))
def test_bits_round_trip(rows):
    covered = np.array(rows, bool)
    assert len(lines.catalogue_keys()) == covered.shape[1]
    bits = to_bits(covered)
    assert bits.dtype == np.uint32
    np.testing.assert_array_equal(from_bits(bits), covered)
    sub = ["halpha", "hbeta"]
    idx = [lines.catalogue_keys().index(k) for k in sub]
    np.testing.assert_array_equal(from_bits(bits, sub), covered[:, idx])


def test_unknown_key_is_named():
    with pytest.raises(KeyError, match="unknown line key"):
        covered_lines(WAVE, np.ones((1, WAVE.size), bool), ["halpah"])


def test_in_windows_marks_the_fitting_windows_of_the_given_lines():
    from survey_denoise.line_windows import LINE_HALF_WIDTH_KMS, in_windows

    wave = GRID.wavelength
    ha, n2 = lines.wavelength("halpha"), lines.wavelength("nii_6583")
    inside = in_windows(wave, [ha, n2])
    for centre in (ha, n2):
        dv = (wave / centre - 1.0) * C_KMS
        assert np.all(inside[np.abs(dv) < 0.99 * LINE_HALF_WIDTH_KMS])
    far = np.minimum(np.abs(wave / ha - 1.0), np.abs(wave / n2 - 1.0)) * C_KMS > 1.01 * LINE_HALF_WIDTH_KMS
    assert not inside[far].any() and inside.sum() >= 4
    assert not in_windows(wave, []).any()
