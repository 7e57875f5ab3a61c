"""The emission-line list: one versioned data file, read once.

``data/emission_lines.ecsv`` holds every line the mock survey simulates and
the fitters measure, with vacuum wavelengths taken from pPXF's own list and
the sources cited in its header.  The catalogue reports the lines flagged
``catalogue`` plus the [OII]3726+3729 doublet as the sum ``oii_3727``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
from astropy.table import Table

BLENDS: dict[str, tuple[str, ...]] = {"oii_3727": ("oii_3726", "oii_3729")}
"""Catalogue keys that are the sum of several lines (the [OII] doublet is unresolved at 276 km/s)."""


@dataclass(frozen=True)
class Line:
    """One emission line.

    Attributes
    ----------
    key : str
        Catalogue key, e.g. ``"halpha"``.
    wavelength : float
        Vacuum rest wavelength, Angstrom.
    ppxf_name : str or None
        Name of the matching gas template in pPXF, None if pPXF has none.
    doublet_of : str or None
        Key of the stronger member of a fixed-ratio doublet.
    doublet_ratio : float
        Flux of this line over that of ``doublet_of`` (0 if not a member).
    case_b : float
        Case-B flux relative to H-beta (0 for metal lines).
    label : str
        Human-readable label.
    """

    key: str
    wavelength: float
    ppxf_name: str | None
    doublet_of: str | None
    doublet_ratio: float
    case_b: float
    label: str


@cache
def line_table() -> Table:
    """The line list as an astropy Table (wavelength in Angstrom)."""
    path = resources.files("survey_denoise") / "data" / "emission_lines.ecsv"
    with resources.as_file(path) as p:
        return Table.read(p, format="ascii.ecsv")


@cache
def all_lines() -> dict[str, Line]:
    """Every line in the list, keyed by catalogue key, in wavelength order of the file."""
    out = {}
    for row in line_table():
        out[str(row["key"])] = Line(
            key=str(row["key"]),
            wavelength=float(row["wavelength"]),
            ppxf_name=None if row["ppxf_name"] == "-" else str(row["ppxf_name"]),
            doublet_of=None if row["doublet_of"] == "-" else str(row["doublet_of"]),
            doublet_ratio=float(row["doublet_ratio"]),
            case_b=float(row["case_b"]),
            label=str(row["label"]),
        )
    return out


@cache
def catalogue_keys() -> tuple[str, ...]:
    """Keys reported in the line-flux catalogue, blends included, in wavelength order."""
    lines = all_lines()
    keys = [k for k in lines if bool(line_table()[list(lines).index(k)]["catalogue"])]
    keys += list(BLENDS)
    return tuple(sorted(keys, key=wavelength))


def wavelength(key: str) -> float:
    """Vacuum rest wavelength of a line or blend, Angstrom (flux-weighted-free mean for a blend)."""
    if key in BLENDS:
        return float(np.mean([all_lines()[k].wavelength for k in BLENDS[key]]))
    try:
        return all_lines()[key].wavelength
    except KeyError:
        raise KeyError(f"unknown line key {key!r}; known: {sorted(all_lines()) + list(BLENDS)}") from None


def components(key: str) -> tuple[str, ...]:
    """The lines whose fluxes add up to catalogue key ``key``."""
    return BLENDS.get(key, (key,))
