#include "thin.hpp"

#include <cstddef>
#include <vector>

namespace femsr::thin {

void thin(int64_t ny, int64_t nx, uint8_t* mask) {
  // A background frame of one pixel spares the bounds checks.
  const int64_t width = nx + 2;
  std::vector<uint8_t> image(static_cast<std::size_t>((ny + 2) * width), 0);
  std::vector<int64_t> bone;
  for (int64_t i = 0; i < ny; ++i)
    for (int64_t j = 0; j < nx; ++j)
      if (mask[i * nx + j]) {
        const int64_t at = (i + 1) * width + j + 1;
        image[at] = 1;
        bone.push_back(at);
      }
  // P2 .. P9: north, then clockwise.
  const int64_t ring[8] = {-width, -width + 1, 1, width + 1, width, width - 1, -1, -width - 1};
  std::vector<int64_t> removed, kept;
  bool changed = true;
  while (changed) {
    changed = false;
    for (int pass = 0; pass < 2; ++pass) {
      removed.clear();
      kept.clear();
      for (const int64_t at : bone) {
        uint8_t p[8];
        int count = 0;
        for (int k = 0; k < 8; ++k) count += p[k] = image[at + ring[k]];
        int steps = 0;
        for (int k = 0; k < 8; ++k) steps += !p[k] && p[(k + 1) % 8];
        const bool side = pass == 0 ? (p[0] && p[2] && p[4]) || (p[2] && p[4] && p[6])
                                    : (p[0] && p[2] && p[6]) || (p[0] && p[4] && p[6]);
        if (count >= 2 && count <= 6 && steps == 1 && !side)
          removed.push_back(at);
        else
          kept.push_back(at);
      }
      // A sub-iteration reads the image as it was before it: remove after the scan.
      for (const int64_t at : removed) image[at] = 0;
      changed = changed || !removed.empty();
      bone.swap(kept);
    }
  }
  for (int64_t i = 0; i < ny; ++i)
    for (int64_t j = 0; j < nx; ++j) mask[i * nx + j] = image[(i + 1) * width + j + 1];
}

}  // namespace femsr::thin
