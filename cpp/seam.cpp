#include "seam.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

namespace femsr::seam {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Neighbour order of the relaxation, (row, column) steps; the Python twin uses the same.
constexpr int kOffsets[8][2] = {{-1, -1}, {-1, 0}, {-1, 1}, {0, -1},
                                {0, 1},   {1, -1},  {1, 0},  {1, 1}};

inline double lerp(double old_value, double new_value, double t) {
  return old_value + t * (new_value - old_value);
}

}  // namespace

// --- Dijkstra ---------------------------------------------------------------------------------

void SeamFinder::resize(int64_t ny, int64_t nx) {
  ny_ = ny;
  nx_ = nx;
  width_ = nx + 2;
  const auto size = static_cast<size_t>((ny + 2) * width_);
  if (cost_.size() < size) {
    cost_.resize(size);
    dist_.resize(size);
    pred_.resize(size);
    equal_.resize((size + 63) / 64);
  }
  // The interior is overwritten by load; the border of this shape is set here.
  std::fill(cost_.begin(), cost_.begin() + width_, kInf);
  std::fill(cost_.begin() + (ny + 1) * width_, cost_.begin() + (ny + 2) * width_, kInf);
  for (int64_t i = 1; i <= ny; ++i) {
    cost_[i * width_] = kInf;
    cost_[i * width_ + nx + 1] = kInf;
  }
}

// A radix heap (Ahuja, Mehlhorn, Orlin & Tarjan 1990) on the bit patterns of the distances, which
// order like the non-negative doubles they encode, with 4-bit digits: Dijkstra pops keys that
// never decrease, so an entry waits in the bucket (digit position, digit value) of the highest
// digit in which its key differs from the last key popped; bucket numbers order like the keys
// they hold. The keys equal to the last one wait in equal_, a bit set on the node, so that ties
// pop in node order: the pops come in the order (distance, node), whatever the implementation.
// (On the error surfaces of quilting, buckets by single bits moved about 4.4 entries per pop;
// 4-bit digits move about 2, and 70 % of the pops find a bucket of one entry, which moves none.
// On a femur's surfaces 60-67 % of the pops are ties, where the patches agree to the last bit
// outside the bone: a bit set pops them in about half the time a binary heap on the node took.)
namespace {

inline uint64_t key_of(double dist) {
  uint64_t key;
  std::memcpy(&key, &dist, sizeof key);
  return key;
}

inline double dist_of(uint64_t key) {
  double dist;
  std::memcpy(&dist, &key, sizeof dist);
  return dist;
}

// The highest and the lowest set bit of x != 0: GCC/Clang builtins, MSVC intrinsics.
inline int highest_bit(uint64_t x) {
#if defined(_MSC_VER) && !defined(__clang__)
  unsigned long index;
  _BitScanReverse64(&index, x);
  return static_cast<int>(index);
#else
  return 63 - __builtin_clzll(x);
#endif
}

inline int lowest_bit(uint64_t x) {
#if defined(_MSC_VER) && !defined(__clang__)
  unsigned long index;
  _BitScanForward64(&index, x);
  return static_cast<int>(index);
#else
  return __builtin_ctzll(x);
#endif
}

// The bucket of key != last: digit position * 16 + the key's digit there.
inline int bucket_of(uint64_t key, uint64_t last) {
  const int position = highest_bit(key ^ last) / 4;
  return position * 16 + static_cast<int>((key >> (4 * position)) & 15);
}

}  // namespace

inline void SeamFinder::place(const Entry& e) {
  if (e.key == last_) {
    const auto word = static_cast<size_t>(e.node) / 64;
    equal_[word] |= uint64_t{1} << (e.node % 64);
    equal_low_ = std::min(equal_low_, word);
    ++equal_count_;
    return;
  }
  const int b = bucket_of(e.key, last_);
  buckets_[b].push_back(e);
  occupied_[b / 64] |= uint64_t{1} << (b % 64);
}

inline void SeamFinder::push(uint64_t key, int32_t node) {
  place({key, node});
  ++size_;
}

inline SeamFinder::Entry SeamFinder::pop() {
  --size_;
  if (equal_count_ == 0) {
    // The lowest occupied bucket holds the least key. Making it the last key keeps every other
    // bucket valid: the new last key agrees with the old one in all digits above this bucket's
    // digit, and in that digit its value is below those of the other buckets of the digit.
    int word = 0;
    while (occupied_[word] == 0) ++word;
    const int b = word * 64 + lowest_bit(occupied_[word]);
    occupied_[word] &= occupied_[word] - 1;
    std::vector<Entry>& from = buckets_[b];
    if (from.size() == 1) {
      const Entry top = from.front();
      from.clear();
      last_ = top.key;
      return top;
    }
    uint64_t least = from.front().key;
    for (const Entry& e : from) least = std::min(least, e.key);
    last_ = least;
    // Spread the bucket over the lower ones, all empty, and equal_.
    for (const Entry& e : from) place(e);
    from.clear();
  }
  size_t word = equal_low_;
  while (equal_[word] == 0) ++word;
  const int bit = lowest_bit(equal_[word]);
  equal_[word] &= equal_[word] - 1;
  // An empty set starts its next search wherever its next node lands.
  equal_low_ = --equal_count_ == 0 ? equal_.size() : word;
  return {last_, static_cast<int32_t>(word * 64 + static_cast<size_t>(bit))};
}

