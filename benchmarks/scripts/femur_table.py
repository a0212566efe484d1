"""The morphometry table of a folder of grown femurs, one Markdown row per femur.

Per femur: split, side, neck-shaft angle, trabecular BV/TV, the three ROIs' BV/TV, median Tb.Th
and Tb.Sp, the largest void anywhere, the cortex band, the minutes growing took (the stages'
sum) and the targets of ``femsr.morphometry.TARGETS`` it misses. With ``--stages``, instead:
per stage of growth, its grid, iterations, and the median and range over the femurs of its
minutes (from each femur's record of its stages), without measuring anything.

    python benchmarks/scripts/femur_table.py benchmarks/femurs
    python benchmarks/scripts/femur_table.py benchmarks/femurs --stages
"""

import argparse
import json
from pathlib import Path

import numpy as np

from femsr import io, morphometry
from femsr.generate import MANIFEST

ROIS = ("roi_head", "roi_neck", "roi_intertrochanteric")
HEADER = (
    "| femur | split | side | neck-shaft | trabecular BV/TV | ROI BV/TV head / neck / IT "
    "| ROI median Tb.Th (mm) | ROI median Tb.Sp (mm) | largest void (mm) | cortex band "
    "| minutes | targets missed |"
)


def row(path: Path) -> str:
    image = io.load_femur(path)
    rows = morphometry.morphometry(image.density, image.femur, image.pixel_size)
    by_region = {r["region"]: r for r in rows}
    missed = [name for name, met in morphometry.check(rows).items() if not met]
    void = max(r["largest_void"] for r in rows if r["region"] != "cortex")
    minutes = sum(stage.get("seconds", 0.0) for stage in image.meta.get("stages", [])) / 60
    angle = image.femur.landmarks().neck_shaft_angle

    def rois(key: str, digits: int) -> str:
        return " / ".join(f"{by_region[name][key]:.{digits}f}" for name in ROIS)

    return (
        f"| {path.stem} | {image.meta.get('split', '')} | {image.femur.side} | {angle:.0f}° "
        f"| {image.meta.get('volfrac', float('nan')):.2f} | {rois('bvtv', 2)} "
        f"| {rois('tb_th_median', 2)} | {rois('tb_sp_median', 2)} | {void:.1f} "
        f"| {by_region['cortex']['band']:.3f} | {minutes:.1f} | {', '.join(missed) or 'none'} |"
    )


def stage_table(paths: list[Path]) -> str:
    """Median (range) minutes of each stage over the femurs, with its grid and iterations."""
    records = [io.load_femur(path).meta["stages"] for path in paths]
    lines = [
        "| stage | pixel (mm) | grid | iterations | beta at the end | minutes, median (range) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for k, first in enumerate(records[0]):
        minutes = np.array([femur[k]["seconds"] for femur in records]) / 60
        lines.append(
            f"| {k + 1} | {first['pixel_size']} | {first['shape'][0]}x{first['shape'][1]} "
            f"| {first['iterations']} | {first['beta']:g} | {np.median(minutes):.1f} "
            f"({minutes.min():.1f}-{minutes.max():.1f}) |"
        )
    totals = np.array([sum(stage["seconds"] for stage in femur) for femur in records]) / 60
    lines.append(
        f"| all | | | | | {np.median(totals):.1f} ({totals.min():.1f}-{totals.max():.1f}) |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a folder written by femsr generate")
    parser.add_argument("--stages", action="store_true", help="the cost of each stage instead")
    args = parser.parse_args()
    entries = json.loads((args.folder / MANIFEST).read_text())["femurs"]
    if args.stages:
        paths = [args.folder / e["file"] for e in entries if (args.folder / e["file"]).exists()]
        print(stage_table(paths))
        return
    print(HEADER)
    print("| --- " * (HEADER.count("|") - 1) + "|")
    for entry in entries:
        path = args.folder / entry["file"]
        if path.exists():
            print(row(path))


if __name__ == "__main__":
    main()
