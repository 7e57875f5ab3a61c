"""The fast batched line fitter: one shared design matrix, thousands of spectra at once.

On the fixed rest-frame grid every spectrum is modelled as a linear
combination of the same columns:

* **line groups** — a pixel-integrated Gaussian of fixed velocity width per
  line (unit integral in Angstrom, so a coefficient is an integrated flux);
  the fixed-ratio doublets of :mod:`survey_denoise.lines` ([OIII], [NII],
  [OI]) are one column each, as in pPXF, and the [OII]3726,3729 blend is one
  column with a 1:1 ratio (unresolved at 276 km/s; only the sum is reported);
* **continuum** — Legendre polynomials in log(lambda) up to degree
  :data:`POLY_DEGREE` and the first :data:`N_PCA` principal components of
  the BC03 + MILES stellar templates (each broadened to the dispersions of
  :data:`SIGMA_STAR_KMS`); optionally the first :data:`N_MULTIPLIED`
  components times the polynomials of degree >= 1 (see there).

All these columns are additive, but dust and flux calibration multiply
the stellar features: on noise-free mock spectra a fit with them alone
reads faint Balmer lines low (Hα by up to 0.19 dex in the faintest bins of
true flux, where pPXF, whose polynomial multiplies, is within 0.01).  So
:func:`fit_batch` fits twice.  The first pass, at one width, gives each
spectrum's continuum model ``c``; the second replaces the polynomials of
degree >= 1 by ``c`` times them (``c`` over its median): one Gauss-Newton
step from the additive fit towards pPXF's ``stars x (1 + polynomial)``.
Those four columns differ between spectra, so their entries of the normal
matrices are summed with weights ``w * c`` or ``w * c**2`` instead of
``w`` (:func:`_scaled_count`); everything else is shared as before.  On
noise-free mock spectra it left Hα and Hβ within 0.025 dex of the truth
in every bin for Hα formal errors 6-7 % larger, and it reads de-noised
spectra as pPXF does (``benchmarks/continuum_basis.py``,
docs/line_errors.md).  With the width prior the faintest bins of Halpha
and Hbeta on deep Balmer absorption read 0.04-0.05 dex low: held near
their true width, they show a continuum bias that a width free to widen
had hidden (0.02-0.03 dex with the prior below).  On the
real spectra that ship with pPXF and fastspecfit it read bright lines
1-22 % below pPXF (Hbeta of NGC3522 41 %): with pPXF's stars subtracted
the lines and polynomials alone agree with pPXF, so the stellar columns
take part of the Balmer emission where they do not span the real
continuum.  So the second pass holds the stellar weights to a prior
(:data:`WEIGHTS_PRIOR`, :func:`template_weights`) that ties the starlight
to the continuum level, as pPXF's templates, with no additive polynomial,
are tied: it brings most of those lines to within 1-7 % of pPXF's
(NGC3522's Hbeta 19 %).  It assumes the continuum is all stars, as pPXF
does; ``weights_prior=None`` fits without it (a featureless AGN
continuum), and ``prior_test`` fits without it only the spectra whose
data reject it (:data:`PRIOR_TEST`).  The mock does not have the real
spectra's difference, and :mod:`.systematics` is calibrated on the mock.

A line column enters a spectrum's system only where the spectrum covers
its lines, with continuum on both sides (:mod:`survey_denoise.line_windows`);
elsewhere the line is NaN, never 0, and the pixels of its fitting window
are left out: the line's flux is in them but not in the model, and the
continuum would bend to it (an Hα cut at 6585 Å took Hβ 11 % low with the
additive pass, 60 % low with two).

The weighted normal equations ``(A^T W A) x = A^T W y`` are formed for a
batch with batched matrix products and solved through the inverse of
``A^T W A``, by blocks: the continuum block is the same for every line
width, so it is inverted once and each width inverts only the lines'
Schur complement.  Line fluxes are kept non-negative, as pPXF keeps
them, by an active-set loop: lines with a negative flux are removed from
that spectrum's system and it is solved again (a few passes; exact NNLS
would also re-admit removed lines, which matters only for lines at S/N < 1).
Removing a column downdates the inverse by a rank-one step instead of
inverting again, since small batched inverses are the fitter's largest cost.
Errors are the square roots of the diagonal of ``(A^T W A)^-1`` for the
final set (for a removed line: from the first, unconstrained solve).
``fit_batch(..., nonnegative=False)`` skips that loop and returns signed
fluxes: their errors are unbiased Gaussian ones, which the de-noiser's
calibration of line errors needs (differences of fluxes clipped at 0
understate the error of faint lines).

Line widths differ between galaxies (gas dispersion plus instrument), so
the fit is repeated for each width in :data:`WIDTHS_KMS`; per spectrum the
chi^2 of the best width and its neighbours, matched to the known chi^2
curve of a line fitted at the wrong width (:func:`width_response`), gives
the width, and the fluxes are interpolated there.  That reading is
combined with a log-normal prior on the width (:data:`WIDTH_PRIOR`), so
that a spectrum whose lines are all faint takes a typical width instead of
one set by its noise.  The width is fitted, so the flux errors include its
uncertainty (:func:`_best_width`).

Everything here is numpy; pass ``xp=cupy`` to :func:`fit_batch` to run the
same algebra on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.special import erf

from .. import lines
from ..flags import Flag
from ..grid import C_KMS, GRID, Grid
from ..line_windows import covered_lines, in_windows
from ..spectrographs import instrument_sigma_kms

WIDTH_LIMIT_TOLERANCE = 0.005
"""A fitted width within this fraction of the narrowest or widest tried one is at the limit (``Flag.FIT_WIDTH_AT_LIMIT``)."""
WIDTHS_KMS = (42.0, 60.0, 85.0, 120.0, 170.0, 240.0, 340.0)
"""Gaussian line widths (sigma, km/s) tried; each spectrum's is refined between them.

Steps of sqrt(2) over the mock's lines, gas and instrument together: from
below the narrowest (sigma_gas >= 25 km/s at the DESI-like R = 3000:
49 km/s) to above its AGN (sigma_gas 10^(2.25 +- 0.1): 3 sigma is 355 km/s
at the SDSS-like R = 2000).  A width outside the range stops at its end:
with 60-240 km/s, 40 % of DESI-like spectra stopped at 60 km/s and the
broadest AGN lines at 240 km/s (one at 295 km/s read 9 % faint, now
0.2 %)."""
WIDTH_PRIOR = (80.0, 0.35)
"""Log-normal prior on a spectrum's line width: median sigma (km/s) and spread in ln sigma.

Where every line of a spectrum is faint its chi^2 barely changes with the
width, so the width was set by noise, and a faint line fitted at a random
width takes a random flux (wider: more continuum noise under it).  On the
noise-added Table 6 spectra the widths spread 1.15 in ln sigma about the
truth and a fifth stopped at each end of :data:`WIDTHS_KMS`; with the
prior 0.22-0.25, and noise-dominated fluxes scatter 20-35 % less, their
pulls 0.95-1.04 (``benchmarks/width_prior.py``).  The prior is the population of
emission-line widths: ionised gas of star-forming galaxies, sigma_gas ~
40-100 km/s (HII-region kinematics; the mock's 10^(1.8 +- 0.1)), with an
instrument of sigma 25-65 km/s (DESI's R = 2000-5500, SDSS's R ~ 2000),
about 80 km/s together, and 0.35 in ln (68 % within 56-113 km/s) takes
both surveys and the gas in it.  A bright line's chi^2 outweighs it (an
AGN Halpha of 290 km/s at S/N 40, 3.7 spreads away, reads 1 % narrow and
0.5 % faint), but a line off the centre at moderate S/N is pulled towards
it, by an amount its stated errors set (140 km/s at S/N 6: about 9 % faint).
So :func:`survey_denoise.fitting.fit_lines` leaves de-noised spectra
without it: they have no pixel noise for a width to follow, and their
errors are the de-noiser's.  Where the store's instrument is known,
:func:`survey_width_prior` centres the prior on it instead; this median is
for spectra of an unknown one.  See docs/line_errors.md."""
GAS_SIGMA_KMS = 63.0
"""Typical velocity dispersion (sigma, km/s) of the ionised gas in a fibre spectrum.

