"""Training data: downscaling, displacement channels, patch pairs, storage and a torch Dataset.

The network's input is a window of the 500 µm (LR) image and the displacement field the LR
image has under the femur's load cases; its target is the 50 µm (HR) window ten times larger.
This module builds those pairs from the femur images that :mod:`femsr.generate` grows:

1. :func:`downscale`: LR density = mean of each ``factor`` x ``factor`` HR block, the HR image
   first padded with void (0) at the **bottom and right** to a multiple of ``factor``, the way
   :func:`femsr.femur.grid_shape` lets a coarse grid overhang the box. Mass is preserved:
   ``lr.sum() * factor**2 == hr.sum()``.
2. FE on the LR image (:func:`femsr.fem.solve` with the femur's
   ``femur.problem(lr_pixel_size)``) gives nodal displacements ``(ncases, ny+1, nx+1, 2)``;
   :func:`displacement_channels` turns them into pixel channels (mean of each pixel's four
   corner nodes, zero outside the FE mask) and :func:`lr_inputs` stacks them after the density:
   ``[density, ux_0, uy_0, ux_1, uy_1, ...]`` (x to the right, y **up**, as in :mod:`femsr.fem`).
3. :func:`patch_grid` lays windows of ``patch`` LR pixels at ``stride`` over the image, the last
   ones overhanging the bottom/right edge, which is padded with void: the grid
   :func:`femsr.quilt.quilt` joins (``shape=`` crops the canvas back to the image). The HR window
   of LR corner ``(r, c)`` starts at ``(r * factor, c * factor)`` and is ``patch * factor`` wide
   (12 LR px at stride 8 → 120 HR px at stride 80). :func:`window_mask` drops windows wholly
   outside the femur.
4. :func:`normalize_displacement`, per patch (:data:`NORMALIZATION`): from each case's (ux, uy)
   its mean over the patch's FE-mask pixels is subtracted (the rigid translation), then all
   displacement channels of the patch are divided by the largest vector length ``|u|`` over its
   pixels and cases, so ``max |u| = 1``. The input is therefore unchanged by a rigid translation
   of any case and by scaling all loads (or ``E0``) by one factor: a user's loads of another
   magnitude give the same input. The ratio between the cases is kept (it says which case
   dominates where). Rigid rotation is not removed.
5. :func:`transform` is the dihedral augmentation (mirror, quarter turns) acting on the density
   and, consistently, on the displacement vectors: a left-right mirror negates ux, an up-down
   mirror negates uy, a counter-clockwise quarter turn maps (ux, uy) to (-uy, ux). It commutes
   with the normalization, so augmenting stored (normalized) patches is exact.
6. :func:`build_dataset` writes a dataset folder, femur by femur, resumable;
   :class:`PatchDataset` (torch, imported lazily) reads it through memory maps.

Dataset folder
--------------
``index.json``
    Format, settings (patch, stride, factor, dtypes, material), :data:`NORMALIZATION`, channel
    names, and per femur: name, split, pair count, file names, LR shape, FE statistics, the
    fingerprint of the femur it was cut from; the pair counts per split. Rewritten atomically
    after each femur, which is what makes a femur "done".
``<name>.lr.npy``
    ``(n, 1 + 2*ncases, patch, patch)`` normalized LR inputs, float16 (default; absolute error
    at most 2.4e-4 on the density and 4.9e-4 on displacements in [-1, 1]) or float32.
``<name>.hr.npy``
    ``(n, 1, patch*factor, patch*factor)`` HR density, uint8 (default, ``round(255 * rho)``:
    error at most 1/510 = 0.002) or float16 (at most 2.4e-4).
``<name>.corners.npy``
    ``(n, 2)`` int32 LR (row, column) of each window's top-left corner.

A full-size femur (208 x 189 LR) at stride 8 gives about 300 pairs; ~1M pairs need a smaller
training stride (the windows need not tile the way reconstruction does).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from femsr import fem
from femsr.defaults import TISSUE_MODULUS
from femsr.femur import Problem
from femsr.io import FemurImage, atomic_write, load_femur

# PatchDataset (torch) is created on first access and stays out of __all__, so that a star
# import does not load torch either.
__all__ = [
    "NORMALIZATION",
    "build_dataset",
    "displacement_channels",
    "downscale",
    "downscale_femur",
    "extract_patches",
    "load_index",
    "lr_displacement",
    "lr_inputs",
    "lr_patches",
    "normalize_displacement",
    "patch_grid",
    "transform",
    "window_mask",
]

FORMAT = "femsr.patch-dataset/1"
INDEX = "index.json"
SPLITS = ("train", "test")
LR_DTYPES = ("float16", "float32")
HR_DTYPES = ("uint8", "float16", "float32")
NORMALIZATION = (
    "per patch and load case, the mean (ux, uy) over the patch's FE-mask pixels is subtracted; "
    "then all displacement channels of the patch are divided by the largest |u| over its pixels "
    "and cases (zero where that is below 1e-9 of the raw largest |u|); zero outside the mask"
)
# Below this fraction of the raw displacement, what is left after removing the translation is
# rounding noise (a patch that only translates), which scaling would blow up to 1.
_NOISE = 1e-9
_CHUNK = 512  # windows extracted and written at once: bounds memory for any stride
# A full-size LR femur has ~37k unknowns; SuperLU solves it in 0.7 s, GMG-CG needs 1.6 s
# (and 17 s with Emin = 1e-9 E0), so LR images are factorized up to this size.
_DIRECT_BELOW = 200_000
# LR FE material of the training data (build_dataset's defaults; reconstruct must use the same):
# Poisson's ratio, SIMP exponent, void modulus / E0 (the tissue modulus is TISSUE_MODULUS).
_NU = 0.3
_PENAL = 3.0
_VOID_MODULUS = 1e-3


# ---------------------------------------------------------------------------------------------
# Checks


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_image(name: str, value: object, ndim: int) -> np.ndarray:
    array = fem._check_finite_array(name, value, ndim)
    if array.shape[-1] == 0 or array.shape[-2] == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    return array


def _check_channels(array: np.ndarray) -> int:
    """Number of load cases of a ``(..., 1 + 2*ncases, H, W)`` array."""
    if array.ndim < 3 or array.shape[-3] % 2 != 1:
        raise ValueError(
            f"channels must be (..., 1 + 2*ncases, H, W): density then (ux, uy) per case, got "
            f"shape {array.shape}"
        )
    return (array.shape[-3] - 1) // 2


# ---------------------------------------------------------------------------------------------
# Images


def downscale(hr: np.ndarray, factor: int = 10) -> np.ndarray:
    """LR density: the mean of each ``factor`` x ``factor`` block of the HR density.

    The HR image is first padded with void (0) at the bottom and the right to a multiple of
    ``factor``, so the LR image covers it all and keeps its mass:
    ``lr.sum() * factor**2 == hr.sum()`` (to round-off).

    Parameters
    ----------
    hr : ndarray, shape (ny, nx)
        HR density in [0, 1].
    factor : int
        HR pixels per LR pixel along a side (10: 50 µm → 500 µm).

    Returns
    -------
    ndarray of float64, shape (ceil(ny / factor), ceil(nx / factor))

    Raises
    ------
    TypeError, ValueError
        If ``hr`` is not a finite 2-D real array in [0, 1] or ``factor`` not an int >= 1.

    Examples
    --------
    >>> downscale(np.ones((3, 5)), factor=2)
    array([[1.  , 1.  , 0.5 ],
           [0.5 , 0.5 , 0.25]])
    """
    density = fem.check_density(hr)
    factor = _check_int("factor", factor, 1)
    ny, nx = density.shape
    rows, cols = -(-ny // factor), -(-nx // factor)
    padded = np.zeros((rows * factor, cols * factor))
    padded[:ny, :nx] = density
    return padded.reshape(rows, factor, cols, factor).mean(axis=(1, 3))


def downscale_femur(image: FemurImage, factor: int = 10) -> FemurImage:
    """The femur image at ``factor`` times its pixel size (:func:`downscale`), same femur.

    What :func:`femsr.reconstruct` takes to rebuild a reference femur from its own block mean;
    crop the result to the reference's shape (the LR grid covers the void padding).
    """
    return FemurImage(
        downscale(image.density, factor), image.pixel_size * factor, image.femur, image.meta
    )


def displacement_channels(u: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Pixel channels of nodal displacements: each pixel the mean of its four corner nodes.

    Parameters
    ----------
    u : ndarray, shape (ncases, ny+1, nx+1, 2)
        Nodal displacements (x right, y up), as :func:`femsr.fem.solve` returns them.
    mask : ndarray of bool, shape (ny, nx), optional
        The FE mask; pixels outside it are set to 0 (their corners need not be in the model).
        Default: every pixel.

    Returns
    -------
    ndarray of float64, shape (2*ncases, ny, nx)
        ``[ux_0, uy_0, ux_1, uy_1, ...]``.

    Raises
    ------
    TypeError, ValueError
        On a wrong shape or dtype, or NaN/inf.

    Examples
    --------
    A uniform stretch ``ux = x`` (x = node column): each pixel gets its centre's value.

    >>> u = np.zeros((1, 2, 3, 2)); u[0, :, :, 0] = [0.0, 1.0, 2.0]
    >>> displacement_channels(u)[0]
    array([[0.5, 1.5]])
    """
    u = _check_image("u", u, 4)
    if u.shape[3] != 2 or u.shape[1] < 2 or u.shape[2] < 2 or u.shape[0] < 1:
        raise ValueError(f"u must have shape (ncases, ny+1, nx+1, 2), got {u.shape}")
    pixels = 0.25 * (u[:, :-1, :-1] + u[:, :-1, 1:] + u[:, 1:, :-1] + u[:, 1:, 1:])
    channels = pixels.transpose(0, 3, 1, 2).reshape(-1, *pixels.shape[1:3])
    if mask is not None:
        channels *= fem.check_mask(mask, channels.shape[1:]).astype(bool)
    return channels


