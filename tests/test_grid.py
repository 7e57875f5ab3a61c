import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from survey_denoise.grid import C_KMS, GRID, Grid


def test_paper_grid():
    assert GRID.npix == 825
    np.testing.assert_array_equal(GRID.wavelength, np.geomspace(3700, 7900, 825))
    # about 276 km/s per pixel, about 6 A at H-alpha (DESIGN.md)
    assert 275 < GRID.velscale < 277
    i = np.searchsorted(GRID.wavelength, 6564.6)
    assert 5.5 < GRID.widths[i] < 6.5


def test_edges_bracket_centres_and_are_log_uniform():
    e = GRID.edges
    assert e.size == GRID.npix + 1
    assert np.all(e[:-1] < GRID.wavelength) and np.all(GRID.wavelength < e[1:])
    np.testing.assert_allclose(np.diff(np.log(e)), GRID.dlnlam, rtol=1e-9)
    assert GRID.velscale == pytest.approx(C_KMS * GRID.dlnlam)


def test_arrays_are_read_only():
    with pytest.raises(ValueError):
        GRID.wavelength[0] = 1.0


@given(st.floats(1000, 5000), st.floats(1.1, 3.0), st.integers(2, 3000))
def test_round_trips(wmin, ratio, npix):
    g = Grid(wmin, wmin * ratio, npix)
    assert Grid.from_dict(g.to_dict()) == g
    assert Grid.from_wavelength(g.wavelength) == g
    assert g.matches(g.wavelength)


def test_refuses_other_axes():
    assert not GRID.matches(np.linspace(3700, 7900, 825))
    assert not GRID.matches(GRID.wavelength[:-1])
    with pytest.raises(ValueError, match="not uniform in log"):
        Grid.from_wavelength(np.linspace(3700, 7900, 825))
    with pytest.raises(ValueError):
        Grid(7900, 3700, 825)


def _spectra(wavelength, **attrs):
    import xarray as xr

    return xr.Dataset(coords={"wavelength": ("wavelength", wavelength, {"frame": "rest"})}, attrs=attrs)


def test_from_dataset_reads_the_recorded_grid_else_the_paper_grid():
    other = Grid(3800, 7000, 300)
    assert Grid.from_dataset(_spectra(other.wavelength, grid=json.dumps(other.to_dict()))) == other
    assert Grid.from_dataset(_spectra(np.array(GRID.wavelength))) == GRID


@pytest.mark.parametrize("wavelength, attrs, message", [
    (Grid(3800, 7000, 300).wavelength, {}, "does not match the paper grid"),
    (GRID.wavelength, {"grid": '{"wave_min": 3700}'}, "not a grid description"),
    (GRID.wavelength, {"grid": "not json"}, "not a grid description"),
    (GRID.wavelength * 1.001, {}, "does not match"),
])
def test_from_dataset_refuses_what_it_cannot_read(wavelength, attrs, message):
    with pytest.raises(ValueError, match=message):
        Grid.from_dataset(_spectra(np.array(wavelength), **attrs))
