"""ROI stiffness of reconstructions from synthetic CT slices of held-out femurs, against the
reconstruction from the block mean.

Each femur is reconstructed by the model from its 500 µm block mean
(``femsr.dataset.downscale_femur``: the femur it grew in places the loads and the ROIs) and from
synthetic CT slices of its 50 µm density (``femsr.scan.synthetic_scan``) at each untilted setting
of ``scan_fit.py`` (pixel size, point-spread FWHM, noise), read as ``femsr reconstruct`` reads a
scan (``femsr.scan.lr_image``: calibration, resampling, segmentation, the fitted femur, which
places the loads and the reconstruction's ROIs). Per input: the mean |error| % of each ROI
stiffness component over the femurs whose reference ROI holds bone (``femsr.evaluate.roi_table``),
the worst single error, the ROIs' BV/TV and median Tb.Th (``femsr.morphometry.morphometry``) of the
reconstruction, mean over the femurs and the three ROIs, beside the references' in the header, and
the seconds per femur (reading the slice and reconstructing). The femurs are both sides as the
folder holds them. With ``--crisp`` each reconstruction is redrawn crisp at its input's mass
(``reconstruct(crisp=True)``); with ``--refine N`` refined by N iterations of topology
optimization under the (fitted) femur's load cases first (``reconstruct(refine=N)``; ``--refine``
without N, ``reconstruct(refine=True)``, the iterations and the redrawing's weight of
:func:`femsr.refine.settings`; with
``--mass-block K`` holding the mass of blocks of K x K LR pixels, ``reconstruct(mass_block=K)``,
instead of those as wide as the deblurring's FWHM); with
``--tta`` averaged over the 8 symmetries of the square (``reconstruct(tta=True)``); with
``--deblur`` each slice is deblurred by its setting's FWHM (``lr_image(psf_fwhm=...)``), with
``--deblur auto`` by the FWHM read off the slice (``lr_image(psf_fwhm="auto")``), and so, without
``--model``, reconstructed by the bundled model for that width (``femsr.reconstruct``); a slice
deblurred by 0.85 mm or more from pixels finer than 0.6 mm is brought up to 80 HU of noise
first, as ``femsr reconstruct`` does unless ``--tta`` (``lr_image(dither=True)``; ``--dither
yes`` or ``no`` forces it either way).
``--settings K...`` runs only those of the untilted settings (0-based), the block mean
too unless ``--no-block-mean``; ``--noise HU`` gives their slices that noise instead;
``--pelvis MM`` draws a pelvis above each head, MM from it, that the slice's top edge cuts off
(``femsr.scan.with_pelvis``; the femur's pixels and the slice's frame as without).
``--per-femur`` prints each femur's sum of the nine |errors| and its worst error after each
row. ``--fitted-rois`` adds two rows after each slice's: the
errors the fitted ROIs' placement alone makes (the reference under the fitted femur's ROIs,
placed on the phantom through the slice's frame, ``lr.meta["to_box"]``, against the reference
under its own), and the reconstruction's against the reference under the fitted ROIs: its
errors without the placement's.

    python benchmarks/scripts/scan_stiffness.py benchmarks/femurs/femur_{00,04,06,10}.npz
    python benchmarks/scripts/scan_stiffness.py benchmarks/femurs/femur_{00,04}.npz --refine 8 \
        --settings 1
"""

import argparse
import time

import numpy as np
from scan_fit import BORDER, SETTINGS, setting_label, synthetic_slice

from femsr import agreement, dataset, evaluate, io, morphometry, scan
from femsr.femur import BOX
from femsr.reconstruct import adds_noise, reconstruct

NAMES = [f"{r} {c}" for r in ("head", "neck", "IT") for c in evaluate.COMPONENTS]


def roi_morphometry(density: np.ndarray, femur, pixel_size: float) -> np.ndarray:
    """BV/TV and median Tb.Th (mm) of the three ROIs, one row each."""
    rows = morphometry.morphometry(density, femur, pixel_size, only=tuple(agreement.ROIS))
    return np.array([[row["bvtv"], row["tb_th_median"]] for row in rows])


def phantom_rois(image: io.FemurImage, lr: io.FemurImage, found: dict) -> dict:
    """The ROIs ``found`` of the femur fitted to ``lr``, a slice of ``image`` (``synthetic_scan``
    with ``BORDER``), on ``image``'s grid: each ROI's centre taken through the slice's frame."""
    h = image.pixel_size
    to_scan = np.linalg.inv(lr.meta["to_box"])
    placed = {}
    for name, (rows, cols) in found.items():
        height, width = rows.stop - rows.start, cols.stop - cols.start
        centre = [(cols.start + width / 2) * h, BOX[0] - (rows.start + height / 2) * h, 1.0]
        x, y, _ = to_scan @ centre
        row, col = round((y - BORDER) / h - height / 2), round((x - BORDER) / h - width / 2)
        placed[name] = (slice(row, row + height), slice(col, col + width))
    return placed


def signed_errors(reference, reconstruction, rois, found, h: float) -> np.ndarray:
    """The nine signed ROI stiffness errors (%) of ``reconstruction`` under ``found`` against
    ``reference`` under ``rois``."""
    table = evaluate.roi_table(
        reference, reconstruction, rois, reconstruction_rois=found, E0=1.0, h=h
    )
    return np.array([row["error_percent"] for row in table.rows])


