"""The stellar library's age bins: a constant-SFR average over each bin."""

from __future__ import annotations

import numpy as np

from survey_denoise import ssp

AGES = np.concatenate([[0.0], np.geomspace(1e5, 2e10, 60)])


def test_a_linear_function_of_age_averages_to_each_bins_middle():
    edges = ssp.AGE_BIN_EDGES_YR
    out = ssp._bin_ages(AGES, np.stack([AGES, np.ones_like(AGES)]), edges)
    np.testing.assert_allclose(out[0], 0.5 * (edges[1:] + edges[:-1]), rtol=1e-12)
    np.testing.assert_allclose(out[1], 1.0, rtol=1e-12)


def test_bin_averages_match_a_fine_trapezoid_of_the_interpolated_values():
    edges = ssp.AGE_BIN_EDGES_YR
    values = np.sin(np.log1p(AGES / 1e6))[None, :] * np.array([[1.0], [-2.0]])
    out = ssp._bin_ages(AGES, values, edges)
    for b in range(edges.size - 1):
        t = np.linspace(edges[b], edges[b + 1], 20001)
        t = np.unique(np.concatenate([t, AGES[(AGES > edges[b]) & (AGES < edges[b + 1])]]))
        for row in range(2):
            expect = np.trapezoid(np.interp(t, AGES, values[row]), t) / (edges[b + 1] - edges[b])
            assert abs(out[row, b] - expect) < 1e-7 * max(1.0, abs(expect))


def test_library_bins_are_physical():
    lib = ssp.load_library()
    assert lib.spectra.shape == (lib.metallicity.size, ssp.N_AGE_BINS, lib.wavelength.size)
    assert np.isfinite(lib.spectra).all() and (lib.spectra >= 0).all()
    # the living fraction of the formed mass falls with age and stays in (0, 1]
    assert ((lib.live_frac > 0) & (lib.live_frac <= 1)).all()
    assert (np.diff(lib.live_frac, axis=-1) <= 1e-12).all()
