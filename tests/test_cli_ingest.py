"""``survey-denoise ingest`` and ``survey-denoise info``, run as a user runs them."""

from __future__ import annotations

import _data
import numpy as np
import pytest
import xarray as xr
from _cli import assert_user_error, run

from survey_denoise.io.store import open_store, write_store

NGC3073, NGC3522 = str(_data.NGC3073), str(_data.NGC3522)
COADDS = [str(p) for p in _data.DESI_COADDS]


def test_ingest_sdss_then_info(tmp_path):
    out = tmp_path / "raw.zarr"
    missing = tmp_path / "gone.fits"
    result = run("ingest", "sdss", NGC3073, NGC3522, missing, "--out", out,
                 "--workers", "1", "--chunk-size", "1")
    assert result.returncode == 0, result.stderr
    assert "ingested 2 galaxies from 2 of 3 file(s)" in result.stdout
    assert "skipped 1 file(s) of 3" in result.stderr and "gone.fits: no such file" in result.stderr
    ds = open_store(out, frame="observed")
    assert ds["galaxy"].values.tolist() == ["0945-52652-0470", "2488-54149-0001"]

    info = run("info", out)
    assert info.returncode == 0, info.stderr
    text = info.stdout
    for fragment in ("galaxy 2", "observed frame", "2 of 2 chunks (complete)", "NOT_GALAXY 1",
                     "norm", "1. ingest", "reader=sdss", "gone.fits"):
        assert fragment in text, text


def test_ingest_desi_and_refusals(tmp_path):
    out = tmp_path / "desi.zarr"
    result = run("ingest", "desi", *COADDS, "--out", out, "--workers", "1")
    assert result.returncode == 0, result.stderr
    ds = open_store(out)
    assert sorted(ds["galaxy"].values.tolist()) == [39089837499744649, 39633345008634465]
    assert "desi" in run("info", out).stdout

    # The store exists: refused before any work, and the store is untouched.
    again = run("ingest", "desi", *COADDS, "--out", out, "--workers", "1")
    assert_user_error(again, "exists", "--overwrite")
    # --resume on a complete store writes nothing and succeeds.
    resumed = run("ingest", "desi", *COADDS, "--out", out, "--workers", "1", "--resume")
    assert resumed.returncode == 0, resumed.stderr

    assert_user_error(run("ingest", "desi", *COADDS, "--out", tmp_path / "x.zarr",
                          "--redrock", _data.DESI_DIR / "redrock-special-dark-27247.fits"), "--redrock")
    assert_user_error(run("ingest", "sdss", NGC3073, "--out", tmp_path / "y.zarr",
                          "--overwrite", "--resume"), "exclude")


def test_nothing_readable_is_one_line_exit_2(tmp_path):
    foreign = tmp_path / "image.fits"
    from astropy.io import fits

    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(foreign)
    result = run("ingest", "sdss", foreign, tmp_path / "absent.fits", "--out", tmp_path / "z.zarr",
                 "--workers", "1")
    assert_user_error(result, "none of the 2 files could be read", "image.fits", "absent.fits")
    assert not (tmp_path / "z.zarr").exists()


