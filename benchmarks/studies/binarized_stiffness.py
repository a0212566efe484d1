"""ROI stiffness errors of a reconstruction as the network draws it, binarized at 0.5, with each
10 x 10 block scaled to the bone mass of its input pixel, and redrawn crisp.

    python benchmarks/studies/binarized_stiffness.py benchmarks/femurs/femur_{01,14}.npz
    python benchmarks/studies/binarized_stiffness.py benchmarks/femurs/femur_01.npz \
        --model benchmarks/runs/l2_mass_ft2/best.pt \
        --model benchmarks/runs/l2_mass_cldice_ft/best.pt
    python benchmarks/studies/binarized_stiffness.py benchmarks/femurs/femur_{01,14,26,27}.npz \
        --tta --crisp 0.125 0.15 0.175 0.2 --weights 1 1.5 2 2.5 3

Each femur is reconstructed (by the bundled model, else each ``--model``) from its block mean
(``femsr.dataset.downscale_femur``), and its nine signed ROI stiffness errors
(``femsr.evaluate.roi_table``, E0 = 1) and the error of each ROI's bone mass (mean density) are
printed for

* ``grey``: the reconstruction;
* ``binarized``: ``reconstruction > 0.5`` (the references are crisp): whether the underestimate
  is the SIMP penalty on grey pixels or struts that the network breaks;
* ``mass``: every 10 x 10 block multiplied by (its input pixel / its mean), clipped to [0, 1],
  repeated until the blocks hold their input's mass: whether a model's stiffness comes from its
  structure or from bone its input does not hold;
* ``crisp T W`` (with ``--crisp``): ``femsr.crisp.draw_struts`` at the input's block masses
  with the centrelines of ``reconstruction > T`` and the density weight ``W`` (``--weights``,
  default ``femsr.crisp.DENSITY_WEIGHT``): the choice of both.

With ``--tta`` the reconstructions average the 8 symmetries of the square. ``--blur S...`` also
scores the reference itself, as it is redrawn crisp (``reference crisp``) and blurred by a
Gaussian of S pixels, grey (``reference blur S``) and redrawn crisp (``reference blur S crisp``):
what grey costs the SIMP stiffness, and what the redrawing costs a perfect input.

    python benchmarks/studies/binarized_stiffness.py benchmarks/femurs/femur_{01,27}.npz \
        --blur 1 2 --no-model
"""

import argparse

import numpy as np
import scipy.ndimage as ndi

from femsr import crisp, dataset, evaluate, io
from femsr.reconstruct import reconstruct

FACTOR = 10


def mass_projected(hr: np.ndarray, lr: np.ndarray, sweeps: int = 20) -> np.ndarray:
    """``hr`` with each FACTOR x FACTOR block scaled to the mean of its ``lr`` pixel."""
    blocks = np.zeros((lr.shape[0] * FACTOR, lr.shape[1] * FACTOR))
    blocks[: hr.shape[0], : hr.shape[1]] = hr
    for _ in range(sweeps):  # clipping at 1 moves mass; a few sweeps put it back
        mean = dataset.downscale(blocks, FACTOR)
        ratio = np.divide(lr, mean, out=np.zeros_like(mean), where=mean > 1e-6)
        blocks = np.clip(blocks * np.kron(ratio, np.ones((FACTOR, FACTOR))), 0.0, 1.0)
    return blocks[: hr.shape[0], : hr.shape[1]]


def score(path, name, drawn, image, rois) -> None:
    """Print each image's nine signed ROI stiffness errors, their |sum| and the ROI mass errors."""
    for label, density in drawn.items():
        table = evaluate.roi_table(image.density, density, rois, E0=1.0, h=image.pixel_size)
        errors = " ".join(f"{row['error_percent']:+.1f}" for row in table.rows)
        total = sum(abs(row["error_percent"]) for row in table.rows)
        mass = " ".join(
            f"{100 * (density[w].mean() / image.density[w].mean() - 1):+.1f}" for w in rois.values()
        )
        print(
            f"{path} {name} {label}: {errors} (sum |errors| {total:.0f}; ROI mass {mass} %)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("femurs", nargs="+", help="femur files (femsr.io.save_femur)")
    parser.add_argument(
        "--model", action="append", help="exported model (repeat; default: the bundled one)"
    )
    parser.add_argument("--tta", action="store_true", help="test-time dihedral averaging")
    parser.add_argument(
        "--crisp", nargs="+", type=float, default=[], metavar="T", help="draw_struts thresholds"
    )
    parser.add_argument(
        "--weights",
        nargs="+",
        type=float,
        default=[crisp.DENSITY_WEIGHT],
        metavar="W",
        help="draw_struts density weights",
    )
    parser.add_argument(
        "--blur", nargs="+", type=float, default=[], metavar="S", help="reference blurs (pixels)"
    )
    parser.add_argument("--no-model", action="store_true", help="score no reconstruction")
    args = parser.parse_args()
    for path in args.femurs:
        image = io.load_femur(path)
        rows, columns = image.density.shape
        lr = dataset.downscale_femur(image)
        rois = image.femur.rois(image.pixel_size)
        if args.blur:
            padded = np.zeros((lr.density.shape[0] * FACTOR, lr.density.shape[1] * FACTOR))
            padded[:rows, :columns] = image.density
            drawn = {"reference crisp": crisp.draw_struts(padded, mass=lr.density)[:rows, :columns]}
            for sigma in args.blur:
                blurred = np.clip(ndi.gaussian_filter(padded, sigma), 0.0, 1.0)
                drawn[f"reference blur {sigma:g}"] = blurred[:rows, :columns]
                drawn[f"reference blur {sigma:g} crisp"] = crisp.draw_struts(
                    blurred, mass=lr.density
                )[:rows, :columns]
            score(path, "reference", drawn, image, rois)
        for model in [] if args.no_model else args.model or [None]:
            full = reconstruct(lr, model=model, device="cpu", tta=args.tta)
            grey = full[:rows, :columns]
            drawn = {
                "grey": grey,
                "binarized": (grey > 0.5).astype(float),
                "mass": mass_projected(grey, lr.density),
            }
            for threshold in args.crisp:
                for weight in args.weights:
                    drawn[f"crisp {threshold:g} {weight:g}"] = crisp.draw_struts(
                        full, mass=lr.density, threshold=threshold, density_weight=weight
                    )[:rows, :columns]
            score(path, model or "bundled", drawn, image, rois)


if __name__ == "__main__":
    main()
