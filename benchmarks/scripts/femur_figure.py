"""Figure of a grown femur: the whole femur with its morphometry regions, and its three ROIs.

Left, the density at 50 µm with the regions of ``femsr.morphometry.regions`` tinted and the three
evaluation ROIs outlined; right, the ROIs at full resolution.

    python benchmarks/scripts/femur_figure.py benchmarks/femurs/femur_04.npz \\
        benchmarks/figures/femur_regions.png
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from femsr import io, morphometry

COLOURS = {
    "head": (0.90, 0.35, 0.30),
    "neck": (0.95, 0.75, 0.25),
    "wards_triangle": (0.40, 0.80, 0.40),
    "greater_trochanter": (0.35, 0.60, 0.95),
    "intertrochanteric": (0.75, 0.45, 0.90),
    "cortex": (0.85, 0.85, 0.85),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("femur", type=Path, help="femur file (.npz)")
    parser.add_argument("output", type=Path, help="PNG to write")
    args = parser.parse_args()
    image = io.load_femur(args.femur)
    regions = morphometry.regions(image.femur, image.pixel_size)
    bone = image.density > 0.5
    picture = np.zeros((*bone.shape, 3))
    for name, colour in COLOURS.items():
        tint = np.array(colour)
        picture[regions[name]] = 0.35 * tint
        picture[regions[name] & bone] = tint
    rois = image.femur.rois(image.pixel_size)
    figure = plt.figure(figsize=(12, 7.5), dpi=160)
    whole = figure.add_axes((0.0, 0.0, 0.55, 1.0))
    whole.imshow(picture, interpolation="antialiased")
    for name, (rows, cols) in rois.items():
        whole.add_patch(
            plt.Rectangle(
                (cols.start, rows.start),
                cols.stop - cols.start,
                rows.stop - rows.start,
                fill=False,
                edgecolor="white",
                linewidth=1.2,
            )
        )
        whole.text(cols.start, rows.start - 20, name, color="white", fontsize=8)
    whole.set_axis_off()
    for k, (name, (rows, cols)) in enumerate(rois.items()):
        axes = figure.add_axes((0.57, 0.655 - 0.325 * k, 0.3, 0.29))
        axes.imshow(image.density[rows, cols], cmap="gray", vmin=0, vmax=1)
        title = f"{name} ROI, 10 mm at {image.pixel_size * 1000:.0f} µm"
        axes.set_title(title, fontsize=8, color="white")
        axes.set_axis_off()
    legend = figure.add_axes((0.88, 0.1, 0.12, 0.8))
    for k, (name, colour) in enumerate(COLOURS.items()):
        legend.add_patch(plt.Rectangle((0, 1 - 0.08 * (k + 1)), 0.15, 0.05, color=colour))
        label = name.replace("_", " ")
        legend.text(0.2, 1 - 0.08 * (k + 1), label, fontsize=8, va="bottom", color="white")
    legend.set_axis_off()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, facecolor="black")


if __name__ == "__main__":
    main()
