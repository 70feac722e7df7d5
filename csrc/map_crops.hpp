// The CUDA engine's map crops per element: one crop (crop_map_cuda) and several maps cut in one
// launch (crop_maps_cuda). Header-only and __host__ __device__, so that
// tests/native/cuda_code_host.cpp runs the same index arithmetic on the host under the sanitizers.
#pragma once

#include <cstdint>

#include "tile_math.hpp"

namespace edgedepth {

// Per-box, per-axis sample entry; lo < 0 marks a frame pixel the box does not cover (stitch).
struct Entry {
    int lo;
    int hi;
    float frac;
    float weight;
};

template <typename T>
ED_HD float bilinear(const T* plane, int width, const Entry& ty, const Entry& tx) {
    const float a0 = load(plane, static_cast<int64_t>(ty.lo) * width + tx.lo);
    const float a1 = load(plane, static_cast<int64_t>(ty.lo) * width + tx.hi);
    const float b0 = load(plane, static_cast<int64_t>(ty.hi) * width + tx.lo);
    const float b1 = load(plane, static_cast<int64_t>(ty.hi) * width + tx.hi);
    const float top = a0 + (a1 - a0) * tx.frac, bot = b0 + (b1 - b0) * tx.frac;
    return top + (bot - top) * ty.frac;
}

// Element idx of a (n, c, out_h, out_w) crop of a (c, src_h, src_w) map, from its tables (n * out_h
// entries for y, n * out_w for x).
template <typename In>
ED_HD float crop_map_value(const In* src, int c, int src_h, int src_w, const Entry* ytab, const Entry* xtab, int out_h,
                           int out_w, int64_t idx) {
    const int64_t plane = static_cast<int64_t>(out_h) * out_w, bc = idx / plane;
    const int b = static_cast<int>(bc / c), ch = static_cast<int>(bc % c);
    const int i = static_cast<int>((idx % plane) / out_w), j = static_cast<int>(idx % out_w);
    const In* p = src + static_cast<int64_t>(ch) * src_h * src_w;
    return bilinear(p, src_w, ytab[static_cast<int64_t>(b) * out_h + i], xtab[static_cast<int64_t>(b) * out_w + j]);
}

constexpr int kMaxMapCrops = 8;

// One map of crop_maps_cuda: (c, src_h, src_w) at `src`, cropped at its n boxes to (n, c, out_h,
// out_w) at `out`.
struct MapCrop {
    const void* src;
    void* out;
    int c, src_h, src_w, out_h, out_w;
};

// One map of several cut at the same n boxes. Its table entries (n * out_h for y, then n * out_w for
// x) start at `table` in the shared table and its output elements end at `out_end`, both running
// totals over the maps before it, so an element finds its map by a scan of at most kMaxMapCrops.
struct MapJob {
    const void* src;
    void* out;
    int c, src_h, src_w, out_h, out_w;
    int64_t table, table_end, out_end;
};

struct MapJobs {
    MapJob job[kMaxMapCrops];
    int count;
    int n;  // boxes per map
};

// The kernels' view of count (1..kMaxMapCrops) maps cut at n boxes each; *tables and *outs get the
// sizes of the shared table and of all outputs together.
inline MapJobs map_jobs(const MapCrop* maps, int count, int n, int64_t* tables, int64_t* outs) {
    MapJobs jobs{};
    jobs.count = count;
    jobs.n = n;
    int64_t t = 0, o = 0;
    for (int k = 0; k < count; ++k) {
        const MapCrop& m = maps[k];
        const int64_t entries = static_cast<int64_t>(n) * (m.out_h + m.out_w);
        o += static_cast<int64_t>(n) * m.c * m.out_h * m.out_w;
        jobs.job[k] = MapJob{m.src, m.out, m.c, m.src_h, m.src_w, m.out_h, m.out_w, t, t + entries, o};
        t += entries;
    }
    *tables = t;
    *outs = o;
    return jobs;
}

// The map that table entry (by_table) or output element idx belongs to.
ED_HD int map_of(const MapJobs& jobs, int64_t idx, bool by_table) {
    int k = 0;
    while (k + 1 < jobs.count && idx >= (by_table ? jobs.job[k].table_end : jobs.job[k].out_end)) ++k;
    return k;
}

// Entry idx of the shared table; boxes are (count, n, 4), map k's in its own pixels.
ED_HD Entry map_table_entry(const MapJobs& jobs, const double* boxes, int64_t idx) {
    const int k = map_of(jobs, idx, true);
    const MapJob& m = jobs.job[k];
    const int64_t local = idx - m.table, ys = static_cast<int64_t>(jobs.n) * m.out_h;
    const bool y = local < ys;
    const int len = y ? m.out_h : m.out_w;
    const int64_t e = y ? local : local - ys;
    const int b = static_cast<int>(e / len), i = static_cast<int>(e % len);
    const double* box = boxes + 4 * (static_cast<int64_t>(k) * jobs.n + b);
    const Tap t = y ? crop_tap(box[0], box[2], len, i, m.src_h) : crop_tap(box[1], box[3], len, i, m.src_w);
    return Entry{t.lo, t.hi, t.frac, 1.0f};
}

// Output element idx over all maps: computes it and stores it in its map's output.
template <typename In, typename Out>
ED_HD void map_crop_element(const MapJobs& jobs, const Entry* table, int64_t idx) {
    const int k = map_of(jobs, idx, false);
    const MapJob& m = jobs.job[k];
    const int64_t local = idx - (k ? jobs.job[k - 1].out_end : 0);
    const Entry* ytab = table + m.table;
    const Entry* xtab = ytab + static_cast<int64_t>(jobs.n) * m.out_h;
    store(static_cast<Out*>(m.out), local,
          crop_map_value(static_cast<const In*>(m.src), m.c, m.src_h, m.src_w, ytab, xtab, m.out_h, m.out_w, local));
}

}  // namespace edgedepth
