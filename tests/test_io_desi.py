"""DESI coadd + redrock reader, on the real files that ship inside fastspecfit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from _data import DESI_COADDS as COADDS
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from survey_denoise.flags import Flag
from survey_denoise.io import registry
from survey_denoise.io.desi import merge_arms, read_desi, redrock_path
from survey_denoise.schema import validate


def _redrock_table(coadd):
    with fits.open(redrock_path(coadd)) as hdul:
        rs = hdul["REDSHIFTS"].data
        return {int(t): (float(z), s.strip(), int(w))
                for t, z, s, w in zip(rs["TARGETID"], rs["Z"], rs["SPECTYPE"], rs["ZWARN"], strict=True)}


def _fibermap_ids(coadd):
    with fits.open(coadd) as hdul:
        return [int(t) for t in hdul["FIBERMAP"].data["TARGETID"]]


@pytest.mark.parametrize("coadd", COADDS, ids=lambda p: p.name)
def test_every_fibermap_target_once_with_its_redrock_redshift(coadd):
    ds = read_desi(coadd)
    validate(ds, frame="observed")
    ids = _fibermap_ids(coadd)
    assert sorted(ds["galaxy"].values.tolist()) == sorted(ids)
    assert len(set(ds["galaxy"].values.tolist())) == len(ids)
    redrock = _redrock_table(coadd)
    for i, tid in enumerate(ds["galaxy"].values.tolist()):
        z, spectype, zwarn = redrock[tid]
        assert ds["z"].values[i] == z
        assert ds["spectype"].values[i] == spectype
        assert ds["zwarn"].values[i] == zwarn
    assert ds["norm"].values.tolist() == [1.0] * len(ids)


def test_the_two_shipped_targets():
    known = {39633345008634465: 0.369, 39089837499744649: 0.007}
    for coadd in COADDS:
        ds = read_desi(coadd)
        (tid,) = ds["galaxy"].values.tolist()
        assert ds["z"].values[0] == pytest.approx(known[tid], abs=5e-4)
        assert ds["flags"].values[0] == 0  # both GALAXY, ZWARN 0


def test_fibermap_columns_are_galaxy_variables():
    ds = read_desi(COADDS[0])
    with fits.open(COADDS[0]) as hdul:
        fm = hdul["FIBERMAP"].data
        assert ds["fibermap_tileid"].values[0] == fm["TILEID"][0] == 80613
        assert ds["fibermap_objtype"].values[0] == fm["OBJTYPE"][0].strip()
        assert ds["ra"].values[0] == fm["TARGET_RA"][0]
        scalar = [c.name for c in fm.columns if np.ndim(fm[c.name][0]) == 0 and c.name != "TARGETID"]
    for name in scalar:
        assert f"fibermap_{name.lower()}" in ds
        assert ds[f"fibermap_{name.lower()}"].dims == ("galaxy",)


def test_arm_merge_on_real_coadd():
    """In the arm overlaps, merged ivar = sum of arm ivars, flux = ivar-weighted mean."""
    ds = read_desi(COADDS[0])
    wave = ds["wavelength"].values
    np.testing.assert_allclose(np.diff(wave), 0.8, atol=1e-9)
    merged_flux = ds["flux"].values[0]
    merged_ivar = ds["ivar"].values[0]
    sum_w = np.zeros(wave.size)
    sum_wf = np.zeros(wave.size)
    covered = np.zeros(wave.size, int)
    with fits.open(COADDS[0]) as hdul:
        for arm in "BRZ":
            w = hdul[f"{arm}_WAVELENGTH"].data
            f = hdul[f"{arm}_FLUX"].data[0].astype(float)
            iv = hdul[f"{arm}_IVAR"].data[0].astype(float)
            good = (hdul[f"{arm}_MASK"].data[0] == 0) & (iv > 0)
            cols = np.searchsorted(wave, w - 0.01)
            np.testing.assert_allclose(wave[cols], w, atol=1e-6)
            sum_w[cols] += np.where(good, iv, 0)
            sum_wf[cols] += np.where(good, iv * f, 0)
            covered[cols] += 1
    overlap = (covered == 2) & (sum_w > 0)
    assert overlap.sum() > 100  # both the B/R and the R/Z overlaps
    np.testing.assert_allclose(merged_ivar[overlap], sum_w[overlap], rtol=1e-6)
    np.testing.assert_allclose(merged_flux[overlap], sum_wf[overlap] / sum_w[overlap],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ds["mask"].values[0], sum_w == 0)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3), st.integers(5, 30), st.integers(0, 10), st.integers(0, 2**31 - 1))
def test_merge_arms_properties(n_target, n_pix, overlap, seed):
    rng = np.random.default_rng(seed)
    overlap = min(overlap, n_pix - 1)
    start_b, start_r = 4500, 4500 + n_pix - overlap
    arms = []
    for start in (start_b, start_r):
        wave = np.arange(start, start + n_pix) * 0.8
        flux = rng.normal(size=(n_target, n_pix)).astype(np.float32)
        ivar = rng.uniform(0, 4, size=(n_target, n_pix)).astype(np.float32)
        ivar[rng.uniform(size=ivar.shape) < 0.2] = 0
        mask = (rng.uniform(size=ivar.shape) < 0.2).astype(np.int32)
        arms.append((wave, flux, ivar, mask))
    wave, flux, ivar, mask, bad = merge_arms(arms)
    assert wave.size == 2 * n_pix - overlap
    assert not bad.any()
    assert np.all(ivar >= 0) and np.all(np.isfinite(flux))
    np.testing.assert_array_equal(mask, ivar == 0)
    # Expected result, arm by arm on the merged axis.
    sum_w = np.zeros((n_target, wave.size))
    sum_wf = np.zeros((n_target, wave.size))
    for offset, (_, f, iv, m) in zip((0, n_pix - overlap), arms, strict=True):
        w = np.where((m == 0) & (iv > 0), iv, 0.0)
        sum_w[:, offset:offset + n_pix] += w
        sum_wf[:, offset:offset + n_pix] += w * f
    np.testing.assert_allclose(ivar, sum_w, rtol=1e-6)
    good = sum_w > 0
    np.testing.assert_allclose(flux[good], sum_wf[good] / sum_w[good], rtol=1e-5, atol=1e-6)
    # A merged value lies between the arm values it combines.
    lo = np.minimum(arms[0][1][:, n_pix - overlap:], arms[1][1][:, :overlap])
    hi = np.maximum(arms[0][1][:, n_pix - overlap:], arms[1][1][:, :overlap])
    mid = flux[:, n_pix - overlap:n_pix]
    assert np.all((mid >= lo - 1e-5) & (mid <= hi + 1e-5))


def test_redshifts_matched_by_targetid_not_row_order(tmp_path):
    coadd = tmp_path / COADDS[0].name
    shutil.copy(COADDS[0], coadd)
    with fits.open(redrock_path(COADDS[0])) as hdul:
        real = hdul["REDSHIFTS"].data
        table = fits.FITS_rec.from_columns(real.columns, nrows=3)
        for name in real.columns.names:  # two unrelated targets first, the real one last
            table[name][2] = real[name][0]
        table["TARGETID"][:2] = [1, 2]
        table["Z"][:2] = [9.0, 8.0]
        hdul["REDSHIFTS"] = fits.BinTableHDU(table, name="REDSHIFTS")
        hdul.writeto(redrock_path(coadd))
    ds = read_desi(coadd)
    assert ds["z"].values[0] == real["Z"][0]


def test_target_missing_from_redrock_is_flagged(tmp_path):
    redrock = tmp_path / "redrock-other.fits"
    with fits.open(redrock_path(COADDS[0])) as hdul:
        hdul["REDSHIFTS"].data["TARGETID"][0] = 12345
        hdul.writeto(redrock)
    ds = read_desi(COADDS[0], redrock=redrock)
    assert np.isnan(ds["z"].values[0])
    assert ds["flags"].values[0] & Flag.NO_REDSHIFT


def test_missing_redrock_names_the_file(tmp_path):
    coadd = tmp_path / COADDS[1].name
    shutil.copy(COADDS[1], coadd)
    with pytest.raises(FileNotFoundError, match="redrock-special-dark-27247.fits"):
        read_desi(coadd)


def test_identify_and_foreign_files(tmp_path):
    assert registry.identify(COADDS[0]) == "desi"
    with pytest.raises(registry.ReadError, match="not a file of any known survey"):
        registry.identify(redrock_path(COADDS[0]))
    with pytest.raises(registry.ReadError, match="not a DESI coadd"):
        read_desi(redrock_path(COADDS[0]), redrock=redrock_path(COADDS[0]))
