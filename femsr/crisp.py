"""Crisp struts from a grey reconstruction, at the bone mass of every LR pixel.

A network trained on a pixel loss draws the mean of the structures its input allows: struts
blurred over a few pixels. The apparent stiffness penalizes grey (SIMP, ``E = E0 rho^3``): a
crisp reference blurred by a Gaussian of one pixel (50 µm) loses 30-45 % of its ROI stiffness at
the same mass. :func:`draw_struts` redraws a reconstruction crisp without moving bone between LR
pixels: it thins the bone the network draws (``density > threshold``) to its centrelines
(:func:`thin`, Zhang & Suen 1984), and fills each ``factor`` x ``factor`` block with as many
bone pixels as its LR pixel's density holds, those nearest a centreline first, weighed against
their density (one unit of density counts as :data:`DENSITY_WEIGHT` pixels nearer).
Every strut the network draws, however faint, keeps a crisp core, so joints stay joined.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage as ndi

from femsr import _kernels
from femsr.checks import check_density, check_int
from femsr.dataset import downscale

__all__ = ["DENSITY_WEIGHT", "THRESHOLD", "draw_struts", "thin"]

# Bone whose centrelines are drawn, and how many pixels nearer a centreline one unit of density
# is worth in the ranking; both chosen on the validation femurs (benchmarks/RESULTS.md).
THRESHOLD = 0.15
DENSITY_WEIGHT = 2.0


def thin(mask: np.ndarray, *, backend: str = "cpp") -> np.ndarray:
    """Zhang-Suen thinning (1984) of a binary image to 8-connected lines one pixel wide.

    Parameters
    ----------
    mask : ndarray of bool or 0/1 integers, shape (ny, nx)
        The shapes to thin; pixels outside the image count as background.
    backend : {"cpp", "python"}
        The compiled kernel or its numpy twin (:func:`femsr.reference.thin.thin`).

    Returns
    -------
    ndarray of bool, shape (ny, nx)
        The skeleton, a subset of ``mask``. A shape two pixels wide at most along both axes
        (a 2 x 2 square) vanishes, as in the published algorithm.

    Examples
    --------
    A bar three pixels wide thins to a line along its middle row, shortened at the ends:

    >>> bar = np.zeros((5, 12), dtype=bool); bar[1:4, 1:11] = True
    >>> thin(bar).astype(int)[2]
    array([0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise TypeError(f"mask must be bool or integer, got {mask.dtype}")
    if mask.dtype != bool and mask.size and not np.isin(mask, (0, 1)).all():
        raise ValueError("mask must hold 0 and 1 only")
    return _kernels.thin(np.ascontiguousarray(mask, dtype=np.uint8), backend).astype(bool)


def draw_struts(
    density: np.ndarray,
    factor: int = 10,
    *,
    mass: np.ndarray | None = None,
    threshold: float = THRESHOLD,
    density_weight: float = DENSITY_WEIGHT,
    backend: str = "cpp",
) -> np.ndarray:
    """``density`` redrawn crisp (0 or 1), each ``factor`` x ``factor`` block at a given bone mass.

    Blocks are counted from the top left corner (the LR pixels of a reconstruction). A block
    holds ``round(m n)`` bone pixels, ``n`` its pixels inside the image and ``m`` its mean
    density in ``mass`` (the LR image) or, without it, in ``density``: its mean density is
    ``m`` to ``0.5 / n``. They are the pixels of highest ``density_weight * density -
    distance``, the distance in pixels to the nearest centreline of ``density > threshold``:
    near a centreline, and where the network drew more bone (joints are drawn denser).

    Parameters
    ----------
    density : ndarray, shape (ny, nx)
        HR density in [0, 1], e.g. :func:`femsr.reconstruct.reconstruct`'s result.
    factor : int
        HR pixels per LR pixel along a side.
    mass : ndarray, shape (ceil(ny / factor), ceil(nx / factor)), optional
        Mean density of each block in [0, 1], e.g. the LR image that ``density`` was
        reconstructed from, whose pixels are the bone mass of their blocks. Default: the
        blocks' own.
    threshold : float
        Density above which a pixel is bone whose centreline is kept, in [0, 1).
    density_weight : float
        Pixels of distance that one unit of density makes up for, >= 0.
    backend : {"cpp", "python"}
        Of the thinning (:func:`thin`).

    Returns
    -------
    ndarray of float32, shape (ny, nx)
        0 and 1.

    Examples
    --------
    A faint strut, 0.3 over 4 pixels, becomes a crisp line of the same mass, 12 pixels a block:

    >>> grey = np.zeros((30, 10)); grey[:, 3:7] = 0.3
    >>> draw_struts(grey)[10:20].sum(axis=0)
    array([ 0.,  0.,  0.,  1., 10.,  1.,  0.,  0.,  0.,  0.], dtype=float32)
    """
    density = check_density(density)
    factor = check_int("factor", factor, 1)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
    if not (math.isfinite(density_weight) and density_weight >= 0.0):
        raise ValueError(f"density_weight must be finite and >= 0, got {density_weight}")
    ny, nx = density.shape
    rows, columns = -(-ny // factor), -(-nx // factor)
    if mass is not None:
        mass = check_density(mass, "mass")
        if mass.shape != (rows, columns):
            raise ValueError(
                f"mass must have one pixel per {factor} x {factor} block, shape {(rows, columns)},"
                f" got {mass.shape}"
            )
    skeleton = thin(density > threshold, backend=backend)
    distance = ndi.distance_transform_edt(~skeleton) if skeleton.any() else np.zeros(density.shape)
    if mass is None:  # the blocks' sums: their means over factor**2 pixels, padding void
        count = np.rint(downscale(density, factor) * factor**2).astype(np.int64)
    else:
        pixels = np.outer(  # of each block inside the image
            np.minimum(factor, ny - factor * np.arange(rows)),
            np.minimum(factor, nx - factor * np.arange(columns)),
        )
        count = np.rint(mass * pixels).astype(np.int64)
    # Padding ranks last in its block (-inf) and is never drawn: no count reaches it.
    rank = np.full((rows * factor, columns * factor), -np.inf)
    rank[:ny, :nx] = density_weight * density - distance
    blocks = (
        rank.reshape(rows, factor, columns, factor)
        .transpose(0, 2, 1, 3)
        .reshape(rows, columns, factor * factor)
    )
    order = np.argsort(-blocks, axis=2, kind="stable")
    place = np.empty_like(order)
    np.put_along_axis(place, order, np.arange(factor * factor), axis=2)
    drawn = (place < count[..., None]).astype(np.float32)
    drawn = drawn.reshape(rows, columns, factor, factor).transpose(0, 2, 1, 3)
    return drawn.reshape(rows * factor, columns * factor)[:ny, :nx].copy()
