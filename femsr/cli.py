"""The ``femsr`` command: one subcommand per stage of the pipeline.

Each subcommand is a handler and, beside it, the small function that declares its arguments;
they stay in one module past 600 lines so that ``femsr --help`` and the handlers share it.

A command's result goes to stdout; its messages go to stderr through :mod:`logging` (INFO by
default, WARNING with ``--quiet``, DEBUG with ``--verbose``, before or after the command), and
its progress bars (tqdm) to stderr when that is a terminal and ``--quiet`` is not given.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from femsr.defaults import (
    BATCH_SIZE,
    BLURRY_FINE_PIXEL_MAX,
    BLURRY_SCAN_NOISE_HU,
    DEBLURRED_MODEL_MAX_FWHM,
    EPOCHS,
    INFERENCE_BATCH,
    LEARNING_RATE,
    MARROW_HU,
    N_BLOCKS,
    TISSUE_HU,
    TISSUE_MODULUS,
    UP_WIDTH,
    WIDTH,
)

if TYPE_CHECKING:
    from femsr.io import FemurImage

    _Commands = argparse._SubParsersAction[argparse.ArgumentParser]

logger = logging.getLogger(__name__)

_E0_HELP = f"tissue modulus in MPa ({TISSUE_MODULUS:g})"
_TTA_HELP = "average each window over its 8 turns and mirrors (8x the inference)"
_CRISP_HELP = "redraw the result crisp (0/1) at the bone mass of every LR pixel, struts kept"
_REFINE_HELP = (
    "then N iterations (default {iterations}) of topology optimization under the femur's load "
    "cases, every LR pixel's bone mass held, and redraw it crisp: minutes at full size"
)
_RECONSTRUCT_REFINE_HELP = (
    "then N iterations of topology optimization under the femur's load cases, every LR "
    "pixel's bone mass held (a deblurred scan's over blocks as wide as its blur), and redraw it "
    "crisp: minutes at full size. Default {iterations}; {deblurred_iterations}, redrawn at a "
    "higher density weight, for a scan deblurred by {min_fwhm:g} mm or more, but "
    "{blurry_iterations} without --tta from {blurry_fwhm:g} mm on where its pixels are finer "
    "than {fine_pixel:g} mm"
)


def _add_refine(
    command: argparse.ArgumentParser, help: str = _REFINE_HELP, const: int | bool | None = None
) -> None:
    from femsr import refine

    const = refine.ITERATIONS if const is None else const
    help = help.format(
        iterations=refine.ITERATIONS,
        deblurred_iterations=refine.DEBLURRED_ITERATIONS,
        min_fwhm=refine.DEBLURRED_REFINEMENT_MIN_FWHM,
        blurry_iterations=refine.BLURRY_UNAVERAGED_ITERATIONS,
        blurry_fwhm=DEBLURRED_MODEL_MAX_FWHM,
        fine_pixel=BLURRY_FINE_PIXEL_MAX,
    )
    command.add_argument(
        "--refine", type=int, nargs="?", const=const, default=0, metavar="N", help=help
    )


def _fe(args: argparse.Namespace) -> int:
    """Solve the femur phantom's load cases on a density image and report the field."""
    from femsr import fem, femur

    bone = femur.Femur() if args.seed is None else femur.sample(args.seed)
    problem = bone.problem(args.pixel_size)
    density = np.where(problem.mask, args.density, 0.0)
    logger.info(
        "femur %dx%d px at %s mm, %s elements, %d load cases",
        *problem.mask.shape,
        args.pixel_size,
        f"{int(problem.mask.sum()):,}",
        len(problem.forces),
    )
    start = time.perf_counter()
    solver = fem.Solver(
        problem.fixed,
        mask=problem.mask,
        E0=args.E0,
        h=problem.pixel_size,
        thickness=problem.thickness,
    )
    u = solver.solve(density, problem.forces)
    seconds = time.perf_counter() - start
    stats = solver.stats
    logger.info(
        "solved in %.2f s (%s; assembly %.2f s, setup %.2f s, CG iterations %s)",
        seconds,
        stats.method,
        stats.assembly_seconds,
        stats.setup_seconds,
        stats.iterations,
    )
    for case, name in enumerate(problem.names):
        magnitude = np.linalg.norm(u[case], axis=-1)
        print(f"  {name:<20} max |u| = {magnitude.max():.4g} mm")
    if args.output:
        from femsr import io

        io.save_npz(args.output, displacement=u, density=density, mask=problem.mask)
        logger.info("wrote %s", args.output)
    return 0


def _add_fe(commands: _Commands) -> None:
    command = commands.add_parser(
        "fe", help="finite-element solve of the femur phantom's load cases"
    )
    command.add_argument(
        "--pixel-size", type=float, default=0.5, help="pixel side in mm (0.05 = full)"
    )
    command.add_argument(
        "--density", type=float, default=0.5, help="uniform density inside the femur"
    )
    command.add_argument("--E0", type=float, default=TISSUE_MODULUS, help=_E0_HELP)
    command.add_argument(
        "--seed", type=int, default=None, help="femur variant (default: the mean femur)"
    )
    command.add_argument("--output", help="write the displacements to this .npz file")
    command.set_defaults(run=_fe)


def _stages(text: str) -> list[object]:
    """``"0.2:60,0.1:12"`` -> stages of (pixel size mm, iterations), the rest as the default's
    stage of the same rank."""
    from femsr.generate import STAGES

    stages: list[object] = []
    for k, part in enumerate(text.split(",")):
        try:
            pixel, iterations = part.split(":")
            default = STAGES[min(k, len(STAGES) - 1)]
            stages.append(
                dataclasses.replace(default, pixel_size=float(pixel), iterations=int(iterations))
            )
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"stages must look like 0.2:60,0.1:12,0.05:2, got {text!r}"
            ) from None
    return stages


