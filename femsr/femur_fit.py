"""The femur of a segmented scan: its landmarks, and the parametric femur that fits its outline.

:func:`find_landmarks` finds the head, the shaft and neck axes and the side of a femur mask
(:func:`femsr.scan.segment`); :func:`fit_femur` starts a :class:`femsr.femur.Femur` from them and
fits its outline to the mask, which gives a scan (:func:`femsr.scan.lr_image`) its load cases
and ROIs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from femsr.femur import Femur

__all__ = ["find_landmarks", "fit_femur"]


def find_landmarks(mask: np.ndarray, spacing: float) -> dict[str, Any]:
    """The head, shaft axis, neck axis and side of a segmented femur (:func:`femsr.scan.segment`).

    Coordinates in mm, ``x`` from the image's left edge, ``y`` up from its bottom edge (the
    frame of :mod:`femsr.femur`). The head is the inscribed circle of the mask whose radius
    the outline follows along the longest arc, refined by a least-squares circle through that
    arc; the shaft axis the line through the midpoints of the mask's rows in the bottom 15 mm;
    the neck axis the line through the head centre that bisects the neck's cross-sections
    between 1.1 and 1.25 head radii from the centre (the waist by the head, before the
    trochanter and the calcar make it lopsided); the junction where the two axes meet. On the
    phantom's femurs at 0.5 mm: the head within 0.2 mm, the neck-shaft angle within 5°.

    Returns
    -------
    dict
        ``head_centre`` (x, y), ``head_radius``, ``shaft_axis`` (a point at the bottom and the
        junction), ``neck_axis`` (head centre and junction), ``neck_shaft_angle`` (degrees)
        and ``side`` (``"right"``: the head to the right of the shaft, as femsr draws a right
        femur).
    """
    import scipy.ndimage as ndi

    ny, nx = mask.shape
    # The shaft leaves the image at the bottom: extend it so the bottom is no outline.
    padded = np.pad(mask, ((1, ny), (1, 1)), mode="constant")
    padded[ny + 1 :, 1:-1] = mask[-1]
    depth = ndi.distance_transform_edt(padded)[1 : ny + 1, 1:-1] * spacing
    outline = mask & ~ndi.binary_erosion(padded)[1 : ny + 1, 1:-1]
    rows, cols = np.nonzero(outline)
    points = np.column_stack([(cols + 0.5) * spacing, (ny - rows - 0.5) * spacing])

    def xy(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.column_stack([(c + 0.5) * spacing, (ny - r - 0.5) * spacing])

    peaks = (depth == ndi.maximum_filter(depth, size=max(3, round(5.0 / spacing)))) & (depth > 5.0)
    best, arc = None, np.zeros(0, bool)
    for centre, radius in zip(xy(*np.nonzero(peaks)), depth[peaks], strict=True):
        on = np.abs(np.hypot(*(points - centre).T) - radius) < 1.5 * spacing
        if on.sum() > arc.sum():
            best, arc = centre, on
    if best is None:
        raise ValueError("no round head found in the mask")
    # Kasa fit: x² + y² = 2 a x + 2 b y + c through the arc.
    x, y = points[arc].T
    a, b, c = np.linalg.lstsq(
        np.column_stack([2 * x, 2 * y, np.ones_like(x)]), x**2 + y**2, rcond=None
    )[0]
    head, radius = np.array([a, b]), float(np.sqrt(c + a * a + b * b))
    low = np.arange(ny)[-max(2, round(15.0 / spacing)) :]
    middles = [
        ((np.flatnonzero(mask[r])[[0, -1]].mean() + 0.5) * spacing, (ny - r - 0.5) * spacing)
        for r in low
        if mask[r].any()
    ]
    along = np.array(middles)
    mx, my = along.mean(axis=0)
    slope = float(np.polyfit(along[:, 1], along[:, 0], 1)[0])
    shaft = np.array([slope, 1.0]) / math.hypot(slope, 1.0)  # upward, x = mx + slope (y - my)
    bottom = np.array([mx - slope * my, 0.0])

    def inside(p: np.ndarray) -> np.ndarray:
        r = np.floor(ny - p[..., 1] / spacing).astype(int)
        c = np.floor(p[..., 0] / spacing).astype(int)
        ok = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
        return ok & mask[np.clip(r, 0, ny - 1), np.clip(c, 0, nx - 1)]

    toward = bottom + shaft * (head[1] - radius) - head
    start = math.atan2(toward[1], toward[0])
    offsets = np.arange(-60.0, 60.0, spacing)
    best_angle, best_cost = start, math.inf
    for angle in start + np.radians(np.arange(-50.0, 50.5, 0.5)):
        u = np.array([math.cos(angle), math.sin(angle)])
        n = np.array([-u[1], u[0]])
        cost = 0.0
        for d in np.linspace(1.1, 1.25, 8) * radius:
            line = head + d * u + offsets[:, None] * n
            hit = inside(line)
            centre = len(offsets) // 2
            if not hit[centre]:
                cost = math.inf
                break
            gaps = np.flatnonzero(~hit)
            left = gaps[gaps < centre].max(initial=-1) + 1
            right = gaps[gaps > centre].min(initial=len(offsets)) - 1
            cost += ((offsets[left] + offsets[right]) / 2) ** 2
        if cost < best_cost:
            best_angle, best_cost = angle, cost
    u = np.array([math.cos(best_angle), math.sin(best_angle)])
    # Junction: head + s u = bottom + t shaft.
    s_t = np.linalg.solve(np.column_stack([u, -shaft]), bottom - head)
    junction = head + s_t[0] * u
    cos = float(np.clip(u @ shaft, -1.0, 1.0))
    return {
        "head_centre": (float(head[0]), float(head[1])),
        "head_radius": radius,
        "shaft_axis": ((float(bottom[0]), 0.0), (float(junction[0]), float(junction[1]))),
        "neck_axis": ((float(head[0]), float(head[1])), (float(junction[0]), float(junction[1]))),
        "neck_shaft_angle": math.degrees(math.acos(cos)),
        "side": "right" if head[0] > junction[0] else "left",
    }


# The outline parameters fit_femur refines after the landmarks placed the head and the shaft.
_SHAPE = (
    "neck_shaft_angle",
    "shaft_width",
    "neck_width",
    "trochanter_top",
    "trochanter_width",
    "lesser_drop",
)


def fit_femur(mask: np.ndarray, spacing: float) -> Femur:
    """The parametric femur (:class:`femsr.femur.Femur`) whose outline best covers ``mask``.

    ``mask`` is a segmented femur (:func:`femsr.scan.segment`) on the femur box's grid at
    ``spacing`` (:func:`femsr.femur.grid_shape`). The landmarks (:func:`find_landmarks`) set the
    side, the head's centre and radius and the shaft axis; the neck-shaft angle (from the
    landmarks), the shaft and neck widths, the greater trochanter's height and width and the
    lesser trochanter's drop then maximize the Dice overlap of the outlines (Nelder-Mead), each
    within its range of :data:`femsr.femur.RANGES`. On the phantom's femurs at 0.5 mm: Dice
    0.99, the neck-shaft angle within 1 degree, the ROIs within 2.5 mm, about 1.5 s. The loads
    are the default femur's. With the femur come the load cases, the fixed edge and the ROIs
    of the scan.

    Raises
    ------
    ValueError
        If ``mask`` is not on the box's grid at ``spacing``.
    """
    from scipy.optimize import minimize

    from femsr import femur as femur_module

    shape = femur_module.grid_shape(spacing)
    if mask.shape != shape:
        raise ValueError(
            f"the mask has shape {mask.shape}; the femur box at {spacing} mm is {shape}"
        )
    marks = find_landmarks(mask, spacing)
    (hx, hy), shaft_x = marks["head_centre"], marks["shaft_axis"][0][0]
    if marks["side"] == "left":  # the parameters are a right femur's, mirrored
        hx, shaft_x = femur_module.BOX[1] - hx, femur_module.BOX[1] - shaft_x
    try:
        base = femur_module.Femur(
            side=marks["side"],
            head_radius=marks["head_radius"],
            neck_shaft_angle=marks["neck_shaft_angle"],
            offset=hx - shaft_x,
            shaft_x=shaft_x,
            head_y=hy,
        )
    except ValueError as error:
        raise ValueError(
            f"the landmarks found in the mask make no femur ({error}): is it a proximal femur "
            "with a closed outline?"
        ) from None
    ranges = [femur_module.RANGES.get(name) for name in _SHAPE]
    start = np.array([getattr(base, name) for name in _SHAPE], dtype=float)

    def build(values: np.ndarray) -> Femur | None:
        clipped: dict[str, Any] = {
            name: float(np.clip(v, *bounds)) if bounds else float(v)
            for name, v, bounds in zip(_SHAPE, values, ranges, strict=True)
        }
        try:
            return dataclasses.replace(base, **clipped)
        except ValueError:  # a combination that leaves the box
            return None

    def misfit(values: np.ndarray) -> float:
        candidate = build(values)
        if candidate is None:
            return 1.0
        outline = candidate.mask(spacing)
        return 1.0 - 2.0 * (outline & mask).sum() / (outline.sum() + mask.sum())

    best = minimize(misfit, start, method="Nelder-Mead", options={"xatol": 0.1, "fatol": 1e-4})
    fitted = build(best.x)
    return base if fitted is None or best.fun > misfit(start) else fitted
