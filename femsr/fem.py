"""Linear-elastic finite elements on pixel grids.

One pixel is one bilinear Q4 plane-stress element of side ``h`` (mm) and thickness ``thickness``
(mm). Images are ``(ny, nx)`` arrays with row 0 at the top. Node ``(i, j)`` is the corner at grid
row ``i`` (from the top) and column ``j``; it has the DOFs ``2*(i*(nx+1)+j)`` (x, to the right) and
``+1`` (y, upward). Nodal arrays are ``(ny+1, nx+1, 2)`` with the last axis (x, y), so a nodal
array's ``ravel()`` is in DOF order.

The tissue law is modified SIMP: ``E = Emin + density**penal * (E0 - Emin)``. With ``E0`` in MPa,
lengths in mm and forces in N, displacements come out in mm and energies in N·mm.

Every compiled kernel has a pure numpy twin in :mod:`femsr.reference.fem`, selected by
``backend="python"``.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from femsr import _core
from femsr.reference import fem as ref

__all__ = [
    "ConvergenceError",
    "Solver",
    "assemble",
    "element_energies",
    "element_stiffness",
    "rigid_body_modes",
    "solve",
    "youngs_modulus",
]

BACKENDS = ("cpp", "python")
_INDEX_LIMIT = np.iinfo(np.int32).max
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


class ConvergenceError(RuntimeError):
    """An iterative solve did not reach its tolerance within its iteration limit."""


# ---------------------------------------------------------------------------------------------
# Input checks


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _check_finite_array(name: str, value: object, ndim: int) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {value.shape}")
    if not np.issubdtype(value.dtype, np.floating) and not np.issubdtype(value.dtype, np.integer):
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    array = np.ascontiguousarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def check_density(density: object) -> np.ndarray:
    """Validate a density image and return it as C-contiguous float64 (ny, nx)."""
    array = _check_finite_array("density", density, 2)
    if array.size == 0:
        raise ValueError(f"density must not be empty, got shape {array.shape}")
    low, high = array.min(), array.max()
    if low < 0.0 or high > 1.0:
        raise ValueError(f"density must lie in [0, 1], got values in [{low:g}, {high:g}]")
    return array


def check_mask(mask: object, shape: tuple[int, int]) -> np.ndarray:
    """Validate an element mask against an image shape; ``None`` means all elements."""
    if mask is None:
        return np.ones(shape, dtype=np.uint8)
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a numpy array, got {type(mask).__name__}")
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be a bool array, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"mask must have the image shape {shape}, got {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: no element is in the model")
    return np.ascontiguousarray(mask, dtype=np.uint8)


@dataclass(frozen=True)
class _Material:
    E0: float
    nu: float
    penal: float
    Emin: float
    h: float
    thickness: float


def _material(
    E0: float, nu: float, penal: float, Emin: float | None, h: float, thickness: float
) -> _Material:
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
    return _Material(float(E0), float(nu), float(penal), float(Emin), float(h), float(thickness))


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

    Examples
    --------
    >>> ke = element_stiffness(0.3)
    >>> bool(np.allclose(ke, ke.T)), bool(np.allclose(ke.sum(axis=1), 0))
    (True, True)
    """
    _check_backend(backend)
    if backend == "python":
        return ref.element_stiffness(nu, thickness)
    ke = np.empty((8, 8))
    _core.element_stiffness(float(nu), float(thickness), ke)
    return ke


def youngs_modulus(
    density: np.ndarray, *, E0: float = 1.0, penal: float = 3.0, Emin: float | None = None
) -> np.ndarray:
    """Element modulus of modified SIMP: ``Emin + density**penal * (E0 - Emin)`` (MPa)."""
    Emin = 1e-9 * E0 if Emin is None else Emin
    return Emin + np.power(density, penal) * (E0 - Emin)


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


@dataclass(frozen=True)
class _BlockPattern:
    """2x2-block sparsity of the active elements on the nodes of ``nodemap``."""

    nodemap: np.ndarray  # system node of every grid node, -1 where left out
    bindptr: np.ndarray
    bindices: np.ndarray

    @property
    def nnodes(self) -> int:
        return len(self.bindptr) - 1


