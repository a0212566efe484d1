"""How accurately a TO iteration must solve: GMG-CG at several tolerances against SuperLU.

A grown femur's crisp design is solved for its three load cases by GMG-CG from zero to each
relative residual ``tol``; printed are the seconds, CG iterations per case and, where the direct
solve fits (``--direct``), the relative error of the displacements and compliances. The design
is the final 50 µm density of a grown femur, or at ``--pixel-size 0.1`` the 100 µm stage's
result kept in its checkpoint folder (``benchmarks/femurs/work/<name>/stage1.done.npz``, left
by ``femsr generate``).

    OMP_NUM_THREADS=1 python benchmarks/studies/cg_tolerance.py --pixel-size 0.1 --direct
    OMP_NUM_THREADS=1 /usr/bin/time -v python benchmarks/studies/cg_tolerance.py --tol 1e-2 1e-3
    OMP_NUM_THREADS=1 /usr/bin/time -v python benchmarks/studies/cg_tolerance.py \\
        --drop-void 1e-3 --direct
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from femsr import fem, femur, io, topopt
from femsr.defaults import TISSUE_MODULUS

FEMURS = Path(__file__).parents[1] / "femurs"


def design(name: str, pixel_size: float) -> np.ndarray:
    if pixel_size == 0.05:
        return io.load_femur(FEMURS / f"{name}.npz").density
    with np.load(FEMURS / "work" / name / "stage1.done.npz") as saved:
        return saved["density"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--femur", default="femur_00")
    parser.add_argument("--pixel-size", type=float, choices=[0.05, 0.1], default=0.05)
    parser.add_argument("--tol", type=float, nargs="*", default=[1e-2, 1e-3, 1e-4, 1e-6])
    parser.add_argument("--degree", type=int, default=2, help="Chebyshev steps per smoothing")
    parser.add_argument("--direct", action="store_true", help="compare with SuperLU")
    parser.add_argument("--pardiso", action="store_true", help="time MKL PARDISO too")
    parser.add_argument(
        "--drop-void",
        type=float,
        help="leave out elements this void and next to no denser one, as topopt's drop_void",
    )
    args = parser.parse_args()

    entries = json.loads((FEMURS / "manifest.json").read_text())["femurs"]
    seed = next(e["seed"] for e in entries if e["name"] == args.femur)
    problem = femur.sample(seed).problem(args.pixel_size)
    density = design(args.femur, args.pixel_size)
    mask = problem.mask
    if args.drop_void is not None:
        mask = topopt.structure_model(
            density, problem.fixed, args.drop_void, forces=problem.forces, mask=mask
        )
    options = dict(mask=mask, E0=TISSUE_MODULUS, h=problem.pixel_size)

    def solve(**solver: object) -> tuple[np.ndarray, float, list[int]]:
        s = fem.Solver(problem.fixed, thickness=problem.thickness, **options, **solver)
        start = time.perf_counter()
        u = s.solve(density, problem.forces)
        return u, time.perf_counter() - start, s.stats.iterations

    def compliances(u: np.ndarray) -> np.ndarray:
        return np.einsum("kijd,kijd->k", problem.forces, u)

    print(
        f"{args.femur} at {args.pixel_size} mm, {density.shape}, {mask.sum()} elements", flush=True
    )
    exact = None
    if args.direct:
        exact, seconds, _ = solve(method="direct")
        print(f"direct (SuperLU): {seconds:.1f} s", flush=True)
    if args.pardiso:
        u, seconds, _ = solve(method="direct", direct_solver="pardiso")
        line = f"direct (PARDISO): {seconds:.1f} s"
        if exact is not None:
            line += f", max |difference| {np.abs(u - exact).max() / np.abs(exact).max():.1e}"
        print(line, flush=True)
    for tol in args.tol:
        u, seconds, iterations = solve(method="gmg", tol=tol, gmg_options={"degree": args.degree})
        line = f"tol {tol:g}: {seconds:.1f} s, CG iterations {iterations}"
        if exact is not None:
            du = [np.linalg.norm(u[k] - exact[k]) / np.linalg.norm(exact[k]) for k in range(3)]
            dc = np.abs(compliances(u) / compliances(exact) - 1)
            line += f", displacement error <= {max(du):.1e}, compliance error <= {dc.max():.1e}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
