"""pPXF on the two real SDSS spectra inside pPXF: native resolution vs the 825-pixel grid (fluxes and line widths)."""

from __future__ import annotations

import numpy as np
import pytest
from _data import SDSS_DIR as SPECTRA

from survey_denoise import lines
from survey_denoise.fitting import fit_lines
from survey_denoise.fitting.ppxf import fit_native
from survey_denoise.io.sdss import read_sdss
from survey_denoise.preprocess import preprocess


@pytest.fixture(scope="module", params=["NGC3073", "NGC3522"])
def fits(request):
    """One spectrum fitted by pPXF at native resolution and on the grid (and there by the fast fitter)."""
    raw = read_sdss(SPECTRA / f"{request.param}_SDSS_DR18.fits")
    g = raw.isel(galaxy=0)
    native = fit_native(raw["wavelength"].values, g["flux"].values, g["ivar"].values,
                        ~g["mask"].values, float(g["z"]))
    spectra = preprocess(raw)
    grid = fit_lines(spectra, method="ppxf").compute().isel(galaxy=0)
    fast = fit_lines(spectra, method="fast").compute().isel(galaxy=0)
    return request.param, native, grid, raw, fast


@pytest.mark.parametrize("method", ["fast", "ppxf"])
def test_grid_line_widths_agree_with_the_native_fit(fits, method, request):
    # Pre-processing averages the native pixels onto the grid, which convolves each line with a
    # native pixel (a boxcar of 69 km/s): line_sigma on the grid holds it, the native fit not.
    from survey_denoise.spectrographs import native_pixel_kms

    name, native, ppxf, raw, fast = fits
    if (name, method) == ("NGC3073", "ppxf"):
        request.applymarker(pytest.mark.xfail(
            reason="pPXF on the grid reads NGC3073's lines 14 % wider than at native resolution (3.1 sigma)",
            strict=True))
    pixel = native_pixel_kms(raw["wavelength"].values)
    cat = {"ppxf": ppxf, "fast": fast}[method]
    assert native.status == 0 and np.isfinite(native.sigma_err) and native.sigma_err > 0
    on_grid = np.sqrt(float(cat["line_sigma"]) ** 2 - pixel**2 / 12)
    err = float(cat["line_sigma_err"])
    assert err >= float(cat["line_sigma_err_stat"]) > 0
    assert abs(on_grid - native.sigma) < 3 * np.hypot(err, native.sigma_err), (name, on_grid, native.sigma, err)


def test_native_and_grid_fluxes_agree_within_errors(fits):
    name, native, grid, *_ = fits
    assert native.status == 0 and int(grid["status"]) == 0
    compared = 0
    for key in lines.catalogue_keys():
        a, ea = native.flux[key], native.flux_err[key]
        b, eb = float(grid[f"{key}_flux"]), float(grid[f"{key}_flux_err"])
        if not (np.isfinite(a) and np.isfinite(b)):
            continue   # outside one of the fitted ranges ([OII] at z = 0.004)
        compared += 1
        assert abs(a - b) < 3 * np.hypot(ea, eb), (name, key, a, ea, b, eb)
    assert compared >= 10


def test_balmer_decrement_is_physical(fits):
    name, native, grid, *_ = fits
    for ha, ea, hb, eb in [(native.flux["halpha"], native.flux_err["halpha"],
                            native.flux["hbeta"], native.flux_err["hbeta"]),
                           (float(grid["halpha_flux"]), float(grid["halpha_flux_err"]),
                            float(grid["hbeta_flux"]), float(grid["hbeta_flux_err"]))]:
        assert ha / ea > 5 and hb / eb > 5, name
        ratio = ha / hb
        err = ratio * np.hypot(ea / ha, eb / hb)
        assert ratio + 2 * err >= 2.8, (name, ratio, err)