int64_t SeamFinder::solve(int64_t* path) {
  const int64_t w = width_;
  const int64_t size = (ny_ + 2) * w;
  std::fill(dist_.begin(), dist_.begin() + size, kInf);
  for (auto& bucket : buckets_) bucket.clear();
  std::fill(equal_.begin(), equal_.end(), 0);
  equal_count_ = 0;
  equal_low_ = equal_.size();
  std::fill(std::begin(occupied_), std::end(occupied_), 0);
  size_ = 0;
  last_ = 0;
  for (int64_t j = 1; j <= nx_; ++j) {
    const auto v = static_cast<int32_t>(w + j);
    if (cost_[v] < kInf) {
      dist_[v] = cost_[v];
      pred_[v] = -1;
      push(key_of(cost_[v]), v);
    }
  }
  int64_t offsets[8];
  for (int k = 0; k < 8; ++k) offsets[k] = kOffsets[k][0] * w + kOffsets[k][1];
  const int64_t bottom = ny_ * w;  // first node of the last image row
  const double* cost = cost_.data();
  double* dist = dist_.data();
  int32_t* pred = pred_.data();
  while (size_ > 0) {
    const Entry e = pop();
    const int32_t u = e.node;
    const double du = dist_of(e.key);
    if (du > dist[u]) continue;  // stale: u was reached more cheaply after this push
    if (u >= bottom) {
      // With non-negative costs the first bottom pixel popped ends a cheapest path.
      int64_t length = 0;
      for (int32_t v = u; v >= 0; v = pred[v]) ++length;
      int64_t k = length;
      for (int32_t v = u; v >= 0; v = pred[v]) {
        --k;
        path[2 * k] = v / w - 1;
        path[2 * k + 1] = v % w - 1;
      }
      return length;
    }
    // A finished pixel never improves (its distance is at most e.dist), so it needs no flag.
    for (const int64_t offset : offsets) {
      const auto v = static_cast<int32_t>(u + offset);
      const double nd = du + cost[v];
      if (nd < dist[v]) {
        dist[v] = nd;
        pred[v] = u;
        push(key_of(nd), v);
      }
    }
  }
  return 0;
}

// --- Seam masks ---------------------------------------------------------------------------------

void seam_mask(int64_t ny, int64_t nx, const int64_t* seam, int64_t length, uint8_t* mask) {
  constexpr uint8_t kOpen = 2;
  std::fill(mask, mask + ny * nx, kOpen);
  for (int64_t k = 0; k < length; ++k) mask[seam[2 * k] * nx + seam[2 * k + 1]] = 1;
  // Scanline flood fill (4-connected) from the open pixels of the left column: a seed fills the
  // run of open pixels around it in its row and seeds each run of open pixels next to that run
  // in the rows above and below.
  struct Seed {
    int64_t row, col;
  };
  std::vector<Seed> stack;
  for (int64_t i = 0; i < ny; ++i)
    if (mask[i * nx] == kOpen) stack.push_back({i, 0});
  while (!stack.empty()) {
    const Seed s = stack.back();
    stack.pop_back();
    uint8_t* row = mask + s.row * nx;
    if (row[s.col] != kOpen) continue;
    int64_t left = s.col, right = s.col + 1;
    while (left > 0 && row[left - 1] == kOpen) --left;
    while (right < nx && row[right] == kOpen) ++right;
    std::fill(row + left, row + right, uint8_t{0});
    for (const int64_t i : {s.row - 1, s.row + 1}) {
      if (i < 0 || i >= ny) continue;
      const uint8_t* next = mask + i * nx;
      for (int64_t j = left; j < right; ++j)
        if (next[j] == kOpen && (j == left || next[j - 1] != kOpen)) stack.push_back({i, j});
    }
  }
  // What the fill did not reach is right of the seam: kOpen becomes 1 (a loop that vectorizes).
  for (int64_t k = 0; k < ny * nx; ++k) mask[k] = std::min(mask[k], uint8_t{1});
}

void vertical_seam_masks(int64_t nr, int64_t nc, int64_t patch, int64_t stride,
                         const double* patches, uint8_t* masks) {
  const int64_t overlap = patch - stride;
  const int64_t count = nr * (nc - 1);
  const int64_t area = patch * overlap;
  int64_t failed = 0;
#pragma omp parallel reduction(+ : failed)
  {
    SeamFinder finder;
    std::vector<int64_t> path(2 * area);
#pragma omp for schedule(dynamic, 4)
    for (int64_t k = 0; k < count; ++k) {
      const int64_t r = k / (nc - 1), c = k % (nc - 1);
      const double* a = patches + (r * nc + c) * patch * patch + stride;
      const double* b = patches + (r * nc + c + 1) * patch * patch;
      finder.load(patch, overlap, [&](int64_t i, int64_t j) {
        const double d = a[i * patch + j] - b[i * patch + j];
        return d * d;
      });
      const int64_t length = finder.solve(path.data());
      if (length == 0) {
        ++failed;
        continue;
      }
      seam_mask(patch, overlap, path.data(), length, masks + k * area);
    }
  }
  if (failed > 0) throw std::invalid_argument(kOverflow);
}

