"""Pre-processing throughput: kernel vs naive loops, memory bandwidth, peak memory per worker.

1. One process, one core: spectra per second of the pre-processing kernels
   (:func:`~survey_denoise.preprocess.rest_frame_kernel` +
   :func:`~survey_denoise.preprocess.normalise_kernel`) on an in-memory batch
   of SDSS-like raw spectra (3850 pixels of 1e-4 dex, 3 % masked pixels,
   0.02 < z < 0.1), against two baselines measured in the same run:

   * ``naive_interp``: a per-spectrum loop of ``numpy.interp`` of the flux
     onto the shifted grid centres (no flux conservation, no ivar, no mask
     handling): the cheapest thing one could write;
   * ``naive_conserving``: a per-spectrum loop doing the same job as the
     kernel (cumulative integrals of flux, good width and variance,
     ``numpy.interp`` at the shifted grid edges, normalisation).

2. Bytes moved per second (raw flux + ivar + mask read, rest-frame flux +
   ivar + mask written) against a plain numpy copy of the same raw arrays.

3. ``--n`` raw spectra in a Zarr store (synthetic, written first) pre-processed
   on a fresh LocalCluster of ``--workers`` single-threaded workers into a
   second store; wall time, spectra/s and the peak resident memory of every
   worker (``ru_maxrss`` of the worker process, and its RSS before the run).

Writes ``benchmarks/results/preprocess.json``.
Usage: ``python benchmarks/preprocess.py [--n 100000] [--workers 2] [--batch 2000]``
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

NPIX = 3850
WAVE = 10 ** (np.log10(3800.0) + 1e-4 * np.arange(NPIX))


def raw_batch(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """SDSS-like raw spectra: flux, ivar (float32), mask, z."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.02, 0.1, n)
    flux = (rng.uniform(5, 50, (n, 1)) * (WAVE / 5000.0) ** rng.uniform(-2, 1, (n, 1))).astype(np.float32)
    flux += rng.normal(0, 1, (n, NPIX)).astype(np.float32)
    ivar = np.ones((n, NPIX), np.float32)
    mask = rng.random((n, NPIX)) < 0.03
    ivar[mask] = 0
    return flux, ivar, mask, z


def kernel(flux, ivar, mask, z, flags):
    from survey_denoise.grid import GRID
    from survey_denoise.preprocess import normalise_kernel, rest_frame_kernel
    from survey_denoise.resample import edges_from_centres

    f, iv, m, fl, *_ = rest_frame_kernel(flux, ivar, mask, z, flags, edges_in=edges_from_centres(WAVE),
                                        edges_out=np.asarray(GRID.edges))
    return normalise_kernel(f, iv, m, np.ones(len(z)), fl, method="l2")


def naive_interp(flux, ivar, mask, z, flags):
    from survey_denoise.grid import GRID

    out = np.empty((len(z), GRID.npix), np.float32)
    for i in range(len(z)):
        f = np.interp(GRID.wavelength, WAVE / (1 + z[i]), flux[i]) * (1 + z[i])
        out[i] = f / np.sqrt(np.sum(f * f))
    return out


def naive_conserving(flux, ivar, mask, z, flags):
    from survey_denoise.grid import GRID
    from survey_denoise.resample import edges_from_centres

    edges = edges_from_centres(WAVE)
    width = np.diff(edges)
    out = np.empty((len(z), GRID.npix), np.float32)
    out_ivar = np.empty((len(z), GRID.npix), np.float32)
    for i in range(len(z)):
        good = ~mask[i] & (ivar[i] > 0)
        w = np.where(good, width, 0.0)
        var = np.where(good, 1.0 / np.where(good, ivar[i], 1.0), 0.0)
        cum_f = np.concatenate([[0.0], np.cumsum(w * flux[i])])
        cum_w = np.concatenate([[0.0], np.cumsum(w)])
        cum_v = np.concatenate([[0.0], np.cumsum(w * w * var)])
        at = GRID.edges * (1 + z[i])
        df = np.diff(np.interp(at, edges, cum_f))
        dw = np.diff(np.interp(at, edges, cum_w))
        dv = np.diff(np.interp(at, edges, cum_v))
        ok = dw > 0.5 * np.diff(at)
        f = np.where(ok, df / np.where(ok, dw, 1.0), 0.0) * (1 + z[i])
        k = np.sqrt(np.sum(f * f))
        out[i] = f / k
        out_ivar[i] = np.where(ok, dw * dw / np.where(ok, dv, 1.0), 0.0) / (1 + z[i]) ** 2 * k * k
    return out, out_ivar


def _best(fn, args, repeat: int) -> float:
    fn(*[a[:20] for a in args])  # warm-up
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best


def kernel_rates(n: int, repeat: int) -> dict:
    from survey_denoise.grid import GRID

    flux, ivar, mask, z = raw_batch(n, 0)
    args = (flux, ivar, mask, z, np.zeros(n, np.uint32))
    times = {name: _best(fn, args, repeat) for name, fn in
             (("kernel", kernel), ("naive_interp", naive_interp), ("naive_conserving", naive_conserving))}
    copy = _best(lambda f, iv, m, *_: (f.copy(), iv.copy(), m.copy()), args, repeat)
    bytes_in = flux.nbytes + ivar.nbytes + mask.nbytes
    bytes_out = n * GRID.npix * (4 + 4 + 1)
    return {
        "n": n, "pixels_in": NPIX, "pixels_out": GRID.npix,
        "spectra_per_s_per_core": {k: n / t for k, t in times.items()},
        "kernel_speedup_vs": {k: times[k] / times["kernel"] for k in ("naive_interp", "naive_conserving")},
        "kernel_bytes_per_s": (bytes_in + bytes_out) / times["kernel"],
        "numpy_copy_bytes_per_s": 2 * bytes_in / copy,
    }