def _add_parallel(command: argparse.ArgumentParser, pieces: str) -> None:
    """--workers and --scheduler: the command's pieces as Dask tasks (femsr.cluster)."""
    parallel = command.add_mutually_exclusive_group()
    parallel.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"{pieces}, N at a time on a local Dask cluster, one core each (femsr[cluster])",
    )
    parallel.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help=f"{pieces} on the workers of a running Dask scheduler (tcp://host:8786)",
    )


def _generate(args: argparse.Namespace) -> int:
    """Grow the dataset's femurs by coarse-to-fine topology optimization."""
    from femsr import generate

    options = {} if args.stages is None else {"stages": args.stages}
    entries = generate.generate(
        args.output,
        count=args.count,
        test=args.test,
        validation=args.validation,
        seed=args.seed,
        only=args.only,
        progress=args.progress,
        workers=args.workers,
        scheduler=args.scheduler,
        **options,
    )
    done = sum((args.output / entry["file"]).exists() for entry in entries)
    print(f"{done} of {len(entries)} femurs in {args.output}")
    return 0


def _add_generate(commands: _Commands) -> None:
    command = commands.add_parser(
        "generate",
        help="grow the dataset's femurs by topology optimization (resumes)",
        description="Grow seeded femurs (geometry, loads, bone mass) by coarse-to-fine topology "
        "optimization into OUTPUT: manifest.json, <name>.npz, <name>.png. Rerun to resume.",
    )
    command.add_argument("output", type=Path, help="dataset folder")
    command.add_argument("--count", type=int, default=32, help="femurs in the dataset")
    command.add_argument("--test", type=int, default=8, help="femurs held out for testing")
    command.add_argument(
        "--validation", type=int, default=4, help="femurs held out to choose a model"
    )
    command.add_argument("--seed", type=int, default=0, help="seed of the manifest")
    command.add_argument("--only", nargs="+", metavar="NAME", help="grow only these femurs")
    _add_parallel(command, "femurs")
    command.add_argument(
        "--stages",
        type=_stages,
        help="pixel:iterations per stage, coarse to fine, the rest of each stage as "
        "femsr.generate.STAGES's of its rank (default: femsr.generate.STAGES)",
    )
    command.set_defaults(run=_generate)


def _femur_files(folder: Path, split: str | None = None, protocol: str = "all") -> list[Path]:
    """The femur files of a folder's manifest.json (of one split; with ``protocol="paper"``,
    its femurs in the paper's protocol), else its every .npz."""
    import json

    from femsr.manifest import MANIFEST, paper_protocol

    manifest = folder / MANIFEST
    if not manifest.is_file():
        if protocol == "paper":
            raise FileNotFoundError(f"the paper's protocol is chosen by {manifest}, not found")
        return sorted(folder.glob("*.npz"))
    entries = json.loads(manifest.read_text()).get("femurs", [])
    if protocol == "paper" and split is not None:
        return [folder / f"{name}.npz" for name in paper_protocol(entries, split)]
    return [folder / e["file"] for e in entries if split is None or e.get("split") == split]


def _dataset(args: argparse.Namespace) -> int:
    """Cut the femurs of FEMUR_DIR into LR/HR patch pairs in OUT_DIR."""
    from femsr import dataset

    files = _femur_files(args.femurs)
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        logger.warning("not grown yet, skipped: %s", ", ".join(missing))
    files = [path for path in files if path.is_file()]
    if not files:
        raise ValueError(f"no femur files in {str(args.femurs)!r}")
    index = dataset.build_dataset(
        files,
        args.output,
        patch=args.patch,
        stride=args.stride,
        factor=args.factor,
        lr_dtype=args.lr_dtype,
        hr_dtype=args.hr_dtype,
        scanner=dataset.Scanner(args.scanner_fwhm, args.scanner_noise, args.scanner_deblur)
        if args.scanner_fwhm is not None
        else None,
        progress=args.progress,
        workers=args.workers,
        scheduler=args.scheduler,
    )
    counts = index["counts"]
    print(
        f"{len(index['femurs'])} femurs, {counts['train']:,} train, "
        f"{counts['validation']:,} validation and {counts['test']:,} test pairs in {args.output}"
    )
    return 0


def _add_dataset(commands: _Commands) -> None:
    command = commands.add_parser(
        "dataset",
        help="cut grown femurs into LR/HR patch pairs for training (resumes)",
        description="Downscale each femur of FEMUR_DIR (its manifest.json, else every .npz) x10, "
        "solve the LR image's load cases, and write the overlapping LR window + displacement -> "
        "HR window pairs to OUT_DIR (memory-mapped .npy per femur, index.json). Rerun to resume.",
    )
    command.add_argument("femurs", type=Path, metavar="FEMUR_DIR", help="folder of femur images")
    command.add_argument("output", type=Path, metavar="OUT_DIR", help="dataset folder")
    command.add_argument("--patch", type=int, default=12, help="LR window side in pixels")
    command.add_argument("--stride", type=int, default=8, help="LR window offset in pixels")
    command.add_argument("--factor", type=int, default=10, help="HR pixels per LR pixel")
    _add_parallel(command, "femurs")
    command.add_argument("--lr-dtype", default="float16", choices=("float16", "float32"))
    command.add_argument("--hr-dtype", default="uint8", choices=("uint8", "float16", "float32"))
    command.add_argument(
        "--scanner-fwhm",
        type=float,
        metavar="MM",
        help="make the LR images as a CT scanner does, with a Gaussian point-spread function of "
        "this full width at half maximum, instead of block means (femsr.dataset.scanner_lr)",
    )
    command.add_argument(
        "--scanner-noise",
        type=float,
        default=0.0,
        metavar="HU",
        help="with --scanner-fwhm: the scanner's noise, standard deviation in HU (0)",
    )
    command.add_argument(
        "--scanner-deblur",
        action="store_true",
        help="with --scanner-fwhm: deblur the LR images by that FWHM, as "
        "'femsr reconstruct --psf-fwhm' reads a scan",
    )
    command.set_defaults(run=_dataset)


