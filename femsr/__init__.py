"""femsr: super-resolution of proximal-femur bone images.

Topology optimization grows 50 µm femurs, finite elements give the displacement fields of their
500 µm images, a residual CNN maps low- to high-resolution patches, and Dijkstra seams quilt the
patches into one femur.
"""

import importlib

from femsr import evaluate, fem, femur, quilt, topopt
from femsr.fem import ConvergenceError, Solver, assemble, solve

__all__ = [
    "ConvergenceError",
    "Solver",
    "__version__",
    "assemble",
    "evaluate",
    "fem",
    "femur",
    "quilt",
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
