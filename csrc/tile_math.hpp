// Sampling, window and float16 formulas shared by the CPU and CUDA tile engines, so that both
// follow edgedepth/tiling_reference.py from one definition (DESIGN.md, "one crop semantics").
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define ED_HD __host__ __device__ __forceinline__
#else
#define ED_HD inline
#endif

namespace edgedepth {

enum class Window : int { Uniform = 0, Linear = 1, Cosine = 2, Gaussian = 3 };

constexpr double kWindowFloor = 1e-6;    // tiling_reference.WINDOW_FLOOR
constexpr double kGaussianSigma = 0.25;  // tiling_reference.GAUSSIAN_SIGMA
constexpr double kPi = 3.14159265358979323846;

// 1-D window profile f(u), u in [0, 1] across a box side; strictly positive.
ED_HD double window_profile(double u, Window kind) {
    double f = 1.0;
    switch (kind) {
        case Window::Uniform: f = 1.0; break;
        case Window::Linear: f = 1.0 - fabs(2.0 * u - 1.0); break;
        case Window::Cosine: f = 0.5 - 0.5 * cos(2.0 * kPi * u); break;
        case Window::Gaussian: {
            const double d = (u - 0.5) / kGaussianSigma;
            f = exp(-0.5 * d * d);
            break;
        }
    }
    return f > kWindowFloor ? f : kWindowFloor;
}

// One bilinear tap along an axis: indices lo/hi into the source and the weight of hi.
struct Tap {
    int lo;
    int hi;
    float frac;
};

// Source position pos (pixel-centre coordinates) clamped to [0, src_len - 1]. Written so that NaN
// clamps to 0 too: converting NaN to int is undefined (x86 gives INT_MIN, an index far out of bounds).
ED_HD Tap tap_at(double pos, int src_len) {
    const double top = static_cast<double>(src_len - 1);
    pos = pos > 0.0 ? (pos < top ? pos : top) : 0.0;
    const int lo = static_cast<int>(floor(pos));
    Tap t;
    t.lo = lo;
    t.hi = lo + 1 < src_len ? lo + 1 : src_len - 1;
    t.frac = static_cast<float>(pos - lo);
    return t;
}

// Crop: output index i of an axis resized from [start, start + length) to out_len samples.
ED_HD Tap crop_tap(double start, double length, int out_len, int i, int src_len) {
    return tap_at(start + (i + 0.5) * (length / out_len) - 0.5, src_len);
}

// Stitch: frame pixels covered by [start, start + length) are first..stop-1 (pixel centre inside).
// Clamped to [0, frame_len], NaN to 0 (as in tap_at).
ED_HD int clamp_index(double v, int frame_len) {
    return v > 0.0 ? (v < frame_len ? static_cast<int>(v) : frame_len) : 0;
}
ED_HD int stitch_first(double start, int frame_len) { return clamp_index(ceil(start - 0.5), frame_len); }
ED_HD int stitch_stop(double start, double length, int frame_len) {
    return clamp_index(ceil(start + length - 0.5), frame_len);
}
ED_HD double stitch_u(double start, double length, int pixel) {
    return (pixel + 0.5 - start) / length;
}

// IEEE binary16 <-> binary32, round to nearest even (F. Giesen's branch-light conversions);
// plain integer code so the CPU module needs no F16C and the result is bit-exact with numpy.
ED_HD float half_to_float(uint16_t h) {
    const uint32_t shifted_exp = 0x7c00u << 13;
    uint32_t o = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
    const uint32_t exp = shifted_exp & o;
    o += (127u - 15u) << 23;
    float f;
    if (exp == shifted_exp) {
        o += (128u - 16u) << 23;  // Inf / NaN
        memcpy(&f, &o, 4);
    } else if (exp == 0) {
        o += 1u << 23;  // subnormal: renormalise through the FPU
        memcpy(&f, &o, 4);
        f -= 6.10351562e-05f;
    } else {
        memcpy(&f, &o, 4);
    }
    uint32_t bits;
    memcpy(&bits, &f, 4);
    bits |= (static_cast<uint32_t>(h) & 0x8000u) << 16;
    memcpy(&f, &bits, 4);
    return f;
}

ED_HD uint16_t float_to_half(float value) {
    uint32_t f;
    memcpy(&f, &value, 4);
    const uint32_t sign = f & 0x80000000u;
    f ^= sign;
    uint16_t o;
    if (f >= 0x47800000u) {  // overflow -> Inf, NaN stays NaN
        o = f > 0x7f800000u ? 0x7e00u : 0x7c00u;
    } else if (f < 0x38800000u) {  // subnormal or zero: let the FPU round
        const uint32_t denorm_magic_bits = ((127u - 15u) + (23u - 10u) + 1u) << 23;
        float ff, magic;
        memcpy(&ff, &f, 4);
        memcpy(&magic, &denorm_magic_bits, 4);
        ff += magic;
        memcpy(&f, &ff, 4);
        o = static_cast<uint16_t>(f - denorm_magic_bits);
    } else {
        const uint32_t mant_odd = (f >> 13) & 1u;
        f += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;
        f += mant_odd;
        o = static_cast<uint16_t>(f >> 13);
    }
    return static_cast<uint16_t>(o | (sign >> 16));
}

// ---- the finishing pass (edgedepth/tiling.py finish) on one value: *valid = finite, <= valid_max
// (before scaling; +inf = no limit), finite after * scale, > 0; returns x * scale where that is
// finite and > 0, else 0. |v| <= FLT_MAX is isfinite in a form that vectorises.
ED_HD float finish_value(float x, float scale, float valid_max, uint8_t* valid) {
    const float fmax = 3.40282347e+38f;
    const float s = x * scale;  // the float32 product numpy forms (no contraction)
    const bool good = fabsf(s) <= fmax && s > 0.0f;
    *valid = static_cast<uint8_t>(good && fabsf(x) <= fmax && x <= valid_max);
    return good ? s : 0.0f;
}

// ---- joint bilateral upsampling (tiling_reference.joint_upsample), one output pixel.
// Where the four tap depths agree within kJointFlat of the least (max - min <= kJointFlat * min), the
// pixel takes the plain bilinear blend: any weighting of such taps lands within that 2 % of it, and
// on a smooth surface the colour weights would only copy texture into depth. 84-92 % of the pixels
// of a refined 4K frame are such (66-79 % at 1 %, which gave the same held-out accuracy to four
// decimals at 1.2x the time), and the colour work is most of the cost.
constexpr float kJointFloor = 1e-4f;
constexpr float kJointFlat = 0.02f;

// std::min / std::max, which device code lacks, with their NaN behaviour (the first argument wins).
ED_HD float lesser(float a, float b) { return b < a ? b : a; }
ED_HD float greater(float a, float b) { return a < b ? b : a; }

// The range kernel: max((1 - t/16)^16, kJointFloor) for t = colour distance / (2 sigma^2) >= 0,
// (1 - t/n)^n being the classic stand-in for exp(-t) (within 4 % of it where exp(-t) > 0.02).
// Four multiplies instead of an exp: a pixel computes four of them, and a vectorised polynomial exp
// made the CPU loop three times slower. A NaN t (a non-finite guide colour, which the caller may
// hand us) takes the floor. Fused multiply-adds (one rounding each) where the vector code has them,
// so every instruction set, and the GPU, gives the same bits.
ED_HD float joint_range_weight(float t) {
    float u = fmaf(-t, 0.0625f, 1.0f);
    u = u > 0.0f ? u : 0.0f;
    u *= u;
    u *= u;
    u *= u;
    u *= u;
    return u > kJointFloor ? u : kJointFloor;
}

// The four taps of an output pixel, upper-left, upper-right, lower-left, lower-right: depth and
// guide colour (0..1 per channel).
struct JointTaps {
    float d[4];
    float r[4];
    float g[4];
    float b[4];
};

// The taps of the output pixel at row tap ty and column tap tx into a (h, w) depth map with row
// stride w and its planar (3, h, w) guide of plane = h * w (the CUDA kernel's gather; the CPU engine
// reads the same values from rows it expanded once).
ED_HD JointTaps joint_taps(const float* depth, const float* guide, int w, int64_t plane, Tap ty, Tap tx) {
    const int64_t at[4] = {static_cast<int64_t>(ty.lo) * w + tx.lo, static_cast<int64_t>(ty.lo) * w + tx.hi,
                           static_cast<int64_t>(ty.hi) * w + tx.lo, static_cast<int64_t>(ty.hi) * w + tx.hi};
    JointTaps t;
    for (int k = 0; k < 4; ++k) {
        t.d[k] = depth[at[k]];
        t.r[k] = guide[at[k]];
        t.g[k] = guide[plane + at[k]];
        t.b[k] = guide[2 * plane + at[k]];
    }
    return t;
}

// The output pixel of colour px (RGB bytes) at bilinear fractions fx (of the right taps) and fy (of
// the lower ones): the taps blended bilinearly where their depths agree within kJointFlat, else each
// weighted by its bilinear weight times its range weight.
ED_HD float joint_blend(const JointTaps& t, const uint8_t* px, float fx, float fy, float inv2s2) {
    const float ux = fx, gx = 1.0f - ux, gy = 1.0f - fy, k255 = 1.0f / 255.0f;
    const float* d = t.d;
    const float lo = lesser(lesser(d[0], d[1]), lesser(d[2], d[3]));
    const float hi = greater(greater(d[0], d[1]), greater(d[2], d[3]));
    float w[4] = {gy * gx, gy * ux, fy * gx, fy * ux};
    if (!(hi - lo <= kJointFlat * lo)) {
        const float r = px[0] * k255, g = px[1] * k255, b = px[2] * k255;
        float c2[4];
        for (int k = 0; k < 4; ++k) {
            const float dr = r - t.r[k], dg = g - t.g[k], db = b - t.b[k];
            c2[k] = fmaf(dr, dr, fmaf(dg, dg, db * db));
        }
        const float m = lesser(lesser(c2[0], c2[1]), lesser(c2[2], c2[3]));
        for (int k = 0; k < 4; ++k) w[k] = w[k] * joint_range_weight((c2[k] - m) * inv2s2);
    }
    const float sum = fmaf(w[3], d[3], fmaf(w[2], d[2], fmaf(w[1], d[1], w[0] * d[0])));
    return hi - lo <= kJointFlat * lo ? sum : sum / (w[0] + w[1] + w[2] + w[3]);
}

// Load/store helpers templated on the element type (float or uint16_t = binary16).
ED_HD float load(const float* p, int64_t i) { return p[i]; }
ED_HD float load(const uint16_t* p, int64_t i) { return half_to_float(p[i]); }
ED_HD void store(float* p, int64_t i, float v) { p[i] = v; }
ED_HD void store(uint16_t* p, int64_t i, float v) { p[i] = float_to_half(v); }

}  // namespace edgedepth
