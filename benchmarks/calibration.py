"""Are de-noised line-flux errors honest?  Coverage of the true fluxes, before and after.

A uniform-Halpha mock (SDSS-like, observed frame, with noise: the
"original" spectra) is pre-processed onto the grid (``l2``) and degraded
with the paper's uniform noise (sigma = 0.04).  A random 80 % of the
galaxies (seeded) train small de-noisers (a few epochs); the other 20 % are
de-noised by :func:`survey_denoise.inference.denoise` and fitted with the
fast fitter.  For each Table 6 line, in bins of true flux, the fraction of
``|fitted - true|`` within 1 and 2 sigma of the fitted error
(:func:`survey_denoise.science.calibration.line_coverage`; target 60-76 %
and 90-98 %) is measured twice on the same de-noised fluxes:

* ``before``: every pixel gets the constant ``1 / val_mse`` and line errors
  treat pixels as independent (the rules this package used before the
  variance model; reproduced here);
* ``after_independent``: the store's own per-galaxy, per-pixel ``ivar``,
  pixels independent;
* ``after_fully_correlated``: that ``ivar``, pixel errors fully correlated
  over lags 1-4;
* ``after``: that ``ivar`` with the fitter's default for de-noised stores,
  the held-out pixel-error correlation by lag that the model recorded.

The original spectra of the test galaxies are fitted too (``original``):
coverage of the true fluxes by the fitter's formal errors
(``<key>_flux_err_stat``, ``before``) and by the total errors with the
systematic terms of :mod:`survey_denoise.fitting.systematics` (``after``),
on the same fits (so the fluxes are the same), for the lines of
:data:`LINES`.  ``--originals-only`` does only that, on any design, seed and
survey, without training; ``--fit-systematics`` calibrates the systematic
constants on the mock's galaxies (maximum likelihood against the true
fluxes) and writes them, with this command, to ``data/line_systematics.yaml``.
Both take ``--method ppxf`` to do so for pPXF's fits (a process pool of
``--workers``), whose constants sit beside the fast fitter's.

Pixel-level coverage of the clean (original) spectra by the de-noised ones,
with the clean spectra's own variance added, is printed too.  With
``--dropout-sweep`` the default-preset VAE is also trained with dropout 0,
0.1, 0.3 and the paper's rate, and its test MSE and Halpha scatter
(std of log10 fitted / true over galaxies with both positive) recorded;
the default preset's own run then has the default rate.

    OMP_NUM_THREADS=1 python benchmarks/calibration.py [--n 3000] [--epochs 15] [--dropout-sweep] [--weights-prior 0]
    OMP_NUM_THREADS=1 python benchmarks/calibration.py --originals-only [--design mzr] [--survey desi] [--seed 12]
        [--weights-prior 10]
    OMP_NUM_THREADS=1 python benchmarks/calibration.py --fit-systematics [--n 3000] [--seed 11] [--method ppxf]
    OMP_NUM_THREADS=1 python benchmarks/calibration.py --model-seed 12 --out run12.json
    python benchmarks/calibration.py --compare run*.json --out seeds.json

Writes ``benchmarks/results/calibration.json`` (or ``--out``; the dropout sweep of
``--dropout-sweep`` is kept in ``results/calibration_dropout_sweep.json``).  One
process, Dask's synchronous scheduler.
"""

from __future__ import annotations

import argparse
import contextlib
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
from survey_denoise.fitting import fast, fit_lines, systematics  # noqa: E402
from survey_denoise.fitting.catalogue import formal_errors, to_frame  # noqa: E402
from survey_denoise.inference import denoise  # noqa: E402
from survey_denoise.mock import MockConfig, generate, select  # noqa: E402
from survey_denoise.models import PCADenoiser, VAEDenoiser  # noqa: E402
from survey_denoise.models.training import NOISE_DRAWS  # noqa: E402
from survey_denoise.pipeline import runlog  # noqa: E402
from survey_denoise.preprocess import preprocess  # noqa: E402
from survey_denoise.science.calibration import (  # noqa: E402
    COVERAGE_LINES,
    line_coverage,
    pixel_coverage,
    tally,
)

