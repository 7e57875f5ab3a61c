"""Fitted line widths against the truth: bias, scatter and the coverage of their errors.

The catalogue's ``line_sigma`` is the emission lines' Gaussian sigma as they
appear on the fitted grid, and ``line_sigma_err`` its 1-sigma error: the
formal part (``line_sigma_err_stat``: for the fast fitter the width's
posterior from the depth of the chi^2 curve and the width prior, for pPXF
the gas dispersion's error from the same Fisher matrix as its flux errors)
and systematic terms in quadrature (:func:`survey_denoise.fitting.systematics.width_constants`:
a fraction of the width, and a term that grows as the continuum over the
best line's flux, :func:`~survey_denoise.fitting.systematics.width_lever`).

Here both are scored against the mock's truth on mock galaxies of the
``natural`` design observed SDSS-like and DESI-like, in the observed frame
and pre-processed onto the grid as a survey is.  On the grid a line is the
gas and the instrument's Gaussians convolved with the native pixel (the
rebinning averages the native pixels' values), so the truth is
``sqrt(sigma_gas^2 + sigma_inst^2 + dv_pix^2 / 12)``, ``dv_pix`` the native
pixel in km/s (69 km/s SDSS, 39 km/s DESI; the grid's own pixels, 276
km/s, are in the fitter's pixel-integrated profile):

1. with the mock's noise: per spectral class and bin of the catalogue's
   Halpha S/N, and per bin of the best line's equivalent width, the median
   and robust scatter (1.4826 MAD) of log10(fit / true) and the fraction
   of ``|fit - true|`` within 1 and 2 errors, formal and total;
2. noise-free, fast fitter: the median log10(fit / true) with the stellar
   continuum, and with the same lines on a flat continuum (the noise-free
   spectrum less its emission-free twin, plus 1; no stellar-weights prior,
   a flat continuum being no starlight): their difference is the
   continuum model's, not the lines';
3. noise-free, pPXF, on ``--n-ppxf`` retired galaxies (absorption and
   quiescent classes) with Halpha S/N 15-50: whether pPXF shares the fast
   fitter's bias there.

``--fit-systematics`` instead fits the systematic constants by maximum
likelihood (:func:`survey_denoise.fitting.systematics.calibrate`) on a mock
of another seed and writes them, with the command, to
``data/line_systematics.yaml`` (``widths:``; a survey other than SDSS under
``surveys:``); the scoring run's seed is never used for them.

    OMP_NUM_THREADS=1 python benchmarks/line_width.py [--n 2000] [--n-ppxf 30] [--n-ppxf-noisy 600]
    OMP_NUM_THREADS=1 python benchmarks/line_width.py --fit-systematics --survey desi [--method ppxf]

Writes ``benchmarks/results/line_width.json``.  One process, one core;
~4 min at the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dask  # noqa: E402
import numpy as np  # noqa: E402

import survey_denoise.fitting.fast as fast  # noqa: E402
from survey_denoise import lines  # noqa: E402
from survey_denoise.fitting import fit_lines, systematics  # noqa: E402
from survey_denoise.fitting.catalogue import to_frame  # noqa: E402
from survey_denoise.mock import MockConfig, generate, select  # noqa: E402
from survey_denoise.mock.priors import CLASSES  # noqa: E402
from survey_denoise.preprocess import preprocess  # noqa: E402
from survey_denoise.spectrographs import instrument_sigma_kms, sigma_on_grid  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DESIGN = "natural"
SNR_BINS = ((0.0, 3.0), (3.0, 15.0), (15.0, 50.0), (50.0, np.inf))
"""Bins of the catalogue's Halpha S/N."""
EW_BINS = ((0.0, 1.0), (1.0, 3.0), (3.0, 10.0), (10.0, 30.0), (30.0, np.inf))
"""Bins of the best line's equivalent width (Angstrom)."""
RETIRED = ("absorption", "quiescent")
SCORE_SEED, CALIBRATION_SEED = 3, 11


def mock(survey: str, n: int, seed: int, *, noise: bool, emission: bool = True):
    """Pre-processed mock spectra and their raw store (truth columns)."""
    with dask.config.set(scheduler="synchronous"):
        raw = generate(select(DESIGN, n, seed), MockConfig(seed=seed, survey=survey, noise=noise, emission=emission),
                       chunk_size=500, design=DESIGN)
        return raw.compute(), preprocess(raw.chunk({"galaxy": 500})).compute()


def true_on_grid(raw, pre, survey: str) -> np.ndarray:
    """Each kept galaxy's line sigma as it reaches the grid: gas, instrument, native pixel (km/s)."""
    kept = np.isin(raw["galaxy"].values, pre["galaxy"].values)
    return sigma_on_grid(raw["true_sigma_gas"].values[kept], survey, raw["wavelength"].values)


