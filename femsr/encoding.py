"""The network's input: displacement channels of the LR image, windows, normalization, symmetries.

The network reads a window of the 500 µm (LR) density and the displacement field the LR image
has under the femur's load cases. Training data (:mod:`femsr.dataset`) and reconstruction
(:mod:`femsr.reconstruct`) both build it here, so inference sees what training saw:

1. :func:`lr_displacement`: FE on the LR image (:class:`femsr.fem.Solver` with the femur's
   ``femur.problem(lr_pixel_size)``) gives nodal displacements ``(ncases, ny+1, nx+1, 2)``;
   :func:`displacement_channels` turns them into pixel channels (mean of each pixel's four
   corner nodes, zero outside the FE mask) and :func:`lr_inputs` stacks them after the density:
   ``[density, ux_0, uy_0, ux_1, uy_1, ...]`` (x to the right, y **up**, as in :mod:`femsr.fem`).
2. :func:`patch_grid` lays windows of ``patch`` LR pixels at ``stride`` over the image, the last
   ones overhanging the bottom/right edge, which is padded with void: the grid
   :func:`femsr.quilt.quilt` joins (``shape=`` crops the canvas back to the image). The HR window
   of LR corner ``(r, c)`` starts at ``(r * factor, c * factor)`` and is ``patch * factor`` wide
   (12 LR px at stride 8 → 120 HR px at stride 80). :func:`window_mask` drops windows wholly
   outside the femur.
3. :func:`normalize_displacement`, per patch (:data:`NORMALIZATION`): from each case's (ux, uy)
   its mean over the patch's FE-mask pixels is subtracted (the rigid translation), then all
   displacement channels of the patch are divided by the largest vector length ``|u|`` over its
   pixels and cases, so ``max |u| = 1``. The input is therefore unchanged by a rigid translation
   of any case and by scaling all loads (or ``E0``) by one factor: a user's loads of another
   magnitude give the same input. The ratio between the cases is kept (it says which case
   dominates where). Rigid rotation is not removed. :func:`lr_patches` runs 1 to 3 for a set
   of windows.
4. :func:`transform` is the dihedral augmentation (mirror, quarter turns) acting on the density
   and, consistently, on the displacement vectors: a left-right mirror negates ux, an up-down
   mirror negates uy, a counter-clockwise quarter turn maps (ux, uy) to (-uy, ux). It commutes
   with the normalization, so augmenting stored (normalized) patches is exact.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from femsr import fem
from femsr.checks import check_density, check_finite_array, check_int, check_mask
from femsr.defaults import TISSUE_MODULUS
from femsr.femur import Problem

__all__ = [
    "NORMALIZATION",
    "NU",
    "PENAL",
    "VOID_MODULUS",
    "displacement_channels",
    "extract_patches",
    "lr_displacement",
    "lr_inputs",
    "lr_patches",
    "normalize_displacement",
    "patch_grid",
    "transform",
    "window_mask",
]

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
# LR FE material of the training data, which reconstruction must use too (the tissue modulus is
# femsr.defaults.TISSUE_MODULUS): Poisson's ratio, SIMP exponent, void modulus / E0.
NU = 0.3
PENAL = 3.0
VOID_MODULUS = 1e-3


# ---------------------------------------------------------------------------------------------
# Checks


def _check_image(name: str, value: object, ndim: int) -> np.ndarray:
    array = check_finite_array(name, value, ndim)
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
# Displacement channels


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
        channels *= check_mask(mask, channels.shape[1:]).astype(bool)
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
    density = check_density(lr_density)
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
    nu: float = NU,
    penal: float = PENAL,
    void_modulus: float = VOID_MODULUS,
) -> tuple[np.ndarray, fem.SolveStats]:
    """Nodal displacements of an LR image under its load cases: the FE of the training data.

    Modified SIMP with ``Emin = void_modulus * E0`` on the elements of ``problem.mask``,
    ``h = problem.pixel_size``, ``thickness = problem.thickness``; SuperLU up to 200k unknowns
    (a full-size LR femur has 37k), else GMG-CG. :func:`femsr.dataset.build_dataset` and
    :func:`femsr.reconstruct.reconstruct` both call it, so inference sees the field training
    saw.

    Parameters
    ----------
    lr_density : ndarray, shape (ny, nx)
        LR density in [0, 1].
    problem : femsr.femur.Problem
        Mask, forces and fixed DOFs on the LR grid (``femur.problem(lr_pixel_size)``); only
        ``mask``, ``forces``, ``fixed``, ``pixel_size`` and ``thickness`` are read.
    E0, nu, penal, void_modulus : float
        Material, as in :func:`femsr.dataset.build_dataset` (whose defaults these are).

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
    rows, cols = (check_int("shape", n, 1) for n in shape)
    patch = check_int("patch", patch, 1)
    stride = check_int("stride", stride, 1)
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
    patch = check_int("patch", patch, 1)
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