Star-forming galaxies' integrated H-alpha dispersions cluster at 40-100
km/s (HII-region turbulence plus disc rotation inside the fibre; e.g. Law
et al. 2022, ApJ 928, 58, for MaNGA); log sigma = 1.8 is their middle, as
in the mock's population (``data/mock_priors.yaml``, ``sigma_gas``)."""


def survey_width_prior(survey: str | np.ndarray | None) -> tuple[float | np.ndarray, float]:
    """The width prior for spectra recorded by a survey's spectrograph.

    An observed line's sigma is the gas's and the instrument's in
    quadrature, so the prior's median is ``hypot(GAS_SIGMA_KMS,
    sigma_inst)`` with the spectrograph of
    :data:`survey_denoise.spectrographs.RESOLUTION` (SDSS R = 2000: 90
    km/s; DESI, R = 3000 where the catalogued lines fall: 76 km/s), and its
    spread is :data:`WIDTH_PRIOR`'s.  A single median for both surveys (80
    km/s) read SDSS-like faint lines 4-6 % narrow (``benchmarks/width_prior.py``)
    and the faintest noise-free Halpha bins 0.062 dex low, against 0.041
    centred (``benchmarks/continuum_basis.py``); the wider profile costs
    2-4 % more scatter in noise-dominated fluxes (docs/line_errors.md).

    Parameters
    ----------
    survey : str, ndarray of str, or None
        One survey for all spectra or one per spectrum; an unknown survey
        (or None) takes :data:`WIDTH_PRIOR`'s median.

    Returns
    -------
    (median, spread)
        Median sigma (km/s; an array (n,) for an array of surveys) and the
        spread in ln sigma, as ``fit_batch(width_prior=...)`` takes them.
    """
    def one(name) -> float:
        inst = instrument_sigma_kms(name)
        return float(np.hypot(GAS_SIGMA_KMS, inst)) if inst is not None else WIDTH_PRIOR[0]

    if survey is None or isinstance(survey, str):
        return one(survey), WIDTH_PRIOR[1]
    names = np.asarray(survey).reshape(-1)
    table = {name: one(name) for name in set(names.tolist())}
    return np.array([table[name] for name in names.tolist()], float), WIDTH_PRIOR[1]


N_PCA = 10
"""Stellar principal components in the continuum basis."""
POLY_DEGREE = 4
"""Highest degree of the Legendre polynomials in the continuum basis."""
N_MULTIPLIED = 0
"""Leading stellar components also multiplied by each Legendre polynomial of degree >= 1.

A linearised multiplicative polynomial.  Measured on mock spectra
(``python benchmarks/continuum_basis.py``), 20 components with 2 multiplied
cut the largest faint-bin bias of Hα / Hβ from 0.19 / 0.16 dex to 0.04 /
0.03, but each product frees the depth of the Balmer troughs near one line
from the rest of the spectrum, so it trades with that line's flux: the Hα
error on a flat continuum rose from 1.02 to 1.54 times the Cramér-Rao bound,
and bright Hα and Hβ were read 1 % lower.  So none is used by default."""
WEIGHTS_PRIOR = 10.0
"""Width of the prior on the stellar weights in the second pass (``fit_batch(weights_prior=)``), in the templates' spreads.

The second pass can trade the stellar light for the additive constant
and mix the components into shapes no template has, such as a Balmer
series in emission; where the components do not span a real continuum it
does, and reads Balmer lines low.  The prior (:func:`template_weights`)
ties the stellar weights to the first pass's continuum level, as pPXF,
with no additive polynomial, ties its templates.  On the real spectra
inside pPXF and fastspecfit it brings most bright lines to within 1-7 % of
pPXF's (NGC3522's Hβ 0.59 → 0.81), the same at 10 to 100 spreads, and
halves the mock's faint Hα and Hβ biases; at 1 the mock's faint lines pay
for it.  It assumes the whole continuum is stellar, as pPXF does: a
featureless one (a flat test continuum, an AGN's power law) is read as
stars and its lines biased, so fit those with ``weights_prior=None``, or
test the prior per spectrum (:data:`PRIOR_TEST`) (``python
benchmarks/continuum_basis.py``; docs/line_errors.md, *A prior on the
stellar weights*)."""
PRIOR_TEST = 1e-3
"""False-alarm probability of ``fit_batch(prior_test=)``, the test of the stellar-weights prior, where it is asked for.

The prior (:data:`WEIGHTS_PRIOR`) assumes that all of the continuum is
starlight.  Where it is not (an AGN's featureless continuum, a nebular
continuum) it puts stellar absorption under the Balmer lines that the data
do not have, and their fluxes come out high: with a power law of 10 % or
25 % of the light at 5100 A, Halpha's mean pull on the SDSS-like mock is
+0.5 or +1.9 (pPXF, whose continuum is all templates, is biased more).
The data say so through the chi^2 the prior costs them: each spectrum is
fitted again at its chosen width without the prior, and where the rise of
the data's chi^2 (over the free fit's chi^2 per degree of freedom where
that is above 1) exceeds the ``1 - p`` quantile of a chi^2 with one degree
of freedom per stellar weight (29.6 for 10), it is fitted without the
prior and flagged ``FIT_PRIOR_REJECTED``.  It refits 2 % of the mock's
spectra without a power law, 45 % with one of 25 %, and takes most of
their bias away; a power law of 10 % costs the data too little to be seen.
Not on by default: two of the four real spectra that ship with pPXF and
fastspecfit reject the prior too (template mismatch looks the same to the
test), and without it NGC3522's Hbeta falls back to 0.59 of pPXF's
(docs/line_errors.md, *When the continuum is not all starlight*;
``python benchmarks/featureless_continuum.py``)."""
SIGMA_STAR_KMS = (60.0, 150.0, 300.0)
"""Stellar velocity dispersions (km/s) the templates are broadened to before the PCA."""
BLEND_SHARES = {"oii_3727": (0.5, 0.5)}
"""Flux shares of the members of a blend fitted as one column."""
MIN_GOOD_FRACTION = 0.3
"""A spectrum with fewer good pixels than this fraction is not fitted (FIT_NO_COVERAGE)."""
BATCH = 256
"""Spectra per batched solve (bounds memory: BATCH x npix x n_columns float64)."""


@dataclass(frozen=True)
class LineGroup:
    """One line column: members and their shares of the column's flux."""

    name: str
    members: tuple[str, ...]
    shares: tuple[float, ...]


@cache
def line_groups() -> tuple[LineGroup, ...]:
    """Line columns derived from the line list: fixed doublets together, blends together."""
    table = lines.all_lines()
    in_blend = {m: b for b, ms in lines.BLENDS.items() for m in ms}
    groups, done = [], set()
    for key, line in table.items():
        if key in done or line.doublet_of is not None:
            continue
        if key in in_blend:
            blend = in_blend[key]
            members = lines.BLENDS[blend]
            groups.append(LineGroup(blend, members, BLEND_SHARES[blend]))
            done.update(members)
            continue
        partners = [(k, m.doublet_ratio) for k, m in table.items() if m.doublet_of == key]
        total = 1.0 + sum(r for _, r in partners)
        groups.append(LineGroup(key, (key,) + tuple(k for k, _ in partners),
                                (1.0 / total,) + tuple(r / total for _, r in partners)))
        done.add(key)
    return tuple(groups)


def gaussian_profile(edges: np.ndarray, centre: float, sigma_kms: float) -> np.ndarray:
    """A unit-integral Gaussian averaged over pixels (1/Angstrom per pixel).

    Parameters
    ----------
    edges : ndarray (npix + 1,)
        Pixel edges, Angstrom.
    centre : float
        Line centre, Angstrom.
    sigma_kms : float
        Gaussian sigma, km/s.
    """
    s = centre * sigma_kms / C_KMS
    cdf = 0.5 * (1.0 + erf((edges - centre) / (np.sqrt(2.0) * s)))
    return np.diff(cdf) / np.diff(edges)


