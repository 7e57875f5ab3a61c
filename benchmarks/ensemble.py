"""Would an ensemble of de-noisers give better line fluxes, or errors that find the tails?

The shipped error model scales each de-noised line's error by what one
model sees (its S/N; ``docs/models.md``), and ``coverage_ceiling.py``
measured that no such factor can do better: a few bins of true flux have
tails (a decoder that misses a line by far) that no factor fits.  An
ensemble (Lakshminarayanan et al. 2017, "Simple and scalable predictive
uncertainty estimation using deep ensembles") adds what one model cannot
see: how much independently trained models disagree about a galaxy.

K VAEs (the default preset, seeds ``seed .. seed+K-1``) are trained on the
same galaxies (uniform-Halpha mock, SDSS-like, uniform noise sigma = 0.04,
the Table 6 setup; a seeded 80/20 split).  The held-out galaxies' de-noised
spectra are fitted with the fast fitter, each member with its own
calibrated errors.  Compared on the same galaxies:

* ``single``: member 0 as written (what a run ships today);
* ``ensemble``: the mean of the K members' line fluxes, with error
  ``sqrt(mean sigma_k^2 + g^2 var_k F_k)`` (``g`` = 1 as the deep-ensemble
  mixture's variance; other ``g`` in ``spread_weight``).

For each: Table 6 scores (:func:`~survey_denoise.science.metrics.score_catalogues`:
sigma against the original spectra and the truth, common galaxies, upper
limits counted; painted-line rate), the per-bin coverage tally as written,
the tally after one factor per line set *against the truth* on a random
half and scored on the other (``coverage_ceiling.py``'s ``refit``; the
fairest comparison of two error descriptions), the bins of true flux that
any single factor could meet and their tail ratio, and whether the
members' spread is large where the single model's error is short
(``spread_where_off``).

    OMP_NUM_THREADS=1 python benchmarks/ensemble.py [--n 10000] [--members 5] [--epochs 30]

Writes ``benchmarks/results/ensemble.json`` (or ``--out``).  One process,
Dask's synchronous scheduler.
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
from calibration import fit_fast, mock_spectra  # noqa: E402
from coverage_ceiling import _oracle, _refit, _tally  # noqa: E402

from survey_denoise import noise  # noqa: E402
from survey_denoise.inference import denoise  # noqa: E402
from survey_denoise.models import AEDenoiser, VAEDenoiser  # noqa: E402
from survey_denoise.science.calibration import COVERAGE_LINES  # noqa: E402
from survey_denoise.science.metrics import TABLE6_LINES, score_catalogues, table6  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SPREAD_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 3.0)
KEYS = tuple(dict.fromkeys((*TABLE6_LINES, *COVERAGE_LINES)))


def _fit(ds) -> pd.DataFrame:
    cat = fit_fast(ds)
    return cat.assign(galaxy=cat["galaxy"].astype(str))


def combine(cats: list[pd.DataFrame], weight: float = 1.0) -> pd.DataFrame:
    """The members' mean line fluxes; error sqrt(mean sigma_k^2 + weight^2 var_k F_k)."""
    out = cats[0].copy()
    for key in KEYS:
        f = np.stack([c[f"{key}_flux"].to_numpy(float) for c in cats])
        e = np.stack([c[f"{key}_flux_err"].to_numpy(float) for c in cats])
        out[f"{key}_flux"] = f.mean(axis=0)
        out[f"{key}_flux_err"] = np.sqrt((e ** 2).mean(axis=0) + weight ** 2 * f.var(axis=0, ddof=1))
    return out


def spread_where_off(cats: list[pd.DataFrame], truth: pd.DataFrame) -> dict:
    """Members' spread / member 0's error, for its lines within and beyond 2 errors of the truth."""
    out = {}
    for key in COVERAGE_LINES:
        f = np.stack([c[f"{key}_flux"].to_numpy(float) for c in cats])
        e0 = cats[0][f"{key}_flux_err"].to_numpy(float)
        t = truth[f"{key}_flux"].to_numpy(float)
        ok = np.isfinite(f).all(axis=0) & np.isfinite(e0) & (e0 > 0) & np.isfinite(t)
        off = np.abs(f[0] - t) / e0 > 2.0
        ratio = f.std(axis=0, ddof=1) / e0
        out[key] = {"n_off": int((ok & off).sum()), "n_on": int((ok & ~off).sum()),
                    "median_spread_over_err_off": float(np.median(ratio[ok & off])) if (ok & off).any() else None,
                    "median_spread_over_err_on": float(np.median(ratio[ok & ~off])),
                    # does the spread rank the single model's misses?  (Spearman, by ranks)
                    "rank_corr_spread_abs_error": float(np.corrcoef(
                        pd.Series(ratio[ok]).rank(), pd.Series(np.abs(f[0] - t)[ok] / e0[ok]).rank())[0, 1])}
    return out


def judge(cat: pd.DataFrame, truth: pd.DataFrame, calib: np.ndarray) -> dict:
    """Coverage tallies: as written, and after one truth-set factor per line (scored on ~calib)."""
    c, t = cat.set_index("galaxy"), truth
    one = pd.DataFrame({k: np.ones(len(c)) for k in COVERAGE_LINES}, index=c.index)
    refit = _refit(c, one, t, calib, 1)
    return {"as_written": _tally(c, t), "as_written_test_half": _tally(c[~calib], t[~calib]),
            "refit_1_test_half": _tally(refit[~calib], t[~calib]), "oracle_bins": _oracle(c, t)}


