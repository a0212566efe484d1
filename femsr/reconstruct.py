"""Reconstruction: a 500 µm femur density in, a 50 µm one out.

:func:`reconstruct` runs the pipeline the network was trained on, in the same order and with the
same code as the training data (:mod:`femsr.encoding`):

1. **LR FE** (:func:`femsr.encoding.lr_displacement`, the material of the training data) gives
   the displacement field of the LR image under its load cases, unless the caller passes the
   field.
2. **Windows**: the :func:`~femsr.encoding.patch_grid` (the model's patch, stride 2/3 of it:
   12 px at 8), the ones touching the femur (FE mask or a positive LR pixel,
   :func:`~femsr.encoding.window_mask`) normalized per patch by
   :func:`~femsr.encoding.lr_patches`. Windows wholly outside the femur are not run: they are
   void.
3. **Inference** (:func:`femsr.export.predict`) in batches of ``batch_size`` windows, each
   written straight into the grid of HR patches, so memory holds one batch of network
   activations plus the HR grid, whatever the image size. With ``tta=True`` each window is run
   under the eight symmetries of the square (the training augmentation,
   :func:`femsr.encoding.transform`) and the outputs, mapped back, are averaged.
4. **Quilting** (:func:`femsr.quilt.quilt`) joins the HR patches along minimum-error seams (or
   by averaging, or a straight cut), and the HR pixels of void LR pixels are set to 0: the LR
   image is the block mean of a density >= 0, so a 0 LR pixel has a void 10 x 10 block (this
   also removes the sigmoid's small floor in the background).
5. **Refinement and redrawing** (optional, ``refine`` and ``crisp``): a few iterations of
   topology optimization at the HR pixel size with every block held at its LR pixel's mass
   (:mod:`femsr.refine`), and the crisp redrawing at those masses (:mod:`femsr.crisp`).

torch is imported when :func:`reconstruct` runs, never by ``import femsr``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from femsr import defaults, encoding
from femsr.checks import check_finite_array, check_int, check_mask
from femsr.crisp import draw_struts
from femsr.femur import Femur, Problem
from femsr.io import FemurImage
from femsr.quilt import METHODS, quilt
from femsr.refine import blur_block, blurry_scan, redraw
from femsr.refine import refine as refine_density
from femsr.refine import settings as refine_settings

if TYPE_CHECKING:
    from femsr.export import LoadedModel
    from femsr.model import SRNet
    from femsr.scan import Scan

__all__ = [
    "BUNDLED_DEBLURRED_MODEL",
    "BUNDLED_MODEL",
    "BUNDLED_SCAN_MODEL",
    "adds_noise",
    "reconstruct",
    "reconstruct_file",
    "reconstruct_files",
]

logger = logging.getLogger(__name__)

# Weights and config (femsr.export.save_state): read in a tenth of a second, where a .pt2
# program takes seconds to deserialize on a process's first call.
BUNDLED_MODEL = Path(__file__).parent / "data" / "model.pt"
# A scan's default: the network trained on LR images made as a CT scanner makes them
# (femsr.dataset.scanner_lr), since one trained on block means draws too little bone from a
# blurred, noisy slice.
BUNDLED_SCAN_MODEL = Path(__file__).parent / "data" / "model_scan.pt"
# A deblurred scan's: the block-mean model fine-tuned on scanner-made LR images deblurred as
# femsr.scan.lr_image deblurs a scan (femsr.dataset.Scanner(deblur=True)), for a point-spread
# function narrower than defaults.DEBLURRED_MODEL_MAX_FWHM.
BUNDLED_DEBLURRED_MODEL = Path(__file__).parent / "data" / "model_deblurred.pt"
STAGES = ("model", "lr_fe", "inference", "quilting", "refine", "redraw", "total")
# Finer inputs are taken for a high-resolution image given by mistake: the network turns
# 500 µm pixels into 50 µm ones.
_FINEST_LR = 0.2


def _load(model: object, device: str) -> LoadedModel | SRNet:
    from femsr.export import LoadedModel, load_model
    from femsr.model import SRNet

    if isinstance(model, (LoadedModel, SRNet)):
        return model
    if model is None:
        if not BUNDLED_MODEL.is_file():
            raise FileNotFoundError(
                f"no bundled model is installed yet ({BUNDLED_MODEL}); pass model= (femsr "
                f"reconstruct --model) the path of an exported model (femsr.export.export_model)"
            )
        model = BUNDLED_MODEL
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be a path, a LoadedModel or an SRNet, got {type(model).__name__}"
        )
    return load_model(model, device=device)


def _check_lr(lr: object) -> np.ndarray:
    if not isinstance(lr, np.ndarray):
        raise TypeError(f"lr must be a numpy array or a FemurImage, got {type(lr).__name__}")
    if lr.dtype == np.bool_ or not (
        np.issubdtype(lr.dtype, np.floating) or np.issubdtype(lr.dtype, np.integer)
    ):
        raise TypeError(f"lr must hold real numbers (a density in [0, 1]), got dtype {lr.dtype}")
    if lr.ndim != 2 or lr.size == 0:
        raise ValueError(f"lr must be a non-empty 2-D density image (H, W), got shape {lr.shape}")
    array = np.asarray(lr, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError("lr contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"lr must lie in [0, 1], got values in [{low:g}, {high:g}]")
    return array


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


def _load_problem(
    density: np.ndarray,
    femur: Femur | None,
    pixel_size: float | None,
    forces: np.ndarray | None,
    fixed: np.ndarray | None,
    mask: np.ndarray | None,
) -> Problem:
    """The LR FE problem from a femur record or from the caller's forces, fixed DOFs and mask."""
    shape = density.shape
    region = None if mask is None else check_mask(mask, shape).astype(bool)
    if femur is not None:
        if forces is not None or fixed is not None:
            raise ValueError("give either femur= or forces= and fixed=, not both")
        if not isinstance(femur, Femur):
            raise TypeError(f"femur must be a femsr.femur.Femur, got {type(femur).__name__}")
        if pixel_size is None:
            raise ValueError(
                "pixel_size (mm) of the LR image is needed to place the femur's loads "
                "(or pass a FemurImage, which carries it)"
            )
        problem = femur.problem(pixel_size)
        if problem.mask.shape != shape:
            raise ValueError(
                f"lr has shape {shape}, but the femur's grid at {pixel_size} mm is "
                f"{problem.mask.shape}; the LR image must be on the femur's grid"
            )
        return problem if region is None else dataclasses.replace(problem, mask=region)
    if forces is None or fixed is None:
        raise ValueError(
            "reconstruct needs the displacement channels: pass displacement=, or a load spec "
            "to compute them (femur= with pixel_size=, a FemurImage, or forces= and fixed=)"
        )
    loads = check_finite_array("forces", forces, 4)
    ncases = loads.shape[0]
    return Problem(
        mask=check_mask(density > 0, shape).astype(bool) if region is None else region,
        forces=loads,
        fixed=fixed,
        weights=np.full(ncases, 1.0 / max(ncases, 1)),
        names=tuple(f"case {k}" for k in range(ncases)),
        # Square Q4 stiffness does not depend on h, and thickness only scales u, which the
        # per-patch normalization removes: any values do.
        pixel_size=0.5 if pixel_size is None else float(pixel_size),
        thickness=1.0,
    )


