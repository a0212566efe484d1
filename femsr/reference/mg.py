"""Pure numpy/scipy twin of the geometric multigrid V-cycle of ``cpp/mg.cpp``.

The compiled hierarchy computes its Galerkin coarse operators element by element; this twin
forms the prolongation ``P`` as a sparse matrix and multiplies ``Pᵀ A P`` with scipy, so the
tests check the element-wise construction against the definition. Smoothing (Chebyshev on the
Jacobi-scaled operator), the Lanczos ``lmax`` estimate and the coarsest dense Cholesky repeat the
compiled steps, so one V-cycle agrees to round-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Level:
    matrix: sp.csr_matrix
    shape: tuple[int, int]  # elements (ny, nx) of the level's grid
    inv_diag: np.ndarray
    lmax: float
    prolongation: sp.csr_matrix | None = None  # from the next coarser level


def prolongation(
    shape: tuple[int, int], nodemap: np.ndarray | None, fixed: np.ndarray | None
) -> sp.csr_matrix:
    """Bilinear interpolation from the grid of ceil(ny/2) x ceil(nx/2) elements.

    Rows: the DOFs of the fine system (``nodemap`` numbering, or every grid node); rows of
    ``fixed`` fine DOFs (per grid DOF) are zero. Columns: every coarse grid DOF.
    """
    ny, nx = shape
    cy, cx = (ny + 1) // 2, (nx + 1) // 2
    i, j = np.divmod(np.arange((ny + 1) * (nx + 1)), nx + 1)
    rows = np.arange(len(i)) if nodemap is None else nodemap
    keep = rows >= 0
    entries: list[tuple[np.ndarray, ...]] = []
    for coarse_i, wi in ((i // 2, np.where(i % 2, 0.5, 1.0)), ((i + 1) // 2, 0.5 * (i % 2))):
        for coarse_j, wj in ((j // 2, np.where(j % 2, 0.5, 1.0)), ((j + 1) // 2, 0.5 * (j % 2))):
            weight = wi * wj
            take = keep & (weight > 0)
            node = coarse_i * (cx + 1) + coarse_j
            for d in range(2):
                free = take.copy()
                if fixed is not None:
                    free &= ~fixed.reshape(-1, 2)[:, d].astype(bool)
                entries.append((2 * rows[free] + d, 2 * node[free] + d, weight[free]))
    r, c, w = (np.concatenate(parts) for parts in zip(*entries, strict=True))
    nrows = 2 * (int(rows.max()) + 1)
    return sp.csr_matrix((w, (r, c)), shape=(nrows, 2 * (cy + 1) * (cx + 1)))


def _inverse_diagonal(matrix: sp.csr_matrix) -> np.ndarray:
    diag = matrix.diagonal()
    inv = np.zeros_like(diag)
    np.divide(1.0, diag, out=inv, where=diag > 0)
    return inv


def lmax_estimate(matrix: sp.csr_matrix, inv_diag: np.ndarray, steps: int, safety: float) -> float:
    """min(Gershgorin bound, safety x Lanczos estimate) of the largest eigenvalue of D⁻¹A."""
    rows = np.abs(matrix).sum(axis=1).A1 * inv_diag
    gershgorin = float(rows.max(initial=0.0))
    scale = np.sqrt(inv_diag)
    q = np.where(scale > 0, 1.0 + 0.5 * np.sin(np.arange(len(scale))), 0.0)
    previous = np.zeros_like(q)
    alpha: list[float] = []
    beta: list[float] = []
    norm = float(np.linalg.norm(q))
    for _ in range(steps):
        if norm == 0:
            break
        q = q / norm
        w = scale * (matrix @ (scale * q)) - (beta[-1] if beta else 0.0) * previous
        alpha.append(float(w @ q))
        w = w - alpha[-1] * q
        norm = float(np.linalg.norm(w))
        beta.append(norm)
        previous, q = q, w
    if not alpha:
        return 0.0
    tridiagonal = (
        np.diag(alpha) + np.diag(beta[: len(alpha) - 1], 1) + np.diag(beta[: len(alpha) - 1], -1)
    )
    return min(gershgorin, safety * float(np.linalg.eigvalsh(tridiagonal)[-1]))


def hierarchy(
    matrix: sp.csr_matrix,
    shape: tuple[int, int],
    nodemap: np.ndarray,
    fixed: np.ndarray | None,
    *,
    lanczos_steps: int = 20,
    lmax_safety: float = 1.1,
    coarse_nodes: int = 800,
) -> list[Level]:
    """Levels from the fine system down to the one solved densely."""

    def level(a: sp.csr_matrix, grid: tuple[int, int]) -> Level:
        inv = _inverse_diagonal(a)
        return Level(a, grid, inv, lmax_estimate(a, inv, lanczos_steps, lmax_safety))

    levels = [level(matrix.tocsr(), shape)]
    grid = shape
    mapping: np.ndarray | None = nodemap
    fixed_dofs = fixed
    while (grid[0] + 1) * (grid[1] + 1) > coarse_nodes and min(grid) >= 2:
        p = prolongation(grid, mapping, fixed_dofs)
        levels[-1].prolongation = p
        coarse = (p.T @ levels[-1].matrix @ p).tocsr()
        grid, mapping, fixed_dofs = ((grid[0] + 1) // 2, (grid[1] + 1) // 2), None, None
        levels.append(level(coarse, grid))
    return levels


def _chebyshev(
    level: Level, b: np.ndarray, x: np.ndarray, degree: int, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed x and its residual b - A x (Saad, alg. 12.1, on D⁻¹A)."""
    upper, lower = level.lmax, level.lmax / ratio
    theta, delta = (upper + lower) / 2, (upper - lower) / 2
    sigma = theta / delta
    rho = 1 / sigma
    r = b - level.matrix @ x
    d = level.inv_diag * r / theta
    x = x + d
    for _ in range(1, degree):
        r = r - level.matrix @ d
        rho_next = 1 / (2 * sigma - rho)
        d = rho_next * rho * d + 2 * rho_next / delta * level.inv_diag * r
        x = x + d
        rho = rho_next
    return x, r - level.matrix @ d


