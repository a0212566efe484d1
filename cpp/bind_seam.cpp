#include <cstdint>
#include <limits>

#include "bind.hpp"
#include "seam.hpp"

namespace femsr::bind {

namespace {

void require_ndim(const py::array& a, py::ssize_t ndim, const char* name) {
  if (a.ndim() != ndim)
    throw std::invalid_argument(std::string(name) + " must be " + std::to_string(ndim) +
                                "-D, got " + std::to_string(a.ndim()) + "-D");
}

void require_shape(const py::array& a, std::initializer_list<py::ssize_t> shape,
                   const char* name) {
  require_ndim(a, static_cast<py::ssize_t>(shape.size()), name);
  py::ssize_t axis = 0;
  for (const auto n : shape) {
    if (a.shape(axis) != n)
      throw std::invalid_argument(std::string(name) + " has " + std::to_string(a.shape(axis)) +
                                  " entries along axis " + std::to_string(axis) + ", expected " +
                                  std::to_string(n));
    ++axis;
  }
}

// Dijkstra numbers the pixels of the padded surface with int32.
void require_surface(py::ssize_t ny, py::ssize_t nx) {
  if (ny < 1 || nx < 1) throw std::invalid_argument("the seam surface is empty");
  if ((ny + 2) * (nx + 2) > std::numeric_limits<int32_t>::max())
    throw std::invalid_argument("the seam surface has too many pixels for int32 numbering");
}

// 0 < overlap = P - stride <= stride (see seam.hpp): a pixel lies in at most two patches of a row.
void require_stride(py::ssize_t stride, py::ssize_t patch, const char* what) {
  if (stride < 1 || stride >= patch || 2 * stride < patch)
    throw std::invalid_argument("stride must lie in [ceil(P/2), P) so that " + std::string(what) +
                                " overlap by at most the stride, got stride " +
                                std::to_string(stride) + " for P = " + std::to_string(patch));
}

// A regular patch grid: patches (nr, nc, P, P) with P/2 <= stride < P.
struct Grid {
  py::ssize_t nr, nc, patch, stride, overlap, width;
};

Grid grid_of(const Array<double>& patches, py::ssize_t stride) {
  require_ndim(patches, 4, "patches");
  const auto nr = patches.shape(0), nc = patches.shape(1), patch = patches.shape(2);
  if (nr < 1 || nc < 1) throw std::invalid_argument("patches holds no patch");
  if (patches.shape(3) != patch) throw std::invalid_argument("patches must be square");
  require_stride(stride, patch, "patches");
  return {nr, nc, patch, stride, patch - stride, (nc - 1) * stride + patch};
}

seam::Blend blend_of(const std::optional<Array<uint8_t>>& masks,
                     const std::optional<Array<double>>& ramp, py::ssize_t overlap) {
  if (masks.has_value() == ramp.has_value())
    throw std::invalid_argument("give exactly one of masks and ramp");
  if (ramp) require_shape(*ramp, {overlap}, "ramp");
  return {masks ? masks->data() : nullptr, ramp ? ramp->data() : nullptr};
}

}  // namespace

void bind_seam(py::module_& m) {
  m.def(
      "min_error_seam",
      [](Array<double> cost, Array<int64_t> path) {
        require_ndim(cost, 2, "cost");
        const auto ny = cost.shape(0), nx = cost.shape(1);
        require_surface(ny, nx);
        require_shape(path, {ny * nx, 2}, "path");
        const double* c = cost.data();
        // Dijkstra needs costs >= 0: a negative pair of neighbours would relax forever.
        for (py::ssize_t k = 0; k < ny * nx; ++k)
          if (!(c[k] >= 0.0)) throw std::invalid_argument("cost must be >= 0 and not NaN");
        int64_t length;
        {
          py::gil_scoped_release release;
          seam::SeamFinder finder;
          finder.load(ny, nx, [&](int64_t i, int64_t j) { return c[i * nx + j]; });
          length = finder.solve(path.mutable_data());
        }
        if (length == 0) throw std::invalid_argument(seam::kOverflow);
        return length;
      },
      py::arg("cost").noconvert(), py::arg("path").noconvert(),
      "Write the minimum-cost 8-connected top-to-bottom path of cost into path (row, column "
      "pairs) and return its number of pixels.");

  m.def(
      "seam_mask",
      [](Array<int64_t> seam, Array<uint8_t> mask) {
        require_ndim(mask, 2, "mask");
        const auto ny = mask.shape(0), nx = mask.shape(1);
        require_ndim(seam, 2, "seam");
        if (seam.shape(1) != 2) throw std::invalid_argument("seam must have 2 columns");
        const auto length = seam.shape(0);
        const int64_t* s = seam.data();
        for (py::ssize_t k = 0; k < length; ++k)
          if (s[2 * k] < 0 || s[2 * k] >= ny || s[2 * k + 1] < 0 || s[2 * k + 1] >= nx)
            throw std::invalid_argument("seam leaves the mask");
        py::gil_scoped_release release;
        seam::seam_mask(ny, nx, s, length, mask.mutable_data());
      },
      py::arg("seam").noconvert(), py::arg("mask").noconvert(),
      "Fill mask with the side of the seam each pixel is on: 0 left, 1 right or on it.");

  m.def(
      "vertical_seam_masks",
      [](Array<double> patches, py::ssize_t stride, Array<uint8_t> masks) {
        const auto g = grid_of(patches, stride);
        require_surface(g.patch, g.overlap);
        require_shape(masks, {g.nr, g.nc - 1, g.patch, g.overlap}, "masks");
        py::gil_scoped_release release;
        seam::vertical_seam_masks(g.nr, g.nc, g.patch, g.stride, patches.data(),
                                  masks.mutable_data());
      },
      py::arg("patches").noconvert(), py::arg("stride"), py::arg("masks").noconvert(),
      "Fill masks (nr, nc-1, P, overlap) with the seam masks of the vertical overlaps.");

  m.def(
      "horizontal_seam_masks",
      [](Array<double> strips, py::ssize_t stride, Array<uint8_t> masks) {
        require_ndim(strips, 3, "strips");
        const auto nr = strips.shape(0), patch = strips.shape(1), width = strips.shape(2);
        require_stride(stride, patch, "strips");
        require_surface(width, patch - stride);
        require_shape(masks, {nr > 0 ? nr - 1 : 0, patch - stride, width}, "masks");
        py::gil_scoped_release release;
        seam::horizontal_seam_masks(nr, patch, width, stride, strips.data(),
                                    masks.mutable_data());
      },
      py::arg("strips").noconvert(), py::arg("stride"), py::arg("masks").noconvert(),
      "Fill masks (nr-1, overlap, width) with the seam masks of the horizontal overlaps.");

  m.def(
      "compose_columns",
      [](Array<double> patches, py::ssize_t stride, std::optional<Array<uint8_t>> masks,
         std::optional<Array<double>> ramp, Array<double> strips,
         std::optional<Array<int32_t>> owner) {
        const auto g = grid_of(patches, stride);
        const auto blend = blend_of(masks, ramp, g.overlap);
        if (masks) require_shape(*masks, {g.nr, g.nc - 1, g.patch, g.overlap}, "masks");
        require_shape(strips, {g.nr, g.patch, g.width}, "strips");
        if (owner) {
          if (!masks) throw std::invalid_argument("owner needs masks");
          require_shape(*owner, {g.nr, g.patch, g.width}, "owner");
        }
        int32_t* owner_ptr = owner ? owner->mutable_data() : nullptr;
        py::gil_scoped_release release;
        seam::compose_columns(g.nr, g.nc, g.patch, g.stride, patches.data(), blend,
                              strips.mutable_data(), owner_ptr);
      },
      py::arg("patches").noconvert(), py::arg("stride"), py::arg("masks").noconvert().none(true),
      py::arg("ramp").noconvert().none(true), py::arg("strips").noconvert(),
      py::arg("owner").noconvert().none(true),
      "Join the patches of each grid row into strips (nr, P, width), and the grid column each "
      "strip pixel comes from into owner.");

  m.def(
      "compose_rows",
      [](Array<double> strips, py::ssize_t ncols, py::ssize_t stride,
         std::optional<Array<uint8_t>> masks, std::optional<Array<double>> ramp,
         std::optional<Array<int32_t>> strip_owner, Array<double> out,
         std::optional<Array<int32_t>> owner) {
        require_ndim(strips, 3, "strips");
        const auto nr = strips.shape(0), patch = strips.shape(1), width = strips.shape(2);
        if (nr < 1) throw std::invalid_argument("strips holds no strip");
        require_stride(stride, patch, "strips");
        const auto overlap = patch - stride;
        const auto blend = blend_of(masks, ramp, overlap);
        if (masks) require_shape(*masks, {nr - 1, overlap, width}, "masks");
        require_ndim(out, 2, "out");
        const auto height = out.shape(0), out_width = out.shape(1);
        if (height > (nr - 1) * stride + patch || out_width > width)
          throw std::invalid_argument("out is larger than the strips cover");
        if (owner) {
          if (!masks || !strip_owner) throw std::invalid_argument("owner needs masks and strip_owner");
          require_shape(*strip_owner, {nr, patch, width}, "strip_owner");
          require_shape(*owner, {height, out_width}, "owner");
        }
        const int32_t* strip_owner_ptr = strip_owner ? strip_owner->data() : nullptr;
        int32_t* owner_ptr = owner ? owner->mutable_data() : nullptr;
        py::gil_scoped_release release;
        seam::compose_rows(nr, ncols, patch, width, stride, strips.data(), strip_owner_ptr, blend,
                           height, out_width, out.mutable_data(), owner_ptr);
      },
      py::arg("strips").noconvert(), py::arg("ncols"), py::arg("stride"),
      py::arg("masks").noconvert().none(true), py::arg("ramp").noconvert().none(true),
      py::arg("strip_owner").noconvert().none(true), py::arg("out").noconvert(),
      py::arg("owner").noconvert().none(true),
      "Join the strips top to bottom into out (cropped), and the flat patch index r*ncols + c "
      "each pixel comes from into owner.");
}

}  // namespace femsr::bind
