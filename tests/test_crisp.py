"""femsr.crisp: Zhang-Suen thinning (compiled kernel and numpy twin) and crisp redrawing."""

import numpy as np
import pytest
import scipy.ndimage as ndi

from femsr.crisp import draw_struts, thin

EIGHT = np.ones((3, 3), dtype=bool)


def test_the_kernel_and_its_twin_thin_alike():
    rng = np.random.default_rng(0)
    for _ in range(150):
        shape = tuple(rng.integers(1, 40, size=2))
        mask = rng.random(shape) < rng.uniform(0.3, 0.95)
        if rng.random() < 0.5:  # blobs wider than a pixel, as bone is
            mask = ndi.binary_opening(mask)
        np.testing.assert_array_equal(thin(mask), thin(mask, backend="python"))


def test_the_skeleton_lies_in_the_mask_and_thins_no_further():
    rng = np.random.default_rng(1)
    for _ in range(50):
        mask = rng.random(tuple(rng.integers(5, 50, size=2))) < 0.7
        skeleton = thin(mask)
        assert not (skeleton & ~mask).any()
        np.testing.assert_array_equal(thin(skeleton), skeleton)


def test_a_bar_thins_to_its_middle_line():
    bar = np.zeros((9, 30), dtype=bool)
    bar[3:6, 2:28] = True
    skeleton = thin(bar)
    rows, columns = np.nonzero(skeleton)
    assert set(rows) == {4} and np.array_equal(columns, np.arange(columns[0], columns[-1] + 1))
    assert columns[0] <= 4 and columns[-1] >= 25


def test_a_ring_stays_a_closed_loop_and_a_cross_stays_joined():
    y, x = np.mgrid[-20:21, -20:21]
    ring = (x**2 + y**2 <= 15**2) & (x**2 + y**2 >= 10**2)
    skeleton = thin(ring)
    assert ndi.label(skeleton, EIGHT)[1] == 1
    assert ndi.label(~skeleton)[1] == 2  # the hole stays a hole
    cross = (np.abs(x) <= 2) | (np.abs(y) <= 2)
    skeleton = thin(cross)
    assert ndi.label(skeleton, EIGHT)[1] == 1
    # The arms reach within 3 pixels of each edge: the skeleton spans the cross.
    rows, columns = np.nonzero(skeleton)
    assert rows.min() <= 3 and rows.max() >= 37 and columns.min() <= 3 and columns.max() >= 37


def test_thin_errors():
    with pytest.raises(ValueError, match="2-D"):
        thin(np.ones(5, dtype=bool))
    with pytest.raises(TypeError, match="bool or integer"):
        thin(np.ones((3, 3)))
    with pytest.raises(ValueError, match="0 and 1"):
        thin(np.full((3, 3), 2))


def test_each_block_keeps_its_mass_to_the_nearest_pixel():
    rng = np.random.default_rng(2)
    for shape in ((40, 60), (37, 53), (5, 7)):
        density = ndi.gaussian_filter((rng.random(shape) < 0.3).astype(float), 1.0)
        density = np.clip(density / density.max(), 0, 1)
        drawn = draw_struts(density, 10)
        assert drawn.shape == shape and set(np.unique(drawn)) <= {0.0, 1.0}
        for r in range(0, shape[0], 10):
            for c in range(0, shape[1], 10):
                block = np.s_[r : r + 10, c : c + 10]
                assert abs(drawn[block].sum() - density[block].sum()) <= 0.5


def test_a_blurred_strut_is_redrawn_as_it_was():
    """A crisp strut three pixels wide, blurred by one pixel and redrawn: the same strut."""
    strut = np.zeros((30, 30))
    strut[:, 13:16] = 1.0
    np.testing.assert_array_equal(draw_struts(strut), strut)
    blurred = ndi.gaussian_filter(strut, 1.0, mode="nearest")
    assert np.abs(blurred - strut).max() > 0.3
    drawn = draw_struts(blurred)
    np.testing.assert_array_equal(drawn[:20], strut[:20])
    # Thinning shortens the centreline at its lower end, so the last block draws its 30 pixels
    # nearer the line's end: the same mass, not quite the same place.
    assert drawn[20:].sum() == strut[20:].sum()


def test_blocks_take_the_mass_they_are_given():
    rng = np.random.default_rng(3)
    density = rng.random((25, 32))
    mass = rng.random((3, 4))
    drawn = draw_struts(density, 10, mass=mass)
    pixels = np.array([[100, 100, 100, 20], [100, 100, 100, 20], [50, 50, 50, 10]])
    counts = np.add.reduceat(np.add.reduceat(drawn, [0, 10, 20], 0), [0, 10, 20, 30], 1)
    np.testing.assert_array_equal(counts, np.rint(mass * pixels))
    with pytest.raises(ValueError, match=r"mass must have one pixel per 10 x 10 block"):
        draw_struts(density, 10, mass=mass[:2])
    with pytest.raises(ValueError, match=r"mass must lie in \[0, 1\]"):
        draw_struts(density, 10, mass=mass + 1)


def test_a_faint_joint_stays_joined():
    """Two struts joined by a faint, blurred bridge: thresholded at 0.5 they fall apart,
    redrawn crisp they stay one piece."""
    image = np.zeros((40, 60))
    image[:, 8:12] = 1.0
    image[:, 48:52] = 1.0
    image[14:17, 12:48] = 0.4  # 12 pixels of bone per 10 x 10 block: a line and then some
    image = ndi.gaussian_filter(image, 0.7)
    assert ndi.label(image > 0.5, EIGHT)[1] == 2
    drawn = draw_struts(image)
    assert ndi.label(drawn > 0.5, EIGHT)[1] == 1
    assert drawn[10:20, 20:40].sum() == pytest.approx(image[10:20, 20:40].sum(), abs=1.0)


def test_the_density_weight_trades_density_against_distance():
    """Weighted heavily, density alone ranks: each block keeps its densest pixels; at 0,
    distance alone does, and a dense pixel far from every centreline loses to a faint one on it."""
    rng = np.random.default_rng(4)
    density = ndi.gaussian_filter(rng.random((30, 40)), 1.0)
    drawn = draw_struts(density, density_weight=1e6)
    for r in range(0, 30, 10):
        for c in range(0, 40, 10):
            block = np.s_[r : r + 10, c : c + 10]
            kept = density[block][drawn[block] == 1]
            dropped = density[block][drawn[block] == 0]
            assert kept.size == 0 or dropped.size == 0 or kept.min() >= dropped.max()
    image = np.zeros((10, 10))
    image[:, 2] = 0.2  # a faint strut, whose centreline is column 2
    image[0:2, 7:9] = 0.9  # a dense 2 x 2 speck: thinning leaves it no centreline
    assert not thin(image > 0.15)[:, 7:].any()
    assert draw_struts(image, density_weight=0)[:, 7:].sum() == 0
    assert draw_struts(image, density_weight=10)[:2, 7:9].sum() == 4


def test_draw_struts_errors():
    with pytest.raises(ValueError, match="factor"):
        draw_struts(np.zeros((10, 10)), 0)
    with pytest.raises(ValueError, match="threshold"):
        draw_struts(np.zeros((10, 10)), threshold=1.0)
    with pytest.raises(ValueError, match="density_weight"):
        draw_struts(np.zeros((10, 10)), density_weight=-1.0)
    with pytest.raises(ValueError):
        draw_struts(np.full((10, 10), 1.5))
