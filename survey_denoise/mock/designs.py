"""Sampling designs: which galaxies of the mock population make up a survey.

A design scans candidate ids 0, 1, 2, ... of the population (each candidate's
properties depend only on the seed and its id) and keeps the ones it wants,
so the selected ids, and hence the whole survey, depend only on the seed.

``natural``
    The population as drawn: ids 0 .. n-1 (survey-scale runs).
``uniform-halpha``
    Scourfield et al. (2023): 10 log bins of Halpha flux from 10^0.2 to
    10^3.4 x 1e-17 erg/s/cm2, equal numbers per bin.  The paper binned
    MPA-JHU fluxes, measured on the noisy spectra, so the design bins the
    Halpha flux measured on each candidate's SDSS-like original spectrum
    (:func:`measured_halpha`): noise scatters faint galaxies between bins
    and into the faintest ones, as it did in the paper's sample.
``mzr``
    The star-forming MZR sample: emission-line class, Halpha 10^1.4-10^3.2
    (true flux; S/N > 10 there, so noise barely moves a galaxy), equal
    numbers in 9 log bins of 0.2 dex.
``bgs``
    DESI's Bright Galaxy Survey, bright sample (priors ``bgs``): galaxies
    with total r-band magnitude below 19.5
    (:func:`~survey_denoise.mock.photometry.r_magnitude`), in the numbers per
    z bin (:data:`BGS_Z_BINS`) of the survey's n(z)
    (:data:`survey_denoise.redshifts.NZ` ``["desi-bgs"]``, the declaration the
    de-noisers' training coverage masks draw from), from candidates drawn
    uniform in volume over 0.01-0.5.  The mock population's masses follow
    the same SDSS-like distribution at every z (not a luminosity function),
    so r < 19.5 alone would give a median z of ~0.14; the quotas give BGS's
    n(z), and the magnitude limit which galaxies fill them (the luminous ones
    at high z, as in the survey).

Measuring the selection flux with the science fitter (``fitting.fast``)
would make the mock depend on the code it is used to test, and fitting
every scanned candidate costs more than making it.  :func:`measured_halpha` instead fits Halpha and the [NII]
doublet, with the galaxy's true line width, on the original spectrum minus its
noise-free stellar continuum, in a window around Halpha: the flux an ideal
continuum model would give, with exactly the noise of the spectrum that
:func:`~survey_denoise.mock.generate.synthesize` makes (same random stream).
"""

from __future__ import annotations

import numpy as np

from .. import lines as L
from ..grid import GRID, Grid
from ..rng import standard_normal
from . import nebular, population
from .instrument import INSTRUMENTS
from .priors import CLASSES, default_priors

DESIGNS = ("uniform-halpha", "mzr", "natural", "bgs")
BLOCK = 20_000
MAX_CANDIDATES_PER_GALAXY = 500
SELECTION_SURVEY = "sdss"
"""Instrument whose noise the uniform-Halpha selection flux is measured with (the paper's)."""
MEASURE_MARGIN = 15.0
"""Halpha flux (1e-17 erg/s/cm2) beyond a factor 2 of the open bins that a candidate's
true flux may lie and still be measured: > 5 sigma of the SDSS-like noise at these fluxes."""
HALPHA_WINDOW = (6480.0, 6650.0)
"""Rest range (A) of the selection-flux fit: Halpha and [NII]6548,6583."""


