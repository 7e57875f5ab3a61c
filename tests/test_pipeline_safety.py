"""The YAML runner resumes a store only with the parameters it was started with."""

import pytest
import yaml

from survey_denoise.io.store import PROGRESS_DIR, missing_chunks, open_store, write_store
from survey_denoise.mock import MockConfig, generate, select
from survey_denoise.pipeline import load_config, run_pipeline
from survey_denoise.schema import SchemaError


def _mock_store(path, *, noise: bool) -> None:
    ds = generate(select("natural", 12, 4), MockConfig(seed=4, rest=True, noise=noise), chunk_size=3)
    write_store(ds, path, overwrite=path.exists(), progress=False)


def _config(tmp_path, store, folder):
    config = {"name": "safety", "input": {"store": {"path": str(store), "frame": "rest"}}, "chunk": 3,
              "stages": {"preprocess": {"norm": "l2"},
                         "degrade": {"noise": "uniform", "sigma": 0.04, "seed": 5}},
              "outputs": {"dir": str(folder)}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def test_resume_after_the_input_was_remade_otherwise_is_refused(tmp_path):
    store, folder = tmp_path / "in.zarr", tmp_path / "run"
    _mock_store(store, noise=True)
    cfg = _config(tmp_path, store, folder)
    run_pipeline(cfg, workers=1, progress=False, echo=lambda m: None)
    for name in ("preprocessed.zarr", "degraded.zarr"):  # as if killed before their last chunk
        (folder / name / PROGRESS_DIR / "chunk-000003").unlink()
    _mock_store(store, noise=False)  # same galaxies, same config, other spectra
    with pytest.raises(SchemaError, match=r"preprocessed.zarr: cannot resume.*mock.noise: store "
                                          r"true, now false"):
        run_pipeline(cfg, workers=1, resume=True, progress=False, echo=lambda m: None)
    assert missing_chunks(folder / "preprocessed.zarr") == [3]  # not mixed
    _mock_store(store, noise=True)
    run_pipeline(cfg, workers=1, resume=True, progress=False, echo=lambda m: None)
    assert missing_chunks(folder / "degraded.zarr") == []
    open_store(folder / "degraded.zarr", frame="rest")


def test_outputs_folder_holding_an_input_is_refused_before_any_work(tmp_path):
    store = tmp_path / "in.zarr"
    _mock_store(store, noise=True)
    for folder in (tmp_path, store, store / "run"):
        with pytest.raises(FileExistsError, match="the input"):
            run_pipeline(_config(tmp_path, store, folder), workers=1, progress=False,
                         echo=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "in.zarr"]