def reconstruct(
    lr: np.ndarray | FemurImage,
    *,
    displacement: np.ndarray | None = None,
    femur: Femur | None = None,
    pixel_size: float | None = None,
    forces: np.ndarray | None = None,
    fixed: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    model: str | os.PathLike[str] | LoadedModel | SRNet | None = None,
    device: str = "auto",
    batch_size: int = defaults.INFERENCE_BATCH,
    method: str = "seam",
    dtype: str | None = None,
    tta: bool = False,
    crisp: bool = False,
    refine: int | bool = 0,
    mass_block: int | None = None,
    progress: bool = False,
    stats: dict[str, Any] | None = None,
) -> np.ndarray:
    """Super-resolve an LR femur density (500 µm) by the network, ``scale`` times (50 µm).

    The network needs the displacement channels of the LR image: pass them
    (``displacement=``), or a load spec to compute them by LR FE exactly as the training data
    did (:func:`femsr.encoding.lr_displacement`): a femur record (``femur=`` with
    ``pixel_size=``, or ``lr`` as a :class:`~femsr.io.FemurImage`, which carries both), or
    your own ``forces=`` and ``fixed=`` (with ``mask=``). Loads of any magnitude do: each
    patch's field is normalized (:data:`femsr.encoding.NORMALIZATION`).

    Parameters
    ----------
    lr : ndarray, shape (H, W), or FemurImage
        LR density in [0, 1] (any real dtype), row 0 at the top. A FemurImage gives its
        density, ``pixel_size`` and ``femur``.
    displacement : ndarray, shape (ncases, H+1, W+1, 2), optional
        Nodal displacements of the LR image (x right, y up), e.g. from
        :func:`femsr.encoding.lr_displacement`; ``2 * ncases + 1`` must be the model's input
        channels. Excludes a load spec.
    femur : femsr.femur.Femur, optional
        Load spec: the femur's load cases, fixed edge and mask on the LR grid
        (``femur.problem(pixel_size)``, whose shape must be ``(H, W)``).
    pixel_size : float, optional
        LR pixel side (mm), needed with ``femur``.
    forces : ndarray, shape (ncases, H+1, W+1, 2), optional
        Load spec of your own: nodal forces per case (any unit; only the pattern counts).
    fixed : ndarray of bool, shape (H+1, W+1, 2), optional
        Fixed DOFs, with ``forces``.
    mask : ndarray of bool, shape (H, W), optional
        The femur (FE mask): elements in the FE model, zero displacement channels outside it,
        and windows that touch it (or a positive LR pixel) are run. Default: the femur's mask
        with ``femur``, else ``lr > 0``.
    model : path, LoadedModel or SRNet, optional
        An exported model file (:func:`femsr.export.export_model`, any format), a loaded one,
        or an eager network. Default: the bundled model (``femsr/data/model.pt``); for a
        scan's image (:func:`femsr.scan.lr_image`, whose ``meta`` holds its ``landmarks``),
        the bundled model for deblurred scans (:data:`BUNDLED_DEBLURRED_MODEL`,
        ``femsr/data/model_deblurred.pt``) if the scan was deblurred (``psf_fwhm`` in its
        ``meta``) by less than :data:`femsr.defaults.DEBLURRED_MODEL_MAX_FWHM`, the bundled
        model if by that or more, else the bundled scan model (:data:`BUNDLED_SCAN_MODEL`,
        ``femsr/data/model_scan.pt``).
    device : str
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``...; a given model is
        moved there.
    batch_size : int
        Windows per forward pass; bounds the memory of the activations. The result does not
        depend on it.
    method : {"seam", "average", "cut"}
        Quilting of the overlaps (:func:`femsr.quilt.quilt`).
    dtype : {"float16", "bfloat16"}, optional
        Mixed-precision inference (:func:`femsr.export.predict`); default float32.
    tta : bool
        Test-time dihedral averaging (:func:`femsr.export.predict`): each window through the
        network under the eight symmetries of the square (density and displacement vectors
        turned and mirrored together), the outputs mapped back and averaged. Eight times the
        inference.
    crisp : bool
        Redraw the result crisp (0 or 1), each block of ``scale`` x ``scale`` pixels at the
        bone mass of its LR pixel (:func:`femsr.crisp.draw_struts` with ``mass=lr``): the
        network draws struts blurred over a few pixels, which the SIMP stiffness penalizes;
        crisp, every strut it draws keeps a solid core. About a second at full size.
    refine : int or bool
        OC iterations of topology optimization under the femur's load cases at the HR pixel
        size, from the network's result, each ``scale`` x ``scale`` block held at its LR
        pixel's bone mass (:func:`femsr.refine.refine`), then redrawn crisp
        (:func:`femsr.refine.redraw`): bone moves inside its blocks to where the loads call
        for it. True: the iterations chosen on the validation femurs for the input, and the
        redrawing's density weight is the input's whatever the iterations
        (:func:`femsr.refine.settings`: 8 and 5; for a scan deblurred by 0.6 mm or more,
        12 and 7, but 8 and 7 without ``tta`` from 0.85 mm on where the scan's pixels are
        finer than 0.6 mm). Needs the femur (``femur=`` or a FemurImage). 0 or False: none. Minutes
        at full size (an FE solve of the HR femur each).
    mass_block : int, optional
        LR pixels along a side of the blocks whose bone mass ``refine`` holds. Default: as
        wide as the point-spread function a scan's image was deblurred by (``psf_fwhm`` in its
        ``meta``; :func:`femsr.refine.blur_block`: 2 x 2 LR pixels at 1.0 mm, one at 0.7 mm),
        else 1.
    progress : bool
        Show a tqdm bar of the windows run through the network, and of the refinement's
        iterations, on stderr. The stages and
        their seconds are logged (DEBUG, logger ``femsr.reconstruct``) whatever ``progress``.
    stats : dict, optional
        Filled with the seconds of each stage, ``"model"`` (loading), ``"lr_fe"``,
        ``"inference"``, ``"quilting"``, ``"refine"``, ``"redraw"`` (``crisp`` or ``refine``)
        and ``"total"``, and the counts ``"windows"`` (of the grid) and ``"inferred"`` (run
        through the network), ``"device"``, ``"fe_method"``, ``"tta"``, ``"crisp"`` (whether
        the result was redrawn) and ``"refine_iterations"``.

    Returns
    -------
    ndarray of float32, shape (scale * H, scale * W)
        HR density in [0, 1].

    Raises
    ------
    TypeError
        On an input of the wrong type or dtype.
    ValueError
        On a wrong shape, NaN/inf, a density outside [0, 1], a displacement of another grid,
        a model whose input channels do not match ``1 + 2 * ncases``, missing or conflicting
        load specs, an empty mask, a floating region in the FE, or a bad option.
    FileNotFoundError
        If the model file (or, by default, the bundled model) does not exist.

    Examples
    --------
    A uniform image through an untrained network with the density skip (its tail starts at
    zero, so it returns the upsampled density):

    >>> from femsr.model import ModelConfig, build_model
    >>> net = build_model(ModelConfig(width=4, n_blocks=1, up_width=2))
    >>> lr = np.full((20, 28), 0.5)
    >>> hr = reconstruct(lr, displacement=np.zeros((3, 21, 29, 2)), model=net, device="cpu")
    >>> hr.shape, hr.dtype, bool(np.allclose(hr, 0.5, atol=1e-5))
    ((200, 280), dtype('float32'), True)
    """
    started = time.perf_counter()
    seconds = dict.fromkeys(STAGES, 0.0)
    psf_fwhm = scan_pixel = None
    if isinstance(lr, FemurImage):
        if femur is None and displacement is None and forces is None:
            femur = lr.femur
        if pixel_size is None:
            pixel_size = lr.pixel_size
        psf_fwhm = lr.meta.get("psf_fwhm")
        if "spacing" in lr.meta:
            scan_pixel = max(lr.meta["spacing"])
        if model is None and "landmarks" in lr.meta:
            model = _scan_model(psf_fwhm)
        lr = lr.density
    density = _check_lr(lr)
    shape = (int(density.shape[0]), int(density.shape[1]))
    batch_size = _check_options(batch_size, tta, method, pixel_size, shape)
    if not isinstance(crisp, bool):
        raise TypeError(f"crisp must be a bool, got {type(crisp).__name__}")
    iterations, density_weight = refine_settings(psf_fwhm, tta=tta, scan_pixel=scan_pixel)
    if isinstance(refine, bool):
        refine = iterations if refine else 0
    refine = check_int("refine", refine, 0)
    if mass_block is not None:
        mass_block = check_int("mass_block", mass_block, 1)
    if refine and femur is None:
        raise ValueError(
            "refine optimizes under the femur's load cases at the HR pixel size: pass femur= "
            "with pixel_size=, or a FemurImage"
        )

    tick = time.perf_counter()
    network = _load(model, device)
    seconds["model"] = time.perf_counter() - tick
    config = network.config
    ncases = _load_cases(config.in_channels)

    fe_method = "given"
    if displacement is not None:
        if femur is not None or forces is not None or fixed is not None:
            raise ValueError("give either displacement= or a load spec (femur=, forces=), not both")
        u = _check_displacement(displacement, shape)
        region = density > 0 if mask is None else check_mask(mask, shape).astype(bool)
    else:
        problem = _load_problem(density, femur, pixel_size, forces, fixed, mask)
        logger.debug("reconstruct: LR FE of the load cases")
        tick = time.perf_counter()
        u, solve_stats = encoding.lr_displacement(density, problem)
        seconds["lr_fe"] = time.perf_counter() - tick
        fe_method = solve_stats.method
        region = problem.mask
    if u.shape[0] != ncases:
        raise ValueError(
            f"the model takes {config.in_channels} input channels (density + {ncases} load "
            f"cases), but the displacement has {u.shape[0]} load case(s)"
        )

    patch, scale = config.patch_size, config.scale
    stride = max(-(-patch // 2), round(2 * patch / 3))
    grid = encoding.patch_grid(shape, patch, stride)
    run = encoding.window_mask(region | (density > 0), grid, patch)
    corners = grid[run]
    inputs = encoding.lr_patches(density, u, corners, patch=patch, mask=region)

    from femsr.export import place

    tick = time.perf_counter()
    network = place(network, device)  # once: an eager network on another device is copied
    tiles = _infer(network, inputs, run, patch * scale, batch_size, dtype, tta, progress)
    seconds["inference"] = time.perf_counter() - tick

    tick = time.perf_counter()
    result = _quilt(tiles, density, stride * scale, scale, method)
    seconds["quilting"] = time.perf_counter() - tick

    if refine:
        assert femur is not None and pixel_size is not None  # checked with the load spec
        tick = time.perf_counter()
        hr_problem = femur.problem(pixel_size / scale)
        block = blur_block(psf_fwhm, pixel_size) if mass_block is None else mass_block
        result = refine_density(
            result, density, hr_problem, iterations=refine, block=block, progress=progress
        )
        seconds["refine"] = time.perf_counter() - tick
    if crisp or refine:
        tick = time.perf_counter()
        if refine:
            result = redraw(result, density, block, density_weight)
        else:
            result = draw_struts(result, scale, mass=density)
        seconds["redraw"] = time.perf_counter() - tick

    seconds["total"] = time.perf_counter() - started
    if stats is not None:
        stats.update(seconds)
        stats.update(
            windows=int(run.size),
            inferred=len(corners),
            device=str(_device_of(network)),
            fe_method=fe_method,
            tta=tta,
            crisp=crisp or bool(refine),
            refine_iterations=refine,
        )
    logger.debug(
        "reconstruct: %d of %d windows, LR FE %.2f s, inference %.2f s, quilting %.2f s",
        len(corners),
        run.size,
        seconds["lr_fe"],
        seconds["inference"],
        seconds["quilting"],
    )
    return result


def _check_options(
    batch_size: object, tta: object, method: str, pixel_size: object, shape: tuple[int, int]
) -> int:
    """Check :func:`reconstruct`'s options for an LR image of ``shape``: the batch size."""
    batch_size = _check_batch_size(batch_size)
    if not isinstance(tta, bool):
        raise TypeError(f"tta must be a bool, got {type(tta).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if pixel_size is not None and not (
        isinstance(pixel_size, (int, float)) and np.isfinite(pixel_size) and pixel_size > 0
    ):
        raise ValueError(f"pixel_size must be a positive number of mm, got {pixel_size!r}")
    if pixel_size is not None and pixel_size < _FINEST_LR:
        raise ValueError(
            f"lr has a pixel size of {pixel_size:g} mm: that is a high-resolution image, and "
            f"reconstruct would make it {10 * shape[0]}x{10 * shape[1]}; pass the 500 µm image "
            f"(femsr.dataset.downscale(hr) gives it)"
        )
    return batch_size


def _load_cases(in_channels: int) -> int:
    """The load cases a model of ``in_channels`` inputs takes: density plus (ux, uy) each."""
    if in_channels % 2 != 1:
        raise ValueError(
            f"the model takes {in_channels} input channels; reconstruct feeds density "
            f"plus (ux, uy) per load case, an odd number"
        )
    return (in_channels - 1) // 2


def _check_displacement(displacement: object, shape: tuple[int, int]) -> np.ndarray:
    """The caller's displacement, checked to be nodal on the LR grid of ``shape``."""
    u = check_finite_array("displacement", displacement, 4)
    if u.shape[1:] != (shape[0] + 1, shape[1] + 1, 2):
        raise ValueError(
            f"displacement must be nodal on lr's grid, (ncases, {shape[0] + 1}, "
            f"{shape[1] + 1}, 2), got shape {u.shape}"
        )
    return u


def _infer(
    network: LoadedModel | SRNet,
    inputs: np.ndarray,
    run: np.ndarray,
    hr_size: int,
    batch_size: int,
    dtype: str | None,
    tta: bool,
    progress: bool,
) -> np.ndarray:
    """The HR patch of each window of the grid (``run``: the windows run), in batches.

    Returns the grid of HR patches, shape ``(*run.shape, hr_size, hr_size)``, 0 where not run.
    """
    from femsr.export import predict

    tiles = np.zeros((*run.shape, hr_size, hr_size), dtype=np.float32)
    rows, cols = np.nonzero(run)
    bar = tqdm(
        total=len(inputs),
        desc="reconstruct",
        unit="window",
        leave=None,  # kept when alone, cleared under an outer bar (report's reconstructions)
        dynamic_ncols=True,
        disable=not progress,
    )
    for start in range(0, len(inputs), batch_size):
        chunk = slice(start, start + batch_size)
        out = predict(network, inputs[chunk], batch_size=batch_size, dtype=dtype, tta=tta)
        tiles[rows[chunk], cols[chunk]] = out[:, 0]
        bar.update(len(out))
    bar.close()
    return tiles


def _quilt(
    tiles: np.ndarray, density: np.ndarray, step: int, scale: int, method: str
) -> np.ndarray:
    """The HR image of the patches, void under every void LR pixel, in [0, 1]."""
    hr_shape = (density.shape[0] * scale, density.shape[1] * scale)
    image = quilt(tiles, step, method=method, shape=hr_shape)
    void = np.repeat(np.repeat(density == 0, scale, axis=0), scale, axis=1)
    image[void] = 0.0
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _device_of(network: LoadedModel | SRNet) -> object:
    from femsr.export import LoadedModel

    if isinstance(network, LoadedModel):
        return network.device
    return next(network.parameters()).device


# Scans (femsr.scan) and the image files a folder given to reconstruct_files may hold.
SCAN_SUFFIXES = (".dcm", ".nii", ".nii.gz")
IMAGE_SUFFIXES = (".npy", ".npz", ".png", ".tif", ".tiff", ".dcm", ".nii", ".gz")


@functools.lru_cache(maxsize=2)
def _loaded(model: str | None, device: str) -> LoadedModel | SRNet:
    """A model loaded once per process: a worker reconstructing many images reads it once."""
    return _load(model, device)


def reconstruct_file(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    pixel_size: float | None = None,
    model: str | os.PathLike[str] | None = None,
    device: str = "auto",
    landmarks: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    psf_fwhm: float | str | None = "auto",
    calibration: tuple[float, float] | None = None,
    as_scan: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Reconstruct an LR image file (:func:`femsr.io.read_image`) into ``target``, atomically.

    A femur file carries its pixel size and femur; a bare image gets the default femur's load
    cases at ``pixel_size`` (default the 500 µm LR grid). A scan (DICOM ``.dcm`` or a folder
    of one DICOM series, :func:`femsr.scan.read_scan`; NIfTI ``.nii``/``.nii.gz``; with
    ``as_scan``, any file :func:`femsr.scan.read_scan` reads, such as a TIFF of a CT slice, its
    spacing from its resolution tags or else ``pixel_size``) is read,
    calibrated (``calibration``: the HU of density 0 and 1, :func:`femsr.scan.density_from_hu`;
    default :data:`femsr.scan.MARROW_HU` and :data:`femsr.scan.TISSUE_HU`), resampled,
    segmented and fitted by
    :func:`femsr.scan.lr_image`, which gives its femur; ``landmarks`` (a mapping, or a JSON
    file of them, :func:`femsr.scan.read_landmarks`) replace those found in the scan, in the
    scan's frame. A scan is deblurred by its scanner's point-spread function first
    (:func:`femsr.scan.lr_image`), of the width read off its shaft's edges
    (``psf_fwhm="auto"``, :func:`femsr.scan.estimate_psf_fwhm`) or of ``psf_fwhm`` mm, and
    reconstructed by :data:`BUNDLED_DEBLURRED_MODEL` (by :data:`BUNDLED_MODEL` at a width of
    :data:`femsr.defaults.DEBLURRED_MODEL_MAX_FWHM` or more); with ``psf_fwhm=None``, or
    where no width can be read off the scan (a warning says so), it is reconstructed as it is
    by :data:`BUNDLED_SCAN_MODEL`; ``model`` names another. A ``.nii``/``.nii.gz`` target gets
    the HR image with its spacing (:func:`femsr.scan.write_scan`), placed where the scan's
    femur lies (:func:`femsr.scan.box_placement`: it overlays the scan in a viewer), others
    :func:`femsr.io.write_image`. ``options`` go to :func:`reconstruct`, which takes a scan's
    :class:`femsr.io.FemurImage` (refined with the mass held over blocks as wide as its
    deblurring unless ``mass_block`` says otherwise). Returns its ``stats``
    with the LR and HR shapes, and for a scan the ``psf_fwhm`` it was deblurred by (None if
    not), the ``noise`` read off it and the ``dither`` added (HU; :func:`femsr.scan.lr_image`,
    whose ``dither`` it asks for unless ``tta``),
    the fitted femur's ``side``, ``neck_shaft_angle`` (degrees) and ``fit_dice`` (its
    outline's overlap with the segmented femur) and the ``tilt`` the scan was turned upright
    from (degrees, :func:`femsr.scan.lr_image`).

    Raises
    ------
    ValueError
        If ``pixel_size`` contradicts the file's own, on bad ``landmarks``, ``psf_fwhm`` or
        ``calibration``, on ``landmarks``, a ``psf_fwhm`` in mm or a ``calibration`` for a
        source that is no scan, or on a bare image whose values are no density in [0, 1].
    """
    from femsr import femur, io, scan

    stored: float | None
    bone: Femur | None
    lr: FemurImage | np.ndarray
    read_off: dict[str, Any] = {}  # what a scan's reading found
    on_scan: tuple[Scan, Any] | None = None  # the scan and its frame's map to the femur box
    is_scan = as_scan or str(source).lower().endswith(SCAN_SUFFIXES) or Path(source).is_dir()
    if is_scan:
        if isinstance(landmarks, str | os.PathLike):
            landmarks = scan.read_landmarks(landmarks)
        given_spacing = None if pixel_size is None else (pixel_size, pixel_size)
        ct = scan.read_scan(source, spacing=given_spacing)
        if given_spacing is not None and not np.allclose(ct.spacing, given_spacing):
            raise ValueError(
                f"{str(source)!r} has pixels of {ct.spacing[0]:g} x {ct.spacing[1]:g} mm, "
                f"not {pixel_size} mm"
            )
        hu: dict[str, Any] = {}
        if calibration is not None:
            hu = dict(zip(("marrow", "tissue"), map(float, calibration), strict=True))
            scan.check_calibration(**hu)  # before the blur is read off the scan with it
        if psf_fwhm == "auto":
            psf_fwhm = _read_psf_fwhm(ct, source, hu)
        dither = adds_noise(ct.spacing, tta=options.get("tta", False))
        image = scan.lr_image(ct, landmarks=landmarks, psf_fwhm=psf_fwhm, dither=dither, **hu)
        density, stored, bone = image.density, image.pixel_size, image.femur
        read_off["psf_fwhm"] = image.meta["psf_fwhm"]
        read_off["noise"], read_off["dither"] = image.meta["noise"], image.meta["dither"]
        read_off["side"], read_off["tilt"] = bone.side, image.meta["tilt"]
        read_off["fit_dice"] = image.meta["fit_dice"]
        read_off["neck_shaft_angle"] = bone.neck_shaft_angle
        if model is None:
            model = _scan_model(image.meta["psf_fwhm"])
        lr = image  # whole: its meta says how wide the refinement's blocks are
        on_scan = (ct, image.meta["to_box"])
    else:
        scan_only = {
            "landmarks are": landmarks is not None,
            "psf_fwhm is": psf_fwhm not in (None, "auto"),
            "a calibration is": calibration is not None,
        }
        given = next((name for name, passed in scan_only.items() if passed), None)
        if given is not None:
            raise ValueError(
                f"{given} a scan's ({', '.join(SCAN_SUFFIXES)}, or any with as_scan); "
                f"{str(source)!r} is none"
            )
        density, stored, bone = io.read_image(source)
        lr = density
        if density.min() < 0.0 or density.max() > 1.0:
            raise ValueError(
                f"{str(source)!r} holds values in [{density.min():g}, {density.max():g}], no "
                "bone density in [0, 1]; a CT slice (say, a TIFF of HU) is read as a scan "
                "with as_scan (femsr reconstruct --scan)"
            )
    if not is_scan and stored is not None and pixel_size is not None and stored != pixel_size:
        raise ValueError(f"{str(source)!r} has a pixel size of {stored} mm, not {pixel_size} mm")
    pixel = stored or pixel_size or femur.LR_PIXEL
    stats: dict[str, Any] = {}
    hr = reconstruct(
        lr,
        femur=Femur() if bone is None else bone,
        pixel_size=pixel,
        model=_loaded(None if model is None else str(model), device),
        device=device,
        stats=stats,
        **options,
    )
    hr_pixel = pixel / (hr.shape[0] // density.shape[0])
    if str(target).lower().endswith((".nii", ".nii.gz")):  # a scan's result, with its spacing
        where = None if on_scan is None else scan.box_placement(*on_scan, hr.shape, hr_pixel)
        scan.write_scan(target, scan.Scan(hr, (hr_pixel, hr_pixel), "density", affine=where))
    else:
        io.write_image(target, hr, pixel_size=hr_pixel)
    return {**stats, **read_off, "lr_shape": density.shape, "hr_shape": hr.shape}


def adds_noise(spacing: tuple[float, float], *, tta: bool) -> bool:
    """Whether :func:`reconstruct_file` asks :func:`femsr.scan.lr_image` to bring a blurry scan
    of this ``spacing`` (mm) up to :data:`femsr.defaults.BLURRY_SCAN_NOISE_HU` (its
    ``dither``): for an unaveraged reconstruction of pixels finer than
    :data:`femsr.defaults.BLURRY_FINE_PIXEL_MAX` only, where the noise was chosen and helps.
    """
    return not tta and max(spacing) < defaults.BLURRY_FINE_PIXEL_MAX


def _file_job(job: tuple[Path, Path], options: dict[str, Any]) -> dict[str, Any]:
    return reconstruct_file(*job, **options)


def _scan_model(psf_fwhm: float | None) -> Path:
    """The bundled model for a scan's image, deblurred by ``psf_fwhm`` mm or (None) not."""
    if psf_fwhm is None:
        return BUNDLED_SCAN_MODEL
    return BUNDLED_MODEL if blurry_scan(psf_fwhm) else BUNDLED_DEBLURRED_MODEL


def _read_psf_fwhm(
    ct: Scan, source: str | os.PathLike[str], calibration: dict[str, float]
) -> float | None:
    """The scan's point-spread function read off its shaft, or None where it cannot be; a
    scan with no femur to segment is refused here, as reading it would refuse it."""
    from femsr.scan import SegmentationError, estimate_psf_fwhm

    try:
        return estimate_psf_fwhm(ct, **calibration)
    except SegmentationError:
        raise
    except ValueError as error:
        logger.warning(
            "%s: %s; reconstructed without deblurring, by the scan model (give the scanner's "
            "psf_fwhm in mm to deblur it)",
            source,
            error,
        )
        return None


def reconstruct_files(
    sources: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    suffix: str = ".npz",
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    **options: Any,
) -> list[Path]:
    """Reconstruct every image of ``sources`` into ``out_dir/<stem><suffix>``.

    Images whose output exists are skipped, so a rerun resumes. With ``workers`` (a local Dask
    cluster of that many single-threaded processes) or ``scheduler`` (a running Dask
    scheduler's address) the images are reconstructed in parallel, one task each, the model
    loaded once per worker (:mod:`femsr.cluster`). ``options`` go to
    :func:`reconstruct_file`. Returns the output paths in the order of ``sources``.

    Raises
    ------
    ValueError
        If two sources share a stem (their outputs would collide).
    """
    out = Path(out_dir)
    # x.nii.gz is named x, as x.npz is.
    stems = [Path(Path(source).name.removesuffix(".gz")).stem for source in sources]
    targets = [out / f"{stem}{suffix}" for stem in stems]
    if len(set(targets)) != len(targets):
        raise ValueError("two inputs share a file name stem: their outputs would collide")
    jobs = [(Path(s), t) for s, t in zip(sources, targets, strict=True) if not t.exists()]
    logger.info("reconstruct: %d of %d images to do", len(jobs), len(targets))
    with tqdm(
        total=len(jobs), desc="reconstruct", unit="image", dynamic_ncols=True, disable=not progress
    ) as bar:
        if workers is None and scheduler is None:
            for job in jobs:
                _file_job(job, options)
                bar.update()
        else:
            from femsr import cluster

            with cluster.client(workers, scheduler=scheduler) as dask_client:
                cluster.run(
                    dask_client,
                    functools.partial(_file_job, options=options),
                    jobs,
                    threads=1,
                    on_done=lambda job, _: bar.update(),
                )
    return targets
