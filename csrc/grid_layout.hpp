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

// The window of every frame pixel each band covers along an axis of frame_len pixels
// (profile[b][p - first[b]] for p in first[b]..first[b] + profile[b].size() - 1), and their sum per
// frame pixel, band by band in sorted order (the order both engines' per-axis normalisers follow for
// the same bits). Each window is computed once: a cos or exp per pixel and band is a few percent of
// a 4K stitch.
struct BandWindows {
    std::vector<std::vector<double>> profile;
    std::vector<int> first;
    std::vector<double> sum;
};

inline BandWindows band_windows(const std::vector<Band>& bands, int frame_len, Window kind) {
    BandWindows bw;
    bw.sum.assign(static_cast<size_t>(frame_len), 0.0);
    for (const Band& band : bands) {
        const int first = stitch_first(band.first, frame_len), stop = stitch_stop(band.first, band.second, frame_len);
        std::vector<double> profile(static_cast<size_t>(std::max(0, stop - first)));
        for (int p = first; p < stop; ++p) {
            profile[p - first] = window_profile(stitch_u(band.first, band.second, p), kind);
            bw.sum[p] += profile[p - first];
        }
        bw.first.push_back(first);
        bw.profile.push_back(std::move(profile));
    }
    return bw;
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
