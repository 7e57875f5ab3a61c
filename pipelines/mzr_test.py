"""The DESI-like MZR test of Scourfield et al. (2023, Figure 10), end to end, with its report.

Runs ``pipelines/mzr_desi.yaml`` (10,000 star-forming mock galaxies; the
original spectra, the same made DESI-like at z = 0.1, and those de-noised by a
6-d VAE; fast line fits; PP04 O3N2 metallicities with Hα S/N > 15), then
writes the full MZR-test results to ``RUN/science/mzr_test/``, prints the
paper-vs-ours table and writes ``RUN/report.html``.

    python pipelines/mzr_test.py                       # paper scale
    python pipelines/mzr_test.py --n 1000 --out runs/mzr_small
    python pipelines/mzr_test.py --resume              # finish a killed run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    from survey_denoise.pipeline import load_config, run_pipeline
    from survey_denoise.report import build_report, catalogue_paths, read_run
    from survey_denoise.science.mzr_test import format_comparison, mzr_test

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(HERE / "mzr_desi.yaml"))
    ap.add_argument("--out", default=None, help="run folder (default: the config's outputs.dir)")
    ap.add_argument("--n", type=int, default=None, help="galaxies (default: the config's)")
    ap.add_argument("--cluster", default="local")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)

    config = load_config(args.config, out=args.out)
    if args.n is not None:
        mock = config.input.mock.model_copy(update={"n": args.n})
        config = config.model_copy(update={"input": config.input.model_copy(update={"mock": mock})})
    run_pipeline(config, cluster=args.cluster, workers=args.workers, resume=args.resume)

    run_dir = Path(config.outputs.dir)
    cats = catalogue_paths(run_dir, read_run(run_dir))
    sc = config.stages.science
    result = mzr_test({case: pd.read_parquet(cats[case]) for case in sc.cases if case in cats},
                      pd.read_parquet(run_dir / "truth.parquet"),
                      calibration=sc.calibration, min_halpha_snr=sc.min_halpha_snr)
    result.save(run_dir / "science" / "mzr_test")
    print(format_comparison(result))
    print(f"report: {build_report(run_dir, run_dir / 'report.html')}")


if __name__ == "__main__":
    main()
