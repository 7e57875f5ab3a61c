"""survey_denoise: de-noise survey-scale galaxy spectra and measure their lines.

The public API is re-exported here; see the README for a tour.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .flags import DROP, Flag
from .grid import GRID, Grid
from .schema import SchemaError, make_spectra, validate

__all__ = [
    "DROP",
    "Flag",
    "GRID",
    "Grid",
    "SchemaError",
    "__version__",
    "make_spectra",
    "validate",
]
