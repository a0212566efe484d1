"""Full-size quilting: all seams and the composition of a full femur, C++ against the twins.

Run each configuration in its own process so its peak RSS is its own:

    /usr/bin/time -v python benchmarks/quilt_fullsize.py --field uniform
    /usr/bin/time -v python benchmarks/quilt_fullsize.py --field smooth
    /usr/bin/time -v python benchmarks/quilt_fullsize.py --field uniform --skip-python

The grid is reconstruct()'s: the 208x189 LR femur in 12-px windows with stride 8 (the last
window clamped inside the image would change nothing here) gives 26x24 windows, and the x10 HR
patches are 120 px with stride 80 (overlap 40) on a 2120x1960 canvas cropped to 2080x1890. The
patches are independent uniform noise (no two agree: the search settles most overlap pixels) or
one smooth field with independent noise in each patch (neighbouring network outputs).
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import numpy as np
import scipy.ndimage as ndi

from femsr import _core
from femsr import quilt as q
from femsr.reference import quilt as ref

T = TypeVar("T")

LR_SHAPE = (208, 189)
WINDOW, STEP, SCALE = 12, 8, 10


def grid() -> tuple[int, int, int, int]:
    nr, nc = (math.ceil((n - WINDOW) / STEP) + 1 for n in LR_SHAPE)
    return nr, nc, WINDOW * SCALE, STEP * SCALE


def make_patches(field: str, seed: int = 0) -> np.ndarray:
    nr, nc, patch, stride = grid()
    rng = np.random.default_rng(seed)
    if field == "uniform":
        return rng.uniform(0.0, 1.0, (nr, nc, patch, patch))
    canvas = ndi.gaussian_filter(
        rng.standard_normal(((nr - 1) * stride + patch, (nc - 1) * stride + patch)), 8.0
    )
    canvas = 0.5 + canvas / (4 * canvas.std())
    windows = np.lib.stride_tricks.sliding_window_view(canvas, (patch, patch))[::stride, ::stride]
    return windows + 0.05 * rng.standard_normal(windows.shape)


def seams_cpp(patches: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    nr, nc, patch, _ = patches.shape
    overlap = patch - stride
    vertical = np.empty((nr, nc - 1, patch, overlap), dtype=np.uint8)
    _core.vertical_seam_masks(patches, stride, vertical)
    strips = np.empty((nr, patch, (nc - 1) * stride + patch))
    _core.compose_columns(patches, stride, vertical, None, strips, None)
    horizontal = np.empty((nr - 1, overlap, strips.shape[2]), dtype=np.uint8)
    _core.horizontal_seam_masks(strips, stride, horizontal)
    return vertical, horizontal


def seams_python(patches: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    vertical = ref.vertical_seam_masks(patches, stride)
    strips, _ = ref.compose_columns(patches, stride, vertical, None)
    return vertical, ref.horizontal_seam_masks(strips, stride)


def median_time(call: Callable[[], T], repeat: int) -> tuple[float, T]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", choices=["uniform", "smooth"], default="uniform")
    parser.add_argument("--repeat", type=int, default=7, help="runs of the C++ path (median)")
    parser.add_argument("--python-repeat", type=int, default=3, help="runs of the Python path")
    parser.add_argument("--skip-python", action="store_true", help="C++ only (for its peak RSS)")
    args = parser.parse_args()

    nr, nc, patch, stride = grid()
    shape = (LR_SHAPE[0] * SCALE, LR_SHAPE[1] * SCALE)
    patches = make_patches(args.field)
    vertical_count, horizontal_count = nr * (nc - 1), nr - 1
    print(
        f"{nr}x{nc} patches of {patch} px, stride {stride} (overlap {patch - stride}), "
        f"{args.field} field, output {shape[0]}x{shape[1]}: {vertical_count} vertical seams "
        f"({patch}x{patch - stride}), {horizontal_count} horizontal seams "
        f"({(nc - 1) * stride + patch}x{patch - stride})"
    )

    # The seams include the strips the horizontal ones are cut on (one compose_columns).
    rows: list[tuple[str, float, float | None]] = []
    cpp_seams, cpp_masks = median_time(lambda: seams_cpp(patches, stride), args.repeat)
    cpp_quilts = {
        method: median_time(
            partial(q.quilt, patches, stride, method=method, shape=shape), args.repeat
        )
        for method in q.METHODS
    }
    if args.skip_python:
        rows.append(("all seams (search + masks)", cpp_seams, None))
        rows.extend((f"quilt, {m}", t, None) for m, (t, _) in cpp_quilts.items())
    else:
        py_seams, py_masks = median_time(lambda: seams_python(patches, stride), args.python_repeat)
        for cpp_mask, py_mask in zip(cpp_masks, py_masks, strict=True):
            np.testing.assert_array_equal(cpp_mask, py_mask)
        rows.append(("all seams (search + masks)", cpp_seams, py_seams))
        for method, (cpp_time, image) in cpp_quilts.items():
            py_quilt = partial(
                q.quilt, patches, stride, method=method, shape=shape, backend="python"
            )
            py_time, py_image = median_time(py_quilt, args.python_repeat)
            np.testing.assert_allclose(image, py_image, rtol=0, atol=1e-15)
            rows.append((f"quilt, {method}", cpp_time, py_time))

    header = f"C++ (median of {args.repeat}) | Python (median of {args.python_repeat})"
    print(f"\n| stage | {header} | ratio |")
    print("|---|---|---|---|")
    for label, fast, slow in rows:
        python = f"{slow:.3f} s" if slow is not None else "—"
        ratio = f"{slow / fast:.0f}x" if slow is not None else ""
        print(f"| {label} | {fast:.3f} s | {python} | {ratio} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS (getrusage): {peak:.0f} MB")


if __name__ == "__main__":
    main()
