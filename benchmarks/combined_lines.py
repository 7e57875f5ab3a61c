"""Combining each de-noised line with the same line in the de-noiser's input: better than either?

A de-noiser's honest line error can be wider than the error of the same
line in the spectrum it read: the network rebuilds the line from a few
latent numbers, and the data hold more.  :func:`survey_denoise.fitting.combine.combine_lines`
takes both measurements and their correlation (the share of the input's
noise the de-noised flux follows, :func:`~survey_denoise.fitting.combine.noise_gain`)
and returns their best linear unbiased combination.  This script measures
what that gives on a finished run of a pipeline with ``degrade``,
``train``, ``denoise`` and ``fit`` stages on the mock (the DESI-like MZR
test, or Table 6):

* the held-out galaxies are split in two halves (``--seed``): the gains are
  measured on the first against the original spectra's catalogue (in the
  input's frame: times each galaxy's ``dimming``), and everything is scored
  on the second;
* per line, for the input (``noisy``), the de-noised (``denoised``) and the
  combined catalogue: the rms of (flux - truth) over the median |truth|,
  the fraction of |flux - truth| within 1 and 2 sigma (Gaussian: 0.68 /
  0.95), the number with S/N > 3 and > 15, and the median error;
* where the run has a ``combine`` stage, its ``catalogue-combined`` too
  (``combined_model``): combined with the gains the model measured on its
  own validation galaxies at training time (the card's
  ``uncertainty.line_noise_gain``), as the pipeline combines new data;
* O3N2 metallicities (Hα S/N > 15): how many galaxies are measurable in each
  catalogue and the original spectra's, and their scatter about the
  reference MZR (Scholte & Saintonge), at the true stellar mass, on each
  one's own galaxies and on those every case that measures any measures,
  and the MZR's slope over log M* 9.1-10.1;
* Hα's coverage per bin of each catalogue's own S/N and per quintile of
  true flux (:func:`halpha_coverage`).

    survey-denoise run pipelines/mzr_desi.yaml --set input.mock.n=3000 \\
        --set stages.train.epochs=10 --workers 2 --out RUN
    python benchmarks/combined_lines.py RUN [--seed 0] [--out FILE]

Writes ``benchmarks/results/combined_lines.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from survey_denoise.fitting.catalogue import read_catalogue
from survey_denoise.fitting.combine import combine_lines, noise_gain
from survey_denoise.io.store import open_store
from survey_denoise.science.metallicity import metallicity
from survey_denoise.science.mzr import scatter, slope
from survey_denoise.science.mzr_test import true_lines_oh

RESULTS = Path(__file__).parent / "results"
LINES = ("halpha", "hbeta", "hdelta", "oiii_5007", "nii_6583", "sii_6716")
"""Table 6's lines."""


def in_frame(cat: pd.DataFrame, factor: np.ndarray) -> pd.DataFrame:
    """``cat`` with every flux and flux error multiplied by ``factor`` (per row)."""
    out = cat.copy()
    for c in out.columns:
        if c.endswith(("_flux", "_flux_err", "_flux_err_stat")):
            out[c] = out[c].to_numpy(np.float64) * factor
    return out


def line_scores(cat: pd.DataFrame, true: pd.DataFrame) -> dict:
    out = {}
    for key in LINES:
        f, e = cat[f"{key}_flux"].to_numpy(np.float64), cat[f"{key}_flux_err"].to_numpy(np.float64)
        t = true[key].to_numpy(np.float64)
        ok = np.isfinite(f) & np.isfinite(e) & (e > 0) & np.isfinite(t)
        f, e, t = f[ok], e[ok], t[ok]
        z = np.abs(f - t) / e
        out[key] = {"n": int(ok.sum()),
                    "rms_over_median_true": round(float(np.sqrt(np.mean((f - t) ** 2)) / np.median(np.abs(t))), 4),
                    "within_1_2_sigma": [round(float(np.mean(z < 1)), 3), round(float(np.mean(z < 2)), 3)],
                    "snr_above_3": int(np.sum(f / e > 3)), "snr_above_15": int(np.sum(f / e > 15)),
                    "median_err": round(float(np.median(e)), 4)}
    return out


SNR_EDGES = (0.0, 5.0, 8.0, 10.0, 12.0, 15.0, np.inf)
"""Bins of a catalogue's own Hα S/N for :func:`halpha_coverage`."""