@cache
def _templates_on_grid(grid: Grid) -> np.ndarray:
    """The stellar templates at each of :data:`SIGMA_STAR_KMS`, on ``grid``, each over its mean, (n_t, npix)."""
    from scipy.ndimage import gaussian_filter1d

    from ..resample import rebin_samples as rebin
    from .templates import stellar_templates

    fine = 4  # template pixels per grid pixel before broadening
    stars = stellar_templates(grid.velscale, fine, (grid.edges[0] * 0.99, grid.edges[-1] * 1.01))
    wave = np.exp(stars.ln_lam)
    spectra = np.concatenate([gaussian_filter1d(stars.templates.T, s / stars.velscale, axis=1)
                              for s in SIGMA_STAR_KMS])
    on_grid = rebin(wave, spectra, np.asarray(grid.edges))
    on_grid /= on_grid.mean(axis=1, keepdims=True)
    on_grid.flags.writeable = False
    return on_grid


@cache
def continuum_basis(grid: Grid = GRID, n_pca: int = N_PCA, poly_degree: int = POLY_DEGREE,
                    n_multiplied: int = N_MULTIPLIED) -> np.ndarray:
    """Continuum columns on ``grid``: Legendre polynomials, stellar PCA eigen-spectra, and their products.

    Returns
    -------
    ndarray (npix, poly_degree + 1 + n_pca + n_multiplied * poly_degree), read-only
        The polynomials of degree 0 to ``poly_degree`` (first, so that
        :func:`fit_batch`'s second pass finds them at the same place for
        any ``n_pca``), the eigen-spectra, then each of the first
        ``n_multiplied`` eigen-spectra times the polynomials of degree 1 to
        ``poly_degree``.
    """
    _, _, vt = np.linalg.svd(_templates_on_grid(grid), full_matrices=False)
    x = np.linspace(-1.0, 1.0, grid.npix)
    poly = np.polynomial.legendre.legvander(x, poly_degree)
    pcs = vt[:n_pca].T * np.sqrt(grid.npix)
    basis = np.column_stack([poly, pcs] + [pcs[:, [j]] * poly[:, 1:] for j in range(n_multiplied)])
    basis.flags.writeable = False
    return basis


@cache
def template_weights(grid: Grid = GRID) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stellar components' weights in the templates themselves: their mean and covariance.

    Returns
    -------
    mean : ndarray (n_pca,)
        Mean weight of each eigen-spectrum of :func:`continuum_basis` over the
        templates (each over its mean flux, at every :data:`SIGMA_STAR_KMS`).
    precision : ndarray (n_pca, n_pca)
        Inverse of the weights' covariance over the templates.
    mean_spectrum : ndarray (npix,)
        ``mean`` times the eigen-spectra: the templates' mean (mean flux 1).
    """
    basis = continuum_basis(grid)
    pcs = basis[:, POLY_DEGREE + 1:POLY_DEGREE + 1 + N_PCA]
    weights = _templates_on_grid(grid) @ pcs / grid.npix   # the eigen-spectra have norm sqrt(npix)
    mean = weights.mean(0)
    return mean, np.linalg.inv(np.cov(weights.T)), pcs @ mean


def group_profile(edges: np.ndarray, group: LineGroup, sigma_kms: float) -> np.ndarray:
    """One line column: its members' unit-integral Gaussians weighted by their shares (1/Angstrom per pixel)."""
    return sum(f * gaussian_profile(edges, lines.wavelength(m), sigma_kms)
               for m, f in zip(group.members, group.shares, strict=True))


@cache
def design_matrix(sigma_kms: float, grid: Grid = GRID) -> tuple[np.ndarray, tuple[LineGroup, ...]]:
    """Line columns (one per group inside the grid) followed by the continuum columns.

    Returns
    -------
    matrix : ndarray (npix, n_lines + n_continuum), read-only
    groups : tuple of LineGroup
        The line columns, in order.
    """
    edges = np.asarray(grid.edges)
    groups, cols = [], []
    for g in line_groups():
        if not all(edges[0] < lines.wavelength(m) < edges[-1] for m in g.members):
            continue
        cols.append(group_profile(edges, g, sigma_kms))
        groups.append(g)
    matrix = np.column_stack(cols + [continuum_basis(grid)])
    matrix.flags.writeable = False
    return matrix, tuple(groups)


def _solve_one_width(a, n_lines, y, w, xp, normal=None, covered=None, continuum_inverse=None,
                     nonnegative=True, scale=None, prior_rhs=None):
    """Batched weighted least squares with non-negative line columns (signed: ``nonnegative=False``).

    ``normal`` is the upper triangle of ``A^T W A`` per spectrum, (n,
    k(k+1)/2), where the caller has it (:func:`_normal_upper`).
    ``covered`` (n, n_lines) says which line columns the spectrum covers
    (:mod:`survey_denoise.line_windows`; default all): the others are left
    out of its system, so an uncovered line neither takes nor gives flux.
    ``continuum_inverse`` is the inverse of the continuum block of
    ``A^T W A`` (:func:`_continuum_inverse`), the same for every width.
    ``scale`` (n, p), where given, multiplies the columns of
    :func:`_scaled_columns` per spectrum (the second pass of
    :func:`fit_batch`); ``normal`` must then allow for it.  ``prior_rhs``
    (n, k - n_lines), where given, is a Gaussian prior's term of the
    continuum's right-hand side; ``normal`` and ``continuum_inverse`` then
    hold its precision.
    Returns coefficients, their errors, chi^2 and a measurable mask (all
    (n, k)), then the normal matrices ``A^T W A`` (n, k, k), the final
    active sets (n, k) and the inverses of the normal matrices over those
    sets (n, k, k, zero outside them), from which :func:`_correlated_err`
    derives errors for correlated pixel errors.
    """
    n, k = y.shape[0], a.shape[1]
    a_dev = xp.asarray(a)
    # A^T W A of every spectrum as one (n, p) @ (p, k(k+1)/2) product (its
    # upper triangle): one large matrix product instead of n small ones.
    m = _symmetric(w @ xp.asarray(_outer(a)) if normal is None else normal, n, k, xp)
    b = (w * y) @ a_dev
    if scale is not None:
        scaled = _scaled_columns(n_lines)
        b[:, scaled] = (w * y * scale) @ a_dev[:, scaled]
    if prior_rhs is not None:
        b[:, n_lines:] += prior_rhs
    covered = xp.ones((n, n_lines), bool) if covered is None else xp.asarray(covered, bool)
    measurable = xp.concatenate([covered, xp.ones((n, k - n_lines), bool)], axis=1)
    measurable &= xp.diagonal(m, axis1=1, axis2=2) > 0
    active = measurable.copy()
    if continuum_inverse is None:
        continuum_inverse = _continuum_inverse(m[:, n_lines:, n_lines:], xp)
    cov = _block_inverse(m, active, n_lines, continuum_inverse, xp)
    x = xp.einsum("nij,nj->ni", cov, b)
    first_err = xp.sqrt(xp.clip(xp.diagonal(cov, axis1=1, axis2=2), 0, None))
    for _ in range(n_lines if nonnegative else 0):
        neg = active[:, :n_lines] & (x[:, :n_lines] < 0)
        rows = xp.flatnonzero(neg.any(1))
        if rows.size == 0:
            break
        c = _drop_columns(cov[rows], neg[rows], xp)
        cov[rows] = c
        active[rows, :n_lines] &= ~neg[rows]
        # Dropped columns are zero in ``c``, so their b entries do not count.
        x[rows] = xp.einsum("nij,nj->ni", c, b[rows])
    err = xp.sqrt(xp.clip(xp.diagonal(cov, axis1=1, axis2=2), 0, None))
    err = xp.where(active, err, first_err)
    resid = y - x @ a_dev.T
    if scale is not None:
        resid -= (scale - 1.0) * (x[:, scaled] @ a_dev[:, scaled].T)
    dof = xp.clip((w > 0).sum(1) - active.sum(1), 1, None)
    chi2 = (w * resid**2).sum(1) / dof
    return x, err, chi2, measurable, m, active, cov


def _continuum_inverse(c, xp):
    """Inverse of each normal matrix's continuum block ``c`` (identity on unmeasurable columns)."""
    return _active_inverse(c, xp.diagonal(c, axis1=1, axis2=2) > 0, xp)


