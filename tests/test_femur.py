"""Femur phantom: grids, outline, landmarks, loads on surface arcs, ROIs, serialization, FE."""

import json
import math

import numpy as np
import pytest
import scipy.ndimage as ndi

from femsr import fem, femur
from femsr.femur import BOX, CARTER_1989, Femur, Force, LoadCase

SEEDS = range(11)  # the dataset's eleven femurs


@pytest.fixture(scope="module")
def default():
    return Femur()


def bone_at(mask, pixel_size, points):
    """Mask value at points (mm); False outside the grid."""
    rows = np.floor((BOX[0] - points[:, 1]) / pixel_size).astype(int)
    cols = np.floor(points[:, 0] / pixel_size).astype(int)
    ok = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
    out = np.zeros(len(points), dtype=bool)
    out[ok] = mask[rows[ok], cols[ok]]
    return out


def node_xy(shape, pixel_size):
    i, j = np.mgrid[0 : shape[0] + 1, 0 : shape[1] + 1]
    return np.stack([j * pixel_size, BOX[0] - i * pixel_size], axis=-1)


def boundary_nodes(mask):
    """Nodes with a bone pixel and a void pixel (or the outside) among their four pixels."""
    padded = np.pad(mask, 1)
    quads = np.stack([padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]])
    return quads.any(axis=0) & ~quads.all(axis=0)


# --- grids --------------------------------------------------------------------------------------


