#include "mg.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "fem.hpp"

namespace femsr::mg {
namespace {

// Loops shorter than this run on one thread: on the coarse levels a parallel region costs more
// than the work, and far more when other processes hold the cores (threads wait at barriers).
constexpr int64_t kParallelMin = 32768;

double dot(int64_t n, const double* x, const double* y) {
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

// Largest eigenvalue of the symmetric tridiagonal matrix with diagonal alpha and off-diagonal
// beta (beta[k] couples k and k+1; entries past alpha's end are ignored), by Sturm bisection.
double largest_tridiagonal_eigenvalue(const std::vector<double>& alpha,
                                      const std::vector<double>& beta) {
  const size_t k = alpha.size();
  if (k == 0) return 0.0;
  double low = alpha[0], high = alpha[0];
  for (size_t i = 0; i < k; ++i) {
    const double radius = (i > 0 ? std::abs(beta[i - 1]) : 0.0) + (i + 1 < k ? std::abs(beta[i]) : 0.0);
    low = std::min(low, alpha[i] - radius);
    high = std::max(high, alpha[i] + radius);
  }
  // Count of eigenvalues below x = sign changes of the LDL^T pivots of T - x I.
  auto below = [&](double x) {
    size_t count = 0;
    double pivot = 1.0;
    for (size_t i = 0; i < k; ++i) {
      const double coupling = i > 0 ? beta[i - 1] * beta[i - 1] : 0.0;
      pivot = alpha[i] - x - (i > 0 ? coupling / pivot : 0.0);
      if (pivot == 0.0) pivot = -1e-300;
      if (pivot < 0.0) ++count;
    }
    return count;
  };
  for (int it = 0; it < 200 && high - low > 1e-14 * std::abs(high); ++it) {
    const double middle = 0.5 * (low + high);
    (below(middle) == k ? high : low) = middle;
  }
  return high;
}

// Grid position (row, column) of the local nodes BL, BR, TR, TL of element (r, c), relative to
// (r, c): the same order as fem.hpp.
constexpr int kNodeRow[4] = {1, 1, 0, 0};
constexpr int kNodeCol[4] = {0, 1, 1, 0};

// Coarse element matrices of the grid of ceil(ny/2) x ceil(nx/2) elements: for coarse element
// (R, C), the sum over its active children e of Pc^T (scale(e) K_e) Pc. fixed (per fine grid DOF,
// may be null) zeroes the rows of Pc of fixed DOFs.
template <class Matrix, class Scale>
void coarsen(int64_t ny, int64_t nx, const uint8_t* active, Matrix&& child_matrix, Scale&& scale,
             const uint8_t* fixed, std::vector<uint8_t>& coarse_active,
             std::vector<double>& coarse_kes) {
  const int64_t nyc = (ny + 1) / 2, nxc = (nx + 1) / 2;
  coarse_active.assign(nyc * nxc, 0);
  coarse_kes.assign(nyc * nxc * 64, 0.0);
#pragma omp parallel for schedule(static) if (nyc * nxc > kParallelMin / 64)
  for (int64_t rc = 0; rc < nyc; ++rc)
    for (int64_t cc = 0; cc < nxc; ++cc) {
      double* out = coarse_kes.data() + 64 * (rc * nxc + cc);
      for (int ci = 0; ci < 2; ++ci)
        for (int cj = 0; cj < 2; ++cj) {
          const int64_t r = 2 * rc + ci, c = 2 * cc + cj;
          if (r >= ny || c >= nx || !active[r * nx + c]) continue;
          coarse_active[rc * nxc + cc] = 1;
          // Pc: fine local DOF 2k+d from coarse local DOF 2K+d, bilinear in the coarse element
          // whose corners sit at relative fine positions 0 and 2.
          double p[8][4] = {};
          for (int k = 0; k < 4; ++k) {
            const int yi = ci + kNodeRow[k], xj = cj + kNodeCol[k];
            for (int K = 0; K < 4; ++K) {
              const int wy = 2 - std::abs(yi - 2 * kNodeRow[K]);
              const int wx = 2 - std::abs(xj - 2 * kNodeCol[K]);
              const double w = 0.25 * wy * wx;
              const int64_t node = (r + kNodeRow[k]) * (nx + 1) + c + kNodeCol[k];
              for (int d = 0; d < 2; ++d)
                p[2 * k + d][K] = (fixed && fixed[2 * node + d]) ? 0.0 : w;
            }
          }
          const double* ke = child_matrix(r * nx + c);
          const double s = scale(r * nx + c);
          // t = ke Pc (8 x 8), then out += s Pc^T t; Pc's column 2K+d has entries only in the
          // rows 2k+d.
          double t[8][8];
          for (int q = 0; q < 8; ++q)
            for (int K = 0; K < 4; ++K)
              for (int d = 0; d < 2; ++d) {
                double v = 0.0;
                for (int k = 0; k < 4; ++k) v += ke[q * 8 + 2 * k + d] * p[2 * k + d][K];
                t[q][2 * K + d] = v;
              }
          for (int K = 0; K < 4; ++K)
            for (int d = 0; d < 2; ++d)
              for (int col = 0; col < 8; ++col) {
                double v = 0.0;
                for (int k = 0; k < 4; ++k) v += p[2 * k + d][K] * t[2 * k + d][col];
                out[(2 * K + d) * 8 + col] += s * v;
              }
        }
    }
}

}  // namespace

void matvec(const CsrView& a, const double* x, double* y) {
#pragma omp parallel for schedule(static) if (a.n > kParallelMin)
  for (int64_t i = 0; i < a.n; ++i) {
    double s = 0.0;
    for (int32_t k = a.indptr[i]; k < a.indptr[i + 1]; ++k) s += a.data[k] * x[a.indices[k]];
    y[i] = s;
  }
}

Multigrid::Multigrid(int64_t ny, int64_t nx, const uint8_t* active, const double* modulus,
                     const double* ke, const int32_t* nodemap, const uint8_t* fixed,
                     CsrView fine, Options options)
    : options_(options), nodemap_(nodemap) {
  if (options.degree < 1) throw std::invalid_argument("the Chebyshev degree must be >= 1");
  if (options.ratio <= 1.0) throw std::invalid_argument("the smoothing ratio must be > 1");
  const int64_t ndof = 2 * (ny + 1) * (nx + 1);
  fixed_.assign(fixed ? fixed : nullptr, fixed ? fixed + ndof : nullptr);
  levels_.emplace_back();
  Level& top = levels_.back();
  top.ny = ny;
  top.nx = nx;
  top.a = fine;
  finish_level(top);

  const uint8_t* fixed_ptr = fixed_.empty() ? nullptr : fixed_.data();
  std::vector<uint8_t> act, next_act;
  std::vector<double> kes, next_kes;
  auto coarse_enough = [&](int64_t cy, int64_t cx) {
    return (cy + 1) * (cx + 1) <= options_.coarse_nodes || std::min(cy, cx) < 2;
  };
  if (coarse_enough(ny, nx)) {
    factor_coarsest();
    return;
  }
  coarsen(
      ny, nx, active, [ke](int64_t) { return ke; }, [modulus](int64_t e) { return modulus[e]; },
      fixed_ptr, act, kes);
  int64_t cy = (ny + 1) / 2, cx = (nx + 1) / 2;
  add_level(cy, cx, act, kes);
  while (!coarse_enough(cy, cx)) {
    coarsen(
        cy, cx, act.data(), [&kes](int64_t e) { return kes.data() + 64 * e; },
        [](int64_t) { return 1.0; }, nullptr, next_act, next_kes);
    act.swap(next_act);
    kes.swap(next_kes);
    cy = (cy + 1) / 2;
    cx = (cx + 1) / 2;
    add_level(cy, cx, act, kes);
  }
  factor_coarsest();
}

void Multigrid::add_level(int64_t ny, int64_t nx, const std::vector<uint8_t>& active,
                          const std::vector<double>& kes) {
  levels_.emplace_back();
  Level& level = levels_.back();
  level.ny = ny;
  level.nx = nx;
  const int64_t nnodes = (ny + 1) * (nx + 1);
  std::vector<int32_t> identity(nnodes);
  std::iota(identity.begin(), identity.end(), 0);
  std::vector<int32_t> bindptr(nnodes + 1, 0);
  fem::block_row_counts(ny, nx, active.data(), identity.data(), bindptr.data() + 1);
  for (int64_t n = 0; n < nnodes; ++n) bindptr[n + 1] += bindptr[n];
  std::vector<int32_t> bindices(bindptr[nnodes]);
  fem::block_fill_indices(ny, nx, active.data(), identity.data(), bindptr.data(),
                          bindices.data());
  level.indptr.resize(2 * nnodes + 1);
  level.indices.resize(4 * bindices.size());
  level.data.resize(level.indices.size());
  fem::csr_from_blocks(nnodes, bindptr.data(), bindices.data(), level.indptr.data(),
                       level.indices.data());
  fem::fill_values_elementwise(ny, nx, active.data(), kes.data(), identity.data(), bindptr.data(),
                               level.data.data());
  level.a = CsrView{2 * nnodes, level.indptr.data(), level.indices.data(), level.data.data()};
  finish_level(level);
}

void Multigrid::finish_level(Level& level) {
  const CsrView& a = level.a;
  const int64_t n = a.n;
  level.inv_diag.assign(n, 0.0);
  double gershgorin = 0.0;
#pragma omp parallel for reduction(max : gershgorin) schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    double diag = 0.0, sum = 0.0;
    for (int32_t k = a.indptr[i]; k < a.indptr[i + 1]; ++k) {
      if (a.indices[k] == i) diag = a.data[k];
      sum += std::abs(a.data[k]);
    }
    if (diag > 0.0) {
      level.inv_diag[i] = 1.0 / diag;
      gershgorin = std::max(gershgorin, sum / diag);
    }
  }
  for (auto* v : {&level.b, &level.x, &level.r, &level.d, &level.scratch}) v->assign(n, 0.0);
  // Lanczos on S = D^-1/2 A D^-1/2 (similar to D^-1 A) from a fixed start, so the Python twin
  // can repeat it: its largest Ritz value approaches lmax from below far faster than a power
  // iteration, which underestimated it by 20 % or more on large grids.
  std::vector<double> scale(n);
  for (int64_t i = 0; i < n; ++i) scale[i] = std::sqrt(level.inv_diag[i]);
  std::vector<double>&q = level.r, &previous = level.d, &w = level.x, &tmp = level.scratch;
  for (int64_t i = 0; i < n; ++i) q[i] = scale[i] > 0.0 ? 1.0 + 0.5 * std::sin(i) : 0.0;
  std::fill(previous.begin(), previous.end(), 0.0);
  std::vector<double> alpha, beta;
  double norm = std::sqrt(dot(n, q.data(), q.data()));
  for (int step = 0; step < options_.lanczos_steps && norm > 0.0; ++step) {
    for (int64_t i = 0; i < n; ++i) q[i] /= norm;
    for (int64_t i = 0; i < n; ++i) tmp[i] = scale[i] * q[i];
    matvec(a, tmp.data(), w.data());
    const double b_prev = beta.empty() ? 0.0 : beta.back();
    for (int64_t i = 0; i < n; ++i) w[i] = scale[i] * w[i] - b_prev * previous[i];
    alpha.push_back(dot(n, w.data(), q.data()));
    for (int64_t i = 0; i < n; ++i) w[i] -= alpha.back() * q[i];
    norm = std::sqrt(dot(n, w.data(), w.data()));
    beta.push_back(norm);
    previous.swap(q);
    q.swap(w);
  }
  const double estimate = largest_tridiagonal_eigenvalue(alpha, beta);
  level.lmax = std::min(gershgorin, options_.lmax_safety * estimate);
  for (auto* v : {&level.r, &level.d, &level.x, &level.scratch}) std::fill(v->begin(), v->end(), 0.0);
}

void Multigrid::smooth(Level& level, bool zero_start) {
  const int64_t n = level.a.n;
  double *b = level.b.data(), *x = level.x.data(), *r = level.r.data(), *d = level.d.data();
  const double* inv = level.inv_diag.data();
  // Chebyshev iteration for the Jacobi-scaled operator (Saad, Iterative Methods, alg. 12.1).
  const double upper = level.lmax, lower = level.lmax / options_.ratio;
  const double theta = 0.5 * (upper + lower), delta = 0.5 * (upper - lower);
  const double sigma = theta / delta;
  double rho = 1.0 / sigma;
  if (zero_start) {
    std::copy(b, b + n, r);
    std::fill(x, x + n, 0.0);
  } else {
    matvec(level.a, x, r);
#pragma omp parallel for schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) r[i] = b[i] - r[i];
  }
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    d[i] = inv[i] * r[i] / theta;
    x[i] += d[i];
  }
  for (int step = 1; step < options_.degree; ++step) {
    std::vector<double>& ad = level.scratch;
    matvec(level.a, d, ad.data());
    const double rho_next = 1.0 / (2.0 * sigma - rho);
    const double keep = rho_next * rho, gain = 2.0 * rho_next / delta;
#pragma omp parallel for schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      r[i] -= ad[i];
      d[i] = keep * d[i] + gain * inv[i] * r[i];
      x[i] += d[i];
    }
    rho = rho_next;
  }
  // Leave the residual of the new x in r.
  std::vector<double>& ad = level.scratch;
  matvec(level.a, d, ad.data());
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) r[i] -= ad[i];
}

