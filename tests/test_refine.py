"""Block-mass topology optimization (femsr.topopt.BlockMass) and the refinement built on it."""

import importlib.util

import numpy as np
import pytest
from scipy import optimize as sciopt

from femsr import dataset, fem, generate, topopt
from femsr import refine as refine_module
from femsr._topopt_kernels import block_oc_step, block_sums
from femsr.femur import Femur
from femsr.refine import refine

FACTOR = 10
PIXEL = 0.4  # HR pixel of the coarse femur: 260 x 236, LR 26 x 24 at 4 mm


def blockwise_brute_force(active, x, dc, target, factor, move, damping):
    """Each block's multiplier by a scalar root search, one block at a time."""
    new = np.zeros_like(x)
    for i in range(target.shape[0]):
        for j in range(target.shape[1]):
            block = (slice(i * factor, (i + 1) * factor), slice(j * factor, (j + 1) * factor))
            on = active[block]
            xb, gain = x[block][on], np.maximum(0.0, -dc[block][on]) ** damping
            low, high = np.maximum(0.0, xb - move), np.minimum(1.0, xb + move)

            def excess(log_lambda, xb=xb, gain=gain, low=low, high=high, want=target[i, j]):
                return np.clip(xb * gain * np.exp(-log_lambda), low, high).sum() - want

            root = sciopt.brentq(excess, -200.0, 200.0, xtol=1e-14)
            values = np.zeros(on.shape)
            values[on] = np.clip(xb * gain * np.exp(-root), low, high)
            new[block] = values
    return new


def test_block_oc_step_matches_a_search_per_block():
    rng = np.random.default_rng(0)
    shape, factor = (23, 17), 5
    x = rng.uniform(0.05, 0.95, shape)
    dc = -1e3 * rng.uniform(size=shape) ** 8  # sensitivities over many orders of magnitude
    x[rng.uniform(size=shape) < 0.1] = 0.0  # void stays void; it can only keep its lower limit
    dc[rng.uniform(size=shape) < 0.1] = 0.0  # no gain: the pixel falls to its lower limit
    active = rng.uniform(size=shape) > 0.1
    reachable = block_sums(np.where(active, x, 0.0), factor)
    target = reachable * rng.uniform(0.9, 1.1, reachable.shape)
    new = block_oc_step(active, x, dc, target, factor, 0.2, 0.5)
    expected = blockwise_brute_force(active, x, dc, target, factor, 0.2, 0.5)
    np.testing.assert_allclose(new, expected, atol=1e-10)
    np.testing.assert_allclose(block_sums(new, factor), target, rtol=1e-12)
    assert np.all(new[~active] == 0.0)
    assert np.abs(new - x)[active].max() <= 0.2 + 1e-12


def test_block_oc_step_meets_blocks_of_sensitivities_many_orders_apart():
    """Blocks of 100 pixels, their sensitivities 1e-30 to 1e3 apart: every block the move limit
    lets reach its target meets it to round-off, the others end at their limits."""
    rng = np.random.default_rng(1)
    shape, factor, move = (200, 190), 10, 0.1
    x = rng.uniform(size=shape) ** 3
    x[rng.uniform(size=shape) < 0.3] = 0.0
    dc = -1e3 * rng.uniform(size=shape) ** 8
    dc[rng.uniform(size=shape) < 0.1] = 0.0
    active = rng.uniform(size=shape) > 0.05
    target = block_sums(np.where(active, x, 0.0), factor) * rng.uniform(0.7, 1.3, (20, 19))
    new = block_oc_step(active, x, dc, target, factor, move, 0.5)
    low = np.where(active, np.maximum(0.0, x - move), 0.0)
    high = np.where(active & (x * dc < 0), np.minimum(1.0, x + move), low)
    least, most = block_sums(low, factor), block_sums(high, factor)
    reach = (least <= target) & (target <= most)
    assert 0.5 < reach.mean() < 1.0
    sums = block_sums(new, factor)
    np.testing.assert_allclose(sums[reach], target[reach], rtol=1e-12)
    np.testing.assert_allclose(sums[~reach], np.where(target < least, least, most)[~reach])


def test_block_oc_step_ends_an_unreachable_block_at_its_move_limit():
    x = np.full((4, 8), 0.5)
    dc = -np.ones((4, 8))
    target = np.array([[16.0 * 0.9, 16.0 * 0.1]])  # left block up, right block down, too far
    new = block_oc_step(np.ones((4, 8), bool), x, dc, target, 4, 0.2, 0.5)
    np.testing.assert_allclose(new[:, :4], 0.7)
    np.testing.assert_allclose(new[:, 4:], 0.3)


