"""Combining a de-noised line with the same line in the de-noiser's input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from survey_denoise import lines
from survey_denoise.fitting.combine import combine_catalogues, combine_lines, noise_gain
from survey_denoise.flags import Flag

NORM = 50.0


def catalogue(flux: dict[str, np.ndarray], err: dict[str, np.ndarray], method: str = "fast") -> pd.DataFrame:
    """A catalogue with the given lines (the others NaN), normalised columns at ``NORM``."""
    n = len(next(iter(flux.values())))
    cols = {"galaxy": np.array([f"g{i:05d}" for i in range(n)]), "norm": np.full(n, NORM),
            "method": np.full(n, method, dtype=object)}
    for key in lines.catalogue_keys():
        f = flux.get(key, np.full(n, np.nan))
        e = err.get(key, np.full(n, np.nan))
        cols.update({f"{key}_flux": f, f"{key}_flux_err": e, f"{key}_flux_err_stat": 0.8 * e,
                     f"{key}_flux_norm": f / NORM, f"{key}_flux_norm_err": e / NORM, f"{key}_snr": f / e,
                     f"{key}_status": np.zeros(n, np.uint32)})
    return pd.DataFrame(cols)


def draws(n: int, gain: float, seed: int):
    """Truth, target, input and de-noised Halpha: the de-noised flux follows ``gain`` of the
    input's noise and carries an error of its own."""
    rng = np.random.default_rng(seed)
    true = rng.lognormal(3.0, 0.5, n)
    s_t, s_a, s_own = 0.5, 8.0, 5.0
    o, a = rng.normal(0, s_t, n), rng.normal(0, s_a, n)
    target, noisy = true + o, true + o + a
    den = true + gain * (o + a) + rng.normal(0, s_own, n)
    s_in = np.hypot(s_t, s_a)
    s_den = np.hypot(gain * s_in, s_own)
    full = lambda v: np.full(n, v)  # noqa: E731
    return (true, catalogue({"halpha": target}, {"halpha": full(s_t)}),
            catalogue({"halpha": noisy}, {"halpha": full(s_in)}),
            catalogue({"halpha": den}, {"halpha": full(s_den)}, "fast+denoised"))


@pytest.mark.parametrize("gain", [0.0, 0.4])
def test_gain_is_recovered_and_the_combination_beats_both_with_honest_errors(gain):
    _, target, noisy, den = draws(20_000, gain, seed=1)
    measured = noise_gain(den, noisy, target, keys=["halpha"])["halpha"]
    assert measured == pytest.approx(gain, abs=0.03)

    true, _, noisy, den = draws(20_000, gain, seed=2)
    both = combine_lines(den, noisy, {"halpha": measured})
    rms = {name: float(np.sqrt(np.mean((c["halpha_flux"] - true) ** 2)))
           for name, c in (("noisy", noisy), ("den", den), ("both", both))}
    assert rms["both"] < 0.99 * min(rms["noisy"], rms["den"]), rms
    z = np.abs(both["halpha_flux"] - true) / both["halpha_flux_err"]
    assert np.mean(z < 1) == pytest.approx(0.6827, abs=0.015)
    assert np.mean(z < 2) == pytest.approx(0.9545, abs=0.01)
    # The stated error is the spread the combination has, and the units agree.
    assert np.median(both["halpha_flux_err"]) == pytest.approx(rms["both"], rel=0.03)
    np.testing.assert_allclose(both["halpha_flux_norm"] * NORM, both["halpha_flux"], rtol=1e-12)
    np.testing.assert_allclose(both["halpha_snr"], both["halpha_flux"] / both["halpha_flux_err"])
    assert ((both["halpha_weight"] > 0) & (both["halpha_weight"] < 1)).all()
    assert (both["method"] == "combined:fast").all()


