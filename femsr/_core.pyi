"""Typed stub of the private compiled module (see cpp/bind_*.cpp)."""

import numpy as np
import numpy.typing as npt

def element_stiffness(nu: float, thickness: float, ke: npt.NDArray[np.float64]) -> None: ...
def block_row_counts(
    active: npt.NDArray[np.uint8], nodemap: npt.NDArray[np.int32], counts: npt.NDArray[np.int32]
) -> None: ...
def block_fill_indices(
    active: npt.NDArray[np.uint8],
    nodemap: npt.NDArray[np.int32],
    bindptr: npt.NDArray[np.int32],
    bindices: npt.NDArray[np.int32],
) -> None: ...
def csr_from_blocks(
    bindptr: npt.NDArray[np.int32],
    bindices: npt.NDArray[np.int32],
    indptr: npt.NDArray[np.int32],
    indices: npt.NDArray[np.int32],
) -> None: ...
def fill_values(
    active: npt.NDArray[np.uint8],
    modulus: npt.NDArray[np.float64],
    ke: npt.NDArray[np.float64],
    nodemap: npt.NDArray[np.int32],
    fixed: npt.NDArray[np.uint8] | None,
    bindptr: npt.NDArray[np.int32],
    data: npt.NDArray[np.float64],
) -> None: ...
def upper_triangle(
    indptr: npt.NDArray[np.int32],
    indices: npt.NDArray[np.int32],
    data: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int32], npt.NDArray[np.int32]]: ...
def element_energies(
    active: npt.NDArray[np.uint8],
    ke: npt.NDArray[np.float64],
    u: npt.NDArray[np.float64],
    out: npt.NDArray[np.float64],
) -> None: ...
def filter_weight_sums(
    mask: npt.NDArray[np.uint8], rmin: float, wsum: npt.NDArray[np.float64]
) -> None: ...
def density_filter(
    mask: npt.NDArray[np.uint8],
    rmin: float,
    wsum: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    out: npt.NDArray[np.float64],
    transpose: bool,
) -> None: ...
def project(
    values: npt.NDArray[np.float64],
    beta: float,
    eta: float,
    out: npt.NDArray[np.float64],
    derivative: npt.NDArray[np.float64] | None,
) -> None: ...
def oc_update(
    mask: npt.NDArray[np.uint8],
    x: npt.NDArray[np.float64],
    dc: npt.NDArray[np.float64],
    dv: npt.NDArray[np.float64],
    target: float,
    move: float,
    damping: float,
    rmin: float,
    wsum: npt.NDArray[np.float64] | None,
    beta: float,
    eta: float,
    xnew: npt.NDArray[np.float64],
) -> tuple[float, float, int]: ...
def min_error_seam(cost: npt.NDArray[np.float64], path: npt.NDArray[np.int64]) -> int: ...
def seam_mask(seam: npt.NDArray[np.int64], mask: npt.NDArray[np.uint8]) -> None: ...
def vertical_seam_masks(
    patches: npt.NDArray[np.float64], stride: int, masks: npt.NDArray[np.uint8]
) -> None: ...
def horizontal_seam_masks(
    strips: npt.NDArray[np.float64], stride: int, masks: npt.NDArray[np.uint8]
) -> None: ...
def compose_columns(
    patches: npt.NDArray[np.float64],
    stride: int,
    masks: npt.NDArray[np.uint8] | None,
    ramp: npt.NDArray[np.float64] | None,
    strips: npt.NDArray[np.float64],
    owner: npt.NDArray[np.int32] | None,
) -> None: ...
def compose_rows(
    strips: npt.NDArray[np.float64],
    ncols: int,
    stride: int,
    masks: npt.NDArray[np.uint8] | None,
    ramp: npt.NDArray[np.float64] | None,
    strip_owner: npt.NDArray[np.int32] | None,
    out: npt.NDArray[np.float64],
    owner: npt.NDArray[np.int32] | None,
) -> None: ...

class Multigrid:
    def __init__(
        self,
        active: npt.NDArray[np.uint8],
        modulus: npt.NDArray[np.float64],
        ke: npt.NDArray[np.float64],
        nodemap: npt.NDArray[np.int32],
        fixed: npt.NDArray[np.uint8] | None,
        indptr: npt.NDArray[np.int32],
        indices: npt.NDArray[np.int32],
        data: npt.NDArray[np.float64],
        degree: int,
        ratio: float,
        lanczos_steps: int,
        lmax_safety: float,
        coarse_nodes: int,
    ) -> None: ...
    @property
    def depth(self) -> int: ...
    def level(
        self, l: int
    ) -> tuple[
        int,
        int,
        float,
        npt.NDArray[np.int32],
        npt.NDArray[np.int32],
        npt.NDArray[np.float64],
    ]: ...
    def apply(self, r: npt.NDArray[np.float64], z: npt.NDArray[np.float64]) -> None: ...
    def cg(
        self, b: npt.NDArray[np.float64], x: npt.NDArray[np.float64], tol: float, maxiter: int
    ) -> tuple[int, float]: ...

def thin(mask: npt.NDArray[np.uint8]) -> None: ...
