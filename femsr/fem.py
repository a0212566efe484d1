"""Linear-elastic finite elements on pixel grids.

One module past 600 lines because the material, the element, the assembly and the solver work
on the one grid numbering set out below and share the :class:`Material` and the node mask; the
linear solvers behind :class:`Solver` are apart already, in :mod:`femsr.solvers`.

One pixel is one bilinear Q4 plane-stress element of side ``h`` (mm) and thickness ``thickness``
(mm). Images are ``(ny, nx)`` arrays with row 0 at the top. Node ``(i, j)`` is the corner at grid
row ``i`` (from the top) and column ``j``; it has the DOFs ``2*(i*(nx+1)+j)`` (x, to the right) and
``+1`` (y, upward). Nodal arrays are ``(ny+1, nx+1, 2)`` with the last axis (x, y), so a nodal
array's ``ravel()`` is in DOF order.

The tissue law is modified SIMP: ``E = Emin + density**penal * (E0 - Emin)``. With ``E0`` in MPa,
lengths in mm and forces in N, displacements come out in mm and energies in N·mm. A
:class:`Material` holds the law's constants with the pixel geometry.

Every compiled kernel has a pure numpy twin in :mod:`femsr.reference.fem`, selected by
``backend="python"``.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp

from femsr import _kernels
from femsr.checks import (
    check_backend,
    check_density,
    check_finite_array,
    check_fixed,
    check_mask,
)
from femsr.solvers import (
    AmgCG,
    ConvergenceError,
    GmgCG,
    Pardiso,
    SolveStats,
    Strategy,
    SuperLU,
)

__all__ = [
    "ConvergenceError",
    "Material",
    "Solver",
    "assemble",
    "element_energies",
    "element_stiffness",
    "rigid_body_modes",
    "solve",
    "youngs_modulus",
]

METHODS = ("auto", "gmg", "amg", "direct")
DIRECT_SOLVERS = ("superlu", "pardiso")
# Geometric multigrid (cpp/mg.hpp): Chebyshev degree and interval [lmax / ratio, lmax], Lanczos
# steps and safety factor for lmax, and the size (grid nodes) of the level solved densely.
GMG_OPTIONS = {
    "degree": 2,
    "ratio": 10.0,
    "lanczos_steps": 20,
    "lmax_safety": 1.1,
    "coarse_nodes": 800,
}

# ---------------------------------------------------------------------------------------------
# Material


def youngs_modulus(
    density: np.ndarray, *, E0: float = 1.0, penal: float = 3.0, Emin: float | None = None
) -> np.ndarray:
    """Element modulus of modified SIMP: ``Emin + density**penal * (E0 - Emin)`` (MPa).

    ``Emin`` defaults to ``1e-9 * E0``.

    Examples
    --------
    >>> youngs_modulus(np.array([0.0, 0.5, 1.0]), E0=8.0, Emin=0.0).tolist()
    [0.0, 1.0, 8.0]
    """
    Emin = 1e-9 * E0 if Emin is None else Emin
    return Emin + np.power(density, penal) * (E0 - Emin)


@dataclass(frozen=True, init=False)
class Material:
    """Tissue law and pixel geometry of a grid FE model.

    Parameters
    ----------
    E0 : float
        Tissue modulus (MPa), > 0.
    nu : float
        Poisson's ratio, in (-1, 0.5).
    penal : float
        SIMP exponent, >= 1.
    Emin : float, optional
        Void modulus (MPa), in [0, E0); default ``1e-9 * E0``.
    h : float
        Pixel side (mm), > 0. The stiffness of a square Q4 pixel does not depend on it; it
        scales the rigid-body modes.
    thickness : float
        Out-of-plane thickness (mm), > 0.

    Raises
    ------
    ValueError
        If a value is outside its range; the message names it.

    See Also
    --------
    youngs_modulus : the tissue law.

    Examples
    --------
    >>> bone = Material(E0=15e3, h=0.05)
    >>> bone.Emin
    1.5e-05
    >>> bone.youngs_modulus(np.array([0.5, 1.0])).round(3).tolist()
    [1875.0, 15000.0]
    """

    E0: float
    nu: float
    penal: float
    Emin: float
    h: float
    thickness: float

    def __init__(
        self,
        E0: float = 1.0,
        nu: float = 0.3,
        penal: float = 3.0,
        Emin: float | None = None,
        h: float = 1.0,
        thickness: float = 1.0,
    ) -> None:
        Emin = 1e-9 * E0 if Emin is None else Emin
        if not E0 > 0:
            raise ValueError(f"E0 must be positive, got {E0}")
        if not 0 <= Emin < E0:
            raise ValueError(f"Emin must lie in [0, E0), got {Emin} with E0={E0}")
        if not -1.0 < nu < 0.5:
            raise ValueError(f"nu must lie in (-1, 0.5), got {nu}")
        if not penal >= 1:
            raise ValueError(f"penal must be at least 1, got {penal}")
        if not h > 0:
            raise ValueError(f"h must be positive, got {h}")
        if not thickness > 0:
            raise ValueError(f"thickness must be positive, got {thickness}")
        fields = {"E0": E0, "nu": nu, "penal": penal, "Emin": Emin, "h": h, "thickness": thickness}
        for name, value in fields.items():
            object.__setattr__(self, name, float(value))  # frozen: set once, here

    def youngs_modulus(self, density: np.ndarray) -> np.ndarray:
        """Element moduli (MPa) of a density image: :func:`youngs_modulus` with this law."""
        return youngs_modulus(density, E0=self.E0, penal=self.penal, Emin=self.Emin)

    def element_stiffness(self, backend: str = "cpp") -> np.ndarray:
        """Unit-modulus element stiffness (8, 8) of this Poisson's ratio and thickness."""
        return element_stiffness(self.nu, self.thickness, backend=backend)


