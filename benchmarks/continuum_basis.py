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
* the fast fitter's two-pass multiplicative continuum
  (``fit_batch(..., multiplicative=True)``: the additive fit at one width,
  then the fit again with the Legendre polynomials of degree 1-4
  multiplied by each spectrum's fitted continuum, one Gauss-Newton step
  towards pPXF's multiplicative polynomial);
* pPXF (multiplicative polynomial of degree 4) on ``--n-ppxf`` galaxies
  drawn evenly from the bins of true Hα, with the shipped fast fitter on
  the same galaxies.

What a variant costs in precision: the median Hα error over the
Cramér-Rao bound (:func:`survey_denoise.science.bound.snr_bound`) on a
flat continuum with an Hα line of S/N ~ 5, where a continuum model
should cost almost nothing (``err_over_bound``), and its median formal
Hα error on the mock galaxies over the shipped basis's
(``halpha_err_over_shipped``: the formal error depends on the weights and
the design, not on the noise).

The mock's continua are the mock's: its dust multiplies the stellar
light, as a multiplicative term assumes.  So the benchmark also fits the
real spectra that ship inside pPXF (two SDSS DR18 galaxies) and
fastspecfit (two DESI coadds) with pPXF and with the fast fitter
(additive, two-pass, two-pass with 20 and 30 stellar components), and
prints each line's fast / pPXF flux ratio (the JSON also holds the
difference in units of the fast fitter's error, systematic terms included
with the shipped constants): there is no truth there, only the paper's
fitter.  To tell the continuum model from the line model, it also fits
each spectrum minus pPXF's own stellar model, with the shipped basis and
with lines and polynomials alone.

    OMP_NUM_THREADS=1 python benchmarks/continuum_basis.py [--n 2000] [--n-ppxf 100]
    OMP_NUM_THREADS=1 python benchmarks/continuum_basis.py --real-only

Writes ``benchmarks/results/continuum_basis.json`` (``--real-only``:
``continuum_basis_real.json``).  One process, one core.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dask  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

import survey_denoise.fitting.fast as fast  # noqa: E402
from survey_denoise.fitting import fit_lines  # noqa: E402
from survey_denoise.fitting.catalogue import to_frame  # noqa: E402
from survey_denoise.mock import MockConfig, generate, select  # noqa: E402
from survey_denoise.preprocess import normalise  # noqa: E402
from survey_denoise.science.metrics import bin_index, log_edges  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KEYS = ("halpha", "hbeta", "hgamma", "hdelta", "nii_6583", "oiii_5007", "sii_6716", "oii_3727")
SAMPLES = (("uniform-halpha", 2023), ("natural", 11), ("mzr", 13))
VARIANTS = ((10, 0, False, None), (10, 0, True, None), (20, 0, False, None), (20, 0, True, None),
            (10, 2, False, None), (20, 2, False, None), (20, 3, False, None), (10, 0, True, 1.0),
            (10, 0, True, 10.0), (20, 0, True, 10.0))
"""(stellar components, of them multiplied by Legendre 1-4, two-pass multiplicative, ``weights_prior``)."""
SHIPPED = (fast.N_PCA, fast.N_MULTIPLIED, True, fast.WEIGHTS_PRIOR)
"""The fast fitter as it ships: `fit_batch` fits twice (``multiplicative=True``)."""
MIN_BIN = 10
REAL_LINES = ("halpha", "hbeta", "hgamma", "hdelta", "nii_6583", "oiii_5007", "sii_6716")


@contextlib.contextmanager
def basis(n_pca: int, n_multiplied: int, multiplicative: bool = False):
    """The fast fitter with another continuum basis, inside the block only (its caches are cleared)."""
    shipped, shipped_fit = fast.continuum_basis, fast.fit_batch

    def variant(grid=fast.GRID, n_pca_=n_pca, poly_degree=fast.POLY_DEGREE, n_multiplied_=n_multiplied):
        return shipped(grid, n_pca_, poly_degree, n_multiplied_)

    def clear():
        for obj in vars(fast).values():
            if hasattr(obj, "cache_clear") and obj is not shipped:
                obj.cache_clear()

    fast.continuum_basis = variant
    fast.fit_batch = functools.partial(shipped_fit, multiplicative=multiplicative)
    clear()
    try:
        yield
    finally:
        fast.continuum_basis, fast.fit_batch = shipped, shipped_fit
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


