#include "topopt.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <vector>

namespace femsr::topopt {
namespace {

// Below this many element operations a loop runs on one thread: waking the OpenMP team costs more
// than it saves on small grids, and much more when the cores are busy with other work.
constexpr int64_t kParallelGrain = int64_t{1} << 16;

struct Tap {
  int64_t di, dj;
  double w;
};

// Offsets with a positive cone weight, in a fixed order so every correlation sums alike.
std::vector<Tap> cone_taps(double rmin) {
  const auto reach = static_cast<int64_t>(std::ceil(rmin)) - 1;
  std::vector<Tap> taps;
  for (int64_t di = -reach; di <= reach; ++di)
    for (int64_t dj = -reach; dj <= reach; ++dj) {
      const double w = rmin - std::sqrt(static_cast<double>(di * di + dj * dj));
      if (w > 0.0) taps.push_back({di, dj, w});
    }
  return taps;
}

constexpr int64_t kBandRows = 32;

// One cone correlation, fused with what comes before and after it: for every pixel e it calls
// post(e, sum over taps of w * pre(e + offset)), with pre(j) the source value of pixel j (zero
// outside the image), and returns the sum of what post returns. Rows go in bands of kBandRows;
// a band evaluates its source rows (plus a halo of reach rows each side) once into a small ring
// buffer, so the masked, scaled source never makes a trip through memory. The innermost loop
// runs along a row and vectorizes. The cone is symmetric, so the same pass serves the filter and
// its transpose. Bands and taps have a fixed order, so results do not depend on thread count
// except through the final reduction.
template <class Pre, class Post>
double cone_pass(int64_t ny, int64_t nx, const std::vector<Tap>& taps, Pre&& pre, Post&& post) {
  int64_t reach = 0;
  for (const Tap& t : taps) reach = std::max(reach, std::abs(t.di));
  const int64_t span = 2 * reach + 1;
  const int64_t nbands = (ny + kBandRows - 1) / kBandRows;
  const bool parallel = ny * nx * static_cast<int64_t>(taps.size()) >= kParallelGrain;
  double total = 0.0;
#pragma omp parallel for schedule(static) if (parallel) reduction(+ : total)
  for (int64_t band = 0; band < nbands; ++band) {
    const int64_t r0 = band * kBandRows, r1 = std::min(ny, r0 + kBandRows);
    std::vector<double> ring(span * nx), sum(nx);
    auto slot = [&](int64_t rr) { return ring.data() + (rr - r0 + reach) % span * nx; };
    auto load = [&](int64_t rr) {
      if (rr < 0 || rr >= ny) return;
      double* row = slot(rr);
      for (int64_t c = 0; c < nx; ++c) row[c] = pre(rr * nx + c);
    };
    for (int64_t rr = r0 - reach; rr < r0 + reach; ++rr) load(rr);
    for (int64_t r = r0; r < r1; ++r) {
      load(r + reach);  // overwrites row r - reach - 1, which no later row of the band needs
      std::fill(sum.begin(), sum.end(), 0.0);
      for (const Tap& t : taps) {
        const int64_t rr = r + t.di;
        if (rr < 0 || rr >= ny) continue;
        const double* in = slot(rr) + t.dj;
        const int64_t c0 = std::max<int64_t>(0, -t.dj), c1 = std::min(nx, nx - t.dj);
        const double w = t.w;
        for (int64_t c = c0; c < c1; ++c) sum[c] += w * in[c];
      }
      for (int64_t c = 0; c < nx; ++c) total += post(r * nx + c, sum[c]);
    }
  }
  return total;
}

// tanh through one exp: about three times faster than std::tanh, within a few 1e-16 of it, and
// odd by construction, so P(0) is exactly 0.
inline double fast_tanh(double z) {
  return std::copysign(1.0 - 2.0 / (1.0 + std::exp(2.0 * std::abs(z))), z);
}

// P(1) is exactly 1 because the numerator and denominator round alike: divide, not multiply.
struct Heaviside {
  double beta, eta, low, denominator;
  Heaviside(double beta_, double eta_)
      : beta(beta_),
        eta(eta_),
        low(fast_tanh(beta_ * eta_)),
        denominator(fast_tanh(beta_ * eta_) + fast_tanh(beta_ * (1.0 - eta_))) {}
  double tanh_at(double x) const { return fast_tanh(beta * (x - eta)); }
  double operator()(double x) const { return (low + tanh_at(x)) / denominator; }
};

}  // namespace

void filter_weight_sums(int64_t ny, int64_t nx, const uint8_t* mask, double rmin, double* wsum) {
  cone_pass(
      ny, nx, cone_taps(rmin), [&](int64_t j) { return mask[j] ? 1.0 : 0.0; },
      [&](int64_t e, double sum) {
        wsum[e] = mask[e] ? sum : 0.0;
        return 0.0;
      });
}

void density_filter(int64_t ny, int64_t nx, const uint8_t* mask, double rmin, const double* wsum,
                    const double* in, double* out, bool transpose) {
  const std::vector<Tap> taps = cone_taps(rmin);
  if (transpose)
    cone_pass(
        ny, nx, taps, [&](int64_t j) { return mask[j] ? in[j] / wsum[j] : 0.0; },
        [&](int64_t e, double sum) {
          out[e] = mask[e] ? sum : 0.0;
          return 0.0;
        });
  else
    cone_pass(
        ny, nx, taps, [&](int64_t j) { return mask[j] ? in[j] : 0.0; },
        [&](int64_t e, double sum) {
          out[e] = mask[e] ? sum / wsum[e] : 0.0;
          return 0.0;
        });
}

void project(int64_t n, double beta, double eta, const double* in, double* out,
             double* derivative) {
  const Heaviside p(beta, eta);
#pragma omp parallel for schedule(static) if (n >= kParallelGrain)
  for (int64_t e = 0; e < n; ++e) {
    const double t = p.tanh_at(in[e]);
    out[e] = (p.low + t) / p.denominator;
    if (derivative) derivative[e] = beta * (1.0 - t * t) / p.denominator;
  }
}

OcStep oc_update(int64_t ny, int64_t nx, const uint8_t* mask, const double* x, const double* dc,
                 const double* dv, double target, double move, double damping, double rmin,
                 const double* wsum, double beta, double eta, double* xnew) {
  const int64_t n = ny * nx;
  // xnew_j = clamp(s_j * t) with s_j = x_j * B_j^damping and t = lambda^-damping; the search
  // runs on u = log t, along which the mass grows monotonically.
  std::unique_ptr<double[]> s(new double[n]);
  double ssum = 0.0;
#pragma omp parallel for schedule(static) if (n >= kParallelGrain) reduction(+ : ssum)
  for (int64_t e = 0; e < n; ++e) {
    double v = 0.0;
    if (mask[e] && dv[e] > 0.0) v = x[e] * std::pow(std::max(0.0, -dc[e]) / dv[e], damping);
    s[e] = v;
    if (mask[e]) ssum += dv[e] * v;
  }
  // The design for u; s == 0 stays at the lower bound (and avoids 0 * inf when t overflows).
  auto design = [&](int64_t e, double t) {
    if (!mask[e]) return 0.0;
    const double lo = std::max(0.0, x[e] - move), hi = std::min(1.0, x[e] + move);
    return s[e] > 0.0 ? std::min(hi, std::max(lo, s[e] * t)) : lo;
  };
  double current_u = std::numeric_limits<double>::quiet_NaN();  // the u xnew holds
  auto fill = [&](double u) {  // writes xnew for u; returns sum_j dv_j xnew_j
    current_u = u;
    const double t = std::exp(u);
    double linear = 0.0;
#pragma omp parallel for schedule(static) if (n >= kParallelGrain) reduction(+ : linear)
    for (int64_t e = 0; e < n; ++e) {
      xnew[e] = design(e, t);
      linear += dv[e] * xnew[e];
    }
    return linear;
  };
  const bool projected = wsum != nullptr;
  const std::vector<Tap> taps = projected ? cone_taps(rmin) : std::vector<Tap>{};
  const Heaviside heaviside(beta, eta);
  int64_t evaluations = 0;
  auto mass_at = [&](double u) {
    ++evaluations;
    if (!projected) return fill(u);
    // Design, filter and projection in one pass: nothing but the sum is stored.
    const double t = std::exp(u);
    return cone_pass(
        ny, nx, taps, [&](int64_t j) { return design(j, t); },
        [&](int64_t e, double sum) { return mask[e] ? heaviside(sum / wsum[e]) : 0.0; });
  };

  const double tol = 1e-12 * std::abs(target);
  const double u0 = ssum > 0.0 && std::isfinite(ssum) && target > 0.0 ? std::log(target / ssum)
                                                                         : 0.0;
  const double f0 = mass_at(u0) - target;
  double best_u = u0, best_f = f0;
  auto keep = [&](double u, double f) {
    if (std::abs(f) < std::abs(best_f)) best_u = u, best_f = f;
  };
  // Bracket the root by steps that double away from the first guess. Beyond a span of e^1024
  // every variable sits on a bound, so the target is out of reach and the nearest end is kept.
  double ua = u0, fa = f0, ub = u0, fb = f0;
  bool bracketed = std::abs(f0) <= tol;
  const double direction = f0 < 0.0 ? 1.0 : -1.0;
  for (double step = 1.0; !bracketed && step <= 1024.0; step *= 2.0) {
    const double u = u0 + direction * step, f = mass_at(u) - target;
    keep(u, f);
    if (direction > 0.0) {
      ua = ub, fa = fb, ub = u, fb = f;
      bracketed = f >= 0.0;
    } else {
      ub = ua, fb = fa, ua = u, fa = f;
      bracketed = f <= 0.0;
    }
  }
  int side = 0;
  for (int it = 0; bracketed && it < 200 && std::abs(best_f) > tol; ++it) {
    double u = ub - fb * (ub - ua) / (fb - fa);
    if (!(u > ua && u < ub)) u = 0.5 * (ua + ub);
    if (!(u > ua && u < ub)) break;  // the bracket holds two adjacent doubles
    const double f = mass_at(u) - target;
    keep(u, f);
    if (f < 0.0) {
      ua = u, fa = f;
      if (side == -1) fb *= 0.5;  // Illinois: halve the stale end so it cannot stall
      side = -1;
    } else {
      ub = u, fb = f;
      if (side == 1) fa *= 0.5;
      side = 1;
    }
  }
  if (current_u != best_u) fill(best_u);
  return {std::exp(-best_u / damping), best_f + target, evaluations};
}

}  // namespace femsr::topopt