def _train(args: argparse.Namespace) -> int:
    """Train the network on a patch dataset, validating on one held-out training femur."""
    import torch
    from torch.utils.data import ConcatDataset

    from femsr.distributed import from_environment
    from femsr.export import load_model
    from femsr.manifest import paper_protocol
    from femsr.model import ModelConfig, build_model
    from femsr.patch_dataset import PatchDataset
    from femsr.train import train

    femurs = _alike_datasets(args.dataset)
    if args.protocol == "paper":
        names = paper_protocol(femurs, "train")
    else:
        names = [e["name"] for e in femurs if e["split"] == "train"]
    validation = [e["name"] for e in femurs if e["split"] == "validation"]
    val_names = args.val_femurs or validation or names[-1:]
    seen_test = sorted(set(val_names) & {e["name"] for e in femurs if e["split"] == "test"})
    if seen_test:
        raise ValueError(f"{seen_test} are test femurs: a model is chosen without the test set")
    fit_names = [name for name in names if name not in val_names]
    if not fit_names:
        raise ValueError(f"no training femur left after holding out {val_names} for validation")
    augment = not args.no_augment
    # Each folder its own symmetry draws: the same patch under two scanners is seen two ways.
    fit = _subset(
        ConcatDataset(
            [
                PatchDataset(folder, "train", augment=augment, femurs=fit_names, seed=args.seed + k)
                for k, folder in enumerate(args.dataset)
            ]
        ),
        args.pairs,
        args.seed,
    )
    val = _subset(
        ConcatDataset([PatchDataset(folder, None, femurs=val_names) for folder in args.dataset]),
        args.val_pairs,
        args.seed + 1,
    )
    lr, hr = fit[0]
    scale = int(hr.shape[-1]) // int(lr.shape[-1])
    # The network's shape: as given, else the init model's, else the default.
    shape = {"width": WIDTH, "n_blocks": N_BLOCKS, "up_width": UP_WIDTH}
    if args.init:
        shape = {name: getattr(load_model(args.init, device="cpu").config, name) for name in shape}
    given = {"width": args.width, "n_blocks": args.blocks, "up_width": args.up_width}
    shape.update({name: value for name, value in given.items() if value is not None})
    cfg = ModelConfig(
        in_channels=int(lr.shape[0]),
        **shape,
        scale=scale,
        upsampling="2x5" if scale == 10 else str(scale),  # the paper's x2 then x5 at x10
        patch_size=int(lr.shape[-1]),
    )
    parameters = sum(p.numel() for p in build_model(cfg).parameters())
    main = from_environment().main  # under torchrun, the main process speaks for all
    logger.log(
        logging.INFO if main else logging.DEBUG,
        "training on %s (%s pairs%s), validating on %s (%s pairs); %s parameters",
        ", ".join(fit_names),
        f"{len(fit):,}",
        f" from {len(args.dataset)} datasets" if len(args.dataset) > 1 else "",
        ", ".join(val_names),
        f"{len(val):,}",
        f"{parameters:,}",
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    result = train(
        cfg,
        fit,
        val,
        out_dir=args.output,
        loss=args.loss,
        mass_weight=args.mass_weight,
        cldice_weight=args.cldice_weight,
        stiffness_weight=args.stiffness_weight,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        seed=args.seed,
        device=args.device,
        resume=not args.restart,
        init=args.init,
        progress=args.progress,
    )
    best = result.history[result.best_epoch - 1]
    if main:
        print(
            f"best epoch {result.best_epoch}: val loss {best['val_loss']:.5f}, PSNR "
            f"{best['val_psnr']:.2f} dB, SSIM {best['val_ssim']:.4f}; wrote {result.best_path}"
        )
    return 0


def _alike_datasets(folders: list[Path]) -> list[dict[str, Any]]:
    """The femurs of the first dataset folder, once every folder is checked to hold the same
    femurs in the same splits, cut and encoded alike (only the LR images may differ: one
    folder per scanner setting)."""
    from femsr.dataset import load_index

    def layout(index: dict[str, Any]) -> dict[str, Any]:
        settings = index["settings"]
        return {
            "femurs": {entry["name"]: entry["split"] for entry in index["femurs"]},
            **{key: settings[key] for key in ("patch", "factor")},
            **{key: index[key] for key in ("channels", "normalization")},
        }

    indexes = [load_index(folder) for folder in folders]
    first = layout(indexes[0])
    for folder, index in zip(folders[1:], indexes[1:], strict=True):
        other = layout(index)
        differ = [key for key in first if other[key] != first[key]]
        if differ:
            raise ValueError(
                f"{str(folder)!r} differs from {str(folders[0])!r} in {', '.join(differ)}: "
                "datasets trained on together hold the same femurs, cut and encoded alike"
            )
    return list(indexes[0]["femurs"])


def _add_train(commands: _Commands) -> None:
    command = commands.add_parser(
        "train",
        help="train the super-resolution network on a patch dataset (resumes)",
        description="Train the residual network on the training femurs of DATASET (written by "
        "femsr dataset), validating every epoch on its validation femurs (else on the last "
        "training femur, or on --val-femurs). Several DATASETs of the same femurs (say, one per "
        "scanner setting) train one network on all their pairs. "
        "OUT_DIR gets checkpoint.pt (resume state, written every epoch), best.pt (the best "
        "validation weights) and train_log.jsonl (one JSON record per epoch). Rerun the same "
        "command to resume after an interruption; export best.pt with femsr export. Started "
        "by torchrun, its N processes train one network together, each on BATCH_SIZE / N pairs "
        "of every batch (docs/cluster.md).",
    )
    command.add_argument(
        "dataset",
        type=Path,
        nargs="+",
        metavar="DATASET",
        help="patch dataset folder; several (e.g. one per scanner setting) train together",
    )
    command.add_argument("output", type=Path, metavar="OUT_DIR", help="training run folder")
    command.add_argument("--loss", default="l1", choices=("l1", "l2"), help="pixel loss (l1)")
    command.add_argument(
        "--mass-weight", type=float, default=0.0, help="weight of the LR-mass term (0: off)"
    )
    command.add_argument(
        "--cldice-weight",
        type=float,
        default=0.0,
        help="weight of the clDice (strut topology) term (0: off)",
    )
    command.add_argument(
        "--stiffness-weight",
        type=float,
        default=0.0,
        help="weight of the patch stiffness log-error term (0: off; 4-8x a step on the CPU)",
    )
    command.add_argument(
        "--width", type=int, help=f"feature channels (the init model's, else {WIDTH})"
    )
    command.add_argument(
        "--blocks", type=int, help=f"residual blocks (the init model's, else {N_BLOCKS})"
    )
    command.add_argument(
        "--up-width", type=int, help=f"channels at HR (the init model's, else {UP_WIDTH})"
    )
    command.add_argument(
        "--epochs", type=int, default=EPOCHS, help=f"epochs in all, resumed ones too ({EPOCHS})"
    )
    command.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"pairs per step, over all processes ({BATCH_SIZE})",
    )
    command.add_argument(
        "--lr", type=float, default=LEARNING_RATE, help=f"initial learning rate ({LEARNING_RATE:g})"
    )
    command.add_argument(
        "--schedule", default="cosine", choices=("cosine", "step", "constant"), help="(cosine)"
    )
    command.add_argument(
        "--pairs", type=int, help="train on a seeded random subset of this many pairs"
    )
    command.add_argument(
        "--val-pairs", type=int, default=2000, help="validation subset size (2000)"
    )
    command.add_argument(
        "--val-femurs",
        nargs="+",
        metavar="NAME",
        help="validate on these (default: the validation split, else the last train femur)",
    )
    command.add_argument(
        "--protocol",
        choices=("all", "paper"),
        default="all",
        help="train on every train femur, or on the paper's 7 (femsr.manifest.paper_protocol)",
    )
    command.add_argument("--no-augment", action="store_true", help="no flips and quarter turns")
    command.add_argument("--seed", type=int, default=0, help="seeds weights, order and subsets")
    command.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, ...")
    command.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    command.add_argument("--restart", action="store_true", help="start over instead of resuming")
    command.add_argument(
        "--init",
        metavar="MODEL",
        help="start from this model's weights (a best.pt, the bundled model): fine-tuning",
    )
    command.set_defaults(run=_train)


