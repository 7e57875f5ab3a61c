"""The HTML report: built from a run folder, tolerant of gaps, and really rendered by chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from _mzr_sample import synthetic_catalogues, synthetic_truth
from _services import require

from survey_denoise.cli import main
from survey_denoise.grid import GRID
from survey_denoise.report import build_report, read_run
from survey_denoise.science.mzr_test import mzr_test

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def make_run(d: Path, *, with_mzr_dir: bool = True) -> Path:
    """A run folder with every input of the report, made from synthetic data."""
    d.mkdir(parents=True, exist_ok=True)
    truth = synthetic_truth(800, seed=7)
    cats = synthetic_catalogues(truth)
    (d / "catalogues").mkdir()
    for case, cat in cats.items():
        cat.to_parquet(d / "catalogues" / f"{case}.parquet")
    truth.to_parquet(d / "truth.parquet")
    if with_mzr_dir:
        mzr_test(cats, truth).save(d / "mzr_test")
    pd.DataFrame({"model": ["pca"] * 4 + ["ae"] * 4 + ["vae"] * 4, "latent_dim": [2, 4, 6, 10] * 3,
                  "mse": [3.0, 3.1, 3.2, 3.4, 2.5, 2.2, 2.1, 2.1, 2.4, 2.0, 1.9, 1.9]}
                 ).to_csv(d / "recon.csv", index=False)
    w = GRID.wavelength
    rng = np.random.default_rng(0)
    clean = 1 + np.exp(-0.5 * ((w - 6564.6) / 3) ** 2)[None, :] * np.array([[1.0], [3.0]])
    np.savez(d / "examples.npz", wavelength=w, original=clean, noisy=clean + rng.normal(0, 0.1, clean.shape),
             rec_vae=clean * 1.02, rec_pca=clean * 0.97, ids=np.array(["mock-00001", "mock-00002"]))
    z = rng.normal(size=(400, 6))
    lat = pd.DataFrame(z, columns=[f"z{i}" for i in range(6)])
    lat["class"] = np.array(["emission", "absorption", "quiescent"])[rng.integers(0, 3, 400)]
    lat.to_parquet(d / "latent.parquet")
    run = {"name": "mzr-test-small", "pipeline": "mzr_test", "started": "2025-01-01T00:00:00Z",
           "finished": "2025-01-01T00:10:00Z", "version": "0.1.0", "cluster": "local",
           "config": {"n_galaxies": 800, "seed": 7},
           "stages": [{"name": "mock", "seconds": 1.5, "n_galaxies": 800},
                      {"name": "fit", "seconds": 3.0, "n_galaxies": 800}],
           "outputs": {"reconstruction_mse": "recon.csv"}}
    (d / "run.json").write_text(json.dumps(run))
    return d


def test_full_report(tmp_path):
    run = make_run(tmp_path / "run")
    out = build_report(run, tmp_path / "site" / "report.html")
    html = out.read_text()
    files = tmp_path / "site" / "report_files"
    for name in ("fig7_mse_vs_latent.png", "fig8_examples.png", "fig9_desi.png", "fig9_vae.png",
                 "fig10_mzr.png", "fig6_latent.png", "table6_line_scatter.csv",
                 "table_mzr_comparison.csv", "table_mse.csv"):
        assert (files / name).stat().st_size > 0, name
        assert f"report_files/{name}" in html
    assert 'class="missing"' not in html
    assert "mzr-test-small" in html and "Stages" in html
    comp = pd.read_csv(files / "table_mzr_comparison.csv", index_col=0)
    assert comp.loc["original", "paper_scatter_dex"] == 0.09
    t6 = pd.read_csv(files / "table6_line_scatter.csv")
    assert set(t6["case"]) == {"desi", "vae"}


def test_mzr_computed_from_catalogues_when_no_results_folder(tmp_path):
    run = make_run(tmp_path / "run", with_mzr_dir=False)
    html = build_report(run).read_text()
    assert "fig10_mzr.png" in html
    assert (run / "report_files" / "fig10_mzr.png").exists()


def test_run_without_outputs_says_what_is_missing(tmp_path):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "run.json").write_text('{"name": "bare"}')
    out = build_report(tmp_path / "bare")
    html = out.read_text()
    assert html.count('class="missing"') == 5
    assert "No MZR test results" in html


def test_folder_without_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no pipeline run here"):
        build_report(tmp_path / "empty")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path / "empty")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no pipeline run here" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "empty" / "report.html").exists()


def test_damaged_input_spoils_only_its_section(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "latent.parquet").write_bytes(b"not parquet")
    pd.DataFrame({"model": ["pca"], "mse": [1.0]}).to_csv(run / "recon.csv", index=False)
    html = build_report(run).read_text()
    assert html.count('class="missing"') == 2
    assert "fig10_mzr.png" in html and "latent_dim" in html


def test_cli_report_and_user_errors(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    main(["report", str(run), "--out", str(tmp_path / "r.html")])
    assert (tmp_path / "r.html").exists()
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path / "nowhere")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (run / "run.json").write_text("{broken")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(run)])
    assert exc.value.code == 2
    assert "run.json: not valid JSON" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not valid JSON"):
        read_run(run)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path):
    require(None if _chromium() else
            "Debian's chromium is not installed (apt-get install -y chromium)")
    run = make_run(tmp_path / "run")
    out = build_report(run, tmp_path / "site" / "report.html")
    shot = tmp_path / "screenshot.png"
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
               "--window-size=1280,4000", f"--screenshot={shot}", out.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HOME": profile})
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert shot.exists(), f"chromium wrote no screenshot: rc={proc.returncode}\n{proc.stderr[-2000:]}"
    img = mpimg.imread(shot)
    assert img.shape[0] >= 3000 and img.shape[1] >= 1200
    rgb = img[..., :3]
    assert rgb.std() > 0.05, "screenshot is blank"
    # the figures are drawn: many distinct colours in the lower part of the page, not just text
    lower = (rgb[1500:] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(lower[::7], axis=0)) > 200
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report_screenshot.png")


def test_pipeline_runner_layout(tmp_path):
    """The runner's run.json (config, versions, invocations) and catalogue-<store>.parquet files."""
    d = tmp_path / "run"
    d.mkdir()
    truth = synthetic_truth(500, seed=3)
    truth["true_logsfr"] = np.log10(truth.pop("true_sfr"))
    truth["galaxy"] = np.arange(len(truth))  # integer ids, as in the mock
    truth.to_parquet(d / "truth.parquet")
    stores = {"original": "preprocessed", "desi": "degraded", "vae": "denoised"}
    for case, cat in synthetic_catalogues(synthetic_truth(500, seed=3)).items():
        cat.assign(galaxy=np.arange(len(cat))).to_parquet(d / f"catalogue-{stores[case]}.parquet")
    run = {"config": {"name": "mzr-desi", "stages": {"science": {"cases": stores}}},
           "versions": {"python": "3.11", "numpy": "2.4"}, "status": "complete",
           "invocations": [{"started": "2025-01-01T00:00:00+00:00", "finished": "2025-01-01T00:05:00+00:00",
                            "cluster": "local", "host": "box", "resume": False, "status": "complete",
                            "stages": {"mock": {"output": "raw.zarr", "n_chunks": 5, "written": [0, 1, 2, 3, 4],
                                                "skipped": 0, "seconds": 2.0, "galaxies": 500, "notes": {}}}}]}
    (d / "run.json").write_text(json.dumps(run))
    html = build_report(d).read_text()
    assert "mzr-desi" in html and "last run: cluster" in html and "Package versions" in html
    assert "fig10_mzr.png" in html and "fig9_vae.png" in html
    comp = pd.read_csv(d / "report_files" / "table_mzr_comparison.csv", index_col=0)
    assert comp.loc["original", "ours_fraction"] > 0.9
