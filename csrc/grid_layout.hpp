// Whether stitch boxes form a grid, and its bands. Host code shared by the CPU and CUDA engines, so
// that both take their per-axis fast path on exactly the same layouts and normalise alike.
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "tile_math.hpp"

namespace edgedepth {

// (start, length) of a box along one axis, in frame pixels.
using Band = std::pair<double, double>;

// The distinct bands of the (n, 4) boxes along one axis (coord 0 = y, 1 = x), sorted.
inline std::vector<Band> distinct_bands(const double* boxes, int n, int coord) {
    std::vector<Band> bands(static_cast<size_t>(n));
    for (int b = 0; b < n; ++b) bands[b] = {boxes[4 * b + coord], boxes[4 * b + coord + 2]};
    std::sort(bands.begin(), bands.end());
    bands.erase(std::unique(bands.begin(), bands.end()), bands.end());
    return bands;
}

// Per frame pixel along one axis of frame_len pixels, the sum of the bands' windows, band by band in
// sorted order (the order both engines' per-axis normalisers rely on for the same bits).
inline std::vector<double> band_weight_sums(const std::vector<Band>& bands, int frame_len, Window kind) {
    std::vector<double> sums(static_cast<size_t>(frame_len), 0.0);
    for (const Band& band : bands)
        for (int p = stitch_first(band.first, frame_len); p < stitch_stop(band.first, band.second, frame_len); ++p)
            sums[p] += window_profile(stitch_u(band.first, band.second, p), kind);
    return sums;
}

// The most bands covering one frame pixel along an axis.
inline int max_cover(const std::vector<Band>& bands, int frame_len) {
    std::vector<int> delta(static_cast<size_t>(frame_len) + 1, 0);
    for (const Band& band : bands) {
        ++delta[stitch_first(band.first, frame_len)];
        --delta[stitch_stop(band.first, band.second, frame_len)];
    }
    int most = 0, now = 0;
    for (int d : delta) most = std::max(most, now += d);
    return most;
}

// Boxes form a grid when every row band crossed with every column band is exactly one box. Then the
// weight sum at (y, x) is rowsum(y) * colsum(x), so each box's weight can be normalised once per axis
// (the rule tiling_torch.stitch uses) instead of per pixel.
struct GridLayout {
    std::vector<Band> rows, cols;
    std::vector<int> box_at;  // rows.size() * cols.size() box indices, row band major; empty unless a grid
    bool is_grid() const { return !box_at.empty(); }
};

inline GridLayout grid_layout(const double* boxes, int n) {
    GridLayout g;
    g.rows = distinct_bands(boxes, n, 0);
    g.cols = distinct_bands(boxes, n, 1);
    if (n == 0 || static_cast<size_t>(n) != g.rows.size() * g.cols.size()) return g;
    std::vector<int> at(static_cast<size_t>(n), -1);
    for (int b = 0; b < n; ++b) {
        const auto i = std::lower_bound(g.rows.begin(), g.rows.end(), Band{boxes[4 * b], boxes[4 * b + 2]}) - g.rows.begin();
        const auto j =
            std::lower_bound(g.cols.begin(), g.cols.end(), Band{boxes[4 * b + 1], boxes[4 * b + 3]}) - g.cols.begin();
        int& slot = at[static_cast<size_t>(i) * g.cols.size() + static_cast<size_t>(j)];
        if (slot >= 0) return g;  // a repeated box leaves another cell empty: not a grid
        slot = b;
    }
    g.box_at = std::move(at);
    return g;
}

}  // namespace edgedepth
