"""Line fluxes when the continuum is not all starlight: the stellar-weights prior, its test, and pPXF.

The fast fitter's prior on its stellar weights (``fast.WEIGHTS_PRIOR``)
and pPXF's continuum (templates times a multiplicative polynomial, no
additive one) both assume that the whole continuum is starlight.  A type-2
AGN's featureless continuum breaks that: Seyfert 2 nuclei are fitted with
a power law ``f_nu ~ nu^-1.5`` beside the stars (Koski 1978; Cid Fernandes
et al. 2004, ApJ 605, 105), which dilutes the stellar absorption.  A fitter
that reads the diluted continuum as stars puts absorption under the Balmer
lines that is not there, and fills it with emission.

The mock has that continuum only in its rare broad-line AGN, so here a
power law ``f_lambda ~ lambda^-0.5`` is added to mock galaxies (``natural``
design, SDSS-like) as a fraction ``f`` of the light at 5100 A (the median
over 5050-5150 A of the noise-free spectrum), and each spectrum is fitted

* by the fast fitter without the prior, with it (as shipped), and with it
  and its per-spectrum test (``fit_batch(prior_test=fast.PRIOR_TEST)``:
  spectra whose data reject the prior are fitted without it);
* by pPXF, on ``--n-ppxf`` noise-free galaxies spread over true Hα.

Noise-free: per line, the median log10(fit / true) over the brighter half
of true fluxes and over the faintest quarter (dex).  With the mock's noise:
per line, the mean pull (fit - true) / formal error over all galaxies and
over the faintest quarter (the fitter's own errors, without the catalogue's
systematic terms), the fraction of spectra the test refits, and the
percentiles of the prior's chi^2 cost (``prior_dchi2``).  Last, the test on
the real spectra that ship with pPXF and fastspecfit, where there is no
truth: each one's ``prior_dchi2`` against the threshold, and its Hα and Hβ
with and without the prior.

    OMP_NUM_THREADS=1 python benchmarks/featureless_continuum.py [--n 2000] [--n-ppxf 80]

Writes ``benchmarks/results/featureless_continuum.json``.  One process,
one core; ~3 min at the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dask  # noqa: E402
import numpy as np  # noqa: E402

import survey_denoise.fitting.fast as fast  # noqa: E402
from survey_denoise.fitting import fit_lines  # noqa: E402
from survey_denoise.fitting.catalogue import to_frame  # noqa: E402
from survey_denoise.flags import Flag  # noqa: E402
from survey_denoise.mock import MockConfig, generate, select  # noqa: E402
from survey_denoise.preprocess import normalise  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KEYS = ("halpha", "hbeta", "hgamma", "hdelta", "nii_6583", "oiii_5007", "sii_6716")
FRACTIONS = (0.0, 0.1, 0.25, 0.5)
SLOPE = -0.5
"""f_lambda ~ lambda^SLOPE: f_nu ~ nu^-1.5, the Seyfert 2 featureless continuum."""
DESIGN, SEED = "natural", 11
VARIANTS = {"no_prior": {"weights_prior": None},
            "prior": {"weights_prior": fast.WEIGHTS_PRIOR},
            "prior_tested": {"weights_prior": fast.WEIGHTS_PRIOR, "prior_test": fast.PRIOR_TEST}}
"""Fast-fitter settings compared: without the stellar-weights prior, with it (shipped), with its test."""


def mock(n: int, noise: bool):
    with dask.config.set(scheduler="synchronous"):
        ids = select(DESIGN, n, SEED)
        raw = generate(ids, MockConfig(seed=SEED, survey="sdss", rest=True, noise=noise),
                       chunk_size=500, design=DESIGN).compute()
        return raw, normalise(raw.chunk({"galaxy": 500})).compute()


def power_law(rest, level_5100: np.ndarray, fraction: float) -> np.ndarray:
    """The featureless continuum that is ``fraction`` of the total at 5100 A, in ``rest``'s units."""
    wave = rest["wavelength"].values
    return (fraction / (1.0 - fraction)) * level_5100[:, None] * (wave[None, :] / 5100.0) ** SLOPE


