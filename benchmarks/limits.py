"""Each pipeline step's cost per spectrum against its own limit, measured in one run.

The steps run through the pipeline unfused (:func:`end_to_end.run_one`: the
Runner on a LocalCluster, every store written), so each step's worker CPU
per spectrum is its own.  Then, in this process on one thread, on spectra
read back from the run's own stores:

* **denoise** against the compute limit: the network's forward FLOPs per
  spectrum (every Dense layer, :func:`gpu.dense_flops`) at the float32
  matmul rate measured here (:func:`inference.matmul_rate`), and the
  library's de-noising call (mean and variance, as the stage asks) on
  in-memory spectra;
* **fit** (fast fitter) against its kernel alone: :func:`fast.fit_batch`
  on the same in-memory spectra, with the same pixel-error correlation;
* **writes** against the disk: each step's bytes on disk per spectrum at the
  disk's sequential write rate (a file written in 8 MiB blocks and
  fsynced), and the store writer itself (:func:`write_store` of an
  in-memory dataset: compression, sharding and markers included).

The denoise limit counts the forward pass of encoder and decoder only; the
variance the stage also computes is part of the measured costs, so a ratio
of 1 is out of reach by that much.  The ratio "pipeline / limit" is what the step costs over what the hardware
(or the kernel) needs; both sides are measured in the same run.  Writes
``benchmarks/results/limits.json`` and prints a table.

    OMP_NUM_THREADS=1 python benchmarks/limits.py [--n 8000] [--chunk 500] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import end_to_end  # noqa: E402
from gpu import dense_flops  # noqa: E402
from inference import matmul_rate  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def cpu_per_call(fn, repeats: int = 1) -> float:
    """Best CPU seconds (this process) of ``fn()`` over ``repeats`` calls, after a warm-up."""
    fn()
    best = np.inf
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def disk_rate(folder: Path, mib: int = 512) -> float:
    """Sequential write rate of ``folder``'s disk, bytes/s (8 MiB blocks, fsync included)."""
    block = np.random.default_rng(0).bytes(8 * 2**20)
    path = folder / "disk-rate.bin"
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        for _ in range(mib // 8):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    seconds = time.perf_counter() - t0
    path.unlink()
    return mib * 2**20 / seconds


def kernels(folder: Path, model_dir: str, k: int, work: Path) -> dict:
    """Per-spectrum costs of the kernels alone, on ``k`` spectra of the run's stores."""
    import dask
    import tensorflow as tf

    from survey_denoise.fitting import DENOISED_CORRELATION, noise_of
    from survey_denoise.fitting.fast import fit_batch
    from survey_denoise.io.store import open_store, write_store
    from survey_denoise.models import load_model

    noisy = open_store(folder / "degraded.zarr").isel(galaxy=slice(0, k)).compute()
    clean = open_store(folder / "denoised.zarr").isel(galaxy=slice(0, k)).compute()
    den = load_model(model_dir)
    flops = dense_flops(den.model_)
    rate = matmul_rate(tf, "/CPU:0", 1.0)
    with dask.config.set(scheduler="synchronous"):
        denoise_s = cpu_per_call(lambda: den.denoise(noisy, return_var=True))
        noise, good, _ = noise_of(clean, denoised=True)
        ivar = np.where(good, 1.0 / noise**2, 0.0)
        corr = clean.attrs.get("denoise_pixel_correlation", DENOISED_CORRELATION)
        corr = tuple(json.loads(corr) if isinstance(corr, str) else corr)
        fit_s = cpu_per_call(lambda: fit_batch(clean["flux"].values, ivar, good, correlation=corr))
        target = work / "write-probe.zarr"

        def write():
            shutil.rmtree(target, ignore_errors=True)
            write_store(noisy.chunk({"galaxy": k}), target, progress=False)

        t0 = time.perf_counter()
        write()
        write_s = time.perf_counter() - t0
        written = end_to_end._du(target)
        shutil.rmtree(target, ignore_errors=True)
    return {"spectra": k, "flops_per_spectrum": flops, "matmul_flops_per_s": rate,
            "denoise_limit_ms": 1e3 * flops / rate["limit"],
            "denoise_kernel_ms": 1e3 * denoise_s / k, "fit_kernel_ms": 1e3 * fit_s / k,
            "writer_ms": 1e3 * write_s / k, "writer_bytes_per_spectrum": written / k}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8000, help="galaxies through the pipeline")
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kernel-spectra", type=int, default=1000, help="spectra the kernels are timed on")
    ap.add_argument("--model", help="a saved VAE folder (default: train a small one first)")
    ap.add_argument("--work", default="/tmp/survey-denoise-limits")
    ap.add_argument("--out", default=str(RESULTS / "limits.json"))
    args = ap.parse_args()
    import tensorflow as tf

    # One thread, like a worker's, before anything in this process starts TensorFlow.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    opts = argparse.Namespace(noise="desi", epochs=3, batch=1024, survey="sdss", mock="rest",
                              chunk=args.chunk, fuse=False)
    model = args.model
    if model is None:
        end_to_end.run_one(end_to_end.config_for(2000, work / "train", opts, None, train=True), args.workers)
        model = str(work / "train" / "model")
    run = end_to_end.run_one(end_to_end.config_for(args.n, work / "run", opts, model), args.workers)
    k = kernels(work / "run", model, min(args.kernel_spectra, args.n), work)
    disk = disk_rate(work)
    st = run["stages"]
    rows = [
        {"step": "denoise", "pipeline_ms": st["denoise"]["worker_cpu_ms_per_spectrum"],
         "limit": "float32 matmul rate x forward FLOPs", "limit_ms": k["denoise_limit_ms"],
         "kernel_ms": k["denoise_kernel_ms"]},
        {"step": "fit (fast)", "pipeline_ms": st["fit-denoised"]["worker_cpu_ms_per_spectrum"],
         "limit": "fast.fit_batch alone", "limit_ms": k["fit_kernel_ms"], "kernel_ms": k["fit_kernel_ms"]},
    ]
    for name in ("preprocess", "degrade", "denoise", "fit-denoised"):
        per = st[name]["bytes_written"] / args.n
        rows.append({"step": f"write {name}", "pipeline_ms": None, "bytes_per_spectrum": per,
                     "limit": "disk sequential write", "limit_ms": 1e3 * per / disk,
                     "kernel_ms": None})
    rows.append({"step": "store writer (in memory -> Zarr)", "pipeline_ms": k["writer_ms"],
                 "bytes_per_spectrum": k["writer_bytes_per_spectrum"], "limit": "disk sequential write",
                 "limit_ms": 1e3 * k["writer_bytes_per_spectrum"] / disk, "kernel_ms": None})
    for r in rows:
        r["ratio"] = (round(r["pipeline_ms"] / r["limit_ms"], 2)
                      if r["pipeline_ms"] is not None and r["limit_ms"] else None)
    result = {"command": "python benchmarks/limits.py " + " ".join(sys.argv[1:]),
              "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip(),
              "n": args.n, "chunk": args.chunk, "workers": args.workers, "model": model,
              "disk_write_bytes_per_s": disk, "kernels": k, "rows": rows,
              "pipeline": {name: {key: s[key] for key in ("worker_cpu_ms_per_spectrum", "seconds",
                                                         "bytes_written")} for name, s in st.items()},
              "load_average": [run["load_average_start"], run["load_average_end"]]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'step':<34}{'pipeline ms/sp':>15}{'limit ms/sp':>13}{'ratio':>7}  limit")
    for r in rows:
        pipe = f"{r['pipeline_ms']:.3f}" if r["pipeline_ms"] is not None else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(f"{r['step']:<34}{pipe:>15}{r['limit_ms']:>13.4f}{ratio:>7}  {r['limit']}")
    print(f"disk: {disk / 1e6:.0f} MB/s sequential; denoise kernel alone {k['denoise_kernel_ms']:.3f} ms/sp")


if __name__ == "__main__":
    main()
