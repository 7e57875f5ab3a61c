"""Does conditioning on the noise help?  VAEs with and without it, on full and red-cut coverage.

A uniform-Halpha mock (or, with ``--design mzr``, the MZR test's
star-forming sample; SDSS-like "original" spectra, pre-processed onto
the grid, ``l2``) is made DESI-like at BGS depth as in the MZR test
(``DesiNoise(exptime=180)``, every galaxy moved to z = 0.1, so the noise
depends on wavelength and on each galaxy's brightness).  The first 80 % of
the galaxies train 4-d VAEs of the ``default`` preset that differ only in
``conditioning`` (none / ivar) and ``coverage`` (none / desi-bgs training
masks); the last 20 % are de-noised (:func:`survey_denoise.inference.denoise`)
twice:

* ``full``: the DESI-like test spectra as they are;
* ``red_cut``: the same with every pixel redward of 9824 / (1 + z_cut) A
  (7017 A for z_cut = 0.4, where DESI's coverage ends for a galaxy at z =
  0.4) removed from the input (flux 0, ivar 0, masked).

Every set is fitted with the fast fitter and scored with
:func:`survey_denoise.science.metrics.score_catalogues` (Table 6's scoring:
common galaxies, zero fits as upper limits) against the original spectra
and the truth, for Halpha, Hbeta, [OIII]5007 and [NII]6583.  Also per line:
the median S/N, the share with S/N > 15 (the MZR test's Halpha cut), the
median flux error relative to the DESI-like input's, and the coverage of
the true flux by the errors (1 sigma / 2 sigma;
:func:`survey_denoise.science.calibration.line_coverage`).  Fluxes are
compared in the original spectra's physical units: the DESI-like fits
and the de-noised fits (which the store keeps in its input's frame, see
:func:`survey_denoise.inference.amplitude`) divided by each galaxy's
``dimming``.  S/N values do not depend on the scaling.

    OMP_NUM_THREADS=1 python benchmarks/conditioning.py [--design uniform-halpha|mzr] [--n 3000]
        [--epochs 15] [--z-cut 0.4] [--out FILE]

Writes ``benchmarks/results/conditioning.json`` (or ``--out``).  One
process, Dask's synchronous scheduler.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dask  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from survey_denoise import noise  # noqa: E402
from survey_denoise.fitting import fit_lines  # noqa: E402
from survey_denoise.fitting.catalogue import to_frame  # noqa: E402
from survey_denoise.inference import denoise  # noqa: E402
from survey_denoise.mock import MockConfig, generate, select  # noqa: E402
from survey_denoise.models import VAEDenoiser  # noqa: E402
from survey_denoise.preprocess import preprocess  # noqa: E402
from survey_denoise.science.calibration import line_coverage  # noqa: E402
from survey_denoise.science.metrics import score_catalogues  # noqa: E402

RESULTS = Path(__file__).parent / "results"
LINES = ("halpha", "hbeta", "oiii_5007", "nii_6583")
DESI_RED = 9824.0
VARIANTS = {"plain": ("none", "none"), "ivar": ("ivar", "none"),
            "masks": ("none", "desi-bgs"), "ivar+masks": ("ivar", "desi-bgs")}
"""name -> (conditioning, coverage); ``plain`` is the default preset before conditioning."""


def red_cut(ds, z_cut: float):
    """``ds`` with the input pixels DESI would not observe at ``z_cut`` removed (flux 0, ivar 0, mask)."""
    gone = np.asarray(ds["wavelength"].values) * (1 + z_cut) > DESI_RED
    out = ds.copy()
    out["flux"] = ds["flux"].where(~gone, np.float32(0))
    out["ivar"] = ds["ivar"].where(~gone, np.float32(0))
    out["mask"] = ds["mask"] | gone
    return out


def errors(cat: pd.DataFrame, ref: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Per line: median S/N, share S/N > 15, median error / the reference's, 1/2 sigma coverage."""
    out = {}
    cov = line_coverage(cat, truth, keys=LINES, min_count=20)
    ref = ref.set_index("galaxy").loc[cat["galaxy"]]
    for k in LINES:
        f, e = cat[f"{k}_flux"].to_numpy(float), cat[f"{k}_flux_err"].to_numpy(float)
        ok = np.isfinite(f) & np.isfinite(e) & (e > 0)
        snr = np.where(ok, f / np.where(ok, e, 1.0), np.nan)
        ratio = e / ref[f"{k}_flux_err"].to_numpy(float)
        c = cov[k]
        n = c["count"].to_numpy(float)
        out[k] = {"median_snr": float(np.nanmedian(snr)), "frac_snr_gt_15": float(np.nanmean(snr > 15)),
                  "median_err_over_input": float(np.nanmedian(ratio[ok])),
                  "within_1sigma": float(np.sum(c["within_1sigma"] * n) / n.sum()) if n.sum() else None,
                  "within_2sigma": float(np.sum(c["within_2sigma"] * n) / n.sum()) if n.sum() else None}
    return out


def rescaled(cat: pd.DataFrame, factor: np.ndarray) -> pd.DataFrame:
    """``cat`` with every line's flux and error multiplied by ``factor`` (per row)."""
    out = cat.copy()
    for k in LINES:
        out[f"{k}_flux"] *= factor
        out[f"{k}_flux_err"] *= factor
    return out


