"""Parametric 2D proximal femur: outline, landmarks, load cases, fixed edge and ROIs.

The phantom is a femur seen from the front (anterior view, frontal plane). A **right** femur has
its head top right, so medial is +x, and the greater trochanter top left (lateral is -x); a
**left** femur (``side="left"``) is its mirror image about the middle of the box. The shaft runs
out of the bottom of the box, where the bone is cut and held. Everything below is said of the
right femur; for the left one, mirror x.

Geometry is continuous, in millimetres: ``x`` to the right from the left edge of the box, ``y``
upward from its bottom edge. The box is ``BOX = (104, 94.15)`` mm (height, width), the paper's
1883 x 2080 image at 50 µm. A grid of pixel size ``p`` (mm) has row 0 at the top of the box and
column 0 at its left edge, and ``grid_shape(p) = (ceil(104/p), ceil(94.15/p))``; where ``p`` does
not divide the box the grid overhangs it with void on the right (and shaft at the bottom), as the
500 µm grid does: 208 x 189 pixels cover 104 x 94.5 mm. Pixel ``(r, c)`` is bone when the outline's
signed distance at its centre ``((c + 1/2) p, 104 - (r + 1/2) p)`` is negative; node ``(i, j)``
of :mod:`femsr.fem` sits at ``(j p, 104 - i p)``.

The outline is a signed-distance construction: a disc (head), a tapered capsule along the neck
axis (neck), a capsule reaching far below the box (shaft), a tapered capsule rising from the
lateral shaft (greater trochanter) and a small disc on the medial shaft (lesser trochanter),
joined by a polynomial smooth minimum so every junction is a fillet. The mask is the whole bone
(periosteal outline). Inside it lie the **cortex**, a continuous shell between the outline and
an endosteal outline built the same way from the parts shrunk by the local cortical thickness
(thick along the shaft and the inferior neck, thin at the superior neck, the head and the
trochanters), and the **medullary canal**, which opens below the lesser trochanter; the rest is
the trabecular compartment (:meth:`Femur.compartments`).

Loads are Carter's three daily load cases for the 2D proximal femur (:data:`CARTER_1989`; angle
convention in :class:`LoadCase`). Each force is spread over the boundary nodes of the rasterized
mask within a fixed distance (``joint_arc`` 12 mm, ``abductor_arc`` 8 mm) of its anchor point on
the outline, with smooth weights that sum to the force exactly. The forces are whole-bone forces
(N) on a plate of ``thickness`` 30 mm, so pass ``h=pixel_size, thickness=problem.thickness`` to
:func:`femsr.fem.solve`. The evaluation ROIs are squares of ``ROI_SIZE`` = 10 mm.

One module past 1,000 lines because the outline, its compartments, its landmarks, its loads and
the ranges :func:`sample` draws from are one geometry: every method reads the same parameters,
and a third of the lines are the parameters' cited ranges.

Examples
--------
>>> problem = Femur().problem(2.0)
>>> problem.mask.shape, problem.forces.shape
((52, 48), (3, 53, 49, 2))
>>> [round(float(w), 2) for w in problem.weights]
[0.6, 0.2, 0.2]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from femsr.fem import _node_mask

__all__ = [
    "BOX",
    "CARTER_1989",
    "HR_PIXEL",
    "LR_PIXEL",
    "NECK_SHAFT_LIMITS",
    "ROI_SIZE",
    "Femur",
    "Force",
    "Landmarks",
    "LoadCase",
    "Problem",
    "grid_shape",
    "sample",
]

BOX = (104.0, 94.15)
"""Height and width (mm) of the field of view: 2080 x 1883 pixels of 50 µm."""

HR_PIXEL = 0.05
"""High-resolution pixel size (mm)."""

LR_PIXEL = 0.5
"""Low-resolution pixel size (mm): the HR image block-averaged x10."""

ROI_SIZE = 10.0
"""Side (mm) of the square evaluation ROIs."""

NECK_SHAFT_LIMITS = (110.0, 150.0)
"""Neck-shaft angles (degrees) a :class:`Femur` may take: past the adult range that
:data:`RANGES` samples into coxa vara and valga, so that a femur fitted to a scan
(:func:`femsr.femur_fit.fit_femur`) keeps the angle it shows."""

_MARGIN = 0.5  # mm of void the outline keeps from the top, left and right edges of the box
_ROW_BLOCK = 256  # image rows evaluated at once, to bound the memory of a full-size raster


def _check_pixel_size(pixel_size: object) -> float:
    if isinstance(pixel_size, bool) or not isinstance(pixel_size, numbers.Real):
        raise TypeError(f"pixel_size must be a real number (mm), got {type(pixel_size).__name__}")
    value = float(pixel_size)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"pixel_size must be a positive finite number (mm), got {pixel_size}")
    return value


def grid_shape(pixel_size: float) -> tuple[int, int]:
    """Image shape ``(ny, nx)`` that covers the box at a pixel size.

    Parameters
    ----------
    pixel_size : float
        Pixel side (mm).

    Returns
    -------
    tuple of int
        ``(ceil(104 / pixel_size), ceil(94.15 / pixel_size))``.

    Raises
    ------
    TypeError, ValueError
        If ``pixel_size`` is not a positive finite number.

    Examples
    --------
    >>> grid_shape(HR_PIXEL), grid_shape(LR_PIXEL)
    ((2080, 1883), (208, 189))
    """
    p = _check_pixel_size(pixel_size)
    # round first: 94.15 / 0.05 is 1883.0000000000002 in floating point
    return math.ceil(round(BOX[0] / p, 6)), math.ceil(round(BOX[1] / p, 6))


# ---------------------------------------------------------------------------------------------
# Load cases


@dataclass(frozen=True)
class Force:
    """A force given by its magnitude (N) and its angle from the vertical (degrees)."""

    magnitude: float
    angle: float


@dataclass(frozen=True)
class LoadCase:
    """One daily load case: hip-joint force on the head, abductor force on the greater trochanter.

    Angles follow Carter et al. (1989), measured from the vertical (the shaft axis) in the frontal
    plane. The joint force pushes down on the head, tilted ``angle`` towards lateral; the abductor
    force pulls up on the greater trochanter, tilted ``angle`` towards medial. A positive angle
    turns both lines of action the same way, so a negative angle (abduction) tilts the joint
    force medially and the abductor pull laterally.

    Parameters
    ----------
    name : str
        Case name.
    joint, abductor : Force
        Magnitudes (N) and angles (degrees).
    cycles : float
        Loading cycles per day; the cases are weighted by their share of the cycles.
    """

    name: str
    joint: Force
    abductor: Force
    cycles: float

    @property
    def joint_vector(self) -> np.ndarray:
        """Joint force (N) as (x right, y up); lateral is -x on this right femur."""
        a = math.radians(self.joint.angle)
        return self.joint.magnitude * np.array([-math.sin(a), -math.cos(a)])

    @property
    def abductor_vector(self) -> np.ndarray:
        """Abductor force (N) as (x right, y up); medial is +x on this right femur."""
        a = math.radians(self.abductor.angle)
        return self.abductor.magnitude * np.array([math.sin(a), math.cos(a)])


CARTER_1989 = (
    LoadCase("stance", Force(2317.0, 24.0), Force(703.0, 28.0), 6000.0),
    LoadCase("abduction", Force(1158.0, -15.0), Force(351.0, -8.0), 2000.0),
    LoadCase("adduction", Force(1548.0, 56.0), Force(468.0, 35.0), 2000.0),
)
"""Carter's three daily load cases of the 2D proximal femur: one-legged stance, extreme
abduction, extreme adduction, with 6000, 2000 and 2000 cycles a day.