def _subset(data: Any, count: int | None, seed: int) -> Any:
    """A seeded random subset of ``count`` items (all when ``count`` is None or larger)."""
    from torch.utils.data import Subset

    if count is None or count >= len(data):
        return data
    picked = np.random.default_rng(seed).choice(len(data), count, replace=False)
    return Subset(data, np.sort(picked).tolist())


def _export(args: argparse.Namespace) -> int:
    """Export trained weights for batched inference and check the export against them."""
    import torch

    from femsr.export import export_model, load_model
    from femsr.model import SRNet

    source = load_model(args.weights, device="cpu")
    model = source.module
    if not isinstance(model, SRNet):
        raise ValueError(
            f"{str(args.weights)!r} is already an exported {source.format} program; export "
            f"from the trained weights (best.pt of femsr train)"
        )
    path = export_model(model, args.output, format=args.format)
    exported = load_model(path, device="cpu")
    cfg = source.config
    x = torch.rand(4, cfg.in_channels, cfg.patch_size, cfg.patch_size)
    with torch.no_grad():
        error = float((exported(x) - model(x)).abs().max())
    if error > 1e-5:
        raise ValueError(f"the export of {args.weights} differs from it by {error:.2e} (> 1e-5)")
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({exported.format}, {size:.2f} MiB); max |exported - eager| {error:.1e}")
    return 0


def _add_export(commands: _Commands) -> None:
    command = commands.add_parser(
        "export",
        help="export trained weights for batched inference (.pt2, .ts or .pt)",
        description="Read WEIGHTS (best.pt of femsr train, or any model file femsr loads) and "
        "write OUTPUT: .pt2 (torch.export, dynamic batch; the default format of femsr), .ts "
        "(TorchScript, deprecated in PyTorch) or .pt (state dict). The export is loaded back "
        "and checked against the weights on random input (max difference <= 1e-5).",
    )
    command.add_argument("weights", type=Path, metavar="WEIGHTS", help="trained model file")
    command.add_argument("output", type=Path, metavar="OUTPUT", help="exported model file")
    command.add_argument(
        "--format", choices=("pt2", "torchscript", "state"), help="(default: from the suffix)"
    )
    command.set_defaults(run=_export)