RESULTS = Path(__file__).parent / "results"
LINES = ("halpha", "hbeta", "hdelta", "oiii_5007", "nii_6583", "sii_6716", "oiii_4363")
"""Lines whose coverage by the original spectra's errors is measured."""


def truth_frame(ds, keys=COVERAGE_LINES) -> pd.DataFrame:
    cols = {f"{k}_flux": ds[f"true_{k}_flux"].values for k in keys}
    return pd.DataFrame({"galaxy": ds["galaxy"].values.astype(str), **cols})


def constant_ivar_copy(den, card: dict):
    """The de-noised store with the old rule: ivar = 1 / val_mse (rescaled with the flux), 0 where masked."""
    # The per-galaxy factor that put the decode on the input's normalisation (a store without one: the median).
    scale = den["amplitude"] if "amplitude" in den else float(card.get("output_norm", {}).get("ratio", 1.0))
    out = den.copy()
    out["ivar"] = den["ivar"].where(den["ivar"] == 0, 1.0 / card["metrics"]["val_mse"] / scale ** 2).astype(np.float32)
    return out


def halpha_scatter(cat: pd.DataFrame, truth: pd.DataFrame) -> float:
    fit = cat.set_index(cat["galaxy"].astype(str)).loc[truth["galaxy"], "halpha_flux"].to_numpy(float)
    true = truth["halpha_flux"].to_numpy(float)
    ok = (fit > 0) & (true > 0)
    return float(np.std(np.log10(fit[ok] / true[ok])))


def tables(cov: dict) -> dict:
    return {k: t.replace({np.nan: None}).to_dict(orient="records") for k, t in cov.items()}


def mock_spectra(design: str, survey: str, seed: int, n: int, noise: bool = True):
    """The mock (observed frame, with the survey's noise unless ``noise`` is False) and its
    pre-processed spectra on the grid."""
    raw = generate(select(design, n, seed), MockConfig(seed=seed, survey=survey, noise=noise), chunk_size=500,
                   design=design).compute()
    return raw, preprocess(raw.chunk({"galaxy": 500})).compute()


def fit_fast(ds, weights_prior: float | None = None) -> pd.DataFrame:
    """The fast fit; ``weights_prior`` replaces the fitter's own (0: none)."""
    kwargs = {} if weights_prior is None else {"weights_prior": weights_prior or None}
    return to_frame(fit_lines(ds, method="fast", **kwargs).compute())


def fit_method(ds, method: str, workers: int, weights_prior: float | None = None) -> pd.DataFrame:
    """The original spectra fitted by ``method``; pPXF's seconds per fit are worth a process pool."""
    if method == "fast":
        return fit_fast(ds, weights_prior)
    with dask.config.set(scheduler="processes", num_workers=workers):
        return to_frame(fit_lines(ds.chunk({"galaxy": 50}), method=method).compute())


def original_coverage(cat: pd.DataFrame, truth: pd.DataFrame, keys=LINES) -> dict:
    """Coverage by the formal errors (``before``) and by the total errors (``after``) of one fit,
    and in the same bins the fit's fractional bias and scatter against the truth (``bias``); per
    line, :func:`~survey_denoise.science.calibration.tally` of the bins of each (``tally``)."""
    formal = formal_errors(cat, keys)
    after = tables(line_coverage(cat, truth, keys=keys, min_count=20))
    before = tables(line_coverage(formal, truth, keys=keys, min_count=20))
    return {"before": before, "after": after,
            "bias": {k: fractional_bias(cat, truth, k, after[k]) for k in keys},
            "tally": {name: {k: tally(pd.DataFrame(t[k])) for k in keys} for name, t in
                      (("before", before), ("after", after))}}


