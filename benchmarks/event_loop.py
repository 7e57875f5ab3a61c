"""CPU an idle cluster takes, with Dask's event-loop tick and with this package's.

Every Dask server (scheduler, nanny, worker) wakes every
``distributed.admin.tick.interval`` to measure how responsive its event loop
is.  The scheduler runs in the pipeline's own process (``LocalCluster`` and
dask-jobqueue alike), so what its loop costs is the driver's.  This script
starts the package's local cluster twice, with Dask's 20 ms tick and with
``survey-denoise.tick-interval`` (1 s), leaves each idle for ``--seconds``
and reports the CPU seconds per minute of this process (scheduler and
client) and of the workers.

    python benchmarks/event_loop.py [--seconds 45] [--workers 2]

Writes ``benchmarks/results/event_loop.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import dask

sys.path.insert(0, str(Path(__file__).parent))
from end_to_end import _cpu_s  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def idle(tick: str | None, seconds: float, workers: int) -> dict:
    """CPU seconds per minute of this process and of each worker, on a cluster left idle."""
    from survey_denoise.cluster import connect

    with dask.config.set({"survey-denoise.tick-interval": tick}):
        with connect("local", n_workers=workers, echo=None) as client:
            client.run(_cpu_s)  # every worker up
            time.sleep(3)  # start-up work done
            driver0, workers0 = _cpu_s(), client.run(_cpu_s)
            time.sleep(seconds)
            driver, after = _cpu_s() - driver0, client.run(_cpu_s)
    per_worker = [after[w] - workers0[w] for w in after]
    scale = 60.0 / seconds
    return {"tick_interval": tick or dask.config.get("distributed.admin.tick.interval"),
            "driver_cpu_s_per_min": round(driver * scale, 3),
            "worker_cpu_s_per_min": round(sum(per_worker) / len(per_worker) * scale, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "event_loop.json"))
    args = ap.parse_args()
    rows = [idle(None, args.seconds, args.workers),
            idle(dask.config.get("survey-denoise.tick-interval"), args.seconds, args.workers)]
    dask_, ours = rows
    result = {"command": "python benchmarks/event_loop.py " + " ".join(
                  f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
              "idle_cluster": rows,
              "driver_ratio": round(dask_["driver_cpu_s_per_min"] / ours["driver_cpu_s_per_min"], 2),
              "worker_ratio": round(dask_["worker_cpu_s_per_min"] / ours["worker_cpu_s_per_min"], 2)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'tick':>8} {'driver CPU s/min':>17} {'per worker CPU s/min':>21}")
    for r in rows:
        print(f"{r['tick_interval']:>8} {r['driver_cpu_s_per_min']:>17.2f} {r['worker_cpu_s_per_min']:>21.2f}")
    print(f"Dask's tick / ours: driver {result['driver_ratio']}x, workers {result['worker_ratio']}x")


if __name__ == "__main__":
    main()
