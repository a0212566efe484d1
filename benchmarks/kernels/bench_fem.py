"""Assembly, element energies and the upper triangle: the C++ kernels against their numpy
twins.

pytest benchmarks/kernels/bench_fem.py --benchmark-only --benchmark-group-by=group
"""

import numpy as np
import pytest

from femsr import _kernels, fem

SIZES = [(100, 100), (400, 400), (1040, 942)]


def problem(shape):
    rng = np.random.default_rng(0)
    density = rng.random(shape)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    # An elliptical mask filling about half the box, like the femur.
    mask = ((yy - shape[0] / 2) / (shape[0] / 2)) ** 2 + (
        (xx - shape[1] / 2) / (shape[1] / 3)
    ) ** 2 < 1
    return density, mask


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("shape", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_assemble(benchmark, shape, backend):
    density, mask = problem(shape)
    benchmark.group = f"assemble {shape[0]}x{shape[1]}"
    fem.assemble(density, mask=mask, backend=backend)  # the C++ pattern is cached per mask
    matrix = benchmark(fem.assemble, density, mask=mask, backend=backend)
    assert matrix.shape[0] == 2 * (shape[0] + 1) * (shape[1] + 1)
    assert abs(matrix - matrix.T).max() < 1e-12


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("shape", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_element_energies(benchmark, shape, backend):
    _, mask = problem(shape)
    u = np.random.default_rng(1).standard_normal((3, shape[0] + 1, shape[1] + 1, 2))
    benchmark.group = f"element energies {shape[0]}x{shape[1]}, 3 cases"
    energies = benchmark(fem.element_energies, u, mask=mask, backend=backend)
    assert energies.shape == (3, *shape) and (energies[:, mask] > 0).all()


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("shape", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_upper_triangle(benchmark, shape, backend):
    """What a PARDISO solve reads of the stiffness matrix, cut every TO iteration."""
    density, mask = problem(shape)
    matrix = fem.assemble(density, mask=mask)
    benchmark.group = f"upper triangle {shape[0]}x{shape[1]}"
    upper = benchmark(_kernels.upper_triangle, matrix, backend)
    assert upper.nnz == (matrix.nnz + np.count_nonzero(matrix.diagonal())) // 2
