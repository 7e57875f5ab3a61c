"""Ingest of many files: parallel reads, bad files reported, one wavelength axis, Zarr round trip."""

from __future__ import annotations

import json
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from _data import DESI_COADDS as COADDS
from _data import DESI_DIR as DESI
from _data import NGC3073, NGC3522
from astropy.io import fits

from survey_denoise.cluster import connect
from survey_denoise.io.desi import read_desi
from survey_denoise.io.ingest import NothingRead, Skipped, ingest, summarise
from survey_denoise.io.registry import ReadError, _data_size, read
from survey_denoise.io.sdss import LOGLAM_STEP, read_sdss
from survey_denoise.io.store import open_store, write_store
from survey_denoise.schema import validate


@pytest.fixture
def bad_files(tmp_path):
    """A truncated SDSS file, a foreign FITS image and a path that does not exist."""
    truncated = tmp_path / "spec-truncated.fits"
    truncated.write_bytes(NGC3073.read_bytes()[:200_000])
    foreign = tmp_path / "random-image.fits"
    fits.PrimaryHDU(np.random.default_rng(1).normal(size=(16, 16)).astype(np.float32)).writeto(foreign)
    return {"truncated": truncated, "foreign": foreign, "missing": tmp_path / "no-such-file.fits"}


def _reasons(skipped):
    return {Path(s.path).name: s.reason for s in skipped}


@pytest.mark.parametrize("fmt", [None, "sdss"])
def test_bad_files_reported_good_files_ingested(bad_files, fmt):
    paths = [bad_files["truncated"], NGC3073, bad_files["foreign"], NGC3522, bad_files["missing"]]
    ds, skipped = ingest(paths, fmt, progress=False)
    assert ds["galaxy"].values.tolist() == ["0945-52652-0470", "2488-54149-0001"]
    reasons = _reasons(skipped)
    assert set(reasons) == {"spec-truncated.fits", "random-image.fits", "no-such-file.fits"}
    assert "truncated" in reasons["spec-truncated.fits"]
    assert "no such file" in reasons["no-such-file.fits"]
    assert ("not an SDSS spec file" if fmt else "not a file of any known survey") in reasons["random-image.fits"]
    text = summarise(skipped, len(paths))
    assert text.startswith("skipped 3 file(s) of 5")
    for name in reasons:
        assert name in text


def test_nothing_readable_raises_with_every_file(bad_files):
    with pytest.raises(NothingRead, match="none of the 3 files") as info:
        ingest(list(bad_files.values()), progress=False)
    assert len(info.value.skipped) == 3


@pytest.mark.parametrize("source", [NGC3073, COADDS[0]], ids=["sdss", "desi"])
def test_a_file_cut_anywhere_is_an_error_not_a_warning(tmp_path, source):
    """Inside a header, inside a data unit, inside the padding: each names the file.

    The suite turns warnings into errors, so an astropy warning fails here too.
    """
    data = source.read_bytes()
    with fits.open(source) as hdul:
        spans = [(h.fileinfo()["datLoc"], _data_size(h.header)) for h in hdul]
    start, length = next((loc, n) for loc, n in spans if n % 2880)  # first HDU with padding
    cuts = {"in a header": spans[1][0] - 100, "in a data unit": start + length // 2,
            "in the padding": start + length + 1, "one byte short": len(data) - 1}
    for where, cut in cuts.items():
        path = tmp_path / f"cut-{cut}.fits"
        path.write_bytes(data[:cut])
        with pytest.raises(ReadError, match="truncated") as info:
            read(path)
        assert path.name in str(info.value), where
    with pytest.raises(ReadError, match="not a readable FITS file"):
        (tmp_path / "text.fits").write_bytes(b"SIMPLE? no. " * 300)
        read(tmp_path / "text.fits")


def test_reading_in_threads_leaves_the_warning_filters_alone(bad_files):
    """Readers run in worker threads; changing the process-wide filters there races."""
    before = list(warnings.filters)
    paths = [bad_files["truncated"], bad_files["foreign"], NGC3073] * 8
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            list(pool.map(_try_read, paths))
    assert warnings.filters == before


def _try_read(path):
    try:
        return read(path).sizes["galaxy"]
    except ReadError:
        return 0