def test_grid_shapes_full_and_low_resolution():
    assert femur.grid_shape(0.05) == (2080, 1883)
    # LR: the HR image padded with void to 2080 x 1890, then block-averaged x10
    assert femur.grid_shape(0.5) == (2080 // 10, math.ceil(1883 / 10)) == (208, 189)
    assert femur.grid_shape(1.0) == (104, 95)
    assert femur.grid_shape(2.0) == (52, 48)


# --- outline ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pixel_size", [2.0, 1.0, 0.5])
def test_mask_is_one_piece_held_at_the_bottom_and_half_full(default, pixel_size):
    mask = default.mask(pixel_size)
    assert mask.shape == femur.grid_shape(pixel_size) and mask.dtype == bool
    _, parts = ndi.label(mask)  # edge-connected, as FE elements must be
    assert parts == 1
    assert mask[-1].any()  # the shaft reaches the bottom edge
    assert not (mask[0].any() or mask[:, 0].any() or mask[:, -1].any())
    assert 0.35 <= mask.mean() <= 0.6


def test_anatomy_head_top_right_trochanters_on_their_sides(default):
    marks = default.landmarks()
    hx, hy = marks.head_centre
    (gx, gy), (lx, ly) = marks.greater_trochanter, marks.lesser_trochanter
    (bx, _), (_, jy) = marks.shaft_axis
    assert hx > BOX[1] / 2 and hy > BOX[0] / 2  # head top right: medial is +x
    assert gx < bx < hx and gy > jy  # greater trochanter lateral, high
    assert lx > bx and ly < jy and ly < hy - marks.head_radius  # lesser: medial, below the neck
    (left, y0), (right, y1) = marks.fixed_edge
    assert y0 == y1 == 0.0 and left < bx < right
    assert right - left == pytest.approx(default.shaft_width, abs=0.5)


@pytest.mark.parametrize("femur_", [Femur(), *map(femur.sample, SEEDS)], ids=lambda f: str(f.seed))
def test_neck_shaft_angle_from_landmarks_and_mask(femur_):
    marks = femur_.landmarks()
    assert 120.0 <= marks.neck_shaft_angle <= 140.0
    assert marks.neck_shaft_angle == pytest.approx(femur_.neck_shaft_angle, abs=1e-9)

    p = 0.25
    mask = femur_.mask(p)
    # shaft axis from the mask: midpoints of the bone in rows 2-15 mm above the bottom
    heights = np.arange(2.0, 16.0)
    mids = [(np.flatnonzero(mask[int((BOX[0] - y) / p)]).mean() + 0.5) * p for y in heights]
    slope = np.polyfit(heights, mids, 1)[0]
    shaft_down = np.array([-slope, -1.0]) / math.hypot(slope, 1.0)
    # neck axis from the mask: head centre to the midpoint of the narrowest neck section
    centre = np.array(marks.head_centre)
    axis = np.subtract(marks.neck_axis[1], centre)
    axis /= np.linalg.norm(axis)
    across = np.array([-axis[1], axis[0]])
    s = np.arange(-40.0, 40.0, p / 4)
    sections = []
    for t in np.arange(14.0, 34.0, 0.5):
        inside = bone_at(mask, p, centre + t * axis + s[:, None] * across)
        lo = hi = np.argmin(np.abs(s))
        while inside[lo - 1]:
            lo -= 1
        while inside[hi + 1]:
            hi += 1
        sections.append((s[hi] - s[lo], t, (s[lo] + s[hi]) / 2))
    _, t, offset = min(sections)
    neck = -(t * axis + offset * across)  # from the narrowest section towards the head
    measured = math.degrees(math.acos(neck @ shaft_down / np.linalg.norm(neck)))
    assert 120.0 <= measured <= 140.0
    # the trochanter's fillet moves the narrowest section's midpoint on wide, short necks
    assert measured == pytest.approx(femur_.neck_shaft_angle, abs=5.0)


def test_area_is_the_same_at_every_pixel_size(default):
    areas = [default.mask(p).sum() * p * p for p in (2.0, 1.0, 0.5, 0.25)]
    assert max(areas) / min(areas) - 1 < 0.02
    assert 0.35 * BOX[0] * BOX[1] < areas[-1] < 0.6 * BOX[0] * BOX[1]


# --- loads --------------------------------------------------------------------------------------


def test_carter_load_cases_and_angle_convention():
    stance, abduction, adduction = CARTER_1989
    assert (stance.joint, stance.abductor) == (Force(2317.0, 24.0), Force(703.0, 28.0))
    assert (abduction.joint, abduction.abductor) == (Force(1158.0, -15.0), Force(351.0, -8.0))
    assert (adduction.joint, adduction.abductor) == (Force(1548.0, 56.0), Force(468.0, 35.0))
    assert [case.cycles for case in CARTER_1989] == [6000.0, 2000.0, 2000.0]
    fx, fy = stance.joint_vector  # down on the head, tilted towards lateral (-x)
    assert fx < 0 and fy < 0 and math.degrees(math.atan2(-fx, -fy)) == pytest.approx(24.0)
    ax, ay = stance.abductor_vector  # up on the trochanter, tilted towards medial (+x)
    assert ax > 0 and ay > 0 and math.degrees(math.atan2(ax, ay)) == pytest.approx(28.0)
    assert abduction.joint_vector[0] > 0 and abduction.abductor_vector[0] < 0
    assert np.linalg.norm(adduction.joint_vector) == pytest.approx(1548.0)


@pytest.mark.parametrize("pixel_size", [2.0, 1.0])
@pytest.mark.parametrize(
    "femur_", [Femur(), Femur(side="left"), femur.sample(5)], ids=["default", "left", "seed5"]
)
def test_forces_sum_to_the_case_and_lie_on_boundary_arcs(femur_, pixel_size):
    problem = femur_.problem(pixel_size)
    mask = problem.mask
    ny, nx = mask.shape
    assert problem.forces.shape == (3, ny + 1, nx + 1, 2)
    assert problem.names == ("stance", "abduction", "adduction")
    np.testing.assert_allclose(problem.weights, [0.6, 0.2, 0.2], rtol=1e-15)

    xy = node_xy(mask.shape, pixel_size)
    on_boundary = boundary_nodes(mask)
    mirror = np.array([-1.0 if femur_.side == "left" else 1.0, 1.0])  # medial is -x on a left one
    for c, case in enumerate(femur_.loads):
        joint_vector, abductor_vector = mirror * case.joint_vector, mirror * case.abductor_vector
        forces = problem.forces[c]
        loaded = np.abs(forces).sum(axis=-1) > 0
        assert on_boundary[loaded].all()  # boundary nodes, hence nodes the mask touches
        np.testing.assert_allclose(
            forces.sum(axis=(0, 1)), joint_vector + abductor_vector, rtol=1e-12
        )
        joint, abductor = femur_.anchors(case.name)
        near_joint = np.linalg.norm(xy - joint, axis=-1) < femur_.joint_arc
        near_abductor = np.linalg.norm(xy - abductor, axis=-1) < femur_.abductor_arc
        assert not (near_joint & near_abductor).any()
        assert (near_joint | near_abductor)[loaded].all()
        for near, vector in ((near_joint, joint_vector), (near_abductor, abductor_vector)):
            part = forces[near & loaded]
            assert len(part) >= 5  # spread over an arc, never a point load
            np.testing.assert_allclose(part.sum(axis=0), vector, rtol=1e-12)
            cross = part[:, 0] * vector[1] - part[:, 1] * vector[0]  # parallel to the force
            assert np.abs(cross).max() <= 1e-9 * np.linalg.norm(vector) ** 2
            assert part.max(axis=0) @ vector < 0.5 * vector @ vector  # smooth, not one node
        # the joint force enters the head where its line through the head centre meets it
        radial = joint - np.array(femur_.landmarks().head_centre)
        assert np.linalg.norm(radial) == pytest.approx(femur_.head_radius, abs=1e-6)
        assert radial @ joint_vector / np.linalg.norm(radial) == pytest.approx(
            -np.linalg.norm(joint_vector)
        )


def test_arcs_are_the_same_at_every_resolution(default):
    def centroids(pixel_size):
        problem = default.problem(pixel_size)
        xy = node_xy(problem.mask.shape, pixel_size)
        weights = np.linalg.norm(problem.forces, axis=-1)  # (cases, ny+1, nx+1)
        joint, _ = default.anchors("stance")
        near = np.linalg.norm(xy - joint, axis=-1) < default.joint_arc
        w = weights[0] * near
        return (w[..., None] * xy).sum(axis=(0, 1)) / w.sum()

    np.testing.assert_allclose(centroids(1.0), centroids(0.25), atol=0.5)


def test_fixed_is_the_bottom_cut(default):
    problem = default.problem(2.0)
    fixed = problem.fixed
    assert fixed.shape == (53, 49, 2) and fixed.dtype == bool
    assert (fixed[..., 0] == fixed[..., 1]).all()
    assert not fixed[:-1].any()
    cols = np.flatnonzero(fixed[-1, :, 0])
    touched = np.flatnonzero(problem.mask[-1])
    np.testing.assert_array_equal(cols, np.arange(touched[0], touched[-1] + 2))
    (left, _), (right, _) = default.landmarks().fixed_edge
    assert cols[0] * 2.0 == pytest.approx(left, abs=2.0)
    assert cols[-1] * 2.0 == pytest.approx(right, abs=2.0)


def test_selected_cases_in_order(default):
    problem = default.problem(2.0, cases=("adduction", "stance"))
    full = default.problem(2.0)
    assert problem.names == ("adduction", "stance")
    np.testing.assert_array_equal(problem.forces, full.forces[[2, 0]])
    np.testing.assert_allclose(problem.weights, [0.25, 0.75])
    assert default.problem(2.0, cases="abduction").names == ("abduction",)


# --- FE -----------------------------------------------------------------------------------------


def test_fe_solve_holds_the_femur_and_the_head_follows_the_joint_force(default):
    p = 2.0
    problem = default.problem(p, cases=("stance",))
    u = fem.solve(
        np.ones(problem.mask.shape),
        problem.forces,
        problem.fixed,
        mask=problem.mask,
        E0=17e3,
        h=problem.pixel_size,
        thickness=problem.thickness,
    )
    assert np.isfinite(u).all() and not u[:, problem.fixed].any()
    hx, hy = default.landmarks().head_centre
    head = u[0, round((BOX[0] - hy) / p), round(hx / p)]
    joint = default.loads[0].joint_vector
    assert head[1] < 0  # the head goes down under one-legged stance ...
    assert head @ joint > 0  # ... along the joint force
    # but medially (+x), though the joint force points laterally: the shaft, clamped at the
    # bottom, bends into varus under the moment of both forces about the cut
    assert head[0] > 0


# --- ROIs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("pixel_size", [1.0, 0.5])
@pytest.mark.parametrize("seed", [None, *SEEDS])
def test_rois_are_squares_inside_the_mask(seed, pixel_size):
    femur_ = Femur() if seed is None else femur.sample(seed)
    rois = femur_.rois(pixel_size)
    mask = femur_.mask(pixel_size)
    assert list(rois) == ["head", "neck", "intertrochanteric"]
    side = round(femur.ROI_SIZE / pixel_size)
    for rows, cols in rois.values():
        assert rows.stop - rows.start == cols.stop - cols.start == side
        assert mask[rows, cols].all()
    rows, cols = rois["head"]
    hx, hy = femur_.landmarks().head_centre
    assert (cols.start + side / 2) * pixel_size == pytest.approx(hx, abs=pixel_size)
    assert BOX[0] - (rows.start + side / 2) * pixel_size == pytest.approx(hy, abs=pixel_size)


# --- seeds --------------------------------------------------------------------------------------


def test_seeds_give_different_valid_femurs_and_load_sets():
    femurs = [femur.sample(seed) for seed in range(40)]
    assert femur.sample(3) == femurs[3]
    assert {f.side for f in femurs} == {"right", "left"}
    for name, (low, high) in femur.RANGES.items():
        values = [getattr(f, name) for f in femurs]
        assert low <= min(values) and max(values) <= high
        assert max(values) - min(values) > 0.75 * (high - low)  # the draws span the range
    for f in femurs:
        low, high = femur.NECK_TO_HEAD
        assert low <= f.neck_width / (2 * f.head_radius) <= high
    assert len({f.head_radius for f in femurs}) == len(femurs)
    assert len({f.loads for f in femurs}) == len(femurs)
    masks = [f.mask(2.0) for f in femurs]
    assert all(not np.array_equal(masks[0], m) for m in masks[1:])
    for f, mask in zip(femurs, masks, strict=True):
        assert ndi.label(mask)[1] == 1 and mask[-1].any() and 0.35 <= mask.mean() <= 0.6
        assert [c.cycles for c in f.loads] == [c.cycles for c in CARTER_1989]
        for case, carter in zip(f.loads, CARTER_1989, strict=True):
            for force, base in ((case.joint, carter.joint), (case.abductor, carter.abductor)):
                assert 0.8 * 0.9 <= force.magnitude / base.magnitude <= 1.2 * 1.1
                assert abs(force.angle - base.angle) <= 5.0
                assert force != base


# --- serialization ------------------------------------------------------------------------------


@pytest.mark.parametrize("femur_", [Femur(), femur.sample(7)], ids=["default", "seed7"])
def test_dict_round_trip_through_json(femur_):
    data = json.loads(json.dumps(femur_.to_dict(pixel_size=0.05)))
    assert data["pixel_size"] == 0.05 and data["seed"] == femur_.seed
    assert data["loads"][0]["joint"]["magnitude"] == femur_.loads[0].joint.magnitude
    back = Femur.from_dict(data)
    assert back == femur_
    np.testing.assert_array_equal(back.problem(2.0).forces, femur_.problem(2.0).forces)
    assert "pixel_size" not in femur_.to_dict()


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1.0, 0.0, math.nan, math.inf])
def test_bad_pixel_size(default, value):
    with pytest.raises(ValueError, match="pixel_size must be a positive finite number"):
        femur.grid_shape(value)
    with pytest.raises(ValueError, match="pixel_size must be a positive finite number"):
        default.problem(value)