# ------------------------------------------------------------- the cluster run


def _raw_chunk(ids: np.ndarray):
    import xarray as xr

    from survey_denoise.schema import make_spectra

    flux, ivar, mask, z = raw_batch(ids.size, int(ids[0]))
    ds = make_spectra(flux, ivar, WAVE, ids, z, frame="observed", mask=mask)
    return xr.Dataset(ds.data_vars)  # ids arrive as the galaxy coordinate


def synthetic_store(n: int, chunk: int, path: Path, client) -> None:
    import dask.array as da
    import xarray as xr

    from survey_denoise.io.store import write_store

    ids = np.arange(n, dtype=np.int64)
    template = _raw_chunk(ids[:2]).isel(galaxy=[0])
    gal = da.from_array(ids, chunks=chunk)

    def spectral(name):
        def block(b):
            return _raw_chunk(b)[name].values
        return da.map_blocks(block, gal, new_axis=1, chunks=(gal.chunks[0], (NPIX,)),
                             dtype=template[name].dtype)

    def per_gal(name):
        def block(b):
            return _raw_chunk(b)[name].values
        return da.map_blocks(block, gal, dtype=template[name].dtype)

    ds = xr.Dataset({**{k: (("galaxy", "wavelength"), spectral(k)) for k in ("flux", "ivar", "mask")},
                     **{k: ("galaxy", per_gal(k)) for k in ("z", "norm", "flags")}},
                    coords={"galaxy": ids, "wavelength": ("wavelength", WAVE, {"frame": "observed"})},
                    attrs={"norm_convention": "none"})
    write_store(ds, path, client=client, progress=True, label=f"raw {n}")


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cluster_run(n: int, workers: int, chunk: int, folder: Path) -> dict:
    from distributed import Client

    from survey_denoise.cluster import local_cluster
    from survey_denoise.io.store import open_store, write_store
    from survey_denoise.preprocess import preprocess

    raw, rest = folder / "raw.zarr", folder / "rest.zarr"
    with local_cluster(workers, memory_limit="4GiB") as cluster, Client(cluster) as client:
        t = time.perf_counter()
        synthetic_store(n, chunk, raw, client)
        t_raw = time.perf_counter() - t
    # A fresh cluster, so the peak memory belongs to pre-processing alone.
    with local_cluster(workers, memory_limit="4GiB") as cluster, Client(cluster) as client:
        before = client.run(_rss_mb)
        t = time.perf_counter()
        report = write_store(preprocess(open_store(raw)), rest, client=client, progress=True,
                             label=f"preprocess {n}")
        wall = time.perf_counter() - t
        peaks = client.run(_peak_rss_mb)
    size = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e9 for p in (raw, rest)}
    return {"n": n, "workers": workers, "chunk": chunk, "chunks": report.n_chunks,
            "raw_store_seconds": t_raw, "seconds": wall, "spectra_per_s": n / wall,
            "spectra_per_s_per_worker": n / wall / workers,
            "raw_chunk_mb": chunk * NPIX * 9 / 2**20,
            "rss_before_mb_per_worker": sorted(before.values()),
            "peak_rss_mb_per_worker": sorted(peaks.values()), "store_gb": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="spectra in the Zarr store (0: skip)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1000, help="galaxies per chunk of the store")
    ap.add_argument("--batch", type=int, default=2000, help="spectra in the in-memory batch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--store", type=Path, default=None, help="folder for the stores (default: temp)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "preprocess.json")
    args = ap.parse_args()

    rates = kernel_rates(args.batch, args.repeat)
    print(f"in-memory batch of {rates['n']} spectra ({NPIX} -> {rates['pixels_out']} pixels), one core:")
    print(f"  {'method':18s} {'spectra/s/core':>15s} {'kernel is':>12s}")
    for name, rate in rates["spectra_per_s_per_core"].items():
        speed = rates["kernel_speedup_vs"].get(name)
        print(f"  {name:18s} {rate:15.0f} {'' if speed is None else f'{speed:10.2f} x':>12s}")
    gb, copy_gb = rates["kernel_bytes_per_s"] / 1e9, rates["numpy_copy_bytes_per_s"] / 1e9
    print(f"  bytes moved: kernel {gb:.2f} GB/s, numpy copy {copy_gb:.2f} GB/s "
          f"({gb / copy_gb:.1%} of a plain copy)")

    result = {"kernel": rates}
    if args.n > 0:
        tmp = Path(tempfile.mkdtemp(prefix="preprocess-bench-")) if args.store is None else None
        folder = args.store or tmp
        folder.mkdir(parents=True, exist_ok=True)
        try:
            res = cluster_run(args.n, args.workers, args.chunk, folder)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        result["cluster"] = res
        print(f"{res['n']} spectra, Zarr -> Zarr on {res['workers']} workers ({res['chunks']} chunks of "
              f"{res['chunk']}, {res['raw_chunk_mb']:.0f} MB raw each): {res['seconds']:.1f} s, "
              f"{res['spectra_per_s']:.0f} spectra/s ({res['spectra_per_s_per_worker']:.0f} per worker)")
        print(f"  worker RSS before {res['rss_before_mb_per_worker']} MB, peak "
              f"{[round(p) for p in res['peak_rss_mb_per_worker']]} MB; stores {res['store_gb']} GB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