def reconstructed(
    image: io.FemurImage, lr: io.FemurImage, model: str | None, options: dict
) -> tuple[np.ndarray, np.ndarray]:
    """The reconstruction of ``lr`` (``options`` of ``reconstruct``) on ``image``'s grid, and
    its ROIs' BV/TV and median Tb.Th."""
    shape = image.density.shape
    hr = reconstruct(lr, model=model, device="cpu", **options)
    hr = hr[: shape[0], : shape[1]]
    return hr, roi_morphometry(hr, lr.femur, image.pixel_size)


def print_row(label: str, table: np.ndarray, tail: str, paths: list[str] | None) -> None:
    """A table row: the mean |error| of each component, the worst error and ``tail``; with
    ``paths``, each femur's sum and worst error below it."""
    means = np.nanmean(np.abs(table), axis=0)
    worst = table.flat[np.nanargmax(np.abs(table))]
    cells = " | ".join(f"{m:.1f}" for m in means)
    print(f"| {label} | {cells} | {worst:+.1f} | {tail} |", flush=True)
    for path, row in zip(paths, table, strict=True) if paths else ():
        k = np.nanargmax(np.abs(row))
        print(f"    {path}: sum {np.nansum(np.abs(row)):.0f} %, worst {NAMES[k]} {row[k]:+.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("femurs", nargs="+", help="femur files (femsr.io.save_femur)")
    parser.add_argument("--model", help="exported model (default: the bundled one)")
    parser.add_argument("--crisp", action="store_true", help="redraw crisp at the input's mass")
    parser.add_argument(
        "--refine",
        type=int,
        nargs="?",
        const=True,
        default=0,
        metavar="N",
        help="refine N iterations (without N: as many as femsr.refine.settings gives the input)",
    )
    parser.add_argument("--mass-block", type=int, metavar="K", help="refine K x K LR pixels' mass")
    parser.add_argument("--tta", action="store_true", help="average over the 8 symmetries")
    parser.add_argument("--settings", type=int, nargs="+", metavar="K", help="these settings")
    parser.add_argument("--noise", type=float, metavar="HU", help="this noise, not the settings'")
    parser.add_argument(
        "--deblur",
        nargs="?",
        const="setting",
        choices=("setting", "auto"),
        help="deblur by the setting's FWHM, or by the one read off the slice (auto)",
    )
    parser.add_argument(
        "--dither",
        choices=("auto", "yes", "no"),
        default="auto",
        help="add noise to a blurry scan (lr_image(dither=)): auto, from pixels finer than "
        "0.6 mm unless --tta",
    )
    parser.add_argument("--pelvis", type=float, metavar="MM", help="a pelvis MM from the head")
    parser.add_argument("--no-block-mean", action="store_true", help="slices only")
    parser.add_argument("--per-femur", action="store_true", help="each femur's sum and worst")
    parser.add_argument(
        "--fitted-rois", action="store_true", help="score against the reference's fitted ROIs"
    )
    args = parser.parse_args()
    options = {
        "crisp": args.crisp,
        "refine": args.refine,
        "mass_block": args.mass_block,
        "tta": args.tta,
    }
    images = [io.load_femur(path) for path in args.femurs]
    forced = {"yes": True, "no": False}.get(args.dither)
    inputs = [] if args.no_block_mean else [("block mean", None)]
    untilted = [(p, f, n) for p, f, n, tilt in SETTINGS if not tilt]
    for k in range(len(untilted)) if args.settings is None else args.settings:
        pixel, fwhm, noise = untilted[k]
        noise = noise if args.noise is None else args.noise
        inputs.append((setting_label(pixel, fwhm, noise), (pixel, fwhm, noise)))
    reference = np.mean(
        [roi_morphometry(image.density, image.femur, image.pixel_size) for image in images],
        axis=(0, 1),
    )
    header = " | ".join(NAMES)
    paths = args.femurs if args.per_femur else None
    print(
        f"| input | {header} | worst | ROI BV/TV (reference {reference[0]:.2f}) "
        f"| ROI Tb.Th mm (reference {reference[1]:.2f}) | s per femur |"
    )
    print("| --- " * 14 + "|")
    for label, setting in inputs:
        found, placement, fitted, measured, seconds = [], [], [], [], 0.0
        for k, image in enumerate(images):
            start = time.perf_counter()
            if setting is None:
                lr = dataset.downscale_femur(image)
            else:
                pixel, fwhm, noise = setting
                ct = synthetic_slice(image, pixel, fwhm, noise, seed=k, pelvis=args.pelvis)
                psf_fwhm = fwhm if args.deblur == "setting" else args.deblur  # or auto, None
                auto = adds_noise((pixel, pixel), tta=args.tta)  # as femsr reconstruct
                dither = auto if forced is None else forced
                lr = scan.lr_image(ct, psf_fwhm=psf_fwhm, dither=dither)
            hr, morph = reconstructed(image, lr, args.model, options)
            seconds += time.perf_counter() - start
            h, rois = image.pixel_size, image.femur.rois(image.pixel_size)
            lr_rois = lr.femur.rois(h)
            found.append(signed_errors(image.density, hr, rois, lr_rois, h))
            measured.append(morph)
            if args.fitted_rois and setting is not None:
                placed = phantom_rois(image, lr, lr_rois)
                placement.append(signed_errors(image.density, image.density, rois, placed, h))
                fitted.append(signed_errors(image.density, hr, placed, lr_rois, h))
        bvtv, thickness = np.nanmean(measured, axis=(0, 1))
        tail = f"{bvtv:.2f} | {thickness:.2f} | {seconds / len(images):.1f}"
        print_row(label, np.array(found), tail, paths)
        if placement:
            print_row(f"{label}: ROI placement alone", np.array(placement), "- | - | -", paths)
            print_row(f"{label}: against the fitted ROIs", np.array(fitted), tail, paths)


if __name__ == "__main__":
    main()
