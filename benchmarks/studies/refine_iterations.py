"""ROI stiffness errors of reconstructions refined by topology optimization, after each number of
iterations and redrawn crisp with each density weight: the choice of ``femsr.refine.ITERATIONS``
and ``femsr.refine.DENSITY_WEIGHT``.

    python benchmarks/studies/refine_iterations.py benchmarks/femurs/femur_{01,14,26,27}.npz \\
        --after 4 6 8 10 12 --weights 2 3 4 5 6 7 10 20 40

``--move`` and ``--rmin`` set the refinement's move limit and filter radius (default
``femsr.refine.MOVE`` and ``RMIN``).

Each femur is reconstructed by the bundled model from its block mean with test-time averaging
(``femsr.dataset.downscale_femur``, ``reconstruct(tta=True)``), redrawn crisp as it is
(``crisp``), and refined (``femsr.refine.refine``) for the largest of ``--after`` iterations;
after each listed one the density so far is redrawn crisp at the input's block masses with each
of ``--weights`` (``femsr.crisp.draw_struts``, ``density_weight``) and scored: the nine signed
ROI stiffness errors (``femsr.evaluate.roi_table``, E0 = 1), their |sum| and the error of each
ROI's bone mass. The last lines give per setting the mean |error| of each component over the
femurs, their largest and their sum.
"""

import argparse
from collections import defaultdict

import numpy as np

from femsr import crisp, dataset, evaluate, io
from femsr.reconstruct import reconstruct
from femsr.refine import DENSITY_WEIGHT, MOVE, RMIN, refine


def score(image: io.FemurImage, drawn: np.ndarray) -> tuple[str, np.ndarray]:
    """The signed errors and ROI mass errors as text, and the nine signed errors."""
    shape = image.density.shape
    drawn = drawn[: shape[0], : shape[1]]
    rois = image.femur.rois(image.pixel_size)
    table = evaluate.roi_table(image.density, drawn, rois, E0=1.0, h=image.pixel_size)
    errors = np.array([row["error_percent"] for row in table.rows])
    mass = " ".join(
        f"{100 * (drawn[w].mean() / image.density[w].mean() - 1):+.1f}" for w in rois.values()
    )
    total = np.abs(errors).sum()
    text = " ".join(f"{e:+.1f}" for e in errors) + f" (sum |errors| {total:.0f}; ROI mass {mass} %)"
    return text, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("femurs", nargs="+", help="femur files (femsr.io.save_femur)")
    parser.add_argument("--after", type=int, nargs="+", default=[4, 6, 8, 10, 12])
    parser.add_argument("--weights", type=float, nargs="+", default=[DENSITY_WEIGHT])
    parser.add_argument("--move", type=float, default=MOVE, help="OC move limit")
    parser.add_argument("--rmin", type=float, default=RMIN, help="filter radius (HR pixels)")
    args = parser.parse_args()
    found: dict[str, list[np.ndarray]] = defaultdict(list)
    for path in args.femurs:
        image = io.load_femur(path)
        lr = dataset.downscale_femur(image)
        grey = reconstruct(lr, device="cpu", tta=True)
        text, errors = score(image, crisp.draw_struts(grey, mass=lr.density))
        found["crisp"].append(errors)
        print(f"{path} crisp: {text}", flush=True)

        def scored(state, path=path, image=image, lr=lr) -> None:
            iteration = state.record.iteration
            if iteration not in args.after:
                return
            for weight in args.weights:
                drawn = crisp.draw_struts(state.design, mass=lr.density, density_weight=weight)
                text, errors = score(image, drawn)
                setting = f"refined {iteration}, weight {weight:g}"
                found[setting].append(errors)
                print(f"{path} {setting}: {text}", flush=True)

        problem = image.femur.problem(image.pixel_size)
        refine(
            grey,
            lr.density,
            problem,
            iterations=max(args.after),
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
