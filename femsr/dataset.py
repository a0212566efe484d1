"""Training data: downscaling, patch pairs and their storage.

The network's input is a window of the 500 µm (LR) image and the displacement field the LR
image has under the femur's load cases (:mod:`femsr.encoding`); its target is the 50 µm (HR)
window ten times larger. This module builds those pairs from the femur images that
:mod:`femsr.generate` grows:

1. :func:`downscale`: LR density = mean of each ``factor`` x ``factor`` HR block, the HR image
   first padded with void (0) at the **bottom and right** to a multiple of ``factor``, the way
   :func:`femsr.femur.grid_shape` lets a coarse grid overhang the box. Mass is preserved:
   ``lr.sum() * factor**2 == hr.sum()``.
   Or, for a network that reads clinical scans, :func:`scanner_lr`: the LR image as a CT
   scanner makes it (:class:`Scanner`: point-spread function, detector pixel, noise).
2. The network's input over the LR image, per window of its patch grid
   (:func:`femsr.encoding.lr_displacement`, :func:`~femsr.encoding.patch_grid`,
   :func:`~femsr.encoding.normalize_displacement`), and the HR window of each.
3. :func:`build_dataset` writes a dataset folder, femur by femur, resumable;
   :class:`femsr.patch_dataset.PatchDataset` (torch) reads it through memory maps.

Dataset folder
--------------
``index.json``
    Format, settings (patch, stride, factor, dtypes, material),
    :data:`femsr.encoding.NORMALIZATION`, channel
    names, and per femur: name, split, pair count, file names, LR shape, FE statistics, the
    fingerprint of the femur it was cut from; the pair counts per split. Rewritten atomically
    after each femur, which is what makes a femur "done".
``<name>.lr.npy``
    ``(n, 1 + 2*ncases, patch, patch)`` normalized LR inputs, float16 (default; absolute error
    at most 2.4e-4 on the density and 4.9e-4 on displacements in [-1, 1]) or float32.
``<name>.hr.npy``
    ``(n, 1, patch*factor, patch*factor)`` HR density, uint8 (default, ``round(255 * rho)``:
    error at most 1/510 = 0.002) or float16 (at most 2.4e-4).
``<name>.corners.npy``
    ``(n, 2)`` int32 LR (row, column) of each window's top-left corner.

A full-size femur (208 x 189 LR) at stride 8 gives about 300 pairs; ~1M pairs need a smaller
training stride (the windows need not tile the way reconstruction does).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from femsr.checks import check_density, check_int
from femsr.defaults import TISSUE_MODULUS
from femsr.encoding import (
    NORMALIZATION,
    NU,
    PENAL,
    VOID_MODULUS,
    extract_patches,
    lr_displacement,
    lr_inputs,
    normalize_displacement,
    patch_grid,
    window_mask,
)
from femsr.io import FemurImage, atomic_write, load_femur
from femsr.resume import resume as resume_run

__all__ = ["Scanner", "build_dataset", "downscale", "downscale_femur", "load_index", "scanner_lr"]

logger = logging.getLogger(__name__)

FORMAT = "femsr.patch-dataset/1"
INDEX = "index.json"
SPLITS = ("train", "validation", "test")
LR_DTYPES = ("float16", "float32")
HR_DTYPES = ("uint8", "float16", "float32")
_CHUNK = 512  # windows extracted and written at once: bounds memory for any stride


# ---------------------------------------------------------------------------------------------
# Images


def downscale(hr: np.ndarray, factor: int = 10) -> np.ndarray:
    """LR density: the mean of each ``factor`` x ``factor`` block of the HR density.

    The HR image is first padded with void (0) at the bottom and the right to a multiple of
    ``factor``, so the LR image covers it all and keeps its mass:
    ``lr.sum() * factor**2 == hr.sum()`` (to round-off).

    Parameters
    ----------
    hr : ndarray, shape (ny, nx)
        HR density in [0, 1].
    factor : int
        HR pixels per LR pixel along a side (10: 50 µm → 500 µm).

    Returns
    -------
    ndarray of float64, shape (ceil(ny / factor), ceil(nx / factor))

    Raises
    ------
    TypeError, ValueError
        If ``hr`` is not a finite 2-D real array in [0, 1] or ``factor`` not an int >= 1.

    Examples
    --------
    >>> downscale(np.ones((3, 5)), factor=2)
    array([[1.  , 1.  , 0.5 ],
           [0.5 , 0.5 , 0.25]])
    """
    density = check_density(hr)
    factor = check_int("factor", factor, 1)
    ny, nx = density.shape
    rows, cols = -(-ny // factor), -(-nx // factor)
    padded = np.zeros((rows * factor, cols * factor))
    padded[:ny, :nx] = density
    return padded.reshape(rows, factor, cols, factor).mean(axis=(1, 3))


def downscale_femur(image: FemurImage, factor: int = 10) -> FemurImage:
    """The femur image at ``factor`` times its pixel size (:func:`downscale`), same femur.

    What :func:`femsr.reconstruct` takes to rebuild a reference femur from its own block mean;
    crop the result to the reference's shape (the LR grid covers the void padding).
    """
    return FemurImage(
        downscale(image.density, factor), image.pixel_size * factor, image.femur, image.meta
    )


@dataclass(frozen=True)
class Scanner:
    """How a clinical CT scanner makes the LR image of a femur (:func:`scanner_lr`).

    Attributes
    ----------
    fwhm : float
        Full width at half maximum of the Gaussian point-spread function, mm (clinical CT of
        the hip: about 0.5-1.0 mm).
    noise : float
        Standard deviation of the Gaussian noise, Hounsfield units (clinical: about 10-50 HU).
    deblur : bool
        Read the slice deblurred by ``fwhm`` (:func:`femsr.scan.deblur`), as
        ``femsr.scan.lr_image(psf_fwhm=...)`` reads a scan, for a network that reconstructs
        deblurred scans.
    """

    fwhm: float
    noise: float = 0.0
    deblur: bool = False

    def __post_init__(self) -> None:
        for label, value in (("fwhm", self.fwhm), ("noise", self.noise)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"scanner {label} must be a finite number >= 0, got {value!r}")
        if self.deblur and not self.fwhm > 0:
            raise ValueError("a scanner deblurs only a point-spread function of fwhm > 0")


def scanner_lr(
    hr: np.ndarray, pixel_size: float, factor: int, scanner: Scanner, *, seed: int = 0
) -> np.ndarray:
    """LR density of an HR density as a CT scanner sees it, on :func:`downscale`'s grid.

    The HR density is made a CT slice in Hounsfield units and blurred, integrated over
    ``factor`` times larger pixels and made noisy as :func:`femsr.scan.synthetic_scan` does
    (``scanner.fwhm``, ``scanner.noise``, ``seed``), then read back as density by
    :func:`femsr.scan.density_from_hu`, as :func:`femsr.scan.lr_image` reads a scan (deblurred
    first with ``scanner.deblur``); the
    image is set to 0 outside the pixels that hold bone in the block mean, as ``lr_image``
    sets it outside the segmented femur. At ``fwhm=0`` and ``noise=0`` the bone's pixels read
    the block mean blurred by the pixel's linear interpolation.

    Examples
    --------
    >>> hr = np.zeros((40, 40)); hr[10:30, 10:30] = 1.0
    >>> lr = scanner_lr(hr, 0.05, 10, Scanner(fwhm=0.5, noise=20.0))
    >>> lr.shape == downscale(hr, 10).shape, bool(lr[0, 0] == 0), bool(0 < lr[1, 1] < 1)
    (True, True, True)
    """
    from femsr.scan import deblur, density_from_hu, synthetic_scan

    factor = check_int("factor", factor, 1)
    block = downscale(hr, factor)
    scan = synthetic_scan(
        hr,
        pixel_size,
        pixel=pixel_size * factor,
        fwhm=scanner.fwhm,
        noise=scanner.noise,
        border=0.0,
        seed=seed,
    )
    if scanner.deblur:
        scan = deblur(scan, scanner.fwhm)
    return np.where(block > 0, density_from_hu(scan.image), 0.0)


# ---------------------------------------------------------------------------------------------
# Storage


def _write_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype, chunks: Any) -> None:
    """Stream chunks into a ``.npy`` file, atomically, without holding the array."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    written = 0
    with atomic_write(path) as stream:
        np.lib.format.write_array_header_2_0(stream, header)
        for chunk in chunks:
            stream.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
            written += len(chunk)
    if written != shape[0]:  # pragma: no cover - a bug, not a user error
        raise RuntimeError(f"{path}: wrote {written} of {shape[0]} rows")


