"""Which emission lines a spectrum covers: one window rule for pre-processing and both fitters.

A line is *covered* by a spectrum when the spectrum has good pixels
(``ivar > 0``, not masked) over

* the line's fitting window, ``centre +- LINE_HALF_WIDTH_KMS``: at least
  :data:`MIN_LINE_GOOD` of the pixels whose centres lie in it, and
* continuum on both sides, the next :data:`CONTINUUM_KMS` beyond each end
  of that window: at least :data:`MIN_CONTINUUM_GOOD` of those pixels on
  *each* side (a line at the edge of the observed range has a profile but
  no continuum to set its base, so it is not measured).

Lines tied by a fixed flux ratio (the [OIII], [NII] and [OI] doublets of
:mod:`survey_denoise.lines`, fitted as one template) and the members of a
blend ([OII]3726+3729) are measured together, so a catalogue key is covered
only when every line it is tied to is (:func:`tied_lines`).

Per galaxy the covered catalogue keys are stored as a bit mask,
``lines_covered`` (uint32, bit ``i`` = :func:`survey_denoise.lines.catalogue_keys`
``[i]``; :func:`to_bits`, :func:`from_bits`, :func:`lines_covered_attrs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from . import lines
from .grid import C_KMS

LINE_HALF_WIDTH_KMS = 700.0
"""Half-width of a line's fitting window, km/s: 2.9 sigma of the widest profile the fast fitter tries (240 km/s)."""
CONTINUUM_KMS = 1000.0
"""Continuum needed on each side of the fitting window, km/s (3.6 pixels of the 825-pixel grid)."""
MIN_LINE_GOOD = 0.75
"""Least fraction of good pixels inside the fitting window (isolated masked pixels are tolerated)."""
MIN_CONTINUUM_GOOD = 0.5
"""Least fraction of good pixels in the continuum window on each side."""


@cache
def tied_lines(key: str) -> tuple[str, ...]:
    """Every line fitted together with catalogue key ``key``: blend members and fixed-ratio partners.

    Examples
    --------
    >>> tied_lines("nii_6583")
    ('nii_6548', 'nii_6583')
    """
    lines.wavelength(key)  # an unknown key: a KeyError that lists the known ones
    table = lines.all_lines()
    out = set()
    for member in lines.components(key):
        head = table[member].doublet_of or member
        out.add(head)
        out.update(k for k, line in table.items() if line.doublet_of == head)
    return tuple(sorted(out, key=lines.wavelength))


def window(centre: float) -> tuple[float, float, float, float]:
    """Edges of the windows of a line at rest wavelength ``centre`` (Angstrom): continuum start,
    line start, line end, continuum end, Angstrom."""
    line = LINE_HALF_WIDTH_KMS / C_KMS
    outer = (LINE_HALF_WIDTH_KMS + CONTINUUM_KMS) / C_KMS
    return centre * (1 - outer), centre * (1 - line), centre * (1 + line), centre * (1 + outer)


def in_windows(wavelength: np.ndarray, centres: Sequence[float]) -> np.ndarray:
    """Pixels inside the fitting window of any line at ``centres`` (rest, Angstrom), shape (n_pix,).

    A fitter leaves these out for a line it does not fit because the
    spectrum does not cover it: the line's flux is in them but not in the
    model, and the continuum would bend to it.
    """
    wavelength = np.asarray(wavelength, np.float64)
    out = np.zeros(wavelength.shape, bool)
    for centre in centres:
        _, lo, hi, _ = window(centre)
        out |= (wavelength >= lo) & (wavelength <= hi)
    return out


def _fraction(good: np.ndarray, inside: np.ndarray) -> np.ndarray:
    n = int(inside.sum())
    if n == 0:
        return np.zeros(good.shape[0])
    return good[:, inside].sum(axis=1) / n


