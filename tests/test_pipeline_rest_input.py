"""A rest-frame input with a preprocess stage: the stage only normalises it."""

from __future__ import annotations

import numpy as np

from survey_denoise.io.store import open_store
from survey_denoise.pipeline.config import PipelineConfig, check
from survey_denoise.pipeline.runner import Runner


def _config(tmp_path, preprocess: bool) -> PipelineConfig:
    stages = {"degrade": {"noise": "desi", "z_target": 0.1, "seed": 2}}
    if preprocess:
        stages["preprocess"] = {"norm": "l2"}
    return PipelineConfig.model_validate({
        "name": "rest", "input": {"mock": {"n": 30, "seed": 1, "frame": "rest"}}, "chunk": 15,
        "stages": stages, "outputs": {"dir": str(tmp_path / "run")}})


def test_rest_mock_without_preprocess_is_the_preprocessed_store(tmp_path):
    config = _config(tmp_path, preprocess=False)
    assert config.stores() == ["preprocessed", "degraded"]
    assert check(config) == []


def test_rest_mock_with_preprocess_is_normalised_by_it(tmp_path):
    config = _config(tmp_path, preprocess=True)
    assert config.stores() == ["raw", "preprocessed", "degraded"]
    assert check(config) == []
    Runner(config, None, progress=False, echo=lambda m: None).run()
    raw = open_store(tmp_path / "run" / "raw.zarr", frame="rest")
    pre = open_store(tmp_path / "run" / "preprocessed.zarr", frame="rest")
    assert raw.attrs.get("norm_convention", "none") == "none"
    assert pre.attrs["norm_convention"] == "l2"
    flux, norm = pre["flux"].values.astype(float), pre["norm"].values
    live = ~pre["mask"].values.all(1)
    assert live.sum() > 20
    # unit L2 norm, and flux * norm is still the physical flux of the raw store
    np.testing.assert_allclose(np.sqrt((np.where(pre["mask"].values, 0, flux) ** 2).sum(1))[live], 1, rtol=1e-3)
    np.testing.assert_allclose((flux * norm[:, None])[live], raw["flux"].values[live], rtol=1e-4, atol=1e-4)
    assert open_store(tmp_path / "run" / "degraded.zarr", frame="rest").attrs["norm_convention"] == "l2"
