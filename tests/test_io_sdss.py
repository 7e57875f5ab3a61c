"""SDSS spec reader, on the real DR18 spectra that ship inside pPXF."""

from __future__ import annotations

import numpy as np
import pytest
from _data import NGC3073, NGC3522
from astropy.io import fits

from survey_denoise import lines
from survey_denoise.flags import Flag
from survey_denoise.grid import GRID
from survey_denoise.io import registry
from survey_denoise.io.ingest import ingest
from survey_denoise.io.sdss import LOGLAM_STEP, read_sdss
from survey_denoise.schema import validate


def _file_contents(path):
    """COADD and SPECOBJ as the file has them, read independently of the reader."""
    with fits.open(path) as hdul:
        coadd = {c: np.array(hdul["COADD"].data[c]) for c in ("loglam", "flux", "ivar", "and_mask")}
        row = hdul["SPECOBJ"].data[0]
        specobj = {c: row[c] for c in ("PLATE", "MJD", "FIBERID", "Z", "ZWARNING", "CLASS")}
    return coadd, specobj


@pytest.mark.parametrize("path", [NGC3073, NGC3522], ids=["NGC3073", "NGC3522"])
def test_read_matches_file(path):
    coadd, specobj = _file_contents(path)
    ds = read_sdss(path)
    validate(ds, frame="observed")

    assert ds.sizes["galaxy"] == 1
    gid = f"{specobj['PLATE']:04d}-{specobj['MJD']:05d}-{specobj['FIBERID']:04d}"
    assert ds["galaxy"].values.tolist() == [gid]
    assert ds["z"].values[0] == np.float64(specobj["Z"])
    assert ds["norm"].values[0] == 1.0
    assert ds["wavelength"].attrs["frame"] == "observed"
    # Vacuum wavelengths on the 1e-4 log10 lattice, equal to the file's loglam.
    wave = ds["wavelength"].values
    np.testing.assert_allclose(np.log10(wave), coadd["loglam"], atol=1e-6)
    lattice = np.log10(wave) / LOGLAM_STEP
    np.testing.assert_allclose(lattice, np.rint(lattice), atol=1e-6)
    np.testing.assert_array_equal(ds["flux"].values[0], coadd["flux"])
    np.testing.assert_array_equal(ds["ivar"].values[0], coadd["ivar"])
    # Mask and ivar agree: masked where and_mask is set or ivar is not positive.
    expected_mask = (coadd["and_mask"] != 0) | (coadd["ivar"] <= 0)
    np.testing.assert_array_equal(ds["mask"].values[0], expected_mask)
    assert np.all(ds["ivar"].values[0][~ds["mask"].values[0]] > 0)
    want = Flag(0) if specobj["CLASS"].strip() == "GALAXY" else Flag.NOT_GALAXY
    if specobj["ZWARNING"]:
        want |= Flag.REDSHIFT_WARNING
    assert ds["flags"].values[0] == int(want)
    assert ds["spectype"].values[0] == specobj["CLASS"].strip()


def test_ngc3073_is_classified_star_and_flagged():
    # SDSS's own pipeline calls NGC3073's nuclear spectrum a STAR: the flag says so.
    ds = read_sdss(NGC3073)
    assert ds["flags"].values[0] & Flag.NOT_GALAXY
    assert read_sdss(NGC3522)["flags"].values[0] == 0


def test_identify_finds_sdss():
    assert registry.identify(NGC3073) == "sdss"
    assert registry.read(NGC3522).attrs["survey"] == "sdss"


def test_bad_values_and_redshift_warning(tmp_path):
    bad = tmp_path / "spec-bad.fits"
    with fits.open(NGC3073) as hdul:
        hdul["COADD"].data["flux"][10:13] = np.nan
        hdul["COADD"].data["ivar"][20] = np.inf
        hdul["SPECOBJ"].data["ZWARNING"][0] = 4
        hdul.writeto(bad)
    ds = read_sdss(bad)
    flags = Flag(int(ds["flags"].values[0]))
    assert Flag.BAD_FLUX in flags and Flag.REDSHIFT_WARNING in flags
    for arr in (ds["flux"].values, ds["ivar"].values):
        assert np.all(np.isfinite(arr))
    assert ds["mask"].values[0, [10, 11, 12, 20]].all()
    assert np.all(ds["ivar"].values[0, [10, 11, 12, 20]] == 0)


def test_halpha_peak_in_observed_frame():
    """The observed Halpha peak divided by 1 + SPECOBJ.Z sits within a grid pixel of its vacuum wavelength."""
    _, specobj = _file_contents(NGC3073)
    ds = read_sdss(NGC3073)
    halpha = lines.wavelength("halpha")
    rest = ds["wavelength"].values / (1 + float(specobj["Z"]))
    near = np.abs(rest - halpha) < 30
    peak = rest[near][np.argmax(ds["flux"].values[0][near])]
    assert abs(peak - halpha) <= halpha * GRID.dlnlam


def test_halpha_peak_and_flux_after_preprocessing():
    """The issue's test: ingest NGC3073, go to the rest-frame grid, find Halpha."""
    from survey_denoise.preprocess import preprocess

    _, specobj = _file_contents(NGC3073)
    raw, skipped = ingest([NGC3073], "sdss", progress=False)
    assert not skipped
    assert raw["z"].values[0] == np.float64(specobj["Z"])
    rest = preprocess(raw).compute()
    validate(rest, frame="rest")
    grid_wave = rest["wavelength"].values
    halpha = lines.wavelength("halpha")
    near = np.abs(grid_wave - halpha) < 30
    peak = grid_wave[near][np.argmax(rest["flux"].values[0][near])]
    pixel = halpha * GRID.dlnlam
    assert abs(peak - halpha) <= pixel

    # Physical flux over a line-free window (whole grid pixels, 5600-5850 A rest)
    # is conserved by the resampling.  The window avoids the 5577 A sky line,
    # masked in this spectrum.  Rest-frame flux density is per rest Angstrom,
    # so its integral equals the observed one over the stretched window.
    edges = GRID.edges
    i0, i1 = np.searchsorted(edges, 5600), np.searchsorted(edges, 5850)
    rest_phys = rest["flux"].values[0] * rest["norm"].values[0]
    rest_integral = np.sum(rest_phys[i0:i1] * np.diff(edges[i0:i1 + 1]))
    assert not rest["mask"].values[0, i0:i1].any()

    z = float(specobj["Z"])
    wave = raw["wavelength"].values
    obs_edges = np.concatenate([[wave[0] / 10 ** (LOGLAM_STEP / 2)], wave * 10 ** (LOGLAM_STEP / 2)])
    cumulative = np.concatenate([[0], np.cumsum(raw["flux"].values[0] * np.diff(obs_edges))])
    lo, hi = edges[i0] * (1 + z), edges[i1] * (1 + z)
    obs_integral = np.interp(hi, obs_edges, cumulative) - np.interp(lo, obs_edges, cumulative)
    assert rest_integral == pytest.approx(obs_integral, rel=0.01)
