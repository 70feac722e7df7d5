// The CUDA engine's grid stitch, one frame pixel at a time: tile_engine_cuda.cu runs these functions
// in its kernels, and tests/test_cuda_code_on_host.py runs them on the host against the CPU engine,
// so the kernels' arithmetic is checked on machines without a GPU.
//
// When the boxes form a grid (grid_layout.hpp) every box's weight is a row weight times a column
// weight, each normalised once per axis, and a pixel is covered by at most kGridCover bands per axis:
// per pixel the kernel reads two short table rows and at most four tiles, instead of looping over
// every box twice. The arithmetic is the CPU engine's grid path op for op (built without
// contraction: -fmad=false / -ffp-contract=off), so both engines give the same bits, up to the
// device libm's cos/exp in the window, which may differ from the host's in the last bit of a double.
#pragma once

#include "grid_layout.hpp"
#include "tile_math.hpp"

namespace edgedepth {

constexpr int kGridCover = 2;
constexpr int kGridMaxBands = 64;   // per axis; more takes the general kernel
constexpr int kGridMaxBoxes = 256;  // the box table travels as a kernel argument (1 KiB)

// A band covering a frame pixel along one axis: its tap into the tile and its window normalised by
// the pixel's sum over every covering band; band < 0 marks an unused slot.
struct GridEntry {
    int band;
    int lo;
    int hi;
    float frac;
    float weight;
};

struct GridBands {
    double v[2 * kGridMaxBands];  // (start, length) per band, sorted
};

struct GridBoxes {
    int at[kGridMaxBoxes];  // the box at (row band, column band), row band major
};

// The kGridCover entries of frame pixel p along an axis of frame_len pixels cut into nb bands of
// tile_len samples: the covering bands in sorted order (the plan guarantees no more) and their
// windows over the sum of all covering windows, summed in band order in double, as the CPU engine's
// band_windows does.
ED_HD void grid_axis_entries(const GridBands& bands, int nb, int tile_len, int frame_len, Window kind, int p,
                             GridEntry* out) {
    GridEntry found[kGridCover];
    double w[kGridCover];
    int count = 0;
    double sum = 0.0;
    for (int b = 0; b < nb; ++b) {
        const double start = bands.v[2 * b], length = bands.v[2 * b + 1];
        if (p < stitch_first(start, frame_len) || p >= stitch_stop(start, length, frame_len)) continue;
        const double u = stitch_u(start, length, p);
        const double wk = window_profile(u, kind);
        sum += wk;
        if (count < kGridCover) {
            const Tap t = tap_at(u * tile_len - 0.5, tile_len);
            found[count] = GridEntry{b, t.lo, t.hi, t.frac, 0.0f};
            w[count++] = wk;
        }
    }
    for (int k = 0; k < kGridCover; ++k) {
        GridEntry e{-1, 0, 0, 0.0f, 0.0f};
        if (k < count) {
            e = found[k];
            e.weight = static_cast<float>(w[k] / sum);
        }
        out[k] = e;
    }
}

// Channel ch of the output pixel whose row and column entries are ye and xe: per covering column
// band, the covering row bands' tile rows blended and weighted at the pixel's two column taps (the
// CPU engine's merged tile row), then blended between those taps and weighted by the column.
// Pixels no box covers get 0.
template <typename In>
ED_HD float grid_stitch_pixel(const In* tiles, int c, int th, int tw, const GridBoxes& boxes, int cols,
                              const GridEntry* ye, const GridEntry* xe, int ch) {
    const int64_t tile_plane = static_cast<int64_t>(th) * tw;
    float acc = 0.0f;
    for (int j = 0; j < kGridCover && xe[j].band >= 0; ++j) {
        float mlo = 0.0f, mhi = 0.0f;
        for (int i = 0; i < kGridCover && ye[i].band >= 0; ++i) {
            const int b = boxes.at[ye[i].band * cols + xe[j].band];
            const In* tile = tiles + (static_cast<int64_t>(b) * c + ch) * tile_plane;
            const In* r0 = tile + static_cast<int64_t>(ye[i].lo) * tw;
            const In* r1 = tile + static_cast<int64_t>(ye[i].hi) * tw;
            const float f = ye[i].frac, a = ye[i].weight;
            const float x0 = load(r0, xe[j].lo), y0 = load(r1, xe[j].lo);
            const float x1 = load(r0, xe[j].hi), y1 = load(r1, xe[j].hi);
            const float vlo = x0 + (y0 - x0) * f, vhi = x1 + (y1 - x1) * f;
            if (i == 0) {
                mlo = a == 1.0f ? vlo : vlo * a;
                mhi = a == 1.0f ? vhi : vhi * a;
            } else {
                mlo = mlo + a * vlo;
                mhi = mhi + a * vhi;
            }
        }
        const float term = xe[j].weight * (mlo + (mhi - mlo) * xe[j].frac);
        acc = j == 0 ? term : acc + term;
    }
    return acc;
}

// What the grid kernels are launched with; false when the boxes are not a grid they take (not a
// grid, too many bands or boxes, or more than kGridCover bands over one pixel): then the general
// stitch runs.
struct GridPlan {
    GridBands rows, cols;
    GridBoxes boxes;
    int nrows = 0, ncols = 0;
};

inline bool grid_stitch_plan(const double* boxes, int n, int height, int width, GridPlan* plan) {
    const GridLayout layout = grid_layout(boxes, n);
    const int rows = static_cast<int>(layout.rows.size()), cols = static_cast<int>(layout.cols.size());
    if (!layout.is_grid() || n > kGridMaxBoxes || rows > kGridMaxBands || cols > kGridMaxBands ||
        max_cover(layout.rows, height) > kGridCover || max_cover(layout.cols, width) > kGridCover)
        return false;
    plan->nrows = rows;
    plan->ncols = cols;
    for (int i = 0; i < rows; ++i) {
        plan->rows.v[2 * i] = layout.rows[i].first;
        plan->rows.v[2 * i + 1] = layout.rows[i].second;
    }
    for (int j = 0; j < cols; ++j) {
        plan->cols.v[2 * j] = layout.cols[j].first;
        plan->cols.v[2 * j + 1] = layout.cols[j].second;
    }
    for (int k = 0; k < n; ++k) plan->boxes.at[k] = layout.box_at[k];
    return true;
}

}  // namespace edgedepth
