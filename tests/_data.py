"""Real spectra that ship inside dependencies, used by many tests."""

import importlib.resources
import importlib.util
from pathlib import Path

SDSS_DIR = Path(str(importlib.resources.files("ppxf") / "spectra"))
NGC3073 = SDSS_DIR / "NGC3073_SDSS_DR18.fits"
NGC3522 = SDSS_DIR / "NGC3522_SDSS_DR18.fits"
"""Real SDSS DR18 spec files (HDUs COADD and SPECOBJ) inside pPXF."""

DESI_DIR = Path(importlib.util.find_spec("fastspecfit").origin).parent / "test" / "data"
DESI_COADDS = [DESI_DIR / "coadd-4-80613-thru20210324.fits",
               DESI_DIR / "coadd-special-dark-27247.fits"]
"""Real DESI coadds inside fastspecfit, one target each; redrock files beside them."""
