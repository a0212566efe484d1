"""Growing the dataset's femurs: coarse-to-fine topology optimization of the phantom.

Each femur is a seeded variant of :class:`femsr.femur.Femur` (geometry and Carter's three load
cases) with its own bone mass (``volfrac``, a fraction of the mask). Its density grows by
:func:`femsr.topopt.optimize` (minimum cycle-weighted compliance under the mass, density filter,
Heaviside projection for crisp struts) in stages of decreasing pixel size: each stage starts
from the previous result, upsampled, so the full-size stages only refine and sharpen what the
coarse stages laid out. A stage writes checkpoints, so an interrupted run resumes where it stopped.

A dataset (:func:`femsr.manifest.manifest`) is 32 femurs by default, split by femur: 20 train,
4 validate (choose a model) and 8 test, the held-out ones spread over bone mass and neck-shaft
angle; the paper's protocol (7 to train, 4 to test) is a subset of it
(:func:`femsr.manifest.paper_protocol`). :func:`generate` writes
``manifest.json`` (what each femur is), one femur image per femur (:func:`femsr.io.save_femur`)
and a PNG preview, and skips femurs already written.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi
from tqdm import tqdm

from femsr import fem, io, topopt
from femsr import femur as femur_module
from femsr.defaults import TISSUE_MODULUS
from femsr.manifest import MANIFEST, VOLFRAC_RANGE, manifest
from femsr.resume import check_settings

# MANIFEST, VOLFRAC_RANGE and manifest live in femsr.manifest; they are femsr.generate's too,
# as the guides and scripts name them.
__all__ = [
    "MANIFEST",
    "SOLVER_OPTIONS",
    "STAGES",
    "VOLFRAC_RANGE",
    "Stage",
    "generate",
    "grow",
    "manifest",
    "preview",
    "sharpen",
]

logger = logging.getLogger(__name__)

# FE of the structure alone (topopt.structure_model: void elements next to no denser one leave
# the model). Direct solves by MKL PARDISO where pypardiso is installed (femsr[pardiso]), up to
# 4M unknowns, which takes in the 50 µm models of femurs whose trabecular bone fills the
# cortex (about 3M); GMG-CG, single-threaded, took minutes per solve of such a crisp lattice.
# SuperLU up to 2M otherwise. Beyond, GMG-CG stopped at a relative residual of 1e-4: a
# compliance within 0.4 % of exact solves' on a small test problem, whose design, near a
# bifurcation beside the solid cortex, ends 0.17 away (1e-8: 2e-6; tests/test_generate.py).
SOLVER_OPTIONS: dict[str, Any] = {"tol": 1e-4, "drop_void": 1e-3} | (
    {"direct_solver": "pardiso", "direct_below": 4_000_000}
    if importlib.util.find_spec("pypardiso") is not None
    else {"direct_solver": "superlu", "direct_below": 2_000_000}
)


@dataclass(frozen=True)
class Stage:
    """One resolution of the coarse-to-fine schedule.

    ``pixel_size`` in mm, at most ``iterations`` OC updates with move limit ``move``, filter radius
    ``rmin`` in pixels of this stage, projection sharpness from ``beta`` doubling up to ``beta_max``
    (``None``: no projection), each value for an equal share of the iterations. ``local_above``
    turns on the local volume constraint of :func:`femsr.topopt.optimize`: the mean density of every
    square of half side ``local_radius`` mm of the trabecular compartment stays below
    ``volfrac + local_above``. With ``local_strut`` (mm) set, the half side is instead
    ``local_strut / (2 (volfrac + local_above))``: a strut that thick fits across a square
    under the bound at every bone mass, so sparse bone keeps its struts and spaces them
    farther apart (under a fixed square a bound of 0.18 leaves room for struts of 0.16 mm at
    most: one pixel at 100 µm); ``local_p`` is the exponent of the
    p-norm that aggregates the squares (lower: nearer their mean, a weaker bound on the densest
    ones), ``penal`` the SIMP exponent. ``noise`` perturbs the design variables the stage
    starts from, where they are gray, by seeded uniform noise of that amplitude (weighted by
    ``4x(1 - x)``, so void and solid stay as they are). ``solve=False`` makes a stage
    without FE (:func:`sharpen`): the previous design upsampled, filtered and projected at
    ``beta_max``, the projection threshold set so the mass holds.
    """

    pixel_size: float
    iterations: int
    rmin: float = 1.5
    beta: float | None = None
    beta_max: float = 1.0
    move: float = 0.2
    local_above: float | None = None
    local_radius: float = 1.2
    local_strut: float | None = None
    local_p: float = 16.0
    penal: float = 3.0
    noise: float = 0.0
    solve: bool = True

    def options(self, volfrac: float, problem: femur_module.Problem) -> dict[str, Any]:
        """This stage's keywords of :func:`femsr.topopt.optimize` for bone mass ``volfrac`` on
        ``problem``'s grid: iterations, filter radius, move limit, the material (SIMP exponent,
        tissue modulus, pixel size, thickness), the projection and the local volume bound."""
        projection = None
        if self.beta is not None:
            projection = topopt.Projection(self.beta, self.beta_max, _beta_every(self))
        local = None
        if self.local_above is not None:
            bound = min(volfrac + self.local_above, 1.0)
            half = self.local_radius if self.local_strut is None else self.local_strut / (2 * bound)
            radius = max(1, round(half / problem.pixel_size))
            local = topopt.LocalVolume(bound, radius=radius, p=self.local_p)
        material = fem.Material(
            E0=TISSUE_MODULUS, penal=self.penal, h=problem.pixel_size, thickness=problem.thickness
        )
        return {
            "max_iter": self.iterations,
            "rmin": self.rmin,
            "move": self.move,
            "material": material,
            "projection": projection,
            "local_volume": local,
        }


# The trabecular bone grows inside the solid cortex under a tight local bound: every square (2.4 mm
# at 200 µm; at 100 and 50 µm as wide as lets a 0.3 mm strut cross it under the bound, 0.9 mm at
# volfrac 0.3 and 1.1 mm at 0.25) may hold at most volfrac + 0.02, so the mass cannot gather into a
# few members and leave centimetre voids, as it does under volfrac + 0.08 or more (sample(0): a 17
# mm void in the neck), and the trabeculae the loads call for fill every region. Under volfrac +
# 0.03 a femur at the floor of the bone mass (0.25, neck-shaft angle 121°) still opens 5.1-5.4 mm
# spaces in its neck and greater trochanter; under + 0.02, 3.3 mm. A fixed 0.9 mm square thins
# sparse bone's struts to one 50 µm pixel instead. Each OC step is checked on the bound itself
# (femsr.topopt); moves of 0.1 and less keep it. The layout at 200 µm (gray, no projection; its
# moves of 0.2 end its local densities near 0.4, which the finer stages bring back under the
# bound); the trabeculae at 100 µm, filter radius 0.2 mm, projection from β 2 to 32 with moves of
# 0.1, 0.05 and 0.02 so the layout breaks up before the projection hardens and the two-state swing
# of larger moves settles; seeded noise (amplitude 0.3, weighted 4x(1 - x)) on the 100 µm start
# breaks the uniform gray that the layout upsamples to, which OC would keep; SIMP exponent 5 with
# p-norm exponent 8 keeps the bound-binding places from staying gray; 8 iterations at 50 µm on the
# structure alone, then sharpened at the mass.
_TRABECULAE = Stage(
    0.1,
    36,
    rmin=2.0,
    beta=8.0,
    beta_max=32.0,
    move=0.02,
    local_above=0.02,
    local_strut=0.3,
    local_p=8.0,
    penal=5.0,
)
STAGES = (
    Stage(0.2, 20, beta=1.0, beta_max=1.0, move=0.2, local_above=0.02, local_radius=1.2),
    replace(_TRABECULAE, iterations=12, beta=2.0, beta_max=2.0, move=0.1, noise=0.3),
    replace(_TRABECULAE, iterations=12, beta=4.0, beta_max=4.0, move=0.05),
    _TRABECULAE,
    replace(_TRABECULAE, pixel_size=0.05, iterations=8, beta=32.0),
    Stage(0.05, 0, beta_max=64.0, solve=False),
)


def _upsample(design: np.ndarray, shape: tuple[int, int], mask: np.ndarray) -> np.ndarray:
    """The design of the coarse ``mask`` on a finer grid of ``shape``, nearest neighbour.

    Coarse pixels outside the mask first take the value of the nearest pixel inside, so that
    the finer outline (which reaches a little past the coarse one) starts with the material
    next to it, not void: the loads sit on that outline.
    """
    if not mask.all():
        _, (rows, cols) = ndi.distance_transform_edt(~mask, return_indices=True)
        design = design[rows, cols]
    fy, fx = (math.ceil(n / m) for n, m in zip(shape, design.shape, strict=True))
    up = np.repeat(np.repeat(design, fy, axis=0), fx, axis=1)
    up = np.pad(up, [(0, max(0, n - m)) for n, m in zip(shape, up.shape, strict=True)], "edge")
    return up[: shape[0], : shape[1]]


def sharpen(
    design: np.ndarray, mask: np.ndarray, volfrac: float, rmin: float, beta: float
) -> np.ndarray:
    """Filtered and projected design whose mass is ``volfrac`` of the mask, without FE.

    The design is filtered (:func:`femsr.topopt.density_filter`, radius ``rmin`` pixels) and
    projected at ``beta`` (:func:`femsr.topopt.project`); the projection threshold is found
    by bisection so that the mean density over the mask is ``volfrac`` (to 1e-9), which a
    fixed threshold of 0.5 would miss once the edges of thin struts are resampled.

    Examples
    --------
    >>> x = np.zeros((8, 8)); x[:, 3:5] = 0.8
    >>> density = sharpen(x, np.ones((8, 8), bool), 0.25, 1.5, 32.0)
    >>> round(float(density.mean()), 6)
    0.25
    """
    filtered = topopt.density_filter(design, rmin, mask=mask)[mask]
    target = volfrac * filtered.size
    low, high = 0.0, 1.0  # the mass falls as the threshold rises
    for _ in range(100):
        threshold = 0.5 * (low + high)
        projected = topopt.project(filtered, beta, threshold)[0]
        mass = float(projected.sum())
        if abs(mass - target) <= 1e-9 * target:
            break
        low, high = (threshold, high) if mass > target else (low, threshold)
    density = np.zeros(mask.shape)
    density[mask] = np.clip(projected, 0.0, 1.0)
    return density


def _optimize(
    problem: femur_module.Problem,
    stage: Stage,
    volfrac: float,
    initial: np.ndarray | None,
    checkpoint: Path | None,
    progress: bool,
    solver_options: dict[str, Any] | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One optimizing stage: its design, density and record."""
    options = SOLVER_OPTIONS if solver_options is None else solver_options
    checkpointing = None
    if checkpoint is not None:
        resume = checkpoint if checkpoint.exists() else None
        checkpointing = topopt.Checkpointing(checkpoint, resume=resume)
    result = topopt.optimize(
        problem.forces,
        problem.fixed,
        mask=trabecular(problem),
        solid=problem.cortex,
        volfrac=volfrac,
        weights=problem.weights,
        initial=initial,
        solver_options=options,
        progress=progress,
        checkpointing=checkpointing,
        **stage.options(volfrac, problem),
    )
    record = {
        "pixel_size": problem.pixel_size,
        "shape": list(result.density.shape),
        "iterations": result.iterations,
        "compliance": result.compliance,
        "mass": result.mass,
        "beta": result.beta,
        "local_volume": result.history[-1].local_volume if result.history else 0.0,
        "cg_iterations": int(sum(sum(r.cg_iterations) for r in result.history)),
        "direct_solver": options.get("direct_solver", "superlu"),
    }
    return result.design, result.density, record


