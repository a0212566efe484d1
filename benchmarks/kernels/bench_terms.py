"""What each training term and test-time averaging cost per batch, on the CPU.

One batch of 64 HR windows of 120 x 120 pixels cut from the bundled femur (their block means as
the LR density, the other input channels random) through the bundled network.

pytest benchmarks/kernels/bench_terms.py --benchmark-only --benchmark-group-by=group
python benchmarks/kernels/bench_terms.py [--threads 1] [--repeats 3]   (prints the table)

Each figure is the fastest of several repeats, since the machine may be shared; a term's cost
is its step's time less the step with the L2 loss alone. The table times each step twice: with
subnormal float32 numbers kept, torch's default, and flushed to zero, as ``femsr train`` runs;
the stiffness term with its targets solved (a pair's first epoch) and kept (the epochs after);
and the stiffness term's solves (prediction and target, no gradient) by each solver of
``femsr.losses.apparent_stiffness``.
"""

import argparse
import contextlib
import time
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from femsr import io, losses
from femsr.demo import BUNDLED_FEMUR
from femsr.export import load_model, predict
from femsr.reconstruct import BUNDLED_MODEL
from femsr.train import _flush_subnormals

BATCH = 64
SCALE = 10
TERMS = {
    "L2 loss only": {},
    "+ mass": {"mass_weight": 1.0},
    "+ clDice (10 skeleton iterations)": {"cldice_weight": 0.2},
    "+ stiffness (2 x 2-pooled patches), targets solved": {"stiffness_weight": 0.1},
    "+ stiffness (2 x 2-pooled patches), targets kept": {"stiffness_weight": 0.1},
}


def batch(n=BATCH, seed=0):
    """``n`` LR inputs and their HR targets: windows of the bundled femur holding bone."""
    density = io.load_femur(BUNDLED_FEMUR).density
    rng = np.random.default_rng(seed)
    side = 12 * SCALE
    windows = []
    while len(windows) < n:
        r, c = rng.integers(0, np.array(density.shape) - side, 2) // SCALE * SCALE
        window = density[r : r + side, c : c + side]
        if 0.15 < window.mean() < 0.6:  # trabecular bone, not marrow or cortex alone
            windows.append(window)
    hr = torch.tensor(np.stack(windows)[:, None], dtype=torch.float32)
    loaded = load_model(BUNDLED_MODEL, device="cpu")
    generator = torch.Generator().manual_seed(seed)
    lr = torch.rand(n, loaded.config.in_channels, 12, 12, generator=generator)
    lr[:, 0] = losses.block_mean(hr, SCALE)[:, 0]
    return loaded.module, lr, hr


def step(net, lr, hr, weights):
    net.zero_grad()
    value = losses.objective(net(lr), hr, loss="l2", scale=SCALE, **weights)
    value.backward()
    return value.item()


@pytest.fixture(scope="module")
def problem():
    torch.set_num_threads(1)
    net, lr, hr = batch()
    net.train()
    return net, lr, hr


@pytest.mark.parametrize("flush", [False, True], ids=["subnormals-kept", "flushed"])
@pytest.mark.parametrize("term", [t for t in TERMS if "stiffness" not in t])
def test_training_step(benchmark, problem, term, flush):
    benchmark.group = "training step, batch of 64"
    net, lr, hr = problem
    with _flush_subnormals() if flush else contextlib.nullcontext():
        assert np.isfinite(benchmark(step, net, lr, hr, TERMS[term]))


@pytest.mark.parametrize("tta", [False, True])
def test_inference(benchmark, problem, tta):
    benchmark.group = "export.predict, batch of 64"
    net, lr, _ = problem
    out = benchmark(predict, net.eval(), lr.numpy(), tta=tta)
    assert out.shape == (BATCH, 1, 120, 120)


def unknown_targets(function):
    """``function`` with the targets' stiffness forgotten before each call."""

    def forgetting(*args):
        losses.forget_target_stiffness()
        return function(*args)

    return forgetting


def best_time(function, repeats, *args):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def step_times(net, lr, hr, repeats):
    """The fastest step of each term (the first, L2 alone, is what each term adds to)."""
    best_time(step, repeats, net, lr, hr, {})  # warm-up: the first steps are slower for a while
    times = {}
    for term, weights in TERMS.items():
        timed = unknown_targets(step) if term.endswith("targets solved") else step
        times[term] = best_time(timed, repeats, net, lr, hr, weights)
    alone = times["L2 loss only"]
    return {term: seconds - alone if TERMS[term] else seconds for term, seconds in times.items()}


def table(threads, repeats):
    """Each step with subnormal float32 numbers kept (torch's default) and flushed to zero (as
    ``femsr train`` runs)."""
    torch.set_num_threads(threads)
    net, lr, hr = batch()
    net.train()
    kept = step_times(net, lr, hr, repeats)
    with _flush_subnormals():
        flushed = step_times(net, lr, hr, repeats)
    rows = ["| step | subnormals kept | flushed (`femsr train`) |", "|---|---|---|"]
    for term, weights in TERMS.items():
        form = "+.2f" if weights else ".2f"
        rows.append(f"| {term} | {kept[term]:{form}} s | {flushed[term]:{form}} s |")
    net.eval()
    with torch.no_grad():
        pooled = F.avg_pool2d(net(lr), 2), F.avg_pool2d(hr, 2)
    for solver in ("cg", "direct"):
        stiffness = partial(losses.stiffness_loss, solver=solver, **losses.STIFFNESS_OPTIONS)
        seconds = best_time(unknown_targets(stiffness), repeats, *pooled)
        rows.append(f"| the stiffness term's solves, `solver={solver!r}` | {seconds:.2f} s | |")
    for tta in (False, True):
        seconds = best_time(partial(predict, tta=tta), repeats, net, lr.numpy())
        rows.append(f"| `export.predict(tta={tta})` | {seconds:.2f} s | |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (best kept)")
    args = parser.parse_args()
    print(table(args.threads, args.repeats))


if __name__ == "__main__":
    main()
