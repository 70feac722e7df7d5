// Argument checks at the native boundary, run before any kernel touches memory. They repeat
// edgedepth/tiling.py's checks on purpose: the extension can be called directly, and a bad
// pointer or box must give a Python ValueError (std::invalid_argument), never a read out of bounds.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "tile_math.hpp"

namespace edgedepth {

[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// The engines index with 32-bit ints (a row buffer holds 3 * side + padding floats), so every side,
// channel count and box count must stay below this (edgedepth/tiling.py MAX_SIDE).
constexpr int64_t kMaxSide = int64_t{1} << 28;
// More threads than this only cost address space (a stack each) and spawn time (tiling.MAX_THREADS).
constexpr int64_t kMaxThreads = 256;

inline void check_positive(const char* name, int64_t v) {
    if (v <= 0) fail(std::string(name) + " must be >= 1, got " + std::to_string(v));
}

// A size the engine can index: 1..kMaxSide. Returns it as int.
inline int check_side(const char* name, int64_t v) {
    check_positive(name, v);
    if (v > kMaxSide)
        fail(std::string(name) + " is " + std::to_string(v) + ", over the tile engine's limit of " +
             std::to_string(kMaxSide));
    return static_cast<int>(v);
}

inline int check_threads(int64_t v) {
    check_positive("threads", v);
    if (v > kMaxThreads) fail("threads must be <= " + std::to_string(kMaxThreads) + ", got " + std::to_string(v));
    return static_cast<int>(v);
}

// The finishing pass's arguments (tiling.finish): a positive finite scale, a valid_max that is a number.
inline void check_finish_args(double scale, double valid_max) {
    if (!std::isfinite(scale) || !(scale > 0.0)) fail("scale must be finite and > 0");
    if (std::isnan(valid_max)) fail("valid_max must not be NaN");
}

// The joint upsampling's colour scale (tiling.MIN_JOINT_SIGMA: below it every range weight is at the floor).
// The guided upsampling's pooling step, window radius (pooled pixels) and regulariser (colour variance).
constexpr int kMaxGuidedStep = 16, kMaxGuidedRadius = 64;
inline void check_guided(int step, int radius, double eps) {
    if (step < 1 || step > kMaxGuidedStep)
        fail("step must be 1.." + std::to_string(kMaxGuidedStep) + ", got " + std::to_string(step));
    if (radius < 0 || radius > kMaxGuidedRadius)
        fail("radius must be 0.." + std::to_string(kMaxGuidedRadius) + ", got " + std::to_string(radius));
    if (!std::isfinite(eps) || !(eps >= 1e-8) || eps > 1.0) fail("eps must be in [1e-8, 1]");
}

inline void check_joint_sigma(double sigma) {
    if (!std::isfinite(sigma) || !(sigma >= 1e-3)) fail("sigma must be finite and >= 0.001");
}

inline Window check_window(int kind) {
    if (kind < 0 || kind > 3) fail("window kind must be 0..3 (uniform, linear, cosine, gaussian), got " + std::to_string(kind));
    return static_cast<Window>(kind);
}

// Boxes (n, 4) [y0, x0, h, w]: finite, h and w > 0, inside [0, frame_h] x [0, frame_w] up to a
// relative tolerance of 1e-6 (boxes scaled to a smaller map pick up rounding).
inline void check_boxes(const char* name, const double* boxes, int64_t n, int64_t frame_h, int64_t frame_w) {
    const double tol_h = 1e-6 * static_cast<double>(frame_h), tol_w = 1e-6 * static_cast<double>(frame_w);
    for (int64_t b = 0; b < n; ++b) {
        const double y0 = boxes[4 * b], x0 = boxes[4 * b + 1], h = boxes[4 * b + 2], w = boxes[4 * b + 3];
        const std::string where = std::string(name) + "[" + std::to_string(b) + "]";
        if (!std::isfinite(y0) || !std::isfinite(x0) || !std::isfinite(h) || !std::isfinite(w))
            fail(where + " must be finite");
        if (!(h > 0.0) || !(w > 0.0)) fail(where + " must have h > 0 and w > 0");
        if (y0 < -tol_h || x0 < -tol_w || y0 + h > frame_h + tol_h || x0 + w > frame_w + tol_w)
            fail(where + " lies outside the " + std::to_string(frame_h) + "x" + std::to_string(frame_w) + " frame");
    }
}

// A private copy of n boxes, checked. The engines read boxes with the GIL released: checking and
// then reading the caller's array would let another thread change it in between (a NaN written
// there becomes an out-of-range index), so they only ever see this copy.
inline std::vector<double> checked_box_copy(const char* name, const double* boxes, int64_t n, int64_t frame_h,
                                            int64_t frame_w) {
    check_side("number of boxes", n);
    std::vector<double> copy(boxes, boxes + 4 * n);
    check_boxes(name, copy.data(), n, frame_h, frame_w);
    return copy;
}

}  // namespace edgedepth
