// Helpers shared by the bind_*.cpp files: the only place besides them that sees pybind11.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>

namespace femsr::bind {

namespace py = pybind11;

// C-contiguous array of exactly T; bound with .noconvert() so a wrong dtype raises instead of
// silently writing into a converted copy.
template <class T>
using Array = py::array_t<T, py::array::c_style>;

template <class T>
void require_size(const Array<T>& a, py::ssize_t size, const char* name) {
  if (a.size() != size)
    throw std::invalid_argument(std::string(name) + " has " + std::to_string(a.size()) +
                                " entries, expected " + std::to_string(size));
}

void bind_fem(py::module_& m);
void bind_topopt(py::module_& m);
void bind_seam(py::module_& m);
void bind_mg(py::module_& m);
void bind_thin(py::module_& m);

}  // namespace femsr::bind
