"""A partially covered galaxy through ``survey-denoise preprocess`` and ``fit``, stores on disk.

Two synthetic observed-frame spectra on a DESI-like range (3600-9824 A) with
known line fluxes: one at z = 0.1 covers the whole rest-frame grid, one at
z = 0.5 ends at 6549 A rest, before Halpha.  The second is kept, its blue
lines are measured and its red ones are missing (NaN, LINE_NOT_COVERED).
"""

from __future__ import annotations

import numpy as np
import pytest
from _cli import run

from survey_denoise import lines
from survey_denoise.fitting.catalogue import read_catalogue
from survey_denoise.flags import DROP, Flag
from survey_denoise.io.store import open_store, write_store
from survey_denoise.line_windows import from_bits
from survey_denoise.schema import make_spectra

OBS = np.arange(3600.0, 9824.01, 0.8)  # a DESI coadd's pixels
FLUXES = {"hbeta": 100.0, "oiii_5007": 250.0, "halpha": 300.0, "nii_6583": 90.0, "sii_6716": 60.0}
"""True line fluxes, 1e-17 erg/s/cm2 (the doublets' weaker members follow at 0.33)."""
RED = ("nii_6548", "halpha", "nii_6583", "sii_6716", "sii_6731")
"""Catalogue lines beyond 6549 A rest, not observed at z = 0.5."""


def _observed(z: float, rng) -> np.ndarray:
    """Flux density per observed Angstrom: a continuum of 5 plus Gaussian lines (sigma 100 km/s)."""
    flux = np.full(OBS.size, 5.0)
    table = lines.all_lines()
    for key, total in FLUXES.items():
        for member, share in [(key, 1.0)] + [(k, ln.doublet_ratio) for k, ln in table.items()
                                              if ln.doublet_of == key]:
            centre = lines.wavelength(member) * (1 + z)
            sigma = centre * 100.0 / 299_792.458
            flux += share * total / (sigma * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((OBS - centre) / sigma) ** 2)
    return flux + rng.normal(0.0, 0.05, OBS.size)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    d = tmp_path_factory.mktemp("partial")
    rng = np.random.default_rng(11)
    z = np.array([0.1, 0.5])
    flux = np.stack([_observed(zi, rng) for zi in z])
    raw = make_spectra(flux, np.full(flux.shape, 400.0), OBS, np.array(["full", "partial"]), z,
                       frame="observed")
    write_store(raw, d / "raw.zarr", progress=False)
    for args in (("preprocess", d / "raw.zarr", "--out", d / "rest.zarr"),
                 ("fit", d / "rest.zarr", "--out", d / "lines")):
        result = run(*args, "--workers", "1")
        assert result.returncode == 0, result.stderr
    return open_store(d / "rest.zarr"), read_catalogue(d / "lines.parquet").set_index("galaxy")


def test_the_partially_covered_galaxy_is_kept_with_its_lines_recorded(catalogue):
    rest, _ = catalogue
    flags = rest["flags"].values
    assert not np.any(flags & int(DROP))
    assert Flag(int(flags[1])) == Flag.PARTIAL_COVERAGE
    covered = dict(zip(lines.catalogue_keys(), from_bits(rest["lines_covered"].values)[1], strict=True))
    assert [k for k, c in covered.items() if not c] == list(RED)
    assert from_bits(rest["lines_covered"].values)[0].all()


def test_covered_lines_are_measured_and_uncovered_ones_are_missing(catalogue):
    _, cat = catalogue
    for galaxy in ("full", "partial"):
        row = cat.loc[galaxy]
        assert int(row["status"]) == 0
        for key in lines.catalogue_keys():
            missing = galaxy == "partial" and key in RED
            f, e, s = row[f"{key}_flux"], row[f"{key}_flux_err"], int(row[f"{key}_status"])
            if missing:
                assert np.isnan(f) and np.isnan(e) and s == Flag.LINE_NOT_COVERED, (galaxy, key, f, e, s)
            else:
                assert np.isfinite(f) and np.isfinite(e) and s == 0, (galaxy, key, f, e, s)
            if key in FLUXES and not missing:
                assert abs(f - FLUXES[key]) < 0.05 * FLUXES[key] + 4 * e, (galaxy, key, f, FLUXES[key], e)
