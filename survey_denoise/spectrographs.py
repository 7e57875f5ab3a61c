"""The surveys' spectrographs: the resolving power each records its spectra at.

One place for what the mock needs to blur its spectra
(:mod:`survey_denoise.mock.instrument`) and what the fast fitter needs to
centre its line-width prior (:func:`survey_denoise.fitting.fast.survey_width_prior`).
"""

from __future__ import annotations

from .grid import C_KMS

FWHM_PER_SIGMA = 2.3548
"""FWHM of a Gaussian over its sigma, 2 sqrt(2 ln 2) (line spread functions and line profiles alike)."""

RESOLUTION = {"sdss": 2000.0, "desi": 3000.0}
"""Resolving power R = lambda / FWHM of each survey's spectrograph.

SDSS (DR7 spectrographs): R ~ 1850-2200 over 3800-9200 A.  DESI: ~2000 at
3600 A to ~5000 at 9800 A (FWHM ~ 1.8 A throughout); 3000 is its value
where the catalogued lines of low-redshift galaxies fall (3800-6900 A
observed, R ~ 2100-3800)."""


def sigma_kms(resolution: float) -> float:
    """Gaussian sigma (km/s) of a line spread function of resolving power ``resolution``."""
    return C_KMS / resolution / FWHM_PER_SIGMA


def instrument_sigma_kms(survey: str | None) -> float | None:
    """Instrumental sigma (km/s) of ``survey``'s spectrograph, or None for an unknown survey."""
    resolution = RESOLUTION.get(str(survey).lower()) if survey is not None else None
    return None if resolution is None else sigma_kms(resolution)