def _density_image(path: Path, pixel_size: float | None) -> FemurImage:
    """A femur file (.npz, :func:`femsr.io.load_femur`) or a bare density (.npy) at
    ``pixel_size`` on the default femur's box."""
    from femsr import femur, io

    if path.suffix != ".npy":
        image = io.load_femur(path)
        if pixel_size is not None and image.pixel_size != pixel_size:
            raise ValueError(
                f"{str(path)!r} has a pixel size of {image.pixel_size} mm, not {pixel_size} mm"
            )
        return image
    if pixel_size is None:
        raise ValueError(f"{str(path)!r} is a bare density: it needs --pixel-size")
    if not path.is_file():
        raise FileNotFoundError(f"density file {str(path)!r} does not exist")
    density = np.load(path, allow_pickle=False)
    shape = femur.grid_shape(pixel_size)
    if density.shape != shape:
        raise ValueError(
            f"{str(path)!r} has shape {density.shape}, but the femur's box at {pixel_size} mm "
            f"is {shape}"
        )
    return io.FemurImage(density, pixel_size, femur.Femur())


def _on_grid_of(reference: FemurImage, path: Path) -> np.ndarray:
    """An image file (any format of :func:`femsr.io.read_image`) on the reference's grid. A
    reconstruction of the 500 µm grid overhangs the femur's box by less than one LR pixel at
    the right and the bottom (2080 x 1890 at 50 µm against 2080 x 1883): that is cut off."""
    from femsr import io
    from femsr.femur import LR_PIXEL

    density, pixel_size, _ = io.read_image(path)
    if pixel_size is not None and pixel_size != reference.pixel_size:
        raise ValueError(
            f"{str(path)!r} has a pixel size of {pixel_size} mm, the reference "
            f"{reference.pixel_size} mm"
        )
    overhang = max(1, round(LR_PIXEL / reference.pixel_size))
    if density.ndim != 2 or not all(
        n <= m < n + overhang for n, m in zip(reference.density.shape, density.shape, strict=True)
    ):
        raise ValueError(
            f"{str(path)!r} has shape {density.shape}; the reference's grid is "
            f"{reference.density.shape} (a reconstruction may overhang it by under {overhang} px)"
        )
    return density[: reference.density.shape[0], : reference.density.shape[1]]


def _evaluate(args: argparse.Namespace) -> int:
    """Apparent stiffness of the ROIs and image measures of a reconstruction; tables, figures."""
    from femsr import evaluate

    reference = _density_image(args.reference, args.pixel_size)
    recon = _on_grid_of(reference, args.reconstruction)
    without = None
    if args.without_quilting is not None:
        without = _on_grid_of(reference, args.without_quilting)
    markdown = evaluate.write_report(
        args.output,
        reference,
        recon,
        without_quilting=without,
        E0=args.E0,
        threshold=args.threshold,
        names=(args.reference.name, args.reconstruction.name),
    )
    print(markdown)
    logger.info("wrote %s", args.output)
    return 0


def _add_evaluate(commands: _Commands) -> None:
    command = commands.add_parser(
        "evaluate",
        help="apparent stiffness of the ROIs and image measures of a reconstruction",
        description="Compare RECONSTRUCTION with REFERENCE: apparent stiffness (E_x, E_y, E_xy) "
        "of the femoral head, neck and intertrochanteric ROIs by FE homogenization with the "
        "error % (the paper's Table 1), SSIM, PSNR, BV/TV and Dice; writes table.md, table.csv, "
        "images.csv, rois.png, femur.png and femur_reconstruction.png to OUTPUT. A femur file "
        "(.npz) as REFERENCE carries its pixel size and ROIs; a bare .npy needs --pixel-size and "
        "takes the default femur's ROIs. RECONSTRUCTION is any image femsr reads (.npy, .npz, "
        "PNG, TIFF) on the reference's grid; what a 500 µm reconstruction overhangs is cut off.",
    )
    command.add_argument("reference", type=Path, metavar="REFERENCE", help="reference density file")
    command.add_argument(
        "reconstruction", type=Path, metavar="RECONSTRUCTION", help="reconstructed density file"
    )
    command.add_argument(
        "--output", type=Path, default=Path("evaluation"), help="output folder (./evaluation)"
    )
    command.add_argument(
        "--without-quilting", type=Path, metavar="FILE", help="a third image for the figure"
    )
    command.add_argument("--pixel-size", type=float, help="pixel side in mm of bare .npy densities")
    command.add_argument("--E0", type=float, default=TISSUE_MODULUS, help=_E0_HELP)
    command.add_argument("--threshold", type=float, default=0.5, help="bone is density > threshold")
    command.set_defaults(run=_evaluate)


def _redraw(stats: dict[str, Any]) -> str:
    """The refinement's and the crisp redrawing's seconds for a timing line, where they ran."""
    refined = f", refinement {stats['refine']:.1f} s" if stats.get("refine_iterations") else ""
    return refined + (f", crisp redrawing {stats['redraw']:.2f} s" if stats.get("crisp") else "")


