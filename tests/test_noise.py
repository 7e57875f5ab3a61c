"""Noise models and degrade: statistics, units, the DESI curve against real coadds, reproducibility."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _cli import run
from _data import DESI_COADDS
from astropy.cosmology import Planck18
from astropy.table import Table

from survey_denoise.flags import Flag
from survey_denoise.grid import GRID
from survey_denoise.io.desi import read_desi
from survey_denoise.io.store import open_store, write_store
from survey_denoise.lines import wavelength as line_wavelength
from survey_denoise.noise import (
    DESI_CURVE,
    DesiNoise,
    UniformNoise,
    build_desi_curve,
    degrade,
    dimming_factor,
)
from survey_denoise.noise.redraw import NoiseRecord
from survey_denoise.preprocess import preprocess
from survey_denoise.rng import standard_normal
from survey_denoise.schema import make_spectra

COADDS = sorted(DESI_COADDS)
OBS = 10 ** (np.log10(3600.0) + 1e-4 * np.arange(4000))
HALPHA = line_wavelength("halpha")


def clean_rest(n=24, z_lo=0.02, z_hi=0.05, line_flux=500.0, norm="l2"):
    """Pre-processed, practically noise-free spectra: continuum + an H-alpha line."""
    rng = np.random.default_rng(5)
    z = rng.uniform(z_lo, z_hi, n)
    sigma = 2.0 * (1 + z[:, None])
    centre = HALPHA * (1 + z[:, None])
    line = line_flux / (sigma * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((OBS - centre) / sigma) ** 2)
    cont = rng.uniform(5, 20, (n, 1)) * (OBS / 5000.0) ** -1
    raw = make_spectra(cont + line, np.full((n, OBS.size), 1e6), OBS, np.arange(100, 100 + n), z,
                       frame="observed", extra={"mass": np.linspace(9, 11, n)})
    return preprocess(raw, norm=norm, min_coverage=0.5).compute()


def test_uniform_noise_statistics_and_ivar():
    clean = clean_rest(n=40)
    noisy = degrade(clean, UniformNoise(0.04, renormalise=False), seed=7).compute()
    resid = noisy["flux"].values - clean["flux"].values
    good = ~clean["mask"].values
    assert abs(resid[good].std() / 0.04 - 1) < 0.02 and abs(resid[good].mean()) < 0.002
    np.testing.assert_allclose(noisy["ivar"].values[good], 1 / 0.04**2, rtol=1e-6)
    np.testing.assert_array_equal(noisy["norm"].values, clean["norm"].values)
    # The draw is exactly the galaxy's own stream.
    eps = standard_normal(7, "noise-uniform", clean["galaxy"].values, GRID.npix)
    np.testing.assert_allclose(resid[good], 0.04 * eps[good], atol=1e-6)


def test_desi_noise_makes_a_desi_store_and_uniform_noise_keeps_the_survey():
    clean = clean_rest(n=4)
    clean.attrs["survey"] = "sdss"
    desi = degrade(clean, DesiNoise(), seed=1)
    assert desi.attrs["survey"] == "desi" and desi.attrs["survey_simulated_from"] == "sdss"
    uniform = degrade(clean, UniformNoise(0.04), seed=1)
    assert uniform.attrs["survey"] == "sdss" and "survey_simulated_from" not in uniform.attrs


def test_uniform_noise_is_renormalised_and_physical_units_kept():
    clean = clean_rest()
    noisy = degrade(clean, UniformNoise(0.04), seed=1).compute()
    flux = noisy["flux"].values.astype(np.float64)
    np.testing.assert_allclose(np.sqrt((flux**2).sum(axis=1)), 1.0, rtol=1e-5)
    eps = standard_normal(1, "noise-uniform", clean["galaxy"].values, GRID.npix)
    good = ~clean["mask"].values
    want = np.where(good, clean["flux"].values + 0.04 * eps, 0) * clean["norm"].values[:, None]
    np.testing.assert_allclose(flux * noisy["norm"].values[:, None], want, rtol=1e-5, atol=1e-3)
    k = noisy["norm"].values / clean["norm"].values
    np.testing.assert_allclose(noisy["ivar"].values[good], (np.broadcast_to(k[:, None], good.shape)[good] / 0.04) ** 2,
                               rtol=1e-5)
    assert json.loads(noisy.attrs["noise"])["sigma"] == 0.04
    assert [s["step"] for s in json.loads(noisy.attrs["provenance"])][-1] == "degrade"
    np.testing.assert_array_equal(noisy["mass"].values, clean["mass"].values)


def test_combined_ivar_adds_the_input_variance():
    clean = clean_rest(n=4)
    noisy = degrade(clean, UniformNoise(0.04, combine=True, renormalise=False), seed=1).compute()
    good = ~clean["mask"].values
    want = 1 / (1 / clean["ivar"].values[good] + 0.04**2)
    np.testing.assert_allclose(noisy["ivar"].values[good], want, rtol=1e-5)


def test_uniform_noise_refuses_what_it_cannot_do():
    clean = clean_rest(n=2)
    physical = clean.assign_attrs(norm_convention="none")
    with pytest.raises(ValueError, match="normalise"):
        degrade(physical, UniformNoise(0.04), seed=0)
    with pytest.raises(ValueError, match="DesiNoise"):
        degrade(clean, UniformNoise(0.04), seed=0, z_target=0.1)
    with pytest.raises(ValueError, match="sigma"):
        UniformNoise(-1.0)


def test_shipped_desi_curve_is_reproducible_and_matches_the_real_coadds(tmp_path):
    shipped = Table.read(DESI_CURVE, format="ascii.ecsv")
    assert "fastspecfit" in " ".join(shipped.meta["sources"]) and shipped.meta["version"] == 1
    # Rebuilding from the coadds gives the file again (to its 5 stored digits).
    out = tmp_path / "curve.ecsv"
    result = run("noise-curve", *COADDS, "--out", out)
    assert result.returncode == 0 and f"wrote {out}" in result.stdout, result.stderr
    rebuilt = Table.read(out, format="ascii.ecsv")
    np.testing.assert_array_equal(rebuilt["wavelength"], shipped["wavelength"])
    np.testing.assert_allclose(rebuilt["sigma_median"], shipped["sigma_median"], rtol=1e-6)
    # Every pixel's median lies between the targets' own 1/sqrt(ivar).
    sig = []
    for c in COADDS:
        ds = read_desi(c)
        ivar = ds["ivar"].values[0].astype(np.float64)
        sig.append(np.where((ivar > 0) & ~ds["mask"].values[0], 1 / np.sqrt(np.where(ivar > 0, ivar, 1)), np.nan))
        np.testing.assert_allclose(ds["wavelength"].values, shipped["wavelength"], rtol=1e-12)
    sig = np.array(sig)
    both = np.all(np.isfinite(sig), axis=0)
    med = np.asarray(shipped["sigma_median"], dtype=np.float64)
    assert both.mean() > 0.9
    assert np.all(med[both] >= sig[:, both].min(axis=0) * (1 - 1e-4))
    assert np.all(med[both] <= sig[:, both].max(axis=0) * (1 + 1e-4))
    # Shape: the blue end of the B arm is far noisier than the red arm's continuum.
    w = np.asarray(shipped["wavelength"])
    blue = np.median(med[(w > 3650) & (w < 3800)])
    red = np.median(med[(w > 6500) & (w < 7000)])
    assert blue > 4 * red
    assert np.all(med > 0) and np.all(np.isfinite(med))
    # The depth it records is the median coadd exposure time of the targets.
    exptimes = [float(read_desi(c)["fibermap_coadd_exptime"].values[0]) for c in COADDS]
    assert rebuilt.meta["exptime"] == shipped.meta["exptime"] == pytest.approx(np.median(exptimes), abs=0.1)


def test_desi_noise_at_an_exposure_time_scales_as_one_over_sqrt_time():
    deep = DesiNoise()
    t_curve = deep.table.meta["exptime"]
    quarter = DesiNoise(exptime=t_curve / 4)
    z = np.array([0.1])
    np.testing.assert_allclose(quarter.sigma_rest(GRID.edges, z), 2 * deep.sigma_rest(GRID.edges, z), rtol=1e-12)
    bgs = DesiNoise(exptime=180.0, scale=1.5)
    assert bgs.depth_factor == pytest.approx(1.5 * np.sqrt(t_curve / 180.0))
    assert bgs.describe()["exptime"] == 180.0 and bgs.describe()["curve_exptime"] == t_curve
    with pytest.raises(ValueError, match="exptime > 0"):
        DesiNoise(exptime=0.0)
    undated = DesiNoise.from_coadds(COADDS)
    undated.table.meta.pop("exptime")
    with pytest.raises(ValueError, match="records no exposure time"):
        DesiNoise(curve="<memory>", _table=undated.table, exptime=180.0).sigma_rest(GRID.edges, np.array([0.1]))


def test_desi_noise_per_grid_pixel_is_the_average_of_desi_pixels():
    model = DesiNoise()
    z = np.array([0.05, 0.1])
    sigma = model.sigma_rest(GRID.edges, z)
    table = model.table
    w = np.asarray(table["wavelength"], dtype=np.float64)
    s = np.asarray(table["sigma_median"], dtype=np.float64)
    edges = np.concatenate([[w[0] - 0.4], 0.5 * (w[1:] + w[:-1]), [w[-1] + 0.4]])
    for g, zg in enumerate(z):
        j = 400
        lo, hi = GRID.edges[j] * (1 + zg), GRID.edges[j + 1] * (1 + zg)
        ov = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None)
        want = np.sqrt(np.sum(ov**2 * s**2)) / ov.sum() * (1 + zg)
        np.testing.assert_allclose(sigma[g, j], want, rtol=1e-4)
    # Beyond the DESI range (9824 A observed) there is no noise model: NaN.
    far = model.sigma_rest(GRID.edges, np.array([0.4]))
    assert np.isnan(far[0, -1]) and np.isfinite(far[0, 0])


def test_desi_noise_statistics_in_physical_units():
    clean = clean_rest(n=30)
    model = DesiNoise(renormalise=False)
    noisy = degrade(clean, model, seed=3).compute()
    phys_in = clean["flux"].values * clean["norm"].values[:, None]
    phys_out = noisy["flux"].values * noisy["norm"].values[:, None]
    sigma = model.sigma_rest(GRID.edges, clean["z"].values)
    good = ~noisy["mask"].values
    pull = ((phys_out - phys_in) / sigma)[good]
    assert abs(pull.std() - 1) < 0.02 and abs(pull.mean()) < 0.02
    np.testing.assert_allclose(noisy["ivar"].values[good] / (clean["norm"].values[:, None] ** 2
                               * np.ones(good.shape))[good], 1 / sigma[good] ** 2, rtol=1e-4)


def test_z_target_dims_by_the_luminosity_distance_ratio():
    clean = clean_rest(n=6, line_flux=500.0)
    quiet = DesiNoise(scale=1e-6)  # noise far below float32 precision of the signal
    moved = degrade(clean, quiet, seed=0, z_target=0.1).compute()
    z = clean["z"].values
    by_hand = (Planck18.luminosity_distance(z).value / Planck18.luminosity_distance(0.1).value) ** 2
    np.testing.assert_allclose(moved["dimming"].values, by_hand, rtol=1e-10)
    np.testing.assert_allclose(dimming_factor(z, 0.1), by_hand, rtol=1e-10)
    phys_in = clean["flux"].values * clean["norm"].values[:, None]
    phys_out = moved["flux"].values * moved["norm"].values[:, None]
    good = ~moved["mask"].values
    np.testing.assert_allclose(phys_out[good], (phys_in * by_hand[:, None])[good], rtol=1e-4,
                               atol=1e-6 * np.abs(phys_in).max())
    # The H-alpha line flux (per rest A, integrated) scales by the same factor;
    # per observed A the density scales by by_hand * (1 + z) / (1 + 0.1).
    near = np.abs(GRID.wavelength - HALPHA) < 30
    cont = np.median(phys_in[:, ~near & (np.abs(GRID.wavelength - HALPHA) < 80)], axis=1)
    line_in = ((phys_in[:, near] - cont[:, None]) * GRID.widths[near]).sum(axis=1)
    cont_out = np.median(phys_out[:, ~near & (np.abs(GRID.wavelength - HALPHA) < 80)], axis=1)
    line_out = ((phys_out[:, near] - cont_out[:, None]) * GRID.widths[near]).sum(axis=1)
    np.testing.assert_allclose(line_out / line_in, by_hand, rtol=1e-3)
    obs_in = phys_in / (1 + z[:, None])
    obs_out = phys_out / 1.1
    ratio = (obs_out[good] / obs_in[good]).reshape(-1)
    want = np.broadcast_to((by_hand * (1 + z) / 1.1)[:, None], good.shape)[good]
    np.testing.assert_allclose(ratio, want, rtol=1e-3)
    np.testing.assert_allclose(moved["z"].values, 0.1)
    np.testing.assert_array_equal(moved["z_original"].values, z)
    cosmo = json.loads(moved.attrs["cosmology"])
    assert cosmo["name"] == "Planck18" and cosmo["H0"] == pytest.approx(Planck18.H0.value)


def test_degrade_at_z_target_adds_desi_noise_at_the_new_observed_wavelengths():
    clean = clean_rest(n=20)
    model = DesiNoise(renormalise=False)
    moved_quiet = degrade(clean, DesiNoise(scale=1e-6, renormalise=False), seed=4, z_target=0.1).compute()
    moved = degrade(clean, model, seed=4, z_target=0.1).compute()
    sigma = model.sigma_rest(GRID.edges, np.array([0.1]))[0]
    resid = (moved["flux"].values - moved_quiet["flux"].values) * moved["norm"].values[:, None]
    good = ~moved["mask"].values
    pull = (resid / sigma[None, :])[good]
    assert abs(pull.std() - 1) < 0.03
    np.testing.assert_allclose(moved["ivar"].values[good],
                               (np.broadcast_to(moved["norm"].values[:, None] ** 2 / sigma**2, good.shape))[good],
                               rtol=1e-4)


def test_dropped_spectra_and_masked_pixels_stay_empty():
    clean = clean_rest(n=4).copy(deep=True)
    clean["flags"].values[1] |= np.uint32(Flag.NO_IVAR)
    clean["flux"].values[1] = 0
    clean["ivar"].values[1] = 0
    clean["mask"].values[1] = True
    clean["mask"].values[2, 100:110] = True
    clean["ivar"].values[2, 100:110] = 0
    for model in (UniformNoise(0.04), DesiNoise()):
        noisy = degrade(clean, model, seed=2, z_target=None).compute()
        assert not noisy["flux"].values[1].any() and noisy["mask"].values[1].all()
        assert noisy["mask"].values[2, 100:110].all() and not noisy["ivar"].values[2, 100:110].any()
        assert not noisy["flux"].values[2, 100:110].any()
        assert np.all(noisy["ivar"].values >= 0) and np.all(np.isfinite(noisy["flux"].values))


@pytest.mark.parametrize("model", [UniformNoise(0.04), DesiNoise()], ids=["uniform", "desi"])
def test_same_seed_same_noise_for_any_chunking(tmp_path, model):
    clean = clean_rest(n=10)
    path = tmp_path / "clean.zarr"
    write_store(clean.chunk({"galaxy": 3}), path, progress=False)
    lazy = open_store(path, frame="rest")
    kwargs = {"seed": 11, "z_target": 0.1 if isinstance(model, DesiNoise) else None}
    a = degrade(lazy, model, **kwargs).compute()
    b = degrade(lazy.chunk({"galaxy": 7}), model, **kwargs).compute()
    c = degrade(clean, model, **kwargs)  # in memory, one block
    shuffled = degrade(clean.isel(galaxy=np.arange(10)[::-1]), model, **kwargs).isel(galaxy=np.arange(10)[::-1])
    for name in ("flux", "ivar", "mask", "norm", "flags"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        np.testing.assert_array_equal(a[name].values, c[name].values, err_msg=name)
        np.testing.assert_array_equal(a[name].values, shuffled[name].values, err_msg=name)
    other = degrade(clean, model, **{**kwargs, "seed": 12})
    assert not np.array_equal(other["flux"].values, c["flux"].values)


def test_same_noise_on_a_local_cluster_with_two_workers(tmp_path):
    from survey_denoise.cluster import connect

    clean = clean_rest(n=12)
    src = tmp_path / "clean.zarr"
    write_store(clean.chunk({"galaxy": 2}), src, progress=False)
    in_process = degrade(clean, DesiNoise(), seed=5, z_target=0.1)
    out = tmp_path / "noisy.zarr"
    with connect("local", n_workers=2, echo=None) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        report = write_store(degrade(open_store(src), DesiNoise(), seed=5, z_target=0.1), out,
                             client=client, progress=False)
    assert report.n_chunks == 6
    back = open_store(out, frame="rest").compute()
    for name in ("flux", "ivar", "mask", "norm", "flags", "z", "dimming"):
        np.testing.assert_array_equal(back[name].values, in_process[name].values, err_msg=name)


def test_from_coadds_in_memory_equals_the_shipped_file():
    built = DesiNoise.from_coadds(COADDS)
    shipped = DesiNoise()
    s1 = built.sigma_rest(GRID.edges, np.array([0.1]))
    s2 = shipped.sigma_rest(GRID.edges, np.array([0.1]))
    np.testing.assert_allclose(s1, s2, rtol=1e-4)
    assert len(build_desi_curve(COADDS[:1])) == len(shipped.table)


# -- drawing a store's noise again (training augmentation) ---------------------------
@pytest.mark.parametrize("model,z_target", [(UniformNoise(0.04), None), (DesiNoise(exptime=180), 0.1)],
                         ids=["uniform", "desi-moved"])
def test_noise_record_redraws_the_store_itself_and_new_realisations_of_it(tmp_path, model, z_target):
    clean = clean_rest(n=30)
    write_store(degrade(clean.chunk({"galaxy": 10}), model, seed=4, z_target=z_target),
                tmp_path / "noisy.zarr", progress=False)
    noisy = open_store(tmp_path / "noisy.zarr").compute()  # the record read back from disk
    rec = NoiseRecord.from_dataset(noisy, clean)
    assert rec.seed == 4 and rec.z_target == z_target and rec.noise == model
    # No key: the record's own seed, so the store itself, bit for bit.
    flux, ivar, mask = rec.draw(clean, GRID.edges)
    np.testing.assert_array_equal(flux, noisy["flux"].values)
    np.testing.assert_array_equal(ivar, noisy["ivar"].values)
    np.testing.assert_array_equal(mask, noisy["mask"].values)
    # A key: the same noise model (same ivar up to the re-normalisation), a new draw.
    f1, i1, m1 = rec.draw(clean, GRID.edges, "train-0-1")
    f1b, _, _ = rec.draw(clean, GRID.edges, "train-0-1")
    f2, _, _ = rec.draw(clean, GRID.edges, "train-0-2")
    np.testing.assert_array_equal(f1, f1b)
    np.testing.assert_array_equal(m1, noisy["mask"].values)
    good = ~m1
    # Two independent draws about the same signal differ by sqrt(2) sigma, in sigma units.
    pull = (f1 - f2)[good] * np.sqrt(i1[good] / 2)
    assert abs(pull.std() - 1) < 0.05 and not np.array_equal(f1, flux)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(good, i1 / noisy["ivar"].values, np.nan)
    assert np.nanmax(np.nanmax(ratio, 1) / np.nanmin(ratio, 1) - 1) < 1e-5  # only the norm moved


def test_noise_record_refuses_what_it_cannot_draw_again():
    clean = clean_rest(n=4)
    noisy = degrade(clean, UniformNoise(0.04), seed=1).compute()
    with pytest.raises(ValueError, match="records no noise"):
        NoiseRecord.from_dataset(noisy.assign_attrs(noise=None), clean)
    rec = json.loads(noisy.attrs["noise"])
    with pytest.raises(ValueError, match="'poisson' is not one this version can draw"):
        NoiseRecord.from_dataset(noisy.assign_attrs(noise=json.dumps({**rec, "model": "poisson"})), clean)
    with pytest.raises(ValueError, match="differs from the rebuilt model in \\['units'\\]"):
        NoiseRecord.from_dataset(noisy.assign_attrs(noise=json.dumps({**rec, "units": "counts"})), clean)
    desi = degrade(clean, DesiNoise(), seed=1).compute()
    rec = json.loads(desi.attrs["noise"])
    with pytest.raises(ValueError, match="curve 'mine.ecsv'.*cannot be drawn again"):
        NoiseRecord.from_dataset(desi.assign_attrs(noise=json.dumps({**rec, "curve": "mine.ecsv"})), clean)