def _block_pattern(active: np.ndarray, nodemap: np.ndarray) -> _BlockPattern:
    nnodes = int(nodemap.max()) + 1
    counts = np.zeros(nnodes, dtype=np.int32)
    _core.block_row_counts(active, nodemap, counts)
    total = int(counts.sum(dtype=np.int64))
    if 4 * total > _INDEX_LIMIT:
        raise ValueError(f"the system has {4 * total} entries, over the int32 index limit")
    bindptr = np.zeros(nnodes + 1, dtype=np.int32)
    np.cumsum(counts, out=bindptr[1:])
    bindices = np.empty(total, dtype=np.int32)
    _core.block_fill_indices(active, nodemap, bindptr, bindices)
    return _BlockPattern(nodemap, bindptr, bindices)


def _csr_pattern(
    active: np.ndarray, nodemap: np.ndarray
) -> tuple[_BlockPattern, np.ndarray, np.ndarray]:
    """Block pattern with its scalar CSR form (indptr, indices)."""
    pattern = _block_pattern(active, nodemap)
    indptr = np.empty(2 * pattern.nnodes + 1, dtype=np.int32)
    indices = np.empty(4 * len(pattern.bindices), dtype=np.int32)
    _core.csr_from_blocks(pattern.bindptr, pattern.bindices, indptr, indices)
    return pattern, indptr, indices


@functools.lru_cache(maxsize=4)
def _grid_pattern(
    shape: tuple[int, int], mask_bytes: bytes
) -> tuple[_BlockPattern, np.ndarray, np.ndarray]:
    """CSR pattern on every grid node; cached per mask."""
    active = np.frombuffer(mask_bytes, dtype=np.uint8).reshape(shape)
    return _csr_pattern(active, np.arange((shape[0] + 1) * (shape[1] + 1), dtype=np.int32))


def assemble(
    density: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    E0: float = 1.0,
    nu: float = 0.3,
    penal: float = 3.0,
    Emin: float | None = None,
    h: float = 1.0,
    thickness: float = 1.0,
    backend: str = "cpp",
) -> sp.csr_matrix:
    """Global stiffness matrix of a density image.

    Parameters
    ----------
    density : ndarray, shape (ny, nx)
        Element densities in [0, 1].
    mask : ndarray of bool, shape (ny, nx), optional
        Elements in the model; the others contribute nothing. Default: all.
    E0, nu, penal, Emin : float
        Tissue modulus (MPa), Poisson's ratio, SIMP exponent, void modulus (default ``1e-9*E0``).
    h : float
        Pixel side (mm). The stiffness of square Q4 pixels does not depend on it; it is accepted
        so every FE call takes the same material arguments.
    thickness : float
        Out-of-plane thickness (mm).
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
        On a density or mask of the wrong type, shape or range, or an empty mask.

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
    _check_backend(backend)
    density = check_density(density)
    active = check_mask(mask, density.shape)
    material = _material(E0, nu, penal, Emin, h, thickness)
    modulus = youngs_modulus(density, E0=material.E0, penal=material.penal, Emin=material.Emin)
    ke = element_stiffness(material.nu, material.thickness, backend=backend)
    ny, nx = density.shape
    ndof = 2 * (ny + 1) * (nx + 1)
    if backend == "python":
        dofmap = np.arange(ndof)
        return ref.assemble(active, modulus, ke, dofmap, ndof)
    pattern, indptr, indices = _grid_pattern(density.shape, active.tobytes())
    data = np.empty(len(indices))
    _core.fill_values(active, modulus, ke, pattern.nodemap, None, pattern.bindptr, data)
    return sp.csr_matrix((data, indices, indptr), shape=(ndof, ndof))


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

    Examples
    --------
    >>> u = np.zeros((1, 3, 3, 2)); u[0, :, :, 0] = 0.1  # a rigid shift stores no energy
    >>> bool(abs(element_energies(u)).max() < 1e-15)
    True
    """
    _check_backend(backend)
    u = _check_finite_array("u", u, 4)
    ncases, ny1, nx1, two = u.shape
    if two != 2 or ny1 < 2 or nx1 < 2:
        raise ValueError(f"u must have shape (ncases, ny+1, nx+1, 2), got {u.shape}")
    active = check_mask(mask, (ny1 - 1, nx1 - 1))
    ke = element_stiffness(nu, thickness, backend=backend)
    flat = u.reshape(ncases, -1)
    if backend == "python":
        energies = ref.element_energies(active, ke, flat)
    else:
        energies = np.empty((ncases, (ny1 - 1) * (nx1 - 1)))
        _core.element_energies(active, ke, flat, energies)
    return energies.reshape(ncases, ny1 - 1, nx1 - 1)


