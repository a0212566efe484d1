"""Clinical scans in: a coronal image of a femur from DICOM, NIfTI or TIFF, with its pixel spacing.

:func:`read_scan` returns one 2-D coronal image in a fixed orientation (rows from superior to
inferior, columns from the patient's right to left, as radiologists display a coronal slice
facing the patient) and its spacing in mm:

* **DICOM** (pydicom): one file holding a slice, or a folder holding a series (sorted along
  the slice normal), or a multi-frame (enhanced) file; a folder of several series is refused,
  and compressed pixel data needs pydicom's decoders. Pixel spacing and orientation from the
  header (an enhanced file's functional groups); stored values go through ``RescaleSlope`` and
  ``RescaleIntercept`` to Hounsfield units where the file says so (CT).
* **NIfTI** (nibabel): 2-D or 3-D; the affine gives the orientation and spacing.
* **TIFF** (tifffile): one page, or pages stacked front to back (a volume of coronal
  slices); float, 8- or 16-bit as stored; spacing from the resolution tags when they name a
  unit (centimetre or inch), else from ``spacing=``.

From a volume the coronal slice with the most bone (values above ``bone_threshold``) is taken,
unless ``index`` names one. :func:`density_from_hu` maps Hounsfield units to the bone density
in [0, 1] that femsr works with, by a stated linear calibration; :func:`deblur` undoes a
scanner's Gaussian point-spread function of a known width. :func:`write_scan` writes an image
with its spacing (NIfTI or TIFF). The readers come in the ``femsr[io]`` extra.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from femsr.defaults import BLURRY_SCAN_NOISE_HU, DEBLURRED_MODEL_MAX_FWHM, MARROW_HU, TISSUE_HU
from femsr.femur import BOX, Femur
from femsr.femur_fit import (
    LANDMARKS,
    _shaft_axis,
    check_landmarks,
    find_landmarks,
    fit_femur,
    outline_dice,
)
from femsr.io import FemurImage, atomic_write

__all__ = [
    "DEBLUR_BALANCE",
    "FIT_LEAST_DICE",
    "JOINT_RADII",
    "JOINT_ROUNDNESS",
    "JOINT_VALLEY",
    "MARROW_HU",
    "PELVIS_LEAST_AREA",
    "SHAFT_CONTINUED",
    "TISSUE_HU",
    "Scan",
    "SegmentationError",
    "box_placement",
    "check_calibration",
    "deblur",
    "density_from_hu",
    "estimate_noise",
    "estimate_psf_fwhm",
    "is_dicom_series",
    "lr_image",
    "placement",
    "read_landmarks",
    "read_scan",
    "segment",
    "synthetic_scan",
    "with_pelvis",
    "write_scan",
]


_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # of a Gaussian
_ALIGNED = 0.9  # |cos| between an image axis and the anatomical axis it is taken for


@dataclass(frozen=True)
class Scan:
    """A coronal image of a femur and its geometry.

    Attributes
    ----------
    image : ndarray of float64, shape (ny, nx)
        Rows superior to inferior, columns patient right to left.
    spacing : (float, float)
        Row and column pixel sizes (mm).
    unit : str
        ``"HU"`` (Hounsfield units), ``"density"`` (bone density in [0, 1]) or ``"stored"``
        (values as the file holds them).
    index : int or None
        The slice taken from a volume; None for a 2-D file.
    affine : ndarray of float64, shape (4, 4), or None
        Where the image lies in the patient: takes ``(x, y, 0, 1)`` of the scan's frame (mm,
        ``x`` right from the image's left edge, ``y`` down from its top edge) to RAS (mm
        towards the patient's right, front and head; its third column the slice's normal times
        its thickness). DICOM and NIfTI give it; None (a TIFF, a
        synthetic scan) means the placement :func:`write_scan` gives an image of its own.
    """

    image: np.ndarray
    spacing: tuple[float, float]
    unit: str
    index: int | None = None
    affine: np.ndarray | None = None


def density_from_hu(
    hu: np.ndarray, *, marrow: float = MARROW_HU, tissue: float = TISSUE_HU
) -> np.ndarray:
    """Bone density in [0, 1] from Hounsfield units: ``(hu - marrow) / (tissue - marrow)``,
    clipped.

    Examples
    --------
    >>> density_from_hu(np.array([-1000.0, 0.0, 900.0, 2500.0])).tolist()
    [0.0, 0.0, 0.5, 1.0]
    """
    return np.clip(_calibrated(hu, marrow, tissue), 0.0, 1.0)


def check_calibration(marrow: float, tissue: float) -> None:
    """Raise ValueError unless the HU of density 0 (``marrow``) and 1 (``tissue``) are finite
    and ``tissue`` exceeds ``marrow``."""
    if not (math.isfinite(marrow) and math.isfinite(tissue) and tissue > marrow):
        raise ValueError(f"tissue HU ({tissue}) must exceed marrow HU ({marrow}), both finite")


def _calibrated(hu: np.ndarray, marrow: float, tissue: float) -> np.ndarray:
    check_calibration(marrow, tissue)
    return (np.asarray(hu, dtype=float) - marrow) / (tissue - marrow)


def _holds_hu(scan: Scan) -> bool:
    # NIfTI and TIFF do not say their unit: values beyond [0, 1] are CT numbers, as CT
    # volumes converted to NIfTI store them.
    return scan.unit == "HU" or scan.image.min() < -0.5 or scan.image.max() > 1.5


def _density(scan: Scan, marrow: float, tissue: float) -> np.ndarray:
    """The scan as bone density, calibrated where it holds CT numbers, not clipped."""
    if _holds_hu(scan):
        return _calibrated(scan.image, marrow, tissue)
    return np.asarray(scan.image, dtype=float)


class SegmentationError(ValueError):
    """No femur can be segmented from the image (:func:`segment`): none in it, or one cut off."""


def segment(
    density: np.ndarray,
    threshold: float = 0.2,
    *,
    spacing: float = 1.0,
    side: str | None = None,
    pelvis: bool = True,
) -> np.ndarray:
    """The femur of a coronal density image as a filled mask.

    Pixels above ``threshold`` (0.2: above marrow and soft tissue, below any bone that holds
    trabeculae at clinical resolution), closed by a disc of 1 mm radius (``spacing`` is the
    pixel size in mm) so trabecular bone reads as one body, the largest connected component of
    those that reach the image's bottom edge, where the shaft leaves it (a pelvis or another
    bone beside the femur that does not reach it is passed over; where none does, the largest
    of all; with ``side``, ``"right"`` or ``"left"``, the patient's right or left femur of a
    slice that holds both: of the bodies leaving at the bottom at least half as large as the
    largest, the leftmost or the rightmost, as columns run from the patient's right to left),
    its holes filled, the medullary canal included (closed across the shaft's cut at the
    bottom): the periosteal outline. The femur must lie wholly inside the image but for the
    shaft, which leaves it at the bottom. A pelvis that the closing or the blur joins to the
    head across a narrow joint space is split off along the joint (:func:`_femur_part`), cut
    off by the image's top, left or right edge or lying wholly inside it, its ischium leaving
    the image at the bottom beside the shaft or not, and the femur is chosen again among what
    is left (a pelvis spanning both hips of a slice joins both femurs); with ``pelvis=False``
    the body is taken whole.

    Raises
    ------
    SegmentationError
        If no pixel exceeds ``threshold`` (no femur), or the femur touches the top, left or
        right edge of the image (cut off, or joined to a pelvis across a joint space the blur
        has filled in).
    ValueError
        If ``density`` is not a 2-D image or ``side`` is neither ``"right"`` nor ``"left"``.
    """
    import scipy.ndimage as ndi

    image = np.asarray(density, dtype=float)
    if image.ndim != 2 or min(image.shape) < 3:
        raise ValueError(f"density must be a 2-D image, got shape {image.shape}")
    if side not in (None, "right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    bone = image > threshold
    if not bone.any():
        raise SegmentationError(
            f"no pixel exceeds the threshold {threshold}: no femur in the image"
        )
    component = _chosen(_closed(bone, spacing), side)
    part = _femur_part(image, bone, component, spacing) if pelvis else None
    if part is not None:  # closed again alone, so the joint space the closing bridged stays out;
        # chosen again, as a pelvis joining both hips of a slice leaves both femurs
        component = _chosen(_closed(bone & part, spacing), side)
    femur = ndi.binary_fill_holes(component | _shaft_cut(component, round(5.0 / spacing)))
    edges = {"top": femur[0].any(), "left": femur[:, 0].any(), "right": femur[:, -1].any()}
    cut = [name for name, touched in edges.items() if touched]
    if cut:
        raise SegmentationError(
            f"the femur touches the image's {' and '.join(cut)} edge: it is cut off (only the "
            "shaft may leave the image, at the bottom), or joined to a pelvis across a joint "
            "space too narrow to see"
        )
    return femur


def _chosen(closed: np.ndarray, side: str | None) -> np.ndarray:
    """The body of ``closed`` taken for the femur (:func:`segment`): the largest of those that
    leave the image at its bottom edge, else of all; with ``side``, of the bodies leaving at
    the bottom at least half as large as the largest, the leftmost (``"right"``) or the
    rightmost (``"left"``)."""
    import scipy.ndimage as ndi

    labels, count = ndi.label(closed)
    sizes = ndi.sum_labels(closed, labels, index=np.arange(1, count + 1))
    leaving = np.isin(np.arange(1, count + 1), labels[-1])
    if leaving.any():
        sizes = np.where(leaving, sizes, 0.0)
    chosen = int(np.argmax(sizes))
    if side is not None:
        femurs = np.flatnonzero(sizes >= 0.5 * sizes.max())
        columns = [c for _, c in ndi.center_of_mass(closed, labels, femurs + 1)]
        chosen = int(femurs[np.argmin(columns) if side == "right" else np.argmax(columns)])
    return labels == 1 + chosen


def _closed(mask: np.ndarray, spacing: float) -> np.ndarray:
    """``mask`` closed by a disc of 1 mm radius (``spacing``: the pixel size in mm), so
    trabecular bone reads as one body; the image's edges do not erode it."""
    import scipy.ndimage as ndi

    radius = max(1, round(1.0 / spacing))
    disc = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    return ndi.binary_closing(np.pad(mask, radius), disc)[radius:-radius, radius:-radius]


