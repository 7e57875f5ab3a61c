"""What a de-noised spectrum holds at a line, read without a fitter (science.content)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from survey_denoise import lines
from survey_denoise.fitting.fast import gaussian_profile
from survey_denoise.grid import GRID, Grid
from survey_denoise.schema import make_spectra
from survey_denoise.science.content import held_flux, line_excess, line_pixels

HALPHA = lines.wavelength("halpha")


def _continuum(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lam = GRID.wavelength
    return (1.0 + 0.3 * (lam / 5000.0 - 1.0))[None, :] * rng.uniform(0.5, 2.0, (n, 1))


@pytest.mark.parametrize("sigma_kms", [60.0, 120.0, 170.0])
def test_an_added_line_is_recovered_whatever_the_continuum(sigma_kms):
    reference = _continuum(5)
    flux_added = np.array([0.0, 0.5, 2.0, 10.0, -1.0])  # -1: the de-noiser removed flux
    profile = gaussian_profile(GRID.edges, HALPHA, sigma_kms)
    flux = reference + flux_added[:, None] * profile[None, :]
    excess = line_excess(flux, reference, GRID, HALPHA)
    # Three 276-km/s pixels hold > 95 % of a line this narrow, and nothing is lost elsewhere.
    np.testing.assert_allclose(excess, flux_added * profile[line_pixels(GRID.wavelength, HALPHA)].dot(
        GRID.widths[line_pixels(GRID.wavelength, HALPHA)]), rtol=1e-12)
    np.testing.assert_allclose(excess, flux_added, rtol=0.05, atol=1e-12)


def test_a_neighbouring_line_does_not_leak_into_halpha():
    reference = _continuum(1)
    flux = reference + 5.0 * gaussian_profile(GRID.edges, lines.wavelength("nii_6548"), 120.0)
    assert abs(line_excess(flux, reference, GRID, HALPHA)[0]) < 0.05 * 5.0


def test_masked_pixels_and_lines_off_the_grid_give_nan():
    reference = _continuum(2)
    flux = reference.copy()
    flux[1, line_pixels(GRID.wavelength, HALPHA)[0]] = np.nan
    out = line_excess(flux, reference, GRID, HALPHA)
    assert out[0] == 0.0 and np.isnan(out[1])
    assert np.isnan(line_excess(flux, reference, GRID, 3000.0)).all()
    with pytest.raises(ValueError, match="must both be"):
        line_excess(flux[:, :-1], reference[:, :-1], GRID, HALPHA)


def _spectra(flux, norm, ids=(1, 2, 3), frame="rest"):
    n = flux.shape[0]
    return make_spectra(flux, np.ones_like(flux), GRID.wavelength, np.array(ids), np.zeros(n),
                        frame=frame, norm=norm, attrs={"grid": json.dumps(GRID.to_dict())} if frame == "rest" else None)


def test_held_flux_compares_spectra_in_the_catalogue_unit_whatever_their_norms():
    physical = _continuum(3)
    added = np.array([0.0, 3.0, 1.0])
    den_physical = physical + added[:, None] * gaussian_profile(GRID.edges, HALPHA, 100.0)
    norm_orig, norm_den = np.array([2.0, 5.0, 0.5]), np.array([4.0, 1.0, 3.0])
    original = _spectra(physical / norm_orig[:, None], norm_orig)
    denoised = _spectra(den_physical / norm_den[:, None], norm_den)
    true = np.array([1.0, 0.2, 7.0])
    held = held_flux(denoised, original, {"halpha": true})["halpha"]
    np.testing.assert_allclose(held, true + added, rtol=0.05)

    mask = np.zeros_like(physical, bool)
    mask[2, line_pixels(GRID.wavelength, HALPHA)] = True
    masked = original.assign(mask=(("galaxy", "wavelength"), mask))
    assert np.isnan(held_flux(denoised, masked, {"halpha": true})["halpha"][2])


def test_held_flux_refuses_spectra_it_cannot_compare():
    flux = _continuum(3)
    original = _spectra(flux, np.ones(3))
    with pytest.raises(ValueError, match="same galaxies in the same order"):
        held_flux(_spectra(flux, np.ones(3), ids=(3, 2, 1)), original, {"halpha": np.ones(3)})
    coarse = Grid(GRID.wave_min, GRID.wave_max, 400)
    other = make_spectra(np.ones((3, 400)), np.ones((3, 400)), coarse.wavelength, np.array([1, 2, 3]),
                         np.zeros(3), frame="rest", norm=np.ones(3), attrs={"grid": json.dumps(coarse.to_dict())})
    with pytest.raises(ValueError, match="different grids"):
        held_flux(other, original, {"halpha": np.ones(3)})
    observed = _spectra(flux, np.ones(3), frame="observed")
    with pytest.raises(ValueError, match="not in the rest frame"):
        held_flux(observed, original, {"halpha": np.ones(3)})
