"""How a model does on given femurs: ROI stiffness errors and whole-femur image measures.

Each femur image is downscaled x10 (``dataset.downscale_femur``), reconstructed with the model
(default: the bundled one) and scored against itself, as ``femsr report`` scores held-out
femurs, whatever their split.

    python benchmarks/model_on_femurs.py benchmarks/femurs/femur_0[23].npz
"""

import argparse
from pathlib import Path

from femsr import dataset, evaluate, io
from femsr.reconstruct import reconstruct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("femurs", nargs="+", type=Path, help="femur images (.npz)")
    parser.add_argument("--model", help="exported model (default: the bundled one)")
    args = parser.parse_args()
    for path in args.femurs:
        reference = io.load_femur(path)
        if reference.femur is None:
            raise SystemExit(f"{path}: no femur geometry in the file")
        shape, pixel = reference.density.shape, reference.pixel_size
        lr = dataset.downscale_femur(reference)
        hr = reconstruct(lr, model=args.model, device="cpu")[: shape[0], : shape[1]]
        rois = reference.femur.rois(pixel)
        table = evaluate.roi_table(reference.density, hr, rois, E0=15e3, h=pixel)
        mask = reference.femur.mask(pixel)
        whole = evaluate.image_table(reference.density, hr, rois, mask=mask, pixel_size=pixel)
        errors = ", ".join(f"{abs(row['error_percent']):.1f}" for row in table.rows)
        w = whole.rows[-1]
        print(
            f"{path.stem}: ROI |errors| % {errors}; whole femur SSIM {w['ssim']:.3f}, "
            f"Dice {w['dice']:.3f}, BV/TV error {w['bvtv_error_percent']:+.2f} %, "
            f"Tb.Th {w['tbth_reference']:.2f} / {w['tbth_reconstruction']:.2f} mm"
        )


if __name__ == "__main__":
    main()
