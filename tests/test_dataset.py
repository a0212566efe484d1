"""Training data: downscaling, displacement channels, normalization, patch grid, augmentation
against the FE, storage with resume, the torch Dataset and a tiny training run on it."""

import json
import logging
import pickle
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest
from scipy import ndimage

from femsr import dataset, encoding, fem
from femsr.femur import Femur
from femsr.io import FemurImage, save_femur

HR_PIXEL, FACTOR, PATCH, STRIDE = 0.4, 5, 4, 3  # LR 2 mm: the femur on a 52 x 48 grid


def femur_density(seed, pixel=HR_PIXEL):
    """Struts-like HR density inside the phantom: smoothed noise, thresholded softly."""
    mask = Femur().mask(pixel)
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 2.0)
    return np.where(mask, np.clip(0.5 + 4 * noise, 0.05, 1.0), 0.0)


def femur_image(name, seed, split="train"):
    meta = {"name": name, "split": split, "volfrac": 0.4}
    return FemurImage(femur_density(seed), HR_PIXEL, Femur(), meta)


def build(out, images, **options):
    settings = {"patch": PATCH, "stride": STRIDE, "factor": FACTOR, "progress": False}
    return dataset.build_dataset(images, out, **{**settings, **options})


def spy_on_writes(monkeypatch):
    """The names of the pair files written from now on (in this process).

    A spy on the writer, not a file's modification time: that may not tick between two writes
    on a file system of coarse timestamps, and a rewrite would pass unseen.
    """
    written = []
    write = dataset._write_npy

    def spy(path, *args, **kwargs):
        written.append(path.name)
        return write(path, *args, **kwargs)

    monkeypatch.setattr(dataset, "_write_npy", spy)
    return written


# ---------------------------------------------------------------------------------------------
# Downscaling and channels


def test_downscale_conserves_mass_and_pads_bottom_right_with_void():
    rng = np.random.default_rng(0)
    hr = rng.random((23, 17))
    lr = dataset.downscale(hr, factor=5)
    assert lr.shape == (5, 4)
    assert lr.sum() * 25 == pytest.approx(hr.sum(), rel=1e-13)
    np.testing.assert_allclose(lr[:4, :3], hr[:20, :15].reshape(4, 5, 3, 5).mean(axis=(1, 3)))
    # The last LR row holds 3 HR rows and 2 void rows; the last column 2 HR columns.
    assert lr[4, 0] == pytest.approx(hr[20:, :5].sum() / 25)
    assert lr[0, 3] == pytest.approx(hr[:5, 15:].sum() / 25)
    assert dataset.downscale(np.ones((10, 10)), 10).tolist() == [[1.0]]


def test_a_sharp_quiet_scanner_reads_a_uniform_bone_exactly_and_its_noise_as_stated():
    from femsr.scan import MARROW_HU, TISSUE_HU

    hr = np.zeros((100, 80))
    hr[10:90, 10:70] = 0.6  # 8 x 6 LR pixels of uniform bone, one of void around
    lr = dataset.scanner_lr(hr, 0.05, 10, dataset.Scanner(fwhm=0.0))
    assert lr.shape == dataset.downscale(hr, 10).shape == (10, 8)
    np.testing.assert_allclose(lr[2:-2, 2:-2], 0.6, atol=1e-12)  # HU there and back
    assert (lr[0] == 0).all() and (lr[:, 0] == 0).all()  # no bone in the block mean: void
    scanner = dataset.Scanner(fwhm=0.0, noise=90.0)
    noisy = dataset.scanner_lr(hr, 0.05, 10, scanner, seed=1)
    residual = (noisy - lr)[1:-1, 1:-1]
    # 48 samples of sd 90 / 1800 = 0.05: the sample sd lies within 0.03-0.07 (chi-square).
    assert 0.03 < residual.std() < 0.07
    assert 90.0 / (TISSUE_HU - MARROW_HU) == pytest.approx(0.05)
    assert np.array_equal(noisy, dataset.scanner_lr(hr, 0.05, 10, scanner, seed=1))
    assert not np.array_equal(noisy, dataset.scanner_lr(hr, 0.05, 10, scanner, seed=2))


def test_a_wider_point_spread_blurs_the_bone_edge_more():
    hr = np.zeros((200, 200))
    hr[:, :100] = 1.0  # a straight edge down the middle
    profiles = [
        dataset.scanner_lr(hr, 0.05, 10, dataset.Scanner(fwhm=fwhm))[10, :10]
        for fwhm in (0.0, 0.5, 1.0, 2.0)
    ]
    edge = [profile[9] for profile in profiles]  # the last bone pixel, next to the void
    assert edge[0] > edge[1] > edge[2] > edge[3] > 0.3
    for profile in profiles:  # far from the edge the bone reads full density
        assert profile[0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="scanner fwhm must be a finite number >= 0, got -1"):
        dataset.Scanner(fwhm=-1)


