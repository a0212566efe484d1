"""Bone morphometry of a femur image: per region, the measures bone researchers report.

The regions (:func:`regions`) follow the femur's landmarks: the trabecular bone of the femoral
head, the neck, Ward's triangle, the greater trochanter and the intertrochanteric region, the
cortex, and the three evaluation ROIs of :meth:`femsr.femur.Femur.rois`. Bone is
``density > threshold`` (0.5). Per region (:func:`morphometry`):

* **BV/TV**: bone pixels over the region's pixels.
* **Tb.Th**: the local thickness of the bone (Hildebrand & Rüegsegger 1997, J Microsc 185:67,
  :func:`local_thickness`), mean and median over the region's bone pixels;
  **Ct.Th** is the same measure on the cortex.
* **Tb.Sp**: the local thickness of the marrow, the trabecular compartment's void (bounded by
  bone and by the compartment's edge), mean and median over the region's marrow pixels.
* **Tb.N**: ``1 / (mean Tb.Th + mean Tb.Sp)``, the plate-model-free definition of Hildebrand et
  al. (1999, J Bone Miner Res 14:1167).
* **DA** and orientation: the mean intercept length (Whitehouse 1974, J Microsc 101:153) along
  12 directions, fitted by the ellipse ``1 / MIL(θ)² = nᵀ M n``; DA is the ratio of the
  ellipse's axes, ``sqrt(λmax / λmin)`` of ``M`` (1 for isotropic bone, infinite for parallel
  plates), the orientation the direction of its long axis (degrees from +x, counter-clockwise,
  in [0, 180)), along which the trabeculae run.
* **Largest void**: the diameter of the largest disc inside the bone's outline that holds no
  bone and lies outside the medullary canal, with its centre in the region.

:data:`TARGETS` holds the published ranges a grown femur is checked against (:func:`check`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from femsr.femur import BOX, Femur

__all__ = [
    "COLUMNS",
    "REGIONS",
    "TARGETS",
    "check",
    "local_thickness",
    "mil_anisotropy",
    "morphometry",
    "regions",
]

REGIONS = (
    "head",
    "neck",
    "wards_triangle",
    "greater_trochanter",
    "intertrochanteric",
    "cortex",
    "roi_head",
    "roi_neck",
    "roi_intertrochanteric",
)
"""The regions of :func:`regions`, in the order of the table."""

COLUMNS = (
    "region",
    "area",
    "bvtv",
    "tb_th_mean",
    "tb_th_median",
    "tb_sp_mean",
    "tb_sp_median",
    "tb_n",
    "da",
    "orientation",
    "largest_void",
    "band",
)
"""The columns of :func:`morphometry`'s rows (``band`` only on the cortex row)."""

_ANGLES = np.arange(0.0, 180.0, 15.0)  # MIL directions (degrees)
_BAND = 0.5  # mm: the outer band of the outline that the cortex must fill


@dataclass(frozen=True)
class Target:
    """A published range of one measure, with its source."""

    low: float
    high: float
    source: str


TARGETS = {
    "bvtv": Target(
        0.10,
        0.50,
        "the paper's ROIs; femoral head 0.26 +- 0.06 (Hildebrand et al. 1999, J Bone Miner Res "
        "14:1167), lower in the neck and trochanters and in osteoporosis",
    ),
    "tb_th_median": Target(
        0.10, 0.30, "mm; femoral head 0.19 mm (Hildebrand et al. 1999), 0.1-0.3 mm in the femur"
    ),
    "tb_sp_median": Target(
        0.40, 1.50, "mm; femoral head 0.68 mm (Hildebrand et al. 1999), up to 1.5 mm when sparse"
    ),
    "largest_void": Target(0.0, 5.0, "mm; trabeculae fill the bone but for the medullary canal"),
    "band": Target(0.90, 1.0, "bone fraction of the outline's outer 0.5 mm: a continuous cortex"),
}
"""Ranges a grown femur is checked against: BV/TV, median Tb.Th and Tb.Sp of the three ROIs,
the largest void anywhere, the cortex's fill of the outer band."""


