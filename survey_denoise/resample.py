"""Flux-conserving rebinning of a batch of spectra, with inverse variances.

The kernel of pre-processing, a plain numpy function of arrays.  Each input
row is a piecewise-constant flux density on its own pixel edges (after a
rest-frame shift every galaxy has its own edges, ``edges / (1 + z)``); every
output pixel gets the overlap-weighted mean of the good input pixels it
covers:

.. math::

    f_j = \\frac{\\sum_i w_{ij} f_i}{\\sum_i w_{ij}}, \\qquad
    \\sigma_j^2 = \\frac{\\sum_i w_{ij}^2 \\sigma_i^2}{(\\sum_i w_{ij})^2},

where :math:`w_{ij}` is the length (in the units of the edges) of the
overlap of input pixel *i* with output pixel *j*, and the sums run over good
input pixels only (``mask`` False, ``ivar > 0``, flux and ivar finite).  The
variance is exact for independent input pixels.  Because the mean is over
the good part of the output pixel, the integral ``sum_j f_j * width_j`` over
output pixels fully covered by good input equals the input's integral over
the same range: flux is conserved.

A bad input pixel contributes nothing (neither its flux nor its width), so
no value stored in it (NaN, inf, 1e30) can reach an output pixel.  An output
pixel whose good coverage (the fraction of its width covered by good input
pixels) is below ``min_fraction`` - outside the observed range, or mostly
masked - gets ``flux = 0``, ``ivar = 0``, ``mask = True``; it is never
extrapolated.

Units are whatever the caller gives: flux density per unit of the edge axis
in, the same out.  Converting observed-frame flux density to rest-frame
flux density (a factor ``1 + z``) is the caller's job
(:mod:`survey_denoise.preprocess`).

Two noise-free variants serve the mock survey and the fitters' templates:
:func:`rebin_samples` (a finely sampled spectrum, piecewise-linear between
samples, onto any bins) and :func:`shift_rebin` (pixel integrals already
summed into a cumulative integral, onto a grid of the same log step shifted
by a fraction of a pixel per row: the redshift of a mock galaxy).

Algorithm.  For every output edge the input pixel containing it is found by
binary search; the output pixel then holds (at most) a partial pixel at each
end and a run of whole pixels in between.  The whole-pixel runs are summed
for all rows and output pixels at once with one ``numpy.add.reduceat`` over
the flattened batch (exact local sums, no cumulative-sum cancellation when a
pixel is huge), the partial pixels by gathering.  Work is linear in
``n_galaxy * (n_in + n_out)`` and there is no Python loop over spectra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_MIN_FRACTION = 0.5
"""Least good coverage of an output pixel for it to be kept."""


@dataclass(frozen=True)
class Rebinned:
    """Output of :func:`rebin`, each of shape ``(n_galaxy, n_out)``.

    Attributes
    ----------
    flux : ndarray of float64
        Mean flux density over the good part of each output pixel (0 where masked).
    ivar : ndarray of float64
        Its inverse variance (0 where masked; never negative, never NaN).
    mask : ndarray of bool
        True where the good coverage is below ``min_fraction``.
    coverage : ndarray of float64
        Fraction (0-1) of each output pixel covered by good input pixels.
    """

    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    coverage: np.ndarray


def edges_from_centres(centres: np.ndarray) -> np.ndarray:
    """Pixel edges (n + 1) from pixel centres (n), both Angstrom.

    Inner edges are geometric mid-points (exact for log-uniform pixels, and
    within (step / lambda)^2 of the arithmetic ones for linear pixels); the
    outer edges mirror the nearest inner one.

    Raises
    ------
    ValueError
        Unless ``centres`` is 1-D, positive and strictly increasing, with at least 2 values.
    """
    centres = np.asarray(centres, dtype=np.float64)
    if centres.ndim != 1 or centres.size < 2 or np.any(centres <= 0) or np.any(np.diff(centres) <= 0):
        raise ValueError("pixel centres must be a 1-D, positive, strictly increasing array of >= 2 values")
    inner = np.sqrt(centres[1:] * centres[:-1])
    first = centres[0] ** 2 / inner[0]
    last = centres[-1] ** 2 / inner[-1]
    return np.concatenate([[first], inner, [last]])


def good_pixels(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Pixels that carry information: not masked, ``ivar > 0``, flux and ivar finite."""
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    if mask is not None:
        good &= ~np.asarray(mask, dtype=bool)
    return good


