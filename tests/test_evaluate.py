"""Evaluation: apparent stiffness by homogenization, the ROI tables, image measures, figures and
`femsr evaluate`."""

import csv
import io
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi

from femsr import cli, evaluate, fem
from femsr.evaluate import (
    apparent_stiffness,
    bone_volume_fraction,
    bone_volume_fraction_error,
    dice,
    psnr,
    roi_table,
    ssim,
)
from femsr.femur import Femur, grid_shape
from femsr.io import FemurImage, save_femur, write_image


def plane_stress(E, nu):
    return E / (1 - nu**2) * np.array([[1, nu, 0], [nu, 1, 0], [0, 0, (1 - nu) / 2]])


# ---------------------------------------------------------------------------------------------
# Apparent stiffness


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (12, 12)])
@pytest.mark.parametrize("backend", ["cpp", "python"])
def test_homogeneous_region_gives_the_plane_stress_matrix(shape, backend):
    s = apparent_stiffness(np.full(shape, 0.8), E0=15e3, nu=0.3, h=0.05, backend=backend)
    E = fem.youngs_modulus(np.array(0.8), E0=15e3)
    np.testing.assert_allclose(s.matrix, plane_stress(E, 0.3), rtol=1e-12, atol=1e-9)
    assert (s.E_x, s.E_y, s.E_xy) == (s.matrix[0, 0], s.matrix[1, 1], s.matrix[2, 2])


def test_stiffness_does_not_depend_on_pixel_size_or_thickness():
    density = np.random.default_rng(1).random((9, 11))
    a = apparent_stiffness(density, E0=1.0, h=1.0)
    b = apparent_stiffness(density, E0=1.0, h=0.05, thickness=3.0)
    np.testing.assert_allclose(a.matrix, b.matrix, rtol=1e-9, atol=1e-15)


def test_void_region_has_the_stiffness_of_the_void_modulus():
    s = apparent_stiffness(np.zeros((6, 6)), E0=10.0, nu=0.3, Emin=1e-6, h=0.5)
    np.testing.assert_allclose(s.matrix, plane_stress(1e-6, 0.3), rtol=1e-10, atol=1e-20)


def test_layers_along_x_give_the_voigt_value_along_and_near_reuss_across():
    # With nu = 0 the affine field is in equilibrium in every layer, so along the layers the
    # apparent modulus is exactly the Voigt (arithmetic) mean; across it lies between the Reuss
    # (harmonic) mean of an infinite laminate and Voigt, near Reuss.
    density = np.ones((40, 40))
    density[2::4] = density[3::4] = 0.1
    s = apparent_stiffness(density, E0=1.0, nu=0.0, penal=1.0, Emin=1e-3, h=1.0)
    layers = fem.youngs_modulus(density[:, 0], E0=1.0, penal=1.0, Emin=1e-3)
    voigt, reuss = layers.mean(), 1.0 / np.mean(1.0 / layers)
    assert s.E_x == pytest.approx(voigt, rel=1e-12)
    assert reuss < s.E_y < 1.1 * reuss < voigt


def test_rotating_the_region_swaps_x_and_y():
    density = np.random.default_rng(2).random((10, 14))
    s = apparent_stiffness(density, E0=1.0, h=1.0)
    turned = apparent_stiffness(np.rot90(density), E0=1.0, h=1.0)
    assert turned.E_x == pytest.approx(s.E_y, rel=1e-10)
    assert turned.E_y == pytest.approx(s.E_x, rel=1e-10)
    assert turned.E_xy == pytest.approx(s.E_xy, rel=1e-10)
    assert s.E_x != pytest.approx(s.E_y, rel=1e-3)  # the test means something
    half_turn = apparent_stiffness(np.rot90(density, 2), E0=1.0, h=1.0)
    np.testing.assert_allclose(half_turn.matrix, s.matrix, rtol=1e-10, atol=1e-14)