def _reconstruct(args: argparse.Namespace) -> int:
    """Super-resolve an LR density image (or a folder of them) x10 and write it."""
    from femsr import io, scan
    from femsr.reconstruct import IMAGE_SUFFIXES, SCAN_SUFFIXES, reconstruct_file, reconstruct_files

    options = {
        "pixel_size": args.pixel_size,
        "model": args.model,
        "device": args.device,
        "batch_size": args.batch_size,
        "method": args.method,
        "tta": args.tta,
        "crisp": args.crisp,
        "refine": args.refine,
        "mass_block": args.mass_block,
        "psf_fwhm": args.psf_fwhm,
        "calibration": args.calibration,
        "as_scan": args.scan,
    }
    if args.input.is_dir() and not scan.is_dicom_series(args.input):
        if args.landmarks is not None:
            raise ValueError("--landmarks are one scan's: reconstruct a folder without them")
        sources = sorted(p for p in args.input.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not sources:
            raise ValueError(f"{str(args.input)!r} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        if args.side is not None:  # every scan's
            other = next((p for p in sources if not p.name.lower().endswith(SCAN_SUFFIXES)), None)
            if other is not None and not args.scan:
                raise ValueError(f"--side picks the femur of a scan; {other.name!r} is none")
            options["landmarks"] = {"side": args.side}
        targets = reconstruct_files(
            sources,
            args.output,
            workers=args.workers,
            scheduler=args.scheduler,
            progress=args.progress,
            **options,
        )
        print(f"{sum(t.exists() for t in targets)} of {len(targets)} images in {args.output}")
        return 0
    if args.workers is not None or args.scheduler is not None:
        raise ValueError("--workers and --scheduler reconstruct a folder of images")
    landmarks = args.landmarks
    if args.side is not None:  # over the side a landmarks file gives
        landmarks = {**(scan.read_landmarks(landmarks) if landmarks else {}), "side": args.side}
    stats = reconstruct_file(
        args.input, args.output, progress=args.progress, landmarks=landmarks, **options
    )
    if args.preview is not None:
        io.write_image(args.preview, io.read_image(args.output)[0], bits=8)
    if "psf_fwhm" in stats:  # a scan
        width = stats["psf_fwhm"]
        blur = f"of {width:.2f} mm FWHM" if width is not None else "not undone"
        print(f"the scanner's point-spread function: {blur}")
        if stats["dither"]:
            print(
                f"noise: {stats['noise']:.0f} HU read off the soft tissue, "
                f"{stats['dither']:.0f} HU added (a blurry scan is reconstructed at "
                f"{BLURRY_SCAN_NOISE_HU:.0f} HU unless averaged)"
            )
        turned = f", turned upright by {stats['tilt']:.1f}°" if stats["tilt"] else ""
        print(
            f"the femur fitted: {stats['side']}, neck-shaft angle "
            f"{stats['neck_shaft_angle']:.1f}°{turned}, its outline over the segmented "
            f"femur's Dice {stats['fit_dice']:.3f}"
        )
    (ny, nx), (my, mx) = stats["lr_shape"], stats["hr_shape"]
    print(
        f"{ny}x{nx} -> {my}x{mx} in {stats['total']:.2f} s (LR FE {stats['lr_fe']:.2f} s, "
        f"inference {stats['inference']:.2f} s on {stats['device']}, quilting "
        f"{stats['quilting']:.2f} s{_redraw(stats)}); wrote {args.output}"
    )
    return 0


def _psf_fwhm(value: str) -> float | str | None:
    if value == "none":
        return None
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected mm, auto or none, got {value!r}") from None


def _add_reconstruct(commands: _Commands) -> None:
    command = commands.add_parser(
        "reconstruct",
        help="super-resolve a 500 µm femur density x10 with the network",
        description="Read INPUT (.npy, .npz, PNG or TIFF; a femur file (.npz) carries its pixel "
        "size and load cases, a bare image gets the default femur's at --pixel-size), compute the "
        "displacement channels by LR FE, run the network on the overlapping windows, quilt the "
        "HR windows along minimum-error seams and write OUTPUT (.png/.tif 16-bit, .npy/.npz "
        "float32, .nii/.nii.gz with its 50 µm spacing, placed where a scan's femur lies). A scan "
        "(DICOM .dcm or a folder of one DICOM series, NIfTI .nii/.nii.gz; a TIFF with --scan) "
        "is calibrated from HU, "
        "resampled to 0.5 mm, segmented and fitted with the parametric femur, which gives its "
        "loads and ROIs. INPUT may be a folder of images: "
        "each is written to the folder OUTPUT as "
        "<name>.npz, those done skipped, in parallel with --workers or --scheduler.",
    )
    command.add_argument("input", type=Path, metavar="INPUT", help="LR density image or folder")
    command.add_argument(
        "output", type=Path, metavar="OUTPUT", help="HR image (or folder) to write"
    )
    _add_parallel(command, "images of a folder")
    command.add_argument(
        "--model",
        type=Path,
        help="exported model file (default: the bundled one; for a scan deblurred by less than "
        f"{DEBLURRED_MODEL_MAX_FWHM} mm, the bundled one for deblurred scans, or with "
        "--psf-fwhm none the bundled scan model)",
    )
    command.add_argument(
        "--method", default="seam", choices=("seam", "average", "cut"), help="quilting (seam)"
    )
    command.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, ...")
    command.add_argument(
        "--batch-size", type=int, default=INFERENCE_BATCH, help="windows per forward pass"
    )
    command.add_argument("--tta", action="store_true", help=_TTA_HELP)
    command.add_argument("--crisp", action="store_true", help=_CRISP_HELP)
    _add_refine(command, _RECONSTRUCT_REFINE_HELP, const=True)  # True: the input's default
    command.add_argument(
        "--mass-block",
        type=int,
        metavar="K",
        help="--refine holds the bone mass of each K x K block of LR pixels (default 1; for a "
        "deblurred scan as wide as the blur: 2 at 1.0 mm FWHM)",
    )
    command.add_argument(
        "--pixel-size",
        type=float,
        help="LR pixel side in mm of a bare image (default 0.5, the femur's LR grid); of a "
        "--scan TIFF without resolution tags, its pixel spacing",
    )
    command.add_argument("--preview", type=Path, metavar="PNG", help="also write an 8-bit preview")
    command.add_argument(
        "--landmarks",
        type=Path,
        metavar="FILE",
        help="a scan's landmarks (JSON: head_centre, head_radius, shaft_axis, neck_shaft_angle, "
        "side, greater_trochanter, lesser_trochanter; mm, x right from the image's left edge, y "
        "down from its top) to use instead of those found (docs/reconstruct.md)",
    )
    command.add_argument(
        "--side",
        choices=("right", "left"),
        help="a scan's femur: of a slice of both hips (of each, in a folder), the one to "
        "reconstruct (right: the patient's, on the image's left), as the side of --landmarks",
    )
    command.add_argument(
        "--psf-fwhm",
        type=_psf_fwhm,
        default="auto",
        metavar="MM|auto|none",
        help="a scan's point-spread function, full width at half maximum in mm, to deblur it by "
        "before it is reconstructed; auto (the default) reads it "
        "off the shaft's edges; none reconstructs the scan as it is with the scan model; a scan "
        f"of pixels finer than {BLURRY_FINE_PIXEL_MAX} mm deblurred by "
        f"{DEBLURRED_MODEL_MAX_FWHM} mm or more is first brought up to "
        f"{BLURRY_SCAN_NOISE_HU:g} HU of noise unless --tta (docs/reconstruct.md)",
    )
    command.add_argument(
        "--calibration",
        type=float,
        nargs=2,
        metavar=("MARROW_HU", "TISSUE_HU"),
        help="a scan's CT numbers of bone density 0 (marrow, soft tissue) and 1 (fully "
        f"mineralized tissue), e.g. from a calibration phantom ({MARROW_HU:g} and "
        f"{TISSUE_HU:g})",
    )
    command.add_argument(
        "--scan",
        action="store_true",
        help="read INPUT (each image of a folder) as a scan, as DICOM and NIfTI are read: a "
        "TIFF of a CT slice (HU, or density in [0, 1]; one page, or coronal pages front to "
        "back), its spacing from its resolution tags, else --pixel-size",
    )
    command.set_defaults(run=_reconstruct)


def _demo(args: argparse.Namespace) -> int:
    """Reconstruct the bundled held-out femur with the bundled model and score it."""
    from femsr.demo import demo

    timings = demo(
        args.output,
        model=args.model,
        femur_file=args.femur,
        device=args.device,
        tta=args.tta,
        crisp=args.crisp,
        refine=args.refine,
        progress=args.progress,
    )
    print((args.output / "table.md").read_text(encoding="utf-8"))
    print(
        f"reconstructed in {timings['reconstruct']:.2f} s on {timings['device']} (LR FE "
        f"{timings['lr_fe']:.2f} s, inference {timings['inference']:.2f} s, quilting "
        f"{timings['quilting']:.2f} s{_redraw(timings)}); total {timings['total']:.1f} s; "
        f"wrote {args.output}"
    )
    return 0


def _add_demo(commands: _Commands) -> None:
    command = commands.add_parser(
        "demo",
        help="reconstruct the bundled held-out femur with the bundled model, and score it",
        description="Downscale the bundled 50 µm femur to 500 µm, reconstruct it with the "
        "bundled network (LR FE, batched inference, seam quilting) and without quilting, and "
        "write the HR image, the side-by-side ROI figures, the ROI stiffness table and the "
        "stage timings to OUTPUT.",
    )
    command.add_argument(
        "output", type=Path, nargs="?", default=Path("femsr-demo"), help="(./femsr-demo)"
    )
    command.add_argument("--model", type=Path, help="exported model (default: the bundled one)")
    command.add_argument("--femur", type=Path, help="femur file (default: the bundled one)")
    command.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, ...")
    command.add_argument("--tta", action="store_true", help=_TTA_HELP)
    command.add_argument("--crisp", action="store_true", help=_CRISP_HELP)
    _add_refine(command)
    command.set_defaults(run=_demo)


def _morphometry(args: argparse.Namespace) -> int:
    """Per-region morphometry of femur files against the published ranges."""
    from femsr import evaluate, io, morphometry

    tables = []
    for path in args.femurs:
        image = io.load_femur(path)
        rows = morphometry.morphometry(
            image.density, image.femur, image.pixel_size, threshold=args.threshold
        )
        table = evaluate.Table(
            morphometry.COLUMNS, tuple({"band": "", **row} for row in rows)
        ).to_markdown(digits=3)
        missed = [name for name, met in morphometry.check(rows).items() if not met]
        verdict = "every target met" if not missed else "targets missed: " + ", ".join(missed)
        tables.append(f"## {path.name}\n\n{table}\n{verdict}\n")
        print(tables[-1])
    if args.output is not None:
        with io.atomic_write(args.output, "w") as stream:
            stream.write("\n".join(tables))
        logger.info("wrote %s", args.output)
    return 0


def _add_morphometry(commands: _Commands) -> None:
    command = commands.add_parser(
        "morphometry",
        help="bone morphometry of femur files per region, against published ranges",
        description="Per region of each FEMUR file (head, neck, Ward's triangle, greater "
        "trochanter, intertrochanteric region, cortex, the three evaluation ROIs): BV/TV, "
        "Tb.Th, Tb.Sp, Tb.N, degree of anisotropy and orientation, the largest void and the "
        "cortex's fill of the outline (lengths in mm), and which published ranges are missed.",
    )
    command.add_argument("femurs", type=Path, nargs="+", metavar="FEMUR", help="femur file (.npz)")
    command.add_argument("--output", type=Path, help="also write the tables to this Markdown file")
    command.add_argument("--threshold", type=float, default=0.5, help="bone is density > threshold")
    command.set_defaults(run=_morphometry)


def _model_label(text: str) -> tuple[str, Path]:
    """``"L1=runs/l1/model.pt2"`` -> ("L1", path)."""
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"a model must look like LABEL=FILE, got {text!r}")
    return label, Path(path)


def _report(args: argparse.Namespace) -> int:
    """The paper's Table 1 over held-out femurs, for each model."""
    from femsr.report import heldout_report

    if args.only:
        files = [args.femurs / f"{name}.npz" for name in args.only]
    else:
        files = _femur_files(args.femurs, split=args.split, protocol=args.protocol)
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"femur file(s) not found: {', '.join(missing)}")
    models = args.model + args.tta_model
    labels = [label for label, _ in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must differ, got {labels}")
    table = heldout_report(
        files,
        dict(models),
        args.output,
        device=args.device,
        tta=[label for label, _ in args.tta_model],
        crisp=args.crisp,
        refine=args.refine,
        E0=args.E0,
        progress=args.progress,
    )
    print(table.to_markdown())
    logger.info("wrote %s", args.output)
    return 0


def _add_report(commands: _Commands) -> None:
    command = commands.add_parser(
        "report",
        help="mean ROI stiffness errors of trained models over the held-out femurs (Table 1)",
        description="Reconstruct each held-out femur of FEMUR_DIR (the test split of its "
        "manifest.json, or --split validation to choose a model without the test set; else "
        "every .npz, or --only) from its 500 µm block mean with each model, and write the mean "
        "apparent-stiffness error per ROI and component beside the paper's Table 1 "
        "(heldout.md, heldout.csv), the agreement of morphometry and stiffness with the "
        "reference (agreement.md: R², Bland-Altman), every femur's numbers (per_femur*.csv) and "
        "previews of the reconstructions to OUTPUT.",
    )
    command.add_argument("femurs", type=Path, metavar="FEMUR_DIR", help="folder of grown femurs")
    command.add_argument(
        "--model",
        type=_model_label,
        action="append",
        default=[],
        metavar="LABEL=FILE",
        help="a model to evaluate, e.g. L1=runs/l1/model.pt2 (repeat for more)",
    )
    command.add_argument(
        "--tta-model",
        type=_model_label,
        action="append",
        default=[],
        metavar="LABEL=FILE",
        help="a model to evaluate with test-time averaging over the 8 symmetries of the square "
        "(repeat for more)",
    )
    command.add_argument(
        "--crisp",
        action="store_true",
        help="also score every model's reconstructions redrawn crisp, as LABEL+crisp",
    )
    _add_refine(
        command,
        "also score every model's reconstructions refined by N iterations (default {iterations}) "
        "of topology optimization and redrawn crisp, as LABEL+refine",
    )
    command.add_argument("--output", type=Path, default=Path("report"), help="(./report)")
    chosen = command.add_mutually_exclusive_group()
    chosen.add_argument("--only", nargs="+", metavar="NAME", help="these femurs instead")
    chosen.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="which held-out femurs of the manifest (test)",
    )
    chosen.add_argument(
        "--protocol",
        choices=("all", "paper"),
        default="all",
        help="every test femur, or the paper's 4 (femsr.manifest.paper_protocol)",
    )
    command.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, ...")
    command.add_argument("--E0", type=float, default=TISSUE_MODULUS, help=_E0_HELP)
    command.set_defaults(run=_report)


