"""The Table 6 pipeline at tiny size: data -> 4-d PCA/AE/VAE -> de-noise -> fits -> table and figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_table6_pipeline_writes_table_markdown_and_figures(tmp_path):
    spec = importlib.util.spec_from_file_location("table6", ROOT / "pipelines" / "table6.py")
    table6 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table6)
    out, work = tmp_path / "out", tmp_path / "work"
    table = table6.main(["--n", "80", "--epochs", "1", "--method", "fast", "--out", str(out),
                         "--work", str(work)])
    assert list(table.index) == ["pca", "ae", "vae", "noise-added"]
    assert table.shape[1] == 12
    assert np.isfinite(table.loc["pca"].to_numpy(float)).all()
    saved = pd.read_csv(out / "table6.csv", header=[0, 1], index_col=0)
    np.testing.assert_allclose(saved.to_numpy(float), table.to_numpy(float), equal_nan=True)

    # every method on the same galaxies: one N per line, zero fits kept as limits
    scores = pd.read_csv(out / "table6_scores.csv")
    assert set(scores["method"]) == {"original", "pca", "ae", "vae", "noise-added"}
    for _, sub in scores.groupby("line"):
        assert sub["n"].nunique() == 1 and (sub["n"] == sub["n_common"]).all()
        assert (sub["n_measured_all"] + sub["n_upper_all"] + sub["n_missing_all"] == 16).all()
        assert (sub["n_common"] <= 16).all()
    judged = scores[scores["method"] != "original"]
    assert np.isfinite(judged[["sigma_orig", "sigma_truth"]].to_numpy(float)).all()
    assert judged["painted_rate"].between(0, 1).all() | judged["painted_rate"].isna().all()
    assert np.isfinite(judged["faint_offset"]).all()
    bins = pd.read_csv(out / "table6_bins.csv")
    assert {"line", "method", "lo", "hi", "count", "offset_truth", "sigma_truth", "offset_orig"} <= set(bins)
    per = bins.groupby(["line", "method"])["count"].sum().unstack()
    assert (per.nunique(axis=1) == 1).all()                    # the same galaxies in every method's bins

    calib = pd.read_csv(out / "table6_coverage.csv")
    overall = calib[calib["bin"] == "all"]
    assert set(overall["method"]) == {"original", "pca", "ae", "vae", "noise-added"}
    assert len(overall) == 5 * overall["line"].nunique()
    assert overall[["within_1sigma", "within_2sigma"]].stack().between(0, 1).all()
    assert (overall["within_2sigma"] >= overall["within_1sigma"]).all()

    md = (out / "table6.md").read_text()
    assert "Are the errors honest?" in md
    assert '"train": 64' in md and '"fit_method": "fast"' in md and "vae (paper) | 0.36 | 0.29" in md
    assert "Against the mock's true fluxes" in md and "Painted" in md and "N common" in md
    for name in ("figure9-pca.png", "figure9-ae.png", "figure9-vae.png", "figure9-noise-added.png"):
        assert (out / name).stat().st_size > 0
    # a second run reuses the saved models instead of training
    again = table6.main(["--n", "80", "--epochs", "1", "--method", "fast", "--out", str(tmp_path / "o2"),
                         "--work", str(tmp_path / "w2"), "--models-from", str(work / "models")])
    pd.testing.assert_frame_equal(again, table)
    assert '"trained_here": false' in (tmp_path / "o2" / "table6.md").read_text()
