"""The kernels of :mod:`femsr.topopt`: cone filter, Heaviside projection, OC update, local density.

The public functions here (:func:`density_filter`, :func:`project`, :func:`inverse_projection`,
:func:`oc_update`, :func:`local_density`) are re-exported by :mod:`femsr.topopt`, which is where
users find them; the rest (checks, :class:`ConeFilter`, :class:`LocalBound`, :func:`oc_step`,
:func:`block_oc_step`) is what :func:`femsr.topopt.optimize` builds on. Each compiled kernel has
a numpy twin in :mod:`femsr.reference.topopt`, selected by ``backend="python"``;
:func:`block_oc_step` is numpy only, vectorized over its blocks.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from femsr import _kernels
from femsr.checks import check_backend, check_finite_array, check_mask

__all__ = [
    "ConeFilter",
    "LocalBound",
    "block_oc_step",
    "block_sums",
    "check_image",
    "check_local",
    "check_projection",
    "check_rmin",
    "check_step",
    "check_unit",
    "density_filter",
    "inverse_projection",
    "local_density",
    "oc_step",
    "oc_update",
    "project",
]


def check_image(name: str, value: object, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A finite 2-D array named ``name`` as float64, of ``shape`` where given."""
    array = check_finite_array(name, value, 2)
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return array


def check_unit(name: str, array: np.ndarray) -> np.ndarray:
    """``array`` unchanged, if its values lie in [0, 1]."""
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(
            f"{name} must lie in [0, 1], got values in [{array.min():g}, {array.max():g}]"
        )
    return array


def check_rmin(rmin: float) -> float:
    """A positive filter radius (pixels), as float."""
    if not rmin > 0:
        raise ValueError(f"rmin must be positive (pixels), got {rmin}")
    return float(rmin)


def check_projection(beta: float, threshold: float) -> None:
    """Raise unless ``beta > 0`` and ``threshold`` lies in [0, 1]."""
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")


class ConeFilter:
    """The masked cone filter of one mask and radius, its weight sums computed once."""

    def __init__(self, mask: np.ndarray, rmin: float, backend: str) -> None:
        self.mask = mask
        self.rmin = rmin
        self.backend = backend
        self.wsum = _kernels.filter_weight_sums(mask, rmin, backend)

    def __call__(self, values: np.ndarray, transpose: bool = False) -> np.ndarray:
        return _kernels.density_filter(
            self.mask, self.rmin, self.wsum, values, transpose, self.backend
        )


def density_filter(
    values: np.ndarray,
    rmin: float,
    *,
    mask: np.ndarray | None = None,
    transpose: bool = False,
    backend: str = "cpp",
) -> np.ndarray:
    """Cone-weighted average of a pixel field over the mask, or its transpose.

    ``F(x)_e = Σ_j w_ej x_j / Σ_j w_ej`` over the mask pixels ``j`` near a mask pixel ``e``,
    with ``w_ej = max(0, rmin - d_ej)`` and ``d_ej`` the distance between pixel centres; pixels
    outside the mask get 0 and do not contribute. The transpose ``Fᵀ`` carries a sensitivity
    with respect to the filtered field back to the unfiltered one.

    Parameters
    ----------
    values : ndarray, shape (ny, nx)
        Pixel field (e.g. design variables, or a sensitivity for ``transpose``).
    rmin : float
        Filter radius (pixels); ``rmin <= 1`` leaves ``values`` unchanged on the mask.
    mask : ndarray of bool, shape (ny, nx), optional
        Pixels of the design domain. Default: all.
    transpose : bool
        Apply ``Fᵀ`` instead of ``F``.
    backend : {"cpp", "python"}
        Compiled direct cone sum (OpenMP), or its twin
        :func:`femsr.reference.topopt.density_filter` (``scipy.ndimage.correlate``).

    Returns
    -------
    ndarray, shape (ny, nx)

    Raises
    ------
    TypeError, ValueError
        On arrays of the wrong type or shape, non-finite values, or ``rmin <= 0``.

    See Also
    --------
    femsr.reference.topopt.density_filter : the numpy twin.

    Examples
    --------
    >>> x = np.zeros((5, 5)); x[2, 2] = 1.0
    >>> y = density_filter(x, 1.5)
    >>> float(round(y[2, 2], 4)), float(round(y[2, 3], 4))
    (0.3903, 0.1301)
    >>> bool(np.array_equal(density_filter(np.ones((5, 5)), 2.5), np.ones((5, 5))))
    True
    """
    check_backend(backend)
    values = check_image("values", values)
    rmin = check_rmin(rmin)
    active = check_mask(mask, values.shape)
    return ConeFilter(active, rmin, backend)(values, transpose)