def _add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    """``--quiet`` and ``--verbose``: before the command with ``default=False``, after it with
    ``argparse.SUPPRESS``, so that a command's default does not undo a flag given before it."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="only warnings and errors, no progress bars",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="debug messages too (e.g. every optimizer iteration's numbers)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="femsr",
        description="Super-resolution of proximal-femur bone images (500 µm -> 50 µm).",
    )
    _add_verbosity(parser, False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_demo,
        _add_fe,
        _add_generate,
        _add_dataset,
        _add_train,
        _add_export,
        _add_evaluate,
        _add_morphometry,
        _add_report,
        _add_reconstruct,
    ):
        add(commands)
    for command in commands.choices.values():
        _add_verbosity(command, argparse.SUPPRESS)
    return parser


class _Formatter(logging.Formatter):
    """A message as it is; a warning or an error as ``femsr COMMAND: warning: message``."""

    def __init__(self, command: str) -> None:
        super().__init__("%(message)s")
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno < logging.WARNING:
            return text
        return f"femsr {self.command}: {record.levelname.lower()}: {text}"


class _StderrHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` by ``tqdm.write``, which keeps bars whole."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _messages(level: int, command: str) -> Iterator[None]:
    """femsr's log records of ``level`` and above to stderr while a command runs; the package's
    logger is as it was afterwards (``main`` may run more than once in a process)."""
    package = logging.getLogger("femsr")
    handler = _StderrHandler()
    handler.setFormatter(_Formatter(command))
    before = package.level
    package.setLevel(level)
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(before)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet and args.verbose:
        parser.error("--quiet and --verbose exclude each other")
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    # Bars on a terminal only (tqdm's disable=None): a log file or a pipe gets the messages.
    args.progress = not args.quiet and sys.stderr is not None and sys.stderr.isatty()
    with _messages(level, args.command):
        try:
            return int(args.run(args))
        except (ValueError, TypeError, OSError) as error:
            logger.error("%s", error)
            return 2
        except KeyboardInterrupt:
            logger.error("interrupted")
            return 130


if __name__ == "__main__":
    sys.exit(main())