def fractional_bias(cat: pd.DataFrame, truth: pd.DataFrame, key: str, bins: list[dict]) -> list[dict]:
    """Per bin of log10 true flux: median and NMAD of (fitted - true) / true, and the median total error / true.

    What a bright line's error must cover once the noise no longer does: a bias common to the
    fitter shows as a median offset that the stated error (``median_err_frac``) falls short of.
    """
    fit = cat.set_index(cat["galaxy"].astype(str)).loc[truth["galaxy"].astype(str)]
    true = truth[f"{key}_flux"].to_numpy(float)
    resid = (fit[f"{key}_flux"].to_numpy(float) - true) / np.where(true > 0, true, np.nan)
    err = fit[f"{key}_flux_err"].to_numpy(float) / np.where(true > 0, true, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log10(true)
    out = []
    for row in bins:
        sel = (np.isfinite(resid) & (x >= row["lo"]) & (x < row["hi"])) if row["bin"] != "all" else np.isfinite(resid)
        r = resid[sel]
        med = float(np.median(r)) if r.size else np.nan
        out.append({"bin": row["bin"], "count": int(r.size), "median_frac_resid": med,
                    "nmad_frac_resid": float(1.4826 * np.median(np.abs(r - med))) if r.size else np.nan,
                    "median_err_frac": float(np.median(err[sel])) if r.size else np.nan})
    return out


def print_original(name: str, cov: dict, keys=LINES) -> None:
    print(f"\n{name}: coverage of the true fluxes, formal errors -> formal + systematic")
    print(f"{'line':<10}{'bin log10 F':>18}{'n':>6}   formal 1s / 2s   total 1s / 2s"
          "   exact, clipped at 0: 1s / 2s")
    for key in keys:
        for b, a in zip(cov["before"][key], cov["after"][key], strict=True):
            print(f"{key:<10}{b['bin']:>18}{b['count']:>6}   "
                  + "   ".join(f"{r['within_1sigma']:6.3f} / {r['within_2sigma']:5.3f}" for r in (b, a))
                  + f"   {a['expected_1sigma']:6.3f} / {a['expected_2sigma']:5.3f}")


def fit_systematics(raw, clean, cat: pd.DataFrame) -> dict:
    """Maximum-likelihood systematic constants per line, from fits of the mock's original spectra.

    A line whose formal errors already cover 68.3 % or more within 1 sigma,
    both over all galaxies and over the fifth with the brightest true line,
    keeps them (constants 0): there is no excess to model.  The brightest
    fifth counts because a floor that the faint majority hides dominates
    at higher S/N (Hδ: 68.2 % pooled, 48 % in its brightest fifth, and 46 %
    pooled on the DESI-like mock without constants).  Fitting every line
    regardless is no better: on lines below the noise ([OIII]4363) the
    galaxies whose clipped flux is > 0 are those the noise pushed up, and
    the likelihood reads them as a fractional error of 60 %.
    """
    assert np.array_equal(cat["galaxy"].to_numpy().astype(str), clean["galaxy"].values.astype(str))
    good = ~clean["mask"].values & (clean["ivar"].values > 0)
    keys = [k for k in systematics_keys() if f"true_{k}_flux" in raw]
    cont = systematics.local_continuum(clean["wavelength"].values, clean["flux"].values, good, keys)
    cont *= clean["norm"].values[:, None]
    out = {}
    for j, key in enumerate(keys):
        true = raw[f"true_{key}_flux"].values
        flux, err = cat[f"{key}_flux"].to_numpy(float), cat[f"{key}_flux_err_stat"].to_numpy(float)
        ok = np.isfinite(flux) & np.isfinite(err) & (err > 0)
        within = float(np.mean(np.abs(flux - true)[ok] <= err[ok]))
        bright = ok & (true >= np.quantile(true[ok], 0.8))
        within_bright = float(np.mean(np.abs(flux - true)[bright] <= err[bright]))
        frac, ew, ew_mix, scale = (systematics.calibrate(flux - true, err, true, cont[:, j])
                                   if min(within, within_bright) < 0.683 else (0.0, 0.0, 0.0, 1.0))
        out[key] = {"frac": round(frac, 5), "ew": round(ew, 5), "ew_mix": round(ew_mix, 5),
                    "scale": round(scale, 4), "n": int(ok.sum()),
                    "formal_within_1sigma": round(within, 4),
                    "formal_within_1sigma_brightest_fifth": round(within_bright, 4)}
    return out


def systematics_keys():
    from survey_denoise import lines

    return lines.catalogue_keys()


def write_systematics(constants: dict, meta: dict, method: str) -> Path:
    """Replace one method's line-flux constants and provenance in the shipped file, keeping the others'."""
    return systematics.write_constants("methods", method, constants, meta)


def originals(args) -> None:
    """``--originals-only`` / ``--fit-systematics``: the original spectra alone, no training."""
    t0 = time.perf_counter()
    with dask.config.set(scheduler="synchronous"):
        raw, clean = mock_spectra(args.design, args.survey, args.seed, args.n, noise=not args.noise_free)
    cat = fit_method(clean, args.method, args.workers, args.weights_prior)
    cmd = (f"OMP_NUM_THREADS=1 python benchmarks/calibration.py "
           f"{'--fit-systematics' if args.fit_systematics else '--originals-only'} --n {args.n} "
           f"--seed {args.seed} --design {args.design} --survey {args.survey}"
           + ("" if args.method == "fast" else f" --method {args.method}")
           + (" --noise-free" if args.noise_free else "")
           + (f" --weights-prior {args.weights_prior:g}" if args.weights_prior is not None else ""))
    meta = {"command": cmd, "design": args.design, "survey": args.survey, "seed": args.seed, "n": args.n,
            "weights_prior": args.weights_prior}
    if args.fit_systematics:
        constants = fit_systematics(raw, clean, cat)
        print(json.dumps(constants, indent=1))
        print(f"wrote {write_systematics(constants, meta, args.method)}")
        return
    truth = truth_frame(raw, LINES)
    cov = original_coverage(cat, truth)
    print_original(f"original, {args.method} ({args.design}, {args.survey}, seed {args.seed}, n {args.n})", cov)
    suffix = (("" if args.method == "fast" else f"_{args.method}") + ("_noise_free" if args.noise_free else "")
              + (f"_weights_prior{args.weights_prior:g}" if args.weights_prior is not None else ""))
    out = args.out if args.out != RESULTS / "calibration.json" else (
        RESULTS / f"calibration_originals{suffix}_{args.design}_{args.survey}_seed{args.seed}.json")
    meta |= {"method": args.method, "systematics": systematics.provenance(args.method, args.survey) or "none",
             "seconds": time.perf_counter() - t0, "versions": runlog.versions(),
             "coverage": f"fraction of |{args.method}-fitted - true| within 1 and 2 sigma; before: formal "
                         "errors (<key>_flux_err_stat), after: total (<key>_flux_err)"}
    out.write_text(json.dumps({"meta": meta, "original": cov}, indent=1, default=float))
    print(f"wrote {out}")


def run_model(name, model, noisy, clean, test_noisy, test_clean, truth, workdir, edges) -> dict:
    t0 = time.perf_counter()
    model.fit(noisy, clean)
    folder = model.save(Path(workdir) / name)
    t_train = time.perf_counter() - t0
    den = denoise(test_noisy, folder).compute()
    # The clean spectra in the de-noised store's normalisation (physical = flux x norm).
    scale = (test_clean["norm"].values / test_noisy["norm"].values)[:, None]
    clean_flux = test_clean["flux"].values * scale
    res = {"card_uncertainty": model.card_["uncertainty"], "train_seconds": t_train,
           "epochs_run": len(model.card_["history"].get("loss", [])) or None,
           "training_choices": {k: v for k, v in model.card_.get("training_choices", {}).items()
                                if k != "reasons"},
           "test_mse_vs_clean": float(np.mean((den["flux"].values - clean_flux) ** 2))}
    # Pixels: de-noised vs clean, the clean spectra's own variance added.
    with np.errstate(divide="ignore"):
        clean_var = np.where(test_clean["ivar"].values > 0, scale ** 2 / test_clean["ivar"].values, np.nan)
        total_ivar = np.where(den["ivar"].values > 0, 1.0 / (1.0 / den["ivar"].values + clean_var), 0.0)
    res["pixel_coverage_vs_clean"] = pixel_coverage(den["flux"].values, total_ivar, clean_flux,
                                                    test_clean["mask"].values)
    variants = (("before", constant_ivar_copy(den, model.card_), ()),
                ("after_independent", den, ()), ("after_fully_correlated", den, (1.0,) * 4),
                ("after", den, None))
    for label, store, rho in variants:
        cat = to_frame(fit_lines(store, method="fast", correlation=rho).compute())
        cov = line_coverage(cat, truth, edges=edges, min_count=20)
        res[label] = tables(cov)
        if label == "after":
            res["after_tally"] = tally(pd.concat(cov.values(), ignore_index=True))
            res["halpha_scatter_dex"] = halpha_scatter(cat, truth)
            # the same fit, formal errors only: what the systematic terms change
            formal = formal_errors(cat, COVERAGE_LINES)
            res["after_formal_only"] = tables(line_coverage(formal, truth, edges=edges, min_count=20))
    return res


def print_result(name: str, res: dict) -> None:
    p = res["pixel_coverage_vs_clean"]
    print(f"\n{name}: Halpha scatter {res['halpha_scatter_dex']:.3f} dex, test MSE "
          f"{res['test_mse_vs_clean']:.3g}; pixels within 1/2 sigma of the clean spectra: "
          f"{p['within_1sigma']:.3f} / {p['within_2sigma']:.3f}")
    rho = ", ".join(f"{r:.2f}" for r in res["card_uncertainty"]["pixel_correlation"])
    print(f"pixel-error correlation at lags 1-4 (held out): {rho}")
    print(f"{'line':<10}{'bin log10 F':>18}{'n':>6}   before 1s / 2s   indep. 1s / 2s"
          f"   full corr. 1s / 2s   after, formal only   after 1s / 2s")
    for key in COVERAGE_LINES:
        for b, i, c, f, a in zip(res["before"][key], res["after_independent"][key],
                                 res["after_fully_correlated"][key], res["after_formal_only"][key],
                                 res["after"][key], strict=True):
            print(f"{key:<10}{b['bin']:>18}{b['count']:>6}   "
                  + "   ".join(f"{r['within_1sigma']:6.3f} / {r['within_2sigma']:5.3f}" for r in (b, i, c, f, a)))
    t = res["after_tally"]
    print(f"after, per bin: {t['in_band']} of {t['measures']} in the band, {t['too_small']} below, "
          f"{t['too_wide']} above; beyond counting noise {t['narrow']} narrow, {t['wide']} wide; "
          f"against what fluxes clipped at 0 get, {t['narrow_clipped']} narrow, {t['wide_clipped']} wide")


def compare(paths: list[Path], out: Path) -> None:
    """Per run of this benchmark (e.g. one per ``--model-seed``): test MSE, Halpha scatter, tally."""
    runs = []
    for path in paths:
        d = json.loads(path.read_text())
        row = {"file": path.name, "command": d["meta"]["command"],
               "model_seed": d["meta"].get("model_seed", d["meta"]["mock"]["seed"])}
        for name in ("pca", "vae_paper", "vae_default"):
            r = d[name]
            pix = r["pixel_coverage_vs_clean"]
            row[name] = {"test_mse": r["test_mse_vs_clean"], "halpha_scatter_dex": r["halpha_scatter_dex"],
                         **{k: r["after_tally"][k] for k in ("in_band", "measures", "narrow", "wide")},
                         "variance_scale": r["card_uncertainty"].get("variance_scale"),
                         "pixels_within_1_2_sigma": [pix["within_1sigma"], pix["within_2sigma"]],
                         "noise_draws": r.get("training_choices", {}).get("noise_draws", "fixed")}
        runs.append(row)
    print(f"{'model seed':>10}" + "".join(f"{n:>30}" for n in ("pca", "vae_paper", "vae_default")))
    print(f"{'':>10}" + f"{'MSE / Ha dex / in band':>30}" * 3)
    for row in runs:
        print(f"{row['model_seed']:>10}" + "".join(
            f"{row[n]['test_mse']:>14.3g} / {row[n]['halpha_scatter_dex']:.3f} / {row[n]['in_band']:>2}"
            for n in ("pca", "vae_paper", "vae_default")))
    out.write_text(json.dumps({"runs": runs}, indent=1))
    print(f"wrote {out}")


@contextlib.contextmanager
def fitter_weights_prior(value: float | None):
    """Inside the block, the fast fitter's own stellar-weights prior is ``value`` (0: none) in every fit.

    Its default is read by ``fit_lines`` and bound into ``fit_batch``, which
    the de-noisers' held-out line-error calibration calls; both are replaced.
    """
    if value is None:
        yield
        return
    defaults = fast.fit_batch.__kwdefaults__
    saved = fast.WEIGHTS_PRIOR, defaults["weights_prior"]
    fast.WEIGHTS_PRIOR = defaults["weights_prior"] = value or None
    try:
        yield
    finally:
        fast.WEIGHTS_PRIOR, defaults["weights_prior"] = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="galaxies (80 %% train, 20 %% test)")
    ap.add_argument("--latent", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--model-seed", type=int, default=None,
                    help="seed of the models' weights, batches and validation split (default: --seed); "
                         "the mock, its noise and the test galaxies stay --seed's")
    ap.add_argument("--noise-draws", choices=NOISE_DRAWS, default=None,
                    help="the default-preset VAE's training noise (default: the preset's)")
    ap.add_argument("--dropout-sweep", action="store_true",
                    help="also train the default VAE with dropout 0, 0.1, 0.3 and the paper's rate")
    ap.add_argument("--out", type=Path, default=RESULTS / "calibration.json")
    ap.add_argument("--design", default="uniform-halpha", help="mock design (--originals-only, --fit-systematics)")
    ap.add_argument("--survey", default="sdss", help="mock survey (--originals-only, --fit-systematics)")
    ap.add_argument("--originals-only", action="store_true",
                    help="only the original spectra's coverage, formal vs total errors; no training")
    ap.add_argument("--fit-systematics", action="store_true",
                    help="calibrate the fitter's systematic constants on this mock and write them")
    ap.add_argument("--method", default="fast", choices=("fast", "ppxf"),
                    help="the fitter of --originals-only and --fit-systematics")
    ap.add_argument("--workers", type=int, default=2, help="processes for a pPXF fit")
    ap.add_argument("--weights-prior", type=float, default=None,
                    help="fast fits with this fit_lines(weights_prior=) instead of the fitter's own "
                         "(0: none; the shipped systematic constants still apply); without "
                         "--originals-only, every fast fit of the run, the de-noisers' held-out "
                         "line-error calibration included")
    ap.add_argument("--noise-free", action="store_true",
                    help="--originals-only on the mock without its noise: the fitter's own bias (the "
                         "formal errors are still the noisy spectra's)")
    ap.add_argument("--compare", type=Path, nargs="+",
                    help="summarise these runs' JSONs side by side (into --out) and stop")
    args = ap.parse_args()
    if args.weights_prior is not None and (args.fit_systematics or args.method != "fast"):
        ap.error("--weights-prior goes with the fast method and not with --fit-systematics: the "
                 "systematic constants are fitted with the fitter's own")
    if args.compare:
        compare(args.compare, args.out)
        return
    if args.originals_only or args.fit_systematics:
        originals(args)
        return

    t0 = time.perf_counter()
    with (dask.config.set(scheduler="synchronous"), tempfile.TemporaryDirectory() as workdir,
          fitter_weights_prior(args.weights_prior)):
        ids = select("uniform-halpha", args.n, args.seed)
        raw = generate(ids, MockConfig(seed=args.seed, survey="sdss"), chunk_size=500,
                       design="uniform-halpha").compute()
        clean = preprocess(raw.chunk({"galaxy": 500})).compute()
        noisy = noise.degrade(clean.chunk({"galaxy": 500}), noise.UniformNoise(0.04), seed=args.seed).compute()
        n_train = int(0.8 * args.n)
        # A seeded random split: the design's ids are not in random order (the last
        # 20 % of a uniform-Halpha selection are all faint, log10 F < 1.3).
        order = np.random.default_rng(args.seed).permutation(args.n)
        train, test = np.sort(order[:n_train]), np.sort(order[n_train:])
        truth = truth_frame(raw.isel(galaxy=test))
        t_data = time.perf_counter() - t0
        results = {"original": original_coverage(fit_fast(clean.isel(galaxy=test)),
                                                 truth_frame(raw.isel(galaxy=test), LINES))}
        print_original("original", results["original"])
        mseed = args.seed if args.model_seed is None else args.model_seed
        runs = {
            "pca": PCADenoiser(args.latent, seed=mseed),
            "vae_paper": VAEDenoiser(args.latent, preset="paper", epochs=args.epochs, seed=mseed),
            "vae_default": VAEDenoiser(args.latent, epochs=args.epochs, seed=mseed,
                                       noise_draws=args.noise_draws),
        }
        if args.dropout_sweep:
            paper_rate = VAEDenoiser(args.latent, preset="paper").architecture()[0]
            for rate in (0.0, 0.3, paper_rate):
                runs[f"vae_default_dropout_{rate:g}"] = VAEDenoiser(args.latent, dropout=rate,
                                                                    epochs=args.epochs, seed=mseed)
        for name, model in runs.items():
            print(f"{name}: training {model!r}", flush=True)
            results[name] = run_model(name, model, noisy.isel(galaxy=train), clean.isel(galaxy=train),
                                      noisy.isel(galaxy=test), clean.isel(galaxy=test), truth,
                                      workdir, None)
            print_result(name, results[name])
    cmd = (f"OMP_NUM_THREADS=1 python benchmarks/calibration.py --n {args.n} --latent {args.latent} "
           f"--epochs {args.epochs} --seed {args.seed}"
           + ("" if args.model_seed is None else f" --model-seed {args.model_seed}")
           + ("" if args.noise_draws is None else f" --noise-draws {args.noise_draws}")
           + (" --dropout-sweep" if args.dropout_sweep else "")
           + ("" if args.weights_prior is None else f" --weights-prior {args.weights_prior:g}"))
    meta = {"command": cmd,
            "mock": {"design": "uniform-halpha", "survey": "sdss", "seed": args.seed, "n": args.n,
                     "n_train": n_train, "n_test": args.n - n_train},
            "model_seed": mseed,
            "noise": "uniform sigma = 0.04 (normalised units), renormalised",
            "before": "constant ivar = 1 / val_mse per pixel (the previous rule)",
            "after_independent": "the de-noised store's per-galaxy, per-pixel ivar; pixels independent",
            "after_fully_correlated": "the de-noised store's ivar; pixel errors fully correlated over lags 1-4",
            "after": "the de-noised store's ivar; the model's held-out pixel-error correlation; "
                     "formal and systematic errors (data/line_systematics.yaml)",
            "after_formal_only": "as after, the formal errors alone (<key>_flux_err_stat)",
            "original": "the test galaxies' original spectra: formal errors (before) and formal + "
                        "systematic (after)",
            "coverage": "fraction of |fast-fitted - true| within 1 and 2 fitted sigma, per bin of "
                        "log10 true flux (1e-17 erg/s/cm2); target 0.60-0.76 and 0.90-0.98",
            "seconds": {"data": t_data, "total": time.perf_counter() - t0},
            # The figures move with the installed packages (the fitter's numerics).
            "versions": runlog.versions()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **results}, indent=1, default=float))
    print(f"\nwrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
