// Grid finite elements: bilinear Q4 plane-stress pixels.
//
// Conventions (shared with femsr/fem.py and femsr/reference/fem.py):
//   element (r, c) is image pixel row r (from the top), column c;
//   node (i, j) is the grid corner row i, column j, grid node number i*(nx+1)+j; its DOFs are
//   2*node (x, right) and 2*node+1 (y, up);
//   an element's local nodes are 0 = bottom-left (r+1, c), 1 = bottom-right (r+1, c+1),
//   2 = top-right (r, c+1), 3 = top-left (r, c): counter-clockwise with y up.
// A nodemap gives the system node of every grid node, or -1 for a node left out; it must increase
// over the nodes it keeps so that rows come out with sorted columns. Every kept node keeps both
// DOFs, so the sparsity is built once per node pair (a 2x2 block pattern, four times smaller than
// the scalar one) and expanded to CSR.
#pragma once
#include <cstdint>

namespace femsr::fem {

// Unit-modulus (E = 1) element stiffness, 8x8 row-major, 2x2 Gauss quadrature. A square plane
// element's stiffness does not depend on its side length.
void element_stiffness(double nu, double thickness, double* ke);

// Number of coupled kept nodes (block columns) of each kept node. Two nodes are coupled when an
// active element holds both. active: ny*nx element mask; counts: one per kept node.
void block_row_counts(int64_t ny, int64_t nx, const uint8_t* active, const int32_t* nodemap,
                      int32_t* counts);

// Sorted block columns of each kept node into bindices[bindptr[n] .. bindptr[n+1]).
void block_fill_indices(int64_t ny, int64_t nx, const uint8_t* active, const int32_t* nodemap,
                        const int32_t* bindptr, int32_t* bindices);

// Scalar CSR pattern of the same matrix: row 2n+a holds the columns 2m, 2m+1 of every block
// column m of block row n. indptr: 2*nnodes+1, indices: 4*nnzb.
void csr_from_blocks(int64_t nnodes, const int32_t* bindptr, const int32_t* bindices,
                     int32_t* indptr, int32_t* indices);

// CSR values of the pattern (rows as csr_from_blocks lays them out): sum over the active
// elements shared by the two nodes of modulus[e] * ke[a][b]. fixed (per grid DOF, may be null)
// decouples prescribed DOFs: their rows and columns are zero except the diagonal, which keeps its
// value so the scaling stays that of the free DOFs. Block rows are filled in parallel.
void fill_values(int64_t ny, int64_t nx, const uint8_t* active, const double* modulus,
                 const double* ke, const int32_t* nodemap, const uint8_t* fixed,
                 const int32_t* bindptr, double* data);

// As fill_values without fixed DOFs, element e contributing its own 8x8 matrix kes[64 e ..].
void fill_values_elementwise(int64_t ny, int64_t nx, const uint8_t* active, const double* kes,
                             const int32_t* nodemap, const int32_t* bindptr, double* data);

// The entries on and above the diagonal of an n-row CSR matrix whose rows have sorted columns:
// upper_indptr (n+1) from the matrix alone, then upper_indices and upper_data of
// upper_indptr[n] entries. Rows are cut in parallel.
void upper_triangle_indptr(int64_t n, const int32_t* indptr, const int32_t* indices,
                           int32_t* upper_indptr);
void upper_triangle_fill(int64_t n, const int32_t* indptr, const int32_t* indices,
                         const double* data, const int32_t* upper_indptr, int32_t* upper_indices,
                         double* upper_data);

// u_e^T ke u_e of every active element for each of ncases grid displacement fields
// u[case][2*(ny+1)*(nx+1)]; inactive elements get 0. out: ncases*ny*nx.
void element_energies(int64_t ny, int64_t nx, int64_t ncases, const uint8_t* active,
                      const double* ke, const double* u, double* out);

}  // namespace femsr::fem
