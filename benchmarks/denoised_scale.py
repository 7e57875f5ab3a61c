"""Is a de-noised catalogue's absolute flux right?  The de-noised Hα against the truth, in its store's frame.

An AE/VAE predicts the clean spectrum in its own normalisation and the
de-noised store keeps its input's, so each galaxy's output is scaled by an
amplitude (:func:`survey_denoise.inference.amplitude`).  This script takes a
finished run of a pipeline with ``degrade``, ``train`` and ``denoise``
stages on the mock (the DESI-like MZR test: inputs moved to z = 0.1), the
held-out galaxies whose DESI-like Hα has S/N above ``--snr``, and reports
log10(catalogue Hα / true Hα in the store's frame) (true flux times each
galaxy's ``dimming``), median and 16-84 %:

* ``denoised``: the de-noised catalogue as the run wrote it;
* ``median_ratio``: the same fluxes with the training set's median norm
  ratio in place of each galaxy's amplitude (``card.output_norm.ratio /
  amplitude``), which is what a store without ``amplitude`` holds;
* ``noisy``: the de-noised store's input, fitted (the reference).

It also reports the amplitudes' spread and their median fractional error,
and the card's spread of training norm ratios.

    survey-denoise run pipelines/mzr_desi.yaml --set input.mock.n=3000 \\
        --set stages.train.epochs=10 --workers 2 --out RUN
    python benchmarks/denoised_scale.py RUN [--snr 20] [--out FILE]

Writes ``benchmarks/results/denoised_scale.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from survey_denoise.fitting.catalogue import read_catalogue
from survey_denoise.io.store import open_store

RESULTS = Path(__file__).parent / "results"


def offsets(flux: np.ndarray, truth: np.ndarray) -> dict:
    r = np.log10(flux / truth)
    r = r[np.isfinite(r)]
    return {"n": int(r.size), "median_dex": round(float(np.median(r)), 4),
            "p16_dex": round(float(np.percentile(r, 16)), 4), "p84_dex": round(float(np.percentile(r, 84)), 4)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="folder of a finished run with degrade, train and denoise stages")
    ap.add_argument("--snr", type=float, default=20.0, help="DESI-like Hα S/N above which a galaxy is used")
    ap.add_argument("--out", type=Path, default=RESULTS / "denoised_scale.json")
    args = ap.parse_args(argv)

    held = pd.read_parquet(args.run / "heldout.parquet")["galaxy"].astype(str).to_numpy()
    den = open_store(args.run / "denoised.zarr")
    if "amplitude" not in den:
        raise SystemExit(f"{args.run / 'denoised.zarr'} has no 'amplitude': it was written before "
                         "de-noised spectra were scaled per galaxy; run the pipeline again")
    deg = open_store(args.run / "degraded.zarr")
    card = json.loads((args.run / "model" / "card.json").read_text())
    ratio = float(card["output_norm"]["ratio"])
    cats = {name: read_catalogue(args.run / f"catalogue-{name}.parquet") for name in ("degraded", "denoised")}
    cats = {k: c.set_index(c["galaxy"].astype(str)) for k, c in cats.items()}
    truth = pd.read_parquet(args.run / "truth.parquet")
    truth = truth.set_index(truth["galaxy"].astype(str))
    per = pd.DataFrame({"amplitude": den["amplitude"].values, "amplitude_err": den["amplitude_err"].values},
                       index=den["galaxy"].values.astype(str))
    dimming = pd.Series(deg["dimming"].values, index=deg["galaxy"].values.astype(str))

    snr = cats["degraded"].loc[held, "halpha_snr"].to_numpy(float)
    use = held[np.isfinite(snr) & (snr > args.snr)]
    true = truth.loc[use, "true_halpha_flux"].to_numpy(float) * dimming.loc[use].to_numpy(float)
    denoised = cats["denoised"].loc[use, "halpha_flux"].to_numpy(float)
    amp = per.loc[use, "amplitude"].to_numpy(float)
    result = {
        "run": str(args.run), "snr_cut": args.snr, "n_heldout": int(held.size),
        "card_output_norm": card["output_norm"],
        "halpha_vs_truth_in_store_frame": {
            "denoised": offsets(denoised, true),
            "median_ratio": offsets(denoised * ratio / amp, true),
            "noisy": offsets(cats["degraded"].loc[use, "halpha_flux"].to_numpy(float), true)},
        "amplitude_p5_50_95": np.round(np.nanpercentile(per.loc[held, "amplitude"], [5, 50, 95]), 4).tolist(),
        "amplitude_frac_err_median": round(float(np.nanmedian(per.loc[held, "amplitude_err"]
                                                            / per.loc[held, "amplitude"])), 5),
        "command": f"python benchmarks/denoised_scale.py {args.run} --snr {args.snr:g}",
    }
    for name, r in result["halpha_vs_truth_in_store_frame"].items():
        print(f"{name:>13}: Hα / truth in the store's frame, {r['n']} galaxies: median {r['median_dex']:+.3f} dex "
              f"(16-84 %: {r['p16_dex']:+.3f}, {r['p84_dex']:+.3f})")
    print(f"amplitude 5/50/95 %: {result['amplitude_p5_50_95']}, median fractional error "
          f"{result['amplitude_frac_err_median']:.4f}; training norm ratio {ratio:.3f} "
          f"(spread {card['output_norm'].get('log10_scatter', float('nan')):.3f} dex)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
