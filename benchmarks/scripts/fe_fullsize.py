"""Full-size grid FE: assembly, preconditioner setup, a three-case solve and peak memory.

Run each configuration in its own process so its peak RSS is its own:

    /usr/bin/time -v python benchmarks/scripts/fe_fullsize.py --mask box
    /usr/bin/time -v python benchmarks/scripts/fe_fullsize.py --mask femur
    /usr/bin/time -v python benchmarks/scripts/fe_fullsize.py --mask box --stage python-assembly
    /usr/bin/time -v python benchmarks/scripts/fe_fullsize.py --mask femur --method amg

The density is a smooth gray field (the easy case for AMG; crisp designs are measured by the
topology-optimization benchmarks). Loads: three cases on the top of the box (or the femur's own
load cases), the bottom edge clamped.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import scipy.ndimage as ndi

from femsr import fem

FULL_SHAPE = (2080, 1883)
PIXEL_MM = 0.05


def gray_density(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    noise = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 8.0)
    return np.clip(0.5 + noise / (4 * noise.std()), 0.05, 1.0)


def box_problem(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    ny, nx = shape
    mask = np.ones(shape, dtype=bool)
    fixed = np.zeros((ny + 1, nx + 1, 2), dtype=bool)
    fixed[ny] = True
    forces = np.zeros((3, ny + 1, nx + 1, 2))
    forces[0, 0, :, 1] = -1000.0 / (nx + 1)  # compression
    forces[1, 0, :, 0] = 300.0 / (nx + 1)  # shear
    forces[2, 0, : nx // 3, 1] = -1000.0 / (nx // 3)  # off-centre compression
    return mask, forces, fixed, 1.0


def femur_problem(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    from femsr import femur

    problem = femur.Femur().problem(PIXEL_MM)
    if problem.mask.shape != shape:
        raise SystemExit(f"the femur grid is {problem.mask.shape}, not {shape}")
    return problem.mask, problem.forces, problem.fixed, problem.thickness


def timed(label: str, call, rows: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = call()
    rows.append((label, f"{time.perf_counter() - start:.2f} s"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mask", choices=["box", "femur"], default="box")
    parser.add_argument("--stage", choices=["solve", "python-assembly"], default="solve")
    parser.add_argument("--shape", type=int, nargs=2, default=FULL_SHAPE)
    parser.add_argument("--tol", type=float, default=1e-8)
    parser.add_argument("--method", choices=["gmg", "amg"], default="gmg")
    args = parser.parse_args()
    shape = tuple(args.shape)
    mask, forces, fixed, thickness = (box_problem if args.mask == "box" else femur_problem)(shape)
    density = np.where(mask, gray_density(shape), 0.0)
    material = dict(E0=15e3, nu=0.3, h=PIXEL_MM, thickness=thickness)
    rows: list[tuple[str, str]] = []
    rows.append(("active elements", f"{int(mask.sum()):,} of {mask.size:,}"))

    if args.stage == "python-assembly":
        matrix = timed(
            "python assembly (top88 COO)",
            lambda: fem.assemble(density, mask=mask, backend="python", **material),
            rows,
        )
    else:
        timed(
            "cpp assembly, cold (pattern + values)",
            lambda: fem.assemble(density, mask=mask, **material),
            rows,
        )
        matrix = timed(
            "cpp assembly, warm (values)",
            lambda: fem.assemble(density, mask=mask, **material),
            rows,
        )
        solver = timed(
            "solver setup (mask, supports, pattern)",
            lambda: fem.Solver(fixed, mask=mask, tol=args.tol, method=args.method, **material),
            rows,
        )
        timed(
            f"solve, 3 load cases ({args.method} setup + CG)",
            lambda: solver.solve(density, forces),
            rows,
        )
        stats = solver.stats
        rows.append(("  of which setup", f"{stats.setup_seconds:.2f} s"))
        rows.append(("  of which CG", f"{stats.solve_seconds:.2f} s"))
        rows.append(("CG iterations per case", ", ".join(map(str, stats.iterations))))
        rows.append(("unknowns", f"{solver.nunknowns:,}"))
        timed("solve again, warm start", lambda: solver.solve(density, forces), rows)
        rows.append(("  CG iterations per case", ", ".join(map(str, solver.stats.iterations))))
    rows.append(("matrix nonzeros", f"{matrix.nnz:,}"))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rows.append(("peak RSS", f"{peak_gb:.2f} GB"))
    print(f"\nfull-size FE, {args.mask} {shape[0]}x{shape[1]}, {args.stage}, {args.method}")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


if __name__ == "__main__":
    main()
