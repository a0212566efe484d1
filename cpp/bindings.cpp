#include "bind.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "femsr compiled kernels (private: use the femsr Python API)";
  femsr::bind::bind_fem(m);
  femsr::bind::bind_topopt(m);
  femsr::bind::bind_seam(m);
  femsr::bind::bind_mg(m);
  femsr::bind::bind_thin(m);
}