def regions(femur: Femur, pixel_size: float) -> dict[str, np.ndarray]:
    """The femur's morphometry regions as masks on the grid of ``pixel_size``.

    In the neck's frame (``along`` the neck axis from where it meets the shaft axis, 0, to
    the head centre, 1): the head is the trabecular bone within the head's radius of its
    centre and beyond the head-neck junction, the plane across the neck axis where the neck's
    outline meets the head's circle; Ward's triangle, where Singh's compressive and tensile
    groups part (Singh et al. 1970, J Bone Joint Surg Am 52:457), a disc of a fifth of the
    neck's base width about the neck axis at ``along`` 0.3, moved a tenth of that width
    inferiorly; the neck the rest with ``along`` from 0.3 to the junction, within half the
    waist's width of its axis superiorly and, below ``along`` 0.5, half a width tapering from
    the base's to the waist's inferiorly; the greater trochanter the rest above the junction
    that lies lateral of the shaft axis or superior of the neck axis (over the trochanteric
    fossa); the intertrochanteric region what remains. The cortex and the three ROIs come from
    :meth:`~femsr.femur.Femur.compartments` and :meth:`~femsr.femur.Femur.rois`.

    Returns
    -------
    dict of str to ndarray of bool
        Keyed by :data:`REGIONS`; the five trabecular regions do not overlap.
    """
    mask, cortex, canal = femur.compartments(pixel_size)
    trabecular = mask & ~cortex & ~canal
    marks = femur.landmarks()
    ny, nx = mask.shape
    x = (np.arange(nx) + 0.5) * pixel_size
    y = BOX[0] - (np.arange(ny) + 0.5) * pixel_size
    xx, yy = np.meshgrid(x, y)
    centre, junction = np.array(marks.neck_axis[0]), np.array(marks.neck_axis[1])
    length = float(np.linalg.norm(centre - junction))
    axis = (centre - junction) / length
    inferior = np.array([axis[1], -axis[0]]) * (1.0 if axis[0] > 0 else -1.0)
    along = ((xx - junction[0]) * axis[0] + (yy - junction[1]) * axis[1]) / length
    radius = marks.head_radius
    junction_plane = 1.0 - math.sqrt(max(radius**2 - (femur.neck_width / 2) ** 2, 0.0)) / length
    head = (
        trabecular & (np.hypot(xx - centre[0], yy - centre[1]) < radius) & (along >= junction_plane)
    )
    width = femur.neck_base_width
    ward = junction + 0.3 * length * axis + 0.1 * width * inferior
    wards = trabecular & ~head & (np.hypot(xx - ward[0], yy - ward[1]) < width / 5)
    across = (xx - junction[0]) * inferior[0] + (yy - junction[1]) * inferior[1]
    taper = np.clip(along / junction_plane, 0.0, 1.0)
    half = (width + (femur.neck_width - width) * taper) / 2
    # Superiorly the waist bounds the neck (the fossa and the trochanter lie beyond it),
    # inferiorly the width that tapers towards the calcar, up to halfway to the head.
    beside = (across >= -femur.neck_width / 2) & ((across <= half) | (along >= 0.5))
    neck = trabecular & ~head & ~wards & (along >= 0.3) & beside
    lateral = np.sign(marks.greater_trochanter[0] - marks.shaft_axis[0][0])
    trochanter = (
        trabecular
        & ~(head | neck | wards)
        & (((xx - marks.shaft_axis[0][0]) * lateral > 0) | (across < 0))
        & (yy > junction[1])
    )
    out = {
        "head": head,
        "neck": neck,
        "wards_triangle": wards,
        "greater_trochanter": trochanter,
        "intertrochanteric": trabecular & ~(head | neck | wards | trochanter),
        "cortex": cortex,
    }
    for name, (rows, cols) in femur.rois(pixel_size).items():
        roi = np.zeros_like(mask)
        roi[rows, cols] = True
        out[f"roi_{name}"] = roi
    return out


