"""Figure 7 at tiny size through ``survey-denoise run pipelines/figure7.yaml``: a sweep over
PCA latent sizes, scored on the held-out galaxies, gathered into one table and figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests._cli import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # two runs of a two-variant sweep: about 1.5 minutes each on 2 busy cores
def test_figure7_sweep_writes_table_and_figures(tmp_path):
    out = tmp_path / "f7"
    args = ("run", ROOT / "pipelines" / "figure7.yaml", "--set", "input.mock.n=50", "--set", "chunk=25",
            "--set", "sweep={stages.train.kind: [pca], stages.train.latent: [2, 4]}",
            "--set", "report.html=false", "--out", out, "--workers", "1", "--no-progress")
    check = run(*args, "--check")
    assert check.returncode == 0, check.stderr
    assert "sweep 'figure7': 2 variants over stages.train.kind, stages.train.latent" in check.stdout
    result = run(*args)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "sweep-reconstruction_mse.csv")
    pca = table[table["model"] == "pca"]
    assert list(pca["latent_dim"]) == list(pca["latent"]) == [2, 4] and (pca["mse"] > 0).all()
    assert (pca["n_galaxies"] == 10).all()                    # the 20 % held out of training
    # De-noising must beat the noisy input it is given.
    assert (table.loc[table["model"] == "noisy input", "mse"] > pca["mse"].max()).all()
    # PCA, fitted on the re-normalised noisy spectra, reproduces their ~0.66 amplitude:
    # at unit norm, like the clean spectra, its error is far smaller.
    assert (pca["mse_unit_norm"] < 0.5 * pca["mse"]).all()
    assert (out / "figure7.png").stat().st_size > 10_000
    for name in ("pca-2/latent.parquet", "pca-2/model/card.json", "pca-4/model/.complete"):
        assert (out / name).stat().st_size >= 0 and (out / name).exists()
    assert pd.read_parquet(out / "pca-4" / "latent.parquet").columns[1:5].tolist() == ["z0", "z1", "z2", "z3"]
    for label in ("pca-2", "pca-4"):
        assert (out / label / "run.json").exists()
    # Run again, it needs --resume (or --overwrite); with it, it scores the saved
    # models instead of training new ones.
    refused = run(*args)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    first_saved = (out / "pca-2" / "model" / "card.json").stat().st_mtime_ns
    again = run(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert (out / "pca-2" / "model" / "card.json").stat().st_mtime_ns == first_saved
    pd.testing.assert_series_equal(pd.read_csv(out / "sweep-reconstruction_mse.csv")["mse"], table["mse"])
