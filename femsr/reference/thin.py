"""Reference thinning: Zhang & Suen (1984) with numpy, the twin of ``cpp/thin.cpp``.

A pixel of the mask is removed when its 8 neighbours, read clockwise from the north one
(``P2 .. P9``), hold 2 to 6 mask pixels, a single 0 -> 1 step around the ring, and, in the first
sub-iteration, ``P2 P4 P6 = P4 P6 P8 = 0`` (a south-east boundary or north-west corner point);
in the second ``P2 P4 P8 = P2 P6 P8 = 0``. The pixels of a sub-iteration are removed together.
Pixels outside the image count as background. Sub-iterations alternate until neither removes one.
"""

from __future__ import annotations

import numpy as np

# (row, column) steps of P2 .. P9: north, then clockwise.
RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def thin(mask: np.ndarray) -> np.ndarray:
    """The Zhang-Suen skeleton of a uint8 (ny, nx) mask of 0/1, as uint8."""
    ny, nx = mask.shape
    image = np.zeros((ny + 2, nx + 2), dtype=np.uint8)
    image[1:-1, 1:-1] = mask != 0
    changed = True
    while changed:
        changed = False
        for first in (True, False):
            p = [image[1 + di : ny + 1 + di, 1 + dj : nx + 1 + dj] for di, dj in RING]
            count = sum(q.astype(np.int32) for q in p)
            steps = sum(((p[k] == 0) & (p[(k + 1) % 8] == 1)).astype(np.int32) for k in range(8))
            if first:
                side = (p[0] & p[2] & p[4]) | (p[2] & p[4] & p[6])
            else:
                side = (p[0] & p[2] & p[6]) | (p[0] & p[4] & p[6])
            remove = (image[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6) & (steps == 1)
            remove &= side == 0
            if remove.any():
                image[1:-1, 1:-1][remove] = 0
                changed = True
    return image[1:-1, 1:-1].copy()