def halpha_coverage(cat: pd.DataFrame, true: pd.DataFrame) -> dict:
    """Hα's errors' coverage of the truth per bin of the catalogue's own S/N and per quintile of true flux.

    The first conditions on the data (what a user selecting by S/N sees),
    the second on the truth (where a de-noiser's pull towards its training
    population shows: faint lines drawn too bright, bright ones too faint).
    Each bin: galaxies, fractions within 1 and 2 sigma, median signed
    ``(flux - true) / err``.
    """
    f, e = cat["halpha_flux"].to_numpy(np.float64), cat["halpha_flux_err"].to_numpy(np.float64)
    t = true["halpha"].to_numpy(np.float64)
    ok = np.isfinite(f) & np.isfinite(e) & (e > 0) & np.isfinite(t)
    f, e, t = f[ok], e[ok], t[ok]
    z = (f - t) / e

    def one(m):
        return {"n": int(m.sum()), "within_1_2_sigma": [_num(np.mean(np.abs(z[m]) < 1)), _num(np.mean(np.abs(z[m]) < 2))],
                "median_z": _num(np.median(z[m]))} if m.any() else {"n": 0}

    snr = f / e
    by_snr = {f"{lo:g}-{hi:g}": one((snr >= lo) & (snr < hi)) for lo, hi in zip(SNR_EDGES[:-1], SNR_EDGES[1:], strict=True)}
    ranks = np.argsort(np.argsort(t)) * 5 // max(t.size, 1)
    return {"by_snr": by_snr, "by_true_quintile": {f"q{i}": one(ranks == i) for i in range(5)}}


def _num(x: float) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None


