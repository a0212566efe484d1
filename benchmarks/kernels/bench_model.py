"""Network throughput on the CPU: training steps and inference, eager vs exported.

Candidate sizes (``SIZES``) on 12 x 12 LR patches with 7 channels, x10 output, batch 64.

pytest benchmarks/kernels/bench_model.py --benchmark-only --benchmark-group-by=group
python benchmarks/kernels/bench_model.py [--threads 2] [--patches 1000]   (prints the table)

The table gives parameters, GFLOP per patch, training pairs/s, inference patches/s per format,
and the time of one femur's worth of patches through ``femsr.export.predict`` with the fastest
format. Each timing is the best of several repeats, since the machine may be shared.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from femsr.export import export_model, load_model, predict
from femsr.model import ModelConfig, build_model, flops_per_patch, parameter_count

SIZES = {
    "small w32 b8 up8": ModelConfig(width=32, n_blocks=8, up_width=8),
    "medium w48 b8 up16": ModelConfig(width=48, n_blocks=8, up_width=16),
    "large w64 b16 up16": ModelConfig(width=64, n_blocks=16, up_width=16),
}
FORMATS = {"eager": None, "pt2": ".pt2", "torchscript": ".ts"}
BATCH = 64


def inputs(cfg, n=BATCH, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, cfg.in_channels, cfg.patch_size, cfg.patch_size, generator=generator)


def trained_like(cfg):
    """A network with nonzero weights everywhere (the tail starts at zero)."""
    torch.manual_seed(0)
    net = build_model(cfg)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.05)
    return net.eval()


def runner(net, fmt, folder):
    """The callable for a format: the eager network or the model loaded from its file."""
    if FORMATS[fmt] is None:
        return net
    return load_model(export_model(net, Path(folder) / f"net{FORMATS[fmt]}"), device="cpu")


def train_step(net, optimizer, lr, hr):
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.l1_loss(net(lr), hr)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# ---------------------------------------------------------------------------------------------
# pytest-benchmark


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("size", list(SIZES))
def test_inference(benchmark, tmp_path, size, fmt):
    cfg = SIZES[size]
    net = trained_like(cfg)
    model = runner(net, fmt, tmp_path)
    x = inputs(cfg)
    benchmark.group = f"inference {size}, batch {BATCH}"
    benchmark.extra_info.update(parameters=parameter_count(cfg), flops=flops_per_patch(cfg))
    with torch.inference_mode():
        model(x)  # warm-up: allocator, oneDNN primitive cache
        y = benchmark(model, x)
        expected = net(x)
    benchmark.extra_info["patches_per_s"] = BATCH / benchmark.stats.stats.min
    assert y.shape == (BATCH, 1, cfg.hr_size, cfg.hr_size)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("size", list(SIZES))
def test_train_step(benchmark, size):
    cfg = SIZES[size]
    net = build_model(cfg).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    lr, hr = inputs(cfg), torch.rand(BATCH, 1, cfg.hr_size, cfg.hr_size)
    train_step(net, optimizer, lr, hr)
    benchmark.group = f"training step, batch {BATCH}"
    benchmark.extra_info.update(parameters=parameter_count(cfg), flops=flops_per_patch(cfg))
    loss = benchmark(train_step, net, optimizer, lr, hr)
    benchmark.extra_info["pairs_per_s"] = BATCH / benchmark.stats.stats.min
    assert np.isfinite(loss)


# ---------------------------------------------------------------------------------------------
# Table


def best_time(function, repeats, *args):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def table(threads, patches, repeats):
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {threads} threads, batch {BATCH}, best of {repeats}")
    header = (
        f"{'size':20} {'params':>9} {'GFLOP/patch':>11} {'train pairs/s':>13} "
        + " ".join(f"{fmt + ' /s':>14}" for fmt in FORMATS)
        + f" {f'femur {patches} s':>14}"
    )
    print(header)
    for name, cfg in SIZES.items():
        net = trained_like(cfg)
        row = f"{name:20} {parameter_count(cfg):9d} {flops_per_patch(cfg) / 1e9:11.3f} "
        train_net = build_model(cfg).train()
        optimizer = torch.optim.Adam(train_net.parameters(), lr=1e-4)
        lr, hr = inputs(cfg), torch.rand(BATCH, 1, cfg.hr_size, cfg.hr_size)
        train_step(train_net, optimizer, lr, hr)
        row += f"{BATCH / best_time(train_step, repeats, train_net, optimizer, lr, hr):13.1f} "
        rates = {}
        with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
            models = {fmt: runner(net, fmt, folder) for fmt in FORMATS}
            x = inputs(cfg)
            for fmt, model in models.items():
                model(x)
                rates[fmt] = BATCH / best_time(model, repeats, x)
            fastest = max(rates, key=rates.__getitem__)
            batch = inputs(cfg, patches, seed=1).numpy()
            femur = best_time(predict, 2, models[fastest], batch)
        row += " ".join(f"{rates[fmt]:14.1f}" for fmt in FORMATS)
        row += f" {femur:9.2f} ({fastest})"
        print(row, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--patches", type=int, default=1000, help="patches in one femur")
    parser.add_argument("--repeats", type=int, default=5, help="timings per figure (best kept)")
    arguments = parser.parse_args()
    table(arguments.threads, arguments.patches, arguments.repeats)
