"""Does more training data close the de-noiser's gap?  A learning curve on the MZR test's setup.

The MZR test's star-forming mock sample (SDSS-like "original" spectra,
pre-processed onto the grid, ``l2``) is made DESI-like at BGS depth as in
``pipelines/mzr_desi.yaml`` (``DesiNoise(exptime=180)``, every galaxy moved
to z = 0.1).  A seeded random ``--test`` galaxies are held out; 6-d VAEs of
the ``default`` preset are trained on nested subsets of the rest, of the
sizes in ``--sizes``.  Each subset gets at most ``--sample-budget / n``
epochs, kept between ``--min-epochs`` and ``--max-epochs`` (early stopping
may end it sooner), so the small sets are not starved of steps.

Every model de-noises the same test galaxies, which are fitted with the
fast fitter and scored as in ``benchmarks/conditioning.py``: scatter
against the original spectra's fluxes and against the truth (Table 6's
scoring: common galaxies, zero fits as upper limits), and per line the
median S/N, the share with S/N > 15 (the MZR test's Hα cut), the error
relative to the DESI-like input's and the coverage of the true flux at
1 and 2 sigma.

On the same test galaxies :func:`survey_denoise.science.bound.snr_bound`
gives the highest Hα S/N that the DESI-like noise allows any estimator:
Hα alone, every line's ratio known, and that plus the mock's prior on Hα
given the continuum (the 0.3 dex scatter of the 10-Myr SFR).  The share
of galaxies whose bound exceeds 15 is the most an honest de-noiser could
make measurable, to set against the MZR target (80 % of the originals').

    OMP_NUM_THREADS=1 python benchmarks/training_size.py [--sizes 2500,25000,100000] [--test 2000]

Writes ``benchmarks/results/training_size.json`` (or ``--out``).  One
process: Dask's threaded scheduler for the data, TensorFlow for training.
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
from conditioning import LINES, errors, rescaled, score, trained  # noqa: E402

from survey_denoise import noise  # noqa: E402
from survey_denoise.fitting import fit_lines  # noqa: E402
from survey_denoise.fitting.catalogue import to_frame  # noqa: E402
from survey_denoise.inference import denoise  # noqa: E402
from survey_denoise.mock import MockConfig, generate, select, truth_table  # noqa: E402
from survey_denoise.mock.priors import default_priors  # noqa: E402
from survey_denoise.models import VAEDenoiser  # noqa: E402
from survey_denoise.pipeline.products import noise_bound  # noqa: E402
from survey_denoise.preprocess import preprocess  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SNR_CUT = 15.0


def epochs_for(n: int, budget: int, lo: int, hi: int) -> int:
    return int(np.clip(budget // max(n, 1), lo, hi))


def bound_shares(test_noisy, test_clean, prior_dex: float) -> dict:
    """Share of test galaxies whose Hα S/N bound exceeds the cut, per bound."""
    b = noise_bound(test_noisy, truth_table(test_clean), prior_dex=prior_dex)
    out = {}
    for col in ("snr_line", "snr_tied", "snr_tied_prior"):
        v = b[col].to_numpy(float)
        out[col] = {"frac_gt_15": float(np.mean(v > SNR_CUT)), "median": float(np.nanmedian(v))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2500,25000,100000", help="training-set sizes, comma-separated")
    ap.add_argument("--test", type=int, default=2000, help="held-out test galaxies")
    ap.add_argument("--latent", type=int, default=6)
    ap.add_argument("--sample-budget", type=int, default=300_000)
    ap.add_argument("--min-epochs", type=int, default=12)
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=RESULTS / "training_size.json")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    t0 = time.perf_counter()
    n_all = sizes[-1] + args.test
    with tempfile.TemporaryDirectory() as workdir:
        raw = generate(select("mzr", n_all, args.seed), MockConfig(seed=args.seed, survey="sdss"),
                       chunk_size=2000, design="mzr")
        clean = preprocess(raw)
        noisy = noise.degrade(clean, noise.DesiNoise(exptime=180), seed=args.seed, z_target=0.1)
        with dask.config.set(scheduler="threads", num_workers=2):
            clean, noisy = dask.compute(clean, noisy)
        order = np.random.default_rng(args.seed).permutation(n_all)
        test, pool = np.sort(order[:args.test]), order[args.test:]
        te_clean, te_noisy = clean.isel(galaxy=test), noisy.isel(galaxy=test)
        dim = te_noisy["dimming"].values
        truth = pd.DataFrame({"galaxy": te_clean["galaxy"].values.astype(str),
                              **{f"{k}_flux": te_clean[f"true_{k}_flux"].values for k in LINES}})
        with dask.config.set(scheduler="synchronous"):
            original = to_frame(fit_lines(te_clean, method="fast").compute())
            cats = {"desi-like": rescaled(to_frame(fit_lines(te_noisy, method="fast").compute()), 1 / dim)}
        prior_dex = float(default_priors().stochastic_sfr["log_sfr10_over_sfr100"][1])
        bounds = bound_shares(te_noisy, te_clean, prior_dex)
        t_data = time.perf_counter() - t0
        print(f"data: {n_all} galaxies in {t_data:.0f} s; Hα S/N bound > {SNR_CUT:g}: "
              + ", ".join(f"{k} {v['frac_gt_15']:.3f}" for k, v in bounds.items()), flush=True)

        models = {}
        for n in sizes:
            name = f"vae_{n}"
            epochs = epochs_for(n, args.sample_budget, args.min_epochs, args.max_epochs)
            model = VAEDenoiser(args.latent, epochs=epochs, seed=args.seed)
            train = np.sort(pool[:n])
            folder, facts = trained(model, noisy.isel(galaxy=train), clean.isel(galaxy=train),
                                    Path(workdir) / name)
            models[name] = {"n_train": n, "epochs_cap": epochs, **facts,
                            **{k: model.card_["uncertainty"].get(k)
                               for k in ("line_error_scale", "line_error_scale_faint", "line_error_snr_split",
                                         "line_error_frac")}}
            with dask.config.set(scheduler="synchronous"):
                den = denoise(te_noisy, folder).compute()
                # The de-noised store is in its input's frame (z = 0.1), like the DESI-like fits.
                factor = 1 / dim
                cats[name] = rescaled(to_frame(fit_lines(den, method="fast").compute()), factor)
            print(f"{name}: {models[name]['epochs_run']} epochs in {models[name]['seconds']:.0f} s, "
                  f"val MSE {models[name]['val_mse']:.3g}", flush=True)

    original["galaxy"] = original["galaxy"].astype(str)
    for c in cats.values():
        c["galaxy"] = c["galaxy"].astype(str)
    scatter = score(cats, original, truth)
    errs = {m: errors(c, cats["desi-like"], truth) for m, c in cats.items()}
    errs["original"] = errors(original, cats["desi-like"], truth)
    target = 0.8 * errs["original"]["halpha"]["frac_snr_gt_15"]
    cmd = (f"OMP_NUM_THREADS=1 python benchmarks/training_size.py --sizes {args.sizes} --test {args.test} "
           f"--latent {args.latent} --sample-budget {args.sample_budget} --min-epochs {args.min_epochs} "
           f"--max-epochs {args.max_epochs} --seed {args.seed}")
    meta = {"command": cmd, "mock": {"design": "mzr", "survey": "sdss", "seed": args.seed, "n": n_all,
                                     "n_test": args.test},
            "noise": "DesiNoise(exptime=180) at z_target = 0.1 (the MZR test's), renormalised",
            "models": models, "fit": "fast", "snr_cut": SNR_CUT, "prior_dex": prior_dex,
            "scatter": "score_catalogues (Table 6 scoring): sigma of log10 flux / reference, common "
                       "galaxies, zero fits as upper limits; reference the original spectra's fit or "
                       "the truth, in the original spectra's units",
            "target_frac_halpha_snr_gt_15": target,
            "seconds": {"data": t_data, "total": time.perf_counter() - t0}}
    results = {"meta": meta, "bound": bounds, "scatter": scatter, "errors": errs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=float))

    print(f"\nsigma vs original / vs truth (dex); Hα median S/N, share S/N > {SNR_CUT:g}, err/input, 1s/2s")
    for m, per_line in scatter.items():
        e = errs[m]["halpha"]
        print(f"{m:<12}" + "  ".join(f"{k} {v['sigma_orig']:.3f}/{v['sigma_truth']:.3f}"
                                     for k, v in per_line.items())
              + f"  | Hα S/N {e['median_snr']:.1f} >15 {e['frac_snr_gt_15']:.3f} "
                f"err/in {e['median_err_over_input']:.2f} cov {e['within_1sigma']:.2f}/{e['within_2sigma']:.2f}")
    e = errs["original"]["halpha"]
    print(f"{'original':<12} Hα S/N {e['median_snr']:.1f} >15 {e['frac_snr_gt_15']:.3f}; "
          f"target (80 % of it) {target:.3f}")
    print("Hα S/N bound > 15 on the DESI-like spectra: "
          + ", ".join(f"{k} {v['frac_gt_15']:.3f}" for k, v in bounds.items()))
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