def _material_of(
    material: Material | None,
    E0: float | None,
    nu: float | None,
    penal: float | None,
    Emin: float | None,
    h: float | None,
    thickness: float | None,
) -> Material:
    """The material of a call: ``material``, or the one its keyword fields spell."""
    fields = {"E0": E0, "nu": nu, "penal": penal, "Emin": Emin, "h": h, "thickness": thickness}
    given = {name: value for name, value in fields.items() if value is not None}
    if material is None:
        return Material(**given)
    if not isinstance(material, Material):
        raise TypeError(f"material must be a femsr.fem.Material, got {type(material).__name__}")
    if given:
        raise ValueError(
            f"give the material either as material= or as keywords, not both: got material "
            f"and {sorted(given)}"
        )
    return material


# ---------------------------------------------------------------------------------------------
# Element level


def element_stiffness(
    nu: float = 0.3, thickness: float = 1.0, *, backend: str = "cpp"
) -> np.ndarray:
    """Unit-modulus stiffness of one Q4 plane-stress pixel.

    Parameters
    ----------
    nu : float
        Poisson's ratio.
    thickness : float
        Out-of-plane thickness (mm).
    backend : {"cpp", "python"}
        Compiled kernel or its numpy twin.

    Returns
    -------
    ndarray, shape (8, 8)
        Stiffness for ``E = 1``; local nodes bottom-left, bottom-right, top-right, top-left, each
        with its (x, y) DOFs. A square element's stiffness does not depend on its side.

    See Also
    --------
    femsr.reference.fem.element_stiffness : the numpy twin.

    Examples
    --------
    >>> ke = element_stiffness(0.3)
    >>> bool(np.allclose(ke, ke.T)), bool(np.allclose(ke.sum(axis=1), 0))
    (True, True)
    """
    check_backend(backend)
    return _kernels.element_stiffness(nu, thickness, backend)


def rigid_body_modes(nodes: np.ndarray, nx: int, h: float = 1.0) -> np.ndarray:
    """The three plane rigid-body modes (x, y translation, rotation) at grid nodes.

    Parameters
    ----------
    nodes : ndarray of int
        Grid node numbers ``i*(nx+1)+j``.
    nx : int
        Elements per image row.
    h : float
        Pixel side (mm).

    Returns
    -------
    ndarray, shape (2*len(nodes), 3)
        Columns in the DOF order of ``nodes``; the rotation is about the nodes' centroid, so the
        columns are well scaled.
    """
    i, j = np.divmod(np.asarray(nodes), nx + 1)
    x = (j - j.mean()) * h
    y = -(i - i.mean()) * h
    modes = np.zeros((2 * len(x), 3))
    modes[0::2, 0] = 1.0
    modes[1::2, 1] = 1.0
    modes[0::2, 2] = -y
    modes[1::2, 2] = x
    return modes