void Multigrid::restrict_to(int64_t l) {
  const Level& f = levels_[l];
  Level& c = levels_[l + 1];
  const int32_t* map = l == 0 ? nodemap_ : nullptr;
  const uint8_t* fixed = (l == 0 && !fixed_.empty()) ? fixed_.data() : nullptr;
  const int64_t fw = f.nx + 1, cw = c.nx + 1;
#pragma omp parallel for schedule(static) if (f.a.n > kParallelMin)
  for (int64_t ci = 0; ci <= c.ny; ++ci)
    for (int64_t cj = 0; cj <= c.nx; ++cj) {
      double s[2] = {0.0, 0.0};
      for (int64_t di = -1; di <= 1; ++di) {
        const int64_t i = 2 * ci + di;
        if (i < 0 || i > f.ny) continue;
        for (int64_t dj = -1; dj <= 1; ++dj) {
          const int64_t j = 2 * cj + dj;
          if (j < 0 || j > f.nx) continue;
          const int64_t node = i * fw + j;
          const int64_t n = map ? map[node] : node;
          if (n < 0) continue;
          const double w = (di == 0 ? 1.0 : 0.5) * (dj == 0 ? 1.0 : 0.5);
          for (int d = 0; d < 2; ++d)
            if (!(fixed && fixed[2 * node + d])) s[d] += w * f.r[2 * n + d];
        }
      }
      c.b[2 * (ci * cw + cj)] = s[0];
      c.b[2 * (ci * cw + cj) + 1] = s[1];
    }
}

