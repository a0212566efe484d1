"""The linear solvers behind :class:`femsr.fem.Solver`, one class per strategy.

Each strategy solves ``K u = f`` for all load cases of one assembled system:

* :class:`SuperLU`: scipy's sparse LU in nested-dissection order with diagonal pivots;
* :class:`Pardiso`: MKL PARDISO's Cholesky through ``pypardiso``, its analysis kept per pattern;
* :class:`AmgCG`: CG preconditioned by pyamg smoothed aggregation, its hierarchy reused while it
  works;
* :class:`GmgCG`: CG preconditioned by the compiled geometric multigrid V-cycle.

They share one call, ``solve(matrix, modulus, loads, start, stats)``: the system matrix
(n, n), the element moduli it was assembled from, the loads (ncases, n), the displacements of
the last solve to start CG from, and the :class:`SolveStats` to fill.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from femsr import _kernels

__all__ = [
    "AmgCG",
    "ConvergenceError",
    "GmgCG",
    "Pardiso",
    "SolveStats",
    "SuperLU",
    "dissection_order",
]


class ConvergenceError(RuntimeError):
    """An iterative solve did not reach its tolerance within its iteration limit."""


@dataclass
class SolveStats:
    """What one call of :meth:`femsr.fem.Solver.solve` did."""

    method: str
    iterations: list[int] = field(default_factory=list)
    setup_seconds: float = 0.0
    assembly_seconds: float = 0.0
    solve_seconds: float = 0.0
    rebuilt: bool = False


class Strategy(Protocol):
    """What :class:`femsr.fem.Solver` asks of a linear solver."""

    def solve(
        self,
        matrix: sp.csr_matrix,
        modulus: np.ndarray,
        loads: np.ndarray,
        start: np.ndarray,
        stats: SolveStats,
    ) -> np.ndarray: ...


def dissection_order(ny: int, nx: int, leaf: int = 64) -> np.ndarray:
    """Nested-dissection order of the nodes of an ``ny x nx`` grid (numbered row by row).

    Each block is split by its middle row or column into two halves, ordered first, and the
    separator, ordered last: the fill of a sparse factorization of a grid problem grows as
    n log n in this order. On the 199x199 inner nodes of a crisp 200 px ROI, SuperLU factorizes
    in this order with diagonal pivots in 0.65 s and 13.9 M entries of L+U, against 1.8 s and
    24.5 M in its own COLAMD order.

    Examples
    --------
    A 3x3 grid is split by its middle row; that separator comes last:

    >>> dissection_order(3, 3, leaf=3).tolist()
    [0, 1, 2, 6, 7, 8, 3, 4, 5]
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


# ---------------------------------------------------------------------------------------------
# Direct


class SuperLU:
    """scipy's SuperLU in nested-dissection order with diagonal pivots.

    Parameters
    ----------
    nodemap : ndarray of int32, shape ((ny+1)*(nx+1),)
        System node of every grid node, -1 where left out.
    shape : tuple of int
        (ny, nx) elements of the grid.
    """

    def __init__(self, nodemap: np.ndarray, shape: tuple[int, int]) -> None:
        grid = nodemap[dissection_order(shape[0] + 1, shape[1] + 1)]
        grid = grid[grid >= 0]
        self.order = np.stack([2 * grid, 2 * grid + 1], axis=1).ravel()

    def solve(
        self,
        matrix: sp.csr_matrix,
        modulus: np.ndarray,
        loads: np.ndarray,
        start: np.ndarray,
        stats: SolveStats,
    ) -> np.ndarray:
        began = time.perf_counter()
        order = self.order
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
        stats.setup_seconds = time.perf_counter() - began
        solution = np.empty_like(loads)
        solution[:, order] = factor.solve(np.ascontiguousarray(loads[:, order].T)).T
        return solution


class _PardisoHandle:
    """One MKL PARDISO handle per process (pypardiso searches the disk for MKL each time it
    makes one: 0.2 s, 2 % of a 50 µm TO iteration), and which sparsity pattern it last
    analysed.

    PARDISO's analysis (the fill-reducing METIS order and the symbolic factorization) takes
    as long as the numeric factorization itself at 50 µm (3.5 s of 6.5 s on two cores), and
    depends on the pattern alone: a :class:`Pardiso` keeps its pattern, so its later solves
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
        # pypardiso has no public call for a single phase: factorize() runs the analysis and
        # the factorization together (phase 12) for every new matrix, after copying or hashing
        # it, and solve() compares each matrix with that copy. The analysis is half the time of
        # a 50 µm solve and depends on the pattern alone, so the phases are run one by one.
        # At 100 µm (0.9M unknowns, 2 cores) a factorization after the first took about 5.1 s so
        # (phase 22), 7.8 s by factorize(), and 6.5 s by factorize() given the first one's
        # fill-reducing order (iparm[4] = 1 with perm: the symbolic factorization is redone).
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
                self.handle.free_memory()

    def release(self) -> None:
        """Free everything PARDISO holds, the analysis too."""
        self.handle.free_memory(everything=True)
        self.analysed = None


@functools.cache
def _pardiso() -> _PardisoHandle:
    return _PardisoHandle()


_PATTERN_KEYS = itertools.count()


class Pardiso:
    """MKL PARDISO's Cholesky (real symmetric positive definite) of all cases at once.

    Each instance stands for one sparsity pattern: called again after a call of the same
    instance, the analysis made then is kept.

    Parameters
    ----------
    backend : {"cpp", "python"}
        Which kernel cuts the upper triangle PARDISO reads.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.key = next(_PATTERN_KEYS)

    def solve(
        self,
        matrix: sp.csr_matrix,
        modulus: np.ndarray,
        loads: np.ndarray,
        start: np.ndarray,
        stats: SolveStats,
    ) -> np.ndarray:
        # PARDISO reads the upper triangle of symmetric types.
        upper = _kernels.upper_triangle(matrix, self.backend)
        solution = _pardiso().solve(upper, np.ascontiguousarray(loads.T), self.key, stats)
        return np.ascontiguousarray(solution.reshape(len(loads[0]), -1).T)