def selection_bins(design: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Edges of the Halpha flux bins a binned design fills equally (1e-17 erg/s/cm2), and its classes (None: all)."""
    if design == "uniform-halpha":
        return np.logspace(0.2, 3.4, 11), None
    if design == "mzr":
        return np.logspace(1.4, 3.2, 10), ("emission",)
    raise ValueError(f"unknown design {design!r}; choose one of {DESIGNS}")


def select(design: str, n: int, seed: int, *, z_range: tuple[float, float] | None = None) -> np.ndarray:
    """Ids of the ``n`` galaxies of a design, sorted.

    Parameters
    ----------
    design : {"uniform-halpha", "mzr", "natural", "bgs"}
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
    if design == "bgs":
        return _select_bgs(n, seed, z_range)
    edges, classes = selection_bins(design)
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
        fluxes = nebular.line_fluxes(props)
        ha = fluxes["halpha"]
        if design == "uniform-halpha":
            # Only candidates that noise could carry into a bin still open are measured.
            open_ = np.flatnonzero([c.size < w for c, w in zip(chosen, want, strict=True)])
            lo, hi = edges[open_[0]] / 2 - MEASURE_MARGIN, 2 * edges[open_[-1] + 1] + MEASURE_MARGIN
            near = (ha >= lo) & (ha <= hi)
            ha = np.full(ids.size, -np.inf)
            sub = {k: v[near] for k, v in props.items()}
            ha[near] = _measure(seed, ids[near], sub, {k: v[near] for k, v in fluxes.items()})
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


BGS_Z_MAX = 0.5
"""Highest redshift of the ``bgs`` design: the end of its n(z); the SSP templates
(from 2000 A rest) would reach DESI's blue end up to z ~ 0.75."""


def config_for(design: str, survey: str, z_range: tuple[float, float] | None) -> dict:
    """What a design sets in :class:`~survey_denoise.mock.generate.MockConfig` besides the seed.

    The ``bgs`` design simulates DESI's Bright Galaxy Survey: its n(z)'s range,
    BGS's effective exposure time (priors ``bgs.effective_exptime``) and fibre
    fractions carried to DESI's fibres at each redshift.  The others take
    ``z_range`` (if given) and nothing else.

    Raises
    ------
    ValueError
        ``bgs`` with a survey other than DESI, or a redshift range beyond
        :data:`BGS_Z_MAX`.
    """
    if design != "bgs":
        return {} if z_range is None else {"z_range": tuple(z_range)}
    if survey != "desi":
        raise ValueError(f"the bgs design simulates DESI's Bright Galaxy Survey; use survey desi, not {survey!r}")
    z_range = tuple(z_range) if z_range is not None else bgs_z_range()
    if not 0 < z_range[0] < z_range[1] <= BGS_Z_MAX:
        raise ValueError(f"the bgs design needs 0 < z-min < z-max <= {BGS_Z_MAX} (the end of its "
                         f"n(z)), got {z_range}")
    return {"z_range": z_range, "exptime": float(default_priors().bgs["effective_exptime"]),
            "aperture": True}


BGS_Z_BINS = 20
"""Equal-width redshift bins over the n(z)'s range whose quotas the ``bgs`` design fills."""


def bgs_z_range() -> tuple[float, float]:
    """Redshift range of the ``bgs`` design: that of its n(z)."""
    from ..redshifts import NZ

    return tuple(NZ[str(default_priors().bgs["nz"])].z_range)


def _bgs_quotas(n: int, edges: np.ndarray) -> np.ndarray:
    from ..redshifts import NZ, SmailNz

    nz = NZ[str(default_priors().bgs["nz"])]
    cdf = SmailNz((float(edges[0]), float(edges[-1])), nz.z0).pdf
    fine = np.linspace(edges[0], edges[-1], 40 * (edges.size - 1) + 1)
    mass = np.add.reduceat(cdf(fine[:-1]) + cdf(fine[1:]), np.arange(0, fine.size - 1, 40))
    share = n * mass / mass.sum()
    want = np.floor(share).astype(int)
    want[np.argsort(want - share)[: n - want.sum()]] += 1    # largest remainders
    return want


def _select_bgs(n: int, seed: int, z_range) -> np.ndarray:
    from .photometry import r_magnitude

    r_max = float(default_priors().bgs["r_max"])
    edges = np.linspace(*(z_range or bgs_z_range()), BGS_Z_BINS + 1)
    want = _bgs_quotas(n, edges)
    chosen: list[np.ndarray] = [np.empty(0, np.int64)] * want.size
    start, block = 0, min(BLOCK, max(1000, 20 * n))
    while any(c.size < w for c, w in zip(chosen, want, strict=True)):
        # r < 19.5 keeps ~1 % of candidates near z = 0.5: a small n still needs many there.
        if start > MAX_CANDIDATES_PER_GALAXY * max(n, 100):
            counts = [c.size for c in chosen]
            raise ValueError(f"design 'bgs': z bins not filled with r < {r_max} after {start} "
                             f"candidates (have {counts}, want {want.tolist()}); lower n")
        ids = np.arange(start, start + block, dtype=np.int64)
        props = population.draw(seed, ids, z_range=(float(edges[0]), float(edges[-1])))
        bright = r_magnitude(props, nebular.line_fluxes(props)) < r_max
        which = np.clip(np.searchsorted(edges, props["z"], side="right") - 1, 0, want.size - 1)
        for b in range(want.size):
            room = want[b] - chosen[b].size
            if room > 0:
                chosen[b] = np.concatenate([chosen[b], ids[bright & (which == b)][:room]])
        start += block
    return np.sort(np.concatenate(chosen))


def measured_halpha(seed: int, ids: np.ndarray, *, z_range: tuple[float, float] | None = None) -> np.ndarray:
    """Halpha flux measured on the SDSS-like original rest-frame spectra of galaxies ``ids``.

    The flux the uniform-Halpha design bins on (see the module notes):
    Halpha and the [NII] doublet fitted by weighted least squares, with each
    galaxy's true line width, to the noisy rest-frame spectrum minus its
    noise-free stellar continuum, over :data:`HALPHA_WINDOW`.

    Parameters
    ----------
    seed : int
        Population seed.
    ids : ndarray of int
        Galaxy ids.
    z_range : (float, float), optional
        Redshift range of the population.

    Returns
    -------
    ndarray (n,)
        Measured Halpha flux, 1e-17 erg/s/cm2 (can be negative).
    """
    ids = np.asarray(ids, dtype=np.int64)
    props = population.draw(seed, ids, z_range=z_range)
    return _measure(seed, ids, props, nebular.line_fluxes(props))


def _measure(seed, ids, props, fluxes):
    from .generate import REST_MARGIN, _add_lines, _continuum_rest
    from .synth import add_gaussians

    inst = INSTRUMENTS[SELECTION_SURVEY]
    wave = GRID.wavelength
    i0, i1 = np.searchsorted(wave, HALPHA_WINDOW)
    win = Grid(float(wave[i0]), float(wave[i1 - 1]), int(i1 - i0))
    wmin = win.wave_min * np.exp(-REST_MARGIN * win.dlnlam)
    cont = _continuum_rest(props, fluxes, wmin, win.dlnlam, win.npix + 2 * REST_MARGIN)
    cont = np.ascontiguousarray(cont[:, REST_MARGIN:-REST_MARGIN])
    flux = cont.copy()
    one = np.ones_like(props["z"])
    _add_lines(flux, win.edges, props, fluxes, one, inst.sigma_inst_kms)
    sigma = inst.sigma_rest(flux, inst.exposure(props["u"][:, population.U["exposure"]]), win, props["z"])
    # The generator's own noise stream, so the measurement sees the spectrum's noise.
    noise = standard_normal(seed, f"mock-noise-{inst.name}-rest", ids, GRID.npix)[:, i0:i1]
    resid = (flux + sigma * noise.astype(np.float64)) - cont
    sig = np.sqrt(props["sigma_gas"] ** 2 + inst.sigma_inst_kms**2)
    cols = []
    for members in (("halpha",), ("nii_6583", "nii_6548")):
        col = np.zeros_like(flux)
        for k in members:
            share = 1.0 if k != "nii_6548" else L.all_lines()["nii_6548"].doublet_ratio
            add_gaussians(col, win.edges, one * L.wavelength(k), one * share, sig)
        cols.append(col)
    a = np.stack(cols, axis=2)                                   # (n, npix, 2)
    w = 1.0 / sigma**2
    ata = np.einsum("npi,np,npj->nij", a, w, a)
    atb = np.einsum("npi,np,np->ni", a, w, resid)
    return np.linalg.solve(ata, atb[:, :, None])[:, 0, 0]
