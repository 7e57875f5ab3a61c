"""Pre-processing stages: bad inputs flagged beside good ones, lazy on Zarr stores, physical fluxes kept."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
import xarray as xr
from _data import NGC3073

from survey_denoise.flags import DROP, Flag, describe
from survey_denoise.grid import GRID, Grid
from survey_denoise.io.store import open_store, write_store
from survey_denoise.line_windows import from_bits
from survey_denoise.lines import catalogue_keys
from survey_denoise.lines import wavelength as line_wavelength
from survey_denoise.preprocess import normalise, preprocess, resample, to_rest_frame
from survey_denoise.schema import make_spectra, validate

OBS = 10 ** (np.log10(3600.0) + 1e-4 * np.arange(4000))  # 3600-9054 A, SDSS-like pixels
HALPHA = line_wavelength("halpha")


def gaussian_line(wave_obs, z, flux, sigma_rest=2.0, centre=HALPHA):
    """Observed-frame flux density (per observed A) of a line of total ``flux``."""
    sigma = sigma_rest * (1 + z)
    return flux / (sigma * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((wave_obs - centre * (1 + z)) / sigma) ** 2)


def raw_batch():
    """Ten raw spectra: good ones and every kind of bad input, in one dataset."""
    names = ["good-a", "nan-flux", "inf-ivar", "zero-ivar", "neg-ivar", "no-z", "neg-z",
             "outside", "short", "good-b"]
    n = len(names)
    z = np.array([0.05, 0.05, 0.05, 0.05, 0.05, np.nan, -0.2, 0.05, 0.05, 0.1])
    rng = np.random.default_rng(3)
    zz = np.nan_to_num(z)
    flux = 5.0 + 0.001 * OBS[None, :] + np.stack([gaussian_line(OBS, zi, 300.0) for zi in zz])
    flux += rng.normal(0, 0.5, flux.shape)
    ivar = np.full(flux.shape, 4.0)
    flux[1, 2000] = np.nan
    ivar[2, 100] = np.inf
    ivar[3] = 0.0
    ivar[4] = -1.0
    # 'outside': observed only 3600-3850 A (no grid pixel at z = 0.05); 'short': loses
    # the red 20 % of the grid (Halpha and every line blueward of it still covered).
    ivar[7, OBS > 3850] = 0.0
    ivar[8, OBS > 7000 * 1.05] = 0.0
    return make_spectra(flux, ivar, OBS, np.array(names), z, frame="observed",
                        mask=~(ivar > 0) | ~np.isfinite(ivar),
                        extra={"mass": np.arange(n, dtype=np.float64), "label": np.array(names)},
                        attrs={"survey": "test"})


EXPECTED = {
    "good-a": Flag(0), "nan-flux": Flag.BAD_FLUX, "inf-ivar": Flag.BAD_FLUX,
    "zero-ivar": Flag.NO_IVAR, "neg-ivar": Flag.NO_IVAR, "no-z": Flag.NO_REDSHIFT,
    "neg-z": Flag.NEGATIVE_REDSHIFT, "outside": Flag.LOW_COVERAGE | Flag.PARTIAL_COVERAGE,
    "short": Flag.PARTIAL_COVERAGE, "good-b": Flag(0),
}


@pytest.fixture
def raw_store(tmp_path):
    path = tmp_path / "raw.zarr"
    write_store(raw_batch().chunk({"galaxy": 3}), path, progress=False)
    return path


def test_every_bad_input_is_flagged_and_good_spectra_processed(raw_store):
    ds = open_store(raw_store, frame="observed")
    assert ds["flux"].chunks is not None
    out = preprocess(ds).compute()
    validate(out, frame="rest")
    for name, want in EXPECTED.items():
        got = Flag(int(out["flags"].sel(galaxy=name)))
        assert got == want, f"{name}: {describe(got)} != {describe(want)}"
        row = out.sel(galaxy=name)
        if want & DROP:
            assert float(np.abs(row["flux"]).max()) == 0 and float(row["ivar"].max()) == 0
            assert bool(row["mask"].all())
        else:
            assert np.all(np.isfinite(row["flux"])) and float(row["ivar"].max()) > 0
            np.testing.assert_allclose(float(np.sqrt((row["flux"] ** 2).sum())), 1.0, rtol=1e-5)
    # Rows, order and per-galaxy variables survive.
    assert out["galaxy"].values.tolist() == list(EXPECTED)
    np.testing.assert_array_equal(out["mass"].values, np.arange(10.0))
    assert [str(v) for v in out["label"].values] == list(EXPECTED)
    for name, dtype in (("flux", np.float32), ("ivar", np.float32), ("mask", np.bool_),
                        ("norm", np.float64), ("flags", np.uint32)):
        assert out[name].dtype == dtype


def test_a_nan_pixel_acts_exactly_as_a_masked_pixel(raw_store):
    raw = open_store(raw_store).sel(galaxy=["nan-flux"]).compute()
    out = preprocess(raw)
    assert np.all(np.isfinite(out["flux"].values))
    masked = raw.copy(deep=True)
    masked["flux"].values[0, 2000] = 1e30
    masked["mask"].values[0, 2000] = True
    want = preprocess(masked)
    for name in ("flux", "ivar", "mask", "norm"):
        np.testing.assert_array_equal(out[name].values, want[name].values, err_msg=name)
    assert int(out["flags"].values[0]) == int(want["flags"].values[0]) | Flag.BAD_FLUX


def test_lazy_on_a_store_and_identical_for_any_chunking(raw_store):
    ds = open_store(raw_store)

    def refuse(*args, **kwargs):
        raise AssertionError("the stage computed something")

    with dask.config.set(scheduler=refuse):
        out = preprocess(ds)
    assert out["flux"].chunks[0] == (3, 3, 3, 1)
    eager = preprocess(raw_batch())  # numpy-backed input
    other = preprocess(ds.chunk({"galaxy": 4}))
    a, b, c = out.compute(), eager, other.compute()
    for name in ("flux", "ivar", "mask", "norm", "flags", "coverage"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        np.testing.assert_array_equal(a[name].values, c[name].values, err_msg=name)


@pytest.mark.parametrize("method", ["l2", "sum", "median"])
def test_normalisation_conventions_and_physical_line_flux(method):
    # A line of 300e-17 erg/s/cm2 on a continuum, at two redshifts.
    z = np.array([0.02, 0.15])
    line = np.stack([gaussian_line(OBS, zi, 300.0) for zi in z])
    cont = np.full_like(line, 7.0)
    ds = make_spectra(cont + line, np.full(line.shape, 100.0), OBS, np.array([1, 2]), z, frame="observed")
    bare = make_spectra(cont, np.full(line.shape, 100.0), OBS, np.array([1, 2]), z, frame="observed")
    out, base = preprocess(ds, norm=method), preprocess(bare, norm=method)
    assert out.attrs["norm_convention"] == method
    steps = [s["step"] for s in json.loads(out.attrs["provenance"])]
    assert steps[-2:] == ["to_rest_frame", "normalise"]
    assert json.loads(out.attrs["grid"]) == GRID.to_dict()
    flux = out["flux"].values.astype(np.float64)
    if method == "l2":
        np.testing.assert_allclose(np.sqrt((flux ** 2).sum(axis=1)), 1.0, rtol=1e-6)
    elif method == "sum":
        np.testing.assert_allclose(flux.sum(axis=1), 1.0, rtol=1e-6)
    else:
        np.testing.assert_allclose(np.median(flux, axis=1), 1.0, rtol=1e-6)
    # norm x normalised flux integrated over rest-frame Angstrom = observed line flux.
    physical = flux * out["norm"].values[:, None]
    continuum = base["flux"].values * base["norm"].values[:, None]
    near = np.abs(out["wavelength"].values - HALPHA) < 40
    measured = ((physical - continuum)[:, near] * GRID.widths[near]).sum(axis=1)
    np.testing.assert_allclose(measured, 300.0, rtol=1e-4)
    # And the continuum is 7 per observed A, i.e. 7 (1 + z) per rest A.
    np.testing.assert_allclose(np.median(continuum, axis=1), 7.0 * (1 + z), rtol=1e-5)


def test_min_coverage_is_an_explicit_extra_cut():
    raw = raw_batch().isel(galaxy=[0, 8])  # 'short' covers about 78 % of the grid
    strict = preprocess(raw, min_coverage=0.9)
    loose = preprocess(raw)
    assert loose.attrs["provenance"].count('"min_coverage": null') == 1
    cov = float(loose["coverage"].sel(galaxy="short"))
    assert 0.6 < cov < 0.9
    assert Flag(int(strict["flags"].sel(galaxy="short"))) & Flag.LOW_COVERAGE
    assert int(strict["lines_covered"].sel(galaxy="short")) == 0
    short = loose.sel(galaxy="short")
    assert Flag(int(short["flags"])) == Flag.PARTIAL_COVERAGE
    # Grid pixels beyond the observed range: masked, ivar 0, flux 0 - never extrapolated.
    beyond = loose["wavelength"].values > 7000 * 1.05 / 1.05 + 5
    assert bool(short["mask"].values[beyond].all())
    assert float(short["ivar"].values[beyond].max()) == 0 and float(np.abs(short["flux"].values[beyond]).max()) == 0
    assert not short["mask"].values[loose["wavelength"].values < 6900].any()
    with pytest.raises(ValueError, match="min_coverage"):
        preprocess(raw, min_coverage=1.5)


def _covering(lo_obs, hi_obs, z):
    """One spectrum observed only between ``lo_obs`` and ``hi_obs`` (Angstrom) at redshift ``z``."""
    raw = raw_batch().isel(galaxy=[0]).copy(deep=True)
    raw["z"].values[:] = z
    outside = (OBS < lo_obs) | (OBS > hi_obs)
    raw["ivar"].values[0, outside] = 0.0
    raw["mask"].values[0, outside] = True
    return raw


@pytest.mark.parametrize("z, hi_rest, want", [
    (0.05, 3810.0, ["oii_3727"]),               # the blue end only: [OII] and its continuum
    (0.3, 6900.0, list(catalogue_keys())),      # every line, on 82 % of the grid
    (0.3, 6560.0, [k for k in catalogue_keys() if line_wavelength(k) < 6400]),  # Halpha cut in half
])
def test_a_galaxy_is_kept_when_it_covers_a_line_and_the_lines_are_recorded(z, hi_rest, want):
    out = preprocess(_covering(3600.0, hi_rest * (1 + z), z))
    assert Flag(int(out["flags"].values[0])) == Flag.PARTIAL_COVERAGE
    covered = from_bits(out["lines_covered"].values)[0]
    assert [k for k, c in zip(catalogue_keys(), covered, strict=True) if c] == want
    assert out["lines_covered"].dtype == np.uint32
    assert out["lines_covered"].attrs["flag_meanings"].split() == list(catalogue_keys())
    # Uncovered grid pixels: masked, no information, no flux.
    beyond = out["wavelength"].values > hi_rest + 5
    assert out["mask"].values[0, beyond].all() and out["ivar"].values[0, beyond].max() == 0


def test_a_galaxy_covering_no_line_window_is_dropped():
    # 3700-3712 A rest: grid pixels, but not [OII] with continuum on both sides.
    out = preprocess(_covering(3600.0, 3712.0 * 1.05, 0.05))
    assert Flag(int(out["flags"].values[0])) & Flag.LOW_COVERAGE
    assert 0 < float(out["coverage"].values[0]) < 0.01 and int(out["lines_covered"].values[0]) == 0
    assert out["mask"].values[0].all()


def test_reader_drop_bits_are_respected():
    raw = raw_batch().isel(galaxy=[0, 9]).copy()
    raw["flags"] = raw["flags"].copy(data=np.array([0, int(Flag.NOT_GALAXY | Flag.BAD_NORM)], np.uint32))
    out = preprocess(raw)
    assert float(np.abs(out["flux"].values[1]).max()) == 0 and bool(out["mask"].values[1].all())
    assert Flag(int(out["flags"].values[1])) & Flag.NOT_GALAXY


def test_normalise_refuses_unknown_conventions_and_renormalises():
    out = preprocess(raw_batch().isel(galaxy=[0, 9]), norm="l2")
    again = normalise(out, "median")
    assert again.attrs["norm_convention"] == "median"
    np.testing.assert_allclose(again["flux"].values * again["norm"].values[:, None],
                               out["flux"].values * out["norm"].values[:, None], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(out, "max")


@pytest.mark.parametrize("method", ["l2", "median"])
def test_normalised_flux_is_dimensionless_and_norm_carries_the_unit(method):
    import astropy.units as u

    from survey_denoise.schema import FLUX_UNIT

    out = preprocess(raw_batch().isel(galaxy=[0, 9]), norm=method)
    for name in ("flux", "ivar"):
        assert u.Unit(out[name].attrs["units"]) == u.dimensionless_unscaled, out[name].attrs
    assert out.attrs["flux_unit"] == out["flux"].attrs["units"]
    assert out["norm"].attrs["units"] == FLUX_UNIT
    assert method in out["flux"].attrs["normalisation"]


def test_all_zero_spectrum_gets_bad_norm():
    flux = np.zeros((2, OBS.size))
    flux[1] = 3.0
    ds = make_spectra(flux, np.ones_like(flux), OBS, np.array(["zero", "ok"]), np.array([0.05, 0.05]),
                      frame="observed")
    out = preprocess(ds)
    assert Flag(int(out["flags"].values[0])) == Flag.BAD_NORM
    assert int(out["flags"].values[1]) == 0
    assert bool(out["mask"].values[0].all())


def test_resample_rest_frame_onto_a_coarser_grid_conserves_flux():
    fine = Grid(3600.0, 8000.0, 3000)
    rng = np.random.default_rng(0)
    flux = rng.uniform(1, 2, (3, fine.npix))
    ds = make_spectra(flux, np.ones_like(flux), fine.wavelength, np.arange(3), np.zeros(3), frame="rest",
                      attrs={"grid": json.dumps(fine.to_dict())})
    out = resample(ds, grid=GRID)
    assert not out["mask"].values.any() and not out["flags"].values.any()
    inside = (fine.edges[:-1] >= GRID.edges[0]) & (fine.edges[1:] <= GRID.edges[-1])
    cum = np.concatenate([np.zeros((3, 1)), np.cumsum(flux * fine.widths, axis=1)], axis=1)
    want = [np.interp(GRID.edges[-1], fine.edges, c) - np.interp(GRID.edges[0], fine.edges, c) for c in cum]
    np.testing.assert_allclose((out["flux"].values * GRID.widths).sum(axis=1), want, rtol=1e-6)
    assert inside.any()


def test_wrong_frame_is_refused():
    rest = preprocess(raw_batch().isel(galaxy=[0]))
    with pytest.raises(Exception, match="observed"):
        to_rest_frame(rest)


def test_ngc3073_halpha_lands_on_its_rest_wavelength_and_flux_is_conserved():
    from survey_denoise.io.sdss import read_sdss

    raw = read_sdss(NGC3073)
    out = preprocess(raw, min_coverage=0.5)
    rest = out["wavelength"].values
    flux = out["flux"].values[0]
    window = (rest > HALPHA - 30) & (rest < HALPHA + 30)
    peak = rest[window][np.argmax(flux[window])]
    j = np.searchsorted(GRID.wavelength, HALPHA)
    assert abs(peak - HALPHA) <= GRID.widths[j]
    # A line-free window: physical flux over it is the same before and after.
    z = float(raw["z"].values[0])
    lo, hi = np.searchsorted(GRID.edges, [6050.0, 6250.0])
    physical = flux[lo:hi] * float(out["norm"].values[0])
    after = np.sum(physical * GRID.widths[lo:hi])
    obs = raw["wavelength"].values
    edges = np.sqrt(obs[1:] * obs[:-1])
    edges = np.concatenate([[obs[0] ** 2 / edges[0]], edges, [obs[-1] ** 2 / edges[-1]]])
    f_obs = raw["flux"].values[0].astype(np.float64)
    assert not raw["mask"].values[0][(obs > 6000 * (1 + z)) & (obs < 6300 * (1 + z))].any()
    cum = np.concatenate([[0.0], np.cumsum(f_obs * np.diff(edges))])
    before = np.interp(GRID.edges[hi] * (1 + z), edges, cum) - np.interp(GRID.edges[lo] * (1 + z), edges, cum)
    assert abs(after / before - 1) < 0.01


def test_dataset_results_match_the_schema_on_disk(tmp_path, raw_store):
    out = preprocess(open_store(raw_store))
    path = tmp_path / "rest.zarr"
    write_store(out, path, progress=False)
    back = open_store(path, frame="rest")
    xr.testing.assert_equal(back[["flux", "ivar", "mask", "flags", "norm"]].compute(),
                            out[["flux", "ivar", "mask", "flags", "norm"]].compute())
    assert back.attrs["norm_convention"] == "l2"