# ---------------------------------------------------------------------------------------------
# Iterative


def _convergence_error(
    name: str, residual: float, iterations: int, tol: float, case: int
) -> ConvergenceError:
    return ConvergenceError(
        f"{name}-CG reached a relative residual of {residual:.2e} after {iterations} "
        f"iterations, short of tol={tol:g} (load case {case}); the structure "
        f"may be nearly floating, or raise maxiter"
    )


class AmgCG:
    """CG preconditioned by pyamg smoothed aggregation with the rigid-body modes.

    The hierarchy built for an earlier matrix is kept as preconditioner until a solve needs
    more than ``rebuild_ratio`` times the CG iterations seen right after the last build; then
    it is rebuilt for the next call.

    Parameters
    ----------
    modes : ndarray, shape (n, 3)
        Near-null space: the rigid-body modes, zero at fixed DOFs.
    tol, maxiter, rebuild_ratio
        As for :class:`femsr.fem.Solver`.
    """

    def __init__(self, modes: np.ndarray, tol: float, maxiter: int, rebuild_ratio: float) -> None:
        self.modes = modes
        self.tol = tol
        self.maxiter = maxiter
        self.rebuild_ratio = rebuild_ratio
        self._hierarchy: Any = None
        self._fresh_iterations = 0
        self._rebuild = True

    def solve(
        self,
        matrix: sp.csr_matrix,
        modulus: np.ndarray,
        loads: np.ndarray,
        start: np.ndarray,
        stats: SolveStats,
    ) -> np.ndarray:
        import pyamg

        if self._rebuild or self._hierarchy is None:
            began = time.perf_counter()
            self._hierarchy = pyamg.smoothed_aggregation_solver(
                matrix, B=self.modes, max_coarse=500, keep=False
            )
            stats.setup_seconds = time.perf_counter() - began
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
                x0=start[case],
                rtol=self.tol,
                atol=0.0,
                maxiter=self.maxiter,
                M=preconditioner,
                callback=step,
            )
            residual = np.linalg.norm(b - matrix @ x) / np.linalg.norm(b)
            if info != 0 or residual > 10 * self.tol:
                raise _convergence_error("AMG", residual, count[0], self.tol, case)
            solution[case] = x
            stats.iterations.append(count[0])
        worst = max(stats.iterations)
        if stats.rebuilt:
            self._fresh_iterations = max(worst, 1)
        elif worst > self.rebuild_ratio * self._fresh_iterations:
            self._rebuild = True
        return solution


class GmgCG:
    """CG preconditioned by the compiled geometric multigrid V-cycle of ``cpp/mg.hpp``.

    The hierarchy is rebuilt for every matrix: its Galerkin operators follow the new moduli,
    and building costs about as much as two CG iterations.

    Parameters
    ----------
    assembler : femsr._kernels.Assembler
        What assembles the system (compiled backend): its elements, node map and fixed DOFs.
    ke : ndarray, shape (8, 8)
        Unit-modulus element stiffness.
    options : mapping
        :data:`femsr.fem.GMG_OPTIONS` with the caller's overrides.
    tol, maxiter
        As for :class:`femsr.fem.Solver`.
    """

    def __init__(
        self,
        assembler: _kernels.Assembler,
        ke: np.ndarray,
        options: Mapping[str, Any],
        tol: float,
        maxiter: int,
    ) -> None:
        self.assembler = assembler
        self.ke = ke
        self.options = options
        self.tol = tol
        self.maxiter = maxiter

    def solve(
        self,
        matrix: sp.csr_matrix,
        modulus: np.ndarray,
        loads: np.ndarray,
        start: np.ndarray,
        stats: SolveStats,
    ) -> np.ndarray:
        began = time.perf_counter()
        multigrid = _kernels.multigrid(self.assembler, modulus, self.ke, matrix, self.options)
        stats.setup_seconds = time.perf_counter() - began
        stats.rebuilt = True
        solution = start.copy()
        for case, b in enumerate(loads):
            iterations, residual = multigrid.cg(b, solution[case], self.tol, self.maxiter)
            stats.iterations.append(iterations)
            if residual > self.tol:
                raise _convergence_error("GMG", residual, iterations, self.tol, case)
        return solution
