"""The surveys' spectrographs: the resolving power each records its spectra at.

One place for what the mock needs to blur its spectra
(:mod:`survey_denoise.mock.instrument`), what the fast fitter needs to
centre its line-width prior (:func:`survey_denoise.fitting.fast.survey_width_prior`)
and what a line's width on the grid is made of (:func:`sigma_on_grid`).
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


def native_pixel_kms(wavelength) -> float:
    """Velocity width (km/s) of a log-uniform spectrum's pixels, from their centres (Angstrom)."""
    import numpy as np

    return C_KMS * float(np.median(np.diff(np.log(np.asarray(wavelength, np.float64)))))


def sigma_on_grid(sigma_gas_kms, survey: str, native_wavelength=None):
    """A line's Gaussian sigma (km/s) as the fitters see it on the rest-frame grid (``line_sigma``).

    The gas and the survey's instrument in quadrature and, for spectra
    rebinned onto the grid from pixels centred on ``native_wavelength``
    (log-uniform), the native pixel: pre-processing averages those pixels,
    which convolves each line with one of them, a boxcar of variance
    ``dv^2 / 12``.  None: the lines were drawn on the grid itself (the
    rest-frame mock).
    """
    import numpy as np

    pixel = 0.0 if native_wavelength is None else native_pixel_kms(native_wavelength)
    return np.sqrt(np.asarray(sigma_gas_kms, np.float64) ** 2 + instrument_sigma_kms(survey) ** 2 + pixel**2 / 12.0)
