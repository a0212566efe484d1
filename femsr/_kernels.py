"""One call per kernel for either backend.

The compiled kernels of :mod:`femsr._core` fill outputs the caller allocates; their twins in
:mod:`femsr.reference` return them. Each function here takes the twin's arguments plus
``backend`` and returns the twin's result, allocating the outputs for the compiled kernel, so
the public modules call a kernel once whatever the backend. Arguments are assumed checked
(:mod:`femsr.checks`): C-contiguous float64 images and uint8 masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from femsr import _core
from femsr.reference import fem as ref_fem
from femsr.reference import quilt as ref_quilt
from femsr.reference import thin as ref_thin
from femsr.reference import topopt as ref_topopt

_INDEX_LIMIT = np.iinfo(np.int32).max

# ---------------------------------------------------------------------------------------------
# Finite elements


def element_stiffness(nu: float, thickness: float, backend: str) -> np.ndarray:
    """Unit-modulus Q4 stiffness (8, 8), as :func:`femsr.reference.fem.element_stiffness`."""
    if backend == "python":
        return ref_fem.element_stiffness(nu, thickness)
    ke = np.empty((8, 8))
    _core.element_stiffness(float(nu), float(thickness), ke)
    return ke


def element_energies(active: np.ndarray, ke: np.ndarray, u: np.ndarray, backend: str) -> np.ndarray:
    """``u_eᵀ ke u_e`` (ncases, nel), as :func:`femsr.reference.fem.element_energies`."""
    if backend == "python":
        return ref_fem.element_energies(active, ke, u)
    energies = np.empty((len(u), active.size))
    _core.element_energies(active, ke, u, energies)
    return energies


def upper_triangle(matrix: sp.csr_matrix, backend: str) -> sp.csr_matrix:
    """The entries on and above the diagonal, as :func:`femsr.reference.fem.upper_triangle`.

    Cut row by row: ``sp.triu`` goes through COO (0.6 s at 50 µm), the numpy twin takes
    0.45 s, the compiled kernel 0.05 s.
    """
    if backend == "python":
        return ref_fem.upper_triangle(matrix)
    matrix.sort_indices()
    parts = _core.upper_triangle(
        matrix.indptr.astype(np.int32, copy=False),
        matrix.indices.astype(np.int32, copy=False),
        matrix.data.astype(float, copy=False),
    )
    return sp.csr_matrix(parts, shape=matrix.shape)


@dataclass(frozen=True)
class _Pattern:
    """CSR sparsity of the active elements on the nodes of a node map, with its 2x2 blocks."""

    bindptr: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray


def _pattern(active: np.ndarray, nodemap: np.ndarray) -> _Pattern:
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
    indptr = np.empty(2 * nnodes + 1, dtype=np.int32)
    indices = np.empty(4 * total, dtype=np.int32)
    _core.csr_from_blocks(bindptr, bindices, indptr, indices)
    return _Pattern(bindptr, indptr, indices)


class Assembler:
    """Stiffness matrices of one element mask, node numbering and set of fixed DOFs.

    Parameters
    ----------
    active : ndarray of uint8, shape (ny, nx)
        Elements in the model.
    nodemap : ndarray of int32, shape ((ny+1)*(nx+1),)
        System node of every grid node, -1 where left out; system nodes are numbered in the
        order of the grid nodes.
    fixed : ndarray of uint8, shape (2*(ny+1)*(nx+1),), optional
        Fixed grid DOFs: their rows and columns are zeroed and their diagonal kept.
    backend : {"cpp", "python"}
        ``"cpp"`` builds the CSR pattern once and fills its values in parallel;
        ``"python"`` assembles through COO (:func:`femsr.reference.fem.assemble`).
    """

    def __init__(
        self, active: np.ndarray, nodemap: np.ndarray, fixed: np.ndarray | None, backend: str
    ) -> None:
        self.active = active
        self.nodemap = nodemap
        self.fixed = fixed
        self.backend = backend
        self.n = 2 * (int(nodemap.max()) + 1)
        if backend == "python":
            self._dofmap = np.stack([2 * nodemap, 2 * nodemap + 1], axis=1).ravel()
            self._dofmap[np.repeat(nodemap < 0, 2)] = -1
        else:
            self._pattern = _pattern(active, nodemap)

    def __call__(self, modulus: np.ndarray, ke: np.ndarray) -> sp.csr_matrix:
        """The stiffness matrix (n, n) of element moduli ``modulus`` and unit stiffness ``ke``."""
        if self.backend == "python":
            matrix = ref_fem.assemble(self.active, modulus, ke, self._dofmap, self.n)
            if self.fixed is None:
                return matrix
            inside = self._dofmap >= 0
            fixed = np.zeros(self.n, dtype=bool)
            fixed[self._dofmap[inside]] = self.fixed[inside].astype(bool)
            return ref_fem.decouple(matrix, fixed)
        pattern = self._pattern
        data = np.empty(len(pattern.indices))
        _core.fill_values(self.active, modulus, ke, self.nodemap, self.fixed, pattern.bindptr, data)
        return sp.csr_matrix((data, pattern.indices, pattern.indptr), shape=(self.n, self.n))


def multigrid(
    assembler: Assembler,
    modulus: np.ndarray,
    ke: np.ndarray,
    matrix: sp.csr_matrix,
    options: Mapping[str, Any],
) -> _core.Multigrid:
    """The compiled geometric multigrid hierarchy of an assembled system.

    ``matrix`` is ``assembler(modulus, ke)``; ``options`` are those of
    :data:`femsr.fem.GMG_OPTIONS`. The coarse operators are formed element by element; the
    scipy twin :func:`femsr.reference.mg.hierarchy` forms them as ``Pᵀ A P``.
    """
    return _core.Multigrid(
        assembler.active,
        modulus,
        ke.ravel(),
        assembler.nodemap,
        assembler.fixed,
        matrix.indptr,
        matrix.indices,
        matrix.data,
        **options,
    )


# ---------------------------------------------------------------------------------------------
# Topology optimization


def filter_weight_sums(mask: np.ndarray, rmin: float, backend: str) -> np.ndarray:
    """As :func:`femsr.reference.topopt.filter_weight_sums`."""
    if backend == "python":
        return ref_topopt.filter_weight_sums(mask, rmin)
    wsum = np.empty(mask.shape)
    _core.filter_weight_sums(mask, rmin, wsum)
    return wsum


def density_filter(
    mask: np.ndarray,
    rmin: float,
    wsum: np.ndarray,
    values: np.ndarray,
    transpose: bool,
    backend: str,
) -> np.ndarray:
    """As :func:`femsr.reference.topopt.density_filter`."""
    if backend == "python":
        return ref_topopt.density_filter(mask, rmin, wsum, values, transpose)
    out = np.empty(mask.shape)
    _core.density_filter(mask, rmin, wsum, values, out, transpose)
    return out


def project(
    values: np.ndarray, beta: float, eta: float, backend: str
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`femsr.reference.topopt.project`."""
    if backend == "python":
        return ref_topopt.project(values, beta, eta)
    projected, derivative = np.empty_like(values), np.empty_like(values)
    _core.project(values, beta, eta, projected, derivative)
    return projected, derivative