def test_cpp_and_python_backends_agree_on_a_crisp_random_design():
    density = (np.random.default_rng(3).random((16, 13)) > 0.5).astype(float)
    cpp = apparent_stiffness(density, E0=15e3, h=0.05, backend="cpp")
    python = apparent_stiffness(density, E0=15e3, h=0.05, backend="python")
    np.testing.assert_allclose(cpp.matrix, python.matrix, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(cpp.matrix, cpp.matrix.T)
    assert np.all(np.linalg.eigvalsh(cpp.matrix) > 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"density": np.full((3, 3), np.nan)}, ValueError, "density contains NaN"),
        ({"density": np.full((3, 3), 1.5)}, ValueError, r"density must lie in \[0, 1\]"),
        ({"density": np.ones(3)}, ValueError, "density must be 2-D"),
        ({"density": [[1.0]]}, TypeError, "density must be a numpy array"),
        ({"Emin": 0.0}, ValueError, "Emin must be positive for homogenization"),
        ({"h": -1.0}, ValueError, "h must be a positive, finite pixel side"),
        ({"h": math.inf}, ValueError, "h must be a positive, finite pixel side"),
        ({"E0": -1.0}, ValueError, "E0 must be positive"),
        ({"nu": 0.5}, ValueError, r"nu must lie in \(-1, 0.5\)"),
        ({"backend": "fortran"}, ValueError, "backend must be one of"),
    ],
)
def test_bad_input_is_refused(kwargs, error, match):
    arguments = {"density": np.ones((3, 3)), "E0": 1.0, "h": 1.0, **kwargs}
    with pytest.raises(error, match=match):
        apparent_stiffness(**arguments)


def test_component_names_are_checked():
    with pytest.raises(ValueError, match="component must be one of"):
        apparent_stiffness(np.ones((2, 2)), E0=1.0, h=1.0).component("E_z")


# ---------------------------------------------------------------------------------------------
# Tables


def test_roi_table_reports_signed_errors_per_region_and_component():
    reference = np.full((12, 12), 0.5)
    reconstruction = reference.copy()
    reconstruction[:6, :6] = 1.0  # head: 8x stiffer, neck: 1/8
    reconstruction[6:, 6:] = 0.25
    rois = {"head": np.s_[0:6, 0:6], "neck": (slice(6, 12), slice(6, None))}
    table = roi_table(reference, reconstruction, rois, E0=1.0, Emin=1e-9, h=0.05)
    assert [(r["region"], r["stiffness"]) for r in table.rows] == [
        ("Femoral head", "E_x"),
        ("Femoral head", "E_y"),
        ("Femoral head", "E_xy"),
        ("Femoral neck", "E_x"),
        ("Femoral neck", "E_y"),
        ("Femoral neck", "E_xy"),
    ]
    head, neck = table.rows[0], table.rows[3]
    modulus = fem.youngs_modulus(np.array([0.5, 1.0, 0.25]), E0=1.0, Emin=1e-9)
    assert head["error_percent"] == pytest.approx(100 * (modulus[1] / modulus[0] - 1), rel=1e-9)
    assert neck["error_percent"] == pytest.approx(100 * (modulus[2] / modulus[0] - 1), rel=1e-9)
    assert head["error_percent"] > 0 > neck["error_percent"]
    assert head["reference"] == pytest.approx(plane_stress(modulus[0], 0.3)[0, 0])


def test_roi_table_gives_no_error_where_the_reference_roi_has_no_bone():
    reference = np.zeros((12, 24))
    reference[:, :3] = 1.0  # a strut in the head ROI; the neck ROI is marrow
    reconstruction = np.clip(reference + 0.05, 0, 1)  # gray remnants: huge relative change
    rois = {"head": np.s_[:, :12], "neck": np.s_[:, 12:]}
    table = roi_table(reference, reconstruction, rois, E0=1.0, h=0.05)
    head, neck = table.rows[:3], table.rows[3:]
    assert all(np.isfinite(row["error_percent"]) for row in head)
    assert all(np.isnan(row["error_percent"]) for row in neck)
    assert all(row["reconstruction"] > 100 * row["reference"] for row in neck)


def test_roi_table_reads_the_reconstruction_where_its_own_rois_lie():
    """A reconstruction on another grid (a scan's, shifted and larger) scored at its own ROIs
    gives the table of the same reconstruction on the reference's grid."""
    rng = np.random.default_rng(2)
    reference = rng.random((16, 16))
    reconstruction = np.clip(reference + 0.2 * rng.standard_normal((16, 16)), 0, 1)
    rois = {"head": np.s_[0:8, 0:8], "neck": np.s_[8:16, 4:12]}
    same = roi_table(reference, reconstruction, rois, E0=1.0, h=0.05)
    moved = np.zeros((20, 25))
    moved[3:19, 5:21] = reconstruction
    there = {"head": np.s_[3:11, 5:13], "neck": np.s_[11:19, 9:17]}
    table = roi_table(reference, moved, rois, reconstruction_rois=there, E0=1.0, h=0.05)
    assert table.rows == same.rows
    with pytest.raises(ValueError, match="must have the same shape"):
        roi_table(reference, moved, rois, E0=1.0, h=0.05)
    with pytest.raises(ValueError, match="must name the ROIs \\['head', 'neck'\\] at their"):
        roi_table(
            reference, moved, rois, reconstruction_rois={"head": there["head"]}, E0=1.0, h=0.05
        )
    smaller = {**there, "neck": np.s_[11:18, 9:17]}
    with pytest.raises(ValueError, match="at \\[\\(8, 8\\), \\(7, 8\\)\\]"):
        roi_table(reference, moved, rois, reconstruction_rois=smaller, E0=1.0, h=0.05)


