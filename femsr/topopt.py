"""Topology optimization of pixel-grid structures: SIMP, cone filters, Heaviside projection, OC.

:func:`optimize` minimizes the weighted sum of compliances ``Σ wᵢ cᵢ`` of one or more load cases
over the element densities of a mask, under a total-mass constraint, as in Andreassen et al.
(2011), "Efficient topology optimization in MATLAB using 88 lines of code" (top88):

* **Material**: modified SIMP, ``E = Emin + rho^penal (E0 - Emin)`` (:class:`femsr.fem.Material`).
* **Design variables** ``x``: one per mask pixel, in [0, 1]; pixels outside the mask are not
  design variables and keep density 0.
* **Filter** (radius ``rmin`` in pixels, cone weights ``max(0, rmin - d)``, neighbourhoods cut
  to the mask and renormalized): ``"density"`` filters the design, ``rho~ = F x`` (Bruns &
  Tortorelli 2001), with sensitivities carried back by ``Fᵀ``; ``"sensitivity"`` is top88's
  heuristic ``dc <- F(x·dc) / max(1e-3, x)`` with ``rho~ = x`` (Sigmund 1997).
* **Projection** (optional, a :class:`Projection`): the smoothed Heaviside of Wang, Lazarov &
  Sigmund (2011), ``rho = P(rho~)`` with threshold ``η`` (default 0.5), for crisp 0/1 designs;
  ``β`` doubles every ``beta_every`` iterations, or as soon as the design settles, up to
  ``beta_max`` (top88's continuation rule).
* **Mass constraint**: ``Σ rho`` over the mask = ``volfrac * (number of mask pixels)``, for
  the physical density ``rho`` the FE model sees, met to round-off at every update.
* **Local volume constraint** (optional, a :class:`LocalVolume`): the local densities bounded
  as in Wu et al. (2018), for bone-like porous designs.
* **Block masses** (optional, a :class:`BlockMass`, instead of the total mass): each square
  block of pixels holds a given mass, one multiplier per block; a low-resolution image of the
  design fixes its high-resolution design's mass where it lies (:mod:`femsr.refine`).
* **Update**: optimality criteria, ``x <- clamp(x (-∂c/∂x / (λ ∂m/∂x))^damping)`` within the
  move limit, the multiplier ``λ`` found by a bracketed root search on the mass.
* **Stop**: when no variable changed by more than ``tol`` in an update (at the final ``β``),
  or after ``max_iter`` iterations, or when the callback says so.

Long runs show a tqdm progress bar, log every iteration's numbers (``logging`` DEBUG records of
the ``femsr.topopt`` logger), call a callback every iteration, and write checkpoints from which
:func:`optimize` resumes exactly where it stopped (a :class:`Checkpointing`).

Every compiled kernel (filter, projection, OC update) has a numpy twin in
:mod:`femsr.reference.topopt`, selected by ``backend="python"``, which also selects the numpy
paths of the FE assembly and element energies. The kernels live in :mod:`femsr._topopt_kernels`
and are re-exported here. The rest stays one module past 600 lines: the option records, the
problem (the chain rule from design variables to compliance), the checkpoints and the loop share
the settings record that a checkpoint stores and the state it restores, and change together.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage as ndi
from tqdm import tqdm

from femsr import fem
from femsr._topopt_kernels import (
    ConeFilter,
    LocalBound,
    block_oc_step,
    block_sums,
    check_image,
    check_local,
    check_projection,
    check_rmin,
    check_step,
    check_unit,
    density_filter,
    inverse_projection,
    local_density,
    oc_step,
    oc_update,
    project,
)
from femsr.checks import check_backend, check_finite_array, check_fixed, check_mask
from femsr.io import atomic_write, read_npz
from femsr.resume import check_settings

__all__ = [
    "FILTERS",
    "BlockMass",
    "Checkpointing",
    "LocalVolume",
    "OptimizeResult",
    "Projection",
    "Record",
    "State",
    "density_filter",
    "inverse_projection",
    "local_density",
    "oc_update",
    "optimize",
    "project",
    "structure_model",
]

logger = logging.getLogger(__name__)

FILTERS = ("density", "sensitivity")
_CHECKPOINT_FORMAT = "femsr.topopt.checkpoint/2"
# The bisection pins the local-volume multiplier down to this factor.
_LOCAL_PRECISION = 1.01
# The largest ratio kappa tried, over the one that weighs both sensitivities alike: beyond it
# the mass term underflows (the OC search lost the mass at 4**60) and the step changes no more.
_LOCAL_STRONGEST = 4.0**10
_SOLVER_OPTIONS = (
    "tol",
    "maxiter",
    "direct_below",
    "method",
    "rebuild_ratio",
    "direct_solver",
    "drop_void",
)
# Leaving the void out of the solve pays when it removes at least a fifth of the elements.
_DROP_WORTH = 0.8


# ---------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Projection:
    """Heaviside projection of the filtered density and its continuation, for :func:`optimize`.

    The smoothed Heaviside of Wang, Lazarov & Sigmund (2011) (:func:`project`) with threshold
    ``η``, for crisp 0/1 designs; it needs the density filter. ``β`` starts at ``beta`` and
    doubles every ``beta_every`` iterations, or as soon as the design settles, up to
    ``beta_max`` (top88's continuation rule).

    Parameters
    ----------
    beta : float
        Starting sharpness ``β > 0``.
    beta_max : float
        Cap of the continuation, at least ``beta``; ``β`` doubles up to it.
    beta_every : int
        Iterations at one ``β`` before it doubles (sooner if the design has settled).
    threshold : float
        Projection threshold ``η`` in [0, 1].

    Raises
    ------
    ValueError
        If a value is outside its range; the message names it.

    Examples
    --------
    >>> Projection(1.0, beta_max=16.0, beta_every=20)
    Projection(beta=1.0, beta_max=16.0, beta_every=20, threshold=0.5)
    """

    beta: float
    beta_max: float = 32.0
    beta_every: int = 50
    threshold: float = 0.5

    def __post_init__(self) -> None:
        check_projection(self.beta, self.threshold)
        if not self.beta_max >= self.beta:
            raise ValueError(f"beta_max must be at least beta={self.beta}, got {self.beta_max}")
        if not (isinstance(self.beta_every, int) and self.beta_every >= 1):
            raise ValueError(f"beta_every must be a positive integer, got {self.beta_every!r}")
        for name in ("beta", "beta_max", "threshold"):
            object.__setattr__(self, name, float(getattr(self, name)))  # frozen: set once, here


# Stands for no projection in the checkpoint's settings (which hold its defaults then).
_NO_PROJECTION = Projection(1.0)


@dataclass(frozen=True, eq=False)
class LocalVolume:
    """The local volume constraint of :func:`optimize` (Wu et al. 2018).

    Wu, Aage, Westermann & Sigmund (2018), "Infill optimization for additive
    manufacturing—approaching bone-like porous structures", IEEE TVCG 24:1127: the mean density
    of the square of side ``2 radius + 1`` around each pixel stays below ``volfrac``, aggregated
    into one constraint by a p-norm. It turns the few thick members of a plain compliance design
    into many thin struts along the stress paths, as in trabecular bone.

    Parameters
    ----------
    volfrac : float or ndarray, shape (ny, nx)
        Bound ``alpha`` in (0, 1] of the local densities. An array bounds each pixel's square by
        its own value (a bound that varies over the domain); its mean over the mask stands for
        it in the checkpoint's settings.
    radius : int
        Half side (pixels) of the local square.
    p : float
        p-norm exponent (Wu et al. use 16); larger is closer to the max, and stiffer to solve.
    mask : ndarray of bool, shape (ny, nx), optional
        The pixels whose local density is bounded (e.g. all but a cortical shell along the
        outline). Default: the whole mask of :func:`optimize`.

    Raises
    ------
    TypeError, ValueError
        If a value is outside its range or of the wrong type; the message names it. The shapes
        are checked by :func:`optimize`.

    Examples
    --------
    >>> bound = LocalVolume(0.4, radius=3)
    >>> bound.volfrac, bound.radius, bound.p
    (0.4, 3, 16.0)
    """

    volfrac: float | np.ndarray
    radius: int = 6
    p: float = 16.0
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if isinstance(self.volfrac, np.ndarray):
            bound = check_finite_array("LocalVolume.volfrac", self.volfrac, 2)
            if not ((bound > 0) & (bound <= 1)).all():
                raise ValueError("LocalVolume.volfrac must lie in (0, 1] at every pixel")
            object.__setattr__(self, "volfrac", bound)  # frozen: set once, here
        elif not 0 < self.volfrac <= 1:
            raise ValueError(f"LocalVolume.volfrac must lie in (0, 1], got {self.volfrac}")
        else:
            object.__setattr__(self, "volfrac", float(self.volfrac))
        check_local(self.radius, self.p, "LocalVolume.")
        object.__setattr__(self, "p", float(self.p))
        mask = self.mask
        if mask is not None and not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_):
            got = f"dtype {mask.dtype}" if isinstance(mask, np.ndarray) else type(mask).__name__
            raise TypeError(f"LocalVolume.mask must be a bool array, got {got}")


@dataclass(frozen=True, eq=False)
class BlockMass:
    """The mass of every block of pixels, for :func:`optimize`, in place of the total mass.

    Each ``factor`` x ``factor`` block of the grid (from the top left corner, the last ones cut
    at the edges) holds ``mass`` times its pixels of mass, as far as the mask's pixels in it
    can hold it (a block asks at most one per mask pixel): a low-resolution image fixes where
    the mass of its high-resolution design lies. Each block has its own OC multiplier, so the
    constraint holds to round-off after every update the move limit allows. It needs
    ``filter="sensitivity"`` (the physical density is the design, whose block sums the update
    meets) and no projection or local volume constraint.

    Parameters
    ----------
    mass : ndarray, shape (ceil(ny / factor), ceil(nx / factor))
        Mean density of each block in [0, 1], e.g. the LR image of the design.
    factor : int
        Pixels per block along a side, >= 1.

    Raises
    ------
    TypeError, ValueError
        If a value is outside its range or of the wrong type; the message names it. The shape
        is checked by :func:`optimize`.

    Examples
    --------
    >>> BlockMass(np.full((2, 3), 0.4), factor=10).factor
    10
    """

    mass: np.ndarray
    factor: int

    def __post_init__(self) -> None:
        mass = check_unit("BlockMass.mass", check_image("BlockMass.mass", self.mass))
        object.__setattr__(self, "mass", mass)  # frozen: set once, here
        if not (isinstance(self.factor, int) and self.factor >= 1):
            raise ValueError(f"BlockMass.factor must be a positive integer, got {self.factor!r}")

    def targets(self, active: np.ndarray) -> np.ndarray:
        """The mass (pixels) of each block of a mask ``active``, at most its mask pixels."""
        pixels = block_sums(np.ones(active.shape), self.factor)
        return np.minimum(self.mass * pixels, block_sums(active.astype(float), self.factor))


@dataclass(frozen=True)
class Checkpointing:
    """Where :func:`optimize` writes checkpoints, and the one it resumes from.

    Parameters
    ----------
    path : path, optional
        File (``.npz``) to write every ``every`` iterations and when the run stops, atomically
        (temporary file, then rename). It holds the design, the density, the iteration, ``β``,
        the history and the settings. Default: none written.
    every : int
        Iterations between checkpoints.
    resume : path, optional
        A checkpoint to continue from; the problem (settings, forces, fixed, mask, solid, local
        volume bound) must be the one it was written for, while ``max_iter``, ``tol``,
        ``solver_options``, the callback and the checkpointing may change; ``initial`` is
        ignored. The continued run makes the same updates as an uninterrupted one (bit for bit
        with a direct solver; with AMG-CG, up to the CG tolerance, since CG restarts from zero
        rather than from the last displacements). It may be ``path``.

    Raises
    ------
    ValueError
        If ``every`` is not a positive integer.

    Examples
    --------
    >>> Checkpointing("run.npz", every=5, resume="run.npz").every
    5
    """

    path: str | os.PathLike[str] | None = None
    every: int = 10
    resume: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.every, int) and self.every >= 1):
            raise ValueError(f"Checkpointing.every must be a positive integer, got {self.every!r}")


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Record:
    """One iteration of :func:`optimize`.

    Attributes
    ----------
    iteration : int
        1 for the first update.
    objective : float
        ``Σ wᵢ cᵢ`` of the density analysed in this iteration (N·mm).
    compliance : tuple of float
        Compliance ``fᵀu`` of each load case (N·mm).
    mass : float
        ``Σ rho / (number of mask pixels)`` of the analysed density: ``volfrac`` once the
        constraint holds (it drifts for one iteration after ``β`` changes).
    change : float
        Largest change of a design variable in this iteration's update.
    beta : float
        Projection sharpness used (0 without projection).
    cg_iterations : tuple of int
        CG iterations of each load case's solve (0 for a direct solve).
    local_volume : float
        The p-norm of the local densities under the local volume constraint (compare with
        :attr:`LocalVolume.volfrac`); 0 without one.
    fe_seconds, seconds : float
        Wall time of the FE solve and of the whole iteration (s).
    """

    iteration: int
    objective: float
    compliance: tuple[float, ...]
    mass: float
    change: float
    beta: float
    cg_iterations: tuple[int, ...]
    local_volume: float
    fe_seconds: float
    seconds: float


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Record))


@dataclass(frozen=True)
class State:
    """What the callback of :func:`optimize` sees after each iteration.

    Attributes
    ----------
    record : Record
        The iteration's numbers.
    density : ndarray, shape (ny, nx)
        The physical density analysed in this iteration (the one ``record`` describes).
    design : ndarray, shape (ny, nx)
        The design variables after this iteration's update (where the next iteration, or a
        resumed run, starts).
    """

    record: Record
    density: np.ndarray
    design: np.ndarray


@dataclass
class OptimizeResult:
    """Outcome of :func:`optimize`.

    Attributes
    ----------
    density : ndarray, shape (ny, nx)
        Final physical density (filtered and projected design; 1 on the passive solid
        pixels, 0 elsewhere outside the mask).
    design : ndarray, shape (ny, nx)
        Final design variables.
    compliance : float
        ``Σ wᵢ cᵢ`` of ``density`` (N·mm), from a last FE solve (NaN without it:
        ``optimize(final_solve=False)``).
    case_compliance : ndarray, shape (ncases,)
        Compliance of each load case for ``density`` (N·mm), NaN without the last solve.
    mass : float
        ``Σ density / (number of mask pixels)`` over the mask (the design).
    iterations : int
        Updates made (including those before a resume).
    converged : bool
        Whether the change criterion stopped the run.
    reason : str
        ``"converged"``, ``"max_iter"`` or ``"callback"``.
    beta : float
        The projection sharpness of ``density``: that of the last update (0 without
        projection).
    history : list of Record
        One record per iteration.
    """

    density: np.ndarray
    design: np.ndarray
    compliance: float
    case_compliance: np.ndarray
    mass: float
    iterations: int
    converged: bool
    reason: str
    beta: float
    history: list[Record]

    def series(self, name: str) -> np.ndarray:
        """One field of the history as an array, e.g. ``series("objective")``."""
        if name not in _RECORD_FIELDS:
            raise ValueError(f"name must be one of {_RECORD_FIELDS}, got {name!r}")
        return np.array([getattr(record, name) for record in self.history])


# ---------------------------------------------------------------------------------------------
# The problem


@dataclass(frozen=True)
class _Options:
    """Everything that defines the optimization problem, saved with every checkpoint.

    Flat, as written by checkpoints before the option records: the material's fields, the
    projection's (its defaults without one, ``beta`` None) and the local volume's (``volfrac``
    the mean of a bound per pixel; ``None``, 0 and 0.0 without one).
    """

    volfrac: float
    penal: float
    rmin: float
    filter: str
    weights: tuple[float, ...]
    move: float
    damping: float
    beta: float | None
    beta_max: float
    beta_every: int
    threshold: float
    E0: float
    nu: float
    Emin: float | None
    h: float
    thickness: float
    local_volfrac: float | None = None
    local_radius: int = 0
    local_p: float = 16.0
    block_factor: int = 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _settings(
    volfrac: float,
    rmin: float,
    filter: str,
    weights: tuple[float, ...],
    move: float,
    damping: float,
    material: fem.Material,
    projection: Projection | None,
    local: LocalVolume | None,
    block: BlockMass | None,
    inside: np.ndarray,
) -> _Options:
    """The settings record of the options of :func:`optimize`, checked already."""
    shown = _NO_PROJECTION if projection is None else projection
    local_volfrac = None
    if local is not None:
        bound = local.volfrac
        local_volfrac = float(np.mean(bound[inside]) if isinstance(bound, np.ndarray) else bound)
    return _Options(
        volfrac=float(volfrac),
        penal=material.penal,
        rmin=rmin,
        filter=filter,
        weights=weights,
        move=float(move),
        damping=float(damping),
        beta=None if projection is None else projection.beta,
        beta_max=shown.beta_max,
        beta_every=shown.beta_every,
        threshold=shown.threshold,
        E0=material.E0,
        nu=material.nu,
        Emin=material.Emin,
        h=material.h,
        thickness=material.thickness,
        local_volfrac=local_volfrac,
        local_radius=0 if local is None else local.radius,
        local_p=0.0 if local is None else local.p,
        block_factor=0 if block is None else block.factor,
    )


def _comparable(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as a resume compares them: the void modulus as a number (checkpoints written
    before :class:`femsr.fem.Material` resolved it hold None for ``1e-9 * E0``), and without
    projection none of its parameters, which then do nothing."""
    comparable = dict(settings)
    if comparable.get("Emin") is None and "E0" in comparable:
        comparable["Emin"] = 1e-9 * comparable["E0"]
    if comparable.get("beta") is None:
        for name in ("beta_max", "beta_every", "threshold"):
            comparable.pop(name, None)
    comparable.setdefault("block_factor", 0)  # checkpoints from before block masses lack it
    return comparable


