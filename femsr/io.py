"""Files: atomic writes, so an interrupted run never leaves a half-written file behind, and the
femur image file (a density with its pixel size, femur geometry and load spec)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from femsr.femur import Femur

__all__ = ["FemurImage", "atomic_write", "load_femur", "save_femur", "save_npz"]

FEMUR_FORMAT = "femsr.femur-image/1"
# Densities are stored as 16-bit fractions: an error of at most 1/131070, far below anything an
# image or a stiffness can tell, and crisp designs compress to a few MB at full size.
_LEVELS = 65535


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


def load_femur(path: str | os.PathLike[str]) -> FemurImage:
    """Read a file written by :func:`save_femur`, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"femur file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a readable femur image: {error}") from None
    if "format" not in arrays or str(arrays["format"]) != FEMUR_FORMAT:
        raise ValueError(f"{str(path)!r} is not a femsr femur image ({FEMUR_FORMAT})")
    density = arrays["density"].astype(np.float64) / _LEVELS
    pixel_size = float(arrays["pixel_size"])
    femur = Femur.from_dict(json.loads(str(arrays["femur"])))
    meta = json.loads(str(arrays["meta"]))
    return FemurImage(density, pixel_size, femur, meta)
