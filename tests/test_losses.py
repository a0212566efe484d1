"""Training terms: clDice on struts cut and thickened, the torch stiffness against its twin."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from femsr import evaluate, losses  # noqa: E402

E0, H = 1000.0, 0.05


@pytest.mark.parametrize("solver", ["cg", "direct"])
@pytest.mark.parametrize("shape", [(1, 1), (6, 9), (20, 24)])
def test_stiffness_matches_the_sparse_direct_homogenization(shape, solver):
    density = np.random.default_rng(sum(shape)).uniform(0.0, 1.0, (3, *shape))
    found = losses.apparent_stiffness(
        torch.tensor(density), E0=E0, h=H, Emin=1.0, tol=1e-12, solver=solver
    )
    for k in range(3):
        expected = evaluate.apparent_stiffness(density[k], E0=E0, h=H, Emin=1.0)
        np.testing.assert_allclose(
            found[k].numpy(), [expected.E_x, expected.E_y, expected.E_xy], rtol=1e-9
        )


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_homogeneous_patches_give_the_plane_stress_matrix(solver):
    ones = torch.ones(2, 1, 8, 8, dtype=torch.float64)
    found = losses.apparent_stiffness(ones, E0=E0, h=H, solver=solver)
    scale = E0 / (1 - 0.3**2)
    np.testing.assert_allclose(found.numpy(), [[scale, scale, scale * 0.35]] * 2, rtol=1e-9)


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_the_gradient_is_the_derivative_of_the_stiffness(solver):
    density = torch.tensor(
        np.random.default_rng(3).uniform(0.2, 0.9, (1, 5, 6)), requires_grad=True
    )
    options = {"E0": E0, "h": H, "Emin": 1.0, "tol": 1e-13, "solver": solver}
    weights = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    (losses.apparent_stiffness(density, **options) @ weights).sum().backward()
    step = 1e-6
    for index in [(0, 0, 0), (0, 2, 3), (0, 4, 5)]:
        moved = [density.detach().clone() for _ in range(2)]
        moved[0][index] += step
        moved[1][index] -= step
        up, down = (losses.apparent_stiffness(m, **options) @ weights for m in moved)
        assert density.grad[index].item() == pytest.approx(
            ((up - down) / (2 * step)).item(), rel=1e-6
        )


def test_the_two_solvers_agree_on_bone_like_patches_and_a_bad_solver_is_refused():
    rng = np.random.default_rng(5)
    # Struts and marrow: the contrast (void 1e-3 E0) that the stiffness term meets.
    density = torch.tensor(np.where(rng.random((4, 16, 16)) < 0.4, 1.0, 0.02))
    options = {"E0": E0, "h": H, "Emin": 1e-3 * E0, "tol": 1e-12, "max_iter": 20000}
    cg = losses.apparent_stiffness(density, solver="cg", **options)
    direct = losses.apparent_stiffness(density, solver="direct", **options)
    np.testing.assert_allclose(direct.numpy(), cg.numpy(), rtol=1e-8)
    with pytest.raises(ValueError, match="solver must be one of"):
        losses.apparent_stiffness(density, solver="lu", **options)


def bar(rows, cols, top, width, gap=None):
    image = torch.zeros(1, 1, rows, cols)
    image[..., top : top + width, 2:-2] = 1.0
    if gap is not None:
        image[..., gap : gap + 3] = 0.0
    return image


def test_the_soft_skeleton_of_a_bar_is_its_centre_line():
    skeleton = losses.soft_skeleton(bar(16, 30, 5, 5))
    rows = torch.nonzero(skeleton[0, 0] > 0.5)[:, 0]
    assert set(rows.tolist()) == {7}


def test_cldice_punishes_a_cut_strut_more_than_a_thickened_one():
    """A 3-px gap costs fewer pixels than a strut one pixel thicker, but cuts the centreline."""
    target = bar(16, 40, 6, 3)
    cut, thick = bar(16, 40, 6, 3, gap=18), bar(16, 40, 6, 4)
    assert (cut - target).abs().sum() < (thick - target).abs().sum()
    assert losses.cldice_loss(cut, target) > losses.cldice_loss(thick, target) + 0.02
    assert losses.cldice_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        losses.cldice_loss(target, target[..., :-1])


def test_the_stiffness_loss_is_zero_on_the_reference_and_pulls_towards_it():
    target = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    target[..., 4:8, :] = 1.0  # a bar across the patch
    prediction = (0.7 * target).requires_grad_()
    options = {"E0": E0, "h": H, "Emin": 1.0, "tol": 1e-10}
    assert losses.stiffness_loss(target, target, **options).item() == pytest.approx(0, abs=1e-9)
    loss = losses.stiffness_loss(prediction, target, **options)
    loss.backward()
    assert loss.item() > 0.1
    # Denser bone along the bar makes the too-soft prediction stiffer: the gradient says so.
    assert (prediction.grad[..., 4:8, :] < 0).all()
    with pytest.raises(ValueError, match="pool must be an integer >= 1, got 0"):
        losses.stiffness_loss(prediction, target, pool=0, **options)


@pytest.mark.parametrize("pool", [1, 2])
def test_a_target_is_solved_once_whichever_way_it_is_turned_or_flipped(stiffness_solves, pool):
    # Not square, so a quarter turn changes the shape and swaps C11 and C22.
    patch = torch.tensor(np.random.default_rng(7).uniform(0.0, 1.0, (8, 12)), dtype=torch.float32)
    forms = [torch.rot90(p, k, dims=(0, 1)) for p in (patch, patch.flip(1)) for k in range(4)]
    options = {"E0": E0, "h": H, "Emin": 1.0, "tol": 1e-12}
    pooled = [torch.nn.functional.avg_pool2d(form[None, None], pool) for form in forms]
    fresh = [losses.apparent_stiffness(form, **options)[0] for form in pooled]
    assert not torch.allclose(fresh[0][0], fresh[0][1], rtol=0.05)  # C11 and C22 differ
    solved = stiffness_solves
    solved.clear()  # the fresh solves above
    for form, expected in zip(forms, fresh, strict=True):
        found = losses._reference_stiffness(form[None, None], pool, **options)
        torch.testing.assert_close(found[0], expected, rtol=1e-5, atol=0)
    assert len(solved) == 1  # the first form alone was solved
    # Another setting, or another patch, is solved anew; so is a side the pooling leaves over.
    losses._reference_stiffness(forms[3][None, None], pool, **{**options, "Emin": 2.0})
    losses._reference_stiffness((patch * 0.5)[None, None], pool, **options)
    assert len(solved) == 3
    if pool > 1:
        for _ in range(2):
            losses._reference_stiffness(patch[None, None, :7], pool, **options)
        assert len(solved) == 5
