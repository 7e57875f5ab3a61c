"""Commands never lose data they were not asked to replace (docs/guarantees.md).

Each refusal here happened silently before: an output onto an input
deleted the input, a resume with other options mixed two settings in one
store, and Parquet, CSV and truth outputs were replaced without --overwrite.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _cli import assert_user_error, run

from survey_denoise.io.store import PROGRESS_DIR, missing_chunks, open_store, write_store
from survey_denoise.preprocess import preprocess
from survey_denoise.schema import make_spectra

OBS = 10 ** (np.log10(3600.0) + 1e-4 * np.arange(4000))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 6
    flux = rng.uniform(5, 10, (n, 1)) + rng.normal(0, 0.1, (n, OBS.size))
    raw = make_spectra(flux, np.full(flux.shape, 100.0), OBS, np.arange(n),
                       np.array([0.03, 0.05, 0.02, 0.04, 0.02, 0.06]), frame="observed")
    folder = tmp_path_factory.mktemp("safety")
    write_store(raw.chunk({"galaxy": 4}), folder / "raw.zarr", progress=False)
    write_store(preprocess(open_store(folder / "raw.zarr")), folder / "rest.zarr", progress=False)
    return folder / "raw.zarr", folder / "rest.zarr"


def _snapshot(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_overwrite_onto_an_input_is_refused_and_the_input_kept(stores, tmp_path):
    raw, rest = stores
    before = _snapshot(raw), _snapshot(rest)
    assert_user_error(run("preprocess", raw, "--out", raw, "--overwrite"),
                      "raw.zarr: the output is the input", "write it elsewhere")
    assert_user_error(run("degrade", rest, "--out", rest, "--overwrite", "--noise", "uniform"),
                      "the output is the input")
    # fit --out r.parquet writes the table r.zarr: the spectra store itself.
    assert_user_error(run("fit", rest, "--out", rest.with_suffix(".parquet"), "--overwrite"),
                      "rest.zarr: the output is the input")
    assert_user_error(run("fit", rest, "--out", rest / "cat.parquet", "--overwrite"),
                      "sits inside the input")
    assert_user_error(run("degrade", rest, "--out", rest.parent, "--overwrite", "--noise", "uniform"),
                      "contains the input")
    assert (_snapshot(raw), _snapshot(rest)) == before
    open_store(rest, frame="rest")  # still whole and complete


def _interrupt(store, chunk=1):
    (store / PROGRESS_DIR / f"chunk-{chunk:06d}").unlink()
    assert missing_chunks(store) == [chunk]


def test_resume_with_other_options_is_refused_naming_them(stores, tmp_path):
    raw, rest = stores
    out = tmp_path / "rest.zarr"
    assert run("preprocess", raw, "--out", out, "--workers", "1").returncode == 0
    _interrupt(out)
    assert_user_error(run("preprocess", raw, "--out", out, "--workers", "1", "--norm", "median",
                          "--resume"),
                      "cannot resume", "normalise.method: store \"l2\", now \"median\"")
    assert missing_chunks(out) == [1]

    noisy = tmp_path / "noisy.zarr"
    assert run("degrade", rest, "--out", noisy, "--noise", "uniform:0.04", "--seed", "2",
               "--workers", "1").returncode == 0
    _interrupt(noisy)
    assert_user_error(run("degrade", rest, "--out", noisy, "--noise", "uniform:0.2", "--seed", "9",
                          "--workers", "1", "--resume"),
                      "degrade.noise.sigma: store 0.04, now 0.2", "degrade.seed: store 2, now 9")
    result = run("degrade", rest, "--out", noisy, "--noise", "uniform:0.04", "--seed", "2",
                 "--workers", "1", "--resume")
    assert result.returncode == 0 and "1 written now" in result.stdout, result.stderr
    plan = json.loads((noisy / PROGRESS_DIR / "plan.json").read_text())
    assert plan["parameters"]["degrade.seed"] == "2" and plan["parameters"]["normalise.method"] == '"l2"'


def test_existing_files_need_overwrite_and_are_replaced_whole(stores, tmp_path):
    raw, rest = stores
    truth = tmp_path / "truth.parquet"
    truth.write_bytes(b"1000 rows of truth")
    # fit --out truth.parquet used to check only truth.zarr.
    assert_user_error(run("fit", rest, "--out", truth, "--workers", "1"),
                      "truth.parquet exists; pass --overwrite")
    assert_user_error(run("fit", rest, "--out", truth, "--workers", "1", "--resume"),
                      "truth.parquet exists; pass --overwrite")
    assert_user_error(run("mock", "--n", "3", "--out", tmp_path / "m.zarr", "--truth", truth),
                      "truth.parquet exists")
    assert_user_error(run("mock", "--n", "3", "--out", tmp_path / "m.zarr", "--truth",
                          tmp_path / "m.zarr" / "t.parquet"), "the output contains the output")
    assert truth.read_bytes() == b"1000 rows of truth"
    assert not (tmp_path / "m.zarr").exists() and not (tmp_path / "truth.zarr").exists()

    result = run("fit", rest, "--out", truth, "--workers", "1", "--overwrite")
    assert result.returncode == 0, result.stderr
    cat = tmp_path / "truth.parquet"
    assert cat.read_bytes()[:4] == b"PAR1" and (tmp_path / "truth.fits").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truth.fits", "truth.parquet", "truth.zarr"]

    table = tmp_path / "cmp.csv"
    table.write_text("keep me")
    assert_user_error(run("compare", cat, cat, "--out", table), "cmp.csv exists; pass --overwrite")
    assert_user_error(run("compare", cat, table, "--out", table, "--overwrite"),
                      "the output is the input")
    assert table.read_text() == "keep me"
    result = run("compare", cat, cat, "--out", table, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert table.read_text().startswith("line") or "halpha" in table.read_text()
    assert (tmp_path / "cmp_bins.csv").exists() and not list(tmp_path.glob(".*"))
