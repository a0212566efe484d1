"""Slices of a hip: a pelvis above the femoral head, joined to it by the segmentation, split off.

Each femur's 50 µm density becomes a CT slice (``femsr.scan.synthetic_scan``) at each untilted
setting of ``scan_fit.py``, alone and with a pelvis (``femsr.scan.with_pelvis``) at each joint
space ``--gaps`` (mm); ``femsr.scan.lr_image`` segments and fits both. Per setting and joint
space: how many slices have the pelvis joined to the femur by the segmentation's threshold and
closing (one body from the slice's topmost bone to the shaft's cut), how many have the femur
found (segmented at 0.5 mm and fitted by ``lr_image`` and segmented at the slice's own pixels;
the rest are refused), and over those the smallest intersection over union of the femur
segmented at the slice's pixels with the femur segmented alone, and the largest difference of
the fitted femur's head centre (mm), head radius (mm) and neck-shaft angle (degrees) from the
fit alone.
The slice's top edge cuts the pelvis off; ``--inside MM`` puts MM of soft tissue above the
field, so the pelvis lies wholly inside the slice; with ``--ischium`` the pelvis also has an
ischium that the slice's bottom edge cuts off beside the shaft. Last, per setting, how many of
the slices without a pelvis ``segment`` split (``pelvis=True``, against ``pelvis=False``): none
should be, and the least Dice overlap of their fitted femur with the segmented one (``fit_dice``;
``--gaps`` with no value measures only those). ``--figure PNG`` draws the first femur's slices
of four cases instead, each with the outline of the femur segmented (red) and the verdict of
``lr_image``.

    python scan_hip.py ../femurs/femur_00.npz --figure ../figures/scan_hip.png

    cd benchmarks/scripts
    python scan_hip.py ../femurs/femur_{00,04,06,10,13,15,16,25}.npz
    python scan_hip.py ../femurs/femur_{00,04,06,10,13,15,16,25}.npz --inside 20
    python scan_hip.py ../femurs/femur_{00,04,06,10,13,15,16,25}.npz --ischium
"""

import argparse

import numpy as np
import scipy.ndimage as ndi
from scan_fit import SETTINGS, synthetic_slice

from femsr import io, scan
from femsr.scan import _closed


def joined(density: np.ndarray, pixel: float, femur: np.ndarray) -> bool:
    """Whether ``segment``'s threshold and closing join the slice's topmost bone, the pelvis's,
    to the shaft where it leaves the slice at its bottom edge (the bottom row of ``femur``, the
    femur segmented from its slice alone)."""
    labels = ndi.label(_closed(density > 0.2, pixel))[0]
    top = labels[np.flatnonzero(labels.any(axis=1))[0]]
    return bool(np.intersect1d(top[top > 0], labels[-1][femur[-1]]).any())


FIGURE_CASES = [  # pixel (mm), FWHM (mm), noise (HU), joint space (mm), mm of tissue above,
    # an ischium cut off by the bottom edge
    (0.5, 0.7, 30.0, 1.0, 0.0, False),
    (0.5, 1.0, 50.0, 1.5, 20.0, False),
    (0.5, 0.7, 30.0, 1.5, 0.0, True),
    (0.5, 1.0, 50.0, 1.0, 0.0, False),
]


