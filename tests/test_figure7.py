"""The Figure 7 pipeline at tiny size: mock -> normalise -> noise -> PCA models -> table and figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_figure7_pipeline_writes_table_and_figures(tmp_path):
    spec = importlib.util.spec_from_file_location("figure7", ROOT / "pipelines" / "figure7.py")
    figure7 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figure7)
    table = figure7.main([str(ROOT / "pipelines" / "experiments" / "models.yaml"), "--n", "50", "--models", "pca",
                          "--latent", "2,4", "--out", str(tmp_path)])
    assert list(table["latent_dim"]) == [2, 4] and (table["mse"] > 0).all()
    saved = pd.read_csv(tmp_path / "figure7.csv")
    pd.testing.assert_frame_equal(saved, table.reset_index(drop=True), check_dtype=False)
    # De-noising must beat the noisy input it is given.
    baseline = float((tmp_path / "figure7.md").read_text().split("Noisy input MSE (no de-noising): ")[1]
                     .split(";")[0])
    assert (table["mse"] < baseline).all()
    # PCA, fitted on the re-normalised noisy spectra, reproduces their ~0.66 amplitude:
    # at unit norm, like the clean spectra, its error is far smaller.
    assert (table["mse_unit_norm"] < 0.5 * table["mse"]).all()
    for name in ("figure7.png", "figure6.png", "models/pca-2/card.json", "models/pca-4/model.npz"):
        assert (tmp_path / name).stat().st_size > 0
    # Started again, it scores the saved models instead of training new ones.
    first_saved = (tmp_path / "models/pca-2/model.npz").stat().st_mtime_ns
    again = figure7.main([str(ROOT / "pipelines" / "experiments" / "models.yaml"), "--n", "50", "--models", "pca",
                          "--latent", "2,4", "--out", str(tmp_path)])
    assert (tmp_path / "models/pca-2/model.npz").stat().st_mtime_ns == first_saved
    pd.testing.assert_series_equal(again["mse"], table["mse"])
