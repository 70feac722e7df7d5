#include "tile_engine_cpu.hpp"

#include <algorithm>
#include <thread>
#include <vector>

namespace edgedepth {
namespace {

// Runs fn(begin, end) over [0, total) split into `threads` contiguous chunks; the calling thread
// takes the first chunk. Threads are spawned per call (no global pool): an op costs milliseconds,
// a spawn microseconds, and the module keeps no hidden state.
template <typename F>
void parallel_for(int64_t total, int threads, F fn) {
    const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, total));
    if (workers <= 1) {
        if (total > 0) fn(int64_t{0}, total);
        return;
    }
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(workers - 1));
    const int64_t chunk = (total + workers - 1) / workers;
    for (int64_t w = 1; w < workers; ++w) {
        const int64_t begin = w * chunk, end = std::min(total, begin + chunk);
        if (begin < end) pool.emplace_back([=] { fn(begin, end); });
    }
    fn(int64_t{0}, std::min(total, chunk));
    for (auto& t : pool) t.join();
}

// Structure-of-arrays sample table for one crop axis of every box (vectorisable inner loops).
struct AxisTable {
    std::vector<int32_t> lo, hi;
    std::vector<float> frac;

    AxisTable(const double* boxes, int n, int coord, int out_len, int src_len)
        : lo(static_cast<size_t>(n) * out_len), hi(lo.size()), frac(lo.size()) {
        for (int b = 0; b < n; ++b) {
            const double start = boxes[4 * b + coord], length = boxes[4 * b + coord + 2];
            for (int i = 0; i < out_len; ++i) {
                const Tap t = crop_tap(start, length, out_len, i, src_len);
                const size_t k = static_cast<size_t>(b) * out_len + i;
                lo[k] = t.lo;
                hi[k] = t.hi;
                frac[k] = t.frac;
            }
        }
    }
};

}  // namespace

// Both crops are separable: per output row, the two source rows are blended vertically over the
// box's column span into a row buffer (contiguous, vectorisable), then each output sample blends
// two buffer entries horizontally. That halves the gathers of a direct 4-tap bilinear.
template <typename Out>
void crop_rgb_cpu(const uint8_t* src, int src_h, int src_w, const double* boxes, int n, int out_h,
                  int out_w, const float* scale, const float* bias, Out* out, int threads) {
    const AxisTable ys(boxes, n, 0, out_h, src_h), xs(boxes, n, 1, out_w, src_w);
    const int64_t plane = static_cast<int64_t>(out_h) * out_w;
    parallel_for(static_cast<int64_t>(n) * out_h, threads, [&](int64_t begin, int64_t end) {
        std::vector<float> row(static_cast<size_t>(src_w) * 3);
        std::vector<int32_t> lo3(static_cast<size_t>(out_w)), hi3(static_cast<size_t>(out_w));
        int cached_box = -1;
        for (int64_t r = begin; r < end; ++r) {
            const int b = static_cast<int>(r / out_h), i = static_cast<int>(r % out_h);
            const int32_t* xlo = xs.lo.data() + static_cast<size_t>(b) * out_w;
            const int32_t* xhi = xs.hi.data() + static_cast<size_t>(b) * out_w;
            const float* fx = xs.frac.data() + static_cast<size_t>(b) * out_w;
            const int first = xlo[0], span = xhi[out_w - 1] - first + 1;  // taps grow with j
            if (b != cached_box) {
                for (int j = 0; j < out_w; ++j) {
                    lo3[j] = (xlo[j] - first) * 3;
                    hi3[j] = (xhi[j] - first) * 3;
                }
                cached_box = b;
            }
            const size_t yk = static_cast<size_t>(r);
            const uint8_t* s0 = src + (static_cast<int64_t>(ys.lo[yk]) * src_w + first) * 3;
            const uint8_t* s1 = src + (static_cast<int64_t>(ys.hi[yk]) * src_w + first) * 3;
            const float fy = ys.frac[yk];
            float* buf = row.data();
            for (int k = 0; k < span * 3; ++k) {
                const float a = s0[k], c = s1[k];
                buf[k] = a + (c - a) * fy;
            }
            for (int ch = 0; ch < 3; ++ch) {
                Out* o = out + (static_cast<int64_t>(b) * 3 + ch) * plane + static_cast<int64_t>(i) * out_w;
                const float sc = scale[ch], bi = bias[ch];
                const float* bc = buf + ch;
                for (int j = 0; j < out_w; ++j) {
                    const float a = bc[lo3[j]], c = bc[hi3[j]];
                    store(o, j, (a + (c - a) * fx[j]) * sc + bi);
                }
            }
        }
    });
}

