"""Saving the trained network for batched inference, loading it back, and running it.

Three file formats, each carrying the :class:`~femsr.model.ModelConfig` with the weights:

``.pt2`` — ``torch.export`` (the main format)
    An ``ExportedProgram`` with a dynamic batch dimension (``torch.export.save``); needs no
    femsr code to run. The spatial size is fixed to the config's ``patch_size``.
``.ts`` — TorchScript (``torch.jit.script``)
    What the original design asked for. PyTorch has deprecated TorchScript in favour of
    ``torch.export`` (it warns on every call and will remove it); where it is gone, saving or
    loading this format raises a ``RuntimeError`` that says so, and the rest of femsr works.
``.pt`` — plain state dict (the fallback)
    ``{"format", "version", "config", "state_dict"}`` written by ``torch.save`` and read with
    ``torch.load(weights_only=True)``, so loading never runs pickled code. Needs femsr's
    :func:`~femsr.model.build_model` to rebuild the network. Training's ``best.pt`` is one.

All three are zip archives; :func:`load_model` tells them apart by their members, not by the
file name, and checks every member's CRC first, so a truncated or corrupted file is reported as
such instead of failing somewhere inside torch. Files are written atomically.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from femsr import defaults
from femsr.encoding import transform
from femsr.io import atomic_write
from femsr.model import (
    FAST_LAYOUT,
    ModelConfig,
    SRNet,
    build_model,
    channels_last,
    resolve_device,
)

__all__ = ["LoadedModel", "export_model", "load_model", "place", "predict", "save_state"]

FORMATS = {".pt2": "pt2", ".ts": "torchscript", ".pt": "state", ".pth": "state"}
STATE_FORMAT = "femsr-state"
STATE_VERSION = 1
# Name of the JSON member holding the config inside .pt2 and .ts archives.
_META = "femsr_model.json"
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
# The eight symmetries of the square as femsr.encoding.transform's (k, flip): quarter turns,
# then the same after a left-right mirror.
SYMMETRIES = tuple((k, flip) for flip in (False, True) for k in range(4))


def _inverse(k: int, flip: bool) -> tuple[int, bool]:
    """The ``(k, flip)`` of :func:`~femsr.encoding.transform` that undoes ``(k, flip)``.

    Turns undo by turning back; a mirror then ``k`` turns is itself a mirror (about another
    axis), so it undoes itself.
    """
    return (k % 4, True) if flip else (-k % 4, False)


def _check_model(model: object) -> SRNet:
    if not isinstance(model, SRNet):
        raise TypeError(
            f"model must be built by femsr.model.build_model, got {type(model).__name__}"
        )
    return model


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is None:
        if path.suffix not in FORMATS:
            raise ValueError(
                f"cannot tell the format from the suffix of {path.name!r}; "
                f"use one of {sorted(FORMATS)} or pass format="
            )
        return FORMATS[path.suffix]
    if fmt not in set(FORMATS.values()):
        raise ValueError(f"format must be one of {sorted(set(FORMATS.values()))}, got {fmt!r}")
    return fmt


def _metadata(config: ModelConfig, fmt: str) -> str:
    return json.dumps({"format": fmt, "torch": torch.__version__, "config": config.to_dict()})


def _torchscript() -> Any:
    """``torch.jit``, or a RuntimeError naming the way out where PyTorch no longer has it."""
    jit = getattr(torch, "jit", None)
    if jit is None or not all(hasattr(jit, name) for name in ("script", "save", "load")):
        raise RuntimeError(
            f"TorchScript is not available in torch {torch.__version__} (deprecated in favour "
            f"of torch.export); use the .pt2 format, or .pt (state dict) with femsr"
        )
    return jit


def save_state(model: SRNet, path: str | os.PathLike[str]) -> Path:
    """Write the weights and config as a plain state dict (``.pt``), atomically.

    The file holds only tensors and plain Python values, so :func:`load_model` reads it with
    ``torch.load(weights_only=True)``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from femsr.model import ModelConfig, build_model
    >>> net = build_model(ModelConfig(width=4, n_blocks=0, up_width=2))
    >>> path = save_state(net, pathlib.Path(tempfile.mkdtemp()) / "net.pt")
    >>> load_model(path, device="cpu").config == net.config
    True
    """
    model = _check_model(model)
    path = Path(path)
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    payload = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "config": model.config.to_dict(),
        "state_dict": state,
    }
    with atomic_write(path) as stream:
        torch.save(payload, stream)
    return path


def export_model(
    model: SRNet, path: str | os.PathLike[str], *, format: str | None = None, max_batch: int = 65536
) -> Path:
    """Export the network for batched inference, atomically.

    Parameters
    ----------
    model : SRNet
        A network from :func:`femsr.model.build_model` (trained or not); exported from the CPU
        in eval mode, and left as it was.
    path : path
        Output file. The suffix picks the format unless ``format`` is given: ``.pt2``
        (``torch.export``), ``.ts`` (TorchScript), ``.pt``/``.pth`` (state dict).
    format : {"pt2", "torchscript", "state"}, optional
        The format, whatever the suffix.
    max_batch : int
        Largest batch the ``.pt2`` program accepts (its batch dimension is dynamic, 1 to this).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        If ``model`` is not an :class:`~femsr.model.SRNet`.
    ValueError
        If the format is unknown.
    RuntimeError
        If TorchScript is asked for and this PyTorch no longer has it.

    See Also
    --------
    load_model, predict

    Examples
    --------
    >>> import tempfile, pathlib, torch
    >>> from femsr.model import ModelConfig, build_model
    >>> net = build_model(ModelConfig(width=4, n_blocks=1, up_width=2))
    >>> path = export_model(net, pathlib.Path(tempfile.mkdtemp()) / "net.pt2")
    >>> loaded = load_model(path, device="cpu")
    >>> x = torch.rand(3, 7, 12, 12)
    >>> bool(torch.allclose(loaded(x), net(x), atol=1e-5))
    True
    """
    model = _check_model(model)
    path = Path(path)
    fmt = _format_of(path, format)
    if fmt == "state":
        return save_state(model, path)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 2:
        raise ValueError(f"max_batch must be an int >= 2, got {max_batch!r}")
    config = model.config
    # Export a CPU copy in eval mode: the user's module keeps its device and mode. TorchScript
    # keeps channels-last weights (femsr.model.FAST_LAYOUT); torch.export.save cannot store them
    # (it warns and mislays their storage), so .pt2 weights go contiguous and LoadedModel turns
    # them channels-last after loading.
    network = build_model(config)
    if fmt == "torchscript":
        network = channels_last(network)
    network.load_state_dict({key: value.cpu() for key, value in model.state_dict().items()})
    network.eval()
    metadata = _metadata(config, fmt)
    if fmt == "pt2":
        example = torch.rand(2, config.in_channels, config.patch_size, config.patch_size)
        example = example.contiguous(memory_format=FAST_LAYOUT)
        batch = torch.export.Dim("batch", min=1, max=max_batch)
        program = torch.export.export(network, (example,), dynamic_shapes={"x": {0: batch}})
        with atomic_write(path) as stream:
            torch.export.save(program, stream, extra_files={_META: metadata})
    else:
        jit = _torchscript()
        try:
            scripted = jit.script(network)
        except Exception as error:
            raise RuntimeError(
                f"TorchScript cannot compile the network in torch {torch.__version__} ({error}); "
                f"use the .pt2 format"
            ) from error
        with atomic_write(path) as stream:
            jit.save(scripted, stream, _extra_files={_META: metadata})
    return path


class LoadedModel:
    """A network read by :func:`load_model`, ready for batched inference.

    Call it on a ``(N, in_channels, P, P)`` tensor on its device to get ``(N, 1, P*scale,
    P*scale)``; :func:`predict` does the batching, devices and precision for numpy input.

    Attributes
    ----------
    config : ModelConfig
        The network's config, from the file.
    format : {"pt2", "torchscript", "state"}
        The file format.
    device : torch.device
        Where the weights are.
    module : torch.nn.Module
        The underlying module: the exported program's module, the ScriptModule, or the eager
        :class:`~femsr.model.SRNet`.
    """

    def __init__(
        self, config: ModelConfig, fmt: str, device: torch.device, source: Any, path: Path
    ) -> None:
        self.config, self.format, self.path = config, fmt, path
        self._source = source  # ExportedProgram (pt2) or the module itself
        self.device = torch.device("cpu")
        self.module: nn.Module = self._module_of(source) if fmt == "pt2" else source
        self.to(device)

    @staticmethod
    def _module_of(program: Any) -> nn.Module:
        return channels_last(program.module())

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move the weights to ``device`` (in place) and return ``self``."""
        device = resolve_device(device)
        if device == self.device:
            return self
        if self.format == "pt2":
            # Exported programs specialize on the device; this pass is torch's way to move one.
            from torch.export.passes import move_to_device_pass

            self._source = move_to_device_pass(self._source, device)
            self.module = self._module_of(self._source)
        else:
            self.module.to(device)
        self.device = device
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def __repr__(self) -> str:
        return f"LoadedModel(format={self.format!r}, device={self.device}, config={self.config})"


