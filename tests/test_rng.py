import numpy as np

from survey_denoise import rng


def test_streams_depend_on_galaxy_not_position():
    ids = np.array([5, 17, 3, 99])
    a = rng.standard_normal(1, "noise", ids, 50)
    b = rng.standard_normal(1, "noise", ids[::-1], 50)[::-1]
    np.testing.assert_array_equal(a, b)
    split = np.concatenate([rng.standard_normal(1, "noise", ids[:1], 50),
                            rng.standard_normal(1, "noise", ids[1:], 50)])
    np.testing.assert_array_equal(a, split)


def test_streams_differ_by_seed_purpose_and_id():
    base = rng.galaxy_rng(1, "noise", "39633345008634465").standard_normal(8)
    assert not np.allclose(base, rng.galaxy_rng(2, "noise", "39633345008634465").standard_normal(8))
    assert not np.allclose(base, rng.galaxy_rng(1, "mock", "39633345008634465").standard_normal(8))
    assert not np.allclose(base, rng.galaxy_rng(1, "noise", "39633345008634466").standard_normal(8))
    assert rng.standard_normal(0, "x", ["a", "b"], 3).dtype == np.float32
