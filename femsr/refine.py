"""Refinement of a reconstruction by topology optimization at the bone mass of every LR pixel.

The synthetic femurs are grown by minimizing their compliance under their load cases
(:mod:`femsr.generate`); a reconstruction is not such an optimum: struts the network misplaces,
thins or breaks carry less, and nearly every ROI comes out too soft, after the crisp redrawing
too (:mod:`femsr.crisp`). :func:`refine` runs a few optimality-criteria iterations of the same
problem on the reconstruction, at the HR pixel size: minimum weighted compliance of the femur's
load cases, SIMP exponent 3, the top88 sensitivity filter, each ``scale`` x ``scale`` block held
at the bone mass of its LR pixel (:class:`femsr.topopt.BlockMass`): bone moves only inside its
block, to where the loads call for it. The result is grey; :func:`redraw`
redraws it crisp, as :func:`femsr.reconstruct` does with ``refine``.

What it assumes: that the bone was shaped by the load cases it is given, as the phantom's femurs
were, and as Wolff's law says of real bone only approximately.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from femsr import fem, generate, topopt
from femsr.checks import check_density, check_int
from femsr.crisp import draw_struts
from femsr.defaults import BLURRY_FINE_PIXEL_MAX, DEBLURRED_MODEL_MAX_FWHM
from femsr.femur import Problem

__all__ = [
    "BLURRY_UNAVERAGED_ITERATIONS",
    "DEBLURRED_DENSITY_WEIGHT",
    "DEBLURRED_ITERATIONS",
    "DEBLURRED_REFINEMENT_MIN_FWHM",
    "DENSITY_WEIGHT",
    "ITERATIONS",
    "MOVE",
    "RMIN",
    "SOLVER_OPTIONS",
    "blur_block",
    "blurry_scan",
    "redraw",
    "refine",
    "settings",
]

# Chosen on the validation femurs (benchmarks/RESULTS.md, "Refinement by topology optimization").
ITERATIONS = 8
MOVE = 0.1
RMIN = 2.0
# The crisp redrawing's density weight (femsr.crisp.draw_struts) for a refined density: its
# density, not the network's blur, says where the loads want bone, so it counts for more than in
# femsr.crisp.DENSITY_WEIGHT; at 2 the dense heads came out soft in shear (validation: head E_xy
# 18 % too soft, 9 % at 5), above 5 the necks too stiff.
DENSITY_WEIGHT = 5.0
# A scan deblurred by DEBLURRED_REFINEMENT_MIN_FWHM or more starts the refinement from bone less
# like the femur's than a block mean's, which takes more iterations and a redrawing that trusts
# the refined density more: on the validation femurs' slices (benchmarks/RESULTS.md, "Scans in"),
# 12 iterations at weight 7 erred 106 and 185 % (sum of the nine mean |errors|) at FWHM 0.7 and
# 1.0 mm, against 137 and 220 % at 8 and 5, the least sum of the two of those tried (4-16
# iterations, weights 3, 5, 7). At FWHM 0.5 mm 8 and 5 erred less; the threshold lies midway.
DEBLURRED_ITERATIONS = 12
DEBLURRED_DENSITY_WEIGHT = 7.0
DEBLURRED_REFINEMENT_MIN_FWHM = 0.6
# Without test-time averaging, a scan deblurred by DEBLURRED_MODEL_MAX_FWHM or more (blurry_scan)
# from pixels finer than BLURRY_FINE_PIXEL_MAX mm grows too stiff in 12 iterations. Validation
# femurs' slices at FWHM 1.0 mm, unaveraged, sums after 8 / 10 / 12 at weight 7: 171 / 184 /
# 193 % from 0.3 mm pixels, 190 / 208 / 221 % from 0.5 mm, 209 / 205 / 212 % from 0.6 mm, and
# 281 / 213 / 186 % from 0.7 mm, whose resampling leaves less for the refinement to build on.
BLURRY_UNAVERAGED_ITERATIONS = 8

# The growth's solver options, but with PARDISO direct up to 6M unknowns: the network's grey
# result (a scan model's above all, whose faint bone fills the whole outline) leaves little void
# for drop_void to take out, so the 50 µm model is nearly the femur's whole outline, 4.1M unknowns
# for femur_06 of benchmarks/femurs, where GMG-CG took 191 s an iteration and PARDISO 25 s (peak
# 9.2 GB on a 2-core x86_64 VM).
SOLVER_OPTIONS: dict[str, Any] = generate.SOLVER_OPTIONS | (
    {"direct_below": 6_000_000} if importlib.util.find_spec("pypardiso") is not None else {}
)


def refine(
    density: np.ndarray,
    mass: np.ndarray,
    problem: Problem,
    *,
    iterations: int = ITERATIONS,
    block: int = 1,
    move: float = MOVE,
    rmin: float = RMIN,
    progress: bool = False,
    solver_options: dict[str, object] | None = None,
    callback: Callable[[topopt.State], bool | None] | None = None,
) -> np.ndarray:
    """``density`` after ``iterations`` OC updates of its femur's problem, block masses held.

    Each block of ``block`` x ``block`` LR pixels is held at their mean mass, so a blurred
    image's masses, right only over the blur's width, bind no finer than that
    (:func:`blur_block`).

    Parameters
    ----------
    density : ndarray, shape (ny, nx)
        HR density in [0, 1] (e.g. :func:`femsr.reconstruct.reconstruct`'s grey result), the
        starting design.
    mass : ndarray, shape (ny / scale, nx / scale)
        Mean density of each ``scale`` x ``scale`` block in [0, 1]: the LR image.
    problem : femsr.femur.Problem
        The femur at the HR pixel size (``femur.problem(hr_pixel)``): its mask is the design
        domain, its load cases the objective. Its grid may be smaller than ``density``'s (a
        reconstruction covers whole LR pixels); the rest is void.
    iterations : int
        OC updates, >= 0 (0 gives the starting design back, within the mask, at the blocks'
        masses where the move limit allowed).
    block : int
        LR pixels along a side of a block whose mass is held, >= 1 (those at the bottom and
        right edges cut).
    move : float
        OC move limit in (0, 1].
    rmin : float
        Sensitivity filter radius (HR pixels).
    progress : bool
        Show a tqdm bar of the iterations (:func:`femsr.topopt.optimize`).
    solver_options : dict, optional
        Of :func:`femsr.topopt.optimize`; default :data:`SOLVER_OPTIONS`.
    callback : callable, optional
        Called after every iteration with its :class:`femsr.topopt.State` (whose ``design`` is
        the refined density so far); returning True stops the refinement there.

    Returns
    -------
    ndarray of float32, shape (ny, nx)
        The refined density, grey, each block at its LR pixels' mass where the mask allows.

    Raises
    ------
    ValueError
        If the shapes do not fit (``density`` not ``scale`` times ``mass``, the problem's grid
        larger than ``density``), a value is out of range, or no element of ``density`` of at
        least 0.1 touches the problem's fixed nodes (the femur held by void).
    """
    density = check_density(density)
    mass = check_density(mass, "mass")
    iterations = check_int("iterations", iterations, 0)
    block = check_int("block", block, 1)
    ny, nx = density.shape
    scale = ny // mass.shape[0] if mass.shape[0] else 0
    if scale < 1 or (ny, nx) != (scale * mass.shape[0], scale * mass.shape[1]):
        raise ValueError(
            f"density must be a whole multiple of mass's grid {mass.shape}, got {density.shape}"
        )
    py, px = problem.mask.shape
    if py > ny or px > nx:
        raise ValueError(f"the problem's grid {(py, px)} is larger than density's {(ny, nx)}")
    design = np.zeros((ny, nx), bool)
    design[:py, :px] = problem.mask
    forces = np.zeros((problem.forces.shape[0], ny + 1, nx + 1, 2))
    forces[:, : py + 1, : px + 1] = problem.forces
    fixed = np.zeros((ny + 1, nx + 1, 2), bool)
    fixed[: py + 1, : px + 1] = problem.fixed
    start = np.where(design, density, 0.0)
    _check_held(start, fixed)
    material = fem.Material(
        E0=generate.TISSUE_MODULUS, h=problem.pixel_size, thickness=problem.thickness
    )
    result = topopt.optimize(
        forces,
        fixed,
        mask=design,
        rmin=rmin,
        filter="sensitivity",
        weights=problem.weights,
        max_iter=iterations,
        tol=0.0,
        move=move,
        material=material,
        block_mass=topopt.BlockMass(_pooled(mass, block), scale * block),
        initial=start,
        solver_options=SOLVER_OPTIONS if solver_options is None else solver_options,
        progress=progress,
        callback=callback,
        final_solve=False,
    )
    return result.density.astype(np.float32)


def _check_held(density: np.ndarray, fixed: np.ndarray) -> None:
    """Raise if no element of ``density`` of at least 0.1 (by SIMP 1e-3 of the tissue's
    modulus, a million times the void's) touches a fixed node: the femur would hang on void.
    Refined so, CT slices of benchmarks/femurs cut above the box's bottom edge had their struts
    and cortex turned to speckle; :func:`femsr.scan.lr_image` continues such a shaft."""
    if not (fixed.any(axis=-1) & fem._node_mask(density >= 0.1)).any():
        raise ValueError(
            "no bone (density >= 0.1) touches the femur's fixed edge, the shaft's cut at the "
            "bottom of the grid: the image must show the shaft down to there"
        )


def redraw(
    density: np.ndarray,
    mass: np.ndarray,
    block: int = 1,
    density_weight: float = DENSITY_WEIGHT,
) -> np.ndarray:
    """A refined ``density`` redrawn crisp, each block of ``block`` x ``block`` pixels of
    ``mass`` at their mean bone mass: :func:`femsr.crisp.draw_struts` with ``density_weight``,
    ``density``'s rows over ``mass``'s pixels to a pixel."""
    factor = len(density) // max(len(mass), 1)
    block = check_int("block", block, 1)
    return draw_struts(
        density, factor * block, mass=_pooled(mass, block), density_weight=density_weight
    )


def settings(
    psf_fwhm: float | None, *, tta: bool = False, scan_pixel: float | None = None
) -> tuple[int, float]:
    """The refinement's iterations and the redrawing's density weight for an image deblurred by
    a point-spread function ``psf_fwhm`` mm wide (None: a block mean, or a scan not deblurred),
    reconstructed with test-time averaging (``tta``) or without, from a scan of ``scan_pixel``
    mm pixels (None: unknown, taken as coarse).

    >>> settings(None), settings(0.5), settings(0.7), settings(1.0)
    ((8, 5.0), (8, 5.0), (12, 7.0), (12, 7.0))
    >>> settings(1.0, scan_pixel=0.5), settings(1.0, tta=True, scan_pixel=0.5)
    ((8, 7.0), (12, 7.0))
    """
    fine = scan_pixel is not None and scan_pixel < BLURRY_FINE_PIXEL_MAX
    if fine and not tta and blurry_scan(psf_fwhm):
        return BLURRY_UNAVERAGED_ITERATIONS, DEBLURRED_DENSITY_WEIGHT
    if psf_fwhm is not None and psf_fwhm >= DEBLURRED_REFINEMENT_MIN_FWHM:
        return DEBLURRED_ITERATIONS, DEBLURRED_DENSITY_WEIGHT
    return ITERATIONS, DENSITY_WEIGHT


def blurry_scan(psf_fwhm: float | None) -> bool:
    """Whether an image deblurred by a point-spread function ``psf_fwhm`` mm wide (None: not
    deblurred) was deblurred by :data:`femsr.defaults.DEBLURRED_MODEL_MAX_FWHM` or more, where
    the Wiener filter restores little: :func:`femsr.reconstruct` takes the block-mean model for
    it.

    >>> blurry_scan(None), blurry_scan(0.7), blurry_scan(1.0)
    (False, False, True)
    """
    return psf_fwhm is not None and psf_fwhm >= DEBLURRED_MODEL_MAX_FWHM


def blur_block(psf_fwhm: float | None, pixel_size: float) -> int:
    """LR pixels along a side of the blocks whose bone mass a refinement holds, for an image of
    ``pixel_size`` mm blurred by a point-spread function ``psf_fwhm`` mm wide (None: a block
    mean, each pixel exact): as wide as the blur, at least one pixel.

    >>> blur_block(None, 0.5), blur_block(0.7, 0.5), blur_block(1.0, 0.5)
    (1, 1, 2)
    """
    return 1 if psf_fwhm is None else max(1, round(psf_fwhm / pixel_size))


def _pooled(mass: np.ndarray, block: int) -> np.ndarray:
    """The mean of each ``block`` x ``block`` group of pixels, those at the edges cut."""
    if block == 1:
        return mass
    return topopt.block_sums(mass, block) / topopt.block_sums(np.ones_like(mass), block)
