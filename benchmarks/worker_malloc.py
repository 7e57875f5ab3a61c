"""What glibc's malloc settings cost a worker: the fast fitter in a Dask worker, two ways.

Dask's nannies give every worker ``MALLOC_TRIM_THRESHOLD_=65536``, so that
freed memory goes back to the system sooner.  Setting that variable at all
turns glibc's adaptive mmap threshold off, and every NumPy temporary larger
than 128 KiB is then mapped, faulted in page by page and unmapped again.
This script fits the same mock spectra (as in benchmarks/fast_fitter.py,
with the de-noised pixel correlation) in a one-worker local cluster made by
:func:`survey_denoise.cluster.local_cluster`, once with the package's
default (``survey-denoise.worker.malloc-trim-threshold: null``, glibc's
own behaviour) and once with Dask's 65536.  Reported: ms per spectrum (best
of ``--repeat``), minor page faults per spectrum, the ratio, and the
worker's resident memory after the fits.  Writes
benchmarks/results/worker_malloc.json.

    python benchmarks/worker_malloc.py [--n 5000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from fast_fitter import CORRELATION, spectra  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def fit_in_worker(flux, ivar, good, correlation, repeat):
    """Runs on the worker: best time per spectrum (ms), page faults per spectrum, RSS (MB)."""
    import os
    import resource
    import time

    import psutil

    from survey_denoise.fitting import fast

    fast.fit_batch(flux[:200], ivar[:200], good[:200], correlation=correlation)
    best, faults = np.inf, np.inf
    for _ in range(repeat):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        fast.fit_batch(flux, ivar, good, correlation=correlation)
        best = min(best, time.perf_counter() - start)
        faults = min(faults, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {"ms_per_spectrum": best / len(flux) * 1e3, "page_faults_per_spectrum": faults / len(flux),
            "rss_mb": psutil.Process(os.getpid()).memory_info().rss / 2**20,
            "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_")}


def measure(threshold, flux, ivar, good, repeat) -> dict:
    from distributed import Client

    from survey_denoise.cluster import local_cluster

    with dask.config.set({"survey-denoise.worker.malloc-trim-threshold": threshold}):
        with local_cluster(1, dashboard_address=None) as cluster, Client(cluster) as client:
            data = client.scatter([flux, ivar, good], broadcast=True)
            return client.submit(fit_in_worker, *data, CORRELATION, repeat, pure=False).result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "worker_malloc.json")
    args = ap.parse_args()

    flux, ivar, good = spectra(args.n, args.seed)
    rows = {"glibc default (package default)": measure(None, flux, ivar, good, args.repeat),
            "MALLOC_TRIM_THRESHOLD_=65536 (Dask's nanny default)": measure(65536, flux, ivar, good,
                                                                             args.repeat)}
    slow, fast_ = (r["ms_per_spectrum"] for r in reversed(rows.values()))
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    result = {"command": "python benchmarks/worker_malloc.py " + " ".join(sys.argv[1:]), "git": git,
              "n": args.n, "rows": rows, "slowdown_with_dask_default": round(slow / fast_, 3)}
    print(f"{'worker setting':<52}{'ms/spectrum':>12}{'faults/spectrum':>17}{'RSS MB':>9}")
    for name, r in rows.items():
        print(f"{name:<52}{r['ms_per_spectrum']:>12.3f}{r['page_faults_per_spectrum']:>17.1f}"
              f"{r['rss_mb']:>9.0f}")
    print(f"Dask's default is {result['slowdown_with_dask_default']:.2f}x slower")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
