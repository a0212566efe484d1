"""The three ROIs of one femur reconstructed from a synthetic CT slice by models, one row each.

    python benchmarks/scripts/scan_figure.py benchmarks/femurs/femur_00.npz out.png \
        --model block=benchmarks/runs/l2_mass/best.pt --model scan=femsr/data/model_scan.pt

The slice is ``femsr.scan.synthetic_scan`` of the femur's 50 µm density (0.5 mm pixels, a
point-spread function of 0.7 mm FWHM, 30 HU of noise, seed 0), read as ``femsr reconstruct``
reads a scan (``femsr.scan.lr_image``; for ``--deblurred`` models deblurred first by the FWHM
read off the slice, ``psf_fwhm="auto"``); the ROIs are those of the femur fitted to the slice.
With ``--refine N`` each reconstruction is refined by N iterations (``reconstruct(refine=N)``).
With ``--settings K...`` the rows are instead the slices of those untilted settings of
``scan_fit.py`` (pixel size, FWHM, noise; seed 0) reconstructed as ``femsr reconstruct --tta
--refine`` reconstructs a scan: deblurred by the FWHM read off, by the bundled model for that
width, averaged over the 8 symmetries and refined by the default iterations.
The top row is the reference's ROIs, each panel titled with its mean density.

    python benchmarks/scripts/scan_figure.py benchmarks/femurs/femur_00.npz out.png --settings 0 1 2
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from scan_fit import SETTINGS, setting_label, synthetic_slice

from femsr import io, scan
from femsr.reconstruct import reconstruct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("femur", help="femur file (femsr.io.save_femur)")
    parser.add_argument("output", help="figure file (.png)")
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=FILE")
    parser.add_argument("--deblurred", action="append", default=[], metavar="LABEL=FILE")
    parser.add_argument("--refine", type=int, default=0, metavar="N")
    parser.add_argument("--settings", type=int, nargs="+", default=[], metavar="K")
    args = parser.parse_args()
    image = io.load_femur(args.femur)
    rows = [("reference", image.density, image.femur.rois(image.pixel_size))]
    if args.settings:
        rows += as_reconstructed(image, [SETTINGS[k][:3] for k in args.settings])
    else:
        rows += by_models(image, args)
    figure, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for row, (label, density, rois) in zip(axes, rows, strict=True):
        for axis, (name, window) in zip(row, rois.items(), strict=True):
            crop = density[window]
            axis.imshow(crop, cmap="gray", vmin=0, vmax=1)
            axis.set_title(f"{label}\n{name}: mean {crop.mean():.2f}", fontsize=9)
            axis.axis("off")
    figure.tight_layout()
    figure.savefig(args.output, dpi=90)


def as_reconstructed(image: io.FemurImage, settings: list[tuple[float, float, float]]) -> list:
    """A row per setting: its slice reconstructed as ``femsr reconstruct --tta --refine`` does."""
    rows = []
    for pixel, fwhm, noise in settings:
        lr = scan.lr_image(synthetic_slice(image, pixel, fwhm, noise), psf_fwhm="auto")
        hr = reconstruct(lr, device="cpu", tta=True, refine=True)
        label = setting_label(pixel, fwhm, noise)
        rows.append((label, hr, lr.femur.rois(image.pixel_size)))
    return rows


def by_models(image: io.FemurImage, args: argparse.Namespace) -> list:
    """A row per ``--model`` and ``--deblurred``: the slice at 0.5 mm, FWHM 0.7 mm, 30 HU."""
    ct = synthetic_slice(image, 0.5, 0.7, 30.0)
    slices = {False: scan.lr_image(ct), True: scan.lr_image(ct, psf_fwhm="auto")}
    rows = []
    models = [(option, False) for option in args.model] + [(o, True) for o in args.deblurred]
    for option, deblurred in models:
        label, path = option.split("=", 1)
        lr = slices[deblurred]
        hr = reconstruct(lr, model=path, device="cpu", refine=args.refine)
        rows.append((label, hr, lr.femur.rois(image.pixel_size)))
    return rows


if __name__ == "__main__":
    main()
