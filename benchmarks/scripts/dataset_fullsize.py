"""Build the patch dataset of one full-size femur (2080 x 1883 HR → 208 x 189 LR) and time it.

Run with the peak memory measured from outside::

    /usr/bin/time -v python benchmarks/scripts/dataset_fullsize.py [--femur FILE] [--stride 8]

Without ``--femur`` the HR density is synthetic: the mean phantom's mask filled with crisp
struts (smoothed noise through a steep sigmoid, 0.001-1), which costs the LR FE what a grown
femur costs (the LR image is gray either way). Prints the pair count, the seconds of each step
and the size of the dataset on disk.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from femsr import dataset
from femsr.femur import HR_PIXEL, Femur
from femsr.io import FemurImage, load_femur


def synthetic_femur(seed: int = 0) -> FemurImage:
    bone = Femur()
    mask = bone.mask(HR_PIXEL)
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(mask.shape), 6.0)
    struts = 1.0 / (1.0 + np.exp(-np.clip(noise / noise.std() * 8.0, -50, 50)))
    density = np.where(mask, np.clip(struts, 1e-3, 1.0), 0.0)
    return FemurImage(density, HR_PIXEL, bone, {"name": "synthetic", "split": "train"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--femur", type=Path, help="a femur image file (default: synthetic)")
    parser.add_argument("--stride", type=int, default=8, help="LR window offset (pixels)")
    parser.add_argument("--patch", type=int, default=12, help="LR window side (pixels)")
    parser.add_argument("--out", type=Path, help="dataset folder (default: a temporary one)")
    args = parser.parse_args()

    start = time.perf_counter()
    image = load_femur(args.femur) if args.femur else synthetic_femur()
    prepared = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        start = time.perf_counter()
        index = dataset.build_dataset(
            [image], out, patch=args.patch, stride=args.stride, progress=False
        )
        seconds = time.perf_counter() - start
        size = sum(path.stat().st_size for path in out.iterdir())
    entry = index["femurs"][0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    shapes = f"HR {image.density.shape} -> LR {tuple(entry['lr_shape'])}"
    grid = f"patch {args.patch} stride {args.stride}"
    print(f"{shapes}, {grid}: {entry['count']} pairs of {entry['windows']} windows")
    print(f"  load/synthesize HR   {prepared:7.2f} s")
    fe = entry["fe"]
    print(f"  LR FE ({fe['method']}, CG {fe['iterations']}) {fe['seconds']:7.2f} s")
    print(f"  build_dataset total  {seconds:7.2f} s ({entry['count'] / seconds:,.0f} pairs/s)")
    per_pair = size / entry["count"] / 1024
    print(f"  on disk              {size / 2**20:7.1f} MiB ({per_pair:.1f} KiB/pair)")
    print(f"  peak RSS (getrusage) {peak:7.2f} GiB")


if __name__ == "__main__":
    main()
