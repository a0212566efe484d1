"""Seams and quilting: the compiled Dijkstra and composition against the heapq/numpy twins.

pytest benchmarks/kernels/bench_quilt.py --benchmark-only --benchmark-group-by=group

Surfaces are the overlaps of a full femur's quilt: HR patches of 120 px with stride 80 overlap by
40 px, so a vertical seam crosses a 120x40 error surface and a horizontal seam the 40 rows of two
strips as wide as the femur (1960 px), searched transposed (1960x40). The error is ``(A - B)²`` of
independent uniform patches (no agreement: the search settles most pixels), or of a smooth field
with small independent noise (what neighbouring network outputs look like).
"""

import numpy as np
import pytest
import scipy.ndimage as ndi

from femsr import quilt as q

SURFACES = [(120, 40), (1960, 40)]
FIELDS = ["uniform", "smooth"]


def error_surface(shape, field, seed=0):
    rng = np.random.default_rng(seed)
    if field == "uniform":
        a, b = rng.uniform(0, 1, (2, *shape))
    else:
        smooth = ndi.gaussian_filter(rng.standard_normal(shape), 6.0)
        smooth = 0.5 + smooth / (4 * smooth.std())
        a, b = smooth + 0.05 * rng.standard_normal((2, *shape))
    return (a - b) ** 2


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("shape", SURFACES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_min_error_seam(benchmark, shape, field, backend):
    cost = error_surface(shape, field)
    benchmark.group = f"seam {shape[0]}x{shape[1]} {field}"
    seam = benchmark(q.min_error_seam, cost, backend=backend)
    assert seam[0, 0] == 0 and seam[-1, 0] == shape[0] - 1
    np.testing.assert_array_equal(seam, q.min_error_seam(cost, backend="python"))


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("method", q.METHODS)
def test_quilt(benchmark, method, backend):
    # A quarter femur: 7x6 patches of 120 px, stride 80.
    patches = np.random.default_rng(1).uniform(0, 1, (7, 6, 120, 120))
    benchmark.group = f"quilt 7x6 patches of 120 px, {method}"
    image = benchmark(q.quilt, patches, 80, method=method, backend=backend)
    assert image.shape == (6 * 80 + 120, 5 * 80 + 120)
    np.testing.assert_array_equal(image[:80, :80], patches[0, 0, :80, :80])
