"""What warm-starting CG buys across TO iterations: the same density sequence solved warm and cold.

A TO run of the mean femur (local volume bound, as in ``generate.STAGES``) records its
densities; each is then solved by GMG-CG to 1e-6 twice: starting from the previous solution
(what ``fem.Solver`` does) and from zero. Prints CG iterations and seconds per TO iteration.

    OMP_NUM_THREADS=1 python benchmarks/studies/warm_start.py [--pixel-size 0.2] [--iterations 12]
"""

import argparse
import time

import numpy as np
import scipy.ndimage as ndi

from femsr import fem, femur, topopt
from femsr.defaults import TISSUE_MODULUS


def densities(problem, iterations, pixel_size):
    """The densities a TO run analyses, one per iteration."""
    seen = []
    inside = ndi.distance_transform_edt(problem.mask) * pixel_size
    topopt.optimize(
        problem.forces,
        problem.fixed,
        mask=problem.mask,
        volfrac=0.35,
        weights=problem.weights,
        max_iter=iterations,
        move=0.1,
        projection=topopt.Projection(1.0, beta_max=8.0, beta_every=max(1, iterations // 4)),
        material=fem.Material(E0=TISSUE_MODULUS, h=pixel_size, thickness=problem.thickness),
        local_volume=topopt.LocalVolume(
            0.6, radius=max(1, round(1.2 / pixel_size)), mask=inside > 1.0
        ),
        callback=lambda state: seen.append(state.density.copy()),
    )
    return seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixel-size", type=float, default=0.2)
    parser.add_argument("--iterations", type=int, default=12)
    args = parser.parse_args()
    problem = femur.Femur().problem(args.pixel_size)
    sequence = densities(problem, args.iterations, args.pixel_size)
    options = dict(
        mask=problem.mask,
        E0=TISSUE_MODULUS,
        h=args.pixel_size,
        thickness=problem.thickness,
        method="gmg",
        tol=1e-6,
    )
    warm = fem.Solver(problem.fixed, **options)
    print(f"{problem.mask.shape}, {warm.nunknowns:,} unknowns, GMG-CG to 1e-6, 3 cases")
    print(f"{'TO it':>5} {'warm CG it':>12} {'warm s':>7} {'cold CG it':>12} {'cold s':>7}")
    totals = np.zeros(4)
    for k, density in enumerate(sequence, 1):
        start = time.perf_counter()
        warm.solve(density, problem.forces)
        warm_seconds = time.perf_counter() - start
        cold = fem.Solver(problem.fixed, **options)
        start = time.perf_counter()
        cold.solve(density, problem.forces)
        cold_seconds = time.perf_counter() - start
        row = (sum(warm.stats.iterations), warm_seconds, sum(cold.stats.iterations), cold_seconds)
        if k > 1:  # the first solve is cold either way
            totals += row
        print(f"{k:5d} {row[0]:12d} {row[1]:7.2f} {row[2]:12d} {row[3]:7.2f}")
    print(
        f"iterations 2-{len(sequence)}: warm {int(totals[0])} CG iterations in {totals[1]:.1f} s, "
        f"cold {int(totals[2])} in {totals[3]:.1f} s ({totals[3] / totals[1]:.2f}x)"
    )


if __name__ == "__main__":
    main()