template <typename In, typename Out>
void crop_map_cpu(const In* src, int c, int src_h, int src_w, const double* boxes, int n,
                  int out_h, int out_w, Out* out, int threads) {
    const AxisTable ys(boxes, n, 0, out_h, src_h), xs(boxes, n, 1, out_w, src_w);
    const int64_t rows = static_cast<int64_t>(n) * c * out_h;
    parallel_for(rows, threads, [&](int64_t begin, int64_t end) {
        std::vector<float> row(static_cast<size_t>(src_w));
        for (int64_t r = begin; r < end; ++r) {
            const int i = static_cast<int>(r % out_h);
            const int64_t bc = r / out_h;
            const int ch = static_cast<int>(bc % c), b = static_cast<int>(bc / c);
            const int32_t* xlo = xs.lo.data() + static_cast<size_t>(b) * out_w;
            const int32_t* xhi = xs.hi.data() + static_cast<size_t>(b) * out_w;
            const float* fx = xs.frac.data() + static_cast<size_t>(b) * out_w;
            const int first = xlo[0], span = xhi[out_w - 1] - first + 1;
            const size_t yk = static_cast<size_t>(b) * out_h + i;
            const In* plane = src + static_cast<int64_t>(ch) * src_h * src_w + first;
            const In* s0 = plane + static_cast<int64_t>(ys.lo[yk]) * src_w;
            const In* s1 = plane + static_cast<int64_t>(ys.hi[yk]) * src_w;
            const float fy = ys.frac[yk];
            float* buf = row.data();  // buf[k] holds source column first + k
            for (int k = 0; k < span; ++k) {
                const float a = load(s0, k), d = load(s1, k);
                buf[k] = a + (d - a) * fy;
            }
            Out* o = out + r * out_w;
            for (int j = 0; j < out_w; ++j) {
                const float a = buf[xlo[j] - first], d = buf[xhi[j] - first];
                store(o, j, a + (d - a) * fx[j]);
            }
        }
    });
}

void window_cpu(int h, int w, Window kind, float* out) {
    std::vector<double> fx(static_cast<size_t>(w));
    for (int j = 0; j < w; ++j) fx[j] = window_profile((j + 0.5) / w, kind);
    for (int i = 0; i < h; ++i) {
        const double fy = window_profile((i + 0.5) / h, kind);
        for (int j = 0; j < w; ++j) out[static_cast<int64_t>(i) * w + j] = static_cast<float>(fy * fx[j]);
    }
}

