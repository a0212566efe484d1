// Zhang-Suen thinning (Zhang & Suen 1984, CACM 27(3)) of a binary image, the twin of
// femsr/reference/thin.py, which states the rule. Images are ny*nx row-major uint8 of 0/1; pixels
// outside the image count as background.
#pragma once
#include <cstdint>

namespace femsr::thin {

// Overwrites mask (ny*nx, 0/1) with its skeleton.
void thin(int64_t ny, int64_t nx, uint8_t* mask);

}  // namespace femsr::thin