def _block_inverse(m, active, n_lines, continuum_inverse, xp):
    """Inverse of each normal matrix over its active columns (zero elsewhere), by blocks.

    With lines first, ``M = [[L, B], [B^T, C]]`` and the continuum block
    ``C`` is the same for every line width, so its inverse is computed once
    (``continuum_inverse``); each width then inverts only the lines' Schur
    complement ``S = L - B C^-1 B^T``:
    ``M^-1 = [[S^-1, -S^-1 D], [-D^T S^-1, C^-1 + D^T S^-1 D]]``, ``D = B C^-1``.
    Two small inverses instead of one of the full size, and the continuum's
    is shared: most of the cost of a width's solve.
    """
    lines_on, cont_on = active[:, :n_lines], active[:, n_lines:]
    line_pairs = lines_on[:, :, None] & lines_on[:, None, :]
    l_block = xp.where(line_pairs, m[:, :n_lines, :n_lines], 0.0) \
        + xp.eye(n_lines)[None] * (~lines_on)[:, :, None]
    b_block = xp.where(lines_on[:, :, None] & cont_on[:, None, :], m[:, :n_lines, n_lines:], 0.0)
    d = b_block @ continuum_inverse
    s_inv = xp.linalg.inv(l_block - d @ b_block.transpose(0, 2, 1))
    top_right = -(s_inv @ d)
    cov = xp.empty_like(m)
    cov[:, :n_lines, :n_lines] = s_inv
    cov[:, :n_lines, n_lines:] = top_right
    cov[:, n_lines:, :n_lines] = top_right.transpose(0, 2, 1)
    cov[:, n_lines:, n_lines:] = continuum_inverse - d.transpose(0, 2, 1) @ top_right
    return cov * (active[:, :, None] & active[:, None, :])


def _drop_columns(c, drop, xp):
    """Inverses ``c`` (n, k, k) of normal matrices after their ``drop`` (n, j <= k) columns are removed.

    Removing column ``j`` from a system whose inverse is ``C`` leaves the
    inverse ``C - C[:, j] C[j, :] / C[j, j]`` on the other columns (the
    Schur complement); row and column ``j`` become zero.  Columns are
    removed one per pass, each spectrum its own.
    """
    c = c.copy()
    # Per spectrum, the columns to drop first, in column order.
    order = xp.argsort(~drop, axis=1, kind="stable")
    count = drop.sum(1)
    for step in range(int(count.max())):
        at = xp.flatnonzero(count > step)
        j = order[at, step]
        col = c[at, :, j]                                          # (m, k)
        pivot = col[xp.arange(at.size), j]
        c[at] -= col[:, :, None] * col[:, None, :] / pivot[:, None, None]
        c[at, :, j] = 0.0
        c[at, j, :] = 0.0
    return c


def _symmetric(upper, n, k, xp):
    """(n, k, k) symmetric matrices from their upper triangles, (n, k(k+1)/2)."""
    iu, ju = np.triu_indices(k)
    m = xp.empty((n, k, k))
    m[:, iu, ju] = upper
    m[:, ju, iu] = upper
    return m


def _active_inverse(m, act, xp):
    """Inverse of each normal matrix restricted to its active columns (identity elsewhere)."""
    mask = act[:, :, None] & act[:, None, :]
    return xp.linalg.inv(xp.where(mask, m, 0.0) + xp.eye(m.shape[1])[None] * (~act)[:, :, None])


def _correlated_err(w, m, cov, correlation, lagged, entries, xp, a=None, scale=None, scaled=None):
    """Coefficient errors for pixel errors correlated by lag: ``corr(e_i, e_(i+L)) = rho_L``.

    With ``C = (A^T W A)^-1`` over the active columns, the estimator is
    ``C A^T W`` and its covariance ``C (A^T W^1/2 R W^1/2 A) C``, ``R`` the
    banded correlation matrix (lags beyond the given ones uncorrelated).
    The middle matrix is ``A^T W A`` plus, per lag, ``rho_L`` times
    ``sum_i sqrt(w_i w_(i+L)) (a_i a_(i+L)^T + a_(i+L) a_i^T)``: matrix
    products per lag, as for ``A^T W A`` itself (:func:`_normal_upper`),
    instead of the (n, k, p) estimator weights.  ``lagged`` holds, per lag,
    those products' right-hand sides (:func:`_lagged_parts`) and
    ``entries`` the continuum-only and line entries of the upper triangle;
    ``cov`` is ``C``, zero outside the active columns.  Variances are
    floored at 0.

    With a per-spectrum ``scale`` (n, p) of the design ``a``'s columns
    ``scaled`` (:func:`_scaled_columns`; the second pass), the rows and columns of
    the middle matrix for those few columns are summed directly instead:
    ``A^T W^1/2 (R W^1/2 A_s)``, one banded product per lag.
    """
    n, k = m.shape[0], m.shape[1]
    cont, line = entries
    middle = m.copy()
    upper = xp.empty((n, cont.size + line.size))
    for lag, (rho, (rows, line_rhs, cont_rhs)) in enumerate(zip(correlation, lagged, strict=False),
                                                             start=1):
        pair = xp.sqrt(w[:, lag:] * w[:, :-lag])
        upper[:, cont] = pair @ xp.asarray(cont_rhs)
        upper[:, line] = pair[:, rows] @ xp.asarray(line_rhs)
        middle += float(rho) * _symmetric(upper, n, k, xp)
    if scale is not None:
        a = xp.asarray(a)
        root = xp.sqrt(w)
        g = (root * scale)[:, None, :] * a[:, scaled].T[None]               # (W^1/2 A_s)^T, (n, s, p)
        h = (root[:, None, :] * _banded(g, correlation, xp)).reshape(-1, a.shape[0])
        lagged_s = (h @ a).reshape(n, scaled.size, k)
        lagged_s[:, :, scaled] = ((h * xp.repeat(scale, scaled.size, axis=0)) @ a[:, scaled]).reshape(
            n, scaled.size, scaled.size)
        middle[:, :, scaled] = m[:, :, scaled] + lagged_s.transpose(0, 2, 1)
        middle[:, scaled, :] = middle[:, :, scaled].transpose(0, 2, 1)
    var = ((cov @ middle) * cov).sum(-1)
    return xp.sqrt(xp.clip(var, 0.0, None))


def _banded(g, correlation, xp):
    """``sum_L rho_L (g[..., i + L] + g[..., i - L])``: the off-diagonal bands of ``R`` applied along the last axis."""
    kernel = np.concatenate([np.asarray(correlation, float)[::-1], [0.0], np.asarray(correlation, float)])
    if xp is np:
        from scipy.ndimage import correlate1d

        return correlate1d(g, kernel, axis=-1, mode="constant")
    out = xp.zeros_like(g)
    for lag, rho in enumerate(correlation, start=1):
        out[..., :-lag] += float(rho) * g[..., lag:]
        out[..., lag:] += float(rho) * g[..., :-lag]
    return out


def _lagged_outer(a: np.ndarray, lags: int) -> tuple[np.ndarray, ...]:
    """Per lag L: upper triangle of ``a_i a_(i+L)^T + a_(i+L) a_i^T``, (p - L, k(k+1)/2)."""
    iu, ju = np.triu_indices(a.shape[1])
    out = []
    for lag in range(1, lags + 1):
        lo, hi = a[:-lag], a[lag:]
        out.append(np.ascontiguousarray(lo[:, iu] * hi[:, ju] + hi[:, iu] * lo[:, ju]))
    return tuple(out)