def oc_update(
    mask: np.ndarray,
    x: np.ndarray,
    dc: np.ndarray,
    dv: np.ndarray,
    target: float,
    move: float,
    damping: float,
    rmin: float,
    wsum: np.ndarray | None,
    beta: float,
    eta: float,
    backend: str,
) -> tuple[np.ndarray, float, float, int]:
    """As :func:`femsr.reference.topopt.oc_update`: (xnew, multiplier, mass, evaluations)."""
    if backend == "python":
        return ref_topopt.oc_update(mask, x, dc, dv, target, move, damping, rmin, wsum, beta, eta)
    xnew = np.empty(x.shape)
    multiplier, mass, evaluations = _core.oc_update(
        mask, x, dc, dv, target, move, damping, rmin, wsum, beta, eta, xnew
    )
    return xnew, multiplier, mass, evaluations


# ---------------------------------------------------------------------------------------------
# Quilting


def min_error_seam(cost: np.ndarray, backend: str) -> np.ndarray | None:
    """As :func:`femsr.reference.quilt.min_error_seam`: the seam, or None if all paths are inf."""
    if backend == "python":
        return ref_quilt.min_error_seam(cost)
    path = np.empty((cost.size, 2), dtype=np.int64)
    length = _core.min_error_seam(cost, path)
    return path[:length].copy()


