"""Quilting of overlapping patches along minimum-error seams (Efros & Freeman 2001).

The network predicts HR patches on a regular grid whose neighbours overlap. :func:`quilt` joins
them into one image, in two passes as in ``cpp/seam.hpp``: the patches of each grid row are joined
left to right into a strip, cutting every overlap of two horizontal neighbours along a vertical
seam; the strips are then joined top to bottom along horizontal seams cut on their overlaps. A
seam is the cheapest 8-connected path across the error surface ``e = (A - B)²`` of the two items
in the overlap (:func:`min_error_seam`, Dijkstra's algorithm on the pixel grid, so a seam may run
sideways and back up); pixels on the earlier item's side of it keep the earlier item, the others,
the seam included, take the later one. Where three or four patches meet, the vertical seams have
already settled the strips, and the horizontal seam decides between them, so every pixel comes
from exactly one patch. Two other methods serve the ablation of the paper (Fig. 3): ``"average"``
blends linearly across each overlap, ``"cut"`` cuts straight through its middle.

Every kernel (seam search, seam masks, composition) is compiled C++ with OpenMP over the
overlaps, with a pure numpy/:mod:`heapq` twin in :mod:`femsr.reference.quilt` selected by
``backend="python"``; both give the same seams and the same image.
"""

from __future__ import annotations

import numbers
from typing import Literal, overload

import numpy as np

from femsr import _kernels
from femsr.checks import check_backend, check_finite_array

__all__ = ["METHODS", "min_error_seam", "quilt", "seam_mask"]

METHODS = ("seam", "average", "cut")


# ---------------------------------------------------------------------------------------------
# Seams


def _check_cost(cost: object) -> np.ndarray:
    array = check_finite_array("cost", cost, 2)
    if array.size == 0:
        raise ValueError(f"cost must not be empty, got shape {array.shape}")
    if array.min() < 0.0:
        raise ValueError(f"cost must be >= 0 for Dijkstra's algorithm, got minimum {array.min():g}")
    return array


def min_error_seam(cost: np.ndarray, backend: str = "cpp") -> np.ndarray:
    """Minimum-cost 8-connected path of pixels from the top row to the bottom row.

    The cost of a path is the sum of the costs of its pixels. The path is found by Dijkstra's
    algorithm on the whole pixel grid (each pixel linked to its 8 neighbours), so it may run
    sideways and back up rather than take one pixel per row. Among paths of equal cost the search
    settles pixels in the order (distance, row, column), which both backends share, so they return
    the same path. A horizontal seam (left column to right column) is ``seam[:, ::-1]`` of the
    seam of ``cost.T``.

    Parameters
    ----------
    cost : ndarray, shape (ny, nx)
        Finite cost of every pixel, >= 0 (e.g. the overlap error ``(A - B)**2``).
    backend : {"cpp", "python"}
        Compiled Dijkstra (C++, radix heap), or its :mod:`heapq` twin
        :func:`femsr.reference.quilt.min_error_seam`.

    Returns
    -------
    ndarray of int64, shape (n, 2)
        The (row, column) pixels of the path from row 0 to row ny-1, consecutive pixels
        8-neighbours; it meets row 0 and row ny-1 once each.

    Raises
    ------
    TypeError
        If ``cost`` is not a numpy array of real numbers.
    ValueError
        If ``cost`` is not 2-D, is empty, holds NaN/inf or negative values, or every path sums
        to infinity in floating point (scale the cost down).

    See Also
    --------
    femsr.reference.quilt.min_error_seam : the pure-Python twin.
    seam_mask : which side of the seam each pixel is on.

    Examples
    --------
    >>> cost = np.array([[5.0, 1.0, 5.0], [5.0, 5.0, 1.0], [5.0, 1.0, 5.0]])
    >>> min_error_seam(cost).tolist()
    [[0, 1], [1, 2], [2, 1]]
    """
    check_backend(backend)
    seam = _kernels.min_error_seam(_check_cost(cost), backend)
    if seam is None:
        raise ValueError(
            "the seam cost overflows: every path sums to infinity (scale the cost down)"
        )
    return seam


def _check_shape(name: str, shape: object) -> tuple[int, int]:
    if (
        not isinstance(shape, tuple | list)
        or len(shape) != 2
        or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in shape)
    ):
        raise TypeError(f"{name} must be a pair of integers (rows, columns), got {shape!r}")
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 1 or cols < 1:
        raise ValueError(f"{name} must be positive, got {(rows, cols)}")
    return rows, cols


