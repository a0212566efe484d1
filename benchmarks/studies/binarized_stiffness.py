"""ROI stiffness errors of a reconstruction as the network draws it, and binarized at 0.5.

    python benchmarks/studies/binarized_stiffness.py benchmarks/femurs/femur_{01,14}.npz

Each femur is reconstructed (by the bundled model, else ``--model``) from its block mean
(``femsr.dataset.downscale_femur``) and its nine signed ROI stiffness errors
(``femsr.evaluate.roi_table``, E0 = 1) are printed for the grey reconstruction and for
``reconstruction > 0.5`` (the references are crisp): whether the underestimate is the SIMP
penalty on grey pixels or struts that the network breaks.
"""

import argparse

from femsr import dataset, evaluate, io
from femsr.reconstruct import reconstruct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("femurs", nargs="+", help="femur files (femsr.io.save_femur)")
    parser.add_argument("--model", help="exported model (default: the bundled one)")
    args = parser.parse_args()
    for path in args.femurs:
        image = io.load_femur(path)
        rows, columns = image.density.shape
        grey = reconstruct(dataset.downscale_femur(image), model=args.model, device="cpu")
        grey = grey[:rows, :columns]
        rois = image.femur.rois(image.pixel_size)
        for label, drawn in (("grey", grey), ("binarized", (grey > 0.5).astype(float))):
            table = evaluate.roi_table(image.density, drawn, rois, E0=1.0, h=image.pixel_size)
            errors = " ".join(f"{row['error_percent']:+.1f}" for row in table.rows)
            print(f"{path} {label}: {errors}", flush=True)


if __name__ == "__main__":
    main()
