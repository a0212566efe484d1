"""Grid FE: C++ against the numpy twin, patch test, beam theory, solver agreement, bad input."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from femsr import _kernels, fem, solvers


def random_case(seed, shape=(9, 13), fill=0.7):
    rng = np.random.default_rng(seed)
    density = rng.random(shape)
    mask = rng.random(shape) < fill
    mask[0, 0] = True
    return density, mask


def clamped_left(ny, nx):
    fixed = np.zeros((ny + 1, nx + 1, 2), dtype=bool)
    fixed[:, 0] = True
    return fixed


def bar_pulled_by_1_newton(ny, nx):
    """Forces and supports of a bar pulled by 1 N spread over its right edge, its left edge on
    rollers and pinned at mid-height."""
    forces = np.zeros((1, ny + 1, nx + 1, 2))
    forces[0, :, -1, 0] = 1.0 / ny
    forces[0, [0, -1], -1, 0] = 0.5 / ny
    fixed = np.zeros((ny + 1, nx + 1, 2), dtype=bool)
    fixed[:, 0, 0] = True
    fixed[ny // 2, 0, 1] = True
    return forces, fixed


def affine_field(ny, nx, strain):
    """Nodal displacements of the uniform strain (exx, eyy, gxy), x right and y up."""
    exx, eyy, gxy = strain
    i, j = np.mgrid[0 : ny + 1, 0 : nx + 1]
    x, y = j.astype(float), (ny - i).astype(float)
    return np.stack([exx * x + 0.5 * gxy * y, eyy * y + 0.5 * gxy * x], axis=-1)


# --- C++ against the twin -------------------------------------------------------------------


def test_element_stiffness_backends_agree():
    for nu in (0.0, 0.3, 0.45):
        np.testing.assert_allclose(
            fem.element_stiffness(nu, 2.0),
            fem.element_stiffness(nu, 2.0, backend="python"),
            rtol=0,
            atol=1e-14,
        )


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(1, 1), (9, 13), (17, 4)])
def test_assembly_backends_agree(seed, shape):
    density, mask = random_case(seed, shape)
    kwargs = dict(mask=mask, E0=17e3, nu=0.3, penal=3.0, thickness=1.5)
    cpp = fem.assemble(density, **kwargs)
    python = fem.assemble(density, backend="python", **kwargs)
    assert cpp.shape == python.shape == (2 * (shape[0] + 1) * (shape[1] + 1),) * 2
    assert abs(cpp - python).max() <= 1e-12 * abs(python).max()
    assert cpp.has_sorted_indices


@pytest.mark.parametrize("seed", range(3))
def test_element_energies_backends_agree_and_sum_to_compliance(seed):
    density, mask = random_case(seed)
    u = np.random.default_rng(seed).standard_normal((3, 10, 14, 2))
    cpp = fem.element_energies(u, mask=mask, nu=0.25)
    python = fem.element_energies(u, mask=mask, nu=0.25, backend="python")
    np.testing.assert_allclose(cpp, python, rtol=1e-12, atol=1e-12)
    assert not cpp[:, ~mask].any()
    # Σ E_e u_eᵀ k0 u_e is the quadratic form uᵀ K u.
    K = fem.assemble(density, mask=mask, nu=0.25)
    modulus = fem.youngs_modulus(density)
    for case in range(3):
        flat = u[case].ravel()
        assert np.isclose((modulus * cpp[case]).sum(), flat @ (K @ flat), rtol=1e-10)


# --- Shared by both backends: checked against formulas written out here --------------------


def test_youngs_modulus_is_the_modified_simp_law():
    density = np.array([0.0, 0.25, 0.5, 1.0])
    # Emin + rho**3 (E0 - Emin) with E0 = 1e4, Emin = 1: 9999 / 4**3, 9999 / 2**3.
    expected = [1.0, 1.0 + 156.234375, 1.0 + 1249.875, 1e4]
    np.testing.assert_allclose(
        fem.youngs_modulus(density, E0=1e4, penal=3.0, Emin=1.0), expected, rtol=1e-15
    )
    # penal 2: 9999 / 2**2 at rho = 0.5.
    assert fem.youngs_modulus(np.array(0.5), E0=1e4, penal=2.0, Emin=1.0) == 2500.75
    # The void modulus defaults to 1e-9 E0.
    assert fem.youngs_modulus(np.array(0.0), E0=2e4) == pytest.approx(2e-5, rel=1e-15)
    material = fem.Material(E0=1e4, penal=3.0, Emin=1.0)
    np.testing.assert_allclose(material.youngs_modulus(density), expected, rtol=1e-15)


def test_material_fills_in_the_void_modulus_and_is_frozen():
    material = fem.Material(E0=15e3, nu=0.25, h=0.05, thickness=2.0)
    assert (material.E0, material.nu, material.penal) == (15e3, 0.25, 3.0)
    assert material.Emin == pytest.approx(15e3 * 1e-9, rel=1e-15)
    assert (material.h, material.thickness) == (0.05, 2.0)
    assert material == fem.Material(15e3, 0.25, 3.0, 15e3 * 1e-9, 0.05, 2.0)
    with pytest.raises(AttributeError):
        material.E0 = 1.0  # type: ignore[misc]
    np.testing.assert_array_equal(material.element_stiffness(), fem.element_stiffness(0.25, 2.0))


@pytest.mark.parametrize("method", ["direct", "amg", "gmg"])
@pytest.mark.parametrize("penal", [1.0, 3.0])
def test_gray_bar_in_tension_follows_the_simp_law(method, penal):
    """u = F L / (E(rho) A) with E(rho) = Emin + rho**penal (E0 - Emin), rho = 0.5."""
    ny, nx, E0, Emin, h, t = 8, 40, 2e5, 10.0, 0.5, 2.0
    forces, fixed = bar_pulled_by_1_newton(ny, nx)
    material = fem.Material(E0=E0, nu=0.0, penal=penal, Emin=Emin, h=h, thickness=t)
    # A coarsest level of at most 40 nodes: three GMG levels on this grid.
    options = {"coarse_nodes": 40}
    solver = fem.Solver(fixed, material=material, method=method, tol=1e-12, gmg_options=options)
    u = solver.solve(np.full((ny, nx), 0.5), forces)
    modulus = Emin + 0.5**penal * (E0 - Emin)
    expected = 1.0 * nx * h / (modulus * ny * h * t)
    np.testing.assert_allclose(u[0, :, -1, 0], expected, rtol=1e-9)
    # The compliance F·u is the sum over elements of E(rho) u_eᵀ k0 u_e.
    energies = fem.element_energies(u, nu=0.0, thickness=t)
    assert (modulus * energies).sum() == pytest.approx(expected, rel=1e-9)


def test_material_and_keywords_give_the_same_model():
    density, mask = random_case(4)
    material = fem.Material(E0=17e3, nu=0.25, penal=2.5, Emin=1e-3, thickness=1.5)
    by_keywords = fem.assemble(
        density, mask=mask, E0=17e3, nu=0.25, penal=2.5, Emin=1e-3, thickness=1.5
    )
    assert abs(fem.assemble(density, mask=mask, material=material) - by_keywords).max() == 0
    solver = fem.Solver(clamped_left(9, 13), material=material)
    assert solver.material is material


def test_material_is_given_once():
    with pytest.raises(ValueError, match=r"not both: got material and \['E0', 'nu'\]"):
        fem.assemble(np.ones((2, 2)), material=fem.Material(), E0=2.0, nu=0.2)
    with pytest.raises(TypeError, match=r"material must be a femsr\.fem\.Material, got dict"):
        fem.Solver(clamped_left(2, 2), material={"E0": 1.0})


def test_dissection_order_puts_each_separator_after_its_halves():
    # 3x7 grid, leaf 3: the middle column (3) splits it; each 3x3 half is split by its middle
    # row, whose rows of three are leaves.
    expected = [0, 1, 2, 14, 15, 16, 7, 8, 9, 4, 5, 6, 18, 19, 20, 11, 12, 13, 3, 10, 17]
    assert solvers.dissection_order(3, 7, leaf=3).tolist() == expected
    assert solvers.dissection_order(2, 2).tolist() == [0, 1, 2, 3]  # one leaf, row by row


# --- Physics --------------------------------------------------------------------------------


def test_matrix_is_symmetric_psd_with_rigid_modes_in_null_space():
    density, mask = random_case(7, (6, 7), fill=1.0)
    K = fem.assemble(density, mask=mask, E0=5.0).toarray()
    np.testing.assert_allclose(K, K.T, atol=1e-13)
    eigenvalues = np.linalg.eigvalsh(K)
    assert eigenvalues[0] > -1e-12 * eigenvalues[-1]
    # Exactly three zero eigenvalues: the rigid-body modes and nothing else.
    assert np.sum(eigenvalues < 1e-10 * eigenvalues[-1]) == 3
    modes = fem.rigid_body_modes(np.arange(7 * 8), 7)
    assert abs(K @ modes).max() < 1e-12 * abs(K).max()


@pytest.mark.parametrize("strain", [(1e-3, 0, 0), (0, -2e-3, 0), (0, 0, 1e-3), (1e-3, 5e-4, -7e-4)])
def test_patch_test_reproduces_uniform_strain(strain):
    """Under a uniform strain, interior nodes are in equilibrium and the solve recovers it."""
    ny, nx = 7, 9
    rng = np.random.default_rng(1)
    mask = rng.random((ny, nx)) < 0.85
    mask[:, :2] = True  # keep one connected part reaching the supports
    mask[2:5, 2:] = True
    from scipy import ndimage

    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    mask = labels == labels[3, 0]
    exact = affine_field(ny, nx, strain)
    K = fem.assemble(np.ones((ny, nx)), mask=mask, E0=1e4)
    forces = (K @ exact.ravel()).reshape(ny + 1, nx + 1, 2)

    padded = np.pad(mask, 1)
    interior = padded[:-1, :-1] & padded[:-1, 1:] & padded[1:, :-1] & padded[1:, 1:]
    assert abs(forces[interior]).max() < 1e-10 * abs(forces).max()

    # Three supports stop the rigid-body modes; where the exact field is not zero there, the
    # solution differs from it by a rigid-body motion, removed before comparing.
    fixed = np.zeros((ny + 1, nx + 1, 2), dtype=bool)
    fixed[ny, 0] = True
    fixed[0, 0, 0] = True
    u = fem.solve(np.ones((ny, nx)), forces[None], fixed, mask=mask, E0=1e4, method="direct")[0]
    nodes = np.flatnonzero(fem._node_mask(mask).ravel())
    difference = (u - exact).reshape(-1, 2)[nodes].ravel()
    modes = fem.rigid_body_modes(nodes, nx)
    rigid, *_ = np.linalg.lstsq(modes, difference, rcond=None)
    assert abs(difference - modes @ rigid).max() < 1e-9 * abs(exact).max()


def cantilever_tip_deflection(n_height):
    """FE tip deflection of a clamped 8:1 cantilever under a parabolic end shear of 1 N."""
    length, height, E, nu, t = 80.0, 10.0, 1e4, 0.3, 1.0
    h = height / n_height
    ny, nx = n_height, 8 * n_height
    # Parabolic shear traction on the free end, lumped to nodes with the linear shape functions
    # (integrated numerically) and normalized so the resultant is exactly -1 N.
    y = np.linspace(height / 2, -height / 2, ny + 1)  # node rows from top to bottom
    nodal = np.zeros(ny + 1)
    for k in range(ny):
        s = np.linspace(0, 1, 101)
        shear = 1.0 - (2.0 * (y[k] + (y[k + 1] - y[k]) * s) / height) ** 2
        nodal[k] += np.trapezoid(shear * (1 - s), s) * h
        nodal[k + 1] += np.trapezoid(shear * s, s) * h
    forces = np.zeros((1, ny + 1, nx + 1, 2))
    forces[0, :, -1, 1] = -nodal / nodal.sum()
    u = fem.solve(
        np.ones((ny, nx)),
        forces,
        clamped_left(ny, nx),
        E0=E,
        nu=nu,
        h=h,
        thickness=t,
        method="direct",
    )
    return -u[0, ny // 2, -1, 1], (length, height, E, nu, t)


def test_cantilever_converges_to_timoshenko_beam():
    errors = []
    for n_height in (2, 4, 8, 16):
        deflection, (length, height, E, nu, t) = cantilever_tip_deflection(n_height)
        inertia = t * height**3 / 12
        shear_modulus = E / (2 * (1 + nu))
        timoshenko = length**3 / (3 * E * inertia) + length / (5 / 6 * shear_modulus * t * height)
        errors.append(abs(deflection - timoshenko) / timoshenko)
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.01, errors


def test_bar_in_tension_matches_hooke():
    ny, nx, E = 4, 20, 2e5
    forces, fixed = bar_pulled_by_1_newton(ny, nx)
    u = fem.solve(np.ones((ny, nx)), forces, fixed, E0=E, nu=0.3, h=0.5, thickness=2.0)
    area = ny * 0.5 * 2.0
    np.testing.assert_allclose(u[0, :, -1, 0], 1.0 * nx * 0.5 / (E * area), rtol=1e-9)


def test_masked_model_equals_the_cropped_grid():
    """Nodes outside the mask are not unknowns: the left block alone gives the same field."""
    ny, nx, keep = 6, 12, 7
    density = np.random.default_rng(3).uniform(0.2, 1.0, (ny, nx))
    mask = np.zeros((ny, nx), dtype=bool)
    mask[:, :keep] = True
    forces = np.zeros((2, ny + 1, nx + 1, 2))
    forces[0, 0, keep, 1] = -1.0
    forces[1, ny, keep, 0] = 2.0
    full = fem.solve(density, forces, clamped_left(ny, nx), mask=mask)
    cropped = fem.solve(density[:, :keep], forces[:, :, : keep + 1], clamped_left(ny, keep))
    np.testing.assert_allclose(full[:, :, : keep + 1], cropped, rtol=1e-9, atol=1e-12)
    assert not full[:, :, keep + 1 :].any()


def test_reactions_balance_the_loads():
    density, _ = random_case(4, (8, 10), fill=1.0)
    forces = np.random.default_rng(4).standard_normal((2, 9, 11, 2))
    fixed = clamped_left(8, 10)
    u = fem.solve(density, forces, fixed)
    K = fem.assemble(density)
    for case in range(2):
        internal = (K @ u[case].ravel()).reshape(9, 11, 2)
        np.testing.assert_allclose(internal[~fixed], forces[case][~fixed], atol=1e-7)
        # The supports take the rest: reactions and applied loads sum to zero.
        reactions = np.where(fixed, internal - forces[case], 0.0)
        total = (reactions + forces[case]).reshape(-1, 2).sum(axis=0)
        np.testing.assert_allclose(total, 0.0, atol=1e-7)
        assert abs(reactions).sum() > 1.0


# --- Solvers --------------------------------------------------------------------------------


def notched_three_cases(ny, nx):
    """A mask without its top-right corner, and three load cases on its edges."""
    mask = np.ones((ny, nx), dtype=bool)
    mask[:15, 30:] = False
    forces = np.zeros((3, ny + 1, nx + 1, 2))
    forces[0, -1, -1, 1] = -1.0
    forces[1, 0, 29, 0] = 1.0
    forces[2, 20, -1] = [0.5, 0.5]
    return mask, forces


@pytest.mark.parametrize("backend", ["cpp", "python"])
def test_amg_cg_and_direct_solve_agree(backend):
    rng = np.random.default_rng(5)
    ny, nx = 40, 50
    density = rng.uniform(0.05, 1.0, (ny, nx))
    mask, forces = notched_three_cases(ny, nx)
    fixed = clamped_left(ny, nx)
    kwargs = dict(mask=mask, E0=1e4, backend=backend, tol=1e-10)
    amg = fem.solve(density, forces, fixed, method="amg", **kwargs)
    direct = fem.solve(density, forces, fixed, method="direct", **kwargs)
    np.testing.assert_allclose(amg, direct, rtol=0, atol=1e-8 * abs(direct).max())


def test_pardiso_and_superlu_agree_on_a_crisp_design():
    """High-contrast (void at 1e-9 E0) design, three cases, with a masked-out corner."""
    rng = np.random.default_rng(6)
    ny, nx = 40, 50
    density = np.where(rng.random((ny, nx)) < 0.6, 1.0, 0.0)
    density[:, :2] = 1.0  # solid along the support
    mask, forces = notched_three_cases(ny, nx)
    solvers = [
        fem.Solver(clamped_left(ny, nx), mask=mask, E0=1e4, method="direct", direct_solver=name)
        for name in fem.DIRECT_SOLVERS
    ]
    superlu, pardiso = (s.solve(density, forces) for s in solvers)
    np.testing.assert_allclose(pardiso, superlu, rtol=0, atol=1e-7 * abs(superlu).max())
    assert solvers[1].stats.setup_seconds > 0  # factorized once for the three cases


def test_pardiso_keeps_the_analysis_of_a_solvers_pattern():
    ny, nx = 20, 30
    mask, forces = notched_three_cases(ny, nx)
    pardiso, superlu = (
        fem.Solver(clamped_left(ny, nx), mask=mask, method="direct", direct_solver=name)
        for name in ("pardiso", "superlu")
    )
    other = fem.Solver(clamped_left(ny, nx), method="direct", direct_solver="pardiso")
    rng = np.random.default_rng(5)
    analysed = []
    for solver in (pardiso, pardiso, other, pardiso):
        density = rng.uniform(0.2, 1.0, (ny, nx))
        u = solver.solve(density, forces)
        analysed.append(solver.stats.rebuilt)
        reference = (
            superlu if solver is pardiso else fem.Solver(clamped_left(ny, nx), method="direct")
        ).solve(density, forces)
        np.testing.assert_allclose(u, reference, rtol=0, atol=1e-9 * abs(reference).max())
    # Analysed for a new pattern only: the other solver's pattern took the handle's place.
    assert analysed == [True, False, True, True]


@pytest.mark.parametrize("backend", ["cpp", "python"])
@pytest.mark.parametrize("seed", range(3))
def test_upper_triangle_keeps_the_entries_on_and_above_the_diagonal(backend, seed):
    dense = sp.random(30, 30, density=0.2, random_state=seed).toarray()
    dense[np.arange(0, 30, 3), np.arange(0, 30, 3)] = 0.0  # also rows without a diagonal entry
    matrix = sp.csr_matrix(dense)
    matrix.data[:] = np.arange(1, matrix.nnz + 1)  # no explicit zeros to lose
    upper = _kernels.upper_triangle(matrix, backend)
    np.testing.assert_array_equal(upper.toarray(), np.triu(matrix.toarray()))
    assert upper.nnz == sp.triu(matrix).nnz
    assert upper.has_sorted_indices


def test_pardiso_is_checked_and_reports_a_singular_matrix(monkeypatch):
    held = np.ones((3, 3, 2), bool)
    with pytest.raises(ValueError, match="direct_solver must be one of"):
        fem.Solver(held, direct_solver="umfpack")

    # The Solver refuses floating structures before any factorization; PARDISO's own
    # complaint about a singular matrix still reaches the user as one.
    def pardiso(matrix):
        loads = np.ones((1, 2))
        stats = solvers.SolveStats("direct")
        return solvers.Pardiso("cpp").solve(matrix, np.ones(1), loads, np.zeros_like(loads), stats)

    with pytest.raises(ValueError, match="the stiffness matrix is singular"):
        pardiso(sp.csr_matrix(np.array([[1.0, 1.0], [1.0, 1.0]])))
    with pytest.raises(ValueError, match="empty row"):
        pardiso(sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 0.0]])))
    monkeypatch.setattr(fem.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install femsr\[pardiso\]"):
        fem.Solver(held, direct_solver="pardiso")


def test_solver_reuse_warm_starts_and_keeps_accuracy():
    rng = np.random.default_rng(6)
    ny, nx = 30, 60
    forces = np.zeros((2, ny + 1, nx + 1, 2))
    forces[0, ny, nx, 1] = -1.0
    forces[1, 0, nx, 0] = 1.0
    solver = fem.Solver(clamped_left(ny, nx), method="amg", tol=1e-9)
    density = rng.uniform(0.3, 1.0, (ny, nx))
    first = solver.solve(density, forces)
    assert solver.stats.rebuilt and min(solver.stats.iterations) > 1
    again = solver.solve(density, forces)
    assert not solver.stats.rebuilt
    assert max(solver.stats.iterations) <= 1
    np.testing.assert_allclose(again, first, atol=1e-8 * abs(first).max())
    # A changed density with the old hierarchy still converges to the direct answer.
    changed = np.clip(density + rng.uniform(-0.2, 0.2, density.shape), 0.01, 1.0)
    reused = solver.solve(changed, forces)
    direct = fem.solve(changed, forces, clamped_left(ny, nx), method="direct")
    np.testing.assert_allclose(reused, direct, atol=1e-7 * abs(direct).max())


def test_solver_python_and_cpp_backends_agree():
    density, _ = random_case(8, (12, 16), fill=1.0)
    forces = np.random.default_rng(8).standard_normal((2, 13, 17, 2))
    fixed = clamped_left(12, 16)
    results = [
        fem.solve(density, forces, fixed, method="amg", backend=b, tol=1e-11)
        for b in ("cpp", "python")
    ]
    np.testing.assert_allclose(results[0], results[1], atol=1e-8 * abs(results[1]).max())


def test_zero_load_gives_zero_displacement():
    u = fem.solve(np.ones((4, 4)), np.zeros((2, 5, 5, 2)), clamped_left(4, 4), method="amg")
    assert u.shape == (2, 5, 5, 2) and not u.any()


# --- Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("density", "error", "match"),
    [
        ([[0.5]], TypeError, "numpy array"),
        (np.ones(4), ValueError, "2-D"),
        (np.ones((2, 2), dtype=complex), TypeError, "real numbers"),
        (np.full((2, 2), np.nan), ValueError, "NaN"),
        (np.full((2, 2), 1.5), ValueError, r"\[0, 1\]"),
        (np.full((2, 2), -0.1), ValueError, r"\[0, 1\]"),
        (np.ones((0, 3)), ValueError, "empty"),
    ],
)
def test_bad_density_is_rejected(density, error, match):
    with pytest.raises(error, match=match):
        fem.assemble(density)


@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        (np.ones((3, 3), dtype=int), TypeError, "bool"),
        (np.ones((2, 3), dtype=bool), ValueError, "shape"),
        (np.zeros((3, 3), dtype=bool), ValueError, "empty"),
        ([[True]], TypeError, "numpy array"),
    ],
)
def test_bad_mask_is_rejected(mask, error, match):
    with pytest.raises(error, match=match):
        fem.assemble(np.ones((3, 3)), mask=mask)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(E0=0.0), "E0"),
        (dict(Emin=2.0), "Emin"),
        (dict(nu=0.5), "nu"),
        (dict(penal=0.5), "penal"),
        (dict(h=-1.0), "h must"),
        (dict(thickness=0.0), "thickness"),
        (dict(backend="fortran"), "backend"),
    ],
)
def test_bad_material_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fem.assemble(np.ones((2, 2)), **kwargs)


def test_floating_part_is_detected():
    mask = np.zeros((4, 8), dtype=bool)
    mask[:, :3] = True
    mask[:, 5:] = True  # an island that touches no support
    with pytest.raises(ValueError, match="not held"):
        fem.Solver(clamped_left(4, 8), mask=mask)


def test_single_pinned_node_does_not_stop_rotation():
    fixed = np.zeros((3, 3, 2), dtype=bool)
    fixed[2, 0] = True
    with pytest.raises(ValueError, match="rigid body"):
        fem.Solver(fixed)


def test_forces_outside_the_model_are_rejected():
    mask = np.ones((4, 4), dtype=bool)
    mask[:, 2:] = False
    forces = np.zeros((1, 5, 5, 2))
    forces[0, 0, 4, 1] = 1.0
    with pytest.raises(ValueError, match="no element of the mask"):
        fem.solve(np.ones((4, 4)), forces, clamped_left(4, 4), mask=mask)


@pytest.mark.parametrize(
    ("forces", "fixed", "match"),
    [
        (np.zeros((5, 5, 2)), clamped_left(4, 4), "4-D"),
        (np.zeros((1, 4, 5, 2)), clamped_left(4, 4), "forces must have shape"),
        (np.zeros((1, 5, 5, 2)), clamped_left(4, 4).astype(int), "bool"),
        (np.zeros((1, 5, 5, 2)), np.zeros((5, 5), dtype=bool), "fixed must have shape"),
        (np.full((1, 5, 5, 2), np.inf), clamped_left(4, 4), "NaN or infinite"),
    ],
)
def test_bad_forces_and_supports_are_rejected(forces, fixed, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fem.solve(np.ones((4, 4)), forces, fixed)


def test_non_convergence_raises():
    density = np.random.default_rng(9).uniform(0.01, 1.0, (30, 30))
    forces = np.zeros((1, 31, 31, 2))
    forces[0, 0, -1, 1] = -1.0
    with pytest.raises(fem.ConvergenceError, match="short of tol"):
        fem.solve(density, forces, clamped_left(30, 30), method="amg", maxiter=2, tol=1e-12)


def test_density_shape_must_match_solver():
    solver = fem.Solver(clamped_left(4, 4))
    with pytest.raises(ValueError, match=r"density must have shape \(4, 4\)"):
        solver.solve(np.ones((3, 4)), np.zeros((1, 5, 5, 2)))


def test_bad_solver_options_are_rejected():
    with pytest.raises(ValueError, match="method"):
        fem.Solver(clamped_left(2, 2), method="lu")
    with pytest.raises(ValueError, match="tol"):
        fem.Solver(clamped_left(2, 2), tol=2.0)


def hinged_blocks(second_support):
    """Two 2x2 blocks touching at one corner node; the left one clamped."""
    mask = np.zeros((4, 4), dtype=bool)
    mask[2:, :2] = True
    mask[:2, 2:] = True
    fixed = clamped_left(4, 4)
    if second_support:
        fixed[0, 4] = True
    return mask, fixed


def test_part_turning_about_a_corner_hinge_is_detected():
    mask, fixed = hinged_blocks(second_support=False)
    with pytest.raises(ValueError, match="corner hinge"):
        fem.Solver(fixed, mask=mask)


def test_hinged_part_with_its_own_support_is_held():
    mask, fixed = hinged_blocks(second_support=True)
    forces = np.zeros((1, 5, 5, 2))
    forces[0, 0, 2, 1] = -1.0
    u = fem.solve(np.ones((4, 4)), forces, fixed, mask=mask, method="direct")
    K = fem.assemble(np.ones((4, 4)), mask=mask)
    residual = (K @ u[0].ravel()).reshape(5, 5, 2) - forces[0]
    assert abs(residual[~fixed]).max() < 1e-10 and u[0, 0, 2, 1] < 0


def test_dissection_order_is_a_permutation():
    for ny, nx in [(0, 0), (1, 5), (9, 4), (199, 199)]:
        order = solvers.dissection_order(ny, nx)
        np.testing.assert_array_equal(np.sort(order), np.arange(ny * nx))