def _check_seam(seam: object, shape: tuple[int, int]) -> np.ndarray:
    if not isinstance(seam, np.ndarray):
        raise TypeError(f"seam must be a numpy array, got {type(seam).__name__}")
    if not np.issubdtype(seam.dtype, np.integer):
        raise TypeError(f"seam must hold integer pixel indices, got dtype {seam.dtype}")
    if seam.ndim != 2 or seam.shape[1] != 2 or len(seam) == 0:
        raise ValueError(f"seam must have shape (n, 2) with n >= 1, got {seam.shape}")
    rows, cols = shape
    if seam.min() < 0 or seam[:, 0].max() >= rows or seam[:, 1].max() >= cols:
        raise ValueError(f"seam leaves the {rows}x{cols} surface")
    if seam[0, 0] != 0 or seam[-1, 0] != rows - 1:
        raise ValueError(f"seam must run from row 0 to row {rows - 1}")
    steps = np.abs(np.diff(seam, axis=0)).max(axis=1)
    if (steps != 1).any():
        k = int(np.flatnonzero(steps != 1)[0])
        raise ValueError(f"seam must be 8-connected: pixels {k} and {k + 1} are not neighbours")
    return np.ascontiguousarray(seam, dtype=np.int64)


def seam_mask(seam: np.ndarray, shape: tuple[int, int], backend: str = "cpp") -> np.ndarray:
    """Which side of a top-to-bottom seam each pixel is on.

    An 8-connected path from the top row to the bottom row cuts every 4-connected path from the
    left column to the right column, so it splits the surface: pixels 4-connected to column 0
    without crossing the seam get 0 (they keep the earlier, left item), all others, the seam
    included, get 1 (they take the later, right item).

    Parameters
    ----------
    seam : ndarray of int, shape (n, 2)
        (row, column) pixels from row 0 to row ``shape[0] - 1``, consecutive pixels 8-neighbours
        (as :func:`min_error_seam` returns).
    shape : tuple of int
        (ny, nx) of the surface.
    backend : {"cpp", "python"}
        Compiled flood fill, or its twin :func:`femsr.reference.quilt.seam_mask`
        (``scipy.ndimage.label``).

    Returns
    -------
    ndarray of uint8, shape (ny, nx)

    Raises
    ------
    TypeError
        If ``seam`` is not an integer array or ``shape`` not a pair of integers.
    ValueError
        If ``shape`` is not positive, or ``seam`` has the wrong shape, leaves the surface, does
        not run from the top row to the bottom row, or is not 8-connected.

    See Also
    --------
    femsr.reference.quilt.seam_mask : the scipy twin.

    Examples
    --------
    >>> seam_mask(np.array([[0, 1], [1, 2], [2, 1]]), (3, 4))
    array([[0, 1, 1, 1],
           [0, 0, 1, 1],
           [0, 1, 1, 1]], dtype=uint8)
    """
    check_backend(backend)
    shape = _check_shape("shape", shape)
    return _kernels.seam_mask(_check_seam(seam, shape), shape, backend)


# ---------------------------------------------------------------------------------------------
# Quilting


def _check_patches(patches: object) -> np.ndarray:
    array = check_finite_array("patches", patches, 4)
    nr, nc, rows, cols = array.shape
    if rows != cols or rows < 2:
        raise ValueError(
            f"patches must have shape (nr, nc, P, P) with square patches of P >= 2 pixels, "
            f"got {array.shape}"
        )
    if nr < 1 or nc < 1:
        raise ValueError(f"patches holds no patch, got shape {array.shape}")
    return array


def _check_stride(stride: object, patch: int) -> int:
    if not isinstance(stride, numbers.Integral) or isinstance(stride, bool):
        raise TypeError(f"stride must be an integer (pixels), got {stride!r}")
    low, step = (patch + 1) // 2, int(stride)
    if not low <= step < patch:
        raise ValueError(
            f"stride must lie in [{low}, {patch}) for patches of {patch} pixels (overlap = "
            f"P - stride between 1 and the stride), got {step}"
        )
    return step