template <typename In>
void stitch_cpu(const In* tiles, int n, int c, int th, int tw, const double* boxes, int height,
                int width, Window kind, float* out, int threads) {
    // Column tables per box (frame columns first..stop-1), built once and shared by all rows.
    std::vector<int> col_first(n), col_count(n);
    std::vector<size_t> col_offset(n + 1, 0);
    for (int b = 0; b < n; ++b) {
        col_first[b] = stitch_first(boxes[4 * b + 1], width);
        col_count[b] = std::max(0, stitch_stop(boxes[4 * b + 1], boxes[4 * b + 3], width) - col_first[b]);
        col_offset[b + 1] = col_offset[b] + col_count[b];
    }
    std::vector<int32_t> xlo(col_offset[n]), xhi(col_offset[n]);
    std::vector<float> fx(col_offset[n]), wx(col_offset[n]);
    for (int b = 0; b < n; ++b) {
        for (int k = 0; k < col_count[b]; ++k) {
            const double u = stitch_u(boxes[4 * b + 1], boxes[4 * b + 3], col_first[b] + k);
            const Tap t = tap_at(u * tw - 0.5, tw);
            const size_t q = col_offset[b] + k;
            xlo[q] = t.lo;
            xhi[q] = t.hi;
            fx[q] = t.frac;
            wx[q] = static_cast<float>(window_profile(u, kind));
        }
    }
    const int64_t plane = static_cast<int64_t>(height) * width;
    const int64_t tile_plane = static_cast<int64_t>(th) * tw;

    // Each thread owns whole output rows: the tiles covering a row add weight*value into a
    // row-sized accumulator, then the row is normalised and written once (no atomics, no
    // per-tile temporaries).
    parallel_for(height, threads, [&](int64_t begin, int64_t end) {
        std::vector<float> acc(static_cast<size_t>(c) * width), wsum(static_cast<size_t>(width));
        std::vector<float> w(static_cast<size_t>(width)), trow(static_cast<size_t>(tw));
        for (int64_t y64 = begin; y64 < end; ++y64) {
            const int y = static_cast<int>(y64);
            std::fill(acc.begin(), acc.end(), 0.0f);
            std::fill(wsum.begin(), wsum.end(), 0.0f);
            for (int b = 0; b < n; ++b) {
                const double by0 = boxes[4 * b], bh = boxes[4 * b + 2];
                if (y < stitch_first(by0, height) || y >= stitch_stop(by0, bh, height) || col_count[b] == 0) continue;
                const double u = stitch_u(by0, bh, y);
                const Tap ty = tap_at(u * th - 0.5, th);
                const float wy = static_cast<float>(window_profile(u, kind));
                const int first = col_first[b], count = col_count[b];
                const int32_t* lo = xlo.data() + col_offset[b];
                const int32_t* hi = xhi.data() + col_offset[b];
                const float* f = fx.data() + col_offset[b];
                const float* wxb = wx.data() + col_offset[b];
                float* ws = wsum.data() + first;
                for (int k = 0; k < count; ++k) {
                    w[k] = wy * wxb[k];
                    ws[k] += w[k];
                }
                for (int ch = 0; ch < c; ++ch) {
                    const In* tile = tiles + (static_cast<int64_t>(b) * c + ch) * tile_plane;
                    const In* t0 = tile + static_cast<int64_t>(ty.lo) * tw;
                    const In* t1 = tile + static_cast<int64_t>(ty.hi) * tw;
                    for (int k = 0; k < tw; ++k) {  // separable: vertical blend of the tile row
                        const float a0 = load(t0, k), a1 = load(t1, k);
                        trow[k] = a0 + (a1 - a0) * ty.frac;
                    }
                    float* a = acc.data() + static_cast<size_t>(ch) * width + first;
                    for (int k = 0; k < count; ++k) {
                        const float v0 = trow[lo[k]], v1 = trow[hi[k]];
                        a[k] += w[k] * (v0 + (v1 - v0) * f[k]);
                    }
                }
            }
            for (int x = 0; x < width; ++x) wsum[x] = wsum[x] > 0.0f ? 1.0f / wsum[x] : 0.0f;
            for (int ch = 0; ch < c; ++ch) {
                float* o = out + ch * plane + static_cast<int64_t>(y) * width;
                const float* a = acc.data() + static_cast<size_t>(ch) * width;
                for (int x = 0; x < width; ++x) o[x] = a[x] * wsum[x];
            }
        }
    });
}

template void crop_rgb_cpu<float>(const uint8_t*, int, int, const double*, int, int, int, const float*,
                                  const float*, float*, int);
template void crop_rgb_cpu<uint16_t>(const uint8_t*, int, int, const double*, int, int, int, const float*,
                                     const float*, uint16_t*, int);
template void crop_map_cpu<float, float>(const float*, int, int, int, const double*, int, int, int, float*, int);
template void crop_map_cpu<float, uint16_t>(const float*, int, int, int, const double*, int, int, int, uint16_t*, int);
template void crop_map_cpu<uint16_t, float>(const uint16_t*, int, int, int, const double*, int, int, int, float*, int);
template void crop_map_cpu<uint16_t, uint16_t>(const uint16_t*, int, int, int, const double*, int, int, int,
                                               uint16_t*, int);
template void stitch_cpu<float>(const float*, int, int, int, int, const double*, int, int, Window, float*, int);
template void stitch_cpu<uint16_t>(const uint16_t*, int, int, int, int, const double*, int, int, Window, float*,
                                   int);

}  // namespace edgedepth
