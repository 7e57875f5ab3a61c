"""DESI ingest at survey scale: a healpix tree of multi-target coadds, with target selection.

Makes ``--files`` synthetic healpix coadds of ``--targets`` targets each, in the
real DESI HDU layout (``tests/_desi_files.py``: a shipped fastspecfit coadd's
HDUs, its target repeated with drawn SPECTYPE, ZWARN, Z and BGS bits), under
``WORK/healpix/main/bright/<group>/<pixel>/``, then ingests the tree on a
LocalCluster (one task per file) twice, each time on a fresh cluster:

* selection on: ``--target BGS_BRIGHT,BGS_FAINT --spectype GALAXY --zwarn-max 0
  --z-max 0.5`` (the BGS galaxy sample);
* selection off (the baseline, every target).

and writes each result to a raw Zarr store.  Reports:

* targets per second per core (targets in the files / wall time / workers),
  for the read on the cluster and for read + store write;
* peak memory per worker (``ru_maxrss`` of the largest worker) and the
  driver's RSS growth over the ingest;
* cost per file: ``read_desi`` in this process on one file with everything
  (``read``), with a selection that keeps no target (``open + parse``: the
  FIBERMAP and REDSHIFTS tables, no spectrum), and on a one-target file of the
  same layout (``fixed``, the cost a file has whatever its size).

Writes ``benchmarks/results/ingest_desi.json``.  Usage::

    python benchmarks/ingest_desi.py --files 24 --targets 500 --workers 2 --work /tmp/ingest-desi

Full size (about 1,000 x 500 x 0.45 MB = 223 GB of coadds on disk)::

    python benchmarks/ingest_desi.py --files 1000 --targets 500 --workers 64 --work $SCRATCH/ingest-desi
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

RESULTS = Path(__file__).parent / "results"
SELECTION = {"target": "BGS_BRIGHT,BGS_FAINT", "spectype": "GALAXY", "zwarn_max": 0, "z_max": 0.5}


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def make_tree(root: Path, n_files: int, n_targets: int, seed: int = 0) -> list[Path]:
    """``n_files`` healpix coadds + redrock files of ``n_targets`` drawn targets each."""
    from _desi_files import healpix_coadd, write_pair

    rng = np.random.default_rng(seed)
    coadds = []
    for k in range(n_files):
        pixel = 10000 + 7 * k
        coadd = healpix_coadd(root, pixel)
        coadds.append(coadd)
        if coadd.exists() and coadd.with_name("redrock-" + coadd.name[6:]).exists():
            continue
        n = n_targets
        write_pair(coadd, 39627000000000000 + k * n_targets + np.arange(n),
                   spectype=rng.choice(["GALAXY", "STAR", "QSO"], n, p=[0.85, 0.10, 0.05]),
                   zwarn=np.where(rng.uniform(size=n) < 0.9, 0, 4),
                   z=rng.uniform(0.0, 0.6, n),
                   bgs_target=rng.choice([1, 2, 4, 0], n, p=[0.35, 0.45, 0.05, 0.15]),
                   desi_target=1 << 60)
    return coadds


def per_file_cost(coadd: Path, one_target: Path, repeats: int) -> dict:
    """Seconds per file for ``read_desi`` in this process (best of ``repeats``)."""
    from survey_denoise.io.desi import read_desi
    from survey_denoise.io.desi_select import TargetSelection

    def best(path, selection=None):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            read_desi(path, selection=selection)
            times.append(time.perf_counter() - t0)
        return min(times)

    return {"read_s": best(coadd), "open_parse_s": best(coadd, TargetSelection(z_min=99.0)),
            "fixed_one_target_s": best(one_target),
            "selected_s": best(coadd, TargetSelection(**{k: v for k, v in SELECTION.items()}))}


def run_ingest(coadds: list[Path], workers: int, select: bool, out: Path) -> dict:
    from survey_denoise.cluster import connect
    from survey_denoise.io.desi_select import TargetSelection
    from survey_denoise.io.ingest import ingest, selection_removed
    from survey_denoise.io.store import write_store

    selection = TargetSelection.from_options(**SELECTION) if select else None
    options = [{"selection": selection}] * len(coadds) if select else None
    with connect("local", n_workers=workers, echo=None) as client:
        client.run(lambda: __import__("survey_denoise.io.desi"))  # imports are not the ingest's
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        ds, skipped = ingest(coadds, "desi", client=client, progress=False, options=options)
        t_read = time.perf_counter() - t0
        driver_mb = _rss_mb() - rss0
        t1 = time.perf_counter()
        write_store(ds, out, client=client, progress=False, overwrite=True)
        t_write = time.perf_counter() - t1
        peak = client.run(_peak_rss_mb)
    n_kept = ds.sizes["galaxy"]
    return {"selection": selection.describe() if selection else "none",
            "targets_kept": int(n_kept), "removed": selection_removed(ds),
            "skipped": len(skipped), "read_s": t_read, "write_s": t_write,
            "driver_rss_growth_mb": driver_mb, "worker_peak_mb": max(peak.values()),
            "store_mb": _du_mb(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--targets", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--work", type=Path, default=Path("/tmp/ingest-desi"))
    parser.add_argument("--repeats", type=int, default=3, help="per-file timings: best of")
    parser.add_argument("--keep", action="store_true", help="keep the tree and stores")
    parser.add_argument("--out", type=Path, default=RESULTS / "ingest_desi.json")
    args = parser.parse_args()

    from _desi_files import write_pair

    t0 = time.perf_counter()
    coadds = make_tree(args.work / "healpix", args.files, args.targets)
    make_s = time.perf_counter() - t0
    one, _ = write_pair(args.work / "single" / "coadd-main-bright-1.fits", [1])
    tree_mb = _du_mb(args.work / "healpix")
    n_total = args.files * args.targets
    cost = per_file_cost(coadds[0], one, args.repeats)
    load = os.getloadavg()[0]
    runs = [run_ingest(coadds, args.workers, select, args.work / f"raw-{tag}.zarr")
            for select, tag in ((True, "selected"), (False, "all"))]
    for r in runs:
        r["targets_per_s_per_core_read"] = n_total / r["read_s"] / args.workers
        r["targets_per_s_per_core_total"] = n_total / (r["read_s"] + r["write_s"]) / args.workers
    result = {"command": " ".join(["python", *sys.argv]), "files": args.files,
              "targets_per_file": args.targets, "workers": args.workers,
              "cpu_count": os.cpu_count(), "tree_mb": tree_mb, "make_tree_s": make_s,
              "load_average_start": load, "load_average_end": os.getloadavg()[0],
              "per_file": cost, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    print(f"{args.files} coadds x {args.targets} targets ({tree_mb:,.0f} MB), "
          f"{args.workers} workers, load {load:.1f}")
    print("| selection | kept | read s | write s | targets/s/core (read) | (read+write) "
          "| peak MB/worker | driver MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['selection']} | {r['targets_kept']:,} | {r['read_s']:.1f} | {r['write_s']:.1f} "
              f"| {r['targets_per_s_per_core_read']:.0f} | {r['targets_per_s_per_core_total']:.0f} "
              f"| {r['worker_peak_mb']:.0f} | {r['driver_rss_growth_mb']:.0f} |")
    print(f"per file ({args.targets} targets, one core): read {cost['read_s']:.3f} s, "
          f"with the selection {cost['selected_s']:.3f} s, open + parse (no spectrum) "
          f"{cost['open_parse_s']:.3f} s; a 1-target file {cost['fixed_one_target_s']:.3f} s")
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
