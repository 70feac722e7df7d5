// The guided-filter upsampling's arithmetic on one pooled or frame pixel, shared by the CPU engine
// (guided_kernels.inc, vectorised per instruction set) and the CUDA engine (tile_engine_cuda.cu), so
// that both give the same bits. Every sum is formed in one fixed order that does not depend on how
// the work is split: the pooling row by row and left to right in each block; a window sum as the
// sum over its rows, top to bottom, of each row's horizontal sum, left to right, where a column
// outside the map adds +0.0. Both engines are built without floating-point contraction.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "tile_math.hpp"

namespace edgedepth {

constexpr int kGuidedPlanes = 14;  // window sums of the fit: m, m r, m g, m b, m p, m r p, ..., m b b
constexpr int kMeanPlanes = 5;     // window sums of the mean: has, has a0, has a1, has a2, has b

// ln x for finite x > 0 (as std::log, within a few ulp): x = m 2^e with m in [sqrt(1/2), sqrt(2)),
// ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, from its series to s^15. Plain
// arithmetic on the bits so that loops over it vectorise.
ED_HD double log_series(double x) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int64_t e = static_cast<int64_t>(bits >> 52) - 1023;
    uint64_t mb = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull;
    double m;
    memcpy(&m, &mb, sizeof m);
    const bool big = m > 1.4142135623730951;
    m = big ? 0.5 * m : m;
    e += big ? 1 : 0;
    const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
    double t = 1.0 / 15;
    t = t * s2 + 1.0 / 13;
    t = t * s2 + 1.0 / 11;
    t = t * s2 + 1.0 / 9;
    t = t * s2 + 1.0 / 7;
    t = t * s2 + 1.0 / 5;
    t = t * s2 + 1.0 / 3;
    t = t * s2 + 1.0;
    return static_cast<double>(e) * 0.69314718055994531 + 2.0 * s * t;
}

