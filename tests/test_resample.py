"""The flux-conserving rebinning kernel: exact against a brute-force reference, and its properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from survey_denoise.grid import GRID
from survey_denoise.resample import edges_from_centres, rebin, rebin_samples, shift_rebin


def brute_force(flux, ivar, mask, edges_in, edges_out, min_fraction):
    """Overlap matrix written out pixel by pixel, one row at a time."""
    n_gal, n_out = flux.shape[0], edges_out.size - 1
    out = {k: np.zeros((n_gal, n_out)) for k in ("flux", "ivar", "coverage")}
    out["mask"] = np.ones((n_gal, n_out), bool)
    for g in range(n_gal):
        e = edges_in[g] if edges_in.ndim == 2 else edges_in
        good = ~mask[g] & (ivar[g] > 0) & np.isfinite(flux[g]) & np.isfinite(ivar[g])
        for j in range(n_out):
            w = np.clip(np.minimum(e[1:], edges_out[j + 1]) - np.maximum(e[:-1], edges_out[j]), 0, None)
            w = np.where(good, w, 0.0)
            out["coverage"][g, j] = min(w.sum() / (edges_out[j + 1] - edges_out[j]), 1.0)
            if w.sum() > 0 and out["coverage"][g, j] >= min_fraction:
                f = np.where(good, flux[g], 0.0)
                var = np.where(good, 1.0 / np.where(good, ivar[g], 1.0), 0.0)
                out["flux"][g, j] = (w * f).sum() / w.sum()
                out["ivar"][g, j] = w.sum() ** 2 / (w * w * var).sum()
                out["mask"][g, j] = False
    return out


@st.composite
def batches(draw, bad_values=False):
    n_gal = draw(st.integers(1, 4))
    n_in = draw(st.integers(1, 25))
    n_out = draw(st.integers(1, 25))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    widths = rng.uniform(0.05, 2.0, size=(n_gal, n_in))
    start = rng.uniform(0.0, 3.0, size=(n_gal, 1))
    edges_in = np.hstack([start, start + np.cumsum(widths, axis=1)])
    if draw(st.booleans()):
        edges_in = edges_in[0]  # shared by all rows
    span = float(np.max(edges_in)) + 3.0
    edges_out = np.sort(rng.choice(np.linspace(0.0, span, 4 * (n_out + 1)), n_out + 1, replace=False))
    flux = rng.normal(0, 10, size=(n_gal, n_in))
    ivar = rng.uniform(0.01, 5.0, size=(n_gal, n_in))
    mask = rng.random((n_gal, n_in)) < draw(st.sampled_from([0.0, 0.2, 0.6]))
    if bad_values:
        ivar[rng.random((n_gal, n_in)) < 0.1] = 0.0
    min_fraction = draw(st.sampled_from([1e-6, 0.5, 1.0]))
    return flux, ivar, mask, edges_in, edges_out, min_fraction


@settings(max_examples=150, deadline=None)
@given(batches(bad_values=True))
def test_matches_brute_force(batch):
    flux, ivar, mask, edges_in, edges_out, min_fraction = batch
    got = rebin(flux, ivar, mask, edges_in, edges_out, min_fraction=min_fraction)
    want = brute_force(flux, ivar, mask, edges_in, edges_out, min_fraction)
    np.testing.assert_allclose(got.coverage, want["coverage"], rtol=1e-9, atol=1e-9)
    # A pixel exactly at the coverage threshold may fall either side of it by rounding.
    at_threshold = np.isclose(want["coverage"], min_fraction, rtol=1e-9, atol=1e-12)
    same = ~at_threshold
    np.testing.assert_array_equal(got.mask[same], want["mask"][same])
    keep = same & ~want["mask"]
    np.testing.assert_allclose(got.flux[keep], want["flux"][keep], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.ivar[keep], want["ivar"][keep], rtol=1e-9)


@settings(max_examples=100, deadline=None)
@given(batches(bad_values=True))
def test_ivar_never_negative_and_everything_finite(batch):
    flux, ivar, mask, edges_in, edges_out, min_fraction = batch
    got = rebin(flux, ivar, mask, edges_in, edges_out, min_fraction=min_fraction)
    assert np.all(got.ivar >= 0)
    assert np.all(np.isfinite(got.flux)) and np.all(np.isfinite(got.ivar))
    assert np.all((got.coverage >= 0) & (got.coverage <= 1))
    # A masked output carries nothing; an unmasked one carries information.
    assert np.all(got.ivar[got.mask] == 0) and np.all(got.flux[got.mask] == 0)
    assert np.all(got.ivar[~got.mask] > 0)


@settings(max_examples=100, deadline=None)
@given(batches(), st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30]))
def test_masked_input_never_leaks(batch, poison):
    flux, ivar, mask, edges_in, edges_out, min_fraction = batch
    clean = rebin(flux, ivar, mask, edges_in, edges_out, min_fraction=min_fraction)
    flux2, ivar2 = flux.copy(), ivar.copy()
    flux2[mask] = poison
    ivar2[mask] = np.abs(poison) if np.isfinite(poison) else poison
    dirty = rebin(flux2, ivar2, mask, edges_in, edges_out, min_fraction=min_fraction)
    for name in ("flux", "ivar", "mask", "coverage"):
        np.testing.assert_array_equal(getattr(dirty, name), getattr(clean, name), err_msg=name)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 40), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_flux_conserved_over_fully_covered_range(n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    edges_in = np.concatenate([[0.0], np.cumsum(rng.uniform(0.1, 3.0, n_in))])
    flux = rng.lognormal(0, 2, size=(1, n_in)) * rng.choice([-1, 1], size=(1, n_in))
    ivar = rng.uniform(0.1, 10, size=(1, n_in))
    # Output edges anywhere inside the data: every output pixel fully covered.
    lo, hi = np.sort(rng.uniform(edges_in[0], edges_in[-1], 2))
    edges_out = np.sort(np.concatenate([[lo, hi], rng.uniform(lo, hi, n_out - 1)]))
    edges_out = edges_out[np.concatenate([[True], np.diff(edges_out) > 1e-9])]
    got = rebin(flux, ivar, None, edges_in, edges_out, min_fraction=1.0)
    assert not got.mask.any()
    np.testing.assert_allclose(got.coverage, 1.0, rtol=1e-12)
    cumulative = np.concatenate([[0.0], np.cumsum(flux[0] * np.diff(edges_in))])
    want = np.interp(edges_out[-1], edges_in, cumulative) - np.interp(edges_out[0], edges_in, cumulative)
    scale = np.sum(np.abs(flux) * np.diff(edges_in))
    assert abs(np.sum(got.flux * np.diff(edges_out)) - want) <= 1e-10 * scale


@settings(max_examples=50, deadline=None)
@given(batches())
def test_scale_equals_scaled_edges(batch):
    flux, ivar, mask, edges_in, edges_out, min_fraction = batch
    edges_in = np.atleast_2d(edges_in)[0]
    scale = np.random.default_rng(0).uniform(0.5, 2.0, flux.shape[0])
    a = rebin(flux, ivar, mask, edges_in, edges_out, scale=scale, min_fraction=min_fraction)
    b = rebin(flux, ivar, mask, edges_in[None, :] * scale[:, None], edges_out, min_fraction=min_fraction)
    np.testing.assert_allclose(a.coverage, b.coverage, atol=1e-9)
    agree = ~np.isclose(b.coverage, min_fraction, atol=1e-9)
    np.testing.assert_array_equal(a.mask[agree], b.mask[agree])
    keep = agree & ~b.mask
    np.testing.assert_allclose(a.flux[keep], b.flux[keep], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.ivar[keep], b.ivar[keep], rtol=1e-9)


def test_coverage_flags_outside_the_data_and_masked_runs():
    edges_in = np.arange(11.0)  # data covers 0-10
    flux = np.ones((1, 10))
    ivar = np.full((1, 10), 4.0)
    mask = np.zeros((1, 10), bool)
    mask[0, 4:7] = True  # 4-7 masked
    edges_out = np.array([-3.0, -1.0, 0.0, 2.0, 3.5, 5.0, 7.0, 9.0, 10.5, 12.0])
    got = rebin(flux, ivar, mask, edges_in, edges_out)
    np.testing.assert_allclose(got.coverage[0], [0, 0, 1, 1, 1 / 3, 0, 1, 2 / 3, 0])
    np.testing.assert_array_equal(got.mask[0], [True, True, False, False, True, True, False, False, True])
    assert np.all(got.ivar[got.mask] == 0)
    # Two whole pixels of variance 1/4 averaged: variance 1/8.
    np.testing.assert_allclose(got.ivar[0, 2], 8.0)
    # 1.5 px: weights 1, 0.5 -> var = (1 + 0.25) / 4 / 1.5^2.
    np.testing.assert_allclose(got.ivar[0, 3], 1.5**2 * 4 / 1.25)


def test_output_finer_than_input_keeps_the_density():
    got = rebin(np.array([[2.0, 6.0]]), np.array([[1.0, 1.0]]), None, np.array([0.0, 1.0, 2.0]),
                np.linspace(0, 2, 9))
    np.testing.assert_allclose(got.flux[0], [2, 2, 2, 2, 6, 6, 6, 6])
    # A quarter of one pixel: the whole pixel's variance (no information is made up).
    np.testing.assert_allclose(got.ivar[0], 1.0)


def test_edges_from_centres_reproduce_the_grid_edges():
    np.testing.assert_allclose(edges_from_centres(GRID.wavelength), GRID.edges, rtol=1e-12)
    with pytest.raises(ValueError, match="strictly increasing"):
        edges_from_centres(np.array([3.0, 2.0, 1.0]))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="ivar"):
        rebin(np.ones((2, 3)), np.ones((2, 4)), None, np.arange(4.0), np.arange(3.0))
    with pytest.raises(ValueError, match="edges_in"):
        rebin(np.ones((2, 3)), np.ones((2, 3)), None, np.arange(5.0), np.arange(3.0))
    with pytest.raises(ValueError, match="scale"):
        rebin(np.ones((2, 3)), np.ones((2, 3)), None, np.arange(4.0), np.arange(3.0),
              scale=np.array([1.0, np.nan]))


def test_rebin_samples_is_exact_for_piecewise_linear_input():
    wave = np.array([1.0, 2.0, 4.0, 5.0])
    flux = np.array([[0.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    got = rebin_samples(wave, flux, np.array([1.0, 2.0, 3.0, 5.0]))
    # Means of the linear pieces over [1, 2], [2, 3] and [3, 5].
    np.testing.assert_allclose(got, [[1.0, 2.0, 1.5], [1.0, 1.0, 1.0]])


def test_shift_rebin_integrates_a_shifted_cumulative():
    widths = np.ones(6)
    flux = np.array([[1.0, 3.0, 5.0, 7.0, 9.0, 11.0]])
    cum = np.concatenate([[[0.0]], np.cumsum(flux * widths, axis=1)], axis=1)
    got = shift_rebin(cum, np.array([0.5]), 4)
    # Each output pixel straddles two input pixels half and half.
    np.testing.assert_allclose(got, [[2.0, 4.0, 6.0, 8.0]])
    with pytest.raises(ValueError, match="outside the working grid"):
        shift_rebin(cum, np.array([2.5]), 4)