# ---------------------------------------------------------------------------------------------
# Assembly


def _node_mask(active: np.ndarray) -> np.ndarray:
    """Nodes touched by at least one active element, (ny+1, nx+1)."""
    padded = np.pad(active.astype(bool), 1)
    return padded[:-1, :-1] | padded[:-1, 1:] | padded[1:, :-1] | padded[1:, 1:]


@functools.lru_cache(maxsize=4)
def _grid_assembler(shape: tuple[int, int], mask_bytes: bytes, backend: str) -> _kernels.Assembler:
    """Assembler on every grid node; cached per mask (the compiled one holds its pattern)."""
    active = np.frombuffer(mask_bytes, dtype=np.uint8).reshape(shape)
    nodemap = np.arange((shape[0] + 1) * (shape[1] + 1), dtype=np.int32)
    return _kernels.Assembler(active, nodemap, None, backend)


def assemble(
    density: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    material: Material | None = None,
    E0: float | None = None,
    nu: float | None = None,
    penal: float | None = None,
    Emin: float | None = None,
    h: float | None = None,
    thickness: float | None = None,
    backend: str = "cpp",
) -> sp.csr_matrix:
    """Global stiffness matrix of a density image.

    Parameters
    ----------
    density : ndarray, shape (ny, nx)
        Element densities in [0, 1].
    mask : ndarray of bool, shape (ny, nx), optional
        Elements in the model; the others contribute nothing. Default: all.
    material : Material, optional
        Tissue law and geometry. Default: ``Material()`` with the keyword fields below.
    E0, nu, penal, Emin, h, thickness : float, optional
        The fields of the :class:`Material`, for a call without ``material``.
    backend : {"cpp", "python"}
        ``"cpp"`` writes CSR straight from a pattern cached per mask, in parallel;
        ``"python"`` is the top88-style COO assembly of :func:`femsr.reference.fem.assemble`.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (ndof, ndof)
        ``ndof = 2*(ny+1)*(nx+1)``: rows and columns are all grid DOFs; rows of nodes that no
        masked-in element touches are empty. Columns are sorted.

    Raises
    ------
    TypeError, ValueError
        On a density or mask of the wrong type, shape or range, an empty mask, or a bad
        material.

    See Also
    --------
    femsr.reference.fem.assemble : the numpy twin.

    Examples
    --------
    >>> K = assemble(np.ones((2, 3)))
    >>> K.shape
    (24, 24)
    >>> bool(abs(K - K.T).max() < 1e-12)
    True
    """
    check_backend(backend)
    density = check_density(density)
    active = check_mask(mask, density.shape)
    material = _material_of(material, E0, nu, penal, Emin, h, thickness)
    assembler = _grid_assembler(density.shape, active.tobytes(), backend)
    return assembler(material.youngs_modulus(density), material.element_stiffness(backend))


def element_energies(
    u: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    nu: float = 0.3,
    thickness: float = 1.0,
    backend: str = "cpp",
) -> np.ndarray:
    """Unit-modulus strain energies ``u_eᵀ k0 u_e`` of every element.

    Parameters
    ----------
    u : ndarray, shape (ncases, ny+1, nx+1, 2)
        Nodal displacements (mm), as :func:`solve` returns them.
    mask : ndarray of bool, shape (ny, nx), optional
        Elements in the model; the others get 0.
    nu, thickness : float
        Poisson's ratio and thickness (mm) of ``k0 = element_stiffness(nu, thickness)``.
    backend : {"cpp", "python"}
        Compiled kernel or its numpy twin.

    Returns
    -------
    ndarray, shape (ncases, ny, nx)
        Twice the strain energy of each element at ``E = 1``: the compliance of a case is
        ``(youngs_modulus(density) * energies).sum()``, and ``-penal * density**(penal-1) *
        (E0 - Emin) * energies`` its density sensitivity.

    See Also
    --------
    femsr.reference.fem.element_energies : the numpy twin.

    Examples
    --------
    >>> u = np.zeros((1, 3, 3, 2)); u[0, :, :, 0] = 0.1  # a rigid shift stores no energy
    >>> bool(abs(element_energies(u)).max() < 1e-15)
    True
    """
    check_backend(backend)
    u = check_finite_array("u", u, 4)
    ncases, ny1, nx1, two = u.shape
    if two != 2 or ny1 < 2 or nx1 < 2:
        raise ValueError(f"u must have shape (ncases, ny+1, nx+1, 2), got {u.shape}")
    active = check_mask(mask, (ny1 - 1, nx1 - 1))
    ke = element_stiffness(nu, thickness, backend=backend)
    energies = _kernels.element_energies(active, ke, u.reshape(ncases, -1), backend)
    return energies.reshape(ncases, ny1 - 1, nx1 - 1)