def test_a_deblurring_scanner_reads_struts_nearer_their_block_means_than_a_blurring_one():
    hr = np.zeros((300, 300))
    for left in range(23, 280, 25):  # struts 0.4 mm wide, 1.25 mm apart, behind 0.7 mm of blur
        hr[20:280, left : left + 8] = 1.0
    block = dataset.downscale(hr, 10)
    inner = (slice(4, -4), slice(4, -4))  # clear of the void's edge
    blurred = dataset.scanner_lr(hr, 0.05, 10, dataset.Scanner(fwhm=0.7))
    sharp = dataset.scanner_lr(hr, 0.05, 10, dataset.Scanner(fwhm=0.7, deblur=True))
    error_blurred = np.abs(blurred - block)[inner].mean()
    error_sharp = np.abs(sharp - block)[inner].mean()
    # 0.33 measured: the detector pixel's own averaging is not undone
    assert error_sharp < 0.5 * error_blurred
    with pytest.raises(ValueError, match="deblurs only a point-spread function of fwhm > 0"):
        dataset.Scanner(fwhm=0.0, deblur=True)


def test_displacement_channels_of_a_linear_field_are_its_values_at_pixel_centres():
    ny, nx, h = 4, 6, 0.5
    i, j = np.mgrid[0 : ny + 1, 0 : nx + 1]
    x, y = j * h, -i * h
    u = np.zeros((2, ny + 1, nx + 1, 2))
    u[0, ..., 0], u[0, ..., 1] = 1 + 2 * x - y, 3 * y
    u[1, ..., 0], u[1, ..., 1] = -x, 0.5 + x + y
    r, c = np.mgrid[0:ny, 0:nx]
    xc, yc = (c + 0.5) * h, -(r + 0.5) * h
    expected = [1 + 2 * xc - yc, 3 * yc, -xc, 0.5 + xc + yc]
    np.testing.assert_allclose(encoding.displacement_channels(u), expected, atol=1e-14)
    mask = np.zeros((ny, nx), bool)
    mask[1:3, 2:5] = True
    masked = encoding.displacement_channels(u, mask)
    np.testing.assert_allclose(masked, np.array(expected) * mask, atol=1e-14)
    inputs = encoding.lr_inputs(np.full((ny, nx), 0.25), u, mask)
    assert inputs.dtype == np.float32 and inputs.shape == (5, ny, nx)
    assert (inputs[0] == 0.25).all()


# ---------------------------------------------------------------------------------------------
# Normalization


@pytest.fixture(scope="module")
def lr_problem():
    """The phantom's LR problem, its density and displacements (direct solve, tight)."""
    lr = dataset.downscale(femur_density(1), FACTOR)
    problem = Femur().problem(HR_PIXEL * FACTOR)
    options = {"mask": problem.mask, "h": problem.pixel_size, "thickness": problem.thickness}
    u = fem.solve(lr, problem.forces, problem.fixed, E0=15e3, Emin=15.0, method="direct", **options)
    return lr, problem, u, options


def test_normalized_patches_are_centred_and_scaled_to_one(lr_problem):
    lr, problem, u, _ = lr_problem
    grid = encoding.patch_grid(lr.shape, PATCH, STRIDE)
    corners = grid[encoding.window_mask(problem.mask, grid, PATCH)]
    x = encoding.lr_patches(lr, u, corners, patch=PATCH, mask=problem.mask)
    inside = encoding.extract_patches(problem.mask[None], corners, PATCH)[:, 0]
    assert x.dtype == np.float32 and x.shape == (len(corners), 7, PATCH, PATCH)
    lr_windows = encoding.extract_patches(lr[None].astype(np.float32), corners, PATCH)
    np.testing.assert_array_equal(x[:, 0], lr_windows[:, 0])
    assert not x[:, 1:][np.broadcast_to(~inside[:, None], x[:, 1:].shape)].any()
    sums = (x[:, 1:] * inside[:, None]).sum(axis=(2, 3))
    np.testing.assert_allclose(sums, 0.0, atol=1e-5)
    lengths = np.sqrt(x[:, 1::2] ** 2 + x[:, 2::2] ** 2).max(axis=(1, 2, 3))
    moving = inside.sum(axis=(1, 2)) > 1
    np.testing.assert_allclose(lengths[moving], 1.0, rtol=1e-6)


