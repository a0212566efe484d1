"""Grow femurs drawn at the ends of the documented ranges and check their morphometry.

From seeds the dataset does not use (10,000 on), picks the first femur of :func:`femsr.femur.sample`
whose neck-shaft angle lies within 2 degrees of each end of its range (120 and 140), and grows the
first at the lowest trabecular bone volume fraction of :data:`femsr.generate.VOLFRAC_RANGE`, the
second at the highest, with :data:`femsr.generate.STAGES`; writes OUT/<name>.npz and .png
(checkpoints in OUT/work/<name>, so a rerun resumes) and prints ``femsr morphometry``'s table.
``--local-above`` tries another local volume bound: every stage that has one gets this
``local_above``.

    /usr/bin/time -v python benchmarks/scripts/grow_extremes.py /tmp/extremes
    python benchmarks/scripts/grow_extremes.py /tmp/extremes_02 --local-above 0.02
"""

import argparse
import dataclasses
from pathlib import Path

from femsr import cli, femur, generate, io


def first_seed(near: float, start: int = 10_000) -> int:
    seed = start
    while abs(femur.sample(seed).neck_shaft_angle - near) > 2.0:
        seed += 1
    return seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--local-above", type=float, help="local_above of the bounded stages")
    args = parser.parse_args()
    stages = [
        dataclasses.replace(stage, local_above=args.local_above)
        if args.local_above is not None and stage.local_above is not None
        else stage
        for stage in generate.STAGES
    ]
    low, high = generate.VOLFRAC_RANGE
    (angle_low, angle_high) = femur.RANGES["neck_shaft_angle"]
    files = []
    for name, angle, volfrac in (("low", angle_low, low), ("high", angle_high, high)):
        seed = first_seed(angle)
        bone = femur.sample(seed)
        print(
            f"{name}: seed {seed}, {bone.side}, neck-shaft {bone.neck_shaft_angle:.1f} deg, "
            f"volfrac {volfrac}",
            flush=True,
        )
        density, records = generate.grow(
            bone, volfrac, stages=stages, checkpoint_dir=args.out / "work" / name, progress=False
        )
        path = args.out / f"{name}.npz"
        meta = {"seed": seed, "volfrac": volfrac, "stages": records}
        io.save_femur(path, io.FemurImage(density, generate.STAGES[-1].pixel_size, bone, meta))
        generate.preview(density, args.out / f"{name}.png")
        files.append(str(path))
    cli.main(["morphometry", *files, "--output", str(args.out / "morphometry.md")])


if __name__ == "__main__":
    main()