void horizontal_seam_masks(int64_t nr, int64_t patch, int64_t width, int64_t stride,
                           const double* strips, uint8_t* masks) {
  const int64_t overlap = patch - stride;
  const int64_t area = width * overlap;
  int64_t failed = 0;
#pragma omp parallel reduction(+ : failed)
  {
    SeamFinder finder;
    std::vector<int64_t> path(2 * area);
    std::vector<uint8_t> transposed(area);
#pragma omp for schedule(dynamic, 1)
    for (int64_t r = 0; r < nr - 1; ++r) {
      const double* a = strips + (r * patch + stride) * width;
      const double* b = strips + (r + 1) * patch * width;
      // Transposed surface: row x, column i, so the seam runs down from column 0 of the strips.
      finder.load(width, overlap, [&](int64_t x, int64_t i) {
        const double d = a[i * width + x] - b[i * width + x];
        return d * d;
      });
      const int64_t length = finder.solve(path.data());
      if (length == 0) {
        ++failed;
        continue;
      }
      seam_mask(width, overlap, path.data(), length, transposed.data());
      uint8_t* m = masks + r * area;
      for (int64_t i = 0; i < overlap; ++i)
        for (int64_t x = 0; x < width; ++x) m[i * width + x] = transposed[x * overlap + i];
    }
  }
  if (failed > 0) throw std::invalid_argument(kOverflow);
}

// --- Composition ----------------------------------------------------------------------------------

void compose_columns(int64_t nr, int64_t nc, int64_t patch, int64_t stride, const double* patches,
                     Blend blend, double* strips, int32_t* owner) {
  const int64_t overlap = patch - stride;
  const int64_t width = (nc - 1) * stride + patch;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < nr * patch; ++row) {
    const int64_t r = row / patch, y = row % patch;
    double* out = strips + row * width;
    int32_t* own = owner ? owner + row * width : nullptr;
    for (int64_t c = 0; c < nc; ++c) {
      const double* p = patches + ((r * nc + c) * patch + y) * patch;
      double* dst = out + c * stride;
      int32_t* dst_own = own ? own + c * stride : nullptr;
      int64_t x = 0;
      if (c > 0 && blend.masks) {
        const uint8_t* m = blend.masks + ((r * (nc - 1) + c - 1) * patch + y) * overlap;
        for (; x < overlap; ++x) {
          if (m[x]) {
            dst[x] = p[x];
            if (dst_own) dst_own[x] = static_cast<int32_t>(c);
          }
        }
      } else if (c > 0) {
        for (; x < overlap; ++x) dst[x] = lerp(dst[x], p[x], blend.ramp[x]);
      }
      const int64_t beyond = x;  // first pixel past the left overlap (0 for the first patch)
      for (; x < patch; ++x) dst[x] = p[x];
      if (dst_own) std::fill(dst_own + beyond, dst_own + patch, static_cast<int32_t>(c));
    }
  }
}

void compose_rows(int64_t nr, int64_t nc, int64_t patch, int64_t width, int64_t stride,
                  const double* strips, const int32_t* strip_owner, Blend blend, int64_t height,
                  int64_t out_width, double* out, int32_t* owner) {
  const int64_t overlap = patch - stride;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < height; ++row) {
    // The strips covering this row, top to bottom; the first is copied, each later one enters
    // at offset y < overlap into its top overlap (it covers the row together with the one above).
    const int64_t first = row < patch ? 0 : (row - patch) / stride + 1;
    const int64_t last = std::min(nr - 1, row / stride);
    double* dst = out + row * out_width;
    int32_t* dst_own = owner ? owner + row * out_width : nullptr;
    for (int64_t r = first; r <= last; ++r) {
      const int64_t y = row - r * stride;
      const double* src = strips + (r * patch + y) * width;
      const int32_t* src_own = strip_owner ? strip_owner + (r * patch + y) * width : nullptr;
      const auto base = static_cast<int32_t>(r * nc);
      if (r == first) {
        std::copy(src, src + out_width, dst);
        if (dst_own)
          for (int64_t x = 0; x < out_width; ++x) dst_own[x] = base + src_own[x];
      } else if (blend.masks) {
        const uint8_t* m = blend.masks + ((r - 1) * overlap + y) * width;
        for (int64_t x = 0; x < out_width; ++x) {
          if (m[x]) {
            dst[x] = src[x];
            if (dst_own) dst_own[x] = base + src_own[x];
          }
        }
      } else {
        const double t = blend.ramp[y];
        for (int64_t x = 0; x < out_width; ++x) dst[x] = lerp(dst[x], src[x], t);
      }
    }
  }
}

}  // namespace femsr::seam
