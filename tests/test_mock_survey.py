"""Mock survey: schema, reproducibility across chunkings and workers, designs, Zarr, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_denoise.io.store import open_store, write_store
from survey_denoise.mock import (
    MockConfig,
    designs,
    generate,
    nebular,
    population,
    read_truth,
    select,
    write_truth,
)
from survey_denoise.mock.priors import CLASSES, default_priors, read_priors
from survey_denoise.schema import validate


def test_class_proportions_follow_paper_candidates():
    n = 40_000
    cls = population.draw(2, np.arange(n))["class"]
    counts = np.bincount(cls, minlength=len(CLASSES))
    for k, name in enumerate(CLASSES):
        f = default_priors().classes[name].fraction
        assert abs(counts[k] - n * f) <= 4 * np.sqrt(n * f * (1 - f)) + 2, name


def test_galaxy_properties_do_not_depend_on_batch():
    a = population.draw(3, np.arange(100))
    b = population.draw(3, np.array([57, 3, 99]))
    for key in ("logmass", "oh", "sfh", "z"):
        np.testing.assert_array_equal(a[key][[57, 3, 99]], b[key])


@pytest.mark.parametrize("rest", [True, False])
def test_schema_and_identical_output_for_any_chunking(rest):
    ids = np.arange(23)
    cfg = MockConfig(seed=4, rest=rest)
    a = generate(ids, cfg, chunk_size=5)
    b = generate(ids, cfg, chunk_size=23)
    validate(a, frame="rest" if rest else "observed")
    assert a["flux"].chunks[0] == (5, 5, 5, 5, 3)
    np.testing.assert_array_equal(a["flux"].values, b["flux"].values)
    np.testing.assert_array_equal(a["ivar"].values, b["ivar"].values)
    np.testing.assert_array_equal(a["true_oh"].values, b["true_oh"].values)
    assert (a["ivar"].values > 0).all() and np.isfinite(a["flux"].values).all()
    assert float(a["norm"].min()) == 1.0 and a.attrs["norm_convention"] == "none"
    # the lazy survey's variables, their order and dtypes are those a chunk computes
    computed = a.compute()
    assert list(a.data_vars) == list(computed.data_vars)
    assert {k: v.dtype for k, v in a.variables.items()} == {k: v.dtype for k, v in computed.variables.items()}


def test_zarr_round_trip_on_a_cluster_matches_local_threads(tmp_path):
    from distributed import Client, LocalCluster

    ids = np.arange(12)
    ds = generate(ids, MockConfig(seed=5), chunk_size=4)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        report = write_store(ds, tmp_path / "m.zarr", client=client, progress=False)
    assert report.n_chunks == 3
    back = open_store(tmp_path / "m.zarr", frame="observed")
    local = generate(ids, MockConfig(seed=5), chunk_size=6).compute()
    for name in ("flux", "ivar", "z", "true_halpha_flux", "true_class"):
        np.testing.assert_array_equal(back[name].values, local[name].values)
    path = write_truth(back, tmp_path / "truth.parquet")
    df, units = read_truth(path)
    assert list(df["galaxy"]) == list(ids)
    assert units["true_halpha_flux"] == "1e-17 erg/s/cm2"
    np.testing.assert_array_equal(df["true_oh"].to_numpy(), local["true_oh"].values)
    assert set(df["class"]) <= set(CLASSES)
    # Columns in name order, however the store's variables come back from Zarr.
    true = [c for c in df.columns if c.startswith("true_")]
    assert true == sorted(true) and list(df.columns[:2]) == ["galaxy", "z"]
    reordered = back[list(reversed(list(back.data_vars)))]
    pd.testing.assert_frame_equal(read_truth(write_truth(reordered, tmp_path / "r.parquet"))[0], df)
    # Read and written 5 galaxies at a time: the same table, units and provenance.
    import pyarrow.parquet as pq

    parts = write_truth(back, tmp_path / "parts.parquet", rows_per_part=5)
    assert pq.ParquetFile(parts).metadata.num_row_groups == 3
    assert pq.read_schema(parts) == pq.read_schema(path)
    assert pq.read_schema(parts).metadata == pq.read_schema(path).metadata
    pd.testing.assert_frame_equal(read_truth(parts)[0], df)


def test_uniform_halpha_design_fills_equal_log_bins():
    ids = select("uniform-halpha", 50, 1)
    ha = designs.measured_halpha(1, ids)
    counts, _ = np.histogram(np.log10(ha), bins=np.linspace(0.2, 3.4, 11))
    assert counts.tolist() == [5] * 10
    assert np.array_equal(ids, select("uniform-halpha", 50, 1))


def test_mzr_design_is_star_forming_in_range():
    ids = select("mzr", 18, 2)
    props = population.draw(2, ids)
    ha = nebular.line_fluxes(props)["halpha"]
    assert (props["class"] == CLASSES.index("emission")).all()
    assert ((ha >= 10**1.4) & (ha < 10**3.2)).all()


def test_bad_priors_are_refused_with_the_key(tmp_path):
    from importlib import resources

    text = (resources.files("survey_denoise") / "data" / "mock_priors.yaml").read_text()
    bad = tmp_path / "p.yaml"
    bad.write_text(text.replace("fraction: 0.58623", "fraction: 0.9"))
    with pytest.raises(ValueError, match="class fractions sum"):
        read_priors(bad)


def test_cli_writes_store_and_truth_and_refuses_existing(tmp_path, capsys):
    from survey_denoise.cli import main

    out, truth = tmp_path / "m.zarr", tmp_path / "t.parquet"
    main(["mock", "--n", "6", "--design", "natural", "--rest", "--seed", "9", "--out", str(out),
          "--truth", str(truth), "--chunk-size", "3", "--workers", "1"])
    ds = open_store(out, frame="rest")
    assert ds.sizes["galaxy"] == 6
    assert read_truth(truth)[0].shape[0] == 6
    with pytest.raises(SystemExit) as exc:
        main(["mock", "--n", "6", "--out", str(out)])
    assert exc.value.code == 2
    assert "exists" in capsys.readouterr().err


def test_figures_command_writes_bpt_and_mzr(tmp_path):
    from survey_denoise.mock.figures import main as figures_main

    ds = generate(select("uniform-halpha", 40, 0), MockConfig(seed=0, rest=True), chunk_size=40)
    truth = write_truth(ds, tmp_path / "t.parquet")
    figures_main([str(truth), "--out", str(tmp_path / "figs")])
    for name in ("bpt.png", "mzr.png"):
        assert (tmp_path / "figs" / name).read_bytes()[:4] == b"\x89PNG"