# ---------------------------------------------------------------------------------------------
# Solving


def _rigid_rows(i: np.ndarray, j: np.ndarray, axis: int, shape: tuple[int, int]) -> np.ndarray:
    """Rows of the rigid-body modes at DOFs ``axis`` of nodes (i, j), scaled to the grid."""
    x = (j - shape[1] / 2.0) / shape[1]
    y = -(i - shape[0] / 2.0) / shape[0]
    rows = np.zeros((len(i), 3))
    rows[:, axis] = 1.0
    rows[:, 2] = -y if axis == 0 else x
    return rows


def _check_held(active: np.ndarray, fixed: np.ndarray) -> None:
    """Raise if part of the model can move as a rigid body.

    Parts are elements joined through shared edges; two parts can only touch at corner nodes,
    which act as hinges. A part is held when the rigid-body modes restricted to its constraints
    have rank 3, its constraints being its own fixed DOFs and both DOFs of every node it shares
    with a part already held. Held parts are found by growing from the self-supported ones.
    """
    shape = fixed.shape[:2]
    labels, nparts = ndi.label(active)
    gram = np.zeros((nparts + 1, 3, 3))
    padded = np.pad(labels, 1)
    corners = np.stack([padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]])
    node_part = corners.max(axis=0)
    # Hinge nodes: a node whose elements belong to two parts (at most two in a pixel grid).
    low = np.where(corners > 0, corners, nparts + 1).min(axis=0)
    hinge = (node_part > 0) & (low != node_part)
    for axis in (0, 1):
        i, j = np.nonzero(fixed[:, :, axis] & (node_part > 0))
        rows = _rigid_rows(i, j, axis, shape)
        outer = rows[:, :, None] * rows[:, None, :]
        np.add.at(gram, node_part[i, j], outer)
        at_hinge = hinge[i, j]  # a support at a hinge holds both parts
        np.add.at(gram, low[i, j][at_hinge], outer[at_hinge])
    hinge_i, hinge_j = np.nonzero(hinge)
    hinge_x = _rigid_rows(hinge_i, hinge_j, 0, shape)
    hinge_y = _rigid_rows(hinge_i, hinge_j, 1, shape)
    hinge_gram = (
        hinge_x[:, :, None] * hinge_x[:, None, :] + hinge_y[:, :, None] * hinge_y[:, None, :]
    )
    pairs = np.stack([low[hinge_i, hinge_j], node_part[hinge_i, hinge_j]], axis=1)

    def rank3(matrix: np.ndarray) -> bool:
        return bool(np.linalg.eigvalsh(matrix)[0] > 1e-12 * max(1.0, np.abs(matrix).max()))

    held = np.zeros(nparts + 1, dtype=bool)
    held[1:] = [rank3(g) for g in gram[1:]]
    changed = True
    while changed:
        changed = False
        for part in np.flatnonzero(~held[1:]) + 1:
            touching = ((pairs[:, 0] == part) & held[pairs[:, 1]]) | (
                (pairs[:, 1] == part) & held[pairs[:, 0]]
            )
            if touching.any() and rank3(gram[part] + hinge_gram[touching].sum(axis=0)):
                held[part] = changed = True
    floating = np.flatnonzero(~held[1:]) + 1
    if len(floating):
        r, c = np.argwhere(labels == floating[0])[0]
        raise ValueError(
            f"the structure is not held: {len(floating)} of {nparts} part(s) can move as a rigid "
            f"body or turn about a corner hinge under the fixed DOFs (one contains element "
            f"({r}, {c})); fix at least two nodes of every part, or join the parts along an edge"
        )


