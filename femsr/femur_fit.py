"""The femur of a segmented scan: its landmarks, and the parametric femur that fits its outline.

:func:`find_landmarks` finds the head, the shaft and neck axes, the side and the greater and
lesser trochanters of a femur mask (:func:`femsr.scan.segment`); :func:`fit_femur` starts a
:class:`femsr.femur.Femur` from them and fits its outline to the mask, which gives a scan
(:func:`femsr.scan.lr_image`) its load cases and ROIs. Landmarks given to :func:`fit_femur`
(``landmarks=``, checked by :func:`check_landmarks`) replace those found.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from femsr.femur import NECK_SHAFT_LIMITS, Femur

__all__ = ["LANDMARKS", "check_landmarks", "find_landmarks", "fit_femur", "outline_dice"]

LANDMARKS = (
    "head_centre",
    "head_radius",
    "shaft_axis",
    "neck_shaft_angle",
    "side",
    "greater_trochanter",
    "lesser_trochanter",
)
"""The landmarks :func:`fit_femur` takes (:func:`find_landmarks` also returns ``neck_axis``)."""

# The greater trochanter is the outline's farthest point 30 degrees from the shaft axis towards
# lateral: the superolateral point where the phantom's abductors insert
# (femsr.femur.Femur.landmarks), which the trochanter's highest point misses by up to 7 mm.
_GREATER_TILT = 30.0
# The lesser trochanter must stand this far (mm) out of the medial outline's convex hull.
_LESSER_BULGE = 1.0


def find_landmarks(mask: np.ndarray, spacing: float) -> dict[str, Any]:
    """The head, shaft and neck axes, side and trochanters of a segmented femur.

    ``mask`` is a femur (:func:`femsr.scan.segment`) whose shaft leaves it at the bottom, at
    ``spacing`` mm per pixel. Coordinates in mm, ``x`` from the image's left edge, ``y`` up
    from its bottom edge (the frame of :mod:`femsr.femur`). The head is the inscribed circle
    of the mask whose radius the outline follows along the longest arc, refined by a
    least-squares circle through that arc; the shaft axis the line through the midpoints of
    the mask's rows in the bottom 15 mm; the neck axis the line through the head centre that
    bisects the neck's cross-sections between 1.1 and 1.25 head radii from the centre (the
    waist by the head, before the trochanter and the calcar make it lopsided); the junction
    where the two axes meet. The greater trochanter is the outline point lateral of the
    shaft axis that reaches farthest in the direction 30° from the shaft axis towards lateral
    (the superolateral point of its tip, as :meth:`femsr.femur.Femur.landmarks` places it).
    The lesser trochanter is found on the medial outline below the junction and the head
    (a varus neck holds the head low, and its underside would stand out most), as the most
    medial pixel of each row measured from the shaft axis: where that profile stands more
    than 1 mm out of its lower convex hull (the shaft and the calcar make it convex), a
    circle is fitted through the rows that stand out by more than half the most, and the
    lesser trochanter is the outline point at the circle centre's height (the phantom's
    definition: the most medial point of its disc); where no bulge stands out (it hides in
    the calcar of a steep neck), it is None. On the phantom's femurs at 0.5 mm: the head
    within 0.2 mm, the neck-shaft angle within 5°, the greater trochanter within 1.2 mm and
    the lesser within 2 mm where it stands out by more than 1.5 mm.

    Returns
    -------
    dict
        ``head_centre`` (x, y), ``head_radius``, ``shaft_axis`` (a point at the bottom and the
        junction), ``neck_axis`` (head centre and junction), ``neck_shaft_angle`` (degrees),
        ``side`` (``"right"``: the head to the right of the shaft, as femsr draws a right
        femur), ``greater_trochanter`` (x, y) and ``lesser_trochanter`` ((x, y) or None).

    Raises
    ------
    ValueError
        If the mask has no round head.

    See Also
    --------
    fit_femur : the parametric femur these landmarks start.

    Examples
    --------
    >>> from femsr.femur import Femur
    >>> marks = find_landmarks(Femur().mask(0.5), 0.5)
    >>> marks["side"], round(marks["head_radius"])
    ('right', 22)
    """
    points, depth = _outline(mask, spacing)
    head, radius = _head(points, depth, mask.shape[0], spacing)
    bottom, shaft = _shaft_axis(mask, spacing)
    u = _neck_direction(mask, spacing, head, radius, bottom, shaft)
    # Junction: head + s u = bottom + t shaft.
    s_t = np.linalg.solve(np.column_stack([u, -shaft]), bottom - head)
    junction = head + s_t[0] * u
    side = "right" if head[0] > junction[0] else "left"
    greater = _greater_trochanter(points, bottom, shaft, side)
    lesser = _lesser_trochanter(
        mask, spacing, bottom, junction, min(junction[1], head[1] - radius), side
    )

    def point(p: np.ndarray) -> tuple[float, float]:
        return float(p[0]), float(p[1])

    return {
        "head_centre": point(head),
        "head_radius": radius,
        "shaft_axis": (point(bottom), point(junction)),
        "neck_axis": (point(head), point(junction)),
        "neck_shaft_angle": math.degrees(math.acos(float(np.clip(u @ shaft, -1.0, 1.0)))),
        "side": side,
        "greater_trochanter": point(greater),
        "lesser_trochanter": None if lesser is None else point(lesser),
    }


def _outline(mask: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The outline pixels' centres (mm, the frame of :func:`find_landmarks`) and the depth of
    every pixel (mm to the outline), the bottom edge, where the shaft is cut, no outline."""
    import scipy.ndimage as ndi

    ny = mask.shape[0]
    # The shaft leaves the image at the bottom: extend it so the bottom is no outline.
    padded = np.pad(mask, ((1, ny), (1, 1)), mode="constant")
    padded[ny + 1 :, 1:-1] = mask[-1]
    depth = ndi.distance_transform_edt(padded)[1 : ny + 1, 1:-1] * spacing
    outline = mask & ~ndi.binary_erosion(padded)[1 : ny + 1, 1:-1]
    rows, cols = np.nonzero(outline)
    return np.column_stack([(cols + 0.5) * spacing, (ny - rows - 0.5) * spacing]), depth


