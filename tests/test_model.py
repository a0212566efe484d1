"""The network: shapes, range, the parameter and FLOP formulas, the config's checks."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from femsr.model import (  # noqa: E402  (after importorskip)
    ModelConfig,
    build_model,
    flops_per_patch,
    parameter_count,
    resolve_device,
)

TINY = {"in_channels": 3, "width": 6, "n_blocks": 2, "up_width": 3, "patch_size": 4}


def test_import_femsr_does_not_import_torch():
    code = (
        "import sys, femsr\n"
        "assert 'torch' not in sys.modules, 'import femsr loaded torch'\n"
        "femsr.model\n"
        "assert 'torch' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_unknown_attribute_of_femsr():
    import femsr

    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        femsr.nonexistent  # noqa: B018


@pytest.mark.parametrize("upsampling", ["2x5", "5x2", "10"])
def test_shape_and_range(upsampling):
    cfg = ModelConfig(**TINY, upsampling=upsampling)
    torch.manual_seed(0)
    net = build_model(cfg)
    with torch.no_grad():
        # Large weights drive the pre-activation far outside [0, 1] before the output squashes it.
        for parameter in net.parameters():
            parameter.normal_(0.0, 3.0)
        y = net(torch.rand(5, 3, 4, 4) * 4 - 2)
    assert y.shape == (5, 1, 40, 40)
    assert y.dtype == torch.float32
    assert bool(torch.isfinite(y).all())
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert float(y.max() - y.min()) > 0.1  # not collapsed to a constant


def test_untrained_network_returns_the_upsampled_density():
    # The tail starts at zero, so the output is the density skip alone: the LR density
    # upsampled bilinearly x10 (pixel centres aligned), clipped to [0.01, 0.99].
    cfg = ModelConfig(**TINY)
    density = torch.rand(2, 1, 4, 4)
    x = torch.cat([density, torch.randn(2, 2, 4, 4)], dim=1)
    with torch.no_grad():
        y = build_model(cfg)(x)
    up = torch.nn.functional.interpolate(density, scale_factor=10, mode="bilinear")
    # sigmoid(logit(d)) in float32: a few ulp, more or fewer with each CPU's vectorised exp/log.
    torch.testing.assert_close(y, up.clamp(0.01, 0.99), rtol=0, atol=1e-5)
    # A uniform density stays uniform: bilinear weights sum to 1.
    with torch.no_grad():
        flat = build_model(cfg)(torch.cat([torch.full((1, 1, 4, 4), 0.3), x[:1, 1:]], dim=1))
    torch.testing.assert_close(flat, torch.full_like(flat, 0.3), rtol=0, atol=1e-5)


def test_gradients_reach_every_parameter():
    # With a zero tail the first backward only moves the tail; after one step all layers learn.
    cfg = ModelConfig(**TINY)
    torch.manual_seed(0)
    net = build_model(cfg)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x, target = torch.rand(2, 3, 4, 4), torch.rand(2, 1, 40, 40)
    for _ in range(2):
        optimizer.zero_grad()
        ((net(x) - target) ** 2).mean().backward()
        optimizer.step()
    assert all(float(p.grad.abs().max()) > 0 for p in net.parameters())


CONFIGS = [
    ModelConfig(),
    ModelConfig(width=32, n_blocks=4, up_width=8),
    ModelConfig(in_channels=3, width=5, n_blocks=0, upsampling="10", up_width=1),
    ModelConfig(in_channels=1, width=7, n_blocks=3, scale=4, upsampling="2x2", up_width=7),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"w{c.width}b{c.n_blocks}{c.upsampling}")
def test_parameter_count_formula(cfg):
    net = build_model(cfg)
    assert parameter_count(cfg) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"w{c.width}b{c.n_blocks}{c.upsampling}")
def test_flops_formula_against_layer_hooks(cfg):
    # Count multiply-adds of every conv from the shapes it really produces in a forward pass.
    net = build_model(cfg)
    macs = []

    def hook(module, inputs, output):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        macs.append(output[0].numel() * module.in_channels * kernel)

    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.rand(1, cfg.in_channels, cfg.patch_size, cfg.patch_size))
    assert flops_per_patch(cfg) == 2 * sum(macs)


def test_upsampler_with_narrow_last_stage_is_cheaper():
    wide = ModelConfig(width=48, n_blocks=8, up_width=48)
    narrow = ModelConfig(width=48, n_blocks=8, up_width=16)
    assert flops_per_patch(narrow) < 0.5 * flops_per_patch(wide)


def test_config_round_trip():
    cfg = ModelConfig(width=24, upsampling="10")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.hr_size == 120
    assert cfg.upsampling_factors == (10,)


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"in_channels": 0}, ValueError, "in_channels must be >= 1, got 0"),
        ({"width": 2.5}, TypeError, "width must be an int, got float"),
        ({"n_blocks": -1}, ValueError, "n_blocks must be >= 0, got -1"),
        ({"scale": True}, TypeError, "scale must be an int, got bool"),
        ({"up_width": 0}, ValueError, "up_width must be >= 1"),
        ({"patch_size": 0}, ValueError, "patch_size must be >= 1"),
        ({"res_scale": "0.1"}, TypeError, "res_scale must be a float, got str"),
        ({"res_scale": float("nan")}, ValueError, "res_scale must be positive and finite"),
        ({"res_scale": 0.0}, ValueError, "res_scale must be positive and finite"),
        ({"upsampling": "2x3"}, ValueError, "upsampling '2x3' multiplies to 6, not scale=10"),
        ({"upsampling": "2*5"}, ValueError, "upsampling must be factors >= 2 joined by 'x'"),
        ({"upsampling": "1x10"}, ValueError, "upsampling must be factors >= 2"),
        ({"upsampling": 10}, TypeError, "upsampling must be a str, got int"),
    ],
)
def test_config_errors(fields, error, match):
    with pytest.raises(error, match=match):
        ModelConfig(**fields)


def test_config_from_dict_errors():
    fields = ModelConfig().to_dict()
    with pytest.raises(ValueError, match="model config must be a dict, got list"):
        ModelConfig.from_dict([])
    with pytest.raises(ValueError, match=r"unknown fields \['depth'\]"):
        ModelConfig.from_dict({**fields, "depth": 3})
    del fields["width"]
    with pytest.raises(ValueError, match=r"lacks the fields \['width'\]"):
        ModelConfig.from_dict(fields)


def test_config_from_dict_drops_the_retired_fields_at_their_one_value():
    """Configs of earlier versions (the bundled model's among them) name output and
    density_skip, at the values every network has: they load; other values are refused."""
    old = {**ModelConfig().to_dict(), "output": "sigmoid", "density_skip": "bilinear"}
    assert ModelConfig.from_dict(old) == ModelConfig()
    with pytest.raises(ValueError, match=r"density_skip='none', a network .* density_skip="):
        ModelConfig.from_dict({**old, "density_skip": "none"})
    with pytest.raises(ValueError, match=r"output='clamp', a network .* \(only output='sigmoid'\)"):
        ModelConfig.from_dict({**old, "output": "clamp"})


def test_build_model_type_error():
    with pytest.raises(TypeError, match="config must be a ModelConfig, got dict"):
        build_model({"width": 4})


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device 'gpu' is not a torch device"):
        resolve_device("gpu")
    with pytest.raises(TypeError, match=r"device must be a str or torch.device, got int"):
        resolve_device(0)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_resolve_device_without_cuda():
    with pytest.raises(ValueError, match="device 'cuda' asks for CUDA"):
        resolve_device("cuda")


def test_density_channel_drives_the_skip_only():
    # Displacement channels reach the output through the convolutions, the density also through
    # the skip: changing channel 0 of an untrained net moves the output, the others do not.
    cfg = ModelConfig(**TINY)
    net = build_model(cfg)
    x = torch.rand(1, 3, 4, 4)
    moved_displacement = x.clone()
    moved_displacement[:, 1:] += 1.0
    moved_density = x.clone()
    moved_density[:, :1] = 1.0 - moved_density[:, :1]
    with torch.no_grad():
        base = net(x)
        assert torch.equal(net(moved_displacement), base)
        assert not np.allclose(net(moved_density).numpy(), base.numpy())