void Multigrid::prolong_from(int64_t l) {
  Level& f = levels_[l];
  const Level& c = levels_[l + 1];
  const int32_t* map = l == 0 ? nodemap_ : nullptr;
  const uint8_t* fixed = (l == 0 && !fixed_.empty()) ? fixed_.data() : nullptr;
  const int64_t fw = f.nx + 1, cw = c.nx + 1;
#pragma omp parallel for schedule(static) if (f.a.n > kParallelMin)
  for (int64_t i = 0; i <= f.ny; ++i)
    for (int64_t j = 0; j <= f.nx; ++j) {
      const int64_t node = i * fw + j;
      const int64_t n = map ? map[node] : node;
      if (n < 0) continue;
      const int64_t i0 = i / 2, i1 = (i + 1) / 2, j0 = j / 2, j1 = (j + 1) / 2;
      const double wi = i0 == i1 ? 1.0 : 0.5, wj = j0 == j1 ? 1.0 : 0.5;
      for (int d = 0; d < 2; ++d) {
        if (fixed && fixed[2 * node + d]) continue;
        double v = c.x[2 * (i0 * cw + j0) + d];
        if (j1 != j0) v += c.x[2 * (i0 * cw + j1) + d];
        if (i1 != i0) {
          v += c.x[2 * (i1 * cw + j0) + d];
          if (j1 != j0) v += c.x[2 * (i1 * cw + j1) + d];
        }
        f.x[2 * n + d] += wi * wj * v;
      }
    }
}

