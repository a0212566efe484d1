"""Full-size quilting: all seams and the composition of a full femur, C++ against the twins.

Run each configuration in its own process so its peak RSS is its own:

    /usr/bin/time -v python benchmarks/scripts/quilt_fullsize.py --field uniform
    /usr/bin/time -v python benchmarks/scripts/quilt_fullsize.py --field smooth
    /usr/bin/time -v python benchmarks/scripts/quilt_fullsize.py --field femur
    /usr/bin/time -v python benchmarks/scripts/quilt_fullsize.py --field uniform --skip-python

The C++ and Python runs of a stage alternate, so that other jobs on the machine slow both alike.

The grid is reconstruct()'s: the 208x189 LR femur in 12-px windows with stride 8 (the last
window clamped inside the image would change nothing here) gives 26x24 windows, and the x10 HR
patches are 120 px with stride 80 (overlap 40) on a 2120x1960 canvas cropped to 2080x1890. The
patches are independent uniform noise (no two agree: the search settles most overlap pixels) or
one smooth field with independent noise in each patch (neighbouring network outputs), or the
bundled model's patches of the bundled femur, as reconstruct() quilts them (the patches of
windows outside the bone are zero: there the two sides of an overlap agree exactly).
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar
from unittest import mock

import numpy as np
import scipy.ndimage as ndi

from femsr import _kernels, dataset, io
from femsr import quilt as q
from femsr.demo import BUNDLED_FEMUR

T = TypeVar("T")

LR_SHAPE = (208, 189)
WINDOW, STEP, SCALE = 12, 8, 10


def grid() -> tuple[int, int, int, int]:
    nr, nc = (math.ceil((n - WINDOW) / STEP) + 1 for n in LR_SHAPE)
    return nr, nc, WINDOW * SCALE, STEP * SCALE


def femur_patches() -> np.ndarray:
    """The HR patches reconstruct() quilts for the bundled femur (bundled model, CPU)."""
    module = sys.modules["femsr.reconstruct"]
    lr = dataset.downscale_femur(io.load_femur(BUNDLED_FEMUR))
    if lr.density.shape != LR_SHAPE:
        raise SystemExit(f"the bundled femur is {lr.density.shape} at 500 um, not {LR_SHAPE}")
    with mock.patch.object(module, "quilt", wraps=module.quilt) as quilt:
        module.reconstruct(lr, device="cpu")
    return quilt.call_args.args[0].astype(np.float64)


def make_patches(field: str, seed: int = 0) -> np.ndarray:
    if field == "femur":
        return femur_patches()
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


def seams(patches: np.ndarray, stride: int, backend: str) -> tuple[np.ndarray, np.ndarray]:
    vertical = _kernels.vertical_seam_masks(patches, stride, backend)
    strips, _ = _kernels.compose_columns(patches, stride, vertical, None, False, backend)
    return vertical, _kernels.horizontal_seam_masks(strips, stride, backend)


def paired_medians(
    fast: Callable[[], T], slow: Callable[[], T], repeat: int, slow_repeat: int
) -> tuple[float, T, float | None, T | None]:
    """Median time and result of ``repeat`` runs of ``fast`` and of ``slow_repeat`` runs of ``slow``
    (none when 0), in alternation: the other jobs on the machine load both alike."""
    fast_times: list[float] = []
    slow_times: list[float] = []
    fast_result = slow_result = None
    rounds = max(slow_repeat, 1)
    for r in range(rounds):
        for _ in range(repeat // rounds + (r < repeat % rounds)):
            start = time.perf_counter()
            fast_result = fast()
            fast_times.append(time.perf_counter() - start)
        if r < slow_repeat:
            start = time.perf_counter()
            slow_result = slow()
            slow_times.append(time.perf_counter() - start)
    assert fast_result is not None
    slow_time = statistics.median(slow_times) if slow_times else None
    return statistics.median(fast_times), fast_result, slow_time, slow_result


def same_masks(cpp: tuple[np.ndarray, ...], python: tuple[np.ndarray, ...]) -> None:
    for cpp_mask, py_mask in zip(cpp, python, strict=True):
        np.testing.assert_array_equal(cpp_mask, py_mask)


def same_images(cpp: np.ndarray, python: np.ndarray) -> None:
    np.testing.assert_allclose(cpp, python, rtol=0, atol=1e-15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", choices=["uniform", "smooth", "femur"], default="uniform")
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
    stages: list[tuple[str, Callable[[], Any], Callable[[], Any], Callable[[Any, Any], None]]] = [
        (
            "all seams (search + masks)",
            partial(seams, patches, stride, "cpp"),
            partial(seams, patches, stride, "python"),
            same_masks,
        )
    ]
    for method in q.METHODS:
        quilt = partial(q.quilt, patches, stride, method=method, shape=shape)
        stages.append((f"quilt, {method}", quilt, partial(quilt, backend="python"), same_images))
    python_repeat = 0 if args.skip_python else args.python_repeat
    rows: list[tuple[str, float, float | None]] = []
    for label, fast, slow, same in stages:
        cpp_time, cpp_result, py_time, py_result = paired_medians(
            fast, slow, args.repeat, python_repeat
        )
        if py_result is not None:
            same(cpp_result, py_result)
        rows.append((label, cpp_time, py_time))

    header = f"C++ (median of {args.repeat}) | Python (median of {args.python_repeat})"
    print(f"\n| stage | {header} | ratio |")
    print("|---|---|---|---|")
    for label, fast_time, slow_time in rows:
        python = f"{slow_time:.3f} s" if slow_time is not None else "—"
        ratio = f"{slow_time / fast_time:.0f}x" if slow_time is not None else ""
        print(f"| {label} | {fast_time:.3f} s | {python} | {ratio} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS (getrusage): {peak:.0f} MB")


if __name__ == "__main__":
    main()
