"""The DESI noise curve: median noise per observed pixel of real DESI coadds.

Builds the table :class:`~survey_denoise.noise.models.DesiNoise` reads
(``data/desi_noise.ecsv``); ``survey-denoise noise-curve COADD...`` runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..resample import good_pixels


def build_desi_curve(coadds: Sequence[str | Path]):
    """Median noise of DESI coadds per observed pixel, as an astropy Table.

    Each coadd is read with :func:`survey_denoise.io.desi.read_desi` (arms
    merged by inverse-variance weighting); sigma = 1 / sqrt(ivar) of every
    good pixel (mask 0, ivar > 0) of every target, and per wavelength the
    median and 16th / 84th percentiles over the targets.  Wavelengths that no
    target covers are filled by linear interpolation (``n_spectra`` = 0).
    """
    from astropy.table import Table

    from ..io.desi import read_desi

    if not coadds:
        raise ValueError("build_desi_curve needs at least one coadd")
    reads = [read_desi(c) for c in coadds]
    wave = reads[0]["wavelength"].values
    for ds in reads[1:]:
        wave = np.union1d(wave, ds["wavelength"].values)
    rows = []
    for ds in reads:
        block = np.full((ds.sizes["galaxy"], wave.size), np.nan)
        good = good_pixels(ds["flux"].values, ds["ivar"].values, ds["mask"].values)
        sigma = np.where(good, 1.0 / np.sqrt(np.where(good, ds["ivar"].values, 1.0)), np.nan)
        block[:, np.searchsorted(wave, ds["wavelength"].values)] = sigma
        rows.append(block)
    sigma = np.vstack(rows)
    n = np.sum(np.isfinite(sigma), axis=0)
    stats = {}
    covered = n > 0
    for name, q in (("sigma_median", 50), ("sigma_p16", 16), ("sigma_p84", 84)):
        values = np.full(wave.size, np.nan)
        values[covered] = np.nanpercentile(sigma[:, covered], q, axis=0)
        values[~covered] = np.interp(wave[~covered], wave[covered], values[covered])
        stats[name] = np.float32(values)
    table = Table({"wavelength": wave, **stats, "n_spectra": n.astype(np.int32)})
    table["wavelength"].unit = "Angstrom"
    table["wavelength"].description = "observed-frame vacuum wavelength (DESI coadd pixel centre)"
    for name, what in (("sigma_median", "median"), ("sigma_p16", "16th percentile"),
                       ("sigma_p84", "84th percentile")):
        table[name].unit = "1e-17 erg / (s cm2 Angstrom)"
        table[name].description = f"{what} over targets of 1/sqrt(ivar) per DESI pixel"
    table["n_spectra"].description = "targets with a good pixel here (0: interpolated)"
    table.meta.update({
        "title": "DESI-like noise per observed pixel for survey_denoise.noise.DesiNoise",
        "version": 1,
        "sources": ["DESI Collaboration spectra (https://data.desi.lbl.gov), as the coadd and redrock "
                    "test files of fastspecfit (github.com/desihub/fastspecfit, test/data):"]
                   + [f"{Path(c).name} ({int(ds.sizes['galaxy'])} target(s), redshifts from the redrock file "
                    "beside it)" for c, ds in zip(coadds, reads, strict=True)],
        "method": "sigma = 1/sqrt(ivar) of good pixels of every target (B, R, Z arms merged by "
                  "inverse-variance weighting, survey_denoise.io.desi.read_desi); median and "
                  "16/84th percentiles over targets per wavelength",
        "command": "survey-denoise noise-curve " + " ".join(Path(c).name for c in coadds),
        "n_targets": int(sigma.shape[0]),
    })
    exptimes = np.concatenate([np.asarray(ds["fibermap_coadd_exptime"].values, dtype=np.float64)
                               for ds in reads if "fibermap_coadd_exptime" in ds])
    exptimes = exptimes[np.isfinite(exptimes) & (exptimes > 0)]
    if exptimes.size:
        # Raw coadd exposure time stands in for effective time: the coadds do
        # not carry EFFTIME, and DesiNoise(exptime=...) needs only a depth.
        table.meta["exptime"] = round(float(np.median(exptimes)), 1)
        table.meta["exptime_note"] = ("median COADD_EXPTIME (s) of the targets; DesiNoise(exptime=t) "
                                      "multiplies sigma by sqrt(exptime / t)")
    return table


def write_curve(table, path: str | Path) -> Path:
    """Write a noise curve as ECSV (wavelengths to 1e-4 A, sigmas to 5 significant digits)."""
    path = Path(path)
    table = table.copy()
    table["wavelength"][:] = np.round(np.asarray(table["wavelength"], dtype=np.float64), 4)
    for name in ("sigma_median", "sigma_p16", "sigma_p84"):
        table[name][:] = [float(f"{v:.5g}") for v in np.asarray(table[name])]
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path
