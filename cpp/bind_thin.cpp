#include "bind.hpp"
#include "thin.hpp"

namespace femsr::bind {

void bind_thin(py::module_& m) {
  m.def(
      "thin",
      [](Array<uint8_t> mask) {
        if (mask.ndim() != 2)
          throw std::invalid_argument("mask must be 2-D, got " + std::to_string(mask.ndim()) +
                                      "-D");
        const auto ny = mask.shape(0), nx = mask.shape(1);
        py::gil_scoped_release release;
        thin::thin(ny, nx, mask.mutable_data());
      },
      py::arg("mask").noconvert(), "Overwrite a 2-D 0/1 uint8 mask with its Zhang-Suen skeleton.");
}

}  // namespace femsr::bind
