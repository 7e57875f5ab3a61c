"""VAE inference throughput against the machine's float32 matmul limit, measured in the same run.

For the paper's 6-d VAE (Table 5: dropout 0.5, [800, 800, 700, 600]; weights
untrained, which does not change the arithmetic) and batch sizes 64..8192,
times several ways of running the de-noising forward pass (encoder mean ->
decoder):

* ``call``: eager ``model(x)`` of the encoder and decoder;
* ``predict_on_batch``: Keras' compiled predict step;
* ``tf.function`` and ``tf.function(jit_compile=True)`` (XLA) of the whole pass;
* ``library``: :meth:`VAEDenoiser.denoise`, the path ``survey_denoise.inference`` uses.

The limit: the best float32 matmul rate, re-measured beside each batch size
because the machine may be shared, (TensorFlow and numpy, square 2048
matrices) times the FLOPs per spectrum (2 x in x out per Dense layer, the
log-variance head included since the encoder computes it).  Reports spectra/s
and the fraction of that limit; writes ``benchmarks/results/inference.json``.

Usage: ``python benchmarks/inference.py [--device cpu|gpu] [--threads N] [--seconds 0.5]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

BATCHES = (64, 256, 1024, 2048, 4096, 8192)


def timed(fn, min_seconds: float) -> float:
    """Best seconds per call over repeats filling ``min_seconds`` (after one warm-up)."""
    fn()
    best, spent = np.inf, 0.0
    while spent < min_seconds:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return best


def matmul_rate(tf, device: str, min_seconds: float, n: int = 2048) -> dict:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    with tf.device(device):
        ta = tf.constant(a)
        tf_s = timed(lambda: tf.linalg.matmul(ta, ta).numpy(), min_seconds)
    np_s = timed(lambda: a @ a, min_seconds)
    flops = 2.0 * n ** 3
    return {"tensorflow": flops / tf_s, "numpy": flops / np_s, "limit": max(flops / tf_s, flops / np_s)}


def flops_per_spectrum(npix: int, latent: int, units: list[int]) -> float:
    enc = [npix, *units]
    total = sum(a * b for a, b in zip(enc, enc[1:], strict=False)) + 2 * units[-1] * latent
    dec = [latent, *units[::-1], npix]
    total += sum(a * b for a, b in zip(dec, dec[1:], strict=False))
    return 2.0 * total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="TF intra-op threads (CPU)")
    ap.add_argument("--seconds", type=float, default=0.5, help="timing budget per measurement")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inference.json")
    args = ap.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if args.device == "cpu":
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    device = "/GPU:0" if args.device == "gpu" else "/CPU:0"
    if args.device == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise SystemExit("no GPU visible to TensorFlow (tensorflow-cpu installed?)")

    from survey_denoise.grid import GRID
    from survey_denoise.models import VAEDenoiser

    den = VAEDenoiser(6)
    dropout, units = den.architecture()
    with tf.device(device):
        den.model_ = den._build(GRID.npix)
    den.card_ = {"kind": "vae"}  # an untrained model is enough to time the arithmetic
    net = den.model_
    fps = flops_per_spectrum(GRID.npix, 6, units)

    def whole(x):
        return net.decoder(net.encoder(x, training=False)[0], training=False)

    graph = tf.function(whole)
    xla = tf.function(whole, jit_compile=True)
    limit = matmul_rate(tf, device, args.seconds)
    print(f"matmul float32: TF {limit['tensorflow'] / 1e9:.1f} GFLOP/s, numpy "
          f"{limit['numpy'] / 1e9:.1f} GFLOP/s; VAE {fps / 1e6:.2f} MFLOP per spectrum; "
          f"limit {limit['limit'] / fps:,.0f} spectra/s ({args.device}, {args.threads} threads)")
    rows = []
    x_all = np.random.default_rng(1).standard_normal((max(BATCHES), GRID.npix)).astype(np.float32) * 0.04
    for batch in BATCHES:
        x = x_all[:batch]
        # The machine is shared: re-measure the limit beside every batch size.
        near = matmul_rate(tf, device, args.seconds)["limit"]
        with tf.device(device):
            tx = tf.constant(x)
            ways = {
                "call": lambda tx=tx: np.asarray(whole(tx)),
                "predict_on_batch": lambda x=x: net.decoder.predict_on_batch(
                    net.encoder.predict_on_batch(x)[0]),
                "tf.function": lambda tx=tx: graph(tx).numpy(),
                "tf.function+xla": lambda tx=tx: xla(tx).numpy(),
                "library": lambda x=x: den.denoise(x),
            }
            for name, fn in ways.items():
                try:
                    sec = timed(fn, args.seconds)
                except Exception as err:  # XLA may be unavailable on a build
                    print(f"{name}: {type(err).__name__}: {err}")
                    continue
                rate = batch / sec
                rows.append({"batch": batch, "method": name, "spectra_per_s": rate,
                             "gflops": rate * fps / 1e9, "limit_gflops": near / 1e9,
                             "fraction_of_limit": rate * fps / near})
    print(f"{'batch':>6s} " + " ".join(f"{m:>18s}" for m in ways))
    for batch in BATCHES:
        cells = {r["method"]: r for r in rows if r["batch"] == batch}
        print(f"{batch:6d} " + " ".join(
            f"{cells[m]['spectra_per_s']:>9,.0f} ({100 * cells[m]['fraction_of_limit']:3.0f}%)"
            if m in cells else f"{'-':>18s}" for m in ways))
    result = {"device": args.device, "threads": args.threads, "machine": platform.processor() or platform.machine(),
              "tensorflow": tf.__version__, "model": {"latent": 6, "units": units, "dropout": dropout,
                                                      "flops_per_spectrum": fps},
              "matmul_flops_per_s": limit, "limit_spectra_per_s": limit["limit"] / fps, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = args.out if args.device == "cpu" else args.out.with_name(f"inference_{args.device}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