def test_normalization_ignores_rigid_translation_and_load_level(lr_problem):
    lr, problem, u, options = lr_problem
    corners = encoding.patch_grid(lr.shape, PATCH, STRIDE)
    corners = corners[encoding.window_mask(problem.mask, corners, PATCH)]

    def inputs(displacement):
        return encoding.lr_patches(lr, displacement, corners, patch=PATCH, mask=problem.mask)

    reference = inputs(u)
    nodes = fem._node_mask(problem.mask)[None, :, :, None]
    shifted = u + nodes * np.array([[3.0, -2.0], [0.1, 5.0], [-7.0, 0.0]])[:, None, None, :]
    np.testing.assert_allclose(inputs(shifted), reference, atol=2e-5)
    # Loads 4x larger on a tissue 3x stiffer: another displacement level, the same input.
    heavier = fem.solve(
        lr, 4 * problem.forces, problem.fixed, E0=45e3, Emin=45.0, method="direct", **options
    )
    assert np.abs(heavier).max() == pytest.approx(4 / 3 * np.abs(u).max())
    np.testing.assert_allclose(inputs(heavier), reference, atol=1e-5)


def test_translation_only_patch_gets_zero_displacement():
    p = np.zeros((1, 3, 2, 2))
    p[0, 1], p[0, 2] = 0.1, 0.3  # one and the same vector at every pixel
    assert not encoding.normalize_displacement(p)[0, 1:].any()


# ---------------------------------------------------------------------------------------------
# Patch grid


@pytest.mark.parametrize(
    ("shape", "patch", "stride"),
    [((208, 189), 12, 8), ((7, 30), 4, 3), ((3, 5), 12, 8), ((12, 13), 12, 12)],
)
def test_patch_grid_covers_every_pixel_on_the_quilting_canvas(shape, patch, stride):
    grid = encoding.patch_grid(shape, patch, stride)
    nr, nc, _ = grid.shape
    covered = np.zeros(((nr - 1) * stride + patch, (nc - 1) * stride + patch), int)
    for r, c in grid.reshape(-1, 2):
        covered[r : r + patch, c : c + patch] += 1
    assert covered.min() >= 1
    assert covered.shape[0] >= shape[0] and covered.shape[1] >= shape[1]
    # No window is wasted: dropping the last row or column of windows would leave pixels out.
    assert (nr - 2) * stride + patch < shape[0] or nr == 1
    assert (nc - 2) * stride + patch < shape[1] or nc == 1
    assert np.array_equal(grid[:, 0, 0], np.arange(nr) * stride)


def test_windows_outside_the_mask_are_skipped_as_brute_force_says():
    rng = np.random.default_rng(3)
    mask = ndimage.gaussian_filter(rng.random((30, 25)), 3) > 0.52
    grid = encoding.patch_grid(mask.shape, 6, 4)
    keep = encoding.window_mask(mask, grid, 6)
    brute = np.array([[mask[r : r + 6, c : c + 6].any() for r, c in row] for row in grid])
    assert np.array_equal(keep, brute) and 0 < keep.sum() < keep.size


