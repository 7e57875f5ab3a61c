"""How far line catalogues disagree, in dex: the paper's Table 6 and Figure 9, scored fairly.

The paper's measure (Scourfield et al. 2023, Sect. 4.3): for one line, with
``d = log10(flux_judged) - log10(flux_reference)``,

* ``sigma`` — the standard deviation of ``d`` over all points;
* ``sigma_fill`` — the same over the points in *filled* bins only: the range
  of the reference's log flux is cut into ``n_bins`` equal bins and a bin is
  filled when it holds more than ``N / (n_bins + 1)`` points, "where N is the
  total number of points" ("at least as many as a uniform distribution would
  put there");
* per bin: the count, whether it is filled, and the 16th/50th/84th
  percentiles of the judged log flux (Figure 9's error bars) and of ``d``.

The paper does not say how a line fitted at zero flux enters sigma (its
Figure 9 only shows, per bin of the original flux, how many lines "were
successfully fit").  A line whose flux is zero or negative has no logarithm,
and dropping it scores a method on fewer, brighter galaxies the more faint
lines it loses.  Here (:func:`censor`):

* a finite flux > 0 is used as it is, however low its S/N (the paper's rule);
* a flux <= 0 (or NaN) with a finite error > 0 is an **upper limit**, placed at
  ``LIMIT_SIGMA`` (1) times its error: a positive flux of a line below the
  noise is a noise draw of about that size, so a limit and a faint positive
  fit stand on the same footing (a 3-sigma limit would put every
  non-detection above the low-S/N fits it is indistinguishable from);
* anything else (a failed fit, a line off the spectrum) is **missing**.  A
  line the observed spectrum does not cover (catalogue ``<key>_status``
  with :data:`~survey_denoise.flags.Flag.LINE_NOT_COVERED`; its flux and
  error are NaN) is missing whatever its columns hold: it was not
  observed, so it is neither faint nor an upper limit.

Our reading of "N is the total number of points": every galaxy scored,
upper limits included, is a point; it counts in N, in its bin, and in
``sigma`` and ``sigma_fill`` at its limit value.  Every method is scored on
the same galaxies (:func:`common_mask`): those where the reference, the
truth (when given) and every judged catalogue have a value or a limit; each
method's measured / limit / missing counts are reported beside it, so a
method that loses lines to failed fits shrinks the common set for all
methods and shows it in its ``n_missing``, and one that fits them at zero is
scored at its limits.

Against a mock's truth table the same statistics are computed with the
true flux as the reference (bins in true flux), and three numbers say whether
a de-noiser invents lines (:func:`painted_rate`), whether its detections of
lines the input cannot show are real at its own precision
(:func:`spurious_lines`), and whether it inflates the faint end
(:func:`faint_offset`).  A true flux of 0 (a line absent from the mock) has
no logarithm either: such galaxies are outside the common set of the
scatter statistics but count in the painted-line rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import lines
from ..fitting import DETECTED_SNR
from ..fitting.catalogue import not_covered, not_in_input

TABLE6_LINES = ("halpha", "hdelta", "oiii_4363", "sii_6716", "oiii_5007", "nii_6583")
"""Lines of the paper's Table 6 and Figure 9, in its order."""
N_BINS = 10
"""Bins in the reference flux (the paper's choice)."""
LIMIT_SIGMA = 1.0
"""An upper limit sits at this many times the line's flux error (see the module docstring)."""
DETECTION_SNR = DETECTED_SNR
"""S/N above which a line counts as detected, and the detection floor in units of the noisy error."""

SUPPORT_SIGMA = 2.0
"""A detection is supported by the truth only within this many of its errors (:func:`spurious_lines`)."""

_BIN_COLUMNS = ["lo", "hi", "centre", "count", "n_upper", "filled", "p16", "p50", "p84", "d16", "d50", "d84"]


