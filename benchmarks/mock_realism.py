"""How realistic are the mock's emission lines?  The numbers quoted in docs/mock.md.

* median EW(Halpha) per bin of the uniform-Halpha design (the flux it selected on);
* retired galaxies (absorption, quiescent): median EW(Halpha) and log [NII]/Halpha;
* O3N2 scatter at fixed O/H: star-forming galaxies, PP04 O3N2 of the true fluxes
  minus the true 12+log(O/H) (dex in O/H; PP04's single HII regions: 0.14);
* the MZR of the ``mzr`` design (the MZR test's galaxies): standard deviation about
  the reference MZR of the true O/H and of PP04 O3N2 of the true fluxes (SDSS fibre
  spectra: 0.09-0.10 dex);
* log EW(Halpha) scatter at fixed continuum: star-forming galaxies, robust scatter
  about the running median in bins of D_n4000 (Balogh et al. 1999) and of the
  young (< 100 Myr) mass fraction.

EW is the true line flux over the noise-free stellar continuum at 6550-6575 A
(rest frame).  ``--without`` switches ingredients off (``floor``: the
retired-galaxy line floor; ``sfr10``: the 10-Myr SFR scatter; ``ionisation``:
the ionisation-parameter scatter) to measure each one's effect; ``--logu-scatter``
sets the ionisation parameter's spread (dex) instead of the priors'.
Writes ``benchmarks/results/mock_realism.json`` (with ``--without``: nothing
unless ``--out`` is given).
Usage: ``python benchmarks/mock_realism.py [--n 10000] [--natural 8000] [--seed 0]
[--mzr 10000] [--without floor,sfr10,ionisation] [--logu-scatter DEX]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from survey_denoise.grid import GRID
from survey_denoise.mock import MockConfig, designs, nebular, population, select, synthesize
from survey_denoise.mock.priors import CLASSES
from survey_denoise.science.mzr import SCHOLTE24

EMISSION, ABSORPTION, QUIESCENT = (CLASSES.index(c) for c in ("emission", "absorption", "quiescent"))


def continuum(ids: np.ndarray, seed: int) -> np.ndarray:
    """Noise-free rest-frame stellar continuum (no lines) on the grid."""
    return synthesize(ids, MockConfig(seed=seed, rest=True, noise=False, emission=False))[0].astype(np.float64)


def mean_in(cont: np.ndarray, lo: float, hi: float, fnu: bool = False) -> np.ndarray:
    w = GRID.wavelength
    sel = (w >= lo) & (w <= hi)
    x = cont[:, sel] * (w[sel] ** 2 if fnu else 1.0)
    return x.mean(1)


def robust_sd(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def scatter_at_fixed(y: np.ndarray, x: np.ndarray, nbin: int = 12) -> float:
    """Robust scatter of y about its median in quantile bins of x."""
    edges = np.quantile(x, np.linspace(0, 1, nbin + 1))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, nbin - 1)
    resid = np.concatenate([y[which == b] - np.median(y[which == b]) for b in range(nbin) if (which == b).any()])
    return robust_sd(resid)


def without(names: list[str], logu_scatter: float | None = None) -> None:
    """Use the packaged priors with the named ingredients switched off (this process only)."""
    from survey_denoise.mock import generate
    from survey_denoise.mock.priors import default_priors

    base = default_priors()
    rt, st, ion = dict(base.retired_lines), dict(base.stochastic_sfr), dict(base.ionisation)
    unknown = set(names) - {"floor", "sfr10", "ionisation"}
    if unknown:
        raise SystemExit(f"--without: unknown ingredient(s) {sorted(unknown)}; use floor, sfr10, ionisation")
    if "floor" in names:
        rt["log_ew_halpha"] = (-30.0, 0.0)
    if "sfr10" in names:
        st["log_sfr10_over_sfr100"] = (0.0, 0.0)
    if "ionisation" in names:
        ion["logu_scatter"] = 0.0
    elif logu_scatter is not None:
        ion["logu_scatter"] = logu_scatter
    priors = base.model_copy(update={"retired_lines": rt, "stochastic_sfr": st, "ionisation": ion})
    for module in (population, nebular, generate):
        module.default_priors = lambda: priors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--natural", type=int, default=8_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mzr", type=int, default=10_000, help="galaxies of the mzr design")
    ap.add_argument("--without", default="", help="comma-separated: floor, sfr10, ionisation")
    ap.add_argument("--logu-scatter", type=float, default=None,
                    help="spread of log U at fixed O/H (dex) instead of the priors'")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    seed = args.seed
    off = [w for w in args.without.split(",") if w]
    changed = bool(off) or args.logu_scatter is not None
    if changed:
        without(off, args.logu_scatter)
    if args.out is None and not changed:
        args.out = Path(__file__).parent / "results" / "mock_realism.json"

    # Uniform-Halpha design: EW per selection bin.
    ids = select("uniform-halpha", args.n, seed)
    props = population.draw(seed, ids)
    f = nebular.line_fluxes(props)
    measure = getattr(designs, "measured_halpha", None)
    sel_flux = measure(seed, ids) if measure else f["halpha"]
    cont = continuum(ids, seed)
    ew = f["halpha"] / mean_in(cont, 6550.0, 6575.0)
    edges = np.logspace(0.2, 3.4, 11)
    which = np.clip(np.searchsorted(edges, sel_flux, side="right") - 1, 0, 9)
    per_bin = [float(np.median(ew[which == b])) for b in range(10)]
    retired = np.isin(props["class"], [ABSORPTION, QUIESCENT])
    n2 = np.log10(f["nii_6583"] / f["halpha"])
    out = {"ew_halpha_median_per_bin": per_bin,
           "retired_fraction": float(retired.mean()),
           "retired_ew_median": float(np.median(ew[retired])),
           "retired_log_n2_median": float(np.median(n2[retired])),
           "true_halpha_median_per_bin": [float(np.median(f["halpha"][which == b])) for b in range(10)]}

    # Natural sample: star-forming galaxies.
    nat = np.arange(args.natural)
    p = population.draw(seed, nat)
    g = nebular.line_fluxes(p)
    sf = p["class"] == EMISSION
    oh_o3n2 = nebular.pp04_o3n2(g["oiii_5007"], g["hbeta"], g["nii_6583"], g["halpha"])[sf]
    resid = oh_o3n2 - p["oh"][sf]
    c = continuum(nat[sf], seed)
    log_ew = np.log10(g["halpha"][sf] / mean_in(c, 6550.0, 6575.0))
    d4000 = mean_in(c, 4000.0, 4100.0, fnu=True) / mean_in(c, 3850.0, 3950.0, fnu=True)
    young = p["sfh"][sf, :population.YOUNG_BINS].sum(1) / p["sfh"][sf].sum(1)
    out.update({"o3n2_oh_scatter_sd": float(np.std(resid)), "o3n2_oh_scatter_robust": robust_sd(resid),
                "o3n2_oh_median_offset": float(np.median(resid)),
                "log_ew_scatter_at_fixed_d4000": scatter_at_fixed(log_ew, d4000),
                "log_ew_scatter_at_fixed_young_fraction": scatter_at_fixed(log_ew, np.log10(young + 1e-12)),
                "n_star_forming": int(sf.sum())})

    # The MZR test's galaxies: scatter about the reference MZR, truth and O3N2 of the true lines.
    m = population.draw(seed, select("mzr", args.mzr, seed))
    h = nebular.line_fluxes(m)
    ref = SCHOLTE24(m["logmass"])
    oh_true_lines = nebular.pp04_o3n2(h["oiii_5007"], h["hbeta"], h["nii_6583"], h["halpha"])
    out.update({"mzr_true_oh_scatter": float(np.std(m["oh"] - ref, ddof=1)),
                "mzr_o3n2_true_lines_scatter": float(np.nanstd(oh_true_lines - ref, ddof=1)),
                "mzr_o3n2_minus_true_oh_sd": float(np.nanstd(oh_true_lines - m["oh"], ddof=1))})
    for k, v in out.items():
        print(f"{k:40s} {np.round(v, 3).tolist() if isinstance(v, list) else round(v, 3)}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"n": args.n, "natural": args.natural, "seed": seed,
                                        "without": off, "logu_scatter": args.logu_scatter, **out},
                                       indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