def covered_at(wavelength: np.ndarray, good: np.ndarray, centre: float) -> np.ndarray:
    """Whether each spectrum covers a single line at rest wavelength ``centre`` (Angstrom).

    Parameters
    ----------
    wavelength : ndarray, shape (n_pix,)
        Rest-frame pixel centres, Angstrom (any increasing axis: the grid or a native one).
    good : ndarray of bool, shape (n_galaxy, n_pix)
        Usable pixels (``ivar > 0`` and not masked).
    centre : float
        Rest wavelength of the line, Angstrom.

    Returns
    -------
    ndarray of bool, shape (n_galaxy,)
    """
    wavelength = np.asarray(wavelength, np.float64)
    good = np.atleast_2d(np.asarray(good, bool))
    c0, l0, l1, c1 = window(centre)
    return ((_fraction(good, (wavelength >= l0) & (wavelength <= l1)) >= MIN_LINE_GOOD)
            & (_fraction(good, (wavelength >= c0) & (wavelength < l0)) >= MIN_CONTINUUM_GOOD)
            & (_fraction(good, (wavelength > l1) & (wavelength <= c1)) >= MIN_CONTINUUM_GOOD))


def covered_lines(wavelength: np.ndarray, good: np.ndarray, keys: Sequence[str] | None = None) -> np.ndarray:
    """Which lines each spectrum covers, tied lines together (the rule of the module notes).

    Parameters
    ----------
    wavelength : ndarray, shape (n_pix,)
        Rest-frame pixel centres, Angstrom.
    good : ndarray of bool, shape (n_galaxy, n_pix)
        Usable pixels (``ivar > 0`` and not masked).
    keys : sequence of str, optional
        Line or catalogue keys (default :func:`survey_denoise.lines.catalogue_keys`).

    Returns
    -------
    ndarray of bool, shape (n_galaxy, n_keys)
    """
    good = np.atleast_2d(np.asarray(good, bool))
    keys = lines.catalogue_keys() if keys is None else tuple(keys)
    single: dict[str, np.ndarray] = {}
    out = np.ones((good.shape[0], len(keys)), bool)
    for j, key in enumerate(keys):
        for member in tied_lines(key):
            if member not in single:
                single[member] = covered_at(wavelength, good, lines.wavelength(member))
            out[:, j] &= single[member]
    return out


def to_bits(covered: np.ndarray) -> np.ndarray:
    """Pack (n_galaxy, n_catalogue_keys) booleans into ``lines_covered`` (uint32, bit i = key i)."""
    covered = np.atleast_2d(np.asarray(covered, bool))
    weights = (np.uint32(1) << np.arange(covered.shape[1], dtype=np.uint32)).astype(np.uint32)
    return (covered.astype(np.uint32) * weights).sum(axis=1, dtype=np.uint32)


def from_bits(bits: np.ndarray, keys: Sequence[str] | None = None) -> np.ndarray:
    """Unpack ``lines_covered`` into booleans (n_galaxy, n_keys) for catalogue keys ``keys``."""
    order = lines.catalogue_keys()
    keys = order if keys is None else tuple(keys)
    bits = np.asarray(bits, np.uint32).reshape(-1)
    return np.stack([(bits >> np.uint32(order.index(k))) & np.uint32(1) for k in keys], axis=1).astype(bool)


def lines_covered_attrs() -> dict[str, object]:
    """Attributes of the ``lines_covered`` variable (CF flag conventions: masks and meanings)."""
    keys = lines.catalogue_keys()
    return {"units": "1", "long_name": "catalogue lines the observed spectrum covers",
            "flag_masks": [1 << i for i in range(len(keys))], "flag_meanings": " ".join(keys),
            "rule": (f"line +- {LINE_HALF_WIDTH_KMS:g} km/s ({MIN_LINE_GOOD:g} of pixels good) and "
                     f"{CONTINUUM_KMS:g} km/s of continuum on each side ({MIN_CONTINUUM_GOOD:g} good); "
                     "survey_denoise.line_windows")}
