#include "fem.hpp"

#include <algorithm>
#include <initializer_list>

namespace femsr::fem {
namespace {

// Natural coordinates of the local nodes BL, BR, TR, TL.
constexpr double kXi[4] = {-1.0, 1.0, 1.0, -1.0};
constexpr double kEta[4] = {-1.0, -1.0, 1.0, 1.0};

// Local index of node (i, j) in element (r, c), which must contain it.
inline int local_node(int64_t i, int64_t j, int64_t r, int64_t c) {
  if (r == i - 1) return c == j - 1 ? 1 : 0;  // node on the element's bottom edge
  return c == j - 1 ? 2 : 3;                    // node on the element's top edge
}

struct Grid {
  int64_t ny, nx;
  const uint8_t* active;
  bool element(int64_t r, int64_t c) const {
    return r >= 0 && r < ny && c >= 0 && c < nx && active[r * nx + c] != 0;
  }
};

// Visits the kept nodes coupled to node (i, j) in increasing order as visit(m, ni, nj, r0, r1,
// c0, c1), where elements rows r0..r1 and columns c0..c1 are those holding both nodes.
template <class Visit>
inline void for_each_neighbour(const Grid& g, const int32_t* nodemap, int64_t i, int64_t j,
                               Visit&& visit) {
  for (int64_t ni = i - 1; ni <= i + 1; ++ni) {
    if (ni < 0 || ni > g.ny) continue;
    const int64_t r0 = (ni > i ? ni : i) - 1, r1 = ni < i ? ni : i;
    for (int64_t nj = j - 1; nj <= j + 1; ++nj) {
      if (nj < 0 || nj > g.nx) continue;
      const int32_t m = nodemap[ni * (g.nx + 1) + nj];
      if (m < 0) continue;
      const int64_t c0 = (nj > j ? nj : j) - 1, c1 = nj < j ? nj : j;
      bool coupled = false;
      for (int64_t r = r0; r <= r1; ++r)
        for (int64_t c = c0; c <= c1; ++c) coupled = coupled || g.element(r, c);
      if (coupled) visit(m, ni, nj, r0, r1, c0, c1);
    }
  }
}

}  // namespace

void element_stiffness(double nu, double thickness, double* ke) {
  // Plane-stress constitutive matrix for E = 1.
  const double f = 1.0 / (1.0 - nu * nu);
  const double d[3][3] = {{f, f * nu, 0.0}, {f * nu, f, 0.0}, {0.0, 0.0, f * (1.0 - nu) / 2.0}};
  const double g = 1.0 / 1.7320508075688772;  // Gauss points +-1/sqrt(3), weight 1
  for (int k = 0; k < 64; ++k) ke[k] = 0.0;
  for (double xi : {-g, g}) {
    for (double eta : {-g, g}) {
      // Side 2 in natural coordinates: dN/dx = dN/dxi and det J = 1 (the size cancels).
      double b[3][8] = {};
      for (int a = 0; a < 4; ++a) {
        const double dx = 0.25 * kXi[a] * (1.0 + eta * kEta[a]);
        const double dy = 0.25 * kEta[a] * (1.0 + xi * kXi[a]);
        b[0][2 * a] = dx;
        b[1][2 * a + 1] = dy;
        b[2][2 * a] = dy;
        b[2][2 * a + 1] = dx;
      }
      for (int p = 0; p < 8; ++p)
        for (int q = 0; q < 8; ++q) {
          double s = 0.0;
          for (int m = 0; m < 3; ++m)
            for (int n = 0; n < 3; ++n) s += b[m][p] * d[m][n] * b[n][q];
          ke[p * 8 + q] += thickness * s;
        }
    }
  }
}

void block_row_counts(int64_t ny, int64_t nx, const uint8_t* active, const int32_t* nodemap,
                      int32_t* counts) {
  const Grid g{ny, nx, active};
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i <= ny; ++i)
    for (int64_t j = 0; j <= nx; ++j) {
      const int32_t n = nodemap[i * (nx + 1) + j];
      if (n < 0) continue;
      int32_t count = 0;
      for_each_neighbour(g, nodemap, i, j, [&](int32_t, auto...) { ++count; });
      counts[n] = count;
    }
}

void block_fill_indices(int64_t ny, int64_t nx, const uint8_t* active, const int32_t* nodemap,
                        const int32_t* bindptr, int32_t* bindices) {
  const Grid g{ny, nx, active};
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i <= ny; ++i)
    for (int64_t j = 0; j <= nx; ++j) {
      const int32_t n = nodemap[i * (nx + 1) + j];
      if (n < 0) continue;
      int32_t* out = bindices + bindptr[n];
      for_each_neighbour(g, nodemap, i, j, [&](int32_t m, auto...) { *out++ = m; });
    }
}

void csr_from_blocks(int64_t nnodes, const int32_t* bindptr, const int32_t* bindices,
                     int32_t* indptr, int32_t* indices) {
  indptr[0] = 0;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < nnodes; ++n) {
    const int64_t begin = bindptr[n], count = bindptr[n + 1] - begin;
    for (int a = 0; a < 2; ++a) {
      const int64_t row_start = 4 * begin + 2 * a * count;
      indptr[2 * n + a + 1] = static_cast<int32_t>(row_start + 2 * count);
      for (int64_t k = 0; k < count; ++k) {
        indices[row_start + 2 * k] = 2 * bindices[begin + k];
        indices[row_start + 2 * k + 1] = 2 * bindices[begin + k] + 1;
      }
    }
  }
}