def lr_inputs(
    lr_density: np.ndarray, displacement: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """The network's input channels over a whole LR image, before per-patch normalization.

    Parameters
    ----------
    lr_density : ndarray, shape (ny, nx)
        LR density in [0, 1].
    displacement : ndarray, shape (ncases, ny+1, nx+1, 2)
        Nodal displacements of the LR image (mm), from :func:`femsr.fem.solve`.
    mask : ndarray of bool, shape (ny, nx), optional
        The FE mask; displacement channels are 0 outside it. Default: every pixel.

    Returns
    -------
    ndarray of float32, shape (1 + 2*ncases, ny, nx)
        ``[density, ux_0, uy_0, ...]``, displacements in mm.

    Raises
    ------
    TypeError, ValueError
        On wrong shapes, dtypes or values.

    See Also
    --------
    lr_patches : windows of these channels, normalized.

    Examples
    --------
    >>> lr_inputs(np.full((2, 3), 0.5), np.zeros((3, 3, 4, 2))).shape
    (7, 2, 3)
    """
    density = fem.check_density(lr_density)
    channels = displacement_channels(displacement, mask)
    if channels.shape[1:] != density.shape:
        raise ValueError(
            f"displacement must be nodal on the density's grid, (ncases, {density.shape[0] + 1}, "
            f"{density.shape[1] + 1}, 2), got {np.shape(displacement)}"
        )
    return np.concatenate([density[None], channels]).astype(np.float32)


def lr_displacement(
    lr_density: np.ndarray,
    problem: Problem,
    *,
    E0: float = TISSUE_MODULUS,
    nu: float = _NU,
    penal: float = _PENAL,
    void_modulus: float = _VOID_MODULUS,
) -> tuple[np.ndarray, fem.SolveStats]:
    """Nodal displacements of an LR image under its load cases: the FE of the training data.

    Modified SIMP with ``Emin = void_modulus * E0`` on the elements of ``problem.mask``,
    ``h = problem.pixel_size``, ``thickness = problem.thickness``; SuperLU up to 200k unknowns
    (a full-size LR femur has 37k), else GMG-CG. :func:`build_dataset` and
    :func:`femsr.reconstruct.reconstruct` both call it, so inference sees the field training saw.

    Parameters
    ----------
    lr_density : ndarray, shape (ny, nx)
        LR density in [0, 1].
    problem : femsr.femur.Problem
        Mask, forces and fixed DOFs on the LR grid (``femur.problem(lr_pixel_size)``); only
        ``mask``, ``forces``, ``fixed``, ``pixel_size`` and ``thickness`` are read.
    E0, nu, penal, void_modulus : float
        Material, as in :func:`build_dataset` (whose defaults these are).

    Returns
    -------
    u : ndarray, shape (ncases, ny+1, nx+1, 2)
        Nodal displacements (mm), x right, y up.
    stats : femsr.fem.SolveStats
        Which solver ran, and how long.

    Raises
    ------
    TypeError, ValueError
        On shapes or values :class:`femsr.fem.Solver` rejects (a density outside [0, 1], an
        empty mask, forces off the grid, a floating region).

    Examples
    --------
    >>> from femsr.femur import Femur
    >>> problem = Femur().problem(4.0)
    >>> u, stats = lr_displacement(0.5 * problem.mask, problem)
    >>> u.shape == (3, *[n + 1 for n in problem.mask.shape], 2), stats.method
    (True, 'direct')
    """
    solver = fem.Solver(
        problem.fixed,
        mask=problem.mask,
        E0=E0,
        nu=nu,
        penal=penal,
        Emin=void_modulus * E0,
        h=problem.pixel_size,
        thickness=problem.thickness,
        direct_below=_DIRECT_BELOW,
    )
    u = solver.solve(lr_density, problem.forces)
    return u, solver.stats


# ---------------------------------------------------------------------------------------------
# Patches


def patch_grid(shape: tuple[int, int], patch: int = 12, stride: int = 8) -> np.ndarray:
    """Top-left corners of the windows that cover an image, on a regular grid.

    Windows start at rows ``0, stride, 2*stride, ...`` and the same columns, as many as it takes
    to cover the image: ``n = ceil(max(0, size - patch) / stride) + 1`` per axis. The last
    window may overhang the bottom/right edge; that part is void padding
    (:func:`extract_patches` pads with 0). This is the grid of :func:`femsr.quilt.quilt`, whose
    canvas ``((nr-1)*stride + patch, (nc-1)*stride + patch)`` covers the image.

    Parameters
    ----------
    shape : tuple of int
        Image (rows, columns).
    patch : int
        Window side (pixels).
    stride : int
        Offset between neighbouring windows, ``1 <= stride <= patch``.

    Returns
    -------
    ndarray of int64, shape (nr, nc, 2)
        (row, column) of each window's top-left pixel.

    Raises
    ------
    TypeError, ValueError
        On non-int or out-of-range values.

    Examples
    --------
    >>> grid = patch_grid((21, 12), patch=12, stride=8)
    >>> grid.shape, grid[:, 0, 0].tolist(), grid[0, :, 1].tolist()
    ((3, 1, 2), [0, 8, 16], [0])
    """
    if not (isinstance(shape, (tuple, list)) and len(shape) == 2):
        raise TypeError(f"shape must be a (rows, columns) tuple, got {shape!r}")
    rows, cols = (_check_int("shape", n, 1) for n in shape)
    patch = _check_int("patch", patch, 1)
    stride = _check_int("stride", stride, 1)
    if stride > patch:
        raise ValueError(
            f"stride must be <= patch ({patch}) so windows cover the image, got {stride}"
        )
    starts = [np.arange(-(-max(0, n - patch) // stride) + 1) * stride for n in (rows, cols)]
    r, c = np.meshgrid(*starts, indexing="ij")
    return np.stack([r, c], axis=-1)


def _corners(corners: object) -> np.ndarray:
    if not isinstance(corners, np.ndarray) or not np.issubdtype(corners.dtype, np.integer):
        raise TypeError("corners must be an integer numpy array of (row, column) pairs")
    if corners.ndim < 1 or corners.shape[-1] != 2:
        raise ValueError(f"corners must have shape (..., 2), got {corners.shape}")
    flat = corners.reshape(-1, 2)
    if flat.size and flat.min() < 0:
        raise ValueError("corners must be >= 0 (windows start inside the image)")
    return flat


def extract_patches(channels: np.ndarray, corners: np.ndarray, patch: int) -> np.ndarray:
    """Windows of a channel stack, padded with 0 where they overhang the bottom/right edge.

    For the HR counterpart of LR windows, pass ``corners * factor`` and ``patch * factor``.

    Parameters
    ----------
    channels : ndarray, shape (C, H, W)
        Any dtype; the output keeps it.
    corners : ndarray of int, shape (..., 2)
        Top-left (row, column) of each window, e.g. ``patch_grid(...)[keep]``.
    patch : int
        Window side (pixels).

    Returns
    -------
    ndarray, shape (n, C, patch, patch)
        ``n`` windows in the (row-major) order of ``corners``.

    Raises
    ------
    TypeError, ValueError
        On wrong shapes or types, or negative corners.

    Examples
    --------
    >>> image = np.arange(12).reshape(1, 3, 4)
    >>> extract_patches(image, np.array([[0, 0], [2, 3]]), 2)[:, 0].tolist()
    [[[0, 1], [4, 5]], [[11, 0], [0, 0]]]
    """
    if not isinstance(channels, np.ndarray) or channels.ndim != 3:
        raise ValueError(
            f"channels must be a (C, H, W) numpy array, got {getattr(channels, 'shape', channels)}"
        )
    flat = _corners(corners)
    patch = _check_int("patch", patch, 1)
    _, rows, cols = channels.shape
    need = flat.max(axis=0, initial=0) + patch if len(flat) else np.array([rows, cols])
    padding = ((0, 0), (0, max(0, int(need[0]) - rows)), (0, max(0, int(need[1]) - cols)))
    windows = sliding_window_view(np.pad(channels, padding), (patch, patch), axis=(1, 2))
    return np.ascontiguousarray(windows[:, flat[:, 0], flat[:, 1]].swapaxes(0, 1))


def window_mask(mask: np.ndarray, corners: np.ndarray, patch: int) -> np.ndarray:
    """Which windows hold at least one pixel of ``mask`` (the others lie wholly outside).

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
        The femur (e.g. the FE mask, or where the LR density is positive).
    corners : ndarray of int, shape (..., 2)
        Window corners, e.g. from :func:`patch_grid`.
    patch : int
        Window side (pixels).

    Returns
    -------
    ndarray of bool, shape ``corners.shape[:-1]``

    Examples
    --------
    >>> mask = np.zeros((20, 20), bool); mask[0, 0] = True
    >>> window_mask(mask, patch_grid(mask.shape, 12, 8), 12).tolist()
    [[True, False], [False, False]]
    """
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 2:
        raise TypeError("mask must be a 2-D bool numpy array")
    flat = _corners(corners)
    # An inclusive prefix sum counts the mask pixels of any window in O(1).
    total = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    total[1:, 1:] = mask.cumsum(0).cumsum(1)
    r0 = np.minimum(flat[:, 0], mask.shape[0])
    c0 = np.minimum(flat[:, 1], mask.shape[1])
    r1 = np.minimum(flat[:, 0] + patch, mask.shape[0])
    c1 = np.minimum(flat[:, 1] + patch, mask.shape[1])
    count = total[r1, c1] - total[r0, c1] - total[r1, c0] + total[r0, c0]
    return (count > 0).reshape(corners.shape[:-1])


def normalize_displacement(patches: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-patch normalization of the displacement channels (:data:`NORMALIZATION`).

    For each patch and load case the mean (ux, uy) over the patch's mask pixels (its rigid
    translation) is subtracted; then every displacement channel of the patch is divided by the
    largest vector length ``sqrt(ux² + uy²)`` over its pixels and cases, so that largest length
    is 1. A patch whose displacement is (to 1e-9 of its size) a pure translation gets zeros.
    Outside the mask the channels are 0. The density channel is kept.

    Parameters
    ----------
    patches : ndarray, shape (n, 1 + 2*ncases, P, P)
        Windows of :func:`lr_inputs`.
    mask : ndarray of bool, shape (n, P, P), optional
        Windows of the FE mask. Default: every pixel.

    Returns
    -------
    ndarray of float32, same shape

    Raises
    ------
    TypeError, ValueError
        On wrong shapes or dtypes, or NaN/inf.

    Examples
    --------
    >>> p = np.zeros((1, 3, 1, 2)); p[0, 1] = [[3.0, 5.0]]; p[0, 2] = 7.0
    >>> normalize_displacement(p)[0, 1:].tolist()
    [[[-1.0, 1.0]], [[0.0, 0.0]]]
    """
    array = _check_image("patches", patches, 4)
    ncases = _check_channels(array)
    n, _, rows, cols = array.shape
    if mask is None:
        inside = np.ones((n, rows, cols), dtype=bool)
    elif not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError("mask must be a bool numpy array")
    elif mask.shape != (n, rows, cols):
        raise ValueError(f"mask must have shape {(n, rows, cols)}, got {mask.shape}")
    else:
        inside = mask
    weight = inside[:, None, None].astype(np.float64)
    u = array[:, 1:].reshape(n, ncases, 2, rows, cols) * weight
    count = np.maximum(weight.sum(axis=(-2, -1), keepdims=True), 1.0)
    raw = np.sqrt((u**2).sum(axis=2)).max(axis=(1, 2, 3))
    u = (u - u.sum(axis=(-2, -1), keepdims=True) / count) * weight
    scale = np.sqrt((u**2).sum(axis=2)).max(axis=(1, 2, 3))
    moving = scale > _NOISE * raw
    u *= np.where(moving, 1.0 / np.where(moving, scale, 1.0), 0.0)[:, None, None, None, None]
    out = np.empty(array.shape, dtype=np.float32)
    out[:, 0] = array[:, 0]
    out[:, 1:] = u.reshape(n, 2 * ncases, rows, cols)
    return out


def lr_patches(
    lr_density: np.ndarray,
    displacement: np.ndarray,
    corners: np.ndarray,
    *,
    patch: int = 12,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Normalized network inputs of the windows at ``corners``.

    :func:`lr_inputs`, then :func:`extract_patches`, then :func:`normalize_displacement`
    with the windows of ``mask``.

    Parameters
    ----------
    lr_density : ndarray, shape (ny, nx)
        LR density in [0, 1].
    displacement : ndarray, shape (ncases, ny+1, nx+1, 2)
        Nodal displacements of the LR image under the load cases.
    corners : ndarray of int, shape (..., 2)
        Window corners (:func:`patch_grid`, optionally filtered by :func:`window_mask`).
    patch : int
        Window side (LR pixels).
    mask : ndarray of bool, shape (ny, nx), optional
        The FE mask. Default: every pixel.

    Returns
    -------
    ndarray of float32, shape (n, 1 + 2*ncases, patch, patch)

    Examples
    --------
    >>> u = np.zeros((3, 21, 21, 2)); u[:, :, :, 0] = np.arange(21.0)  # ux = x, every case
    >>> x = lr_patches(np.ones((20, 20)), u, patch_grid((20, 20), 12, 8))
    >>> x.shape, float(abs(x[:, 1]).max()), float(abs(x[:, 2]).max())
    ((4, 7, 12, 12), 1.0, 0.0)
    """
    channels = lr_inputs(lr_density, displacement, mask)
    windows = extract_patches(channels, corners, patch)
    inside = None
    if mask is not None:
        inside = extract_patches(mask[None], corners, patch)[:, 0]
    return normalize_displacement(windows, inside)


def transform(array: np.ndarray, k: int = 0, flip: bool = False) -> np.ndarray:
    """Mirror and turn channels ``[density, ux_0, uy_0, ...]``, the vectors with the image.

    First, with ``flip``, a left-right mirror (columns reversed; x → -x, so ux is negated);
    then ``k`` counter-clockwise quarter turns of the picture (``np.rot90`` on the last two
    axes; row 0 is the top and y points up, so each turn maps (ux, uy) → (-uy, ux)). The eight
    ``(k, flip)`` are the symmetries of the square; an up-down mirror (uy negated) is
    ``k=2, flip=True``. A single-channel array (an HR patch) is just mirrored and turned.

    Parameters
    ----------
    array : ndarray, shape (..., 1 + 2*ncases, H, W)
        Channels, density first.
    k : int
        Quarter turns, counter-clockwise (any int; taken mod 4).
    flip : bool
        Mirror left-right before turning.

    Returns
    -------
    ndarray, same dtype, shape with H and W swapped for odd ``k``

    Raises
    ------
    ValueError
        If the channel count is even (not density plus vector pairs).

    Examples
    --------
    >>> x = np.zeros((3, 1, 2)); x[1] = [[1.0, 2.0]]; x[2] = [[3.0, 4.0]]  # ux, uy
    >>> transform(x, k=1)[1:, :, 0].tolist()  # the row stands up; (ux, uy) -> (-uy, ux)
    [[-4.0, -3.0], [2.0, 1.0]]
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array must be a numpy array, got {type(array).__name__}")
    _check_channels(array)
    out = array[..., ::-1] if flip else array
    out = np.array(np.rot90(out, k % 4, axes=(-2, -1)))
    ux, uy = out[..., 1::2, :, :], out[..., 2::2, :, :]
    if flip:
        ux *= -1
    for _ in range(k % 4):
        ux, uy = -uy, ux.copy()
    out[..., 1::2, :, :], out[..., 2::2, :, :] = ux, uy
    return out


# ---------------------------------------------------------------------------------------------
# Storage


def _write_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype, chunks: Any) -> None:
    """Stream chunks into a ``.npy`` file, atomically, without holding the array."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    written = 0
    with atomic_write(path) as stream:
        np.lib.format.write_array_header_2_0(stream, header)
        for chunk in chunks:
            stream.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
            written += len(chunk)
    if written != shape[0]:  # pragma: no cover - a bug, not a user error
        raise RuntimeError(f"{path}: wrote {written} of {shape[0]} rows")


def _quantize(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    return values.astype(dtype)


def load_index(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a dataset folder's ``index.json``, with a clear error when it is not one."""
    path = Path(folder) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a femsr patch dataset (no {INDEX})")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{str(path)!r} cannot be read: {error}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a femsr patch dataset index ({FORMAT})")
    return index


def _femur_name(image: FemurImage, source: str | os.PathLike[str] | None, k: int) -> str:
    name = image.meta.get("name") or (Path(source).stem if source is not None else f"femur_{k}")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"femur name {name!r} cannot name a file")
    return name


def _pairs(
    image: FemurImage,
    out: Path,
    name: str,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """FE of one femur's LR image and its patch pairs, written into ``out``."""
    factor, patch, stride = settings["factor"], settings["patch"], settings["stride"]
    started = time.perf_counter()
    lr = downscale(image.density, factor)
    pixel_size = image.pixel_size * factor
    problem = image.femur.problem(pixel_size)
    if problem.mask.shape != lr.shape:
        raise ValueError(
            f"femur {name}: its LR image is {lr.shape} but the femur's grid at {pixel_size} mm "
            f"is {problem.mask.shape}; the density must be on the femur's grid at "
            f"{image.pixel_size} mm"
        )
    u, stats = lr_displacement(
        lr,
        problem,
        E0=settings["E0"],
        nu=settings["nu"],
        penal=settings["penal"],
        void_modulus=settings["void_modulus"],
    )
    fe_seconds = time.perf_counter() - started
    channels = lr_inputs(lr, u, problem.mask)
    grid = patch_grid(lr.shape, patch, stride)
    corners = grid[window_mask(problem.mask | (lr > 0), grid, patch)].astype(np.int32)
    mask = problem.mask[None]
    hr = np.asarray(image.density, dtype=np.float32)[None]
    hr_size = patch * factor

    def lr_chunks() -> Any:
        for start in range(0, len(corners), _CHUNK):
            part = corners[start : start + _CHUNK]
            inside = extract_patches(mask, part, patch)[:, 0]
            yield normalize_displacement(extract_patches(channels, part, patch), inside)

    def hr_chunks() -> Any:
        for start in range(0, len(corners), _CHUNK):
            part = corners[start : start + _CHUNK].astype(np.int64) * factor
            yield _quantize(extract_patches(hr, part, hr_size), settings["hr_dtype"])

    files = {key: f"{name}.{key}.npy" for key in ("lr", "hr", "corners")}
    n = len(corners)
    _write_npy(
        out / files["lr"], (n, *channels.shape[:1], patch, patch), np.dtype(settings["lr_dtype"]),
        lr_chunks(),
    )  # fmt: skip
    _write_npy(
        out / files["hr"], (n, 1, hr_size, hr_size), np.dtype(settings["hr_dtype"]), hr_chunks()
    )
    _write_npy(out / files["corners"], corners.shape, np.dtype(np.int32), [corners])
    return {
        "name": name,
        "split": image.meta.get("split", "train"),
        "source": _fingerprint(image),
        "count": n,
        **files,
        "lr_shape": list(lr.shape),
        "windows": int(grid.shape[0] * grid.shape[1]),
        "cases": list(problem.names),
        "volfrac": image.meta.get("volfrac"),
        "fe": {
            "method": stats.method,
            "iterations": stats.iterations,
            "seconds": round(fe_seconds, 3),
        },
        "seconds": round(time.perf_counter() - started, 3),
    }


def _fingerprint(image: FemurImage) -> str:
    """What the pairs of a femur depend on (density, pixel size, geometry and loads), hashed:
    a regrown femur under an old name is cut again, not skipped."""
    digest = hashlib.sha256(np.ascontiguousarray(image.density).tobytes())
    digest.update(repr((image.density.shape, image.pixel_size, image.femur)).encode())
    return digest.hexdigest()[:16]


def build_dataset(
    femurs: Sequence[str | os.PathLike[str] | FemurImage],
    out_dir: str | os.PathLike[str],
    *,
    patch: int = 12,
    stride: int = 8,
    factor: int = 10,
    lr_dtype: str = "float16",
    hr_dtype: str = "uint8",
    E0: float = TISSUE_MODULUS,
    nu: float = _NU,
    penal: float = _PENAL,
    void_modulus: float = _VOID_MODULUS,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the patch pairs of femur images into a dataset folder, femur by femur.

    Per femur: LR density by :func:`downscale`; FE of the LR image under the femur's load cases
    (``femur.problem(pixel_size * factor)``: its mask, forces and fixed edge; modified SIMP with
    ``E0``, ``nu``, ``penal``, ``Emin = void_modulus * E0``; SuperLU up to 200k unknowns, which
    a full-size LR femur's 37k are); the windows of :func:`patch_grid` that touch the femur (its
    FE mask or a positive LR pixel); their normalized inputs (:func:`lr_patches`) and HR
    targets.
    Arrays are streamed to ``.npy`` files (memory stays bounded by a chunk of windows, whatever
    the stride), then ``index.json`` is rewritten (atomically). A femur already in the index,
    cut from the same image, is skipped, so a rerun resumes an interrupted build; one whose
    image changed since (a regrown femur) is cut again. Settings must match the folder's.

    Parameters
    ----------
    femurs : sequence of path or FemurImage
        Femur image files (:func:`femsr.io.save_femur`) or images. Name and split come from
        ``meta["name"]`` (else the file stem) and ``meta["split"]`` (``"train"`` or
        ``"test"``; default ``"train"``).
    out_dir : path
        The dataset folder (created if missing).
    patch, stride : int
        LR window side and offset (pixels); the HR window is ``patch * factor``.
    factor : int
        HR pixels per LR pixel along a side.
    lr_dtype : {"float16", "float32"}
        Storage of the inputs (see the module docstring for the error).
    hr_dtype : {"uint8", "float16", "float32"}
        Storage of the HR targets.
    E0, nu, penal : float
        Tissue modulus (MPa; :data:`femsr.defaults.TISSUE_MODULUS`), Poisson's ratio, SIMP
        exponent. The normalization makes the inputs independent of ``E0``.
    void_modulus : float
        Modulus of a void pixel as a fraction of ``E0`` (the SIMP ``Emin``). LR pixels inside
        the femur can be all marrow; at the TO's 1e-9 a region hanging on such pixels moves
        by metres and dominates its patches' normalized field, at 1e-3 the field stays that of
        the bone (``benchmarks/RESULTS.md``).
    progress : bool
        One line per femur on stderr.

    Returns
    -------
    dict
        The index (also in ``out_dir/index.json``).

    Raises
    ------
    TypeError, ValueError
        On bad settings, a split other than train/test, femurs of different load-case counts,
        two femurs of one name, or a folder built with other settings.

    Examples
    --------
    >>> import tempfile
    >>> from femsr.femur import Femur
    >>> image = FemurImage(0.4 * Femur().mask(0.4), 0.4, Femur(), {"name": "f"})
    >>> index = build_dataset([image], tempfile.mkdtemp(), patch=4, stride=4, factor=5,
    ...                       progress=False)
    >>> index["counts"], index["femurs"][0]["lr_shape"]
    ({'train': 91, 'test': 0}, [52, 48])
    """
    patch = _check_int("patch", patch, 1)
    stride = _check_int("stride", stride, 1)
    factor = _check_int("factor", factor, 1)
    if stride > patch:
        raise ValueError(f"stride must be <= patch ({patch}), got {stride}")
    if lr_dtype not in LR_DTYPES:
        raise ValueError(f"lr_dtype must be one of {LR_DTYPES}, got {lr_dtype!r}")
    if hr_dtype not in HR_DTYPES:
        raise ValueError(f"hr_dtype must be one of {HR_DTYPES}, got {hr_dtype!r}")
    for label, value in (("E0", E0), ("nu", nu), ("penal", penal)):
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"{label} must be a finite number, got {value!r}")
    if not (isinstance(void_modulus, (int, float)) and 0 <= void_modulus < 1):
        raise ValueError(f"void_modulus must lie in [0, 1), got {void_modulus!r}")
    settings = {
        "patch": patch,
        "stride": stride,
        "factor": factor,
        "lr_dtype": lr_dtype,
        "hr_dtype": hr_dtype,
        "E0": float(E0),
        "nu": float(nu),
        "penal": float(penal),
        "void_modulus": float(void_modulus),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / INDEX).exists():
        index = load_index(out)
        if index["settings"] != settings:
            changed = sorted(k for k in settings if index["settings"].get(k) != settings[k])
            raise ValueError(
                f"{str(out)!r} holds a dataset built with other settings ({', '.join(changed)}); "
                f"use another folder or the same settings"
            )
    else:
        index = {"format": FORMAT, "settings": settings, "normalization": NORMALIZATION}
        index["femurs"] = []
    done = {
        entry["name"]
        for entry in index["femurs"]
        if all((out / entry[key]).is_file() for key in ("lr", "hr", "corners"))
    }
    index["femurs"] = [entry for entry in index["femurs"] if entry["name"] in done]
    sources = {entry["name"]: entry.get("source") for entry in index["femurs"]}
    seen: list[str] = []
    for k, item in enumerate(femurs):
        source = None if isinstance(item, FemurImage) else item
        image = item if isinstance(item, FemurImage) else load_femur(item)
        name = _femur_name(image, source, k)
        if name in seen:
            raise ValueError(f"two femurs are named {name!r}; names must be unique")
        seen.append(name)
        if name in done:
            if sources[name] == _fingerprint(image):
                continue
            if progress:
                print(f"{name} changed since its pairs were cut: cutting it again", file=sys.stderr)
            index["femurs"] = [entry for entry in index["femurs"] if entry["name"] != name]
        split = image.meta.get("split", "train")
        if split not in SPLITS:
            raise ValueError(f"femur {name}: split must be one of {SPLITS}, got {split!r}")
        entry = _pairs(image, out, name, settings)
        if index["femurs"] and len(entry["cases"]) != len(index["femurs"][0]["cases"]):
            raise ValueError(
                f"femur {name} has {len(entry['cases'])} load cases, the dataset "
                f"{len(index['femurs'][0]['cases'])}; all femurs need the same number"
            )
        index["femurs"].append(entry)
        _write_index(out, index)
        if progress:
            print(
                f"{name} ({split}): {entry['count']} pairs of {entry['windows']} windows, "
                f"FE {entry['fe']['seconds']:.1f} s, total {entry['seconds']:.1f} s",
                file=sys.stderr,
            )
    # In the order given, however often it was resumed: training draws pairs by position.
    order = {name: k for k, name in enumerate(seen)}
    index["femurs"].sort(key=lambda entry: order.get(entry["name"], len(order)))
    _write_index(out, index)
    return index


def _write_index(out: Path, index: dict[str, Any]) -> None:
    index["counts"] = {
        split: sum(e["count"] for e in index["femurs"] if e["split"] == split) for split in SPLITS
    }
    if index["femurs"]:
        ncases = len(index["femurs"][0]["cases"])
        index["channels"] = ["density"] + [f"{a}_{c}" for c in range(ncases) for a in ("ux", "uy")]
    with atomic_write(out / INDEX, "w") as stream:
        json.dump(index, stream, indent=1)


# ---------------------------------------------------------------------------------------------
# torch Dataset (torch is imported on first use of PatchDataset, never by `import femsr`)


def _patch_dataset_class() -> type:
    import torch
    from torch.utils.data import Dataset

    class PatchDataset(Dataset):
        """Patch pairs of a dataset folder as a map-style torch ``Dataset``.

        Items are ``(lr, hr)`` float32 tensors of shapes ``(1 + 2*ncases, P, P)`` and
        ``(1, P*factor, P*factor)`` (HR in [0, 1]), what :func:`femsr.train.train` expects.
        The arrays are memory-mapped (opened on first access in each process, so DataLoader
        workers open their own maps), so a dataset larger than memory trains.

        Parameters
        ----------
        folder : path
            A folder written by :func:`build_dataset`.
        split : {"train", "test"}
            Which femurs.
        augment : bool
            Apply one of the eight symmetries of the square (:func:`transform`) per item,
            drawn from torch's global generator (which :func:`femsr.train.train` seeds).
        femurs : sequence of str, optional
            Only these femurs of the split (e.g. one held out for validation).

        Raises
        ------
        FileNotFoundError, ValueError
            If the folder is not a dataset, a femur is unknown, or no femur is selected.

        Examples
        --------
        >>> import tempfile
        >>> from femsr.femur import Femur
        >>> image = FemurImage(0.4 * Femur().mask(0.4), 0.4, Femur(), {"name": "f"})
        >>> folder = tempfile.mkdtemp()
        >>> _ = build_dataset([image], folder, patch=4, stride=4, factor=5, progress=False)
        >>> data = PatchDataset(folder, "train", augment=True)
        >>> lr, hr = data[0]
        >>> len(data), tuple(lr.shape), tuple(hr.shape), hr.dtype
        (91, (7, 4, 4), (1, 20, 20), torch.float32)
        """

        def __init__(
            self,
            folder: str | os.PathLike[str],
            split: str = "train",
            *,
            augment: bool = False,
            femurs: Sequence[str] | None = None,
        ) -> None:
            if split not in SPLITS:
                raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
            self.folder = Path(folder)
            self.index = load_index(folder)
            known = {entry["name"] for entry in self.index["femurs"]}
            unknown = sorted(set(femurs or ()) - known)
            if unknown:
                raise ValueError(f"unknown femur(s) {unknown}; the dataset has {sorted(known)}")
            self.entries = [
                entry
                for entry in self.index["femurs"]
                if entry["split"] == split and (femurs is None or entry["name"] in femurs)
            ]
            if not self.entries or not sum(entry["count"] for entry in self.entries):
                raise ValueError(f"no patch pairs of split {split!r} in {str(folder)!r}")
            self.split = split
            self.augment = bool(augment)
            self.offsets = np.cumsum([0] + [entry["count"] for entry in self.entries])
            settings = self.index["settings"]
            self.patch, self.factor = settings["patch"], settings["factor"]
            self.in_channels = len(self.index["channels"])
            self._maps: list[tuple[np.ndarray, np.ndarray]] | None = None

        def __len__(self) -> int:
            return int(self.offsets[-1])

        def __getstate__(self) -> dict[str, Any]:
            return {**self.__dict__, "_maps": None}  # workers map the files themselves

        def _arrays(self) -> list[tuple[np.ndarray, np.ndarray]]:
            if self._maps is None:
                self._maps = [
                    (
                        np.load(self.folder / entry["lr"], mmap_mode="r"),
                        np.load(self.folder / entry["hr"], mmap_mode="r"),
                    )
                    for entry in self.entries
                ]
            return self._maps

        def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
            index = int(item) + (len(self) if item < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"index {item} is out of range for {len(self)} patch pairs")
            femur = int(np.searchsorted(self.offsets, index, side="right")) - 1
            lr_map, hr_map = self._arrays()[femur]
            row = index - int(self.offsets[femur])
            lr = np.asarray(lr_map[row], dtype=np.float32)
            hr = np.asarray(hr_map[row], dtype=np.float32)
            if hr_map.dtype == np.uint8:
                hr /= 255.0
            if self.augment:
                draw = int(torch.randint(8, ()))
                lr, hr = transform(lr, draw % 4, draw >= 4), transform(hr, draw % 4, draw >= 4)
            return torch.from_numpy(np.ascontiguousarray(lr)), torch.from_numpy(
                np.ascontiguousarray(hr)
            )

    # Pickle (spawned DataLoader workers) finds the class as femsr.dataset.PatchDataset.
    PatchDataset.__qualname__ = "PatchDataset"
    return PatchDataset


def __getattr__(name: str) -> Any:
    if name == "PatchDataset":
        cls = _patch_dataset_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module 'femsr.dataset' has no attribute {name!r}")
