"""Line fits on a real LocalCluster and through the command line, on Zarr stores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from survey_denoise import lines
from survey_denoise.cli import main
from survey_denoise.fitting import fast, fit_lines
from survey_denoise.fitting.catalogue import read_catalogue
from survey_denoise.flags import Flag
from survey_denoise.grid import GRID
from survey_denoise.io.store import open_store, write_store
from survey_denoise.schema import make_spectra


def _store(path, n=8, chunk=2, seed=0):
    from survey_denoise.fitting.templates import stellar_templates
    from survey_denoise.resample import rebin_samples as rebin

    rng = np.random.default_rng(seed)
    stars = stellar_templates(GRID.velscale, 4, (3500.0, 8300.0))
    flux = rebin(np.exp(stars.ln_lam), stars.templates.T[rng.integers(10, stars.n_templates, n)],
                 np.asarray(GRID.edges))
    flux /= np.median(flux, axis=1, keepdims=True)
    truth = 10 ** rng.uniform(0.3, 1.0, n)
    flux += truth[:, None] * fast.gaussian_profile(np.asarray(GRID.edges), lines.wavelength("halpha"), 100)
    flux += rng.normal(0, 0.02, flux.shape)
    ivar = np.full_like(flux, 2500.0)
    ivar[1] = 0.0
    ds = make_spectra(flux, ivar, GRID.wavelength, np.array([f"gal-{i:03d}" for i in range(n)]),
                      np.full(n, 0.03), frame="rest", norm=np.full(n, 2.0),
                      attrs={"grid": json.dumps(GRID.to_dict()), "norm_convention": "l2"})
    write_store(ds.chunk(galaxy=chunk), path, progress=False)
    return truth


def test_templates_built_once_per_worker(tmp_path):
    from distributed import Client

    from survey_denoise.cluster import local_cluster

    _store(tmp_path / "rest.zarr", n=8, chunk=2)
    ds = open_store(tmp_path / "rest.zarr", frame="rest")
    cat = fit_lines(ds, method="ppxf")
    assert cat["halpha_flux"].chunks == ((2, 2, 2, 2),)      # lazy, one chunk per input chunk
    with local_cluster(2) as cluster, Client(cluster) as client:
        done = cat.compute()

        def builds():
            from survey_denoise.fitting.templates import stellar_templates
            return stellar_templates.cache_info().misses

        per_worker = client.run(builds)
    assert len(per_worker) == 2
    # each worker fitted at least one chunk, and built the template set once
    assert sorted(per_worker.values()) == [1, 1]
    assert done["status"].values[1] == Flag.FIT_NO_COVERAGE
    assert np.all(done["status"].values[[0, 2, 3, 4, 5, 6, 7]] == 0)


def test_fit_and_compare_commands(tmp_path, capsys):
    truth = _store(tmp_path / "rest.zarr", n=6, chunk=3)
    out = tmp_path / "cat" / "fast.parquet"
    main(["fit", str(tmp_path / "rest.zarr"), "--out", str(out), "--workers", "2"])
    cat = read_catalogue(out)
    assert list(cat["galaxy"]) == [f"gal-{i:03d}" for i in range(6)]
    assert cat["status"].iloc[1] == Flag.FIT_NO_COVERAGE and np.isnan(cat["halpha_flux"].iloc[1])
    good = np.r_[0, 2, 3, 4, 5]
    f, e = cat["halpha_flux"].to_numpy()[good], cat["halpha_flux_err"].to_numpy()[good]
    # errors are statistical; the continuum basis adds a few per cent (see fast.py)
    assert np.all(np.abs(f - 2.0 * truth[good]) < 4 * e + 0.1 * 2.0 * truth[good])
    assert read_catalogue(out.with_suffix(".fits"))["halpha_flux"].to_numpy()[good] == pytest.approx(f)

    # a second run finishes nothing new; --resume accepts the complete table
    main(["fit", str(tmp_path / "rest.zarr"), "--out", str(out), "--resume", "--workers", "1"])
    assert "0 written" in capsys.readouterr().out

    main(["compare", str(out), str(out.with_suffix(".fits")), "--out", str(tmp_path / "cmp.csv"),
          "--plot", str(tmp_path / "fig9.png")])
    printed = capsys.readouterr().out
    assert "halpha" in printed
    assert (tmp_path / "cmp_bins.csv").exists() and (tmp_path / "fig9.png").exists()


def test_fit_command_user_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["fit", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "c")])
    assert err.value.code == 2
    assert "none.zarr" in capsys.readouterr().err
    _store(tmp_path / "rest.zarr", n=2, chunk=2)
    with pytest.raises(SystemExit) as err:
        main(["fit", str(tmp_path / "rest.zarr"), "--out", str(tmp_path / "c"), "--templates",
              str(tmp_path / "missing.npz"), "--method", "ppxf"])
    assert err.value.code == 2
