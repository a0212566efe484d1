"""Files: atomic writes, so an interrupted run never leaves a half-written file behind, the
femur image file (a density with its pixel size, femur geometry and load spec), and density
images (.npy, .npz, PNG, TIFF)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from femsr.checks import check_density
from femsr.femur import Femur

__all__ = [
    "FemurImage",
    "atomic_write",
    "load_femur",
    "read_image",
    "read_npz",
    "save_femur",
    "save_npz",
    "write_image",
]

FEMUR_FORMAT = "femsr.femur-image/1"
_FEMUR_FIELDS = ("density", "pixel_size", "femur", "meta")
# Densities are stored as 16-bit fractions: an error of at most 1/131070, far below anything an
# image or a stiffness can tell, and crisp designs compress to a few MB at full size.
_LEVELS = 65535


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` and move it over ``path`` only on success.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_write(target, "w") as f:
    ...     _ = f.write("kept")
    >>> target.read_text()
    'kept'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def save_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """Write arrays to a compressed ``.npz`` atomically."""
    with atomic_write(path) as stream:
        np.savez_compressed(stream, **arrays)  # type: ignore[arg-type]  # numpy stubs read allow_pickle


@dataclass
class FemurImage:
    """A femur density image with what it takes to use it: pixel size, geometry and loads.

    Attributes
    ----------
    density : ndarray, shape (ny, nx)
        Density in [0, 1] on the femur's box at ``pixel_size``.
    pixel_size : float
        Pixel side in mm.
    femur : Femur
        The phantom: outline, landmarks, load cases, ROIs (``femur.problem(pixel_size)``).
    meta : dict
        JSON-able facts of how the image was made (name, split, volfrac, optimizer record).
    """

    density: np.ndarray
    pixel_size: float
    femur: Femur
    meta: dict[str, Any] = field(default_factory=dict)


def save_femur(path: str | os.PathLike[str], image: FemurImage) -> None:
    """Write a :class:`FemurImage` as a compressed ``.npz``, atomically.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from femsr.femur import Femur, grid_shape
    >>> density = np.full(grid_shape(4.0), 0.5)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "f.npz"
    >>> save_femur(path, FemurImage(density, 4.0, Femur(), {"name": "demo"}))
    >>> image = load_femur(path)
    >>> round(float(image.density.max()), 4), image.pixel_size, image.meta["name"]
    (0.5, 4.0, 'demo')
    """
    density = np.asarray(image.density, dtype=np.float64)
    if density.ndim != 2 or not np.isfinite(density).all():
        raise ValueError("density must be a finite 2-D array")
    if density.min(initial=0.0) < 0 or density.max(initial=0.0) > 1:
        raise ValueError("density must lie in [0, 1]")
    save_npz(
        path,
        format=np.array(FEMUR_FORMAT),
        density=np.round(density * _LEVELS).astype(np.uint16),
        pixel_size=np.array(float(image.pixel_size)),
        femur=np.array(json.dumps(image.femur.to_dict())),
        meta=np.array(json.dumps(image.meta)),
    )


def _check_file(kind: str, path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{kind} {str(path)!r} is a directory, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{kind} {str(path)!r} does not exist")


def read_npz(path: str | os.PathLike[str], kind: str) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` archive (a ``kind`` of file, for the message), or a ValueError
    naming the path if it cannot be read."""
    try:
        # Opened here: np.load leaves its own handle open when the archive is damaged.
        with open(path, "rb") as stream, np.load(stream, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error) as error:
        raise ValueError(
            f"{str(path)!r} is not a readable {kind} (truncated, damaged, or not a .npz "
            f"archive): {error}"
        ) from None


def load_femur(path: str | os.PathLike[str]) -> FemurImage:
    """Read a file written by :func:`save_femur`.

    Parameters
    ----------
    path : path
        The ``.npz`` femur file.

    Returns
    -------
    FemurImage

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a directory.
    ValueError
        If the file is truncated or damaged, is not a femur image, or lacks one of its fields;
        the message names the path.
    """
    path = Path(path)
    _check_file("femur file", path)
    arrays = read_npz(path, "femur image")
    if "format" not in arrays or str(arrays["format"]) != FEMUR_FORMAT:
        raise ValueError(f"{str(path)!r} is not a femsr femur image ({FEMUR_FORMAT})")
    missing = [name for name in _FEMUR_FIELDS if name not in arrays]
    if missing:
        raise ValueError(f"{str(path)!r} is a damaged femur image: it lacks {missing}")
    try:
        density = arrays["density"].astype(np.float64) / _LEVELS
        pixel_size = float(arrays["pixel_size"])
        femur = Femur.from_dict(json.loads(str(arrays["femur"])))
        meta = json.loads(str(arrays["meta"]))
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{str(path)!r} is a damaged femur image: {error!r}") from None
    return FemurImage(density, pixel_size, femur, meta)


# ---------------------------------------------------------------------------------------------
# Density images

_PILLOW_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}
IMAGE_SUFFIXES = (".npy", ".npz", *_PILLOW_FORMATS)
# Integer pixel modes of Pillow and the value that stands for density 1.
_FULL_SCALE = {"1": 1, "L": 255, "I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I": 65535}


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(
            f"{str(path)!r}: unknown image type {path.suffix!r}; use one of {IMAGE_SUFFIXES}"
        )
    return suffix