def _femur_part(
    image: np.ndarray, bone: np.ndarray, component: np.ndarray, spacing: float
) -> np.ndarray | None:
    """The femur's part of ``component`` where a pelvis is joined to its head across the joint;
    None where none is.

    A femur does not reach the image's top, left or right edge; a pelvis cut off by the field
    of view does, and one wholly inside it rises above the head. The component is flooded
    (:func:`_flooded`, densest first) from the shaft's cut at the bottom edge and from the
    other edges it reaches, or else from its top row, and the part flooded from the shaft is the
    femur's if the two were joined by the closing alone (no pixel of ``bone`` of one touches
    one of the other) or meet along a hip joint (:func:`_is_joint`); from the top row, also only
    where the other part is at least :data:`PELVIS_LEAST_AREA`. Where the bottom edge also cuts
    an ischium, the runs of the component along it (those nearer than the closing's 1 mm reach
    taken as one) are not all the shaft's: failing a split with all of them, each shorter
    stretch of neighbouring runs is tried as the shaft's cut, the longest first, flooded
    against the other runs and the other edges (not the top row: a pelvis seen beside the head
    need not rise above it). Else (a femur alone, one cut off by the edge, or a joint space the
    blur has filled in) there is none.
    """
    import scipy.ndimage as ndi

    rim = np.zeros(component.shape, bool)
    rim[0] = rim[:, 0] = rim[:, -1] = True
    top = np.flatnonzero(component.any(axis=1))[0]
    # the body's runs along the bottom edge, those nearer than the closing's reach as one
    bottom = component[-1]
    reach = max(1, round(1.0 / spacing))
    runs = ndi.label(ndi.binary_dilation(bottom, iterations=reach))[0] * bottom
    count = runs.max()
    density = np.clip(image, 0.0, 1.0)
    elevation = 1.0 - density
    for length in range(count, 0, -1):
        for first in range(1, count - length + 2):
            shaft = (runs >= first) & (runs < first + length)
            pelvis_seeds, least = component & rim, 0.0
            pelvis_seeds[-1] = (runs > 0) & ~shaft
            if not pelvis_seeds.any():
                pelvis_seeds[top] = component[top]
                least = PELVIS_LEAST_AREA / spacing**2
            seeds = np.where(pelvis_seeds, 2, 0)
            seeds[-1][shaft] = 1
            if not (seeds == 2).any():
                return None
            parts = _flooded(elevation, seeds, component)
            femur, pelvis = parts == 1, parts == 2
            if pelvis.sum() < least:
                continue
            apart = not (bone & femur & ndi.binary_dilation(bone & pelvis)).any()
            if apart or _is_joint(density, femur, pelvis, spacing):
                return femur
    return None


PELVIS_LEAST_AREA = 500.0
"""The least area (mm²) of a pelvis wholly inside a slice that :func:`segment` splits off: a
hemipelvis's slice through the acetabulum holds several thousand; a fragment of the femur's
own bone flooded from its top, a few."""


JOINT_VALLEY = 0.5
"""Where the femur's and the pelvis's floods meet, the median density must be below this
fraction of the bone's within 2 mm on either side (its 90th percentile: the subchondral plates)
for a joint space (:func:`_is_joint`)."""

JOINT_ROUNDNESS = 0.5
"""The most (mm, RMS) the line where the floods meet may stray from a circle for a joint
(:func:`_is_joint`): it follows the femoral head."""

JOINT_RADII = (10.0, 40.0)
"""The radii (mm) of that circle a femoral head can have, with room to spare."""


def _is_joint(density: np.ndarray, femur: np.ndarray, pelvis: np.ndarray, spacing: float) -> bool:
    """Whether the femur's part and the pelvis's of a flooded segmentation meet along a hip
    joint: a dark line (:data:`JOINT_VALLEY`) that is an arc of a circle (:data:`JOINT_ROUNDNESS`,
    :data:`JOINT_RADII`) with the femur's side inside it, its head.

    On synthetic slices of the phantom with a pelvis (:func:`with_pelvis`; ``tests/test_scan.py``)
    a 1 mm joint space at FWHM 0.7 mm, which the blur joins above the threshold, reads 0.26 of
    the bone beside it and strays 0.12 mm from a circle of the head's radius plus half the
    space; filled in by FWHM 1.0 mm, 0.8 and 2.2 mm; a femur's head cut off by the image's edge
    reads 0.73-0.84 and strays 4.7 mm or more, or, sharp and unblurred, 0.35 along a line
    nearly straight (a circle of 63 mm).
    """
    import scipy.ndimage as ndi

    joint = femur & ndi.binary_dilation(pelvis)
    near = ndi.binary_dilation(joint, iterations=round(2.0 / spacing))
    bone = min(np.percentile(density[side & near], 90) for side in (femur, pelvis))
    if not np.median(density[joint]) < JOINT_VALLEY * bone:
        return False
    rows, cols = np.nonzero(joint)
    # the circle x² + y² = 2ax + 2by + k nearest the line, by least squares
    (a, b, k), *_ = np.linalg.lstsq(
        np.c_[2 * cols, 2 * rows, np.ones(rows.size)], cols**2 + rows**2, rcond=None
    )
    radius = np.sqrt(k + a * a + b * b)
    stray = np.sqrt(np.mean((np.hypot(cols - a, rows - b) - radius) ** 2))
    head_rows, head_cols = np.nonzero(femur & near)
    inside = np.median(np.hypot(head_cols - a, head_rows - b)) < radius
    low, high = JOINT_RADII
    return bool(stray * spacing < JOINT_ROUNDNESS and low < radius * spacing < high and inside)