def project(
    values: np.ndarray, beta: float, threshold: float = 0.5, *, backend: str = "cpp"
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed Heaviside projection and its derivative (Wang, Lazarov & Sigmund 2011, eq. 6).

    ``P(x) = (tanh(βη) + tanh(β(x - η))) / (tanh(βη) + tanh(β(1 - η)))``: ``P(0) = 0``,
    ``P(1) = 1``, ``P(η)`` is the midpoint, and ``β → ∞`` turns it into a 0/1 step at ``η``.

    Parameters
    ----------
    values : ndarray
        Filtered densities, any shape.
    beta : float
        Sharpness ``β > 0``.
    threshold : float
        ``η`` in [0, 1].
    backend : {"cpp", "python"}
        Compiled kernel or its numpy twin.

    Returns
    -------
    projected, derivative : ndarray
        ``P(values)`` and ``dP/dx`` at ``values``, both of the shape of ``values``.

    Raises
    ------
    ValueError
        On non-finite values, ``beta <= 0`` or ``threshold`` outside [0, 1].

    See Also
    --------
    femsr.reference.topopt.project : the numpy twin.

    Examples
    --------
    >>> p, dp = project(np.array([0.0, 0.5, 1.0]), beta=8.0)
    >>> p.round(6).tolist()
    [0.0, 0.5, 1.0]
    """
    check_backend(backend)
    check_projection(beta, threshold)
    array = np.asarray(values)
    flat = check_finite_array("values", array.reshape(1, -1), 2)
    projected, derivative = _kernels.project(flat, float(beta), float(threshold), backend)
    return projected.reshape(array.shape), derivative.reshape(array.shape)


def inverse_projection(
    density: np.ndarray | float, beta: float, threshold: float = 0.5
) -> np.ndarray | float:
    """The filtered density that :func:`project` maps to ``density`` (clipped to [0, 1]).

    Examples
    --------
    >>> x = inverse_projection(np.array([0.0, 0.3, 1.0]), 8.0)
    >>> project(x, 8.0, 0.5)[0].round(6).tolist()
    [0.0, 0.3, 1.0]
    """
    check_projection(beta, threshold)
    low = np.tanh(beta * threshold)
    value = np.asarray(density) * (low + np.tanh(beta * (1.0 - threshold))) - low
    # tanh rounds to 1 for large beta: keep atanh finite.
    value = np.clip(value, -1.0 + 1e-15, 1.0 - 1e-15)
    inverse = np.clip(threshold + np.arctanh(value) / beta, 0.0, 1.0)
    return float(inverse) if inverse.ndim == 0 else inverse


def oc_update(
    design: np.ndarray,
    dc: np.ndarray,
    dv: np.ndarray,
    mass: float,
    *,
    mask: np.ndarray | None = None,
    move: float = 0.2,
    damping: float = 0.5,
    rmin: float | None = None,
    beta: float | None = None,
    threshold: float = 0.5,
    backend: str = "cpp",
) -> tuple[np.ndarray, float, float]:
    """One optimality-criteria update of the design variables, meeting a mass exactly.

    ``x_new = clamp(x (max(0, -dc) / (λ dv))^damping, max(0, x - move), min(1, x + move))`` on
    the mask (0 elsewhere), as in top88's ``OC``, with the multiplier ``λ`` found so that the
    mass of ``x_new`` equals ``mass`` to round-off (relative 1e-12), by a bracketed Illinois
    (regula falsi) search on ``log λ``.

    Parameters
    ----------
    design : ndarray, shape (ny, nx)
        Current design variables ``x`` in [0, 1].
    dc : ndarray, shape (ny, nx)
        Objective sensitivity ``∂c/∂x`` (non-positive for compliance).
    dv : ndarray, shape (ny, nx)
        Mass sensitivity ``∂m/∂x`` (positive on the mask).
    mass : float
        Target mass (pixels): ``Σ dv·x_new`` without projection, where the mass is linear in
        ``x`` with gradient ``dv``; with ``beta``, ``Σ P(F(x_new))`` over the mask.
    mask : ndarray of bool, shape (ny, nx), optional
        Design pixels. Default: all.
    move : float
        Move limit in (0, 1].
    damping : float
        Damping exponent in (0, 1]; top88 uses 0.5.
    rmin, beta, threshold : float, optional
        Density filter radius (pixels) and projection of a projected mass; ``rmin`` is needed
        with ``beta``.
    backend : {"cpp", "python"}
        Compiled kernel or its numpy twin.

    Returns
    -------
    design : ndarray, shape (ny, nx)
        Updated design variables.
    multiplier : float
        The Lagrange multiplier ``λ``.
    mass : float
        The mass of the new design; equal to the target unless the move limits cannot reach it,
        in which case the design is the nearest extreme.

    Raises
    ------
    TypeError, ValueError
        On arrays of the wrong type, shape or range, or bad scalars.

    See Also
    --------
    femsr.reference.topopt.oc_update : the numpy twin.

    Examples
    --------
    >>> x = np.full((4, 4), 0.5); dc = -np.linspace(1.0, 2.0, 16).reshape(4, 4)
    >>> new, _, m = oc_update(x, dc, np.ones((4, 4)), mass=8.0)
    >>> float(round(m, 12)), float(round(new.sum(), 12))
    (8.0, 8.0)
    """
    check_backend(backend)
    design = check_unit("design", check_image("design", design))
    dc = check_image("dc", dc, design.shape)
    dv = check_image("dv", dv, design.shape)
    active = check_mask(mask, design.shape)
    check_step(move, damping)
    if not mass > 0:
        raise ValueError(f"mass must be positive, got {mass}")
    wsum = None
    if beta is not None:
        check_projection(beta, threshold)
        if rmin is None:
            raise ValueError("rmin is needed with beta: the projected mass filters the design")
        wsum = ConeFilter(active, check_rmin(rmin), backend).wsum
    return oc_step(
        active,
        design,
        dc,
        dv,
        float(mass),
        move,
        damping,
        rmin or 1.0,
        wsum,
        beta,
        threshold,
        backend,
    )


def check_step(move: float, damping: float) -> None:
    """Raise unless the OC move limit and damping exponent lie in (0, 1]."""
    if not 0 < move <= 1:
        raise ValueError(f"move must lie in (0, 1], got {move}")
    if not 0 < damping <= 1:
        raise ValueError(f"damping must lie in (0, 1], got {damping}")


def oc_step(
    active: np.ndarray,
    x: np.ndarray,
    dc: np.ndarray,
    dv: np.ndarray,
    mass: float,
    move: float,
    damping: float,
    rmin: float,
    wsum: np.ndarray | None,
    beta: float | None,
    threshold: float,
    backend: str,
) -> tuple[np.ndarray, float, float]:
    """:func:`oc_update` on checked input (``wsum``: the filter's weight sums, with ``beta``)."""
    b = 1.0 if beta is None else float(beta)
    new, multiplier, met, _ = _kernels.oc_update(
        active, x, dc, dv, mass, move, damping, rmin, wsum, b, threshold, backend
    )
    return new, multiplier, met


def block_sums(values: np.ndarray, factor: int) -> np.ndarray:
    """Sums of ``values`` over its ``factor`` x ``factor`` blocks from the top left corner,
    the last ones cut at the edges: shape ``(ceil(ny / factor), ceil(nx / factor))``."""
    ny, nx = values.shape
    rows, columns = -(-ny // factor), -(-nx // factor)
    padded = np.zeros((rows * factor, columns * factor))
    padded[:ny, :nx] = values
    return padded.reshape(rows, factor, columns, factor).sum(axis=(1, 3))


def block_oc_step(
    active: np.ndarray,
    x: np.ndarray,
    dc: np.ndarray,
    target: np.ndarray,
    factor: int,
    move: float,
    damping: float,
) -> np.ndarray:
    """The OC update with one multiplier per block: each ``factor`` x ``factor`` block of
    ``x`` (from the top left corner, the last ones cut at the edges) sums to its entry of
    ``target`` (shape ``(ceil(ny / factor), ceil(nx / factor))``) after the update.

    ``x_new = clamp(x (max(0, -dc) / λ_b)^damping, max(0, x - move), min(1, x + move))`` on the
    ``active`` pixels (0 elsewhere), ``λ_b`` of each block solved exactly: with ``t = λ^-damping``
    a block's sum is piecewise linear and non-decreasing in ``t``, its breakpoints where a pixel
    leaves its lower or reaches its upper limit. A binary search over the sorted breakpoints,
    each sum taken anew (a running sum of slopes loses the small ones beside the large), finds
    the piece where the sum meets the target, solved there as a line; all blocks at once. A
    block whose target the move limits cannot reach ends at the nearest limit. The mass
    gradient is 1 per pixel: no density filter, no projection.
    """
    ny, nx = x.shape
    rows, columns = target.shape
    size = factor * factor

    def blocks(values: np.ndarray) -> np.ndarray:
        padded = np.zeros((rows * factor, columns * factor))
        padded[:ny, :nx] = np.where(active, values, 0.0)
        return padded.reshape(rows, factor, columns, factor).transpose(0, 2, 1, 3).reshape(-1, size)

    low = blocks(np.maximum(0.0, x - move))
    high = blocks(np.minimum(1.0, x + move))
    rate = blocks(x) * blocks(np.maximum(0.0, -dc)) ** damping  # x_new = clamp(rate t)
    wanted = target.reshape(-1, 1)
    moving = rate > 0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        leaves = np.where(moving, low / rate, np.inf)
        reaches = np.where(moving, high / rate, np.inf)
    points = np.sort(np.concatenate([leaves, reaches], axis=1), axis=1)
    last = np.where(np.isfinite(points), points, 0.0).max(axis=1, keepdims=True)
    points = np.minimum(points, last)  # the sum is the largest from the last breakpoint on

    def total(t: np.ndarray) -> np.ndarray:
        # A breakpoint of a nearly still pixel can be huge; another's rate times it overflows
        # to inf, which the clip takes to that pixel's upper limit, as it should.
        with np.errstate(over="ignore"):
            return np.clip(rate * t, low, high).sum(axis=1, keepdims=True)

    # The last breakpoint whose sum is at most the target (the first where none is).
    first, past = (
        np.zeros_like(wanted, dtype=np.int64),
        np.full_like(wanted, 2 * size - 1, np.int64),
    )
    for _ in range((2 * size).bit_length()):
        middle = (first + past + 1) // 2
        under = total(np.take_along_axis(points, middle, axis=1)) <= wanted
        first, past = np.where(under, middle, first), np.where(under, past, middle - 1)
    start = np.take_along_axis(points, first, axis=1)
    stop = np.take_along_axis(points, np.minimum(first + 1, 2 * size - 1), axis=1)
    free = moving & (leaves <= start) & (reaches >= stop)  # between its limits on the piece
    grade = np.where(free, rate, 0.0).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(grade > 0, (wanted - total(start)) / grade, 0.0)
    # Below the first breakpoint's sum (every pixel at its lower limit) the step is negative
    # and the clip holds t there: the block ends at its lower limits.
    t = np.clip(start + step, start, stop)
    new = np.clip(rate * t, low, high)
    image = new.reshape(rows, columns, factor, factor).transpose(0, 2, 1, 3)
    return image.reshape(rows * factor, columns * factor)[:ny, :nx].copy()


def check_local(radius: float, p: float, prefix: str = "") -> None:
    """Raise unless ``radius`` is a positive int and ``p >= 1``; ``prefix`` qualifies their
    names in the message (``"LocalVolume."``)."""
    if not (isinstance(radius, int) and radius >= 1):
        raise ValueError(f"{prefix}radius must be a positive integer (pixels), got {radius!r}")
    if not p >= 1:
        raise ValueError(f"{prefix}p must be at least 1, got {p}")


class LocalBound:
    """Local averages of the density and the p-norm constraint on them (Wu et al. 2018).

    ``rho̅_e`` is the mean density over the mask pixels of the (2r+1)² square around ``e``;
    the constraint ``G = (mean over L of (rho̅_e / alpha_e)^p)^(1/p) - 1 <= 0`` aggregates
    ``rho̅_e <= alpha_e`` over the constrained pixels ``L``; as ``p`` grows it tends to the
    max. The bound ``alpha`` is one number or one per pixel.
    """

    def __init__(
        self,
        active: np.ndarray,
        constrained: np.ndarray,
        radius: int,
        alpha: float | np.ndarray,
        p: float,
    ) -> None:
        self.inside = active.astype(bool)
        self.constrained = constrained & self.inside
        self.count = int(self.constrained.sum())
        if self.count == 0:
            raise ValueError(
                "LocalVolume.mask leaves no mask pixel under the local volume constraint"
            )
        self.size = 2 * radius + 1
        self.alpha = np.where(self.constrained, alpha, 1.0) if np.ndim(alpha) else alpha
        self.mean_alpha = float(np.mean(np.broadcast_to(alpha, active.shape)[self.constrained]))
        self.p = p
        self.neighbours = self._box(self.inside.astype(float))

    def _box(self, values: np.ndarray) -> np.ndarray:
        # A centred odd box with zero padding: its own adjoint, which the gradient relies on.
        return ndi.uniform_filter(values, self.size, mode="constant", cval=0.0)

    def average(self, density: np.ndarray) -> np.ndarray:
        summed = self._box(np.where(self.inside, density, 0.0))
        return np.divide(summed, self.neighbours, out=np.zeros_like(summed), where=self.inside)

    def _ratio(self, density: np.ndarray) -> tuple[np.ndarray, float]:
        """``rho̅ / alpha`` on the constrained pixels (0 elsewhere) and its p-norm."""
        ratio = np.where(self.constrained, self.average(density) / self.alpha, 0.0)
        return ratio, float(np.mean(ratio[self.constrained] ** self.p)) ** (1.0 / self.p)

    def value(self, density: np.ndarray) -> float:
        """``G`` of the density."""
        return self._ratio(density)[1] - 1.0

    def __call__(self, density: np.ndarray) -> tuple[float, np.ndarray]:
        """``G`` of the density and ``dG/drho``."""
        ratio, norm = self._ratio(density)
        if norm == 0.0:
            return -1.0, np.zeros_like(density)
        outer = ratio ** (self.p - 1.0) * (norm ** (1.0 - self.p) / self.count) / self.alpha
        scaled = np.divide(outer, self.neighbours, out=np.zeros_like(outer), where=self.inside)
        return norm - 1.0, np.where(self.inside, self._box(scaled), 0.0)


def local_density(
    density: np.ndarray, radius: int, *, mask: np.ndarray | None = None
) -> np.ndarray:
    """Mean density over the mask pixels of the (2r+1) x (2r+1) square around each pixel.

    The field the local volume constraint of :func:`femsr.topopt.optimize` bounds; 0 outside
    the mask.

    Examples
    --------
    >>> x = np.zeros((4, 4)); x[:, :2] = 1.0
    >>> local_density(x, 1)[0].round(3).tolist()
    [1.0, 0.667, 0.333, 0.0]
    """
    density = check_image("density", density)
    check_local(radius, 1.0)
    active = check_mask(mask, density.shape)
    return LocalBound(active, active.astype(bool), radius, 1.0, 1.0).average(density)
