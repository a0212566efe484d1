"""Reference topology-optimization kernels: cone filter, Heaviside projection, OC update.

Twins of ``cpp/topopt.cpp`` (see ``cpp/topopt.hpp`` for the formulas). ``mask`` is a uint8
(ny, nx) image of the design elements; every other image is float64 (ny, nx).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage as ndi


def cone_kernel(rmin: float) -> np.ndarray:
    """Cone weights ``max(0, rmin - d)`` on the (2r+1, 2r+1) offsets, ``r = ceil(rmin) - 1``."""
    reach = math.ceil(rmin) - 1
    offsets = np.arange(-reach, reach + 1)
    distance = np.hypot(offsets[:, None], offsets[None, :])
    return np.maximum(0.0, rmin - distance)


def _correlate(values: np.ndarray, rmin: float) -> np.ndarray:
    return ndi.correlate(values, cone_kernel(rmin), mode="constant", cval=0.0)


def filter_weight_sums(mask: np.ndarray, rmin: float) -> np.ndarray:
    """Cone-weight sums over the masked neighbours of every masked element, 0 elsewhere."""
    active = mask.astype(bool)
    return np.where(active, _correlate(active.astype(float), rmin), 0.0)


def density_filter(
    mask: np.ndarray, rmin: float, wsum: np.ndarray, values: np.ndarray, transpose: bool
) -> np.ndarray:
    """Masked cone filter ``F(values)``, or its transpose ``F^T(values)``."""
    active = mask.astype(bool)
    if transpose:
        scaled = np.divide(values, wsum, out=np.zeros_like(values), where=active)
        return np.where(active, _correlate(scaled, rmin), 0.0)
    summed = _correlate(np.where(active, values, 0.0), rmin)
    return np.divide(summed, wsum, out=np.zeros_like(summed), where=active)


def project(values: np.ndarray, beta: float, eta: float) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed Heaviside projection of Wang, Lazarov & Sigmund (2011) and its derivative."""
    denominator = math.tanh(beta * eta) + math.tanh(beta * (1.0 - eta))
    t = np.tanh(beta * (values - eta))
    return (math.tanh(beta * eta) + t) / denominator, beta * (1.0 - t * t) / denominator


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
) -> tuple[np.ndarray, float, float, int]:
    """OC update meeting the target mass; returns (xnew, multiplier, mass, evaluations).

    The same bracketed Illinois search on ``log(lambda)`` as the compiled kernel.
    """
    active = mask.astype(bool)
    ratio = np.divide(np.maximum(0.0, -dc), dv, out=np.zeros_like(dc), where=active & (dv > 0))
    s = np.where(active, x * ratio**damping, 0.0)
    ssum = float(np.sum(dv[active] * s[active]))
    lo = np.where(active, np.maximum(0.0, x - move), 0.0)
    hi = np.where(active, np.minimum(1.0, x + move), 0.0)
    evaluations = 0

    def design(u: float) -> np.ndarray:
        with np.errstate(over="ignore"):
            scaled = s * math.exp(u) if u < 709.0 else np.where(s > 0, np.inf, 0.0)
        return np.where(s > 0, np.minimum(hi, np.maximum(lo, scaled)), lo)

    def mass_at(u: float) -> float:
        nonlocal evaluations
        evaluations += 1
        xnew = design(u)
        if wsum is None:
            return float(np.sum(dv[active] * xnew[active]))
        projected, _ = project(density_filter(mask, rmin, wsum, xnew, False), beta, eta)
        return float(np.sum(projected[active]))

    tol = 1e-12 * abs(target)
    usable = 0.0 < ssum < math.inf and target > 0.0
    u0 = math.log(target / ssum) if usable else 0.0
    f0 = mass_at(u0) - target
    best_u, best_f = u0, f0
    ua, fa, ub, fb = u0, f0, u0, f0
    bracketed = abs(f0) <= tol
    direction = 1.0 if f0 < 0.0 else -1.0
    step = 1.0
    while not bracketed and step <= 1024.0:
        u = u0 + direction * step
        f = mass_at(u) - target
        if abs(f) < abs(best_f):
            best_u, best_f = u, f
        if direction > 0.0:
            ua, fa, ub, fb = ub, fb, u, f
            bracketed = f >= 0.0
        else:
            ub, fb, ua, fa = ua, fa, u, f
            bracketed = f <= 0.0
        step *= 2.0
    side = 0
    for _ in range(200):
        if not bracketed or abs(best_f) <= tol:
            break
        u = ub - fb * (ub - ua) / (fb - fa)
        if not ua < u < ub:
            u = 0.5 * (ua + ub)
        if not ua < u < ub:
            break
        f = mass_at(u) - target
        if abs(f) < abs(best_f):
            best_u, best_f = u, f
        if f < 0.0:
            ua, fa = u, f
            if side == -1:
                fb *= 0.5
            side = -1
        else:
            ub, fb = u, f
            if side == 1:
                fa *= 0.5
            side = 1
    return design(best_u), math.exp(-best_u / damping), best_f + target, evaluations
