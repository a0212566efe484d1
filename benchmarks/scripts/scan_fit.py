"""Landmarks and femur fit on synthetic scans of grown femurs: errors against the true femur.

Each femur's 50 µm density becomes a CT slice (``femsr.scan.synthetic_scan``) at each pixel
size, point-spread FWHM and noise level; ``femsr.scan.lr_image`` calibrates, resamples,
segments and fits it. Per setting: the largest error over the femurs of the head radius (mm),
the neck-shaft angle (degrees), and the side, and the seconds per scan.

    python benchmarks/scripts/scan_fit.py benchmarks/femurs/femur_0[0-4].npz
"""

import argparse
import time

from femsr import io, scan

SETTINGS = [  # pixel (mm), FWHM (mm), noise (HU)
    (0.3, 0.5, 20.0),
    (0.5, 0.7, 30.0),
    (0.5, 1.0, 50.0),
    (0.7, 1.0, 50.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("femurs", nargs="+", help="femur files (femsr.io.save_femur)")
    args = parser.parse_args()
    images = [io.load_femur(path) for path in args.femurs]
    print(
        "| pixel (mm) | FWHM (mm) | noise (HU) | head radius error (mm) "
        "| neck-shaft angle error (°) | side right | s per scan |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for pixel, fwhm, noise in SETTINGS:
        radius, angle, sides, seconds = [], [], 0, 0.0
        for k, image in enumerate(images):
            ct = scan.synthetic_scan(
                image.density, image.pixel_size, pixel=pixel, fwhm=fwhm, noise=noise, seed=k
            )
            start = time.perf_counter()
            fitted = scan.lr_image(ct).femur
            seconds += time.perf_counter() - start
            true, found = image.femur.landmarks(), fitted.landmarks()
            radius.append(abs(found.head_radius - true.head_radius))
            angle.append(abs(found.neck_shaft_angle - true.neck_shaft_angle))
            sides += fitted.side == image.femur.side
        print(
            f"| {pixel} | {fwhm} | {noise:.0f} | {max(radius):.2f} | {max(angle):.1f} "
            f"| {sides}/{len(images)} | {seconds / len(images):.1f} |"
        )


if __name__ == "__main__":
    main()
