"""Input checks shared by the public functions: backends, finite arrays, densities, masks and
supports.

Each check either returns its input in the form the kernels read (C-contiguous float64, uint8
masks) or raises an error that names the parameter and the value: ``TypeError`` for a wrong
type or dtype, ``ValueError`` for a wrong shape or value.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BACKENDS",
    "check_backend",
    "check_density",
    "check_finite_array",
    "check_fixed",
    "check_int",
    "check_mask",
]

BACKENDS = ("cpp", "python")


def check_backend(backend: str) -> None:
    """Raise ``ValueError`` unless ``backend`` is one of :data:`BACKENDS`.

    Examples
    --------
    >>> check_backend("fortran")
    Traceback (most recent call last):
    ...
    ValueError: backend must be one of ('cpp', 'python'), got 'fortran'
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def check_int(name: str, value: object, low: int) -> int:
    """``value`` as an int, refusing other types (bool included) and values below ``low``.

    Examples
    --------
    >>> check_int("stride", np.int64(4), 1)
    4
    >>> check_int("stride", 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: stride must be >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_finite_array(name: str, value: object, ndim: int) -> np.ndarray:
    """Validate an ``ndim``-D array of finite real numbers and return it as C-contiguous float64.

    Parameters
    ----------
    name : str
        The parameter's name, for the error message.
    value : object
        What the caller passed.
    ndim : int
        The number of dimensions it must have.

    Returns
    -------
    ndarray of float64

    Raises
    ------
    TypeError
        If ``value`` is not a numpy array of real (integer or floating) numbers.
    ValueError
        If it has another number of dimensions, or holds NaN or infinite values.

    Examples
    --------
    >>> check_finite_array("forces", np.array([[1, 2]]), 2).dtype
    dtype('float64')
    """
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {value.shape}")
    if not np.issubdtype(value.dtype, np.floating) and not np.issubdtype(value.dtype, np.integer):
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    array = np.ascontiguousarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def check_density(density: object, name: str = "density") -> np.ndarray:
    """Validate a density image (``name`` in the messages) and return it as C-contiguous
    float64 (ny, nx).

    Raises
    ------
    TypeError
        If ``density`` is not a numpy array of real numbers.
    ValueError
        If it is not 2-D, is empty, holds NaN/inf or values outside [0, 1].

    Examples
    --------
    >>> check_density(np.array([[0.0, 1.5]]))
    Traceback (most recent call last):
    ...
    ValueError: density must lie in [0, 1], got values in [0, 1.5]
    """
    array = check_finite_array(name, density, 2)
    if array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    low, high = array.min(), array.max()
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{low:g}, {high:g}]")
    return array


def check_mask(mask: object, shape: tuple[int, int]) -> np.ndarray:
    """Validate an element mask against an image shape and return it as C-contiguous uint8.

    ``None`` means every element.

    Raises
    ------
    TypeError
        If ``mask`` is not a bool numpy array.
    ValueError
        If its shape is not ``shape``, or no element is in it.

    Examples
    --------
    >>> check_mask(None, (1, 2))
    array([[1, 1]], dtype=uint8)
    """
    if mask is None:
        return np.ones(shape, dtype=np.uint8)
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a numpy array, got {type(mask).__name__}")
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be a bool array, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"mask must have the image shape {shape}, got {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: no element is in the model")
    return np.ascontiguousarray(mask, dtype=np.uint8)


def check_fixed(fixed: object) -> np.ndarray:
    """Validate the prescribed-zero DOFs, a bool array (ny+1, nx+1, 2), and return it.

    Raises
    ------
    TypeError
        If ``fixed`` is not a bool numpy array.
    ValueError
        If its shape is not (ny+1, nx+1, 2) with ny, nx >= 1.

    Examples
    --------
    >>> check_fixed(np.zeros((2, 2, 3), bool))
    Traceback (most recent call last):
    ...
    ValueError: fixed must have shape (ny+1, nx+1, 2), got (2, 2, 3)
    """
    if not isinstance(fixed, np.ndarray):
        raise TypeError(f"fixed must be a numpy array, got {type(fixed).__name__}")
    if fixed.dtype != np.bool_:
        raise TypeError(f"fixed must be a bool array, got dtype {fixed.dtype}")
    if fixed.ndim != 3 or fixed.shape[2] != 2 or fixed.shape[0] < 2 or fixed.shape[1] < 2:
        raise ValueError(f"fixed must have shape (ny+1, nx+1, 2), got {fixed.shape}")
    return fixed
