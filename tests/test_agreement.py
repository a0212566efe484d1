"""Agreement over femurs: per-ROI measures, R² and Bland-Altman against direct computation."""

import math

import numpy as np
import pytest
from scipy import stats

from femsr import agreement, evaluate, morphometry
from femsr.femur import Femur

PIXEL = 0.2  # mm


def test_agreement_matches_its_definitions_on_random_pairs():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.1, 0.4, 12)
    reconstruction = 0.9 * reference + rng.normal(0.0, 0.02, 12)
    row = agreement.agreement(reference, reconstruction)
    difference = reconstruction - reference
    assert row["n"] == 12
    assert row["reference"] == pytest.approx(reference.mean())
    assert row["reconstruction"] == pytest.approx(reconstruction.mean())
    assert row["bias"] == pytest.approx(difference.mean()) and row["bias"] < 0
    half = 1.96 * difference.std(ddof=1)
    assert (row["loa_low"], row["loa_high"]) == pytest.approx(
        (difference.mean() - half, difference.mean() + half)
    )
    assert row["r2"] == pytest.approx(stats.pearsonr(reference, reconstruction).statistic ** 2)


def test_agreement_leaves_out_nan_pairs_and_says_what_it_cannot_tell():
    row = agreement.agreement([1.0, math.nan, 3.0], [2.0, 5.0, math.nan])
    assert row["n"] == 1 and row["bias"] == 1.0
    assert math.isnan(row["loa_low"]) and math.isnan(row["r2"])  # one pair: no spread
    constant = agreement.agreement([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert math.isnan(constant["r2"]) and constant["bias"] == 0.0
    with pytest.raises(ValueError, match="same length"):
        agreement.agreement([1.0, 2.0], [1.0])


def plates(shape, thickness, spacing):
    rows = np.arange(shape[0])[:, None] + np.zeros(shape[1], int)
    return rows % (thickness + spacing) < thickness  # running along x


@pytest.fixture(scope="module")
def measured():
    """A femur with solid cortex and plates along x; the reconstruction's plates are thicker."""
    femur = Femur()
    mask, cortex, canal = femur.compartments(PIXEL)
    trabecular = mask & ~cortex & ~canal
    images = [
        np.where(cortex | (trabecular & plates(mask.shape, t, 6 - t)), 1.0, 0.0) for t in (2, 3)
    ]
    return femur, images, agreement.roi_measures(*images, femur, PIXEL, E0=1.0)


def test_roi_measures_are_the_morphometry_and_stiffness_of_each_image(measured):
    femur, (reference, reconstruction), table = measured
    assert len(table.rows) == 3 * (len(agreement.MORPHOMETRY) + 3)
    by_key = {(r["region"], r["measure"]): r for r in table.rows}
    for image, side in ((reference, "reference"), (reconstruction, "reconstruction")):
        rows = {r["region"]: r for r in morphometry.morphometry(image, femur, PIXEL)}
        for roi, name in (("roi_head", "Femoral head"), ("roi_neck", "Femoral neck")):
            assert by_key[(name, "BV/TV")][side] == rows[roi]["bvtv"]
            assert by_key[(name, "Tb.Th (mm)")][side] == rows[roi]["tb_th_mean"]
    stiffness = evaluate.roi_table(reference, reconstruction, femur.rois(PIXEL), E0=1.0, h=PIXEL)
    for row in stiffness.rows:
        assert by_key[(row["region"], row["stiffness"])]["reference"] == row["reference"]
    # Thicker plates at the same period: more bone, thicker, stiffer.
    for region in evaluate.REGION_NAMES.values():
        for measure in ("BV/TV", "Tb.Th (mm)", "E_x"):
            row = by_key[(region, measure)]
            assert row["reconstruction"] > row["reference"]


def test_agreement_table_groups_femurs_by_region_and_measure(measured):
    _, _, table = measured
    rows = [dict(r, femur=k) for k in range(3) for r in table.rows]
    summary = agreement.agreement_table(rows)
    assert len(summary.rows) == len(table.rows)
    first = summary.rows[0]
    assert (first["region"], first["measure"], first["n"]) == ("Femoral head", "BV/TV", 3)
    # The same pair three times: the bias is the difference, the limits collapse onto it.
    difference = table.rows[0]["reconstruction"] - table.rows[0]["reference"]
    assert first["bias"] == pytest.approx(difference)
    assert first["loa_low"] == pytest.approx(difference) == pytest.approx(first["loa_high"])
