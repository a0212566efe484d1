// Minimum-error seams (Dijkstra) and the quilting of a regular grid of overlapping patches.
//
// Conventions (shared with femsr/quilt.py and femsr/reference/quilt.py):
//   a cost surface is ny*nx row-major, pixel (i, j) = row i from the top, column j;
//   a seam is the 8-connected path of pixels from a pixel of row 0 to a pixel of row ny-1 whose
//   sum of pixel costs is least. Paths may run sideways and back up: the graph is the whole pixel
//   grid, not one pixel per row. Ties are broken by the order (distance, i*nx+j) of the pops and
//   by relaxing the neighbours in the fixed order of kOffsets, so the Python twin, which uses the
//   same order, finds the same path;
//   a seam mask marks the side of a seam each pixel is on: 0 for the pixels 4-connected to
//   column 0 without crossing the seam (they stay with the earlier patch), 1 for the others, the
//   seam itself included (they go to the later patch). An 8-connected path from the top edge to
//   the bottom edge blocks every 4-connected path from the left edge to the right edge, so the
//   two sides never meet.
// Patches are nr*nc*P*P row-major (patch (r, c) at the top left corner (r*stride, c*stride) of the
// canvas of (nr-1)*stride+P rows and (nc-1)*stride+P columns); 0 < overlap = P - stride <= stride,
// so a pixel lies in at most two patches of a grid row (four of the grid) and every overlap is
// shared by exactly the two patches whose error surface its seam splits. Quilting
// goes in two passes: the patches of each grid row are joined left to right into a strip (P rows,
// the canvas width) across vertical seams, then the strips are joined top to bottom across
// horizontal seams cut on the strips' overlaps. Each pixel ends up taken from one patch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace femsr::seam {

// Message of the error raised when no path has a finite cost (the sums overflow).
inline constexpr const char* kOverflow =
    "the seam cost overflows: every path sums to infinity (scale the cost down)";

// Dijkstra's algorithm on a pixel grid with a reusable radix heap: one object serves many
// seams on one thread, allocating only when a surface is larger than all before it.
class SeamFinder {
 public:
  // Loads an ny x nx surface, cost(i, j) the cost of pixel (i, j) (>= 0; +inf blocks it).
  template <class Cost>
  void load(int64_t ny, int64_t nx, Cost&& cost) {
    resize(ny, nx);
    for (int64_t i = 0; i < ny; ++i) {
      double* row = cost_.data() + (i + 1) * width_ + 1;
      // + 0.0 turns -0.0 into +0.0, whose bit pattern orders like the value (the radix heap's
      // keys, in seam.cpp).
      for (int64_t j = 0; j < nx; ++j) row[j] = cost(i, j) + 0.0;
    }
  }

  // Seam of the loaded surface: writes its pixels (row, column) from top to bottom into
  // path[2k], path[2k+1] (room for ny*nx pixels) and returns how many, or 0 when every path sums
  // to infinity.
  int64_t solve(int64_t* path);

  // A heap entry: the bit pattern of a distance and a padded node index.
  struct Entry {
    uint64_t key;
    int32_t node;
  };

 private:
  // The radix heap's buckets: one for each value of each of the 16 4-bit digits of a key.
  static constexpr int kBuckets = 16 * 16;

  void resize(int64_t ny, int64_t nx);
  void push(uint64_t key, int32_t node);
  void place(const Entry& e);
  Entry pop();

  // The grid is padded with a border of +inf pixels, so neighbours need no bounds checks: a
  // border pixel can never improve on its initial infinite distance. Node = padded row-major
  // index, which orders like i*nx+j.
  int64_t ny_ = 0, nx_ = 0, width_ = 2;
  std::vector<double> cost_, dist_;
  std::vector<int32_t> pred_;
  std::vector<Entry> buckets_[kBuckets];
  // The nodes whose key is last_, one bit per node: a node waits there at most once, as its
  // distance only ever falls. Pops take the lowest set bit at or after word equal_low_.
  std::vector<uint64_t> equal_;
  size_t equal_count_ = 0, equal_low_ = 0;
  uint64_t occupied_[kBuckets / 64] = {};  // bit b set when bucket b holds entries
  uint64_t last_ = 0;
  size_t size_ = 0;
};

// Fills mask (ny*nx) with the side of the seam (length pixels as (row, column) pairs, an
// 8-connected path from row 0 to row ny-1 inside the grid) each pixel is on: 0 left, 1 right or
// on the seam.
void seam_mask(int64_t ny, int64_t nx, const int64_t* seam, int64_t length, uint8_t* mask);

// Masks of the vertical seams between horizontally adjacent patches: overlap (r, c) of patches
// (r, c) and (r, c+1) gets the seam of the error surface (A - B)^2 over its P x overlap pixels,
// and masks[((r*(nc-1) + c)*P + i)*overlap + j] its seam mask. Overlaps run in parallel. Throws
// std::invalid_argument(kOverflow) when a surface has no finite path.
void vertical_seam_masks(int64_t nr, int64_t nc, int64_t patch, int64_t stride,
                         const double* patches, uint8_t* masks);

// Masks of the horizontal seams between the strips (nr strips of P x width): overlap r of strips
// r and r+1 is rows stride.. of strip r against rows 0..overlap-1 of strip r+1; its seam runs
// from column 0 to column width-1 (the vertical seam of the transposed surface) and
// masks[(r*overlap + i)*width + x] is 0 above it, 1 below or on it. Overlaps run in parallel.
void horizontal_seam_masks(int64_t nr, int64_t patch, int64_t width, int64_t stride,
                           const double* strips, uint8_t* masks);

// How a later item enters the overlap with what is already there: by a mask (0 keeps the old
// pixel, 1 takes the new one; masks laid out as the *_seam_masks functions write them) or by a
// ramp (weight ramp[k] of the new item at offset k into the overlap, 0 < ramp[k] < 1, blended
// as old + ramp[k]*(new - old), which is exact where the two agree). Exactly one is non-null.
struct Blend {
  const uint8_t* masks;
  const double* ramp;
};

// Joins the patches of every grid row into a strip: strips (nr*P*width, width = (nc-1)*stride+P)
// and, when owner is not null (masks only), the grid column of the patch each strip pixel comes
// from. Patches enter left to right: a patch overwrites the strip beyond its left overlap and
// enters the overlap by blend. Strip rows are filled in parallel.
void compose_columns(int64_t nr, int64_t nc, int64_t patch, int64_t stride, const double* patches,
                     Blend blend, double* strips, int32_t* owner);

// Joins the strips top to bottom the same way and crops to height x out_width (height <=
// (nr-1)*stride+P, out_width <= width): out (height*out_width) and, when owner is not null
// (masks only; needs strip_owner), the flat index r*nc + c of the patch each pixel comes from.
// Output rows are filled in parallel.
void compose_rows(int64_t nr, int64_t nc, int64_t patch, int64_t width, int64_t stride,
                  const double* strips, const int32_t* strip_owner, Blend blend, int64_t height,
                  int64_t out_width, double* out, int32_t* owner);

}  // namespace femsr::seam
