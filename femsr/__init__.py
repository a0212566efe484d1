"""femsr: super-resolution of proximal-femur bone images.

Topology optimization grows 50 µm femurs, finite elements give the displacement fields of their
500 µm images, a residual CNN maps low- to high-resolution patches, and Dijkstra seams quilt the
patches into one femur.
"""

import importlib

from femsr import evaluate, fem, femur, quilt, topopt
from femsr.fem import ConvergenceError, Solver, assemble, solve

# The function shadows its submodule's name on the package (the submodule stays importable as
# femsr.reconstruct through sys.modules); it loads torch only when called.
from femsr.reconstruct import reconstruct

__all__ = [
    "ConvergenceError",
    "Solver",
    "__version__",
    "assemble",
    "evaluate",
    "fem",
    "femur",
    "quilt",
    "reconstruct",
    "solve",
    "topopt",
]

__version__ = "0.1.0"

# The network modules import torch: load them on first access, so `import femsr` (FE, TO) never
# does. They stay out of __all__ so a star import does not load them either.
_LAZY_SUBMODULES = ("export", "model", "train")


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"femsr.{name}")
    raise AttributeError(f"module 'femsr' has no attribute {name!r}")