def scores_table(cats: dict[str, pd.DataFrame], original: pd.DataFrame, truth_cols: pd.DataFrame) -> dict:
    s = score_catalogues(cats, original, truth_cols, noisy="noisy")
    summ = s.summary[s.summary["method"] != "original"]
    cols = ["line", "method", "n", "sigma_orig", "sigma_truth", "faint_offset", "painted_rate", "spurious_rate"]
    return {"table6_vs_original": table6(s, digits=3).to_string(),
            "table6_vs_truth": table6(s, digits=3, against="truth").to_string(),
            "summary": summ[cols].replace({np.nan: None}).to_dict(orient="records")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="galaxies (80 %% train, 20 %% test)")
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--kind", choices=("vae", "ae"), default="vae")
    ap.add_argument("--latent", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=2023)
    ap.add_argument("--out", type=Path, default=RESULTS / "ensemble.json")
    args = ap.parse_args()
    model_class = {"vae": VAEDenoiser, "ae": AEDenoiser}[args.kind]

    t0 = time.perf_counter()
    with dask.config.set(scheduler="synchronous"), tempfile.TemporaryDirectory() as workdir:
        raw, clean = mock_spectra("uniform-halpha", "sdss", args.seed, args.n)
        noisy = noise.degrade(clean.chunk({"galaxy": 500}), noise.UniformNoise(0.04), seed=args.seed).compute()
        order = np.random.default_rng(args.seed).permutation(args.n)
        n_train = int(0.8 * args.n)
        train, test = np.sort(order[:n_train]), np.sort(order[n_train:])
        ids = raw["galaxy"].values[test].astype(str)
        truth = pd.DataFrame({f"{k}_flux": raw[f"true_{k}_flux"].values[test] for k in COVERAGE_LINES},
                             index=pd.Index(ids, name="galaxy"))
        truth_cols = pd.DataFrame({"galaxy": ids, **{f"true_{k}_flux": raw[f"true_{k}_flux"].values[test]
                                                     for k in KEYS}})
        original = _fit(clean.isel(galaxy=test))
        cats = {"noisy": _fit(noisy.isel(galaxy=test))}
        members, trained = [], []
        for k in range(args.members):
            model = model_class(args.latent, epochs=args.epochs, seed=args.seed + k)
            t1 = time.perf_counter()
            model.fit(noisy.isel(galaxy=train), clean.isel(galaxy=train))
            folder = model.save(Path(workdir) / f"{args.kind}{k}")
            den = denoise(noisy.isel(galaxy=test), folder).compute()
            members.append(_fit(den))
            trained.append({"seed": args.seed + k, "train_seconds": time.perf_counter() - t1,
                         "epochs_run": len(model.card_["history"].get("loss", [])),
                         "val_mse": model.card_["metrics"].get("val_mse")})
            print(f"member {k}: {trained[-1]}", flush=True)
    for c in members:
        assert np.array_equal(c["galaxy"].to_numpy(), ids)
    calib = np.random.default_rng(0).random(ids.size) < 0.5
    cats |= {"single": members[0], "ensemble": combine(members, 1.0)}
    result = {"members": trained, "scores": scores_table(cats, original, truth_cols),
              "coverage": {m: judge(cats[m], truth, calib) for m in ("noisy", "single", "ensemble")},
              "spread_weight": {f"{g:g}": judge(combine(members, g), truth, calib) for g in SPREAD_WEIGHTS},
              "spread_where_off": spread_where_off(members, truth),
              "single_members_sigma_orig": [
                  scores_table({"noisy": cats["noisy"], "m": m}, original, truth_cols)["summary"]
                  for m in members[1:]]}
    print(result["scores"]["table6_vs_original"])
    print(result["scores"]["table6_vs_truth"])
    for m, j in result["coverage"].items():
        o = j["oracle_bins"]
        print(f"{m}: in band as written {j['as_written']['in_band']}/{j['as_written']['measures']} "
              f"(test half {j['as_written_test_half']['in_band']}), refit on truth "
              f"{j['refit_1_test_half']['in_band']}; factor-feasible bins {o['feasible']}/{o['bins']}, "
              f"tail ratio {o['tail_ratio_median']:.2f} ({o['tail_ratio_min']:.2f}-{o['tail_ratio_max']:.2f})")
    for g, j in result["spread_weight"].items():
        print(f"spread weight {g}: as written {j['as_written']['in_band']}, refit {j['refit_1_test_half']['in_band']}, "
              f"feasible {j['oracle_bins']['feasible']}")
    for key, v in result["spread_where_off"].items():
        print(f"{key}: spread / error, off by > 2 errors {v['median_spread_over_err_off']} (n {v['n_off']}) "
              f"vs within {v['median_spread_over_err_on']:.3f}; rank corr {v['rank_corr_spread_abs_error']:.2f}")
    result["meta"] = {
        "command": (f"OMP_NUM_THREADS=1 python benchmarks/ensemble.py --n {args.n} --members {args.members} "
                    f"--kind {args.kind} --latent {args.latent} --epochs {args.epochs} --seed {args.seed}"),
        "mock": {"design": "uniform-halpha", "survey": "sdss", "seed": args.seed, "n": args.n,
                 "n_train": n_train, "n_test": int(test.size)},
        "noise": "uniform sigma = 0.04 (normalised units)", "fitter": "fast",
        "seconds": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