def _fail(path: Path, problem: str) -> ValueError:
    return ValueError(f"model file {str(path)!r} {problem}")


def _members(path: Path) -> list[str]:
    """Member names of a zip archive whose CRCs all check out, or a ValueError saying why not."""
    if not zipfile.is_zipfile(path):
        raise _fail(path, "is not a model archive: truncated, corrupt or not a model file")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as error:
        raise _fail(path, f"is a damaged archive ({error})") from None
    if bad is not None:
        raise _fail(path, f"is corrupt: member {bad!r} fails its CRC check")
    return names


def _detect(path: Path, names: list[str]) -> str:
    # Members sit below one top folder; compare what lies under it.
    inner = {name.split("/", 1)[-1] for name in names}
    if "archive_format" in inner or any(name.startswith("models/") for name in inner):
        return "pt2"
    if "constants.pkl" in inner or any(name.startswith("code/") for name in inner):
        return "torchscript"
    if "data.pkl" in inner:
        return "state"
    raise _fail(path, "is a zip archive but not a femsr model (.pt2, .ts or .pt)")


def _config_from(path: Path, raw: Any, fmt: str) -> ModelConfig:
    if not raw:
        raise _fail(path, f"holds no femsr config (a {fmt} file not written by femsr?)")
    try:
        metadata = json.loads(raw)
        return ModelConfig.from_dict(metadata["config"])
    except (ValueError, TypeError, KeyError) as error:
        raise _fail(path, f"has an invalid config: {error}") from None


