"""The BGS-like observed-frame DESI mock (design ``bgs``) and issue 15's coverage targets on it.

Redshifts and magnitudes of the design, BGS depth, fibre fractions at high z,
a galaxy at z ~ 0.47 masked beyond DESI's red end after preprocess, and the
benchmark's targets (a) no Halpha/Hbeta galaxy dropped and (c) no value for
an uncovered line, on a tiny in-process run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import dask
import numpy as np
import pytest
from _cli import assert_user_error, run

from survey_denoise import ssp
from survey_denoise.flags import Flag
from survey_denoise.mock import MockConfig, designs, generate, nebular, population, select
from survey_denoise.mock.instrument import DESI
from survey_denoise.mock.photometry import r_magnitude
from survey_denoise.redshifts import NZ

ROOT = Path(__file__).resolve().parent.parent


def _benchmark():
    spec = importlib.util.spec_from_file_location("bgs_coverage", ROOT / "benchmarks" / "bgs_coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bgs_design_follows_the_nz_and_the_magnitude_limit():
    ids = select("bgs", 80, seed=4)
    assert ids.size == 80 and np.unique(ids).size == 80
    props = population.draw(4, ids, z_range=designs.bgs_z_range())
    z = props["z"]
    assert designs.bgs_z_range() == NZ["desi-bgs"].z_range == (0.01, 0.5)
    assert z.min() >= 0.01 and z.max() <= 0.5
    assert 0.17 < np.median(z) < 0.23               # BGS: median z ~ 0.2
    assert (z > 0.3).sum() >= 8                     # the partially covered tail is there
    assert np.all(r_magnitude(props, nebular.line_fluxes(props)) < 19.5)
    # per z bin exactly the n(z)'s quota
    edges = np.linspace(0.01, 0.5, designs.BGS_Z_BINS + 1)
    counts = np.histogram(z, edges)[0]
    np.testing.assert_array_equal(counts, designs._bgs_quotas(80, edges))


def test_bgs_needs_desi_and_its_own_z_range():
    with pytest.raises(ValueError, match="use survey desi"):
        designs.config_for("bgs", "sdss", None)
    with pytest.raises(ValueError, match="z-max <= 0.5"):
        designs.config_for("bgs", "desi", (0.01, 0.6))
    cfg = designs.config_for("bgs", "desi", None)
    assert cfg == {"z_range": (0.01, 0.5), "exptime": 180.0, "aperture": True}
    assert designs.config_for("natural", "sdss", None) == {}


def test_bgs_depth_scales_desi_noise_by_exposure_time():
    flux = np.zeros((1, DESI.npix))
    deep = DESI.sigma(flux, np.ones(1))
    bgs = DESI.at_depth(180.0).sigma(flux, np.ones(1))
    curve_exptime = float(DESI.noise.table.meta["exptime"])
    np.testing.assert_allclose(bgs / deep, np.sqrt(curve_exptime / 180.0), rtol=1e-6)
    bright = np.full((1, DESI.npix), 50.0)
    shot = DESI.at_depth(180.0).sigma(bright, np.ones(1)) ** 2 - bgs**2
    shot_deep = DESI.sigma(bright, np.ones(1)) ** 2 - deep**2
    np.testing.assert_allclose(shot / shot_deep, DESI.shot_exptime / 180.0, rtol=1e-6)


def test_fibre_fraction_is_unchanged_at_the_reference_and_grows_with_z():
    f = np.array([0.1, 0.25, 0.5])
    same = population.fibre_fraction_at(f, np.full(3, 0.037), 3.0, 1.4)
    np.testing.assert_allclose(same, f, rtol=1e-3)
    z = np.array([0.05, 0.1, 0.2, 0.4])
    desi = population.fibre_fraction_at(np.full(4, 0.25), z, 1.5, 1.1)
    assert np.all(np.diff(desi) > 0) and desi[-1] < 1.0


def test_ssp_library_reaches_desi_blue_end_at_z_half():
    assert ssp.load_library().wavelength[0] < 3600.0 / 1.5


def _raw(ids, z_range):
    cfg = MockConfig(seed=7, survey="desi", **{**designs.config_for("bgs", "desi", z_range)})
    with dask.config.set(scheduler="synchronous"):
        return generate(ids, cfg, chunk_size=len(ids), design="bgs").compute()


def test_galaxy_at_z_047_is_kept_and_masked_beyond_desi(tmp_path):
    from survey_denoise.preprocess import preprocess

    raw = _raw(np.array([0, 1]), (0.46, 0.47))
    with dask.config.set(scheduler="synchronous"):
        pre = preprocess(raw).compute()
    wave = pre["wavelength"].values
    for i, z in enumerate(pre["z"].values):
        assert 0.46 <= z <= 0.47
        ivar = pre["ivar"].values[i]
        beyond = wave * (1 + z) > DESI.wavelength[-1] * 1.001
        inside = wave * (1 + z) < DESI.wavelength[-1] * 0.999
        assert beyond.sum() > 100 and np.all(ivar[beyond] == 0)
        assert np.mean(ivar[inside] > 0) > 0.99
        flags = int(pre["flags"].values[i])
        assert flags & Flag.PARTIAL_COVERAGE and not flags & Flag.LOW_COVERAGE


def test_targets_a_and_c_on_a_tiny_high_z_run():
    from survey_denoise.fitting import fit_lines
    from survey_denoise.fitting.catalogue import to_frame
    from survey_denoise.lines import catalogue_keys
    from survey_denoise.preprocess import preprocess

    bench = _benchmark()
    ids = select("bgs", 6, seed=7, z_range=(0.45, 0.5))
    raw = _raw(ids, (0.45, 0.5))
    with dask.config.set(scheduler="synchronous"):
        pre = preprocess(raw).compute()
        cat = to_frame(fit_lines(pre, "fast"))
    z = raw["z"].values
    assert (z > 0.46).sum() >= 2                  # [SII]6731 beyond DESI's red end
    a = bench.target_a(z, pre["flags"].values.astype(np.int64), cat)
    assert a["n_halpha_or_hbeta_covered"] == 6 and a["met"], a
    c = bench.target_c(z, {"original": cat}, catalogue_keys())
    counts = c["catalogues"]["original"]
    assert counts["n_outside_coverage"] > 0 and counts["n_flagged_not_covered"] >= counts["n_outside_coverage"]
    assert c["met"], c


def test_cli_keeps_the_sdss_refusal_and_refuses_bgs_off_desi(tmp_path):
    res = run("mock", "--n", 2, "--z-max", 0.4, "--out", tmp_path / "m.zarr")
    assert_user_error(res, "need 0 < z-min < z-max <= 0.25, got (0.024, 0.4)")
    res = run("mock", "--n", 2, "--design", "bgs", "--out", tmp_path / "b.zarr")
    assert_user_error(res, "the bgs design simulates DESI's Bright Galaxy Survey; use survey desi")


def test_pipeline_config_bgs_checks_and_refuses_bgs_off_desi(tmp_path):
    import yaml

    from survey_denoise.pipeline.config import ConfigError, load_config

    config = load_config(ROOT / "pipelines" / "bgs.yaml", out=tmp_path / "run")
    assert config.input.mock.design == "bgs" and config.input.mock.survey == "desi"
    raw = yaml.safe_load((ROOT / "pipelines" / "bgs.yaml").read_text())
    raw["input"]["mock"]["survey"] = "sdss"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="use survey desi"):
        load_config(path)
