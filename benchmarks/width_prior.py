"""The fast fitter's line-width prior: flux accuracy and error honesty with and without it.

A spectrum whose lines are all faint barely changes its chi^2 with the
line width, so without a prior the width follows the noise and the flux
with it.  This benchmark fits the same mock spectra, original and with
Table 6's noise added (uniform, sigma 0.04 in normalised units), with the
width read from the chi^2 alone (``width_prior=None``), with one prior
for every instrument (:data:`survey_denoise.fitting.fast.WIDTH_PRIOR`,
median 80 km/s: ``single``) and with the prior centred on the survey's
instrument that ``fit_lines`` uses (:func:`survey_denoise.fitting.fast.survey_width_prior`:
``survey``), and reports per line and quartile of true flux:

* ``rms_rel``: root mean square of (fitted - true) / true, signed fluxes
  (``nonnegative=False``), so no clipping hides the scatter;
* ``pull_sd``, ``pull_mean``: of (fitted - true) / error, the fitter's own
  error (formal, with the width's share; no systematic terms);
* ``sigma_dex``: the paper's measure on the catalogue (fluxes kept >= 0,
  zero fits as upper limits at 1x their error): the standard deviation of
  log10(value / true);
* per store, the median and spread of ln(chosen / true width) where Halpha
  has S/N < 3 and >= 10 (true width: gas and instrument in quadrature).

Writes benchmarks/results/width_prior_<design>_<survey>_seed<seed>.json.

    OMP_NUM_THREADS=1 python benchmarks/width_prior.py [--n 3000] [--seed 21] [--survey sdss]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dask  # noqa: E402
import numpy as np  # noqa: E402

from survey_denoise import noise  # noqa: E402
from survey_denoise.fitting import fast, fit_lines  # noqa: E402
from survey_denoise.fitting.catalogue import to_frame  # noqa: E402
from survey_denoise.grid import Grid  # noqa: E402
from survey_denoise.mock import MockConfig, generate, select  # noqa: E402
from survey_denoise.mock.instrument import INSTRUMENTS  # noqa: E402
from survey_denoise.pipeline import runlog  # noqa: E402
from survey_denoise.preprocess import preprocess  # noqa: E402
from survey_denoise.science.metrics import censor  # noqa: E402

RESULTS = Path(__file__).parent / "results"
LINES = ("halpha", "hbeta", "hdelta", "oiii_4363", "sii_6716", "oiii_5007", "nii_6583")


def priors(survey: str) -> dict:
    """The priors compared: none, one for every instrument, and the one centred on ``survey``'s."""
    return {"none": None, "single": fast.WIDTH_PRIOR, "survey": fast.survey_width_prior(survey)}


def quartiles(true: np.ndarray, ok: np.ndarray) -> list[np.ndarray]:
    q = np.quantile(true[ok], [0.0, 0.25, 0.5, 0.75, 1.0])
    return [ok & (true >= q[b]) & (true <= q[b + 1]) for b in range(4)]


def signed_scores(ds, truth: dict, name: str) -> tuple[dict, dict]:
    """Signed fits of ``ds`` with and without the prior: rms and pulls per line and quartile."""
    grid = Grid.from_dataset(ds)
    flux, ivar, norm = ds["flux"].values, ds["ivar"].values, ds["norm"].values
    good = ~ds["mask"].values & (ivar > 0) & np.isfinite(flux)
    sigma_true = np.hypot(ds["true_sigma_gas"].values, INSTRUMENTS[ds.attrs["survey"]].sigma_inst_kms)
    out, widths = {}, {}
    for label, prior in priors(ds.attrs["survey"]).items():
        fit = fast.fit_batch(flux, np.where(good, ivar, 0.0), good, grid=grid, nonnegative=False,
                             width_prior=prior)
        snr = fit["flux"]["halpha"] / fit["flux_err"]["halpha"]
        d = np.log(fit["width"] / sigma_true)
        widths[label] = {cls: {"n": int(sel.sum()), "median": float(np.median(d[sel])),
                               "nmad": float(1.4826 * np.median(np.abs(d[sel] - np.median(d[sel]))))}
                         for cls, sel in (("halpha_snr_below_3", snr < 3), ("halpha_snr_10_up", snr >= 10))
                         if sel.any()}
        for k in LINES:
            f, e, t = fit["flux"][k] * norm, fit["flux_err"][k] * norm, truth[k]
            ok = np.isfinite(f) & np.isfinite(e) & (e > 0) & (t > 0)
            rows = []
            for sel in quartiles(t, ok):
                pull = (f[sel] - t[sel]) / e[sel]
                rows.append({"n": int(sel.sum()), "rms_rel": float(np.sqrt(np.mean(((f[sel] - t[sel]) / t[sel]) ** 2))),
                             "pull_sd": float(np.std(pull)), "pull_mean": float(np.mean(pull))})
            out.setdefault(k, {})[label] = rows
    print(f"\n{name}: ln(chosen / true width), median / NMAD, none -> single -> survey")
    missing = {"median": np.nan, "nmad": np.nan}
    for cls in widths["none"]:
        cells = " -> ".join(f"{w['median']:+.3f} / {w['nmad']:.2f}" for w in
                            (widths[label].get(cls, missing) for label in ("none", "single", "survey")))
        print(f"  {cls:20s} n {widths['none'][cls]['n']:5d}  {cells}")
    return out, widths