def log_bias(truth: dict, fluxes: dict) -> dict:
    """Per line: median log10(fit / true) over the brighter half and the faintest quarter (dex)."""
    out = {}
    for k in KEYS:
        t, f = truth[k], fluxes[k]
        ok = (t > 0) & np.isfinite(f)
        d = np.log10(np.maximum(f, 1e-3 * t) / t)    # a flux fitted to 0 counts as -3 dex
        bright, faint = ok & (t > np.median(t[ok])), ok & (t <= np.percentile(t[ok], 25))
        out[k] = {"bright": float(np.median(d[bright])), "faint": float(np.median(d[faint]))}
    return out


def pulls(truth: dict, fit: dict) -> dict:
    """Per line: mean (fit - true) / formal error over all galaxies and over the faintest quarter."""
    out = {}
    for k in KEYS:
        t = truth[k]
        p = (fit["flux"][k] - t) / fit["flux_err"][k]
        ok = np.isfinite(p) & (t > 0)
        faint = ok & (t <= np.percentile(t[ok], 25))
        out[k] = {"all": float(np.mean(p[ok])), "faint": float(np.mean(p[faint]))}
    return out


def truth_in(raw, rest) -> dict:
    """True line fluxes in the normalised units of ``rest``."""
    return {k: raw[f"true_{k}_flux"].values / rest["norm"].values for k in KEYS}


def level_5100(ds) -> np.ndarray:
    """Each spectrum's median flux density over 5050-5150 A, in its own units."""
    wave = ds["wavelength"].values
    return np.median(ds["flux"].values[:, (wave > 5050) & (wave < 5150)], axis=1)


def variant_fits(rest, level: np.ndarray):
    """``(fraction, variant name, fast fit)`` of ``rest`` plus each power law, for every variant."""
    for fraction in FRACTIONS:
        flux = rest["flux"].values + power_law(rest, level, fraction)
        for name, kw in VARIANTS.items():
            yield fraction, name, fast.fit_batch(flux, rest["ivar"].values, ~rest["mask"].values, **kw)


def noise_free(n: int, n_ppxf: int) -> dict:
    raw, rest = mock(n, noise=False)
    level = level_5100(rest)
    truth = truth_in(raw, rest)
    out = {}
    for fraction, name, fit in variant_fits(rest, level):
        out.setdefault(f"f{fraction:g}", {})[name] = log_bias(truth, fit["flux"])
    if not n_ppxf:
        return out
    rows = np.sort(np.argsort(truth["halpha"])[np.linspace(0, n - 1, n_ppxf).astype(int)])
    picked = {k: v[rows] for k, v in truth.items()}
    for fraction in (0.0, 0.25):
        sub = rest.isel(galaxy=rows).copy()
        sub["flux"] = sub["flux"] + power_law(sub, level[rows], fraction).astype(sub["flux"].dtype)
        t0 = time.perf_counter()
        with dask.config.set(scheduler="synchronous"):
            cat = to_frame(fit_lines(sub.chunk({"galaxy": 40}), "ppxf").compute())
        entry = out[f"f{fraction:g}"]
        entry["ppxf"] = log_bias(picked, {k: cat[f"{k}_flux"].to_numpy(float) / sub["norm"].values for k in KEYS})
        entry["ppxf"]["seconds"] = time.perf_counter() - t0
        fit = fast.fit_batch(sub["flux"].values, sub["ivar"].values, ~sub["mask"].values)
        entry["prior_on_ppxf_galaxies"] = log_bias(picked, fit["flux"])
    return out


def noisy(n: int) -> dict:
    raw, rest = mock(n, noise=True)
    _, clean = mock(n, noise=False)
    # The level of the noise-free spectrum, in the noisy one's normalisation.
    level = level_5100(clean) * clean["norm"].values / rest["norm"].values
    truth = truth_in(raw, rest)
    threshold = fast.prior_threshold(fast.PRIOR_TEST)
    out = {}
    for fraction, name, fit in variant_fits(rest, level):
        entry = out.setdefault(f"f{fraction:g}", {})
        entry[name] = pulls(truth, fit)
        if name == "prior_tested":
            entry["refitted"] = float(np.mean((fit["status"] & Flag.FIT_PRIOR_REJECTED) > 0))
            entry["prior_dchi2_p50_p90_p99"] = [float(v) for v in np.nanpercentile(fit["prior_dchi2"], [50, 90, 99])]
            entry["threshold"] = threshold
    return out