def _weights_problem(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """What differs between the config's parameters and the file's, briefly ('' if nothing)."""
    problems = []
    missing = sorted(set(expected) - set(state))
    if missing:
        problems.append(f"missing {missing[:4]}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        problems.append(f"unexpected {unexpected[:4]}")
    for key in (key for key in expected if key in state):  # in forward order, head first
        if state[key].shape != expected[key].shape:
            problems.append(
                f"{key} is {tuple(state[key].shape)}, the config needs {tuple(expected[key].shape)}"
            )
            break
    return "; ".join(problems)


def _load_state(path: Path) -> tuple[ModelConfig, SRNet]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise _fail(path, f"cannot be unpickled with weights_only=True: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise _fail(path, f"is a torch file but not a {STATE_FORMAT!r} state dict")
    if payload.get("version") != STATE_VERSION:
        raise _fail(path, f"has state version {payload.get('version')!r}, expected {STATE_VERSION}")
    try:
        config = ModelConfig.from_dict(payload.get("config"))
    except (ValueError, TypeError) as error:
        raise _fail(path, f"has an invalid config: {error}") from None
    network = build_model(config)
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail(path, "holds no state_dict of tensors")
    problem = _weights_problem(network.state_dict(), state)
    if problem:
        raise _fail(path, f"has weights that do not match its config: {problem}")
    network.load_state_dict(state)
    return config, channels_last(network).eval()


def load_model(path: str | os.PathLike[str], device: str | torch.device = "auto") -> LoadedModel:
    """Load a network saved by :func:`export_model` or :func:`save_state`, checking the file.

    The format is detected from the archive's contents. The file's integrity (zip CRCs), its
    config, the weights against the config, and one forward pass on a zero patch are checked
    before the model is returned.

    Parameters
    ----------
    path : path
        A ``.pt2``, ``.ts`` or ``.pt`` file (any name).
    device : str or torch.device
        ``"auto"``: CUDA when present, else the CPU.

    Returns
    -------
    LoadedModel
        A callable on ``(N, C, P, P)`` tensors, with ``config``, ``format`` and ``device``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is truncated, corrupt, not a femsr model, or its config, weights and
        network do not agree; the message names the problem.
    RuntimeError
        For a TorchScript file where this PyTorch no longer has TorchScript.

    See Also
    --------
    export_model, predict

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from femsr.model import ModelConfig, build_model
    >>> net = build_model(ModelConfig(width=4, n_blocks=1, up_width=2))
    >>> path = export_model(net, pathlib.Path(tempfile.mkdtemp()) / "net.pt")
    >>> load_model(path, device="cpu").format
    'state'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    device = resolve_device(device)
    fmt = _detect(path, _members(path))
    source: Any
    if fmt == "state":
        config, source = _load_state(path)
    elif fmt == "pt2":
        extra = {_META: ""}
        try:
            with warnings.catch_warnings():
                # torch 2.11 warns that it wraps the archive's read-only bytes in the weight
                # tensors; inference never writes to them, so to a user it is noise.
                warnings.filterwarnings("ignore", message="The given buffer is not writable")
                source = torch.export.load(path, extra_files=extra)
        except Exception as error:
            raise _fail(path, f"cannot be read by torch.export.load: {error}") from None
        config = _config_from(path, extra[_META], fmt)
    else:
        jit = _torchscript()
        extra = {_META: ""}
        try:
            source = jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as error:
            raise _fail(path, f"cannot be read by torch.jit.load: {error}") from None
        config = _config_from(path, extra[_META], fmt)
    model = LoadedModel(config, fmt, device, source, path)
    probe = torch.zeros(1, config.in_channels, config.patch_size, config.patch_size, device=device)
    try:
        with torch.inference_mode():
            shape = tuple(model(probe).shape)
    except Exception as error:
        raise _fail(path, f"does not run on a {tuple(probe.shape)} patch: {error}") from None
    if shape != (1, 1, config.hr_size, config.hr_size):
        expected = (1, 1, config.hr_size, config.hr_size)
        raise _fail(path, f"returns shape {shape} for one patch, its config implies {expected}")
    return model


def place(model: SRNet | LoadedModel, device: str | torch.device) -> SRNet | LoadedModel:
    """``model`` on ``device``: a :class:`LoadedModel` moves there in place; an eager network
    stays where it is (device and mode are the caller's) and a copy goes to another device.

    Examples
    --------
    >>> from femsr.model import ModelConfig, build_model
    >>> net = build_model(ModelConfig(width=4, n_blocks=1, up_width=2))
    >>> place(net, "cpu") is net
    True
    """
    target = resolve_device(device)
    if isinstance(model, LoadedModel):
        return model.to(target)
    current = next(model.parameters()).device
    if target.type == current.type and target.index in (None, current.index):
        return model
    return copy.deepcopy(model).to(target)


def predict(
    model: SRNet | LoadedModel,
    batch: np.ndarray,
    *,
    batch_size: int = defaults.INFERENCE_BATCH,
    device: str | torch.device | None = None,
    dtype: str | None = None,
    tta: bool = False,
) -> np.ndarray:
    """Run the network on many LR patches in batches, without gradients.

    Parameters
    ----------
    model : SRNet or LoadedModel
        From :func:`femsr.model.build_model`, :func:`femsr.train.train` or :func:`load_model`.
    batch : numpy.ndarray
        LR patches ``(N, in_channels, P, P)``, real, finite (channel 0 the density in [0, 1]).
    batch_size : int
        Patches per forward pass.
    device : str or torch.device, optional
        Where to run (``"auto"``: CUDA when present); default: where the model is. A
        :class:`LoadedModel` moves there; an eager network stays where it is (a copy runs),
        and keeps its training mode.
    dtype : {"float16", "bfloat16"}, optional
        Mixed-precision autocast (CUDA; bfloat16 also on recent CPUs). Default full float32.
    tta : bool
        Test-time dihedral averaging: run each patch under the eight symmetries of the square
        (:func:`femsr.encoding.transform`, the training augmentation: the density turned and
        mirrored, the displacement vectors with it), map each output back by the inverse
        symmetry and average the eight. The result is then the same for a patch and any of its
        turned or mirrored copies (mapped back), as the physics is. Eight times the inference.

    Returns
    -------
    numpy.ndarray
        HR patches ``(N, 1, P*scale, P*scale)``, float32 in [0, 1].

    Raises
    ------
    TypeError
        If ``model`` or ``batch`` has the wrong type.
    ValueError
        If ``batch`` has the wrong shape or non-finite values, or an option is invalid.

    See Also
    --------
    load_model, export_model

    Examples
    --------
    >>> import numpy as np
    >>> from femsr.model import ModelConfig, build_model
    >>> net = build_model(ModelConfig(width=4, n_blocks=1, up_width=2))
    >>> patches = np.random.default_rng(0).random((5, 7, 12, 12), dtype=np.float32)
    >>> predict(net, patches, batch_size=2).shape
    (5, 1, 120, 120)
    >>> predict(net, patches, tta=True).shape
    (5, 1, 120, 120)
    """
    if not isinstance(model, (SRNet, LoadedModel)):
        raise TypeError(
            f"model must be an SRNet or a LoadedModel (load_model), got {type(model).__name__}"
        )
    if not isinstance(batch, np.ndarray):
        raise TypeError(f"batch must be a numpy array, got {type(batch).__name__}")
    config = model.config
    expected = (config.in_channels, config.patch_size, config.patch_size)
    if batch.ndim != 4 or batch.shape[1:] != expected:
        raise ValueError(f"batch must have shape (N, *{expected}), got {batch.shape}")
    if not (np.issubdtype(batch.dtype, np.floating) or np.issubdtype(batch.dtype, np.integer)):
        raise TypeError(f"batch must hold real numbers, got dtype {batch.dtype}")
    if not np.isfinite(batch).all():
        raise ValueError("batch contains NaN or infinite values")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype must be None or one of {sorted(_DTYPES)}, got {dtype!r}")
    if not isinstance(tta, bool):
        raise TypeError(f"tta must be a bool, got {type(tta).__name__}")
    if tta and config.in_channels % 2 != 1:
        raise ValueError(
            f"tta needs the density plus (ux, uy) per load case, an odd number of channels; "
            f"the model takes {config.in_channels}"
        )

    network = model if device is None else place(model, device)
    eager: SRNet | None = None  # the eager network to put back in training mode
    if isinstance(network, SRNet):
        target = next(network.parameters()).device
        if network.training:
            eager = network
        network.eval()
    else:
        target = network.device
    output = np.empty((batch.shape[0], 1, config.hr_size, config.hr_size), dtype=np.float32)

    def run(chunk: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).to(target)
        x = x.contiguous(memory_format=FAST_LAYOUT)
        if dtype is None:
            y = network(x)
        else:
            with torch.autocast(device_type=target.type, dtype=_DTYPES[dtype]):
                y = network(x)
        return y.float().cpu().numpy()

    try:
        with torch.inference_mode():
            for start in range(0, batch.shape[0], batch_size):
                chunk = batch[start : start + batch_size]
                if not tta:
                    output[start : start + batch_size] = run(chunk)
                    continue
                total = np.zeros((len(chunk), *output.shape[1:]), dtype=np.float32)
                for k, flip in SYMMETRIES:
                    seen = run(transform(chunk.astype(np.float32, copy=False), k, flip))
                    total += transform(seen, *_inverse(k, flip))
                output[start : start + batch_size] = total / len(SYMMETRIES)
    finally:
        if eager is not None:
            eager.train()
    return output
