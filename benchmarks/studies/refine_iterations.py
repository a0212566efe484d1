"""ROI stiffness errors of reconstructions refined by topology optimization, after each number of
iterations and redrawn crisp with each density weight: the choice of ``femsr.refine.ITERATIONS``
and ``femsr.refine.DENSITY_WEIGHT``.

    python benchmarks/studies/refine_iterations.py benchmarks/femurs/femur_{01,14,26,27}.npz \\
        --after 4 6 8 10 12 --weights 2 3 4 5 6 7 10 20 40

``--model`` reconstructs by that exported model instead of the bundled one for the input.
``--move`` and ``--rmin`` set the refinement's move limit and filter radius (default
``femsr.refine.MOVE`` and ``RMIN``). ``--scan K`` reconstructs from a synthetic CT slice at the
untilted setting K (0-based) of ``benchmarks/scripts/scan_fit.py`` instead of the block mean,
read and deblurred by its FWHM as ``scan_stiffness.py --deblur`` reads it (the model chosen by
that width, the fitted femur's loads and ROIs), and ``--block K`` holds the mass of K x K LR
pixels (``refine(block=K)``, ``redraw(..., K)``; default one for a block mean, as wide as the
blur for a slice, ``femsr.refine.blur_block``); ``--noise HU`` and ``--pixel MM`` make the slices
with that much noise and that pixel instead of the setting's:

    python benchmarks/studies/refine_iterations.py benchmarks/femurs/femur_{01,14,26,27}.npz \\
        --scan 2 --after 4 8 12 16

Each femur is reconstructed by the bundled model from its block mean with test-time averaging
(``femsr.dataset.downscale_femur``, ``reconstruct(tta=True)``; ``--no-tta`` without), redrawn
crisp as it is (``crisp``), and refined (``femsr.refine.refine``) for the largest of ``--after``
iterations; after each listed one the density so far is redrawn crisp at the input's block
masses with each of ``--weights`` (``femsr.crisp.draw_struts``, ``density_weight``) and scored:
the nine signed ROI stiffness errors (``femsr.evaluate.roi_table``, E0 = 1), their |sum| and the
error of each ROI's bone mass. The last lines give per setting the mean |error| of each
component over the femurs, their largest and their sum.
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from femsr import crisp, dataset, evaluate, io, scan
from femsr.reconstruct import reconstruct
from femsr.refine import DENSITY_WEIGHT, MOVE, RMIN, blur_block, redraw, refine

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from scan_fit import BORDER, SETTINGS


def score(image: io.FemurImage, lr: io.FemurImage, drawn: np.ndarray) -> tuple[str, np.ndarray]:
    """The signed errors and ROI mass errors as text, and the nine signed errors; the
    reconstruction's ROIs are those of ``lr``'s femur (fitted to a slice)."""
    shape = image.density.shape
    drawn = drawn[: shape[0], : shape[1]]
    rois = image.femur.rois(image.pixel_size)
    found = lr.femur.rois(image.pixel_size)
    table = evaluate.roi_table(
        image.density, drawn, rois, reconstruction_rois=found, E0=1.0, h=image.pixel_size
    )
    errors = np.array([row["error_percent"] for row in table.rows])
    mass = " ".join(
        f"{100 * (drawn[found[n]].mean() / image.density[rois[n]].mean() - 1):+.1f}" for n in rois
    )
    total = np.abs(errors).sum()
    text = " ".join(f"{e:+.1f}" for e in errors) + f" (sum |errors| {total:.0f}; ROI mass {mass} %)"
    return text, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("femurs", nargs="+", help="femur files (femsr.io.save_femur)")
    parser.add_argument("--after", type=int, nargs="+", default=[4, 6, 8, 10, 12])
    parser.add_argument("--weights", type=float, nargs="+", default=[DENSITY_WEIGHT])
    parser.add_argument("--model", help="exported model (default: the bundled one)")
    parser.add_argument("--move", type=float, default=MOVE, help="OC move limit")
    parser.add_argument("--rmin", type=float, default=RMIN, help="filter radius (HR pixels)")
    parser.add_argument("--scan", type=int, metavar="K", help="from a CT slice at setting K")
    parser.add_argument("--block", type=int, metavar="K", help="hold K x K LR pixels' mass")
    parser.add_argument("--noise", type=float, metavar="HU", help="the slices' noise instead")
    parser.add_argument("--pixel", type=float, metavar="MM", help="the slices' pixel instead")
    parser.add_argument("--no-tta", action="store_true", help="no averaging over the symmetries")
    args = parser.parse_args()
    untilted = [(p, f, n) for p, f, n, tilt in SETTINGS if not tilt]
    found: dict[str, list[np.ndarray]] = defaultdict(list)
    for k, path in enumerate(args.femurs):
        image = io.load_femur(path)
        if args.scan is None:
            lr = dataset.downscale_femur(image)
        else:
            pixel, fwhm, noise = untilted[args.scan]
            noise = noise if args.noise is None else args.noise
            pixel = pixel if args.pixel is None else args.pixel
            ct = scan.synthetic_scan(
                image.density, image.pixel_size, pixel=pixel, fwhm=fwhm, noise=noise, seed=k,
                border=BORDER,
            )  # fmt: skip
            lr = scan.lr_image(ct, psf_fwhm=fwhm)
        block = (
            blur_block(lr.meta.get("psf_fwhm"), lr.pixel_size) if args.block is None else args.block
        )
        grey = reconstruct(lr, model=args.model, device="cpu", tta=not args.no_tta)
        drawn = redraw(grey, lr.density, block, density_weight=crisp.DENSITY_WEIGHT)
        text, errors = score(image, lr, drawn)
        found["crisp"].append(errors)
        print(f"{path} crisp: {text}", flush=True)

        def scored(state, path=path, image=image, lr=lr, block=block) -> None:
            iteration = state.record.iteration
            if iteration not in args.after:
                return
            for weight in args.weights:
                drawn = redraw(state.design, lr.density, block, density_weight=weight)
                text, errors = score(image, lr, drawn)
                setting = f"refined {iteration}, weight {weight:g}"
                found[setting].append(errors)
                print(f"{path} {setting}: {text}", flush=True)

        problem = lr.femur.problem(image.pixel_size)
        refine(
            grey,
            lr.density,
            problem,
            iterations=max(args.after),
            block=block,
            move=args.move,
            rmin=args.rmin,
            callback=scored,
        )
    print("mean |error| over the femurs, per component, and their sum:")
    for setting, errors in found.items():
        means = np.abs(errors).mean(axis=0)
        cells = " ".join(f"{m:.1f}" for m in means)
        print(f"{setting}: {cells} (max {means.max():.1f}, sum {means.sum():.1f} %)")


if __name__ == "__main__":
    main()