namespace {

// CSR values of a block pattern: for each pair of coupled nodes, the sum over the active elements
// holding both of their 2x2 block of element_matrix(e) (8x8 row-major) scaled by scale(e).
template <class Matrix, class Scale>
void fill_pattern(int64_t ny, int64_t nx, const uint8_t* active, Matrix&& element_matrix,
                  Scale&& scale, const int32_t* nodemap, const uint8_t* fixed,
                  const int32_t* bindptr, double* data) {
  const Grid g{ny, nx, active};
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i <= ny; ++i)
    for (int64_t j = 0; j <= nx; ++j) {
      const int64_t node = i * (nx + 1) + j;
      const int32_t n = nodemap[node];
      if (n < 0) continue;
      const int64_t begin = bindptr[n], count = bindptr[n + 1] - begin;
      int64_t k = 0;
      for_each_neighbour(g, nodemap, i, j,
                         [&](int32_t m, int64_t ni, int64_t nj, int64_t r0, int64_t r1,
                             int64_t c0, int64_t c1) {
                           const int64_t other = ni * (nx + 1) + nj;
                           double block[2][2] = {};
                           for (int64_t r = r0; r <= r1; ++r)
                             for (int64_t c = c0; c <= c1; ++c) {
                               if (!g.element(r, c)) continue;
                               const int64_t e = r * nx + c;
                               const double* row = element_matrix(e) + 16 * local_node(i, j, r, c);
                               const int q = 2 * local_node(ni, nj, r, c);
                               const double s = scale(e);
                               block[0][0] += s * row[q];
                               block[0][1] += s * row[q + 1];
                               block[1][0] += s * row[8 + q];
                               block[1][1] += s * row[8 + q + 1];
                             }
                           for (int a = 0; a < 2; ++a)
                             for (int b = 0; b < 2; ++b) {
                               const bool decoupled =
                                   fixed && (fixed[2 * node + a] || fixed[2 * other + b]) &&
                                   !(m == n && a == b);
                               const int64_t at = 4 * begin + 2 * a * count + 2 * k + b;
                               data[at] = decoupled ? 0.0 : block[a][b];
                             }
                           ++k;
                         });
    }
}

}  // namespace

void fill_values(int64_t ny, int64_t nx, const uint8_t* active, const double* modulus,
                 const double* ke, const int32_t* nodemap, const uint8_t* fixed,
                 const int32_t* bindptr, double* data) {
  fill_pattern(
      ny, nx, active, [ke](int64_t) { return ke; }, [modulus](int64_t e) { return modulus[e]; },
      nodemap, fixed, bindptr, data);
}

void fill_values_elementwise(int64_t ny, int64_t nx, const uint8_t* active, const double* kes,
                             const int32_t* nodemap, const int32_t* bindptr, double* data) {
  fill_pattern(
      ny, nx, active, [kes](int64_t e) { return kes + 64 * e; }, [](int64_t) { return 1.0; },
      nodemap, nullptr, bindptr, data);
}

namespace {

// Rows below which cutting the upper triangle runs on one thread: a parallel region costs more
// than the copy of a small matrix.
constexpr int64_t kUpperParallelRows = int64_t{1} << 16;

// Position of the first entry of row r on or above the diagonal.
int32_t diagonal_start(int64_t r, const int32_t* indptr, const int32_t* indices) {
  return static_cast<int32_t>(
      std::lower_bound(indices + indptr[r], indices + indptr[r + 1], static_cast<int32_t>(r)) -
      indices);
}

}  // namespace

void upper_triangle_indptr(int64_t n, const int32_t* indptr, const int32_t* indices,
                           int32_t* upper_indptr) {
  upper_indptr[0] = 0;
#pragma omp parallel for schedule(static) if (n >= kUpperParallelRows)
  for (int64_t r = 0; r < n; ++r)
    upper_indptr[r + 1] = indptr[r + 1] - diagonal_start(r, indptr, indices);
  for (int64_t r = 0; r < n; ++r) upper_indptr[r + 1] += upper_indptr[r];
}

void upper_triangle_fill(int64_t n, const int32_t* indptr, const int32_t* indices,
                         const double* data, const int32_t* upper_indptr, int32_t* upper_indices,
                         double* upper_data) {
#pragma omp parallel for schedule(static) if (n >= kUpperParallelRows)
  for (int64_t r = 0; r < n; ++r) {
    const int32_t from = diagonal_start(r, indptr, indices);
    std::copy(indices + from, indices + indptr[r + 1], upper_indices + upper_indptr[r]);
    std::copy(data + from, data + indptr[r + 1], upper_data + upper_indptr[r]);
  }
}

void element_energies(int64_t ny, int64_t nx, int64_t ncases, const uint8_t* active,
                      const double* ke, const double* u, double* out) {
  const int64_t ndof = 2 * (ny + 1) * (nx + 1);
  const int64_t nel = ny * nx;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t k = 0; k < ncases; ++k)
    for (int64_t r = 0; r < ny; ++r) {
      const double* uk = u + k * ndof;
      for (int64_t c = 0; c < nx; ++c) {
        const int64_t e = r * nx + c;
        if (!active[e]) {
          out[k * nel + e] = 0.0;
          continue;
        }
        const int64_t bl = (r + 1) * (nx + 1) + c, tl = r * (nx + 1) + c;
        const int64_t nodes[4] = {bl, bl + 1, tl + 1, tl};
        double ue[8];
        for (int a = 0; a < 4; ++a) {
          ue[2 * a] = uk[2 * nodes[a]];
          ue[2 * a + 1] = uk[2 * nodes[a] + 1];
        }
        double energy = 0.0;
        for (int p = 0; p < 8; ++p) {
          double s = 0.0;
          for (int q = 0; q < 8; ++q) s += ke[p * 8 + q] * ue[q];
          energy += ue[p] * s;
        }
        out[k * nel + e] = energy;
      }
    }
}

}  // namespace femsr::fem