def test_common_wavelength_axis_without_resampling():
    ds, skipped = ingest([NGC3073, NGC3522], "sdss", progress=False, chunk_size=1)
    assert not skipped
    validate(ds, frame="observed")
    assert ds.chunks["galaxy"] == (1, 1)
    wave = ds["wavelength"].values
    index = np.log10(wave) / LOGLAM_STEP
    np.testing.assert_allclose(index, np.rint(index), atol=1e-6)
    assert np.all(np.diff(np.rint(index)) == 1)  # one contiguous stretch of the lattice
    for i, path in enumerate([NGC3073, NGC3522]):
        one = read_sdss(path)
        cols = np.searchsorted(wave, one["wavelength"].values)
        np.testing.assert_array_equal(wave[cols], one["wavelength"].values)
        for name in ("flux", "ivar", "mask"):
            np.testing.assert_array_equal(ds[name].values[i, cols], one[name].values[0])
        outside = np.ones(wave.size, bool)
        outside[cols] = False
        assert outside.any()  # the two spectra start at different lattice pixels
        assert np.all(ds["ivar"].values[i, outside] == 0)
        assert ds["mask"].values[i, outside].all()
        assert np.all(ds["flux"].values[i, outside] == 0)
        assert ds["z"].values[i] == one["z"].values[0]
    assert ds["source_file"].values.tolist() == [NGC3073.name, NGC3522.name]


def test_provenance_records_files_reader_and_version():
    from survey_denoise import __version__

    ds, skipped = ingest([NGC3522, NGC3073], progress=False)
    (step,) = json.loads(ds.attrs["provenance"])
    assert step["step"] == "ingest" and step["reader"] == "sdss"
    assert step["version"] == __version__
    assert step["files"] == [str(NGC3522), str(NGC3073)]
    assert ds.attrs["norm_convention"] == "none"


def test_duplicates_keep_the_first(tmp_path):
    copy = tmp_path / "copy-of-3073.fits"
    shutil.copy(NGC3073, copy)
    ds, skipped = ingest([NGC3073, NGC3522, copy], progress=False)
    assert ds.sizes["galaxy"] == 2
    assert ds["source_file"].values[0] == NGC3073.name
    (dup,) = skipped
    assert dup.path == str(copy) and dup.galaxy == "0945-52652-0470"
    assert "duplicate" in dup.reason and str(NGC3073) in dup.reason


def test_desi_coadds_with_a_missing_redrock(tmp_path):
    lonely = tmp_path / "coadd-lonely.fits"
    shutil.copy(COADDS[0], lonely)
    ds, skipped = ingest([*COADDS, lonely], "desi", progress=False)
    assert skipped == [Skipped(str(lonely), skipped[0].reason)]
    assert "redrock-lonely.fits" in skipped[0].reason
    # Every FIBERMAP target once, with its redrock redshift.
    expected = {}
    for coadd in COADDS:
        one = read_desi(coadd)
        expected.update(zip(one["galaxy"].values.tolist(), one["z"].values.tolist(), strict=True))
    assert dict(zip(ds["galaxy"].values.tolist(), ds["z"].values.tolist(), strict=True)) == expected
    # Columns only one coadd's FIBERMAP has are filled for the other.
    assert "fibermap_desiname" in ds and "fibermap_tileid" in ds
    assert ds["fibermap_tileid"].values.tolist() == [80613, -1]
    assert ds["fibermap_desiname"].values[0] == ""


def test_per_file_reader_options(tmp_path):
    elsewhere = tmp_path / "rr.fits"
    shutil.copy(DESI / "redrock-special-dark-27247.fits", elsewhere)
    coadd = tmp_path / "coadd-special-dark-27247.fits"
    shutil.copy(COADDS[1], coadd)
    ds, skipped = ingest([coadd], "desi", progress=False, options=[{"redrock": elsewhere}])
    assert not skipped and ds["z"].values[0] == pytest.approx(0.00727, abs=1e-5)


def test_on_a_local_cluster_and_through_zarr(tmp_path, bad_files):
    paths = [NGC3073, bad_files["truncated"], NGC3522]
    local, skipped_local = ingest(paths, progress=False)
    with connect("local", 2) as client:
        ds, skipped = ingest(paths, client=client, progress=False, chunk_size=1)
        assert [s.path for s in skipped] == [str(bad_files["truncated"])]
        assert skipped == skipped_local
        write_store(ds, tmp_path / "raw.zarr", client=client, progress=False)
    back = open_store(tmp_path / "raw.zarr", frame="observed")
    assert back.chunks["galaxy"] == (1, 1)
    for name in ("flux", "ivar", "mask", "z", "flags", "norm"):
        np.testing.assert_array_equal(back[name].values, local[name].values)
    assert back["galaxy"].values.tolist() == local["galaxy"].values.tolist()
    assert back["spectype"].values.tolist() == ["STAR", "GALAXY"]
    assert back.attrs["provenance"] == local.attrs["provenance"]