// exp(x) for float, within 2 ulp on [-87, 88]: 2^(x log2 e) split into an integer power (exponent
// bits) and 2^f, f in [-0.5, 0.5], from a degree-6 polynomial. Plain arithmetic so the row loops
// vectorise; NaN stays NaN, x above 88.7 gives inf, x below -88 about 6e-39 (std::exp: less).
ED_HD float exp_poly(float x) {
    const float t = lesser(greater(x * 1.44269504088896341f, -127.0f), 128.0f);
    const float n = nearbyintf(t);
    const float f = t - n;
    float p = 1.53527664e-4f;
    p = p * f + 1.33903394e-3f;
    p = p * f + 9.61812883e-3f;
    p = p * f + 5.55041086e-2f;
    p = p * f + 2.40226507e-1f;
    p = p * f + 6.93147182e-1f;
    p = p * f + 1.0f;
    // 2^n in two halves so that n = 128 (inf) and n = -127 (0 after the multiply) need no branch;
    // a NaN n (converting it would be undefined) gives NaN through p anyway
    const int32_t e = static_cast<int32_t>(n == n ? n : 0.0f);
    const int32_t e1 = e >> 1, e2 = e - e1;
    uint32_t b1 = static_cast<uint32_t>(e1 + 127) << 23, b2 = static_cast<uint32_t>(e2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    const float y = p * s1 * s2;
    return x != x ? x : y;
}

// Pooled pixel (Y, X) of a (h, w) depth map and its planar (3, h, w) guide, blocks of step x step
// clipped to the map: out = m (1 where every depth of the block is finite and > 0, else 0), mean
// red, green, blue, mean ln depth (0 where m is 0). The CPU engine forms the same sums a row at a time.
ED_HD void guided_pool_pixel(const float* depth, const float* guide, int h, int w, int step, int Y, int X,
                             double* out) {
    const int64_t plane = static_cast<int64_t>(h) * w;
    const float fmax = 3.40282347e+38f;
    const int ya = Y * step, yb = ya + step < h ? ya + step : h, xa = X * step, xb = xa + step < w ? xa + step : w;
    double acc[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
    for (int y = ya; y < yb; ++y)
        for (int x = xa; x < xa + step; ++x) {
            // columns past the map add +0.0, as the CPU engine's zero-padded rows do
            const int64_t i = static_cast<int64_t>(y) * w + (x < w ? x : 0);
            const float d = depth[i];
            const bool in = x < w, ok = d > 0.0f && d <= fmax;
            acc[0] += in ? (ok ? 0.0 : 1.0) : 0.0;
            acc[1] += in ? static_cast<double>(guide[i]) : 0.0;
            acc[2] += in ? static_cast<double>(guide[plane + i]) : 0.0;
            acc[3] += in ? static_cast<double>(guide[2 * plane + i]) : 0.0;
            acc[4] += in ? log_series(ok ? static_cast<double>(d) : 1.0) : 0.0;
        }
    const double n = static_cast<double>((yb - ya) * (xb - xa));
    const bool good = acc[0] == 0.0;
    out[0] = good ? 1.0 : 0.0;
    for (int k = 1; k < 4; ++k) out[k] = acc[k] / n;
    out[4] = good ? acc[4] / n : 0.0;
}

// The exponent's clamp range from the least and greatest valid pooled ln depth, as float; lo > hi
// (no valid pooled pixel, so every output pixel is invalid anyway) gives [0, 0].
struct GuidedRange {
    float qlo, qhi;
};

ED_HD GuidedRange guided_range(double lo, double hi) {
    const bool any = lo <= hi;
    return GuidedRange{any ? static_cast<float>(lo) : 0.0f, any ? static_cast<float>(hi) : 0.0f};
}

// Value k of the fit's kGuidedPlanes for one pooled pixel of m, r, g, b, p: m, m r, m g, m b, m p,
// m r p, m g p, m b p, m r r, m r g, m r b, m g g, m g b, m b b. One plane per instantiation, so
// that the CPU engine's loop over a row (one plane at a time) vectorises.
template <int k>
ED_HD double guided_product(double m, double r, double g, double b, double p) {
    static_assert(k >= 0 && k < kGuidedPlanes, "14 planes");
    if constexpr (k == 0) return m;
    if constexpr (k == 1) return m * r;
    if constexpr (k == 2) return m * g;
    if constexpr (k == 3) return m * b;
    if constexpr (k == 4) return m * p;
    if constexpr (k == 5) return m * r * p;
    if constexpr (k == 6) return m * g * p;
    if constexpr (k == 7) return m * b * p;
    if constexpr (k == 8) return m * r * r;
    if constexpr (k == 9) return m * r * g;
    if constexpr (k == 10) return m * r * b;
    if constexpr (k == 11) return m * g * g;
    if constexpr (k == 12) return m * g * b;
    if constexpr (k == 13) return m * b * b;
}

template <int... k>
ED_HD void guided_products_of(double m, double r, double g, double b, double p, double* v,
                              std::integer_sequence<int, k...>) {
    ((v[k] = guided_product<k>(m, r, g, b, p)), ...);
}

// All kGuidedPlanes values of one pooled pixel.
ED_HD void guided_products(double m, double r, double g, double b, double p, double* v) {
    guided_products_of(m, r, g, b, p, v, std::make_integer_sequence<int, kGuidedPlanes>());
}

// The least-squares fit ln d ~ a . rgb + b from a window's kGuidedPlanes sums s (eps regularises
// a): fit = a0, a1, a2, b, has-a-fit. No valid pooled pixel in the window: no fit (a = b = 0); the
// solve runs anyway, branch-free.
struct GuidedFit {
    float a0, a1, a2, b, has;
};

ED_HD GuidedFit guided_solve(const double* s, double eps) {
    const bool any = s[0] > 0.5;
    const double n = any ? 1.0 / s[0] : 0.0;
    const double mr = s[1] * n, mg = s[2] * n, mb = s[3] * n, mp = s[4] * n;
    const double cr = s[5] * n - mr * mp, cg = s[6] * n - mg * mp, cb = s[7] * n - mb * mp;
    const double srr = s[8] * n - mr * mr + eps, srg = s[9] * n - mr * mg;
    const double srb = s[10] * n - mr * mb, sgg = s[11] * n - mg * mg + eps;
    const double sgb = s[12] * n - mg * mb, sbb = s[13] * n - mb * mb + eps;
    // The symmetric 3x3 solve by cofactors (positive definite: eps > 0).
    const double i00 = sgg * sbb - sgb * sgb, i01 = srb * sgb - srg * sbb, i02 = srg * sgb - srb * sgg;
    const double i11 = srr * sbb - srb * srb, i12 = srg * srb - srr * sgb, i22 = srr * sgg - srg * srg;
    const double inv = 1.0 / (srr * i00 + srg * i01 + srb * i02);
    const double c0 = (i00 * cr + i01 * cg + i02 * cb) * inv;
    const double c1 = (i01 * cr + i11 * cg + i12 * cb) * inv;
    const double c2 = (i02 * cr + i12 * cg + i22 * cb) * inv;
    GuidedFit f;
    f.a0 = static_cast<float>(c0);
    f.a1 = static_cast<float>(c1);
    f.a2 = static_cast<float>(c2);
    f.b = static_cast<float>(mp - c0 * mr - c1 * mg - c2 * mb);
    f.has = any ? 1.0f : 0.0f;
    return f;
}

// The mean's kMeanPlanes values of one pooled pixel from its fit.
ED_HD void guided_mean_values(float a0, float a1, float a2, float b, float has, double* v) {
    const double h = has;
    v[0] = h;
    v[1] = h * a0;
    v[2] = h * a1;
    v[3] = h * a2;
    v[4] = h * b;
}

// Coefficient k (A0, A1, A2, B) of a pooled pixel from its window's sums: the mean of the fits in
// the window (n0 >= 1 wherever m = 1: the pixel's own window holds its fit); B is NaN where m = 0, so
// that every output pixel it is a tap of is invalid (as a bilinear resize propagates NaN).
ED_HD float guided_coefficient(double n0, double sk, int k, double m) {
    const uint32_t nan_bits = 0x7fc00000u;
    float nan;
    memcpy(&nan, &nan_bits, sizeof nan);
    const float v = static_cast<float>(n0 > 0.5 ? sk / n0 : 0.0);
    return k < 3 || m > 0.5 ? v : nan;
}

// One frame pixel: A, B blended from the rows above (top) and below (bottom) with weight fy of the
// lower, q = A . rgb / 255 + B clamped to [qlo, qhi], depth exp(q), finished (finish_value).
ED_HD float guided_pixel(float a0t, float a1t, float a2t, float bt, float a0b, float a1b, float a2b, float bb,
                         float fy, const uint8_t* px, float qlo, float qhi, float scale, float valid_max,
                         uint8_t* valid) {
    const float gy = 1.0f - fy;
    const float a0 = gy * a0t + fy * a0b, a1 = gy * a1t + fy * a1b, a2 = gy * a2t + fy * a2b, b = gy * bt + fy * bb;
    const float q = (a0 * px[0] + a1 * px[1] + a2 * px[2]) * (1.0f / 255.0f) + b;
    // lesser/greater keep a NaN q (a bad tap) NaN: the comparison is false, the first argument returned
    return finish_value(exp_poly(lesser(greater(q, qlo), qhi)), scale, valid_max, valid);
}

// ---- the window sums one pooled pixel at a time (the CUDA engine and its host test; the CPU engine
// forms the same sums a row at a time, csrc/guided_kernels.inc box_rows). `values(i, v)` writes the K
// values of pooled pixel i (row-major in a (hp, wp) map).

// The fit's values: guided_products of the pooled planes m, r, g, b, p (plane stride pp).
struct FitValues {
    const double* pooled;
    int64_t pp;
    ED_HD void operator()(int64_t i, double* v) const {
        guided_products(pooled[i], pooled[pp + i], pooled[2 * pp + i], pooled[3 * pp + i], pooled[4 * pp + i], v);
    }
};

// The mean's values: guided_mean_values of the fit planes a0, a1, a2, b, has (plane stride pp).
struct MeanValues {
    const float* fit;
    int64_t pp;
    ED_HD void operator()(int64_t i, double* v) const {
        guided_mean_values(fit[i], fit[pp + i], fit[2 * pp + i], fit[3 * pp + i], fit[4 * pp + i], v);
    }
};

// Row y's horizontal sums at column x over columns x - r .. x + r, left to right, a column outside
// the row adding +0.0 (the first one too).
template <int K, typename Values>
ED_HD void guided_hsum_at(const Values& values, int wp, int r, int64_t y, int x, double* out) {
    double v[K];
    for (int d = 0; d <= 2 * r; ++d) {
        const int xx = x - r + d;
        if (xx >= 0 && xx < wp) {
            values(y * wp + xx, v);
        } else {
            for (int k = 0; k < K; ++k) v[k] = 0.0;
        }
        for (int k = 0; k < K; ++k) out[k] = d == 0 ? v[k] : out[k] + v[k];
    }
}

// The window sums at pooled pixel (y, x) from the horizontal sums hs (K planes of stride hp * wp):
// rows y - r .. y + r clipped to the map, top to bottom.
template <int K>
ED_HD void guided_vsum_at(const double* hs, int hp, int wp, int r, int64_t y, int x, double* out) {
    const int64_t pp = static_cast<int64_t>(hp) * wp;
    const int64_t lo = y - r > 0 ? y - r : 0, hi = y + r < hp - 1 ? y + r : hp - 1;
    for (int k = 0; k < K; ++k) {
        const double* plane = hs + k * pp + x;
        double sum = plane[lo * wp];
        for (int64_t yy = lo + 1; yy <= hi; ++yy) sum += plane[yy * wp];
        out[k] = sum;
    }
}

// A coefficient plane's value at a frame column: its horizontal bilinear blend (crop semantics).
ED_HD float guided_expand(const float* row, Tap tx) { return (1.0f - tx.frac) * row[tx.lo] + tx.frac * row[tx.hi]; }

// Frame pixel of colour px at row tap ty and column tap tx into the four (hp, wp) coefficient planes
// coef (plane stride pp): the CUDA engine's gather (the CPU engine expands each pooled row once).
ED_HD float guided_frame_pixel(const float* coef, int64_t pp, int wp, Tap ty, Tap tx, const uint8_t* px, float qlo,
                               float qhi, float scale, float valid_max, uint8_t* valid) {
    float top[4], bottom[4];
    for (int k = 0; k < 4; ++k) {
        top[k] = guided_expand(coef + k * pp + static_cast<int64_t>(ty.lo) * wp, tx);
        bottom[k] = guided_expand(coef + k * pp + static_cast<int64_t>(ty.hi) * wp, tx);
    }
    return guided_pixel(top[0], top[1], top[2], top[3], bottom[0], bottom[1], bottom[2], bottom[3], ty.frac, px, qlo,
                        qhi, scale, valid_max, valid);
}

}  // namespace edgedepth
