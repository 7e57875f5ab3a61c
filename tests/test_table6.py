"""Table 6 at tiny size through ``survey-denoise run pipelines/table6.yaml``: a sweep over the 4-d
PCA, AE and VAE, each variant fitting the original, noise-added and de-noised spectra and scoring them."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests._cli import assert_user_error, run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pipelines" / "table6.yaml"
SMALL = ("--set", "input.mock.n=80", "--set", "chunk=80", "--set", "stages.train.epochs=1",
         "--set", "stages.fit.method=fast", "--set", "report.html=false")


def test_set_overrides_a_config_value_and_is_checked():
    result = run("run", CONFIG, *SMALL, "--check")
    assert result.returncode == 0, result.stderr
    assert "sweep 'table6': 3 variants over stages.train.kind" in result.stdout
    assert "plan 'table6': 80 galaxies in chunks of 80" in result.stdout
    assert "table6_coverage.csv" in result.stdout
    assert_user_error(run("run", CONFIG, "--set", "stages.fit.methd=fast", "--check"),
                      "stages.fit.methd")
    assert_user_error(run("run", CONFIG, "--set", "stages.fit.method", "--check"), "KEY=VALUE")


def test_fitting_only_the_heldout_galaxies_needs_a_holdout():
    assert_user_error(run("run", CONFIG, *SMALL, "--set", "stages.fit.galaxies=heldout",
                          "--set", "stages.train.holdout=0", "--check"), "stages.fit.galaxies")


def test_holdout_is_a_fraction_or_a_number_of_galaxies():
    from survey_denoise.pipeline.config import ConfigError
    from survey_denoise.pipeline.params import Train
    from survey_denoise.pipeline.stages import holdout

    # The paper's 2,000 test galaxies whatever the mock's size.
    assert holdout(100_000, Train(kind="vae", holdout=2000)).size == 2000
    assert holdout(10_000, Train(kind="vae", holdout=0.2)).size == 2000
    with pytest.raises(ConfigError, match="2000 held out of 2000 galaxies leaves none"):
        holdout(2000, Train(kind="vae", holdout=2000))
    heldout = ("--set", "input.mock.n=10000", "--set", "stages.fit.galaxies=heldout")
    plan = run("run", CONFIG, *heldout, "--set", "stages.train.holdout=2000", "--check")
    assert plan.returncode == 0, plan.stderr
    assert re.search(r"^  fit-denoised .* 2$", plan.stdout, re.M)  # 2,000 galaxies in chunks of 1,000
    assert_user_error(run("run", CONFIG, *heldout, "--set", "stages.train.holdout=10000", "--check"),
                      "10000 held out of 10000 galaxies leaves none to train on")
    assert_user_error(run("run", CONFIG, *heldout, "--set", "stages.train.holdout=2.5", "--check"),
                      "a fraction below 1 or a whole number")


@pytest.mark.slow
def test_fitting_only_the_heldout_galaxies(tmp_path):
    import json

    out = tmp_path / "held"
    result = subprocess.run([sys.executable, "-c", "from survey_denoise.cli import main; main()", "run",
                             str(CONFIG), *SMALL, "--set", "sweep=null", "--set", "stages.train.kind=pca",
                             "--set", "stages.fit.galaxies=heldout", "--out", str(out), "--workers", "1",
                             "--no-progress"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    held = pd.read_parquet(out / "heldout.parquet")["galaxy"].astype(str)
    assert len(held) == 16
    for stem in ("preprocessed", "degraded", "denoised"):
        cat = pd.read_parquet(out / f"catalogue-{stem}.parquet")
        assert sorted(cat["galaxy"].astype(str)) == sorted(held), stem
        assert np.isfinite(cat["halpha_flux"]).all()
    scores = pd.read_csv(out / "table6_scores.csv")
    assert (scores["n_total"] == 16).all() and (scores["n_common"] <= 16).all()
    summary = json.loads((out / "run.json").read_text())["invocations"][-1]["summary"]
    assert summary["galaxies"] == 80 and summary["failed"] == 0

    # pipelines/faint_end.py scores Table 6's galaxies: its faintest-bin reading is Table 6's.
    spec = importlib.util.spec_from_file_location("faint_end", ROOT / "pipelines" / "faint_end.py")
    faint_end = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faint_end)
    faint_end.main([str(out), "--bins", "1"])
    table = pd.DataFrame(json.loads((out / "faint_end.json").read_text())["rows"])
    first = table[table["bin"] == 0].set_index("line")
    denoised = scores[scores["method"] == "denoised"].set_index("line")
    assert set(first.index) == set(denoised.index)
    np.testing.assert_allclose(first["fast"], denoised.loc[first.index, "faint_offset"], rtol=1e-9)
    assert (first["count"] == denoised.loc[first.index, "n_faint_bin"]).all()
    assert np.isfinite(first.loc["halpha", "held"])


@pytest.mark.slow
def test_table6_sweep_writes_scores_coverage_markdown_and_figures(tmp_path):
    out = tmp_path / "t6"
    result = subprocess.run([sys.executable, "-c", "from survey_denoise.cli import main; main()", "run",
                             str(CONFIG), *SMALL, "--out", str(out), "--workers", "1", "--no-progress"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    kinds = {"pca", "ae", "vae"}

    table = pd.read_csv(out / "sweep-table6.csv")
    assert set(table["kind"]) == kinds and set(table["case"]) == {"noisy", "denoised"}
    assert len(table) == 3 * 2 * 6                            # kinds x cases x Table 6 lines
    assert np.isfinite(table[table["kind"] == "pca"][["sigma", "sigma_fill"]].to_numpy(float)).all()

    # every case on the same galaxies within a variant: one N per line, zero fits kept as limits
    scores = pd.read_csv(out / "sweep-table6_scores.csv")
    assert set(scores["method"]) == {"original", "noisy", "denoised"} and set(scores["kind"]) == kinds
    for _, sub in scores.groupby(["kind", "line"]):
        assert sub["n"].nunique() == 1 and (sub["n"] == sub["n_common"]).all()
        assert (sub["n_measured_all"] + sub["n_upper_all"] + sub["n_missing_all"] == 16).all()
        assert (sub["n_common"] <= 16).all()
    judged = scores[scores["method"] != "original"]
    assert np.isfinite(judged[["sigma_orig", "sigma_truth"]].to_numpy(float)).all()
    assert judged["painted_rate"].between(0, 1).all() | judged["painted_rate"].isna().all()
    # spurious detections are among the painted ones; for the noisy input they are all of them
    both = judged.dropna(subset=["painted_rate"])
    assert (both["spurious_rate"] <= both["painted_rate"]).all()
    noisy_both = both[both["method"] == "noisy"]
    np.testing.assert_array_equal(noisy_both["spurious_rate"], noisy_both["painted_rate"])
    assert np.isfinite(judged["faint_offset"]).all()
    # the original and noisy spectra are the same in every variant
    noisy = scores[scores["method"] == "noisy"]
    assert (noisy.groupby("line")["n_upper_all"].nunique() == 1).all()

    bins = pd.read_csv(out / "sweep-table6_bins.csv")
    assert {"line", "method", "lo", "hi", "count", "offset_truth", "sigma_truth", "offset_orig", "kind"} <= set(bins)
    per = bins.groupby(["kind", "line", "method"])["count"].sum().unstack()
    assert (per.nunique(axis=1) == 1).all()                   # the same galaxies in every case's bins

    calib = pd.read_csv(out / "sweep-table6_coverage.csv")
    overall = calib[calib["bin"] == "all"]
    assert set(overall["method"]) == {"original", "noisy", "denoised"} and set(overall["kind"]) == kinds
    assert len(overall) == 3 * 3 * overall["line"].nunique()
    assert overall[["within_1sigma", "within_2sigma"]].stack().between(0, 1).all()
    assert (overall["within_2sigma"] >= overall["within_1sigma"]).all()
    assert calib[["p_1sigma", "p_2sigma"]].stack().between(0, 1).all()
    # what exact errors give fluxes clipped at 0: between the Gaussian fraction and Phi(k)
    assert calib["expected_1sigma"].between(0.6826, 0.8414).all() and calib["expected_2sigma"].between(0.9544, 0.9773).all()

    md = (out / "table6.md").read_text()
    assert "Are the errors honest?" in md and "| vae (paper) | 0.36 | 0.29 |" in md
    assert '"method": "fast"' in md and '"n": 80' in md
    assert "Against the mock's true fluxes" in md and "painted" in md and "N common" in md
    assert "spurious_rate" in md and "beyond counting noise" in md and "wide_clipped" in md
    # the networks' epochs are in their run logs, as the chunked stages' counts are
    # and so is the 1-epoch cap that ended them, which the run also printed
    for kind in ("ae", "vae"):
        log = (out / kind / "run.log").read_text()
        assert f"{kind}: epoch 1 of at most 1 in " in log
        assert f"INFO {kind}: stopped at its cap of 1 epochs before the plateau rule" in log
    assert result.stdout.count("train: stopped at its cap of 1 epochs") == 2
    for kind in kinds:
        for name in ("figure9-noisy.png", "figure9-denoised.png", "table6_coverage.csv"):
            assert (out / kind / name).stat().st_size > 0

    from survey_denoise.report import build_report

    html = build_report(out / "vae").read_text()
    assert "Coverage of the true fluxes" in html