def figure(image: io.FemurImage, path: str) -> None:
    """The femur's slices of :data:`FIGURE_CASES`, each with the segmented femur's outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels, axes = plt.subplots(1, len(FIGURE_CASES), figsize=(4 * len(FIGURE_CASES), 5.4))
    for axis, (pixel, fwhm, noise, gap, inside, ischium) in zip(axes, FIGURE_CASES, strict=True):
        hip = synthetic_slice(image, pixel, fwhm, noise, pelvis=gap, ischium=ischium, above=inside)
        axis.imshow(hip.image, cmap="gray", vmin=-200, vmax=1600)
        try:
            scan.lr_image(hip)
            verdict = "femur found"
        except ValueError as error:
            verdict = "refused: " + str(error).split(":")[0]
        try:
            femur = scan.segment(scan.density_from_hu(hip.image), spacing=pixel)
            axis.contour(femur, levels=[0.5], colors="red", linewidths=0.8)
        except ValueError:
            pass
        where = "inside the slice" if inside else "cut off by the top edge"
        where += ", the ischium by the bottom" if ischium else ""
        axis.set_title(
            f"FWHM {fwhm} mm, {noise:.0f} HU, joint space {gap} mm,\npelvis {where}\n{verdict}",
            fontsize=8,
        )
        axis.axis("off")
    panels.tight_layout()
    panels.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("femurs", nargs="+", help="femur files (femsr.io.save_femur)")
    parser.add_argument("--gaps", type=float, nargs="*", default=[1.0, 1.5, 2.0, 3.0, 4.0])
    parser.add_argument("--inside", type=float, default=0.0, help="mm of soft tissue above")
    parser.add_argument("--ischium", action="store_true", help="cut off by the bottom edge too")
    parser.add_argument("--figure", metavar="PNG", help="draw four cases of the first femur")
    args = parser.parse_args()
    images = [io.load_femur(path) for path in args.femurs]
    if args.figure:
        figure(images[0], args.figure)
        return
    print(
        "| pixel (mm) | FWHM (mm) | noise (HU) | joint space (mm) | joined | found | IoU, least "
        "| head centre (mm) | head radius (mm) | neck-shaft angle (°) |"
    )
    print("| --- " * 10 + "|")
    splits: list[int] = []
    dice: list[float] = []
    for pixel, fwhm, noise, tilt in SETTINGS:
        if tilt:
            continue
        alone = []
        splits.append(0)
        dice.append(1.0)
        for k, image in enumerate(images):
            ct = synthetic_slice(image, pixel, fwhm, noise, seed=k, above=args.inside)
            lr, read = scan.lr_image(ct), scan.density_from_hu(ct.image)
            want = scan.segment(read, spacing=pixel)
            alone.append((lr, want))
            dice[-1] = min(dice[-1], lr.meta["fit_dice"])
            splits[-1] += not np.array_equal(want, scan.segment(read, spacing=pixel, pelvis=False))
        for gap in args.gaps:
            iou, centre, radius, angle, bodies = [], [], [], [], 0
            for k, (image, (lr, want)) in enumerate(zip(images, alone, strict=True)):
                hip = synthetic_slice(
                    image,
                    pixel,
                    fwhm,
                    noise,
                    seed=k,
                    pelvis=gap,
                    ischium=args.ischium,
                    above=args.inside,
                )
                read = scan.density_from_hu(hip.image)
                bodies += joined(read, pixel, want)
                try:
                    found = scan.lr_image(hip)
                    got = scan.segment(read, spacing=pixel)
                except ValueError:
                    continue
                iou.append((want & got).sum() / (want | got).sum())
                a, b = lr.femur.landmarks(), found.femur.landmarks()
                centre.append(float(np.hypot(*np.subtract(a.head_centre, b.head_centre))))
                radius.append(abs(a.head_radius - b.head_radius))
                angle.append(abs(a.neck_shaft_angle - b.neck_shaft_angle))
            worst = (
                f"{min(iou):.3f} | {max(centre):.2f} | {max(radius):.2f} | {max(angle):.1f}"
                if iou
                else "- | - | - | -"
            )
            print(
                f"| {pixel} | {fwhm} | {noise:.0f} | {gap:g} | {bodies}/{len(images)} "
                f"| {len(iou)}/{len(images)} "
                f"| {worst} |",
                flush=True,
            )
    counts = ", ".join(f"{count}/{len(images)}" for count in splits)
    least = ", ".join(f"{value:.3f}" for value in dice)
    print(f"\nslices without a pelvis, per setting: split {counts}; least fit Dice {least}")


if __name__ == "__main__":
    main()