def catalogue_scores(ds, truth: dict) -> dict:
    """The catalogue's fluxes (>= 0, systematic terms added) scored as Table 6 scores them."""
    out = {}
    for label, prior in priors(ds.attrs["survey"]).items():
        cat = to_frame(fit_lines(ds.chunk({"galaxy": 500}), method="fast", width_prior=prior).compute())
        for k in LINES:
            value, upper = censor(cat[f"{k}_flux"].to_numpy(float), cat[f"{k}_flux_err"].to_numpy(float))
            t = truth[k]
            ok = np.isfinite(value) & (t > 0)
            out.setdefault(k, {})[label] = [
                {"n": int(sel.sum()), "n_upper": int(upper[sel].sum()),
                 "sigma_dex": float(np.std(np.log10(value[sel] / t[sel])))} for sel in quartiles(t, ok)]
    return out


def print_table(name: str, signed: dict, cat: dict) -> None:
    print(f"\n{name}: per quartile of true flux (faintest first), none > single > survey")
    print(f"{'line':10s} {'rms of (F - true) / true':>60s} {'pull sd':>44s} {'sigma dex (catalogue)':>44s}")
    labels = ("none", "single", "survey")

    def cells(table, field, fmt):
        return "  ".join(">".join(format(table[label][q][field], fmt) for label in labels) for q in range(4))

    for k in LINES:
        print(f"{k:10s} {cells(signed[k], 'rms_rel', '.3g'):>60s} {cells(signed[k], 'pull_sd', '.2f'):>44s} "
              f"{cells(cat[k], 'sigma_dex', '.2f'):>44s}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--design", default="uniform-halpha")
    ap.add_argument("--survey", default="sdss", choices=sorted(INSTRUMENTS))
    ap.add_argument("--sigma", type=float, default=0.04, help="noise added (normalised units), Table 6's")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with dask.config.set(scheduler="synchronous"):
        raw = generate(select(args.design, args.n, args.seed), MockConfig(seed=args.seed, survey=args.survey),
                       chunk_size=500, design=args.design).compute()
        clean = preprocess(raw.chunk({"galaxy": 500})).compute()
        noisy = noise.degrade(clean.chunk({"galaxy": 500}), noise.UniformNoise(args.sigma), seed=args.seed).compute()
        truth = {k: raw[f"true_{k}_flux"].values for k in LINES}
        result = {"meta": {"command": "OMP_NUM_THREADS=1 python benchmarks/width_prior.py " + " ".join(
            f"--{k} {v}" for k, v in (("n", args.n), ("seed", args.seed), ("design", args.design),
                                      ("survey", args.survey), ("sigma", args.sigma))),
                           "width_prior": {label: None if p is None else {"median_kms": p[0], "ln_spread": p[1]}
                                           for label, p in priors(args.survey).items()},
                           "quartiles": "of true flux, faintest first", "versions": runlog.versions()}}
        for name, ds in (("original", clean), ("noisy", noisy)):
            ds = ds.assign(true_sigma_gas=raw["true_sigma_gas"])
            signed, widths = signed_scores(ds, truth, name)
            cat = catalogue_scores(ds, truth)
            print_table(name, signed, cat)
            result[name] = {"signed": signed, "catalogue": cat, "widths": widths}
    result["meta"]["seconds"] = time.perf_counter() - t0
    out = args.out or RESULTS / f"width_prior_{args.design}_{args.survey}_seed{args.seed}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
