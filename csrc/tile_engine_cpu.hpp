// CPU tile engine: crop+resize, window weights, blend+stitch (edgedepth/tiling_reference.py).
// Callers validate every argument first (module_cpu.cpp); these functions trust their inputs.
// Boxes are (n, 4) float64 rows [y0, x0, h, w]; all arrays are C-contiguous.
#pragma once

#include <cstdint>

#include "tile_math.hpp"

namespace edgedepth {

// HWC uint8 RGB -> (n, 3, out_h, out_w): out = bilinear(x) * scale[c] + bias[c].
template <typename Out>
void crop_rgb_cpu(const uint8_t* src, int src_h, int src_w, const double* boxes, int n, int out_h,
                  int out_w, const float* scale, const float* bias, Out* out, int threads);

// (c, src_h, src_w) maps -> (n, c, out_h, out_w).
template <typename In, typename Out>
void crop_map_cpu(const In* src, int c, int src_h, int src_w, const double* boxes, int n,
                  int out_h, int out_w, Out* out, int threads);

// (h, w) window weights.
void window_cpu(int h, int w, Window kind, float* out);

// The runtime's finishing pass (edgedepth/tiling.py finish): valid = finite, <= valid_max (before
// scaling; +inf = no limit), finite after * scale, > 0; depth = depth * scale where finite and > 0,
// else 0. valid gets 1/0 bytes (height * width of them).
struct Finish {
    float scale;
    float valid_max;
    uint8_t* valid;
};

// (n, c, th, tw) tiles -> (c, height, width) weighted average; pixels no box covers are 0. With
// `finish` (c == 1), each output row is finished as soon as it is complete, while it is in cache.
template <typename In>
void stitch_cpu(const In* tiles, int n, int c, int th, int tw, const double* boxes, int height,
                int width, Window kind, float* out, int threads, const Finish* finish = nullptr);

// The finishing pass over n depth values, in place, in one pass.
void finish_cpu(float* depth, int64_t n, float scale, float valid_max, uint8_t* valid, int threads);

}  // namespace edgedepth