def _flooded(elevation: np.ndarray, seeds: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Seeded watershed: ``seeds``' labels (nonzero) flooded over ``inside`` (4-neighbours),
    lowest ``elevation`` first; each pixel takes the label of the flood that reaches it at the
    lower pass (the highest elevation on the way, the seeds' own not counted: seeds on a body's
    blurred edge flood it as soon as seeds deep inside another)."""
    import heapq

    labels = np.pad(np.where(inside, seeds, -1), 1, constant_values=-1).ravel()
    height = np.pad(elevation, 1).ravel()
    width = elevation.shape[1] + 2
    heap = [(0.0, i) for i in np.flatnonzero(labels > 0)]  # the seeds are the lowest ground
    heapq.heapify(heap)
    while heap:
        level, i = heapq.heappop(heap)
        for j in (i - 1, i + 1, i - width, i + width):
            if labels[j] == 0:
                labels[j] = labels[i]
                heapq.heappush(heap, (max(level, height[j]), j))
    return labels.reshape(np.add(elevation.shape, 2))[1:-1, 1:-1]


def _shaft_cut(component: np.ndarray, band: int) -> np.ndarray:
    """The straight cut across the shaft where it leaves the image: the line from the lowest
    pixel of its left wall to the lowest of its right wall, in the bottom ``band`` rows.

    The medullary canal opens there; with the cut drawn it is a hole of the femur, filled like
    the others. Square to the image, the cut is the bottom row; a femur imaged at a tilt
    leaves the image through its two walls at different heights.
    """
    cut = np.zeros(component.shape, bool)
    rows, cols = np.nonzero(component[-band:])
    if rows.size == 0:
        return cut
    rows = rows + component.shape[0] - min(band, component.shape[0])
    middle = 0.5 * (cols.min() + cols.max())
    left, right = cols < middle, cols > middle
    if not (left.any() and right.any()):
        return cut
    lowest = rows[left].max(), rows[right].max()
    r0, c0 = lowest[0], cols[left][rows[left] == lowest[0]].min()
    r1, c1 = lowest[1], cols[right][rows[right] == lowest[1]].max()
    steps = max(abs(r1 - r0), abs(c1 - c0)) + 1
    cut[
        np.linspace(r0, r1, steps).round().astype(int),
        np.linspace(c0, c1, steps).round().astype(int),
    ] = True
    return cut


def lr_image(
    scan: Scan,
    *,
    landmarks: Mapping[str, Any] | None = None,
    marrow: float = MARROW_HU,
    tissue: float = TISSUE_HU,
    psf_fwhm: float | str | None = None,
    dither: bool = False,
) -> FemurImage:
    """A scan as the network's input: a 500 µm density on the femur box with its fitted femur.

    With ``psf_fwhm`` the scanner's point-spread function is undone (:func:`deblur`;
    ``"auto"``: of the width :func:`estimate_psf_fwhm` reads off the scan) in the density; the
    femur's outline, landmarks and fit are read off the scan as it is, whose edges the
    deblurring's ringing and amplified noise would roughen.
    Hounsfield units become density (:func:`density_from_hu`; so do values of unknown unit
    beyond [0, 1], the rest is taken as density); the image is resampled to 0.5 mm (cubic splines),
    the femur segmented (:func:`segment`), a window of the femur box's size cut so the femur's
    top lies 4 mm below its top edge and its proximal 60 mm are centred across it (void beyond the
    scan, but for a shaft the scan cuts above the box's bottom edge: up to
    :data:`SHAFT_CONTINUED` mm of it are drawn as the scan's last row, so the edge where the load
    cases hold the femur is bone), everything outside the femur set to 0, and the femur fitted
    (:func:`femsr.femur_fit.fit_femur`), which gives the load cases and the ROIs. A femur whose
    shaft axis (found, or the ``shaft_axis`` given) leans 1° or more from upright is first
    turned upright about the point where the axis leaves the window's bottom edge (cubic
    splines), as the phantom's shaft stands and the network was trained on; else the fitted
    phantom would take the lean up in its neck-shaft angle. On scans of the phantom's seeds
    0-11 tilted by ±3° (0.5 mm pixels, FWHM 0.7 mm, 30 HU, the shaft continued below the box
    as a scan holds it; ``benchmarks/scripts/scan_tilt.py``) the neck-shaft angle comes out
    within 1.9° (0.5° on average); unturned, up to 3.3° off, and three landmark sets of the 24
    made no femur.

    Parameters
    ----------
    scan : Scan
        The coronal image (:func:`read_scan`).
    landmarks : mapping, optional
        Landmarks to use instead of those found (:func:`femsr.femur_fit.check_landmarks`:
        any of ``head_centre``, ``head_radius``, ``shaft_axis``, ``neck_shaft_angle``,
        ``side``, ``greater_trochanter``, ``lesser_trochanter``), in the **scan's frame**: mm,
        ``x`` right from the image's left edge and ``y`` down from its top edge, so pixel
        ``(r, c)`` is centred at ``((c + 1/2) * column spacing, (r + 1/2) * row spacing)``.
        A ``side`` given also picks that femur of a slice that holds both (:func:`segment`).
    marrow, tissue : float
        The calibration of :func:`density_from_hu`.
    psf_fwhm : float or "auto", optional
        The scanner's point-spread function, full width at half maximum (mm), to deblur by;
        ``"auto"`` reads it off the scan (:func:`estimate_psf_fwhm`).
        :func:`femsr.reconstruct` reconstructs a deblurred image with the model for deblurred
        scans, a blurred one with the scan model.
    dither : bool
        Before a scan is deblurred by :data:`femsr.defaults.DEBLURRED_MODEL_MAX_FWHM` or
        more, add noise (white, seeded, so a scan always gives the same image) that brings
        its own (:func:`estimate_noise`) up to :data:`femsr.defaults.BLURRY_SCAN_NOISE_HU`,
        for a reconstruction that is refined and not averaged (what ``femsr reconstruct``
        does without ``--tta`` for a scan of pixels finer than
        :data:`femsr.defaults.BLURRY_FINE_PIXEL_MAX`): at that blur the block-mean model
        draws fog from a quiet slice, and it and the refinement build struts on the grain of
        a noisy one; averaged over the symmetries and refined, or from coarser pixels, the
        added noise made it worse ("Scans in" in ``benchmarks/RESULTS.md``). Nothing is added
        where the noise cannot be read (a warning says so).

    Returns
    -------
    FemurImage
        Its ``meta`` holds the scan's ``spacing``, ``index`` and ``unit``, the ``psf_fwhm``
        it was deblurred by (mm; None if not), the ``noise`` read off it (HU; None where it
        was not read) and the ``dither`` added (HU; 0 if none), the ``tilt`` of the
        shaft that the image was turned back from (degrees, clockwise as displayed; 0 if it
        was not turned), the mm of shaft continued below the scan's end
        (``shaft_continued``), the ``landmarks`` the fit took (found, or given), in the scan's
        frame: written as JSON they are a file for ``femsr reconstruct --landmarks``
        (:func:`read_landmarks`), the Dice overlap of the fitted femur's outline with the
        segmented femur (``fit_dice``), and ``to_box``, the 3 x 3 affine (nested lists) that takes a
        point ``(x, y, 1)`` of the scan's frame to the femur box's (mm, ``y`` up from the box's
        bottom edge), the frame of the fitted femur and of the reconstruction: its inverse
        places a reconstruction's pixels, ROIs and landmarks on the scan.

    Raises
    ------
    ValueError
        From :func:`segment` (no femur, a femur cut off), on bad ``landmarks``, if the
        proximal femur is wider than the box, if the scan ends more than
        :data:`SHAFT_CONTINUED` mm above the box's bottom edge, or if the fitted femur
        overlaps the segmented one less than :data:`FIT_LEAST_DICE`.

    Examples
    --------
    >>> from femsr.femur import Femur
    >>> ct = synthetic_scan(Femur().mask(0.5).astype(float), 0.5)
    >>> found = lr_image(ct).meta["landmarks"]
    >>> [round(v) for v in found["head_centre"]], found["side"]  # 15 mm of border
    ([81, 43], 'right')
    """
    import scipy.ndimage as ndi

    from femsr import femur as femur_module

    given = check_landmarks(landmarks)
    pixel = femur_module.LR_PIXEL
    if psf_fwhm == "auto":
        psf_fwhm = estimate_psf_fwhm(scan, marrow=marrow, tissue=tissue)
    elif isinstance(psf_fwhm, str):
        raise ValueError(f"psf_fwhm must be a number of mm or 'auto', got {psf_fwhm!r}")
    zoom = (scan.spacing[0] / pixel, scan.spacing[1] / pixel)

    def resampled_density(scan: Scan) -> np.ndarray:
        # Cubic splines: linear interpolation from 0.7 mm pixels blurs the struts as a wider PSF
        # would (a 0.7 mm slice at FWHM 1.0 mm, refined: 339 % against 197 %, "Scans in"). The
        # spline continues the edge rows, so a shaft cut by the scan's end stays bone to its end.
        density = np.clip(_density(scan, marrow, tissue), 0.0, 1.0)
        return np.clip(ndi.zoom(density, zoom, order=3, mode="nearest"), 0.0, 1.0)

    # The femur is segmented, and its landmarks read, on the scan as it is: deblurring by a wide
    # point-spread function roughens the outline with ringing and noise (at FWHM 1.0 mm and
    # 50 HU the 8 test femurs' neck-shaft angles came out up to 2.2 and 3.1° off from 0.5 and
    # 0.7 mm pixels, against 1.3 and 1.5° undeblurred, "Scans in"); only the density inside it
    # is deblurred.
    outlined = resampled_density(scan)
    noise, added = None, 0.0
    if dither and psf_fwhm is not None and psf_fwhm >= DEBLURRED_MODEL_MAX_FWHM:
        scan, noise, added = _dithered(scan, marrow, tissue)
    if psf_fwhm is not None:
        scan = deblur(scan, psf_fwhm)
    resampled = resampled_density(scan) if psf_fwhm is not None else outlined
    # Affine maps of homogeneous points, (x, y) in mm or (column, row) of the resampled image.
    # ndi.zoom maps the centres of the first and last pixels onto each other.
    stretch = (np.array(resampled.shape) - 1) / (np.array(np.shape(scan.image)) - 1)
    to_resampled = _affine(np.diag(stretch[::-1] / scan.spacing[::-1]), -0.5 * stretch[::-1])
    side = given.get("side")
    mask = segment(outlined, spacing=pixel, side=side)
    window, inside, corner, continued = _box_window(resampled, mask)
    to_box = _box_frame(corner) @ to_resampled
    (x, _), found_axis = _shaft_axis(inside, pixel)
    tilt = _tilt(found_axis, given.get("shaft_axis"), to_box)
    if abs(tilt) >= _UPRIGHT:
        # Turned about where the shaft axis leaves the window's bottom edge, so the shaft's
        # cut stays level; the few pixels turned in from beyond the scan repeat its edge.
        pivot = np.linalg.solve(_box_frame(corner), [x, 0.0, 1.0])[:2]
        c, s = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
        turn = _affine(np.eye(2), pivot) @ _affine(np.array([[c, s], [-s, c]]), -pivot)
        back = np.linalg.inv(turn)
        upright, upright_outlined = (
            np.clip(
                ndi.affine_transform(
                    image, back[1::-1, 1::-1], back[1::-1, 2], order=3, mode="nearest"
                ),
                0.0,
                1.0,
            )
            for image in (resampled, outlined)
        )
        mask = segment(upright_outlined, spacing=pixel, side=side)
        window, inside, corner, continued = _box_window(upright, mask)
        to_box = _box_frame(corner) @ turn @ to_resampled
    else:
        tilt = 0.0
    femur = fit_femur(inside, pixel, landmarks=_moved(given, to_box))
    dice = outline_dice(femur, inside, pixel)
    if dice < FIT_LEAST_DICE:
        raise ValueError(
            f"the fitted femur overlaps the segmented one with Dice {dice:.2f} (at least "
            f"{FIT_LEAST_DICE} is a femur): landmarks given far off, or a segmentation that "
            "holds more than the femur (a pelvis joined to its head across a joint space too "
            "narrow to see?)"
        )
    found = _moved(find_landmarks(inside, pixel), np.linalg.inv(to_box))
    used = {name: found[name] for name in LANDMARKS} | given
    meta: dict[str, Any] = {"spacing": list(scan.spacing), "index": scan.index, "unit": scan.unit}
    meta |= {"psf_fwhm": psf_fwhm, "noise": noise, "dither": added, "tilt": tilt}
    meta |= {"shaft_continued": continued, "landmarks": used, "fit_dice": dice}
    meta["to_box"] = to_box.tolist()
    return FemurImage(np.where(inside, window, 0.0), pixel, femur, meta)


FIT_LEAST_DICE = 0.9
"""The least Dice overlap of the fitted femur's outline with the segmented femur that
:func:`lr_image` takes. On synthetic slices of the 40 grown femurs at four settings
(``benchmarks/scripts/scan_hip.py``) the fits overlap by 0.979 or more; a pelvis left joined
to the head gave 0.82."""

SHAFT_CONTINUED = 10.0
"""Millimetres of shaft below a scan's end that :func:`lr_image` draws by repeating its last
row, where the femur box reaches past the scan: the shaft is nearly prismatic there."""

_UPRIGHT = 1.0
"""Degrees of shaft tilt below which :func:`lr_image` leaves a scan unturned: the shaft axis
found on an upright phantom's scan leans up to half a degree (1.8° where a fillet bends it),
and turning resamples (smooths) the image."""


def _affine(matrix: np.ndarray, shift: Any) -> np.ndarray:
    """The 3 x 3 homogeneous form of ``p -> matrix @ p + shift``."""
    affine = np.eye(3)
    affine[:2, :2], affine[:2, 2] = matrix, shift
    return affine


def _box_frame(corner: tuple[int, int]) -> np.ndarray:
    """From (column, row) of a 500 µm image to the femur box's frame (mm, y up) of the window
    whose top-left pixel is ``corner`` (row, column)."""
    from femsr import femur as femur_module

    pixel = femur_module.LR_PIXEL
    rows = femur_module.grid_shape(pixel)[0]
    shift = pixel * np.array([0.5 - corner[1], rows - 0.5 + corner[0]])
    return _affine(np.diag([pixel, -pixel]), shift)


def _tilt(found: np.ndarray, shaft_axis: Any, to_box: np.ndarray) -> float:
    """Degrees the shaft axis leans from upright in the box, clockwise as seen: given in the
    scan's frame, or ``found`` (the upward direction of the axis in the box)."""
    if shaft_axis is None:
        dx, dy = found
    else:
        (x0, y0), (x1, y1) = ((to_box @ [*point, 1.0])[:2] for point in shaft_axis)
        dx, dy = (x1 - x0, y1 - y0) if y1 > y0 else (x0 - x1, y0 - y1)
    return math.degrees(math.atan2(dx, dy))


