"""BPT diagram and mass-metallicity relation of a mock truth table.

``python -m survey_denoise.mock.figures TRUTH.parquet --out DIR`` writes
``DIR/bpt.png`` (true [NII] BPT by class, with the Kewley et al. 2001 line)
and ``DIR/mzr.png`` (true 12+log(O/H) and PP04 O3N2 of the true fluxes
against stellar mass for the emission-line class, coloured by SFR).
Figures are built without pyplot (Agg), like :mod:`survey_denoise.plots`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .nebular import kewley01, pp04_o3n2
from .priors import CLASSES

COLOURS = {"emission": "tab:blue", "absorption": "tab:orange", "quiescent": "tab:red",
           "nlagn": "tab:green", "blagn": "k"}


def bpt_figure(truth: pd.DataFrame, save: str | Path | None = None) -> Figure:
    """[NII]/Halpha vs [OIII]/Hbeta of the true fluxes, by class."""
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    n2 = np.log10(truth["true_nii_6583_flux"] / truth["true_halpha_flux"])
    o3 = np.log10(truth["true_oiii_5007_flux"] / truth["true_hbeta_flux"])
    for name in CLASSES:
        sel = (truth["class"] == name).to_numpy()
        if sel.any():
            ax.scatter(n2[sel], o3[sel], s=3, alpha=0.5, color=COLOURS[name],
                       label=f"{name} ({sel.sum()})", rasterized=True)
    x = np.linspace(-2.0, 0.4, 200)
    ax.plot(x, kewley01(x), "k-", lw=1.2, label="Kewley et al. (2001)")
    ax.set(xlim=(-2.0, 0.8), ylim=(-1.5, 1.5), xlabel=r"log [NII]6583 / H$\alpha$",
           ylabel=r"log [OIII]5007 / H$\beta$", title="Mock truth: BPT diagram")
    ax.legend(fontsize=7, markerscale=3, loc="lower left")
    return _save(fig, save)


def mzr_figure(truth: pd.DataFrame, save: str | Path | None = None) -> Figure:
    """True and PP04-O3N2 metallicity vs stellar mass, emission-line class, coloured by SFR."""
    sf = truth[truth["class"] == "emission"]
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    o3n2 = pp04_o3n2(sf["true_oiii_5007_flux"], sf["true_hbeta_flux"], sf["true_nii_6583_flux"],
                     sf["true_halpha_flux"])
    for i, (y, label) in enumerate([(sf["true_oh"], "true 12 + log(O/H)"),
                                    (o3n2, "PP04 O3N2 of the true fluxes")]):
        ax = fig.add_subplot(1, 2, i + 1)
        sc = ax.scatter(sf["true_logmass"], y, c=sf["true_logsfr"], s=3, cmap="viridis",
                        rasterized=True)
        ax.set(xlabel=r"log M$_*$ / M$_\odot$", ylabel=label, ylim=(7.9, 9.2))
        fig.colorbar(sc, ax=ax, label=r"log SFR / M$_\odot$ yr$^{-1}$")
    fig.suptitle(f"Mock truth: mass-metallicity relation ({len(sf)} star-forming galaxies)")
    return _save(fig, save)


def _save(fig: Figure, save) -> Figure:
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=110, format="png")
    return fig


def main(argv: list[str] | None = None) -> None:
    from .truth import read_truth

    ap = argparse.ArgumentParser(description="BPT and MZR figures of a mock truth table.")
    ap.add_argument("truth", type=Path, help="truth table (Parquet) written by survey-denoise mock")
    ap.add_argument("--out", type=Path, required=True, help="folder for bpt.png and mzr.png")
    args = ap.parse_args(argv)
    if not args.truth.exists():
        raise SystemExit(f"{args.truth}: no such truth table")
    truth, _ = read_truth(args.truth)
    bpt_figure(truth, args.out / "bpt.png")
    mzr_figure(truth, args.out / "mzr.png")
    print(f"wrote {args.out / 'bpt.png'} and {args.out / 'mzr.png'}")


if __name__ == "__main__":
    main()