def test_hr_windows_sit_under_their_lr_windows():
    hr = femur_density(2)
    lr = dataset.downscale(hr, FACTOR)
    corners = encoding.patch_grid(lr.shape, PATCH, STRIDE).reshape(-1, 2)
    lr_windows = encoding.extract_patches(lr[None], corners, PATCH)
    hr_windows = encoding.extract_patches(hr[None], corners * FACTOR, PATCH * FACTOR)
    means = hr_windows.reshape(-1, 1, PATCH, FACTOR, PATCH, FACTOR).mean(axis=(3, 5))
    np.testing.assert_allclose(means, lr_windows, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Augmentation against the FE


def nodal(u, k, flip):
    """Transform nodal vectors (..., ny+1, nx+1, 2) as encoding.transform does pixel channels."""
    cases = u.reshape(-1, *u.shape[-3:])
    channels = np.concatenate(
        [np.zeros((1, *u.shape[-3:-1])), cases.transpose(0, 3, 1, 2).reshape(-1, *u.shape[-3:-1])]
    )
    out = encoding.transform(channels, k, flip)[1:]
    return out.reshape(len(cases), 2, *out.shape[1:]).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_augmented_displacement_is_the_fe_solution_of_the_augmented_problem(k, flip):
    """An asymmetric plate, clamped on its left edge, loaded obliquely at two corners."""
    rng = np.random.default_rng(4)
    ny, nx = 5, 8
    density = rng.uniform(0.3, 1.0, (ny, nx))
    fixed = np.zeros((ny + 1, nx + 1, 2), bool)
    fixed[:, 0] = True
    fixed[2, 1, 0] = True
    forces = np.zeros((2, ny + 1, nx + 1, 2))
    forces[0, 0, -1] = [1.0, -2.0]
    forces[1, -1, -1] = [-0.5, 0.7]
    forces[1, 2, 4] = [0.3, 0.2]
    u = fem.solve(density, forces, fixed, E0=100.0, method="direct")

    turned_density = encoding.transform(density[None], k, flip)[0]
    turned_fixed = nodal(fixed.astype(float), k, flip)[0] != 0
    u_turned = fem.solve(
        turned_density, nodal(forces, k, flip), turned_fixed, E0=100.0, method="direct"
    )
    np.testing.assert_allclose(u_turned, nodal(u, k, flip), atol=1e-12 * np.abs(u).max())
    # ... and so on the pixel channels the network sees.
    np.testing.assert_allclose(
        encoding.transform(encoding.lr_inputs(density, u), k, flip),
        encoding.lr_inputs(turned_density, u_turned),
        atol=1e-6 * np.abs(u).max(),
    )


def test_flips_negate_one_component_and_turns_swap_them():
    x = np.zeros((3, 2, 2))
    x[0] = [[0.1, 0.2], [0.3, 0.4]]
    x[1], x[2] = 1.0, 2.0  # a uniform vector (1, 2)
    mirrored = encoding.transform(x, 0, flip=True)  # left-right
    assert mirrored[0].tolist() == [[0.2, 0.1], [0.4, 0.3]]
    assert (mirrored[1] == -1).all() and (mirrored[2] == 2).all()
    upside_down = encoding.transform(x, 2, flip=True)
    assert upside_down[0].tolist() == [[0.3, 0.4], [0.1, 0.2]]
    assert (upside_down[1] == 1).all() and (upside_down[2] == -2).all()
    turned = encoding.transform(x, 1)  # counter-clockwise: the top-right pixel goes top-left
    assert turned[0].tolist() == [[0.2, 0.4], [0.1, 0.3]]
    assert (turned[1] == -2).all() and (turned[2] == 1).all()
    for k in range(4):
        for flip in (False, True):  # each symmetry has its inverse among the eight
            back = [
                encoding.transform(encoding.transform(x, k, flip), m, f)
                for m in range(4)
                for f in (0, 1)
            ]
            assert any(np.array_equal(b, x) for b in back)


def test_augmentation_commutes_with_normalization(lr_problem):
    lr, problem, u, _ = lr_problem
    channels = encoding.lr_inputs(lr, u, problem.mask)
    corners = np.array([[20, 20], [30, 10]])
    windows = encoding.extract_patches(channels, corners, PATCH)
    inside = encoding.extract_patches(problem.mask[None], corners, PATCH)[:, 0]
    for k, flip in ((1, False), (3, True)):
        after = encoding.transform(encoding.normalize_displacement(windows, inside), k, flip)
        turned_mask = encoding.transform(inside[:, None].astype(float), k, flip)[:, 0] > 0
        before = encoding.normalize_displacement(encoding.transform(windows, k, flip), turned_mask)
        np.testing.assert_allclose(after, before, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Storage


@pytest.fixture(scope="module")
def femur_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("femurs")
    paths = []
    for k, split in enumerate(("train", "train", "test")):
        path = folder / f"femur_{k:02d}.npz"
        save_femur(path, femur_image(f"femur_{k:02d}", 10 + k, split))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def built(femur_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("patches")
    return out, build(out, femur_files)


def test_stored_pairs_round_trip(built, femur_files):
    out, index = built
    assert index == json.loads((out / "index.json").read_text())
    assert [e["name"] for e in index["femurs"]] == ["femur_00", "femur_01", "femur_02"]
    assert index["counts"]["train"] == index["femurs"][0]["count"] + index["femurs"][1]["count"]
    assert index["counts"]["test"] == index["femurs"][2]["count"] > 0
    assert index["channels"] == ["density", "ux_0", "uy_0", "ux_1", "uy_1", "ux_2", "uy_2"]
    assert index["normalization"] == encoding.NORMALIZATION
    entry = index["femurs"][0]
    lr_stored = np.load(out / entry["lr"])
    hr_stored = np.load(out / entry["hr"])
    corners = np.load(out / entry["corners"])
    assert lr_stored.dtype == np.float16 and hr_stored.dtype == np.uint8
    assert lr_stored.shape == (entry["count"], 7, PATCH, PATCH)
    assert hr_stored.shape == (entry["count"], 1, PATCH * FACTOR, PATCH * FACTOR)
    # Recompute from the file (16-bit density) and compare within the stated quantization.
    from femsr.io import load_femur

    image = load_femur(femur_files[0])
    lr = dataset.downscale(image.density, FACTOR)
    problem = image.femur.problem(HR_PIXEL * FACTOR)
    options = {"mask": problem.mask, "h": 2.0, "thickness": problem.thickness}
    assert index["settings"]["void_modulus"] == 1e-3  # Emin = 15 MPa
    u = fem.solve(lr, problem.forces, problem.fixed, E0=15e3, Emin=15.0, method="direct", **options)
    grid = encoding.patch_grid(lr.shape, PATCH, STRIDE)
    expected = grid[encoding.window_mask(problem.mask | (lr > 0), grid, PATCH)]
    assert np.array_equal(corners, expected)
    x = encoding.lr_patches(lr, u, corners, patch=PATCH, mask=problem.mask)
    np.testing.assert_allclose(lr_stored[:, 0], x[:, 0], atol=2.5e-4)
    np.testing.assert_allclose(lr_stored[:, 1:], x[:, 1:], atol=5e-4)
    hr = encoding.extract_patches(image.density[None], corners * FACTOR, PATCH * FACTOR)
    np.testing.assert_allclose(hr_stored / 255, hr, atol=1 / 510 + 1e-9)


def test_build_resumes_and_rebuilds_only_what_is_missing(built, femur_files, caplog, monkeypatch):
    out, index = built
    written = spy_on_writes(monkeypatch)
    caplog.set_level(logging.INFO, logger="femsr.dataset")
    again = build(out, femur_files, progress=True)
    assert again["femurs"] == index["femurs"]
    assert written == []
    assert caplog.messages == []  # nothing redone
    (out / "femur_01.hr.npy").unlink()  # as if interrupted while writing femur_01
    again = build(out, femur_files, progress=True)
    assert [m.split(":")[0] for m in caplog.messages] == ["femur_01 (train)"]
    assert {e["name"]: e["count"] for e in again["femurs"]} == {
        e["name"]: e["count"] for e in index["femurs"]
    }
    assert sorted(written) == ["femur_01.corners.npy", "femur_01.hr.npy", "femur_01.lr.npy"]
    with pytest.raises(
        ValueError,
        match=r"index.json was written with other settings \(stride: 3 → 2\); use another folder",
    ):
        build(out, femur_files, stride=2)


def test_a_changed_femur_is_cut_again_in_its_place(femur_files, tmp_path, caplog, monkeypatch):
    files = [tmp_path / path.name for path in femur_files]
    for path, copy in zip(femur_files, files, strict=True):
        copy.write_bytes(path.read_bytes())
    out = tmp_path / "patches"
    index = build(out, files)
    save_femur(files[1], femur_image("femur_01", 99))  # regrown under the same name
    written = spy_on_writes(monkeypatch)
    caplog.set_level(logging.INFO, logger="femsr.dataset")
    again = build(out, files)
    assert sorted(written) == ["femur_01.corners.npy", "femur_01.hr.npy", "femur_01.lr.npy"]
    assert "femur_01 changed since its pairs were cut: cutting it again" in caplog.messages
    assert [e["name"] for e in again["femurs"]] == ["femur_00", "femur_01", "femur_02"]
    assert again["femurs"][0] == index["femurs"][0] and again["femurs"][2] == index["femurs"][2]
    assert again["femurs"][1]["source"] != index["femurs"][1]["source"]
    fresh = build(tmp_path / "fresh", files)
    assert np.array_equal(
        np.load(out / "femur_01.hr.npy"), np.load(tmp_path / "fresh/femur_01.hr.npy")
    )
    assert [e["source"] for e in fresh["femurs"]] == [e["source"] for e in again["femurs"]]


def test_float32_storage_is_exact(tmp_path):
    image = femur_image("solo", 5)
    index = build(tmp_path, [image], lr_dtype="float32", hr_dtype="float32")
    hr = np.load(tmp_path / "solo.hr.npy")
    corners = np.load(tmp_path / "solo.corners.npy")
    assert index["counts"] == {"train": len(corners), "validation": 0, "test": 0}
    expected = encoding.extract_patches(
        image.density[None].astype(np.float32), corners * FACTOR, PATCH * FACTOR
    )
    assert np.array_equal(hr, expected)


def test_a_scanner_dataset_stores_the_scanner_lr_and_resumes_only_with_it(tmp_path):
    image = femur_image("solo", 5)
    scanner = dataset.Scanner(fwhm=1.0, noise=30.0)
    index = build(tmp_path, [image], lr_dtype="float32", scanner=scanner)
    assert index["settings"]["scanner"] == {"fwhm": 1.0, "noise": 30.0}
    corners = np.load(tmp_path / "solo.corners.npy")
    lr = dataset.scanner_lr(image.density, HR_PIXEL, FACTOR, scanner, seed=zlib.crc32(b"solo"))
    stored = np.load(tmp_path / "solo.lr.npy")[:, 0]
    expected = encoding.extract_patches(lr[None], corners, PATCH)[:, 0]
    np.testing.assert_allclose(stored, expected, rtol=1e-6)
    block = dataset.downscale(image.density, FACTOR)
    assert not np.allclose(expected, encoding.extract_patches(block[None], corners, PATCH)[:, 0])
    with pytest.raises(ValueError, match="other settings"):
        build(tmp_path, [image], lr_dtype="float32")  # block means in a scanner's folder
    assert "scanner" not in build(tmp_path / "plain", [image])["settings"]


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"density must lie in \[0, 1\]"):
        dataset.downscale(np.full((4, 4), 1.5))
    with pytest.raises(ValueError, match="factor must be >= 1"):
        dataset.downscale(np.ones((4, 4)), 0)
    with pytest.raises(ValueError, match="u must have shape"):
        encoding.displacement_channels(np.zeros((1, 3, 3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        encoding.displacement_channels(np.full((1, 3, 3, 2), np.nan))
    with pytest.raises(ValueError, match="nodal on the density's grid"):
        encoding.lr_inputs(np.ones((3, 3)), np.zeros((1, 3, 3, 2)))
    with pytest.raises(ValueError, match="stride must be <= patch"):
        encoding.patch_grid((20, 20), 4, 5)
    with pytest.raises(TypeError, match="patch must be an int"):
        encoding.patch_grid((20, 20), 4.0, 2)
    with pytest.raises(ValueError, match="corners must be >= 0"):
        encoding.extract_patches(np.ones((1, 4, 4)), np.array([[-1, 0]]), 2)
    with pytest.raises(TypeError, match="integer numpy array"):
        encoding.extract_patches(np.ones((1, 4, 4)), np.array([[0.5, 0]]), 2)
    with pytest.raises(ValueError, match="density then"):
        encoding.transform(np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="mask must have shape"):
        encoding.normalize_displacement(np.ones((2, 3, 4, 4)), np.ones((2, 4, 3), bool))
    with pytest.raises(ValueError, match=r"void_modulus must lie in \[0, 1\)"):
        build(tmp_path, [], void_modulus=1.5)
    with pytest.raises(ValueError, match="lr_dtype must be one of"):
        build(tmp_path, [], lr_dtype="int8")
    with pytest.raises(ValueError, match="split must be one of"):
        build(tmp_path / "a", [femur_image("odd", 1, split="calibration")])
    with pytest.raises(ValueError, match="two femurs are named 'twin'"):
        build(tmp_path / "b", [femur_image("twin", 1), femur_image("twin", 2)])
    with pytest.raises(ValueError, match=r"grid at 2\.0 mm"):
        build(tmp_path / "c", [FemurImage(np.zeros((30, 30)), HR_PIXEL, Femur(), {"name": "x"})])
    with pytest.raises(FileNotFoundError, match="not a femsr patch dataset"):
        dataset.load_index(tmp_path / "nowhere")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "index.json").write_text("{broken")
    with pytest.raises(ValueError, match="cannot be read"):
        dataset.load_index(tmp_path / "d")


def test_import_femsr_and_dataset_does_not_import_torch():
    code = (
        "import sys, femsr, femsr.dataset; femsr.dataset.downscale; print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# torch Dataset and training


def test_patch_dataset_yields_what_train_expects(built):
    torch = pytest.importorskip("torch")
    from femsr.patch_dataset import PatchDataset

    out, index = built
    train_data = PatchDataset(out, "train")
    assert len(train_data) == index["counts"]["train"]
    lr, hr = train_data[len(train_data) - 1]  # the last pair of the second femur
    assert lr.dtype == hr.dtype == torch.float32
    assert tuple(lr.shape) == (7, PATCH, PATCH) and tuple(hr.shape) == (1, 20, 20)
    last = np.load(out / "femur_01.lr.npy")[-1]
    np.testing.assert_array_equal(lr.numpy(), last.astype(np.float32))
    assert float(hr.min()) >= 0 and float(hr.max()) <= 1
    assert len(PatchDataset(out, "train", femurs=["femur_01"])) == index["femurs"][1]["count"]
    assert torch.equal(train_data[-1][0], lr)
    # Spawned DataLoader workers get a pickled copy: it maps the files itself.
    copy = pickle.loads(pickle.dumps(train_data))
    assert copy._maps is None and torch.equal(copy[-1][1], hr)
    with pytest.raises(IndexError, match="out of range"):
        train_data[len(train_data)]
    with pytest.raises(ValueError, match=r"unknown femur\(s\) \['femur_99'\]"):
        PatchDataset(out, "train", femurs=["femur_99"])
    with pytest.raises(ValueError, match="no patch pairs of split 'test'"):
        PatchDataset(out, "test", femurs=["femur_00"])
    # No split: the named femurs of any split, in the index's order.
    both = PatchDataset(out, None, femurs=["femur_02", "femur_00"])
    assert [e["name"] for e in both.entries] == ["femur_00", "femur_02"]
    assert len(both) == index["femurs"][0]["count"] + index["femurs"][2]["count"]
    with pytest.raises(ValueError, match="split must be one of"):
        PatchDataset(out, "val")


def test_augmented_items_are_symmetries_of_the_stored_pair(built):
    torch = pytest.importorskip("torch")
    from femsr.patch_dataset import PatchDataset

    out, _ = built
    plain = PatchDataset(out, "test")
    augmented = PatchDataset(out, "test", augment=True, seed=5)
    lr, hr = plain[3]
    seen = set()
    for epoch in range(40):
        augmented.set_epoch(epoch)
        a_lr, a_hr = augmented[3]
        torch.manual_seed(epoch)  # the draw is the item's and the epoch's, not the generator's
        assert torch.equal(augmented[3][0], a_lr)
        matches = [
            (k, f)
            for k in range(4)
            for f in (False, True)
            if np.array_equal(encoding.transform(lr.numpy(), k, f), a_lr.numpy())
            and np.array_equal(encoding.transform(hr.numpy(), k, f), a_hr.numpy())
        ]
        assert matches
        seen.add(matches[0])
    assert len(seen) > 4


def test_tiny_training_run_on_the_dataset(built, tmp_path):
    pytest.importorskip("torch")
    from femsr.model import ModelConfig
    from femsr.patch_dataset import PatchDataset
    from femsr.train import train

    out, _ = built
    cfg = ModelConfig(
        in_channels=7,
        width=4,
        n_blocks=1,
        up_width=2,
        patch_size=PATCH,
        scale=FACTOR,
        upsampling="5",
    )
    result = train(
        cfg,
        PatchDataset(out, "train", augment=True, femurs=["femur_00"]),
        PatchDataset(out, "train", femurs=["femur_01"]),
        out_dir=tmp_path,
        epochs=1,
        batch_size=32,
        progress=False,
    )
    record = result.history[0]
    assert np.isfinite(record["train_loss"]) and 0 < record["val_ssim"] <= 1


def test_cli_builds_the_dataset_of_a_manifest(femur_files, tmp_path, capsys):
    from femsr import cli

    folder = femur_files[0].parent
    listing = [{"name": p.stem, "file": p.name} for p in femur_files]
    listing.append({"name": "femur_09", "file": "femur_09.npz"})  # not grown yet
    (folder / "manifest.json").write_text(json.dumps({"femurs": listing}))
    options = ["--patch", "4", "--stride", "3", "--factor", "5", "--quiet"]
    assert cli.main(["dataset", str(folder), str(tmp_path / "out"), *options]) == 0
    report = capsys.readouterr()
    # --quiet: the warning and the result only, no per-femur messages
    assert report.err == "femsr dataset: warning: not grown yet, skipped: femur_09.npz\n"
    assert "3 femurs" in report.out and "test pairs" in report.out
    assert dataset.load_index(tmp_path / "out")["settings"]["stride"] == 3
    scanned = tmp_path / "scanned"
    scanner = ["--scanner-fwhm", "0.7", "--scanner-noise", "20"]
    assert cli.main(["dataset", str(folder), str(scanned), *options, *scanner]) == 0
    assert dataset.load_index(scanned)["settings"]["scanner"] == {"fwhm": 0.7, "noise": 20.0}
    sharpened = tmp_path / "sharpened"
    assert (
        cli.main(["dataset", str(folder), str(sharpened), *options, *scanner, "--scanner-deblur"])
        == 0
    )
    recorded = dataset.load_index(sharpened)["settings"]["scanner"]
    assert recorded == {"fwhm": 0.7, "noise": 20.0, "deblur": True}
    (tmp_path / "empty").mkdir()
    assert cli.main(["dataset", str(tmp_path / "empty"), str(tmp_path / "o2")]) == 2
    assert "no femur files" in capsys.readouterr().err


def test_cli_trains_resumes_and_exports(built, tmp_path, capsys):
    """femsr train holds out the last training femur, logs every epoch, and a rerun resumes
    (here: finds the run complete); femsr export writes a .pt2 that loads and agrees with the
    trained weights."""
    import torch

    from femsr import cli
    from femsr.export import load_model

    out, _ = built
    run = tmp_path / "run"
    argv = ["train", str(out), str(run), "--width", "4", "--blocks", "1", "--up-width", "2"]
    argv += ["--pairs", "12", "--val-pairs", "6", "--batch-size", "6"]
    assert cli.main([*argv, "--epochs", "2"]) == 0
    report = capsys.readouterr()
    assert "training on femur_00 (12 pairs), validating on femur_01 (6 pairs)" in report.err
    assert "epoch 2/2: train loss" in report.err and "best epoch" in report.out
    log = (run / "train_log.jsonl").read_text()
    assert [json.loads(line)["epoch"] for line in log.splitlines()] == [1, 2]
    assert cli.main([*argv, "--epochs", "2"]) == 0  # the same command again: nothing left
    assert "checkpoint.pt after epoch 2 of 2" in capsys.readouterr().err
    assert (run / "train_log.jsonl").read_text() == log
    assert cli.main([*argv, "--epochs", "3"]) == 2  # another schedule needs --restart
    assert "other settings (epochs: 2 → 3)" in capsys.readouterr().err
    assert cli.main([*argv, "--epochs", "2", "--val-femurs", "femur_00", "femur_01"]) == 2
    assert "no training femur left" in capsys.readouterr().err
    assert cli.main([*argv, "--epochs", "2", "--val-femurs", "femur_02"]) == 2
    assert "['femur_02'] are test femurs" in capsys.readouterr().err

    exported = tmp_path / "model.pt2"
    assert cli.main(["export", str(run / "best.pt"), str(exported)]) == 0
    assert "max |exported - eager|" in capsys.readouterr().out
    eager, program = load_model(run / "best.pt", "cpu"), load_model(exported, "cpu")
    assert program.format == "pt2" and program.config == eager.config
    x = torch.rand(3, eager.config.in_channels, eager.config.patch_size, eager.config.patch_size)
    with torch.no_grad():
        # Outputs in [0, 1]; the program and the eager network may take other float32 kernels.
        torch.testing.assert_close(program(x), eager(x), atol=1e-4, rtol=0)
    assert cli.main(["export", str(tmp_path / "missing.pt"), str(exported)]) == 2


def test_cli_trains_on_the_papers_protocol(built, tmp_path, capsys):
    """--protocol paper fits on the 7 training femurs paper_protocol picks from the index."""
    from femsr import cli
    from femsr.manifest import paper_protocol

    out = tmp_path / "patches"
    shutil.copytree(built[0], out)
    index = json.loads((out / "index.json").read_text())
    first, validation, test = index["femurs"]
    validation["split"] = "validation"
    rng = np.random.default_rng(0)
    copies = [  # nine training femurs on the pairs of the first
        {**first, "name": f"bone_{k}", "volfrac": rng.uniform(0.25, 0.35),
         "neck_shaft_angle": rng.uniform(120, 140)}
        for k in range(9)
    ]  # fmt: skip
    index["femurs"] = [*copies, validation, test]
    (out / "index.json").write_text(json.dumps(index))
    argv = ["train", str(out), str(tmp_path / "run"), "--width", "4", "--blocks", "1"]
    argv += ["--up-width", "2", "--pairs", "6", "--val-pairs", "6", "--batch-size", "6"]
    assert cli.main([*argv, "--epochs", "1", "--protocol", "paper"]) == 0
    picked = paper_protocol(index["femurs"], "train")
    assert f"training on {', '.join(picked)} (6 pairs), validating on femur_01" in (
        capsys.readouterr().err
    )


def test_cli_validates_on_the_validation_split(built, tmp_path, capsys):
    from femsr import cli

    out = tmp_path / "patches"
    shutil.copytree(built[0], out)
    index = json.loads((out / "index.json").read_text())
    index["femurs"][0]["split"] = "validation"
    (out / "index.json").write_text(json.dumps(index))
    argv = ["train", str(out), str(tmp_path / "run"), "--width", "4", "--blocks", "1"]
    argv += ["--up-width", "2", "--pairs", "6", "--val-pairs", "6", "--batch-size", "6"]
    assert cli.main([*argv, "--epochs", "1"]) == 0
    assert "training on femur_01 (6 pairs), validating on femur_00 (6 pairs)" in (
        capsys.readouterr().err
    )


def test_a_dataset_cut_on_two_workers_is_the_serial_one(built, femur_files, tmp_path):
    out, index = built
    pytest.importorskip("distributed")
    parallel = build(tmp_path / "parallel", femur_files, workers=2)
    assert [e["name"] for e in parallel["femurs"]] == [e["name"] for e in index["femurs"]]
    assert parallel["counts"] == index["counts"]
    for serial, entry in zip(index["femurs"], parallel["femurs"], strict=True):
        assert entry["source"] == serial["source"] and entry["count"] == serial["count"]
        for key in ("lr", "hr", "corners"):
            np.testing.assert_array_equal(
                np.load(tmp_path / "parallel" / entry[key]), np.load(out / serial[key])
            )
