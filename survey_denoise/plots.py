"""Figures of the paper, from plain arrays and DataFrames.

Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot (so nothing depends on a display or a global figure manager; PNGs are
drawn with Agg) and writes it to ``save`` as PNG when a path is given.

* :func:`mzr_panels` — Figure 10, the MZR from several catalogues;
* :func:`line_flux_comparison` and :func:`figure9` — Figure 9, predicted vs original line fluxes;
* :func:`mse_vs_latent` — Figure 7, reconstruction MSE vs latent size;
* :func:`example_spectra` — Figure 8, spectra, reconstructions and residuals;
* :func:`latent_space` — Figure 6, the latent space coloured by class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import lines
from .science.metrics import Scores
from .science.mzr import SCHOLTE24, ReferenceMZR, binned_mzr, scatter

CASE_LABELS = {"original": "Original spectra", "desi": "DESI-like (z = 0.1)",
               "vae": "DESI-like + VAE", "pca": "PCA", "ae": "AE"}
MODEL_COLOURS = {"pca": "tab:green", "ae": "tab:orange", "vae": "tab:blue"}


def _finish(fig: Figure, save: str | Path | None, dpi: int = 110) -> Figure:
    if save is not None:
        path = Path(save)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")
    return fig


def mzr_panels(
    galaxies: Mapping[str, pd.DataFrame],
    *,
    reference: ReferenceMZR = SCHOLTE24,
    bins=None,
    mass_range: tuple[float, float] = (8.5, 11.5),
    oh_range: tuple[float, float] = (8.0, 9.0),
    save: str | Path | None = None,
) -> Figure:
    """Figure 10: one MZR panel per catalogue, with the mass histograms below.

    Parameters
    ----------
    galaxies : mapping of case name to DataFrame
        Columns ``logmass`` (log10 M*/M_sun), ``oh`` (12 + log(O/H), NaN when
        not measured), ``has_oh`` (bool) and optionally ``logsfr`` (log10
        M_sun/yr, colours the points) — :attr:`MZRTest.galaxies` fits.
    reference : ReferenceMZR
        Curve drawn and used for the quoted scatter.
    bins : array_like, optional
        Mass bin edges of the 16/50/84th-percentile error bars (filled bins only).
    """
    cases = list(galaxies)
    fig = Figure(figsize=(4.2 * max(len(cases), 1), 5.6), layout="constrained")
    gs = fig.add_gridspec(2, max(len(cases), 1), height_ratios=[3, 1])
    grid = np.linspace(*mass_range, 200)
    sfr_all = np.concatenate([g["logsfr"].to_numpy(float) for g in galaxies.values() if "logsfr" in g])
    vmin, vmax = (np.nanpercentile(sfr_all, [2, 98]) if sfr_all.size and np.isfinite(sfr_all).any()
                  else (None, None))
    mappable = None
    for i, case in enumerate(cases):
        g = galaxies[case]
        sel = g["has_oh"].to_numpy(bool)
        m, z = g["logmass"].to_numpy(float), g["oh"].to_numpy(float)
        ax = fig.add_subplot(gs[0, i])
        colour = g["logsfr"].to_numpy(float)[sel] if "logsfr" in g else "tab:blue"
        mappable = ax.scatter(m[sel], z[sel], c=colour, s=3, cmap="viridis", vmin=vmin, vmax=vmax,
                              alpha=0.6, rasterized=True, linewidths=0)
        ax.plot(grid, reference(grid), color="crimson", lw=1.5, label="reference MZR")
        if sel.sum() > 0:
            tab = binned_mzr(m[sel], z[sel], bins)
            tab = tab[tab["filled"]]
            ax.errorbar(tab["centre"], tab["p50"], yerr=[tab["p50"] - tab["p16"], tab["p84"] - tab["p50"]],
                        fmt="o", color="k", ms=4, capsize=2, label="16/50/84th pct")
        sc = scatter(m[sel], z[sel], reference)
        text = f"N = {sel.sum()} / {len(g)}\nσ = {sc['std']:.3f} dex" if sc["n"] > 1 else f"N = {sel.sum()} / {len(g)}"
        ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", fontsize=9,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        ax.set_xlim(mass_range)
        ax.set_ylim(oh_range)
        ax.set_title(CASE_LABELS.get(case, case), fontsize=10)
        ax.set_xticklabels([])
        if i == 0:
            ax.set_ylabel("12 + log(O/H)  [PP04 O3N2]")
            ax.legend(loc="lower right", fontsize=7)
        hx = fig.add_subplot(gs[1, i])
        hbins = np.linspace(*mass_range, 25)
        hx.hist(m[np.isfinite(m)], bins=hbins, color="tab:orange", alpha=0.6, label="all")
        hx.hist(m[sel], bins=hbins, color="tab:blue", alpha=0.7, label="with metallicity")
        hx.set_xlim(mass_range)
        hx.set_xlabel(r"log$_{10}$ M$_*$ / M$_\odot$")
        if i == 0:
            hx.set_ylabel("N")
            hx.legend(fontsize=7)
    if mappable is not None and "logsfr" in galaxies[cases[-1]]:
        fig.colorbar(mappable, ax=fig.axes[0::2], label=r"log$_{10}$ SFR / M$_\odot$ yr$^{-1}$",
                     shrink=0.7, location="right")
    return _finish(fig, save)


def line_flux_comparison(
    original: Mapping[str, np.ndarray],
    predicted: Mapping[str, np.ndarray],
    *,
    upper: Mapping[str, np.ndarray] | None = None,
    bins: Mapping[str, pd.DataFrame] | None = None,
    sigma: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    units: str = "1e-17 erg/s/cm²",
    ncols: int = 3,
    save: str | Path | None = None,
) -> Figure:
    """Figure 9: predicted vs original line flux per line, log-log, with the 1:1 line.

    Parameters
    ----------
    original, predicted : mapping of line key to array
        Fluxes (any one unit per line, e.g. 1e-17 erg/s/cm²) of the same galaxies;
        values that are not finite and > 0 are not drawn (and counted in the panel's N).
    upper : mapping of line key to bool array, optional
        Which predicted values are upper limits (drawn as downward triangles).
    bins : mapping of line key to DataFrame, optional
        Per-bin ``centre``, ``filled``, ``p16``/``p50``/``p84`` (log10 flux), as in
        :attr:`survey_denoise.science.metrics.LineScatter.bins`: the paper's error
        bars, black for filled bins and orange for the others.
    sigma : mapping of line key to str, optional
        Text to print in each panel, e.g. the scatter in dex from
        :mod:`survey_denoise.science.metrics`; nothing is computed here.
    labels : mapping of line key to str, optional
        Panel titles (default: the keys).
    units : str
        Flux unit written on both axes.

    A line with no galaxy to draw gets a panel that says so (no axes, no
    scatter quoted), rather than empty axes with a scatter of NaN.
    """
    keys = [k for k in original if k in predicted]
    n = max(len(keys), 1)
    nc = min(ncols, n)
    nr = int(np.ceil(n / nc))
    fig = Figure(figsize=(3.4 * nc, 3.2 * nr), layout="constrained")
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nr, nc, i + 1)
        x = np.asarray(original[key], float)
        y = np.asarray(predicted[key], float)
        lim = (np.asarray(upper[key], bool) if upper is not None and key in upper
               else np.zeros(x.shape, bool))
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        ax.set_title((labels or {}).get(key, key), fontsize=10)
        if not ok.any():
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no fluxes to compare\n(N = 0 of {x.size})", transform=ax.transAxes,
                    ha="center", va="center", fontsize=9)
            continue
        lx, ly = np.log10(x[ok]), np.log10(y[ok])
        det = ~lim[ok]
        if det.sum() > 50:
            ax.hexbin(lx[det], ly[det], gridsize=40, mincnt=1, bins="log", cmap="Blues")
        else:
            ax.scatter(lx[det], ly[det], s=6, color="tab:blue")
        if (~det).any():
            ax.scatter(lx[~det], ly[~det], s=8, marker="v", color="0.5", linewidths=0,
                       label="upper limit", rasterized=True)
        if bins is not None and key in bins:
            for filled, colour in ((True, "k"), (False, "tab:orange")):
                b = bins[key][(bins[key]["filled"] == filled) & (bins[key]["count"] > 0)]
                ax.errorbar(b["centre"], b["p50"], yerr=[b["p50"] - b["p16"], b["p84"] - b["p50"]],
                            fmt="o", ms=3, capsize=2, color=colour)
        lo, hi = np.percentile(np.r_[lx, ly], [0.5, 99.5])
        ax.plot([lo, hi], [lo, hi], color="crimson", lw=1)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"log$_{{10}}$ flux, original [{units}]")
        ax.set_ylabel(f"log$_{{10}}$ flux, predicted [{units}]")
        note = f"N = {ok.sum()}" + (f" ({int((~det).sum())} limits)" if (~det).any() else "")
        note += f"\n{sigma[key]}" if sigma and key in sigma else ""
        ax.text(0.04, 0.96, note, transform=ax.transAxes, va="top", fontsize=8)
    return _finish(fig, save)


def figure9(scores: Scores, method: str, *, units: str = "1e-17 erg/s/cm²",
            save: str | Path | None = None) -> Figure:
    """Figure 9 of one method from :func:`~survey_denoise.science.metrics.score_catalogues`.

    The galaxies are the common set; upper limits are drawn at their value;
    each panel quotes sigma and sigma_fill against the original spectra
    (the paper's) and, when a truth table was given, sigma against the truth.

    Parameters
    ----------
    scores : Scores
        Scored catalogues.
    method : str
        One of the judged methods.
    units : str
        Flux unit of the catalogues, written on the axes.
    """
    if method not in scores.vs_original:
        raise KeyError(f"no scores for method {method!r} (have {list(scores.vs_original)})")
    per_line = scores.vs_original[method]
    summary = scores.summary.set_index(["method", "line"])
    table = lines.all_lines()
    text = {}
    for k, s in per_line.items():
        if not np.isfinite(s.sigma):
            continue  # no galaxies: the panel says so instead of quoting a NaN
        text[k] = f"σ = {s.sigma:.2f} dex\nσ_fill = {s.sigma_fill:.2f} dex"
        truth_sigma = summary.loc[(method, k), "sigma_truth"]
        if np.isfinite(truth_sigma):
            text[k] += f"\nσ vs truth = {truth_sigma:.2f} dex"
    return line_flux_comparison({k: scores.values[k]["original"] for k in per_line},
                                {k: scores.values[k][method] for k in per_line},
                                upper={k: scores.values[k][f"upper_{method}"] for k in per_line},
                                bins={k: s.bins for k, s in per_line.items()}, sigma=text,
                                labels={k: table[k].label for k in per_line if k in table},
                                units=units, save=save)


def mse_vs_latent(table: pd.DataFrame, *, save: str | Path | None = None) -> Figure:
    """Figure 7: test reconstruction MSE against latent size, one line per model.

    Parameters
    ----------
    table : DataFrame
        Columns ``model`` (pca | ae | vae | …), ``latent_dim`` (int) and ``mse``
        (mean squared error in normalised flux units²).
    """
    missing = {"model", "latent_dim", "mse"} - set(table.columns)
    if missing:
        raise KeyError(f"MSE table lacks columns {sorted(missing)} (has {list(table.columns)})")
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for model, sub in table.groupby("model", sort=False):
        sub = sub.sort_values("latent_dim")
        ax.plot(sub["latent_dim"], sub["mse"], "o-", label=str(model).upper(),
                color=MODEL_COLOURS.get(str(model).lower()))
    ax.set_xlabel("latent dimensions / components")
    ax.set_ylabel("test MSE")
    ax.set_xticks(sorted(table["latent_dim"].unique()))
    ax.legend()
    return _finish(fig, save)


def example_spectra(
    wavelength: np.ndarray,
    original: np.ndarray,
    noisy: np.ndarray | None,
    reconstructions: Mapping[str, np.ndarray],
    *,
    ids: Sequence[str] | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Figure 8: example spectra with their reconstructions and residuals.

    Parameters
    ----------
    wavelength : (npix,) array
        Rest-frame wavelength, Angstrom.
    original : (n, npix) array
        Clean spectra (normalised flux).
    noisy : (n, npix) array or None
        The noise-added input, drawn in grey.
    reconstructions : mapping of model name to (n, npix) array
        De-noised spectra; residual = reconstruction − original.
    ids : sequence of str, optional
        Galaxy ids for the panel titles.
    """
    original = np.atleast_2d(original)
    n = original.shape[0]
    fig = Figure(figsize=(10, 3.0 * n), layout="constrained")
    gs = fig.add_gridspec(2 * n, 1, height_ratios=[3, 1] * n)
    for i in range(n):
        ax = fig.add_subplot(gs[2 * i])
        rx = fig.add_subplot(gs[2 * i + 1], sharex=ax)
        if noisy is not None:
            ax.plot(wavelength, np.atleast_2d(noisy)[i], color="0.75", lw=0.6, label="noisy input")
        ax.plot(wavelength, original[i], color="k", lw=0.8, label="original")
        for name, rec in reconstructions.items():
            colour = MODEL_COLOURS.get(name.lower())
            r = np.atleast_2d(rec)[i]
            ax.plot(wavelength, r, lw=0.8, color=colour, label=name.upper())
            rx.plot(wavelength, r - original[i], lw=0.6, color=colour)
        rx.axhline(0, color="k", lw=0.5)
        ax.set_ylabel("normalised flux")
        rx.set_ylabel("residual")
        if ids is not None:
            ax.set_title(str(ids[i]), fontsize=9)
        if i == 0:
            ax.legend(fontsize=7, ncols=4, loc="upper right")
        if i == n - 1:
            rx.set_xlabel("rest wavelength [Å]")
    return _finish(fig, save)


def latent_space(
    latent: np.ndarray,
    classes: Sequence[str] | np.ndarray,
    *,
    max_dims: int = 4,
    save: str | Path | None = None,
) -> Figure:
    """Figure 6: pairwise projections of the latent space coloured by galaxy class.

    Parameters
    ----------
    latent : (n, d) array
        Latent means (VAE) or codes (AE), or PCA components.
    classes : (n,) array of str
        Class of each galaxy (emission, absorption, quiescent, …).
    max_dims : int
        Only the first ``max_dims`` dimensions are shown (corner plot).
    """
    z = np.asarray(latent, float)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"latent must be (n, d) with d >= 2, got shape {z.shape}")
    cls = np.asarray(classes).astype(str)
    d = min(z.shape[1], max_dims)
    fig = Figure(figsize=(2.6 * (d - 1) + 1.5, 2.6 * (d - 1)), layout="constrained")
    names = sorted(set(cls))
    colours = {c: f"C{k % 10}" for k, c in enumerate(names)}
    for row in range(1, d):
        for col in range(d - 1):
            if col >= row:
                continue
            ax = fig.add_subplot(d - 1, d - 1, (row - 1) * (d - 1) + col + 1)
            for c in names:
                s = cls == c
                ax.scatter(z[s, col], z[s, row], s=3, alpha=0.6, color=colours[c], label=c,
                           rasterized=True, linewidths=0)
            if row == d - 1:
                ax.set_xlabel(f"z{col}")
            if col == 0:
                ax.set_ylabel(f"z{row}")
    handles = [fig.axes[0].scatter([], [], color=colours[c], label=c) for c in names]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, markerscale=2)
    return _finish(fig, save)
