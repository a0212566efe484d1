"""The ``femsr`` command: one subcommand per stage of the pipeline."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np


def _fe(args: argparse.Namespace) -> int:
    """Solve the femur phantom's load cases on a density image and report the field."""
    from femsr import fem, femur

    bone = femur.Femur() if args.seed is None else femur.sample(args.seed)
    problem = bone.problem(args.pixel_size)
    density = np.where(problem.mask, args.density, 0.0)
    print(
        f"femur {problem.mask.shape[0]}x{problem.mask.shape[1]} px at {args.pixel_size} mm, "
        f"{int(problem.mask.sum()):,} elements, {len(problem.forces)} load cases",
        file=sys.stderr,
    )
    start = time.perf_counter()
    solver = fem.Solver(
        problem.fixed,
        mask=problem.mask,
        E0=args.E0,
        h=problem.pixel_size,
        thickness=problem.thickness,
    )
    u = solver.solve(density, problem.forces)
    seconds = time.perf_counter() - start
    stats = solver.stats
    print(
        f"solved in {seconds:.2f} s ({stats.method}; assembly {stats.assembly_seconds:.2f} s, "
        f"setup {stats.setup_seconds:.2f} s, CG iterations {stats.iterations})",
        file=sys.stderr,
    )
    for case, name in enumerate(problem.names):
        magnitude = np.linalg.norm(u[case], axis=-1)
        print(f"  {name:<20} max |u| = {magnitude.max():.4g} mm")
    if args.output:
        from femsr import io

        io.save_npz(args.output, displacement=u, density=density, mask=problem.mask)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="femsr",
        description="Super-resolution of proximal-femur bone images (500 µm -> 50 µm).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fe = commands.add_parser("fe", help="finite-element solve of the femur phantom's load cases")
    fe.add_argument("--pixel-size", type=float, default=0.5, help="pixel side in mm (0.05 = full)")
    fe.add_argument("--density", type=float, default=0.5, help="uniform density inside the femur")
    fe.add_argument("--E0", type=float, default=15e3, help="tissue modulus in MPa")
    fe.add_argument(
        "--seed", type=int, default=None, help="femur variant (default: the mean femur)"
    )
    fe.add_argument("--output", help="write the displacements to this .npz file")
    fe.set_defaults(run=_fe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ValueError, TypeError, OSError) as error:
        print(f"femsr {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"femsr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