class Solver:
    """Reusable linear-elastic solver for one mask and one set of fixed DOFs.

    It keeps the sparsity pattern, the AMG hierarchy and the last displacements between calls,
    which is what topology optimization needs: each :meth:`solve` refills the values for the new
    density, warm-starts CG from the previous displacements, and reuses the hierarchy while it
    still works (see ``rebuild_ratio``).

    Parameters
    ----------
    fixed : ndarray of bool, shape (ny+1, nx+1, 2)
        Prescribed-zero DOFs.
    mask : ndarray of bool, shape (ny, nx), optional
        Elements in the model. Nodes that no masked-in element touches are not unknowns.
    material : Material, optional
        Tissue law and geometry. Default: ``Material()`` with the keyword fields below.
    E0, nu, penal, Emin, h, thickness : float, optional
        The fields of the :class:`Material`, for a solver made without ``material``.
    backend : {"cpp", "python"}
        Assembly path: compiled CSR fill into a cached pattern, or the numpy twin's COO assembly.
    tol : float
        Relative residual ``||K u - f|| / ||f||`` that CG must reach.
    maxiter : int
        CG iteration limit per load case.
    direct_below : int
        Systems with at most this many unknowns are factorized (SuperLU) instead of solved by CG.
    method : {"auto", "gmg", "amg", "direct"}
        ``"gmg"``: CG preconditioned by a geometric multigrid V-cycle on the pixel hierarchy
        (Galerkin coarse operators, Chebyshev-Jacobi smoothing; compiled, ``backend="cpp"``
        only); ``"amg"``: CG preconditioned by pyamg smoothed aggregation with the rigid-body
        modes; ``"direct"``: SuperLU in nested-dissection order with diagonal pivots.
        ``"auto"`` takes the direct solve up to ``direct_below`` unknowns, else GMG (AMG with
        ``backend="python"``): on crisp designs the factorization wins clearly below 500k
        unknowns, breaks even with GMG near 900k at five times its memory, and loses above
        (``benchmarks/RESULTS.md``).
    rebuild_ratio : float
        AMG only: the hierarchy built for an earlier density is kept as preconditioner until a
        solve needs more than ``rebuild_ratio`` times the CG iterations seen right after the
        last build; then it is rebuilt for the next call. The GMG hierarchy is rebuilt for
        every density (it is cheap).
    gmg_options : mapping, optional
        Overrides of :data:`GMG_OPTIONS` (smoothing and coarsening of the GMG V-cycle).
    direct_solver : {"superlu", "pardiso"}
        The factorization of direct solves: scipy's SuperLU (in nested-dissection order), or
        MKL PARDISO through ``pypardiso`` (``pip install femsr[pardiso]``; Cholesky in its own
        METIS order, threads as ``MKL_NUM_THREADS`` or ``OMP_NUM_THREADS`` say): on a crisp
        femur at 50 µm (1.8M unknowns) 11.3 s on one core, 8.0 s on two, 3.6 GB, where SuperLU
        takes 26 s and 5.6 GB. The solver's later solves reuse PARDISO's analysis of its
        sparsity (ordering and symbolic factorization, about half of that time).

    Raises
    ------
    ValueError
        On bad shapes or values, a structure that is not held by ``fixed``, or
        ``direct_solver="pardiso"`` without ``pypardiso``.

    See Also
    --------
    femsr.solvers : the strategies behind ``method`` and ``direct_solver``.
    """

    def __init__(
        self,
        fixed: np.ndarray,
        *,
        mask: np.ndarray | None = None,
        material: Material | None = None,
        E0: float | None = None,
        nu: float | None = None,
        penal: float | None = None,
        Emin: float | None = None,
        h: float | None = None,
        thickness: float | None = None,
        backend: str = "cpp",
        tol: float = 1e-8,
        maxiter: int = 5000,
        direct_below: int = 500_000,
        method: str = "auto",
        rebuild_ratio: float = 1.5,
        gmg_options: Mapping[str, Any] | None = None,
        direct_solver: str = "superlu",
    ) -> None:
        check_backend(backend)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if direct_solver not in DIRECT_SOLVERS:
            raise ValueError(
                f"direct_solver must be one of {DIRECT_SOLVERS}, got {direct_solver!r}"
            )
        if direct_solver == "pardiso" and importlib.util.find_spec("pypardiso") is None:
            raise ValueError("direct_solver 'pardiso' needs pypardiso: pip install femsr[pardiso]")
        self.direct_solver = direct_solver
        if method == "gmg" and backend != "cpp":
            raise ValueError("method 'gmg' needs backend 'cpp' (its V-cycle is compiled)")
        if not 0 < tol < 1:
            raise ValueError(f"tol must lie in (0, 1), got {tol}")
        fixed = check_fixed(fixed)
        self.shape = (fixed.shape[0] - 1, fixed.shape[1] - 1)
        self.active = check_mask(mask, self.shape)
        self.material = _material_of(material, E0, nu, penal, Emin, h, thickness)
        self.backend = backend
        self.tol = tol
        self.maxiter = maxiter
        self.rebuild_ratio = rebuild_ratio
        unknown = set(gmg_options or {}) - set(GMG_OPTIONS)
        if unknown:
            raise ValueError(f"unknown gmg_options {sorted(unknown)}; known: {sorted(GMG_OPTIONS)}")
        self.gmg_options = {**GMG_OPTIONS, **(gmg_options or {})}

        node_in = _node_mask(self.active)
        _check_held(self.active, fixed)
        self.nodes = np.flatnonzero(node_in.ravel())
        self.nodemap = np.full(node_in.size, -1, dtype=np.int32)
        self.nodemap[self.nodes] = np.arange(len(self.nodes), dtype=np.int32)
        self.grid_fixed = np.ascontiguousarray(fixed & node_in[:, :, None], dtype=np.uint8)
        self.fixed = self.grid_fixed.reshape(-1, 2)[self.nodes].ravel().astype(bool)
        self.nunknowns = 2 * len(self.nodes) - int(self.fixed.sum())
        if method == "auto":
            iterative = "gmg" if backend == "cpp" else "amg"
            method = "direct" if self.nunknowns <= direct_below else iterative
        self.method = method

        self.ke = self.material.element_stiffness(backend)
        self.assembler = _kernels.Assembler(
            self.active, self.nodemap, self.grid_fixed.ravel(), backend
        )
        self._strategy = self._make_strategy()
        self._last = np.zeros((0, 0))

    def _make_strategy(self) -> Strategy:
        if self.method == "direct" and self.direct_solver == "pardiso":
            return Pardiso(self.backend)
        if self.method == "direct":
            return SuperLU(self.nodemap, self.shape)
        if self.method == "gmg":
            return GmgCG(self.assembler, self.ke, self.gmg_options, self.tol, self.maxiter)
        modes = rigid_body_modes(self.nodes, self.shape[1], self.material.h)
        modes[self.fixed] = 0.0
        return AmgCG(modes, self.tol, self.maxiter, self.rebuild_ratio)

    def _loads(self, forces: np.ndarray) -> np.ndarray:
        forces = check_finite_array("forces", forces, 4)
        if forces.shape[1:] != (*np.add(self.shape, 1), 2) or forces.shape[0] < 1:
            raise ValueError(
                f"forces must have shape (ncases, {self.shape[0] + 1}, {self.shape[1] + 1}, 2), "
                f"got {forces.shape}"
            )
        flat = forces.reshape(len(forces), -1, 2)
        outside = self.nodemap < 0
        if np.any(flat[:, outside]):
            raise ValueError("forces act on nodes that no element of the mask touches")
        loads = flat[:, self.nodes].reshape(len(forces), -1)
        loads[:, self.fixed] = 0.0
        return loads

    def solve(self, density: np.ndarray, forces: np.ndarray) -> np.ndarray:
        """Displacements of every load case for a density image.

        Parameters
        ----------
        density : ndarray, shape (ny, nx)
            Element densities in [0, 1].
        forces : ndarray, shape (ncases, ny+1, nx+1, 2)
            Nodal forces (N); forces on fixed DOFs go into the supports.

        Returns
        -------
        ndarray, shape (ncases, ny+1, nx+1, 2)
            Nodal displacements (mm), zero at nodes outside the model and at fixed DOFs.

        Raises
        ------
        ValueError
            On bad input, or forces on nodes outside the model.
        ConvergenceError
            When CG does not reach ``tol`` in ``maxiter`` iterations.
        """
        density = check_density(density)
        if density.shape != self.shape:
            raise ValueError(f"density must have shape {self.shape}, got {density.shape}")
        loads = self._loads(forces)
        stats = SolveStats(self.method)
        start = time.perf_counter()
        modulus = self.material.youngs_modulus(density)
        matrix = self.assembler(modulus, self.ke)
        stats.assembly_seconds = time.perf_counter() - start
        if self._last.shape != loads.shape:
            self._last = np.zeros_like(loads)
        start = time.perf_counter()
        solution = self._strategy.solve(matrix, modulus, loads, self._last, stats)
        stats.solve_seconds = time.perf_counter() - start - stats.setup_seconds
        self._last = solution
        self.stats = stats
        u = np.zeros((len(loads), (self.shape[0] + 1) * (self.shape[1] + 1), 2))
        u[:, self.nodes] = solution.reshape(len(loads), -1, 2)
        return u.reshape(len(loads), self.shape[0] + 1, self.shape[1] + 1, 2)


