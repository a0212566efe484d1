"""Where the gray comes from: the 100 µm stage of one femur under other settings.

Runs the 100 µm stages of ``generate.STAGES`` for a femur of the dataset from its 200 µm
result (``<dataset>/work/<name>/stage0.done.npz``), one ``topopt.optimize`` per projection
level of their β continuation, so that each level can have its own move limit and iteration
count (``--moves``, ``--iterations``: one value per level, β 2, 4, 8, 16, 32; by default the
stages' moves and 12 iterations); ``--penal``, ``--local-p``, ``--local-radius`` (mm),
``--local-above``, ``--rmin`` (pixels) and ``--noise`` replace the stages' SIMP exponent, p-norm
exponent, local-bound square, bound above the femur's volume fraction, filter radius and the
amplitude of the noise on the gray start (seeded by the femur's seed, as ``generate`` does).
Prints one line per iteration (objective, the local p-norm against its bound, the share of the
mask at intermediate density 0.1-0.9), then scores the result: gray, Tb.Th of the bone more
than 1 mm inside the outline (as trabecular_thickness.py) and the weighted compliance at SIMP
exponent 3, so runs with other exponents compare.

    python benchmarks/studies/gray_study.py femur_00 /tmp/gray/a --moves 0.05,0.05,0.02,0.02,0.02 \
        --penal 3 --local-p 16 --local-radius 0.6
"""

import argparse
import json
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

from femsr import evaluate, fem, generate, topopt
from femsr import femur as femur_module

LEVELS = (2.0, 4.0, 8.0, 16.0, 32.0)


def per_level(text: str, kind: type) -> list:
    values = [kind(v) for v in text.split(",")]
    if len(values) != len(LEVELS):
        raise argparse.ArgumentTypeError(f"expected {len(LEVELS)} comma-separated values")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="femur name in the manifest, e.g. femur_00")
    parser.add_argument("out", type=Path, help="folder for the result (density.npy)")
    parser.add_argument("--dataset", type=Path, default=Path("benchmarks/femurs"))
    stage = generate.STAGES[1]
    trabeculae = [s for s in generate.STAGES if s.pixel_size == stage.pixel_size]
    moves = [next(s.move for s in trabeculae if s.beta <= b <= s.beta_max) for b in LEVELS]
    parser.add_argument("--moves", type=lambda t: per_level(t, float), default=moves)
    parser.add_argument("--iterations", type=lambda t: per_level(t, int), default=[12] * 5)
    parser.add_argument("--penal", type=float, default=stage.penal)
    parser.add_argument("--local-p", type=float, default=stage.local_p)
    parser.add_argument("--local-radius", type=float, default=stage.local_radius)
    parser.add_argument("--local-above", type=float, default=stage.local_above)
    parser.add_argument("--rmin", type=float, default=stage.rmin)
    parser.add_argument("--noise", type=float, default=stage.noise)
    args = parser.parse_args()

    manifest = json.loads((args.dataset / generate.MANIFEST).read_text())
    entry = next(e for e in manifest["femurs"] if e["name"] == args.name)
    bone, volfrac = femur_module.sample(entry["seed"]), entry["volfrac"]
    coarse_stage = generate.STAGES[0]
    coarse, problem = bone.problem(coarse_stage.pixel_size), bone.problem(stage.pixel_size)
    with np.load(args.dataset / "work" / args.name / "stage0.done.npz") as saved:
        design = generate._initial(
            coarse_stage, stage, saved["design"], saved["density"], coarse.mask, problem.mask
        )
    if args.noise:
        design = generate._perturb(design, problem.mask, args.noise, [entry["seed"], 1])
    depth = ndi.distance_transform_edt(problem.mask) * problem.pixel_size
    alpha = min(1.0, volfrac + args.local_above)
    count = [0]

    def report(state: topopt.State) -> None:
        count[0] += 1
        r, rho = state.record, state.density
        gray = ((rho > 0.1) & (rho < 0.9))[problem.mask].mean()
        print(
            f"it {count[0]:3d}  beta {r.beta:g}  objective {r.objective:.1f}  local"
            f" {r.local_volume:.4f} (bound {alpha:.4f})  gray {100 * gray:.1f} %",
            flush=True,
        )

    for beta, move, iterations in zip(LEVELS, args.moves, args.iterations, strict=True):
        result = topopt.optimize(
            problem.forces,
            problem.fixed,
            mask=problem.mask,
            volfrac=volfrac,
            penal=args.penal,
            rmin=args.rmin,
            weights=problem.weights,
            max_iter=iterations,
            tol=0.0,
            beta=beta,
            beta_max=beta,
            move=move,
            initial=design,
            E0=generate.E0,
            h=problem.pixel_size,
            thickness=problem.thickness,
            solver_options=generate.SOLVER_OPTIONS,
            local_volfrac=alpha,
            local_radius=max(1, round(args.local_radius / problem.pixel_size)),
            local_p=args.local_p,
            local_mask=depth > stage.shell,
            callback=report,
        )
        design = result.design
    density = result.density
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "density.npy", density)

    gray = ((density > 0.1) & (density < 0.9))[problem.mask].mean()
    bone_phase = (density > 0.5) & (depth > 1.0)
    thickness = evaluate.local_thickness(density)[bone_phase] * problem.pixel_size
    u = fem.solve(
        density,
        problem.forces,
        problem.fixed,
        mask=problem.mask,
        E0=generate.E0,
        h=problem.pixel_size,
        thickness=problem.thickness,
        direct_below=problem.mask.size * 2,
    )
    compliance = float(np.asarray(problem.weights) @ np.einsum("kijd,kijd->k", problem.forces, u))
    print(
        f"{args.name}: gray {100 * gray:.1f} %, Tb.Th mean {thickness.mean():.2f} mm, p90"
        f" {np.quantile(thickness, 0.9):.2f} mm, compliance at penal 3 {compliance:.1f}"
    )


if __name__ == "__main__":
    main()
