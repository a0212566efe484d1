"""How thick the grown struts are: Tb.Th of each femur's trabecular region, and how it grew.

For every femur image given, the local thickness (``femsr.evaluate.local_thickness``) of the
bone phase (density > 0.5) more than ``--shell`` mm inside the outline (the cortex left out),
as mean, median and 10th-90th percentiles in mm, with the bone fraction there and the share of
the mask at intermediate density (0.1-0.9); from the growth records, the split, the bone mass,
the compliance (N mm) after the last optimizing stage and the minutes the growth took.

    python benchmarks/studies/trabecular_thickness.py benchmarks/femurs/femur_*.npz
"""

import argparse
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

from femsr import evaluate, io


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("femurs", nargs="+", type=Path, help="femur images (.npz)")
    parser.add_argument("--shell", type=float, default=1.0, help="cortex width left out (mm)")
    args = parser.parse_args()
    print(
        "| femur | split | bone mass | Tb.Th mean | median | p10-p90 | BV/TV inside | gray"
        " | compliance | grown in |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in args.femurs:
        image = io.load_femur(path)
        if image.femur is None:
            raise SystemExit(f"{path}: no femur geometry in the file")
        density, size = image.density, image.pixel_size
        mask = image.femur.mask(size)
        inside = ndi.distance_transform_edt(mask) * size > args.shell
        bone = (density > 0.5) & inside
        thickness = evaluate.local_thickness(density)[bone] * size
        low, median, high = np.quantile(thickness, [0.1, 0.5, 0.9])
        gray = ((density > 0.1) & (density < 0.9))[mask].mean()
        stages = image.meta.get("stages", [])
        solved = [r["compliance"] for r in stages if r.get("compliance") is not None]
        minutes = sum(r.get("seconds", 0.0) for r in stages) / 60
        print(
            f"| {path.stem} | {image.meta.get('split', '')} | {image.meta.get('volfrac', '')}"
            f" | {thickness.mean():.2f} mm | {median:.2f} mm | {low:.2f}-{high:.2f} mm"
            f" | {evaluate.bone_volume_fraction(density, mask=inside):.3f} | {100 * gray:.1f} %"
            f" | {solved[-1] if solved else float('nan'):.0f} | {minutes:.1f} min |"
        )


if __name__ == "__main__":
    main()
