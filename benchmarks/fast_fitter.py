"""The fast fitter against an earlier revision of itself, on the same spectra in the same run.

Spectra: the SDSS-like mock pre-processed onto the grid, then given DESI
noise at z = 0.1 (the benchmark's ``degrade`` step), so faint lines come
out negative and the active-set loop works as it does in a survey run.
Each revision fits them twice: with independent pixel errors (a noisy or
original store) and with the pixel-error correlation by lag that a
de-noised store records (the values below were measured by a VAE on
held-out galaxies).  The earlier revision's ``fitting/fast.py`` is read
from git and imported beside the current one, so both use the same line
list, grid and templates.

Reported per case: ms per spectrum (best of ``--repeat``, one core), the
speed-up, and the largest difference between the two revisions' fluxes in
units of the flux error.  Writes benchmarks/results/fast_fitter.json.

    OMP_NUM_THREADS=1 python benchmarks/fast_fitter.py [--n 5000] [--baseline 3a60c81]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from survey_denoise.fitting import fast  # noqa: E402
from survey_denoise.mock import MockConfig, generate, select  # noqa: E402
from survey_denoise.noise import DesiNoise, degrade  # noqa: E402
from survey_denoise.preprocess import preprocess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORRELATION = (0.455, 0.232, 0.268, 0.206)
"""Pixel-error correlation at lags 1-4 of a VAE's de-noised spectra (held-out galaxies)."""


def baseline_module(revision: str):
    """``survey_denoise.fitting.fast`` as it was at ``revision``, imported under another name."""
    source = subprocess.run(["git", "show", f"{revision}:survey_denoise/fitting/fast.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "fast_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("survey_denoise.fitting._fast_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def spectra(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raw = generate(select("natural", n, seed), MockConfig(seed=seed, survey="sdss"), chunk_size=1000)
    noisy = degrade(preprocess(raw), DesiNoise(), seed=seed, z_target=0.1).compute()
    return noisy["flux"].values, noisy["ivar"].values, ~noisy["mask"].values


def timed(module, flux, ivar, good, correlation, repeat: int) -> tuple[float, dict]:
    module.fit_batch(flux[:200], ivar[:200], good[:200], correlation=correlation)  # caches
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = module.fit_batch(flux, ivar, good, correlation=correlation)
        best = min(best, time.perf_counter() - start)
    return best / flux.shape[0] * 1e3, out


def largest_pull(new: dict, old: dict) -> float:
    worst = 0.0
    for key, value in new["flux"].items():
        ref, err = old["flux"][key], old["flux_err"][key]
        if not np.array_equal(np.isfinite(value), np.isfinite(ref)):
            return float("inf")  # a line measured by one revision only
        ok = np.isfinite(ref) & (err > 0)
        if ok.any():
            worst = max(worst, float(np.max(np.abs(value[ok] - ref[ok]) / err[ok])))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--baseline", default="3a60c81", help="git revision to compare with")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fast_fitter.json")
    args = ap.parse_args()

    flux, ivar, good = spectra(args.n, args.seed)
    old = baseline_module(args.baseline)
    rows = []
    for case, correlation in (("independent pixel errors", ()), ("correlated (de-noised)", CORRELATION)):
        ms_new, out_new = timed(fast, flux, ivar, good, correlation, args.repeat)
        ms_old, out_old = timed(old, flux, ivar, good, correlation, args.repeat)
        rows.append({"case": case, "baseline_ms_per_spectrum": round(ms_old, 4),
                     "ms_per_spectrum": round(ms_new, 4), "speedup": round(ms_old / ms_new, 3),
                     "largest_flux_difference_in_sigma": largest_pull(out_new, out_old),
                     "widths_equal_to_1e-6_dex": bool(np.nanmax(np.abs(np.log10(out_new["width"] /
                                                                                out_old["width"]))) < 1e-6)})
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    result = {"command": "python benchmarks/fast_fitter.py " + " ".join(sys.argv[1:]), "git": git,
              "baseline": args.baseline, "n": args.n, "threads": os.environ["OMP_NUM_THREADS"],
              "rows": rows}
    print(f"{'case':<28}{'baseline ms':>12}{'now ms':>9}{'speed-up':>10}{'max |dF|/sigma':>16}")
    for r in rows:
        print(f"{r['case']:<28}{r['baseline_ms_per_spectrum']:>12.3f}{r['ms_per_spectrum']:>9.3f}"
              f"{r['speedup']:>10.2f}{r['largest_flux_difference_in_sigma']:>16.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