def test_bad_option_is_a_usage_error(tmp_path):
    result = run("ingest", "sdss", NGC3073, "--out", tmp_path / "a.zarr", "--chunk-size", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_info_on_missing_and_foreign_stores(tmp_path):
    assert_user_error(run("info", tmp_path / "nowhere.zarr"), "nowhere.zarr")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("not zarr")
    assert_user_error(run("info", tmp_path / "junk"), "junk")


def test_info_on_a_galaxy_table_and_an_incomplete_store(tmp_path):
    table = xr.Dataset(
        {"halpha_flux": ("galaxy", np.arange(4.0), {"units": "1e-17 erg / (s cm2)"}),
         "status": ("galaxy", np.array([0, 1 << 10, 1 << 10, 0], np.uint32)),
         "z": ("galaxy", np.array([0.1, 0.2, np.nan, 0.05]))},
        coords={"galaxy": np.arange(4)}).chunk({"galaxy": 2})
    write_store(table, tmp_path / "cat.zarr", spectra=False, progress=False)
    (tmp_path / "cat.zarr" / ".progress" / "chunk-000001").unlink()  # as if cut short
    result = run("info", tmp_path / "cat.zarr")
    assert result.returncode == 0, result.stderr
    for fragment in ("galaxy table", "galaxy 4", "1 of 2 chunks (INCOMPLETE", "FIT_FAILED 2",
                     "1 missing", "halpha_flux float64"):
        assert fragment in result.stdout, result.stdout


@pytest.mark.parametrize("args", [["ingest", "--help"], ["ingest", "desi", "--help"], ["info", "--help"]])
def test_help(args):
    result = run(*args)
    assert result.returncode == 0 and "Usage" in result.stdout


def test_info_on_a_parquet_catalogue(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"galaxy": [1, 2, 3], "status": np.array([0, 1 << 11, 0], np.uint32),
                      "halpha_flux": [1.0, np.nan, 2.5]})
    steps = [{"step": "fit_lines", "version": "0.1.0", "method": "fast"}]
    table = table.replace_schema_metadata({"provenance": json.dumps(steps)})
    pq.write_table(table, tmp_path / "cat.parquet")
    result = run("info", tmp_path / "cat.parquet")
    assert result.returncode == 0, result.stderr
    for fragment in ("galaxy 3", "FIT_NO_COVERAGE 1", "halpha_flux", "1. fit_lines", "method=fast"):
        assert fragment in result.stdout, result.stdout
    (tmp_path / "bad.parquet").write_text("not parquet")
    assert_user_error(run("info", tmp_path / "bad.parquet"), "bad.parquet")


def test_ingest_a_desi_healpix_tree_and_a_file_list_with_selection(tmp_path):
    from _desi_files import healpix_coadd, write_pair

    root = tmp_path / "healpix"
    for k, pixel in enumerate([10016, 10017]):
        ids = [100 * k + i for i in range(6)]
        write_pair(healpix_coadd(root, pixel), ids, spectype=["GALAXY"] * 5 + ["STAR"],
                   zwarn=[0, 0, 0, 0, 4, 0], z=[0.1, 0.2, 0.3, 0.6, 0.1, 0.0],
                   bgs_target=[2, 1, 4, 2, 2, 2])
    write_pair(healpix_coadd(root, 2001), [7], redrock=False)
    out = tmp_path / "bgs.zarr"
    result = run("ingest", "desi", root, "--out", out, "--workers", "1", "--no-progress",
                 "--spectype", "GALAXY", "--zwarn-max", "0", "--z-max", "0.5",
                 "--target", "BGS_BRIGHT,BGS_FAINT")
    assert result.returncode == 0, result.stderr
    assert "ingested 4 galaxies from 2 of 3 file(s)" in result.stdout
    assert ("removed 8 target(s): target 2, spectype 2, zwarn 2, z 2") in result.stdout
    assert "skipped 1 file(s) of 3" in result.stderr
    assert "redrock-main-bright-2001.fits" in result.stderr
    assert sorted(open_store(out)["galaxy"].values.tolist()) == [0, 1, 100, 101]

    listing = tmp_path / "files.txt"
    listing.write_text("healpix/main/bright/100/10016/coadd-main-bright-10016.fits\n")
    listed = run("ingest", "desi", "--from-list", listing, "--out", tmp_path / "one.zarr",
                 "--workers", "1", "--no-progress")
    assert listed.returncode == 0, listed.stderr
    assert "ingested 6 galaxies from 1 of 1 file(s)" in listed.stdout
    assert "selection" not in listed.stdout  # no cut asked for: every target

    assert_user_error(run("ingest", "desi", root, "--out", tmp_path / "x.zarr",
                          "--target", "BGS_SHINY"), "BGS_SHINY", "BGS_BRIGHT")
    assert_user_error(run("ingest", "desi", root, "--out", tmp_path / "x.zarr",
                          "--redrock", tmp_path / "rr.fits"), "--redrock", "folders")
    assert_user_error(run("ingest", "desi", "--out", tmp_path / "x.zarr"), "--from-list")
    assert_user_error(run("ingest", "desi", "--from-list", tmp_path / "none.txt",
                          "--out", tmp_path / "x.zarr"), "none.txt")