def _straight_masks(overlap: int, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Masks of a straight cut through the middle of every overlap (``axis`` runs across it)."""
    across = np.arange(overlap) >= overlap // 2
    line = across.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return np.ascontiguousarray(np.broadcast_to(line, shape), dtype=np.uint8)


@overload
def quilt(
    patches: np.ndarray,
    stride: int,
    *,
    method: str = ...,
    shape: tuple[int, int] | None = ...,
    return_owner: Literal[False] = ...,
    backend: str = ...,
) -> np.ndarray: ...
@overload
def quilt(
    patches: np.ndarray,
    stride: int,
    *,
    method: str = ...,
    shape: tuple[int, int] | None = ...,
    return_owner: Literal[True],
    backend: str = ...,
) -> tuple[np.ndarray, np.ndarray]: ...
def quilt(
    patches: np.ndarray,
    stride: int,
    *,
    method: str = "seam",
    shape: tuple[int, int] | None = None,
    return_owner: bool = False,
    backend: str = "cpp",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Join a regular grid of overlapping patches into one image.

    Patch ``(r, c)`` covers rows ``r*stride .. r*stride+P-1`` and columns
    ``c*stride .. c*stride+P-1`` of a canvas of ``(nr-1)*stride + P`` by ``(nc-1)*stride + P``
    pixels; neighbours overlap by ``P - stride`` pixels, at most the stride, so a pixel lies in
    at most four patches. Pixels inside one patch only are that patch's pixels; in an overlap
    the method decides:

    * ``"seam"``: minimum-error seams (:func:`min_error_seam` on ``(A - B)**2``), vertical ones
      between the horizontal neighbours of each grid row, then horizontal ones between the
      joined rows (strips); each pixel comes from exactly one patch.
    * ``"cut"``: a straight cut through the middle of each overlap, the same two passes.
    * ``"average"``: a linear blend, the weight of the later patch rising from ``1/(overlap+1)``
      to ``overlap/(overlap+1)`` across the overlap.

    Where the patches agree all three give their common value exactly.

    Parameters
    ----------
    patches : ndarray, shape (nr, nc, P, P)
        The patches, finite real values (e.g. HR densities).
    stride : int
        Offset between neighbouring patches (pixels), ``ceil(P/2) <= stride < P``.
    method : {"seam", "average", "cut"}
        How overlaps are resolved.
    shape : tuple of int, optional
        (rows, columns) of the output: the top left corner of the canvas. Default: all of it.
    return_owner : bool
        Also return the patch each pixel comes from (``"seam"`` and ``"cut"`` only).
    backend : {"cpp", "python"}
        Compiled kernels (OpenMP over the overlaps and rows), or their twins in
        :mod:`femsr.reference.quilt`.

    Returns
    -------
    image : ndarray of float64, shape ``shape``
    owner : ndarray of int32, shape ``shape``
        Only with ``return_owner``: the flat index ``r*nc + c`` of the patch each pixel is taken
        from.

    Raises
    ------
    TypeError
        If ``patches`` is not a numpy array of real numbers, or ``stride``/``shape`` not integers.
    ValueError
        On a wrong shape of ``patches``, NaN/inf, ``stride`` out of range, ``shape`` larger than
        the canvas, an unknown method or backend, ``return_owner`` with ``"average"``, or an
        error surface that overflows.

    See Also
    --------
    femsr.reference.quilt : the pure-Python twins of the kernels.

    Examples
    --------
    >>> canvas = np.arange(10.0 * 14.0).reshape(10, 14)
    >>> patches = np.array([[canvas[r : r + 6, c : c + 6] for c in (0, 4, 8)] for r in (0, 4)])
    >>> image, owner = quilt(patches, 4, return_owner=True)
    >>> bool(np.array_equal(image, canvas)), owner.shape, sorted(set(owner.ravel().tolist()))
    (True, (10, 14), [0, 1, 2, 3, 4, 5])
    >>> quilt(patches, 4, method="average", shape=(8, 8)).shape
    (8, 8)
    """
    check_backend(backend)
    array = _check_patches(patches)
    nr, nc, patch, _ = array.shape
    stride = _check_stride(stride, patch)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if return_owner and method == "average":
        raise ValueError("return_owner needs method 'seam' or 'cut': 'average' blends patches")
    canvas = ((nr - 1) * stride + patch, (nc - 1) * stride + patch)
    out_shape = canvas if shape is None else _check_shape("shape", shape)
    if out_shape[0] > canvas[0] or out_shape[1] > canvas[1]:
        raise ValueError(
            f"shape must fit in the canvas {canvas} the patches cover, got {out_shape}"
        )
    overlap = patch - stride
    width = canvas[1]
    ramp = np.arange(1, overlap + 1) / (overlap + 1) if method == "average" else None

    if method == "cut":
        column_masks: np.ndarray | None = _straight_masks(overlap, (nr, nc - 1, patch, overlap), 3)
    elif method == "seam":
        column_masks = _kernels.vertical_seam_masks(array, stride, backend)
    else:
        column_masks = None
    strips, strip_owner = _kernels.compose_columns(
        array, stride, column_masks, ramp, return_owner, backend
    )

    if method == "cut":
        row_masks: np.ndarray | None = _straight_masks(overlap, (nr - 1, overlap, width), 1)
    elif method == "seam":
        row_masks = _kernels.horizontal_seam_masks(strips, stride, backend)
    else:
        row_masks = None
    image, owner = _kernels.compose_rows(
        strips, nc, stride, row_masks, ramp, strip_owner, out_shape, backend
    )
    if return_owner:
        assert owner is not None
        return image, owner
    return image
