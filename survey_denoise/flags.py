"""Per-spectrum bit flags: why a spectrum was dropped, degraded or not fitted.

Flags accumulate along the pipeline (each stage ORs in its own bits), are
stored as ``uint32`` in the ``flags`` variable of every dataset and in the
``status`` column of every catalogue, and are never cleared.  A spectrum
with any bit of :data:`DROP` set carries no usable flux after pre-processing
(its ``ivar`` is zero everywhere) but keeps its row, so nothing is lost.
"""

from __future__ import annotations

import enum

import numpy as np


class Flag(enum.IntFlag):
    """Documented bits of the ``flags`` variable."""

    NO_REDSHIFT = 1 << 0
    """Redshift missing or not finite."""
    NEGATIVE_REDSHIFT = 1 << 1
    """Redshift below zero (blueshifted by more than peculiar velocities allow)."""
    BAD_FLUX = 1 << 2
    """Some flux or ivar values were NaN/inf; those pixels were masked."""
    NO_IVAR = 1 << 3
    """No pixel has positive inverse variance: no information at all."""
    LOW_COVERAGE = 1 << 4
    """The observed spectrum covers none of the catalogue's lines (or less of the grid than an explicit ``min_coverage``)."""
    PARTIAL_COVERAGE = 1 << 5
    """Some grid pixels lie outside the observed range (they get ivar = 0)."""
    BAD_NORM = 1 << 6
    """The normalisation factor was zero, negative or not finite."""
    REDSHIFT_WARNING = 1 << 7
    """The survey's redshift fit raised a warning (DESI ZWARN != 0, SDSS ZWARNING != 0)."""
    NOT_GALAXY = 1 << 8
    """The survey classified the object as something other than a galaxy."""
    DENOISE_FAILED = 1 << 9
    """The de-noiser returned non-finite values for this spectrum."""
    FIT_FAILED = 1 << 10
    """The line fit raised an error or did not converge."""
    FIT_NO_COVERAGE = 1 << 11
    """Too few good pixels around the lines to fit them."""
    LINE_NOT_COVERED = 1 << 12
    """Per line (catalogue column ``<key>_status``), never per spectrum: the observed
    spectrum does not cover the line with its fitting window and continuum
    (:mod:`survey_denoise.line_windows`), so the line is missing: flux and error NaN."""
    DENOISE_EXTRAPOLATED = 1 << 13
    """Some de-noised pixels were missing from the input (variable ``extrapolated``; their ivar is 0)."""
    LINE_NOT_IN_INPUT = 1 << 14
    """Per line (catalogue column ``<key>_status``) of a de-noised catalogue: the spectrum the
    de-noiser read does not detect the line (S/N below 3 in a fast fit, systematic terms
    included; the de-noised store's ``lines_detected_input``), so its de-noised value comes
    from what the model learned of similar galaxies, not from this galaxy's data."""

    FIT_PRIOR_REJECTED = 1 << 15
    """The spectrum's data reject the fast fitter's prior that its continuum is all starlight
    (an AGN's featureless continuum, a nebular one, stars unlike the templates; at the
    false-alarm probability ``fast.PRIOR_TEST``): it was fitted without that prior.  The
    fit succeeded (:data:`FIT_INFORMATIONAL`)."""

    FIT_WIDTH_AT_LIMIT = 1 << 16
    """The fast fitter's line width stopped at an end of the widths it tries
    (``fast.WIDTHS_KMS``, 42-340 km/s): the lines are at least (or at most) that wide, so
    ``line_sigma`` is a bound and has no error, and lines wider than the widest are read
    faint (on a flat continuum, Halpha 17 % low at 450 km/s, 35 % at 600).  The fit
    succeeded (:data:`FIT_INFORMATIONAL`)."""


DROP = Flag.NO_REDSHIFT | Flag.NEGATIVE_REDSHIFT | Flag.NO_IVAR | Flag.LOW_COVERAGE | Flag.BAD_NORM
"""Bits after which a spectrum carries no usable flux."""
FIT_INFORMATIONAL = Flag.FIT_PRIOR_REJECTED | Flag.FIT_WIDTH_AT_LIMIT
"""Bits of a catalogue's ``status`` that describe a fit that succeeded; any other bit is a failure."""


def describe(value: int) -> list[str]:
    """Names of the bits set in ``value``.

    Examples
    --------
    >>> describe(Flag.NO_IVAR | Flag.BAD_FLUX)
    ['BAD_FLUX', 'NO_IVAR']
    """
    return [f.name for f in Flag if int(value) & int(f)]


def count(flags: np.ndarray) -> dict[str, int]:
    """How many spectra carry each bit (bits never set are left out)."""
    flags = np.asarray(flags, dtype=np.uint32)
    out = {}
    for f in Flag:
        n = int(np.count_nonzero(flags & np.uint32(f)))
        if n:
            out[f.name] = n
    return out


def dropped(flags: np.ndarray) -> np.ndarray:
    """Boolean mask of spectra with any :data:`DROP` bit."""
    return (np.asarray(flags, dtype=np.uint32) & np.uint32(DROP)) != 0
