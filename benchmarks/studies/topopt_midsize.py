"""A mid-size topology optimization: time per iteration and CG iterations per solve over a run.

    python benchmarks/studies/topopt_midsize.py --size 400 --iterations 100

A square block (``--size`` pixels a side, 50 µm pixels, E0 = 15 GPa) clamped along its bottom
edge carries three load cases on its top edge, like the femoral head under Carter's daily loads:
a central compression, an inclined compression off-centre, and a lateral shear (weights 6:3:1).
Density filter (rmin 3 px) and Heaviside projection with beta doubling from 1 to 16 every 20
iterations drive the design from gray to crisp struts, the phase where AMG-CG slows down. The
table shows every ``--every``-th iteration and a summary of CG iterations by beta.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from femsr import fem, topopt


def block_problem(n: int) -> tuple[np.ndarray, np.ndarray]:
    forces = np.zeros((3, n + 1, n + 1, 2))
    middle, quarter = slice(3 * n // 8, 5 * n // 8 + 1), slice(n // 2, 3 * n // 4 + 1)
    forces[0, 0, middle, 1] = -1000.0 / (middle.stop - middle.start)
    forces[1, 0, quarter, 0] = -350.0 / (quarter.stop - quarter.start)
    forces[1, 0, quarter, 1] = -700.0 / (quarter.stop - quarter.start)
    forces[2, 0, :, 0] = 300.0 / (n + 1)
    fixed = np.zeros((n + 1, n + 1, 2), dtype=bool)
    fixed[n] = True
    return forces, fixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--every", type=int, default=5, help="print every n-th iteration")
    parser.add_argument("--tol", type=float, default=1e-8, help="CG relative residual")
    parser.add_argument("--volfrac", type=float, default=0.3)
    args = parser.parse_args()
    forces, fixed = block_problem(args.size)
    rows: list[topopt.Record] = []

    def report(state: topopt.State) -> None:
        r = state.record
        rows.append(r)
        if r.iteration % args.every == 0 or r.iteration == 1:
            cg = "/".join(f"{n:4d}" for n in r.cg_iterations)
            print(
                f"{r.iteration:5d} {r.objective:12.5e} {r.mass:8.5f} {r.change:7.4f} "
                f"{r.beta:5g}  {cg}  {r.fe_seconds:7.2f} {r.seconds:7.2f}",
                flush=True,
            )

    print(f"block {args.size}x{args.size}, 3 load cases, volfrac {args.volfrac}, CG tol {args.tol}")
    print(" iter    objective     mass  change  beta  CG iterations    FE s  iter s")
    start = time.perf_counter()
    result = topopt.optimize(
        forces,
        fixed,
        volfrac=args.volfrac,
        rmin=3.0,
        weights=[6.0, 3.0, 1.0],
        projection=topopt.Projection(1.0, beta_max=16.0, beta_every=20),
        max_iter=args.iterations,
        material=fem.Material(E0=15e3, h=0.05),
        solver_options={"tol": args.tol},
        callback=report,
    )
    total = time.perf_counter() - start
    seconds = result.series("seconds")
    fe = result.series("fe_seconds")
    cg = result.series("cg_iterations")
    betas = result.series("beta")
    print(
        f"\n{result.iterations} iterations in {total:.0f} s ({result.reason}); "
        f"final objective {result.compliance:.5e}, mass {result.mass:.6f}, "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB"
    )
    print(
        f"per iteration: mean {seconds.mean():.2f} s (FE {fe.mean():.2f} s), "
        f"first {seconds[0]:.2f} s, last {seconds[-1]:.2f} s"
    )
    print(" beta  iterations  CG per solve: mean   max   FE s/iter")
    for beta in np.unique(betas):
        at = betas == beta
        mean, most = cg[at].mean(), cg[at].max()
        print(f"{beta:5g}  {at.sum():10d}  {mean:18.1f} {most:5d} {fe[at].mean():10.2f}")
    gray = np.mean((result.density > 0.05) & (result.density < 0.95))
    print(f"gray pixels (0.05 < density < 0.95) at the end: {gray:.1%}")


if __name__ == "__main__":
    main()