void Multigrid::factor_coarsest() {
  Level& level = levels_.back();
  const CsrView& a = level.a;
  coarse_dofs_.clear();
  std::vector<int64_t> position(a.n, -1);
  for (int64_t i = 0; i < a.n; ++i)
    if (level.inv_diag[i] > 0.0) {
      position[i] = static_cast<int64_t>(coarse_dofs_.size());
      coarse_dofs_.push_back(i);
    }
  const int64_t m = static_cast<int64_t>(coarse_dofs_.size());
  cholesky_.assign(m * m, 0.0);
  for (int64_t p = 0; p < m; ++p) {
    const int64_t i = coarse_dofs_[p];
    for (int32_t k = a.indptr[i]; k < a.indptr[i + 1]; ++k) {
      const int64_t q = position[a.indices[k]];
      if (q >= 0) cholesky_[p * m + q] = a.data[k];
    }
  }
  // Cholesky, lower triangle. A pivot that vanishes against its diagonal marks a direction the
  // coarse space cannot see (a DOF whose interpolated basis is spanned by others): it is dropped
  // (row zeroed), which keeps the preconditioner symmetric positive semi-definite.
  for (int64_t j = 0; j < m; ++j) {
    double* row_j = cholesky_.data() + j * m;
    const double original = row_j[j];
    double diag = original;
    for (int64_t k = 0; k < j; ++k) diag -= row_j[k] * row_j[k];
    if (!(diag > 1e-12 * original)) {
      std::fill(row_j, row_j + j + 1, 0.0);
      continue;
    }
    const double root = std::sqrt(diag);
    row_j[j] = root;
    for (int64_t i = j + 1; i < m; ++i) {
      double* row_i = cholesky_.data() + i * m;
      double s = row_i[j];
      for (int64_t k = 0; k < j; ++k) s -= row_i[k] * row_j[k];
      row_i[j] = s / root;
    }
  }
  coarse_work_.assign(m, 0.0);
}

