"""VAE training and inference on one device, float32 / TF32 / bfloat16, against its matmul rate.

For the library's VAE (:class:`survey_denoise.models.VAEDenoiser`, the
default preset: latent 6, Table 5 widths [800, 800, 700, 600], Gaussian
likelihood head), on rest-frame mock spectra on the project's grid
(:mod:`survey_denoise.mock`, L2-normalised, plus N(0, 0.04) noise per pixel,
the paper's set-up), in one run:

* the device's matmul rate (square matrices) in float32 (TF32 off), TF32
  and bfloat16;
* training: the network ``KerasDenoiser._build`` makes, fed by the same
  ``batches`` reader and ``model.fit`` as ``KerasDenoiser.fit``; epochs/s and
  spectra/s after one warm-up epoch, at several batch sizes;
* inference: ``VAEDenoiser.denoise`` (the library path, NumPy in and out)
  and the same traced graph on a tensor already on the device, at several
  batch sizes;
* each in float32 (``enable_tensor_float_32_execution(False)``), TF32
  (``(True)``; a no-op on CPUs) and ``mixed_bfloat16`` (a new network under
  that Keras policy with the float32 weights);
* agreement: the de-noised spectra of TF32 and bfloat16 against float32
  on the same held-out spectra and weights (tolerances: :data:`TOLERANCE`).

FLOPs per spectrum are counted from the Dense layers of the built network
(2 x in x out each, both encoder heads and both decoder heads, which the
library's inference computes); a training step is counted as 3x the forward
pass (the backward pass costs twice the forward).  Every rate is reported as
a fraction of the float32 matmul rate measured in the same run, and of the
mode's own matmul rate.

The library's network trains under ``mixed_bfloat16`` as it is: its sampling
layer draws noise in the means' dtype and its loss is computed in float32.

``--device cpu`` is a smoke mode (tiny sizes, under a minute).  Writes
``benchmarks/results/gpu.json`` (``gpu_cpu.json`` for ``--device cpu``).
Usage: ``benchmarks/gpu.sh [--venv DIR] [--device gpu|cpu] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from inference import timed  # noqa: E402  (one timing rule for both inference benchmarks)

RESULTS = Path(__file__).parent / "results"
MODES = ("float32", "tf32", "bfloat16")
SIGMA = 0.04
"""Added noise per pixel of a unit-L2 spectrum (the paper's set-up)."""
IVAR = 1.0 / SIGMA**2
"""The noisy spectra's inverse variance, read by a noise-conditioned network."""

TOLERANCE = {"tf32": 0.01, "bfloat16": 0.05}
"""Largest |de-noised(mode) - de-noised(float32)| over all pixels and spectra, in units of the
flux scale 1/sqrt(npix) (the RMS pixel of a unit-L2 spectrum).  TF32 rounds matmul inputs to a
10-bit mantissa (relative 5e-4), bfloat16 stores activations with 8 bits (relative 4e-3); through
ten layers both stay well inside these, which are themselves far below the added noise
(sigma = 0.04 is 1.15 flux scales)."""

SIZES = {
    "gpu": {"n_train": 32_768, "train_batches": (64, 512, 4096), "timed_epochs": 2,
            "infer_batches": (64, 512, 4096, 8192), "matmul_n": 8192, "seconds": 1.0,
            "n_check": 4096},
    "cpu": {"n_train": 256, "train_batches": (64,), "timed_epochs": 1,
            "infer_batches": (64, 256), "matmul_n": 512, "seconds": 0.1, "n_check": 256},
}


# ------------------------------------------------------------------ measuring


def matmul_rate(tf, device: str, dtype: str, n: int, min_seconds: float, repeats: int = 4) -> float:
    """Square-matmul rate, FLOP/s; a scalar comes back, so no result crosses to the host."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    with tf.device(device):
        ta = tf.cast(tf.constant(a), dtype)

        @tf.function
        def mm(x):
            return tf.reduce_sum(tf.cast(tf.linalg.matmul(x, x), tf.float32))

        def run():
            out = [mm(ta) for _ in range(repeats)]
            return float(out[-1].numpy())

        sec = timed(run, min_seconds)
    return repeats * 2.0 * n ** 3 / sec


def dense_flops(net) -> float:
    """Forward FLOPs per spectrum: 2 x in x out for every Dense layer of encoder and decoder."""
    total = 0
    for part in (net.encoder, net.decoder):
        for layer in part.layers:
            if hasattr(layer, "kernel") and len(layer.kernel.shape) == 2:
                total += int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    return 2.0 * total


def set_mode(tf, keras, mode: str) -> None:
    tf.config.experimental.enable_tensor_float_32_execution(mode == "tf32")
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mode == "bfloat16" else "float32")


def build(den, npix: int, transform: dict, keras):
    """``den._build`` under the current policy."""
    return den._build(npix, transform)


def train_rate(net, pairs, rows, batch: int, timed_epochs: int, keras) -> dict:
    """Epochs/s and spectra/s of ``model.fit`` over the library's batch reader (1 warm-up epoch)."""
    from survey_denoise.models.data import batches

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t0)
            losses.append(float((logs or {}).get("loss", math.nan)))

    seconds, losses = [], []
    data = batches(pairs, rows, batch, shuffle=True, seed=1)
    net.fit(data, epochs=1 + timed_epochs, callbacks=[EpochClock()], verbose=0)
    sec = float(np.median(seconds[1:]))
    return {"batch": batch, "epochs_per_s": 1.0 / sec, "spectra_per_s": rows.size / sec,
            "warmup_epoch_s": seconds[0], "final_loss": losses[-1]}


