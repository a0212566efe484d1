"""Crisp redrawing at full size: the compiled Zhang-Suen thinning against its numpy twin, and
draw_struts (thinning, distance transform, per-block ranking) on a whole femur.

    OMP_NUM_THREADS=1 pytest benchmarks/kernels/bench_crisp.py --benchmark-only \
        --benchmark-group-by=group

The image is the bundled femur (2080x1883 at 50 µm) blurred by a Gaussian of 1.5 pixels, about
as grey as a reconstruction; its bone above the default threshold is what is thinned.
"""

import numpy as np
import pytest
import scipy.ndimage as ndi

from femsr import crisp, io
from femsr.demo import BUNDLED_FEMUR


@pytest.fixture(scope="module")
def grey():
    return np.clip(ndi.gaussian_filter(io.load_femur(BUNDLED_FEMUR).density, 1.5), 0.0, 1.0)


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_thin(benchmark, grey, backend):
    mask = grey > crisp.THRESHOLD
    benchmark.group = "thin 2080x1883"
    skeleton = benchmark.pedantic(crisp.thin, (mask,), {"backend": backend}, rounds=3)
    np.testing.assert_array_equal(skeleton, crisp.thin(mask, backend="cpp"))


def test_draw_struts(benchmark, grey):
    benchmark.group = "draw_struts 2080x1883"
    drawn = benchmark.pedantic(crisp.draw_struts, (grey,), rounds=3)
    assert abs(drawn.sum() - grey.sum()) < 0.01 * grey.sum()
