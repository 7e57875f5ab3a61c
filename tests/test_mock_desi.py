"""DESI-like mock observations: schema, noise against the DESI curve, reproducibility, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from survey_denoise.flags import DROP
from survey_denoise.grid import GRID
from survey_denoise.io.store import open_store, write_store
from survey_denoise.mock import MockConfig, generate, synthesize
from survey_denoise.mock.instrument import DESI, DESI_PIXEL, INSTRUMENTS, SDSS
from survey_denoise.noise import DesiNoise
from survey_denoise.preprocess import preprocess
from survey_denoise.resample import edges_from_centres
from survey_denoise.schema import validate

N_NOISE = 400
"""Spectra for the noise-level checks: ~0.1 % statistical error on a window's variance."""


def _curve():
    table = DesiNoise().table
    wave = np.asarray(table["wavelength"], dtype=np.float64)
    return wave, np.asarray(table["sigma_median"], dtype=np.float64)


def _windows(wave, lo=3700.0, hi=9700.0, width=200.0):
    for start in np.arange(lo, hi, width):
        yield start, (wave >= start) & (wave < start + width)


def test_registered_and_differs_only_in_noise():
    assert INSTRUMENTS["desi"] is DESI
    w = DESI.wavelength
    assert w[0] == pytest.approx(3600.0) and 9800 < w[-1] <= 9824.0
    # log pixels equal to DESI's 0.8 A pixels at ~6200 A
    width = np.diff(edges_from_centres(w))
    assert width[np.argmin(np.abs(w - 6200))] == pytest.approx(DESI_PIXEL, rel=0.01)
    assert DESI.sigma_inst_kms < SDSS.sigma_inst_kms
    assert np.all(DESI.exposure(np.linspace(0, 1, 5)) == 1.0)


def test_background_noise_matches_the_curve_on_a_flat_spectrum():
    """Zero flux: the per-pixel variance, scaled to a 0.8 A pixel, is the curve's."""
    ids = np.arange(N_NOISE)
    flat = np.zeros((N_NOISE, DESI.npix))
    noisy, ivar = DESI.observe(flat, ids, seed=3, exposure_u=np.zeros(N_NOISE))
    wave = DESI.wavelength
    width = wave * DESI.dlnlam
    measured = noisy.var(axis=0) * width / DESI_PIXEL
    predicted = (1.0 / ivar[0]) * width / DESI_PIXEL
    cwave, csigma = _curve()
    for start, sel in _windows(wave, width=600.0):
        csel = (cwave >= start) & (cwave < start + 600)
        expected = np.mean(csigma[csel] ** 2)
        # width-weighted: the integral of the variance density over the window
        # (wide windows: a sky-line spike cut by a window edge moves a narrow one)
        assert np.average(measured[sel], weights=width[sel]) == pytest.approx(expected, rel=0.03), start
        assert np.average(predicted[sel], weights=width[sel]) == pytest.approx(expected, rel=0.02), start


def test_object_shot_noise_adds_to_the_background():
    level = 20.0
    ids = np.arange(N_NOISE)
    bg = DESI.sigma(np.zeros((1, DESI.npix)), np.ones(1))[0] ** 2
    flat = np.full((N_NOISE, DESI.npix), level)
    noisy, _ = DESI.observe(flat, ids, seed=4, exposure_u=np.zeros(N_NOISE))
    wave = DESI.wavelength
    extra = noisy.var(axis=0) - bg
    slope = np.interp(wave, DESI.shot_knots, DESI.shot_values)
    expected = slope * level * DESI_PIXEL / (wave * DESI.dlnlam)
    for start, sel in _windows(wave, 5200.0, 9200.0, 400.0):
        assert np.mean(extra[sel]) == pytest.approx(np.mean(expected[sel]), rel=0.08), start
    # the shot term matters for a bright galaxy: variance at least doubles at 6800 A
    at = np.argmin(np.abs(wave - 6800))
    assert noisy[:, at - 20:at + 20].var() > 2 * bg[at - 20:at + 20].mean()


def test_rest_frame_noise_is_the_curve_averaged_over_grid_pixels():
    """The rest-frame path's sigma equals DesiNoise's own rebinning of the curve (zero flux)."""
    z = np.array([0.03, 0.1, 0.2])
    sig = DESI.sigma_rest(np.zeros((z.size, GRID.npix)), np.ones(z.size), GRID, z)
    ref = DesiNoise().sigma_rest(np.asarray(GRID.edges), z)
    assert np.all(np.isfinite(sig))
    ok = np.isfinite(ref)
    ratio = np.median(sig[ok] / ref[ok])
    # DesiNoise treats a partly covered 0.8 A pixel as fully correlated,
    # the instrument as a density: a few per cent apart, never more.
    assert 1.0 <= ratio < 1.1
    dev = np.abs(sig[ok] / ref[ok] - 1)
    # (the largest: grid pixels only partly inside the curve's 3600-9824 A)
    assert np.quantile(dev, 0.99) < 0.1 and dev.max() < 0.25