def infer_rates(den, x_all: np.ndarray, batches, device: str, seconds: float, tf) -> list[dict]:
    """Spectra/s of the library path (NumPy in/out) and of the traced graph on a device tensor."""
    ivar_all = np.full(x_all.shape, IVAR, np.float32)
    graph = den._traced(den._input(x_all[:1], ivar_all[:1]).shape[1])
    rows = []
    for batch in batches:
        x, ivar = x_all[:batch], ivar_all[:batch]
        with tf.device(device):
            tx = tf.constant(den._input(x, ivar))  # the network's own input rows
        ways = {"library": lambda x=x, ivar=ivar: den.denoise(x, ivar=ivar),
                "graph_on_device": lambda tx=tx: float(tf.reduce_sum(
                    tf.cast(graph(tx)[0], tf.float32)).numpy())}
        for way, fn in ways.items():
            with tf.device(device):
                sec = timed(fn, seconds)
            rows.append({"batch": batch, "way": way, "spectra_per_s": batch / sec})
    return rows


# ------------------------------------------------------------------ data


def mock_pairs(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) float32 (n, npix): rest-frame mock, L2-normalised, + N(0, SIGMA)."""
    import dask

    from survey_denoise.mock import MockConfig, generate
    from survey_denoise.preprocess import normalise

    unique = min(n, 4096)  # the arithmetic does not depend on the content: tile beyond this
    ds = normalise(generate(np.arange(unique), MockConfig(seed=seed, rest=True, noise=False),
                            chunk_size=1024), "l2")
    with dask.config.set(scheduler="synchronous"):
        clean = np.nan_to_num(ds["flux"].values.astype(np.float32))
    clean = np.resize(clean, (n, clean.shape[1]))
    noisy = clean + np.random.default_rng(seed).normal(0, SIGMA, clean.shape).astype(np.float32)
    return noisy, clean


# ------------------------------------------------------------------ run


def run(device: str, sizes: dict, log=print) -> dict:
    """Every measurement of the module notes; the JSON-ready result."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from survey_denoise.grid import GRID
    from survey_denoise.models import VAEDenoiser
    from survey_denoise.models.data import SpectraPairs
    from survey_denoise.models.training import standardisation

    t_start = time.perf_counter()
    tf_device = "/GPU:0" if device == "gpu" else "/CPU:0"
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise SystemExit("no GPU visible to TensorFlow (tensorflow-cpu installed, or no CUDA?); "
                         "run benchmarks/gpu.sh --venv DIR to install the [gpu] extra")
    name = (tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
            if device == "gpu" else platform.processor() or platform.machine())
    noisy, clean = mock_pairs(sizes["n_train"] + sizes["n_check"])
    n = sizes["n_train"]
    pairs = SpectraPairs(noisy[:n], clean[:n], input_ivar=IVAR)
    # As the library's fit reads them: (flux, ivar) rows for a noise-conditioned preset.
    pairs.with_ivar = VAEDenoiser(6).settings()["conditioning"] == "ivar"
    rows = np.arange(n)
    check_x, check_y = noisy[n:], clean[n:]
    transform = standardisation(pairs, rows)
    log(f"{n} training spectra; {name}; TF {tf.__version__}, Keras {keras.__version__} "
        f"({time.perf_counter() - t_start:.1f} s)")

    matmul = {}
    for mode in MODES:
        set_mode(tf, keras, mode)
        matmul[mode] = matmul_rate(tf, tf_device, "bfloat16" if mode == "bfloat16" else "float32",
                                   sizes["matmul_n"], sizes["seconds"])
    set_mode(tf, keras, "float32")
    log("matmul TFLOP/s: " + ", ".join(f"{m} {v / 1e12:.3g}" for m, v in matmul.items()))

    modes, nets, outputs = {}, {}, {}
    for mode in MODES:
        set_mode(tf, keras, mode)
        keras.utils.set_random_seed(0)
        den = VAEDenoiser(6)
        entry: dict = {"policy": keras.mixed_precision.global_policy().name,
                       "tf32": tf.config.experimental.tensor_float_32_execution_enabled()}
        train = []
        for batch in sizes["train_batches"]:
            with tf.device(tf_device):
                net = build(den, GRID.npix, transform, keras)
                row = train_rate(net, pairs, rows, batch, sizes["timed_epochs"], keras)
            train.append(row)
            log(f"{mode} train batch {batch}: {row['spectra_per_s']:,.0f} spectra/s "
                f"({time.perf_counter() - t_start:.1f} s)")
        entry["train"] = train
        if mode == "float32":
            nets["float32"] = net  # the trained weights every mode's inference uses
        with tf.device(tf_device):
            den.model_ = net if mode == "float32" else build(den, GRID.npix, transform, keras)
            den.model_.set_weights(nets["float32"].get_weights())
        den.card_ = {"kind": "vae"}
        fps = dense_flops(den.model_)
        entry["inference"] = infer_rates(den, check_x, sizes["infer_batches"], tf_device,
                                         sizes["seconds"], tf)
        outputs[mode] = den.denoise(check_x, ivar=np.full(check_x.shape, IVAR, np.float32)
                                    ).astype(np.float64)
        for row in entry["train"]:
            row["flops_per_s"] = row["spectra_per_s"] * 3 * fps
        for row in entry["inference"]:
            row["flops_per_s"] = row["spectra_per_s"] * fps
        for row in entry["train"] + entry["inference"]:
            row["fraction_of_float32_matmul"] = row["flops_per_s"] / matmul["float32"]
            row["fraction_of_mode_matmul"] = row["flops_per_s"] / matmul[mode]
        modes[mode] = entry
    set_mode(tf, keras, "float32")

    scale = 1.0 / math.sqrt(GRID.npix)
    ref = outputs["float32"]
    model_error = float(np.sqrt(np.mean((ref - check_y) ** 2)))
    agreement = {"flux_scale": scale, "n_spectra": int(ref.shape[0]),
                 "float32_rms_error_about_clean": model_error,
                 "rule": "max |denoised(mode) - denoised(float32)| / flux_scale <= tolerance"}
    for mode in ("tf32", "bfloat16"):
        diff = np.abs(outputs[mode] - ref)
        rel = np.linalg.norm(outputs[mode] - ref, axis=1) / np.linalg.norm(ref, axis=1)
        worst = float(diff.max() / scale)
        agreement[mode] = {"tolerance": TOLERANCE[mode], "max_abs_diff_over_scale": worst,
                           "rms_diff_over_scale": float(np.sqrt(np.mean(diff ** 2)) / scale),
                           "max_relative_l2": float(rel.max()),
                           "rms_diff_over_model_error": float(np.sqrt(np.mean(diff ** 2))) / model_error,
                           "passed": bool(worst <= TOLERANCE[mode])}
    agreement["passed"] = all(agreement[m]["passed"] for m in ("tf32", "bfloat16"))
    return {"device": device, "device_name": name, "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version(),
            "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
            "model": {"latent": 6, "units": den.architecture()[1], "dropout": den.architecture()[0],
                      "likelihood": den.settings()["likelihood"],
                      "conditioning": den.settings()["conditioning"],
                      "flops_per_spectrum_inference": fps, "flops_per_spectrum_training": 3 * fps,
                      "xla_training": str(nets["float32"].jit_compile)},
            "data": {"source": "survey_denoise.mock rest frame, L2-normalised, + N(0, 0.04)",
                     "n_train": n, "n_check": int(check_x.shape[0])},
            "matmul_flops_per_s": matmul, "modes": modes, "agreement": agreement,
            "load_average": round(os.getloadavg()[0], 2),
            "seconds_total": time.perf_counter() - t_start}