def _coarse_solve(matrix: sp.csr_matrix, b: np.ndarray) -> np.ndarray:
    """Cholesky that drops vanishing pivots, as cpp/mg.cpp does."""
    dofs = np.flatnonzero(matrix.diagonal() > 0)
    a = matrix[dofs][:, dofs].toarray()
    m = len(dofs)
    lower = np.zeros((m, m))
    for j in range(m):
        pivot = a[j, j] - lower[j, :j] @ lower[j, :j]
        if not pivot > 1e-12 * a[j, j]:
            continue
        lower[j, j] = np.sqrt(pivot)
        lower[j + 1 :, j] = (a[j + 1 :, j] - lower[j + 1 :, :j] @ lower[j, :j]) / lower[j, j]
    y = np.zeros(m)
    rhs = b[dofs]
    for p in range(m):
        if lower[p, p] > 0:
            y[p] = (rhs[p] - lower[p, :p] @ y[:p]) / lower[p, p]
    for p in range(m - 1, -1, -1):
        if lower[p, p] > 0:
            y[p] = (y[p] - lower[p + 1 :, p] @ y[p + 1 :]) / lower[p, p]
    x = np.zeros(matrix.shape[0])
    x[dofs] = y
    return x


def vcycle(
    levels: list[Level], r: np.ndarray, *, degree: int = 2, ratio: float = 10.0
) -> np.ndarray:
    """One symmetric V-cycle from a zero guess: z = B r."""

    def cycle(k: int, b: np.ndarray) -> np.ndarray:
        level = levels[k]
        if k + 1 == len(levels):
            return _coarse_solve(level.matrix, b)
        assert level.prolongation is not None
        x, residual = _chebyshev(level, b, np.zeros_like(b), degree, ratio)
        x = x + level.prolongation @ cycle(k + 1, level.prolongation.T @ residual)
        return _chebyshev(level, b, x, degree, ratio)[0]

    return cycle(0, r)
