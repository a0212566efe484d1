"""The super-resolution network: a residual CNN (EDSR style) that maps LR patches to HR patches.

Input: an LR patch of ``in_channels`` channels on a ``patch_size`` x ``patch_size`` window of
500 µm pixels. Channel 0 is the LR density (block mean of the HR density, in [0, 1], not
normalized); the others are the displacement channels of the load cases (ux, uy per case, so
``1 + 2 * 3 = 7`` for the three daily load cases). Output: the HR density patch, 1 channel,
``scale`` times larger (50 µm pixels), in [0, 1].

Architecture (Lim et al. 2017, EDSR; the paper's "ResNet"):

``head`` conv → ``n_blocks`` residual blocks (conv, ReLU, conv, scaled by ``res_scale``, no batch
norm) → conv → global skip (+ head features) → sub-pixel upsampling (a conv to ``r² · c``
channels and a pixel shuffle per factor ``r`` of ``upsampling``, e.g. x2 then x5) → ``tail``
conv to 1 channel → density skip → sigmoid.

The density skip adds the LR density, upsampled x``scale`` (bilinear), so the network learns a
residual on top of it. It is added in logit space, ``sigmoid(r + logit(d))``, so the output
stays in (0, 1) with a nonzero gradient everywhere (a clipped sum, plain EDSR's, has none
where it clips). The tail conv starts at zero, so an untrained network returns exactly the
(clipped) upsampled density.

The last upsampling stage ends in ``up_width`` channels rather than ``width``: at 10x it runs
at up to 120 x 120 pixels, and with ``width`` channels it alone would cost more than all the
residual blocks together (see :func:`flops_per_patch`).

Every nn.Module is built from a :class:`ModelConfig` by :func:`build_model`; the config travels
with the weights (:mod:`femsr.export`), and training (:mod:`femsr.train`) consumes it too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from femsr import defaults
from femsr.checks import check_int

__all__ = [
    "ModelConfig",
    "SRNet",
    "build_model",
    "channels_last",
    "flops_per_patch",
    "parameter_count",
    "resolve_device",
]

_KERNEL = 3
# The density skip clips the upsampled LR density to [eps, 1 - eps] before the logit, so void
# (0) and solid (1) pixels start at logit ±4.6 instead of ±inf; the residual takes them further.
_SKIP_EPS = 0.01
# Channels-last (NHWC) runs this network's convolutions 1.4-2x faster on the CPU (oneDNN; above
# all the 1-channel tail conv at HR) and suits tensor cores on CUDA; results are unchanged.
FAST_LAYOUT = torch.channels_last
# Fields that configs written by earlier versions name, with the one value every network had
# then and has now: the sigmoid output and the bilinear density skip (the bundled model's and
# every trained one's; the other values, a clipped output and a nearest or no skip, were
# experiments). ModelConfig.from_dict and the resume of a training checkpoint (femsr.train) drop
# them at that value, so those files still load.
RETIRED_FIELDS = {"output": "sigmoid", "density_skip": "bilinear"}


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network; saved with its weights.

    Parameters
    ----------
    in_channels : int
        Input channels: the LR density (channel 0) and two displacement channels per load case.
        Default 7 (three load cases).
    width : int
        Feature channels of the head and the residual blocks. The defaults of ``width``,
        ``n_blocks`` and ``up_width`` are the bundled model's (:mod:`femsr.defaults`).
    n_blocks : int
        Residual blocks (0 allowed: head, conv, upsampler, tail).
    scale : int
        Upscaling factor; 10 takes 500 µm pixels to 50 µm.
    res_scale : float
        Factor on each block's residual branch (EDSR: 0.1 keeps deep, wide nets stable).
    upsampling : str
        Sub-pixel factors, in order, joined by ``"x"``: ``"2x5"`` (x2 then x5) or ``"10"`` (one
        step). Their product must equal ``scale``.
    up_width : int
        Channels after the last pixel shuffle, at HR, that the tail conv reads.
    patch_size : int
        LR window side (pixels) the network is trained and exported for.

    Raises
    ------
    TypeError
        If a count is not an int.
    ValueError
        If a value is out of range or ``upsampling`` does not multiply to ``scale``.

    Examples
    --------
    >>> cfg = ModelConfig(width=16, n_blocks=2)
    >>> cfg.upsampling_factors
    (2, 5)
    >>> ModelConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    in_channels: int = 7
    width: int = defaults.WIDTH
    n_blocks: int = defaults.N_BLOCKS
    scale: int = 10
    res_scale: float = 0.1
    upsampling: str = "2x5"
    up_width: int = defaults.UP_WIDTH
    patch_size: int = 12

    def __post_init__(self) -> None:
        check_int("in_channels", self.in_channels, 1)
        check_int("width", self.width, 1)
        check_int("n_blocks", self.n_blocks, 0)
        check_int("scale", self.scale, 2)
        check_int("up_width", self.up_width, 1)
        check_int("patch_size", self.patch_size, 1)
        if isinstance(self.res_scale, bool) or not isinstance(self.res_scale, (int, float)):
            raise TypeError(f"res_scale must be a float, got {type(self.res_scale).__name__}")
        if not (math.isfinite(self.res_scale) and self.res_scale > 0):
            raise ValueError(f"res_scale must be positive and finite, got {self.res_scale}")
        factors = self.upsampling_factors
        if math.prod(factors) != self.scale:
            raise ValueError(
                f"upsampling {self.upsampling!r} multiplies to {math.prod(factors)}, "
                f"not scale={self.scale}"
            )

    @property
    def upsampling_factors(self) -> tuple[int, ...]:
        """The pixel-shuffle factors of ``upsampling``, e.g. ``(2, 5)``."""
        if not isinstance(self.upsampling, str):
            raise TypeError(f"upsampling must be a str, got {type(self.upsampling).__name__}")
        parts = self.upsampling.split("x")
        if not all(part.isdigit() and int(part) >= 2 for part in parts):
            raise ValueError(
                f"upsampling must be factors >= 2 joined by 'x' (e.g. '2x5'), "
                f"got {self.upsampling!r}"
            )
        return tuple(int(part) for part in parts)

    @property
    def hr_size(self) -> int:
        """HR patch side in pixels: ``patch_size * scale``."""
        return self.patch_size * self.scale

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: object) -> ModelConfig:
        """Build a config from :meth:`to_dict` output, naming unknown or missing fields.

        A retired field (``output``, ``density_skip``: earlier versions wrote them) at the
        value every network has is dropped; at another value it is refused.
        """
        if not isinstance(fields, dict):
            raise ValueError(f"model config must be a dict, got {type(fields).__name__}")
        for name, value in RETIRED_FIELDS.items():
            if name in fields and fields[name] != value:
                raise ValueError(
                    f"model config has {name}={fields[name]!r}, a network this version does "
                    f"not build (only {name}={value!r})"
                )
        fields = {name: value for name, value in fields.items() if name not in RETIRED_FIELDS}
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise ValueError(f"model config has unknown fields {unknown}")
        missing = sorted(names - set(fields))
        if missing:
            raise ValueError(f"model config lacks the fields {missing}")
        return cls(**fields)


class _ResidualBlock(nn.Module):
    """conv → ReLU → conv, scaled and added to the input (EDSR: no batch norm)."""

    def __init__(self, width: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, _KERNEL, padding=_KERNEL // 2)
        self.conv2 = nn.Conv2d(width, width, _KERNEL, padding=_KERNEL // 2)
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x)))


class SRNet(nn.Module):
    """The network of a :class:`ModelConfig`; build it with :func:`build_model`.

    ``forward`` takes ``(N, in_channels, P, P)`` and returns ``(N, 1, P * scale, P * scale)``
    with values in [0, 1]. The config is kept as ``self.config``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        pad = _KERNEL // 2
        self.head = nn.Conv2d(config.in_channels, width, _KERNEL, padding=pad)
        self.body = nn.Sequential(
            *[_ResidualBlock(width, config.res_scale) for _ in range(config.n_blocks)],
            nn.Conv2d(width, width, _KERNEL, padding=pad),
        )
        stages: list[nn.Module] = []
        factors = config.upsampling_factors
        for index, factor in enumerate(factors):
            out = config.up_width if index == len(factors) - 1 else width
            stages += [nn.Conv2d(width, factor**2 * out, _KERNEL, padding=pad)]
            stages += [nn.PixelShuffle(factor)]
        self.upsample = nn.Sequential(*stages)
        self.tail = nn.Conv2d(config.up_width, 1, _KERNEL, padding=pad)
        self.scale = float(config.scale)
        self.skip_eps = _SKIP_EPS
        # Start as the identity on the upsampled density: training only adds detail.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)  # type: ignore[arg-type]  # Conv2d(bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        y = self.tail(self.upsample(self.body(features) + features))
        up = F.interpolate(x[:, :1], scale_factor=self.scale, mode="bilinear", align_corners=False)
        return torch.sigmoid(y + torch.logit(up.clamp(self.skip_eps, 1.0 - self.skip_eps)))