def table(result: dict) -> str:
    f32 = result["matmul_flops_per_s"]["float32"]
    lines = [f"{result['device_name']}: float32 matmul {f32 / 1e12:.3g} TFLOP/s; VAE "
             f"{result['model']['flops_per_spectrum_inference'] / 1e6:.2f} MFLOP/spectrum forward",
             f"{'mode':<9}{'what':<26}{'batch':>6}{'spectra/s':>12}{'epochs/s':>9}"
             f"{'TFLOP/s':>9}{'/f32 mm':>8}{'/own mm':>8}"]
    for mode, e in result["modes"].items():
        for r in e["train"]:
            lines.append(f"{mode:<9}{'train (fit)':<26}{r['batch']:>6}{r['spectra_per_s']:>12,.0f}"
                         f"{r['epochs_per_s']:>9.2f}{r['flops_per_s'] / 1e12:>9.3g}"
                         f"{r['fraction_of_float32_matmul']:>8.1%}{r['fraction_of_mode_matmul']:>8.1%}")
        for r in e["inference"]:
            lines.append(f"{mode:<9}{'infer ' + r['way']:<26}{r['batch']:>6}{r['spectra_per_s']:>12,.0f}"
                         f"{'':>9}{r['flops_per_s'] / 1e12:>9.3g}"
                         f"{r['fraction_of_float32_matmul']:>8.1%}{r['fraction_of_mode_matmul']:>8.1%}")
    a = result["agreement"]
    for mode in ("tf32", "bfloat16"):
        m = a[mode]
        lines.append(f"agreement {mode}: max |diff| {m['max_abs_diff_over_scale']:.2e} flux scales "
                     f"(tolerance {m['tolerance']}): {'pass' if m['passed'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["gpu", "cpu"], default="gpu",
                    help="cpu: smoke mode, tiny sizes")
    ap.add_argument("--out", type=Path, help="JSON path (default results/gpu.json, "
                    "results/gpu_cpu.json for --device cpu)")
    args = ap.parse_args(argv)
    out = args.out or RESULTS / ("gpu.json" if args.device == "gpu" else "gpu_cpu.json")
    result = {"command": "benchmarks/gpu.sh " + " ".join(sys.argv[1:] if argv is None else argv)}
    result |= run(args.device, SIZES[args.device])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"wrote {out} ({result['seconds_total']:.0f} s)")
    return 0 if result["agreement"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
