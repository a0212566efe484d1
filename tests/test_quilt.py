"""Seams and quilting: optimality against brute force and csgraph, C++ against the twins,
ownership, the properties of the three methods, and bad input."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse import csgraph

from femsr import quilt as q

BACKENDS = ["cpp", "python"]
STEPS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]


# --- Oracles ------------------------------------------------------------------------------------


def brute_force_cost(cost):
    """Least sum over every simple 8-connected path from row 0 to the last row (depth first)."""
    ny, nx = cost.shape
    best = np.inf

    def extend(i, j, total, seen):
        nonlocal best
        if total >= best:
            return  # costs >= 0: no extension gets cheaper
        if i == ny - 1:
            best = total
            return
        for di, dj in STEPS:
            a, b = i + di, j + dj
            if 0 <= a < ny and 0 <= b < nx and (a, b) not in seen:
                extend(a, b, total + cost[a, b], seen | {(a, b)})

    for j in range(nx):
        extend(0, j, cost[0, j], {(0, j)})
    return best


def csgraph_cost(cost):
    """Shortest path by scipy: edge u -> v weighs cost[v], a source node feeds the top row."""
    ny, nx = cost.shape
    index = np.arange(ny * nx).reshape(ny, nx)
    i, j = np.indices((ny, nx))
    rows, cols = [], []
    for di, dj in STEPS:
        inside = (i + di >= 0) & (i + di < ny) & (j + dj >= 0) & (j + dj < nx)
        rows.append(index[inside])
        cols.append(index[inside] + di * nx + dj)
    source = ny * nx
    rows.append(np.full(nx, source))
    cols.append(index[0])
    u, v = np.concatenate(rows), np.concatenate(cols)
    graph = sp.csr_matrix((cost.ravel()[v], (u, v)), shape=(source + 1, source + 1))
    dist = csgraph.dijkstra(graph, indices=source)
    return dist[index[-1]].min()


def path_cost(cost, seam):
    return float(cost[seam[:, 0], seam[:, 1]].sum())


def assert_valid_seam(seam, shape):
    ny, nx = shape
    assert seam.dtype == np.int64 and seam.ndim == 2 and seam.shape[1] == 2
    assert seam[0, 0] == 0 and seam[-1, 0] == ny - 1
    assert (seam[1:-1, 0] > 0).all() and (seam[1:-1, 0] < ny - 1).all()
    assert ((seam >= 0) & (seam < [ny, nx])).all()
    assert (np.abs(np.diff(seam, axis=0)).max(axis=1) == 1).all()  # 8-connected steps
    assert len(np.unique(seam, axis=0)) == len(seam)  # simple


def canvas_patches(canvas, patch, stride, nr, nc):
    return np.array(
        [
            [
                canvas[r * stride : r * stride + patch, c * stride : c * stride + patch]
                for c in range(nc)
            ]
            for r in range(nr)
        ]
    )


def coverage(nr, nc, patch, stride):
    """How many patches cover each canvas pixel, and which (one of them)."""
    shape = ((nr - 1) * stride + patch, (nc - 1) * stride + patch)
    count = np.zeros(shape, dtype=int)
    for r, c in itertools.product(range(nr), range(nc)):
        count[r * stride : r * stride + patch, c * stride : c * stride + patch] += 1
    return count


# --- Seams ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (4, 1), (3, 3), (4, 3), (3, 4), (5, 2)])
def test_seam_is_optimal_against_brute_force(shape, backend):
    rng = np.random.default_rng(sum(shape))
    for trial in range(6):
        # Integer costs with zeros give many ties; uniform costs give none.
        cost = rng.integers(0, 4, shape).astype(float) if trial % 2 else rng.uniform(0, 1, shape)
        seam = q.min_error_seam(cost, backend=backend)
        assert_valid_seam(seam, shape)
        assert path_cost(cost, seam) == pytest.approx(brute_force_cost(cost), abs=1e-12)


def test_seam_may_run_back_up():
    # A cheap corridor through expensive walls that climbs from row 3 back to row 1 before it
    # can reach the bottom: one pixel per row cannot follow it, Dijkstra on the grid does.
    maze = [
        "1XXXXXX",
        "1X111XX",
        "1X1X1XX",
        "111X1XX",
        "XXXX1XX",
        "XXXX1XX",
        "XXXX1XX",
    ]
    cost = np.array([[1.0 if ch == "1" else 100.0 for ch in row] for row in maze])
    for backend in BACKENDS:
        seam = q.min_error_seam(cost, backend=backend)
        assert_valid_seam(seam, cost.shape)
        assert path_cost(cost, seam) == brute_force_cost(cost) < 100.0
        assert np.diff(seam[:, 0]).min() < 0  # it climbs


@pytest.mark.parametrize("shape", [(40, 12), (12, 40), (120, 40), (33, 1), (1, 17)])
def test_seam_cost_matches_csgraph(shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    for _ in range(3):
        # csgraph drops explicit zeros, so the costs stay positive here.
        cost = rng.uniform(0.01, 1.0, shape) ** 3
        expected = csgraph_cost(cost)
        for backend in BACKENDS:
            seam = q.min_error_seam(cost, backend=backend)
            assert_valid_seam(seam, shape)
            assert path_cost(cost, seam) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, s: rng.uniform(0, 1, s),
        lambda rng, s: rng.integers(0, 3, s).astype(float),  # ties everywhere
        lambda rng, s: np.zeros(s),  # all ties
        lambda rng, s: np.where(rng.random(s) < 0.5, -0.0, rng.integers(0, 2, s)),  # -0.0 == 0.0
        lambda rng, s: (rng.standard_normal(s) - rng.standard_normal(s)) ** 2,  # (A - B)²
    ],
    ids=["uniform", "integers", "zeros", "signed-zeros", "error"],
)
def test_seam_cpp_equals_python(make):
    rng = np.random.default_rng(7)
    for shape in [(2, 2), (17, 5), (5, 17), (60, 20)]:
        cost = make(rng, shape)
        np.testing.assert_array_equal(
            q.min_error_seam(cost), q.min_error_seam(cost, backend="python")
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, s: rng.integers(0, 3, s).astype(float),  # plateaus of equal cost
        lambda rng, s: np.where(rng.random(s) < 0.9, 0.0, rng.uniform(0, 1, s)),  # mostly zeros
        # Every magnitude a double has, subnormals included; sums of the largest overflow to inf.
        lambda rng, s: 10.0 ** rng.uniform(-320, 308, s),
    ],
    ids=["plateaus", "zeros", "magnitudes"],
)
@pytest.mark.parametrize("shape", [(120, 40), (400, 40), (1, 40), (120, 1)], ids=str)
def test_seam_cpp_equals_python_at_quilting_size(make, shape):
    # The radix heap files keys by their digits: keys that differ in any digit, or not at all,
    # must pop in the order (distance, node) of the heapq twin.
    rng = np.random.default_rng(shape[0])
    for _ in range(2):
        cost = make(rng, shape)
        np.testing.assert_array_equal(
            q.min_error_seam(cost), q.min_error_seam(cost, backend="python")
        )


def test_seam_cost_on_plateaus_matches_csgraph():
    rng = np.random.default_rng(2)
    for shape in [(120, 40), (40, 120)]:
        cost = rng.integers(1, 4, shape).astype(float)  # integer sums: exact, many ties
        seam = q.min_error_seam(cost)
        assert_valid_seam(seam, shape)
        assert path_cost(cost, seam) == csgraph_cost(cost)


def test_blocked_pixels_in_the_kernel():
    # The kernel takes +inf as a blocked pixel (the wrapper rejects it): a wall with one gap.
    from femsr import _core
    from femsr.reference import quilt as ref

    rng = np.random.default_rng(4)
    cost = rng.integers(0, 3, (30, 12)).astype(float)
    cost[rng.random(cost.shape) < 0.2] = np.inf
    cost[15, :] = np.inf
    cost[15, 9] = 2.0
    path = np.empty((cost.size, 2), dtype=np.int64)
    length = _core.min_error_seam(cost, path)
    np.testing.assert_array_equal(path[:length], ref.min_error_seam(cost))
    assert [15, 9] in path[:length].tolist()


def test_seam_takes_float32_and_integers():
    cost = np.array([[3, 0, 3], [3, 3, 0], [3, 0, 3]])
    expected = [[0, 1], [1, 2], [2, 1]]
    assert q.min_error_seam(cost).tolist() == expected
    assert q.min_error_seam(cost.astype(np.float32)).tolist() == expected
    assert q.min_error_seam(np.asfortranarray(cost.astype(float))).tolist() == expected


def test_horizontal_seam_by_transpose():
    rng = np.random.default_rng(3)
    cost = rng.uniform(0, 1, (6, 30))
    seam = q.min_error_seam(cost.T)[:, ::-1]
    assert seam[0, 1] == 0 and seam[-1, 1] == cost.shape[1] - 1
    assert path_cost(cost, seam) == pytest.approx(csgraph_cost(cost.T), rel=1e-12)


# --- Seam masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_seam_mask_splits_at_the_seam(backend):
    rng = np.random.default_rng(11)
    for shape in [(1, 1), (1, 5), (6, 1), (30, 8), (8, 30)]:
        cost = rng.integers(0, 3, shape).astype(float)
        seam = q.min_error_seam(cost)
        mask = q.seam_mask(seam, shape, backend=backend)
        assert mask.dtype == np.uint8 and mask.shape == shape
        on_seam = np.zeros(shape, dtype=bool)
        on_seam[seam[:, 0], seam[:, 1]] = True
        assert (mask[on_seam] == 1).all()
        # The first column keeps the left item off the seam, the last column is all right.
        assert (mask[~on_seam[:, 0], 0] == 0).all()
        assert (mask[:, -1] == 1).all()
        # A left pixel is never 4-adjacent to a right pixel off the seam.
        left = mask == 0
        right_off = (mask == 1) & ~on_seam
        assert not (left[:, :-1] & right_off[:, 1:]).any()
        assert not (left[:, 1:] & right_off[:, :-1]).any()
        assert not (left[:-1] & right_off[1:]).any()
        assert not (left[1:] & right_off[:-1]).any()


def test_seam_mask_cpp_equals_python():
    rng = np.random.default_rng(5)
    for shape in [(3, 3), (25, 10), (10, 25), (50, 40)]:
        for _ in range(4):
            seam = q.min_error_seam(rng.integers(0, 4, shape).astype(float))
            np.testing.assert_array_equal(
                q.seam_mask(seam, shape), q.seam_mask(seam, shape, backend="python")
            )


# --- Quilting -------------------------------------------------------------------------------------

GRIDS = [(1, 1, 6, 4), (1, 3, 6, 4), (3, 1, 6, 3), (3, 4, 10, 7), (2, 3, 9, 5), (4, 3, 8, 4)]
grid_ids = {"ids": lambda g: "{}x{} P{} s{}".format(*g)}


def random_patches(nr, nc, patch, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (nr, nc, patch, patch))


@pytest.mark.parametrize("method", q.METHODS)
@pytest.mark.parametrize("grid", GRIDS, **grid_ids)
def test_quilt_cpp_equals_python(grid, method):
    nr, nc, patch, stride = grid
    patches = random_patches(nr, nc, patch, seed=nr * 10 + nc)
    owner = method != "average"
    fast = q.quilt(patches, stride, method=method, return_owner=owner)
    slow = q.quilt(patches, stride, method=method, return_owner=owner, backend="python")
    if owner:
        np.testing.assert_array_equal(fast[0], slow[0])
        np.testing.assert_array_equal(fast[1], slow[1])
    else:
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-15)


def test_seam_quilt_cpp_equals_python_on_a_femur_like_grid():
    # Outside the bone the network's patches agree exactly (both zero): there most pops of the
    # searches are ties, which must come in node order, in surfaces that mix them with noise.
    nr, nc, patch, stride = 5, 6, 30, 20
    size = ((nr - 1) * stride + patch, (nc - 1) * stride + patch)
    i, j = np.indices(size)
    bone = (i - size[0] / 2) ** 2 + (j - size[1] / 3) ** 2 < (size[0] / 3) ** 2
    windows = np.lib.stride_tricks.sliding_window_view(bone, (patch, patch))[::stride, ::stride]
    patches = random_patches(nr, nc, patch, seed=3) * windows
    fast = q.quilt(patches, stride, method="seam", return_owner=True)
    slow = q.quilt(patches, stride, method="seam", return_owner=True, backend="python")
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["seam", "cut"])
@pytest.mark.parametrize("grid", GRIDS, **grid_ids)
def test_every_pixel_has_one_owner_that_covers_it(grid, method, backend):
    nr, nc, patch, stride = grid
    patches = random_patches(nr, nc, patch)
    image, owner = q.quilt(patches, stride, method=method, return_owner=True, backend=backend)
    assert owner.dtype == np.int32 and owner.shape == image.shape
    rows, cols = np.indices(image.shape)
    r, c = np.divmod(owner, nc)
    y, x = rows - r * stride, cols - c * stride
    # The owner covers the pixel (seams never leave their overlap) and gave its value.
    assert ((y >= 0) & (y < patch) & (x >= 0) & (x < patch)).all()
    np.testing.assert_array_equal(image, patches[r, c, y.clip(0, patch - 1), x.clip(0, patch - 1)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", q.METHODS)
@pytest.mark.parametrize("grid", GRIDS, **grid_ids)
def test_away_from_overlaps_the_quilt_is_the_patch(grid, method, backend):
    nr, nc, patch, stride = grid
    patches = random_patches(nr, nc, patch, seed=1)
    image = q.quilt(patches, stride, method=method, backend=backend)
    count = coverage(nr, nc, patch, stride)
    assert image.shape == count.shape
    for r, c in itertools.product(range(nr), range(nc)):
        window = (slice(r * stride, r * stride + patch), slice(c * stride, c * stride + patch))
        alone = count[window] == 1
        np.testing.assert_array_equal(image[window][alone], patches[r, c][alone])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", q.METHODS)
@pytest.mark.parametrize("grid", GRIDS, **grid_ids)
def test_where_patches_agree_the_quilt_equals_them(grid, method, backend):
    nr, nc, patch, stride = grid
    shape = ((nr - 1) * stride + patch, (nc - 1) * stride + patch)
    canvas = np.random.default_rng(2).uniform(0, 1, shape)
    patches = canvas_patches(canvas, patch, stride, nr, nc)
    np.testing.assert_array_equal(q.quilt(patches, stride, method=method, backend=backend), canvas)
    # Cropping takes the top left corner.
    crop = (shape[0] - 1, max(1, shape[1] - 3))
    np.testing.assert_array_equal(
        q.quilt(patches, stride, method=method, shape=crop, backend=backend),
        canvas[: crop[0], : crop[1]],
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_seam_quilt_cuts_along_the_min_error_seam(backend):
    # One grid row of two patches: the vertical seam of their error surface splits the overlap.
    rng = np.random.default_rng(4)
    patch, stride = 12, 7
    overlap = patch - stride
    patches = rng.uniform(0, 1, (1, 2, patch, patch))
    _, owner = q.quilt(patches, stride, return_owner=True, backend=backend)
    error = (patches[0, 0, :, stride:] - patches[0, 1, :, :overlap]) ** 2
    mask = q.seam_mask(q.min_error_seam(error), error.shape)
    np.testing.assert_array_equal(owner[:, stride:patch], mask)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seams_follow_where_patches_agree(backend):
    # Two random patches that agree on one wandering 8-connected path through their overlap:
    # the zero-error path is the seam, so the quilt takes A left of it and B from it on.
    rng = np.random.default_rng(8)
    patch, stride = 16, 10
    overlap = patch - stride
    a = rng.uniform(0, 1, (patch, patch))
    b = rng.uniform(2, 3, (patch, patch))
    path = [2]
    for _ in range(patch - 1):
        path.append(int(np.clip(path[-1] + rng.integers(-1, 2), 0, overlap - 1)))
    for i, j in enumerate(path):
        b[i, j] = a[i, stride + j]
    _, owner = q.quilt(np.array([[a, b]]), stride, return_owner=True, backend=backend)
    for i, j in enumerate(path):
        assert owner[i, stride + j] == 1
        assert (owner[i, stride : stride + j] == 0).all()
        assert (owner[i, stride + j :] == 1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_average_blends_linearly_across_the_overlap(backend):
    patch, stride = 10, 6
    overlap = patch - stride
    patches = np.stack([np.zeros((patch, patch)), np.ones((patch, patch))])[None]
    image = q.quilt(patches, stride, method="average", backend=backend)
    expected = np.concatenate(
        [np.zeros(stride), np.arange(1, overlap + 1) / (overlap + 1), np.ones(stride)]
    )
    np.testing.assert_allclose(image, np.broadcast_to(expected, image.shape), rtol=0, atol=1e-15)
    # Vertically the same ramp, across the rows.
    column = q.quilt(patches.transpose(1, 0, 2, 3), stride, method="average", backend=backend)
    np.testing.assert_allclose(column, np.broadcast_to(expected[:, None], column.shape), atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("patch, stride", [(10, 6), (9, 6), (8, 4)])
def test_cut_is_straight_through_the_middle(patch, stride, backend):
    overlap = patch - stride
    rng = np.random.default_rng(9)
    patches = rng.uniform(0, 1, (2, 2, patch, patch))
    image, owner = q.quilt(patches, stride, method="cut", return_owner=True, backend=backend)
    line = stride + overlap // 2  # first row/column of the later patch
    expected = np.zeros(image.shape, dtype=np.int32)
    expected[:, line:] += 1
    expected[line:, :] += 2
    np.testing.assert_array_equal(owner, expected)


def test_quilt_takes_float32_patches():
    patches = random_patches(2, 2, 8).astype(np.float32)
    image = q.quilt(patches, 5)
    assert image.dtype == np.float64
    np.testing.assert_array_equal(image, q.quilt(patches.astype(np.float64), 5))


def test_quilt_reports_overflowing_error():
    patches = np.zeros((1, 2, 4, 4))
    patches[0, 1] = 1e300  # (A - B)² overflows to inf everywhere in the overlap
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="seam cost overflows"):
            q.quilt(patches, 2, backend=backend)
    # Averaging needs no seam.
    assert np.isfinite(q.quilt(patches, 2, method="average")).all()


def test_seam_overflow_is_reported():
    cost = np.full((3, 3), 1e308)
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="seam cost overflows"):
            q.min_error_seam(cost, backend=backend)


# --- Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cost, error, match",
    [
        ([[1.0, 2.0]], TypeError, "cost must be a numpy array"),
        (np.ones((2, 2), dtype=bool), TypeError, "cost must hold real numbers"),
        (np.ones(3), ValueError, "cost must be 2-D"),
        (np.ones((0, 3)), ValueError, "cost must not be empty"),
        (np.array([[1.0, np.nan]]), ValueError, "cost contains NaN or infinite"),
        (np.array([[1.0, np.inf]]), ValueError, "cost contains NaN or infinite"),
        (np.array([[1.0, -0.5]]), ValueError, r"cost must be >= 0 .* minimum -0.5"),
    ],
)
def test_min_error_seam_rejects_bad_cost(cost, error, match):
    with pytest.raises(error, match=match):
        q.min_error_seam(cost)


def test_backend_is_checked():
    with pytest.raises(ValueError, match="backend must be one of"):
        q.min_error_seam(np.ones((2, 2)), backend="gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        q.seam_mask(np.array([[0, 0], [1, 0]]), (2, 2), backend="gpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        q.quilt(np.ones((1, 1, 4, 4)), 2, backend="gpu")


@pytest.mark.parametrize(
    "seam, shape, error, match",
    [
        ([[0, 0], [1, 0]], (2, 2), TypeError, "seam must be a numpy array"),
        (np.array([[0.0, 0.0], [1.0, 0.0]]), (2, 2), TypeError, "seam must hold integer"),
        (np.array([0, 1]), (2, 2), ValueError, r"seam must have shape \(n, 2\)"),
        (np.zeros((0, 2), dtype=int), (2, 2), ValueError, r"seam must have shape \(n, 2\)"),
        (np.array([[0, 0], [1, 2]]), (2, 2), ValueError, "seam leaves the 2x2 surface"),
        (np.array([[0, -1], [1, 0]]), (2, 2), ValueError, "seam leaves the 2x2 surface"),
        (np.array([[1, 0], [2, 0]]), (3, 2), ValueError, "seam must run from row 0 to row 2"),
        (np.array([[0, 0], [1, 0]]), (3, 2), ValueError, "seam must run from row 0 to row 2"),
        (np.array([[0, 0], [2, 0]]), (3, 2), ValueError, "pixels 0 and 1 are not neighbours"),
        (np.array([[0, 0], [1, 1], [1, 1], [2, 1]]), (3, 2), ValueError, "pixels 1 and 2 are not"),
        (np.array([[0, 0], [1, 0]]), (2,), TypeError, "shape must be a pair of integers"),
        (np.array([[0, 0], [1, 0]]), (2.0, 2), TypeError, "shape must be a pair of integers"),
        (np.array([[0, 0], [1, 0]]), (2, 0), ValueError, "shape must be positive"),
    ],
)
def test_seam_mask_rejects_bad_input(seam, shape, error, match):
    for backend in BACKENDS:
        with pytest.raises(error, match=match):
            q.seam_mask(seam, shape, backend=backend)


@pytest.mark.parametrize(
    "patches, stride, kwargs, error, match",
    [
        ([[np.ones((4, 4))]], 2, {}, TypeError, "patches must be a numpy array"),
        (np.ones((1, 1, 4, 4), dtype=complex), 2, {}, TypeError, "patches must hold real numbers"),
        (np.ones((4, 4)), 2, {}, ValueError, "patches must be 4-D"),
        (np.ones((1, 1, 4, 5)), 2, {}, ValueError, r"square patches .* got \(1, 1, 4, 5\)"),
        (np.ones((1, 1, 1, 1)), 1, {}, ValueError, "P >= 2"),
        (np.ones((0, 2, 4, 4)), 2, {}, ValueError, "patches holds no patch"),
        (np.full((1, 1, 4, 4), np.nan), 2, {}, ValueError, "patches contains NaN or infinite"),
        (np.ones((1, 1, 4, 4)), 2.0, {}, TypeError, "stride must be an integer"),
        (np.ones((1, 1, 4, 4)), True, {}, TypeError, "stride must be an integer"),
        (np.ones((1, 1, 4, 4)), 4, {}, ValueError, r"stride must lie in \[2, 4\) .* got 4"),
        (np.ones((1, 1, 9, 9)), 4, {}, ValueError, r"stride must lie in \[5, 9\) .* got 4"),
        (np.ones((1, 1, 4, 4)), 0, {}, ValueError, r"stride must lie in \[2, 4\)"),
        (np.ones((1, 1, 4, 4)), 2, {"method": "blend"}, ValueError, "method must be one of"),
        (
            np.ones((1, 1, 4, 4)),
            2,
            {"method": "average", "return_owner": True},
            ValueError,
            "return_owner needs method 'seam' or 'cut'",
        ),
        (
            np.ones((1, 2, 4, 4)),
            2,
            {"shape": (4, 7)},
            ValueError,
            r"shape must fit in the canvas \(4, 6\) the patches cover, got \(4, 7\)",
        ),
        (np.ones((1, 2, 4, 4)), 2, {"shape": (0, 3)}, ValueError, "shape must be positive"),
        (np.ones((1, 2, 4, 4)), 2, {"shape": 4}, TypeError, "shape must be a pair of integers"),
    ],
)
def test_quilt_rejects_bad_input(patches, stride, kwargs, error, match):
    for backend in BACKENDS:
        with pytest.raises(error, match=match):
            q.quilt(patches, stride, backend=backend, **kwargs)


def test_kernels_reject_what_the_wrapper_would():
    # The compiled kernels guard themselves too: a negative cost would make Dijkstra loop.
    from femsr import _core

    path = np.empty((4, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="cost must be >= 0 and not NaN"):
        _core.min_error_seam(np.array([[1.0, -1.0], [1.0, 1.0]]), path)
    with pytest.raises(ValueError, match="stride must lie in"):
        _core.vertical_seam_masks(np.zeros((1, 2, 10, 10)), 4, np.zeros((1, 1, 10, 6), np.uint8))
    with pytest.raises(ValueError, match="stride must lie in"):
        _core.horizontal_seam_masks(np.zeros((2, 10, 10)), 4, np.zeros((1, 6, 10), np.uint8))
