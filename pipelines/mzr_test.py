"""The DESI-like MZR test of Scourfield et al. (2023, Figure 10), end to end, with its report.

Runs ``pipelines/mzr_desi.yaml`` (10,000 star-forming mock galaxies; the
original spectra, the same made DESI-like at z = 0.1, and those de-noised by a
6-d VAE; fast line fits; PP04 O3N2 metallicities with Hα S/N > 15), then
the science stage writes the full MZR-test results of the galaxies held out of
the VAE's training to ``RUN/science/mzr_test/``; this prints the
paper-vs-ours table (each case on its own measurable galaxies, then every
case on the galaxies measurable in all of them, how many the DESI-like
spectra alone make measurable, and how many their noise lets reach the Hα
cut at all: a Cramér-Rao bound, :mod:`survey_denoise.science.bound`) and
writes ``RUN/report.html``.

    python pipelines/mzr_test.py                       # paper scale
    python pipelines/mzr_test.py --n 1000 --out runs/mzr_small
    python pipelines/mzr_test.py --resume              # finish a killed run
    python pipelines/mzr_test.py --set stages.train.noise_draws=per-epoch
    # a trained model on a new population that no training saw (every galaxy measured)
    python pipelines/mzr_test.py --n 20000 --set input.mock.seed=2025 \
        --set stages.denoise.model=runs/mzr_desi/model --set stages.train=null
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    from survey_denoise.pipeline import load_config, run_pipeline
    from survey_denoise.report import build_report
    from survey_denoise.science.mzr_test import MZRTest, format_comparison

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default=str(HERE / "mzr_desi.yaml"))
    ap.add_argument("--out", default=None, help="run folder (default: the config's outputs.dir)")
    ap.add_argument("--n", type=int, default=None, help="galaxies (default: the config's)")
    ap.add_argument("--epochs", type=int, default=None, help="VAE epochs (default: the config's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                    help="replace a config value, as 'survey-denoise run --set' does (repeatable)")
    ap.add_argument("--cluster", default="local")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)

    config = load_config(args.config, out=args.out, overrides=args.overrides)
    if args.n is not None:
        mock = config.input.mock.model_copy(update={"n": args.n})
        config = config.model_copy(update={"input": config.input.model_copy(update={"mock": mock})})
    if args.epochs is not None:
        train = config.stages.train.model_copy(update={"epochs": args.epochs})
        config = config.model_copy(update={"stages": config.stages.model_copy(update={"train": train})})
    run_pipeline(config, cluster=args.cluster, workers=args.workers, resume=args.resume)

    # The science stage saved the whole test (held-out galaxies only).
    run_dir = Path(config.outputs.dir)
    print(format_comparison(MZRTest.load(run_dir / "science" / "mzr_test")))
    print(f"report: {build_report(run_dir, run_dir / 'report.html')}")

if __name__ == "__main__":
    main()
