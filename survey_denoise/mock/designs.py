"""Sampling designs: which galaxies of the mock population make up a survey.

A design scans candidate ids 0, 1, 2, ... of the population (each candidate's
properties depend only on the seed and its id) and keeps the ones it wants,
so the selected ids, and hence the whole survey, depend only on the seed.

``natural``
    The population as drawn: ids 0 .. n-1 (survey-scale runs).
``uniform-halpha``
    Scourfield et al. (2023): 10 log bins of true Halpha flux from 10^0.2 to
    10^3.4 x 1e-17 erg/s/cm2, equal numbers per bin.
``mzr``
    The star-forming MZR sample: emission-line class, Halpha 10^1.4-10^3.2,
    equal numbers in 9 log bins of 0.2 dex.
"""

from __future__ import annotations

import numpy as np

from . import nebular, population
from .priors import CLASSES

DESIGNS = ("uniform-halpha", "mzr", "natural")
BLOCK = 20_000
MAX_CANDIDATES_PER_GALAXY = 500


def _bins(design: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    if design == "uniform-halpha":
        return np.logspace(0.2, 3.4, 11), None
    if design == "mzr":
        return np.logspace(1.4, 3.2, 10), ("emission",)
    raise ValueError(f"unknown design {design!r}; choose one of {DESIGNS}")


def select(design: str, n: int, seed: int, *, z_range: tuple[float, float] | None = None) -> np.ndarray:
    """Ids of the ``n`` galaxies of a design, sorted.

    Parameters
    ----------
    design : {"uniform-halpha", "mzr", "natural"}
    n : int
        Galaxies wanted; a binned design puts ``n // n_bins`` in each bin
        (the first ``n % n_bins`` bins get one more).
    seed : int
        Population seed.
    z_range : (float, float), optional
        Redshift range of the population (must match the generation's).

    Raises
    ------
    ValueError
        Unknown design, or the bins cannot be filled from
        ``MAX_CANDIDATES_PER_GALAXY * n`` candidates.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if design == "natural":
        return np.arange(n, dtype=np.int64)
    edges, classes = _bins(design)
    nbin = edges.size - 1
    want = np.full(nbin, n // nbin)
    want[: n % nbin] += 1
    chosen: list[np.ndarray] = [np.empty(0, np.int64)] * nbin
    start = 0
    while any(c.size < w for c, w in zip(chosen, want, strict=True)):
        if start > MAX_CANDIDATES_PER_GALAXY * n:
            counts = [c.size for c in chosen]
            raise ValueError(f"design {design!r}: bins not filled after {start} candidates "
                             f"(have {counts}, want {want.tolist()}); widen z_range or lower n")
        ids = np.arange(start, start + BLOCK, dtype=np.int64)
        props = population.draw(seed, ids, z_range=z_range)
        ha = nebular.line_fluxes(props)["halpha"]
        ok = np.ones(ids.size, bool)
        if classes is not None:
            ok &= np.isin(props["class"], [CLASSES.index(c) for c in classes])
        which = np.searchsorted(edges, ha, side="right") - 1
        for b in range(nbin):
            room = want[b] - chosen[b].size
            if room > 0:
                hit = ids[ok & (which == b)][:room]
                chosen[b] = np.concatenate([chosen[b], hit])
        start += BLOCK
    return np.sort(np.concatenate(chosen))