def _plain_array(path: Path, array: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{str(path)!r} holds {array.dtype} values, not real numbers")
    if array.ndim != 2:
        raise ValueError(f"{str(path)!r} holds an array of shape {array.shape}, not a 2-D image")
    return array.astype(np.float64)


def read_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, float | None, Femur | None]:
    """Read a 2-D density image from .npy, .npz, PNG or TIFF.

    * ``.npy``: a 2-D array of real numbers, values as stored.
    * ``.npz``: a femur image (:func:`save_femur`: density, pixel size and femur), else an
      archive holding a ``density`` array or exactly one array.
    * PNG, TIFF (Pillow): one grayscale frame; 8-bit values are divided by 255, 16-bit by
      65535, 32-bit float taken as stored. Colour images are refused (a density has one
      channel). Only femur files carry a pixel size: the resolution tags of PNG/TIFF files
      are mostly nominal (72 dpi), so they are not read as one.

    Parameters
    ----------
    path : path
        The file; its suffix says the format.

    Returns
    -------
    density : ndarray of float64, shape (ny, nx)
        Not range-checked (the caller knows what it expects).
    pixel_size : float or None
        Pixel side in mm, from a femur file.
    femur : Femur or None
        The femur (geometry, load cases), from a femur file.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a directory.
    ValueError
        For an unknown suffix, or a file that cannot be read as a 2-D grayscale image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.png"
    >>> write_image(path, np.array([[0.0, 0.5], [1.0, 0.25]]))
    >>> density, pixel_size, femur = read_image(path)
    >>> np.round(density, 4).tolist(), pixel_size, femur
    ([[0.0, 0.5], [1.0, 0.25]], None, None)
    """
    path = Path(path)
    suffix = _suffix(path)
    _check_file("image file", path)
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(f"{str(path)!r} is not a readable .npy array: {error}") from None
        return _plain_array(path, array), None, None
    if suffix == ".npz":
        arrays = read_npz(path, ".npz archive")
        if "format" in arrays and str(arrays["format"]) == FEMUR_FORMAT:
            image = load_femur(path)
            return image.density, image.pixel_size, image.femur
        if "density" not in arrays and len(arrays) != 1:
            raise ValueError(
                f"{str(path)!r} holds arrays {sorted(arrays)}: name the density 'density' or "
                f"store only one array"
            )
        array = arrays["density"] if "density" in arrays else next(iter(arrays.values()))
        return _plain_array(path, array), None, None
    from PIL import Image, UnidentifiedImageError

    try:
        # A damaged file may only make Pillow warn (corrupt EXIF, truncated data): refuse it.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with Image.open(path) as picture:
                frames = getattr(picture, "n_frames", 1)
                mode = picture.mode
                array = np.array(picture)
    except (UnidentifiedImageError, OSError, SyntaxError, Warning) as error:
        raise ValueError(f"{str(path)!r} is not a readable image: {error}") from None
    if frames > 1:
        raise ValueError(f"{str(path)!r} has {frames} frames; a density image has one")
    if mode == "F":
        return _plain_array(path, array), None, None
    if mode not in _FULL_SCALE:
        raise ValueError(
            f"{str(path)!r} is a {mode} image; a density needs one grayscale channel "
            f"(8- or 16-bit, or float)"
        )
    return _plain_array(path, array) / _FULL_SCALE[mode], None, None


def write_image(
    path: str | os.PathLike[str],
    density: np.ndarray,
    *,
    bits: int = 16,
    pixel_size: float | None = None,
) -> None:
    """Write a density in [0, 1] as a PNG or TIFF (grayscale), ``.npy`` or ``.npz``, atomically.

    PNG and TIFF store ``round(density * (2**bits - 1))`` (16-bit: an error of at most
    1/131070, what femur files keep; 8-bit for previews), and ``pixel_size`` as their
    resolution (TIFF in pixels per centimetre, which :func:`femsr.scan.read_scan` reads back;
    PNG in whole pixels per metre). ``.npy`` stores float32 and ``.npz`` a compressed float32
    ``density`` array, both as given.

    Parameters
    ----------
    path : path
        Target file; its suffix (.png, .tif, .tiff, .npy, .npz) says the format.
    density : ndarray, shape (ny, nx)
        Finite values in [0, 1].
    bits : {16, 8}
        Depth of PNG and TIFF files.
    pixel_size : float, optional
        The pixel side (mm) a PNG or TIFF file records.

    Raises
    ------
    TypeError, ValueError
        On an unknown suffix, a bad ``bits``, or a density that is not a finite 2-D array in
        [0, 1].

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.npy"
    >>> write_image(path, np.full((2, 3), 0.5))
    >>> read_image(path)[0].shape
    (2, 3)
    """
    path = Path(path)
    suffix = _suffix(path)
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    if pixel_size is not None and not (math.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"pixel_size must be a positive number of mm, got {pixel_size!r}")
    array = check_density(density)
    if suffix == ".npy":
        with atomic_write(path) as stream:
            np.save(stream, array.astype(np.float32))
        return
    if suffix == ".npz":
        save_npz(path, density=array.astype(np.float32))
        return
    from PIL import Image

    # uint8 becomes an "L" image, uint16 an "I;16" one.
    levels = np.round(array * (2**bits - 1)).astype(np.uint8 if bits == 8 else np.uint16)
    picture = Image.fromarray(levels)
    resolution: dict[str, Any] = {}
    if pixel_size is not None and suffix == ".png":
        resolution["dpi"] = (25.4 / pixel_size,) * 2
    elif pixel_size is not None:
        resolution = {"resolution": 10.0 / pixel_size, "resolution_unit": 3}  # per cm
    with atomic_write(path) as stream:
        picture.save(stream, format=_PILLOW_FORMATS[suffix], **resolution)
