"""The fast fitter's line-flux bias on noise-free mock spectra, for variants of its continuum basis.

On a noise-free spectrum a fitter whose model spans the data returns the
true fluxes; what it does not span shows as a bias, largest for faint lines
on strong stellar absorption (the Balmer lines of post-starburst and
retired galaxies).  For each mock design and seed (noise-free, rest frame,
on the grid, ``l2``-normalised) this prints, per line, the largest
per-bin median of log10(fit / true) over 10 equal bins of log true flux
(bins of >= 10 galaxies) and the median over all galaxies, for

* the fast fitter with ``n_pca`` stellar components and the first
  ``n_multiplied`` of them times Legendre polynomials of degree 1-4
  (:func:`survey_denoise.fitting.fast.continuum_basis`; the shipped
  values are marked);
* pPXF (multiplicative polynomial of degree 4) on ``--n-ppxf`` galaxies
  drawn evenly from the bins of true Hα, with the shipped fast fitter on
  the same galaxies;
* a two-pass prototype (not in the fitter): the additive fit, then the
  fit again with its stellar model times Legendre polynomials of degree
  1-4 as four more columns, i.e. one Gauss-Newton step towards pPXF's
  multiplicative polynomial; one width (85 km/s), unconstrained least
  squares, beside the additive basis solved the same way.

What a variant costs in precision: the median Hα error over the
Cramér-Rao bound (:func:`survey_denoise.science.bound.snr_bound`) on a
flat continuum with an Hα line of S/N ~ 5, where a continuum model
should cost almost nothing (``err_over_bound``); for the prototype, its
median formal Hα error on the mock galaxies over the additive one's
(``halpha_err_over_additive``: the formal error depends on the weights
and the design, not on the noise).

    OMP_NUM_THREADS=1 python benchmarks/continuum_basis.py [--n 2000] [--n-ppxf 100]

Writes ``benchmarks/results/continuum_basis.json``.  One process, one core.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dask  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import survey_denoise.fitting.fast as fast  # noqa: E402
from survey_denoise.fitting import fit_lines  # noqa: E402
from survey_denoise.fitting.catalogue import to_frame  # noqa: E402
from survey_denoise.mock import MockConfig, generate, select  # noqa: E402
from survey_denoise.preprocess import normalise  # noqa: E402
from survey_denoise.science.metrics import bin_index, log_edges  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KEYS = ("halpha", "hbeta", "hgamma", "hdelta", "nii_6583", "oiii_5007", "sii_6716", "oii_3727")
SAMPLES = (("uniform-halpha", 2023), ("natural", 11), ("mzr", 13))
VARIANTS = ((10, 0), (20, 0), (10, 2), (20, 2), (20, 3))
SHIPPED = (fast.N_PCA, fast.N_MULTIPLIED)
MIN_BIN = 10
PROTOTYPE_WIDTH_KMS = 85.0


@contextlib.contextmanager
def basis(n_pca: int, n_multiplied: int):
    """The fast fitter with another continuum basis, inside the block only (its caches are cleared)."""
    shipped = fast.continuum_basis

    def variant(grid=fast.GRID, n_pca_=n_pca, poly_degree=fast.POLY_DEGREE, n_multiplied_=n_multiplied):
        return shipped(grid, n_pca_, poly_degree, n_multiplied_)

    def clear():
        for obj in vars(fast).values():
            if hasattr(obj, "cache_clear") and obj is not shipped:
                obj.cache_clear()

    fast.continuum_basis = variant
    clear()
    try:
        yield
    finally:
        fast.continuum_basis = shipped
        clear()


def bias(raw, cat, rows=None) -> dict:
    """Per line: largest per-bin median and overall median of log10(fit / true), dex."""
    out = {}
    for k in KEYS:
        t = raw[f"true_{k}_flux"].values if rows is None else raw[f"true_{k}_flux"].values[rows]
        f = cat[f"{k}_flux"].to_numpy(float)
        ok = (t > 0) & np.isfinite(f)
        d = np.log10(np.maximum(f[ok], 1e-6 * t[ok]) / t[ok])  # a flux fitted to 0 counts as -6 dex
        which = bin_index(np.log10(t[ok]), log_edges(t[ok]))
        medians = [float(np.median(d[which == b])) for b in range(which.max() + 1) if (which == b).sum() >= MIN_BIN]
        out[k] = {"worst_bin": max(medians, key=abs) if medians else float("nan"),
                  "median": float(np.median(d)) if d.size else float("nan"), "n": int(ok.sum())}
    return out


def err_over_bound(n: int = 200, halpha: float = 20.0, noise: float = 0.5) -> float:
    """Median Hα error of the current basis over the Cramér-Rao bound, flat continuum + Hα, white noise."""
    import xarray as xr

    from survey_denoise.grid import GRID
    from survey_denoise.lines import wavelength
    from survey_denoise.science.bound import snr_bound

    rng = np.random.default_rng(0)
    line = halpha * fast.gaussian_profile(GRID.edges, wavelength("halpha"), 120.0)
    flux = 1.0 + line[None, :] + noise * rng.standard_normal((n, GRID.npix))
    ivar = np.full((n, GRID.npix), noise ** -2)
    ds = xr.Dataset({"flux": (("galaxy", "wavelength"), flux), "ivar": (("galaxy", "wavelength"), ivar),
                     "mask": (("galaxy", "wavelength"), np.zeros(flux.shape, bool)),
                     "norm": ("galaxy", np.ones(n))}, coords={"wavelength": GRID.wavelength})
    bound = halpha / snr_bound(ds, {"halpha": np.full(n, halpha)}, np.full(n, 120.0))["snr_line"].to_numpy()
    err = fast.fit_batch(flux, ivar, widths_kms=(120.0,))["flux_err"]["halpha"]
    return float(np.median(err / bound))


def prototype(flux: np.ndarray, ivar: np.ndarray, two_pass: bool) -> dict:
    """Line fluxes of the additive basis, or of the two-pass prototype, at one width (unconstrained)."""
    a, groups = fast.design_matrix(PROTOTYPE_WIDTH_KMS)
    n_lines = len(groups)
    n_pca = fast.N_PCA
    poly = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, a.shape[0]), fast.POLY_DEGREE)[:, 1:]

    def solve(x, y, w):
        xw = x * w[:, None]
        normal = x.T @ xw
        return np.linalg.lstsq(normal, xw.T @ y, rcond=1e-12)[0], np.linalg.pinv(normal, rcond=1e-12)

    out = np.empty((flux.shape[0], n_lines))
    err = np.empty(flux.shape[0])
    h = [g.name for g in groups].index("halpha")
    for i, (y, w) in enumerate(zip(flux, ivar, strict=True)):
        coef, cov = solve(a, y, w)
        if two_pass:
            stellar = a[:, n_lines:n_lines + n_pca] @ coef[n_lines:n_lines + n_pca]
            coef, cov = solve(np.column_stack([a, stellar[:, None] * poly]), y, w)
        out[i], err[i] = coef[:n_lines], np.sqrt(cov[h, h])
    fluxes = {f"{g.name}_flux": out[:, j] for j, g in enumerate(groups)}  # a blend: its sum
    fluxes.update({f"{m}_flux": out[:, j] * share for j, g in enumerate(groups)
                   for m, share in zip(g.members, g.shares, strict=True)})
    return fluxes | {"halpha_flux_err": err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="galaxies per mock sample")
    ap.add_argument("--n-ppxf", type=int, default=100, help="of them also fitted by pPXF (0: none)")
    ap.add_argument("--out", type=Path, default=RESULTS / "continuum_basis.json")
    args = ap.parse_args()

    results = {}
    for design, seed in SAMPLES:
        with dask.config.set(scheduler="synchronous"):
            ids = select(design, args.n, seed)
            raw = generate(ids, MockConfig(seed=seed, survey="sdss", rest=True, noise=False),
                           chunk_size=500, design=design).compute()
            rest = normalise(raw.chunk({"galaxy": 500})).compute()
        sample = results.setdefault(f"{design}_seed{seed}", {})
        print(f"\n{design}, seed {seed}, {args.n} noise-free galaxies: worst-bin / overall median "
              "log10(fit / true), dex")
        for n_pca, n_mult in VARIANTS:
            with basis(n_pca, n_mult):
                t0 = time.perf_counter()
                cat = to_frame(fit_lines(rest, "fast").compute())
                seconds = time.perf_counter() - t0
                ratio = err_over_bound()
            res = bias(raw, cat)
            sample[f"fast_pca{n_pca}_mult{n_mult}"] = {"seconds": seconds, "err_over_bound": ratio, "lines": res}
            mark = " (shipped)" if (n_pca, n_mult) == SHIPPED else ""
            print(f"fast, {n_pca:2d} components, {n_mult} multiplied{mark:10s} {seconds:5.1f} s  "
                  f"err/bound {ratio:.2f}  "
                  + "  ".join(f"{k[:6]} {v['worst_bin']:+.3f}/{v['median']:+.3f}" for k, v in res.items()))
        spectra = rest["flux"].values * rest["norm"].values[:, None]
        weights = raw["ivar"].values  # the noise model's, in the same unit as flux * norm
        errors = {}
        for name, two_pass in (("additive_one_width", False), ("two_pass_prototype", True)):
            fits = pd.DataFrame(prototype(spectra, weights, two_pass))
            errors[name] = fits["halpha_flux_err"].to_numpy()
            res = bias(raw, fits)
            ratio = float(np.median(errors[name] / errors["additive_one_width"]))
            sample[name] = {"halpha_err_over_additive": ratio, "lines": res}
            print(f"{name:30s} Hα err x{ratio:.2f}  " + "  ".join(
                f"{k[:6]} {v['worst_bin']:+.3f}/{v['median']:+.3f}" for k, v in res.items()))
        if args.n_ppxf:
            t = raw["true_halpha_flux"].values
            which = bin_index(np.log10(t), log_edges(t))
            rng = np.random.default_rng(seed)
            per_bin = -(-args.n_ppxf // (which.max() + 1))
            rows = np.sort(np.concatenate([rng.permutation(np.flatnonzero(which == b))[:per_bin]
                                           for b in range(which.max() + 1)]))
            sub = rest.isel(galaxy=rows)
            with dask.config.set(scheduler="synchronous"):
                t0 = time.perf_counter()
                cat_ppxf = to_frame(fit_lines(sub.chunk({"galaxy": 50}), "ppxf").compute())
                seconds = time.perf_counter() - t0
                cat_fast = to_frame(fit_lines(sub, "fast").compute())
            for name, cat, sec in (("ppxf", cat_ppxf, seconds), ("fast_shipped_on_ppxf_galaxies", cat_fast, None)):
                res = bias(raw, cat, rows)
                sample[name] = {"seconds": sec, "n": int(rows.size), "lines": res}
                print(f"{name:44s}  " + "  ".join(f"{k[:6]} {v['worst_bin']:+.3f}/{v['median']:+.3f}"
                                                 for k, v in res.items()))
    meta = {"command": f"OMP_NUM_THREADS=1 python benchmarks/continuum_basis.py --n {args.n} "
                       f"--n-ppxf {args.n_ppxf}",
            "shipped": {"n_pca": SHIPPED[0], "n_multiplied": SHIPPED[1], "poly_degree": fast.POLY_DEGREE},
            "measure": "per line: worst_bin = the per-bin median of log10(fit / true) farthest from 0 over "
                       f"10 equal bins of log true flux with >= {MIN_BIN} galaxies; median over all"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **results}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