def test_tables_render_as_markdown_and_csv():
    reference = np.ones((12, 12))
    table = roi_table(reference, reference * 0.5, {"mine": np.s_[2:8, 2:8]}, E0=1.0, h=1.0)
    markdown = table.to_markdown()
    lines = markdown.splitlines()
    assert lines[0] == "| region | stiffness | reference | reconstruction | error_percent |"
    assert lines[2].startswith("| mine | E_x | 1.099 | 0.1374 | -87.5 |")
    assert len(lines) == 2 + 3
    rows = list(csv.DictReader(io.StringIO(table.to_csv())))
    assert [row["stiffness"] for row in rows] == ["E_x", "E_y", "E_xy"]
    assert float(rows[0]["error_percent"]) == pytest.approx(table.rows[0]["error_percent"])


def test_image_table_measures_each_roi_and_the_femur():
    rng = np.random.default_rng(4)
    reference = (rng.random((24, 24)) > 0.5).astype(float)
    reconstruction = reference.copy()
    reconstruction[:12, :12] = 0.0
    mask = np.zeros((24, 24), bool)
    mask[12:] = True
    table = evaluate.image_table(
        reference, reconstruction, {"head": np.s_[0:12, 0:12], "neck": np.s_[12:, 12:]}, mask=mask
    )
    head, neck, whole = table.rows
    assert head["bvtv_reconstruction"] == 0.0 and head["bvtv_error_percent"] == -100.0
    assert head["dice"] == 0.0 and head["ssim"] < 0.5
    assert head["mass_error_percent"] == -100.0 and neck["mass_error_percent"] == 0.0
    half = evaluate.image_table(reference, 0.5 * reference, {"a": np.s_[0:12, 0:12]})
    assert half.rows[0]["mass_error_percent"] == pytest.approx(-50.0)
    assert half.rows[0]["bvtv_error_percent"] == -100.0  # 0.5 is no bone: not above the threshold
    assert (neck["ssim"], neck["psnr_db"], neck["dice"]) == (1.0, math.inf, 1.0)
    assert whole["region"] == "Whole femur" and whole["dice"] == 1.0  # the change is off the mask
    assert whole["bvtv_reference"] == bone_volume_fraction(reference, mask=mask)
    # Tb.Th in the unit of pixel_size, of the whole image read inside each region.
    thick = evaluate.image_table(
        reference, reconstruction, {"a": np.s_[0:12, 0:12]}, pixel_size=0.05
    )
    thickness = evaluate.local_thickness(reference)[:12, :12] * 0.05
    assert thick.rows[0]["tbth_reference"] == pytest.approx(
        thickness[reference[:12, :12] > 0.5].mean()
    )
    assert thick.rows[0]["tbth_reconstruction"] == 0.0  # no bone left there
    assert neck["tbth_reference"] == neck["tbth_reconstruction"] > 0


@pytest.mark.parametrize(
    ("rois", "match"),
    [
        ({}, "rois must be a non-empty mapping"),
        ({"a": (slice(0, 4),)}, r"ROI 'a' must be \(row slice, column slice\)"),
        ({"a": (slice(0, 4), slice(0, 8, 2))}, r"ROI 'a' must be \(row slice, column slice\)"),
        ({"a": (slice(0, 4), slice(4, 20))}, "ROI 'a' .* is empty or outside the image"),
        ({"a": (slice(3, 3), slice(0, 4))}, "ROI 'a' .* is empty or outside the image"),
    ],
)
def test_bad_rois_are_refused(rois, match):
    with pytest.raises(ValueError, match=match):
        roi_table(np.ones((12, 12)), np.ones((12, 12)), rois, E0=1.0, h=1.0)


