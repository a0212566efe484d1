"""Geometric multigrid: compiled hierarchy against the scipy twin, V-cycle properties, GMG-CG."""

import numpy as np
import pytest

from femsr import _kernels, fem
from femsr.reference import mg as ref

OPTIONS = {"degree": 2, "ratio": 10.0, "lanczos_steps": 20, "lmax_safety": 1.1, "coarse_nodes": 40}


def system(seed, shape=(21, 18), fill=0.8, contrast=1e-3):
    """A masked grid with random two-phase density, clamped along its bottom row."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    mask = rng.random(shape) < fill
    mask[-1] = True  # keep the clamped row in the model
    density = np.where(rng.random(shape) < 0.6, 1.0, contrast)
    fixed = np.zeros((ny + 1, nx + 1, 2), dtype=bool)
    fixed[-1] = True
    fixed[-1, ::3, 0] = False  # a free DOF here and there on the support row
    solver = fem.Solver(fixed, mask=mask, E0=10.0, method="gmg", gmg_options=OPTIONS)
    modulus = solver.material.youngs_modulus(density)
    matrix = solver.assembler(modulus, solver.ke)
    multigrid = _kernels.multigrid(solver.assembler, modulus, solver.ke, matrix, OPTIONS)
    levels = ref.hierarchy(
        matrix,
        shape,
        solver.nodemap,
        solver.grid_fixed,
        lanczos_steps=OPTIONS["lanczos_steps"],
        lmax_safety=OPTIONS["lmax_safety"],
        coarse_nodes=OPTIONS["coarse_nodes"],
    )
    return solver, matrix, multigrid, levels


@pytest.mark.parametrize("seed", range(3))
def test_coarse_operators_are_the_galerkin_products(seed):
    _, _, multigrid, levels = system(seed)
    assert multigrid.depth == len(levels) >= 3
    for index, level in enumerate(levels):
        ny, nx, lmax, indptr, indices, data = multigrid.level(index)
        assert (ny, nx) == level.shape
        compiled = np.zeros(level.matrix.shape)
        if index > 0:
            rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            np.add.at(compiled, (rows, indices), data)
            expected = level.matrix.toarray()
            np.testing.assert_allclose(compiled, expected, atol=1e-12 * abs(expected).max())
        assert lmax == pytest.approx(level.lmax, rel=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_v_cycle_matches_the_twin(seed):
    solver, matrix, multigrid, levels = system(seed)
    r = np.random.default_rng(seed).standard_normal(matrix.shape[0])
    r[solver.fixed] = 0.0
    z = np.empty_like(r)
    multigrid.apply(r, z)
    expected = ref.vcycle(levels, r, degree=OPTIONS["degree"], ratio=OPTIONS["ratio"])
    np.testing.assert_allclose(z, expected, rtol=1e-9, atol=1e-9 * abs(expected).max())


def test_v_cycle_is_symmetric_positive_definite_and_contracts():
    solver, matrix, multigrid, _ = system(7, shape=(12, 10))
    free = np.flatnonzero(~solver.fixed)
    n = matrix.shape[0]
    columns = []
    for k in free:
        e = np.zeros(n)
        e[k] = 1.0
        z = np.empty(n)
        multigrid.apply(e, z)
        columns.append(z[free])
    b = np.array(columns).T
    a = matrix.toarray()[np.ix_(free, free)]
    np.testing.assert_allclose(b, b.T, atol=1e-12 * abs(b).max())
    eigenvalues = np.linalg.eigvals(b @ a).real
    # B A = I - E with E the error propagation: its spectrum lies in (0, 1] when the cycle
    # converges, which is what makes B a valid CG preconditioner.
    assert eigenvalues.min() > 0 and eigenvalues.max() < 1 + 1e-8


def test_gmg_cg_agrees_with_the_direct_solve():
    rng = np.random.default_rng(3)
    ny, nx = 40, 33
    density = 0.2 + 0.8 * rng.random((ny, nx))
    mask = np.ones((ny, nx), bool)
    mask[:10, :12] = False
    fixed = np.zeros((ny + 1, nx + 1, 2), bool)
    fixed[-1] = True
    forces = np.zeros((2, ny + 1, nx + 1, 2))
    forces[0, 0, 20:, 1] = -1.0
    forces[1, 15, 0, 0] = 2.0
    common = {"mask": mask, "E0": 100.0, "nu": 0.3}
    direct = fem.solve(density, forces, fixed, method="direct", **common)
    solver = fem.Solver(fixed, method="gmg", tol=1e-10, **common)
    u = solver.solve(density, forces)
    np.testing.assert_allclose(u, direct, atol=1e-8 * abs(direct).max())
    # Gray densities are the easy case: a few tens of iterations at most.
    assert max(solver.stats.iterations) < 30
    # Warm start: the same system again needs no iteration.
    solver.solve(density, forces)
    assert solver.stats.iterations == [0, 0]


def test_auto_picks_gmg_above_the_direct_limit():
    fixed = np.zeros((31, 31, 2), bool)
    fixed[-1] = True
    assert fem.Solver(fixed, direct_below=100).method == "gmg"
    assert fem.Solver(fixed, direct_below=100, backend="python").method == "amg"
    assert fem.Solver(fixed).method == "direct"


def test_gmg_options_are_checked():
    fixed = np.zeros((5, 5, 2), bool)
    fixed[-1] = True
    with pytest.raises(ValueError, match="needs backend 'cpp'"):
        fem.Solver(fixed, method="gmg", backend="python")
    with pytest.raises(ValueError, match="unknown gmg_options"):
        fem.Solver(fixed, gmg_options={"smoothness": 2})
    with pytest.raises(ValueError, match="Chebyshev degree"):
        forces = np.zeros((1, 5, 5, 2))
        forces[0, 0, :, 1] = -1.0
        fem.Solver(fixed, method="gmg", gmg_options={"degree": 0}).solve(np.ones((4, 4)), forces)


def test_smoothing_interval_covers_the_spectrum_of_every_level():
    # A Chebyshev smoother amplifies eigenvalues above its interval: the lmax estimate (Lanczos
    # times a safety factor, capped by Gershgorin) must not fall below the truth.
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    ny, nx = 130, 118
    y, x = np.mgrid[0:ny, 0:nx]
    density = 0.55 + 0.4 * np.sin(x / 9.0) * np.cos(y / 13.0)
    fixed = np.zeros((ny + 1, nx + 1, 2), bool)
    fixed[-1] = True
    solver = fem.Solver(fixed, method="gmg")
    matrix = solver.assembler(solver.material.youngs_modulus(density), solver.ke)
    options = fem.GMG_OPTIONS
    levels = ref.hierarchy(
        matrix,
        (ny, nx),
        solver.nodemap,
        solver.grid_fixed,
        lanczos_steps=options["lanczos_steps"],
        lmax_safety=options["lmax_safety"],
        coarse_nodes=options["coarse_nodes"],
    )
    for level in levels[:-1]:
        keep = level.inv_diag > 0
        scale = sp.diags(np.sqrt(level.inv_diag[keep]))
        scaled = scale @ level.matrix[keep][:, keep] @ scale
        top = spla.eigsh(scaled, k=1, which="LA", return_eigenvectors=False, tol=1e-8)[0]
        assert level.lmax >= top