def trained(model, noisy, clean, folder: Path) -> tuple[Path, dict]:
    """Fit ``model`` on (noisy, clean) and save it; its folder and training facts for the JSON."""
    t1 = time.perf_counter()
    model.fit(noisy, clean)
    path = model.save(folder)
    return path, {"seconds": time.perf_counter() - t1, "epochs_run": model.epochs_run_,
                  "best_epoch": model.best_epoch_, "val_mse": model.card_["metrics"]["val_mse"],
                  "variance_scale": model.card_["uncertainty"]["variance_scale"]}


def score(cats: dict, original: pd.DataFrame, truth: pd.DataFrame) -> dict:
    truth = truth.rename(columns={f"{k}_flux": f"true_{k}_flux" for k in LINES})
    s = score_catalogues(cats, original, truth, noisy="desi-like", keys=LINES).summary
    return {m: {r.line: {"sigma_orig": float(r.sigma_orig), "sigma_truth": float(r.sigma_truth),
                         "n": int(r.n)} for r in part.itertuples()}
            for m, part in s.groupby("method")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="galaxies (80 %% train, 20 %% test)")
    ap.add_argument("--latent", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--z-cut", type=float, default=0.4)
    ap.add_argument("--design", default="uniform-halpha",
                    help="mock sample: uniform-halpha (Table 6's) or mzr (the MZR test's star-forming)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of "
                    + ", ".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=RESULTS / "conditioning.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    results: dict = {}
    with dask.config.set(scheduler="synchronous"), tempfile.TemporaryDirectory() as workdir:
        ids = select(args.design, args.n, args.seed)
        raw = generate(ids, MockConfig(seed=args.seed, survey="sdss"), chunk_size=500,
                       design=args.design).compute()
        clean = preprocess(raw.chunk({"galaxy": 500})).compute()
        noisy = noise.degrade(clean.chunk({"galaxy": 500}), noise.DesiNoise(exptime=180), seed=args.seed,
                              z_target=0.1).compute()
        n_train = int(0.8 * args.n)
        train, test = slice(0, n_train), slice(n_train, None)
        te_clean, te_noisy = clean.isel(galaxy=test), noisy.isel(galaxy=test)
        dim = te_noisy["dimming"].values
        truth = pd.DataFrame({"galaxy": te_clean["galaxy"].values.astype(str),
                              **{f"{k}_flux": te_clean[f"true_{k}_flux"].values for k in LINES}})
        original = to_frame(fit_lines(te_clean, method="fast").compute())
        inputs = {"full": te_noisy, "red_cut": red_cut(te_noisy, args.z_cut)}
        cats = {case: {"desi-like": rescaled(to_frame(fit_lines(ds, method="fast").compute()), 1 / dim)}
                for case, ds in inputs.items()}
        t_data = time.perf_counter() - t0
        models = {}
        for name in args.variants.split(","):
            cond, cov = VARIANTS[name]
            model = VAEDenoiser(args.latent, conditioning=cond, coverage=cov, epochs=args.epochs,
                                seed=args.seed)
            folder, facts = trained(model, noisy.isel(galaxy=train), clean.isel(galaxy=train),
                                    Path(workdir) / name)
            models[name] = {"conditioning": cond, "coverage": cov, **facts}
            print(f"{name}: trained in {models[name]['seconds']:.0f} s", flush=True)
            for case, ds in inputs.items():
                den = denoise(ds, folder).compute()
                # The de-noised store is in its input's frame (z = 0.1), like the DESI-like fits.
                factor = 1 / dim
                cats[case][name] = rescaled(to_frame(fit_lines(den, method="fast").compute()), factor)
        original["galaxy"] = original["galaxy"].astype(str)
        for case in inputs:
            for c in cats[case].values():
                c["galaxy"] = c["galaxy"].astype(str)
            results[case] = {"scatter": score(cats[case], original, truth),
                             "errors": {m: errors(c, cats[case]["desi-like"], truth)
                                        for m, c in cats[case].items()}}
            results[case]["errors"]["original"] = errors(original, cats[case]["desi-like"], truth)
    cmd = (f"OMP_NUM_THREADS=1 python benchmarks/conditioning.py --design {args.design} --n {args.n} "
           f"--latent {args.latent} "
           f"--epochs {args.epochs} --seed {args.seed} --z-cut {args.z_cut} --variants {args.variants}")
    meta = {"command": cmd, "mock": {"design": args.design, "survey": "sdss", "seed": args.seed,
                                     "n": args.n, "n_train": n_train, "n_test": args.n - n_train},
            "noise": "DesiNoise(exptime=180) at z_target = 0.1 (the MZR test's), renormalised",
            "red_cut": f"input pixels with rest wavelength > {DESI_RED} / (1 + {args.z_cut}) A removed",
            "models": models, "fit": "fast",
            "scatter": "score_catalogues (Table 6 scoring): sigma of log10 flux / reference, common "
                       "galaxies, zero fits as upper limits; reference the original spectra's fit or "
                       "the truth, in the original spectra's units",
            "seconds": {"data": t_data, "total": time.perf_counter() - t0}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **results}, indent=1, default=float))
    for case in inputs:
        print(f"\n{case}: sigma vs original / vs truth (dex); Halpha median S/N, S/N>15, err/input, 1s/2s")
        for m, lines in results[case]["scatter"].items():
            e = results[case]["errors"][m]["halpha"]
            print(f"{m:<12}" + "  ".join(f"{k} {v['sigma_orig']:.3f}/{v['sigma_truth']:.3f}"
                                         for k, v in lines.items())
                  + f"  | Ha S/N {e['median_snr']:.1f} >15 {e['frac_snr_gt_15']:.2f} "
                    f"err/in {e['median_err_over_input']:.2f} cov {e['within_1sigma']:.2f}/{e['within_2sigma']:.2f}")
    print(f"\nwrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
