"""Femur image files: round trip, quantization bound, clear errors for other files."""

import numpy as np
import pytest

from femsr import io
from femsr.femur import grid_shape, sample


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