def _quantize(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    return values.astype(dtype)


def load_index(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a dataset folder's ``index.json``, with a clear error when it is not one."""
    path = Path(folder) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a femsr patch dataset (no {INDEX})")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{str(path)!r} cannot be read: {error}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a femsr patch dataset index ({FORMAT})")
    return index


def _femur_name(image: FemurImage, source: str | os.PathLike[str] | None, k: int) -> str:
    name = image.meta.get("name") or (Path(source).stem if source is not None else f"femur_{k}")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"femur name {name!r} cannot name a file")
    return name


def _pairs(
    image: FemurImage,
    out: Path,
    name: str,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """FE of one femur's LR image and its patch pairs, written into ``out``."""
    factor, patch, stride = settings["factor"], settings["patch"], settings["stride"]
    started = time.perf_counter()
    if "scanner" in settings:  # each femur its own noise, the same on every rerun
        scanner, seed = Scanner(**settings["scanner"]), zlib.crc32(name.encode())
        lr = scanner_lr(image.density, image.pixel_size, factor, scanner, seed=seed)
    else:
        lr = downscale(image.density, factor)
    pixel_size = image.pixel_size * factor
    problem = image.femur.problem(pixel_size)
    if problem.mask.shape != lr.shape:
        raise ValueError(
            f"femur {name}: its LR image is {lr.shape} but the femur's grid at {pixel_size} mm "
            f"is {problem.mask.shape}; the density must be on the femur's grid at "
            f"{image.pixel_size} mm"
        )
    u, stats = lr_displacement(
        lr,
        problem,
        E0=settings["E0"],
        nu=settings["nu"],
        penal=settings["penal"],
        void_modulus=settings["void_modulus"],
    )
    fe_seconds = time.perf_counter() - started
    channels = lr_inputs(lr, u, problem.mask)
    grid = patch_grid(lr.shape, patch, stride)
    corners = grid[window_mask(problem.mask | (lr > 0), grid, patch)].astype(np.int32)
    mask = problem.mask[None]
    hr = np.asarray(image.density, dtype=np.float32)[None]
    hr_size = patch * factor

    def lr_chunks() -> Any:
        for start in range(0, len(corners), _CHUNK):
            part = corners[start : start + _CHUNK]
            inside = extract_patches(mask, part, patch)[:, 0]
            yield normalize_displacement(extract_patches(channels, part, patch), inside)

    def hr_chunks() -> Any:
        for start in range(0, len(corners), _CHUNK):
            part = corners[start : start + _CHUNK].astype(np.int64) * factor
            yield _quantize(extract_patches(hr, part, hr_size), settings["hr_dtype"])

    files = {key: f"{name}.{key}.npy" for key in ("lr", "hr", "corners")}
    n = len(corners)
    _write_npy(
        out / files["lr"], (n, *channels.shape[:1], patch, patch), np.dtype(settings["lr_dtype"]),
        lr_chunks(),
    )  # fmt: skip
    _write_npy(
        out / files["hr"], (n, 1, hr_size, hr_size), np.dtype(settings["hr_dtype"]), hr_chunks()
    )
    _write_npy(out / files["corners"], corners.shape, np.dtype(np.int32), [corners])
    return {
        "name": name,
        "split": image.meta.get("split", "train"),
        "source": _fingerprint(image),
        "count": n,
        **files,
        "lr_shape": list(lr.shape),
        "windows": int(grid.shape[0] * grid.shape[1]),
        "cases": list(problem.names),
        "volfrac": image.meta.get("volfrac"),
        "neck_shaft_angle": image.meta.get("neck_shaft_angle"),
        "fe": {
            "method": stats.method,
            "iterations": stats.iterations,
            "seconds": round(fe_seconds, 3),
        },
        "seconds": round(time.perf_counter() - started, 3),
    }


def _fingerprint(image: FemurImage) -> str:
    """What the pairs of a femur depend on (density, pixel size, geometry and loads), hashed:
    a femur grown anew under an old name is cut again, not skipped."""
    digest = hashlib.sha256(np.ascontiguousarray(image.density).tobytes())
    digest.update(repr((image.density.shape, image.pixel_size, image.femur)).encode())
    return digest.hexdigest()[:16]


def build_dataset(
    femurs: Sequence[str | os.PathLike[str] | FemurImage],
    out_dir: str | os.PathLike[str],
    *,
    patch: int = 12,
    stride: int = 8,
    factor: int = 10,
    lr_dtype: str = "float16",
    hr_dtype: str = "uint8",
    E0: float = TISSUE_MODULUS,
    nu: float = NU,
    penal: float = PENAL,
    void_modulus: float = VOID_MODULUS,
    scanner: Scanner | None = None,
    progress: bool = True,
    workers: int | None = None,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Write the patch pairs of femur images into a dataset folder, femur by femur.

    Per femur: LR density by :func:`downscale` (or by :func:`scanner_lr` with ``scanner``); FE
    of the LR image under the femur's load cases (``femur.problem(pixel_size * factor)``: its
    mask, forces and fixed edge; modified SIMP with ``E0``, ``nu``, ``penal``,
    ``Emin = void_modulus * E0``; SuperLU up to 200k unknowns, which a full-size LR femur's
    37k are); the windows of :func:`~femsr.encoding.patch_grid` that
    touch the femur (its FE mask or a positive LR pixel); their normalized inputs
    (:func:`~femsr.encoding.lr_patches`) and HR targets.
    Arrays are streamed to ``.npy`` files (memory stays bounded by a chunk of windows, whatever
    the stride), then ``index.json`` is rewritten (atomically). A femur already in the index,
    cut from the same image, is skipped, so a rerun resumes an interrupted build; one whose
    image changed since (a femur grown anew) is cut again. Settings must match the folder's.

    Parameters
    ----------
    femurs : sequence of path or FemurImage
        Femur image files (:func:`femsr.io.save_femur`) or images. Name and split come from
        ``meta["name"]`` (else the file stem) and ``meta["split"]`` (one of
        :data:`SPLITS`; default ``"train"``).
    out_dir : path
        The dataset folder (created if missing).
    patch, stride : int
        LR window side and offset (pixels); the HR window is ``patch * factor``.
    factor : int
        HR pixels per LR pixel along a side.
    lr_dtype : {"float16", "float32"}
        Storage of the inputs (see the module docstring for the error).
    hr_dtype : {"uint8", "float16", "float32"}
        Storage of the HR targets.
    E0, nu, penal : float
        Tissue modulus (MPa; :data:`femsr.defaults.TISSUE_MODULUS`), Poisson's ratio, SIMP
        exponent. The normalization makes the inputs independent of ``E0``.
    void_modulus : float
        Modulus of a void pixel as a fraction of ``E0`` (the SIMP ``Emin``). LR pixels inside
        the femur can be all marrow; at the TO's 1e-9 a region hanging on such pixels moves
        by metres and dominates its patches' normalized field, at 1e-3 the field stays that of
        the bone (``benchmarks/RESULTS.md``).
    scanner : Scanner, optional
        Make the LR images as a CT scanner does (:func:`scanner_lr`; each femur's noise seeded
        by its name) instead of as block means, for a network that reads clinical scans.
    progress : bool
        Show a tqdm bar of the femurs on stderr. Each femur cut is logged (INFO, logger
        ``femsr.dataset``) whatever ``progress``.
    workers, scheduler
        Cut the femurs in parallel, one task each, on a local Dask cluster of ``workers``
        single-threaded processes or on a running scheduler (:mod:`femsr.cluster`); the index
        is written as each finishes and ordered as ``femurs`` at the end, as a serial run's.

    Returns
    -------
    dict
        The index (also in ``out_dir/index.json``).

    Raises
    ------
    TypeError, ValueError
        On bad settings, a split other than train/test, femurs of different load-case counts,
        two femurs of one name, or a folder built with other settings.

    Examples
    --------
    >>> import tempfile
    >>> from femsr.femur import Femur
    >>> image = FemurImage(0.4 * Femur().mask(0.4), 0.4, Femur(), {"name": "f"})
    >>> index = build_dataset([image], tempfile.mkdtemp(), patch=4, stride=4, factor=5,
    ...                       progress=False)
    >>> index["counts"], index["femurs"][0]["lr_shape"]
    ({'train': 91, 'validation': 0, 'test': 0}, [52, 48])
    """
    settings = _settings(patch, stride, factor, lr_dtype, hr_dtype, E0, nu, penal, void_modulus)
    if scanner is not None:  # only then: folders of block means resume as they were written
        settings["scanner"] = asdict(scanner)
        if not scanner.deblur:  # and folders of blurred scans
            del settings["scanner"]["deblur"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = _open_index(out, settings)
    names, todo = _todo(femurs, index)
    record = functools.partial(_record, index, out)
    cut = functools.partial(_cut, out=out, settings=settings)
    with tqdm(
        total=len(todo), desc="dataset", unit="femur", dynamic_ncols=True, disable=not progress
    ) as bar:
        if workers is None and scheduler is None:
            for job in todo:
                bar.set_postfix_str(job[0])
                record(cut(job), bar)
        else:
            from femsr import cluster

            with cluster.client(workers, scheduler=scheduler) as dask_client:
                cluster.run(
                    dask_client,
                    cut,
                    todo,
                    threads=1,
                    on_done=lambda _, entry: record(entry, bar),
                )
    # In the order given, however often it was resumed: training draws pairs by position.
    order = {name: k for k, name in enumerate(names)}
    index["femurs"].sort(key=lambda entry: order.get(entry["name"], len(order)))
    _write_index(out, index)
    return index


def _settings(
    patch: int,
    stride: int,
    factor: int,
    lr_dtype: str,
    hr_dtype: str,
    E0: float,
    nu: float,
    penal: float,
    void_modulus: float,
) -> dict[str, Any]:
    """:func:`build_dataset`'s settings, checked: what the folder's index records."""
    patch = check_int("patch", patch, 1)
    stride = check_int("stride", stride, 1)
    factor = check_int("factor", factor, 1)
    if stride > patch:
        raise ValueError(f"stride must be <= patch ({patch}), got {stride}")
    if lr_dtype not in LR_DTYPES:
        raise ValueError(f"lr_dtype must be one of {LR_DTYPES}, got {lr_dtype!r}")
    if hr_dtype not in HR_DTYPES:
        raise ValueError(f"hr_dtype must be one of {HR_DTYPES}, got {hr_dtype!r}")
    for label, value in (("E0", E0), ("nu", nu), ("penal", penal)):
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"{label} must be a finite number, got {value!r}")
    if not (isinstance(void_modulus, (int, float)) and 0 <= void_modulus < 1):
        raise ValueError(f"void_modulus must lie in [0, 1), got {void_modulus!r}")
    return {
        "patch": patch,
        "stride": stride,
        "factor": factor,
        "lr_dtype": lr_dtype,
        "hr_dtype": hr_dtype,
        "E0": float(E0),
        "nu": float(nu),
        "penal": float(penal),
        "void_modulus": float(void_modulus),
    }


def _open_index(out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The folder's index (new, or resumed with the same settings), keeping only the femurs
    whose three files are all there."""
    index = resume_run(
        out / INDEX,
        settings,
        lambda path: load_index(path.parent),
        remedy="use another folder or the same settings",
    )
    if index is None:
        index = {"format": FORMAT, "settings": settings, "normalization": NORMALIZATION}
        index["femurs"] = []
    index["femurs"] = [
        entry
        for entry in index["femurs"]
        if all((out / entry[key]).is_file() for key in ("lr", "hr", "corners"))
    ]
    return index


def _todo(
    femurs: Sequence[str | os.PathLike[str] | FemurImage], index: dict[str, Any]
) -> tuple[list[str], list[tuple[str, str | os.PathLike[str] | FemurImage]]]:
    """The names of all ``femurs``, in order, and the (name, femur) jobs still to cut.

    A femur in ``index`` cut from another image than its own is dropped from the index.
    """
    sources = {entry["name"]: entry.get("source") for entry in index["femurs"]}
    names: list[str] = []
    todo: list[tuple[str, str | os.PathLike[str] | FemurImage]] = []
    for k, item in enumerate(femurs):
        source = None if isinstance(item, FemurImage) else item
        image = item if isinstance(item, FemurImage) else load_femur(item)
        name = _femur_name(image, source, k)
        if name in names:
            raise ValueError(f"two femurs are named {name!r}; names must be unique")
        names.append(name)
        if name in sources:
            if sources[name] == _fingerprint(image):
                continue
            logger.info("%s changed since its pairs were cut: cutting it again", name)
            index["femurs"] = [entry for entry in index["femurs"] if entry["name"] != name]
        split = image.meta.get("split", "train")
        if split not in SPLITS:
            raise ValueError(f"femur {name}: split must be one of {SPLITS}, got {split!r}")
        todo.append((name, item))
    return names, todo


def _record(index: dict[str, Any], out: Path, entry: dict[str, Any], bar: Any) -> None:
    """Add one femur's entry to the index and write it: the femur is done."""
    if index["femurs"] and len(entry["cases"]) != len(index["femurs"][0]["cases"]):
        raise ValueError(
            f"femur {entry['name']} has {len(entry['cases'])} load cases, the dataset "
            f"{len(index['femurs'][0]['cases'])}; all femurs need the same number"
        )
    index["femurs"].append(entry)
    _write_index(out, index)
    logger.info(
        "%s (%s): %d pairs of %d windows, FE %.1f s, total %.1f s",
        entry["name"],
        entry["split"],
        entry["count"],
        entry["windows"],
        entry["fe"]["seconds"],
        entry["seconds"],
    )
    bar.update()


def _cut(
    job: tuple[str, str | os.PathLike[str] | FemurImage], out: Path, settings: dict[str, Any]
) -> dict[str, Any]:
    """One femur's pairs (a task of its own on a cluster): its index entry."""
    name, item = job
    image = item if isinstance(item, FemurImage) else load_femur(item)
    return _pairs(image, out, name, settings)


def _write_index(out: Path, index: dict[str, Any]) -> None:
    index["counts"] = {
        split: sum(e["count"] for e in index["femurs"] if e["split"] == split) for split in SPLITS
    }
    if index["femurs"]:
        ncases = len(index["femurs"][0]["cases"])
        index["channels"] = ["density"] + [f"{a}_{c}" for c in range(ncases) for a in ("ux", "uy")]
    with atomic_write(out / INDEX, "w") as stream:
        json.dump(index, stream, indent=1)