def solve(
    density: np.ndarray,
    forces: np.ndarray,
    fixed: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    material: Material | None = None,
    E0: float | None = None,
    nu: float | None = None,
    penal: float | None = None,
    Emin: float | None = None,
    h: float | None = None,
    thickness: float | None = None,
    backend: str = "cpp",
    tol: float = 1e-8,
    maxiter: int = 5000,
    direct_below: int = 500_000,
    method: str = "auto",
) -> np.ndarray:
    """Nodal displacements of a density image under one or more load cases.

    A one-shot :class:`Solver`: a sparse direct solve for systems of at most ``direct_below``
    unknowns, else CG preconditioned by the geometric multigrid V-cycle (``method="gmg"``) or by
    pyamg smoothed aggregation with the rigid-body modes (``method="amg"``, the default with
    ``backend="python"``); one preconditioner serves all load cases.

    Parameters
    ----------
    density : ndarray, shape (ny, nx)
        Element densities in [0, 1].
    forces : ndarray, shape (ncases, ny+1, nx+1, 2)
        Nodal forces (N), (x right, y up).
    fixed : ndarray of bool, shape (ny+1, nx+1, 2)
        Prescribed-zero DOFs.
    mask, material, E0, nu, penal, Emin, h, thickness, backend, tol, maxiter, direct_below, method
        As for :class:`Solver`.

    Returns
    -------
    ndarray, shape (ncases, ny+1, nx+1, 2)
        Displacements (mm): ux to the right, uy upward.

    Raises
    ------
    TypeError, ValueError
        On bad input, or a structure that ``fixed`` does not hold.
    ConvergenceError
        When CG does not converge.

    Examples
    --------
    A 1 mm steel-like bar, clamped on its left edge, pulled by 1 N on its right edge:

    >>> ny, nx = 2, 8
    >>> fixed = np.zeros((ny + 1, nx + 1, 2), bool); fixed[:, 0] = True
    >>> forces = np.zeros((1, ny + 1, nx + 1, 2)); forces[0, :, -1, 0] = [0.25, 0.5, 0.25]
    >>> u = solve(np.ones((ny, nx)), forces, fixed, material=Material(E0=200e3, nu=0.0))
    >>> float(round(u[0, 1, -1, 0] / (1 * 8 / (200e3 * 2)), 6))  # F L / (E A)
    1.0
    """
    solver = Solver(
        fixed,
        mask=mask,
        material=_material_of(material, E0, nu, penal, Emin, h, thickness),
        backend=backend,
        tol=tol,
        maxiter=maxiter,
        direct_below=direct_below,
        method=method,
    )
    return solver.solve(density, forces)
