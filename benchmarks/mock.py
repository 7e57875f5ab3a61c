"""Mock-survey throughput: spectra per second per core, and a survey streamed to Zarr.

1. Single-process kernel throughput (BLAS pinned to one thread) for the
   rest-frame fast path and the SDSS observed-frame path, and, as the
   baseline measured in the same run, the cost of drawing the population
   and its line fluxes alone.
2. ``--n`` galaxies (natural design) generated on a LocalCluster of
   ``--workers`` single-threaded workers and written to a Zarr store with
   :func:`survey_denoise.io.store.write_store`; reports wall time, spectra/s,
   store size and the peak resident memory of every worker.

Writes ``benchmarks/results/mock.json``.
Usage: ``python benchmarks/mock.py --n 100000 [--frame rest|observed] [--workers 2]``
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def _rate(fn, n: int, repeat: int = 3) -> float:
    fn(np.arange(50))  # warm-up: loads and caches the SSP grids
    best = np.inf
    for r in range(repeat):
        ids = np.arange(r * n, (r + 1) * n) + 10**6
        t = time.perf_counter()
        fn(ids)
        best = min(best, time.perf_counter() - t)
    return n / best


def kernel_rates(n: int) -> dict[str, float]:
    from survey_denoise.mock import MockConfig, nebular, population, synthesize

    return {
        "population_and_lines": _rate(lambda i: nebular.line_fluxes(population.draw(0, i)), n),
        "rest": _rate(lambda i: synthesize(i, MockConfig(seed=0, rest=True)), n),
        "observed_sdss": _rate(lambda i: synthesize(i, MockConfig(seed=0)), n),
    }


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def stream(n: int, frame: str, workers: int, chunk: int, out: Path) -> dict:
    from distributed import Client

    from survey_denoise.cluster import local_cluster
    from survey_denoise.io.store import write_store
    from survey_denoise.mock import MockConfig, generate

    ds = generate(np.arange(n), MockConfig(seed=1, rest=frame == "rest"), chunk_size=chunk)
    with local_cluster(workers, memory_limit="4GiB") as cluster, Client(cluster) as client:
        t = time.perf_counter()
        write_store(ds, out, client=client, progress=True, label=f"mock {n}")
        wall = time.perf_counter() - t
        peaks = client.run(_peak_rss_mb)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"n": n, "frame": frame, "workers": workers, "chunk": chunk, "seconds": wall,
            "spectra_per_s": n / wall, "spectra_per_s_per_worker": n / wall / workers,
            "store_gb": size / 1e9, "peak_rss_mb_per_worker": sorted(peaks.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="galaxies streamed to Zarr")
    ap.add_argument("--frame", choices=["rest", "observed"], default="rest")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=2000)
    ap.add_argument("--kernel-n", type=int, default=2000, help="galaxies per kernel timing")
    ap.add_argument("--store", type=Path, default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mock.json")
    args = ap.parse_args()

    rates = kernel_rates(args.kernel_n)
    print("kernel throughput, one process, one BLAS thread (spectra/s/core)")
    base = rates["population_and_lines"]
    for k, v in rates.items():
        print(f"  {k:22s} {v:10.0f}   ({v / base:.2f} x population-only)")
    print(f"  rest-frame target 5000/s/core: {'met' if rates['rest'] >= 5000 else 'NOT met'}")

    tmp = Path(tempfile.mkdtemp(prefix="mock-bench-")) if args.store is None else None
    store = args.store or tmp / "mock.zarr"
    try:
        res = stream(args.n, args.frame, args.workers, args.chunk, store)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{res['n']} galaxies ({res['frame']}) -> Zarr with {res['workers']} workers: "
          f"{res['seconds']:.1f} s, {res['spectra_per_s']:.0f} spectra/s "
          f"({res['spectra_per_s_per_worker']:.0f} per worker), store {res['store_gb']:.2f} GB, "
          f"peak RSS per worker {res['peak_rss_mb_per_worker']} MB")
    extrapolated = 1_000_000 / res["spectra_per_s"]
    print(f"extrapolated 1,000,000 galaxies: {extrapolated / 60:.1f} min, "
          f"{res['store_gb'] * 1e6 / res['n']:.1f} GB, same per-worker memory (one chunk per task)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"kernel_spectra_per_s_per_core": rates, "stream": res,
                                    "extrapolated_1e6_seconds": extrapolated}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