def local_thickness(density: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Local thickness (pixels) of the bone phase ``density > threshold``, 0 off the bone.

    The thickness at a bone pixel is the diameter of the largest disc of bone pixels that
    covers it (Hildebrand & Rüegsegger 1997, J Microsc 185:67), on the pixel grid: the disc of
    integer radius ``R`` about a pixel is the pixels closer than ``R`` to it, ``2R - 1`` across,
    so a strut an odd number of pixels wide has that thickness and an even one a pixel less.

    Raises
    ------
    TypeError, ValueError
        If ``density`` is not a finite real 2-D array, or ``threshold`` not in [0, 1).

    Examples
    --------
    >>> bar = np.zeros((9, 9)); bar[:, 2:5] = 1.0
    >>> local_thickness(bar)[4].tolist()
    [0.0, 0.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    """
    if not isinstance(density, np.ndarray) or not np.issubdtype(density.dtype, np.number):
        raise TypeError(f"density must be a real numpy array, got {type(density).__name__}")
    if density.ndim != 2 or not np.isfinite(density).all():
        raise ValueError(f"density must be a finite 2-D image, got shape {density.shape}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
    # Outside the image counts as background, so a strut cut by the border is measured as cut.
    padded = np.pad(density > threshold, 1)
    depth = ndi.distance_transform_edt(padded)
    thickness = np.zeros(padded.shape)
    for radius in range(1, int(depth.max()) + 1):
        centres = depth >= radius  # a disc of this radius about them lies in the bone
        # The discs lie within the centres' bounding box grown by the radius.
        (top, bottom), (left, right) = (
            np.flatnonzero(centres.any(axis=1 - axis))[[0, -1]] for axis in (0, 1)
        )
        box = np.s_[
            max(top - radius, 0) : bottom + radius + 1, max(left - radius, 0) : right + radius + 1
        ]
        covered = ndi.distance_transform_edt(~centres[box]) < radius
        thickness[box][covered] = 2 * radius - 1
    return thickness[1:-1, 1:-1]


def mil_anisotropy(bone: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """Degree of anisotropy and orientation (degrees) of the bone in a region, by the mean
    intercept length along 12 directions (see the module docstring).

    Returns ``(inf, orientation)`` where some direction crosses no interface (parallel
    plates), ``(nan, nan)`` where no direction crosses one (no bone or all bone).

    Examples
    --------
    >>> plates = np.zeros((60, 60), bool); plates[:, ::6] = True  # vertical plates
    >>> da, angle = mil_anisotropy(plates, np.ones((60, 60), bool))
    >>> bool(da > 10), round(angle)
    (True, 90)
    """
    rows = []
    for angle in _ANGLES:
        # Rotating the image by -angle turns the direction at +angle (counter-clockwise from
        # +x, y up) onto the rows.
        turned = ndi.rotate(bone.astype(float), -angle, order=0, reshape=True) > 0.5
        inside = ndi.rotate(region.astype(float), -angle, order=0, reshape=True, cval=0.0) > 0.5
        pairs = inside[:, 1:] & inside[:, :-1]
        crossings = np.count_nonzero(pairs & (turned[:, 1:] != turned[:, :-1]))
        rows.append((math.radians(angle), np.count_nonzero(pairs), crossings))
    density = np.array([(c / n) ** 2 if n else 0.0 for _, n, c in rows])  # 1 / MIL^2
    if not density.any():
        return math.nan, math.nan
    theta = np.array([t for t, _, _ in rows])
    # 1/MIL^2 = a cos^2 + 2 b cos sin + d sin^2, by least squares
    design = np.stack([np.cos(theta) ** 2, 2 * np.cos(theta) * np.sin(theta), np.sin(theta) ** 2])
    a, b, d = np.linalg.lstsq(design.T, density, rcond=None)[0]
    values, vectors = np.linalg.eigh(np.array([[a, b], [b, d]]))
    orientation = math.degrees(math.atan2(vectors[1, 0], vectors[0, 0])) % 180.0
    if values[0] <= 1e-12 * values[1]:
        return math.inf, orientation
    return math.sqrt(values[1] / values[0]), orientation


def morphometry(
    density: np.ndarray,
    femur: Femur,
    pixel_size: float,
    *,
    threshold: float = 0.5,
    only: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per-region morphometry of a femur's density image (see the module docstring).

    Parameters
    ----------
    density : ndarray, shape ``grid_shape(pixel_size)``
        Density in [0, 1].
    femur : Femur
        The femur the image shows: its regions and compartments.
    pixel_size : float
        Pixel side (mm).
    threshold : float
        Bone is ``density > threshold``.
    only : sequence of str, optional
        These regions of :data:`REGIONS` alone, in that order; each row the same as in the
        whole table. The cortex's thickness, the dearest measure (its shell is up to several
        mm thick), is taken only where the cortex is asked for.

    Returns
    -------
    list of dict
        One row per region of :data:`REGIONS` (or of ``only``): ``region``, ``area`` (mm²),
        ``bvtv``, ``tb_th_mean``, ``tb_th_median``, ``tb_sp_mean``, ``tb_sp_median``, ``tb_n``
        (1/mm), ``da``, ``orientation`` (degrees), ``largest_void`` (mm), and on the cortex row
        ``band``: the bone fraction of the outline's outer 0.5 mm (the shaft's cut aside).
        Lengths in mm; NaN where a measure has nothing to measure.

    Raises
    ------
    ValueError
        If ``density`` does not have the femur's grid shape at ``pixel_size``, or ``only``
        names a region not in :data:`REGIONS`.

    See Also
    --------
    check : the rows against :data:`TARGETS`.
    """
    mask, cortex, canal = femur.compartments(pixel_size)
    density = np.asarray(density, dtype=float)
    if density.shape != mask.shape:
        raise ValueError(
            f"density has shape {density.shape}; the femur at {pixel_size} mm pixels has "
            f"{mask.shape}"
        )
    names = REGIONS if only is None else tuple(only)
    if unknown := set(names) - set(REGIONS):
        raise ValueError(f"unknown regions {sorted(unknown)}; the regions are {REGIONS}")
    bone = density > threshold
    trabecular = mask & ~cortex & ~canal
    marrow = trabecular & ~bone
    strut = local_thickness(np.where(trabecular & bone, 1.0, 0.0)) * pixel_size
    if "cortex" in names:
        shell = local_thickness(np.where(cortex & bone, 1.0, 0.0)) * pixel_size
    spacing = local_thickness(marrow.astype(float)) * pixel_size
    empty = mask & ~canal & ~bone
    void = (2.0 * ndi.distance_transform_edt(np.pad(empty, 1))[1:-1, 1:-1] - 1.0) * pixel_size
    depth = ndi.distance_transform_edt(mask) * pixel_size  # the bottom row is the cut, no edge
    band = mask & (depth <= _BAND)
    rows = []
    every = regions(femur, pixel_size)
    for name, region in ((name, every[name]) for name in names):
        thickness = shell if name == "cortex" else strut
        th = thickness[region & bone]
        sp = spacing[region & marrow]
        th_mean = float(th.mean()) if th.size else math.nan
        sp_mean = float(sp.mean()) if sp.size else math.nan
        da, orientation = mil_anisotropy(bone, region)
        row = {
            "region": name,
            "area": float(region.sum() * pixel_size**2),
            "bvtv": float(bone[region].mean()) if region.any() else math.nan,
            "tb_th_mean": th_mean,
            "tb_th_median": float(np.median(th)) if th.size else math.nan,
            "tb_sp_mean": sp_mean,
            "tb_sp_median": float(np.median(sp)) if sp.size else math.nan,
            "tb_n": 1.0 / (th_mean + sp_mean) if th.size and sp.size else math.nan,
            "da": da,
            "orientation": orientation,
            "largest_void": float(max(void[region & empty].max(initial=0.0), 0.0)),
        }
        if name == "cortex":
            row["band"] = float(bone[band].mean()) if band.any() else math.nan
        rows.append(row)
    return rows


def check(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Which :data:`TARGETS` a morphometry table meets.

    BV/TV, median Tb.Th and median Tb.Sp in range for each of the three ROIs, the head the
    densest ROI, no void wider than the largest allowed in any trabecular region, the outer
    band filled.

    Returns
    -------
    dict of str to bool
        ``"<measure> <region>"`` (and ``"head densest"``, ``"band"``) to whether it is met.
    """
    by_name = {row["region"]: row for row in rows}
    met = {}
    for roi in ("roi_head", "roi_neck", "roi_intertrochanteric"):
        for measure in ("bvtv", "tb_th_median", "tb_sp_median"):
            target = TARGETS[measure]
            value = by_name[roi][measure]
            met[f"{measure} {roi}"] = target.low - 1e-9 <= value <= target.high + 1e-9
    met["head densest"] = by_name["roi_head"]["bvtv"] >= max(
        by_name["roi_neck"]["bvtv"], by_name["roi_intertrochanteric"]["bvtv"]
    )
    for name in REGIONS[:5]:
        met[f"largest_void {name}"] = by_name[name]["largest_void"] <= TARGETS["largest_void"].high
    met["band"] = by_name["cortex"]["band"] >= TARGETS["band"].low
    return met
