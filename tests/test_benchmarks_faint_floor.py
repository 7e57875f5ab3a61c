"""benchmarks/faint_floor.py: the Bayes estimates it builds are calibrated against the truth and ordered by information."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "faint_floor.py"


@pytest.mark.slow
def test_posteriors_cover_the_truth_and_more_information_estimates_better(tmp_path):
    out = tmp_path / "floor.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--n", "2000", "--library", "6000", "--draws", "150",
                          "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads(out.read_text())
    # Both posteriors are exact up to sampling, so the truth's rank is uniform:
    # a wrong prior, selection or likelihood moves these out of the band.
    for name, c in r["halpha_calibration"].items():
        assert c["resolved"] > 1000, name
        assert 0.62 <= c["within_68"] <= 0.74 and 0.92 <= c["within_95"] <= 0.98, (name, c)
    rms = r["lines"]["halpha"]["rms_dex_vs_truth"]
    # Line data improve on the continuum alone, which improves on the noisy input's own fit;
    # knowing the continuum exactly beats reading it from the noisy spectrum.
    assert rms["continuum_mean"] < rms["continuum_prior"] < rms["noisy_fit"]
    assert rms["continuum_mean"] < rms["spectrum_mean"] < rms["noisy_fit"]
    # Regression to the mean: every estimate sits above the truth in the faintest bin.
    faint = r["lines"]["halpha"]["faint_bin"]
    assert all(faint[k]["mean"] > 0 for k in ("spectrum_mean", "continuum_mean", "noisy_fit"))
    # Each posterior's mean +- sd covers the truth as a calibrated error does over the sample.
    for name, c in r["per_bin_coverage"].items():
        every = {k: rows[-1] for k, rows in c["pooled"].items()}
        assert all(row["bin"] == "all" and 0.9 <= row["within_2sigma"] <= 0.99 for row in every.values()), name