def test_images_of_different_shapes_or_values_are_refused():
    rois = {"a": np.s_[0:4, 0:4]}
    with pytest.raises(ValueError, match="must have the same shape"):
        roi_table(np.ones((12, 12)), np.ones((12, 11)), rois, E0=1.0, h=1.0)
    with pytest.raises(ValueError, match="reconstruction contains NaN"):
        evaluate.image_table(np.ones((12, 12)), np.full((12, 12), np.nan), rois)
    with pytest.raises(ValueError, match="h must be a positive"):
        roi_table(np.ones((12, 12)), np.ones((12, 12)), rois, E0=1.0, h=0.0)


# ---------------------------------------------------------------------------------------------
# Image measures


def test_ssim_of_identical_images_is_one_and_of_constants_is_the_luminance_term():
    a = np.random.default_rng(5).random((20, 30))
    assert ssim(a, a) == 1.0
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert ssim(np.full((16, 16), 0.2), np.full((16, 16), 0.6)) == pytest.approx(expected)
    noisy = np.clip(a + np.random.default_rng(6).normal(0, 0.2, a.shape), 0, 1)
    assert 0 < ssim(a, noisy) < 0.9
    assert ssim(a, noisy) == pytest.approx(ssim(noisy, a), rel=1e-12)
    assert ssim(255 * a, 255 * noisy, data_range=255) == pytest.approx(ssim(a, noisy))


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(9)
    a = rng.random((3, 15, 23))
    b = np.clip(a + rng.normal(0, 0.3, a.shape), 0, 1)
    b[1] = 1 - a[1]  # anti-correlated: SSIM < 0
    expected = [
        metrics.structural_similarity(
            a[k], b[k], data_range=1.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )
        for k in range(3)
    ]  # fmt: skip
    np.testing.assert_allclose(ssim(a, b), expected, rtol=1e-10)
    assert ssim(a[0], b[0]) == pytest.approx(expected[0], rel=1e-10)
    assert ssim(a[1], b[1]) < 0 < ssim(a[0], b[0]) < 1


def test_psnr_known_values():
    zeros = np.zeros((5, 5))
    assert psnr(zeros, np.full((5, 5), 0.1)) == pytest.approx(20.0)
    assert psnr(zeros, np.full((5, 5), 0.01)) == pytest.approx(40.0)
    assert psnr(zeros.astype(np.uint8), np.full((5, 5), 255, np.uint8), data_range=255) == 0.0
    assert psnr(zeros, zeros) == math.inf


def test_bone_volume_fraction_and_its_error_on_hand_made_cases():
    density = np.array([[0.0, 0.5], [0.51, 1.0]])  # 0.5 itself is not bone
    assert bone_volume_fraction(density) == 0.5
    assert bone_volume_fraction(density, threshold=0.0) == 0.75
    mask = np.array([[False, False], [True, True]])
    assert bone_volume_fraction(density, mask=mask) == 1.0
    assert bone_volume_fraction_error(density, np.ones((2, 2))) == 100.0
    assert bone_volume_fraction_error(density, np.zeros((2, 2))) == -100.0


def brute_force_local_thickness(bone):
    """Every disc of bone pixels, by enumeration: about each pixel and for each integer radius
    R, the pixels closer than R, kept if all are bone; a pixel's thickness is the widest
    (2R - 1) of the discs that cover it."""
    ny, nx = bone.shape
    rows, cols = np.mgrid[:ny, :nx]
    thickness = np.zeros(bone.shape)
    for i, j in zip(*np.nonzero(bone), strict=True):
        for radius in range(1, max(ny, nx)):
            disc = (rows - i) ** 2 + (cols - j) ** 2 < radius**2
            inside = bone[disc].all()
            # A disc reaching past the image edge would need pixels outside it.
            reaches_out = i - radius + 1 < 0 or j - radius + 1 < 0
            reaches_out |= i + radius - 1 >= ny or j + radius - 1 >= nx
            if not inside or reaches_out:
                break
            thickness[disc] = np.maximum(thickness[disc], 2 * radius - 1)
    return thickness


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_local_thickness_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    density = ndi.gaussian_filter(rng.standard_normal((30, 34)), 2.0)
    density = (density - density.min()) / np.ptp(density)
    bone = density > 0.5
    expected = brute_force_local_thickness(bone)
    np.testing.assert_array_equal(evaluate.local_thickness(density), expected)


