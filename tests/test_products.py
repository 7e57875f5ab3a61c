"""The report products' test galaxies: few chunks, spread along the store, never more than asked."""

from __future__ import annotations

import numpy as np
import xarray as xr

from survey_denoise.pipeline import products


def _store(n: int, chunk: int) -> xr.Dataset:
    ids = np.array([f"g{i:05d}" for i in range(n)])
    ds = xr.Dataset({"flux": (("galaxy", "wavelength"), np.zeros((n, 3), np.float32))},
                    coords={"galaxy": ids})
    return ds.chunk({"galaxy": chunk})


def _chunks_touched(pos: np.ndarray, chunk: int) -> set[int]:
    return set((pos // chunk).tolist())


def test_products_read_only_the_chunks_they_need():
    # 20 % held out, as a train stage with holdout 0.2 leaves it: spread over every chunk.
    n, chunk, limit = 20_000, 250, 2000
    ds = _store(n, chunk)
    held = ds["galaxy"].values[np.random.default_rng(1).random(n) < 0.2]
    pos = products.test_positions(ds, held, limit)
    assert pos.size == limit and np.all(np.diff(pos) > 0)
    assert np.isin(ds["galaxy"].values[pos], held).all()
    touched = _chunks_touched(pos, chunk)
    # ~50 held-out galaxies a chunk: 40 chunks hold 2000, not all 80.
    assert len(touched) <= 42
    # ... spread from the store's start to its end, not its first chunks only.
    assert min(touched) == 0 and max(touched) == n // chunk - 1
    train = products.test_positions(ds, held, limit, trained=True)
    assert train.size == limit and not np.isin(ds["galaxy"].values[train], held).any()
    assert len(_chunks_touched(train, chunk)) <= 12


def test_small_or_unchunked_stores_keep_every_candidate():
    ds = _store(300, 100)
    held = ds["galaxy"].values[::5]
    assert np.array_equal(products.test_positions(ds, held, 2000), np.arange(0, 300, 5))
    eager = _store(300, 100).compute()
    pos = products.test_positions(eager, None, 100)
    assert pos.size == 100 and pos[0] == 0 and pos[-1] == 299


def test_the_noise_bound_is_read_a_part_at_a_time_in_the_truths_order(monkeypatch):
    import dask
    import pandas as pd

    from survey_denoise.mock import MockConfig, generate, truth_table
    from survey_denoise.noise import DesiNoise, degrade

    raw = generate(np.arange(30), MockConfig(seed=3, rest=True), chunk_size=10)
    with dask.config.set(scheduler="synchronous"):
        noisy = degrade(raw, DesiNoise(exptime=180), seed=1, z_target=0.1).persist()
        truth = truth_table(raw).sample(frac=1.0, random_state=2).iloc[:25]  # shuffled, 5 absent
        whole = products.noise_bound(noisy, truth)
        monkeypatch.setattr(products, "BOUND_ROWS", 7)
        parts = products.noise_bound(noisy, truth)
    pd.testing.assert_frame_equal(parts, whole)
    assert sorted(whole["galaxy"].astype(str)) == sorted(truth["galaxy"].astype(str))
    assert whole["snr_line"].notna().sum() > 15
    assert products.noise_bound(noisy, truth.drop(columns="true_sigma_gas")) is None
