"""The streaming training reader: Zarr chunks on disk, weights from ivar, a seeded split."""

from __future__ import annotations

import numpy as np
import pytest
from _denoise_data import SIGMA, datasets
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from survey_denoise.flags import Flag
from survey_denoise.grid import Grid
from survey_denoise.io.store import open_store, write_store
from survey_denoise.models.data import SOFTENING, SpectraPairs, batches, pixel_weights, split
from survey_denoise.noise import UniformNoise, degrade


class CountingPairs(SpectraPairs):
    """Counts chunk reads, to check each chunk is read once per epoch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = []

    def load(self, c):
        self.reads.append(c)
        return super().load(c)


@pytest.fixture
def stores(tmp_path):
    noisy, clean = datasets(230, seed=21)
    noisy["flags"].values[[5, 100]] = np.uint32(Flag.NO_IVAR)
    noisy["ivar"].values[7, :10] = 0.0
    clean["ivar"].values[8, :10] = 0.0
    write_store(noisy.chunk({"galaxy": 50}), tmp_path / "noisy.zarr", progress=False)
    write_store(clean.chunk({"galaxy": 50}), tmp_path / "clean.zarr", progress=False)
    return open_store(tmp_path / "noisy.zarr"), open_store(tmp_path / "clean.zarr"), noisy, clean


@given(arrays(np.float32, (3, 7), elements=st.floats(-10, 1e8, width=32)))
def test_weights_are_softened_inverse_variance_and_zero_without_information(ivar):
    w = pixel_weights(ivar)
    pos = ivar > 0
    assert np.all(w[~pos] == 0) and np.all(np.isfinite(w))
    np.testing.assert_allclose(w[pos], 1 / (1 / ivar[pos].astype(np.float64) + SOFTENING), rtol=1e-5)
    assert np.all(w <= 1 / SOFTENING * (1 + 1e-6))


def test_reader_streams_every_training_row_once_per_epoch_reading_each_chunk_once(stores):
    noisy, clean, mem_noisy, mem_clean = stores
    pairs = CountingPairs(noisy, clean)
    assert pairs.n_chunks == 5 and pairs.n == 230
    parts = split(pairs, 0.2, seed=3)
    assert not {5, 100} & (set(parts.train) | set(parts.validation))  # dropped spectra left out
    assert parts.train.size + parts.validation.size == 228 and parts.validation.size == 46
    seq = batches(pairs, parts.train, 16, shuffle=True, seed=parts.seed)
    orders = []
    for _epoch in range(2):
        pairs.reads.clear()
        rows = []
        for i in range(len(seq)):
            x, y, w = seq[i]
            assert x.shape[0] <= 16 and x.shape == y.shape == w.shape and x.dtype == np.float32
            # Recover the rows through the clean flux, which is unique per galaxy.
            idx = [int(np.argmin(np.abs(mem_clean["flux"].values - r).sum(1))) for r in y]
            np.testing.assert_array_equal(x, mem_noisy["flux"].values[idx])
            rows += idx
        assert sorted(rows) == parts.train.tolist()
        assert sorted(pairs.reads) == list(range(5))
        orders.append(rows)
        seq.on_epoch_end()
    assert orders[0] != orders[1]


def test_weights_come_from_the_targets_ivar(stores):
    # The paper's eq. 3: the flux errors of the original spectrum (the target),
    # not the noise added to the input.
    noisy, clean, _, mem_clean = stores
    pairs = SpectraPairs(noisy, clean)
    x, y, w = pairs.load(0)
    assert np.all(w[8, :10] == 0) and np.all(w[7, :10] > 0)
    clean_ivar = float(mem_clean["ivar"].values[0, 0])
    np.testing.assert_allclose(w[0], 1 / (1 / clean_ivar + SOFTENING), rtol=1e-5)
    assert w[0, 0] > 100 / (SIGMA ** 2 + SOFTENING)


def test_split_is_reproducible_from_its_seed_and_random_without_one(stores):
    pairs = SpectraPairs(*stores[:2])
    a, b = split(pairs, 0.3, 9), split(pairs, 0.3, 9)
    np.testing.assert_array_equal(a.validation, b.validation)
    c, d = split(pairs, 0.3, None), split(pairs, 0.3, None)
    assert c.seed != d.seed
    np.testing.assert_array_equal(split(pairs, 0.3, c.seed).validation, c.validation)


def test_mismatched_stores_refused(stores, tmp_path):
    noisy, _, _, clean = stores
    with pytest.raises(ValueError, match="different galaxies"):
        SpectraPairs(noisy, clean.isel(galaxy=slice(0, 100)))
    with pytest.raises(TypeError, match="both"):
        SpectraPairs(noisy, clean["flux"].values)


def test_noise_drawn_again_every_training_epoch_validation_keeps_the_stored_draw(tmp_path):
    _, mem_clean = datasets(120, seed=4)
    write_store(mem_clean.chunk({"galaxy": 40}), tmp_path / "clean.zarr", progress=False)
    clean = open_store(tmp_path / "clean.zarr")
    write_store(degrade(clean, UniformNoise(SIGMA), seed=8), tmp_path / "noisy.zarr", progress=False)
    noisy = open_store(tmp_path / "noisy.zarr")
    pairs = SpectraPairs(noisy, clean)
    pairs.redraw_noise()
    parts = split(pairs, 0.25, seed=2)
    train = batches(pairs, parts.train, 200, shuffle=True, seed=parts.seed)
    val = batches(pairs, parts.validation, 200, shuffle=False)
    record, edges = pairs.noise_record, Grid.from_dataset(mem_clean).edges
    stored = noisy["flux"].values
    seen = [{}, {}]
    for epoch in range(2):
        for i in range(len(train)):
            x, y, _ = train[i]
            rows = [int(np.argmin(np.abs(mem_clean["flux"].values - r).sum(1))) for r in y]
            # The input is this epoch's draw of the store's own noise, not the stored draw.
            drawn = record.draw(mem_clean.isel(galaxy=rows), edges, f"train-{parts.seed}-{epoch}")[0]
            np.testing.assert_array_equal(x, drawn)
            assert not np.allclose(x, stored[rows])
            seen[epoch].update(zip(rows, x, strict=True))
        train.on_epoch_end()
        for i in range(len(val)):  # held-out loss stays comparable between epochs
            x, y, _ = val[i]
            rows = [int(np.argmin(np.abs(mem_clean["flux"].values - r).sum(1))) for r in y]
            np.testing.assert_array_equal(x, stored[rows])
        val.on_epoch_end()
    row = int(parts.train[0])
    assert sorted(seen[0]) == parts.train.tolist()
    assert not np.array_equal(seen[0][row], seen[1][row])


def test_noise_is_drawn_again_only_from_a_degraded_store(stores):
    noisy, clean, mem_noisy, mem_clean = stores
    with pytest.raises(ValueError, match="Datasets .* not arrays"):
        SpectraPairs(mem_noisy["flux"].values, mem_clean["flux"].values).redraw_noise()
    with pytest.raises(ValueError, match="records no noise"):
        SpectraPairs(noisy, clean).redraw_noise()
