"""How much of the block mean's trabecular detail a deblurred CT slice carries: what a
network can draw the femur's own struts from.

Each femur's synthetic CT slice at 0.5 mm pixels (``femsr.scan.synthetic_scan``, the femur box
15 mm inside the field, so its pixels are the block mean's), of each ``--fwhm`` (mm) at each
``--noise`` (HU), is deblurred by its FWHM (``femsr.scan.deblur``, ``--balance`` its Wiener
filter's) and calibrated to density (``femsr.scan.density_from_hu``, clipped to [0, 1] as
``lr_image`` clips it). In each of the three ROIs the detail of an image is what is left after
a Gaussian low-pass of ``--sigma`` mm (1 mm: the trabecular spacing's scale and finer); printed
per setting, mean over the femurs: the correlation of the slice's detail with the block mean's
in each ROI, and the RMS of the slice's detail error against that of the block mean's detail
(1: no detail recovered).

    python benchmarks/studies/scan_detail.py benchmarks/femurs/femur_{00,04,06,10,13,15,16,25}.npz
"""

import argparse

import numpy as np
import scipy.ndimage as ndi

from femsr import dataset, io, scan

BORDER = 15.0  # mm; a whole number of 0.5 mm pixels, so the slice's grid is the block mean's


def detail(image: np.ndarray, sigma: float) -> np.ndarray:
    return image - ndi.gaussian_filter(image, sigma, mode="nearest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("femurs", nargs="+", help="femur files (femsr.io.save_femur)")
    parser.add_argument("--fwhm", type=float, nargs="+", default=[0.5, 0.7, 1.0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 20.0, 30.0, 50.0])
    parser.add_argument("--sigma", type=float, default=1.0, help="low-pass (mm)")
    parser.add_argument("--balance", type=float, default=scan.DEBLUR_BALANCE, help="Wiener's")
    args = parser.parse_args()
    rois = ("head", "neck", "intertrochanteric")
    print(
        "| FWHM mm | noise HU | "
        + " | ".join(f"{r} r" for r in rois)
        + " | "
        + " | ".join(f"{r} RMS error / RMS detail" for r in rois)
        + " |"
    )
    print("| --- " * (2 + 2 * len(rois)) + "|")
    images = [io.load_femur(path) for path in args.femurs]
    for fwhm in args.fwhm:
        for noise in args.noise:
            r, ratio = [], []
            for k, image in enumerate(images):
                lr = dataset.downscale_femur(image)
                pixel = lr.pixel_size
                ct = scan.synthetic_scan(
                    image.density, image.pixel_size, pixel=pixel, fwhm=fwhm, noise=noise,
                    border=BORDER, seed=k,
                )  # fmt: skip
                sharp = np.clip(
                    scan.density_from_hu(scan.deblur(ct, fwhm, balance=args.balance).image),
                    0.0,
                    1.0,
                )
                pad = round(BORDER / pixel)
                sharp = sharp[pad : pad + lr.density.shape[0], pad : pad + lr.density.shape[1]]
                want = detail(lr.density, args.sigma / pixel)
                got = detail(sharp, args.sigma / pixel)
                where = lr.femur.rois(pixel)
                pairs = [(want[where[n]].ravel(), got[where[n]].ravel()) for n in rois]
                r.append([np.corrcoef(a, b)[0, 1] for a, b in pairs])
                ratio.append([np.sqrt(np.mean((b - a) ** 2) / np.mean(a**2)) for a, b in pairs])
            cells = [f"{v:.2f}" for v in (*np.mean(r, axis=0), *np.mean(ratio, axis=0))]
            print(f"| {fwhm} | {noise:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
