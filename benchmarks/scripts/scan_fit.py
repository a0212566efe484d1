"""Landmarks and femur fit on synthetic scans of grown femurs: errors against the true femur.

Each femur's 50 µm density, its shaft continued 20 mm below the box as a scan holds it and turned
by a tilt about the centre of that, becomes a CT slice
(``femsr.scan.synthetic_scan``) at each pixel size, point-spread FWHM and noise level;
``femsr.scan.lr_image`` calibrates, resamples, segments and fits it. Per setting: the largest
error over the femurs of the head radius (mm), the neck-shaft angle (degrees), the landmarks
found (mm, in the scan's frame: the head centre, the greater trochanter, and the lesser
trochanter over the femurs where it was found, with their count), the side, the seconds per
scan, and the largest error of the point-spread function's FWHM read off the slice
(``femsr.scan.estimate_psf_fwhm``, mm). ``--deblur`` reads each slice deblurred by the width
read off it, as ``femsr reconstruct`` reads a scan (``lr_image(psf_fwhm="auto")``).

    python benchmarks/scripts/scan_fit.py benchmarks/femurs/femur_0[0-4].npz
"""

import argparse
import math
import time

import numpy as np
import scipy.ndimage as ndi

from femsr import io, scan
from femsr.femur import BOX

SETTINGS = [  # pixel (mm), FWHM (mm), noise (HU), tilt (degrees, counterclockwise)
    (0.3, 0.5, 20.0, 0.0),
    (0.5, 0.7, 30.0, 0.0),
    (0.5, 1.0, 50.0, 0.0),
    (0.7, 1.0, 50.0, 0.0),
    (0.5, 0.7, 30.0, -3.0),
    (0.5, 0.7, 30.0, 3.0),
]
BORDER = 15.0  # mm of soft tissue above and beside the femur box in the slice


def setting_label(pixel: float, fwhm: float, noise: float) -> str:
    """A setting as the tables of ``benchmarks/RESULTS.md`` name it."""
    return f"CT {pixel} mm, FWHM {fwhm} mm, {noise:.0f} HU"


def synthetic_slice(
    image: io.FemurImage,
    pixel: float,
    fwhm: float,
    noise: float,
    *,
    seed: int = 0,
    pelvis: float | None = None,
    ischium: bool = False,
    above: float = 0.0,
) -> scan.Scan:
    """The femur's CT slice (``femsr.scan.synthetic_scan``, :data:`BORDER` mm of soft tissue at
    the top and both sides) at that pixel size (mm), FWHM (mm) and noise (HU), ``seed``ed; with
    a pelvis ``pelvis`` mm from the head that the field's top edge cuts off
    (``femsr.scan.with_pelvis``, seeded alike; with ``ischium``, one that the bottom edge cuts
    off too), and ``above`` mm more of soft tissue above the field. The femur's pixels and the
    slice's frame are the same with the pelvis as without."""
    density, border = image.density, BORDER
    if pelvis is not None:
        density = scan.with_pelvis(
            density,
            image.pixel_size,
            image.femur,
            pelvis,
            border=BORDER,
            seed=seed,
            ischium=ischium,
        )[0]
        border = 0.0  # with_pelvis drew it
    density = np.pad(density, ((round(above / image.pixel_size), 0), (0, 0)))
    return scan.synthetic_scan(
        density, image.pixel_size, pixel=pixel, fwhm=fwhm, noise=noise, seed=seed, border=border
    )


SHAFT = 20.0  # mm of shaft below the femur box in the slice
POINTS = ("head_centre", "greater_trochanter", "lesser_trochanter")


def turned(point: tuple[float, float], tilt: float, shape: tuple[int, int], pixel: float):
    """A point of the box (mm, y up) where ``scipy.ndimage.rotate(density, tilt,
    reshape=False)`` takes it (about the centre of the density's pixels)."""
    centre_row, centre_col = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    dx = point[0] / pixel - 0.5 - centre_col
    dy = shape[0] - point[1] / pixel - 0.5 - centre_row
    c, s = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
    col, row = centre_col + c * dx + s * dy, centre_row - s * dx + c * dy
    return (col + 0.5) * pixel, (shape[0] - row - 0.5) * pixel


def errors(found: dict, true, tilt: float, shape: tuple[int, int], pixel: float) -> dict:
    """Distance (mm) of each landmark found in the slice from the phantom's (turned by
    ``tilt`` on a density of ``shape`` and ``pixel``), None where none was found."""
    result: dict[str, float | None] = {}
    for name in POINTS:
        x, y = getattr(true, name)
        x, y = turned((x, y + SHAFT), tilt, shape, pixel)  # the frame of the longer density
        at = (x + BORDER, BOX[0] - (y - SHAFT) + BORDER)  # the box's (y up) in the slice's (y down)
        result[name] = (
            None if found[name] is None else float(np.hypot(*np.subtract(found[name], at)))
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("femurs", nargs="+", help="femur files (femsr.io.save_femur)")
    parser.add_argument("--deblur", action="store_true", help="deblur by the width read off")
    args = parser.parse_args()
    images = [io.load_femur(path) for path in args.femurs]
    print(
        "| pixel (mm) | FWHM (mm) | noise (HU) | tilt (°) | head radius error (mm) "
        "| neck-shaft angle error (°) | head centre error (mm) | greater trochanter error (mm) "
        "| lesser trochanter error (mm), found | side right | s per scan | PSF FWHM error (mm) |"
    )
    print("| --- " * 12 + "|")
    for pixel, fwhm, noise, tilt in SETTINGS:
        radius, angle, psf, sides, seconds = [], [], [], 0, 0.0
        points: dict[str, list[float]] = {name: [] for name in POINTS}
        for k, image in enumerate(images):
            below = round(SHAFT / image.pixel_size)
            density = np.pad(image.density, ((0, below), (0, 0)), mode="edge")
            if tilt:
                density = ndi.rotate(density, tilt, reshape=False, order=1)
            ct = scan.synthetic_scan(
                density,
                image.pixel_size,
                pixel=pixel,
                fwhm=fwhm,
                noise=noise,
                seed=k,
                border=BORDER,
            )
            start = time.perf_counter()
            lr = scan.lr_image(ct, psf_fwhm="auto" if args.deblur else None)
            seconds += time.perf_counter() - start
            psf.append(abs(scan.estimate_psf_fwhm(ct) - fwhm))
            fitted = lr.femur
            true, found = image.femur.landmarks(), fitted.landmarks()
            radius.append(abs(found.head_radius - true.head_radius))
            angle.append(abs(found.neck_shaft_angle - true.neck_shaft_angle))
            sides += fitted.side == image.femur.side
            found_marks = errors(lr.meta["landmarks"], true, tilt, density.shape, image.pixel_size)
            for name, error in found_marks.items():
                if error is not None:
                    points[name].append(error)
        lesser = points["lesser_trochanter"]
        found = f"{max(lesser):.2f}" if lesser else "-"
        print(
            f"| {pixel} | {fwhm} | {noise:.0f} | {tilt:g} | {max(radius):.2f} | {max(angle):.1f} "
            f"| {max(points['head_centre']):.2f} | {max(points['greater_trochanter']):.2f} "
            f"| {found}, {len(lesser)}/{len(images)} | {sides}/{len(images)} "
            f"| {seconds / len(images):.1f} | {max(psf):.3f} |"
        )


if __name__ == "__main__":
    main()