@cache
def _entries(n_lines: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper-triangle entries (of ``np.triu_indices(k)``) of continuum pairs, and of the others.

    A continuum pair's entry of ``A^T W A`` is the same for every line
    width; every other entry involves a line column, which is exactly zero
    away from its lines (the pixel-integrated Gaussian's ``erf``
    differences vanish there), so it needs those pixels only.
    """
    iu, _ = np.triu_indices(k)
    both_continuum = iu >= n_lines  # iu <= ju
    return np.flatnonzero(both_continuum), np.flatnonzero(~both_continuum)


@cache
def _scaled_columns(n_lines: int) -> np.ndarray:
    """Columns the second pass multiplies by each spectrum's first-pass continuum: Legendre degrees >= 1.

    (:func:`continuum_basis` puts the polynomials first, after the lines.)
    """
    out = np.arange(n_lines + 1, n_lines + 1 + POLY_DEGREE)
    out.flags.writeable = False
    return out


@cache
def _scaled_count(n_lines: int, k: int) -> np.ndarray:
    """Per upper-triangle entry (of ``np.triu_indices(k)``): how many of its two columns are scaled (0-2)."""
    scaled = np.zeros(k, int)
    scaled[_scaled_columns(n_lines)] = 1
    iu, ju = np.triu_indices(k)
    return scaled[iu] + scaled[ju]


def _line_pixels(sigma_kms: float, grid: Grid) -> tuple[np.ndarray, int]:
    a, groups = design_matrix(sigma_kms, grid)
    return np.flatnonzero((a[:, :len(groups)] != 0).any(1)), len(groups)


@cache
def _outer_parts(sigma_kms: float, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-hand sides of :func:`_normal_upper` for one width: line pixels, line part, continuum part."""
    a = design_matrix(sigma_kms, grid)[0]
    rows, n_lines = _line_pixels(sigma_kms, grid)
    cont, line = _entries(n_lines, a.shape[1])
    full = _outer(a)
    return rows, np.ascontiguousarray(full[rows][:, line]), np.ascontiguousarray(full[:, cont])


def _normal_upper(w, sigma_kms: float, grid: Grid, continuum, xp, scale=None):
    """Upper triangles of ``A^T W A``, (n, k(k+1)/2), for weights ``w`` (n, p).

    ``continuum`` is the continuum-pair part (:func:`_continuum_upper`),
    which every width shares (pass None to compute it here).  The line
    entries are summed over the line pixels only, a third of the grid or
    less.  ``scale`` (n, p) multiplies the :func:`_scaled_columns` per
    spectrum: an entry with one such column is summed with weights
    ``w * scale`` (a line column is never scaled).
    """
    rows, line_rhs, _ = _outer_parts(sigma_kms, grid)
    a, n_lines = _columns(sigma_kms, grid)
    cont, line = _entries(n_lines, a.shape[1])
    upper = xp.empty((w.shape[0], cont.size + line.size))
    upper[:, cont] = _continuum_upper(w, sigma_kms, grid, xp, scale) if continuum is None else continuum
    if scale is None:
        upper[:, line] = w[:, rows] @ xp.asarray(line_rhs)
        return upper
    once = _scaled_count(n_lines, a.shape[1])[line] == 1
    upper[:, line[~once]] = w[:, rows] @ xp.asarray(line_rhs[:, ~once])
    upper[:, line[once]] = (w * scale)[:, rows] @ xp.asarray(line_rhs[:, once])
    return upper


def _continuum_upper(w, sigma_kms: float, grid: Grid, xp, scale=None):
    """The continuum-pair entries of ``A^T W A`` (the same for every width), (n, n_entries).

    An entry with ``j`` scaled columns is summed with weights ``w * scale**j``.
    """
    cont_rhs = _outer_parts(sigma_kms, grid)[2]
    if scale is None:
        return w @ xp.asarray(cont_rhs)
    a, n_lines = _columns(sigma_kms, grid)
    times = _scaled_count(n_lines, a.shape[1])[_entries(n_lines, a.shape[1])[0]]
    out = xp.empty((w.shape[0], cont_rhs.shape[1]))
    for j in range(3):
        at = np.flatnonzero(times == j)
        out[:, at] = (w * scale**j) @ xp.asarray(cont_rhs[:, at])
    return out


@cache
def _lagged_parts(sigma_kms: float, grid: Grid, lags: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """Per lag L: (pixels i with a line at i or i+L, line part, continuum part) of :func:`_lagged_outer`."""
    a = design_matrix(sigma_kms, grid)[0]
    line_px, n_lines = _line_pixels(sigma_kms, grid)
    cont, line = _entries(n_lines, a.shape[1])
    near = np.zeros(a.shape[0], bool)
    near[line_px] = True
    out = []
    for lag, full in enumerate(_lagged_outer(a, lags), start=1):
        rows = np.flatnonzero(near[:-lag] | near[lag:])
        out.append((rows, np.ascontiguousarray(full[rows][:, line]), np.ascontiguousarray(full[:, cont])))
    return tuple(out)


def _outer(a: np.ndarray) -> np.ndarray:
    iu, ju = np.triu_indices(a.shape[1])
    return np.ascontiguousarray(a[:, iu] * a[:, ju])


def fit_batch(flux: np.ndarray, ivar: np.ndarray, good: np.ndarray | None = None, *,
              grid: Grid = GRID, widths_kms: tuple[float, ...] = WIDTHS_KMS, xp=np,
              correlation: tuple[float, ...] = (), nonnegative: bool = True,
              multiplicative: bool = True,
              width_prior: tuple[float, float] | None = WIDTH_PRIOR,
              weights_prior: float | None = WEIGHTS_PRIOR,
              prior_test: float | None = None) -> dict:
    """Fit every spectrum of a batch on ``grid``.

    Parameters
    ----------
    flux, ivar : ndarray (n, npix)
        Flux density and inverse variance on ``grid`` (any one unit).
    good : ndarray of bool (n, npix), optional
        Pixels to use (default: ``ivar > 0``); others get zero weight.
    grid : Grid
        The grid the spectra sit on.
    widths_kms : tuple of float
        Line widths (sigma, km/s) tried per spectrum.
    xp : module
        Array namespace (numpy, or cupy for a GPU).
    correlation : tuple of float
        Correlation of pixel errors at lags 1, 2, ... pixels (beyond: 0).
        A de-noiser's are correlated (a spectrum decoded from a few latent
        numbers is off smoothly over a whole line, so its pixel errors do not
        average out); treating them as independent (the default, ``()``)
        then understates the line errors.  The fluxes are the same.
    nonnegative : bool
        Keep line fluxes >= 0, as pPXF does (the catalogues).  False gives
        signed fluxes with unbiased errors (calibrating line errors).
    multiplicative : bool
        Fit twice: the second pass multiplies the Legendre polynomials of
        degree >= 1 by each spectrum's continuum from the first (one width,
        the middle of ``widths_kms``), so dust and flux calibration tilt
        the stellar absorption as pPXF's multiplicative polynomial does.
        False keeps the first, additive pass only (faster, Hα errors ~6 %
        smaller, faint Balmer lines read up to 0.19 dex low on the mock;
        see the module docstring).
    width_prior : (float or ndarray (n,), float) or None
        Median line width (sigma, km/s; one for all spectra or one each) and
        spread (in ln width) of the log-normal prior on each spectrum's
        width (:data:`WIDTH_PRIOR`, :func:`survey_width_prior`); None reads
        the width from the chi^2 alone.
    weights_prior : float or None
        In the second pass: a Gaussian prior on the stellar components'
        weights, centred on the templates' mean and as wide as their spread
        times this factor (:data:`WEIGHTS_PRIOR`), scaled by each spectrum's
        continuum level from the first pass (:func:`template_weights`).  It
        keeps the solve from mixing the components into shapes no template
        has, such as a Balmer series in emission (docs/line_errors.md,
        *A prior on the stellar weights*); it assumes the whole continuum is
        stellar.  None: no prior (a featureless continuum).  With
        ``multiplicative=False`` there is no second pass and no prior.
    prior_test : float or None
        With ``weights_prior``: test the prior on each spectrum at this
        false-alarm probability (:data:`PRIOR_TEST` is the value the
        docs measure); a spectrum whose data reject it is fitted without
        it and its ``status`` gains ``FIT_PRIOR_REJECTED``.  None (the
        default): no test, the prior on every spectrum.

    Returns
    -------
    dict
        ``flux`` and ``flux_err``: {catalogue key: ndarray (n,)} in flux-density
        units x Angstrom (NaN where the spectrum does not cover the line, by
        the rule of :mod:`survey_denoise.line_windows`); ``chi2`` (n,) per degree
        of freedom; ``width`` (n,) the lines' fitted sigma in km/s (instrument
        included, as the lines appear on ``grid``) and ``width_err`` (n,) its
        1-sigma error (the width's posterior under ``width_prior``; NaN where
        the chi^2 does not constrain it and there is no prior, or one width
        was tried, or where the width stopped at an end of ``widths_kms``:
        ``status`` then gains ``FIT_WIDTH_AT_LIMIT``); ``status`` (n,) uint32;
        ``prior_dchi2`` (n,) the rise of the data's chi^2 under the prior on
        the stellar weights, over the free fit's chi^2 per degree of freedom
        where that is above 1 (NaN where the prior was not tested).
    """
    # Checked before any fitting, not after it.
    threshold = None if prior_test is None else prior_threshold(prior_test)
    flux = np.asarray(flux, np.float64)
    ivar = np.asarray(ivar, np.float64)
    ok = (ivar > 0) & np.isfinite(flux) & np.isfinite(ivar)
    if good is not None:
        ok &= np.asarray(good, bool)
    n = flux.shape[0]
    status = np.zeros(n, np.uint32)
    status[ok.sum(1) < MIN_GOOD_FRACTION * grid.npix] = Flag.FIT_NO_COVERAGE
    keys = lines.catalogue_keys()
    out = {"flux": {k: np.full(n, np.nan) for k in keys}, "flux_err": {k: np.full(n, np.nan) for k in keys},
           "chi2": np.full(n, np.nan), "width": np.full(n, np.nan), "width_err": np.full(n, np.nan),
           "status": status, "prior_dchi2": np.full(n, np.nan)}
    todo = np.flatnonzero(status == 0)
    groups = design_matrix(float(widths_kms[0]), grid)[1]
    centres = None if width_prior is None else np.broadcast_to(np.asarray(width_prior[0], float), (n,))
    for start in range(0, todo.size, BATCH):
        rows = todo[start:start + BATCH]
        # One column per group, and a group's lines are tied: it is covered when all of them are.
        covered = covered_lines(grid.wavelength, ok[rows], [g.name for g in groups])
        # An uncovered line has no column but its flux is in the data: its window is left
        # out, or the continuum would bend to it.
        good = ok[rows] & ~((~covered).astype(float) @ _line_windows(grid, groups) > 0)
        y = xp.asarray(np.where(good, flux[rows], 0.0))
        w = xp.asarray(np.where(good, ivar[rows], 0.0))
        scale = stars = None
        if multiplicative:
            # Signed line fluxes: the first pass only gives the continuum (and skips the active set).
            _, first = _fit_widths(y, w, covered, grid, (widths_kms[len(widths_kms) // 2],), xp, False)
            model = first[0][:, len(groups):] @ continuum_basis(grid).T   # the first pass's continuum
            scale = xp.asarray(_continuum_scale(model, good))
            if weights_prior is not None:
                stars = _weights_prior(model, good, grid, float(weights_prior), xp)
        prior = None if centres is None else (centres[rows], width_prior[1])
        fits, (x, err, chi2, meas, width, near, width_var, width_sd) = _fit_widths(y, w, covered, grid, widths_kms,
                                                                         xp, nonnegative, scale, prior, stars)
        if stars is not None and prior_test is not None:
            out["prior_dchi2"][rows] = _prior_cost(fits, near, y, w, covered, grid, widths_kms, xp,
                                                   nonnegative, scale)
        if len(correlation):
            # Only the chosen width's errors are reported, so only they allow for the correlation.
            for t, tried in enumerate(widths_kms):
                at = np.flatnonzero(near == t)
                if at.size:
                    _, _, _, _, m, active, cov = fits[t]
                    idx = xp.asarray(at)
                    m = m[idx]
                    if stars is not None:  # the sandwich's middle is the data's A^T W A alone
                        m = m.copy()
                        m[:, len(groups):, len(groups):] -= stars[2][idx]
                    lagged = _lagged_parts(float(tried), grid, len(correlation))
                    a = _columns(tried, grid)[0]
                    corr = _correlated_err(w[idx], m, cov[idx], tuple(correlation), lagged,
                                           _entries(len(groups), m.shape[1]), xp, a=a,
                                           scale=None if scale is None else scale[idx],
                                           scaled=_scaled_columns(len(groups)))
                    err[at] = np.where(_to_numpy(active[idx]), _to_numpy(corr), err[at])
        err = np.sqrt(err**2 + width_var)
        n_lines = len(groups)
        if nonnegative:
            x[:, :n_lines] = np.clip(x[:, :n_lines], 0.0, None)
        _store(out, rows, groups, x, err, meas)
        out["chi2"][rows], out["width"][rows], out["width_err"][rows] = chi2, width, width * width_sd
        if len(widths_kms) >= 3:
            # A width stopped at an end of the range is a bound, not a measurement.
            limit = np.isfinite(chi2) & ((width >= max(widths_kms) * (1 - WIDTH_LIMIT_TOLERANCE))
                                         | (width <= min(widths_kms) * (1 + WIDTH_LIMIT_TOLERANCE)))
            out["width_err"][rows[limit]] = np.nan
            out["status"][rows[limit]] |= np.uint32(Flag.FIT_WIDTH_AT_LIMIT)
        bad = ~np.isfinite(chi2)
        out["status"][rows[bad]] |= np.uint32(Flag.FIT_FAILED)
    if threshold is not None:   # a spectrum never tested has prior_dchi2 NaN, and is kept
        _refit_rejected(out, flux, ivar, ok, grid=grid, widths_kms=widths_kms, xp=xp,
                        correlation=correlation, nonnegative=nonnegative, width_prior=width_prior,
                        threshold=threshold)
    return out


def prior_threshold(prior_test: float) -> float:
    """``Delta chi^2`` above which a spectrum's data reject the stellar-weights prior (:data:`PRIOR_TEST`)."""
    from scipy.stats import chi2

    if not 0 < prior_test < 1:
        raise ValueError(f"prior_test must be a probability in (0, 1), got {prior_test!r}")
    return float(chi2.isf(prior_test, N_PCA))


def _prior_cost(fits, near, y, w, covered, grid, widths_kms, xp, nonnegative, scale) -> np.ndarray:
    """Per spectrum, the rise of the data's chi^2 (total) that the stellar-weights prior causes.

    At the tried width nearest each spectrum's chosen one, the fit with the
    prior (``fits``) against the same fit without it.  If the prior is
    right, the rise is noise in the <= :data:`N_PCA` directions it
    constrains; a continuum that is not all starlight makes it large.
    """
    n_lines = len(design_matrix(float(widths_kms[0]), grid)[1])
    n_cont = _columns(widths_kms[0], grid)[0].shape[1] - n_lines
    cost = np.full(y.shape[0], np.nan)
    for t, tried in enumerate(widths_kms):
        at = np.flatnonzero(near == t)
        if not at.size:
            continue
        idx = xp.asarray(at)
        wi, sc = w[idx], None if scale is None else scale[idx]
        continuum = _continuum_upper(wi, float(tried), grid, xp, sc)
        free = _solve_one_width(*_columns(tried, grid), y[idx], wi, xp, covered=covered[at],
                                normal=_normal_upper(wi, float(tried), grid, continuum, xp, sc),
                                continuum_inverse=_continuum_inverse(_symmetric(continuum, at.size, n_cont, xp), xp),
                                nonnegative=nonnegative, scale=sc)
        pixels = _to_numpy((wi > 0).sum(1))
        # Over the free fit's reduced chi^2 where it is above 1: real spectra's errors are often
        # too small, and a test in units of them would reject any prior.
        cost[at] = ((_total_chi2(fits[t][2][idx], fits[t][5][idx], pixels) - _total_chi2(free[2], free[5], pixels))
                    / np.maximum(_to_numpy(free[2]), 1.0))
    return cost


def _total_chi2(chi2, active, pixels):
    """chi^2 per degree of freedom of :func:`_solve_one_width` back to its total."""
    return _to_numpy(chi2) * np.clip(pixels - _to_numpy(active).sum(1), 1, None)


def _refit_rejected(out, flux, ivar, ok, *, grid, widths_kms, xp, correlation, nonnegative, width_prior,
                    threshold) -> None:
    """Fit the spectra whose data reject the stellar-weights prior again without it, in place; flag them."""
    rejected = np.flatnonzero(out["prior_dchi2"] > threshold)
    if not rejected.size:
        return
    if width_prior is not None:
        centres = np.broadcast_to(np.asarray(width_prior[0], float), (flux.shape[0],))[rejected]
        width_prior = (centres, width_prior[1])
    again = fit_batch(flux[rejected], ivar[rejected], ok[rejected], grid=grid, widths_kms=widths_kms, xp=xp,
                      correlation=correlation, nonnegative=nonnegative, width_prior=width_prior,
                      weights_prior=None)
    for key in out["flux"]:
        out["flux"][key][rejected] = again["flux"][key]
        out["flux_err"][key][rejected] = again["flux_err"][key]
    for name in ("chi2", "width", "width_err"):
        out[name][rejected] = again[name]
    out["status"][rejected] |= again["status"] | np.uint32(Flag.FIT_PRIOR_REJECTED)


@cache
def _line_windows(grid: Grid, groups: tuple[LineGroup, ...]) -> np.ndarray:
    """Per line column, the pixels inside its lines' fitting windows (:mod:`survey_denoise.line_windows`), (n_groups, p)."""
    return np.array([in_windows(grid.wavelength, [lines.wavelength(m) for m in g.members]) for g in groups],
                    float)


def _fit_widths(y, w, covered, grid, widths_kms, xp, nonnegative, scale=None, prior=None, stars=None):
    """Solve a batch at every width; returns the per-width solutions and :func:`_best_width`'s choice.

    ``stars``: :func:`_weights_prior`'s terms, added to the continuum block and its right-hand side.
    """
    groups = design_matrix(float(widths_kms[0]), grid)[1]
    # The continuum pairs of A^T W A are the same for every width: summed once.
    continuum = _continuum_upper(w, float(widths_kms[0]), grid, xp, scale)
    if stars is not None:
        continuum = continuum + stars[0]
    n_cont = _columns(widths_kms[0], grid)[0].shape[1] - len(groups)
    continuum_inverse = _continuum_inverse(_symmetric(continuum, y.shape[0], n_cont, xp), xp)
    fits = [_solve_one_width(*_columns(width, grid), y, w, xp, covered=covered,
                             normal=_normal_upper(w, float(width), grid, continuum, xp, scale),
                             continuum_inverse=continuum_inverse, nonnegative=nonnegative, scale=scale,
                             prior_rhs=None if stars is None else stars[1])
            for width in widths_kms]
    active = _to_numpy(fits[0][5])
    dof = np.clip((_to_numpy(w) > 0).sum(1) - active.sum(1), 1, None)
    return fits, _best_width([[_to_numpy(v) for v in f[:4]] for f in fits],
                             np.log(np.asarray(widths_kms, float)), dof, len(groups), prior)


def _continuum_scale(model, good):
    """Each spectrum's first-pass continuum ``model`` (n, p) over its median on the good pixels.

    The second pass multiplies the Legendre polynomials of degree >= 1 by
    it.  Where that median is not positive (no continuum to speak of) the
    scale is 1, and the second pass repeats the first.
    """
    level = np.nanmedian(np.where(good, model, np.nan), axis=1)  # fitted spectra have good pixels
    usable = np.isfinite(level) & (level > 0)
    return np.where(usable[:, None], model / np.where(usable, level, 1.0)[:, None], 1.0)


def _weights_prior(model, good, grid, spread, xp):
    """The Gaussian prior of ``fit_batch(weights_prior=spread)`` on the stellar weights, per spectrum.

    The templates' weights (:func:`template_weights`) are for spectra of
    mean flux 1, so for a spectrum whose first-pass continuum ``model``
    (n, p) is ``L`` times as bright as the templates' mean over its good
    pixels the prior is N(L mean, (spread L)^2 cov).  Where ``L`` is not
    positive (no continuum to speak of) there is none.  Returns the
    precision's upper triangle over the continuum columns (n, entries), the
    right-hand-side term (n, n_cont) and the precision itself (n, n_cont, n_cont).
    """
    mean, precision, mean_spectrum = template_weights(grid)
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.where(good, model, 0.0).sum(1) / (good @ mean_spectrum)
    usable = np.isfinite(level) & (level > 0)
    level = np.where(usable, level, 1.0)
    n, k = model.shape[0], continuum_basis(grid).shape[1]
    at = slice(POLY_DEGREE + 1, POLY_DEGREE + 1 + mean.size)
    block = np.zeros((n, k, k))
    block[:, at, at] = precision[None] * (usable / (spread * level) ** 2)[:, None, None]
    rhs = np.zeros((n, k))
    rhs[:, at] = (precision @ mean)[None] * (usable / (spread**2 * level))[:, None]
    iu, ju = np.triu_indices(k)
    return xp.asarray(block[:, iu, ju]), xp.asarray(rhs), xp.asarray(block)


def _columns(width, grid):
    a, groups = design_matrix(float(width), grid)
    return a, len(groups)


WIDTH_RESPONSE_POINTS = 241
"""True widths (log-spaced over the tried range) at which :func:`width_response` is tabulated."""


@cache
def width_response(widths_kms: tuple[float, ...], grid: Grid = GRID) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How the chi^2 of each line column grows when it is fitted with a profile of the wrong width.

    A unit-flux line column (:func:`line_groups`: a line, a doublet, a
    blend) of true width ``t`` on a flat continuum is fitted by its column
    at width ``w`` plus a constant, with unit pixel weights.  A spectrum's
    chi^2 at the tried widths is then ``B + A * sum_g s_g * chi2[g]`` for
    weights ``s_g`` proportional to each line's S/N squared, one scale
    ``A`` and the rest of its residuals ``B``.  Each column is tabulated on
    its own: on the 69 km/s pixels the curve of a narrow line depends on
    where its centre falls in a pixel (the ratio of the rises on either side
    of 85 km/s is 0.37 for Halpha, 0.60 summed over all lines).

    Returns
    -------
    log_t : ndarray (m,)
        ln of the true widths (km/s), :data:`WIDTH_RESPONSE_POINTS` of them
        from the narrowest tried width to the widest.
    chi2 : ndarray (n_groups, n_widths, m)
        Per line column of :func:`design_matrix` (in its order), the chi^2 of
        a fit at each tried width, per unit flux squared.
    curvature : ndarray (n_groups, m)
        d^2 chi^2 / d(ln w)^2 at ``w = t``, per unit flux squared.
    """
    edges = np.asarray(grid.edges)
    log_t = np.linspace(np.log(widths_kms[0]), np.log(widths_kms[-1]), WIDTH_RESPONSE_POINTS)
    t = np.exp(log_t)
    step = 0.02  # in ln w, for the curvature
    groups = design_matrix(float(widths_kms[0]), grid)[1]
    chi2 = np.zeros((len(groups), len(widths_kms), t.size))
    curvature = np.zeros((len(groups), t.size))
    for i, g in enumerate(groups):
        centres = [lines.wavelength(m) for m in g.members]
        pad = 6.0 * widths_kms[-1] / C_KMS
        near = (grid.wavelength > min(centres) * (1 - pad)) & (grid.wavelength < max(centres) * (1 + pad))
        sub = edges[np.concatenate([near, [False]]) | np.concatenate([[False], near])]
        truth = np.stack([group_profile(sub, g, v) for v in t])
        for j, w in enumerate(widths_kms):
            chi2[i, j] = _misfit(np.broadcast_to(group_profile(sub, g, w), truth.shape), truth)
        for sign in (-1.0, 1.0):
            model = np.stack([group_profile(sub, g, v * np.exp(sign * step)) for v in t])
            curvature[i] += _misfit(model, truth) / step**2
    return log_t, chi2, curvature


def _misfit(model: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Residual sum of squares of each row of ``truth`` fitted by its row of ``model`` plus a constant."""
    p = model.shape[1]
    sgg, sg = (model**2).sum(1), model.sum(1)
    bg, b1 = (truth * model).sum(1), truth.sum(1)
    det = sgg * p - sg**2
    amp = (bg * p - sg * b1) / det
    const = (sgg * b1 - sg * bg) / det
    return np.clip((truth**2).sum(1) - amp * bg - const * b1, 0.0, None)


def _best_width(fits, log_width, dof=None, n_lines=0, prior=None):
    """Per spectrum: the chi^2 minimum over widths, refined by the chi^2 curves of its lines.

    The chi^2 at the best tried width and its two neighbours (the first
    or last three at the ends of the range) are matched to
    :func:`width_response`, its line columns weighted by their S/N squared
    at the best width: the ratio of the two rises from the lowest of the
    three fixes the true width whatever the lines' strength, and the
    coefficients are interpolated (quadratically in log width, same three
    widths) there.  A parabola in log width through the three points, used
    before, read lines 4-10 % narrow and so 1-3 % faint, as the curve is
    steeper on the wide side on the 69 km/s pixels.  Widths outside the
    tried range stop at its ends.  Errors are those of the best tried
    width (with a prior: the one nearest the posterior width), whose index
    is returned.

    With a ``prior`` (median km/s, spread in ln width) the reading, whose
    variance comes from the depth of the chi^2 curve (infinite where it has
    none), is combined with the log-normal prior, and the fluxes are
    interpolated between the tried widths nearest the posterior width (any
    three, not only those around the chi^2 minimum); the posterior variance
    is the width's.

    The width is a fitted parameter: each coefficient's variance gains
    ``(dx / d ln w)^2 var(ln w)``, the slope of the interpolation times the
    variance from the depth of the chi^2 curve (it rises by 1 at one sigma;
    ``dof`` turns the per-degree chi^2 into totals), at most the square of
    half the span of the three widths.  That term is returned apart
    (n, k), so that errors computed later for the chosen width (correlated
    pixel errors) take it too.  For one Gaussian line alone it is half the
    fixed-width variance (a free width's flux error is sqrt(1.5) times a
    known one's).
    """
    x = np.stack([f[0] for f in fits])           # (n_w, n, k)
    err = np.stack([f[1] for f in fits])
    chi2 = np.stack([f[2] for f in fits])        # (n_w, n)
    meas = np.stack([f[3] for f in fits]).all(0)
    n_w, n = chi2.shape
    cols = np.arange(n)
    best = np.argmin(np.where(np.isfinite(chi2), chi2, np.inf), axis=0)
    width_var = np.zeros_like(x[0])
    if n_w < 3 or n_lines == 0:
        return (x[best, cols], err[best, cols], chi2[best, cols], meas, np.exp(log_width[best]), best, width_var,
                np.full(n, np.nan))
    log_t, response, curvature = width_response(tuple(float(v) for v in np.exp(log_width)))
    mid = np.clip(best, 1, n_w - 2)
    triple = np.stack([mid - 1, mid, mid + 1])
    low = best - mid + 1                                           # where the best is in the triple
    u, c = log_width[triple], chi2[triple, cols]                   # (3, n)
    # Each spectrum's response: its lines' curves weighted by their S/N^2 at the best width.
    with np.errstate(divide="ignore", invalid="ignore"):
        snr2 = np.nan_to_num((x[best, cols, :n_lines] / err[best, cols, :n_lines]) ** 2)
    r_all = np.einsum("ng,gwt->nwt", snr2, response)               # (n, n_w, m)
    r = np.take_along_axis(r_all, triple.T[:, :, None], axis=1)    # (n, 3, m)
    others = np.stack([np.where(low == 0, 1, 0), np.where(low == 2, 1, 2)])  # (2, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        base_c = c[low, cols]
        rise = np.log((c[others[0], cols] - base_c) / (c[others[1], cols] - base_c))
        base_r = r[cols, low]                                      # (n, m)
        curve = np.log((r[cols, others[0]] - base_r) / (r[cols, others[1]] - base_r))
    # True widths at which the same tried width is the lowest of the three; there the curve
    # rises with t where the best is the middle one and falls where it is at an end (compared
    # with its sign flipped).
    valid = (np.argmin(r, axis=1) == low[:, None]) & np.isfinite(curve)
    sign = np.where(low == 1, 1.0, -1.0)[:, None]
    above = valid & (sign * curve >= sign * rise[:, None])
    inner = valid.any(1) & np.isfinite(rise) & np.all(np.isfinite(c), 0)
    first_valid, last_valid = np.argmax(valid, 1), valid.shape[1] - 1 - np.argmax(valid[:, ::-1], 1)
    hi = np.where(above.any(1), np.argmax(above, 1), last_valid)
    lo = np.maximum(hi - 1, first_valid)
    c_lo, c_hi = curve[cols, lo], curve[cols, hi]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.where(hi > lo, (rise - c_lo) / (c_hi - c_lo), 0.0), 0.0, 1.0)
    at = np.where(inner, log_t[lo] + frac * (log_t[hi] - log_t[lo]), log_width[best])
    var_u = np.full(n, np.inf)
    if dof is not None:
        pick = np.clip(np.searchsorted(log_t, at), 0, log_t.size - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            # chi^2 = B + A * response: A from the second difference of the three, which cancels B
            depth = (c[0] + c[2] - 2.0 * c[1]) / (r[cols, 0, pick] + r[cols, 2, pick] - 2.0 * r[cols, 1, pick])
            var_u = 2.0 / (depth * np.asarray(dof, float) * (snr2 @ curvature)[cols, pick])
        var_u = np.where(np.isfinite(var_u) & (var_u > 0), var_u, np.inf)
        if prior is None:
            var_u = np.where(inner, var_u, np.inf)
        else:
            # The width's posterior: the chi^2 reading (infinitely uncertain where the curve
            # has no depth) times the log-normal prior.
            centre, spread = np.log(prior[0]), prior[1]
            precision = 1.0 / var_u + 1.0 / spread**2
            at = np.clip((at / var_u + centre / spread**2) / precision, log_width[0], log_width[-1])
            var_u = 1.0 / precision
            # The fluxes are interpolated between the tried widths nearest the posterior's.
            best = np.argmin(np.abs(log_width[:, None] - at), axis=0)
            mid = np.clip(best, 1, n_w - 2)
            triple = np.stack([mid - 1, mid, mid + 1])
            u = log_width[triple]
            inner = np.ones(n, bool)
    # Lagrange weights of the three widths at ``at``, and their derivatives in log width
    den = np.stack([(u[0] - u[1]) * (u[0] - u[2]), (u[1] - u[0]) * (u[1] - u[2]), (u[2] - u[0]) * (u[2] - u[1])])
    lag = np.stack([(at - u[1]) * (at - u[2]), (at - u[0]) * (at - u[2]), (at - u[0]) * (at - u[1])]) / den
    slope = np.stack([2 * at - u[1] - u[2], 2 * at - u[0] - u[2], 2 * at - u[0] - u[1]]) / den
    lag = np.where(inner, lag, (triple == best).astype(float))
    xs = x[triple, cols]                                           # (3, n, k)
    x_at = np.einsum("tn,tnk->nk", lag, xs)
    # The width's own error, before the cap below: sd of ln(width), i.e. the fractional error.
    width_sd = np.where(np.isfinite(var_u), np.sqrt(var_u), np.nan)
    var_u = np.where(np.isfinite(var_u), np.minimum(var_u, ((u[2] - u[0]) / 2) ** 2), 0.0)
    width_var = np.einsum("tn,tnk->nk", slope, xs) ** 2 * var_u[:, None]
    return x_at, err[best, cols], chi2[best, cols], meas, np.exp(at), best, width_var, width_sd


def _store(out, rows, groups, x, err, meas):
    index = {g.name: i for i, g in enumerate(groups)}
    member = {m: (i, s) for i, g in enumerate(groups) for m, s in zip(g.members, g.shares, strict=True)}
    for key in out["flux"]:
        if key in member:  # a line, alone or in a fixed-ratio doublet
            i, share = member[key]
        elif key in index:  # a blend fitted as one column
            i, share = index[key], 1.0
        else:
            continue
        out["flux"][key][rows] = np.where(meas[:, i], x[:, i] * share, np.nan)
        out["flux_err"][key][rows] = np.where(meas[:, i], err[:, i] * share, np.nan)


def _to_numpy(v):
    return v.get() if hasattr(v, "get") else np.asarray(v)
