"""``survey-denoise preprocess`` and ``degrade``, run as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _cli import assert_user_error, run

from survey_denoise.io.store import open_store, write_store
from survey_denoise.noise import DesiNoise, UniformNoise, degrade
from survey_denoise.preprocess import preprocess
from survey_denoise.schema import make_spectra

OBS = 10 ** (np.log10(3600.0) + 1e-4 * np.arange(4000))


@pytest.fixture(scope="module")
def raw_store(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 6
    z = np.array([0.03, 0.05, np.nan, 0.04, 0.02, 0.06])
    flux = rng.uniform(5, 10, (n, 1)) + rng.normal(0, 0.1, (n, OBS.size))
    raw = make_spectra(flux, np.full(flux.shape, 100.0), OBS, np.arange(n), z, frame="observed")
    path = tmp_path_factory.mktemp("cli") / "raw.zarr"
    write_store(raw.chunk({"galaxy": 4}), path, progress=False)
    return path


def test_preprocess_then_degrade(raw_store, tmp_path):
    rest = tmp_path / "rest.zarr"
    result = run("preprocess", raw_store, "--out", rest, "--workers", "1", "--norm", "median")
    assert result.returncode == 0, result.stderr
    assert "preprocess: 6 galaxies" in result.stdout and "1 dropped" in result.stdout
    assert "NO_REDSHIFT 1" in result.stdout
    got = open_store(rest, frame="rest")
    want = preprocess(open_store(raw_store), norm="median")
    assert got.attrs["norm_convention"] == "median"
    np.testing.assert_array_equal(got["flux"].values, want["flux"].values)

    noisy = tmp_path / "noisy.zarr"
    result = run("degrade", rest, "--out", noisy, "--noise", "desi", "--z-target", "0.1",
                 "--seed", "4", "--workers", "1")
    assert result.returncode == 0, result.stderr
    back = open_store(noisy, frame="rest")
    same = degrade(open_store(rest), DesiNoise(), seed=4, z_target=0.1)
    np.testing.assert_array_equal(back["flux"].values, same["flux"].values)
    assert json.loads(back.attrs["noise"])["z_target"] == 0.1

    # Resume of a complete store writes nothing; uniform noise with its sigma.
    result = run("degrade", rest, "--out", noisy, "--noise", "desi", "--z-target", "0.1",
                 "--seed", "4", "--workers", "1", "--resume")
    assert result.returncode == 0 and "0 written now" in result.stdout
    uniform = tmp_path / "uniform.zarr"
    result = run("degrade", rest, "--out", uniform, "--noise", "uniform:0.02", "--workers", "1")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(open_store(uniform)["flux"].values,
                                  degrade(open_store(rest), UniformNoise(0.02), seed=0)["flux"].values)
    bgs = tmp_path / "bgs.zarr"
    result = run("degrade", rest, "--out", bgs, "--noise", "desi", "--exptime", "180", "--workers", "1")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(open_store(bgs)["flux"].values,
                                  degrade(open_store(rest), DesiNoise(exptime=180), seed=0)["flux"].values)
    result = run("degrade", rest, "--out", tmp_path / "x.zarr", "--noise", "uniform", "--exptime", "180")
    assert result.returncode != 0 and "exptime applies to desi noise only" in result.stderr


def test_user_errors_are_one_line(raw_store, tmp_path):
    assert_user_error(run("preprocess", tmp_path / "none.zarr", "--out", tmp_path / "o.zarr"),
                      "none.zarr")
    assert_user_error(run("degrade", raw_store, "--out", tmp_path / "o.zarr", "--noise", "desi"),
                      "needs 'rest'")
    assert_user_error(run("degrade", raw_store, "--out", tmp_path / "o.zarr", "--noise", "pink"),
                      "unknown noise 'pink'", "uniform, desi")
    assert_user_error(run("degrade", raw_store, "--out", tmp_path / "o.zarr", "--noise", "uniform:-1"),
                      "sigma")
    assert_user_error(run("preprocess", raw_store, "--out", raw_store), "the output is the input")