def test_bad_pixel_size_type(default):
    with pytest.raises(TypeError, match="pixel_size must be a real number"):
        default.mask("0.5")
    with pytest.raises(TypeError, match="pixel_size must be a real number"):
        femur.grid_shape(True)


def test_too_coarse_for_the_arcs(default):
    with pytest.raises(
        ValueError, match=r"pixel_size 12.0 mm is too coarse: the joint arc \(12.0 mm\)"
    ):
        default.problem(12.0)


def test_unknown_case(default):
    with pytest.raises(ValueError, match="unknown load case 'walking'"):
        default.problem(2.0, cases=("stance", "walking"))
    with pytest.raises(ValueError, match="unknown load case 'walking'"):
        default.anchors("walking")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"head_radius": -1.0}, ValueError, "head_radius must be positive"),
        ({"offset": math.nan}, ValueError, "offset must be finite"),
        ({"shaft_width": "30"}, TypeError, "shaft_width must be a real number"),
        ({"neck_shaft_angle": 100.0}, ValueError, r"neck_shaft_angle must lie in \[110, 150\]"),
        ({"neck_width": 45.0}, ValueError, "neck_width must be narrower than the head"),
        ({"head_radius": 30.0}, ValueError, "the femur leaves the box"),
        ({"trochanter_top": -30.0}, ValueError, "tip below its base"),
        ({"neck_base_width": 150.0}, ValueError, "differ by more than twice the neck's length"),
        ({"seed": "7"}, TypeError, "seed must be an integer or None, got str"),
        ({"loads": ()}, ValueError, "loads must be a non-empty tuple of LoadCase"),
        ({"loads": (CARTER_1989[0], CARTER_1989[0])}, ValueError, "names must be unique"),
        (
            {"loads": (LoadCase("x", Force(-1.0, 0.0), Force(1.0, 0.0), 1.0),)},
            ValueError,
            "load case 'x': forces need a finite magnitude >= 0",
        ),
        (
            {"loads": (LoadCase("x", Force(1.0, 0.0), Force(1.0, 0.0), 0.0),)},
            ValueError,
            "load case 'x': cycles must be positive",
        ),
    ],
)
def test_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        Femur(**kwargs)


