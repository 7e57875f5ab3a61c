"""The Cramér-Rao bound on a line's S/N: a true bound for our fitter, and not a loose one."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from survey_denoise.fitting.fast import fit_batch, gaussian_profile
from survey_denoise.grid import GRID
from survey_denoise.lines import wavelength
from survey_denoise.science.bound import snr_bound

SIGMA_KMS = 120.0


def spectra(n: int, halpha: float, noise: float, *, norm: float = 1.0, seed: int = 0) -> xr.Dataset:
    """Flat continuum 1 + Hα of ``halpha`` (flux units x A), white noise; stored as flux / norm."""
    rng = np.random.default_rng(seed)
    line = halpha * gaussian_profile(GRID.edges, wavelength("halpha"), SIGMA_KMS)
    flux = 1.0 + line[None, :] + noise * rng.standard_normal((n, GRID.npix))
    ivar = np.full((n, GRID.npix), 1.0 / noise**2)
    return xr.Dataset(
        {"flux": (("galaxy", "wavelength"), (flux / norm).astype(np.float32)),
         "ivar": (("galaxy", "wavelength"), (ivar * norm**2).astype(np.float32)),
         "mask": (("galaxy", "wavelength"), np.zeros((n, GRID.npix), bool)),
         "norm": ("galaxy", np.full(n, norm))},
        coords={"galaxy": np.arange(n).astype(str), "wavelength": GRID.wavelength})


def test_the_fitters_errors_and_scatter_sit_just_above_the_bound():
    n, halpha = 300, 20.0
    ds = spectra(n, halpha, noise=0.5)
    bound = snr_bound(ds, {"halpha": np.full(n, halpha)}, np.full(n, SIGMA_KMS))
    sigma_crb = halpha / bound["snr_line"].to_numpy()
    np.testing.assert_allclose(sigma_crb, sigma_crb[0])
    fit = fit_batch(ds["flux"].values * ds["norm"].values[:, None],
                    ds["ivar"].values / ds["norm"].values[:, None] ** 2, widths_kms=(SIGMA_KMS,))
    err, got = fit["flux_err"]["halpha"], fit["flux"]["halpha"]
    # The fitter also fits the continuum and [NII]: its error can only be larger, by a little.
    assert np.all(err >= sigma_crb * 0.999)
    assert np.median(err / sigma_crb) < 1.05
    # and the fluxes really scatter that much: the bound is attained, not just a formula
    assert 0.85 < np.std(got - halpha, ddof=1) / sigma_crb[0] < 1.15


def test_the_bound_does_not_depend_on_the_stored_normalisation():
    n = 5
    a = snr_bound(spectra(n, 10.0, 0.3), {"halpha": np.full(n, 10.0)}, np.full(n, SIGMA_KMS))
    b = snr_bound(spectra(n, 10.0, 0.3, norm=37.0), {"halpha": np.full(n, 10.0)}, np.full(n, SIGMA_KMS))
    np.testing.assert_allclose(a["snr_line"], b["snr_line"], rtol=1e-5)


def test_tied_lines_and_a_prior_only_add_information():
    n = 4
    ds = spectra(n, 10.0, 0.3)
    sigma = np.full(n, SIGMA_KMS)
    alone = snr_bound(ds, {"halpha": np.full(n, 10.0)}, sigma, prior_dex=0.3)
    np.testing.assert_allclose(alone["snr_tied"], alone["snr_line"])
    # a prior of 0.3 dex on the line adds (1 / (ln 10 x 0.3))^2 to the squared S/N
    np.testing.assert_allclose(alone["snr_tied_prior"] ** 2 - alone["snr_tied"] ** 2,
                               1 / (np.log(10) * 0.3) ** 2)
    tied = snr_bound(ds, {"halpha": np.full(n, 10.0), "nii_6583": np.full(n, 3.0),
                          "hbeta": np.full(n, 3.5), "oii_3727": np.zeros(n)}, sigma)
    assert (tied["snr_tied"] > tied["snr_line"] * 1.02).all()
    np.testing.assert_allclose(tied["snr_line"], alone["snr_line"])


def test_no_pixels_on_the_line_or_no_true_flux_gives_no_bound():
    ds = spectra(3, 10.0, 0.3)
    near = np.abs(GRID.wavelength - wavelength("halpha")) < 30
    ds["mask"].values[0, near] = True
    ds["ivar"].values[1, near] = 0
    out = snr_bound(ds, {"halpha": np.array([10.0, 10.0, -1.0])}, np.full(3, SIGMA_KMS))
    assert out["snr_line"].isna().all() and out["snr_tied"].isna().all()
    with pytest.raises(KeyError, match="halpha"):
        snr_bound(ds, {"hbeta": np.ones(3)}, np.full(3, SIGMA_KMS))
    with pytest.raises(KeyError, match="unknown line"):
        snr_bound(ds, {"halpha": np.ones(3), "lyman_alpha": np.ones(3)}, np.full(3, SIGMA_KMS))
