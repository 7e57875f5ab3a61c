import json
import shutil

import numpy as np
import pytest
import xarray as xr
from dask.utils import key_split

from survey_denoise import GRID, SchemaError, make_spectra
from survey_denoise.cluster import connect
from survey_denoise.io.store import (
    MIN_UNITS,
    PROGRESS_DIR,
    SHARD_BYTES,
    chunks_per_shard,
    completed_chunks,
    missing_chunks,
    open_store,
    write_store,
)


def _spectra(n=60, chunk=10, seed=0):
    rng = np.random.default_rng(seed)
    ds = make_spectra(rng.normal(1, 0.1, (n, GRID.npix)), np.full((n, GRID.npix), 25.0),
                      GRID.wavelength, np.arange(1000, 1000 + n), rng.uniform(0.02, 0.05, n),
                      frame="rest", extra={"true_class": np.array(["sf", "agn"] * (n // 2))})
    return ds.chunk(galaxy=chunk)


def test_round_trip_field_by_field(tmp_path):
    ds = _spectra()
    report = write_store(ds, tmp_path / "s.zarr", progress=False)
    assert report.n_chunks == 6 and sorted(report.written) == list(range(6))
    back = open_store(tmp_path / "s.zarr", frame="rest")
    assert back.chunks["galaxy"] == ds.chunks["galaxy"]
    for name in ds.variables:
        np.testing.assert_array_equal(back[name].values.astype(ds[name].dtype), ds[name].values,
                                      err_msg=name)
        # Strings come back as numpy's variable-length StringDType.
        assert back[name].dtype == ds[name].dtype or ds[name].dtype.kind == "U", name
        assert back[name].attrs == ds[name].attrs, name
    assert back.attrs == ds.attrs


def test_resume_writes_only_missing_chunks_on_a_cluster(tmp_path):
    ds = _spectra()
    path = tmp_path / "s.zarr"
    with connect("local", n_workers=2) as client:
        write_store(ds, path, client=client, progress=False)
        for i in (1, 4):
            (path / PROGRESS_DIR / f"chunk-{i:06d}").unlink()
        # Corrupt the data of a chunk whose marker is gone: resume must rewrite it.
        zarr_ds = xr.open_zarr(path, zarr_format=3, consolidated=False)
        assert missing_chunks(path) == [1, 4]
        with pytest.raises(SchemaError, match="incomplete .* --resume"):
            open_store(path)
        zeros = zarr_ds.isel(galaxy=slice(10, 20))[["flux"]].load() * 0
        zeros.drop_vars("wavelength").to_zarr(path, region={"galaxy": slice(10, 20)},
                                              zarr_format=3, consolidated=False)
        report = write_store(ds, path, resume=True, client=client, progress=False)
    assert sorted(report.written) == [1, 4] and report.skipped == 4
    assert completed_chunks(path) == list(range(6))
    np.testing.assert_array_equal(open_store(path).flux.values, ds.flux.values)


def test_existing_and_mismatched_stores_are_refused(tmp_path):
    ds = _spectra()
    path = tmp_path / "s.zarr"
    write_store(ds, path, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        write_store(ds, path, progress=False)
    with pytest.raises(SchemaError, match="cannot resume"):
        write_store(_spectra(n=40), path, resume=True, progress=False)
    write_store(_spectra(n=40), path, overwrite=True, progress=False)
    assert open_store(path).sizes["galaxy"] == 40


def test_foreign_and_missing_stores(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such store"):
        open_store(tmp_path / "nope.zarr")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "zarr.json").write_text("{not json")
    with pytest.raises(SchemaError, match="not a readable Zarr"):
        open_store(tmp_path / "junk")
    ds = _spectra()
    plain = tmp_path / "plain.zarr"
    ds.drop_vars("true_class").to_zarr(plain, zarr_format=3, consolidated=False)
    with pytest.raises(SchemaError, match="not written by survey_denoise"):
        open_store(plain)
    # A store that is not spectra at all.
    xr.Dataset({"a": ("x", [1, 2])}).to_zarr(tmp_path / "other.zarr", zarr_format=3,
                                             consolidated=False)
    with pytest.raises(SchemaError, match="dimension 'galaxy' is missing"):
        open_store(tmp_path / "other.zarr")


def test_tables_are_written_and_resumed(tmp_path):
    table = xr.Dataset({"halpha_flux": ("galaxy", np.arange(30.0))},
                       coords={"galaxy": np.arange(30)}).chunk(galaxy=7)
    path = tmp_path / "cat.zarr"
    write_store(table, path, spectra=False, progress=False)
    shutil.rmtree(path / "halpha_flux" / "c" / "2", ignore_errors=True)
    (path / PROGRESS_DIR / "chunk-000002").unlink()
    write_store(table, path, spectra=False, resume=True, progress=False)
    back = open_store(path, spectra=False)
    np.testing.assert_array_equal(back.halpha_flux.values, np.arange(30.0))
    plan = json.loads((path / PROGRESS_DIR / "plan.json").read_text())
    assert plan["chunks"] == [7, 7, 7, 7, 2]


def test_resume_with_other_parameters_is_refused_naming_them(tmp_path):
    from survey_denoise.schema import add_provenance

    path = tmp_path / "s.zarr"
    ds = _spectra()
    ds.attrs = add_provenance(ds.attrs, "degrade", noise={"model": "uniform", "sigma": 0.04}, seed=2)
    write_store(ds, path, progress=False)
    (path / PROGRESS_DIR / "chunk-000003").unlink()
    other = ds.copy()
    other.attrs = add_provenance(_spectra().attrs, "degrade", noise={"model": "uniform", "sigma": 0.2},
                                 seed=9)
    with pytest.raises(SchemaError, match=r"other parameters \(degrade.noise.sigma: store 0.04, "
                                          r"now 0.2; degrade.seed: store 2, now 9\)"):
        write_store(other, path, resume=True, progress=False)
    assert missing_chunks(path) == [3]  # nothing was written
    plan = json.loads((path / PROGRESS_DIR / "plan.json").read_text())
    assert plan["parameters"]["degrade.seed"] == "2" and len(plan["parameters_sha256"]) == 64
    # A plan from before parameters were recorded: the store's own attributes are compared.
    del plan["parameters"], plan["parameters_sha256"]
    (path / PROGRESS_DIR / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(SchemaError, match="degrade.seed: store 2, now 9"):
        write_store(other, path, resume=True, progress=False)
    report = write_store(ds, path, resume=True, progress=False)
    assert report.written == [3]


KILL_IN_INIT = """
import os, pathlib, sys
import numpy as np
from survey_denoise import GRID, make_spectra
from survey_denoise.io.store import write_store

real = pathlib.Path.write_text
def write_text(self, *args, **kwargs):
    if self.name == "plan.json":  # the Zarr metadata is on disk, the plan is not
        os._exit(9)
    return real(self, *args, **kwargs)
pathlib.Path.write_text = write_text
n = 60
rng = np.random.default_rng(0)
ds = make_spectra(rng.normal(1, 0.1, (n, GRID.npix)), np.full((n, GRID.npix), 25.0), GRID.wavelength,
                  np.arange(1000, 1000 + n), rng.uniform(0.02, 0.05, n), frame="rest",
                  extra={"true_class": np.array(["sf", "agn"] * (n // 2))}).chunk(galaxy=10)
write_store(ds, sys.argv[1], progress=False)
"""


def test_driver_killed_during_initialisation_can_resume(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "s.zarr"
    res = subprocess.run([sys.executable, "-c", KILL_IN_INIT, str(path)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 9, res.stderr
    assert list(tmp_path.rglob("zarr.json")), "the kill came before any metadata was written"
    report = write_store(_spectra(), path, resume=True, progress=False)
    assert sorted(report.written) == list(range(6))
    np.testing.assert_array_equal(open_store(path).flux.values, _spectra().flux.values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # no staging left


def test_overwrite_keeps_the_old_store_until_the_new_one_is_complete(tmp_path):
    import dask.array as da

    path = tmp_path / "s.zarr"
    write_store(_spectra(n=40), path, progress=False)

    def fail_in_chunk_3(block, block_info=None):
        if block_info is not None and block_info[0]["chunk-location"][0] == 3:
            raise RuntimeError("worker lost")
        return block

    bad = _spectra()
    bad["flux"] = bad["flux"].copy(data=da.map_blocks(fail_in_chunk_3, bad["flux"].data,
                                                           dtype=bad["flux"].dtype))
    with pytest.raises(RuntimeError, match="worker lost"):
        write_store(bad, path, overwrite=True, progress=False)
    old = open_store(path)  # whole, complete and still the old one
    np.testing.assert_array_equal(old.flux.values, _spectra(n=40).flux.values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    write_store(_spectra(), path, overwrite=True, progress=False)
    np.testing.assert_array_equal(open_store(path).flux.values, _spectra().flux.values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def _files(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_many_chunks_share_a_few_shard_files(tmp_path):
    ds = _spectra(n=600, chunk=10)  # 60 chunks
    path = tmp_path / "s.zarr"
    report = write_store(ds, path, progress=False)
    k = report.chunks_per_shard
    assert k == 60 // MIN_UNITS  # a small store: split for parallelism, not memory
    n_shards = -(-60 // k)
    for name in ("flux", "ivar", "z", "true_class"):
        assert sum(p.is_file() for p in (path / name / "c").rglob("*")) == n_shards, name
    n_vars = sum("galaxy" in ds[v].dims for v in ds.variables)
    files = _files(path)
    # Per shard: one file per galaxy variable, one marker; then the metadata.
    assert len(files) <= n_vars * n_shards + n_shards + len(ds.variables) + 3, len(files)
    assert len(files) < 60 * n_vars / 4, "about a file per chunk and variable: not sharded"
    back = open_store(path, frame="rest")
    assert back.flux.encoding["chunks"] == (10, GRID.npix)  # reads stay whole spectra
    assert back.flux.encoding["shards"] == (10 * k, GRID.npix)
    assert back.chunks["galaxy"] == ds.chunks["galaxy"]
    np.testing.assert_array_equal(back.flux.values, ds.flux.values)
    assert missing_chunks(path) == [] and completed_chunks(path) == list(range(60))


@pytest.mark.parametrize("n_chunks", [1, 5, 8, 60, 1000])
@pytest.mark.parametrize("chunk_bytes", [1, 10**5, 7_700_000, 10**9])
def test_chunks_per_shard_keeps_memory_and_parallelism(n_chunks, chunk_bytes):
    k = chunks_per_shard(n_chunks, chunk_bytes)
    assert k >= 1
    if k > 1:
        assert k * chunk_bytes <= SHARD_BYTES
        assert n_chunks // k >= MIN_UNITS
    # 10^6 mock spectra in chunks of 1,000 (~7.7 MB): a few tens of shards.
    assert -(-1000 // chunks_per_shard(1000, 7_700_000)) <= 40


def _fail_in_chunk(ds, chunk):
    """``ds`` whose ``ivar`` fails to compute for the galaxies of ``chunk``."""
    import dask.array as da

    size = ds.chunks["galaxy"][0]
    bad_ids = ds.galaxy.values[chunk * size:(chunk + 1) * size]

    def fail(block, ids):  # by galaxy, not block position: Dask may slice before mapping
        if np.isin(ids, bad_ids).any():
            raise RuntimeError("worker lost")
        return block

    ids = da.from_array(ds.galaxy.values[:, None], chunks=(size, 1))
    bad = ds.copy()
    bad["ivar"] = bad["ivar"].copy(data=da.map_blocks(fail, bad["ivar"].data, ids, dtype="f4"))
    return bad


def test_interrupted_write_resumes_to_the_same_bytes_on_a_cluster(tmp_path):
    ds = _spectra(n=120, chunk=10)
    whole, cut = tmp_path / "whole.zarr", tmp_path / "cut.zarr"
    with connect("local", n_workers=2) as client:
        write_store(ds, whole, client=client, progress=False, shard_chunks=3)
        with pytest.raises(RuntimeError, match="worker lost"):
            write_store(_fail_in_chunk(ds, 7), cut, client=client, progress=False, shard_chunks=3)
        missing = missing_chunks(cut)
        assert {6, 7, 8} <= set(missing), missing  # the failed unit, whole
        assert len(missing) % 3 == 0  # whole units only
        # A shard of an unmarked unit that holds something else is replaced, not merged.
        stale = cut / "flux" / "c" / "2" / "0"
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"not a shard")
        report = write_store(ds, cut, resume=True, client=client, progress=False, shard_chunks=3)
    assert sorted(report.written) == missing
    assert report.units_submitted == len(missing) // 3
    a, b = _files(whole), _files(cut)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], name


def test_driver_submits_one_task_per_chunk_and_per_shard_and_no_xarray_writes(tmp_path, monkeypatch):
    from distributed import get_task_stream
    from distributed.protocol.pickle import loads

    from survey_denoise.io import store

    ds = _spectra(n=480, chunk=10)  # 48 chunks
    calls = {"to_zarr": 0, "chunks": 0, "writes": 0}
    graphs = []
    real_to_zarr = xr.Dataset.to_zarr
    upstream = len(dict(ds.__dask_graph__()))
    assert upstream > 48 * 5

    def to_zarr(self, *args, **kwargs):
        calls["to_zarr"] += 1
        return real_to_zarr(self, *args, **kwargs)

    monkeypatch.setattr(xr.Dataset, "to_zarr", to_zarr)
    with connect("local", n_workers=2) as client:
        real_submit = client.submit

        def submit(fn, *args, **kwargs):
            if fn is store._run_graph:
                calls["chunks"] += 1
                graphs.append(loads(args[0]))
            elif fn is store._write_parts:
                calls["writes"] += 1
            return real_submit(fn, *args, **kwargs)

        monkeypatch.setattr(client, "submit", submit)
        before = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
        with get_task_stream(client) as stream:
            write_store(ds, tmp_path / "s.zarr", client=client, progress=False, shard_chunks=8)
        transitions = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    # Metadata once; then one task per chunk and one per shard of 8 chunks, whatever
    # the number of variables and upstream tasks: the scheduler's work does not grow with them.
    assert calls == {"to_zarr": 1, "chunks": 48, "writes": 6}
    # About six transitions a task (309-320 measured), a few more for each task
    # that work stealing moves on a loaded machine (328 seen); the upstream graph
    # scheduled task by task would take ~6 x (336 + 54).
    assert transitions - before <= (48 + 6) * 8, transitions - before
    # A shard's chunks are computed on every worker, not by its one write task.
    chunk_workers = {t["worker"] for t in stream.data if key_split(t["key"]) == "chunk"}
    assert len(chunk_workers) == 2, chunk_workers
    # Each chunk's graph computes its own chunk only, with no slice,
    # concatenation or write task per variable.
    for graph in graphs:
        names = [key_split(key) for key in graph]
        assert not {"getitem", "concatenate", "rechunk-merge", "_write_shard", "write-unit"} & set(names)
        assert len({key[1] for key in graph if isinstance(key, tuple)}) == 1
    np.testing.assert_array_equal(open_store(tmp_path / "s.zarr").ivar.values, ds.ivar.values)


def test_arrays_backed_by_futures_are_written_from_the_cluster(tmp_path):
    # Data already on the cluster (as ``ingest`` leaves read files) reaches
    # each chunk's task as its dependency, not through the pickled graph.
    import dask.array as da

    ds = _spectra(n=40, chunk=10)
    with connect("local", n_workers=2) as client:
        blocks = [client.submit(np.asarray, ds.flux.values[i:i + 10] * 2, pure=False) for i in range(0, 40, 10)]
        flux = da.concatenate([da.from_delayed(b, shape=(10, ds.sizes["wavelength"]), dtype=ds.flux.dtype)
                               for b in blocks])
        doubled = ds.assign(flux=ds.flux.copy(data=flux))
        write_store(doubled, tmp_path / "f.zarr", client=client, progress=False, shard_chunks=2)
    np.testing.assert_array_equal(open_store(tmp_path / "f.zarr").flux.values, ds.flux.values * 2)


def test_stores_written_before_sharding_are_read_and_resumed(tmp_path):
    import zarr

    from survey_denoise.io.store import _plan

    ds = _spectra()
    path = tmp_path / "old.zarr"
    # The layout of earlier versions: one file per chunk, one marker per chunk.
    text = ds.true_class.astype(np.dtypes.StringDType())
    ds.assign(true_class=text).to_zarr(path, zarr_format=3, consolidated=False)
    zarr.open_group(path / PROGRESS_DIR, mode="w", zarr_format=3)
    plan = _plan(ds)
    del plan["chunks_per_shard"]
    (path / PROGRESS_DIR / "plan.json").write_text(json.dumps(plan))
    for i in (0, 1, 2, 4, 5):
        (path / PROGRESS_DIR / f"chunk-{i:06d}").touch()
    assert missing_chunks(path) == [3]
    (path / "flux" / "c" / "3" / "0").write_bytes(b"cut short")
    report = write_store(ds, path, resume=True, progress=False)
    assert report.written == [3] and report.chunks_per_shard == 1
    back = open_store(path, frame="rest")
    assert back.flux.encoding["shards"] is None
    np.testing.assert_array_equal(back.flux.values, ds.flux.values)