# ---------------------------------------------------------------------------------------------
# Solving


def _check_fixed(fixed: object) -> np.ndarray:
    if not isinstance(fixed, np.ndarray):
        raise TypeError(f"fixed must be a numpy array, got {type(fixed).__name__}")
    if fixed.dtype != np.bool_:
        raise TypeError(f"fixed must be a bool array, got dtype {fixed.dtype}")
    if fixed.ndim != 3 or fixed.shape[2] != 2 or fixed.shape[0] < 2 or fixed.shape[1] < 2:
        raise ValueError(f"fixed must have shape (ny+1, nx+1, 2), got {fixed.shape}")
    return fixed


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


@dataclass
class SolveStats:
    """What one call of :meth:`Solver.solve` did."""

    method: str
    iterations: list[int] = field(default_factory=list)
    setup_seconds: float = 0.0
    assembly_seconds: float = 0.0
    solve_seconds: float = 0.0
    rebuilt: bool = False


def dissection_order(ny: int, nx: int, leaf: int = 64) -> np.ndarray:
    """Nested-dissection order of the nodes of an ``ny x nx`` grid (numbered row by row).

    Each block is split by its middle row or column into two halves, ordered first, and the
    separator, ordered last: the fill of a sparse factorization of a grid problem grows as
    n log n in this order. On the 199x199 inner nodes of a crisp 200 px ROI, SuperLU factorizes
    in this order with diagonal pivots in 0.65 s and 13.9 M entries of L+U, against 1.8 s and
    24.5 M in its own COLAMD order.
    """
    grid = np.arange(ny * nx).reshape(ny, nx)

    def order(block: np.ndarray) -> list[np.ndarray]:
        if block.size <= leaf:
            return [block.ravel()]
        if block.shape[0] >= block.shape[1]:
            mid = block.shape[0] // 2
            return [*order(block[:mid]), *order(block[mid + 1 :]), block[mid]]
        mid = block.shape[1] // 2
        return [*order(block[:, :mid]), *order(block[:, mid + 1 :]), block[:, mid]]

    return np.concatenate(order(grid)) if grid.size else grid.ravel()