def _head(
    points: np.ndarray, depth: np.ndarray, ny: int, spacing: float
) -> tuple[np.ndarray, float]:
    """Centre and radius of the head: the inscribed circle the outline follows longest."""
    import scipy.ndimage as ndi

    peaks = (depth == ndi.maximum_filter(depth, size=max(3, round(5.0 / spacing)))) & (depth > 5.0)
    rows, cols = np.nonzero(peaks)
    centres = np.column_stack([(cols + 0.5) * spacing, (ny - rows - 0.5) * spacing])
    best, arc = None, np.zeros(0, bool)
    for centre, radius in zip(centres, depth[peaks], strict=True):
        on = np.abs(np.hypot(*(points - centre).T) - radius) < 1.5 * spacing
        if on.sum() > arc.sum():
            best, arc = centre, on
    if best is None:
        raise ValueError("no round head found in the mask")
    return _circle(points[arc])


def _circle(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares circle (Kasa: x² + y² = 2 a x + 2 b y + c) through ``points``."""
    x, y = points.T
    a, b, c = np.linalg.lstsq(
        np.column_stack([2 * x, 2 * y, np.ones_like(x)]), x**2 + y**2, rcond=None
    )[0]
    return np.array([a, b]), float(np.sqrt(c + a * a + b * b))


def _shaft_axis(mask: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The shaft axis's point at the bottom edge and its upward unit direction: the line
    through the midpoints of the rows of the bottom 15 mm, those of the shaft's full width
    (within 10 % of their median: a femur imaged at a tilt is cut obliquely at the bottom)."""
    ny = mask.shape[0]
    low = [r for r in range(max(0, ny - max(2, round(15.0 / spacing))), ny) if mask[r].any()]
    ends = np.array([np.flatnonzero(mask[r])[[0, -1]] for r in low])
    width = ends[:, 1] - ends[:, 0]
    full = np.abs(width - np.median(width)) <= 0.1 * np.median(width)
    along = np.column_stack(
        [
            (ends[full].mean(axis=1) + 0.5) * spacing,
            (ny - np.array(low)[full] - 0.5) * spacing,
        ]
    )
    mx, my = along.mean(axis=0)
    slope = float(np.polyfit(along[:, 1], along[:, 0], 1)[0])  # x = mx + slope (y - my)
    return np.array([mx - slope * my, 0.0]), np.array([slope, 1.0]) / math.hypot(slope, 1.0)


def _neck_direction(
    mask: np.ndarray,
    spacing: float,
    head: np.ndarray,
    radius: float,
    bottom: np.ndarray,
    shaft: np.ndarray,
) -> np.ndarray:
    """Unit vector from the head centre down the neck axis: the direction, in 0.5° steps,
    whose cross-sections of the neck by the head it bisects best."""
    ny, nx = mask.shape

    def inside(p: np.ndarray) -> np.ndarray:
        r = np.floor(ny - p[..., 1] / spacing).astype(int)
        c = np.floor(p[..., 0] / spacing).astype(int)
        ok = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
        return ok & mask[np.clip(r, 0, ny - 1), np.clip(c, 0, nx - 1)]

    toward = bottom + shaft * (head[1] - radius) - head
    start = math.atan2(toward[1], toward[0])
    offsets = np.arange(-60.0, 60.0, spacing)
    centre = len(offsets) // 2
    best_angle, best_cost = start, math.inf
    for angle in start + np.radians(np.arange(-50.0, 50.5, 0.5)):
        u = np.array([math.cos(angle), math.sin(angle)])
        n = np.array([-u[1], u[0]])
        cost = 0.0
        for d in np.linspace(1.1, 1.25, 8) * radius:
            hit = inside(head + d * u + offsets[:, None] * n)
            if not hit[centre]:
                cost = math.inf
                break
            gaps = np.flatnonzero(~hit)
            left = gaps[gaps < centre].max(initial=-1) + 1
            right = gaps[gaps > centre].min(initial=len(offsets)) - 1
            cost += ((offsets[left] + offsets[right]) / 2) ** 2
        if cost < best_cost:
            best_angle, best_cost = angle, cost
    return np.array([math.cos(best_angle), math.sin(best_angle)])


def _greater_trochanter(
    points: np.ndarray, bottom: np.ndarray, shaft: np.ndarray, side: str
) -> np.ndarray:
    """The outline point lateral of the shaft axis farthest 30° from it towards lateral."""
    lateral = np.array([-shaft[1], shaft[0]])  # the shaft turned 90° left: lateral of a right
    if side == "left":
        lateral = -lateral
    tilt = math.radians(_GREATER_TILT)
    reach = math.cos(tilt) * shaft + math.sin(tilt) * lateral
    candidates = points[(points - bottom) @ lateral > 0]
    return candidates[np.argmax(candidates @ reach)]


def _lesser_trochanter(
    mask: np.ndarray,
    spacing: float,
    bottom: np.ndarray,
    junction: np.ndarray,
    ceiling: float,
    side: str,
) -> np.ndarray | None:
    """The lesser trochanter: the bulge of the medial outline below the height ``ceiling``
    (see :func:`find_landmarks`), or None where none stands out."""
    ny = mask.shape[0]
    medial = 1.0 if side == "right" else -1.0
    heights, xs = [], []
    for r in range(ny - 1, -1, -1):
        y = (ny - r - 0.5) * spacing
        if y > ceiling:
            break
        cols = np.flatnonzero(mask[r])
        if cols.size:
            heights.append(y)
            xs.append((cols[-1] if medial > 0 else cols[0]) * spacing + 0.5 * spacing)
    y, x = np.array(heights), np.array(xs)
    if len(y) < 3:
        return None
    axis_x = bottom[0] + (junction[0] - bottom[0]) * y / junction[1]
    out = medial * (x - axis_x)  # how far the medial outline stands from the shaft axis
    bulge = out - np.interp(y, *_lower_hull(y, out))
    top = int(np.argmax(bulge))
    if bulge[top] < _LESSER_BULGE:
        return None
    # The rows of the bulge around its top that stand out by more than half of it.
    low = np.flatnonzero(bulge[:top] <= bulge[top] / 2)
    high = np.flatnonzero(bulge[top:] <= bulge[top] / 2)
    rows = slice(low[-1] + 1 if low.size else 0, top + high[0] if high.size else len(y))
    if rows.stop - rows.start < 3:
        return np.array([x[top], y[top]])
    centre, _ = _circle(np.column_stack([x[rows], y[rows]]))
    k = int(np.argmin(np.abs(y - centre[1])))
    return np.array([x[k], y[k]])


def _lower_hull(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices of the lower convex hull of the points (x, y), ``x`` increasing."""
    hull: list[int] = []
    for k in range(len(x)):
        while len(hull) >= 2:
            i, j = hull[-2], hull[-1]
            # j lies on or above the chord from i to k: not a vertex of the lower hull.
            if (y[j] - y[i]) * (x[k] - x[i]) >= (y[k] - y[i]) * (x[j] - x[i]):
                hull.pop()
            else:
                break
        hull.append(k)
    return x[hull], y[hull]


def check_landmarks(landmarks: Mapping[str, Any] | None) -> dict[str, Any]:
    """Landmarks given to :func:`fit_femur` (or :func:`femsr.scan.lr_image`), checked.

    Any of :data:`LANDMARKS`: ``head_centre``, ``greater_trochanter`` and
    ``lesser_trochanter`` a point ``[x, y]`` (mm; ``lesser_trochanter`` may be None: none to
    use), ``head_radius`` (mm, positive), ``shaft_axis`` two points ``[[x, y], [x, y]]`` on
    the shaft's axis at different heights, ``neck_shaft_angle`` (degrees, in [110, 150], the
    parametric femur's range) and ``side`` (``"right"`` or ``"left"``).

    Returns
    -------
    dict
        The landmarks as floats and tuples; empty for None.

    Raises
    ------
    TypeError
        If ``landmarks`` is not a mapping, or a value not a number where one is needed.
    ValueError
        On an unknown name or a bad value, named with it.

    Examples
    --------
    >>> check_landmarks({"head_centre": [70, 76.5], "side": "right"})
    {'head_centre': (70.0, 76.5), 'side': 'right'}
    """
    if landmarks is None:
        return {}
    if not isinstance(landmarks, Mapping):
        raise TypeError(
            f"landmarks must be a mapping of {', '.join(LANDMARKS)}, got {type(landmarks).__name__}"
        )
    unknown = [name for name in landmarks if name not in LANDMARKS]
    if unknown:
        raise ValueError(f"unknown landmarks {unknown}: the landmarks are {', '.join(LANDMARKS)}")
    return {name: _check_landmark(name, value) for name, value in landmarks.items()}


def _check_landmark(name: str, value: Any) -> Any:
    if name == "side":
        if value not in ("right", "left"):
            raise ValueError(f"side must be 'right' or 'left', got {value!r}")
        return value
    if name == "shaft_axis":
        if not (_is_pair(value) and all(_is_pair(p) for p in value)):
            raise ValueError(f"shaft_axis must be two points [[x, y], [x, y]] (mm), got {value!r}")
        first, second = (_point(name, p) for p in value)
        if first[1] == second[1]:
            raise ValueError(f"shaft_axis must be two points at different heights, got {value!r}")
        return first, second
    if name in ("head_centre", "greater_trochanter", "lesser_trochanter"):
        return None if value is None and name == "lesser_trochanter" else _point(name, value)
    number = _number(name, value)
    if name == "head_radius" and not number > 0:
        raise ValueError(f"head_radius must be positive (mm), got {value!r}")
    low, high = NECK_SHAFT_LIMITS
    if name == "neck_shaft_angle" and not low <= number <= high:
        raise ValueError(
            f"neck_shaft_angle must lie in [{low:g}, {high:g}] degrees (the parametric femur's), "
            f"got {value!r}"
        )
    return number


def _is_pair(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray) and len(value) == 2


def _point(name: str, value: Any) -> tuple[float, float]:
    if not _is_pair(value):
        raise ValueError(f"{name} must be a point [x, y] (mm), got {value!r}")
    return _number(name, value[0]), _number(name, value[1])


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be numbers, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


# The outline parameters fit_femur refines after the landmarks placed the head and the shaft.
_SHAPE = (
    "neck_shaft_angle",
    "shaft_width",
    "neck_width",
    "trochanter_top",
    "trochanter_width",
    "lesser_drop",
)


def outline_dice(femur: Femur, mask: np.ndarray, spacing: float) -> float:
    """The Dice overlap of ``femur``'s outline at ``spacing`` mm with ``mask`` on the femur
    box's grid: what :func:`fit_femur` maximizes."""
    outline = femur.mask(spacing)
    return float(2.0 * (outline & mask).sum() / (outline.sum() + mask.sum()))


def fit_femur(
    mask: np.ndarray, spacing: float, *, landmarks: Mapping[str, Any] | None = None
) -> Femur:
    """The parametric femur (:class:`femsr.femur.Femur`) whose outline best covers ``mask``.

    ``mask`` is a segmented femur (:func:`femsr.scan.segment`) on the femur box's grid at
    ``spacing`` (:func:`femsr.femur.grid_shape`). The landmarks (:func:`find_landmarks`) set the
    side, the head's centre and radius and the shaft axis (where it crosses the bottom edge;
    the femur's shaft is upright) and the greater trochanter's flare, and start the neck-shaft
    angle, the greater trochanter's height and width (from its landmark, at the default shaft
    width) and the lesser trochanter's drop (from its landmark's height); these, the shaft and
    the neck widths then maximize the Dice overlap of the outlines (Nelder-Mead), each within
    its range of :data:`femsr.femur.RANGES`, the neck-shaft angle within the femur's limits
    (:data:`femsr.femur.NECK_SHAFT_LIMITS`: a varus or valgus neck keeps its angle). On the
    phantom's femurs at 0.5 mm: Dice 0.99, the neck-shaft angle within 1 degree, the greater
    trochanter within 1 mm, the ROIs within 2.5 mm, about 1.5 s. The loads are the default
    femur's. With the femur come the load cases, the fixed edge and the ROIs of the scan.

    Parameters
    ----------
    mask : ndarray of bool, shape ``grid_shape(spacing)``
        The femur.
    spacing : float
        Pixel side (mm).
    landmarks : mapping, optional
        Landmarks to use instead of those found, any of :data:`LANDMARKS`
        (:func:`check_landmarks`), in the frame of :func:`find_landmarks`. What they set is
        held: a neck-shaft angle is not refined, a greater trochanter sets the trochanter's
        height, width and flare at each shaft width tried, a lesser trochanter its drop
        (within the ranges of :data:`femsr.femur.RANGES`).

    Raises
    ------
    ValueError
        If ``mask`` is not on the box's grid at ``spacing``, on bad ``landmarks``, or if the
        landmarks make no femur.

    See Also
    --------
    find_landmarks : the landmarks found.
    """
    from scipy.optimize import minimize

    from femsr import femur as femur_module

    given = check_landmarks(landmarks)
    shape = femur_module.grid_shape(spacing)
    if mask.shape != shape:
        raise ValueError(
            f"the mask has shape {mask.shape}; the femur box at {spacing} mm is {shape}"
        )
    marks = {**find_landmarks(mask, spacing), **given}
    base = _start(marks)
    held = {"neck_shaft_angle"} & given.keys()
    if "greater_trochanter" in given:
        held |= {"trochanter_top", "trochanter_width"}  # and the flare, never refined
    if given.get("lesser_trochanter") is not None:
        held.add("lesser_drop")
    free = [name for name in _SHAPE if name not in held]
    # The sampled adult ranges bound the shape, but a scan's neck-shaft angle only the femur's.
    ranges = [
        NECK_SHAFT_LIMITS if name == "neck_shaft_angle" else femur_module.RANGES.get(name)
        for name in free
    ]

    def build(values: np.ndarray) -> Femur | None:
        clipped: dict[str, Any] = {
            name: float(np.clip(v, *bounds)) if bounds else float(v)
            for name, v, bounds in zip(free, values, ranges, strict=True)
        }
        if "greater_trochanter" in given:
            width = clipped.get("shaft_width", base.shaft_width)
            clipped |= _greater_parameters(marks["greater_trochanter"], base, width)
        try:
            return dataclasses.replace(base, **clipped)
        except ValueError:  # a combination that leaves the box
            return None

    def misfit(values: np.ndarray) -> float:
        candidate = build(values)
        if candidate is None:
            return 1.0
        return 1.0 - outline_dice(candidate, mask, spacing)

    start = np.array([getattr(base, name) for name in free], dtype=float)
    best = minimize(misfit, start, method="Nelder-Mead", options={"xatol": 0.1, "fatol": 1e-4})
    fitted = build(best.x)
    return base if fitted is None or best.fun > misfit(start) else fitted


def _start(marks: dict[str, Any]) -> Femur:
    """The femur the landmarks place (head, shaft, side, neck-shaft angle) and start
    (trochanters), the default's other parameters."""
    from femsr import femur as femur_module

    width = femur_module.BOX[1]
    (hx, hy), ((x0, y0), (x1, y1)) = marks["head_centre"], marks["shaft_axis"]
    shaft_x = x0 - (x1 - x0) * y0 / (y1 - y0)  # where the shaft axis crosses the bottom edge
    if marks["side"] == "left":  # the parameters are a right femur's, mirrored
        hx, shaft_x = width - hx, width - shaft_x
    if not hx > shaft_x:
        raise ValueError(
            f"the head centre lies {'left' if marks['side'] == 'right' else 'right'} of the "
            f"shaft axis: no {marks['side']} femur"
        )
    try:
        base = femur_module.Femur(
            side=marks["side"],
            head_radius=marks["head_radius"],
            neck_shaft_angle=float(np.clip(marks["neck_shaft_angle"], *NECK_SHAFT_LIMITS)),
            offset=hx - shaft_x,
            shaft_x=shaft_x,
            head_y=hy,
        )
    except ValueError as error:
        raise ValueError(
            f"the landmarks make no femur ({error}): is it a proximal femur with a closed outline?"
        ) from None
    start: dict[str, Any] = _greater_parameters(marks["greater_trochanter"], base, base.shaft_width)
    if marks.get("lesser_trochanter") is not None:
        drop = hy - marks["lesser_trochanter"][1]
        start["lesser_drop"] = float(np.clip(drop, *femur_module.RANGES["lesser_drop"]))
    try:
        return dataclasses.replace(base, **start)
    except ValueError:  # trochanters that leave the box: start from the default's
        return base


def _greater_parameters(
    point: tuple[float, float], femur: Femur, shaft_width: float
) -> dict[str, float]:
    """``trochanter_width``, ``trochanter_flare`` and ``trochanter_top`` that put the greater
    trochanter (:meth:`femsr.femur.Femur.landmarks`) of ``femur`` with ``shaft_width`` at
    ``point``, within their ranges: the width at ``femur``'s flare, the flare making up for
    what the width's range cuts off.

    The phantom's trochanter is a capsule from its base, ``trochanter_width / 2`` lateral of
    the shaft's wall (less the flare) to a tip 2 mm farther medial and ``0.35 *
    trochanter_width`` below its top, of radius ``0.35 * trochanter_width`` there
    (``Femur._points``); the landmark is the tip's outline 30° from upright towards lateral.
    """
    from femsr import femur as femur_module

    ranges = femur_module.RANGES
    x, y = point
    if femur.side == "left":
        x = femur_module.BOX[1] - x
    tilt = math.radians(_GREATER_TILT)
    across = 0.5 - 0.35 * math.sin(tilt)  # the landmark's distance from the wall per width
    wall = femur.shaft_x - shaft_width / 2 + 2.0
    exact = (x - wall + femur.trochanter_flare) / across
    width = float(np.clip(exact, *ranges["trochanter_width"]))
    flare = femur.trochanter_flare + across * (width - exact)
    flare = float(np.clip(flare, *ranges["trochanter_flare"]))
    top = y - femur.head_y + 0.35 * width * (1.0 - math.cos(tilt))
    top = float(np.clip(top, *ranges["trochanter_top"]))
    return {"trochanter_width": width, "trochanter_flare": flare, "trochanter_top": top}
