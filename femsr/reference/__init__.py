"""Pure numpy/scipy twins of the compiled kernels in ``femsr._core``.

Each function here has the same inputs and result as its C++ counterpart and is reached
through ``backend="python"`` in the public API. They are written for clarity, as the oracle the
tests compare against and the baseline the benchmarks measure.
"""