Carter DR, Orr TE, Fyhrie DP (1989) Relationships between loading history and femoral
cancellous bone architecture. J Biomech 22(3):231-244; the same numbers in Beaupré GS, Orr TE,
Carter DR (1990) J Orthop Res 8(5):662-670, and in the 2D topology optimization of the femur at
50 µm by Jang IG, Kim IY (2008) J Biomech 41(11):2353-2361.
"""


def _case_to_dict(case: LoadCase) -> dict[str, Any]:
    def force(f: Force) -> dict[str, float]:
        return {"magnitude": float(f.magnitude), "angle": float(f.angle)}

    return {
        "name": str(case.name),
        "joint": force(case.joint),
        "abductor": force(case.abductor),
        "cycles": float(case.cycles),
    }


def _case_from_dict(data: dict[str, Any]) -> LoadCase:
    return LoadCase(
        str(data["name"]),
        Force(float(data["joint"]["magnitude"]), float(data["joint"]["angle"])),
        Force(float(data["abductor"]["magnitude"]), float(data["abductor"]["angle"])),
        float(data["cycles"]),
    )


# ---------------------------------------------------------------------------------------------
# Signed distances (mm); negative inside


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: the union of two shapes with a fillet of size ``k`` (mm)."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k / 4.0


def _join(fillet: float, **parts: np.ndarray) -> np.ndarray:
    """The union of a femur's parts: shaft, neck, trochanter, head, lesser (signed distances),
    each junction a fillet."""
    bone = _smin(parts["shaft"], parts["neck"], 2.5 * fillet)  # the long calcar curve
    bone = _smin(bone, parts["trochanter"], fillet / 2)  # keeps the trochanteric fossa a notch
    bone = _smin(bone, parts["head"], fillet / 2)
    return _smin(bone, parts["lesser"], fillet / 2)


def _round_cone(
    x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, ra: float, rb: float
) -> np.ndarray:
    """Signed distance to the convex hull of the discs ``(a, ra)`` and ``(b, rb)``."""
    axis = b - a
    length = float(np.hypot(*axis))
    ux, uy = axis / length
    px, py = x - a[0], y - a[1]
    along = px * ux + py * uy
    across = np.abs(py * ux - px * uy)
    s = (ra - rb) / length
    c = math.sqrt(1.0 - s * s)
    k = c * along - s * across
    return np.where(
        k < 0.0,
        np.hypot(across, along) - ra,
        np.where(
            k > c * length, np.hypot(across, along - length) - rb, c * across + s * along - ra
        ),
    )


# ---------------------------------------------------------------------------------------------
# The femur


@dataclass(frozen=True)
class Landmarks:
    """Anatomical points of a femur, (x, y) in mm.

    Attributes
    ----------
    head_centre : tuple of float
        Centre of the head disc.
    head_radius : float
        Radius of the head (mm).
    neck_axis : tuple of two points
        Head centre and the point where the neck axis meets the shaft axis.
    greater_trochanter : tuple of float
        Abductor insertion: the superolateral point of the greater trochanter on the outline.
    lesser_trochanter : tuple of float
        The most medial point of the lesser trochanter on the outline.
    shaft_axis : tuple of two points
        The shaft axis from the bottom of the box up to the neck axis.
    fixed_edge : tuple of two points
        Lateral and medial ends of the shaft's cut at the bottom of the box (y = 0).
    """

    head_centre: tuple[float, float]
    head_radius: float
    neck_axis: tuple[tuple[float, float], tuple[float, float]]
    greater_trochanter: tuple[float, float]
    lesser_trochanter: tuple[float, float]
    shaft_axis: tuple[tuple[float, float], tuple[float, float]]
    fixed_edge: tuple[tuple[float, float], tuple[float, float]]

    @property
    def neck_shaft_angle(self) -> float:
        """Angle (degrees) between the neck axis towards the head and the shaft axis downward."""
        (hx, hy), (px, py) = self.neck_axis
        (bx, by), _ = self.shaft_axis
        neck = np.array([hx - px, hy - py])
        shaft = np.array([bx - px, by - py])
        cos = neck @ shaft / (np.linalg.norm(neck) * np.linalg.norm(shaft))
        return math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0))))


def _mirror_point(point: tuple[float, float]) -> tuple[float, float]:
    return BOX[1] - point[0], point[1]


def _mirror_landmarks(marks: Landmarks) -> Landmarks:
    """The landmarks of the mirror image about the middle of the box."""
    return replace(
        marks,
        head_centre=_mirror_point(marks.head_centre),
        neck_axis=(_mirror_point(marks.neck_axis[0]), _mirror_point(marks.neck_axis[1])),
        greater_trochanter=_mirror_point(marks.greater_trochanter),
        lesser_trochanter=_mirror_point(marks.lesser_trochanter),
        shaft_axis=(_mirror_point(marks.shaft_axis[0]), _mirror_point(marks.shaft_axis[1])),
        fixed_edge=(_mirror_point(marks.fixed_edge[1]), _mirror_point(marks.fixed_edge[0])),
    )


@dataclass(frozen=True, eq=False)
class Problem:
    """A femur as the arrays of :mod:`femsr.fem` at one pixel size.

    Attributes
    ----------
    mask : ndarray of bool, shape (ny, nx)
        Bone pixels.
    forces : ndarray, shape (ncases, ny+1, nx+1, 2)
        Nodal forces (N), x right and y up, only on boundary nodes of ``mask``.
    fixed : ndarray of bool, shape (ny+1, nx+1, 2)
        Both DOFs of the nodes of the shaft's cut on the bottom grid line.
    weights : ndarray, shape (ncases,)
        Cycle weights of the cases, summing to 1.
    names : tuple of str
        Case names.
    pixel_size : float
        Pixel side (mm): the ``h`` of :func:`femsr.fem.solve`.
    thickness : float
        Plate thickness (mm) the forces assume: the ``thickness`` of :func:`femsr.fem.solve`.
    cortex, canal : ndarray of bool, shape (ny, nx), optional
        The cortical shell and the medullary canal inside ``mask``
        (:meth:`Femur.compartments`); the rest of the mask is trabecular.
    """

    mask: np.ndarray
    forces: np.ndarray
    fixed: np.ndarray
    weights: np.ndarray
    names: tuple[str, ...]
    pixel_size: float
    thickness: float
    cortex: np.ndarray | None = None
    canal: np.ndarray | None = None


_PARAMETERS = (
    "head_radius",
    "neck_shaft_angle",
    "offset",
    "neck_width",
    "neck_base_width",
    "shaft_width",
    "shaft_x",
    "head_y",
    "trochanter_top",
    "trochanter_width",
    "trochanter_flare",
    "lesser_drop",
    "lesser_radius",
    "fillet",
    "thickness",
    "joint_arc",
    "abductor_arc",
    "cortex_shaft",
    "cortex_metaphysis",
    "cortex_calcar",
    "cortex_superior",
    "cortex_head",
    "cortex_trochanter",
    "canal_drop",
)
_CORTEX = _PARAMETERS[-7:-1]
SIDES = ("right", "left")


@dataclass(frozen=True)
class Femur:
    """A parametric proximal femur; all lengths in mm, angles in degrees.

    The defaults describe an adult femur in the 94 x 104 mm box; :func:`sample` varies them.

    Parameters
    ----------
    head_radius : float
        Radius of the head.
    neck_shaft_angle : float
        Angle between the neck axis and the shaft axis, in [110, 150].
    offset : float
        Femoral offset: distance from the shaft axis to the head centre.
    neck_width : float
        Width of the neck where it leaves the head (its narrowest).
    neck_base_width : float
        Width of the neck's taper where it meets the shaft axis.
    shaft_width : float
        Width of the shaft.
    shaft_x : float
        Position of the (vertical) shaft axis from the left edge of the box.
    head_y : float
        Height of the head centre above the bottom of the box.
    trochanter_top : float
        Height of the greater trochanter's tip above the head centre (negative: below).
    trochanter_width : float
        Width of the greater trochanter at its base.
    trochanter_flare : float
        How far the greater trochanter reaches lateral of the shaft.
    lesser_drop : float
        Depth of the lesser trochanter's centre below the head centre.
    lesser_radius : float
        Radius of the lesser trochanter; it stands out of the medial shaft by this much.
    fillet : float
        Size of the smooth-minimum fillets where the parts meet.
    thickness : float
        Plate thickness the loads assume. The forces are the whole-bone forces of Carter et al.,
        so the plate stands for the whole bone, about as deep (anteroposterior) as the femoral
        neck and shaft. A compliance-optimal design does not depend on it; displacements scale
        as ``1 / thickness``.
    joint_arc, abductor_arc : float
        Radius of the surface arcs over which the joint and abductor forces are spread: boundary
        nodes within this distance of the anchor point take a share of the force.
    cortex_shaft : float
        Cortical thickness of the shaft at the bottom of the box, about 30 mm below the lesser
        trochanter: 4.5 mm. The subtrochanteric cortex is 4-6 mm thick, the thickest of the
        proximal femur (Treece et al. 2010, Med Image Anal 14:276, map 0.3 to over 5 mm over
        the proximal femur).
    cortex_metaphysis : float
        Cortical thickness of the shaft's walls at the level where the neck axis meets the
        shaft axis: 1.5 mm; the shaft's cortex tapers linearly between the two levels, so
        the lateral wall under the greater trochanter thins as in Treece et al. (2010).
    cortex_calcar : float
        Cortical thickness of the inferior neck (the calcar): 3.5 mm, in the 3-4 mm that
        Poole et al. (2010, J Bone Miner Res 25:482) measured in the inferomedial neck.
    cortex_superior : float
        Cortical thickness of the superior neck: 0.8 mm, in the 0.3-1.6 mm of Poole et al.
        (2010), thinning with age.
    cortex_head : float
        Thickness of the subchondral shell of the head: 0.8 mm (0.3-1.6 mm with the superior
        neck in Poole et al. 2010 and Treece et al. 2010).
    cortex_trochanter : float
        Cortical thickness of the greater and lesser trochanters: 0.8 mm (under 1 mm over the
        trochanters in Treece et al. 2010).
    canal_drop : float
        How far below the lesser trochanter's centre the medullary canal opens: 5 mm. The
        canal opens only below the lesser trochanter; above it trabecular bone fills the
        metaphysis (Singh et al. 1970, J Bone Joint Surg Am 52:457).
    side : {"right", "left"}
        A right femur, or its mirror image.
    loads : tuple of LoadCase
        Load cases, by default :data:`CARTER_1989`.
    seed : int or None
        The seed :func:`sample` drew this femur with, or None for hand-set parameters.

    Raises
    ------
    TypeError, ValueError
        On non-numeric or out-of-range parameters, a femur that leaves the box, or bad loads.

    Examples
    --------
    >>> femur = Femur()
    >>> round(femur.landmarks().neck_shaft_angle, 6)
    127.0
    >>> problem = femur.problem(2.0)
    >>> problem.mask.shape, problem.forces.shape, problem.names
    ((52, 48), (3, 53, 49, 2), ('stance', 'abduction', 'adduction'))
    """

    head_radius: float = 22.0
    neck_shaft_angle: float = 127.0
    offset: float = 40.0
    neck_width: float = 31.0
    neck_base_width: float = 34.0
    shaft_width: float = 30.0
    shaft_x: float = 26.0
    head_y: float = 76.0
    trochanter_top: float = 4.0
    trochanter_width: float = 26.0
    trochanter_flare: float = 3.0
    lesser_drop: float = 50.0
    lesser_radius: float = 7.0
    fillet: float = 8.0
    thickness: float = 30.0
    joint_arc: float = 12.0
    abductor_arc: float = 8.0
    cortex_shaft: float = 4.5
    cortex_metaphysis: float = 1.5
    cortex_calcar: float = 3.5
    cortex_superior: float = 0.8
    cortex_head: float = 0.8
    cortex_trochanter: float = 0.8
    canal_drop: float = 5.0
    side: str = "right"
    loads: tuple[LoadCase, ...] = CARTER_1989
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in _PARAMETERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value}")
            if name not in ("trochanter_top", "trochanter_flare") and not float(value) > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        low, high = NECK_SHAFT_LIMITS
        if not low <= self.neck_shaft_angle <= high:
            raise ValueError(
                f"neck_shaft_angle must lie in [{low:g}, {high:g}] degrees, got "
                f"{self.neck_shaft_angle}"
            )
        if not self.neck_width < 2 * self.head_radius:
            raise ValueError(
                f"neck_width must be narrower than the head ({2 * self.head_radius} mm), got "
                f"{self.neck_width}"
            )
        pt = self._points()
        neck_length = float(np.linalg.norm(pt["head"] - pt["junction"]))
        if not abs(self.neck_base_width - self.neck_width) / 2 < neck_length:
            raise ValueError(
                f"neck_width {self.neck_width} and neck_base_width {self.neck_base_width} mm "
                f"differ by more than twice the neck's length ({neck_length:.1f} mm)"
            )
        if pt["trochanter_tip"][1] <= pt["trochanter_base"][1] + self.trochanter_width / 2:
            raise ValueError(
                f"trochanter_top {self.trochanter_top} mm puts the greater trochanter's tip below "
                f"its base; raise it"
            )
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {self.side!r}")
        thickest = max(self.cortex_shaft, self.cortex_metaphysis)
        if not thickest < self.shaft_width / 2:
            raise ValueError(
                f"the shaft's cortex ({thickest} mm) must be thinner than half the shaft "
                f"({self.shaft_width / 2} mm)"
            )
        if not self.cortex_calcar + self.cortex_superior < self.neck_width:
            raise ValueError(
                f"cortex_calcar + cortex_superior ({self.cortex_calcar + self.cortex_superior} "
                f"mm) must be less than neck_width ({self.neck_width} mm)"
            )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
        ):
            raise TypeError(f"seed must be an integer or None, got {type(self.seed).__name__}")
        self._check_loads()
        self._check_inside_box()

    def _check_loads(self) -> None:
        if (
            not isinstance(self.loads, tuple)
            or not self.loads
            or not all(isinstance(case, LoadCase) for case in self.loads)
        ):
            raise ValueError(f"loads must be a non-empty tuple of LoadCase, got {self.loads!r}")
        names = [case.name for case in self.loads]
        if len(set(names)) != len(names):
            raise ValueError(f"load case names must be unique, got {names}")
        for case in self.loads:
            for part in (case.joint, case.abductor):
                values = (part.magnitude, part.angle)
                if not (all(map(math.isfinite, values)) and part.magnitude >= 0):
                    raise ValueError(
                        f"load case {case.name!r}: forces need a finite magnitude >= 0 (N) and a "
                        f"finite angle, got {part}"
                    )
            if not (math.isfinite(case.cycles) and case.cycles > 0):
                raise ValueError(
                    f"load case {case.name!r}: cycles must be positive, got {case.cycles}"
                )

    def _check_inside_box(self) -> None:
        height, width = BOX
        across = np.linspace(0.0, width, 400)
        up = np.linspace(0.0, height, 400)
        edges = np.concatenate([self.sdf(across, height), self.sdf(0.0, up), self.sdf(width, up)])
        if not edges.min() >= _MARGIN:
            raise ValueError(
                f"the femur leaves the box: its outline must stay {_MARGIN} mm from the top, left "
                f"and right edges of the {width} x {height} mm box; reduce head_radius, offset or "
                f"trochanter_flare, or move shaft_x or head_y"
            )

    # --- geometry ---------------------------------------------------------------------------

    def _points(self) -> dict[str, np.ndarray]:
        """Construction points (mm)."""
        xs = self.shaft_x
        rise = self.offset * math.tan(math.radians(self.neck_shaft_angle - 90.0))
        half_shaft = self.shaft_width / 2
        base = self.trochanter_width / 2
        tip = 0.35 * self.trochanter_width
        tip_y = self.head_y + self.trochanter_top
        base_x = xs - half_shaft - self.trochanter_flare + base
        head = np.array([xs + self.offset, self.head_y])
        junction = np.array([xs, self.head_y - rise])
        return {
            "head": head,
            "junction": junction,
            "shaft_bottom": np.array([xs, -BOX[0]]),
            "trochanter_base": np.array([base_x, junction[1] - 5.0]),
            "trochanter_tip": np.array([base_x + 2.0, tip_y - tip]),
            "lesser": np.array([xs + half_shaft, self.head_y - self.lesser_drop]),
        }

    def _right_x(self, x: np.ndarray) -> np.ndarray:
        """``x`` in the frame of the right femur: a left femur is mirrored about the box's
        middle, so its geometry is the right femur's at the mirrored point."""
        return BOX[1] - x if self.side == "left" else x

    def _right(self) -> Femur:
        return replace(self, side="right")

    def sdf(self, x: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Signed distance (mm, approximately) to the outline; negative inside the bone.

        Parameters
        ----------
        x, y : array_like
            Coordinates (mm), x right from the left edge of the box, y up from its bottom.

        Returns
        -------
        ndarray
            Broadcast shape of ``x`` and ``y``.
        """
        x, y = self._right_x(np.asarray(x, dtype=float)), np.asarray(y, dtype=float)
        pt = self._points()
        half_shaft = self.shaft_width / 2
        return _join(
            self.fillet,
            shaft=_round_cone(x, y, pt["shaft_bottom"], pt["junction"], half_shaft, half_shaft),
            neck=_round_cone(
                x, y, pt["head"], pt["junction"], self.neck_width / 2, self.neck_base_width / 2
            ),
            trochanter=self._trochanter(x, y, 0.0),
            head=np.hypot(x - pt["head"][0], y - pt["head"][1]) - self.head_radius,
            lesser=np.hypot(x - pt["lesser"][0], y - pt["lesser"][1]) - self.lesser_radius,
        )

    def _trochanter(self, x: np.ndarray, y: np.ndarray, shrink: float) -> np.ndarray:
        pt = self._points()
        return _round_cone(
            x,
            y,
            pt["trochanter_base"],
            pt["trochanter_tip"],
            self.trochanter_width / 2 - shrink,
            0.35 * self.trochanter_width - shrink,
        )

    def _endosteal(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Signed distance to the endosteal outline, in the right femur's frame: the parts of
        the outline shrunk by their cortical thickness and joined the same way, so the cortex
        is at least the thinnest of them everywhere (the smooth minimum commutes with a shift).
        """
        pt = self._points()
        half_shaft = self.shaft_width / 2
        axis = (pt["head"] - pt["junction"]) / np.linalg.norm(pt["head"] - pt["junction"])
        superior = np.array([-axis[1], axis[0]])
        # The neck's axis moves up by half the difference, so the calcar keeps its thickness.
        shift = 0.5 * (self.cortex_calcar - self.cortex_superior) * superior
        narrow = 0.5 * (self.cortex_calcar + self.cortex_superior)
        trochanter = self.cortex_trochanter
        return _join(
            self.fillet,
            shaft=_round_cone(
                x,
                y,
                np.array([self.shaft_x, 0.0]),
                pt["junction"],
                half_shaft - self.cortex_shaft,
                half_shaft - self.cortex_metaphysis,
            ),
            neck=_round_cone(
                x,
                y,
                pt["head"] + shift,
                pt["junction"] + shift,
                self.neck_width / 2 - narrow,
                self.neck_base_width / 2 - narrow,
            ),
            trochanter=self._trochanter(x, y, trochanter),
            head=np.hypot(x - pt["head"][0], y - pt["head"][1])
            - (self.head_radius - self.cortex_head),
            lesser=np.hypot(x - pt["lesser"][0], y - pt["lesser"][1])
            - (self.lesser_radius - trochanter),
        )

    def _canal(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Signed distance (an upper bound) to the medullary canal, in the right femur's frame:
        the endosteal shaft below a dome as wide as the shaft, whose top lies ``canal_drop``
        below the lesser trochanter's centre."""
        pt = self._points()
        half_shaft = self.shaft_width / 2
        top = np.array([self.shaft_x, pt["lesser"][1] - self.canal_drop - half_shaft])
        dome = _round_cone(x, y, pt["shaft_bottom"], top, half_shaft, half_shaft)
        return np.maximum(self._endosteal(x, y), dome)

    def _surface_point(self, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Where the ray from ``origin`` (inside) along ``direction`` leaves the outline."""
        direction = direction / np.linalg.norm(direction)
        far = 1.0
        while self.sdf(*(origin + far * direction)) < 0:
            far *= 2.0
        near = 0.0
        for _ in range(60):
            mid = 0.5 * (near + far)
            if self.sdf(*(origin + mid * direction)) < 0:
                near = mid
            else:
                far = mid
        return origin + near * direction

    def landmarks(self) -> Landmarks:
        """Anatomical landmarks (mm); see :class:`Landmarks`."""
        if self.side == "left":
            return _mirror_landmarks(self._right().landmarks())
        pt = self._points()
        superolateral = np.array([-math.sin(math.radians(30.0)), math.cos(math.radians(30.0))])
        gt = self._surface_point(pt["trochanter_tip"], superolateral)
        lt = self._surface_point(pt["lesser"], np.array([1.0, 0.0]))
        bottom = np.array([self.shaft_x, 0.0])
        left = self._surface_point(bottom, np.array([-1.0, 0.0]))
        right = self._surface_point(bottom, np.array([1.0, 0.0]))

        def point(p: np.ndarray) -> tuple[float, float]:
            return float(p[0]), float(p[1])

        return Landmarks(
            head_centre=point(pt["head"]),
            head_radius=float(self.head_radius),
            neck_axis=(point(pt["head"]), point(pt["junction"])),
            greater_trochanter=point(gt),
            lesser_trochanter=point(lt),
            shaft_axis=(point(bottom), point(pt["junction"])),
            fixed_edge=(point(left), point(right)),
        )

    # --- rasterization ------------------------------------------------------------------------

    def mask(self, pixel_size: float) -> np.ndarray:
        """Bone pixels on the grid of :func:`grid_shape`.

        Parameters
        ----------
        pixel_size : float
            Pixel side (mm).

        Returns
        -------
        ndarray of bool, shape ``grid_shape(pixel_size)``
            True where the outline's signed distance at the pixel centre is negative.

        Examples
        --------
        >>> mask = Femur().mask(1.0)
        >>> mask.shape, bool(mask[-1].any()), bool(mask[0].any())
        ((104, 95), True, False)
        """
        (mask,) = self._raster(pixel_size, self.sdf)
        return mask

    def _raster(
        self, pixel_size: float, *distances: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> list[np.ndarray]:
        """Where each signed distance is negative at the pixel centres of the grid."""
        p = _check_pixel_size(pixel_size)
        ny, nx = grid_shape(p)
        x = (np.arange(nx) + 0.5) * p
        images = [np.empty((ny, nx), dtype=bool) for _ in distances]
        for start in range(0, ny, _ROW_BLOCK):
            rows = np.arange(start, min(start + _ROW_BLOCK, ny))
            y = BOX[0] - (rows + 0.5) * p
            for image, distance in zip(images, distances, strict=True):
                image[rows] = distance(x[None, :], y[:, None]) < 0
        return images

    def compartments(self, pixel_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The bone's mask, its cortical shell and its medullary canal on the grid.

        The cortex lies between the outline and the endosteal outline: the parts of the femur
        shrunk by their cortical thickness (``cortex_*``), so it is thickest along the shaft
        and the inferior neck and thin over the superior neck, the head and the trochanters.
        The canal is the endosteal shaft below ``canal_drop`` under the lesser trochanter. What
        is left, ``mask & ~cortex & ~canal``, is the trabecular compartment.

        Parameters
        ----------
        pixel_size : float
            Pixel side (mm).

        Returns
        -------
        mask, cortex, canal : ndarray of bool, shape ``grid_shape(pixel_size)``
            ``cortex`` and ``canal`` lie inside ``mask`` and do not overlap.

        Examples
        --------
        >>> mask, cortex, canal = Femur().compartments(1.0)
        >>> bool((cortex <= mask).all() and (canal <= mask).all() and not (cortex & canal).any())
        True
        """

        def endosteal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return self._endosteal(self._right_x(x), y)

        def canal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return self._canal(self._right_x(x), y)

        mask, inner, in_canal = self._raster(pixel_size, self.sdf, endosteal, canal)
        return mask, mask & ~inner, mask & inner & in_canal

    def anchors(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Anchor points (mm) of a case's joint and abductor arcs on the outline.

        The joint force acts through the head centre (a frictionless ball joint), so its arc is
        centred where its line of action enters the head; the abductor arc is centred on the
        greater-trochanter landmark, the same for every case.
        """
        if self.side == "left":
            joint, abductor = self._right().anchors(name)
            return joint * [-1.0, 1.0] + [BOX[1], 0.0], abductor * [-1.0, 1.0] + [BOX[1], 0.0]
        a = math.radians(self.load_case(name).joint.angle)
        # against the joint force, whose magnitude may be zero
        joint = self._surface_point(self._points()["head"], np.array([math.sin(a), math.cos(a)]))
        return joint, np.array(self.landmarks().greater_trochanter)

    def load_case(self, name: str) -> LoadCase:
        """The load case called ``name``."""
        for case in self.loads:
            if case.name == name:
                return case
        raise ValueError(
            f"unknown load case {name!r}; this femur has {[c.name for c in self.loads]}"
        )

    def problem(self, pixel_size: float, cases: tuple[str, ...] | None = None) -> Problem:
        """The femur as mask, nodal forces, fixed DOFs and case weights at one pixel size.

        Parameters
        ----------
        pixel_size : float
            Pixel side (mm).
        cases : tuple of str, optional
            Names of the load cases to include, in this order; default all.

        Returns
        -------
        Problem
            Arrays for :func:`femsr.fem.solve`, with ``h=pixel_size`` and
            ``thickness=self.thickness``.

        Raises
        ------
        ValueError
            On an unknown case name, or a pixel size so coarse that an arc holds fewer than two
            boundary nodes.

        See Also
        --------
        femsr.fem.solve : solves the problem.
        """
        p = _check_pixel_size(pixel_size)
        if isinstance(cases, str):
            cases = (cases,)
        chosen = [self.load_case(n) for n in cases] if cases is not None else list(self.loads)
        mask, cortex, canal = self.compartments(p)
        mirror = np.array([-1.0 if self.side == "left" else 1.0, 1.0])
        ny, nx = mask.shape
        boundary = _node_mask(mask) & _node_mask(~mask)
        i, j = np.nonzero(boundary)
        nodes = np.stack([j * p, BOX[0] - i * p], axis=1)
        forces = np.zeros((len(chosen), ny + 1, nx + 1, 2))
        for c, case in enumerate(chosen):
            joint, abductor = self.anchors(case.name)
            for anchor, radius, vector, what in (
                (joint, self.joint_arc, mirror * case.joint_vector, "joint"),
                (abductor, self.abductor_arc, mirror * case.abductor_vector, "abductor"),
            ):
                r = np.linalg.norm(nodes - anchor, axis=1) / radius
                near = r < 1.0
                if near.sum() < 2:
                    raise ValueError(
                        f"pixel_size {p} mm is too coarse: the {what} arc ({radius} mm) of case "
                        f"{case.name!r} holds {near.sum()} boundary node(s), fewer than 2"
                    )
                weight = (1.0 - r[near] ** 2) ** 2  # smooth bump: zero value and slope at the ends
                forces[c, i[near], j[near]] += np.outer(weight / weight.sum(), vector)
        fixed = np.zeros((ny + 1, nx + 1, 2), dtype=bool)
        fixed[ny] = _node_mask(mask)[ny, :, None]
        cycles = np.array([case.cycles for case in chosen])
        return Problem(
            mask=mask,
            forces=forces,
            fixed=fixed,
            weights=cycles / cycles.sum(),
            names=tuple(case.name for case in chosen),
            pixel_size=p,
            thickness=float(self.thickness),
            cortex=cortex,
            canal=canal,
        )

    def rois(self, pixel_size: float, size: float = ROI_SIZE) -> dict[str, tuple[slice, slice]]:
        """Square evaluation ROIs as image slices: femoral head, neck, intertrochanteric region.

        The head ROI is centred on the head centre, the neck ROI on the midpoint of the neck axis
        (head centre to shaft axis), the intertrochanteric ROI halfway between the greater and the
        lesser trochanter landmarks.

        Parameters
        ----------
        pixel_size : float
            Pixel side (mm).
        size : float
            Side of the squares (mm), rounded to whole pixels.

        Returns
        -------
        dict of str to (slice, slice)
            ``{"head", "neck", "intertrochanteric"}`` to (rows, columns) of the image.

        Raises
        ------
        ValueError
            If ``size`` is not positive or under one pixel, or an ROI is not wholly inside the
            trabecular compartment (:meth:`compartments`).

        Examples
        --------
        >>> femur = Femur()
        >>> rows, cols = femur.rois(0.5)["neck"]
        >>> bool(femur.mask(0.5)[rows, cols].all()), rows.stop - rows.start
        (True, 20)
        """
        p = _check_pixel_size(pixel_size)
        if not (math.isfinite(size) and size >= p):
            raise ValueError(f"size must be at least one pixel ({p} mm), got {size}")
        marks = self.landmarks()
        (hx, hy), (jx, jy) = marks.neck_axis
        (gx, gy), (lx, ly) = marks.greater_trochanter, marks.lesser_trochanter
        centres = {
            "head": (hx, hy),
            "neck": ((hx + jx) / 2, (hy + jy) / 2),
            "intertrochanteric": ((gx + lx) / 2, (gy + ly) / 2),
        }
        n = round(size / p)
        mask, cortex, canal = self.compartments(p)
        trabecular = mask & ~cortex & ~canal
        ny, nx = mask.shape
        rois = {}
        for name, (cx, cy) in centres.items():
            col = round(cx / p - n / 2)
            row = round((BOX[0] - cy) / p - n / 2)
            window = (slice(row, row + n), slice(col, col + n))
            inside = 0 <= row <= ny - n and 0 <= col <= nx - n
            if not (inside and trabecular[window].all()):
                raise ValueError(
                    f"the {name} ROI ({size} mm at {p} mm pixels) is not wholly inside the "
                    f"trabecular bone"
                )
            rois[name] = window
        return rois

    # --- serialization ------------------------------------------------------------------------

    def to_dict(self, pixel_size: float | None = None) -> dict[str, Any]:
        """A JSON-able dict of the parameters, seed and load spec, optionally the pixel size.

        Examples
        --------
        >>> femur = sample(3)
        >>> Femur.from_dict(femur.to_dict(pixel_size=0.05)) == femur
        True
        """
        data: dict[str, Any] = {
            "format": "femsr.femur",
            "version": 1,
            "seed": self.seed,
            "side": self.side,
            "geometry": {name: float(getattr(self, name)) for name in _PARAMETERS},
            "loads": [_case_to_dict(case) for case in self.loads],
        }
        if pixel_size is not None:
            data["pixel_size"] = _check_pixel_size(pixel_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Femur:
        """The femur of :meth:`to_dict` (a ``"pixel_size"`` entry is the caller's to read)."""
        if not isinstance(data, dict) or data.get("format") != "femsr.femur":
            raise ValueError("data is not a femsr.femur dict (its 'format' must be 'femsr.femur')")
        if data.get("version") != 1:
            raise ValueError(f"unsupported femsr.femur version {data.get('version')!r}")
        geometry = data["geometry"]
        unknown = set(geometry) - set(_PARAMETERS)
        if unknown:
            raise ValueError(f"unknown femur parameter(s) {sorted(unknown)}")
        loads = tuple(_case_from_dict(case) for case in data["loads"])
        return cls(**geometry, side=data.get("side", "right"), loads=loads, seed=data.get("seed"))


# ---------------------------------------------------------------------------------------------
# Seeded variation

RANGES: dict[str, tuple[float, float]] = {
    "head_radius": (20.0, 24.5),
    "neck_shaft_angle": (120.0, 140.0),
    "offset": (36.0, 44.0),
    "shaft_width": (27.0, 33.0),
    "shaft_x": (24.0, 28.0),
    "head_y": (74.0, 78.0),
    "trochanter_top": (0.0, 8.0),
    "trochanter_width": (24.0, 28.0),
    "trochanter_flare": (2.0, 4.0),
    "lesser_drop": (47.0, 53.0),
    "lesser_radius": (6.0, 8.0),
    "cortex_shaft": (3.5, 5.5),
    "cortex_metaphysis": (1.0, 2.0),
    "cortex_calcar": (3.0, 4.0),
    "cortex_superior": (0.4, 1.2),
    "cortex_head": (0.5, 1.0),
    "cortex_trochanter": (0.5, 1.0),
}
"""Ranges (mm, degrees) that :func:`sample` draws the femur's parameters from, uniformly.

Head diameter 40-49 mm and neck-shaft angle 120-140 degrees (mean near 129) span adults
(Toogood, Skalak & Cooperman 2009, Clin Orthop Relat Res 467:876); femoral offset 36-44 mm
about the 43 +- 7 mm of Noble et al. (1988, Clin Orthop Relat Res 235:148), cut where the head
would leave the paper's 94 x 104 mm box. Cortical thicknesses: the inferior neck 3-4 mm and the
superior neck 0.4-1.2 mm (Poole et al. 2010, J Bone Miner Res 25:482; thin in the old), the
head, trochanters and shaft as in :class:`Femur` (Treece et al. 2010, Med Image Anal 14:276).
The shaft's position and width, the head's height and the trochanters' size are chosen so the
femur fills the box as the paper's images do. The neck is 0.66-0.74 of the head's diameter
where it leaves the head, and 1-5 mm wider where it meets the shaft.
"""

NECK_TO_HEAD = (0.66, 0.74)
BODY_WEIGHT_SPREAD = 0.2  # all forces of a femur scaled by U(0.8, 1.2): body weights of adults
_MAGNITUDE_SPREAD = 0.1  # each force's magnitude then scaled by U(0.9, 1.1)
_ANGLE_SPREAD = 5.0  # each force's angle moves by U(-5, 5) degrees
_DRAWS = 1000


def sample(seed: int) -> Femur:
    """A femur drawn across adult anatomy, side and loads, reproducible from its seed.

    Each parameter of :data:`RANGES` is drawn uniformly from its range, the neck's width from
    :data:`NECK_TO_HEAD` of the head's diameter, the side right or left with equal odds. The
    forces of :data:`CARTER_1989` are scaled together by a body weight factor in [0.8, 1.2],
    each by a factor in [0.9, 1.1], and each angle moves by up to +-5 degrees; cycle counts
    stay. A draw whose femur leaves the box or puts an ROI outside the trabecular bone is drawn
    again from the same generator.

    Parameters
    ----------
    seed : int
        Non-negative seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    Femur
        With ``seed`` recorded.

    Raises
    ------
    TypeError, ValueError
        If ``seed`` is not a non-negative integer.

    Examples
    --------
    >>> sample(1) == sample(1), sample(1) == sample(2)
    (True, False)
    >>> 120 <= sample(5).neck_shaft_angle <= 140
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    rng = np.random.default_rng(int(seed))
    for _ in range(_DRAWS):
        try:
            femur = _draw(rng, int(seed))
            femur.rois(LR_PIXEL)
        except ValueError:
            continue
        return femur
    raise RuntimeError(f"no valid femur in {_DRAWS} draws of seed {seed}")  # pragma: no cover


def _draw(rng: np.random.Generator, seed: int) -> Femur:
    geometry = {name: float(rng.uniform(low, high)) for name, (low, high) in RANGES.items()}
    neck = float(rng.uniform(*NECK_TO_HEAD)) * 2 * geometry["head_radius"]
    geometry["neck_width"] = neck
    geometry["neck_base_width"] = neck + float(rng.uniform(1.0, 5.0))
    side = SIDES[int(rng.integers(2))]
    weight = rng.uniform(1 - BODY_WEIGHT_SPREAD, 1 + BODY_WEIGHT_SPREAD)

    def vary(force: Force) -> Force:
        scale = weight * rng.uniform(1 - _MAGNITUDE_SPREAD, 1 + _MAGNITUDE_SPREAD)
        turn = rng.uniform(-_ANGLE_SPREAD, _ANGLE_SPREAD)
        return Force(float(force.magnitude * scale), float(force.angle + turn))

    loads = tuple(
        replace(case, joint=vary(case.joint), abductor=vary(case.abductor)) for case in CARTER_1989
    )
    return Femur(**geometry, side=side, loads=loads, seed=seed)
