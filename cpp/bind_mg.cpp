#include <memory>

#include "bind.hpp"
#include "mg.hpp"

namespace femsr::bind {

namespace {

// The multigrid keeps pointers into the level-0 matrix and the nodemap: this holder keeps the
// arrays alive with it.
struct Hierarchy {
  Array<int32_t> indptr, indices, nodemap;
  Array<double> data;
  std::unique_ptr<mg::Multigrid> multigrid;
};

mg::CsrView view_of(const Array<int32_t>& indptr, const Array<int32_t>& indices,
                    const Array<double>& data) {
  if (indptr.size() < 1) throw std::invalid_argument("indptr is empty");
  const auto n = indptr.size() - 1;
  if (indices.size() != data.size() || indices.size() != indptr.data()[n])
    throw std::invalid_argument("indptr, indices and data do not form one CSR matrix");
  return mg::CsrView{n, indptr.data(), indices.data(), data.data()};
}

}  // namespace

void bind_mg(py::module_& m) {
  py::class_<Hierarchy>(m, "Multigrid",
                        "Geometric multigrid V-cycle of a grid FE system (see cpp/mg.hpp).")
      .def(py::init([](Array<uint8_t> active, Array<double> modulus, Array<double> ke,
                       Array<int32_t> nodemap, std::optional<Array<uint8_t>> fixed,
                       Array<int32_t> indptr, Array<int32_t> indices, Array<double> data,
                       int degree, double ratio, int lanczos_steps, double lmax_safety,
                       int64_t coarse_nodes) {
             if (active.ndim() != 2) throw std::invalid_argument("active must be 2-D");
             const auto ny = active.shape(0), nx = active.shape(1);
             require_size(modulus, ny * nx, "modulus");
             require_size(ke, 64, "ke");
             require_size(nodemap, (ny + 1) * (nx + 1), "nodemap");
             if (fixed) require_size(*fixed, 2 * (ny + 1) * (nx + 1), "fixed");
             const auto fine = view_of(indptr, indices, data);
             auto holder = std::make_unique<Hierarchy>(Hierarchy{indptr, indices, nodemap, data, {}});
             const mg::Options options{degree, ratio, lanczos_steps, lmax_safety, coarse_nodes};
             const uint8_t* fixed_ptr = fixed ? fixed->data() : nullptr;
             py::gil_scoped_release release;
             holder->multigrid = std::make_unique<mg::Multigrid>(
                 ny, nx, active.data(), modulus.data(), ke.data(), holder->nodemap.data(),
                 fixed_ptr, fine, options);
             return holder;
           }),
           py::arg("active").noconvert(), py::arg("modulus").noconvert(),
           py::arg("ke").noconvert(), py::arg("nodemap").noconvert(),
           py::arg("fixed").noconvert().none(true), py::arg("indptr").noconvert(),
           py::arg("indices").noconvert(), py::arg("data").noconvert(), py::arg("degree"),
           py::arg("ratio"), py::arg("lanczos_steps"), py::arg("lmax_safety"),
           py::arg("coarse_nodes"))
      .def_property_readonly("depth",
                             [](const Hierarchy& h) { return h.multigrid->depth(); })
      .def(
          "level",
          [](const Hierarchy& h, int64_t l) {
            const auto& mgr = *h.multigrid;
            if (l < 0 || l >= mgr.depth()) throw std::invalid_argument("no such level");
            const auto& a = mgr.level_matrix(l);
            const auto nnz = a.indptr[a.n];
            return py::make_tuple(
                mgr.level_ny(l), mgr.level_nx(l), mgr.level_lmax(l),
                Array<int32_t>(a.n + 1, a.indptr), Array<int32_t>(nnz, a.indices),
                Array<double>(nnz, a.data));
          },
          py::arg("l"), "(ny, nx, lmax, indptr, indices, data) of level l (copies).")
      .def(
          "apply",
          [](Hierarchy& h, Array<double> r, Array<double> z) {
            const auto n = h.indptr.size() - 1;
            require_size(r, n, "r");
            require_size(z, n, "z");
            py::gil_scoped_release release;
            h.multigrid->apply(r.data(), z.mutable_data());
          },
          py::arg("r").noconvert(), py::arg("z").noconvert(), "z = one V-cycle applied to r.")
      .def(
          "cg",
          [](Hierarchy& h, Array<double> b, Array<double> x, double tol, int64_t maxiter) {
            const auto a = view_of(h.indptr, h.indices, h.data);
            require_size(b, a.n, "b");
            require_size(x, a.n, "x");
            double residual = 0.0;
            int64_t iterations = 0;
            {
              py::gil_scoped_release release;
              iterations = mg::pcg(a, *h.multigrid, b.data(), x.mutable_data(), tol, maxiter,
                                   &residual);
            }
            return py::make_tuple(iterations, residual);
          },
          py::arg("b").noconvert(), py::arg("x").noconvert(), py::arg("tol"),
          py::arg("maxiter"),
          "CG on the level-0 matrix from x (updated in place), preconditioned by the V-cycle; "
          "returns (iterations, relative residual).");
}

}  // namespace femsr::bind