class _Pardiso:
    """One MKL PARDISO handle per process (pypardiso searches the disk for MKL each time it
    makes one: 0.2 s, 2 % of a 50 µm TO iteration), and which sparsity pattern it last
    analysed.

    PARDISO's analysis (the fill-reducing METIS order and the symbolic factorization) takes
    as long as the numeric factorization itself at 50 µm (3.5 s of 6.5 s on two cores), and
    depends on the pattern alone: a :class:`Solver` keeps its pattern, so its later solves
    skip it.
    """

    def __init__(self) -> None:
        import pypardiso

        self.handle = pypardiso.PyPardisoSolver(mtype=2)
        # Our own settings instead of MKL's defaults (iparm[0] = 0): the parallel nested
        # dissection (iparm[1] = 3) and no iterative refinement (a Cholesky factor of an SPD
        # matrix needs none). At 50 µm (1.8M unknowns, 2 threads) 6.9 s instead of 11.8 s.
        self.handle.iparm[0], self.handle.iparm[1], self.handle.iparm[7] = 1, 3, 0
        self.analysed: int | None = None  # the key of the pattern the handle holds

    def _phase(self, phase: int, upper: sp.csr_matrix, rhs: np.ndarray) -> np.ndarray:
        # pypardiso's own factorize/solve would redo the analysis on every new matrix and
        # hash or copy it; its _call_pardiso runs one phase.
        self.handle.set_phase(phase)
        return np.asarray(self.handle._call_pardiso(upper, rhs))

    def solve(
        self, upper: sp.csr_matrix, loads: np.ndarray, key: int, stats: SolveStats
    ) -> np.ndarray:
        """Solutions for the columns of ``loads`` of the SPD matrix whose upper triangle is
        ``upper``; ``key`` names its sparsity pattern."""
        import pypardiso

        start = time.perf_counter()
        rhs = np.asfortranarray(loads)
        upper.sort_indices()
        if not np.diff(upper.indptr).all():  # PARDISO crashes on an empty row
            raise ValueError("the stiffness matrix is singular: it has an empty row")
        try:
            if self.analysed != key:
                self.release()
                self._phase(11, upper, rhs)
                self.analysed, stats.rebuilt = key, True
            self._phase(22, upper, rhs)
            stats.setup_seconds = time.perf_counter() - start
            return self._phase(33, upper, rhs)
        except pypardiso.pardiso_wrapper.PyPardisoError as error:
            self.release()
            raise ValueError(f"the stiffness matrix is singular: {error}") from error
        finally:
            if self.analysed is not None:  # hand the factor's memory back; the analysis stays
                self._phase(0, upper, np.zeros(0))

    def release(self) -> None:
        """Free everything PARDISO holds, the analysis too."""
        self.handle.free_memory(everything=True)
        self.analysed = None


@functools.cache
def _pardiso() -> _Pardiso:
    return _Pardiso()


_PATTERN_KEYS = itertools.count()


def _upper_triangle(matrix: sp.csr_matrix, backend: str) -> sp.csr_matrix:
    """The entries on and above the diagonal, cut row by row (sp.triu goes through COO: 0.6 s at
    50 µm; the numpy twin, ``femsr.reference.fem.upper_triangle``, 0.45 s; compiled 0.05 s)."""
    if backend == "python":
        return ref.upper_triangle(matrix)
    matrix.sort_indices()
    parts = _core.upper_triangle(
        matrix.indptr.astype(np.int32, copy=False),
        matrix.indices.astype(np.int32, copy=False),
        matrix.data.astype(float, copy=False),
    )
    return sp.csr_matrix(parts, shape=matrix.shape)


