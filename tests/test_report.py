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


def make_run(d: Path, *, with_mzr: bool = True) -> Path:
    """A run folder with a run record naming every input of the report, from synthetic data."""
    from survey_denoise.pipeline import products
    from survey_denoise.pipeline.record import RunRecord
    from survey_denoise.plots import figure9

    d.mkdir(parents=True, exist_ok=True)
    rec = RunRecord(d)
    truth = synthetic_truth(800, seed=7)
    cats = synthetic_catalogues(truth)
    cases = {"original": "original", "desi": "noisy", "vae": "denoised"}
    frames = {cases[c]: cat for c, cat in cats.items()}
    for case, cat in frames.items():
        cat.to_parquet(d / f"catalogue-{case}.parquet")
        rec.add_output("catalogue", f"catalogue-{case}.parquet", f"fit-{case}", name=case)
    truth.to_parquet(d / "truth.parquet")
    rec.add_output("table", "truth.parquet", "mock", name="truth")
    if with_mzr:
        snr = np.linspace(0, 30, len(truth))  # a noise bound: half the sample above 15
        bound = pd.DataFrame({"galaxy": truth["galaxy"], "snr_line": snr, "snr_tied": snr * 1.05})
        mzr_test(cats, truth, bound=bound).save(d / "science" / "mzr_test")
        rec.add_output("table", "science/mzr_test", "science", name="mzr_test")
    scores = products.scores(frames, truth, None)
    products.table6(scores).to_csv(d / "table6.csv", index=False)
    rec.add_output("table", "table6.csv", "products")
    for case in scores.vs_original:
        figure9(scores, case).savefig(d / f"figure9-{case}.png")
        rec.add_output("figure", f"figure9-{case}.png", "products")
    pd.DataFrame({"model": ["vae", "pca", "noisy input"], "latent_dim": [6, 6, 0],
                  "mse": [1.9, 3.2, 8.0], "n_galaxies": 400}).to_csv(d / "recon.csv", index=False)
    rec.add_output("table", "recon.csv", "products", name="reconstruction_mse")
    w = GRID.wavelength
    rng = np.random.default_rng(0)
    clean = 1 + np.exp(-0.5 * ((w - 6564.6) / 3) ** 2)[None, :] * np.array([[1.0], [3.0]])
    np.savez(d / "examples.npz", wavelength=w, original=clean, noisy=clean + rng.normal(0, 0.1, clean.shape),
             rec_denoised=clean * 1.02, ids=np.array(["mock-00001", "mock-00002"]),
             line_keys=np.array(["halpha"]), lines_original=np.array([[1.0], [3.0]]),
             lines_denoised=np.array([[1.1], [np.nan]]))
    rec.add_output("table", "examples.npz", "products")
    z = rng.normal(size=(400, 6))
    lat = pd.DataFrame(z, columns=[f"z{i}" for i in range(6)])
    lat["class"] = np.array(["emission", "absorption", "quiescent"])[rng.integers(0, 3, 400)]
    lat.to_parquet(d / "latent.parquet")
    rec.add_output("table", "latent.parquet", "products")
    run = {"config": {"name": "mzr-test-small", "stages": {}},
           "versions": {"python": "3.11", "numpy": "2.4"}, "status": "complete",
           "invocations": [{"started": "2025-01-01T00:00:00+00:00", "finished": "2025-01-01T00:05:00+00:00",
                            "cluster": "local", "host": "box", "resume": False, "status": "complete",
                            "stages": {"mock": {"output": "raw.zarr", "n_chunks": 5, "written": [0, 1, 2, 3, 4],
                                                "skipped": 0, "seconds": 2.0, "galaxies": 800, "notes": {}}}}],
           "outputs": rec.to_list()}
    (d / "run.json").write_text(json.dumps(run))
    return d