def test_generate_schema_store_round_trip_and_reproducibility(tmp_path):
    ids = np.arange(12)
    cfg = MockConfig(seed=5, survey="desi")
    ds = generate(ids, cfg, chunk_size=5, design="natural")
    validate(ds, frame="observed")
    assert ds.sizes["wavelength"] == DESI.npix
    assert ds.attrs["survey"] == "desi"
    assert "true_halpha_flux" in ds
    write_store(ds, tmp_path / "desi.zarr")
    back = open_store(tmp_path / "desi.zarr", frame="observed")
    again = generate(ids, cfg, chunk_size=7).compute()
    np.testing.assert_array_equal(back["flux"].values, again["flux"].values)
    np.testing.assert_array_equal(back["ivar"].values, again["ivar"].values)
    np.testing.assert_array_equal(back["true_oiii_5007_flux"].values, again["true_oiii_5007_flux"].values)
    other = synthesize(ids[:3], MockConfig(seed=6, survey="desi"))[0]
    assert not np.array_equal(other, again["flux"].values[:3])


def test_noise_pulls_are_unit_normal():
    ids = np.arange(40)
    noisy, ivar, _, _ = synthesize(ids, MockConfig(seed=2, survey="desi"))
    clean, ivar0, _, _ = synthesize(ids, MockConfig(seed=2, survey="desi", noise=False))
    np.testing.assert_array_equal(ivar, ivar0)
    pull = (noisy - clean.astype(np.float64)) * np.sqrt(ivar)
    assert abs(pull.mean()) < 0.01
    assert pull.std() == pytest.approx(1.0, abs=0.01)


def test_wide_redshift_range_is_covered():
    """z up to 0.25 moves 3600 A below the default working range; the generator widens it."""
    flux, ivar, z, _ = synthesize(np.arange(4), MockConfig(seed=1, survey="desi", z_range=(0.005, 0.25)))
    assert np.all(np.isfinite(flux)) and np.all(ivar > 0)


def test_preprocess_and_rest_frame_mock_agree():
    """Observed DESI mock -> preprocess: full coverage, nothing dropped, ivar as the rest-frame path's."""
    ids = np.arange(30)
    raw = generate(ids, MockConfig(seed=7, survey="desi", noise=False), chunk_size=15)
    rest = preprocess(raw, norm="l2").compute()
    validate(rest, frame="rest")
    assert not np.any(rest["flags"].values & np.uint32(DROP))
    assert not rest["mask"].values.any()
    direct = synthesize(ids, MockConfig(seed=7, survey="desi", rest=True, noise=False))
    physical = rest["flux"].values * rest["norm"].values[:, None]
    # same spectra through two routes: the continuum level agrees
    ratio = np.median(physical / direct[0], axis=1)
    np.testing.assert_allclose(ratio, 1.0, atol=0.02)
    # and so does the noise per grid pixel (ivar in physical units)
    ivar_phys = rest["ivar"].values / rest["norm"].values[:, None] ** 2
    ivar_ratio = np.median(ivar_phys / direct[1], axis=1)
    np.testing.assert_allclose(ivar_ratio, 1.0, atol=0.1)


def test_cli_mock_desi(tmp_path):
    from survey_denoise.cli import main

    out = tmp_path / "d.zarr"
    main(["mock", "--n", "4", "--survey", "desi", "--seed", "2", "--out", str(out),
          "--chunk-size", "2", "--workers", "1"])
    ds = open_store(out, frame="observed")
    assert ds.sizes == {"galaxy": 4, "wavelength": DESI.npix}
    assert ds.attrs["survey"] == "desi"


def test_pipeline_config_mock_input_desi():
    """``input.mock.survey: desi`` in a pipeline config reaches the DESI instrument."""
    from survey_denoise.pipeline.config import MockInput
    from survey_denoise.pipeline.stages import mock

    ds = mock(MockInput(n=3, design="natural", survey="desi", seed=4), chunk=2)
    validate(ds, frame="observed")
    assert ds.sizes["wavelength"] == DESI.npix and ds.attrs["survey"] == "desi"
