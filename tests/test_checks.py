"""Input checks shared by every public function, whichever backend runs the kernel."""

import numpy as np
import pytest

from femsr import checks


def test_backends_are_cpp_and_python():
    for backend in ("cpp", "python"):
        checks.check_backend(backend)
    with pytest.raises(ValueError, match=r"backend must be one of \('cpp', 'python'\), got 'C'"):
        checks.check_backend("C")


def test_finite_array_comes_back_as_c_contiguous_float64():
    value = np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))
    array = checks.check_finite_array("forces", value, 2)
    assert array.dtype == np.float64 and array.flags.c_contiguous
    np.testing.assert_array_equal(array, [[0, 1, 2], [3, 4, 5]])
    ready = np.zeros((2, 2))
    assert checks.check_finite_array("u", ready, 2) is ready  # no copy when none is needed


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ([1.0, 2.0], TypeError, "cost must be a numpy array, got list"),
        (np.zeros(3), ValueError, r"cost must be 2-D, got shape \(3,\)"),
        (np.zeros((2, 2), dtype=bool), TypeError, "cost must hold real numbers, got dtype bool"),
        (np.array([[1.0, np.inf]]), ValueError, "cost contains NaN or infinite values"),
        (np.array([[np.nan]]), ValueError, "cost contains NaN"),
    ],
)
def test_bad_arrays_are_named(value, error, match):
    with pytest.raises(error, match=match):
        checks.check_finite_array("cost", value, 2)


def test_density_in_the_unit_interval_passes():
    density = checks.check_density(np.array([[0, 1]], dtype=np.uint8))
    assert density.dtype == np.float64 and density.tolist() == [[0.0, 1.0]]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.array([[0.5, 1.0 + 1e-12]]), r"density must lie in \[0, 1\], got values in \[0.5, 1\]"),
        (np.array([[-0.25, 0.5]]), r"got values in \[-0.25, 0.5\]"),
        (np.zeros((3, 0)), r"density must not be empty, got shape \(3, 0\)"),
    ],
)
def test_bad_densities_are_named(value, match):
    with pytest.raises(ValueError, match=match):
        checks.check_density(value)


def test_mask_becomes_uint8_and_none_means_every_element():
    np.testing.assert_array_equal(checks.check_mask(None, (2, 3)), np.ones((2, 3), np.uint8))
    mask = checks.check_mask(np.array([[True, False]]), (1, 2))
    assert mask.dtype == np.uint8 and mask.tolist() == [[1, 0]]


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ([[True]], TypeError, "mask must be a numpy array, got list"),
        (np.ones((1, 2), dtype=np.uint8), TypeError, "mask must be a bool array, got dtype uint8"),
        (np.ones((2, 1), dtype=bool), ValueError, r"image shape \(1, 2\), got \(2, 1\)"),
        (np.zeros((1, 2), dtype=bool), ValueError, "mask is empty"),
    ],
)
def test_bad_masks_are_named(value, error, match):
    with pytest.raises(error, match=match):
        checks.check_mask(value, (1, 2))


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (None, TypeError, "fixed must be a numpy array, got NoneType"),
        (np.zeros((3, 3, 2), dtype=int), TypeError, "fixed must be a bool array, got dtype int"),
        (np.zeros((1, 3, 2), dtype=bool), ValueError, r"\(ny\+1, nx\+1, 2\), got \(1, 3, 2\)"),
        (np.zeros((3, 3), dtype=bool), ValueError, r"got \(3, 3\)"),
    ],
)
def test_bad_supports_are_named(value, error, match):
    with pytest.raises(error, match=match):
        checks.check_fixed(value)
    held = np.zeros((3, 3, 2), dtype=bool)
    assert checks.check_fixed(held) is held