def _solve_pardiso(
    matrix: sp.csr_matrix,
    loads: np.ndarray,
    stats: SolveStats,
    backend: str = "cpp",
    key: int | None = None,
) -> np.ndarray:
    """All cases at once by MKL PARDISO's Cholesky (real symmetric positive definite).
    ``key`` names the sparsity pattern: called again with the key of the call before, the
    analysis made then is kept."""
    upper = _upper_triangle(matrix, backend)  # PARDISO reads the upper triangle of symmetric types
    key = next(_PATTERN_KEYS) if key is None else key
    solution = _pardiso().solve(upper, np.ascontiguousarray(loads.T), key, stats)
    return np.ascontiguousarray(solution.reshape(len(loads[0]), -1).T)


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
    E0, nu, penal, Emin, h, thickness : float
        Material and geometry, as in :func:`assemble`.
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
    """

    def __init__(
        self,
        fixed: np.ndarray,
        *,
        mask: np.ndarray | None = None,
        E0: float = 1.0,
        nu: float = 0.3,
        penal: float = 3.0,
        Emin: float | None = None,
        h: float = 1.0,
        thickness: float = 1.0,
        backend: str = "cpp",
        tol: float = 1e-8,
        maxiter: int = 5000,
        direct_below: int = 500_000,
        method: str = "auto",
        rebuild_ratio: float = 1.5,
        gmg_options: Mapping[str, Any] | None = None,
        direct_solver: str = "superlu",
    ) -> None:
        _check_backend(backend)
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
        fixed = _check_fixed(fixed)
        self.shape = (fixed.shape[0] - 1, fixed.shape[1] - 1)
        self.active = check_mask(mask, self.shape)
        self.material = _material(E0, nu, penal, Emin, h, thickness)
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

        self.ke = element_stiffness(self.material.nu, self.material.thickness, backend=backend)
        self._pattern = _csr_pattern(self.active, self.nodemap) if backend == "cpp" else None
        self._modes = rigid_body_modes(self.nodes, self.shape[1], self.material.h)
        self._modes[self.fixed] = 0.0
        self._hierarchy: Any = None
        self._fresh_iterations = 0
        self._rebuild = True
        self._last = np.zeros((0, 0))
        self._order: np.ndarray | None = None  # DOFs in nested-dissection order (direct)
        self._pattern_key = next(_PATTERN_KEYS)  # PARDISO keeps the analysis of this pattern

    def _modulus(self, density: np.ndarray) -> np.ndarray:
        m = self.material
        return youngs_modulus(density, E0=m.E0, penal=m.penal, Emin=m.Emin)

    def _assemble(self, modulus: np.ndarray) -> sp.csr_matrix:
        n = 2 * len(self.nodes)
        if self._pattern is None:
            dofmap = np.stack([2 * self.nodemap, 2 * self.nodemap + 1], axis=1).ravel()
            dofmap[np.repeat(self.nodemap < 0, 2)] = -1
            matrix = ref.assemble(self.active, modulus, self.ke, dofmap, n)
            return ref.decouple(matrix, self.fixed)
        pattern, indptr, indices = self._pattern
        data = np.empty(len(indices))
        fixed = self.grid_fixed.ravel()
        _core.fill_values(self.active, modulus, self.ke, self.nodemap, fixed, pattern.bindptr, data)
        return sp.csr_matrix((data, indices, indptr), shape=(n, n))

    def _loads(self, forces: np.ndarray) -> np.ndarray:
        forces = _check_finite_array("forces", forces, 4)
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
        modulus = self._modulus(density)
        matrix = self._assemble(modulus)
        stats.assembly_seconds = time.perf_counter() - start
        if self._last.shape != loads.shape:
            self._last = np.zeros_like(loads)
        start = time.perf_counter()
        if self.method == "direct":
            solution = self._solve_direct(matrix, loads, stats)
        elif self.method == "gmg":
            solution = self._solve_gmg(matrix, modulus, loads, stats)
        else:
            solution = self._solve_amg(matrix, loads, stats)
        stats.solve_seconds = time.perf_counter() - start - stats.setup_seconds
        self._last = solution
        self.stats = stats
        u = np.zeros((len(loads), (self.shape[0] + 1) * (self.shape[1] + 1), 2))
        u[:, self.nodes] = solution.reshape(len(loads), -1, 2)
        return u.reshape(len(loads), self.shape[0] + 1, self.shape[1] + 1, 2)

    def _solve_direct(
        self, matrix: sp.csr_matrix, loads: np.ndarray, stats: SolveStats
    ) -> np.ndarray:
        if self.direct_solver == "pardiso":
            return _solve_pardiso(matrix, loads, stats, self.backend, self._pattern_key)
        start = time.perf_counter()
        if self._order is None:
            grid = self.nodemap[dissection_order(self.shape[0] + 1, self.shape[1] + 1)]
            grid = grid[grid >= 0]
            self._order = np.stack([2 * grid, 2 * grid + 1], axis=1).ravel()
        order = self._order
        try:
            # Symmetric positive definite: diagonal pivots keep the dissection order's fill
            # (4x faster than SuperLU's COLAMD on a 226k-unknown femur at 200 µm).
            factor = spla.splu(
                matrix[order][:, order].tocsc(),
                permc_spec="NATURAL",
                options={"SymmetricMode": True, "DiagPivotThresh": 0.01},
            )
        except RuntimeError as error:  # SuperLU reports a singular matrix this way
            raise ValueError(f"the stiffness matrix is singular: {error}") from error
        stats.setup_seconds = time.perf_counter() - start
        solution = np.empty_like(loads)
        solution[:, order] = factor.solve(np.ascontiguousarray(loads[:, order].T)).T
        return solution

    def _solve_gmg(
        self, matrix: sp.csr_matrix, modulus: np.ndarray, loads: np.ndarray, stats: SolveStats
    ) -> np.ndarray:
        # The hierarchy is rebuilt for every density: its Galerkin operators follow the new
        # moduli, and building costs about as much as two CG iterations.
        start = time.perf_counter()
        multigrid = _core.Multigrid(
            self.active,
            modulus,
            self.ke.ravel(),
            self.nodemap,
            self.grid_fixed.ravel(),
            matrix.indptr,
            matrix.indices,
            matrix.data,
            **self.gmg_options,
        )
        stats.setup_seconds = time.perf_counter() - start
        stats.rebuilt = True
        solution = self._last.copy()
        for case, b in enumerate(loads):
            iterations, residual = multigrid.cg(b, solution[case], self.tol, self.maxiter)
            stats.iterations.append(iterations)
            if residual > self.tol:
                raise ConvergenceError(
                    f"GMG-CG reached a relative residual of {residual:.2e} after {iterations} "
                    f"iterations, short of tol={self.tol:g} (load case {case}); the structure "
                    f"may be nearly floating, or raise maxiter"
                )
        return solution

    def _solve_amg(self, matrix: sp.csr_matrix, loads: np.ndarray, stats: SolveStats) -> np.ndarray:
        import pyamg

        if self._rebuild or self._hierarchy is None:
            start = time.perf_counter()
            self._hierarchy = pyamg.smoothed_aggregation_solver(
                matrix, B=self._modes, max_coarse=500, keep=False
            )
            stats.setup_seconds = time.perf_counter() - start
            stats.rebuilt = True
            self._rebuild = False
        preconditioner = self._hierarchy.aspreconditioner(cycle="V")
        solution = np.empty_like(loads)
        for case, b in enumerate(loads):
            count = [0]

            def step(_: np.ndarray, count: list[int] = count) -> None:
                count[0] += 1

            if not b.any():
                solution[case] = 0.0
                stats.iterations.append(0)
                continue
            x, info = spla.cg(
                matrix,
                b,
                x0=self._last[case],
                rtol=self.tol,
                atol=0.0,
                maxiter=self.maxiter,
                M=preconditioner,
                callback=step,
            )
            residual = np.linalg.norm(b - matrix @ x) / np.linalg.norm(b)
            if info != 0 or residual > 10 * self.tol:
                raise ConvergenceError(
                    f"AMG-CG reached a relative residual of {residual:.2e} after {count[0]} "
                    f"iterations, short of tol={self.tol:g} (load case {case}); the structure "
                    f"may be nearly floating, or raise maxiter"
                )
            solution[case] = x
            stats.iterations.append(count[0])
        worst = max(stats.iterations)
        if stats.rebuilt:
            self._fresh_iterations = max(worst, 1)
        elif worst > self.rebuild_ratio * self._fresh_iterations:
            self._rebuild = True
        return solution


def solve(
    density: np.ndarray,
    forces: np.ndarray,
    fixed: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    E0: float = 1.0,
    nu: float = 0.3,
    penal: float = 3.0,
    Emin: float | None = None,
    h: float = 1.0,
    thickness: float = 1.0,
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
    mask, E0, nu, penal, Emin, h, thickness, backend, tol, maxiter, direct_below, method
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
    >>> u = solve(np.ones((ny, nx)), forces, fixed, E0=200e3, nu=0.0)
    >>> float(round(u[0, 1, -1, 0] / (1 * 8 / (200e3 * 2)), 6))  # F L / (E A)
    1.0
    """
    solver = Solver(
        fixed,
        mask=mask,
        E0=E0,
        nu=nu,
        penal=penal,
        Emin=Emin,
        h=h,
        thickness=thickness,
        backend=backend,
        tol=tol,
        maxiter=maxiter,
        direct_below=direct_below,
        method=method,
    )
    return solver.solve(density, forces)