@pytest.mark.parametrize("width", [1, 3, 6, 9])
def test_trabecular_thickness_of_bars_and_discs(width):
    bars = np.zeros((60, 60))
    bars[:, 5 : 5 + width] = 1.0
    bars[20 : 20 + width, 30:] = 1.0  # a crossing bar of the same width
    expected = width if width % 2 else width - 1  # discs are an odd number of pixels across
    # Where the bars meet, discs grow wider than the bars; away from it the bar's width.
    thickness = evaluate.local_thickness(bars)
    assert thickness[50, 5 : 5 + width].tolist() == [expected] * width
    assert thickness[20 + width // 2, 55] == expected
    assert evaluate.trabecular_thickness(bars, pixel_size=0.05) == pytest.approx(
        0.05 * expected, rel=0.05
    )
    rows, cols = np.mgrid[:41, :41]
    disc = ((rows - 20) ** 2 + (cols - 20) ** 2 < 15**2).astype(float)
    assert evaluate.trabecular_thickness(disc) == 29.0
    assert evaluate.trabecular_thickness(np.zeros((5, 5))) == 0.0
    mask = np.zeros((60, 60), bool)
    mask[:, 40:] = True
    assert evaluate.trabecular_thickness(bars, mask=mask) == pytest.approx(expected, rel=0.05)


def test_dice_on_hand_made_cases():
    a = np.array([[1.0, 1.0, 0.0, 0.0]])
    assert dice(a, a) == 1.0
    assert dice(a, 1 - a) == 0.0
    assert dice(a, np.array([[1.0, 0.0, 0.0, 0.0]])) == pytest.approx(2 / 3)
    assert dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    mask = np.array([[True, False, True, True]])
    assert dice(a, np.array([[1.0, 0.0, 0.0, 0.0]]), mask=mask) == 1.0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ssim(np.ones((10, 12)), np.ones((10, 12))), ValueError, "at least 11x11"),
        (lambda: ssim(np.ones((12, 12)), np.ones((12, 13))), ValueError, "same shape"),
        (lambda: ssim(np.ones(12), np.ones(12)), ValueError, r"a must be a non-empty stack"),
        (lambda: ssim(np.ones((12, 12)), np.ones((12, 12)), data_range=0), ValueError, "data_"),
        (lambda: psnr(np.ones((2, 2)), np.ones((2, 2)), data_range=-1), ValueError, "data_"),
        (lambda: psnr(np.ones(4), np.ones(4)), ValueError, "a must be a non-empty 2-D image"),
        (lambda: psnr(np.ones((2, 2)), "b"), TypeError, "b must be a numpy array"),
        (lambda: dice(np.ones((2, 2)), np.ones((2, 2), bool)), TypeError, "b must hold real"),
        (lambda: dice(np.ones((2, 2)), np.full((2, 2), np.inf)), ValueError, "b contains NaN"),
        (lambda: dice(np.ones((2, 2)), np.ones((2, 2)), 1.0), ValueError, r"threshold must lie"),
        (
            lambda: bone_volume_fraction(np.ones((2, 2)), mask=np.ones((2, 2))),
            TypeError,
            "mask must be a bool numpy array",
        ),
        (
            lambda: bone_volume_fraction(np.ones((2, 2)), mask=np.ones((2, 3), bool)),
            ValueError,
            r"mask must have the image shape \(2, 2\)",
        ),
        (
            lambda: bone_volume_fraction(np.ones((2, 2)), mask=np.zeros((2, 2), bool)),
            ValueError,
            "mask is empty",
        ),
        (
            lambda: bone_volume_fraction_error(np.zeros((2, 2)), np.ones((2, 2))),
            ValueError,
            "the reference has no bone",
        ),
    ],
)
def test_bad_image_input_is_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Figures