def _check_weights(weights: object, ncases: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0,) * ncases
    array = np.asarray(weights, dtype=float)
    if array.shape != (ncases,):
        raise ValueError(
            f"weights must have one entry per load case ({ncases}), got shape {array.shape}"
        )
    if not np.isfinite(array).all() or (array < 0).any() or not array.any():
        raise ValueError(
            f"weights must be finite, non-negative and not all zero, got {array.tolist()}"
        )
    return tuple(float(w) for w in array)


def structure_model(
    density: np.ndarray,
    fixed: np.ndarray,
    void: float,
    *,
    forces: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The elements of ``mask`` that an FE model of the structure in ``density`` needs.

    An element is left out when its density and that of each of its eight neighbours is at
    most ``void``, unless a node of it is loaded (``forces``, shape (ncases, ny+1, nx+1, 2)):
    what stays is the structure, a one-element halo of void, which keeps parts that touch at
    a corner joined, and the loaded nodes. Of that, the parts (joined through edges) that
    hold no node of ``fixed`` (ny+1, nx+1, 2) are left out too: islands held only through
    the void.

    Examples
    --------
    >>> density = np.zeros((4, 8)); density[:, 0] = density[1, 5] = 1.0
    >>> fixed = np.zeros((5, 9, 2), bool); fixed[:, 0] = True
    >>> structure_model(density, fixed, 1e-3).astype(int).tolist()[0]
    [1, 1, 0, 0, 0, 0, 0, 0]
    """
    keep = ndi.binary_dilation(np.asarray(density) > void, np.ones((3, 3), bool))
    if forces is not None:
        keep |= _touching(np.any(forces != 0, axis=(0, 3)))
    if mask is not None:
        keep &= mask
    parts, _ = ndi.label(keep)
    return np.isin(parts, parts[_touching(np.any(fixed, axis=2)) & keep])


def _touching(nodes: np.ndarray) -> np.ndarray:
    """The elements with a corner among ``nodes`` (ny+1, nx+1)."""
    return nodes[:-1, :-1] | nodes[1:, :-1] | nodes[:-1, 1:] | nodes[1:, 1:]


class _Problem:
    """Solver, filter and the chain rule from physical density to design variables."""

    def __init__(
        self,
        forces: np.ndarray,
        fixed: np.ndarray,
        active: np.ndarray,
        options: _Options,
        material: fem.Material,
        solver_options: Mapping[str, Any],
        backend: str,
        local: LocalVolume | None = None,
        solid: np.ndarray | None = None,
        block: BlockMass | None = None,
    ) -> None:
        self.forces = forces
        self.active = active
        self.shape: tuple[int, int] = active.shape
        self.inside = active.astype(bool)
        self.count = int(self.inside.sum())
        # Passive solid pixels: in the FE model at density 1, outside the design.
        self.solid = np.zeros_like(self.inside) if solid is None else solid
        self.model = self.inside | self.solid
        self.target = options.volfrac * self.count
        self.block = block
        self.block_targets = None if block is None else block.targets(self.inside)
        self.options = options
        self.weights = np.array(options.weights)
        self.backend = backend
        solver_options = dict(solver_options)
        self.drop_void: float | None = solver_options.pop("drop_void", None)
        if self.drop_void is not None and not 0 <= self.drop_void < 1:
            raise ValueError(f"drop_void must lie in [0, 1), got {self.drop_void}")
        self.stats = fem.SolveStats("")
        self.fixed = fixed
        self.material = material
        self.solver_options = dict(material=self.material, backend=backend, **solver_options)
        self._reduced: fem.Solver | None = None  # the last model of _reduced_solve
        self.filter = ConeFilter(active, options.rmin, backend)
        self.local = (
            None
            if local is None
            else LocalBound(
                active,
                self.inside if local.mask is None else local.mask,
                local.radius,
                local.volfrac,
                local.p,
            )
        )
        # What a checkpoint must have been written for, besides the settings.
        bound = None if local is None else local.volfrac
        blocks = None if block is None else block.mass
        extras = (None if local is None else local.mask, solid, bound, blocks)
        self.arrays = [forces, fixed, active]
        self.arrays += [a for a in extras if isinstance(a, np.ndarray)]

    @functools.cached_property
    def solver(self) -> fem.Solver:
        """The solver of the whole mask, made when first needed: where the structure alone is
        solved (``drop_void``) it never is (at 50 µm its pattern holds 0.5 GB)."""
        return fem.Solver(self.fixed, mask=self.model, **self.solver_options)

    def physical(self, x: np.ndarray, beta: float | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Physical density of the design and ``drho/drho~`` (None without projection)."""
        filtered = self.filter(x) if self.options.filter == "density" else x
        if beta is None:
            return filtered, None
        density, slope = project(filtered, beta, self.options.threshold, backend=self.backend)
        # Rounding may put P(0) or P(1) an ulp outside [0, 1], which the FE model rejects.
        np.clip(density, 0.0, 1.0, out=density)
        density[~self.inside] = 0.0
        return density, slope

    def _reduced_solve(self, density: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Displacements and model mask of the solve without the void (``drop_void``), or
        None where that model is not worth it or not valid.

        The model holds :func:`structure_model`'s elements. Left-out elements would
        contribute ``rho**(penal-1) <= drop_void**2`` of a solid element's sensitivity; the
        islands, held only through the void, carry no load there either. A model that still
        cannot be held (a load on an island) is not valid. The model is that structure with one
        more ring of its void, and it is kept while the structure stays inside it: a direct
        solver then keeps its analysis of the sparsity (PARDISO: half the time of a 50 µm
        solve). Elements in it that the structure has left take part with their own stiffness.
        """
        if self.drop_void is None:
            return None
        keep = structure_model(
            density, self.fixed, self.drop_void, forces=self.forces, mask=self.model
        )
        if keep.sum() > _DROP_WORTH * self.model.sum():
            return None
        solver = self._reduced
        if solver is None or np.any(keep & (solver.active == 0)):
            ring = ndi.binary_dilation(keep, np.ones((3, 3), bool)) & self.model
            grown = keep | (ring & (density <= self.drop_void))
            solver = self._reduced = None  # the old model goes before the new one comes
            try:
                solver = fem.Solver(self.fixed, mask=grown, **self.solver_options)
            except ValueError:
                return None
            self._reduced = solver
        try:
            u = solver.solve(density, self.forces)
        except ValueError:
            return None
        self.stats = solver.stats
        return u, solver.active.astype(bool)

    def with_solid(self, density: np.ndarray) -> np.ndarray:
        """The design's physical density with the passive solid pixels at 1."""
        return np.where(self.solid, 1.0, density)

    def analyse(self, density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Compliance of each case and the weighted unit-modulus element energies; the
        solve's figures in ``stats``."""
        density = self.with_solid(density)
        reduced = self._reduced_solve(density)
        if reduced is None:
            u, model = self.solver.solve(density, self.forces), self.model
            self.stats = self.solver.stats
        else:
            u, model = reduced
        m = self.material
        energies = fem.element_energies(
            u, mask=model, nu=m.nu, thickness=m.thickness, backend=self.backend
        )
        modulus = m.youngs_modulus(density)
        compliance = np.einsum("kij,ij->k", energies, modulus)
        return compliance, np.tensordot(self.weights, energies, axes=1)

    def sensitivities(
        self, x: np.ndarray, density: np.ndarray, slope: np.ndarray | None, energy: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``∂(Σ wᵢcᵢ)/∂x`` and ``∂(Σrho)/∂x`` through projection and filter."""
        m = self.material
        dc = -m.penal * (m.E0 - m.Emin) * density ** (m.penal - 1.0) * energy
        dv = self.active.astype(float)
        if self.options.filter == "sensitivity":
            # top88, ft=1: a heuristic that leaves the mass gradient alone.
            return self.filter(x * dc) / np.maximum(1e-3, x), dv
        if slope is not None:
            dc, dv = dc * slope, dv * slope
        return self.filter(dc, transpose=True), self.filter(dv, transpose=True)

    def local_constraint(
        self, density: np.ndarray, slope: np.ndarray | None
    ) -> tuple[float, np.ndarray] | None:
        """The local volume constraint ``G`` of the density and ``dG/dx``; None without one."""
        if self.local is None:
            return None
        value, gradient = self.local(density)
        if slope is not None:
            gradient = gradient * slope
        if self.options.filter == "density":
            gradient = self.filter(gradient, transpose=True)
        return value, gradient

    def local_volume(self, value: float) -> float:
        """The p-norm of the local densities whose constraint value is ``value`` (with a bound
        per pixel, the p-norm of their ratios to it times its mean)."""
        assert self.local is not None
        return (value + 1.0) * self.local.mean_alpha

    def _oc(self, x: np.ndarray, dc: np.ndarray, dv: np.ndarray, beta: float | None) -> np.ndarray:
        o = self.options
        wsum = self.filter.wsum if beta is not None else None
        new, _, _ = oc_step(
            self.active,
            x,
            dc,
            dv,
            self.target,
            o.move,
            o.damping,
            o.rmin,
            wsum,
            beta,
            o.threshold,
            self.backend,
        )
        return new

    def update(
        self,
        x: np.ndarray,
        dc: np.ndarray,
        dv: np.ndarray,
        beta: float | None,
        local: tuple[float, np.ndarray] | None,
        multiplier: float,
    ) -> tuple[np.ndarray, float]:
        """OC step on the mass, and with a local constraint on both.

        With ``G``, the OC fixed point ``x (-dc / (λ dv + μ dG))^η`` for the two constraints
        is written as ``B = -dc / (λ (dv + κ dG))``, ``κ = μ/λ``, which is the one-constraint
        update for the sensitivity ``dc dv / (dv + κ dG)``: the inner OC search meets the
        mass exactly for any ``κ``, and ``κ >= 0`` is the smallest ratio whose step keeps the
        constraint ``G(x_new) <= 0``, evaluated through filter and projection (its
        linearization, convex in the density, lets a step of the p-norm overshoot the bound
        and the design never come back from the voids it left): zero where the plain step already
        does, else found by bisection on ``log κ`` from a bracket around the last one,
        ``multiplier``, and at most ``_LOCAL_STRONGEST`` times the ratio that weighs both
        sensitivities alike (the strongest step, taken when the move limits cannot reach
        the bound). Returns the new design and ``κ``.
        """
        if self.block is not None and self.block_targets is not None:
            o = self.options
            new = block_oc_step(
                self.inside, x, dc, self.block_targets, self.block.factor, o.move, o.damping
            )
            return new, 0.0
        if local is None or self.local is None:
            return self._oc(x, dc, dv, beta), 0.0
        _, gradient = local
        bound = self.local

        def step(kappa: float) -> tuple[np.ndarray, bool]:
            weight = dv + kappa * gradient
            scaled = np.divide(dc * dv, weight, out=np.zeros_like(dc), where=weight > 0)
            new = self._oc(x, scaled, dv, beta)
            return new, bound.value(self.physical(new, beta)[0]) <= 0.0

        new, feasible = step(0.0)
        if feasible:
            return new, 0.0
        scale = float(np.abs(dv).sum() / max(np.abs(gradient).sum(), 1e-300))
        strongest = _LOCAL_STRONGEST * scale
        low, high = 0.0, min(multiplier or scale, strongest)
        while True:
            candidate, feasible = step(high)
            if feasible:
                new = candidate
                break
            if high == strongest:
                return candidate, high  # the move limits cannot reach the bound
            low, high = high, min(4.0 * high, strongest)
        low = low or high / 4.0**8
        while high > _LOCAL_PRECISION * low:
            middle = math.sqrt(low * high)
            candidate, feasible = step(middle)
            if feasible:
                high, new = middle, candidate
            else:
                low = middle
        return new, high


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(repr(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass
class _Progress:
    """The optimizer's whole state between iterations: what a checkpoint holds."""

    design: np.ndarray
    iteration: int
    beta: float | None
    beta_iterations: int  # iterations made at the current beta
    history: list[Record]
    reason: str = ""
    multiplier: float = 0.0  # of the local volume constraint, where its next search starts


def _write_checkpoint(
    path: str | os.PathLike[str],
    progress: _Progress,
    density: np.ndarray,
    options: _Options,
    fingerprint: str,
) -> None:
    arrays: dict[str, Any] = {
        "format": np.array(_CHECKPOINT_FORMAT),
        "design": progress.design,
        "density": density,
        "iteration": np.array(progress.iteration),
        "beta": np.array(np.nan if progress.beta is None else progress.beta),
        "beta_iterations": np.array(progress.beta_iterations),
        "reason": np.array(progress.reason),
        "multiplier": np.array(progress.multiplier),
        "options": np.array(options.to_json()),
        "fingerprint": np.array(fingerprint),
    }
    ncases = len(options.weights)
    for name in _RECORD_FIELDS:
        values = [getattr(record, name) for record in progress.history]
        if name in ("compliance", "cg_iterations"):
            arrays[f"history_{name}"] = np.array(values).reshape(len(values), ncases)
        else:
            arrays[f"history_{name}"] = np.array(values)
    # Atomic, so an interrupted write never clobbers the previous checkpoint.
    with atomic_write(path) as stream:
        np.savez(stream, **arrays)


def _read_checkpoint(
    path: str | os.PathLike[str], options: _Options, fingerprint: str, shape: tuple[int, int]
) -> _Progress:
    """The state stored at ``path``, if written for this problem (settings and arrays)."""
    data = read_npz(path, "topopt checkpoint")
    if "format" not in data or str(data["format"]) != _CHECKPOINT_FORMAT:
        raise ValueError(f"resume: {os.fspath(path)!r} is not a femsr topopt checkpoint")
    fields = ("options", "fingerprint", "design", "iteration", "beta", "beta_iterations")
    wanted = {*fields, "reason", "multiplier", *(f"history_{name}" for name in _RECORD_FIELDS)}
    missing = wanted - set(data)
    if missing:
        raise ValueError(
            f"resume: {os.fspath(path)!r} is a damaged checkpoint: it lacks {sorted(missing)}"
        )
    check_settings(
        _comparable(json.loads(str(data["options"]))),
        _comparable(json.loads(options.to_json())),
        source=f"resume: {os.fspath(path)!r}",
        remedy="optimize the problem it was written for, or start without resume",
    )
    if str(data["fingerprint"]) != fingerprint:
        raise ValueError(
            "resume: the checkpoint was written for other forces, fixed DOFs, mask, solid or block "
            "masses"
        )
    design = np.array(data["design"], dtype=np.float64)
    if design.shape != shape:
        raise ValueError(f"resume: the checkpoint design has shape {design.shape}, not {shape}")
    columns = {name: data[f"history_{name}"] for name in _RECORD_FIELDS}
    history = [
        Record(
            iteration=int(columns["iteration"][k]),
            objective=float(columns["objective"][k]),
            compliance=tuple(float(c) for c in columns["compliance"][k]),
            mass=float(columns["mass"][k]),
            change=float(columns["change"][k]),
            beta=float(columns["beta"][k]),
            cg_iterations=tuple(int(c) for c in columns["cg_iterations"][k]),
            local_volume=float(columns["local_volume"][k]),
            fe_seconds=float(columns["fe_seconds"][k]),
            seconds=float(columns["seconds"][k]),
        )
        for k in range(len(columns["iteration"]))
    ]
    beta = float(data["beta"])
    return _Progress(
        design=design,
        iteration=int(data["iteration"]),
        beta=None if math.isnan(beta) else beta,
        beta_iterations=int(data["beta_iterations"]),
        history=history,
        reason=str(data["reason"]),
        multiplier=float(data["multiplier"]),
    )


# ---------------------------------------------------------------------------------------------
# The optimizer


def optimize(
    forces: np.ndarray,
    fixed: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    volfrac: float = 0.5,
    rmin: float = 1.5,
    filter: str = "density",
    weights: np.ndarray | list[float] | tuple[float, ...] | None = None,
    max_iter: int = 200,
    tol: float = 0.01,
    move: float = 0.2,
    damping: float = 0.5,
    material: fem.Material | None = None,
    projection: Projection | None = None,
    local_volume: LocalVolume | None = None,
    block_mass: BlockMass | None = None,
    solid: np.ndarray | None = None,
    initial: np.ndarray | None = None,
    solver_options: Mapping[str, Any] | None = None,
    callback: Callable[[State], bool | None] | None = None,
    progress: bool = False,
    checkpointing: Checkpointing | None = None,
    final_solve: bool = True,
    backend: str = "cpp",
) -> OptimizeResult:
    """Minimum weighted compliance under a mass constraint, by SIMP and optimality criteria.

    See the module docstring for the formulation. Defaults follow top88 (Andreassen et al.
    2011): ``volfrac=0.5, penal=3, rmin=1.5, move=0.2``, damping 0.5, stop at change 0.01.

    Parameters
    ----------
    forces : ndarray, shape (ncases, ny+1, nx+1, 2)
        Nodal forces of each load case (N), x right and y up (:mod:`femsr.fem`).
    fixed : ndarray of bool, shape (ny+1, nx+1, 2)
        Prescribed-zero DOFs.
    mask : ndarray of bool, shape (ny, nx), optional
        Design domain. Pixels outside are not design variables: density 0, out of the FE
        model and of every filter neighbourhood. Default: all pixels.
    volfrac : float
        Mass fraction in (0, 1]: ``Σ rho = volfrac * (number of mask pixels)``.
    rmin : float
        Filter radius (pixels); weights ``max(0, rmin - d)``.
    filter : {"density", "sensitivity"}
        top88's ``ft=2`` (density filter) or ``ft=1`` (sensitivity filter).
    weights : array_like, shape (ncases,), optional
        Non-negative weight of each load case in the objective (e.g. daily cycles). Default:
        all 1.
    max_iter : int
        Iteration limit (counting the iterations before a resume).
    tol : float
        Stop once no design variable changes by more than ``tol`` in an update (top88 stops at
        0.01). With projection, only at ``beta_max``.
    move, damping : float
        OC move limit and damping exponent.
    material : femsr.fem.Material, optional
        SIMP law and geometry of the FE model (:class:`femsr.fem.Material`): tissue modulus
        ``E0`` (MPa), Poisson's ratio ``nu``, SIMP exponent ``penal``, void modulus ``Emin``,
        pixel side ``h`` (mm), thickness (mm). Default: ``Material()``, top88's unit material
        (``E0=1, nu=0.3, penal=3, Emin=1e-9``, ``h`` and thickness 1).
    projection : Projection, optional
        Heaviside projection and its continuation (needs ``filter="density"``). Default: none.
    local_volume : LocalVolume, optional
        Local volume constraint (Wu et al. 2018): a bound on the mean density of the square
        around each pixel. Default: none.
    block_mass : BlockMass, optional
        The mass of every block of pixels instead of ``volfrac`` (which it replaces: the
        result's ``mass`` is the blocks' total over the mask). Needs ``filter="sensitivity"``,
        no projection and no local volume constraint. Default: none.
    solid : ndarray of bool, shape (ny, nx), optional
        Passive solid pixels outside ``mask`` (e.g. a prescribed cortex): in the FE model at
        density 1, but not design variables, not in the filter neighbourhoods and not in the
        mass, which stays ``volfrac`` of the mask. The result's density holds them as 1.
    initial : ndarray, shape (ny, nx), optional
        Starting design variables in [0, 1] (e.g. a coarse solution, upsampled). Default: the
        uniform design whose physical density meets the mass exactly.
    solver_options : mapping, optional
        Options of :class:`femsr.fem.Solver`: ``tol``, ``maxiter``, ``direct_below``,
        ``method``, ``rebuild_ratio``, ``direct_solver``; and ``drop_void``, a physical
        density at or below which elements with no denser neighbour leave the FE model
        (:func:`structure_model`; on a crisp femur it halves the unknowns and cuts a direct
        solve 3-4x, compliances equal to 1e-7); the whole mask is solved where that model
        cannot be held or lost a loaded node.
    callback : callable, optional
        ``callback(state)`` after every iteration with a :class:`State`; returning ``True``
        stops the run (the result is then that of the current design).
    progress : bool
        Show a tqdm bar of the iterations on stderr, with the last iteration's objective, mass,
        change, ``β``, local volume, CG iterations and seconds. The same numbers go to a DEBUG
        record per iteration, and the outcome to an INFO record, of the ``femsr.topopt``
        logger, whatever ``progress``.
    checkpointing : Checkpointing, optional
        The checkpoints to write and the one to resume from. Default: none.
    final_solve : bool
        Solve the final density once more for the result's compliance (default). False leaves
        it NaN and saves that solve, for a caller that wants only the density (a few
        iterations, as :func:`femsr.refine.refine` runs, spend one solve in nine on it).
    backend : {"cpp", "python"}
        Compiled kernels, or the numpy twins for filter, projection, OC update, assembly and
        element energies.

    Returns
    -------
    OptimizeResult
        Final density, its compliance, and the per-iteration history.

    Raises
    ------
    TypeError, ValueError
        On bad shapes, types or values, a structure that ``fixed`` does not hold, or a
        checkpoint that does not fit the problem or cannot be read (the message names it).
    femsr.fem.ConvergenceError
        When an FE solve does not converge.

    See Also
    --------
    femsr.fem.Solver : the FE solver reused across iterations.
    density_filter, project, oc_update : the kernels.

    Examples
    --------
    top88's half MBB beam, coarse: load down at the top-left node, rollers on the left edge
    (symmetry) and at the bottom-right node.

    >>> ny, nx = 10, 30
    >>> forces = np.zeros((1, ny + 1, nx + 1, 2)); forces[0, 0, 0, 1] = -1.0
    >>> fixed = np.zeros((ny + 1, nx + 1, 2), bool)
    >>> fixed[:, 0, 0] = True; fixed[ny, nx, 1] = True
    >>> result = optimize(forces, fixed, volfrac=0.5, rmin=1.5, max_iter=30)
    >>> bool(abs(result.mass - 0.5) < 1e-9), result.compliance < result.history[0].objective
    (True, True)

    With projection and a local volume bound, from a material in MPa and mm:

    >>> result = optimize(
    ...     forces, fixed, volfrac=0.3, max_iter=5, move=0.05,
    ...     material=fem.Material(E0=15e3, h=0.1),
    ...     projection=Projection(1.0, beta_max=4.0, beta_every=2),
    ...     local_volume=LocalVolume(0.4, radius=2),
    ... )
    >>> result.iterations, result.beta
    (5, 4.0)
    """
    if not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be non-negative, got {tol}")
    if not isinstance(final_solve, bool):
        raise TypeError(f"final_solve must be a bool, got {type(final_solve).__name__}")
    problem = _validate(
        forces,
        fixed,
        mask=mask,
        volfrac=volfrac,
        rmin=rmin,
        filter=filter,
        weights=weights,
        move=move,
        damping=damping,
        material=material,
        projection=projection,
        local=local_volume,
        block=block_mass,
        solid=solid,
        solver_options=solver_options,
        backend=backend,
    )
    checkpoints = _check_record("checkpointing", checkpointing, Checkpointing) or Checkpointing()
    run, save = _start(problem, initial, checkpoints)
    started = time.perf_counter()
    _iterate(problem, run, max_iter, tol, callback, progress, checkpoints.every, save)
    return _finish(problem, run, save, started, final_solve)


def _check_record(name: str, value: Any, kind: type) -> Any:
    """``value`` if it is a ``kind`` or None; a TypeError naming ``name`` otherwise."""
    if value is not None and not isinstance(value, kind):
        raise TypeError(
            f"{name} must be a {kind.__module__}.{kind.__name__} or None, "
            f"got {type(value).__name__}"
        )
    return value


def _check_loads(forces: object, fixed: object) -> tuple[np.ndarray, np.ndarray]:
    """The forces (ncases, ny+1, nx+1, 2), not all zero, and the fixed DOFs they match."""
    fixed = check_fixed(fixed)
    shape = (fixed.shape[0] - 1, fixed.shape[1] - 1)
    forces = check_finite_array("forces", forces, 4)
    if forces.shape[0] < 1 or forces.shape[1:] != (shape[0] + 1, shape[1] + 1, 2):
        raise ValueError(
            f"forces must have shape (ncases, {shape[0] + 1}, {shape[1] + 1}, 2) to match "
            f"fixed, got {forces.shape}"
        )
    if not forces.any():
        raise ValueError("forces are all zero: there is nothing to optimize for")
    return forces, fixed


def _check_extras(
    shape: tuple[int, int],
    active: np.ndarray,
    filter: str,
    projection: Projection | None,
    local: LocalVolume | None,
    block: BlockMass | None,
    solid: np.ndarray | None,
) -> None:
    """What the option records and the solid pixels must agree on with the problem."""
    if projection is not None and filter != "density":
        raise ValueError(f"projection needs filter='density', got filter={filter!r}")
    if block is not None:
        if filter != "sensitivity" or projection is not None or local is not None:
            raise ValueError(
                "block_mass needs filter='sensitivity', no projection and no local_volume: "
                "its update meets the block sums of the design itself"
            )
        blocks = tuple(-(-n // block.factor) for n in shape)
        if block.mass.shape != blocks:
            raise ValueError(
                f"BlockMass.mass must have one entry per {block.factor} x {block.factor} block, "
                f"shape {blocks}, got {block.mass.shape}"
            )
    if local is not None:
        if isinstance(local.volfrac, np.ndarray) and local.volfrac.shape != shape:
            raise ValueError(
                f"LocalVolume.volfrac must have shape {shape}, got {np.shape(local.volfrac)}"
            )
        if local.mask is not None and local.mask.shape != shape:
            raise TypeError(f"LocalVolume.mask must be a bool array of shape {shape}")
    if solid is not None:
        if not (isinstance(solid, np.ndarray) and solid.dtype == np.bool_ and solid.shape == shape):
            raise TypeError(f"solid must be a bool array of shape {shape}")
        if np.any(solid & active.astype(bool)):
            raise ValueError("solid must lie outside mask: a passive pixel is no design variable")


def _validate(
    forces: np.ndarray,
    fixed: np.ndarray,
    *,
    mask: np.ndarray | None,
    volfrac: float,
    rmin: float,
    filter: str,
    weights: object,
    move: float,
    damping: float,
    material: fem.Material | None,
    projection: Projection | None,
    local: LocalVolume | None,
    solid: np.ndarray | None,
    solver_options: Mapping[str, Any] | None,
    backend: str,
    block: BlockMass | None = None,
) -> _Problem:
    """The problem that :func:`optimize`'s arguments define, every one checked."""
    check_backend(backend)
    forces, fixed = _check_loads(forces, fixed)
    shape = (fixed.shape[0] - 1, fixed.shape[1] - 1)
    active = check_mask(mask, shape)
    if not 0 < volfrac <= 1:
        raise ValueError(f"volfrac must lie in (0, 1], got {volfrac}")
    rmin = check_rmin(rmin)
    if filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {filter!r}")
    check_step(move, damping)
    material = _check_record("material", material, fem.Material) or fem.Material()
    _check_record("projection", projection, Projection)
    _check_record("local_volume", local, LocalVolume)
    _check_record("block_mass", block, BlockMass)
    _check_extras(shape, active, filter, projection, local, block, solid)
    unknown = set(solver_options or {}) - set(_SOLVER_OPTIONS)
    if unknown:
        raise ValueError(
            f"solver_options has unknown keys {sorted(unknown)}; allowed: {_SOLVER_OPTIONS}"
        )
    weights = _check_weights(weights, forces.shape[0])
    inside = active.astype(bool)
    if block is not None:  # the blocks' total stands for the mass
        volfrac = float(block.targets(inside).sum() / max(1, inside.sum()))
    options = _settings(
        volfrac, rmin, filter, weights, move, damping, material, projection, local, block, inside
    )
    return _Problem(
        forces, fixed, active, options, material, solver_options or {}, backend, local, solid, block
    )


def _start(
    problem: _Problem, initial: np.ndarray | None, checkpoints: Checkpointing
) -> tuple[_Progress, Callable[[np.ndarray], None] | None]:
    """Where the run starts (a checkpoint, ``initial`` or the uniform design at the mass), and
    how it writes a checkpoint of a density (None without a checkpoint path)."""
    options = problem.options
    fingerprint = ""
    if checkpoints.path is not None or checkpoints.resume is not None:
        fingerprint = _fingerprint(*problem.arrays)
    if checkpoints.resume is not None:
        run = _read_checkpoint(checkpoints.resume, options, fingerprint, problem.shape)
        logger.info(
            "optimize: resuming %s at iteration %d", os.fspath(checkpoints.resume), run.iteration
        )
    else:
        if initial is None and problem.block is not None:
            design = _block_uniform(problem, problem.block)
        elif initial is None:
            start = options.volfrac
            if options.beta is not None:
                start = float(inverse_projection(start, options.beta, options.threshold))
            design = np.full(problem.shape, start)
        else:
            design = check_unit("initial", check_image("initial", initial, problem.shape)).copy()
        design[~problem.inside] = 0.0
        run = _Progress(design, 0, options.beta, 0, [])

    path = checkpoints.path
    if path is None:
        return run, None
    return run, lambda density: _write_checkpoint(path, run, density, options, fingerprint)


def _block_uniform(problem: _Problem, block: BlockMass) -> np.ndarray:
    """The design uniform in each block at its mass."""
    count = block_sums(problem.inside.astype(float), block.factor)
    assert problem.block_targets is not None
    share = np.divide(problem.block_targets, count, out=np.zeros_like(count), where=count > 0)
    repeated = np.kron(share, np.ones((block.factor, block.factor)))
    return repeated[: problem.shape[0], : problem.shape[1]].copy()


def _step(problem: _Problem, run: _Progress) -> tuple[Record, np.ndarray]:
    """One iteration on ``run``: analyse its design, update it; the record and the density
    analysed."""
    started = time.perf_counter()
    x = run.design
    density, slope = problem.physical(x, run.beta)
    compliance, energy = problem.analyse(density)
    stats = problem.stats
    fe_seconds = stats.assembly_seconds + stats.setup_seconds + stats.solve_seconds
    dc, dv = problem.sensitivities(x, density, slope, energy)
    local = problem.local_constraint(density, slope)
    new, run.multiplier = problem.update(x, dc, dv, run.beta, local, run.multiplier)
    run.iteration += 1
    record = Record(
        iteration=run.iteration,
        objective=float(problem.weights @ compliance),
        compliance=tuple(float(c) for c in compliance),
        mass=float(density[problem.inside].sum() / problem.count),
        change=float(np.abs(new - x).max()),
        beta=0.0 if run.beta is None else run.beta,
        cg_iterations=tuple(stats.iterations) or (0,) * len(compliance),
        local_volume=0.0 if local is None else problem.local_volume(local[0]),
        fe_seconds=fe_seconds,
        seconds=time.perf_counter() - started,
    )
    run.design = new
    run.history.append(record)
    run.beta_iterations += 1
    return record, density


def _continuation(options: _Options, run: _Progress, settled: bool) -> bool:
    """top88's continuation (ft=3): ``β`` doubles after ``beta_every`` iterations or once the
    design settled, up to ``beta_max``; whether the run has converged (settled at that)."""
    if run.beta is None or run.beta >= options.beta_max:
        return settled
    if settled or run.beta_iterations >= options.beta_every:
        run.beta = min(2.0 * run.beta, options.beta_max)
        run.beta_iterations = 0
    return False


def _iterate(
    problem: _Problem,
    run: _Progress,
    max_iter: int,
    tol: float,
    callback: Callable[[State], bool | None] | None,
    progress: bool,
    every: int,
    save: Callable[[np.ndarray], None] | None,
) -> None:
    """Iterate until converged, stopped by the callback or at ``max_iter``, checkpointing
    every ``every`` iterations; the reason in ``run.reason``."""
    reason = "converged" if run.reason == "converged" else ""
    bar = tqdm(
        total=max_iter,
        initial=run.iteration,
        desc="optimize",
        unit="it",
        leave=None,  # kept when alone, cleared under an outer bar (generate's femurs)
        dynamic_ncols=True,
        disable=not progress,
    )
    while not reason and run.iteration < max_iter:
        record, density = _step(problem, run)
        settled = _continuation(problem.options, run, record.change <= tol)
        logger.debug("it %4d  %s", record.iteration, _summary(record))
        bar.set_postfix_str(_summary(record, short=True), refresh=False)
        bar.update()
        stop = callback is not None and bool(callback(State(record, density, run.design)))
        if settled:
            reason = "converged"
        elif stop:
            reason = "callback"
        if save is not None and run.iteration % every == 0 and not reason:
            save(problem.physical(run.design, run.beta)[0])
    bar.close()
    run.reason = reason or "max_iter"


def _finish(
    problem: _Problem,
    run: _Progress,
    save: Callable[[np.ndarray], None] | None,
    started: float,
    final_solve: bool,
) -> OptimizeResult:
    """The result of the run's last design, from a last FE solve unless not ``final_solve``;
    checkpointed and logged."""
    # The design was last updated, and its mass met, at the beta of the last record; a doubling
    # after that update belongs to the next iteration (of a resumed run), not to the result.
    beta = run.history[-1].beta if run.history and run.beta is not None else run.beta
    density = problem.physical(run.design, beta)[0]
    if final_solve:
        compliance, _ = problem.analyse(density)
    else:
        compliance = np.full(len(problem.weights), np.nan)
    if save is not None:
        save(density)
    result = OptimizeResult(
        density=problem.with_solid(density),
        design=run.design,
        compliance=float(problem.weights @ compliance),
        case_compliance=compliance,
        mass=float(density[problem.inside].sum() / problem.count),
        iterations=run.iteration,
        converged=run.reason == "converged",
        reason=run.reason,
        beta=0.0 if beta is None else beta,
        history=run.history,
    )
    logger.info(
        "optimize: %d iterations (%s), objective %.6e, mass %.6f, beta %g, %.1f s",
        result.iterations,
        result.reason,
        result.compliance,
        result.mass,
        result.beta,
        time.perf_counter() - started,
    )
    return result


def _summary(record: Record, short: bool = False) -> str:
    """One iteration's numbers: objective, mass, change, beta, local volume, CG, seconds;
    ``short``: fewer digits, no CG iterations or seconds, for a bar's postfix."""
    if short:
        local = f" local {record.local_volume:.3f}" if record.local_volume else ""
        return (
            f"obj {record.objective:.3e} mass {record.mass:.3f} change {record.change:.3f} "
            f"beta {record.beta:g}{local}"
        )
    cg = "/".join(str(n) for n in record.cg_iterations)
    local = f"local {record.local_volume:.4f}  " if record.local_volume else ""
    return (
        f"obj {record.objective:.6e}  mass {record.mass:.6f}  change {record.change:.4f}  "
        f"beta {record.beta:g}  {local}cg {cg}  {record.seconds:.2f} s"
    )