def real_spectra() -> list[dict]:
    from survey_denoise.io.desi import read_desi
    from survey_denoise.io.sdss import read_sdss
    from survey_denoise.preprocess import preprocess

    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from _data import DESI_COADDS, NGC3073, NGC3522

    out = []
    for raw in [read_sdss(NGC3073), read_sdss(NGC3522)] + [read_desi(c) for c in DESI_COADDS]:
        with dask.config.set(scheduler="synchronous"):
            ds = preprocess(raw).compute()
        args = (ds["flux"].values, ds["ivar"].values, ~ds["mask"].values)
        tested = fast.fit_batch(*args, prior_test=fast.PRIOR_TEST)
        free = fast.fit_batch(*args, weights_prior=None)
        prior = fast.fit_batch(*args)
        row = {"galaxy": str(ds["galaxy"].values[0]), "prior_dchi2": float(tested["prior_dchi2"][0]),
               "chi2_per_dof": float(prior["chi2"][0]),
               "refitted": bool(tested["status"][0] & Flag.FIT_PRIOR_REJECTED)}
        for k in ("halpha", "hbeta"):
            row[f"{k}_prior_over_free"] = float(prior["flux"][k][0] / free["flux"][k][0])
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="mock galaxies")
    ap.add_argument("--n-ppxf", type=int, default=80, help="of them also fitted by pPXF, noise-free (0: none)")
    ap.add_argument("--out", type=Path, default=RESULTS / "featureless_continuum.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    results = {"noise_free": noise_free(args.n, args.n_ppxf), "noisy": noisy(args.n), "real": real_spectra()}
    print(f"{DESIGN} design, seed {SEED}, {args.n} galaxies; a power law f_lambda ~ lambda^{SLOPE} of "
          "fraction f of the light at 5100 A")
    print("\nnoise-free: median log10(fit / true), brighter half / faintest quarter (dex)")
    for frac, entry in results["noise_free"].items():
        for name, res in entry.items():
            print(f"{frac:5s} {name:24s} " + "  ".join(f"{k[:6]} {res[k]['bright']:+.3f}/{res[k]['faint']:+.3f}"
                                                        for k in KEYS))
    print("\nSDSS-like noise: mean pull, all / faintest quarter (formal errors)")
    for frac, entry in results["noisy"].items():
        for name in VARIANTS:
            print(f"{frac:5s} {name:14s} " + "  ".join(f"{k[:6]} {entry[name][k]['all']:+.2f}/{entry[name][k]['faint']:+.2f}"
                                                      for k in KEYS))
        p = entry["prior_dchi2_p50_p90_p99"]
        print(f"      refitted {entry['refitted']:.3f}; prior_dchi2 p50/p90/p99 {p[0]:.1f}/{p[1]:.1f}/{p[2]:.1f} "
              f"(threshold {entry['threshold']:.1f})")
    print("\nreal spectra: prior_dchi2 (threshold "
          f"{fast.prior_threshold(fast.PRIOR_TEST):.1f}), chi2/dof, Hα and Hβ with / without the prior")
    for row in results["real"]:
        print(f"{row['galaxy'][:17]:17s} {row['prior_dchi2']:7.1f} {row['chi2_per_dof']:5.2f} "
              f"{'refitted' if row['refitted'] else 'kept    '} Hα {row['halpha_prior_over_free']:.3f} "
              f"Hβ {row['hbeta_prior_over_free']:.3f}")
    meta = {"command": f"OMP_NUM_THREADS=1 python benchmarks/featureless_continuum.py --n {args.n} "
                       f"--n-ppxf {args.n_ppxf}",
            "design": DESIGN, "seed": SEED, "slope_f_lambda": SLOPE, "fractions": FRACTIONS,
            "weights_prior": fast.WEIGHTS_PRIOR, "prior_test": fast.PRIOR_TEST,
            "seconds": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **results}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