_HEADROOM = 4.0
"""Millimetres of the femur box above the femur's top in :func:`lr_image`'s window."""


def _box_window(
    density: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], float]:
    """The femur box's window of a 500 µm density and its femur mask (see :func:`lr_image`),
    the (row, column) of the image its top-left pixel takes, and the mm of shaft continued
    below the scan's end."""
    from femsr import femur as femur_module

    pixel = femur_module.LR_PIXEL
    rows, cols = femur_module.grid_shape(pixel)
    headroom = round(_HEADROOM / pixel)
    top = int(np.flatnonzero(mask.any(axis=1))[0]) - headroom
    proximal = mask[top + headroom : top + headroom + round(60.0 / pixel)]
    used = np.flatnonzero(proximal.any(axis=0))
    if used[-1] - used[0] + 1 > cols - 2:
        raise ValueError(
            f"the proximal femur is {(used[-1] - used[0] + 1) * pixel:.0f} mm wide; the box "
            f"holds {cols * pixel:.0f} mm (is a pelvis joined to its head across a joint space "
            "too narrow to see?)"
        )
    left = (used[0] + used[-1] + 1) // 2 - cols // 2
    window = np.zeros((rows, cols))
    inside = np.zeros((rows, cols), bool)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + rows, density.shape[0]), min(left + cols, density.shape[1])
    window[r0 - top : r1 - top, c0 - left : c1 - left] = density[r0:r1, c0:c1]
    inside[r0 - top : r1 - top, c0 - left : c1 - left] = mask[r0:r1, c0:c1]
    # The load cases hold the shaft at the box's bottom edge: a femur box reaching past the
    # scan's end would leave that edge on void, the femur held by nothing (its refinement then
    # optimizes noise). The shaft is continued there as the scan's last row, a few mm at most.
    missing = rows - (r1 - top)
    if missing <= 0 or not inside[r1 - top - 1].any():
        return window, inside, (top, int(left)), 0.0
    if missing * pixel > SHAFT_CONTINUED:
        raise ValueError(
            f"the scan ends {missing * pixel:.1f} mm above the femur box's bottom edge "
            f"({rows * pixel - _HEADROOM:.0f} mm below the femur's top), where the load cases hold "
            f"the shaft; femsr continues the shaft by at most {SHAFT_CONTINUED:.0f} mm"
        )
    window[r1 - top :] = window[r1 - top - 1]
    inside[r1 - top :] = inside[r1 - top - 1]
    return window, inside, (top, int(left)), missing * pixel


