"""Femur image files: round trip, quantization bound, clear errors for other files; density
images (PNG, TIFF, .npy, .npz) read and written."""

import numpy as np
import pytest

from femsr import io
from femsr.femur import Femur, grid_shape, sample


def test_femur_image_round_trip_within_the_16_bit_step(tmp_path):
    density = np.random.default_rng(0).random(grid_shape(2.0))
    femur = sample(4)
    path = tmp_path / "femur.npz"
    io.save_femur(path, io.FemurImage(density, 2.0, femur, {"split": "test", "volfrac": 0.4}))
    image = io.load_femur(path)
    assert np.abs(image.density - density).max() <= 0.5 / 65535 + 1e-15
    assert image.pixel_size == 2.0 and image.femur == femur
    assert image.meta == {"split": "test", "volfrac": 0.4}


def test_bad_density_is_refused(tmp_path):
    femur = sample(1)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        io.save_femur(tmp_path / "f.npz", io.FemurImage(np.full((3, 3), 1.5), 1.0, femur))
    with pytest.raises(ValueError, match="finite 2-D"):
        io.save_femur(tmp_path / "f.npz", io.FemurImage(np.full(3, 0.5), 1.0, femur))
    assert not (tmp_path / "f.npz").exists()


def test_other_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.load_femur(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", density=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not a femsr femur image"):
        io.load_femur(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable femur image"):
        io.load_femur(tmp_path / "junk.npz")


def saved_femur(path):
    density = np.random.default_rng(0).random(grid_shape(4.0))
    io.save_femur(path, io.FemurImage(density, 4.0, sample(1), {"name": "f"}))
    return path.read_bytes()


def test_a_directory_is_named_as_one(tmp_path):
    with pytest.raises(IsADirectoryError, match=rf"{tmp_path.name}' is a directory"):
        io.load_femur(tmp_path)
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(IsADirectoryError, match=r"folder\.png' is a directory"):
        io.read_image(tmp_path / "folder.png")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_truncated_femur_file_is_named(tmp_path, keep):
    data = saved_femur(tmp_path / "f.npz")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: int(keep * len(data))])
    with pytest.raises(ValueError, match=r"cut\.npz' is not a readable femur image \(truncated"):
        io.load_femur(cut)


def test_damaged_compressed_data_is_named(tmp_path):
    import zipfile

    data = bytearray(saved_femur(tmp_path / "f.npz"))
    with zipfile.ZipFile(tmp_path / "f.npz") as archive:
        offset = archive.getinfo("density.npy").header_offset
    damaged = slice(offset + 80, offset + 200, 7)
    data[damaged] = bytes(b ^ 0xFF for b in data[damaged])
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad\.npz' is not a readable femur image"):
        io.load_femur(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=r"bad\.npz' is not a readable \.npz archive"):
        io.read_image(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"pixel_size": None}, r"lacks \['pixel_size'\]"),
        ({"femur": np.array("{not json")}, "JSONDecodeError"),
        ({"meta": None, "femur": None}, r"lacks \['femur', 'meta'\]"),
    ],
)
def test_a_femur_file_missing_or_garbling_a_field_is_named(tmp_path, fields, match):
    saved_femur(tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as data:
        arrays = {name: data[name] for name in data.files}
    for name, value in fields.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    np.savez(tmp_path / "g.npz", **arrays)
    with pytest.raises(ValueError, match=rf"g\.npz' is a damaged femur image: .*{match}"):
        io.load_femur(tmp_path / "g.npz")


def test_atomic_write_gives_the_permissions_open_would(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        with io.atomic_write(tmp_path / "a.txt", "w") as stream:
            stream.write("x")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(mask)
    mode = (tmp_path / "a.txt").stat().st_mode & 0o777
    assert mode == (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------------
# Density images: PNG, TIFF, .npy, .npz (femsr.io.read_image, write_image)


@pytest.mark.parametrize(
    ("suffix", "bits", "tolerance"),
    [
        (".png", 16, 0.5 / 65535),
        (".png", 8, 0.5 / 255),
        (".tif", 16, 0.5 / 65535),
        (".tiff", 8, 0.5 / 255),
        (".npy", 16, 0.0),
        (".npz", 16, 0.0),
    ],
)
def test_image_round_trip(tmp_path, suffix, bits, tolerance):
    density = np.random.default_rng(2).random((7, 5)).astype(np.float32)
    density[0, :2] = [0.0, 1.0]
    path = tmp_path / f"d{suffix}"
    io.write_image(path, density, bits=bits)
    back, pixel_size, bone = io.read_image(path)
    assert back.shape == (7, 5) and back.dtype == np.float64
    assert pixel_size is None and bone is None
    np.testing.assert_allclose(back, density, atol=tolerance + 1e-9, rtol=0)
    assert back[0, 0] == 0.0 and back[0, 1] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_read_femur_file_and_plain_arrays(tmp_path):
    from PIL import Image

    bone = Femur()
    density = np.full((26, 24), 0.25)
    io.save_femur(tmp_path / "f.npz", io.FemurImage(density, 4.0, bone))
    back, pixel_size, femur = io.read_image(tmp_path / "f.npz")
    np.testing.assert_allclose(back, density, atol=1e-5)
    assert pixel_size == 4.0 and femur == bone
    np.savez(tmp_path / "one.npz", image=density)
    assert io.read_image(tmp_path / "one.npz")[0].shape == (26, 24)
    Image.fromarray(density.astype(np.float32)).save(tmp_path / "float.tif")
    np.testing.assert_array_equal(io.read_image(tmp_path / "float.tif")[0], density)


@pytest.mark.parametrize(
    ("name", "content", "error", "match"),
    [
        ("missing.png", None, FileNotFoundError, "does not exist"),
        ("image.bmp", b"", ValueError, "unknown image type"),
        ("junk.png", b"junk", ValueError, "not a readable image"),
        ("junk.tif", b"II*\x00junk", ValueError, "not a readable image"),
        ("junk.npy", b"junk", ValueError, "not a readable .npy"),
        ("junk.npz", b"junk", ValueError, "not a readable .npz"),
        ("colour.png", "rgb", ValueError, "RGB image; a density needs one grayscale channel"),
        ("cube.npy", "cube", ValueError, "not a 2-D image"),
        ("many.npz", "many", ValueError, "name the density 'density'"),
        ("text.npy", "text", ValueError, "not real numbers"),
    ],
)
def test_unreadable_images(tmp_path, name, content, error, match):
    from PIL import Image

    path = tmp_path / name
    if content == "rgb":
        Image.new("RGB", (4, 3)).save(path)
    elif content == "cube":
        np.save(path, np.zeros((2, 3, 4)))
    elif content == "many":
        np.savez(path, a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    elif content == "text":
        np.save(path, np.array([["a", "b"]]))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=match):
        io.read_image(path)


@pytest.mark.parametrize(
    ("path", "density", "bits", "match"),
    [
        ("d.jpg", np.zeros((2, 2)), 16, "unknown image type"),
        ("d.png", np.zeros((2, 2)), 12, "bits must be 8 or 16"),
        ("d.png", np.full((2, 2), 1.5), 16, r"must lie in \[0, 1\]"),
        ("d.png", np.full((2, 2), np.nan), 16, "NaN"),
        ("d.png", np.zeros(4), 16, "2-D"),
    ],
)
def test_write_image_bad_input(tmp_path, path, density, bits, match):
    with pytest.raises(ValueError, match=match):
        io.write_image(tmp_path / path, density, bits=bits)
    assert not list(tmp_path.iterdir())
