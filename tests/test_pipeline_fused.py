"""Pipeline inputs and outputs: a rest-frame input normalised by the preprocess stage; fused stages."""

from __future__ import annotations

import numpy as np

from survey_denoise.io.store import open_store
from survey_denoise.pipeline.config import PipelineConfig, check
from survey_denoise.pipeline.runner import Runner


def _config(tmp_path, preprocess: bool, **degrade) -> PipelineConfig:
    stages = {"degrade": {"noise": "desi", "z_target": 0.1, "seed": 2, **degrade}}
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


def test_degrade_stage_simulates_a_given_desi_exposure_time(tmp_path):
    import json

    from survey_denoise.noise import DesiNoise

    stores = {}
    for name, extra in (("deep", {}), ("bgs", {"exptime": 180})):
        config = _config(tmp_path / name, preprocess=False, **extra)
        Runner(config, None, progress=False, echo=lambda m: None).run()
        stores[name] = open_store(tmp_path / name / "run" / "degraded.zarr", frame="rest")
    noise = json.loads(stores["bgs"].attrs["noise"])
    factor = DesiNoise(exptime=180).depth_factor
    assert noise["exptime"] == 180 and noise["sigma_factor"] == factor > 5
    # Physical inverse variance (ivar / norm**2) falls by the factor squared.
    deep, bgs = ((s["ivar"] / s["norm"] ** 2).values for s in (stores["deep"], stores["bgs"]))
    good = (deep > 0) & (bgs > 0)
    assert good.sum() > 1000
    np.testing.assert_allclose((deep / bgs)[good], factor**2, rtol=1e-4)


def _fit_config(tmp_path, name: str, keep) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "name": name, "input": {"mock": {"n": 40, "seed": 4, "frame": "rest"}}, "chunk": 15,
        "stages": {"preprocess": {"norm": "l2"}, "degrade": {"noise": "desi", "z_target": 0.1, "seed": 3},
                   "fit": {"method": "fast", "stores": ["preprocessed", "degraded"]},
                   "science": {"cases": {"original": "preprocessed", "desi": "degraded"}}},
        "outputs": {"dir": str(tmp_path / name), **({} if keep is None else {"keep": keep})}})


def test_fused_stages_give_the_same_catalogue_without_intermediate_stores(tmp_path):
    import pandas as pd
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        full = Runner(_fit_config(tmp_path, "full", None), client, progress=False,
                      echo=lambda m: None).run()
        fused = Runner(_fit_config(tmp_path, "fused", []), client, progress=False,
                       echo=lambda m: None).run()
        ran = client.run_on_scheduler(lambda dask_scheduler: set(dask_scheduler.task_prefixes))
    # The catalogue files, the report's products and the science step are made
    # by worker tasks, not in the driver that runs the scheduler.
    assert {"catalogue-files", "examples", "mzr"} <= ran, sorted(ran)
    examples = [np.load(tmp_path / name / "examples.npz") for name in ("full", "fused")]
    assert examples[0]["lines_noisy"].shape == (4, examples[0]["line_keys"].size)
    assert np.isfinite(examples[0]["lines_noisy"]).any()
    for key in examples[0].files:
        np.testing.assert_array_equal(examples[0][key], examples[1][key], err_msg=key)
    assert (tmp_path / "full" / "preprocessed.zarr").exists()
    assert (tmp_path / "full" / "degraded.zarr").exists()
    assert not (tmp_path / "fused" / "preprocessed.zarr").exists()
    assert not (tmp_path / "fused" / "degraded.zarr").exists()
    assert (tmp_path / "fused" / "raw.zarr").exists()  # the input is always written
    assert fused.stages["degrade"].notes == {"fused": True}
    a = pd.read_parquet(tmp_path / "full" / "catalogue-degraded.parquet")
    b = pd.read_parquet(tmp_path / "fused" / "catalogue-degraded.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 40 and a["halpha_flux"].notna().sum() > 20
    assert (full.galaxies, full.flagged, full.failed) == (fused.galaxies, fused.flagged, fused.failed)
    # The science step bounds the Hα S/N of the degraded spectra, from the
    # written store and from the fused one alike.
    from survey_denoise.science.mzr_test import MZRTest

    tests = [MZRTest.load(tmp_path / name / "science" / "mzr_test") for name in ("full", "fused")]
    pd.testing.assert_frame_equal(tests[0].bound, tests[1].bound)
    assert tests[0].settings == tests[1].settings
    bound = tests[0].bound.set_index("galaxy")
    assert len(bound) == 40 and bound["snr_line"].notna().sum() > 20
    assert (bound["snr_tied"] >= bound["snr_line"] - 1e-9).all()
    s = tests[0].settings
    assert s["noisy_case"] == "desi" and 0 <= s["n_bound_line"] <= s["n_bound_tied"] <= 40
    # the fitted Hα S/N of the degraded spectra scatters about the bound, not far above it
    fitted = a.set_index(a["galaxy"].astype(str))["halpha_snr"].reindex(bound.index.astype(str))
    ok = bound["snr_line"].to_numpy() > 3
    assert np.median(fitted.to_numpy()[ok] / bound["snr_line"].to_numpy()[ok]) < 1.1
    assert "Cramér-Rao" in (tmp_path / "full" / "science" / "mzr_comparison.txt").read_text()


def test_keep_names_only_stores_the_pipeline_makes(tmp_path):
    config = _fit_config(tmp_path, "bad", ["denoised"])
    assert any("outputs.keep: 'denoised'" in p for p in check(config))
    assert not _fit_config(tmp_path, "ok", ["degraded"]).writes("preprocessed")
    assert _fit_config(tmp_path, "ok", ["degraded"]).writes("degraded")
    assert _fit_config(tmp_path, "ok", []).writes("raw")
