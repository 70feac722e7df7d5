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

// Joint bilateral upsampling (Kopf et al. 2007) of a (h, w) depth map to (height, width), guided by
// the frame: each output pixel takes the 2x2 bilinear taps of the crop semantics (the whole map
// resized to the frame), each weighted by its bilinear weight times the range weight
// max((1 - t/16)^16, kJointFloor), t = (d2 - d2_min) / (2 sigma^2), where d2 is the squared RGB
// distance (0..1 per channel) between the frame pixel and the tap's guide colour and d2_min the
// smallest of the four. guide: (3, h, w) planar, the frame resized to (h, w) and divided by 255. NaN propagates as
// in a bilinear resize. With `finish`, each row is finished as it is written.
void joint_upsample_cpu(const float* depth, const float* guide, int h, int w, const uint8_t* image, int height,
                        int width, float sigma, float* out, int threads, const Finish* finish = nullptr);

// Guided-filter upsampling (He, Sun: Fast Guided Filter, 2015) of a (h, w) depth map to (height,
// width). The map and its guide are pooled step x step (ln depth and colour means); per pooled
// pixel, ln depth is fitted as a . rgb + b by least squares over its clipped (2 radius + 1)^2 window
// (pooled pixels whose depths are all finite and > 0; eps regularises a); a and b are averaged over
// each window, resized bilinearly (crop semantics) to the frame, and the output is
// exp(A . rgb + B) with the frame's own colours (0..1), A . rgb + B clamped to the range of the
// valid pooled ln depths, so a depth step lands where the colour step is, to the frame pixel. guide
// as for joint_upsample_cpu. An output pixel with a tap on an invalid pooled pixel is NaN before the
// finish, which every output row gets as it is written (scale, valid_max and the validity bytes as
// in Finish).
void guided_upsample_cpu(const float* depth, const float* guide, int h, int w, int step, const uint8_t* image,
                         int height, int width, int radius, double eps, float scale, float valid_max, float* out,
                         uint8_t* valid, int threads);

// Edge snapping of a (h, w) depth map with its (3, h, w) planar guide (tiling_reference.snap_edges):
// where the 3x3 depth ratio max/min exceeds `ratio` (> 1) and the 5x5 one stays below its 1.75th
// power, a pixel takes the 3x3 minimum or maximum, whichever is closer in guide colour. `out` must
// not overlap `depth`.
void snap_edges_cpu(const float* depth, const float* guide, int h, int w, float ratio, float* out, int threads);

// The finishing pass over n depth values, in place, in one pass.
void finish_cpu(float* depth, int64_t n, float scale, float valid_max, uint8_t* valid, int threads);

}  // namespace edgedepth