def mzr_scores(cats: dict[str, pd.DataFrame], logmass: np.ndarray, lines_oh: np.ndarray) -> dict:
    """Measurable galaxies and scatter about the reference MZR, each case on its own galaxies
    and every case on the galaxies all the cases that measure any do; there also the spread
    about ``lines_oh`` (O3N2 of the noise-free lines: a spectrum's best) and the fraction of
    those differences within ``oh_err_stat``."""
    oh = {n: metallicity(c, calibration="o3n2", min_halpha_snr=15.0) for n, c in cats.items()}
    some = [o["has_oh"].to_numpy(bool) for o in oh.values() if o["has_oh"].any()]
    common = np.logical_and.reduce(some) if some else np.zeros(logmass.size, bool)
    out = {}
    for name, o in oh.items():
        values = o["oh"].to_numpy(np.float64)
        fit = slope(logmass, values)
        out[name] = {"measurable": int(o["has_oh"].sum()), "scatter_dex": _num(scatter(logmass, values)["std"]),
                     "slope": _num(fit["slope"]), "slope_err": _num(fit["slope_err"]),
                     "scatter_dex_common": _num(scatter(logmass[common], values[common])["std"]),
                     "median_oh_err_stat": _num(np.nanmedian(o["oh_err_stat"]) if o["has_oh"].any() else np.nan)}
        if common.any() and o["has_oh"].any():
            d = (values - lines_oh)[common]
            out[name].update(std_vs_true_lines_common=_num(np.std(d, ddof=1)),
                             within_1_sigma_common=_num(np.mean(np.abs(d) < o["oh_err_stat"].to_numpy()[common])))
    out["n_common"] = int(common.sum())
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="folder of a finished run with degrade, train, denoise and fit stages")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split of the held-out galaxies")
    ap.add_argument("--out", type=Path, default=RESULTS / "combined_lines.json")
    args = ap.parse_args(argv)

    held = pd.read_parquet(args.run / "heldout.parquet")["galaxy"].astype(str).to_numpy()
    order = np.random.default_rng(args.seed).permutation(held)
    halves = {"calibrate": np.sort(order[: held.size // 2]), "score": np.sort(order[held.size // 2:])}
    deg = open_store(args.run / "degraded.zarr")
    ids = deg["galaxy"].values.astype(str)
    dimming = pd.Series(deg["dimming"].values if "dimming" in deg else np.ones(ids.size), index=ids)
    cats = {}
    names = ["preprocessed", "degraded", "denoised"]
    if (args.run / "catalogue-combined.parquet").exists():
        names.append("combined")
    for name in names:
        c = read_catalogue(args.run / f"catalogue-{name}.parquet")
        cats[name] = c.set_index(c["galaxy"].astype(str), drop=False)
    truth = pd.read_parquet(args.run / "truth.parquet")
    truth = truth.set_index(truth["galaxy"].astype(str))

    def part(name: str, half: str) -> pd.DataFrame:
        c = cats[name].loc[halves[half]].reset_index(drop=True)
        return in_frame(c, dimming.loc[halves[half]].to_numpy()) if name == "preprocessed" else c

    gain = noise_gain(part("denoised", "calibrate"), part("degraded", "calibrate"), part("preprocessed", "calibrate"))
    score = {"noisy": part("degraded", "score"), "denoised": part("denoised", "score")}
    score["combined"] = combine_lines(score["denoised"], score["noisy"], gain)
    model_gain = None
    if "combined" in cats:
        score["combined_model"] = part("combined", "score")
        card = json.loads((args.run / "model" / "card.json").read_text())
        model_gain = card["uncertainty"].get("line_noise_gain")
    g = halves["score"]
    true = pd.DataFrame({k: truth.loc[g, f"true_{k}_flux"].to_numpy(np.float64) * dimming.loc[g].to_numpy()
                         for k in LINES})
    logmass = truth.loc[g, "true_logmass"].to_numpy(np.float64)
    result = {
        "run": str(args.run), "seed": args.seed, "n_calibrate": int(halves["calibrate"].size),
        "n_score": int(g.size), "noise_gain": {k: round(v, 4) for k, v in gain.items()},
        "noise_gain_model": model_gain,
        "median_weight_of_denoised": {k: round(float(np.nanmedian(score["combined"][f"{k}_weight"])), 3)
                                      for k in LINES},
        "lines": {name: line_scores(c, true) for name, c in score.items()},
        "halpha_coverage": {name: halpha_coverage(c, true) for name, c in score.items()},
        "mzr": mzr_scores({"original": part("preprocessed", "score"), **score}, logmass,
                          true_lines_oh(truth.loc[g].reset_index(drop=True))),
        "command": f"python benchmarks/combined_lines.py {args.run} --seed {args.seed}",
    }
    print(f"{len(g)} held-out galaxies scored, gains from {halves['calibrate'].size} others")
    print(f"{'line':<10} {'gain':>6} {'model':>6} {'w_den':>6}   rms/median|true|: "
          + " / ".join(score) + ";   1-2 sigma coverage;   S/N > 15")
    for k in LINES:
        r = {n: result["lines"][n][k] for n in score}
        mg = (model_gain or {}).get(k)
        print(f"{k:<10} {gain[k]:+6.3f} {'-' if mg is None else format(mg, '+6.3f'):>6} "
              f"{result['median_weight_of_denoised'][k]:6.2f}   "
              + " / ".join(f"{r[n]['rms_over_median_true']:.3f}" for n in score) + "   "
              + " / ".join("{:.2f}-{:.2f}".format(*r[n]["within_1_2_sigma"]) for n in score) + "   "
              + " / ".join(str(r[n]["snr_above_15"]) for n in score))
    for part in ("by_snr", "by_true_quintile"):
        print(f"Hα within 1 / 2 sigma and median (flux - true) / err, {part.replace('_', ' ')}: " + "; ".join(
            f"{n}: " + ", ".join(f"{b} {v['within_1_2_sigma'][0]:.2f}/{v['within_1_2_sigma'][1]:.2f} "
                                 f"{v['median_z']:+.2f}" for b, v in c[part].items() if v["n"])
            for n, c in result["halpha_coverage"].items() if n in ("denoised", "combined")))
    mzr = result["mzr"]
    print("MZR (O3N2, Hα S/N > 15), measurable and scatter about the reference (dex), on each case's own "
          f"galaxies and on the {mzr['n_common']} that every case measuring any measures: " + "; ".join(
              f"{n} {m['measurable']}, {m['scatter_dex']}, {m['scatter_dex_common']}"
              for n, m in mzr.items() if n != "n_common"))
    print("MZR slope over log M* 9.1-10.1 (dex per dex), each on its own galaxies: " + "; ".join(
        f"{n} {m['slope']} ± {m['slope_err']}" for n, m in mzr.items() if n != "n_common"))
    print("on those, O/H minus the noise-free lines' O3N2 O/H, spread (dex) and fraction within oh_err_stat: "
          + "; ".join(f"{n} {m['std_vs_true_lines_common']}, {m['within_1_sigma_common']}"
                      for n, m in mzr.items() if n != "n_common" and "std_vs_true_lines_common" in m))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
