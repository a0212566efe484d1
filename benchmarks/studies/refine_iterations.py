"""ROI stiffness errors of reconstructions refined by topology optimization, after each number of
iterations: the choice of ``femsr.refine.ITERATIONS``.

    python benchmarks/studies/refine_iterations.py benchmarks/femurs/femur_{01,14,26,27}.npz \\
        --after 2 4 6 8 10 12

Each femur is reconstructed by the bundled model from its block mean with test-time averaging
(``femsr.dataset.downscale_femur``, ``reconstruct(tta=True)``), redrawn crisp as it is
(``crisp``), and refined (``femsr.refine.refine``) for the largest of ``--after`` iterations;
after each listed one the density so far is redrawn crisp at the input's block masses
(``femsr.crisp.draw_struts``) and scored: the nine signed ROI stiffness errors
(``femsr.evaluate.roi_table``, E0 = 1), their |sum| and the error of each ROI's bone mass. The
last line sums the |sums| over the femurs per setting.
"""

import argparse
from collections import defaultdict

import numpy as np

from femsr import crisp, dataset, evaluate, io
from femsr.reconstruct import reconstruct
from femsr.refine import refine


def score(image: io.FemurImage, drawn: np.ndarray) -> tuple[str, float]:
    """The signed errors and ROI mass errors as text, and the sum of the |errors|."""
    shape = image.density.shape
    drawn = drawn[: shape[0], : shape[1]]
    rois = image.femur.rois(image.pixel_size)
    table = evaluate.roi_table(image.density, drawn, rois, E0=1.0, h=image.pixel_size)
    errors = [row["error_percent"] for row in table.rows]
    mass = " ".join(
        f"{100 * (drawn[w].mean() / image.density[w].mean() - 1):+.1f}" for w in rois.values()
    )
    total = sum(abs(e) for e in errors)
    text = " ".join(f"{e:+.1f}" for e in errors) + f" (sum |errors| {total:.0f}; ROI mass {mass} %)"
    return text, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("femurs", nargs="+", help="femur files (femsr.io.save_femur)")
    parser.add_argument("--after", type=int, nargs="+", default=[2, 4, 6, 8, 10, 12])
    args = parser.parse_args()
    totals: dict[str, float] = defaultdict(float)
    for path in args.femurs:
        image = io.load_femur(path)
        lr = dataset.downscale_femur(image)
        grey = reconstruct(lr, device="cpu", tta=True)
        text, total = score(image, crisp.draw_struts(grey, mass=lr.density))
        totals["crisp"] += total
        print(f"{path} crisp: {text}", flush=True)

        def scored(state, path=path, image=image, lr=lr) -> None:
            iteration = state.record.iteration
            if iteration in args.after:
                drawn = crisp.draw_struts(state.design, mass=lr.density)
                text, total = score(image, drawn)
                totals[f"refined {iteration}"] += total
                print(f"{path} refined {iteration}: {text}", flush=True)

        problem = image.femur.problem(image.pixel_size)
        refine(grey, lr.density, problem, iterations=max(args.after), callback=scored)
    print("sum over the femurs: " + ", ".join(f"{k} {v:.0f} %" for k, v in totals.items()))


if __name__ == "__main__":
    main()