void Multigrid::solve_coarsest() {
  Level& level = levels_.back();
  const int64_t m = static_cast<int64_t>(coarse_dofs_.size());
  std::fill(level.x.begin(), level.x.end(), 0.0);
  std::vector<double>& y = coarse_work_;
  for (int64_t p = 0; p < m; ++p) {
    const double* row = cholesky_.data() + p * m;
    double s = level.b[coarse_dofs_[p]];
    for (int64_t k = 0; k < p; ++k) s -= row[k] * y[k];
    y[p] = row[p] > 0.0 ? s / row[p] : 0.0;
  }
  for (int64_t p = m - 1; p >= 0; --p) {
    double s = y[p];
    for (int64_t k = p + 1; k < m; ++k) s -= cholesky_[k * m + p] * y[k];
    y[p] = cholesky_[p * m + p] > 0.0 ? s / cholesky_[p * m + p] : 0.0;
  }
  for (int64_t p = 0; p < m; ++p) level.x[coarse_dofs_[p]] = y[p];
}

void Multigrid::cycle(int64_t l) {
  if (l + 1 == depth()) {
    solve_coarsest();
    return;
  }
  Level& level = levels_[l];
  smooth(level, true);
  restrict_to(l);
  cycle(l + 1);
  prolong_from(l);
  smooth(level, false);
}

void Multigrid::apply(const double* r, double* z) {
  Level& top = levels_.front();
  std::copy(r, r + top.a.n, top.b.begin());
  cycle(0);
  std::copy(top.x.begin(), top.x.end(), z);
}

int64_t pcg(const CsrView& a, Multigrid& m, const double* b, double* x, double tol,
            int64_t maxiter, double* residual) {
  const int64_t n = a.n;
  std::vector<double> r(n), z(n), p(n), q(n);
  matvec(a, x, q.data());
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) r[i] = b[i] - q[i];
  const double b_norm = std::sqrt(dot(n, b, b));
  if (b_norm == 0.0) {
    std::fill(x, x + n, 0.0);
    *residual = 0.0;
    return 0;
  }
  double r_norm = std::sqrt(dot(n, r.data(), r.data()));
  int64_t it = 0;
  double rz = 0.0;
  while (r_norm > tol * b_norm && it < maxiter) {
    m.apply(r.data(), z.data());
    const double rz_next = dot(n, r.data(), z.data());
    if (!(rz_next > 0.0)) break;  // the residual left the preconditioner's range: stalled
    const double beta = it == 0 ? 0.0 : rz_next / rz;
    rz = rz_next;
#pragma omp parallel for schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) p[i] = z[i] + beta * p[i];
    matvec(a, p.data(), q.data());
    const double alpha = rz / dot(n, p.data(), q.data());
#pragma omp parallel for schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      x[i] += alpha * p[i];
      r[i] -= alpha * q[i];
    }
    r_norm = std::sqrt(dot(n, r.data(), r.data()));
    ++it;
  }
  *residual = r_norm / b_norm;
  return it;
}

}  // namespace femsr::mg
