"""Morphometry: regions of the femur, and every measure on shapes with known answers."""

import math

import numpy as np
import pytest

from femsr import morphometry
from femsr.femur import BOX, Femur

PIXEL = 0.1  # mm


def plates(shape, thickness, spacing, angle):
    """Parallel plates ``thickness`` px thick, ``spacing`` px apart, running at ``angle``
    degrees from +x (counter-clockwise, y up)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    t = math.radians(angle)
    across = -cols * math.sin(t) + (shape[0] - 1 - rows) * math.cos(t)
    return (np.floor(across) % (thickness + spacing)) < thickness


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_anisotropy_of_plates_at_a_known_angle(angle):
    bone = plates((240, 240), 3, 9, angle)
    da, orientation = morphometry.mil_anisotropy(bone, np.ones(bone.shape, bool))
    assert da > 2.0
    assert min(abs(orientation - angle), 180 - abs(orientation - angle)) < 3.0


def test_a_square_lattice_is_isotropic_and_empty_or_full_has_no_anisotropy():
    lattice = plates((240, 240), 3, 9, 0.0) | plates((240, 240), 3, 9, 90.0)
    da, _ = morphometry.mil_anisotropy(lattice, np.ones(lattice.shape, bool))
    assert da == pytest.approx(1.0, abs=0.02)
    for uniform in (np.zeros((50, 50), bool), np.ones((50, 50), bool)):
        assert all(map(math.isnan, morphometry.mil_anisotropy(uniform, np.ones((50, 50), bool))))


@pytest.fixture(scope="module")
def femur_with_plates():
    """A femur whose cortex is solid and whose trabecular bone is plates 3 px (0.3 mm) thick,
    9 px (0.9 mm) apart, running at 60 degrees."""
    femur = Femur()
    mask, cortex, canal = femur.compartments(PIXEL)
    trabecular = mask & ~cortex & ~canal
    density = np.where(cortex | (trabecular & plates(mask.shape, 3, 9, 60.0)), 1.0, 0.0)
    return femur, density, morphometry.morphometry(density, femur, PIXEL)


def test_regions_split_the_trabecular_bone(femur_with_plates):
    femur, _, _ = femur_with_plates
    found = morphometry.regions(femur, PIXEL)
    assert tuple(found) == morphometry.REGIONS
    mask, cortex, canal = femur.compartments(PIXEL)
    parts = [found[name] for name in morphometry.REGIONS[:5]]
    assert (sum(p.astype(int) for p in parts) == (mask & ~cortex & ~canal)).all()
    assert all(p.sum() * PIXEL**2 > 40 for p in parts)  # every region holds bone to measure
    head = np.argwhere(found["head"]).mean(axis=0)
    centre = femur.landmarks().head_centre
    assert head[1] * PIXEL == pytest.approx(centre[0], abs=3.0)  # cut at the head-neck junction
    assert BOX[0] - head[0] * PIXEL == pytest.approx(centre[1], abs=3.0)
    for roi in ("head", "neck", "intertrochanteric"):
        assert (found[f"roi_{roi}"] <= (mask & ~cortex & ~canal)).all()


def test_measures_of_known_plates(femur_with_plates):
    _, _, rows = femur_with_plates
    by_name = {row["region"]: row for row in rows}
    for name in ("roi_head", "roi_neck", "roi_intertrochanteric", "head", "neck"):
        row = by_name[name]
        assert row["bvtv"] == pytest.approx(3 / 12, abs=0.03)
        assert row["tb_th_median"] == pytest.approx(0.3, abs=1e-9)
        assert row["tb_sp_median"] == pytest.approx(0.9, abs=0.1)  # 9 px, or 8 where cut
        # the means read oblique 3 px plates thinner where the raster makes them 2 px (1 px)
        assert row["tb_n"] == pytest.approx(1 / 1.2, rel=0.2)
        assert row["da"] > 2.0 and abs(row["orientation"] - 60.0) < 3.0
        assert row["largest_void"] == pytest.approx(0.9, abs=0.11)
    cortex = by_name["cortex"]
    assert cortex["bvtv"] == 1.0 and cortex["band"] == 1.0
    assert 0.8 <= cortex["tb_th_median"] <= 5.5  # the shell's thicknesses, 0.8 to 4.5 mm
    met = morphometry.check(rows)
    assert met.pop("head densest") is False  # the plates are the same everywhere
    assert all(met.values())


def test_a_hole_is_the_largest_void_and_fails_the_check(femur_with_plates):
    femur, density, _ = femur_with_plates
    mask, cortex, _ = femur.compartments(PIXEL)
    cy, cx = np.argwhere(morphometry.regions(femur, PIXEL)["intertrochanteric"]).mean(axis=0)
    rows, cols = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    hole = np.hypot(rows - round(cy), cols - round(cx)) < 30.5  # 61 px: 6.1 mm across
    holed = np.where(hole & ~cortex, 0.0, density)
    table = {row["region"]: row for row in morphometry.morphometry(holed, femur, PIXEL)}
    assert table["intertrochanteric"]["largest_void"] == pytest.approx(6.1, abs=0.15)
    assert not morphometry.check(list(table.values()))["largest_void intertrochanteric"]


def test_an_open_cortex_fails_the_band(femur_with_plates):
    femur, density, _ = femur_with_plates
    mask, cortex, _ = femur.compartments(PIXEL)
    opened = np.where(cortex & (np.arange(mask.shape[1]) * PIXEL > 60.0), 0.0, density)
    table = morphometry.morphometry(opened, femur, PIXEL)
    assert not morphometry.check(table)["band"]


def test_some_regions_alone_are_those_rows_of_the_whole_table(femur_with_plates):
    femur, density, rows = femur_with_plates
    only = ("roi_neck", "cortex", "head")
    some = morphometry.morphometry(density, femur, PIXEL, only=only)
    whole = {row["region"]: row for row in rows}
    assert [row["region"] for row in some] == list(only)
    for row in some:
        assert row.keys() == whole[row["region"]].keys()
        np.testing.assert_equal(list(row.values()), list(whole[row["region"]].values()))
    with pytest.raises(ValueError, match=r"unknown regions \['calcar'\]"):
        morphometry.morphometry(density, femur, PIXEL, only=("head", "calcar"))


def test_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"density has shape \(3, 3\); the femur at 1.0 mm"):
        morphometry.morphometry(np.zeros((3, 3)), Femur(), 1.0)


@pytest.mark.parametrize("angle", [120.0, 140.0])
def test_the_greater_trochanter_holds_its_tip_and_the_neck_keeps_off_it(angle):
    femur = Femur(neck_shaft_angle=angle)
    found = morphometry.regions(femur, 0.5)
    tip = np.array(femur.landmarks().greater_trochanter)
    rows, cols = np.nonzero(found["greater_trochanter"] | found["neck"])
    points = np.column_stack([(cols + 0.5) * 0.5, BOX[0] - (rows + 0.5) * 0.5])
    nearest = np.argmin(np.hypot(*(points - tip).T))
    assert found["greater_trochanter"][rows[nearest], cols[nearest]]
    # The neck keeps off the trochanter: its nearest pixel is a quarter of the waist away.
    in_neck = found["neck"][rows, cols]
    assert np.hypot(*(points[in_neck] - tip).T).min() > femur.neck_width / 4