def test_a_negative_gain_counts_as_none_and_the_stated_error_stays_wide_enough():
    _, target, noisy, den = draws(20_000, -0.2, seed=4)
    measured = noise_gain(den, noisy, target, keys=["halpha"])["halpha"]
    assert measured == pytest.approx(-0.2, abs=0.03)
    true, _, noisy, den = draws(20_000, -0.2, seed=5)
    both = combine_lines(den, noisy, {"halpha": measured})
    z = np.abs(both["halpha_flux"] - true) / both["halpha_flux_err"]
    assert 0.70 < np.mean(z < 1) < 0.80
    # A correlation measured at or near 1 is held below it: the error never collapses to 0.
    steep = combine_lines(den, noisy, {"halpha": 50.0})
    assert (steep["halpha_flux_err"] > 0.1 * np.minimum(den["halpha_flux_err"], noisy["halpha_flux_err"])).all()


def test_lines_one_side_lacks_keep_the_other_and_bits_carry_over():
    _, _, noisy, den = draws(6, 0.2, seed=3)
    noisy.loc[0, ["halpha_flux", "halpha_flux_err"]] = np.nan  # the input does not cover it
    den.loc[1, "halpha_status"] = np.uint32(Flag.LINE_NOT_IN_INPUT)
    both = combine_lines(den, noisy, {"halpha": 0.2})
    assert both.loc[0, "halpha_flux"] == den.loc[0, "halpha_flux"] and both.loc[0, "halpha_weight"] == 1
    assert both.loc[1, "halpha_status"] == Flag.LINE_NOT_IN_INPUT
    # A line with no gain measured keeps the input's value; lines neither measured stay NaN.
    alone = combine_lines(den, noisy, {})
    np.testing.assert_array_equal(alone["halpha_flux"].to_numpy()[1:], noisy["halpha_flux"].to_numpy()[1:])
    assert alone["hbeta_flux"].isna().all() and alone["hbeta_weight"].isna().all()
    with pytest.raises(ValueError, match="same galaxies"):
        combine_lines(den.iloc[::-1], noisy, {"halpha": 0.2})


def as_store(frame: pd.DataFrame, chunk: int, **attrs) -> xr.Dataset:
    """A catalogue frame as a chunked catalogue store's Dataset."""
    ds = xr.Dataset({c: ("galaxy", frame[c].to_numpy(), {"units": "u"} if c.endswith("_flux") else {})
                     for c in frame.columns if c != "galaxy"},
                    coords={"galaxy": frame["galaxy"].to_numpy()})
    ds.attrs = attrs
    return ds.chunk({"galaxy": chunk})


def test_catalogue_stores_combine_chunk_by_chunk_with_the_gains_the_denoised_one_carries():
    _, _, noisy, den = draws(500, 0.3, seed=3)
    gain = {"halpha": 0.3}
    denoised = json.dumps([{"step": "denoise"}, {"step": "fit"}])
    out = combine_catalogues(as_store(den, 120, denoise_line_noise_gain=json.dumps(gain), provenance=denoised),
                             as_store(noisy, 200, provenance="[]"))
    assert out.chunks["galaxy"] == (120, 120, 120, 120, 20)
    assert "best linear unbiased" in out.attrs["flux_err_rule"]
    assert json.loads(out.attrs["provenance"])[-1]["gain"] == gain
    assert out["halpha_flux"].attrs == {"units": "u"} and "weight" in out["halpha_weight"].attrs["description"]
    frame = out.compute().to_dataframe().reset_index()
    expected = combine_lines(den, noisy, gain)
    for col in ("halpha_flux", "halpha_flux_err", "halpha_flux_norm_err", "halpha_weight", "halpha_snr"):
        np.testing.assert_allclose(frame[col], expected[col], rtol=1e-12, err_msg=col)
    assert set(frame["method"]) == {"combined:fast"}


def test_catalogue_stores_without_gains_or_of_other_galaxies_are_refused():
    _, _, noisy, den = draws(50, 0.3, seed=4)
    with pytest.raises(ValueError, match="not of de-noised spectra"):
        combine_catalogues(as_store(den, 25), as_store(noisy, 25))
    with pytest.raises(ValueError, match="no line noise gains.*recalibrate"):
        combine_catalogues(as_store(den, 25, provenance='[{"step": "denoise"}]'), as_store(noisy, 25))
    with pytest.raises(ValueError, match="same galaxies"):
        combine_catalogues(as_store(den, 25), as_store(noisy.iloc[::-1].reset_index(drop=True), 25),
                           gain={"halpha": 0.3})