def png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_figures_are_written_as_png(tmp_path):
    rng = np.random.default_rng(7)
    reference = rng.random((30, 40))
    rois = {"head": np.s_[0:10, 0:10], "neck": np.s_[10:20, 20:30]}
    evaluate.roi_figure(tmp_path / "two.png", reference, reference, rois, dpi=50)
    evaluate.roi_figure(
        tmp_path / "three.png", reference, reference, rois, without_quilting=reference, dpi=50
    )
    evaluate.femur_figure(tmp_path / "femur.png", reference, rois, pixel_size=0.5, title="t")
    two, three = png_size(tmp_path / "two.png"), png_size(tmp_path / "three.png")
    assert three[0] > two[0] and three[1] == two[1]  # a third column
    png_size(tmp_path / "femur.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["femur.png", "three.png", "two.png"]
    with pytest.raises(ValueError, match="same shape"):
        evaluate.roi_figure(
            tmp_path / "x.png", reference, reference, rois, without_quilting=reference[1:]
        )
    assert not (tmp_path / "x.png").exists()


def test_importing_evaluate_does_not_import_matplotlib():
    code = "import sys, femsr, femsr.evaluate; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


# ---------------------------------------------------------------------------------------------
# femsr evaluate

PIXEL = 0.5  # the femur's ROIs are 20x20 px at 0.5 mm: fast


@pytest.fixture(scope="module")
def femur_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("femurs")
    femur = Femur()
    mask = femur.mask(PIXEL)
    rng = np.random.default_rng(8)
    reference = np.where(mask, (rng.random(mask.shape) > 0.4).astype(float), 0.0)
    reconstruction = np.where(mask, 0.5, 0.0)
    save_femur(folder / "reference.npz", FemurImage(reference, PIXEL, femur))
    save_femur(folder / "reconstruction.npz", FemurImage(reconstruction, PIXEL, femur))
    np.save(folder / "reconstruction.npy", reconstruction)
    np.save(folder / "reference.npy", reference)
    return folder


def test_cli_evaluate_writes_tables_and_figures(femur_files, tmp_path, capsys):
    out = tmp_path / "eval"
    arguments = [str(femur_files / "reference.npz"), str(femur_files / "reconstruction.npz")]
    assert cli.main(["evaluate", *arguments, "--output", str(out)]) == 0
    assert "Femoral neck" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    expected = ["femur.png", "femur_reconstruction.png", "images.csv", "rois.png", "table.csv"]
    assert names == [*expected, "table.md"]
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert len(rows) == 9 and {row["region"] for row in rows} == {
        "Femoral head",
        "Femoral neck",
        "Intertrochanteric region",
    }
    window = Femur().rois(PIXEL)["head"]
    density = np.load(femur_files / "reference.npy")[window]
    expected = apparent_stiffness(np.round(density * 65535) / 65535, E0=15e3, h=PIXEL).E_x
    assert float(rows[0]["reference"]) == pytest.approx(expected, rel=1e-9)
    assert "Apparent stiffness" in (out / "table.md").read_text()


def test_cli_evaluate_reads_npy_with_a_pixel_size(femur_files, tmp_path, capsys):
    out = tmp_path / "eval"
    arguments = [
        "evaluate",
        str(femur_files / "reference.npy"),
        str(femur_files / "reconstruction.npy"),
        "--pixel-size",
        str(PIXEL),
        "--without-quilting",
        str(femur_files / "reconstruction.npy"),
        "--output",
        str(out),
    ]
    assert cli.main(arguments) == 0
    assert (out / "rois.png").is_file()


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        (["reference.npy", "reconstruction.npy"], "needs --pixel-size"),
        (["reference.npz", "missing.npz"], "does not exist"),
        (["reference.npz", "reconstruction.npy", "--pixel-size", "1.0"], "pixel size"),
        (["reference.npy", "reconstruction.npy", "--pixel-size", "0.25"], "shape"),
    ],
)
def test_cli_evaluate_errors(femur_files, arguments, match, capsys):
    paths = [str(femur_files / a) if a.endswith((".npy", ".npz")) else a for a in arguments]
    assert cli.main(["evaluate", *paths]) == 2
    error = capsys.readouterr().err
    assert error.startswith("femsr evaluate: error:") and match in error


def test_cli_evaluate_takes_any_image_format_and_cuts_a_reconstructions_overhang(tmp_path):
    """A reconstruction of the 500 µm grid overhangs the femur's box by under one LR pixel at
    the right and bottom: evaluate cuts it off; one pixel more is refused."""
    pixel = 0.25  # two pixels per LR pixel
    femur = Femur()
    shape = grid_shape(pixel)
    reference = np.where(femur.mask(pixel), 0.8, 0.0)
    save_femur(tmp_path / "reference.npz", FemurImage(reference, pixel, femur))
    overhanging = np.zeros((shape[0] + 1, shape[1] + 1))
    overhanging[: shape[0], : shape[1]] = reference
    write_image(tmp_path / "recon.png", overhanging)
    out = tmp_path / "eval"
    argv = ["evaluate", str(tmp_path / "reference.npz"), str(tmp_path / "recon.png")]
    assert cli.main([*argv, "--output", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert all(abs(float(row["error_percent"])) < 1e-3 for row in rows)  # the same image
    write_image(tmp_path / "recon.png", np.zeros((shape[0] + 2, shape[1])))
    assert cli.main([*argv, "--output", str(out)]) == 2
