"""Reference seam and quilting kernels: Dijkstra with :mod:`heapq`, masks with scipy.ndimage.

Twins of ``cpp/seam.cpp`` (``cpp/seam.hpp`` states the conventions). The Dijkstra search pops
``(distance, node)`` pairs from a heap, node = index of the pixel in the surface padded by one
blocked pixel on every side (which orders like ``i*nx + j``), and relaxes the neighbours in the
order of :data:`OFFSETS` with a strict ``<``, as the C++ does, so both find the same seam.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import scipy.ndimage as ndi

# Neighbour order of the relaxation, (row, column) steps, as kOffsets in cpp/seam.cpp.
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))

_FOUR_CONNECTED = ndi.generate_binary_structure(2, 1)


def min_error_seam(cost: np.ndarray) -> np.ndarray | None:
    """Cheapest 8-connected path of pixels from row 0 to the last row, or None if all are inf.

    ``cost`` is float64 (ny, nx), >= 0; returns int64 (n, 2) (row, column) pairs, top to bottom.
    """
    ny, nx = cost.shape
    width = nx + 2
    # Plain lists: indexing them is several times faster than indexing numpy arrays one by one.
    padded = np.full((ny + 2, width), math.inf)
    padded[1:-1, 1:-1] = cost
    costs = padded.ravel().tolist()
    dist = [math.inf] * len(costs)
    pred = [-1] * len(costs)
    heap = []
    for v in range(width + 1, width + nx + 1):
        if costs[v] < math.inf:
            dist[v] = costs[v]
            heap.append((costs[v], v))
    heapq.heapify(heap)
    steps = [di * width + dj for di, dj in OFFSETS]
    bottom = ny * width  # first node of the last image row
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue  # stale entry
        if u >= bottom:
            # With costs >= 0 the first bottom pixel popped ends a cheapest path.
            nodes = [u]
            while pred[nodes[-1]] >= 0:
                nodes.append(pred[nodes[-1]])
            index = np.array(nodes[::-1], dtype=np.int64)
            return np.stack([index // width - 1, index % width - 1], axis=1)
        for step in steps:
            v = u + step
            nd = d + costs[v]
            if nd < dist[v]:
                dist[v] = nd
                pred[v] = u
                heapq.heappush(heap, (nd, v))
    return None


def seam_mask(seam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 mask of the side of a top-to-bottom seam each pixel is on: 0 left, 1 right or on it.

    Left = the pixels 4-connected to column 0 without crossing the seam.
    """
    on_seam = np.zeros(shape, dtype=bool)
    on_seam[seam[:, 0], seam[:, 1]] = True
    labels, _ = ndi.label(~on_seam, structure=_FOUR_CONNECTED)
    left = np.setdiff1d(np.unique(labels[:, 0]), [0])
    return np.where(np.isin(labels, left), 0, 1).astype(np.uint8)


def _error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The error surface ``(a - b)²``; an overflow to inf is reported by the seam search."""
    with np.errstate(over="ignore"):
        return (a - b) ** 2


def _mask_of(cost: np.ndarray) -> np.ndarray:
    seam = min_error_seam(cost)
    if seam is None:
        raise ValueError(
            "the seam cost overflows: every path sums to infinity (scale the cost down)"
        )
    return seam_mask(seam, cost.shape)


def vertical_seam_masks(patches: np.ndarray, stride: int) -> np.ndarray:
    """Seam masks (nr, nc-1, P, overlap) of the overlaps of horizontally adjacent patches."""
    nr, nc, patch, _ = patches.shape
    overlap = patch - stride
    masks = np.empty((nr, max(nc - 1, 0), patch, overlap), dtype=np.uint8)
    for r in range(nr):
        for c in range(nc - 1):
            masks[r, c] = _mask_of(
                _error(patches[r, c, :, stride:], patches[r, c + 1, :, :overlap])
            )
    return masks


def horizontal_seam_masks(strips: np.ndarray, stride: int) -> np.ndarray:
    """Seam masks (nr-1, overlap, width) of the overlaps of vertically adjacent strips.

    The seam runs from column 0 to the last column: the vertical seam of the transposed surface.
    """
    nr, patch, width = strips.shape
    overlap = patch - stride
    masks = np.empty((max(nr - 1, 0), overlap, width), dtype=np.uint8)
    for r in range(nr - 1):
        error = _error(strips[r, stride:], strips[r + 1, :overlap])
        masks[r] = _mask_of(np.ascontiguousarray(error.T)).T
    return masks


def _enter(
    old: np.ndarray, new: np.ndarray, mask: np.ndarray | None, ramp: np.ndarray | None
) -> np.ndarray:
    """A later item entering an overlap: by mask (1 takes it) or by the ramp (its weight)."""
    if mask is not None:
        return np.where(mask.astype(bool), new, old)
    assert ramp is not None
    return old + ramp * (new - old)


def compose_columns(
    patches: np.ndarray, stride: int, masks: np.ndarray | None, ramp: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Join each grid row of patches left to right into a strip (nr, P, width).

    Also returns the grid column each strip pixel comes from (int32), when joined by masks.
    """
    nr, nc, patch, _ = patches.shape
    overlap = patch - stride
    width = (nc - 1) * stride + patch
    strips = np.empty((nr, patch, width))
    owner = np.empty((nr, patch, width), dtype=np.int32) if masks is not None else None
    for r in range(nr):
        for c in range(nc):
            x = c * stride
            start = 0 if c == 0 else overlap
            if c > 0:
                window = slice(x, x + overlap)
                mask = masks[r, c - 1] if masks is not None else None
                strips[r, :, window] = _enter(
                    strips[r, :, window], patches[r, c, :, :overlap], mask, ramp
                )
                if owner is not None and mask is not None:
                    owner[r, :, window] = np.where(mask.astype(bool), c, owner[r, :, window])
            strips[r, :, x + start : x + patch] = patches[r, c, :, start:]
            if owner is not None:
                owner[r, :, x + start : x + patch] = c
    return strips, owner


def compose_rows(
    strips: np.ndarray,
    ncols: int,
    stride: int,
    masks: np.ndarray | None,
    ramp: np.ndarray | None,
    strip_owner: np.ndarray | None,
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Join the strips top to bottom and crop to ``shape``.

    Also returns the flat index ``r*ncols + c`` of the patch each pixel comes from, when joined
    by masks.
    """
    nr, patch, width = strips.shape
    overlap = patch - stride
    height = (nr - 1) * stride + patch
    out = np.empty((height, width))
    owner = np.empty((height, width), dtype=np.int32) if strip_owner is not None else None
    for r in range(nr):
        y = r * stride
        start = 0 if r == 0 else overlap
        if r > 0:
            window = slice(y, y + overlap)
            mask = masks[r - 1] if masks is not None else None
            column_ramp = ramp[:, None] if ramp is not None else None
            out[window] = _enter(out[window], strips[r, :overlap], mask, column_ramp)
            if owner is not None and strip_owner is not None and mask is not None:
                owner[window] = np.where(
                    mask.astype(bool), r * ncols + strip_owner[r, :overlap], owner[window]
                )
        out[y + start : y + patch] = strips[r, start:]
        if owner is not None and strip_owner is not None:
            owner[y + start : y + patch] = r * ncols + strip_owner[r, start:]
    crop = (slice(0, shape[0]), slice(0, shape[1]))
    return out[crop], owner[crop] if owner is not None else None
