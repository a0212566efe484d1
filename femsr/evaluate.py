"""Evaluation of a reconstruction: apparent stiffness of regions of interest, image measures and
figures, as in the paper's Table 1 and Fig. 3.

The yardstick is the apparent stiffness of three square regions (femoral head, neck,
intertrochanteric region; :meth:`femsr.femur.Femur.rois`) by FE homogenization, reported as
``E_x = C11``, ``E_y = C22``, ``E_xy = C33`` of the 3x3 plane-stress stiffness and as the error %
of the reconstruction against the topology-optimized reference. Image measures (SSIM, PSNR,
BV/TV, Dice) complement it. Figures need matplotlib, which is imported only when one is drawn.

One module past 600 lines because the stiffness, the image measures, the tables and the
figures are the parts of the one report (:func:`write_report`) and share its checks.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sparse
import scipy.sparse.linalg as spla

from femsr import defaults, fem
from femsr.checks import check_density
from femsr.io import FemurImage, atomic_write
from femsr.morphometry import local_thickness, morphometry
from femsr.solvers import dissection_order

__all__ = [
    "BONELESS_STIFFNESS",
    "COMPONENTS",
    "REGION_NAMES",
    "Stiffness",
    "Table",
    "apparent_stiffness",
    "bone_volume_fraction",
    "bone_volume_fraction_error",
    "dice",
    "femur_figure",
    "image_table",
    "kinematic_solution",
    "local_thickness",
    "morphometry",
    "psnr",
    "roi_figure",
    "roi_table",
    "ssim",
    "trabecular_thickness",
    "write_report",
]

COMPONENTS = ("E_x", "E_y", "E_xy")
# A reference ROI component below this fraction of E0 carries no bone across the ROI (it lies in
# marrow, or its struts do not span it): its stiffness is that of void and gray remnants, and a
# relative error of it means nothing, so roi_table gives NaN there.
BONELESS_STIFFNESS = 1e-3
# The paper's names of the ROIs that femsr.femur.Femur.rois returns; other names are kept as given.
REGION_NAMES = {
    "head": "Femoral head",
    "neck": "Femoral neck",
    "intertrochanteric": "Intertrochanteric region",
}
# SSIM of Wang et al. (2004): Gaussian window of 11 px (sigma 1.5, radius 5 = truncate 3.5 sigma).
_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


# ---------------------------------------------------------------------------------------------
# Apparent stiffness


@dataclass(frozen=True, eq=False)
class Stiffness:
    """Apparent plane-stress stiffness of a region.

    Attributes
    ----------
    matrix : ndarray, shape (3, 3)
        Effective stiffness (MPa) in Voigt notation, order (xx, yy, xy) with engineering shear
        strain: ``[sxx, syy, sxy] = matrix @ [exx, eyy, gxy]``; x to the right, y up.
    """

    matrix: np.ndarray

    @property
    def E_x(self) -> float:
        """``C11`` (MPa), the paper's E_x."""
        return float(self.matrix[0, 0])

    @property
    def E_y(self) -> float:
        """``C22`` (MPa), the paper's E_y."""
        return float(self.matrix[1, 1])

    @property
    def E_xy(self) -> float:
        """``C33`` (MPa), the paper's E_xy (the shear stiffness)."""
        return float(self.matrix[2, 2])

    def component(self, name: str) -> float:
        """One of :data:`COMPONENTS` by name."""
        if name not in COMPONENTS:
            raise ValueError(f"component must be one of {COMPONENTS}, got {name!r}")
        return float(getattr(self, name))


def _affine_displacements(shape: tuple[int, int], h: float) -> np.ndarray:
    """Nodal displacements ``u = e x`` of the three unit macro-strains, (ndof, 3).

    Columns: exx = 1, eyy = 1, engineering shear gxy = 1 (``u = (y/2, x/2)``). Coordinates are
    centred on the region (a shift of origin only adds a rigid translation), y up, row 0 at the top.
    """
    ny, nx = shape
    i, j = np.mgrid[0 : ny + 1, 0 : nx + 1]
    x = ((j - nx / 2.0) * h).ravel()
    y = (-(i - ny / 2.0) * h).ravel()
    u = np.zeros((2 * x.size, 3))
    u[0::2, 0] = x
    u[1::2, 1] = y
    u[0::2, 2] = y / 2.0
    u[1::2, 2] = x / 2.0
    return u


