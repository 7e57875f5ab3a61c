"""What the command line shows: help texts, labels and summaries that must say the truth."""

from __future__ import annotations

import numpy as np
from _cli import run

from survey_denoise.io.store import write_store
from survey_denoise.schema import add_provenance, make_spectra


def test_help_names_the_options_that_exist():
    denoise = run("denoise", "--help")
    assert denoise.returncode == 0 and "--model" in denoise.stdout
    assert "MODEL_DIR" not in denoise.stdout, denoise.stdout
    for survey in ("sdss", "desi", "auto"):
        ingest = run("ingest", survey, "--help")
        assert ingest.returncode == 0 and "--out" in ingest.stdout
        assert "STORE" not in ingest.stdout, ingest.stdout


def test_info_shows_a_rule_with_a_slash_whole_and_a_path_by_its_name(tmp_path):
    from survey_denoise.cli.info import describe_store

    wave = np.linspace(4000.0, 5000.0, 20)
    ds = make_spectra(np.ones((2, 20)), np.ones((2, 20)), wave, np.arange(2), np.zeros(2),
                      frame="observed")
    ds.attrs = add_provenance(ds.attrs, "denoise", model=str(tmp_path / "models" / "vae6"),
                              ivar="constant 1/val_mse = 400 per pixel")
    write_store(ds.chunk({"galaxy": 2}), tmp_path / "d.zarr", progress=False)
    text = describe_store(tmp_path / "d.zarr")
    assert "ivar=constant 1/val_mse = 400 per pixel" in text, text
    assert "model=vae6" in text and str(tmp_path) not in text.split("provenance")[-1]
