import json

import numpy as np
import pytest
import xarray as xr

from survey_denoise import GRID, Grid, SchemaError, make_spectra, validate
from survey_denoise.flags import DROP, Flag, count, describe, dropped
from survey_denoise.schema import add_provenance


@pytest.fixture
def rest():
    n = 4
    return make_spectra(np.ones((n, GRID.npix)), np.ones((n, GRID.npix)), GRID.wavelength,
                        [f"g{i}" for i in range(n)], np.full(n, 0.03), frame="rest")


def test_valid_dataset_passes(rest):
    assert validate(rest) is rest
    assert validate(rest.chunk(galaxy=2), frame="rest") is not None
    assert rest["mask"].dtype == bool and rest["flags"].dtype == np.uint32


@pytest.mark.parametrize("breakage, message", [
    (lambda ds: ds.drop_vars("ivar"), "'ivar' is missing"),
    (lambda ds: ds.assign(flux=ds.flux.astype("float64")), "'flux' has dtype float64"),
    (lambda ds: ds.assign(z=ds.z.astype("float32")), "'z' has dtype float32"),
    (lambda ds: ds.assign(flags=ds.flags.astype("int64")), "'flags' has dtype int64"),
    (lambda ds: ds.assign(norm=ds.flux), "'norm' has dims"),
    (lambda ds: ds.assign_coords(galaxy=["a", "a", "b", "c"]), "duplicate ids"),
    (lambda ds: ds.chunk(wavelength=100), "chunked along wavelength"),
    (lambda ds: ds.assign_attrs(norm_convention="max"), "norm_convention"),
])
def test_broken_datasets_are_refused_by_name(rest, breakage, message):
    with pytest.raises(SchemaError, match=message):
        validate(breakage(rest))


def test_frame_and_grid_checks(rest):
    with pytest.raises(SchemaError, match="needs 'observed'"):
        validate(rest, frame="observed")
    other = Grid(3700, 7900, 800)
    with pytest.raises(SchemaError, match="does not match the grid"):
        validate(rest, grid=other)
    wave = rest.wavelength.copy(data=rest.wavelength.values * 1.001)
    with pytest.raises(SchemaError, match="does not match"):
        validate(rest.assign_coords(wavelength=wave))
    recorded = rest.assign_attrs(grid=json.dumps(other.to_dict()))
    with pytest.raises(SchemaError, match="does not match"):
        validate(recorded)
    obs = rest.copy()
    obs["wavelength"].attrs["frame"] = "moon"
    with pytest.raises(SchemaError, match="frame"):
        validate(obs)


def test_where_prefixes_the_message(rest):
    with pytest.raises(SchemaError, match="^store.zarr: "):
        validate(rest.drop_vars("flux"), where="store.zarr")
    with pytest.raises(SchemaError, match="expected an xarray.Dataset"):
        validate(xr.DataArray([1]))


def test_provenance_appends(rest):
    attrs = add_provenance(rest.attrs, "preprocess", norm="l2")
    attrs = add_provenance(attrs, "degrade", sigma=0.04)
    steps = json.loads(attrs["provenance"])
    assert [s["step"] for s in steps] == ["preprocess", "degrade"]
    assert steps[0]["norm"] == "l2" and "version" in steps[0]
    assert "provenance" not in rest.attrs


def test_flags_helpers():
    f = np.array([0, Flag.NO_IVAR, Flag.BAD_FLUX | Flag.PARTIAL_COVERAGE, Flag.NO_REDSHIFT],
                 dtype=np.uint32)
    assert describe(f[2]) == ["BAD_FLUX", "PARTIAL_COVERAGE"]
    assert count(f) == {"NO_REDSHIFT": 1, "BAD_FLUX": 1, "NO_IVAR": 1, "PARTIAL_COVERAGE": 1}
    np.testing.assert_array_equal(dropped(f), [False, True, False, True])
    assert not (DROP & Flag.PARTIAL_COVERAGE)
    assert len({int(b) for b in Flag}) == len(Flag)
