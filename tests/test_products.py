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
