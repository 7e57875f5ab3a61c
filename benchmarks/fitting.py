"""Throughput of pPXF and of the fast fitter in the same run, and how well they agree.

Spectra: BC03 + MILES continua on the grid (random template, broadened to a
random stellar dispersion) plus the catalogue lines at random fluxes and
widths, with Gaussian noise; the same spectra go to both fitters, one core
each (OMP_NUM_THREADS=1).  Agreement: log10(fast / pPXF) per line, median
and scatter (dex) in bins of pPXF S/N.  Writes benchmarks/results/fitting.json.

    OMP_NUM_THREADS=1 python benchmarks/fitting.py [--n-ppxf 60] [--n-fast 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from scipy.ndimage import gaussian_filter1d  # noqa: E402

from survey_denoise import lines  # noqa: E402
from survey_denoise.fitting import VELSCALE_RATIO, fast  # noqa: E402
from survey_denoise.fitting.ppxf import fit_many  # noqa: E402
from survey_denoise.fitting.templates import stellar_templates  # noqa: E402
from survey_denoise.grid import GRID  # noqa: E402
from survey_denoise.resample import rebin_samples as rebin  # noqa: E402

KEYS = ("halpha", "hbeta", "oiii_5007", "nii_6583", "sii_6716", "hdelta", "hgamma", "oiii_4363")
SNR_BINS = (3, 10, 30, 100, 1e9)


def spectra(n: int, seed: int = 0, noise: float = 0.03):
    rng = np.random.default_rng(seed)
    stars = stellar_templates(GRID.velscale, 4, (3500.0, 8300.0))
    pick = rng.integers(0, stars.n_templates, n)
    sig = rng.uniform(50, 250, n) / stars.velscale
    cont = np.stack([gaussian_filter1d(stars.templates[:, i], s) for i, s in zip(pick, sig, strict=True)])
    flux = rebin(np.exp(stars.ln_lam), cont, np.asarray(GRID.edges))
    flux /= np.median(flux, axis=1, keepdims=True)
    width = rng.uniform(60, 200, n)
    table = lines.all_lines()
    edges = np.asarray(GRID.edges)
    for key in KEYS:
        f = 10 ** rng.uniform(-1.3, 1.2, n)
        members = [(key, 1.0)] + [(m, ln.doublet_ratio) for m, ln in table.items() if ln.doublet_of == key]
        for i in range(n):
            for m, r in members:
                flux[i] += r * f[i] * fast.gaussian_profile(edges, lines.wavelength(m), width[i])
    flux += rng.normal(0, noise, flux.shape)
    return flux, np.full_like(flux, 1 / noise**2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-ppxf", type=int, default=60)
    ap.add_argument("--n-fast", type=int, default=3000)
    args = ap.parse_args()
    flux, ivar = spectra(max(args.n_ppxf, args.n_fast))
    stars = stellar_templates(GRID.velscale, VELSCALE_RATIO, (GRID.wave_min * 0.95, GRID.wave_max * 1.05))
    fast.fit_batch(flux[:4], ivar[:4])                     # build the design matrices
    n = args.n_ppxf
    noise = 1 / np.sqrt(ivar[:n])
    good = np.ones_like(flux[:n], bool)
    fit_many(np.asarray(GRID.wavelength), flux[:2], noise[:2], good[:2], stars, velscale=GRID.velscale)
    t0 = time.perf_counter()
    pp = fit_many(np.asarray(GRID.wavelength), flux[:n], noise, good, stars, velscale=GRID.velscale)
    t_ppxf = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    ff = fast.fit_batch(flux[:args.n_fast], ivar[:args.n_fast])
    t_fast = (time.perf_counter() - t0) / args.n_fast
    result = {"ppxf_fits_per_s_per_core": 1 / t_ppxf, "fast_fits_per_s_per_core": 1 / t_fast,
              "speedup": t_ppxf / t_fast, "n_ppxf": n, "n_fast": args.n_fast,
              "agreement": {}}
    print(f"pPXF {1 / t_ppxf:8.1f} fits/s/core   fast {1 / t_fast:8.1f} fits/s/core   ratio {t_ppxf / t_fast:.0f}x")
    print(f"{'line':10s} {'S/N bin':>10s} {'n':>4s} {'median dex':>11s} {'scatter dex':>12s}")
    for key in KEYS:
        a, e = pp["flux"][key], pp["flux_err"][key]
        b = ff["flux"][key][:n]
        rows = []
        with np.errstate(divide="ignore", invalid="ignore"):
            snr, d = a / e, np.log10(b / a)
        for lo, hi in zip(SNR_BINS[:-1], SNR_BINS[1:], strict=True):
            sel = (snr >= lo) & (snr < hi) & np.isfinite(d)
            med = float(np.median(d[sel])) if sel.sum() else float("nan")
            sca = float(np.std(d[sel])) if sel.sum() > 1 else float("nan")
            rows.append({"snr_lo": lo, "snr_hi": hi, "n": int(sel.sum()), "median_dex": med, "scatter_dex": sca})
            print(f"{key:10s} {lo:4g}-{hi:<5g} {int(sel.sum()):4d} {med:+11.3f} {sca:12.3f}")
        hi_sel = (snr > 10) & np.isfinite(d)
        rows.append({"snr_lo": 10, "snr_hi": None, "n": int(hi_sel.sum()),
                     "median_dex": float(np.median(d[hi_sel])) if hi_sel.any() else None,
                     "scatter_dex": float(np.std(d[hi_sel])) if hi_sel.sum() > 1 else None})
        result["agreement"][key] = rows
    out = Path(__file__).parent / "results" / "fitting.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