def build_model(config: ModelConfig) -> SRNet:
    """Build the network of a config (weights from torch's default initialization).

    Parameters
    ----------
    config : ModelConfig
        The network's shape.

    Returns
    -------
    SRNet
        An ``nn.Module`` mapping ``(N, in_channels, P, P)`` to ``(N, 1, P*scale, P*scale)``.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`ModelConfig`.

    See Also
    --------
    parameter_count, flops_per_patch, femsr.train.train, femsr.export.export_model

    Examples
    --------
    >>> import torch
    >>> net = build_model(ModelConfig(width=8, n_blocks=1, up_width=4))
    >>> y = net(torch.rand(2, 7, 12, 12))
    >>> tuple(y.shape), bool(((y >= 0) & (y <= 1)).all())
    ((2, 1, 120, 120), True)
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    return SRNet(config)


_Module = TypeVar("_Module", bound=nn.Module)


def channels_last(module: _Module) -> _Module:
    """``module`` with its 4D weights in :data:`FAST_LAYOUT` (in place), for speed."""
    # nn.Module.to accepts memory_format, but torch's type stubs leave it out.
    return module.to(memory_format=FAST_LAYOUT)  # type: ignore[call-overload]


def _conv_layers(config: ModelConfig) -> list[tuple[int, int, int]]:
    """(in channels, out channels, output side in pixels) of every conv, in forward order."""
    side, width = config.patch_size, config.width
    layers = [(config.in_channels, width, side)]
    layers += [(width, width, side)] * (2 * config.n_blocks + 1)
    factors = config.upsampling_factors
    for index, factor in enumerate(factors):
        out = config.up_width if index == len(factors) - 1 else width
        layers.append((width, factor**2 * out, side))
        side *= factor
    layers.append((config.up_width, 1, side))
    return layers


def parameter_count(config: ModelConfig) -> int:
    """Trainable parameters of the network, from the config alone.

    Every layer is a 3 x 3 conv with bias, ``9 · c_in · c_out + c_out`` parameters: the head
    (``in_channels → width``), ``2 · n_blocks + 1`` body convs (``width → width``), one conv per
    upsampling factor ``r`` (``width → r² · width``, the last ``width → r² · up_width``) and the
    tail (``up_width → 1``).

    Examples
    --------
    >>> parameter_count(ModelConfig(in_channels=7, width=8, n_blocks=1, up_width=4))
    11937
    """
    return sum(_KERNEL**2 * c_in * c_out + c_out for c_in, c_out, _ in _conv_layers(config))


def flops_per_patch(config: ModelConfig) -> int:
    """Floating-point operations of one forward pass on one patch (2 per multiply-add).

    Counts the convolutions, ``2 · 9 · c_in · c_out`` per output pixel; ReLUs, additions, the
    density skip and the output activation add well under 1 % and are left out.

    Examples
    --------
    >>> flops_per_patch(ModelConfig(in_channels=7, width=8, n_blocks=1, up_width=4))
    10637568
    """
    return sum(
        2 * _KERNEL**2 * c_in * c_out * side * side for c_in, c_out, side in _conv_layers(config)
    )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device``: ``"auto"`` picks CUDA when present, else the CPU.

    Raises
    ------
    ValueError
        If the name is not a device, or names CUDA on a machine without it.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device {device!r} is not a torch device: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asks for CUDA, which this torch build or machine lacks"
        )
    return resolved