def censor(flux: np.ndarray, flux_err: np.ndarray, *,
           limit_sigma: float = LIMIT_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Fluxes with zero or negative ones turned into upper limits.

    Parameters
    ----------
    flux, flux_err : ndarray (n,)
        Fitted line fluxes and their 1-sigma errors (same unit, e.g. 1e-17 erg/s/cm2).
    limit_sigma : float
        An upper limit is placed at ``limit_sigma * flux_err``.

    Returns
    -------
    value : ndarray (n,)
        ``flux`` where it is finite and > 0; ``limit_sigma * flux_err`` where
        the flux is <= 0 or not finite but the error is finite and > 0; NaN
        (missing) otherwise.  Same unit as ``flux``.
    upper : ndarray of bool (n,)
        Whether ``value`` is an upper limit.
    """
    f = np.asarray(flux, np.float64)
    e = np.asarray(flux_err, np.float64)
    measured = np.isfinite(f) & (f > 0)
    upper = ~measured & np.isfinite(e) & (e > 0)
    value = np.where(measured, f, np.where(upper, limit_sigma * np.where(upper, e, 1.0), np.nan))
    return value, upper


def common_mask(values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Galaxies where every array holds a finite, positive value (measured or limit).

    Parameters
    ----------
    values : mapping of name to ndarray (n,)
        Censored values (:func:`censor`) or true fluxes of the same galaxies.

    Returns
    -------
    ndarray of bool (n,)
    """
    arrays = [np.asarray(v, np.float64) for v in values.values()]
    if not arrays:
        raise ValueError("common_mask needs at least one array")
    ok = np.ones(arrays[0].shape, bool)
    for v in arrays:
        ok &= np.isfinite(v) & (v > 0)
    return ok


def log_edges(values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """``n_bins + 1`` equal edges in log10 between the smallest and largest positive value."""
    lv = np.log10(np.asarray(values, np.float64))
    return np.linspace(lv.min(), lv.max(), n_bins + 1)


def bin_index(log_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value; values on or past the outer edges go to the outer bins."""
    return np.clip(np.searchsorted(edges, log_values, side="right") - 1, 0, len(edges) - 2)


@dataclass
class LineScatter:
    """Disagreement of one line between a reference and a judged set of fluxes.

    Attributes
    ----------
    line : str
        Catalogue key.
    n : int
        Points scored (upper limits included).
    n_upper : int
        Of them, upper limits of the judged fluxes.
    sigma, sigma_fill : float
        Standard deviation (dex) of ``log10(b / a)`` over all points / filled bins.
    median_offset : float
        Median of ``log10(b / a)``, dex.
    bins : DataFrame
        One row per bin: ``lo``, ``hi``, ``centre`` (log10 flux of ``a``),
        ``count``, ``n_upper``, ``filled``, ``p16``/``p50``/``p84`` (log10 flux
        of ``b``) and ``d16``/``d50``/``d84`` (of ``log10(b / a)``).
    """

    line: str
    n: int
    n_upper: int
    sigma: float
    sigma_fill: float
    median_offset: float
    bins: pd.DataFrame


def scatter_dex(flux_a: np.ndarray, flux_b: np.ndarray, *, upper_b: np.ndarray | None = None,
                n_bins: int = N_BINS, edges: np.ndarray | None = None, line: str = "") -> LineScatter:
    """The paper's sigma and sigma_fill between two flux arrays of the same galaxies.

    Parameters
    ----------
    flux_a, flux_b : ndarray (n,)
        Reference and judged fluxes (same unit), all finite and > 0: turn
        zero or negative fits into limits with :func:`censor` and choose the
        galaxies with :func:`common_mask` first.
    upper_b : ndarray of bool (n,), optional
        Which of ``flux_b`` are upper limits (counted per bin; scored at their value).
    n_bins : int
        Bins in ``log10(flux_a)`` between its smallest and largest value.
    edges : ndarray (n_bins + 1,), optional
        log10 bin edges to use instead (values outside go to the outer bins).
    line : str
        Label stored in the result.

    Raises
    ------
    ValueError
        If a flux is not finite or not > 0: no galaxy is dropped here.
    """
    a = np.asarray(flux_a, np.float64)
    b = np.asarray(flux_b, np.float64)
    up = np.zeros(a.shape, bool) if upper_b is None else np.asarray(upper_b, bool)
    if not (a.shape == b.shape == up.shape):
        raise ValueError(f"line {line!r}: reference, judged and limit arrays differ in shape "
                         f"({a.shape}, {b.shape}, {up.shape})")
    bad = ~(np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0))
    if bad.any():
        raise ValueError(f"line {line!r}: {int(bad.sum())} fluxes are not finite and > 0; turn them into "
                         "upper limits with metrics.censor and select galaxies with metrics.common_mask")
    la, lb = np.log10(a), np.log10(b)
    d = lb - la
    n = a.size
    nan = float("nan")
    rows = []
    sigma_fill = nan
    if n >= 2:
        if edges is None:
            edges = np.linspace(la.min(), la.max(), n_bins + 1)
        edges = np.asarray(edges, np.float64)
        which = bin_index(la, edges)
        filled_points = np.zeros(n, bool)
        for i in range(len(edges) - 1):
            sel = which == i
            count = int(sel.sum())
            filled = count > n / len(edges)  # N / (n_bins + 1)
            filled_points |= sel & filled
            p = np.percentile(lb[sel], [16, 50, 84]) if count else [nan] * 3
            q = np.percentile(d[sel], [16, 50, 84]) if count else [nan] * 3
            rows.append({"lo": edges[i], "hi": edges[i + 1], "centre": 0.5 * (edges[i] + edges[i + 1]),
                         "count": count, "n_upper": int(up[sel].sum()), "filled": filled,
                         "p16": p[0], "p50": p[1], "p84": p[2], "d16": q[0], "d50": q[1], "d84": q[2]})
        if filled_points.sum() >= 2:
            sigma_fill = float(np.std(d[filled_points]))
    return LineScatter(line=line, n=n, n_upper=int(up.sum()),
                       sigma=float(np.std(d)) if n >= 2 else nan, sigma_fill=sigma_fill,
                       median_offset=float(np.median(d)) if n else nan,
                       bins=pd.DataFrame(rows, columns=_BIN_COLUMNS))


def detection_floor(noisy_flux_err: np.ndarray, snr: float = DETECTION_SNR) -> np.ndarray:
    """The faintest line the noisy spectrum could detect: ``snr`` times its fitted flux error.

    Parameters
    ----------
    noisy_flux_err : ndarray (n,)
        1-sigma flux errors of the line fitted on the noisy (input) spectra.
    snr : float
        Detection threshold.

    Returns
    -------
    ndarray (n,)
        Same unit as the errors; NaN where the error is not finite or not > 0.
    """
    e = np.asarray(noisy_flux_err, np.float64)
    return np.where(np.isfinite(e) & (e > 0), snr * e, np.nan)


def painted_rate(true_flux: np.ndarray, floor: np.ndarray, flux: np.ndarray, flux_err: np.ndarray, *,
                 snr: float = DETECTION_SNR) -> tuple[float, int, int]:
    """Share of lines below the noise that a method reports as detected ("painted" lines).

    A galaxy is *faint* when its true flux is below the detection floor of
    the noisy spectrum (:func:`detection_floor`): the input cannot show that
    line at S/N > ``snr`` except by a noise excursion.  It is *painted* when
    the judged catalogue nevertheless has ``flux / flux_err > snr``.  Run on
    the noisy catalogue itself, the rate is the chance that noise lifts a
    faint line over the floor: the baseline a de-noiser should not exceed.

    Parameters
    ----------
    true_flux : ndarray (n,)
        True line fluxes (>= 0; a line absent from the mock is 0).
    floor : ndarray (n,)
        Detection floor, same unit; NaN where unknown (the galaxy is not counted).
    flux, flux_err : ndarray (n,)
        The judged catalogue's fitted flux and error; a missing fit is not a detection.
    snr : float
        S/N that counts as a detection.

    Returns
    -------
    rate : float
        ``n_painted / n_faint`` (NaN when no galaxy is faint).
    n_painted, n_faint : int
    """
    faint, painted = painted_lines(true_flux, floor, flux, flux_err, snr=snr)
    n_faint, n_painted = int(faint.sum()), int(painted.sum())
    return (n_painted / n_faint if n_faint else float("nan")), n_painted, n_faint


def painted_lines(true_flux: np.ndarray, floor: np.ndarray, flux: np.ndarray, flux_err: np.ndarray, *,
                  snr: float = DETECTION_SNR) -> tuple[np.ndarray, np.ndarray]:
    """Per galaxy: faint (true flux below the floor) and painted (faint, yet reported at S/N > ``snr``).

    The masks behind :func:`painted_rate`, same parameters; each an ndarray of bool (n,).
    """
    t = np.asarray(true_flux, np.float64)
    fl = np.asarray(floor, np.float64)
    f = np.asarray(flux, np.float64)
    e = np.asarray(flux_err, np.float64)
    faint = np.isfinite(t) & np.isfinite(fl) & (t < fl)
    with np.errstate(divide="ignore", invalid="ignore"):
        detected = np.isfinite(f) & np.isfinite(e) & (e > 0) & (f > snr * e)
    return faint, faint & detected


def spurious_lines(true_flux: np.ndarray, flux: np.ndarray, flux_err: np.ndarray, *,
                   snr: float = DETECTION_SNR, within: float = SUPPORT_SIGMA) -> np.ndarray:
    """Per galaxy: a detection the truth does not support at the catalogue's own precision.

    :func:`painted_lines` asks whether the *input* could show a line; a
    de-noiser exists to recover lines it cannot, so a painted line may be
    a real recovery.  This asks whether the *truth* supports what the
    catalogue claims: the line is reported at S/N > ``snr`` while the true
    flux is below ``snr`` times the reported error (too faint to detect at
    that precision) or outside ``within`` errors of the reported flux (the
    value is wrong by more than its error says).  On the noisy catalogue,
    whose error sets the painted-line floor, every painted line is
    spurious; on a de-noised one the painted lines that are not spurious
    are real lines recovered with an honest error.

    Parameters
    ----------
    true_flux, flux, flux_err : ndarray (n,)
        True flux, and the judged catalogue's fitted flux and 1-sigma
        error (one unit).
    snr : float
        S/N that counts as a detection.
    within : float
        Errors within which the truth must lie.

    Returns
    -------
    ndarray of bool (n,)
    """
    t = np.asarray(true_flux, np.float64)
    f = np.asarray(flux, np.float64)
    e = np.asarray(flux_err, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        detected = np.isfinite(f) & np.isfinite(e) & (e > 0) & (f > snr * e)
        unsupported = (t < snr * e) | (np.abs(f - t) > within * e)
    return detected & np.isfinite(t) & unsupported


def binned_offsets(true_flux: np.ndarray, judged: np.ndarray, reference: np.ndarray | None = None, *,
                   upper: np.ndarray | None = None, edges: np.ndarray) -> pd.DataFrame:
    """Per bin of true flux: how far the judged fluxes sit from the truth and from a reference.

    Parameters
    ----------
    true_flux, judged : ndarray (n,)
        True and judged fluxes (finite, > 0; limits at their value, see :func:`censor`).
    reference : ndarray (n,), optional
        The original spectra's fluxes of the same galaxies (finite, > 0).
    upper : ndarray of bool (n,), optional
        Which judged values are upper limits.
    edges : ndarray
        log10 true-flux bin edges (values outside go to the outer bins).

    Returns
    -------
    DataFrame
        One row per bin: ``lo``, ``hi``, ``centre`` (log10 true flux),
        ``count``, ``n_upper``, ``offset_truth`` (median of
        log10(judged / true), dex), ``sigma_truth`` (its standard deviation),
        ``offset_orig`` and ``sigma_orig`` (the same against ``reference``).
    """
    t = np.asarray(true_flux, np.float64)
    j = np.asarray(judged, np.float64)
    for name, v in (("true", t), ("judged", j)) + ((("reference", np.asarray(reference, np.float64)),)
                                                  if reference is not None else ()):
        if not (np.isfinite(v) & (v > 0)).all():
            raise ValueError(f"{name} fluxes must be finite and > 0 (censor and select the common set first)")
    up = np.zeros(t.shape, bool) if upper is None else np.asarray(upper, bool)
    d_true = np.log10(j) - np.log10(t)
    d_ref = np.log10(j) - np.log10(np.asarray(reference, np.float64)) if reference is not None else None
    edges = np.asarray(edges, np.float64)
    which = bin_index(np.log10(t), edges)
    rows = []
    nan = float("nan")
    for i in range(len(edges) - 1):
        sel = which == i
        count = int(sel.sum())
        row = {"lo": edges[i], "hi": edges[i + 1], "centre": 0.5 * (edges[i] + edges[i + 1]),
               "count": count, "n_upper": int(up[sel].sum()),
               "offset_truth": float(np.median(d_true[sel])) if count else nan,
               "sigma_truth": float(np.std(d_true[sel])) if count >= 2 else nan,
               "offset_orig": nan, "sigma_orig": nan}
        if d_ref is not None:
            row["offset_orig"] = float(np.median(d_ref[sel])) if count else nan
            row["sigma_orig"] = float(np.std(d_ref[sel])) if count >= 2 else nan
        rows.append(row)
    return pd.DataFrame(rows)


def faint_offset(true_flux: np.ndarray, judged: np.ndarray, edges: np.ndarray) -> tuple[float, int]:
    """Median over-prediction, log10(judged / true) in dex, in the faintest true-flux bin that holds galaxies.

    Parameters
    ----------
    true_flux, judged : ndarray (n,)
        True and judged fluxes (finite, > 0; upper limits at their value,
        which makes the result an upper bound where limits reach the median).
    edges : ndarray
        log10 true-flux bin edges, shared by the methods compared.

    Returns
    -------
    offset : float
        Dex; NaN when there are no galaxies.
    count : int
        Galaxies in that bin.
    """
    tab = binned_offsets(true_flux, judged, edges=edges)
    held = tab[tab["count"] > 0]
    if held.empty:
        return float("nan"), 0
    return float(held["offset_truth"].iloc[0]), int(held["count"].iloc[0])


# --- catalogues ---------------------------------------------------------------------------------


def _aligned(cat: pd.DataFrame, ids: np.ndarray, keys: Sequence[str], name: str) -> pd.DataFrame:
    cols = [c for k in keys for c in (f"{k}_flux", f"{k}_flux_err")]
    missing = [c for c in ["galaxy"] + cols if c not in cat.columns]
    if missing:
        raise KeyError(f"catalogue {name!r} lacks columns {missing}")
    # the status bits ride along: LINE_NOT_IN_INPUT of a de-noised catalogue is counted
    status = [f"{k}_status" for k in keys if f"{k}_status" in cat.columns]
    keyed = cat[["galaxy"] + cols + status].assign(galaxy=cat["galaxy"].astype(str))
    for k in keys:
        keyed.loc[not_covered(cat, k), [f"{k}_flux", f"{k}_flux_err"]] = np.nan
    if keyed["galaxy"].duplicated().any():
        raise ValueError(f"catalogue {name!r} lists some galaxies twice")
    # a galaxy absent from a catalogue is a missing line, not a smaller sample
    return keyed.set_index("galaxy").reindex(ids)


@dataclass
class Scores:
    """Every method scored on the same galaxies, per line (see :func:`score_catalogues`).

    Attributes
    ----------
    counts : DataFrame
        One row per (line, method), the reference ``original`` included:
        ``n_total``, ``n_measured``, ``n_upper``, ``n_missing`` over all
        galaxies, and ``n_common`` (galaxies every method is scored on).
    summary : DataFrame
        One row per (line, method) on the common set: ``n``, ``n_upper``,
        ``sigma_orig``/``sigma_fill_orig``/``offset_orig`` (against the
        original spectra's fluxes, bins in the original flux: the paper's
        measure), ``sigma_truth``/``sigma_fill_truth``/``offset_truth``
        (against the true flux, bins in true flux), ``painted_rate``,
        ``n_painted``, ``n_faint`` (:func:`painted_rate`, over every galaxy
        with a true flux and a noisy error, so lines absent from the mock
        count too; the same galaxies for every method),
        ``painted_rate_input`` (the painted lines a de-noised catalogue
        does not mark LINE_NOT_IN_INPUT, over ``n_faint``: the rate left
        to a user who drops the marked lines), ``spurious_rate`` (the
        painted lines that are also :func:`spurious_lines`, over
        ``n_faint``: lines that are not there at the claimed precision;
        equal to ``painted_rate`` for the noisy catalogue), ``faint_offset`` (dex)
        and ``n_faint_bin`` (:func:`faint_offset`).  Truth columns are NaN
        without a truth table; ``original`` has no painted rate (its faint
        detections are real).
    bins : DataFrame
        Per (line, method) and bin of true flux: :func:`binned_offsets`.
    vs_original : dict
        ``{method: {line: LineScatter}}`` against the original (Figure 9).
    values : dict
        ``{line: {"original", "truth", <method>, "upper_<method>": ndarray}}``
        on the common set, for plots.
    settings : dict
        ``limit_sigma``, ``snr``, ``n_bins``, ``noisy``.
    """

    counts: pd.DataFrame
    summary: pd.DataFrame
    bins: pd.DataFrame
    vs_original: dict[str, dict[str, LineScatter]]
    values: dict[str, dict[str, np.ndarray]] = field(repr=False)
    settings: dict = field(default_factory=dict)


def score_catalogues(judged: Mapping[str, pd.DataFrame], original: pd.DataFrame,
                     truth: pd.DataFrame | None = None, *, noisy: str | None = None,
                     keys: Sequence[str] = TABLE6_LINES, n_bins: int = N_BINS,
                     limit_sigma: float = LIMIT_SIGMA, snr: float = DETECTION_SNR) -> Scores:
    """Score line catalogues against the original spectra's fluxes and the truth, on common galaxies.

    Parameters
    ----------
    judged : mapping of method name to DataFrame
        Line catalogues (:func:`~survey_denoise.fitting.catalogue.read_catalogue`
        columns ``galaxy``, ``<key>_flux``, ``<key>_flux_err``) of the galaxies of ``original``.
    original : DataFrame
        The catalogue of the original spectra; its galaxies are the sample.
    truth : DataFrame, optional
        The mock's truth table: ``galaxy`` and ``true_<key>_flux`` in the
        catalogues' flux unit.
    noisy : str, optional
        Which of ``judged`` was fitted on the noisy input spectra: its flux
        errors set the detection floor of the painted-line rate.
    keys : sequence of str
        Line keys (default: Table 6's).
    n_bins : int
        Bins of the paper's sigma_fill and of the per-true-flux-bin table.
    limit_sigma, snr : float
        See :func:`censor` and :func:`painted_rate`.
    """
    if "galaxy" not in original.columns:
        raise KeyError("catalogue 'original' lacks columns ['galaxy']")
    if noisy is not None and noisy not in judged:
        raise KeyError(f"noisy catalogue {noisy!r} is not among the judged ones ({list(judged)})")
    ids = original["galaxy"].astype(str).to_numpy()
    cats = {"original": _aligned(original, ids, keys, "original")}
    cats.update({m: _aligned(c, ids, keys, m) for m, c in judged.items()})
    true = None
    if truth is not None:
        cols = [f"true_{k}_flux" for k in keys]
        missing = [c for c in ["galaxy"] + cols if c not in truth.columns]
        if missing:
            raise KeyError(f"truth table lacks columns {missing}")
        true = truth[["galaxy"] + cols].assign(galaxy=truth["galaxy"].astype(str)).set_index("galaxy").reindex(ids)

    counts, summary, bins = [], [], []
    vs_original: dict[str, dict[str, LineScatter]] = {m: {} for m in judged}
    values: dict[str, dict[str, np.ndarray]] = {}
    nan = float("nan")
    for k in keys:
        cens = {m: censor(c[f"{k}_flux"].to_numpy(float), c[f"{k}_flux_err"].to_numpy(float),
                          limit_sigma=limit_sigma) for m, c in cats.items()}
        t = true[f"true_{k}_flux"].to_numpy(float) if true is not None else None
        arrays = {m: v for m, (v, _) in cens.items()}
        common = common_mask({**arrays, **({"truth": t} if t is not None else {})})
        n_common = int(common.sum())
        for m, (v, up) in cens.items():
            counts.append({"line": k, "method": m, "n_total": ids.size,
                           "n_measured": int((np.isfinite(v) & ~up).sum()), "n_upper": int(up.sum()),
                           "n_missing": int((~np.isfinite(v)).sum()), "n_common": n_common})
        ref = arrays["original"][common]
        vals = {"original": ref, "upper_original": cens["original"][1][common]}
        t_c = t[common] if t is not None else None
        if t_c is not None:
            vals["truth"] = t_c
        edges_true = log_edges(t_c, n_bins) if t_c is not None and n_common >= 2 else None
        floor = (detection_floor(cats[noisy][f"{k}_flux_err"].to_numpy(float), snr)
                 if noisy is not None and t is not None else None)
        methods = list(judged) + (["original"] if t is not None else [])
        for m in methods:
            v, up = cens[m][0][common], cens[m][1][common]
            vals[m], vals[f"upper_{m}"] = v, up
            row = {"line": k, "method": m, "n": n_common, "n_upper": int(up.sum())}
            if m != "original":
                s = scatter_dex(ref, v, upper_b=up, n_bins=n_bins, line=k)
                vs_original[m][k] = s
                row.update(sigma_orig=s.sigma, sigma_fill_orig=s.sigma_fill, offset_orig=s.median_offset)
            else:
                row.update(sigma_orig=nan, sigma_fill_orig=nan, offset_orig=nan)
            row.update(sigma_truth=nan, sigma_fill_truth=nan, offset_truth=nan, painted_rate=nan,
                       n_painted=0, n_faint=0, painted_rate_input=nan, spurious_rate=nan,
                       faint_offset=nan, n_faint_bin=0)
            if t_c is not None and edges_true is not None:
                st = scatter_dex(t_c, v, upper_b=up, edges=edges_true, line=k)
                fo, nf = faint_offset(t_c, v, edges_true)
                row.update(sigma_truth=st.sigma, sigma_fill_truth=st.sigma_fill, offset_truth=st.median_offset,
                           faint_offset=fo, n_faint_bin=nf)
                tab = binned_offsets(t_c, v, ref if m != "original" else None, upper=up, edges=edges_true)
                bins.append(tab.assign(line=k, method=m))
            if floor is not None and m != "original":  # the originals' faint detections are real
                c = cats[m]
                # over every galaxy with a truth and a floor, not the common set: a line
                # absent from the mock (true flux 0) is the plainest case of painting
                flux, err = c[f"{k}_flux"].to_numpy(float), c[f"{k}_flux_err"].to_numpy(float)
                faint, painted = painted_lines(t, floor, flux, err, snr=snr)
                n_f, n_p = int(faint.sum()), int(painted.sum())
                # A de-noised catalogue marks the lines its input does not detect; what is
                # painted among the rest is what a user who drops the marked lines still gets.
                n_kept = int((painted & ~not_in_input(c, k)).sum())
                n_spurious = int((painted & spurious_lines(t, flux, err, snr=snr)).sum())
                row.update(painted_rate=n_p / n_f if n_f else nan, n_painted=n_p, n_faint=n_f,
                           painted_rate_input=n_kept / n_f if n_f else nan,
                           spurious_rate=n_spurious / n_f if n_f else nan)
            summary.append(row)
        values[k] = vals
    bin_cols = ["line", "method", "lo", "hi", "centre", "count", "n_upper", "offset_truth", "sigma_truth",
                "offset_orig", "sigma_orig"]
    return Scores(counts=pd.DataFrame(counts), summary=pd.DataFrame(summary),
                  bins=pd.concat(bins, ignore_index=True)[bin_cols] if bins else pd.DataFrame(columns=bin_cols),
                  vs_original=vs_original, values=values,
                  settings={"limit_sigma": limit_sigma, "snr": snr, "n_bins": n_bins, "noisy": noisy})


def table6(scores: Scores, keys: Sequence[str] = TABLE6_LINES, digits: int = 2,
           against: str = "orig") -> pd.DataFrame:
    """The paper's Table 6 layout: one row per method, (line, σ | σ_fill) columns, common galaxies.

    Parameters
    ----------
    scores : Scores
        From :func:`score_catalogues`.
    against : {"orig", "truth"}
        Reference: the original spectra's fluxes (the paper's) or the true fluxes.
    """
    table = lines.all_lines()
    cols = pd.MultiIndex.from_product([[table[k].label for k in keys], ["σ", "σ_fill"]])
    s = scores.summary.set_index(["method", "line"])
    methods = [m for m in scores.vs_original]
    data = []
    for m in methods:
        row = []
        for k in keys:
            if (m, k) in s.index:
                r = s.loc[(m, k)]
                row += [round(float(r[f"sigma_{against}"]), digits), round(float(r[f"sigma_fill_{against}"]), digits)]
            else:
                row += [np.nan, np.nan]
        data.append(row)
    return pd.DataFrame(data, index=pd.Index(methods, name="model"), columns=cols)
