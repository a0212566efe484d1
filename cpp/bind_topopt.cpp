#include "bind.hpp"
#include "topopt.hpp"

namespace femsr::bind {

namespace {

struct Image {
  py::ssize_t ny, nx;
};

// The mask fixes the image shape; every other image argument must have as many entries.
Image image_of(const Array<uint8_t>& mask) {
  if (mask.ndim() != 2) throw std::invalid_argument("mask must be 2-D");
  return {mask.shape(0), mask.shape(1)};
}

}  // namespace

void bind_topopt(py::module_& m) {
  m.def(
      "filter_weight_sums",
      [](Array<uint8_t> mask, double rmin, Array<double> wsum) {
        const auto g = image_of(mask);
        require_size(wsum, g.ny * g.nx, "wsum");
        if (!(rmin > 0.0)) throw std::invalid_argument("rmin must be positive");
        py::gil_scoped_release release;
        topopt::filter_weight_sums(g.ny, g.nx, mask.data(), rmin, wsum.mutable_data());
      },
      py::arg("mask").noconvert(), py::arg("rmin"), py::arg("wsum").noconvert(),
      "Fill wsum with the cone-weight sums over the masked neighbours of every masked element.");

  m.def(
      "density_filter",
      [](Array<uint8_t> mask, double rmin, Array<double> wsum, Array<double> values,
         Array<double> out, bool transpose) {
        const auto g = image_of(mask);
        require_size(wsum, g.ny * g.nx, "wsum");
        require_size(values, g.ny * g.nx, "values");
        require_size(out, g.ny * g.nx, "out");
        if (!(rmin > 0.0)) throw std::invalid_argument("rmin must be positive");
        py::gil_scoped_release release;
        topopt::density_filter(g.ny, g.nx, mask.data(), rmin, wsum.data(), values.data(),
                               out.mutable_data(), transpose);
      },
      py::arg("mask").noconvert(), py::arg("rmin"), py::arg("wsum").noconvert(),
      py::arg("values").noconvert(), py::arg("out").noconvert(), py::arg("transpose"),
      "Fill out with the masked cone filter of values, or its transpose.");

  m.def(
      "project",
      [](Array<double> values, double beta, double eta, Array<double> out,
         std::optional<Array<double>> derivative) {
        require_size(out, values.size(), "out");
        if (derivative) require_size(*derivative, values.size(), "derivative");
        double* derivative_ptr = derivative ? derivative->mutable_data() : nullptr;
        py::gil_scoped_release release;
        topopt::project(values.size(), beta, eta, values.data(), out.mutable_data(),
                        derivative_ptr);
      },
      py::arg("values").noconvert(), py::arg("beta"), py::arg("eta"), py::arg("out").noconvert(),
      py::arg("derivative").noconvert().none(true),
      "Fill out with the smoothed Heaviside projection of values (and its derivative).");

  m.def(
      "oc_update",
      [](Array<uint8_t> mask, Array<double> x, Array<double> dc, Array<double> dv, double target,
         double move, double damping, double rmin, std::optional<Array<double>> wsum,
         double beta, double eta, Array<double> xnew) {
        const auto g = image_of(mask);
        const auto n = g.ny * g.nx;
        require_size(x, n, "x");
        require_size(dc, n, "dc");
        require_size(dv, n, "dv");
        require_size(xnew, n, "xnew");
        if (wsum) require_size(*wsum, n, "wsum");
        const double* wsum_ptr = wsum ? wsum->data() : nullptr;
        topopt::OcStep step;
        {
          py::gil_scoped_release release;
          step = topopt::oc_update(g.ny, g.nx, mask.data(), x.data(), dc.data(), dv.data(),
                                   target, move, damping, rmin, wsum_ptr, beta, eta,
                                   xnew.mutable_data());
        }
        return py::make_tuple(step.multiplier, step.mass, step.evaluations);
      },
      py::arg("mask").noconvert(), py::arg("x").noconvert(), py::arg("dc").noconvert(),
      py::arg("dv").noconvert(), py::arg("target"), py::arg("move"), py::arg("damping"),
      py::arg("rmin"), py::arg("wsum").noconvert().none(true), py::arg("beta"), py::arg("eta"),
      py::arg("xnew").noconvert(),
      "Fill xnew with the OC update meeting the target mass; return (multiplier, mass, "
      "evaluations). The mass is linear in dv, or projected through the filter when wsum is "
      "given.");
}

}  // namespace femsr::bind
