"""Apparent stiffness of the three 10 mm ROIs at 50 µm (200x200 px each), C++ vs Python assembly.

    python benchmarks/studies/evaluate_timing.py [--repeat 3]

The ROIs are the femur phantom's (head, neck, intertrochanteric; ``Femur().rois(0.05)``); their
density is a seeded crisp trabecular-like pattern (smoothed anisotropic noise thresholded at
~35 % bone, the void at ``Emin = 1e-9 E0``), the hard case for a solver. Each call assembles the
region, factorizes its inner block once (SuperLU in nested-dissection order) and solves the three
unit macro-strains; the table splits the time into assembly and the rest, best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import scipy.ndimage as ndi

from femsr import evaluate, fem
from femsr.defaults import TISSUE_MODULUS
from femsr.femur import HR_PIXEL, Femur


def trabecular_density(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Crisp struts: noise smoothed more along one direction, thresholded at 65 %."""
    noise = np.random.default_rng(seed).standard_normal(shape)
    smooth = ndi.gaussian_filter(noise, sigma=(6.0, 2.0))
    return (smooth > np.quantile(smooth, 0.65)).astype(np.float64)


def best_of(repeat: int, call: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()

    rois = Femur().rois(HR_PIXEL)
    material = {"E0": TISSUE_MODULUS, "h": HR_PIXEL}
    print(f"{'ROI':<18} {'px':>8} {'backend':>8} {'assembly s':>11} {'total s':>8} {'E_x MPa':>9}")
    totals = {"cpp": 0.0, "python": 0.0}
    for seed, (name, (rows, cols)) in enumerate(rois.items()):
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        density = trabecular_density(shape, seed)
        results = {}
        for backend in ("cpp", "python"):
            options = {**material, "backend": backend}
            assembly, _ = best_of(args.repeat, partial(fem.assemble, density, **options))
            total, stiffness = best_of(
                args.repeat, partial(evaluate.apparent_stiffness, density, **options)
            )
            results[backend] = stiffness.matrix
            totals[backend] += total
            print(
                f"{name:<18} {shape[0]}x{shape[1]:<4} {backend:>8} {assembly:11.3f} {total:8.3f} "
                f"{stiffness.E_x:9.1f}"
            )
        difference = np.abs(results["cpp"] - results["python"]).max() / np.abs(results["cpp"]).max()
        print(f"{'':<18} cpp vs python: max relative difference {difference:.1e}")
    print(
        f"three ROIs: cpp {totals['cpp']:.2f} s, python {totals['python']:.2f} s "
        f"(python/cpp {totals['python'] / totals['cpp']:.2f})"
    )


if __name__ == "__main__":
    main()
