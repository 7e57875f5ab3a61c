"""benchmarks/calibration.py: another model seed on the same test galaxies, and the side-by-side summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "calibration.py"


def _run(*args) -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.slow
def test_model_seeds_share_the_test_galaxies_and_compare_side_by_side(tmp_path):
    small = ["--n", 200, "--epochs", 2, "--seed", 5]
    _run(*small, "--out", tmp_path / "a.json")
    _run(*small, "--model-seed", 6, "--out", tmp_path / "b.json")
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "ab")
    # The mock, its noise and the test galaxies are --seed's: the originals' fits agree.
    assert a["original"] == b["original"]
    assert (a["meta"]["model_seed"], b["meta"]["model_seed"]) == (5, 6)
    assert "--model-seed 6" in b["meta"]["command"] and "scipy" in b["meta"]["versions"]
    # Another seed is another training: weights, batches and validation galaxies.
    assert a["vae_default"]["test_mse_vs_clean"] != b["vae_default"]["test_mse_vs_clean"]

    _run("--compare", tmp_path / "a.json", tmp_path / "b.json", "--out", tmp_path / "seeds.json")
    runs = json.loads((tmp_path / "seeds.json").read_text())["runs"]
    assert [r["model_seed"] for r in runs] == [5, 6]
    for r, d in zip(runs, (a, b), strict=True):
        assert r["vae_default"]["in_band"] == d["vae_default"]["after_tally"]["in_band"]
        assert r["pca"]["halpha_scatter_dex"] == d["pca"]["halpha_scatter_dex"]
