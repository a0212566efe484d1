"""Reference grid FE: element stiffness, COO assembly (top88 style), element energies."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# Natural coordinates of the local nodes bottom-left, bottom-right, top-right, top-left.
_XI = np.array([-1.0, 1.0, 1.0, -1.0])
_ETA = np.array([-1.0, -1.0, 1.0, 1.0])


def element_stiffness(nu: float, thickness: float) -> np.ndarray:
    """Unit-modulus Q4 plane-stress stiffness (8, 8) by 2x2 Gauss quadrature."""
    d = np.array([[1.0, nu, 0.0], [nu, 1.0, 0.0], [0.0, 0.0, (1.0 - nu) / 2.0]]) / (1.0 - nu**2)
    ke = np.zeros((8, 8))
    g = 1.0 / np.sqrt(3.0)
    for xi in (-g, g):
        for eta in (-g, g):
            # Natural side 2: derivatives in x equal those in xi and det J = 1.
            dn_dx = 0.25 * _XI * (1.0 + eta * _ETA)
            dn_dy = 0.25 * _ETA * (1.0 + xi * _XI)
            b = np.zeros((3, 8))
            b[0, 0::2] = dn_dx
            b[1, 1::2] = dn_dy
            b[2, 0::2] = dn_dy
            b[2, 1::2] = dn_dx
            ke += thickness * b.T @ d @ b
    return ke


def element_dofs(ny: int, nx: int) -> np.ndarray:
    """Grid DOFs of every element, (ny*nx, 8), local nodes BL, BR, TR, TL."""
    r, c = np.divmod(np.arange(ny * nx), nx)
    top_left = r * (nx + 1) + c
    bottom_left = top_left + nx + 1
    nodes = np.stack([bottom_left, bottom_left + 1, top_left + 1, top_left], axis=1)
    return np.stack([2 * nodes, 2 * nodes + 1], axis=2).reshape(-1, 8)


def assemble(
    active: np.ndarray, modulus: np.ndarray, ke: np.ndarray, dofmap: np.ndarray, n: int
) -> sp.csr_matrix:
    """Stiffness of the active elements in the DOF numbering of ``dofmap`` (-1: left out)."""
    ny, nx = active.shape
    elements = np.flatnonzero(active.ravel())
    edofs = dofmap[element_dofs(ny, nx)[elements]]
    rows = np.repeat(edofs, 8, axis=1).ravel()
    cols = np.tile(edofs, (1, 8)).ravel()
    values = (modulus.ravel()[elements, None] * ke.ravel()[None, :]).ravel()
    kept = (rows >= 0) & (cols >= 0)
    matrix = sp.coo_matrix((values[kept], (rows[kept], cols[kept])), shape=(n, n)).tocsr()
    matrix.sum_duplicates()
    return matrix


def element_energies(active: np.ndarray, ke: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``u_e^T ke u_e`` per element for each case of ``u`` (ncases, ndof); 0 where inactive."""
    ny, nx = active.shape
    ue = u[:, element_dofs(ny, nx)]
    energies = np.einsum("kep,pq,keq->ke", ue, ke, ue)
    return np.where(active.ravel()[None, :], energies, 0.0)


def decouple(matrix: sp.csr_matrix, fixed: np.ndarray) -> sp.csr_matrix:
    """Zero the rows and columns of the ``fixed`` DOFs but keep their diagonal."""
    keep = sp.diags((~fixed).astype(float))
    diagonal = sp.diags(np.where(fixed, matrix.diagonal(), 0.0))
    return (keep @ matrix @ keep + diagonal).tocsr()


def upper_triangle(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The entries on and above the diagonal, kept in place (no detour through COO)."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    keep = matrix.indices >= rows
    indptr = np.zeros(matrix.shape[0] + 1, dtype=matrix.indptr.dtype)
    np.cumsum(np.bincount(rows[keep], minlength=matrix.shape[0]), out=indptr[1:])
    return sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)
