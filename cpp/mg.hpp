// Geometric multigrid for the grid FE systems of fem.hpp, as a preconditioner for CG.
//
// Levels: level 0 is the system femsr.fem solves (CSR over the kept nodes of a nodemap, fixed
// DOFs decoupled). Level l+1 lives on the grid of ceil(ny/2) x ceil(nx/2) elements, every grid
// node kept (nodes that no active element touches have empty rows and are left alone). The
// prolongation P is bilinear interpolation from the coarse nodes (fine node (2I, 2J) sits on coarse
// node (I, J)); at level 0 its rows for fixed DOFs are zero, so coarse corrections never move a
// support. The coarse operators are Galerkin, P^T A P, computed element by element: within a
// coarse element the interpolation only involves its own corners, so the coarse element matrix
// is sum over its (up to four) child elements of Pc^T K_child Pc, with Pc the 8x8 local
// interpolation of child c. This is exact, costs O(elements), and never forms a sparse product.
// Smoother: Chebyshev polynomial of the Jacobi-scaled operator on [lmax / ratio, lmax], with lmax
// from Gershgorin's bound and a Lanczos estimate (the same polynomial before and after the coarse
// correction, so the V-cycle is symmetric and CG may use it). Coarsest level: dense Cholesky.
#pragma once
#include <cstdint>
#include <vector>

namespace femsr::mg {

// A square CSR matrix with int32 indices, as femsr.fem builds them.
struct CsrView {
  int64_t n;
  const int32_t* indptr;
  const int32_t* indices;
  const double* data;
};

// y = A x, rows in parallel.
void matvec(const CsrView& a, const double* x, double* y);

struct Options {
  int degree = 2;             // Chebyshev steps per smoothing
  double ratio = 10.0;        // smoothing interval [lmax / ratio, lmax]
  int lanczos_steps = 20;     // Lanczos steps for lmax
  double lmax_safety = 1.1;   // lmax = min(Gershgorin, lmax_safety * Lanczos estimate)
  int64_t coarse_nodes = 800; // coarsen until a level has at most this many grid nodes
};

class Multigrid {
 public:
  // ny x nx elements; active, modulus (scale of ke per element) and nodemap as in fem.hpp; fixed
  // per grid DOF (may be null); fine is the level-0 matrix, which must outlive this object.
  Multigrid(int64_t ny, int64_t nx, const uint8_t* active, const double* modulus,
            const double* ke, const int32_t* nodemap, const uint8_t* fixed, CsrView fine,
            Options options);

  // z = B r for the symmetric V-cycle B (r and z of level-0 size, not aliased). Not reentrant:
  // the levels keep their work vectors.
  void apply(const double* r, double* z);

  int64_t depth() const { return static_cast<int64_t>(levels_.size()); }
  int64_t level_ny(int64_t l) const { return levels_[l].ny; }
  int64_t level_nx(int64_t l) const { return levels_[l].nx; }
  const CsrView& level_matrix(int64_t l) const { return levels_[l].a; }
  double level_lmax(int64_t l) const { return levels_[l].lmax; }

 private:
  struct Level {
    int64_t ny = 0, nx = 0;
    std::vector<int32_t> indptr, indices;  // own storage for levels >= 1
    std::vector<double> data;
    CsrView a{};
    std::vector<double> inv_diag;  // 0 where the diagonal is not positive (a left-out DOF)
    double lmax = 0.0;
    std::vector<double> b, x, r, d, scratch;  // work vectors of this level
  };

  void add_level(int64_t ny, int64_t nx, const std::vector<uint8_t>& active,
                 const std::vector<double>& kes);
  void finish_level(Level& level);
  void smooth(Level& level, bool zero_start);
  void restrict_to(int64_t l);     // levels_[l].r -> levels_[l+1].b
  void prolong_from(int64_t l);    // levels_[l].x += P levels_[l+1].x
  void factor_coarsest();
  void solve_coarsest();
  void cycle(int64_t l);

  Options options_;
  const int32_t* nodemap_;  // level 0 only; identity on coarser levels
  std::vector<uint8_t> fixed_;
  std::vector<Level> levels_;
  std::vector<int64_t> coarse_dofs_;  // DOFs of the coarsest level in its dense factor
  std::vector<double> cholesky_;      // lower triangle, row-major, of the coarsest matrix
  std::vector<double> coarse_work_;
};

// Preconditioned CG on A x = b from the x given; returns the iterations and writes the final
// relative residual ||b - A x|| / ||b|| (recurrence) to *residual. Stops at tol or maxiter.
int64_t pcg(const CsrView& a, Multigrid& m, const double* b, double* x, double tol,
            int64_t maxiter, double* residual);

}  // namespace femsr::mg
