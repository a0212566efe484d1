#include "bind.hpp"
#include "fem.hpp"

namespace femsr::bind {

namespace {

struct GridShape {
  py::ssize_t ny, nx;
};

GridShape grid_of(const Array<uint8_t>& active, const Array<int32_t>& nodemap) {
  if (active.ndim() != 2) throw std::invalid_argument("active must be 2-D");
  const GridShape g{active.shape(0), active.shape(1)};
  require_size(nodemap, (g.ny + 1) * (g.nx + 1), "nodemap");
  return g;
}

}  // namespace

void bind_fem(py::module_& m) {
  m.def(
      "element_stiffness",
      [](double nu, double thickness, Array<double> ke) {
        require_size(ke, 64, "ke");
        fem::element_stiffness(nu, thickness, ke.mutable_data());
      },
      py::arg("nu"), py::arg("thickness"), py::arg("ke").noconvert(),
      "Fill ke (8x8) with the unit-modulus Q4 plane-stress element stiffness.");

  m.def(
      "block_row_counts",
      [](Array<uint8_t> active, Array<int32_t> nodemap, Array<int32_t> counts) {
        const auto g = grid_of(active, nodemap);
        py::gil_scoped_release release;
        fem::block_row_counts(g.ny, g.nx, active.data(), nodemap.data(), counts.mutable_data());
      },
      py::arg("active").noconvert(), py::arg("nodemap").noconvert(),
      py::arg("counts").noconvert(), "Fill counts with the block columns of each kept node.");

  m.def(
      "block_fill_indices",
      [](Array<uint8_t> active, Array<int32_t> nodemap, Array<int32_t> bindptr,
         Array<int32_t> bindices) {
        const auto g = grid_of(active, nodemap);
        py::gil_scoped_release release;
        fem::block_fill_indices(g.ny, g.nx, active.data(), nodemap.data(), bindptr.data(),
                                bindices.mutable_data());
      },
      py::arg("active").noconvert(), py::arg("nodemap").noconvert(),
      py::arg("bindptr").noconvert(), py::arg("bindices").noconvert(),
      "Fill the sorted block columns of each kept node.");

  m.def(
      "csr_from_blocks",
      [](Array<int32_t> bindptr, Array<int32_t> bindices, Array<int32_t> indptr,
         Array<int32_t> indices) {
        const auto nnodes = bindptr.size() - 1;
        require_size(indptr, 2 * nnodes + 1, "indptr");
        require_size(indices, 4 * bindices.size(), "indices");
        py::gil_scoped_release release;
        fem::csr_from_blocks(nnodes, bindptr.data(), bindices.data(), indptr.mutable_data(),
                             indices.mutable_data());
      },
      py::arg("bindptr").noconvert(), py::arg("bindices").noconvert(),
      py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
      "Fill the scalar CSR pattern of a 2x2-block pattern.");

  m.def(
      "fill_values",
      [](Array<uint8_t> active, Array<double> modulus, Array<double> ke, Array<int32_t> nodemap,
         std::optional<Array<uint8_t>> fixed, Array<int32_t> bindptr, Array<double> data) {
        const auto g = grid_of(active, nodemap);
        require_size(modulus, g.ny * g.nx, "modulus");
        require_size(ke, 64, "ke");
        if (fixed) require_size(*fixed, 2 * (g.ny + 1) * (g.nx + 1), "fixed");
        const auto nnodes = bindptr.size() - 1;
        if (data.size() != 4 * static_cast<py::ssize_t>(bindptr.data()[nnodes]))
          throw std::invalid_argument("data does not match the pattern");
        const uint8_t* fixed_ptr = fixed ? fixed->data() : nullptr;
        py::gil_scoped_release release;
        fem::fill_values(g.ny, g.nx, active.data(), modulus.data(), ke.data(), nodemap.data(),
                         fixed_ptr, bindptr.data(), data.mutable_data());
      },
      py::arg("active").noconvert(), py::arg("modulus").noconvert(), py::arg("ke").noconvert(),
      py::arg("nodemap").noconvert(), py::arg("fixed").noconvert().none(true),
      py::arg("bindptr").noconvert(), py::arg("data").noconvert(),
      "Fill the CSR stiffness values of a block pattern.");

  m.def(
      "upper_triangle",
      [](Array<int32_t> indptr, Array<int32_t> indices, Array<double> data) {
        const auto n = indptr.size() - 1;
        if (n < 0) throw std::invalid_argument("indptr must not be empty");
        require_size(indices, indptr.data()[n], "indices");
        require_size(data, indices.size(), "data");
        Array<int32_t> upper_indptr(n + 1);
        {
          py::gil_scoped_release release;
          fem::upper_triangle_indptr(n, indptr.data(), indices.data(),
                                     upper_indptr.mutable_data());
        }
        const auto nnz = upper_indptr.data()[n];
        Array<int32_t> upper_indices(nnz);
        Array<double> upper_data(nnz);
        {
          py::gil_scoped_release release;
          fem::upper_triangle_fill(n, indptr.data(), indices.data(), data.data(),
                                   upper_indptr.data(), upper_indices.mutable_data(),
                                   upper_data.mutable_data());
        }
        return py::make_tuple(upper_data, upper_indices, upper_indptr);
      },
      py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
      py::arg("data").noconvert(),
      "(data, indices, indptr) of the entries on and above the diagonal of a CSR matrix with "
      "sorted columns.");

  m.def(
      "element_energies",
      [](Array<uint8_t> active, Array<double> ke, Array<double> u, Array<double> out) {
        if (active.ndim() != 2) throw std::invalid_argument("active must be 2-D");
        const auto ny = active.shape(0), nx = active.shape(1);
        const auto ndof = 2 * (ny + 1) * (nx + 1);
        if (u.size() % ndof != 0) throw std::invalid_argument("u is not a stack of grid fields");
        const auto ncases = u.size() / ndof;
        require_size(ke, 64, "ke");
        require_size(out, ncases * ny * nx, "out");
        py::gil_scoped_release release;
        fem::element_energies(ny, nx, ncases, active.data(), ke.data(), u.data(),
                              out.mutable_data());
      },
      py::arg("active").noconvert(), py::arg("ke").noconvert(), py::arg("u").noconvert(),
      py::arg("out").noconvert(), "Fill out with u_e^T ke u_e per active element and case.");
}

}  // namespace femsr::bind