def rebin(
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray | None,
    edges_in: np.ndarray,
    edges_out: np.ndarray,
    *,
    scale: np.ndarray | None = None,
    min_fraction: float = DEFAULT_MIN_FRACTION,
) -> Rebinned:
    """Rebin spectra onto new pixel edges, conserving flux and propagating ivar.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_galaxy, n_in)
        Flux density (any unit per unit of the edge axis) and inverse variance.
    mask : ndarray of bool, shape (n_galaxy, n_in), or None
        True for bad input pixels.
    edges_in : ndarray, shape (n_in + 1,) or (n_galaxy, n_in + 1)
        Input pixel edges, strictly increasing along each row; one row per
        galaxy, or one shared by all.
    edges_out : ndarray, shape (n_out + 1,)
        Output pixel edges, strictly increasing.
    scale : ndarray, shape (n_galaxy,), optional
        Row ``g``'s input edges are ``edges_in * scale[g]`` (e.g. ``1 / (1 + z)``
        for a rest-frame shift).  Faster than passing the scaled 2-D edges.
    min_fraction : float
        Least fraction of an output pixel that good input must cover (0 < x <= 1).

    Returns
    -------
    Rebinned
        flux, ivar, mask and coverage per output pixel (float64 / bool).

    Raises
    ------
    ValueError
        If the shapes disagree, a scale is not positive and finite, or
        ``min_fraction`` is out of range.
    """
    flux = np.atleast_2d(np.asarray(flux))
    ivar = np.atleast_2d(np.asarray(ivar))
    n_gal, n_in = flux.shape
    if ivar.shape != flux.shape:
        raise ValueError(f"flux has shape {flux.shape} but ivar {ivar.shape}")
    if mask is not None:
        mask = np.atleast_2d(np.asarray(mask, dtype=bool))
        if mask.shape != flux.shape:
            raise ValueError(f"flux has shape {flux.shape} but mask {mask.shape}")
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    edges_in = np.asarray(edges_in, dtype=np.float64)
    edges_out = np.asarray(edges_out, dtype=np.float64)
    if edges_in.shape[-1] != n_in + 1 or edges_in.ndim not in (1, 2) or \
            (edges_in.ndim == 2 and edges_in.shape[0] != n_gal):
        raise ValueError(f"edges_in has shape {edges_in.shape}; expected ({n_in + 1},) "
                         f"or ({n_gal}, {n_in + 1})")
    if edges_out.ndim != 1 or edges_out.size < 2 or np.any(np.diff(edges_out) <= 0):
        raise ValueError("edges_out must be 1-D and strictly increasing")
    if scale is not None:
        scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n_gal,))
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError("scale must be positive and finite for every row")
    n_out = edges_out.size - 1
    out = Rebinned(np.zeros((n_gal, n_out)), np.zeros((n_gal, n_out)),
                   np.ones((n_gal, n_out), bool), np.zeros((n_gal, n_out)))
    # Blocks of rows small enough to stay in cache: every step below is a
    # pass over the block, and memory traffic, not arithmetic, sets the pace.
    block = max(1, _BLOCK_ELEMENTS // max(n_in, 1))
    for lo in range(0, n_gal, block):
        rows = slice(lo, min(lo + block, n_gal))
        _rebin_block(flux[rows], ivar[rows], None if mask is None else mask[rows],
                     edges_in if edges_in.ndim == 1 else edges_in[rows], edges_out,
                     None if scale is None else scale[rows], min_fraction, out, rows)
    return out


_BLOCK_ELEMENTS = 1 << 16
_COVERAGE_TOLERANCE = 1e-9


def _rebin_block(flux, ivar, mask, edges_in, edges_out, scale, min_fraction, out, rows) -> None:
    """:func:`rebin` of a block of rows, written into ``out[rows]``.

    All lengths are measured on the input's own axis: with a per-row
    ``scale`` the output edges are mapped onto it (``edges_out / scale``),
    which leaves means and variances unchanged (overlap weights all scale
    alike) and keeps the per-pixel widths shared by all rows.
    """
    n_gal, n_in = flux.shape
    n_out = edges_out.size - 1
    if scale is not None:
        if edges_in.ndim == 2:
            edges_in = edges_in * scale[:, None]
            out_edges = np.broadcast_to(edges_out, (n_gal, n_out + 1))
        else:
            out_edges = edges_out[None, :] / scale[:, None]
    else:
        out_edges = np.broadcast_to(edges_out, (n_gal, n_out + 1))
    width = np.diff(edges_in, axis=-1)

    # Per input pixel: good width a, a * flux, a^2 * variance.
    good = good_pixels(flux, ivar, mask)
    q = np.zeros((3, n_gal, n_in))
    a, af, a2v = q
    np.multiply(good, width, out=a)
    np.multiply(a, flux, out=af, where=good)
    np.multiply(a, a, out=a2v)
    np.divide(a2v, ivar, out=a2v, where=good)

    # c[g, k]: number of input edges <= output edge k; the input pixel
    # holding edge k is c - 1 (-1: below the data, n_in: above it).
    if edges_in.ndim == 1:
        c = np.searchsorted(edges_in, out_edges, side="right")
    else:
        c = _count_le(edges_in, out_edges[0])
    left, right = c[:, :-1] - 1, c[:, 1:] - 1
    lo_out, hi_out = out_edges[:, :-1], out_edges[:, 1:]

    # Whole input pixels (no output edge inside them) each belong to one
    # output pixel; a weighted bincount sums them per (row, output pixel)
    # exactly, with no cumulative-sum cancellation next to a huge value.
    # k[g, i] = number of output edges at or left of input pixel i's start.
    hits = np.bincount((c + (np.arange(n_gal) * (n_in + 2))[:, None]).ravel(),
                       minlength=n_gal * (n_in + 2)).reshape(n_gal, n_in + 2)
    k = np.cumsum(hits, axis=1, dtype=np.int32)
    k_lo, k_hi = k[:, :n_in], k[:, 1:n_in + 1]
    whole = (k_hi == k_lo) & (k_lo >= 1) & (k_lo <= n_out)
    label = np.where(whole, k_lo - 1, n_out).astype(np.intp)
    label += (np.arange(n_gal) * (n_out + 1))[:, None]
    label = label.ravel()
    sums = np.stack([np.bincount(label, weights=qi.ravel(), minlength=n_gal * (n_out + 1))
                     for qi in q]).reshape(3, n_gal, n_out + 1)[:, :, :n_out]
    big_a, big_af, big_a2v = sums

    # Partial pixels at the two ends (one pixel when left == right).
    same = left == right
    li = np.clip(left, 0, n_in - 1)
    ri = np.clip(right, 0, n_in - 1)
    ov_left = np.where(same, hi_out - lo_out, _gather(edges_in, li + 1) - lo_out)
    ov_right = np.where(same, 0.0, hi_out - _gather(edges_in, ri))
    ov_left = np.where((left >= 0) & (left < n_in), np.maximum(ov_left, 0.0), 0.0)
    ov_right = np.where((right >= 0) & (right < n_in), np.maximum(ov_right, 0.0), 0.0)
    offset = (np.arange(n_gal) * n_in)[:, None]
    flat = q.reshape(3, -1)
    for ov, pix in ((ov_left, li), (ov_right, ri)):
        frac = ov / _gather(width, pix)
        flat_pix = (pix + offset).ravel()
        big_a += frac * flat[0, flat_pix].reshape(n_gal, n_out)
        big_af += frac * flat[1, flat_pix].reshape(n_gal, n_out)
        big_a2v += frac * frac * flat[2, flat_pix].reshape(n_gal, n_out)

    coverage = np.clip(big_a / (hi_out - lo_out), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out_flux = big_af / big_a
        out_ivar = big_a * big_a / big_a2v
    # The tolerance forgives rounding in the overlap lengths (a pixel fully
    # covered may sum to 1 - 1e-16).
    keep = (coverage >= min_fraction - _COVERAGE_TOLERANCE) & (big_a > 0) & np.isfinite(out_flux) \
        & np.isfinite(out_ivar) & (out_ivar > 0)
    out.flux[rows] = np.where(keep, out_flux, 0.0)
    out.ivar[rows] = np.where(keep, out_ivar, 0.0)
    out.mask[rows] = ~keep
    out.coverage[rows] = coverage


def _gather(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``values[idx]`` per row, for 1-D (shared) or 2-D (per-row) ``values``."""
    return values[idx] if values.ndim == 1 else np.take_along_axis(values, idx, axis=1)


def _count_le(edges_in: np.ndarray, edges_out: np.ndarray) -> np.ndarray:
    """``c[g, k]`` = number of ``edges_in[g]`` values <= ``edges_out[k]``, for every row at once.

    One binary search over the rows laid end to end: each row is mapped onto
    its own interval ``[2g, 2g + 1]`` of a common axis; the result is then
    corrected exactly against the original values (rounding in the mapping
    can move a count by one only where an output edge sits within about
    1e-9 of a pixel width of an input edge).
    """
    n_gal, n_edges = edges_in.shape
    lo = min(edges_in[:, 0].min(), edges_out[0])
    span = max(edges_in[:, -1].max(), edges_out[-1]) - lo
    span = span if span > 0 else 1.0
    rows = 2.0 * np.arange(n_gal)[:, None]
    keys = ((edges_in - lo) / span + rows).ravel()
    queries = (edges_out[None, :] - lo) / span + rows
    c = np.searchsorted(keys, queries, side="right") - (np.arange(n_gal) * n_edges)[:, None]
    c = np.clip(c, 0, n_edges)
    # Exact correction: edges_in[c - 1] <= out < edges_in[c].
    below = np.take_along_axis(edges_in, np.clip(c - 1, 0, n_edges - 1), axis=1)
    c = np.where((c > 0) & (below > edges_out[None, :]), c - 1, c)
    above = np.take_along_axis(edges_in, np.clip(c, 0, n_edges - 1), axis=1)
    c = np.where((c < n_edges) & (above <= edges_out[None, :]), c + 1, c)
    return c


# ------------------------------------------------------- noise-free spectra


def rebin_samples(wave: np.ndarray, flux: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Flux-conserving resampling of a noise-free, finely sampled ``flux`` (..., n_wave) onto bins.

    ``wave`` holds sample points of a smooth spectrum (a template library),
    not pixel edges: the input is piecewise-linear between samples, unlike
    :func:`rebin`'s piecewise-constant pixels (on the BC03 templates the two
    differ by 2e-4 per pixel in the median, 4 % at most).

    The cumulative integral of the piecewise-linear input is interpolated at
    the new edges, so the mean flux density in each output bin is exact for
    piecewise-linear input.

    Returns
    -------
    ndarray (..., len(edges) - 1)
        Mean flux density per output bin (same units as ``flux``).
    """
    cum = np.concatenate(
        [np.zeros(flux.shape[:-1] + (1,)),
         np.cumsum(0.5 * (flux[..., 1:] + flux[..., :-1]) * np.diff(wave), axis=-1)], axis=-1)
    flat = cum.reshape(-1, wave.size)
    at = np.stack([np.interp(edges, wave, row) for row in flat]).reshape(flux.shape[:-1] + (edges.size,))
    return np.diff(at, axis=-1) / np.diff(edges)


def shift_rebin(cum: np.ndarray, pos0: np.ndarray, npix: int) -> np.ndarray:
    """Integrals over output pixels from a cumulative integral on a grid of the same log step.

    Parameters
    ----------
    cum : ndarray (n, m + 1)
        Cumulative integral of the input at its m + 1 pixel edges.
    pos0 : ndarray (n,)
        Position of the first output edge in input-edge units (fractional).
    npix : int
        Output pixels; output edge j sits at ``pos0 + j``.

    Returns
    -------
    ndarray (n, npix)
        Integral of the input over each output pixel (linear interpolation of
        ``cum``, exact flux conservation).
    """
    i0 = np.floor(pos0).astype(np.int64)
    t = (pos0 - i0)[:, None]
    idx = i0[:, None] + np.arange(npix + 1)[None, :]
    if idx.min() < 0 or idx.max() + 1 >= cum.shape[1]:
        raise ValueError("output pixels fall outside the working grid; widen it")
    lo = np.take_along_axis(cum, idx, axis=1)
    hi = np.take_along_axis(cum, idx + 1, axis=1)
    at = (1 - t) * lo + t * hi
    return np.diff(at, axis=1)
