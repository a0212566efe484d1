"""Topology-optimization kernels: cone filter and OC update, C++ against the numpy twins.

pytest benchmarks/kernels/bench_topopt.py --benchmark-only --benchmark-group-by=group

Sizes run up to the full 2080x1883 box at 50 µm with an elliptical mask filling about half of it,
like the femur; ``rmin = 3`` px (25 cone taps). The projected OC update filters and projects the
design at every evaluation of the mass, so it costs a dozen filters.
"""

import numpy as np
import pytest

from femsr import topopt
from femsr._topopt_kernels import ConeFilter, block_oc_step, block_sums

SIZES = [(200, 200), (800, 800), (2080, 1883)]
RMIN = 3.0
BETA = 8.0


def problem(shape):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    mask = ((yy - shape[0] / 2) / (shape[0] / 2)) ** 2 + (
        (xx - shape[1] / 2) / (shape[1] / 3)
    ) ** 2 < 1
    x = np.where(mask, rng.uniform(0.1, 0.9, shape), 0.0)
    dc = np.where(mask, -rng.lognormal(0.0, 1.0, shape), 0.0)
    return mask, x, dc


ids = {"ids": lambda s: f"{s[0]}x{s[1]}"}


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("shape", SIZES, **ids)
def test_density_filter(benchmark, shape, backend):
    mask, x, _ = problem(shape)
    benchmark.group = f"filter {shape[0]}x{shape[1]}, rmin {RMIN:g}"
    cone = ConeFilter(mask.astype(np.uint8), RMIN, backend)
    filtered = benchmark(cone, x)
    assert not filtered[~mask].any()
    assert x[mask].min() <= filtered[mask].min() and filtered[mask].max() <= x[mask].max()


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("shape", SIZES, **ids)
def test_density_filter_transpose(benchmark, shape, backend):
    mask, _, dc = problem(shape)
    benchmark.group = f"filter transpose {shape[0]}x{shape[1]}, rmin {RMIN:g}"
    cone = ConeFilter(mask.astype(np.uint8), RMIN, backend)
    back = benchmark(cone, dc, True)
    # Fᵀ keeps the total: each pixel's weights sum to 1.
    assert back.sum() == pytest.approx(dc.sum(), rel=1e-10)


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("shape", SIZES, **ids)
def test_oc_update(benchmark, shape, backend):
    mask, x, dc = problem(shape)
    benchmark.group = f"OC update {shape[0]}x{shape[1]}"
    dv = topopt.density_filter(mask.astype(float), RMIN, mask=mask, transpose=True)
    target = 0.98 * float((dv * x).sum())
    new, _, _ = benchmark(topopt.oc_update, x, dc, dv, target, mask=mask, backend=backend)
    assert abs((dv * new).sum() - target) <= 1e-11 * target


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("shape", SIZES, **ids)
def test_oc_update_projected(benchmark, shape, backend):
    mask, x, dc = problem(shape)
    benchmark.group = f"OC update projected {shape[0]}x{shape[1]}, beta {BETA:g}"
    cone = ConeFilter(mask.astype(np.uint8), RMIN, "cpp")
    _, slope = topopt.project(cone(x), BETA)
    dv = cone(np.where(mask, slope, 0.0), True)
    target = 0.45 * int(mask.sum())
    new, _, _ = benchmark(
        topopt.oc_update, x, dc, dv, target, mask=mask, rmin=RMIN, beta=BETA, backend=backend
    )
    density, _ = topopt.project(cone(new), BETA)
    assert abs(density[mask].sum() - target) <= 1e-11 * target


@pytest.mark.parametrize("shape", SIZES, **ids)
def test_block_oc_update(benchmark, shape):
    """The OC update with one multiplier per 10 x 10 block (numpy only), as femsr.refine runs it."""
    mask, x, dc = problem(shape)
    benchmark.group = f"block OC update {shape[0]}x{shape[1]}"
    target = 0.95 * block_sums(x, 10)
    new = benchmark(block_oc_step, mask, x, dc, target, 10, 0.1, 0.5)
    np.testing.assert_allclose(block_sums(new, 10), target, rtol=1e-9, atol=1e-9)