def trabecular(problem: femur_module.Problem) -> np.ndarray:
    """The design domain: the bone's mask without its cortex and canal."""
    mask = problem.mask
    for part in (problem.cortex, problem.canal):
        if part is not None:
            mask = mask & ~part
    return mask


def _beta_every(stage: Stage) -> int:
    """Iterations per beta of the continuation: each value from ``beta`` to ``beta_max`` gets
    an equal share, so the stage's last iterations run at ``beta_max`` (a run that doubles beta
    only after its last iteration ends at the beta before, and grayer)."""
    if stage.beta is None or stage.beta_max <= stage.beta:
        return 1  # no continuation: any value does
    levels = round(math.log2(stage.beta_max / stage.beta)) + 1
    return max(1, stage.iterations // levels)


def grow(
    femur: femur_module.Femur,
    volfrac: float,
    *,
    stages: Sequence[Stage] = STAGES,
    checkpoint_dir: str | Path | None = None,
    progress: bool = False,
    solver_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Optimize one femur through ``stages``; its final density and a record per stage.

    Parameters
    ----------
    femur : Femur
        Geometry and load cases.
    volfrac : float
        Bone volume fraction of the trabecular compartment (the mask without its cortex and
        canal), in (0, 1); the cortex is solid, the canal void.
    stages : sequence of Stage
        Coarse to fine; each starts from the previous stage's result, upsampled.
    checkpoint_dir : path, optional
        Where each stage checkpoints (``stage<k>.npz``) and its result (``stage<k>.done.npz``)
        go; a rerun resumes from them.
    progress : bool
        Show a tqdm bar of each stage's iterations (:func:`femsr.topopt.optimize`). Each stage
        is logged (INFO, logger ``femsr.generate``) whatever ``progress``.
    solver_options : dict, optional
        Passed to :func:`femsr.topopt.optimize`; default :data:`SOLVER_OPTIONS`: the
        structure without its void, solved directly (PARDISO up to 4M unknowns where
        pypardiso is installed, else SuperLU up to 2M), by GMG-CG to a relative residual of
        1e-4 beyond.

    Returns
    -------
    density : ndarray
        Physical density at the last stage's pixel size.
    records : list of dict
        Per stage: pixel size, shape, iterations, compliance, mass, seconds.

    Examples
    --------
    >>> from femsr.femur import Femur
    >>> density, records = grow(Femur(), 0.4, stages=[Stage(4.0, 3), Stage(2.0, 2)])
    >>> density.shape, [r["iterations"] for r in records]
    ((52, 48), [3, 2])
    """
    if not 0 < volfrac < 1:
        raise ValueError(f"volfrac must lie in (0, 1), got {volfrac}")
    if not stages:
        raise ValueError("stages must not be empty")
    if stages[0].noise:
        raise ValueError("the first stage starts from a uniform design: it takes no noise")
    if any(not 0 <= stage.noise < 1 for stage in stages):
        raise ValueError(f"noise must lie in [0, 1), got {[stage.noise for stage in stages]}")
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    design = density = None
    coarse = np.zeros((0, 0), bool)  # the mask of the previous stage
    records = []
    for k, stage in enumerate(stages):
        problem = femur.problem(stage.pixel_size)
        domain = trabecular(problem)
        done = folder / f"stage{k}.done.npz" if folder is not None else None
        if done is not None and done.exists():
            logger.debug("stage %d/%d: done earlier (%s)", k + 1, len(stages), done)
            with np.load(done) as saved:
                design, density = saved["design"], saved["density"]
                records.append(json.loads(str(saved["record"])))
            coarse = domain
            continue
        initial = None
        if design is not None and density is not None:
            initial = _initial(stages[k - 1], stage, design, density, coarse, domain)
            if stage.noise:
                initial = _perturb(initial, domain, stage.noise, [femur.seed or 0, k])
        coarse = domain
        logger.info(
            "stage %d/%d at %g mm (%dx%d px): %s",
            k + 1,
            len(stages),
            stage.pixel_size,
            *domain.shape,
            f"{stage.iterations} iterations" if stage.solve else "sharpened, no FE",
        )
        start = time.perf_counter()
        if stage.solve:
            checkpoint = folder / f"stage{k}.npz" if folder is not None else None
            design, density, record = _optimize(
                problem, stage, volfrac, initial, checkpoint, progress, solver_options
            )
        else:
            if initial is None:
                raise ValueError("a stage without FE (solve=False) needs a stage before it")
            design = initial
            density = sharpen(initial, domain, volfrac, stage.rmin, stage.beta_max)
            if problem.cortex is not None:
                density[problem.cortex] = 1.0
            record = {
                "pixel_size": stage.pixel_size,
                "shape": list(density.shape),
                "iterations": 0,
                "compliance": None,
                "mass": float(density[domain].mean()),
                "beta": stage.beta_max,
            }
        record["seconds"] = time.perf_counter() - start
        records.append(record)
        if done is not None:
            io.save_npz(done, design=design, density=density, record=np.array(json.dumps(record)))
    assert density is not None  # stages is not empty
    return density, records


def _initial(
    before: Stage,
    stage: Stage,
    design: np.ndarray,
    density: np.ndarray,
    coarse: np.ndarray,
    mask: np.ndarray,
) -> np.ndarray:
    """The design variables ``stage`` starts from, after ``before`` ended at ``design`` and
    ``density`` on the ``coarse`` mask.

    Under the same physical filter radius the design variables carry over: the finer filter
    gives the coarse density again. Under another radius they would project to another
    structure (36x the compliance at 50 µm with half the radius), so the stage starts from
    the coarse density, through the inverse of its own projection.
    """
    if math.isclose(stage.rmin * stage.pixel_size, before.rmin * before.pixel_size):
        return np.where(mask, _upsample(design, mask.shape, coarse), 0.0)
    start = np.where(mask, _upsample(density, mask.shape, coarse), 0.0)
    if stage.solve and stage.beta is not None:
        return np.asarray(topopt.inverse_projection(start, stage.beta))
    return start


def _perturb(
    design: np.ndarray, mask: np.ndarray, amplitude: float, seed: Sequence[int]
) -> np.ndarray:
    """``design`` plus seeded uniform noise in ``±amplitude 4x(1 - x)``, clipped to [0, 1]."""
    noise = np.random.default_rng(seed).uniform(-1.0, 1.0, design.shape)
    perturbed = design + amplitude * noise * 4.0 * design * (1.0 - design)
    return np.where(mask, np.clip(perturbed, 0.0, 1.0), 0.0)


def grow_entry(
    out_dir: Path, entry: dict[str, Any], *, stages: Sequence[Stage] = STAGES, progress: bool
) -> Path:
    """Grow one femur of a manifest into ``out_dir`` (its ``.npz`` and ``.png``), resuming from
    its checkpoints in ``out_dir/work/<name>``; its file. Skips a femur already written (by
    another run on the folder)."""
    target = out_dir / entry["file"]
    if target.exists():
        return target
    logger.info("%s: volfrac %s, %s", entry["name"], entry["volfrac"], entry["split"])
    started = time.perf_counter()
    bone = femur_module.sample(entry["seed"])
    density, records = grow(
        bone,
        entry["volfrac"],
        stages=stages,
        checkpoint_dir=out_dir / "work" / entry["name"],
        progress=progress,
    )
    meta = {**entry, "stages": records}
    io.save_femur(target, io.FemurImage(density, stages[-1].pixel_size, bone, meta))
    preview(density, out_dir / f"{entry['name']}.png")
    logger.info(
        "%s: grown in %.0f s, wrote %s", entry["name"], time.perf_counter() - started, target
    )
    return target


def preview(density: np.ndarray, path: str | Path) -> None:
    """Write the density as an 8-bit grayscale PNG (bone white), atomically."""
    from PIL import Image

    pixels = np.round(np.clip(density, 0.0, 1.0) * 255).astype(np.uint8)
    with io.atomic_write(path) as stream:
        Image.fromarray(pixels).save(stream, format="PNG")


def _reuse_hint(existing: dict[str, Any], settings: dict[str, Any], out: Path) -> str:
    """How the stages two settings share can be kept: their checkpoints carry over."""
    old = existing.get("settings") or {}
    if any(old.get(key) != settings[key] for key in ("count", "test", "validation", "seed")):
        return ""
    shared = 0
    for before, now in zip(old.get("stages") or [], settings["stages"], strict=False):
        if before != now:
            break
        shared += 1
    if shared == 0:
        return ""
    done = "stage0.done.npz" if shared == 1 else f"stage[0-{shared - 1}].done.npz"
    return (
        f"; the first {shared} stage(s) are the same, so their results carry over: copy "
        f"{out}/work/<name>/{done} into <new folder>/work/<name>/"
    )


def generate(
    out_dir: str | Path,
    *,
    count: int = 32,
    test: int = 8,
    validation: int = 4,
    seed: int = 0,
    stages: Sequence[Stage] = STAGES,
    only: Sequence[str] | None = None,
    progress: bool = True,
    workers: int | None = None,
    scheduler: str | None = None,
) -> list[dict[str, Any]]:
    """Grow the dataset's femurs into ``out_dir``, resuming where an earlier run stopped.

    Writes ``manifest.json`` first (refusing to mix with a different existing one), then per
    femur ``<name>.npz`` (:func:`femsr.io.save_femur`) and ``<name>.png``. Femurs already
    written are skipped; an interrupted femur resumes from its checkpoints in
    ``out_dir/work/<name>``. ``only`` restricts the run to some names. ``progress`` shows tqdm
    bars of the femurs and of each stage's iterations; each femur and stage is logged (INFO,
    loggers ``femsr.generate`` and ``femsr.topopt``) whatever ``progress``.

    With ``workers`` (a local Dask cluster of that many single-threaded processes) or
    ``scheduler`` (the address of a running Dask scheduler, whose workers each grow a femur
    on one thread) the femurs grow in parallel, one task each (:mod:`femsr.cluster`); every
    worker must reach ``out_dir``. A femur's files and checkpoints are written atomically, so
    a killed worker or run loses only its unfinished stage: the same call again finishes it.
    The femurs are those of a serial run (one thread each, the same stages).

    Returns
    -------
    list of dict
        The manifest entries.
    """
    out = Path(out_dir)
    entries = manifest(count, test, validation, seed)
    settings = {
        "count": count,
        "test": test,
        "validation": validation,
        "seed": seed,
        "stages": [asdict(s) for s in stages],
    }
    listing = {"settings": settings, "femurs": entries}
    path = out / MANIFEST
    if path.exists():
        existing = json.loads(path.read_text())
        check_settings(
            existing.get("settings") or {},
            settings,
            source=str(path),
            remedy=f"use another folder or the same settings{_reuse_hint(existing, settings, out)}",
        )
    else:
        with io.atomic_write(path, "w") as stream:
            json.dump(listing, stream, indent=1)
    names = {entry["name"] for entry in entries}
    unknown = set(only or ()) - names
    if unknown:
        raise ValueError(
            f"unknown femur name(s) {sorted(unknown)}; the manifest has {sorted(names)}"
        )
    todo = [
        entry
        for entry in entries
        if not (only and entry["name"] not in only) and not (out / entry["file"]).exists()
    ]
    with tqdm(
        total=len(todo), desc="generate", unit="femur", dynamic_ncols=True, disable=not progress
    ) as bar:
        if workers is None and scheduler is None:
            for entry in todo:
                bar.set_postfix_str(entry["name"])
                grow_entry(out, entry, stages=stages, progress=progress)
                bar.update()
        else:
            from femsr import cluster

            with cluster.client(workers, scheduler=scheduler) as dask_client:
                cluster.run(
                    dask_client,
                    partial(grow_entry, out, stages=stages, progress=False),
                    todo,
                    threads=1,
                    on_done=lambda entry, _: bar.update(),
                )
    return entries
