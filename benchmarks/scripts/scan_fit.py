"""Landmarks and femur fit on synthetic scans of grown femurs: errors against the true femur.

Each femur's 50 µm density becomes a CT slice (``femsr.scan.synthetic_scan``) at each pixel
size, point-spread FWHM and noise level; ``femsr.scan.lr_image`` calibrates, resamples,
segments and fits it. Per setting: the largest error over the femurs of the head radius (mm),
the neck-shaft angle (degrees), the landmarks found (mm, in the scan's frame: the head centre,
the greater trochanter, and the lesser trochanter over the femurs where it was found, with
their count), and the side, and the seconds per scan.

    python benchmarks/scripts/scan_fit.py benchmarks/femurs/femur_0[0-4].npz
"""

import argparse
import time

import numpy as np

from femsr import io, scan
from femsr.femur import BOX

SETTINGS = [  # pixel (mm), FWHM (mm), noise (HU)
    (0.3, 0.5, 20.0),
    (0.5, 0.7, 30.0),
    (0.5, 1.0, 50.0),
    (0.7, 1.0, 50.0),
]
BORDER = 15.0  # mm of soft tissue above and beside the femur box in the slice
POINTS = ("head_centre", "greater_trochanter", "lesser_trochanter")


def errors(found: dict, true) -> dict[str, float | None]:
    """Distance (mm) of each landmark found in the slice from the phantom's, None where none
    was found."""
    result: dict[str, float | None] = {}
    for name in POINTS:
        x, y = getattr(true, name)
        at = (x + BORDER, BOX[0] - y + BORDER)  # the box's frame (y up) in the slice's (y down)
        result[name] = (
            None if found[name] is None else float(np.hypot(*np.subtract(found[name], at)))
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("femurs", nargs="+", help="femur files (femsr.io.save_femur)")
    args = parser.parse_args()
    images = [io.load_femur(path) for path in args.femurs]
    print(
        "| pixel (mm) | FWHM (mm) | noise (HU) | head radius error (mm) "
        "| neck-shaft angle error (°) | head centre error (mm) | greater trochanter error (mm) "
        "| lesser trochanter error (mm), found | side right | s per scan |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for pixel, fwhm, noise in SETTINGS:
        radius, angle, sides, seconds = [], [], 0, 0.0
        points: dict[str, list[float]] = {name: [] for name in POINTS}
        for k, image in enumerate(images):
            ct = scan.synthetic_scan(
                image.density,
                image.pixel_size,
                pixel=pixel,
                fwhm=fwhm,
                noise=noise,
                seed=k,
                border=BORDER,
            )
            start = time.perf_counter()
            lr = scan.lr_image(ct)
            seconds += time.perf_counter() - start
            fitted = lr.femur
            true, found = image.femur.landmarks(), fitted.landmarks()
            radius.append(abs(found.head_radius - true.head_radius))
            angle.append(abs(found.neck_shaft_angle - true.neck_shaft_angle))
            sides += fitted.side == image.femur.side
            for name, error in errors(lr.meta["landmarks"], true).items():
                if error is not None:
                    points[name].append(error)
        lesser = points["lesser_trochanter"]
        found = f"{max(lesser):.2f}" if lesser else "-"
        print(
            f"| {pixel} | {fwhm} | {noise:.0f} | {max(radius):.2f} | {max(angle):.1f} "
            f"| {max(points['head_centre']):.2f} | {max(points['greater_trochanter']):.2f} "
            f"| {found}, {len(lesser)}/{len(images)} | {sides}/{len(images)} "
            f"| {seconds / len(images):.1f} |"
        )


if __name__ == "__main__":
    main()
