"""Training of the super-resolution network: a resumable training loop and its metrics.

One module past 600 lines because the loop, its checkpoint (the run's state, RNG states and
settings) and its validation are the parts of the one :func:`train` and share its state; the
losses are apart, in :mod:`femsr.losses`.

Datasets are any ``torch.utils.data.Dataset`` whose items are ``(lr, hr)`` pairs of float32
tensors, ``lr`` of shape ``(in_channels, P, P)`` (channel 0 the LR density in [0, 1]) and ``hr``
of shape ``(1, P * scale, P * scale)`` in [0, 1]. The loss of a batch is
:func:`femsr.losses.objective`: the paper's L1 or L2, with optional mass, clDice and stiffness
terms.

:func:`train` writes into ``out_dir``:

``checkpoint.pt``
    Everything needed to resume: model, optimizer, scheduler, gradient scaler, epoch, RNG states,
    settings, history. Written after every epoch.
``best.pt``
    The weights with the lowest validation loss, with their config, in the plain state format of
    :mod:`femsr.export` (``femsr.export.load_model`` reads it).
``train_log.jsonl``
    One JSON object per epoch (epoch, lr, train_loss, val_loss, val_psnr, val_ssim, seconds,
    patches_per_s), for plots: ``pandas.read_json(path, lines=True)``.

All three are written atomically (temporary file, then ``os.replace``), checkpoint first, so an
interruption at any point leaves a consistent set that :func:`train` resumes from.

Under ``torchrun`` the processes train one network together (:mod:`femsr.distributed`): each
takes its share of every batch, and only the main one validates, logs and writes the files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from tqdm import tqdm

from femsr import defaults, distributed
from femsr.evaluate import ssim
from femsr.export import load_model, save_state
from femsr.io import atomic_write
from femsr.losses import LOSSES, objective
from femsr.model import (
    FAST_LAYOUT,
    RETIRED_FIELDS,
    ModelConfig,
    SRNet,
    build_model,
    channels_last,
    resolve_device,
)
from femsr.resume import resume as resume_run

__all__ = ["TrainResult", "psnr", "train"]

logger = logging.getLogger(__name__)

SCHEDULES = ("cosine", "step", "constant")
CHECKPOINT_FORMAT = "femsr-checkpoint"
CHECKPOINT_VERSION = 1
# PSNR of a perfect prediction is infinite; capping the MSE keeps logs finite JSON (100 dB).
_MIN_MSE = 1e-10
# The weights of the optional loss terms, in objective()'s and train()'s keywords and in the
# checkpoint's settings. A checkpoint written before a term existed trained without it (0).
WEIGHTS = ("mass_weight", "cldice_weight", "stiffness_weight")
_SUBNORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


# ---------------------------------------------------------------------------------------------
# Metrics


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio (dB) of each image of a batch ``(N, C, H, W)`` → ``(N,)``.

    ``10 log10(data_range² / MSE)``, with the MSE floored at 1e-10 so identical images give a
    finite 100 dB (for ``data_range=1``).

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(1, 1, 8, 8)
    >>> round(float(psnr(x + 0.1, x)), 6)
    20.0
    """
    mse = ((prediction - target) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(_MIN_MSE))


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The network with the best validation weights, in eval mode, on the training device.
    history : list of dict
        One record per epoch, as in the log file.
    best_epoch : int
        Epoch (1-based) of the best validation loss.
    best_path, checkpoint_path, log_path : pathlib.Path
        The files in ``out_dir``.
    """

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    best_path: Path
    checkpoint_path: Path
    log_path: Path


def _check_dataset(name: str, dataset: object, cfg: ModelConfig) -> None:
    if not isinstance(dataset, Dataset):
        raise TypeError(f"{name} must be a torch Dataset, got {type(dataset).__name__}")
    try:
        length = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must have a length (a map-style Dataset)") from None
    if length == 0:
        raise ValueError(f"{name} is empty")
    item = dataset[0]
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise ValueError(f"{name}[0] must be an (lr, hr) pair, got {type(item).__name__}")
    expected = {
        "lr": (cfg.in_channels, cfg.patch_size, cfg.patch_size),
        "hr": (1, cfg.hr_size, cfg.hr_size),
    }
    for label, tensor in zip(("lr", "hr"), item, strict=True):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"{name}[0] {label} must be a torch.Tensor, got {type(tensor).__name__}"
            )
        if tuple(tensor.shape) != expected[label]:
            raise ValueError(
                f"{name}[0] {label} has shape {tuple(tensor.shape)}, the config needs "
                f"{expected[label]}"
            )
        if tensor.dtype != torch.float32:
            raise TypeError(f"{name}[0] {label} must be float32, got {tensor.dtype}")


def _scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    # Halving four times over the run, as EDSR halves its rate at fixed epochs.
    step = max(1, epochs // 4)
    gamma = 0.5 if schedule == "step" else 1.0
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=gamma)


# Datasets that augment with numpy's or Python's global generator (the usual idiom) must see
# the same draws after a resume, so those legacy global states are seeded and saved too.


def _rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    name, key, position, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # weights_only loading accepts tensors and plain values, not numpy arrays.
        "numpy": [name, torch.from_numpy(np.asarray(key, np.int64)), position, has_gauss, cached],
        "python": random.getstate(),
        "loader": loader_generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, key, position, has_gauss, cached = state["numpy"]
    legacy = (name, key.numpy().astype(np.uint32), position, has_gauss, cached)
    np.random.set_state(legacy)  # noqa: NPY002
    random.setstate(state["python"])
    loader_generator.set_state(state["loader"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    with atomic_write(path, "w") as stream:
        for record in history:
            stream.write(json.dumps(record) + "\n")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"checkpoint {path} cannot be read ({error}); delete it or pass resume=False"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a femsr training checkpoint")
    settings = checkpoint.get("settings")
    if isinstance(settings, dict):
        for name in WEIGHTS:  # a term the checkpoint does not name was not yet there: off
            settings.setdefault(name, 0.0)
        settings.setdefault("init", None)  # nor was starting from a model's weights
        config = settings.get("config")
        if isinstance(config, dict):  # earlier versions named fields since retired (model.py)
            settings["config"] = {
                key: value
                for key, value in config.items()
                if (key, value) not in RETIRED_FIELDS.items()
            }
    return checkpoint


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


@contextlib.contextmanager
def _flush_subnormals() -> Iterator[None]:
    """While it runs, float32 results under 1.2e-38 become 0 on the CPU; the mode is restored.

    A step of the L2 loss meets such subnormal numbers, which x86 CPUs process many times slower
    than normal ones: flushing them made an epoch of L2 + mass 4.7 times faster on the CPU, to
    the same losses (benchmarks/RESULTS.md, "Subnormal numbers").
    """
    was_on = torch.tensor([_SUBNORMAL]).item() == 0.0  # torch has no getter for the mode
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


def _amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def _evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    loss: str,
    weights: dict[str, float],
    scale: int,
) -> dict[str, float]:
    model.eval()
    totals = {"val_loss": 0.0, "val_psnr": 0.0, "val_ssim": 0.0}
    count = 0
    with torch.inference_mode():
        for lr_batch, hr_batch in loader:
            lr_batch = lr_batch.to(device, memory_format=FAST_LAYOUT)
            hr_batch = hr_batch.to(device)
            with _autocast(device, amp_dtype):
                prediction = model(lr_batch)
            prediction = prediction.float()
            size = lr_batch.shape[0]
            value = objective(prediction, hr_batch, loss=loss, scale=scale, **weights)
            totals["val_loss"] += float(value) * size
            totals["val_psnr"] += float(psnr(prediction, hr_batch).sum())
            # One HR channel: the SSIM of each patch's image.
            similarity = ssim(prediction[:, 0].cpu().numpy(), hr_batch[:, 0].cpu().numpy())
            totals["val_ssim"] += float(np.sum(similarity))
            count += size
    return {key: total / count for key, total in totals.items()}


def _check_arguments(
    cfg: object,
    loss: str,
    schedule: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weights: dict[str, float],
) -> None:
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg must be a ModelConfig, got {type(cfg).__name__}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(weight).__name__}")
        if not math.isfinite(weight):
            raise ValueError(f"{name} must be a finite number, got {weight!r}")
        if weight < 0:
            raise ValueError(f"{name} must be >= 0, got {weight!r}")


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    shares: distributed.BatchShares,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    bar: tqdm,
    epoch: int,
    rate: float,
    *,
    loss: str,
    weights: dict[str, float],
    scale: int,
) -> tuple[float, int]:
    """One pass over ``loader``: the summed loss of this process's pairs and their count."""
    pin = device.type == "cuda"
    processes = shares.processes.size
    total, count = 0.0, 0
    for step, (lr_batch, hr_batch) in enumerate(loader, start=1):
        own, size = shares.shares[step - 1]  # pairs of this process, of the whole batch
        lr_batch = lr_batch.to(device, memory_format=FAST_LAYOUT, non_blocking=pin)
        hr_batch = hr_batch.to(device, non_blocking=pin)
        with _autocast(device, amp_dtype):
            prediction = model(lr_batch)
        batch_loss = objective(prediction.float(), hr_batch, loss=loss, scale=scale, **weights)
        loss_value = float(batch_loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"training loss became {loss_value} at epoch {epoch}, step {step}; "
                f"lower lr (now {rate:g}) or check the data for NaN"
            )
        if own * processes != size:  # a share of a short last batch: its part of the mean
            batch_loss = batch_loss * (own * processes / size)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(batch_loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total, count = total + loss_value * own, count + own
        bar.set_postfix_str(f"loss {total / max(count, 1):.4g}", refresh=False)
        bar.update(size)
    return total, count


def train(
    cfg: ModelConfig,
    train_dataset: Dataset,
    val_dataset: Dataset,
    *,
    out_dir: str | os.PathLike[str],
    loss: str = "l1",
    mass_weight: float = 0.0,
    cldice_weight: float = 0.0,
    stiffness_weight: float = 0.0,
    epochs: int = defaults.EPOCHS,
    batch_size: int = defaults.BATCH_SIZE,
    lr: float = defaults.LEARNING_RATE,
    schedule: str = "cosine",
    seed: int = 0,
    device: str | torch.device = "auto",
    amp: bool | None = None,
    resume: bool = True,
    init: str | os.PathLike[str] | None = None,
    progress: bool = True,
    num_workers: int = 0,
    log_file: str = "train_log.jsonl",
) -> TrainResult:
    """Train the network of ``cfg`` with Adam, validating and checkpointing every epoch.

    Parameters
    ----------
    cfg : ModelConfig
        The network to build (:func:`femsr.model.build_model`).
    train_dataset, val_dataset : torch.utils.data.Dataset
        Map-style datasets of ``(lr, hr)`` float32 pairs, shapes
        ``(cfg.in_channels, P, P)`` and ``(1, P*scale, P*scale)``, ``P = cfg.patch_size``.
    out_dir : path
        Where the checkpoint, the best weights and the log go (created if missing).
    loss : {"l1", "l2"}
        Pixel loss (the paper trains one network per loss).
    mass_weight : float
        Weight of the mass-consistency term (see :func:`femsr.losses.objective`); 0 turns it off.
    cldice_weight, stiffness_weight : float
        Weights of the clDice and the apparent-stiffness terms (see
        :func:`femsr.losses.objective`); 0 turns a term off. Both count in the validation loss
        too, which picks the best epoch. On one CPU core, at batch 64 of 12 x 12 patches, a step
        of the default network (forward and backward) takes about 0.3 s; the clDice term adds
        about 3 times that, the stiffness term about 8 times in a pair's first epoch and 4 times
        after (each target's stiffness is solved once and kept).
    epochs : int
        Total epochs, counting those of a resumed run.
    batch_size : int
        Patch pairs per step, over all processes: under ``torchrun`` each of N processes takes
        ``batch_size / N`` of them.
    lr : float
        Initial learning rate of Adam (betas 0.9, 0.999).
    schedule : {"cosine", "step", "constant"}
        Learning rate per epoch: cosine decay to 0 over ``epochs``, halving every
        ``max(1, epochs // 4)`` epochs, or constant.
    seed : int
        Seeds Python's, numpy's and torch's global generators, the weights and the shuffling;
        the same seed gives the same weights (bit for bit on the CPU; cuDNN may differ in the
        last bits between CUDA runs). A dataset with ``set_epoch`` (an augmenting
        :class:`~femsr.patch_dataset.PatchDataset`) is told each epoch before it starts.
    device : str or torch.device
        ``"auto"``: CUDA when present, else the CPU.
    amp : bool or None
        Mixed precision (bfloat16 where supported, else float16 with a gradient scaler).
        ``None``: on for CUDA, off on the CPU.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when it exists (settings must match);
        ``False`` starts over and overwrites the files.
    init : path, optional
        Start from the weights of this model (a ``best.pt``, the bundled model, any file
        :func:`femsr.export.load_model` reads whose network is ``cfg``'s) instead of random
        ones: fine-tuning, with a fresh optimizer and learning-rate schedule. A resumed run
        continues from its checkpoint, which must have started from the same file.
    progress : bool
        Show a tqdm bar of each epoch's training pairs on stderr. Each epoch's losses and
        metrics are logged (INFO, logger ``femsr.train``) whatever ``progress``.
    num_workers : int
        DataLoader worker processes.
    log_file : str
        Name of the JSON-lines log in ``out_dir``.

    Returns
    -------
    TrainResult
        The best model and the run's history and files.

    Raises
    ------
    TypeError, ValueError
        For a bad argument or dataset item (named), a checkpoint that does not match, or a
        ``batch_size`` that the processes cannot share evenly.
    FloatingPointError
        If the training loss becomes NaN or infinite.

    See Also
    --------
    femsr.model.build_model, femsr.export.export_model, femsr.export.load_model
    femsr.distributed : how several processes share the batches.

    Notes
    -----
    Started by ``torchrun`` (``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` set), each process
    joins the process group (NCCL on CUDA, each process on GPU ``LOCAL_RANK``; gloo on the CPU)
    and trains the model in ``DistributedDataParallel`` on its share of every batch
    (:class:`femsr.distributed.BatchShares`): the weights are those of one process with the
    same ``batch_size``, to float32 rounding, with the L1 or L2 loss and the mass term (the
    stiffness term to its solver's tolerance; clDice is taken over each process's share). Only the
    main process (rank 0) validates, shows progress, logs and writes the files, and it reads
    the checkpoint that every process resumes from, so only its ``out_dir`` need exist. A run
    resumes with any number of processes.

    Examples
    --------
    >>> import tempfile, torch
    >>> from torch.utils.data import TensorDataset
    >>> from femsr.losses import block_mean
    >>> from femsr.model import ModelConfig
    >>> cfg = ModelConfig(in_channels=3, width=4, n_blocks=1, up_width=2, patch_size=2)
    >>> hr = torch.rand(4, 1, 20, 20)
    >>> lr = torch.cat([block_mean(hr, 10), torch.zeros(4, 2, 2, 2)], dim=1)
    >>> data = TensorDataset(lr, hr)
    >>> result = train(cfg, data, data, out_dir=tempfile.mkdtemp(), epochs=2, batch_size=2,
    ...                progress=False)
    >>> [record["epoch"] for record in result.history]
    [1, 2]
    """
    weights = dict(zip(WEIGHTS, (mass_weight, cldice_weight, stiffness_weight), strict=True))
    _check_arguments(cfg, loss, schedule, epochs, batch_size, lr, weights)
    weights = {name: float(weight) for name, weight in weights.items()}
    _check_dataset("train_dataset", train_dataset, cfg)
    _check_dataset("val_dataset", val_dataset, cfg)
    processes = distributed.from_environment()
    distributed.check_batch_size(batch_size, processes)
    device = resolve_device(device)

    out = Path(out_dir)
    if processes.main:
        out.mkdir(parents=True, exist_ok=True)
    checkpoint_path, best_path, log_path = out / "checkpoint.pt", out / "best.pt", out / log_file
    # A resumed run must continue the same run: these must match the checkpoint's. The number
    # of processes is not among them: any number trains the network of one.
    settings = {
        "config": cfg.to_dict(),
        "loss": loss,
        **weights,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": float(lr),
        "schedule": schedule,
        "seed": seed,
        "init": None if init is None else str(init),
    }

    with distributed.process_group(processes, device) as device, _flush_subnormals():
        amp_dtype = _amp_dtype(device, amp)
        state = _initial_state(cfg, lr, schedule, epochs, seed, device, amp_dtype)
        checkpoint = None
        if resume:
            remedy = "use another out_dir or resume=False"
            read = partial(resume_run, checkpoint_path, settings, _read_checkpoint, remedy=remedy)
            checkpoint = distributed.on_main(processes, read)  # the main's file, on every process
            if checkpoint is not None:
                _restore(state, checkpoint)
                if processes.main:
                    _write_log(log_path, state.history)
                    logger.info(
                        "resuming %s after epoch %d of %d", checkpoint_path, state.epoch, epochs
                    )
        if checkpoint is None and init is not None:  # a resumed run has its weights already
            _start_from(state.model, init, cfg)

        pin = device.type == "cuda"
        length = len(train_dataset)  # type: ignore[arg-type]
        shares = distributed.BatchShares(length, batch_size, state.loader_generator, processes)
        train_loader = DataLoader(
            train_dataset,
            batch_sampler=shares,
            generator=state.loader_generator,
            num_workers=num_workers,
            pin_memory=pin,
        )
        val_loader = DataLoader(
            val_dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin
        )
        net = distributed.wrap(state.model, processes, device)
        try:
            for epoch in range(state.epoch + 1, epochs + 1):
                record = _epoch(
                    state,
                    net,
                    train_loader,
                    shares,
                    val_loader,
                    device,
                    amp_dtype,
                    epoch=epoch,
                    epochs=epochs,
                    progress=progress,
                    loss=loss,
                    weights=weights,
                    scale=cfg.scale,
                    seed=seed,
                )
                state.epoch = epoch
                state.history.append(record)
                improved = record["val_loss"] < state.best_loss
                if improved:
                    state.best_epoch, state.best_loss = epoch, record["val_loss"]
                save = partial(
                    _save, state, settings, improved, checkpoint_path, best_path, log_path
                )
                distributed.on_main(processes, save)  # every process waits for the files
            best = distributed.on_main(processes, partial(_best_model, best_path))
        except BaseException as error:
            if net is not state.model:  # the epoch's frame in the traceback holds the wrapper
                traceback.clear_frames(error.__traceback__)
            raise
        finally:
            # Gone before the group: DDP's reducer holds it, and as its last holder (freed with
            # this frame) would destroy it holding the GIL, joining gloo's threads while one of
            # them waits for the GIL to free a broadcast's tensor (a hang, seen under load).
            del net
    return TrainResult(
        best.to(device), state.history, state.best_epoch, best_path, checkpoint_path, log_path
    )


def _save(
    state: _State,
    settings: dict[str, Any],
    improved: bool,
    checkpoint_path: Path,
    best_path: Path,
    log_path: Path,
) -> None:
    """Write the files of the epoch just done: the best weights if ``improved``, the
    checkpoint, the log."""
    if improved:
        save_state(state.model, best_path)
    with atomic_write(checkpoint_path) as stream:
        torch.save(_checkpoint(state, settings), stream)
    _write_log(log_path, state.history)


def _start_from(model: nn.Module, path: str | os.PathLike[str], cfg: ModelConfig) -> None:
    """Give ``model`` (``cfg``'s network) the weights of the model at ``path``."""
    loaded = load_model(path, device="cpu")
    if loaded.config != cfg:
        raise ValueError(
            f"init model {str(path)!r} is the network {loaded.config}, not the one to train, {cfg}"
        )
    try:
        model.load_state_dict(loaded.module.state_dict())
    except RuntimeError:
        raise ValueError(
            f"init model {str(path)!r} ({loaded.format}) does not name its weights as "
            "femsr.model.SRNet does; start from a best.pt or a model exported as 'state'"
        ) from None


def _best_model(best_path: Path) -> nn.Module:
    return load_model(best_path, device="cpu").module


@dataclass
class _State:
    """A run's parts and progress: what a checkpoint holds besides the settings."""

    model: SRNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loader_generator: torch.Generator
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_loss: float = math.inf


def _initial_state(
    cfg: ModelConfig,
    lr: float,
    schedule: str,
    epochs: int,
    seed: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> _State:
    """A new run: the generators seeded, the network built from them, no epoch done."""
    _seed_everything(seed)
    model = channels_last(build_model(cfg).to(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return _State(
        model=model,
        optimizer=optimizer,
        scheduler=_scheduler(optimizer, schedule, epochs),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        loader_generator=torch.Generator().manual_seed(seed),
    )


def _restore(state: _State, checkpoint: dict[str, Any]) -> None:
    """Continue ``state`` where ``checkpoint`` left off."""
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    state.scaler.load_state_dict(checkpoint["scaler"])
    _set_rng_state(checkpoint["rng"], state.loader_generator)
    state.epoch, state.history = checkpoint["epoch"], checkpoint["history"]
    state.best_epoch, state.best_loss = checkpoint["best_epoch"], checkpoint["best_loss"]


def _checkpoint(state: _State, settings: dict[str, Any]) -> dict[str, Any]:
    """Everything :func:`train` needs to resume after ``state.epoch``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "settings": settings,
        "epoch": state.epoch,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "rng": _rng_state(state.loader_generator),
        "best_epoch": state.best_epoch,
        "best_loss": state.best_loss,
        "history": state.history,
    }


def _epoch(
    state: _State,
    net: nn.Module,
    train_loader: DataLoader,
    shares: distributed.BatchShares,
    val_loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    *,
    epoch: int,
    epochs: int,
    progress: bool,
    loss: str,
    weights: dict[str, float],
    scale: int,
    seed: int,
) -> dict[str, float]:
    """Train one epoch through ``net`` (the model, or its DistributedDataParallel) on the
    batches of ``shares``, step the rate, validate on the main process: the epoch's record of
    the log, on every process."""
    processes = shares.processes
    _set_epoch(train_loader.dataset, epoch)
    if processes.size > 1:
        # Draws from the global generators (a dataset's own augmentation) differ between the
        # processes, and are seeded per epoch, so that a resumed run draws them again.
        entropy = [seed % 2**64, epoch, processes.rank]
        _seed_everything(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
    net.train()
    started = time.perf_counter()
    rate = state.optimizer.param_groups[0]["lr"]
    with tqdm(
        total=len(train_loader.dataset),  # type: ignore[arg-type]
        desc=f"epoch {epoch}/{epochs}",
        unit="pair",
        leave=False,  # each epoch is logged instead
        dynamic_ncols=True,
        disable=not (progress and processes.main),
    ) as bar:
        total, count = _train_epoch(
            net,
            train_loader,
            shares,
            state.optimizer,
            state.scaler,
            device,
            amp_dtype,
            bar,
            epoch,
            rate,
            loss=loss,
            weights=weights,
            scale=scale,
        )
    total, pairs = distributed.summed(processes, [total, count], device)  # all processes'
    state.scheduler.step()
    seconds = time.perf_counter() - started

    def validate() -> dict[str, float]:
        metrics = _evaluate(state.model, val_loader, device, amp_dtype, loss, weights, scale)
        record = {
            "epoch": epoch,
            "lr": rate,
            "train_loss": total / pairs,
            **metrics,
            "seconds": time.perf_counter() - started,
            "patches_per_s": pairs / seconds,
        }
        logger.info(
            "epoch %d/%d: train loss %.4g, val loss %.4g, PSNR %.2f dB, SSIM %.4f, %.1f s",
            epoch,
            epochs,
            record["train_loss"],
            metrics["val_loss"],
            metrics["val_psnr"],
            metrics["val_ssim"],
            record["seconds"],
        )
        return record

    return distributed.on_main(processes, validate)


def _set_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell a dataset (under any ``Subset`` or ``ConcatDataset``) with a ``set_epoch`` which
    epoch it serves: an augmenting :class:`femsr.patch_dataset.PatchDataset` draws by item and
    epoch."""
    if isinstance(dataset, Subset):
        _set_epoch(dataset.dataset, epoch)
    elif isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            _set_epoch(part, epoch)
    else:
        set_epoch = getattr(dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
