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
    md = (out / "table6.md").read_text()
    assert '"train": 64' in md and '"fit_method": "fast"' in md and "vae (paper) | 0.36 | 0.29" in md
    for name in ("figure9-pca.png", "figure9-ae.png", "figure9-vae.png"):
        assert (out / name).stat().st_size > 0
    # a second run reuses the saved models instead of training
    again = table6.main(["--n", "80", "--epochs", "1", "--method", "fast", "--out", str(tmp_path / "o2"),
                         "--work", str(tmp_path / "w2"), "--models-from", str(work / "models")])
    pd.testing.assert_frame_equal(again, table)
    assert '"trained_here": false' in (tmp_path / "o2" / "table6.md").read_text()