def err_over_bound(weights_prior: float | None = None, n: int = 200, halpha: float = 20.0,
                   noise: float = 0.5) -> float:
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
    err = fast.fit_batch(flux, ivar, widths_kms=(120.0,), weights_prior=weights_prior)["flux_err"]["halpha"]
    return float(np.median(err / bound))


REAL_VARIANTS = (("fast", 10, False, None), ("fast_two_pass", 10, True, None),
                 ("fast_pca20_two_pass", 20, True, None), ("fast_pca30_two_pass", 30, True, None),
                 ("fast_two_pass_weights_prior1", 10, True, 1.0), ("fast_two_pass_weights_prior10", 10, True, 10.0),
                 ("fast_two_pass_weights_prior30", 10, True, 30.0))
"""Fast-fitter variants on the real spectra: (name, stellar components, two-pass, ``weights_prior``)."""
RESIDUAL_VARIANTS = (("shipped_on_ppxf_residual", fast.N_PCA, True, fast.WEIGHTS_PRIOR),
                     ("lines_on_ppxf_residual", 0, False, None))
"""Fits of the spectrum minus pPXF's stellar model: the shipped fitter, and lines + polynomials only."""


@contextlib.contextmanager
def ppxf_fits():
    """Inside the block, every pPXF fit object made is appended to the yielded list."""
    import ppxf.ppxf as module

    made, shipped = [], module.ppxf

    def recording(*args, **kwargs):
        made.append(shipped(*args, **kwargs))
        return made[-1]

    module.ppxf = recording
    try:
        yield made
    finally:
        module.ppxf = shipped


def ppxf_residual(ds: xr.Dataset, made: list) -> xr.Dataset:
    """``ds`` (one galaxy) minus pPXF's fitted stellar continuum, in the store's units."""
    pp = made[-1]
    flux = ds["flux"].values[0].astype(float)
    if pp.bestfit.size != flux.size:
        raise ValueError(f"pPXF fitted {pp.bestfit.size} of {flux.size} pixels: cannot subtract its stars")
    on = pp.goodpixels
    scale = float(np.median(flux[on] / pp.galaxy[on]))  # pPXF fits flux / median |flux|
    stars = (pp.bestfit - pp.gas_bestfit) * scale
    return ds.assign(flux=(ds["flux"].dims, (flux - stars)[None].astype(ds["flux"].dtype)))


def real_spectra() -> list[dict]:
    """Per real spectrum inside pPXF and fastspecfit: pPXF's fluxes and the fast fitter's variants.

    Besides the fits of the spectra themselves (:data:`REAL_VARIANTS`), the
    spectrum minus pPXF's own stellar model is fitted (:data:`RESIDUAL_VARIANTS`):
    where lines and polynomials alone then agree with pPXF and the shipped
    basis does not, the difference is in the stellar columns, not in the
    line model.
    """
    from survey_denoise.io.desi import read_desi
    from survey_denoise.io.sdss import read_sdss
    from survey_denoise.preprocess import preprocess

    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from _data import DESI_COADDS, NGC3073, NGC3522

    out = []
    for raw in [read_sdss(NGC3073), read_sdss(NGC3522)] + [read_desi(c) for c in DESI_COADDS]:
        with dask.config.set(scheduler="synchronous"):
            ds = preprocess(raw).compute()
            with ppxf_fits() as made:
                cats = {"ppxf": to_frame(fit_lines(ds, "ppxf").compute())}
            residual = ppxf_residual(ds, made)
            for name, n_pca, two_pass, prior in REAL_VARIANTS:
                with basis(n_pca, fast.N_MULTIPLIED, two_pass):
                    cats[name] = to_frame(fit_lines(ds, "fast", weights_prior=prior).compute())
            for name, n_pca, two_pass, prior in RESIDUAL_VARIANTS:
                with basis(n_pca, 0, two_pass):
                    cats[name] = to_frame(fit_lines(residual, "fast", weights_prior=prior).compute())
        sol = made[-1].sol
        row = {"galaxy": str(ds["galaxy"].values[0]), "z": float(ds["z"].values[0]),
               "ppxf_stars_kms": [float(v) for v in sol[0][:2]], "ppxf_gas_kms": [float(v) for v in sol[1][:2]],
               "lines": {}}
        for k in REAL_LINES:
            ref = float(cats["ppxf"][f"{k}_flux"].iloc[0])
            entry = {"ppxf": ref, "ppxf_err": float(cats["ppxf"][f"{k}_flux_err"].iloc[0])}
            for name in cats.keys() - {"ppxf"}:
                f, e = (float(cats[name][f"{k}_{c}"].iloc[0]) for c in ("flux", "flux_err"))
                entry[name] = f
                entry[f"{name}_err"] = e
                entry[f"{name}_over_ppxf"] = f / ref if ref > 0 else float("nan")
                entry[f"{name}_pull"] = (f - ref) / e if e > 0 else float("nan")
            row["lines"][k] = entry
        out.append(row)
    return out