def cantilever(ny=20, nx=40):
    forces = np.zeros((1, ny + 1, nx + 1, 2))
    forces[0, ny // 2, nx, 1] = -1.0
    fixed = np.zeros((ny + 1, nx + 1, 2), bool)
    fixed[:, 0] = True
    return forces, fixed


def test_optimize_holds_every_block_mass_and_lowers_the_compliance():
    forces, fixed = cantilever()
    mass = np.random.default_rng(1).uniform(0.2, 0.7, (4, 8))
    seen = []
    result = topopt.optimize(
        forces,
        fixed,
        filter="sensitivity",
        max_iter=6,
        block_mass=topopt.BlockMass(mass, 5),
        callback=lambda state: seen.append(block_sums(state.design, 5)),
    )
    assert len(seen) == 6
    for sums in seen:  # from the uniform start, every update meets the blocks
        np.testing.assert_allclose(sums, 25 * mass, rtol=1e-10)
    np.testing.assert_allclose(block_sums(result.density, 5), 25 * mass, rtol=1e-10)
    assert result.mass == pytest.approx(mass.mean())
    assert result.compliance < 0.9 * result.history[0].objective


def test_one_pixel_blocks_leave_the_design_as_it_is():
    """Blocks of one pixel fix every density: the optimum is the start."""
    forces, fixed = cantilever(8, 16)
    start = np.random.default_rng(2).uniform(0.1, 0.9, (8, 16))
    result = topopt.optimize(
        forces,
        fixed,
        filter="sensitivity",
        max_iter=3,
        block_mass=topopt.BlockMass(start, 1),
        initial=start,
    )
    np.testing.assert_allclose(result.density, start, atol=1e-12)


def test_block_mass_needs_the_sensitivity_filter_and_its_own_grid():
    forces, fixed = cantilever()
    blocks = topopt.BlockMass(np.full((4, 8), 0.4), 5)
    with pytest.raises(ValueError, match="block_mass needs filter='sensitivity'"):
        topopt.optimize(forces, fixed, block_mass=blocks, max_iter=1)
    with pytest.raises(ValueError, match="block_mass needs"):
        topopt.optimize(
            forces,
            fixed,
            filter="sensitivity",
            local_volume=topopt.LocalVolume(0.5),
            block_mass=blocks,
            max_iter=1,
        )
    with pytest.raises(ValueError, match=r"one entry per 4 x 4 block, shape \(5, 10\)"):
        topopt.optimize(
            forces,
            fixed,
            filter="sensitivity",
            block_mass=topopt.BlockMass(np.full((4, 8), 0.4), 4),
            max_iter=1,
        )
    with pytest.raises(ValueError, match=r"BlockMass.mass must lie in \[0, 1\]"):
        topopt.BlockMass(np.full((2, 2), 1.5), 5)
    with pytest.raises(ValueError, match=r"BlockMass\.factor must be a positive integer"):
        topopt.BlockMass(np.full((2, 2), 0.5), 0)
    with pytest.raises(TypeError, match=r"block_mass must be a femsr\.topopt\.BlockMass"):
        topopt.optimize(forces, fixed, filter="sensitivity", block_mass=0.4, max_iter=1)


@pytest.fixture(scope="module")
def coarse_femur():
    """The mean femur at 0.4 mm, a grey start of random blocks, and its LR image."""
    bone = Femur()
    problem = bone.problem(PIXEL)
    rng = np.random.default_rng(3)
    ny, nx = (-(-n // FACTOR) * FACTOR for n in problem.mask.shape)
    inside = np.zeros((ny, nx), bool)
    inside[: problem.mask.shape[0], : problem.mask.shape[1]] = problem.mask
    start = np.where(inside, rng.uniform(0.1, 0.9, (ny, nx)), 0.0)
    return problem, start, dataset.downscale(start, FACTOR)


def compliance(problem, density):
    """The weighted compliance of ``density`` (cut to the problem's grid)."""
    py, px = problem.mask.shape
    material = fem.Material(
        E0=generate.TISSUE_MODULUS, h=problem.pixel_size, thickness=problem.thickness
    )
    u = fem.solve(
        density[:py, :px], problem.forces, problem.fixed, mask=problem.mask, material=material
    )
    energies = fem.element_energies(u, mask=problem.mask, thickness=problem.thickness)
    per_case = np.einsum("kij,ij->k", energies, material.youngs_modulus(density[:py, :px]))
    return float(problem.weights @ per_case)


def test_refine_keeps_the_block_masses_and_stiffens_the_femur(coarse_femur):
    problem, start, lr = coarse_femur
    refined = refine(start, lr, problem, iterations=4)
    assert refined.shape == start.shape and refined.dtype == np.float32
    np.testing.assert_allclose(dataset.downscale(refined, FACTOR), lr, atol=1e-6)
    assert compliance(problem, refined) < 0.9 * compliance(problem, start)
    unchanged = refine(start, lr, problem, iterations=0)
    np.testing.assert_allclose(unchanged, start, atol=1e-6)


def test_refine_can_hold_the_mass_of_blocks_of_lr_pixels(coarse_femur):
    """With ``block`` the mass of each block x block group of LR pixels is held (those at the
    edges cut), bone moves between its pixels, and the looser constraint gives a stiffer
    femur; the redrawing holds the same masses."""
    problem, start, lr = coarse_femur
    per_pixel = compliance(problem, refine(start, lr, problem, iterations=4))
    for block in (2, 3):  # 26 x 24 LR pixels: blocks of 3 cut at the bottom edge
        refined = refine(start, lr, problem, iterations=4, block=block)
        moved = dataset.downscale(refined, FACTOR)
        np.testing.assert_allclose(block_sums(moved, block), block_sums(lr, block), atol=1e-5)
        assert np.abs(moved - lr).max() > 0.05
        assert compliance(problem, refined) < per_pixel
        crisp = refine_module.redraw(refined, lr, block)
        drawn = block_sums(dataset.downscale(crisp, FACTOR), block)
        np.testing.assert_allclose(drawn, block_sums(lr, block), atol=0.02 * block**2)
    with pytest.raises(ValueError, match="block must be"):
        refine(start, lr, problem, block=0)


def test_redraw_weighs_the_refined_density_by_its_density_weight(coarse_femur):
    """The heavier the refined density weighs against the distance to a centreline, the more
    of the redrawn bone lies where the refinement put bone; each pixel's mass is held at every
    weight, and the default is DENSITY_WEIGHT."""
    problem, start, lr = coarse_femur
    refined = refine(start, lr, problem, iterations=4)
    dense = refined > 0.5
    overlap = []
    for weight in (0.0, 50.0):
        drawn = refine_module.redraw(refined, lr, density_weight=weight)
        np.testing.assert_allclose(dataset.downscale(drawn, FACTOR), lr, atol=0.02)
        overlap.append((drawn[dense] > 0.5).sum() / (drawn > 0.5).sum())
    assert overlap[1] > overlap[0] + 0.2
    np.testing.assert_array_equal(
        refine_module.redraw(refined, lr),
        refine_module.redraw(refined, lr, density_weight=refine_module.DENSITY_WEIGHT),
    )


def test_refine_shows_each_iteration_to_the_callback(coarse_femur):
    """The callback sees the refined density after each iteration: what a refinement of that
    many iterations returns; returning True stops there."""
    problem, start, lr = coarse_femur
    seen = []

    def keep(state):
        seen.append(state.design.copy())
        return state.record.iteration == 2

    stopped = refine(start, lr, problem, iterations=4, callback=keep)
    assert len(seen) == 2
    np.testing.assert_allclose(seen[-1], refine(start, lr, problem, iterations=2), atol=1e-6)
    np.testing.assert_allclose(stopped, seen[-1], atol=1e-6)


def test_refine_rejects_grids_that_do_not_fit(coarse_femur):
    problem, start, lr = coarse_femur
    with pytest.raises(ValueError, match="whole multiple of mass's grid"):
        refine(start[:-3], lr, problem)
    with pytest.raises(ValueError, match="larger than density's"):
        refine(start[:100, :100], lr[:10, :10], problem)
    with pytest.raises(ValueError, match="iterations must be"):
        refine(start, lr, problem, iterations=-1)
    cut = start.copy()
    cut[-FACTOR:] = 0.0  # the LR image's bottom row void: nothing holds the femur
    with pytest.raises(ValueError, match=r"no bone .* touches the femur's fixed edge"):
        refine(cut, dataset.downscale(cut, FACTOR), problem)


@pytest.mark.skipif(
    importlib.util.find_spec("pypardiso") is None, reason="the raised limit is PARDISO's"
)
def test_refine_solves_the_whole_outline_of_a_full_size_femur_directly():
    # A grey start leaves no void to drop; GMG-CG on the whole outline took minutes a solve.
    nodes = fem._node_mask(Femur().problem(0.05).mask)
    assert 2 * nodes.sum() < refine_module.SOLVER_OPTIONS["direct_below"]
    assert refine_module.SOLVER_OPTIONS["direct_solver"] == "pardiso"