def _boundary_dofs(shape: tuple[int, int]) -> np.ndarray:
    """Boolean over all grid DOFs: both DOFs of every node on the region's outline."""
    ny, nx = shape
    boundary = np.zeros((ny + 1, nx + 1), dtype=bool)
    boundary[[0, -1], :] = True
    boundary[:, [0, -1]] = True
    return np.repeat(boundary.ravel(), 2)


def kinematic_solution(
    density: np.ndarray,
    *,
    E0: float,
    nu: float = 0.3,
    penal: float = 3.0,
    Emin: float | None = None,
    h: float,
    thickness: float = 1.0,
    backend: str = "cpp",
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The stiffness matrix of a density region and its nodal displacements, ``(ndof, 3)``,
    under the three unit macro-strains of :func:`apparent_stiffness` (same parameters).

    Node ``(i, j)``'s DOFs are ``2 (i (nx + 1) + j)`` (x) and that plus one (y).
    """
    density = check_density(density)
    if Emin is not None and not Emin > 0:
        raise ValueError(f"Emin must be positive for homogenization got {Emin}")
    if not (isinstance(h, (int, float, np.floating)) and h > 0 and math.isfinite(h)):
        raise ValueError(f"h must be a positive, finite pixel side in mm, got {h!r}")
    stiffness = fem.assemble(
        density,
        E0=E0,
        nu=nu,
        penal=penal,
        Emin=Emin,
        h=h,
        thickness=thickness,
        backend=backend,
    ).tocsr()
    u = _affine_displacements(density.shape, h)
    prescribed = _boundary_dofs(density.shape)
    free = ~prescribed
    if free.any():
        ny, nx = density.shape
        nodes = dissection_order(ny - 1, nx - 1)
        # Inner DOFs in dissection order: inner node (a, b) is grid node (a+1, b+1).
        inner = np.flatnonzero(free)
        dofs = inner[np.stack([2 * nodes, 2 * nodes + 1], axis=1).ravel()]
        rows = stiffness[dofs]
        try:
            # The block is symmetric positive definite: diagonal pivots keep the dissection
            # order's sparsity (partial pivoting added 25 % fill on crisp designs).
            factor = spla.splu(
                rows[:, dofs].tocsc(),
                permc_spec="NATURAL",
                options={"SymmetricMode": True, "DiagPivotThresh": 0.01},
            )
        except RuntimeError as error:  # SuperLU reports a singular matrix this way
            raise ValueError(f"the region's stiffness matrix is singular: {error}") from error
        u[dofs] = factor.solve(-np.asarray(rows[:, prescribed] @ u[prescribed]))
    return stiffness, u


def apparent_stiffness(
    density: np.ndarray,
    *,
    E0: float,
    nu: float = 0.3,
    penal: float = 3.0,
    Emin: float | None = None,
    h: float,
    thickness: float = 1.0,
    backend: str = "cpp",
) -> Stiffness:
    """Homogenized plane-stress stiffness of a rectangular density region.

    Boundary conditions are kinematic: every node on the region's outline is moved by the affine
    field ``u = e x`` of a unit macro-strain ``e`` (exx, then eyy, then the engineering shear
    gxy); the inner nodes are free, and the three solves share one sparse LU factorization of the
    inner block (the prescribed values are eliminated: ``K_ff u_f = -K_fp u_p``). Kinematic
    conditions need no supports, are well posed for any density (void pixels keep ``Emin``, so
    struts cut loose by the window still hold) and bound the effective stiffness of the
    surrounding bone from above (Hill 1963; Huet 1990): the usual choice for cut-out trabecular
    regions, and what the design asks for.

    The average stress is the reaction virial over the volume,
    ``mean(sigma) = (1/V) sum_b sym(x_b f_b)`` over the outline nodes, computed as
    ``C = U_p^T f / V`` with ``f`` the reactions of the three solves. As the inner nodes carry no
    force, this equals the energy form ``C = U^T K U / V`` (Hill-Mandel), so ``C`` is symmetric;
    it is symmetrized to remove the solver's round-off. A homogeneous region reproduces the
    material's plane-stress matrix exactly, because bilinear elements represent affine fields
    exactly.

    Parameters
    ----------
    density : ndarray, shape (ny, nx)
        Element densities in [0, 1] of the region, row 0 at the top.
    E0 : float
        Tissue modulus (MPa).
    nu, penal : float
        Poisson's ratio and SIMP exponent.
    Emin : float, optional
        Modulus of void (MPa), ``1e-9 * E0`` by default; must be positive so a void region (or
        a floating strut) still has a stiffness, of order ``Emin``.
    h : float
        Pixel side (mm).
    thickness : float
        Out-of-plane thickness (mm); the stiffness does not depend on it.
    backend : {"cpp", "python"}
        Assembly by the compiled kernel or its numpy twin (:func:`femsr.fem.assemble`).

    Returns
    -------
    Stiffness
        ``.matrix`` (3x3, MPa) and ``.E_x``, ``.E_y``, ``.E_xy``.

    Raises
    ------
    TypeError, ValueError
        On a density of the wrong type, shape or range, or a bad material value.

    Examples
    --------
    A homogeneous region gives the plane-stress matrix ``E/(1-nu^2) [[1, nu, 0], [nu, 1, 0],
    [0, 0, (1-nu)/2]]``:

    >>> s = apparent_stiffness(np.ones((4, 6)), E0=1000.0, nu=0.25, h=0.05)
    >>> round(s.E_x, 6), round(s.E_y, 6), round(s.E_xy, 6)
    (1066.666667, 1066.666667, 400.0)
    """
    stiffness, u = kinematic_solution(
        density, E0=E0, nu=nu, penal=penal, Emin=Emin, h=h, thickness=thickness, backend=backend
    )
    ny, nx = np.shape(density)  # checked by kinematic_solution
    prescribed = _boundary_dofs((ny, nx))
    reactions = stiffness[prescribed] @ u
    volume = ny * nx * h * h * thickness
    matrix = u[prescribed].T @ reactions / volume
    return Stiffness((matrix + matrix.T) / 2.0)


# ---------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class Table:
    """Rows of plain data with a column order, rendered as Markdown or CSV.

    Attributes
    ----------
    columns : tuple of str
        Keys of every row, in display order.
    rows : tuple of dict
        One dict per row: str, int or float values.
    """

    columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]

    def to_markdown(self, digits: int = 4) -> str:
        """A GitHub-flavoured Markdown table; floats with ``digits`` significant digits."""

        def cell(value: Any) -> str:
            if isinstance(value, float):
                return f"{value:.{digits}g}"
            return str(value)

        lines = [
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join(" --- " for _ in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(cell(row[c]) for c in self.columns) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """CSV text with a header row; floats at full precision."""
        stream = io.StringIO()
        writer = csv.DictWriter(stream, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return stream.getvalue()


def _check_pair(
    reference: object, reconstruction: object, *, same_shape: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    reference = check_density(reference)
    try:
        reconstruction = check_density(reconstruction)
    except (TypeError, ValueError) as error:
        raise type(error)(str(error).replace("density", "reconstruction", 1)) from None
    if same_shape and reference.shape != reconstruction.shape:
        raise ValueError(
            f"reference and reconstruction must have the same shape, got {reference.shape} "
            f"and {reconstruction.shape}"
        )
    return reference, reconstruction


def _check_rois(
    rois: Mapping[str, tuple[slice, slice]], shape: tuple[int, ...]
) -> dict[str, tuple[slice, slice]]:
    if not isinstance(rois, Mapping) or not rois:
        raise ValueError("rois must be a non-empty mapping of name to (row slice, column slice)")
    checked = {}
    for name, window in rois.items():
        if not (
            isinstance(window, tuple)
            and len(window) == 2
            and all(isinstance(s, slice) and s.step in (None, 1) for s in window)
        ):
            raise ValueError(f"ROI {name!r} must be (row slice, column slice), got {window!r}")
        bounds = []
        for s, size in zip(window, shape, strict=True):
            start, stop = s.start or 0, size if s.stop is None else s.stop
            if not 0 <= start < stop <= size:
                raise ValueError(f"ROI {name!r} {window!r} is empty or outside the image {shape}")
            bounds.append(slice(start, stop))
        checked[str(name)] = (bounds[0], bounds[1])
    return checked


def _size(window: tuple[slice, slice]) -> tuple[int, int]:
    """Rows and columns of a checked ROI."""
    return (window[0].stop - window[0].start, window[1].stop - window[1].start)


def _error_percent(value: float, reference: float) -> float:
    """Signed error of ``value`` against ``reference`` in %; negative = underestimate."""
    return 100.0 * (value - reference) / reference


def roi_table(
    reference: np.ndarray,
    reconstruction: np.ndarray,
    rois: Mapping[str, tuple[slice, slice]],
    *,
    reconstruction_rois: Mapping[str, tuple[slice, slice]] | None = None,
    **material: Any,
) -> Table:
    """Apparent stiffness of each ROI in the reference and the reconstruction, with the error %.

    The paper's Table 1 layout: one row per region and component (E_x, E_y, E_xy). The error is
    signed, ``100 (reconstruction - reference) / reference``, so an underestimate (what the
    paper saw for every region) is negative; the paper lists magnitudes. It is NaN where the
    reference component is below :data:`BONELESS_STIFFNESS` ``* E0`` (no bone spans the ROI).

    Parameters
    ----------
    reference, reconstruction : ndarray, shape (ny, nx)
        Density images in [0, 1] on the same grid (or pixel size, with
        ``reconstruction_rois``).
    rois : mapping of str to (slice, slice)
        Regions as (rows, columns) of the image, as :meth:`femsr.femur.Femur.rois` returns them.
    reconstruction_rois : mapping of str to (slice, slice), optional
        The same regions in the reconstruction, where its grid is not the reference's: a
        scan's reconstruction has them where its fitted femur places them. Each of the size
        of its reference ROI.
    **material
        Keyword arguments of :func:`apparent_stiffness` (``E0`` and ``h`` are required).

    Returns
    -------
    Table
        Columns ``region, stiffness, reference, reconstruction, error_percent`` (MPa, MPa, %).

    Raises
    ------
    TypeError, ValueError
        On images of different shapes (without ``reconstruction_rois``) or bad values, an ROI
        outside its image, ROIs that differ in names or sizes, bad material.

    Examples
    --------
    >>> reference = np.ones((8, 8)); reconstruction = np.full((8, 8), 0.5)
    >>> table = roi_table(reference, reconstruction, {"head": np.s_[0:4, 0:4]}, E0=1.0, h=1.0)
    >>> row = table.rows[0]
    >>> row["region"], row["stiffness"], round(row["error_percent"], 3)
    ('Femoral head', 'E_x', -87.5)
    """
    reference, reconstruction = _check_pair(
        reference, reconstruction, same_shape=reconstruction_rois is None
    )
    windows = _check_rois(rois, reference.shape)
    elsewhere = windows
    if reconstruction_rois is not None:
        elsewhere = _check_rois(reconstruction_rois, reconstruction.shape)
        sizes = [_size(w) for w in windows.values()]
        placed = [_size(w) for w in elsewhere.values()]
        if list(elsewhere) != list(windows) or placed != sizes:
            raise ValueError(
                f"reconstruction_rois must name the ROIs {list(windows)} at their sizes "
                f"{sizes}, got {list(elsewhere)} at {placed}"
            )
    rows = []
    for name, window in windows.items():
        ref = apparent_stiffness(reference[window], **material)
        rec = apparent_stiffness(reconstruction[elsewhere[name]], **material)
        for component in COMPONENTS:
            a, b = ref.component(component), rec.component(component)
            boneless = a < BONELESS_STIFFNESS * material["E0"]
            rows.append(
                {
                    "region": REGION_NAMES.get(name, name),
                    "stiffness": component,
                    "reference": a,
                    "reconstruction": b,
                    "error_percent": math.nan if boneless else _error_percent(b, a),
                }
            )
    columns = ("region", "stiffness", "reference", "reconstruction", "error_percent")
    return Table(columns, tuple(rows))


def image_table(
    reference: np.ndarray,
    reconstruction: np.ndarray,
    rois: Mapping[str, tuple[slice, slice]],
    *,
    mask: np.ndarray | None = None,
    threshold: float = 0.5,
    pixel_size: float = 1.0,
) -> Table:
    """SSIM, PSNR, BV/TV (reference, reconstruction, error %), the error % of the bone mass
    (the mean density, no threshold), Dice and Tb.Th (reference, reconstruction) per ROI and
    overall.

    Parameters
    ----------
    reference, reconstruction : ndarray, shape (ny, nx)
        Density images in [0, 1] on the same grid.
    rois : mapping of str to (slice, slice)
        Regions as (rows, columns) of the image.
    mask : ndarray of bool, shape (ny, nx), optional
        The femur; the last row ("Whole femur") measures BV/TV and Dice inside it (SSIM and
        PSNR over the whole image). Default: the whole image.
    threshold : float
        Bone is ``density > threshold`` for BV/TV, Dice and Tb.Th.
    pixel_size : float
        Pixel side; Tb.Th (:func:`trabecular_thickness`) is in its unit.

    Returns
    -------
    Table
        Columns ``region, ssim, psnr_db, bvtv_reference, bvtv_reconstruction, bvtv_error_percent,
        mass_error_percent, dice, tbth_reference, tbth_reconstruction``.

    Examples
    --------
    >>> a = np.zeros((16, 16)); a[:, ::2] = 1.0
    >>> table = image_table(a, a, {"head": np.s_[0:12, 0:12]})
    >>> [(row["region"], row["ssim"], row["dice"]) for row in table.rows]
    [('Femoral head', 1.0, 1.0), ('Whole femur', 1.0, 1.0)]
    """
    reference, reconstruction = _check_pair(reference, reconstruction)
    windows = _check_rois(rois, reference.shape)
    whole = (slice(0, reference.shape[0]), slice(0, reference.shape[1]))
    # Thickness of the whole image, read inside each region: a strut cut by a region's edge
    # keeps its thickness.
    thickness = [
        local_thickness(image, threshold) * pixel_size for image in (reference, reconstruction)
    ]
    rows = []
    for name, window in [*windows.items(), ("Whole femur", whole)]:
        a, b = reference[window], reconstruction[window]
        region_mask = None if mask is None or window is not whole else mask
        region = np.ones(a.shape, bool) if region_mask is None else region_mask
        tbth = [
            _bone_mean(t[window], image, threshold, region)
            for t, image in zip(thickness, (a, b), strict=True)
        ]
        bv_a = bone_volume_fraction(a, threshold, mask=region_mask)
        bv_b = bone_volume_fraction(b, threshold, mask=region_mask)
        mass_a, mass_b = float(a[region].mean()), float(b[region].mean())
        rows.append(
            {
                "region": REGION_NAMES.get(name, name),
                "ssim": ssim(a, b),
                "psnr_db": psnr(a, b),
                "bvtv_reference": bv_a,
                "bvtv_reconstruction": bv_b,
                "bvtv_error_percent": _error_percent(bv_b, bv_a) if bv_a > 0 else math.nan,
                "mass_error_percent": _error_percent(mass_b, mass_a) if mass_a > 0 else math.nan,
                "dice": dice(a, b, threshold, mask=region_mask),
                "tbth_reference": tbth[0],
                "tbth_reconstruction": tbth[1],
            }
        )
    columns = (
        "region",
        "ssim",
        "psnr_db",
        "bvtv_reference",
        "bvtv_reconstruction",
        "bvtv_error_percent",
        "mass_error_percent",
        "dice",
        "tbth_reference",
        "tbth_reconstruction",
    )
    return Table(columns, tuple(rows))


# ---------------------------------------------------------------------------------------------
# Image measures


def _check_image(name: str, image: object, stack: bool = False) -> np.ndarray:
    """``image`` as float64, a 2-D image or (with ``stack``) a stack ``(..., ny, nx)`` of them."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.size == 0 or image.ndim < 2 or (image.ndim > 2 and not stack):
        kind = "stack of 2-D images (..., ny, nx)" if stack else "2-D image"
        raise ValueError(f"{name} must be a non-empty {kind}, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {image.dtype}")
    array = image.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_images(a: object, b: object, stack: bool = False) -> tuple[np.ndarray, np.ndarray]:
    a, b = _check_image("a", a, stack), _check_image("b", b, stack)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def _check_region(mask: object, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError(f"mask must be a bool numpy array, got {getattr(mask, 'dtype', mask)!r}")
    if mask.shape != shape:
        raise ValueError(f"mask must have the image shape {shape}, got {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: no pixel to measure")
    return mask


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
    return float(threshold)


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0) -> float | np.ndarray:
    """Mean structural similarity of two images, or of each pair of a stack (Wang et al. 2004).

    Local means, variances and covariance are Gaussian-weighted (window 11x11, sigma 1.5),
    ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²`` with ``L = data_range``; the SSIM map is averaged
    over the pixels at least 5 px from the border, whose windows lie wholly inside the image
    (the convention of scikit-image's ``structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)``). Training validates with it, and the reports
    measure with it.

    Parameters
    ----------
    a, b : ndarray, shape (..., ny, nx)
        Images of one shape, at least 11x11; leading axes stack them.
    data_range : float
        Span of the values (1 for densities).

    Returns
    -------
    float or ndarray of shape ``a.shape[:-2]``
        In [-1, 1]; 1 for identical images. A float for two 2-D images.

    Raises
    ------
    TypeError, ValueError
        On non-real arrays, NaN/inf, different shapes, images under 11x11, or
        ``data_range <= 0``.

    Examples
    --------
    >>> a = np.random.default_rng(0).random((32, 32))
    >>> ssim(a, a)
    1.0
    >>> ssim(np.stack([a, a]), np.stack([a, 1 - a])).round(3).tolist()
    [1.0, -0.967]
    """
    a, b = _check_images(a, b, stack=True)
    if min(a.shape[-2:]) < 2 * _SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[-2:]}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")

    def blur(image: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(
            image, _SSIM_SIGMA, truncate=_SSIM_RADIUS / _SSIM_SIGMA, axes=(-2, -1)
        )

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    r = _SSIM_RADIUS
    mean = index[..., r:-r, r:-r].mean(axis=(-2, -1))
    return float(mean) if mean.ndim == 0 else mean


def psnr(reference: np.ndarray, test: np.ndarray, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(L² / MSE)`` in dB (``inf`` for identical images).

    Examples
    --------
    >>> reference = np.zeros((4, 4)); test = np.full((4, 4), 0.1)
    >>> round(psnr(reference, test), 6)
    20.0
    """
    reference, test = _check_images(reference, test)
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    mse = float(np.mean((reference - test) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def bone_volume_fraction(
    density: np.ndarray, threshold: float = 0.5, *, mask: np.ndarray | None = None
) -> float:
    """BV/TV: the fraction of the pixels of ``mask`` (default all) with ``density > threshold``.

    Examples
    --------
    >>> bone_volume_fraction(np.array([[0.0, 0.4], [0.6, 1.0]]))
    0.5
    """
    density = _check_image("density", density)
    threshold = _check_threshold(threshold)
    region = _check_region(mask, density.shape)
    return float(np.count_nonzero((density > threshold) & region) / np.count_nonzero(region))


def bone_volume_fraction_error(
    reference: np.ndarray,
    reconstruction: np.ndarray,
    threshold: float = 0.5,
    *,
    mask: np.ndarray | None = None,
) -> float:
    """Signed error % of the reconstruction's BV/TV against the reference's.

    Examples
    --------
    >>> reference = np.array([[1.0, 1.0], [0.0, 0.0]])
    >>> bone_volume_fraction_error(reference, np.array([[1.0, 0.0], [0.0, 0.0]]))
    -50.0
    """
    reference, reconstruction = _check_images(reference, reconstruction)
    bv_ref = bone_volume_fraction(reference, threshold, mask=mask)
    if bv_ref == 0.0:
        raise ValueError("the reference has no bone above the threshold: BV/TV error undefined")
    return _error_percent(bone_volume_fraction(reconstruction, threshold, mask=mask), bv_ref)


def trabecular_thickness(
    density: np.ndarray,
    threshold: float = 0.5,
    *,
    mask: np.ndarray | None = None,
    pixel_size: float = 1.0,
) -> float:
    """Tb.Th: the mean :func:`local_thickness` over the bone pixels of ``mask`` (default all),
    in units of ``pixel_size``; 0 where there is no bone.

    Examples
    --------
    >>> bars = np.zeros((20, 20)); bars[:, 2:5] = bars[:, 10:17] = 1.0
    >>> middle = np.zeros((20, 20), bool); middle[5:15] = True  # clear of the cut ends
    >>> round(trabecular_thickness(bars, mask=middle, pixel_size=0.05), 6)  # (3*3 + 7*7) / 10 px
    0.29
    """
    region = _check_region(mask, np.shape(density))
    if not pixel_size > 0:
        raise ValueError(f"pixel_size must be positive, got {pixel_size}")
    return _bone_mean(local_thickness(density, threshold) * pixel_size, density, threshold, region)


def _bone_mean(
    values: np.ndarray, density: np.ndarray, threshold: float, region: np.ndarray
) -> float:
    """Mean of ``values`` over the bone (``density > threshold``) of ``region``; 0 without bone."""
    bone = (np.asarray(density) > threshold) & region
    return float(values[bone].mean()) if bone.any() else 0.0


def dice(
    a: np.ndarray, b: np.ndarray, threshold: float = 0.5, *, mask: np.ndarray | None = None
) -> float:
    """Dice coefficient ``2|A∩B| / (|A|+|B|)`` of the bone phases ``density > threshold``.

    Two images without bone agree perfectly: 1.0.

    Examples
    --------
    >>> a = np.array([[1.0, 1.0, 0.0]]); b = np.array([[1.0, 0.0, 1.0]])
    >>> dice(a, b)
    0.5
    """
    a, b = _check_images(a, b)
    threshold = _check_threshold(threshold)
    region = _check_region(mask, a.shape)
    bone_a, bone_b = (a > threshold) & region, (b > threshold) & region
    total = np.count_nonzero(bone_a) + np.count_nonzero(bone_b)
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(bone_a & bone_b) / total)


# ---------------------------------------------------------------------------------------------
# Figures


def _save_png(figure: Any, path: str | os.PathLike[str]) -> None:
    with atomic_write(path) as stream:
        figure.savefig(stream, format="png")


def roi_figure(
    path: str | os.PathLike[str],
    reference: np.ndarray,
    reconstruction: np.ndarray,
    rois: Mapping[str, tuple[slice, slice]],
    *,
    without_quilting: np.ndarray | None = None,
    dpi: float = 150.0,
) -> None:
    """Side-by-side PNG per ROI: reference | reconstruction | (optional) without quilting.

    One row per ROI, gray scale with density 0 black and 1 white, written atomically.

    Parameters
    ----------
    path : path-like
        PNG file to write.
    reference, reconstruction, without_quilting : ndarray, shape (ny, nx)
        Density images in [0, 1] on the same grid; ``without_quilting`` (patches put side by
        side with a hard cut, say) adds a third column.
    rois : mapping of str to (slice, slice)
        Regions as (rows, columns) of the image.
    dpi : float
        Resolution of the PNG.

    Raises
    ------
    TypeError, ValueError
        On images of different shapes or bad values, or an ROI outside the image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rois.png"
    >>> image = np.random.default_rng(0).random((40, 40))
    >>> roi_figure(path, image, image, {"head": np.s_[0:20, 0:20]}, dpi=30)
    >>> path.read_bytes()[:4]
    b'\\x89PNG'
    """
    from matplotlib.figure import Figure

    reference, reconstruction = _check_pair(reference, reconstruction)
    columns = [("Reference", reference), ("Reconstruction", reconstruction)]
    if without_quilting is not None:
        _, without_quilting = _check_pair(reference, without_quilting)
        columns.append(("Without quilting", without_quilting))
    windows = _check_rois(rois, reference.shape)
    figure = Figure(figsize=(3.0 * len(columns), 3.0 * len(windows)), dpi=dpi, layout="tight")
    axes = figure.subplots(len(windows), len(columns), squeeze=False)
    for row, (name, window) in enumerate(windows.items()):
        for column, (title, image) in enumerate(columns):
            ax = axes[row, column]
            ax.imshow(image[window], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title)
            if column == 0:
                ax.set_ylabel(REGION_NAMES.get(name, name))
    _save_png(figure, path)


def femur_figure(
    path: str | os.PathLike[str],
    density: np.ndarray,
    rois: Mapping[str, tuple[slice, slice]],
    *,
    pixel_size: float = 1.0,
    title: str = "",
    dpi: float = 150.0,
) -> None:
    """PNG of a whole density image with the ROI squares drawn and named, written atomically.

    Parameters
    ----------
    path : path-like
        PNG file to write.
    density : ndarray, shape (ny, nx)
        Density in [0, 1].
    rois : mapping of str to (slice, slice)
        Regions as (rows, columns) of the image.
    pixel_size : float
        Pixel side (mm): the axes are in mm.
    title : str
        Figure title.
    dpi : float
        Resolution of the PNG.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "femur.png"
    >>> femur_figure(path, np.zeros((40, 30)), {"neck": np.s_[10:20, 5:15]}, pixel_size=0.5)
    >>> path.stat().st_size > 0
    True
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    density = check_density(density)
    windows = _check_rois(rois, density.shape)
    ny, nx = density.shape
    figure = Figure(figsize=(6.0, 6.0 * ny / nx + 0.5), dpi=dpi, layout="tight")
    ax = figure.subplots()
    extent = (0.0, nx * pixel_size, ny * pixel_size, 0.0)
    ax.imshow(density, cmap="gray", vmin=0.0, vmax=1.0, extent=extent)
    for name, (rows, cols) in windows.items():
        corner = (cols.start * pixel_size, rows.start * pixel_size)
        width = (cols.stop - cols.start) * pixel_size
        height = (rows.stop - rows.start) * pixel_size
        ax.add_patch(Rectangle(corner, width, height, fill=False, edgecolor="tab:red", lw=1.5))
        ax.annotate(
            REGION_NAMES.get(name, name),
            (corner[0], corner[1]),
            xytext=(0, 3),
            textcoords="offset points",
            color="tab:red",
            fontsize=8,
            va="bottom",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.0},
        )
    ax.set_xlabel("mm")
    ax.set_ylabel("mm")
    if title:
        ax.set_title(title)
    _save_png(figure, path)


def write_report(
    out_dir: str | os.PathLike[str],
    reference: FemurImage,
    reconstruction: np.ndarray,
    *,
    without_quilting: np.ndarray | None = None,
    E0: float = defaults.TISSUE_MODULUS,
    threshold: float = 0.5,
    names: tuple[str, str] = ("reference", "reconstruction"),
) -> str:
    """Evaluate a reconstruction against its reference femur and write the report files.

    ``out_dir`` gets ``table.md`` (both tables), ``table.csv`` (apparent stiffness of the
    femur's ROIs, the paper's Table 1 layout), ``images.csv`` (SSIM, PSNR, BV/TV, Dice),
    ``rois.png`` (reference / reconstruction / without quilting per ROI), ``femur.png`` and
    ``femur_reconstruction.png`` (whole images with the ROIs). Returns the Markdown.

    Parameters
    ----------
    out_dir : path
        Folder to write (created if missing); files are written atomically.
    reference : FemurImage
        The reference density with its pixel size and femur (which places the ROIs).
    reconstruction, without_quilting : ndarray, shape of the reference
        The reconstructed density, and optionally an unquilted one for the figure.
    E0 : float
        Tissue modulus (MPa) of the stiffness computation.
    threshold : float
        Bone is ``density > threshold`` for BV/TV and Dice.
    names : (str, str)
        How the report names the reference and the reconstruction.
    """
    out = Path(out_dir)
    pixel = reference.pixel_size
    rois = reference.femur.rois(pixel)
    density = reference.density
    stiffness = roi_table(density, reconstruction, rois, E0=E0, h=pixel)
    images = image_table(
        density,
        reconstruction,
        rois,
        mask=reference.femur.mask(pixel),
        threshold=threshold,
        pixel_size=pixel,
    )
    markdown = (
        f"# Evaluation of {names[1]} against {names[0]}\n\n"
        f"## Apparent stiffness (MPa; E0 = {E0:g} MPa; error % signed)\n\n"
        f"{stiffness.to_markdown()}\n"
        f"## Image measures (bone: density > {threshold:g}; Tb.Th in mm)\n\n"
        f"{images.to_markdown()}"
    )
    texts = {"table.md": markdown, "table.csv": stiffness.to_csv(), "images.csv": images.to_csv()}
    for name, text in texts.items():
        with atomic_write(out / name, "w") as stream:
            stream.write(text)
    roi_figure(out / "rois.png", density, reconstruction, rois, without_quilting=without_quilting)
    for name, image, title in (
        ("femur.png", density, names[0]),
        ("femur_reconstruction.png", reconstruction, names[1]),
    ):
        femur_figure(out / name, image, rois, pixel_size=pixel, title=title)
    return markdown