def test_full_report(tmp_path):
    run = make_run(tmp_path / "run")
    out = build_report(run, tmp_path / "site" / "report.html")
    html = out.read_text()
    files = tmp_path / "site" / "report_files"
    for name in ("fig7_mse_vs_latent.png", "fig8_examples.png", "fig9_noisy.png", "fig9_denoised.png",
                 "fig10_mzr.png", "fig6_latent.png", "table6_line_scatter.csv", "table_example_fluxes.csv",
                 "table_mzr_comparison.csv", "table_mse.csv"):
        assert (files / name).stat().st_size > 0, name
        assert f"report_files/{name}" in html
    assert 'class="missing"' not in html and "not made by this run" not in html
    assert "mzr-test-small" in html and "Stages" in html and "last run: cluster" in html
    assert "Package versions" in html and "Outputs of the run" in html
    # how many the noisy spectra make measurable, and at most could
    assert "Measurable from the DESI-like, z = 0.1 spectra alone" in html
    assert "At most 400 of 800 can reach Hα S/N &gt; 15" in html.replace("S/N > 15", "S/N &gt; 15")
    comp = pd.read_csv(files / "table_mzr_comparison.csv", index_col=0)
    assert comp.loc["original", "paper_scatter_dex"] == 0.09
    # the slope below the turnover, each case against the originals'
    assert "MZR slope over log M* 9.1-10.1 (dex per dex): original spectra: +" in html
    assert comp.loc["original", "ours_mzr_slope_ratio"] == 1.0
    # the O/H errors checked against the truth the run knows (here the true O/H only)
    cov = pd.read_csv(files / "table_mzr_oh_coverage.csv")
    assert set(cov["error"]) == {"total"} and set(cov["case"]) == {"original", "desi", "vae"}
    assert "O/H errors, fraction within 1 / 2 sigma" in html
    t6 = pd.read_csv(files / "table6_line_scatter.csv")
    pd.testing.assert_frame_equal(t6, pd.read_csv(run / "table6.csv"))
    assert set(t6["case"]) == {"noisy", "denoised"}


def test_sections_the_run_did_not_make_are_left_out_naming_the_config_key(tmp_path):
    run = make_run(tmp_path / "run", with_mzr=False)
    html = build_report(run).read_text()
    assert "fig10_mzr.png" not in html and 'class="missing"' not in html
    assert html.count("not made by this run") == 1
    assert "Mass–metallicity test (Figure 10): not made by this run; set stages.science" in html


def test_only_the_record_is_read(tmp_path):
    """Files the record does not name are not guessed from their names."""
    run = make_run(tmp_path / "run")
    data = json.loads((run / "run.json").read_text())
    data["outputs"] = [o for o in data["outputs"] if o["name"] != "latent"]
    (run / "run.json").write_text(json.dumps(data))
    html = build_report(run).read_text()
    assert "fig6_latent.png" not in html
    assert "Latent space (Figure 6): not made by this run; set report.latent" in html


def test_run_without_outputs_says_what_is_not_made(tmp_path):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "run.json").write_text('{"name": "bare"}')
    out = build_report(tmp_path / "bare")
    html = out.read_text()
    assert html.count("not made by this run") == 5 and 'class="missing"' not in html
    for key in ("report.reconstruction", "report.examples", "report.scores", "stages.science",
                "report.latent"):
        assert f"set {key}" in html


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
    assert "fig10_mzr.png" in html and "latent.parquet" in html


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


def test_run_record_round_trip(tmp_path):
    from survey_denoise.pipeline.record import KINDS, Output, RunRecord

    rec = RunRecord(tmp_path)
    rec.add_output("store", "denoised.zarr", "denoise")
    rec.add_output("catalogue", tmp_path / "catalogue-denoised.parquet", "fit-denoised", name="denoised")
    rec.add_output("figure", "figure9-noisy.png", "products")
    rec.add_output("store", "denoised.zarr", "denoise-again")  # same path: replaced, not doubled
    (tmp_path / "run.json").write_text(json.dumps({"outputs": rec.to_list()}))
    back = RunRecord.read(tmp_path)
    assert back.outputs() == rec.outputs()
    assert back.outputs("catalogue") == [Output("catalogue", "denoised", "catalogue-denoised.parquet",
                                                "fit-denoised")]
    assert [(o.kind, o.name, o.path, o.step) for o in back.outputs()] == [
        ("catalogue", "denoised", "catalogue-denoised.parquet", "fit-denoised"),
        ("figure", "figure9-noisy", "figure9-noisy.png", "products"),
        ("store", "denoised", "denoised.zarr", "denoise-again")]
    assert back.get("figure", "figure9-noisy").path == "figure9-noisy.png"
    assert back.get("table", "table6") is None
    assert set(KINDS) >= {"store", "catalogue", "model", "table", "figure"}
    with pytest.raises(ValueError, match="unknown output kind 'plot'"):
        rec.add_output("plot", "a.png", "x")
    with pytest.raises(ValueError, match="not inside the run folder"):
        rec.add_output("table", tmp_path.parent / "elsewhere.csv", "x")
    (tmp_path / "run.json").write_text(json.dumps({"outputs": {"a": 1}}))
    with pytest.raises(ValueError, match="'outputs' must be a list"):
        RunRecord.read(tmp_path)
