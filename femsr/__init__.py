"""femsr: super-resolution of proximal-femur bone images.

Topology optimization grows 50 µm femurs, finite elements give the displacement fields of their
500 µm images, a residual CNN maps low- to high-resolution patches, and Dijkstra seams quilt the
patches into one femur.
"""

from femsr import fem, femur
from femsr.fem import ConvergenceError, Solver, assemble, solve

__all__ = ["ConvergenceError", "Solver", "__version__", "assemble", "fem", "femur", "solve"]

__version__ = "0.1.0"
