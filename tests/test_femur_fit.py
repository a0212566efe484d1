"""Landmarks and the fitted femur of a segmented femur mask, against the phantom's own."""

import numpy as np
import pytest

from femsr.femur import sample
from femsr.femur_fit import find_landmarks, fit_femur


def test_landmarks_found_in_a_mask_are_the_phantoms():
    for seed in range(8):
        femur = sample(seed)
        found = find_landmarks(femur.mask(0.5), 0.5)
        true = femur.landmarks()
        assert found["side"] == femur.side
        assert np.hypot(*np.subtract(found["head_centre"], true.head_centre)) < 0.5
        assert found["head_radius"] == pytest.approx(true.head_radius, abs=0.5)
        assert found["shaft_axis"][0][0] == pytest.approx(true.shaft_axis[0][0], abs=0.5)
        assert found["neck_shaft_angle"] == pytest.approx(true.neck_shaft_angle, abs=5.0)


def test_the_fitted_femur_covers_the_mask_and_places_the_rois():
    for seed in range(4):
        femur = sample(seed)
        mask = femur.mask(0.5)
        fitted = fit_femur(mask, 0.5)
        outline = fitted.mask(0.5)
        assert 2 * (outline & mask).sum() / (outline.sum() + mask.sum()) > 0.985
        assert fitted.side == femur.side
        true_angle = femur.landmarks().neck_shaft_angle
        assert fitted.landmarks().neck_shaft_angle == pytest.approx(true_angle, abs=1.5)
        for name, (rows, cols) in femur.rois(0.5).items():
            found = fitted.rois(0.5)[name]
            assert abs(found[0].start - rows.start) + abs(found[1].start - cols.start) <= 6
    with pytest.raises(ValueError, match=r"femur box at 0\.5 mm is \(208, 189\)"):
        fit_femur(np.ones((10, 10), bool), 0.5)
