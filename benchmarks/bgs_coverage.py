"""Issue 15's coverage targets on the BGS-like observed-frame DESI mock (``pipelines/bgs.yaml``).

Runs the pipeline (mock ``bgs`` -> preprocess -> VAE trained on half the
galaxies -> de-noise -> fast fits -> MZR) on ``--n`` galaxies and measures:

(a) **no galaxy with Halpha or Hbeta covered is dropped**: galaxies whose
    Halpha or Hbeta window, continuum included (:func:`survey_denoise.line_windows.window`),
    lies wholly inside both the rest-frame grid and DESI's observed range at
    their redshift, and that preprocess flagged LOW_COVERAGE, or whose
    catalogue has neither line measured;
(b) **scatter at 0.3 < z < 0.45 no more than 0.05 dex above that at z < 0.2**:
    per line, the standard deviation of log10(fitted / true flux)
    (:func:`survey_denoise.science.metrics.score_catalogues`: the same
    galaxies for the original and the de-noised spectra, non-positive fits
    as upper limits, uncovered lines missing), on the held-out galaxies of
    each redshift range, for the original (BGS-noise) and the de-noised
    spectra; a line is judged when both ranges score at least ``--min-n``.
    Beside it, per range, the median true S/N of each line and the scatter
    over the lines with true S/N > 10, to tell S/N from coverage as a cause;
(c) **no uncovered line has a value**: (galaxy, line) pairs of every
    catalogue with a finite flux or error although the line's centre lies
    outside the grid or DESI's range at that redshift, or its status says
    LINE_NOT_COVERED.

Prints the figures and writes ``benchmarks/results/bgs_coverage.json``.
Usage::

    python benchmarks/bgs_coverage.py [--n 1200] [--epochs 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "pipelines" / "bgs.yaml"
SCORED = ("halpha", "hbeta", "oiii_5007", "nii_6583", "sii_6716", "hdelta", "oiii_4363")
Z_LOW, Z_HIGH = (0.0, 0.2), (0.3, 0.45)
MAX_EXCESS_DEX = 0.05


def run_chain(n: int, epochs: int, seed: int, out: Path) -> Path:
    """``survey-denoise run pipelines/bgs.yaml`` with ``n`` galaxies into ``out``; returns ``out``."""
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["input"]["mock"].update(n=n, seed=seed)
    cfg["stages"]["train"]["epochs"] = epochs
    cfg["outputs"]["dir"] = str(out)
    path = out.parent / "bgs.yaml"
    path.write_text(yaml.safe_dump(cfg))
    subprocess.run([sys.executable, "-c", "from survey_denoise.cli import main; main()", "run", str(path),
                    "--no-progress"],
                   check=True)
    return out


def _observed_range() -> tuple[float, float]:
    from survey_denoise.mock.instrument import DESI

    w = DESI.wavelength
    return float(w[0]), float(w[-1])


def surely_covered(key: str, z: np.ndarray) -> np.ndarray:
    """Whether line ``key``'s window and continuum lie wholly inside the grid and DESI's range."""
    from survey_denoise import lines
    from survey_denoise.grid import GRID
    from survey_denoise.line_windows import window

    lo_obs, hi_obs = _observed_range()
    lo, _, _, hi = window(lines.wavelength(key))
    inside_grid = lo >= GRID.wave_min and hi <= GRID.wave_max
    return inside_grid & (lo * (1 + z) >= lo_obs) & (hi * (1 + z) <= hi_obs)


def surely_uncovered(key: str, z: np.ndarray) -> np.ndarray:
    """Whether line ``key``'s centre lies outside the grid or DESI's range at redshift ``z``."""
    from survey_denoise import lines
    from survey_denoise.grid import GRID

    lo_obs, hi_obs = _observed_range()
    c = lines.wavelength(key)
    obs = c * (1 + np.asarray(z))
    return (c < GRID.wave_min) | (c > GRID.wave_max) | (obs < lo_obs) | (obs > hi_obs)


def target_a(z: np.ndarray, flags: np.ndarray, catalogue: pd.DataFrame) -> dict:
    """Galaxies with Halpha or Hbeta surely covered that were dropped or lost both lines."""
    from survey_denoise.flags import Flag

    need = surely_covered("halpha", z) | surely_covered("hbeta", z)
    dropped = (flags & int(Flag.LOW_COVERAGE)) != 0
    measured = np.zeros(z.size, bool)
    for k in ("halpha", "hbeta"):
        measured |= np.isfinite(catalogue[f"{k}_flux_err"].to_numpy(float))
    lost = need & (dropped | ~measured)
    return {"n_galaxies": int(z.size), "n_halpha_or_hbeta_covered": int(need.sum()),
            "n_dropped_low_coverage": int((need & dropped).sum()),
            "n_without_either_line": int((need & ~measured).sum()),
            "n_dropped_any": int(dropped.sum()), "met": bool(not lost.any())}


def target_c(z: np.ndarray, catalogues: dict[str, pd.DataFrame], keys) -> dict:
    """Values of lines outside the coverage, per catalogue."""
    from survey_denoise.fitting.catalogue import not_covered

    out = {}
    for name, cat in catalogues.items():
        n_out = n_flagged = n_val_out = n_val_flagged = 0
        for k in keys:
            has = np.isfinite(cat[f"{k}_flux"].to_numpy(float)) | np.isfinite(cat[f"{k}_flux_err"].to_numpy(float))
            out_k, flag_k = surely_uncovered(k, z), not_covered(cat, k)
            n_out += int(out_k.sum())
            n_flagged += int(flag_k.sum())
            n_val_out += int((has & out_k).sum())
            n_val_flagged += int((has & flag_k).sum())
        out[name] = {"n_outside_coverage": n_out, "n_flagged_not_covered": n_flagged,
                     "n_values_outside_coverage": n_val_out, "n_values_flagged": n_val_flagged}
    met = all(v["n_values_outside_coverage"] == 0 and v["n_values_flagged"] == 0 for v in out.values())
    return {"catalogues": out, "met": met}


def target_b(z: pd.Series, original: pd.DataFrame, denoised: pd.DataFrame, truth: pd.DataFrame,
             galaxies: np.ndarray, min_n: int) -> dict:
    """Scatter about the truth (dex) per line in the two redshift ranges, original and de-noised."""
    from survey_denoise.science.metrics import score_catalogues

    rows = {}
    for label, (lo, hi) in (("low", Z_LOW), ("high", Z_HIGH)):
        ids = [g for g in galaxies if lo < z[g] < hi]
        sub = {name: c[c["galaxy"].astype(str).isin(ids)] for name, c in
               (("original", original), ("vae", denoised))}
        scores = score_catalogues({"vae": sub["vae"]}, sub["original"], truth, keys=SCORED)
        for r in scores.summary.itertuples():
            rows.setdefault(r.line, {}).setdefault(r.method, {})[label] = {
                "n": int(r.n), "n_upper": int(r.n_upper), "sigma_truth": float(r.sigma_truth),
                "offset_truth": float(r.offset_truth)}
    _snr_diagnostic(rows, z, original, denoised, truth, galaxies)
    judged, met = {}, True
    for line, methods in rows.items():
        for method, v in methods.items():
            ok_n = v["low"]["n"] >= min_n and v["high"]["n"] >= min_n
            excess = v["high"]["sigma_truth"] - v["low"]["sigma_truth"]
            v["excess_dex"] = float(excess)
            v["judged"] = bool(ok_n)
            v["met"] = bool(excess <= MAX_EXCESS_DEX) if ok_n else None
            if ok_n:
                judged[f"{line}/{method}"] = v["met"]
                met &= v["met"]
    return {"lines": rows, "met": bool(met) if judged else None, "n_judged": len(judged),
            "z_low": Z_LOW, "z_high": Z_HIGH, "max_excess_dex": MAX_EXCESS_DEX, "min_n": min_n}


def _snr_diagnostic(rows: dict, z: pd.Series, original: pd.DataFrame, denoised: pd.DataFrame,
                    truth: pd.DataFrame, galaxies: np.ndarray) -> None:
    """Add, per line and z range, the median true S/N (true flux / the original fit's error)
    and each method's scatter about the truth over the lines with true S/N > 10: whether a
    difference between the ranges comes with the S/N or with the coverage."""
    from survey_denoise.science.metrics import censor

    t = truth.assign(galaxy=truth["galaxy"].astype(str)).set_index("galaxy")
    cats = {m: c.assign(galaxy=c["galaxy"].astype(str)).set_index("galaxy")
            for m, c in (("original", original), ("vae", denoised))}
    for label, (lo, hi) in (("low", Z_LOW), ("high", Z_HIGH)):
        ids = [g for g in galaxies if lo < z[g] < hi]
        for line, methods in rows.items():
            true = t[f"true_{line}_flux"].reindex(ids).to_numpy(float)
            err = cats["original"][f"{line}_flux_err"].reindex(ids).to_numpy(float)
            snr = true / err
            ok = np.isfinite(snr) & (true > 0)
            for m, cat in cats.items():
                v, _ = censor(cat[f"{line}_flux"].reindex(ids).to_numpy(float),
                              cat[f"{line}_flux_err"].reindex(ids).to_numpy(float))
                bright = ok & (snr > 10) & np.isfinite(v)
                d = np.log10(v[bright]) - np.log10(true[bright])
                methods[m][label].update(median_true_snr=float(np.median(snr[ok])) if ok.any() else None,
                                         n_snr_gt_10=int(bright.sum()),
                                         sigma_truth_snr_gt_10=float(np.std(d)) if bright.sum() >= 2 else None)


def measure(run: Path, min_n: int) -> dict:
    """The three targets and the MZR products' summary from a finished run folder."""
    from survey_denoise import lines
    from survey_denoise.fitting.catalogue import read_catalogue
    from survey_denoise.io.store import open_store

    raw, pre = open_store(run / "raw.zarr"), open_store(run / "preprocessed.zarr")
    gal = np.asarray(raw["galaxy"].values)
    z = np.asarray(raw["z"].values, np.float64)
    flags = pd.Series(np.asarray(pre["flags"].values), index=np.asarray(pre["galaxy"].values)).reindex(gal)
    flags = flags.fillna(0).to_numpy(np.int64)
    cats = {name: read_catalogue(run / f"catalogue-{store}.parquet")
            for name, store in (("original", "preprocessed"), ("vae", "denoised"))}
    aligned = {k: c.assign(galaxy=c["galaxy"].astype(str)).set_index("galaxy").reindex(gal.astype(str))
               .reset_index() for k, c in cats.items()}
    truth = pd.read_parquet(run / "truth.parquet")
    held = pd.read_parquet(run / "heldout.parquet")["galaxy"].astype(str).to_numpy()
    zs = pd.Series(z, index=gal.astype(str))
    science = sorted(p.name for p in (run / "science").glob("*")) if (run / "science").exists() else []
    return {
        "n": int(gal.size), "z_median": float(np.median(z)),
        "z_fractions": {"lt_0.2": float((z < 0.2).mean()), "0.3_0.45": float(((z > 0.3) & (z < 0.45)).mean()),
                        "gt_0.45": float((z > 0.45).mean())},
        "n_heldout": int(held.size),
        "a_no_halpha_hbeta_galaxy_dropped": target_a(z, flags, aligned["original"]),
        "b_scatter_high_vs_low_z": target_b(zs, cats["original"], cats["vae"], truth, held, min_n),
        "c_no_value_for_uncovered_lines": target_c(z, aligned, lines.catalogue_keys()),
        "science_products": science,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1200, help="galaxies (half are held out and scored)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--min-n", type=int, default=10, help="least galaxies per z range to judge a line")
    ap.add_argument("--keep", type=Path, default=None, help="run folder to keep (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=RESULTS / "bgs_coverage.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "bgs"
        folder.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        run_chain(args.n, args.epochs, args.seed, folder)
        seconds = time.perf_counter() - t0
        result = measure(folder, args.min_n)
    result.update(command=" ".join(sys.argv), seconds=round(seconds, 1), epochs=args.epochs, seed=args.seed)
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