def lever(cat, pre) -> np.ndarray:
    """:func:`systematics.width_lever` of catalogue rows, from their fluxes and the spectra's continua."""
    keys = lines.catalogue_keys()
    good = ~pre["mask"].values & (pre["ivar"].values > 0)
    cont = systematics.local_continuum(pre["wavelength"].values, pre["flux"].values, good, keys)
    cont *= pre["norm"].values[:, None]
    flux = np.stack([cat[f"{k}_flux"].to_numpy(float) for k in keys], 1)
    err = np.stack([cat[f"{k}_flux_err_stat"].to_numpy(float) for k in keys], 1)
    return systematics.width_lever(cat["line_sigma"].to_numpy(float), flux, err, cont)


def scores(fit, errors: dict, true, rows) -> dict:
    """Bias, robust scatter (dex) and, per kind of error, the coverage of the truth over ``rows``."""
    rows = rows & np.isfinite(fit) & (fit > 0)
    if not rows.any():
        return {"n": 0}
    d = np.log10(fit[rows] / true[rows])
    out = {"n": int(rows.sum()), "median_dex": float(np.median(d)),
           "scatter_dex": float(1.4826 * np.median(np.abs(d - np.median(d))))}
    for name, err in errors.items():
        pull = np.abs(fit[rows] - true[rows]) / err[rows]
        out[name] = {"within_1sigma": float(np.mean(pull < 1)), "within_2sigma": float(np.mean(pull < 2)),
                     "median_frac_err": float(np.nanmedian(err[rows] / fit[rows])),
                     "no_error": float(np.mean(~np.isfinite(err[rows])))}
    return out


def binned(fit, errors, true, classes, snr, ew) -> dict:
    out = {"all": scores(fit, errors, true, np.ones(true.size, bool))}
    for c, name in enumerate(CLASSES):
        for lo, hi in SNR_BINS:
            s = scores(fit, errors, true, (classes == c) & (snr >= lo) & (snr < hi))
            if s["n"]:
                out[f"{name}, Halpha S/N {lo:g}-{hi:g}"] = s
    if ew is not None:
        for lo, hi in EW_BINS:
            s = scores(fit, errors, true, (ew >= lo) & (ew < hi))
            if s["n"]:
                out[f"best line EW {lo:g}-{hi:g} A"] = s
        out["no line at S/N >= 3"] = scores(fit, errors, true, ~np.isfinite(ew))
    return out


def fit_noisy(survey: str, n: int, seed: int, method: str):
    raw, pre = mock(survey, n, seed, noise=True)
    true = true_on_grid(raw, pre, survey)
    kept = np.isin(raw["galaxy"].values, pre["galaxy"].values)
    cat = to_frame(fit_lines(pre, method))
    return raw["true_class"].values[kept], pre, cat, true