def test_bad_roi(default):
    with pytest.raises(ValueError, match="size must be at least one pixel"):
        default.rois(1.0, size=0.5)
    with pytest.raises(
        ValueError, match=r"the head ROI \(40.0 mm at 1.0 mm pixels\) is not wholly inside"
    ):
        default.rois(1.0, size=40.0)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed must be non-negative, got -1"):
        femur.sample(-1)
    with pytest.raises(TypeError, match="seed must be an integer, got float"):
        femur.sample(1.5)


def test_bad_dict(default):
    data = default.to_dict()
    with pytest.raises(ValueError, match=r"not a femsr\.femur dict"):
        Femur.from_dict({"geometry": {}})
    with pytest.raises(ValueError, match=r"unsupported femsr\.femur version 2"):
        Femur.from_dict({**data, "version": 2})
    with pytest.raises(ValueError, match=r"unknown femur parameter\(s\) \['colour'\]"):
        Femur.from_dict({**data, "geometry": {**data["geometry"], "colour": 1.0}})


# --- cortex, canal, side ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "femur_", [Femur(), *map(femur.sample, range(6))], ids=lambda f: str(f.seed)
)
def test_cortex_is_a_closed_shell_of_its_thickness(femur_):
    p = 0.1
    mask, cortex, canal = femur_.compartments(p)
    trabecular = mask & ~cortex & ~canal
    assert not (cortex & canal).any() and (cortex <= mask).all() and (canal <= mask).all()
    # closed: the trabecular bone and the canal never touch the outside but at the shaft's cut
    inner = ndi.binary_dilation(trabecular | canal, np.ones((3, 3), bool))
    assert not (inner[:-1] & ~mask[:-1]).any()
    depth = ndi.distance_transform_edt(mask) * p  # the bottom row is no outline: the cut
    assert (depth[trabecular].min()) >= 0.9 * min(getattr(femur_, n) for n in femur._CORTEX)
    # thickness where the construction puts it: the inferior neck thick, the superior thin
    marks = femur_.landmarks()
    centre, junction = np.array(marks.neck_axis[0]), np.array(marks.neck_axis[1])
    axis = (centre - junction) / np.linalg.norm(centre - junction)
    up = np.array([-axis[1], axis[0]]) * (1 if axis[0] > 0 else -1)  # towards the superior side
    xy = node_xy(mask.shape, p)[:-1, :-1] + [p / 2, -p / 2]  # pixel centres
    along = (xy - junction) @ axis / np.linalg.norm(centre - junction)
    across = (xy - junction) @ up
    neck = cortex & (along > 0.35) & (along < 0.6) & (np.abs(across) < femur_.neck_width / 2 + 2)
    inferior, superior = depth[neck & (across < 0)].max(), depth[neck & (across > 0)].max()
    assert inferior == pytest.approx(femur_.cortex_calcar, abs=1.0)  # the calcar's fillet
    # thin; the trochanteric fossa's notch thickens the superior shell to 1.5-2.2 mm there
    assert superior <= 2.5 < inferior
    # the canal opens below the lesser trochanter, in the shaft
    rows = np.flatnonzero(canal.any(axis=1))
    top = BOX[0] - (rows.min() + 0.5) * p
    assert rows.size and top <= marks.lesser_trochanter[1] - femur_.canal_drop


def test_a_left_femur_is_the_mirror_of_the_right():
    right, left = Femur(), Femur(side="left")
    p = 0.05  # the box is 1883 pixels wide: the mirror is a flip of the columns
    for a, b in zip(right.compartments(p), left.compartments(p), strict=True):
        np.testing.assert_array_equal(a[:, ::-1], b)
    rois_r, rois_l = right.rois(p), left.rois(p)
    width = femur.grid_shape(p)[1]
    for name, (rows, cols) in rois_r.items():
        assert rois_l[name][0] == rows
        assert (rois_l[name][1].start, rois_l[name][1].stop) == (
            width - cols.stop,
            width - cols.start,
        )
    fr, fl = right.problem(1.0).forces.sum(axis=(1, 2)), left.problem(1.0).forces.sum(axis=(1, 2))
    np.testing.assert_allclose(fl, fr * [-1.0, 1.0], rtol=1e-12)
    assert Femur.from_dict(left.to_dict()) == left
