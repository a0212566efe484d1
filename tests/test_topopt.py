"""Topology optimization: kernels against their twins and oracles, top88's MBB beam, gradients,
checkpoint/resume, callbacks and bad input."""

import itertools
import json
import logging
import math
import os

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from femsr import fem, topopt
from femsr.reference import topopt as ref

# --- Problems -------------------------------------------------------------------------------


def half_mbb(ny, nx):
    """top88's half MBB beam: unit load down at the top-left node, x fixed on the left edge
    (symmetry), y fixed at the bottom-right node."""
    forces = np.zeros((1, ny + 1, nx + 1, 2))
    forces[0, 0, 0, 1] = -1.0
    fixed = np.zeros((ny + 1, nx + 1, 2), dtype=bool)
    fixed[:, 0, 0] = True
    fixed[ny, nx, 1] = True
    return forces, fixed


def l_bracket(ny=12, nx=14):
    """An L-shaped mask clamped at the top, two load cases at the tip of the arm."""
    mask = np.ones((ny, nx), dtype=bool)
    mask[: ny // 2, nx // 2 :] = False
    fixed = np.zeros((ny + 1, nx + 1, 2), dtype=bool)
    fixed[0, : nx // 2 + 1] = True
    forces = np.zeros((2, ny + 1, nx + 1, 2))
    forces[0, ny // 2 : ny // 2 + 3, nx, 1] = -1.0
    forces[1, ny - 2 : ny + 1, nx, 0] = 1.0
    return mask, forces, fixed


def random_mask(rng, shape, fill=0.75):
    mask = rng.random(shape) < fill
    mask[0, 0] = True
    return mask


# --- top88 oracle ----------------------------------------------------------------------------


def top88(nelx, nely, volfrac, penal, rmin, ft):
    """A line-by-line numpy port of top88.m (Andreassen et al. 2011): returns (xPhys, c)."""
    E0, Emin, nu = 1.0, 1e-9, 0.3
    A11 = np.array([[12, 3, -6, -3], [3, 12, 3, 0], [-6, 3, 12, -3], [-3, 0, -3, 12]])
    A12 = np.array([[-6, -3, 0, 3], [-3, -6, -3, -6], [0, -3, -6, 3], [3, -6, 3, -6]])
    B11 = np.array([[-4, 3, -2, 9], [3, -4, -9, 4], [-2, -9, -4, -3], [9, 4, -3, -4]])
    B12 = np.array([[2, -3, 4, -9], [-3, 2, 9, -2], [4, 9, 2, 3], [-9, -2, 3, 2]])
    KE = (
        1
        / (1 - nu**2)
        / 24
        * (np.block([[A11, A12], [A12.T, A11]]) + nu * np.block([[B11, B12], [B12.T, B11]]))
    )
    # MATLAB numbering: nodes column by column from the top-left, 1-based.
    nodenrs = np.arange(1, (1 + nelx) * (1 + nely) + 1).reshape(1 + nely, 1 + nelx, order="F")
    edofVec = (2 * nodenrs[:-1, :-1] + 1).ravel(order="F")
    edofMat = edofVec[:, None] + np.array(
        [0, 1, 2 * nely + 2, 2 * nely + 3, 2 * nely, 2 * nely + 1, -2, -1]
    )
    iK = np.kron(edofMat, np.ones((8, 1))).T.ravel(order="F").astype(int) - 1
    jK = np.kron(edofMat, np.ones((1, 8))).T.ravel(order="F").astype(int) - 1
    ndof = 2 * (nely + 1) * (nelx + 1)
    F = np.zeros(ndof)
    F[1] = -1.0
    U = np.zeros(ndof)
    fixeddofs = np.union1d(np.arange(1, 2 * (nely + 1) + 1, 2), [ndof]) - 1
    freedofs = np.setdiff1d(np.arange(ndof), fixeddofs)
    # Filter.
    reach = math.ceil(rmin) - 1
    iH, jH, sH = [], [], []
    for i1 in range(1, nelx + 1):
        for j1 in range(1, nely + 1):
            e1 = (i1 - 1) * nely + j1
            for i2 in range(max(i1 - reach, 1), min(i1 + reach, nelx) + 1):
                for j2 in range(max(j1 - reach, 1), min(j1 + reach, nely) + 1):
                    e2 = (i2 - 1) * nely + j2
                    iH.append(e1 - 1)
                    jH.append(e2 - 1)
                    sH.append(max(0.0, rmin - math.sqrt((i1 - i2) ** 2 + (j1 - j2) ** 2)))
    H = sp.csr_matrix((sH, (iH, jH)), shape=(nelx * nely, nelx * nely))
    Hs = np.asarray(H.sum(axis=1)).ravel()
    # Iterations.
    x = np.full((nely, nelx), volfrac)
    xPhys = x.copy()
    change = 1.0
    c = math.nan
    while change > 0.01:
        sK = (
            KE.ravel(order="F")[:, None] * (Emin + xPhys.ravel(order="F") ** penal * (E0 - Emin))
        ).ravel(order="F")
        K = sp.csc_matrix((sK, (iK, jK)), shape=(ndof, ndof))
        K = (K + K.T) / 2
        U[freedofs] = spla.spsolve(K[freedofs][:, freedofs].tocsc(), F[freedofs])
        Ue = U[edofMat - 1]
        ce = np.sum((Ue @ KE) * Ue, axis=1).reshape(nely, nelx, order="F")
        c = float(np.sum((Emin + xPhys**penal * (E0 - Emin)) * ce))
        dc = -penal * (E0 - Emin) * xPhys ** (penal - 1) * ce
        dv = np.ones((nely, nelx))
        if ft == 1:
            dc = (
                H
                @ (x.ravel(order="F") * dc.ravel(order="F"))
                / Hs
                / np.maximum(1e-3, x.ravel(order="F"))
            ).reshape(nely, nelx, order="F")
        else:
            dc = (H @ (dc.ravel(order="F") / Hs)).reshape(nely, nelx, order="F")
            dv = (H @ (dv.ravel(order="F") / Hs)).reshape(nely, nelx, order="F")
        l1, l2, move = 0.0, 1e9, 0.2
        while (l2 - l1) / (l1 + l2) > 1e-3:
            lmid = 0.5 * (l2 + l1)
            xnew = np.maximum(
                0,
                np.maximum(
                    x - move, np.minimum(1, np.minimum(x + move, x * np.sqrt(-dc / dv / lmid)))
                ),
            )
            if ft == 1:
                xPhys = xnew
            else:
                xPhys = (H @ xnew.ravel(order="F") / Hs).reshape(nely, nelx, order="F")
            if xPhys.sum() > volfrac * nelx * nely:
                l1 = lmid
            else:
                l2 = lmid
        change = float(np.abs(xnew - x).max())
        x = xnew
    return xPhys, c


@pytest.mark.parametrize(("ft", "name"), [(1, "sensitivity"), (2, "density")])
def test_half_mbb_reproduces_top88(ft, name):
    nely, nelx = 20, 60
    oracle_density, oracle_compliance = top88(nelx, nely, 0.5, 3.0, 1.5, ft)
    forces, fixed = half_mbb(nely, nelx)
    result = topopt.optimize(
        forces,
        fixed,
        volfrac=0.5,
        rmin=1.5,
        filter=name,
        material=fem.Material(E0=1.0, nu=0.3, penal=3.0, Emin=1e-9),
        max_iter=1000,
    )
    assert result.converged
    # top88 prints the compliance of the last design it analysed.
    assert result.history[-1].objective == pytest.approx(oracle_compliance, rel=0.01)
    assert result.compliance == pytest.approx(oracle_compliance, rel=0.01)
    assert np.abs(result.density - oracle_density).mean() < 0.02
    assert result.mass == pytest.approx(0.5, abs=1e-12)


# --- Filter ----------------------------------------------------------------------------------


def dense_filter(mask, rmin):
    """F as a dense matrix from pairwise centre distances, cut to the mask and renormalized."""
    rows, cols = np.indices(mask.shape)
    centres = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(float)
    distance = np.linalg.norm(centres[:, None] - centres[None, :], axis=2)
    m = mask.ravel().astype(float)
    weights = np.maximum(0.0, rmin - distance) * m[None, :] * m[:, None]
    sums = weights.sum(axis=1)
    return np.divide(weights, sums[:, None], out=np.zeros_like(weights), where=sums[:, None] > 0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("rmin", [0.7, 1.5, 2.0, 2.6, 3.7])
def test_filter_matches_dense_oracle_and_twin(seed, rmin):
    rng = np.random.default_rng(seed)
    shape = (9, 13)
    mask = random_mask(rng, shape)
    values = rng.standard_normal(shape)
    dense = dense_filter(mask, rmin)
    for transpose, matrix in ((False, dense), (True, dense.T)):
        expected = (matrix @ values.ravel()).reshape(shape)
        cpp = topopt.density_filter(values, rmin, mask=mask, transpose=transpose)
        python = topopt.density_filter(
            values, rmin, mask=mask, transpose=transpose, backend="python"
        )
        np.testing.assert_allclose(cpp, expected, rtol=0, atol=1e-13)
        np.testing.assert_allclose(python, expected, rtol=0, atol=1e-13)


def test_filter_is_restricted_to_the_mask():
    rng = np.random.default_rng(3)
    mask = random_mask(rng, (15, 11), fill=0.6)
    values = rng.random((15, 11))
    noisy = values.copy()
    noisy[~mask] = 1e6  # values outside the mask must not leak in
    for backend in ("cpp", "python"):
        filtered = topopt.density_filter(noisy, 2.5, mask=mask, backend=backend)
        np.testing.assert_array_equal(
            filtered, topopt.density_filter(values, 2.5, mask=mask, backend=backend)
        )
        assert not filtered[~mask].any()
        ones = topopt.density_filter(np.ones((15, 11)), 2.5, mask=mask, backend=backend)
        np.testing.assert_array_equal(ones, mask.astype(float))


def test_filter_transpose_is_the_adjoint():
    rng = np.random.default_rng(4)
    mask = random_mask(rng, (40, 31))
    x, y = rng.standard_normal((2, 40, 31))
    fx = topopt.density_filter(x, 3.2, mask=mask)
    fty = topopt.density_filter(y, 3.2, mask=mask, transpose=True)
    assert np.vdot(fx, y) == pytest.approx(np.vdot(x, fty), rel=1e-12)


def test_filter_twins_agree_on_a_large_image():
    rng = np.random.default_rng(5)
    values = rng.random((300, 257))
    mask = random_mask(rng, values.shape, fill=0.9)
    for transpose in (False, True):
        np.testing.assert_allclose(
            topopt.density_filter(values, 4.5, mask=mask, transpose=transpose),
            topopt.density_filter(values, 4.5, mask=mask, transpose=transpose, backend="python"),
            rtol=1e-12,
            atol=1e-14,
        )


# --- Projection ------------------------------------------------------------------------------


@pytest.mark.parametrize(("beta", "threshold"), [(1.0, 0.5), (8.0, 0.5), (32.0, 0.3), (4.0, 0.0)])
def test_projection_twins_endpoints_and_derivative(beta, threshold):
    values = np.linspace(0.0, 1.0, 101)
    cpp, dcpp = topopt.project(values, beta, threshold)
    python, dpython = topopt.project(values, beta, threshold, backend="python")
    np.testing.assert_allclose(cpp, python, rtol=0, atol=1e-14)
    np.testing.assert_allclose(dcpp, dpython, rtol=1e-13, atol=1e-14)
    assert abs(cpp[0]) < 1e-15 and abs(cpp[-1] - 1.0) < 1e-15
    assert np.all(np.diff(cpp) >= 0)
    step = 1e-6
    inner = values[1:-1]
    fd = (
        topopt.project(inner + step, beta, threshold)[0]
        - topopt.project(inner - step, beta, threshold)[0]
    ) / (2 * step)
    np.testing.assert_allclose(dcpp[1:-1], fd, rtol=1e-6, atol=1e-7)


def test_projection_inverse_starts_at_the_mass():
    for beta in (1.0, 4.0, 16.0):
        for volfrac in (0.2, 0.5, 0.9):
            start = topopt.inverse_projection(volfrac, beta, 0.5)
            assert topopt.project(np.array([start]), beta)[0][0] == pytest.approx(
                volfrac, abs=1e-12
            )
    # Arrays, ends included at a beta where tanh rounds to 1 (no warning: they are errors).
    density = np.linspace(0.0, 1.0, 11)
    for beta, threshold in ((2.0, 0.3), (64.0, 0.5)):
        inverse = topopt.inverse_projection(density, beta, threshold)
        assert np.all(np.diff(inverse) > 0) and 0 <= inverse.min() and inverse.max() <= 1
        projected = topopt.project(inverse, beta, threshold)[0]
        np.testing.assert_allclose(projected, density, atol=1e-9 if beta < 10 else 1e-6)


# --- OC update -------------------------------------------------------------------------------


def oc_inputs(seed, shape=(30, 40)):
    rng = np.random.default_rng(seed)
    mask = random_mask(rng, shape)
    x = np.where(mask, rng.uniform(0.05, 0.95, shape), 0.0)
    dc = -rng.lognormal(0.0, 1.5, shape)
    dc[rng.random(shape) < 0.05] = 0.0  # zero sensitivities: those variables go to their bound
    return mask, x, dc


@pytest.mark.parametrize("seed", range(4))
def test_oc_update_meets_mass_and_matches_twin(seed):
    mask, x, dc = oc_inputs(seed)
    dv = np.where(mask, 1.0, 0.0)
    target = x[mask].sum() * 1.03
    for move, damping in ((0.2, 0.5), (0.05, 1.0)):
        cpp, lam, mass = topopt.oc_update(x, dc, dv, target, mask=mask, move=move, damping=damping)
        python, lam_py, mass_py = topopt.oc_update(
            x, dc, dv, target, mask=mask, move=move, damping=damping, backend="python"
        )
        np.testing.assert_allclose(cpp, python, rtol=0, atol=1e-12)
        assert lam == pytest.approx(lam_py, rel=1e-10)
        for new, met in ((cpp, mass), (python, mass_py)):
            assert abs(new[mask].sum() - target) <= 1e-12 * target
            assert met == pytest.approx(target, rel=1e-12)
            assert not new[~mask].any()
            assert np.all(new >= np.maximum(0, x - move) - 1e-15)
            assert np.all(new <= np.minimum(1, x + move) + 1e-15)
        # The OC formula for the multiplier found, off the bounds.
        low, high = np.maximum(0, x - move), np.minimum(1, x + move)
        free = mask & (cpp > low + 1e-9) & (cpp < high - 1e-9)
        assert free.sum() > 10
        formula = x[free] * (-dc[free] / lam) ** damping
        np.testing.assert_allclose(cpp[free], formula, rtol=1e-9)


def test_oc_update_agrees_with_top88_bisection():
    mask, x, dc = oc_inputs(7)
    mask[:] = True
    x = np.full(x.shape, 0.5)
    dv = np.ones(x.shape)
    l1, l2 = 0.0, 1e9
    while (l2 - l1) / (l1 + l2) > 1e-14:
        lmid = 0.5 * (l1 + l2)
        xnew = np.maximum(
            0, np.maximum(x - 0.2, np.minimum(1, np.minimum(x + 0.2, x * np.sqrt(-dc / dv / lmid))))
        )
        if xnew.sum() > 0.5 * x.size:
            l1 = lmid
        else:
            l2 = lmid
    new, lam, _ = topopt.oc_update(x, dc, dv, 0.5 * x.size)
    assert lam == pytest.approx(lmid, rel=1e-9)
    np.testing.assert_allclose(new, xnew, atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_projected_oc_update_meets_projected_mass(seed):
    mask, x, dc = oc_inputs(seed, shape=(25, 33))
    rmin, beta = 2.2, 6.0
    wsum = ref.filter_weight_sums(mask.astype(np.uint8), rmin)
    filtered = ref.density_filter(mask.astype(np.uint8), rmin, wsum, x, False)
    _, slope = topopt.project(filtered, beta)
    dv = topopt.density_filter(np.where(mask, slope, 0.0), rmin, mask=mask, transpose=True)
    target = 0.45 * mask.sum()
    results = [
        topopt.oc_update(x, dc, dv, target, mask=mask, rmin=rmin, beta=beta, backend=backend)
        for backend in ("cpp", "python")
    ]
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=0, atol=1e-10)
    for new, _, met in results:
        density, _ = topopt.project(topopt.density_filter(new, rmin, mask=mask), beta)
        assert abs(density[mask].sum() - target) <= 1e-11 * target
        assert met == pytest.approx(target, rel=1e-12)


def test_oc_update_out_of_reach_takes_the_nearest_extreme():
    x = np.full((6, 7), 0.5)
    dc = -np.ones((6, 7))
    new, _, mass = topopt.oc_update(x, dc, np.ones((6, 7)), 0.9 * 42, move=0.1)
    np.testing.assert_allclose(new, 0.6)
    assert mass == pytest.approx(0.6 * 42)


# --- Gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("per_pixel", [False, True])
@pytest.mark.parametrize("with_solid", [False, True])
@pytest.mark.parametrize("beta", [None, 3.0])
def test_sensitivities_match_finite_differences(beta, with_solid, per_pixel):
    mask, forces, fixed = l_bracket(8, 9)
    solid = np.zeros_like(mask)
    if with_solid:  # a passive solid strip along the bottom, as a prescribed cortex
        solid[-2:] = mask[-2:]
        mask = mask & ~solid
    constrained = mask.copy()
    constrained[:, :2] = False  # a strip exempt from the local bound, as a cortical shell is
    # a bound per pixel, as generate's layout-following one
    bound = np.random.default_rng(1).uniform(0.4, 0.6, mask.shape) if per_pixel else 0.5
    problem = topopt._validate(
        forces,
        fixed,
        mask=mask,
        volfrac=0.4,
        rmin=1.8,
        filter="density",
        weights=(1.0, 2.5),
        move=0.2,
        damping=0.5,
        material=fem.Material(E0=3.0),
        projection=None if beta is None else topopt.Projection(beta),
        local=topopt.LocalVolume(bound, radius=2, p=8.0, mask=constrained),
        solid=solid,
        solver_options=None,
        backend="cpp",
    )
    x = np.where(mask, np.random.default_rng(0).uniform(0.2, 0.9, mask.shape), 0.0)

    def objective_mass_local(design):
        density, slope = problem.physical(design, beta)
        compliance, _ = problem.analyse(density)
        return (
            problem.weights @ compliance,
            density.sum(),
            problem.local_constraint(density, slope)[0],
        )

    density, slope = problem.physical(x, beta)
    _, energy = problem.analyse(density)
    dc, dv = problem.sensitivities(x, density, slope, energy)
    _, dg = problem.local_constraint(density, slope)
    step = 1e-5  # 1e-6 loses digits to round-off once a solid strip stiffens the bracket
    for e in np.flatnonzero(mask)[::5]:
        plus, minus = x.copy(), x.copy()
        plus.flat[e] += step
        minus.flat[e] -= step
        (cp, mp, gp), (cm, mm, gm) = objective_mass_local(plus), objective_mass_local(minus)
        assert dc.flat[e] == pytest.approx((cp - cm) / (2 * step), rel=1e-5, abs=1e-9)
        assert dv.flat[e] == pytest.approx((mp - mm) / (2 * step), rel=1e-6, abs=1e-9)
        assert dg.flat[e] == pytest.approx((gp - gm) / (2 * step), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("radius", [1, 3])
def test_local_density_matches_brute_force(radius):
    rng = np.random.default_rng(radius)
    mask = random_mask(rng, (9, 11))
    x = np.where(mask, rng.random(mask.shape), 0.0)
    expected = np.zeros_like(x)
    for i, j in zip(*np.nonzero(mask), strict=True):
        window = (
            slice(max(0, i - radius), i + radius + 1),
            slice(max(0, j - radius), j + radius + 1),
        )
        expected[i, j] = x[window][mask[window]].mean()
    np.testing.assert_allclose(topopt.local_density(x, radius, mask=mask), expected, rtol=1e-12)


# --- The optimizer ---------------------------------------------------------------------------


def test_every_step_keeps_a_tight_local_bound():
    """From the uniform start, which meets the bound, no update leaves it far: the step is
    checked on the constraint itself, through filter and projection, not on its
    linearization, which let the p-norm overshoot and the design keep the voids it opened.
    (A move limit of 0.2 lets the first step overshoot even at the strongest ratio.)"""
    forces, fixed = half_mbb(24, 72)
    result = topopt.optimize(
        forces,
        fixed,
        volfrac=0.3,
        rmin=1.5,
        max_iter=25,
        move=0.05,
        local_volume=topopt.LocalVolume(0.33, radius=3, p=16.0),
    )
    assert result.mass == pytest.approx(0.3, rel=1e-9)
    # within 0.1 %: where no ratio up to the strongest reaches the bound, that step is taken
    assert max(r.local_volume for r in result.history) <= 0.33 * 1.001
    local = topopt.local_density(result.density, 3)
    assert local.max() < 0.6  # no solid member: the mass is spread


def test_a_bound_per_pixel_bounds_each_square_by_its_own_value():
    forces, fixed = half_mbb(16, 48)
    kwargs = dict(volfrac=0.3, rmin=1.5, max_iter=20, move=0.05)

    def bounded(volfrac):
        local = topopt.LocalVolume(volfrac, radius=3, p=16.0)
        return topopt.optimize(forces, fixed, local_volume=local, **kwargs)

    scalar = bounded(0.4)
    uniform = bounded(np.full((16, 48), 0.4))
    np.testing.assert_allclose(uniform.density, scalar.density, rtol=0, atol=1e-9)
    assert uniform.history[-1].local_volume == pytest.approx(scalar.history[-1].local_volume)
    # Half the beam bounded tighter: its local densities end lower than under the uniform
    # bound of the other half (the p-norm lets the densest squares pass their bound).
    bound = np.full((16, 48), 0.45)
    bound[:, :24] = 0.32
    split = bounded(0.45)
    loose = topopt.local_density(split.density, 3)
    split = bounded(bound)
    local = topopt.local_density(split.density, 3)
    tight = np.quantile(local[:, 3:21], 0.95)
    assert tight < np.quantile(loose[:, 3:21], 0.95) - 0.1
    assert tight < np.quantile(local[:, 27:45], 0.95) - 0.03
    assert split.mass == pytest.approx(0.3, rel=1e-9)


def test_local_volume_constraint_spreads_the_mass():
    """Wu et al.'s local bound: the mass is still met exactly, the bounded region's local
    densities stay near alpha (the p-norm overshoots the max a little), the exempt strip is
    free, and the compliance pays for it. A small move limit keeps the p-norm on its bound
    (at 0.2 the bound binds on a design that moves less)."""
    ny, nx = 16, 48
    forces, fixed = half_mbb(ny, nx)
    constrained = np.ones((ny, nx), bool)
    constrained[:2] = False  # the top chord may stay solid
    kwargs = dict(volfrac=0.3, rmin=1.5, max_iter=60, move=0.05)
    free = topopt.optimize(forces, fixed, **kwargs)
    bounded = topopt.optimize(
        forces,
        fixed,
        local_volume=topopt.LocalVolume(0.45, radius=3, p=16.0, mask=constrained),
        **kwargs,
    )
    mask = np.ones((ny, nx), bool)
    inner = constrained.copy()
    inner[:5] = False  # windows that reach into the solid chord cannot be sparse
    assert bounded.mass == pytest.approx(0.3, rel=1e-9)
    free_local = topopt.local_density(free.density, 3, mask=mask)[inner]
    bounded_local = topopt.local_density(bounded.density, 3, mask=mask)[inner]
    # The p-norm bounds the bulk; a few peaks (the bottom chord) may pass alpha.
    assert np.quantile(bounded_local, 0.99) < np.quantile(free_local, 0.99) - 0.08
    assert bounded_local.max() < free_local.max() - 0.1
    assert bounded.history[-1].local_volume <= 0.45 * 1.02
    assert bounded.density[:2].mean() > free.density[:2].mean()  # mass moves to the exempt chord
    assert bounded.compliance > free.compliance
    assert free.history[-1].local_volume == 0.0


def test_an_unreachable_local_bound_takes_the_strongest_step_every_time(tmp_path):
    """A bound below the mean density (here 0.2 < 0.3 over the whole beam) is out of reach of
    every step; the ratio kappa must stop at its strongest finite value instead of growing
    each iteration until it overflows (which made NaN sensitivities), and the mass still
    holds."""
    ny, nx = 16, 48
    forces, fixed = half_mbb(ny, nx)
    path = tmp_path / "run.npz"
    kwargs = dict(volfrac=0.3, rmin=1.5, move=0.05, local_volume=topopt.LocalVolume(0.2, radius=3))
    checkpointing = topopt.Checkpointing(path)
    result = topopt.optimize(forces, fixed, max_iter=12, checkpointing=checkpointing, **kwargs)
    assert result.mass == pytest.approx(0.3, rel=1e-9)
    with np.load(path) as data:
        kappa = float(data["multiplier"])
    assert 0.0 < kappa < 1e30
    free = topopt.optimize(forces, fixed, max_iter=12, volfrac=0.3, rmin=1.5, move=0.05)
    spread = topopt.local_density(result.density, 3)[0].max()
    assert spread < topopt.local_density(free.density, 3)[0].max()


def test_local_volume_resume_and_twins_agree(tmp_path):
    mask, forces, fixed = l_bracket()
    local = topopt.LocalVolume(0.36, radius=2)
    kwargs = dict(mask=mask, volfrac=0.35, rmin=1.5, move=0.05, local_volume=local)
    straight = topopt.optimize(forces, fixed, max_iter=10, **kwargs)
    twin = topopt.optimize(forces, fixed, max_iter=10, backend="python", **kwargs)
    np.testing.assert_allclose(twin.density, straight.density, atol=1e-6)
    path = tmp_path / "run.npz"
    topopt.optimize(forces, fixed, max_iter=5, checkpointing=topopt.Checkpointing(path), **kwargs)
    with np.load(path) as data:
        assert float(data["multiplier"]) > 0.0  # the bound is active and its ratio is kept
    resume = topopt.Checkpointing(resume=path)
    resumed = topopt.optimize(forces, fixed, max_iter=10, checkpointing=resume, **kwargs)
    np.testing.assert_array_equal(resumed.design, straight.design)


# --- The optimizer (continued) ----------------------------------------------------------------


def test_cpp_and_python_paths_give_the_same_design():
    mask, forces, fixed = l_bracket()
    kwargs = dict(
        mask=mask,
        volfrac=0.4,
        rmin=2.0,
        weights=[1.0, 0.5],
        projection=topopt.Projection(1.0, beta_every=5),
        max_iter=12,
    )
    cpp = topopt.optimize(forces, fixed, **kwargs)
    python = topopt.optimize(forces, fixed, backend="python", **kwargs)
    assert cpp.iterations == python.iterations == 12
    np.testing.assert_allclose(cpp.density, python.density, rtol=0, atol=1e-8)
    np.testing.assert_allclose(cpp.series("objective"), python.series("objective"), rtol=1e-10)
    assert cpp.series("beta").tolist() == python.series("beta").tolist()


def test_mask_weights_and_history():
    mask, forces, fixed = l_bracket()
    weights = np.array([2.0, 0.5])
    result = topopt.optimize(
        forces, fixed, mask=mask, volfrac=0.35, rmin=1.6, weights=weights, max_iter=15
    )
    assert not result.density[~mask].any() and not result.design[~mask].any()
    assert result.mass == pytest.approx(0.35, abs=1e-12)
    assert result.density[mask].sum() == pytest.approx(0.35 * mask.sum(), rel=1e-12)
    assert result.compliance == pytest.approx(weights @ result.case_compliance, rel=1e-14)
    history = result.history
    assert [r.iteration for r in history] == list(range(1, 16))
    for record in history:
        assert record.objective == pytest.approx(weights @ np.array(record.compliance), rel=1e-14)
        assert record.mass == pytest.approx(0.35, abs=1e-12)
        assert len(record.cg_iterations) == 2 and record.seconds >= record.fe_seconds > 0
    objective = result.series("objective")
    assert objective[-1] < 0.5 * objective[0]  # the design improves a lot from uniform


def test_zero_weight_case_is_ignored():
    mask, forces, fixed = l_bracket()
    kwargs = dict(mask=mask, volfrac=0.4, max_iter=8)
    both = topopt.optimize(forces, fixed, weights=[3.0, 0.0], **kwargs)
    single = topopt.optimize(forces[:1], fixed, **kwargs)
    np.testing.assert_allclose(both.density, single.density, atol=1e-9)
    assert both.compliance == pytest.approx(3.0 * single.compliance, rel=1e-9)


def test_projection_continuation_and_stop():
    forces, fixed = half_mbb(10, 30)
    result = topopt.optimize(
        forces,
        fixed,
        volfrac=0.5,
        rmin=2.0,
        projection=topopt.Projection(1.0, beta_max=8.0, beta_every=10),
        max_iter=300,
    )
    betas = result.series("beta")
    assert betas[0] == 1.0 and result.beta == 8.0
    assert set(betas.tolist()) == {1.0, 2.0, 4.0, 8.0}
    assert np.all(np.diff(betas) >= 0)
    runs = np.diff(np.flatnonzero(np.diff(betas)))
    assert np.all(runs <= 10)  # doubled at least every beta_every iterations
    assert result.converged and result.history[-1].change <= 0.01
    assert result.mass == pytest.approx(0.5, abs=1e-12)
    gray = np.mean((result.density > 0.1) & (result.density < 0.9))
    assert gray < 0.1  # crisper than without projection


def test_a_last_iteration_that_doubles_beta_leaves_the_result_at_the_mass():
    forces, fixed = half_mbb(10, 30)
    result = topopt.optimize(
        forces,
        fixed,
        volfrac=0.4,
        rmin=2.0,
        projection=topopt.Projection(2.0, beta_max=8.0, beta_every=5),
        max_iter=5,
    )
    assert result.history[-1].beta == result.beta == 2.0  # the next iteration would use 4
    assert result.mass == pytest.approx(0.4, abs=1e-12)


def test_callback_stops_and_progress_shows_a_bar_and_logs_every_iteration(capsys, caplog):
    forces, fixed = half_mbb(6, 12)
    seen = []

    def callback(state):
        seen.append(state)
        return state.record.iteration == 3

    with caplog.at_level(logging.DEBUG, logger="femsr.topopt"):
        result = topopt.optimize(forces, fixed, callback=callback, progress=True, max_iter=50)
    assert result.reason == "callback" and result.iterations == 3 and not result.converged
    assert [s.record.iteration for s in seen] == [1, 2, 3]
    np.testing.assert_array_equal(seen[-1].design, result.design)
    assert seen[0].density.shape == (6, 12)
    bar = capsys.readouterr().err
    assert "optimize:" in bar and "/50 [" in bar and "obj " in bar  # a tqdm bar, its postfix
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(lines) == 3 and lines[0].startswith("it    1  obj ")
    assert "mass 0.500000" in lines[0] and "change" in lines[0] and "beta" in lines[0]
    assert "cg " in lines[0] and lines[0].endswith(" s")
    (outcome,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert outcome.startswith("optimize: 3 iterations (callback), objective ")

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="femsr.topopt"):
        topopt.optimize(forces, fixed, max_iter=2)
    assert capsys.readouterr().err == ""  # progress=False: no bar
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 2


@pytest.fixture
def solved_masks(monkeypatch):
    """The element count of the model of every FE solve topopt makes."""
    counts = []

    class Spy(fem.Solver):
        def solve(self, density, forces):
            counts.append(int(self.active.sum()))
            return super().solve(density, forces)

    monkeypatch.setattr(fem, "Solver", Spy)
    return counts


def crisp_mbb(ny=24, nx=72):
    """A half-MBB design of solid chords and diagonals (3 px) in void (physical 1 or 0)."""
    design = np.zeros((ny, nx))
    design[:3] = design[-3:] = 1.0
    rows = np.arange(ny)
    for start in range(0, nx, ny):
        for offset in range(3):
            design[rows, np.clip(start + rows + offset, 0, nx - 1)] = 1.0
    return design


def test_drop_void_solves_the_structure_alone_with_the_same_compliance(solved_masks):
    ny, nx = 24, 72
    forces, fixed = half_mbb(ny, nx)
    design = crisp_mbb(ny, nx)
    kwargs = dict(volfrac=float(design.mean()), rmin=1.0, max_iter=0, initial=design)
    full = topopt.optimize(forces, fixed, **kwargs)
    reduced = topopt.optimize(forces, fixed, solver_options={"drop_void": 1e-3}, **kwargs)
    assert solved_masks[0] == ny * nx
    assert solved_masks[-1] < 0.7 * ny * nx  # the void left the model, a halo stayed
    # All that differs is the void's 1e-9 E0, felt by slender struts: 1.4e-6 here (4e-6 with
    # 2 px diagonals, 7e-7 with 4 px, 4e-8 on a crisp femur at 100 µm).
    assert reduced.compliance == pytest.approx(full.compliance, rel=1e-5)


def test_drop_void_leaves_islands_out_and_falls_back_to_the_full_model(solved_masks):
    ny, nx = 24, 72
    forces, fixed = half_mbb(ny, nx)
    design = crisp_mbb(ny, nx)
    design[6:9, 42:46] = 1.0  # 4 px of void from the nearest strut: held only through void
    options = {"drop_void": 1e-3}
    kwargs = dict(volfrac=float(design.mean()), rmin=1.0, max_iter=0, initial=design)
    full = topopt.optimize(forces, fixed, **kwargs)
    reduced = topopt.optimize(forces, fixed, solver_options=options, **kwargs)
    islandless = crisp_mbb(ny, nx)  # and two rings of void around it
    assert solved_masks[-1] == ndi.binary_dilation(islandless, np.ones((3, 3)), 2).sum()
    assert reduced.compliance == pytest.approx(full.compliance, rel=1e-5)
    # The full model where the reduced one would lose a load (on the island) or gain nothing.
    loaded = forces.copy()
    loaded[0, 7, 43, 0] = 0.01
    for case, start in ((loaded, design), (forces, np.full((ny, nx), 0.5))):
        kwargs = dict(volfrac=float(start.mean()), rmin=1.0, max_iter=0, initial=start)
        full = topopt.optimize(case, fixed, **kwargs)
        reduced = topopt.optimize(case, fixed, solver_options=options, **kwargs)
        assert solved_masks[-1] == ny * nx
        assert reduced.compliance == full.compliance
    with pytest.raises(ValueError, match="drop_void"):
        topopt.optimize(forces, fixed, max_iter=0, solver_options={"drop_void": 1.0})


def test_drop_void_keeps_its_model_while_the_structure_stays_inside(monkeypatch):
    solves = []  # (solver, the structure of the density it solved)

    class Spy(fem.Solver):
        def solve(self, density, forces):
            structure = topopt.structure_model(density, fixed, 1e-3, forces=forces)
            solves.append((self, structure))
            return super().solve(density, forces)

    monkeypatch.setattr(fem, "Solver", Spy)
    forces, fixed = half_mbb(24, 72)
    crisp = crisp_mbb(24, 72)  # design variables 0.3 and 0.7 that project to it at beta 32
    design = 0.3 + 0.4 * crisp
    projection = topopt.Projection(32.0, beta_max=32.0)
    kwargs = dict(volfrac=float(crisp.mean()), rmin=1.0, projection=projection, move=0.05)
    topopt.optimize(
        forces,
        fixed,
        initial=design,
        max_iter=12,
        tol=0.0,
        solver_options={"drop_void": 1e-3},
        **kwargs,
    )
    reduced = [(solver, structure) for solver, structure in solves if not solver.active.all()]
    assert len(reduced) == len(solves)  # every solve left the void out
    for solver, structure in reduced:
        assert np.all(solver.active[structure])  # the structure lies inside the model
        assert solver.active.sum() > structure.sum()  # with room: a ring of void more
    models = [solver for solver, _ in reduced]
    assert 1 < len(set(models)) < len(models)  # kept for some iterations, renewed when left
    for before, after in itertools.pairwise(reduced):
        if after[0] is not before[0]:
            assert not np.all(before[0].active[after[1]])  # renewed only when needed


def test_drop_void_grows_the_design_of_the_full_model():
    ny, nx = 24, 72
    forces, fixed = half_mbb(ny, nx)
    projection = topopt.Projection(1.0, beta_max=16.0, beta_every=10)
    kwargs = dict(volfrac=0.3, rmin=1.5, projection=projection, max_iter=50)
    full = topopt.optimize(forces, fixed, **kwargs)
    reduced = topopt.optimize(forces, fixed, solver_options={"drop_void": 1e-3}, **kwargs)
    assert reduced.mass == pytest.approx(0.3, rel=1e-9)
    np.testing.assert_allclose(reduced.density, full.density, rtol=0, atol=5e-3)
    assert reduced.compliance == pytest.approx(full.compliance, rel=1e-4)


def test_without_the_final_solve_the_design_is_the_same_and_one_solve_is_saved(solved_masks):
    mask, forces, fixed = l_bracket()
    kwargs = dict(mask=mask, volfrac=0.35, max_iter=6)
    solved = topopt.optimize(forces, fixed, **kwargs)
    solves = len(solved_masks)
    bare = topopt.optimize(forces, fixed, final_solve=False, **kwargs)
    assert len(solved_masks) - solves == solves - 1
    np.testing.assert_array_equal(bare.density, solved.density)
    assert bare.mass == solved.mass
    np.testing.assert_array_equal(bare.series("objective"), solved.series("objective"))
    assert np.isnan(bare.compliance) and np.isnan(bare.case_compliance).all()
    assert np.isfinite(solved.compliance)
    with pytest.raises(TypeError, match="final_solve must be a bool"):
        topopt.optimize(forces, fixed, final_solve=1, **kwargs)


def test_max_iter_zero_analyses_the_start():
    forces, fixed = half_mbb(6, 12)
    result = topopt.optimize(forces, fixed, max_iter=0, volfrac=0.3)
    assert result.iterations == 0 and result.reason == "max_iter" and not result.history
    np.testing.assert_allclose(result.density, 0.3)


def test_initial_design_is_used():
    forces, fixed = half_mbb(6, 12)
    initial = np.full((6, 12), 0.3)
    initial[:, :6] = 0.7
    result = topopt.optimize(forces, fixed, initial=initial, filter="sensitivity", max_iter=0)
    np.testing.assert_array_equal(result.design, initial)


# --- Checkpoints -----------------------------------------------------------------------------


def test_solid_pixels_are_in_the_model_at_full_density():
    mask, forces, fixed = l_bracket()
    solid = np.zeros_like(mask)
    solid[-3:] = mask[-3:]
    # A design of ones beside the solid strip is the whole L at density 1.
    whole = topopt.optimize(forces, fixed, mask=mask, volfrac=1.0, max_iter=0)
    split = topopt.optimize(forces, fixed, mask=mask & ~solid, solid=solid, volfrac=1.0, max_iter=0)
    assert split.compliance == pytest.approx(whole.compliance, rel=1e-9)
    np.testing.assert_array_equal(split.density, whole.density)


@pytest.mark.parametrize("beta", [None, 2.0])
def test_solid_pixels_stay_solid_outside_the_mass(beta):
    mask, forces, fixed = l_bracket()
    solid = np.zeros_like(mask)
    solid[:, :2] = mask[:, :2]
    design = mask & ~solid
    projection = None if beta is None else topopt.Projection(beta)
    result = topopt.optimize(
        forces,
        fixed,
        mask=design,
        solid=solid,
        volfrac=0.3,
        max_iter=8,
        projection=projection,
        rmin=1.5,
    )
    assert (result.density[solid] == 1.0).all()
    assert (result.density[~mask] == 0.0).all()
    assert result.mass == pytest.approx(0.3, abs=1e-9)
    assert result.density[design].mean() == pytest.approx(0.3, abs=1e-9)
    free = topopt.optimize(
        forces,
        fixed,
        mask=design,
        volfrac=0.3,
        max_iter=8,
        projection=projection,
        rmin=1.5,
        solver_options={"direct_below": 10**6},
    )
    assert result.compliance < free.compliance  # the solid strip carries load


def comparable(history):
    return [(r.iteration, r.objective, r.compliance, r.mass, r.change, r.beta) for r in history]


def test_resume_after_interruption_gives_the_same_result(tmp_path):
    mask, forces, fixed = l_bracket()
    projection = topopt.Projection(1.0, beta_every=4)
    kwargs = dict(mask=mask, volfrac=0.4, rmin=2.0, projection=projection, weights=[1, 2])
    straight = topopt.optimize(forces, fixed, max_iter=12, **kwargs)
    path = tmp_path / "run.npz"

    def interrupt(state):
        if state.record.iteration == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        topopt.optimize(
            forces,
            fixed,
            max_iter=12,
            checkpointing=topopt.Checkpointing(path, every=6),
            callback=interrupt,
            **kwargs,
        )
    with np.load(path) as data:
        assert int(data["iteration"]) == 6 and len(data["history_objective"]) == 6
        assert {"design", "density", "beta", "options", "history_cg_iterations"} <= set(data.files)
    assert os.listdir(tmp_path) == ["run.npz"]  # no temporary file left behind
    both = topopt.Checkpointing(path, resume=path)
    resumed = topopt.optimize(forces, fixed, max_iter=12, checkpointing=both, **kwargs)
    np.testing.assert_array_equal(resumed.design, straight.design)
    np.testing.assert_array_equal(resumed.density, straight.density)
    assert comparable(resumed.history) == comparable(straight.history)
    assert resumed.beta == straight.beta and resumed.compliance == straight.compliance
    with np.load(path) as data:  # the final checkpoint
        assert int(data["iteration"]) == 12 and str(data["reason"]) == "max_iter"


def test_resume_continues_a_stopped_run_and_keeps_a_converged_one(tmp_path):
    forces, fixed = half_mbb(8, 16)
    path = tmp_path / "run.npz"
    first = topopt.optimize(forces, fixed, max_iter=5, checkpointing=topopt.Checkpointing(path))
    assert first.reason == "max_iter"
    both = topopt.Checkpointing(path, resume=path)
    more = topopt.optimize(forces, fixed, max_iter=500, checkpointing=both)
    straight = topopt.optimize(forces, fixed, max_iter=500)
    assert more.converged and more.iterations == straight.iterations
    np.testing.assert_array_equal(more.design, straight.design)
    resume = topopt.Checkpointing(resume=path)
    again = topopt.optimize(forces, fixed, max_iter=1000, checkpointing=resume)
    assert again.iterations == more.iterations and again.reason == "converged"


def writing(path):
    return topopt.Checkpointing(path)


def resuming(path):
    return topopt.Checkpointing(resume=path)


def test_resume_rejects_another_problem(tmp_path):
    forces, fixed = half_mbb(6, 12)
    path = tmp_path / "run.npz"
    topopt.optimize(forces, fixed, max_iter=2, checkpointing=writing(path))
    with pytest.raises(ValueError, match=r"other settings \(volfrac: 0\.5 → 0\.4\)"):
        topopt.optimize(forces, fixed, volfrac=0.4, checkpointing=resuming(path))
    material, projection = fem.Material(penal=4.0), topopt.Projection(1.0)
    with pytest.raises(ValueError, match=r"other settings \(penal: 3\.0 → 4\.0\)"):
        topopt.optimize(forces, fixed, material=material, checkpointing=resuming(path))
    with pytest.raises(ValueError, match=r"other settings \(beta: None → 1\.0, beta_every"):
        topopt.optimize(forces, fixed, projection=projection, checkpointing=resuming(path))
    with pytest.raises(ValueError, match="other forces, fixed DOFs, mask, solid or block masses"):
        topopt.optimize(2 * forces, fixed, checkpointing=resuming(path))
    mask, solid = np.ones((6, 12), bool), np.zeros((6, 12), bool)
    mask[3, 6], solid[3, 6] = False, True
    topopt.optimize(forces, fixed, mask=mask, max_iter=2, checkpointing=writing(path))
    with pytest.raises(ValueError, match="other forces, fixed DOFs, mask, solid or block masses"):
        topopt.optimize(forces, fixed, mask=mask, solid=solid, checkpointing=resuming(path))
    blocks = topopt.BlockMass(np.full((2, 4), 0.5), 3)
    kwargs = dict(filter="sensitivity", max_iter=2)
    topopt.optimize(forces, fixed, block_mass=blocks, checkpointing=writing(path), **kwargs)
    with pytest.raises(ValueError, match=r"other settings \(block_factor: 3 → 0"):
        topopt.optimize(forces, fixed, checkpointing=resuming(path), **kwargs)
    moved = topopt.BlockMass(np.array([[0.4, 0.6, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]), 3)
    with pytest.raises(ValueError, match="other forces, fixed DOFs, mask, solid or block masses"):
        topopt.optimize(forces, fixed, block_mass=moved, checkpointing=resuming(path), **kwargs)
    other = tmp_path / "other.npz"
    np.savez(other, design=np.zeros((6, 12)))
    with pytest.raises(ValueError, match="not a femsr topopt checkpoint"):
        topopt.optimize(forces, fixed, checkpointing=resuming(other))


def test_resume_accepts_the_settings_of_older_checkpoints(tmp_path):
    """Checkpoints keep their flat settings; those written before the option records held
    None for the default void modulus, and without projection any of its parameters (a
    generate stage without projection wrote beta_max 1 and beta_every 1)."""
    forces, fixed = half_mbb(6, 12)
    path = tmp_path / "run.npz"
    local = topopt.LocalVolume(0.6, radius=2)
    kwargs = dict(volfrac=0.4, rmin=1.5, local_volume=local)
    first = topopt.optimize(forces, fixed, max_iter=2, checkpointing=writing(path), **kwargs)
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    settings = json.loads(str(arrays["options"]))
    assert settings == {
        "volfrac": 0.4,
        "penal": 3.0,
        "rmin": 1.5,
        "filter": "density",
        "weights": [1.0],
        "move": 0.2,
        "damping": 0.5,
        "beta": None,
        "beta_max": 32.0,
        "beta_every": 50,
        "threshold": 0.5,
        "E0": 1.0,
        "nu": 0.3,
        "Emin": 1e-9,
        "h": 1.0,
        "thickness": 1.0,
        "local_volfrac": 0.6,
        "local_radius": 2,
        "local_p": 16.0,
        "block_factor": 0,
    }
    settings.update(Emin=None, beta_max=1.0, beta_every=1)
    del settings["block_factor"]  # written before block masses
    arrays["options"] = np.array(json.dumps(settings, sort_keys=True))
    np.savez(path, **arrays)
    resumed = topopt.optimize(forces, fixed, max_iter=3, checkpointing=resuming(path), **kwargs)
    assert resumed.iterations == 3
    assert comparable(resumed.history[:2]) == comparable(first.history)


def test_resume_from_a_junk_truncated_or_damaged_file_names_it(tmp_path):
    forces, fixed = half_mbb(6, 12)
    path = tmp_path / "run.npz"
    topopt.optimize(forces, fixed, max_iter=2, checkpointing=writing(path))
    junk, truncated, damaged = (tmp_path / name for name in ("junk", "truncated", "damaged"))
    junk.write_bytes(b"garbage" * 10)
    truncated.write_bytes(path.read_bytes()[:-100])
    with np.load(path) as data:
        np.savez(damaged, **{k: data[k] for k in data.files if k != "history_mass"})
    for bad in (junk, truncated):
        with pytest.raises(ValueError, match=f"{bad.name}' is not a readable topopt checkpoint"):
            topopt.optimize(forces, fixed, checkpointing=resuming(bad))
    with pytest.raises(ValueError, match=r"damaged checkpoint: it lacks \['history_mass'\]"):
        topopt.optimize(forces, fixed, checkpointing=resuming(tmp_path / "damaged.npz"))
    with pytest.raises(ValueError, match=r"none\.npz' is not a readable .* No such file"):
        topopt.optimize(forces, fixed, checkpointing=resuming(tmp_path / "none.npz"))


# --- Bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(volfrac=0.0), r"volfrac must lie in \(0, 1\], got 0.0"),
        (dict(volfrac=1.5), r"volfrac must lie in \(0, 1\], got 1.5"),
        (dict(rmin=0.0), "rmin must be positive"),
        (dict(rmin=-1.0), "rmin must be positive"),
        (dict(filter="gauss"), "filter must be one of .* got 'gauss'"),
        (dict(weights=[1.0, 2.0]), r"one entry per load case \(1\), got shape \(2,\)"),
        (dict(weights=[-1.0]), "non-negative"),
        (dict(weights=[0.0]), "not all zero"),
        (dict(weights=[np.nan]), "finite"),
        (dict(move=0.0), r"move must lie in \(0, 1\]"),
        (dict(damping=1.5), r"damping must lie in \(0, 1\]"),
        (dict(max_iter=-1), "max_iter must be a non-negative integer"),
        (dict(max_iter=2.5), "max_iter must be a non-negative integer"),
        (dict(tol=-0.1), "tol must be non-negative"),
        (
            dict(projection=topopt.Projection(1.0), filter="sensitivity"),
            "projection needs filter='density', got filter='sensitivity'",
        ),
        (dict(solver_options={"tolerance": 1e-6}), r"unknown keys \['tolerance'\]"),
        (dict(solver_options={"tol": 2.0}), r"tol must lie in \(0, 1\)"),
        (dict(initial=np.ones((3, 3))), r"initial must have shape \(6, 12\)"),
        (dict(initial=np.full((6, 12), 1.5)), r"initial must lie in \[0, 1\]"),
        (dict(mask=np.ones((6, 11), bool)), "mask must have the image shape"),
        (dict(backend="gpu"), "backend must be one of"),
        (
            dict(local_volume=topopt.LocalVolume(np.full((6, 11), 0.5))),
            r"LocalVolume\.volfrac must have shape \(6, 12\), got \(6, 11\)",
        ),
        (
            dict(local_volume=topopt.LocalVolume(0.6, mask=np.zeros((6, 12), bool))),
            r"LocalVolume\.mask leaves no mask pixel",
        ),
    ],
)
def test_bad_options_are_rejected(kwargs, match):
    forces, fixed = half_mbb(6, 12)
    with pytest.raises(ValueError, match=match):
        topopt.optimize(forces, fixed, **kwargs)


@pytest.mark.parametrize(
    ("record", "kwargs", "match"),
    [
        (topopt.Projection, dict(beta=0.0), "beta must be positive, got 0.0"),
        (topopt.Projection, dict(beta=4.0, beta_max=2.0), "beta_max must be at least beta=4.0"),
        (topopt.Projection, dict(beta=1.0, beta_every=0), "beta_every must be a positive integer"),
        (topopt.Projection, dict(beta=1.0, threshold=1.5), r"threshold must lie in \[0, 1\]"),
        (topopt.LocalVolume, dict(volfrac=1.5), r"LocalVolume\.volfrac must lie in \(0, 1\], got"),
        (topopt.LocalVolume, dict(volfrac=0.0), r"LocalVolume\.volfrac must lie in \(0, 1\], got"),
        (
            topopt.LocalVolume,
            dict(volfrac=np.zeros((6, 12))),
            r"LocalVolume\.volfrac must lie in \(0, 1\] at every pixel",
        ),
        (
            topopt.LocalVolume,
            dict(volfrac=np.full((6, 12), np.nan)),
            r"LocalVolume\.volfrac contains NaN",
        ),
        (
            topopt.LocalVolume,
            dict(volfrac=0.6, radius=0),
            r"LocalVolume\.radius must be a positive integer \(pixels\), got 0",
        ),
        (
            topopt.LocalVolume,
            dict(volfrac=0.6, radius=2.5),
            r"LocalVolume\.radius must be a positive integer \(pixels\), got 2\.5",
        ),
        (topopt.LocalVolume, dict(volfrac=0.6, p=0.5), r"LocalVolume\.p must be at least 1"),
        (
            topopt.Checkpointing,
            dict(every=0),
            r"Checkpointing\.every must be a positive integer, got 0",
        ),
        (fem.Material, dict(E0=-1.0), "E0 must be positive"),
    ],
)
def test_bad_option_records_are_rejected(record, kwargs, match):
    with pytest.raises(ValueError, match=match):
        record(**kwargs)


def test_option_records_of_the_wrong_type_are_rejected():
    forces, fixed = half_mbb(6, 12)
    wrong = [
        (dict(material={"E0": 1.0}), r"material must be a femsr\.fem\.Material or None, got dict"),
        (dict(projection=2.0), r"projection must be a femsr\.topopt\.Projection or None"),
        (dict(local_volume=0.3), r"local_volume must be a femsr\.topopt\.LocalVolume or None"),
        (dict(checkpointing="run.npz"), r"checkpointing must be .*Checkpointing or None, got str"),
        (
            dict(local_volume=topopt.LocalVolume(0.5, mask=np.ones((6, 11), bool))),
            r"LocalVolume\.mask must be a bool array of shape \(6, 12\)",
        ),
    ]
    for kwargs, match in wrong:
        with pytest.raises(TypeError, match=match):
            topopt.optimize(forces, fixed, **kwargs)
    with pytest.raises(TypeError, match=r"LocalVolume\.mask must be a bool array, got dtype float"):
        topopt.LocalVolume(0.5, mask=np.ones((6, 12)))
    with pytest.raises(TypeError, match=r"LocalVolume\.mask must be a bool array, got list"):
        topopt.LocalVolume(0.5, mask=[[True]])


def test_option_records_hold_their_values_as_numbers():
    assert topopt.Projection(2, beta_max=8) == topopt.Projection(2.0, 8.0, 50, 0.5)
    assert isinstance(topopt.Projection(2).beta, float)
    local = topopt.LocalVolume(1, radius=3, p=8)
    assert (local.volfrac, local.radius, local.p) == (1.0, 3, 8.0)
    assert isinstance(local.volfrac, float) and isinstance(local.p, float)
    assert topopt.Checkpointing() == topopt.Checkpointing(None, 10, None)


def test_bad_solid_is_rejected():
    forces, fixed = half_mbb(6, 12)
    with pytest.raises(TypeError, match=r"solid must be a bool array of shape \(6, 12\)"):
        topopt.optimize(forces, fixed, solid=np.zeros((6, 12)))
    with pytest.raises(ValueError, match="solid must lie outside mask"):
        topopt.optimize(forces, fixed, solid=np.ones((6, 12), bool))


def test_bad_forces_and_fixed_are_rejected():
    forces, fixed = half_mbb(6, 12)
    with pytest.raises(ValueError, match=r"forces must have shape \(ncases, 7, 13, 2\)"):
        topopt.optimize(forces[:, :-1], fixed)
    with pytest.raises(ValueError, match="forces must be 4-D"):
        topopt.optimize(forces[0], fixed)
    with pytest.raises(ValueError, match="nothing to optimize"):
        topopt.optimize(np.zeros_like(forces), fixed)
    with pytest.raises(ValueError, match="forces contains NaN"):
        topopt.optimize(np.full_like(forces, np.nan), fixed)
    with pytest.raises(TypeError, match="fixed must be a bool array"):
        topopt.optimize(forces, fixed.astype(int))
    with pytest.raises(ValueError, match="not held"):
        topopt.optimize(forces, np.zeros_like(fixed))


def test_bad_kernel_input_is_rejected():
    x = np.full((4, 5), 0.5)
    with pytest.raises(ValueError, match="values must be 2-D"):
        topopt.density_filter(np.ones(5), 1.5)
    with pytest.raises(ValueError, match="values contains NaN"):
        topopt.density_filter(np.full((4, 5), np.nan), 1.5)
    with pytest.raises(ValueError, match="rmin must be positive"):
        topopt.density_filter(x, 0.0)
    with pytest.raises(TypeError, match="values must be a numpy array"):
        topopt.density_filter([[1.0]], 1.5)
    with pytest.raises(ValueError, match="beta must be positive"):
        topopt.project(x, -1.0)
    with pytest.raises(ValueError, match="values contains NaN"):
        topopt.project(np.array([np.inf]), 2.0)
    with pytest.raises(ValueError, match=r"design must lie in \[0, 1\]"):
        topopt.oc_update(x + 1, -x, x, 5.0)
    with pytest.raises(ValueError, match=r"dc must have shape \(4, 5\)"):
        topopt.oc_update(x, -x[:3], x, 5.0)
    with pytest.raises(ValueError, match="mass must be positive"):
        topopt.oc_update(x, -x, x, 0.0)
    with pytest.raises(ValueError, match="rmin is needed with beta"):
        topopt.oc_update(x, -x, x, 5.0, beta=2.0)
    forces, fixed = half_mbb(4, 5)
    result = topopt.optimize(forces, fixed, max_iter=1)
    with pytest.raises(ValueError, match="name must be one of"):
        result.series("compliances")