def score_catalogue(cat, pre, true, classes) -> dict:
    lev = lever(cat, pre)
    w = cat["line_sigma"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ew = np.where(lev > 0, w / lev, np.nan)
    errors = {"formal": cat["line_sigma_err_stat"].to_numpy(float), "total": cat["line_sigma_err"].to_numpy(float)}
    return binned(w, errors, true, classes, cat["halpha_snr"].to_numpy(float), ew)


def one_survey(survey: str, n: int, seed: int, n_ppxf: int, n_ppxf_noisy: int) -> dict:
    t0 = time.perf_counter()
    classes, pre, cat, true = fit_noisy(survey, n, seed, "fast")
    snr = cat["halpha_snr"].to_numpy(float)
    noisy = score_catalogue(cat, pre, true, classes)
    ppxf_noisy = None
    if n_ppxf_noisy:
        sub = pre.isel(galaxy=slice(0, n_ppxf_noisy))
        pcat = to_frame(fit_lines(sub.chunk({"galaxy": 500}), "ppxf"))
        ppxf_noisy = score_catalogue(pcat, sub, true[:n_ppxf_noisy], classes[:n_ppxf_noisy])

    raw0, clean = mock(survey, n, seed, noise=False)
    _, bare = mock(survey, n, seed, noise=False, emission=False)
    assert np.array_equal(clean["galaxy"].values, bare["galaxy"].values)
    flux = clean["flux"].values.astype(float)
    ivar = np.where(clean["mask"].values, 0.0, clean["ivar"].values.astype(float))
    # In the noise-free spectrum's normalisation (the emission-free twin's norm differs).
    lines_only = flux - bare["flux"].values * (bare["norm"].values / clean["norm"].values)[:, None]
    prior = fast.survey_width_prior(survey)
    stellar = fast.fit_batch(flux, ivar, width_prior=prior)
    flat = fast.fit_batch(lines_only + 1.0, ivar, width_prior=prior, weights_prior=None)
    true0 = true_on_grid(raw0, clean, survey)
    same = np.isin(clean["galaxy"].values, pre["galaxy"].values)
    snr0 = np.full(true0.size, np.nan)
    snr0[same] = snr[np.isin(pre["galaxy"].values, clean["galaxy"].values)]
    classes0 = raw0["true_class"].values[np.isin(raw0["galaxy"].values, clean["galaxy"].values)]
    noise_free = {"stellar_continuum": binned(stellar["width"], {}, true0, classes0, snr0, None),
                  "flat_continuum": binned(flat["width"], {}, true0, classes0, snr0, None)}
    out = {"survey": survey, "seed": seed, "n": int(true.size), "instrument_sigma_kms": instrument_sigma_kms(survey),
           "true_median_kms": float(np.median(true)),
           "line_sigma_err_systematics": systematics.width_provenance("fast", survey) or "none",
           "line_sigma_err_systematics_ppxf": systematics.width_provenance("ppxf", survey) or "none",
           "noisy_fast": noisy, "noise_free_fast": noise_free}
    if ppxf_noisy is not None:
        out["noisy_ppxf"] = ppxf_noisy
    if n_ppxf:
        retired = np.isin(classes0, [CLASSES.index(c) for c in RETIRED]) & (snr0 >= 15) & (snr0 < 50)
        rows = np.flatnonzero(retired)[:n_ppxf]
        if rows.size:
            pcat = to_frame(fit_lines(clean.isel(galaxy=rows).chunk({"galaxy": rows.size}), "ppxf"))
            one = np.ones(rows.size, bool)
            out["noise_free_retired_snr15_50"] = {
                "ppxf": scores(pcat["line_sigma"].to_numpy(float), {}, true0[rows], one),
                "fast": scores(stellar["width"][rows], {}, true0[rows], one),
                "flat_fast": scores(flat["width"][rows], {}, true0[rows], one)}
    out["seconds"] = time.perf_counter() - t0
    return out


def fit_systematics(survey: str, n: int, seed: int, method: str) -> dict:
    """Maximum-likelihood width constants on one mock, written to the shipped constants file."""
    _, pre, cat, true = fit_noisy(survey, n, seed, method)
    lev = lever(cat, pre)
    w, err = cat["line_sigma"].to_numpy(float), cat["line_sigma_err_stat"].to_numpy(float)
    ok = np.isfinite(w) & np.isfinite(err) & (err > 0)
    within = float(np.mean(np.abs(w - true)[ok] <= err[ok]))
    frac, ew, ew_mix, scale = systematics.calibrate(w - true, err, true, lev)
    table = {"frac": round(frac, 5), "ew": round(ew, 5), "ew_mix": round(ew_mix, 5), "scale": round(scale, 4),
             "n": int(ok.sum()), "formal_within_1sigma": round(within, 4)}
    command = (f"OMP_NUM_THREADS=1 python benchmarks/line_width.py --fit-systematics --n {n} --seed {seed} "
               f"--survey {survey}" + (f" --method {method}" if method != "fast" else ""))
    meta = {"design": DESIGN, "survey": survey, "seed": seed, "n": n, "command": command}
    print(f"{method} {survey}: {table}")
    print(f"wrote {systematics.write_constants('widths', method, table, meta)}")
    return table


def score_run(folder: Path, survey: str = "sdss") -> dict:
    """Every catalogue of a rest-frame mock run (e.g. the small Table 6) against its truth.

    The rest-frame mock draws its lines on the grid itself, so there the
    truth is ``hypot(sigma_gas, sigma_inst)`` with no native pixel.  Each
    store is scored on its catalogue's galaxies (Table 6 fits the held-out
    ones), per bin of the original spectra's Halpha S/N.
    """
    import pandas as pd

    out = {}
    for truth_path in sorted(folder.rglob("truth.parquet")):
        truth = pd.read_parquet(truth_path).set_index("galaxy")
        for path in sorted(truth_path.parent.glob("catalogue-*.parquet")):
            cat = pd.read_parquet(path)
            t = truth.loc[cat["galaxy"].to_numpy()]
            true = sigma_on_grid(t["true_sigma_gas"].to_numpy(float), survey)
            errors = {"formal": cat["line_sigma_err_stat"].to_numpy(float),
                      "total": cat["line_sigma_err"].to_numpy(float)}
            original = pd.read_parquet(truth_path.parent / "catalogue-preprocessed.parquet").set_index("galaxy")
            snr = original.loc[cat["galaxy"].to_numpy(), "halpha_snr"].to_numpy(float)
            w = cat["line_sigma"].to_numpy(float)
            entry = {"all": scores(w, errors, true, np.ones(true.size, bool))}
            for lo, hi in SNR_BINS:
                entry[f"original Halpha S/N {lo:g}-{hi:g}"] = scores(w, errors, true, (snr >= lo) & (snr < hi))
            out[f"{truth_path.parent.relative_to(folder)}/{path.stem}"] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="mock galaxies per survey")
    ap.add_argument("--n-ppxf", type=int, default=30, help="noise-free retired galaxies fitted by pPXF per survey")
    ap.add_argument("--n-ppxf-noisy", type=int, default=0,
                    help="galaxies per survey also fitted by pPXF with the mock's noise, and scored")
    ap.add_argument("--seed", type=int, default=None,
                    help=f"mock seed (default {SCORE_SEED}; {CALIBRATION_SEED} with --fit-systematics)")
    ap.add_argument("--surveys", nargs="+", default=["sdss", "desi"])
    ap.add_argument("--fit-systematics", action="store_true", help="fit and write the width's systematic constants")
    ap.add_argument("--survey", default="sdss", help="with --fit-systematics: the survey's mock")
    ap.add_argument("--method", default="fast", choices=("fast", "ppxf"), help="with --fit-systematics")
    ap.add_argument("--run", type=Path, default=None,
                    help="instead: score the catalogues of a rest-frame SDSS-like mock run folder (Table 6)")
    ap.add_argument("--out", type=Path, default=RESULTS / "line_width.json")
    args = ap.parse_args(argv)
    if args.run is not None:
        result = score_run(args.run)
        for name, entry in result.items():
            for label, s in entry.items():
                if s["n"] >= 10:
                    print(f"{name:40s} {label:28s} n {s['n']:5d}  bias {s['median_dex']:+.3f}  scatter "
                          f"{s['scatter_dex']:.3f}  within 1/2 sigma formal {s['formal']['within_1sigma']:.2f}/"
                          f"{s['formal']['within_2sigma']:.2f} total {s['total']['within_1sigma']:.2f}/"
                          f"{s['total']['within_2sigma']:.2f}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"run": str(args.run), "catalogues": result}, indent=1) + "\n")
        print(f"wrote {args.out}")
        return 0
    if args.fit_systematics:
        seed = CALIBRATION_SEED if args.seed is None else args.seed
        if seed == SCORE_SEED:
            ap.error(f"seed {SCORE_SEED} is the scoring run's; calibrate on another")
        fit_systematics(args.survey, args.n, seed, args.method)
        return 0
    seed = SCORE_SEED if args.seed is None else args.seed
    result = {"design": DESIGN, "seed": seed,
              "command": "OMP_NUM_THREADS=1 python benchmarks/line_width.py " + " ".join(argv or sys.argv[1:]),
              "surveys": {s: one_survey(s, args.n, seed, args.n_ppxf, args.n_ppxf_noisy) for s in args.surveys}}
    for survey, r in result["surveys"].items():
        print(f"{survey}: {r['n']} galaxies, true sigma on the grid, median {r['true_median_kms']:.1f} km/s; "
              f"systematics: {r['line_sigma_err_systematics']}")
        for label, s in r["noisy_fast"].items():
            if s["n"] >= 10:
                nf = r["noise_free_fast"]
                print(f"  {label:36s} n {s['n']:5d}  bias {s['median_dex']:+.3f}  scatter {s['scatter_dex']:.3f}  "
                      f"within 1/2 sigma formal {s['formal']['within_1sigma']:.2f}/{s['formal']['within_2sigma']:.2f}"
                      f" total {s['total']['within_1sigma']:.2f}/{s['total']['within_2sigma']:.2f}"
                      f"  noise-free {nf['stellar_continuum'].get(label, {}).get('median_dex', np.nan):+.3f}"
                      f" (flat {nf['flat_continuum'].get(label, {}).get('median_dex', np.nan):+.3f})")
        for label, s in r.get("noisy_ppxf", {}).items():
            if s["n"] >= 10:
                print(f"  pPXF {label:31s} n {s['n']:5d}  bias {s['median_dex']:+.3f}  scatter {s['scatter_dex']:.3f}  "
                      f"within 1/2 sigma formal {s['formal']['within_1sigma']:.2f}/{s['formal']['within_2sigma']:.2f}"
                      f" total {s['total']['within_1sigma']:.2f}/{s['total']['within_2sigma']:.2f}")
        if "noise_free_retired_snr15_50" in r:
            p = r["noise_free_retired_snr15_50"]
            print(f"  retired, S/N 15-50, noise-free: pPXF {p['ppxf']['median_dex']:+.3f}, "
                  f"fast {p['fast']['median_dex']:+.3f}, fast on a flat continuum {p['flat_fast']['median_dex']:+.3f} "
                  f"({p['ppxf']['n']} galaxies)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