def seam_mask(seam: np.ndarray, shape: tuple[int, int], backend: str) -> np.ndarray:
    """As :func:`femsr.reference.quilt.seam_mask`."""
    if backend == "python":
        return ref_quilt.seam_mask(seam, shape)
    mask = np.empty(shape, dtype=np.uint8)
    _core.seam_mask(seam, mask)
    return mask


def vertical_seam_masks(patches: np.ndarray, stride: int, backend: str) -> np.ndarray:
    """As :func:`femsr.reference.quilt.vertical_seam_masks`."""
    if backend == "python":
        return ref_quilt.vertical_seam_masks(patches, stride)
    nr, nc, patch, _ = patches.shape
    masks = np.empty((nr, max(nc - 1, 0), patch, patch - stride), dtype=np.uint8)
    _core.vertical_seam_masks(patches, stride, masks)
    return masks


def horizontal_seam_masks(strips: np.ndarray, stride: int, backend: str) -> np.ndarray:
    """As :func:`femsr.reference.quilt.horizontal_seam_masks`."""
    if backend == "python":
        return ref_quilt.horizontal_seam_masks(strips, stride)
    nr, patch, width = strips.shape
    masks = np.empty((max(nr - 1, 0), patch - stride, width), dtype=np.uint8)
    _core.horizontal_seam_masks(strips, stride, masks)
    return masks


def compose_columns(
    patches: np.ndarray,
    stride: int,
    masks: np.ndarray | None,
    ramp: np.ndarray | None,
    with_owner: bool,
    backend: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """As :func:`femsr.reference.quilt.compose_columns`; the owner only ``with_owner``."""
    if backend == "python":
        strips, owner = ref_quilt.compose_columns(patches, stride, masks, ramp)
        return strips, owner if with_owner else None
    nr, nc, patch, _ = patches.shape
    shape = (nr, patch, (nc - 1) * stride + patch)
    strips = np.empty(shape)
    owner = np.empty(shape, dtype=np.int32) if with_owner else None
    _core.compose_columns(patches, stride, masks, ramp, strips, owner)
    return strips, owner


def compose_rows(
    strips: np.ndarray,
    ncols: int,
    stride: int,
    masks: np.ndarray | None,
    ramp: np.ndarray | None,
    strip_owner: np.ndarray | None,
    shape: tuple[int, int],
    backend: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """As :func:`femsr.reference.quilt.compose_rows`."""
    if backend == "python":
        return ref_quilt.compose_rows(strips, ncols, stride, masks, ramp, strip_owner, shape)
    image = np.empty(shape)
    owner = np.empty(shape, dtype=np.int32) if strip_owner is not None else None
    _core.compose_rows(strips, ncols, stride, masks, ramp, strip_owner, image, owner)
    return image, owner


# ---------------------------------------------------------------------------------------------
# Thinning


def thin(mask: np.ndarray, backend: str) -> np.ndarray:
    """As :func:`femsr.reference.thin.thin`: the skeleton of a uint8 0/1 mask."""
    if backend == "python":
        return ref_thin.thin(mask)
    skeleton = mask.copy()
    _core.thin(skeleton)
    return skeleton