def print_real(real: list[dict]) -> None:
    names = [n for n, *_ in REAL_VARIANTS + RESIDUAL_VARIANTS]
    print("\nreal spectra: fast / pPXF flux per variant (" + ", ".join(names) + ")")
    for row in real:
        print(f"{row['galaxy'][:17]:17s} z={row['z']:.3f}  stars v, sigma {row['ppxf_stars_kms'][0]:+.0f}, "
              f"{row['ppxf_stars_kms'][1]:.0f} km/s")
        for k, v in row["lines"].items():
            print(f"  {k:10s} " + " ".join(f"{v[f'{n}_over_ppxf']:6.2f}" for n in names))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="galaxies per mock sample")
    ap.add_argument("--n-ppxf", type=int, default=100, help="of them also fitted by pPXF (0: none)")
    ap.add_argument("--real-only", action="store_true",
                    help="only the real spectra (default --out: results/continuum_basis_real.json)")
    ap.add_argument("--out", type=Path, default=None, help="default: results/continuum_basis.json")
    args = ap.parse_args()
    args.out = args.out or RESULTS / ("continuum_basis_real.json" if args.real_only else "continuum_basis.json")

    results = {}
    for design, seed in () if args.real_only else SAMPLES:
        with dask.config.set(scheduler="synchronous"):
            ids = select(design, args.n, seed)
            raw = generate(ids, MockConfig(seed=seed, survey="sdss", rest=True, noise=False),
                           chunk_size=500, design=design).compute()
            rest = normalise(raw.chunk({"galaxy": 500})).compute()
        sample = results.setdefault(f"{design}_seed{seed}", {})
        print(f"\n{design}, seed {seed}, {args.n} noise-free galaxies: worst-bin / overall median "
              "log10(fit / true), dex")
        errors = {}
        for n_pca, n_mult, two_pass, prior in VARIANTS:
            with basis(n_pca, n_mult, two_pass):
                t0 = time.perf_counter()
                cat = to_frame(fit_lines(rest, "fast", weights_prior=prior).compute())
                seconds = time.perf_counter() - t0
                ratio = err_over_bound(prior)
                formal = fast.fit_batch(rest["flux"].values, rest["ivar"].values,
                                        weights_prior=prior)["flux_err"]["halpha"]
            name = (f"fast_pca{n_pca}_mult{n_mult}" + ("_two_pass" if two_pass else "")
                    + (f"_weights_prior{prior:g}" if prior is not None else ""))
            errors[name] = formal
            over = float(np.nanmedian(errors[name] / errors["fast_pca10_mult0"]))
            res = bias(raw, cat)
            sample[name] = {"seconds": seconds, "err_over_bound": ratio, "halpha_err_over_shipped": over,
                            "lines": res}
            mark = " (shipped)" if (n_pca, n_mult, two_pass, prior) == SHIPPED else ""
            print(f"{name:28s}{mark:10s} {seconds:5.1f} s  err/bound {ratio:.2f}  Hα err x{over:.2f}  "
                  + "  ".join(f"{k[:6]} {v['worst_bin']:+.3f}/{v['median']:+.3f}" for k, v in res.items()))
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
    real = real_spectra()
    print_real(real)
    results["real_spectra"] = real
    command = ("--real-only" if args.real_only else f"--n {args.n} --n-ppxf {args.n_ppxf}")
    meta = {"command": f"OMP_NUM_THREADS=1 python benchmarks/continuum_basis.py {command}",
            "shipped": {"n_pca": SHIPPED[0], "n_multiplied": SHIPPED[1], "multiplicative": SHIPPED[2],
                        "weights_prior": SHIPPED[3], "poly_degree": fast.POLY_DEGREE},
            "measure": "per line: worst_bin = the per-bin median of log10(fit / true) farthest from 0 over "
                       f"10 equal bins of log true flux with >= {MIN_BIN} galaxies; median over all"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **results}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
