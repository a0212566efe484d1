"""Grow one femur of a dataset's manifest with a changed schedule, to try a stage setting.

Each ``--set K:FIELD=VALUE`` replaces a field of stage K of ``generate.STAGES`` (a number, or
``none``). ``femsr generate``'s own run, with the dataset's count, split and seed, grows the
femur into OUT (``<name>.npz``, measured by ``femsr morphometry``, and its preview),
checkpoints in OUT/work/<name>, so a rerun resumes. Stages before the first changed one grow
as in the dataset: copy their ``stage<k>.done.npz`` from ``<dataset>/work/<name>/`` to skip
them.

    mkdir -p /tmp/r03/work/femur_00
    cp benchmarks/femurs/work/femur_00/stage0.done.npz /tmp/r03/work/femur_00/
    python benchmarks/studies/grow_variant.py femur_00 /tmp/r03 --set 1:local_above=0.05 \\
        --set 2:local_above=0.05
    femsr morphometry /tmp/r03/femur_00.npz
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

from femsr import generate


def stage_change(text: str) -> tuple[int, str, int | float | None]:
    """``K:FIELD=VALUE`` as (K, FIELD, VALUE); VALUE an int where it reads as one."""
    index, _, assignment = text.partition(":")
    field, _, value = assignment.partition("=")
    known = {f.name for f in dataclasses.fields(generate.Stage)}
    if not index.isdigit() or field not in known or not value:
        raise argparse.ArgumentTypeError(f"expected K:FIELD=VALUE with FIELD in {sorted(known)}")
    if value.lower() == "none":
        return int(index), field, None
    try:
        return int(index), field, int(value)
    except ValueError:
        return int(index), field, float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="femur name in the manifest, e.g. femur_00")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--set", type=stage_change, action="append", default=[], dest="changes")
    parser.add_argument("--dataset", type=Path, default=Path("benchmarks/femurs"))
    args = parser.parse_args()
    settings = json.loads((args.dataset / generate.MANIFEST).read_text())["settings"]
    stages = list(generate.STAGES)
    for index, field, value in args.changes:
        if index >= len(stages):
            raise SystemExit(f"stage {index} does not exist: there are {len(stages)}")
        stages[index] = dataclasses.replace(stages[index], **{field: value})
    start = time.perf_counter()
    try:
        generate.generate(
            args.out,
            count=settings["count"],
            test=settings["test"],
            validation=settings["validation"],
            seed=settings["seed"],
            stages=stages,
            only=[args.name],
        )
    except ValueError as error:
        raise SystemExit(str(error)) from error
    print(f"{args.name}: {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