def _moved(marks: Mapping[str, Any], affine: np.ndarray) -> dict[str, Any]:
    """Landmarks in another frame, whose points are ``affine @ (x, y, 1)`` (mm)."""

    def point(p: Any) -> tuple[float, float] | None:
        return None if p is None else tuple((affine @ [*p, 1.0])[:2].tolist())

    moved = dict(marks)
    for name in ("head_centre", "greater_trochanter", "lesser_trochanter"):
        if name in marks:
            moved[name] = point(marks[name])
    for name in ("shaft_axis", "neck_axis"):
        if name in marks:
            moved[name] = tuple(point(p) for p in marks[name])
    if "head_radius" in marks:
        scale = math.sqrt(abs(np.linalg.det(affine[:2, :2])))
        moved["head_radius"] = float(marks["head_radius"] * scale)
    return moved


def read_landmarks(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The landmarks of a JSON file: an object of any of
    :data:`femsr.femur_fit.LANDMARKS`, in the scan's frame (see :func:`lr_image`), e.g.
    ``{"head_centre": [81.5, 43.0], "neck_shaft_angle": 128, "side": "right"}``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a JSON object, or on an unknown name or a bad value
        (:func:`femsr.femur_fit.check_landmarks`).
    """
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{str(path)!r} holds a JSON {type(data).__name__}; landmarks are a JSON object"
        )
    try:
        return check_landmarks(data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{str(path)!r}: {error}") from None


SOFT_TISSUE_HU = 40.0
"""Hounsfield units of the soft tissue around the bone in a :func:`synthetic_scan`."""


def synthetic_scan(
    density: np.ndarray,
    pixel_size: float,
    *,
    pixel: float = 0.5,
    fwhm: float = 0.0,
    noise: float = 0.0,
    border: float = 15.0,
    seed: int = 0,
    marrow: float = MARROW_HU,
    tissue: float = TISSUE_HU,
) -> Scan:
    """A clinical-looking coronal CT slice of a femur density image (row 0 at the top).

    The density (``pixel_size`` mm) in Hounsfield units (:func:`density_from_hu` inverted:
    the void the bone encloses, the shaft's canal open at the bottom edge included, is marrow,
    density 0; soft tissue at :data:`SOFT_TISSUE_HU` outside the bone), inside a field of view
    ``border`` mm wider at the top and both sides (the shaft leaves it at the bottom), blurred by a
    Gaussian point-spread function of ``fwhm`` mm full width at half maximum, averaged onto
    ``pixel`` mm pixels (linear interpolation of the blurred image, after an area average
    where the pixels grow), with seeded Gaussian noise of standard deviation ``noise`` HU.
    Pixel ``(r, c)`` is centred ``((c + 1/2) * pixel, (r + 1/2) * pixel)`` mm right of and
    below the field's top-left corner, which lies ``border`` mm left of and above the
    density's (where ``pixel / pixel_size`` is a whole number; else to a fraction of a pixel).
    """
    import scipy.ndimage as ndi

    density = np.asarray(density)
    bone = density > 0
    # Marrow fills the void inside the periosteum; read as soft tissue, it would add 4-7 % to a
    # trabecular ROI's mass (BV/TV 0.25-0.35). The bottom edge is closed for the canal.
    inside = ndi.binary_fill_holes(np.vstack([bone, np.ones((1, bone.shape[1]), bool)]))[:-1]
    hu = np.where(inside, marrow + density * (tissue - marrow), SOFT_TISSUE_HU)
    pad = round(border / pixel_size)
    hu = np.pad(hu, ((pad, 0), (pad, pad)), constant_values=SOFT_TISSUE_HU)
    sigma = fwhm / _FWHM_PER_SIGMA / pixel_size
    if sigma > 0:
        hu = ndi.gaussian_filter(hu, sigma, mode="nearest")
    factor = pixel / pixel_size
    if factor > 1:  # the detector integrates over its pixel
        hu = ndi.uniform_filter(hu, size=max(1, round(factor)), mode="nearest")
    # Whole pixels: the field grows at the bottom and the right to a whole number of them, and
    # the pixels' edges, not their centres, are mapped onto each other (grid_mode).
    count = np.ceil(np.array(hu.shape) / factor - 1e-6).astype(int)
    grown = np.maximum(np.round(count * factor).astype(int), hu.shape)
    hu = np.pad(hu, [(0, grown[0] - hu.shape[0]), (0, grown[1] - hu.shape[1])], mode="edge")
    hu = ndi.zoom(hu, count / np.array(hu.shape), order=1, grid_mode=True, mode="nearest")
    hu = hu + np.random.default_rng(seed).normal(0.0, noise, hu.shape) if noise else hu
    return Scan(hu, (pixel, pixel), "HU")


def with_pelvis(
    density: np.ndarray,
    pixel_size: float,
    femur: Femur,
    joint_space: float,
    *,
    border: float = 15.0,
    seed: int = 0,
    ischium: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``density``, an image of ``femur``'s box at ``pixel_size`` mm, in a field ``border`` mm
    wider at the top and both sides, with a pelvis above the head; and the pelvis's pixels.

    The pelvis: an acetabulum 4 mm thick (a 1 mm plate of density 1 facing the head,
    trabecular bone of density 0.35 on average behind it) ``joint_space`` mm from the head,
    from 50° below the head's centre medially over the top to 40° above it laterally, and an
    ilium above it that the field's top edge cuts off, as a slice cropped to the femur cuts it;
    with ``ischium``, also an ischium 15 mm wide (1 mm walls of density 1) that descends from
    the acetabulum's medial end to the field's bottom edge, as a slice cropped short cuts it.
    :func:`synthetic_scan` with ``border=0`` scans it; :func:`segment` splits it off.
    """
    pad = round(border / pixel_size)
    field = np.pad(np.asarray(density, dtype=float), ((pad, 0), (pad, pad)))
    marks = femur.landmarks()
    (hx, hy), radius = marks.head_centre, marks.head_radius
    rows, cols = np.mgrid[: field.shape[0], : field.shape[1]]
    medial = ((cols + 0.5) * pixel_size - border - hx) * (1 if femur.side == "right" else -1)
    up = BOX[0] + border - (rows + 0.5) * pixel_size - hy
    depth = np.hypot(medial, up) - radius - joint_space  # into the pelvis from the joint
    angle = np.degrees(np.arctan2(up, medial))
    cup_end = -50.0  # degrees: the acetabulum's medial end, where an ischium leaves it
    cup = (depth > 0) & (depth < 4.0) & (angle > cup_end) & (angle < 140.0)
    ilium = (depth > 0) & (up > 0.6 * radius) & (np.abs(medial - 0.4 * radius) < 1.1 * radius)
    pelvis = cup | ilium
    trabecular = np.random.default_rng(seed).random(field.shape) < 0.35
    field[pelvis] = np.where(depth < 1.0, 1.0, trabecular)[pelvis]
    if ischium:
        end = np.radians(cup_end)
        inner = (radius + joint_space) * np.cos(end)
        across = medial - inner  # from the ischium's lateral wall to its medial one
        bar = (up < (radius + joint_space) * np.sin(end)) & (across > 0) & (across < 15.0)
        field[bar] = np.where((across < 1.0) | (across > 14.0), 1.0, trabecular)[bar]
        pelvis = pelvis | bar
    return field, pelvis


DEBLUR_BALANCE = 0.01
"""The noise-to-signal power ratio of :func:`deblur`'s Wiener filter. On synthetic CT slices
of three femurs (:func:`synthetic_scan`) it brought the bone's HU nearest the unblurred
slice's of 0.003, 0.01 and 0.03 at 0.5 mm pixels, FWHM 0.7 mm and 30 HU (RMS error 240-250 HU
blurred, 152-173 deblurred), within 10 HU of the best at 0.3 mm, FWHM 0.5 mm and 20 HU
(317-332 to 176-190), and left them about as blurred at FWHM 1.0 mm and 50 HU (200-300 HU
either way), where 0.03 does a little better: a noisier scan wants a larger balance."""


def deblur(scan: Scan, fwhm: float, *, balance: float = DEBLUR_BALANCE) -> Scan:
    """The scan with a Gaussian point-spread function of ``fwhm`` mm (full width at half
    maximum) undone by a Wiener filter.

    The filter ``H (1 + balance) / (H**2 + balance)`` of the PSF's transfer function ``H``
    restores the frequencies the blur damped, as far as ``balance`` lets the noise through, and
    keeps the mean (a uniform image stays as it is). The image is mirrored at its edges so that
    the filter does not wrap one edge onto the other. The network trained on block means draws
    trabeculae from a deblurred slice where it draws fog from a blurred one ("Scans in" in
    ``benchmarks/RESULTS.md``).

    Parameters
    ----------
    scan : Scan
        The coronal image (:func:`read_scan`), in any unit.
    fwhm : float
        The scanner's PSF, mm, in the image plane.
    balance : float
        The Wiener filter's noise-to-signal power ratio (:data:`DEBLUR_BALANCE`).

    Examples
    --------
    >>> flat = Scan(np.full((8, 8), 300.0), (0.5, 0.5), "HU")
    >>> bool(np.allclose(deblur(flat, 0.7).image, 300.0))
    True
    """
    for name, value in (("fwhm", fwhm), ("balance", balance)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    sigma = np.array([fwhm / _FWHM_PER_SIGMA / s for s in scan.spacing])
    pad = math.ceil(4.0 * sigma.max()) + 1
    mirrored = np.pad(np.asarray(scan.image, dtype=float), pad, mode="reflect")
    fy = np.fft.fftfreq(mirrored.shape[0])[:, None]
    fx = np.fft.rfftfreq(mirrored.shape[1])[None, :]
    transfer = np.exp(-2.0 * math.pi**2 * ((sigma[0] * fy) ** 2 + (sigma[1] * fx) ** 2))
    wiener = transfer * (1.0 + balance) / (transfer**2 + balance)
    sharp = np.fft.irfft2(np.fft.rfft2(mirrored) * wiener, s=mirrored.shape)
    return replace(scan, image=sharp[pad:-pad, pad:-pad])


_EDGE_BAND = (2.0, 20.0)
"""Millimetres above the bottom of the femur in a scan between which
:func:`estimate_psf_fwhm` reads the shaft's edges: clear of the scan's end and of the lesser
trochanter."""
_EDGE_REACH = (2.5, 1.5)
"""Millimetres outside and inside the periosteal edge that :func:`estimate_psf_fwhm` fits:
inside, less than a shaft's cortex is thick (3-4 mm in the phantom, more in adults)."""


def estimate_psf_fwhm(scan: Scan, *, marrow: float = MARROW_HU, tissue: float = TISSUE_HU) -> float:
    """The full width at half maximum (mm) of a scan's point-spread function, read off the
    shaft's outer edges.

    The edge method: the shaft's cortex against the soft tissue beside it is a step, which the
    scanner blurs into an error function of the PSF's width. In each row of the femur's
    bottom 2-20 mm (:func:`segment`) the lateral and the medial edge are found where the row
    crosses half the cortex's density (its 99.5th percentile); the rows' values from 2.5 mm
    outside to 1.5 mm inside them, at their distances along the edge's normal, are fitted
    with an error function by least squares; the detector pixel's own width (variance
    ``pixel**2 / 12``) is taken off its variance. On synthetic slices of held-out femurs
    (:func:`synthetic_scan`; pixels 0.3-0.7 mm, FWHM 0.5-1.0 mm, 20-50 HU) it reads within
    0.03 mm of the true FWHM; an unblurred slice at 0.5 mm reads 0.13-0.34 mm.

    Raises
    ------
    ValueError
        From :func:`segment`, if the scan holds less than 5 mm of shaft 2-20 mm above the
        femur's bottom, or if its edges fit no blurred step.
    """
    import scipy.optimize
    import scipy.special

    values = _density(scan, marrow, tissue)
    row_mm, column_mm = scan.spacing
    femur = segment(np.clip(values, 0.0, 1.0), spacing=min(scan.spacing))
    rows = np.flatnonzero(femur.any(axis=1))
    depth = (rows[-1] - rows) * row_mm  # above the femur's bottom row
    band = rows[(depth >= _EDGE_BAND[0]) & (depth <= _EDGE_BAND[1])]
    if len(band) * row_mm < 5.0:
        raise ValueError(
            f"the scan holds {len(band) * row_mm:.1f} mm of shaft between 2 and 20 mm above "
            "the femur's bottom: too little to read the point-spread function off (5 mm or more)"
        )
    half = 0.5 * np.percentile(values[femur], 99.5)
    distances, samples, pixel_variance = [], [], 0.0
    for side, inside in ((values, femur), (values[:, ::-1], femur[:, ::-1])):  # left, right
        edges = []
        for r in band:
            start = max(int(np.argmax(inside[r])) - round(_EDGE_REACH[0] / column_mm), 0)
            above = np.flatnonzero(side[r, start:] > half)
            if len(above) and above[0] > 0:
                c = start + int(above[0])
                edges.append((r, c - 1 + (half - side[r, c - 1]) / (side[r, c] - side[r, c - 1])))
        if len(edges) < 2:
            raise ValueError("no edge of the shaft to read the point-spread function off")
        found = np.array(edges)
        slope = np.polyfit(found[:, 0] * row_mm, found[:, 1] * column_mm, 1)[0]
        cos = 1.0 / math.hypot(1.0, slope)  # rows cross the edge's normal at this cosine
        pixel_variance += 0.5 * (column_mm * cos) ** 2 / 12.0
        columns = np.arange(side.shape[1])
        for r, edge in found:
            distance = (columns - edge) * column_mm * cos
            near = (distance > -_EDGE_REACH[0]) & (distance < _EDGE_REACH[1])
            distances.append(distance[near])
            samples.append(side[int(r), near])

    def step(x, low, high, centre, sigma):
        return low + (high - low) * 0.5 * (1.0 + scipy.special.erf((x - centre) / (sigma * 2**0.5)))

    try:
        with warnings.catch_warnings():  # of the covariance, which is not used
            warnings.simplefilter("ignore", scipy.optimize.OptimizeWarning)
            (_, _, _, sigma), _ = scipy.optimize.curve_fit(
                step,
                np.concatenate(distances),
                np.concatenate(samples),
                p0=[0.0, 2.0 * half, 0.0, column_mm],
            )
    except RuntimeError as error:  # no convergence: no step in the rows
        raise ValueError(f"the shaft's edges fit no blurred step: {error}") from None
    return _FWHM_PER_SIGMA * math.sqrt(max(sigma**2 - pixel_variance, 0.0))


def _dithered(scan: Scan, marrow: float, tissue: float) -> tuple[Scan, float | None, float]:
    """The scan with its noise brought up to BLURRY_SCAN_NOISE_HU, its noise and the noise
    added (HU)."""
    try:
        noise = estimate_noise(scan, marrow=marrow, tissue=tissue)
    except ValueError as error:
        warnings.warn(f"no noise added to the scan: {error}", stacklevel=3)
        return scan, None, 0.0
    added = math.sqrt(max(BLURRY_SCAN_NOISE_HU**2 - noise**2, 0.0))
    if added == 0.0:
        return scan, noise, 0.0
    unit = 1.0 if _holds_hu(scan) else 1.0 / (tissue - marrow)  # of the scan's values, in HU
    # Seeded by the scan's own values: the same scan always gives the same image, and the grain
    # is not the noise of a synthetic slice drawn from the same seed.
    image = np.ascontiguousarray(scan.image, dtype=float)
    seed = int.from_bytes(hashlib.blake2b(image.tobytes(), digest_size=8).digest(), "little")
    grain = np.random.default_rng(seed).normal(0.0, added * unit, image.shape)
    return replace(scan, image=image + grain), noise, added


_NOISE_MARGIN = 5.0
"""Millimetres around the femur that :func:`estimate_noise` leaves out: its edges' blur and the
marrow's partial volume."""

_NOISE_LAG = 2.0
"""Millimetres between the pixels :func:`estimate_noise` compares: farther than clinical
reconstruction kernels correlate CT noise (white noise smoothed by a Gaussian of 1 mm FWHM is
correlated by 0.4 % between pixels 2 mm apart), near against the soft tissue's fat and muscle."""


def estimate_noise(scan: Scan, *, marrow: float = MARROW_HU, tissue: float = TISSUE_HU) -> float:
    """The standard deviation (HU) of a scan's pixel noise, read off the soft tissue around
    the femur.

    Pixels of soft tissue (calibrated density within ±0.3: water, fat and muscle, not air or
    bone) farther than 5 mm from the femur (:func:`segment`) differ by their noise alone where
    the tissue is uniform; the median absolute deviation of the differences between pixels
    2 mm apart along the rows, over √2, reads the noise's standard deviation and passes over
    the tissue's own edges. Pixels that far apart hold independent noise even where the
    scanner's reconstruction kernel correlates neighbours (which would read low). A scan in
    density is read in the HU of its calibration. On synthetic slices of two held-out femurs
    (:func:`synthetic_scan`; pixels 0.3-0.7 mm, FWHM 0.5-1.0 mm, 20-50 HU) it reads within
    2.5 % of the noise, and noise smoothed over 1 mm FWHM within 5 %.

    Raises
    ------
    ValueError
        From :func:`segment`, or if the scan holds no soft tissue around the femur.
    """
    import scipy.ndimage as ndi

    values = _density(scan, marrow, tissue)
    femur = segment(np.clip(values, 0.0, 1.0), spacing=min(scan.spacing))
    far = ~ndi.binary_dilation(femur, iterations=max(1, round(_NOISE_MARGIN / min(scan.spacing))))
    soft = far & (np.abs(values) < 0.3)
    lag = max(1, round(_NOISE_LAG / scan.spacing[1]))
    pairs = soft[:, lag:] & soft[:, :-lag]
    if pairs.sum() < 100:
        raise ValueError("the scan holds no soft tissue around the femur to read its noise off")
    differences = (values[:, lag:] - values[:, :-lag])[pairs]
    spread = np.median(np.abs(differences - np.median(differences)))
    return float(1.4826 * spread / math.sqrt(2.0) * (tissue - marrow))


def read_scan(
    path: str | os.PathLike[str],
    *,
    index: int | None = None,
    spacing: tuple[float, float] | None = None,
    bone_threshold: float = 300.0,
) -> Scan:
    """The coronal image of a scan file or DICOM folder (see the module docstring).

    Parameters
    ----------
    path : path
        ``.dcm`` (or a DICOM file without suffix), a folder of DICOM files, ``.nii``,
        ``.nii.gz``, ``.tif`` or ``.tiff``.
    index : int, optional
        The coronal slice of a volume (0 the most anterior); default the one with the most bone.
    spacing : (float, float), optional
        Row and column pixel sizes (mm) where the file has none (TIFF without a unit); a file's
        own spacing wins.
    bone_threshold : float
        Values above it are bone when a slice is chosen (300 suits HU).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        On a file that is not a scan, an axial or sagittal image where a coronal one is needed,
        an oblique one, a missing spacing, a volume with no bone, an ``index`` out of range.
    ImportError
        If the format's reader is not installed (``pip install "femsr[io]"``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no scan at {str(path)!r}")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        volume, affine, unit = _read_nifti(path)
    elif name.endswith((".tif", ".tiff")):
        return _read_tiff(path, index, spacing, bone_threshold)
    else:
        volume, affine, unit = _read_dicom(path)
    image, spacing, taken, where = _coronal(volume, affine, index, bone_threshold)
    return Scan(image, spacing, unit, taken, where)


def write_scan(path: str | os.PathLike[str], scan: Scan) -> None:
    """Write a :class:`Scan`'s image with its spacing, as NIfTI (``.nii``, ``.nii.gz``: a
    coronal slice placed by :func:`placement`) or float32 TIFF (``.tif``, ``.tiff``:
    resolution in pixels per centimetre, no placement), atomically; :func:`read_scan` reads it
    back."""
    path = Path(path)
    name = path.name.lower()
    image = np.asarray(scan.image, dtype=np.float32)
    if name.endswith((".nii", ".nii.gz")):
        nib = _need("nibabel")
        # Stored as voxels (i, j, k) = (column, 0, row): i right to left, k down.
        affine = placement(scan) @ _voxel_to_frame(scan.spacing)
        data = image.T[:, None, :]
        payload = nib.Nifti1Image(data, affine).to_bytes()
        with atomic_write(path) as stream:
            stream.write(gzip.compress(payload) if name.endswith(".gz") else payload)
    elif name.endswith((".tif", ".tiff")):
        tifffile = _need("tifffile")
        buffer = io.BytesIO()
        tifffile.imwrite(
            buffer,
            image,
            resolution=(10.0 / scan.spacing[1], 10.0 / scan.spacing[0]),
            resolutionunit="CENTIMETER",
        )
        with atomic_write(path) as stream:
            stream.write(buffer.getvalue())
    else:
        raise ValueError(f"{str(path)!r}: write .nii, .nii.gz, .tif or .tiff")


def placement(scan: Scan) -> np.ndarray:
    """``scan.affine``, or where that is None the placement :func:`write_scan` gives it: columns
    right to left, rows superior to inferior, a 1 mm thick slice, the top-left pixel's centre
    at the origin."""
    if scan.affine is not None:
        return np.asarray(scan.affine, dtype=float)
    rows, cols = scan.spacing
    return np.array(
        [[-1.0, 0, 0, 0.5 * cols], [0, 0, -1.0, 0], [0, -1.0, 0, 0.5 * rows], [0, 0, 0, 1.0]]
    )


def _voxel_to_frame(spacing: tuple[float, float]) -> np.ndarray:
    """From a written slice's voxel (column, 0, row, 1) to ``(x, y, 0, 1)`` of the scan's frame
    (mm, pixel centres)."""
    rows, cols = spacing
    return np.array(
        [[cols, 0, 0, 0.5 * cols], [0, 0, rows, 0.5 * rows], [0, 1.0, 0, 0], [0, 0, 0, 1.0]]
    )


def box_placement(scan: Scan, to_box: Any, shape: tuple[int, int], pixel: float) -> np.ndarray:
    """The :class:`Scan` ``affine`` of an image of ``shape`` with ``pixel`` mm pixels on the femur
    box of ``lr_image(scan)`` (``to_box``, its ``meta["to_box"]``): its reconstruction written
    with it (:func:`write_scan`) overlays the scan (written likewise) in a viewer."""
    # (x, y down) of the image's frame -> the box's (x, y up) -> the scan's frame.
    to_scan = np.linalg.inv(np.asarray(to_box)) @ _affine(
        np.diag([1.0, -1.0]), [0.0, shape[0] * pixel]
    )
    planar = np.eye(4)
    planar[np.ix_([0, 1, 3], [0, 1, 3])] = to_scan
    return placement(scan) @ planar


def is_dicom_series(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder of two or more DICOM files (any name; with the ``DICM``
    preamble) of one series, which :func:`read_scan` reads as one scan, rather than a folder of
    images. False where pydicom is not installed."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        import pydicom
        from pydicom.misc import is_dicom
    except ImportError:
        return False
    files = [p for p in path.iterdir() if p.is_file() and is_dicom(p)]
    series = {
        pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).get(
            "SeriesInstanceUID"
        )
        for p in files
    }
    return len(files) > 1 and len(series) == 1


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"reading this scan needs {module}: pip install 'femsr[io]'") from error


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    nib = _need("nibabel")
    try:
        image = nib.load(path)
        data = np.asarray(image.get_fdata(), dtype=float)
    except Exception as error:  # nibabel raises many types on a damaged file
        raise ValueError(f"{str(path)!r} is not a readable NIfTI file: {error}") from None
    while data.ndim > 3 and data.shape[-1] == 1:  # a single time point
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise ValueError(f"{str(path)!r} has {data.ndim} dimensions; a scan has 2 or 3")
    return data, image.affine, "stored"


def _read_dicom(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    pydicom = _need("pydicom")
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    datasets = []
    for file in files:
        try:
            datasets.append(pydicom.dcmread(file))
        except Exception as error:  # pydicom raises InvalidDicomError and others
            if path.is_dir():
                continue  # a folder may hold other files beside its series
            raise ValueError(f"{str(file)!r} is not a readable DICOM file: {error}") from None
    if not datasets:
        raise ValueError(f"{str(path)!r} holds no DICOM file")
    series = {d.get("SeriesInstanceUID") for d in datasets}
    if len(series) > 1:
        raise ValueError(
            f"{str(path)!r} holds {len(series)} DICOM series; give the folder (or file) of one"
        )
    frames = [frame for dataset in datasets for frame in _frames(dataset)]
    header = frames[0][0]
    for key in ("PixelSpacing", "ImageOrientationPatient"):
        if key not in header:
            raise ValueError(f"{str(path)!r}: the DICOM header has no {key}")
    row_cosine, column_cosine = (
        np.array(header["ImageOrientationPatient"][k : k + 3], dtype=float) for k in (0, 3)
    )
    normal = np.cross(row_cosine, column_cosine)
    frames.sort(key=lambda frame: _position(frame[0]) @ normal)
    header = frames[0][0]
    volume = np.stack(
        [
            stored * float(h.get("RescaleSlope", 1.0)) + float(h.get("RescaleIntercept", 0.0))
            for h, stored in frames
        ],
        axis=-1,
    )  # (rows, columns, slices)
    row_step, column_step = (float(v) for v in header["PixelSpacing"])
    if len(frames) > 1:
        gap = float((_position(frames[1][0]) - _position(header)) @ normal)
    else:
        gap = float(header.get("SliceThickness", 1.0))
    origin = _position(header)
    lps = np.eye(4)
    # Voxel (r, c, s): r steps down the rows (along the column cosine), c along the rows.
    lps[:3, 0] = column_cosine * row_step
    lps[:3, 1] = row_cosine * column_step
    lps[:3, 2] = normal * gap
    lps[:3, 3] = origin
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    unit = "HU" if datasets[0].get("Modality") == "CT" or "RescaleSlope" in header else "stored"
    return volume, ras, unit


_FUNCTIONAL_GROUPS = {
    "ImagePositionPatient": "PlanePositionSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "PixelSpacing": "PixelMeasuresSequence",
    "SliceThickness": "PixelMeasuresSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
}
"""The geometry and rescaling a DICOM frame needs, and the functional group that holds each in
a multi-frame (enhanced) file."""


def _frames(dataset) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Each frame of a DICOM file: its geometry and rescaling (:data:`_FUNCTIONAL_GROUPS`'s
    values, where the file gives them: the frame's functional groups first, then the shared
    ones, then the file's own) and its stored pixels."""
    try:
        stored = dataset.pixel_array
    except (RuntimeError, NotImplementedError) as error:  # no decoder for its compression
        raise ValueError(
            f"{str(dataset.filename)!r}: its pixel data cannot be decoded "
            f"({' '.join(str(error).split())}); install "
            "pydicom's decoders (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or "
            "convert the series to NIfTI"
        ) from None
    stored = np.asarray(stored, dtype=float)
    if int(dataset.get("NumberOfFrames") or 1) == 1:
        stored = stored[None]
    shared = dataset.get("SharedFunctionalGroupsSequence") or [None]
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or [None] * len(stored)
    frames = []
    for groups, pixels in zip(per_frame, stored, strict=True):
        header = {}
        for key, group in _FUNCTIONAL_GROUPS.items():
            for source in (groups, shared[0]):
                if source is not None and group in source and key in source[group][0]:
                    header[key] = source[group][0][key].value
                    break
            else:
                if key in dataset:
                    header[key] = dataset[key].value
        frames.append((header, pixels))
    return frames


def _position(header: Mapping[str, Any]) -> np.ndarray:
    return np.array(header.get("ImagePositionPatient", [0.0, 0.0, 0.0]), dtype=float)


def _coronal(
    volume: np.ndarray, affine: np.ndarray, index: int | None, bone_threshold: float
) -> tuple[np.ndarray, tuple[float, float], int | None, np.ndarray]:
    """The coronal slice of a (i, j, k) volume with a RAS affine, rows superior to inferior,
    columns right to left, its row and column spacing, the slice's index and its placement
    (:class:`Scan`'s ``affine``)."""
    directions = affine[:3, :3]
    steps = np.linalg.norm(directions, axis=0)
    if not (steps > 0).all():
        raise ValueError("the scan's affine has a zero voxel size: its spacing is missing")
    cosines = directions / steps
    world = np.abs(cosines).argmax(axis=0)  # anatomical axis of each voxel axis: 0 x, 1 y, 2 z
    if sorted(world) != [0, 1, 2] or (np.abs(cosines).max(axis=0) < _ALIGNED).any():
        raise ValueError("the scan is oblique: its axes are not along the body's")
    axis_of = {int(w): k for k, w in enumerate(world)}
    depth, height, width = axis_of[1], axis_of[2], axis_of[0]
    if volume.shape[depth] == 1 and min(volume.shape[height], volume.shape[width]) == 1:
        raise ValueError("the scan holds a line, not an image")
    if volume.shape[depth] == 1:
        taken = None
        slab = 0
    else:
        if volume.shape[height] == 1 or volume.shape[width] == 1:
            plane = "axial" if volume.shape[height] == 1 else "sagittal"
            raise ValueError(f"the scan is an {plane} image; femsr needs a coronal one")
        # Slices are numbered from the front (anterior: +y in RAS).
        count = volume.shape[depth]
        front = np.moveaxis(volume, depth, 0)[:: -1 if cosines[1, depth] > 0 else 1]
        if index is None:
            bone = (front > bone_threshold).sum(axis=(1, 2))
            if not bone.any():
                raise ValueError(
                    f"no value in the scan exceeds the bone threshold {bone_threshold}: no femur"
                )
            index = int(bone.argmax())
        if not 0 <= index < count:
            raise ValueError(f"index {index} is outside the {count} coronal slices")
        slab = count - 1 - index if cosines[1, depth] > 0 else index
        taken = index
    image = np.take(volume, slab, axis=depth)
    rest = [a for a in range(3) if a != depth]
    image = np.transpose(image, [rest.index(height), rest.index(width)])
    # The voxel of the image's top-left pixel, and the voxel steps of one row and one column.
    top_left = np.zeros(3)
    top_left[depth] = slab
    row_step, column_step = np.zeros(3), np.zeros(3)
    row_step[height] = column_step[width] = 1.0
    if cosines[2, height] > 0:  # rows must run superior to inferior: -z
        image = image[::-1]
        top_left[height], row_step[height] = volume.shape[height] - 1, -1.0
    if cosines[0, width] > 0:  # columns must run right to left: -x
        image = image[:, ::-1]
        top_left[width], column_step[width] = volume.shape[width] - 1, -1.0
    spacing = (float(steps[height]), float(steps[width]))
    # Frame (x, y) -> voxel: pixel (r, c) is centred at ((c + 1/2) dx, (r + 1/2) dy).
    to_voxel = np.zeros((4, 4))
    to_voxel[:3, 0], to_voxel[:3, 1] = column_step / spacing[1], row_step / spacing[0]
    to_voxel[depth, 2] = 1.0  # one slice's thickness
    to_voxel[:3, 3] = top_left - 0.5 * (column_step + row_step)
    to_voxel[3, 3] = 1.0
    return np.ascontiguousarray(image), spacing, taken, affine @ to_voxel


def _read_tiff(
    path: Path, index: int | None, spacing: tuple[float, float] | None, bone_threshold: float
) -> Scan:
    tifffile = _need("tifffile")
    try:
        with tifffile.TiffFile(path) as tiff:
            pages = np.stack([page.asarray() for page in tiff.pages]).astype(float)
            tags = tiff.pages[0].tags
            unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 1
            resolution = [
                tags[key].value if key in tags else None for key in ("YResolution", "XResolution")
            ]
    except (tifffile.TiffFileError, OSError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a readable TIFF file: {error}") from None
    if pages.ndim != 3:
        raise ValueError(f"{str(path)!r}: a page has {pages.ndim - 1} dimensions; a scan has 2")
    mm = {2: 25.4, 3: 10.0}.get(int(unit))
    if mm is not None and all(r is not None and r[0] > 0 for r in resolution):
        spacing = tuple(mm * r[1] / r[0] for r in resolution)  # type: ignore[index]
    if spacing is None:
        raise ValueError(
            f"{str(path)!r} has no pixel spacing (no resolution in cm or inch): give it "
            "(spacing=; femsr reconstruct --pixel-size)"
        )
    if len(pages) == 1:
        return Scan(pages[0], (float(spacing[0]), float(spacing[1])), "stored")
    bone = (pages > bone_threshold).sum(axis=(1, 2))
    if index is None:
        if not bone.any():
            raise ValueError(
                f"no value in the scan exceeds the bone threshold {bone_threshold}: no femur"
            )
        index = int(bone.argmax())
    if not 0 <= index < len(pages):
        raise ValueError(f"index {index} is outside the {len(pages)} coronal slices")
    return Scan(pages[index], (float(spacing[0]), float(spacing[1])), "stored", index)
