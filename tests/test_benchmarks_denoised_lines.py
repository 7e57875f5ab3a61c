"""benchmarks/denoised_scale.py and combined_lines.py on a small DESI-like MZR run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from _cli import run

from survey_denoise import lines
from survey_denoise.fitting.catalogue import read_catalogue
from survey_denoise.fitting.combine import combine_lines

REPO = Path(__file__).resolve().parents[1]


def _script(name: str, *args) -> dict:
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *map(str, args)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(Path(args[args.index("--out") + 1]).read_text())


@pytest.fixture(scope="module")
def desi_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("mzr")
    raw = yaml.safe_load((REPO / "pipelines" / "mzr_desi.yaml").read_text())
    raw["input"]["mock"]["n"], raw["chunk"] = 240, 60
    raw["stages"]["train"]["epochs"] = 2
    (tmp / "mzr.yaml").write_text(yaml.safe_dump(raw))
    result = run("run", tmp / "mzr.yaml", "--out", tmp / "run", "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


@pytest.mark.slow
def test_denoised_fluxes_sit_in_their_stores_frame_and_the_training_ratio_takes_the_dimming_in(desi_run, tmp_path):
    r = _script("denoised_scale.py", desi_run, "--snr", 5, "--out", tmp_path / "scale.json")
    frame = r["halpha_vs_truth_in_store_frame"]
    assert frame["denoised"]["n"] == frame["noisy"]["n"] > 10
    assert abs(frame["denoised"]["median_dex"]) < 0.1
    assert 0 < r["amplitude_frac_err_median"] < 0.05
    # The inputs were dimmed to z = 0.1 by 0.6-1.2 dex; the training set's ratio takes the
    # dimming in (it sits among the galaxies' own amplitudes), and still spreads.
    assert r["card_output_norm"]["log10_scatter"] > 0.05
    assert abs(np.log10(r["card_output_norm"]["ratio"] / r["amplitude_p5_50_95"][1])) < 0.1


@pytest.mark.slow
def test_combined_lines_are_scored_beside_both_inputs(desi_run, tmp_path):
    r = _script("combined_lines.py", desi_run, "--out", tmp_path / "combined.json")
    assert r["n_calibrate"] + r["n_score"] == 120  # the held-out half of 240
    assert set(r["lines"]) == {"noisy", "denoised", "combined", "combined_model"}
    for key, w in r["median_weight_of_denoised"].items():
        assert 0 <= w <= 1, key
        combined = r["lines"]["combined"][key]
        assert 0.8 * r["n_score"] < combined["n"] <= r["n_score"]
        # Never wider than the narrower of the two it combines, in the median.
        assert combined["median_err"] <= 1.001 * min(r["lines"][m][key]["median_err"] for m in ("noisy", "denoised"))
    assert set(r["mzr"]) == {"original", "noisy", "denoised", "combined", "combined_model", "n_common"}
    assert r["mzr"]["combined"]["measurable"] >= 0.8 * r["mzr"]["noisy"]["measurable"]


@pytest.mark.slow
def test_the_run_combines_its_catalogues_with_the_gains_its_model_measured(desi_run, tmp_path):
    gain = json.loads((desi_run / "model" / "card.json").read_text())["uncertainty"]["line_noise_gain"]
    assert set(gain) == set(lines.catalogue_keys())
    assert any(v is not None for v in gain.values())
    cats = {n: read_catalogue(desi_run / f"catalogue-{n}.parquet") for n in ("denoised", "degraded", "combined")}
    expected = combine_lines(cats["denoised"], cats["degraded"],
                             {k: np.nan if v is None else v for k, v in gain.items()})
    for col in ("halpha_flux", "halpha_flux_err", "nii_6583_flux", "halpha_weight"):
        np.testing.assert_allclose(cats["combined"][col], expected[col], rtol=1e-9, err_msg=col)
    assert cats["combined"].attrs["units"]["halpha_flux"] == cats["degraded"].attrs["units"]["halpha_flux"]
    assert "VAE and DESI-like combined" in (desi_run / "science" / "mzr_comparison.txt").read_text()
    # The stand-alone command writes the same catalogue from the two written ones.
    result = run("combine", desi_run / "catalogue-denoised.zarr", desi_run / "catalogue-degraded",
                 "--out", tmp_path / "again.parquet")
    assert result.returncode == 0, result.stderr[-3000:]
    again = read_catalogue(tmp_path / "again.parquet")
    np.testing.assert_array_equal(again["halpha_flux"], cats["combined"]["halpha_flux"])
    refused = run("combine", desi_run / "catalogue-degraded.zarr", desi_run / "catalogue-preprocessed.zarr",
                  "--out", tmp_path / "wrong.parquet")
    assert refused.returncode != 0 and "not of de-noised spectra" in refused.stderr
