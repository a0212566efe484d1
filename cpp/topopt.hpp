// Topology-optimization kernels: cone density filter, Heaviside projection, OC update.
//
// Images are ny*nx row-major arrays (row 0 at the top), as in fem.hpp. mask marks the design
// elements; the others are not design variables, hold density 0 and are left out of every filter
// neighbourhood (the weights of an element are renormalized over its masked neighbours).
//
// Cone filter (Bruns & Tortorelli 2001; Andreassen et al. 2011, top88): the weight between
// elements e and j at centre distance d (pixels) is w = max(0, rmin - d), and
//   density filter     F(x)_e = m_e * sum_j w_ej m_j x_j / wsum_e,   wsum_e = sum_j w_ej m_j,
//   its transpose   F^T(g)_j = m_j * sum_e w_ej m_e g_e / wsum_e,
// which carries sensitivities with respect to the filtered field back to the design variables.
#pragma once
#include <cstdint>

namespace femsr::topopt {

// wsum_e = sum_j w_ej m_j on the mask, 0 elsewhere. Every masked element has wsum_e >= rmin > 0.
void filter_weight_sums(int64_t ny, int64_t nx, const uint8_t* mask, double rmin, double* wsum);

// out = F(in), or F^T(in) when transpose; wsum from filter_weight_sums. Filtering a field of
// ones gives exactly one on the mask (numerator and wsum are summed in the same order).
void density_filter(int64_t ny, int64_t nx, const uint8_t* mask, double rmin, const double* wsum,
                    const double* in, double* out, bool transpose);

// Smoothed Heaviside projection of Wang, Lazarov & Sigmund (2011), eq. 6:
//   P(x) = (tanh(beta eta) + tanh(beta (x - eta))) / (tanh(beta eta) + tanh(beta (1 - eta))),
// with P(0) = 0 and P(1) = 1. out = P(in); derivative (may be null) = dP/dx.
void project(int64_t n, double beta, double eta, const double* in, double* out,
             double* derivative);

// Result of one OC update: the Lagrange multiplier, the mass the new design has, and how many
// mass evaluations the root search took.
struct OcStep {
  double multiplier;
  double mass;
  int64_t evaluations;
};

// Optimality-criteria update (Bendsoe & Sigmund 2003; top88's OC with a damping exponent):
//   xnew_j = clamp(x_j * (max(0, -dc_j) / (dv_j * lambda))^damping,
//                  max(0, x_j - move), min(1, x_j + move))   on the mask, 0 elsewhere,
// with lambda chosen so that the mass of xnew equals target to round-off. The mass is
// sum_j dv_j xnew_j (linear: no projection; dv is then the exact mass gradient), or, when
// wsum is not null, sum_e m_e P(F(xnew))_e with the projection (beta, eta) of the density
// filter (rmin, wsum). lambda is found on log(lambda) by a bracketed Illinois (regula falsi)
// iteration, which always keeps a sign-changing bracket like bisection but converges
// superlinearly; it stops when the mass is within 1e-12 (relative) of target or the bracket
// collapses to adjacent floating-point numbers. When target lies outside the masses the move
// limits allow, xnew is the nearest extreme.
OcStep oc_update(int64_t ny, int64_t nx, const uint8_t* mask, const double* x, const double* dc,
                 const double* dv, double target, double move, double damping, double rmin,
                 const double* wsum, double beta, double eta, double* xnew);

}  // namespace femsr::topopt
