#include "tile_engine_cpu.hpp"

#include "grid_layout.hpp"
#include "guided_math.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <thread>
#include <type_traits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif
#include <utility>
#include <vector>

namespace edgedepth {
namespace {

// Runs fn(begin, end) over [0, total) on up to `threads` threads (the calling thread is one). The
// range is cut into kBlocksPerThread blocks per thread, which the threads take in order as they
// come free: a thread that starts late or loses its core for a while (spawning one took 20-45 us
// on this project's VM, more under load) leaves its blocks to the others, where equal halves made
// every call wait for the slowest half. Threads are spawned per call (no global pool): an op costs
// milliseconds, a spawn microseconds, and the module keeps no hidden state.
//
// Never terminates the process: a thread the system refuses to create (std::system_error, e.g.
// under an address-space limit) leaves its blocks to the others, and an exception thrown by any
// block (std::bad_alloc of a row buffer) is carried out of its thread, stops the handing out of
// blocks, every started thread is joined, and the first one is rethrown here (pybind11 turns
// bad_alloc into MemoryError).
constexpr int64_t kBlocksPerThread = 8;

template <typename F>
void parallel_for(int64_t total, int threads, F fn) {
    const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, total));
    if (workers <= 1) {
        if (total > 0) fn(int64_t{0}, total);
        return;
    }
    const int64_t blocks = std::min(total, workers * kBlocksPerThread);
    const int64_t size = (total + blocks - 1) / blocks;
    std::atomic<int64_t> next{0};
    std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
    auto work = [&](size_t w) {
        try {
            for (int64_t b = next.fetch_add(1); b * size < total; b = next.fetch_add(1))
                fn(b * size, std::min(total, (b + 1) * size));
        } catch (...) {
            errors[w] = std::current_exception();
            next.store(total);  // hand out no more blocks
        }
    };
    std::vector<std::thread> pool;
    try {
        pool.reserve(static_cast<size_t>(workers - 1));
        for (int64_t w = 1; w < workers; ++w) pool.emplace_back(work, static_cast<size_t>(w));
    } catch (const std::exception&) {
        // No (more) threads or no memory to track them: those running take every block.
    }
    work(0);
    for (auto& t : pool) t.join();
    for (const auto& e : errors)
        if (e) std::rethrow_exception(e);
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

// The crop-semantics column taps of a whole (.., w) map resized to `width` columns.
AxisTable whole_map_columns(int w, int width) {
    const double box[4] = {0.0, 0.0, 1.0, static_cast<double>(w)};
    return AxisTable(box, 1, 1, width, w);
}

// The two low-resolution rows an upsampling's output row blends, each expanded once to the
// output's width (`floats` per row) and kept while the following output rows use it: expand(y,
// dst) fills a row; get(y) returns it, expanding it into the slot of the upper row held.
class ExpandedRows {
  public:
    explicit ExpandedRows(size_t floats) : buf_(2 * floats), rows_{buf_.data(), buf_.data() + floats} {}

    template <typename Expand>
    const float* get(int y, Expand expand) {
        for (int k = 0; k < 2; ++k)
            if (held_[k] == y) return rows_[k];
        const int k = held_[0] == -1 || (held_[1] != -1 && held_[0] < held_[1]) ? 0 : 1;
        expand(y, rows_[k]);
        held_[k] = y;
        return rows_[k];
    }

  private:
    std::vector<float> buf_;
    float* rows_[2];
    int held_[2] = {-1, -1};
};

// Output rows per chunk of an upsampling: chunks of at least 8 rows, as many per thread as
// parallel_for's blocks so that a late thread's share moves to the other (4K on 2 threads:
// 1.03-1.10x); each chunk expands its first low-resolution rows afresh (two of the ~29 a 4K chunk
// uses). Chunk c is rows [c * per, (c + 1) * per) of the `height`.
struct RowChunks {
    int64_t count, per;
};
RowChunks upsample_chunks(int threads, int height) {
    const int64_t count = std::max<int64_t>(1, std::min<int64_t>(threads * kBlocksPerThread, height / 8));
    return {count, (height + count - 1) / count};
}

// Hot inner loops, plain code the compiler vectorises where it can (the vertical blends). The
// horizontal passes gather; for upsampling, 8 consecutive outputs read at most 8 consecutive
// buffer entries, so on x86-64 with AVX2 one unaligned load + two lane permutes replace 16 scalar
// gathers (hblend_avx2 / hweighted_avx2). Their per-element arithmetic is the scalar one, op for op
// (no FMA), so results are bit-identical with or without AVX2. Buffers they read carry kPad
// readable floats past their end.
constexpr int kPad = 8;

// out[k] = a[k] + (b[k] - a[k]) * f
void vblend(const float* __restrict a, const float* __restrict b, float f, float* __restrict out, int n) {
    for (int k = 0; k < n; ++k) out[k] = a[k] + (b[k] - a[k]) * f;
}
void vblend_u8(const uint8_t* __restrict a, const uint8_t* __restrict b, float f, float* __restrict out,
                         int n) {
    for (int k = 0; k < n; ++k) {
        const float x = a[k], y = b[k];
        out[k] = x + (y - x) * f;
    }
}
void vblend(const uint16_t* a, const uint16_t* b, float f, float* out, int n) {
    for (int k = 0; k < n; ++k) {
        const float x = half_to_float(a[k]), y = half_to_float(b[k]);
        out[k] = x + (y - x) * f;
    }
}
// Writes a float row as binary16, round to nearest even.
void store_row(const float* src, uint16_t* out, int n) {
    for (int j = 0; j < n; ++j) out[j] = float_to_half(src[j]);
}

// out[j] = (buf[lo[j]] + (buf[hi[j]] - buf[lo[j]]) * f[j]) * scale + bias
void hblend(const float* __restrict buf, const int32_t* __restrict lo, const int32_t* __restrict hi,
                      const float* __restrict f, float scale, float bias, float* __restrict out, int n) {
    for (int j = 0; j < n; ++j) {
        const float a = buf[lo[j]], d = buf[hi[j]];
        out[j] = (a + (d - a) * f[j]) * scale + bias;
    }
}
void hblend(const float* __restrict buf, const int32_t* __restrict lo, const int32_t* __restrict hi,
                      const float* __restrict f, float* __restrict out, int n) {
    for (int j = 0; j < n; ++j) {
        const float a = buf[lo[j]], d = buf[hi[j]];
        out[j] = a + (d - a) * f[j];
    }
}

// acc[k] += w[k] * (row[lo[k]] + (row[hi[k]] - row[lo[k]]) * f[k]) when Add, else acc[k] = the same
// term (what accumulating into a zeroed acc gives, without the zero-fill pass).
template <bool Add>
void hweighted(const float* __restrict row, const int32_t* __restrict lo, const int32_t* __restrict hi,
               const float* __restrict f, const float* __restrict w, float* __restrict acc, int n) {
    for (int k = 0; k < n; ++k) {
        const float a = row[lo[k]], d = row[hi[k]];
        const float term = w[k] * (a + (d - a) * f[k]);
        if constexpr (Add) acc[k] += term; else acc[k] = term;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ED_HAVE_AVX2_PATH 1
// The widest instructions the CPU paths use: what the CPU has, capped by EDGEDEPTH_MAX_ISA in the
// environment ("scalar" or "avx2"; anything else, or nothing, is no cap). Every path computes the
// same bits, and the tests hold each one against the scalar code, which is what ARM boards run.
enum class Isa { Scalar, Avx2, Avx512 };

Isa isa_cap() {
    const char* cap = std::getenv("EDGEDEPTH_MAX_ISA");
    if (cap != nullptr && std::strcmp(cap, "scalar") == 0) return Isa::Scalar;
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0) return Isa::Avx2;
    return Isa::Avx512;
}

bool has_avx2() { return isa_cap() >= Isa::Avx2 && __builtin_cpu_supports("avx2"); }
bool has_f16c() { return has_avx2() && __builtin_cpu_supports("f16c"); }
bool has_avx512() {
    return isa_cap() >= Isa::Avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
}
// The AVX-512 RGB crop and joint upsampling also need byte permutes (BW, VBMI).
bool has_avx512_vbmi() {
    return has_avx512() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi");
}

// Lane indices of the group at k relative to its first low tap, or false when the group's taps
// span more than 8 entries (downscaling), in which case the caller does the group in scalar code.
__attribute__((target("avx2"))) inline bool group_lanes(const int32_t* lo, const int32_t* hi, int k, __m256i* l,
                                                        __m256i* h) {
    const int base = lo[k];
    if (hi[k + 7] - base > 7) return false;
    const __m256i b = _mm256_set1_epi32(base);
    *l = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo + k)), b);
    *h = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi + k)), b);
    return true;
}

__attribute__((target("avx2"))) void hblend_avx2(const float* buf, const int32_t* lo, const int32_t* hi,
                                                 const float* f, float* out, int n) {
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256i l, h;
        if (!group_lanes(lo, hi, k, &l, &h)) {
            hblend(buf, lo + k, hi + k, f + k, out + k, 8);
            continue;
        }
        const __m256 v = _mm256_loadu_ps(buf + lo[k]);
        const __m256 a = _mm256_permutevar8x32_ps(v, l), d = _mm256_permutevar8x32_ps(v, h);
        _mm256_storeu_ps(out + k, _mm256_add_ps(a, _mm256_mul_ps(_mm256_sub_ps(d, a), _mm256_loadu_ps(f + k))));
    }
    hblend(buf, lo + k, hi + k, f + k, out + k, n - k);
}

// vblend_u8 compiled for AVX2 (the compiler vectorises the same loop 8 wide, uint8 -> float by
// vpmovzxbd instead of SSE2's unpack chains).
__attribute__((target("avx2"))) void vblend_u8_avx2(const uint8_t* __restrict a, const uint8_t* __restrict b, float f,
                                                    float* __restrict out, int n) {
    for (int k = 0; k < n; ++k) {
        const float x = a[k], y = b[k];
        out[k] = x + (y - x) * f;
    }
}

// binary16 rows through F16C instead of the integer conversions (fp16 crops and tiles ran 1.5-1.8x
// slower than float32 without it). The hardware converts exactly and rounds to nearest even, as
// half_to_float / float_to_half do; only NaN payloads differ, so float -> half writes the software's
// 0x7e00 for every NaN, and half -> float gives NaN for NaN either way.
__attribute__((target("avx2,f16c"))) void vblend_f16c(const uint16_t* a, const uint16_t* b, float f, float* out,
                                                      int n) {
    const __m256 vf = _mm256_set1_ps(f);
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + k)));
        const __m256 y = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + k)));
        _mm256_storeu_ps(out + k, _mm256_add_ps(x, _mm256_mul_ps(_mm256_sub_ps(y, x), vf)));
    }
    vblend(a + k, b + k, f, out + k, n - k);
}

__attribute__((target("avx2,f16c"))) void store_row_f16c(const float* src, uint16_t* out, int n) {
    const __m128i sign = _mm_set1_epi16(static_cast<short>(0x8000)), qnan = _mm_set1_epi16(0x7e00);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 x = _mm256_loadu_ps(src + j);
        const __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m256i nan32 = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        const __m128i nan16 = _mm_packs_epi32(_mm256_castsi256_si128(nan32), _mm256_extracti128_si256(nan32, 1));
        const __m128i fixed = _mm_or_si128(_mm_and_si128(h, sign), qnan);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm_blendv_epi8(h, fixed, nan16));
    }
    for (; j < n; ++j) out[j] = float_to_half(src[j]);
}

// hblend with scale and bias (the RGB crop's normalisation) for downscaling, where 8 outputs read
// far more than 8 buffer entries (a 4K tile is shrunk ~2.4x, and RGB entries are 3 apart): two
// hardware gathers per 8 outputs instead of 16 scalar loads.
__attribute__((target("avx2"))) void hblend_affine_avx2(const float* buf, const int32_t* lo, const int32_t* hi,
                                                        const float* f, float scale, float bias, float* out,
                                                        int n) {
    const __m256 sc = _mm256_set1_ps(scale), bi = _mm256_set1_ps(bias);
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256 a = _mm256_i32gather_ps(buf, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo + k)), 4);
        const __m256 d = _mm256_i32gather_ps(buf, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi + k)), 4);
        const __m256 v = _mm256_add_ps(a, _mm256_mul_ps(_mm256_sub_ps(d, a), _mm256_loadu_ps(f + k)));
        _mm256_storeu_ps(out + k, _mm256_add_ps(_mm256_mul_ps(v, sc), bi));
    }
    hblend(buf, lo + k, hi + k, f + k, scale, bias, out + k, n - k);
}

template <bool Add>
__attribute__((target("avx2"))) void hweighted_avx2(const float* row, const int32_t* lo, const int32_t* hi,
                                                    const float* f, const float* w, float* acc, int n) {
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256i l, h;
        if (!group_lanes(lo, hi, k, &l, &h)) {
            hweighted<Add>(row, lo + k, hi + k, f + k, w + k, acc + k, 8);
            continue;
        }
        const __m256 v = _mm256_loadu_ps(row + lo[k]);
        const __m256 a = _mm256_permutevar8x32_ps(v, l), d = _mm256_permutevar8x32_ps(v, h);
        const __m256 val = _mm256_add_ps(a, _mm256_mul_ps(_mm256_sub_ps(d, a), _mm256_loadu_ps(f + k)));
        const __m256 term = _mm256_mul_ps(_mm256_loadu_ps(w + k), val);
        _mm256_storeu_ps(acc + k, Add ? _mm256_add_ps(_mm256_loadu_ps(acc + k), term) : term);
    }
    hweighted<Add>(row, lo + k, hi + k, f + k, w + k, acc + k, n - k);
}
#endif

#ifdef ED_HAVE_AVX2_PATH
// ---- the RGB crop on AVX-512 (VBMI for the byte shuffle): planar rows, gathers replaced by permutes.
// Shrinking a 4K box 2.4x, the AVX2 crop spends two thirds of its time in the hardware gathers of its
// horizontal pass. With the vertical pass writing the three channels as separate planes, 8
// consecutive outputs of a channel read at most 32 consecutive entries up to a 4.4x shrink, and one
// two-register permute (vpermt2ps) replaces each 8-lane gather. Same arithmetic, op for op, so the
// same bits as the AVX2 and scalar code.

#define ED_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi")))

// The 16 RGB pixels at p (48 bytes, read with a masked load: no byte past them) as three planes of
// 16 floats 0..255: rgb[0] red, rgb[1] green, rgb[2] blue. One vpermb gathers each channel's bytes.
ED_AVX512 inline void rgb_planes16(const uint8_t* p, __m512* rgb) {
    // bytes 0-15 the R of the 16 pixels (source bytes 0, 3, ..., 45), 16-31 their G, 32-47 their B
    alignas(64) static constexpr uint8_t kOrder[64] = {0,  3,  6,  9,  12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45,
                                                       1,  4,  7,  10, 13, 16, 19, 22, 25, 28, 31, 34, 37, 40, 43, 46,
                                                       2,  5,  8,  11, 14, 17, 20, 23, 26, 29, 32, 35, 38, 41, 44, 47};
    const __mmask64 bytes48 = (__mmask64{1} << 48) - 1;
    const __m512i planes = _mm512_permutexvar_epi8(_mm512_load_si512(kOrder), _mm512_maskz_loadu_epi8(bytes48, p));
    rgb[0] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_castsi512_si128(planes)));
    rgb[1] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(planes, 1)));
    rgb[2] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(planes, 2)));
}

// Rows a and b of interleaved RGB bytes (span pixels) blended vertically into three float planes
// out, out + stride, out + 2 * stride: out[c * stride + k] = x + (y - x) * f of channel c, pixel k.
ED_AVX512 void vblend_rgb_planar_avx512(const uint8_t* a, const uint8_t* b, float f, float* out, int64_t stride,
                                        int span) {
    const __m512 vf = _mm512_set1_ps(f);
    int k = 0;
    for (; k + 16 <= span; k += 16) {
        __m512 x[3], y[3];
        rgb_planes16(a + 3 * static_cast<int64_t>(k), x);
        rgb_planes16(b + 3 * static_cast<int64_t>(k), y);
        for (int c = 0; c < 3; ++c)
            _mm512_storeu_ps(out + c * stride + k, _mm512_add_ps(x[c], _mm512_mul_ps(_mm512_sub_ps(y[c], x[c]), vf)));
    }
    for (; k < span; ++k)
        for (int c = 0; c < 3; ++c) {
            const float x = a[3 * static_cast<int64_t>(k) + c], y = b[3 * static_cast<int64_t>(k) + c];
            out[c * stride + k] = x + (y - x) * f;
        }
}

// hblend_affine over one plane: groups whose 8 outputs read at most 32 entries take two loads and
// two permutes, at most 64 (a 4K box shrunk 4.7x to the refiner's tile) four loads, four permutes
// and two blends; others (a shrink beyond ~9x) the AVX2 gathers. buf carries 64 readable floats past
// the last entry the taps reach.
__attribute__((target("avx512f,avx512vl,avx2"))) void hblend_affine_avx512(const float* buf, const int32_t* lo,
                                                                          const int32_t* hi, const float* f,
                                                                          float scale, float bias, float* out,
                                                                          int n) {
    const __m256 sc = _mm256_set1_ps(scale), bi = _mm256_set1_ps(bias);
    const __m512i upper = _mm512_set1_epi32(32);
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        const int base = lo[k], reach = hi[k + 7] - base;
        if (reach > 63) {
            hblend_affine_avx2(buf, lo + k, hi + k, f + k, scale, bias, out + k, 8);
            continue;
        }
        const __m256i b = _mm256_set1_epi32(base);
        const __m512i l = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo + k)), b));
        const __m512i h = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi + k)), b));
        const __m512 t0 = _mm512_loadu_ps(buf + base), t1 = _mm512_loadu_ps(buf + base + 16);
        __m512 a = _mm512_permutex2var_ps(t0, l, t1), d = _mm512_permutex2var_ps(t0, h, t1);
        if (reach > 31) {  // indices 32-63 (bit 5) take entries 32-63: the next two registers
            const __m512 t2 = _mm512_loadu_ps(buf + base + 32), t3 = _mm512_loadu_ps(buf + base + 48);
            a = _mm512_mask_blend_ps(_mm512_cmpge_epi32_mask(l, upper), a, _mm512_permutex2var_ps(t2, l, t3));
            d = _mm512_mask_blend_ps(_mm512_cmpge_epi32_mask(h, upper), d, _mm512_permutex2var_ps(t2, h, t3));
        }
        const __m256 a8 = _mm512_castps512_ps256(a), d8 = _mm512_castps512_ps256(d);
        const __m256 v = _mm256_add_ps(a8, _mm256_mul_ps(_mm256_sub_ps(d8, a8), _mm256_loadu_ps(f + k)));
        _mm256_storeu_ps(out + k, _mm256_add_ps(_mm256_mul_ps(v, sc), bi));
    }
    hblend(buf, lo + k, hi + k, f + k, scale, bias, out + k, n - k);
}
#endif

using HBlendFn = void (*)(const float*, const int32_t*, const int32_t*, const float*, float*, int);
using HBlendAffineFn = void (*)(const float*, const int32_t*, const int32_t*, const float*, float, float, float*, int);
using HAccumulateFn = void (*)(const float*, const int32_t*, const int32_t*, const float*, const float*, float*, int);

// The horizontal kernels this CPU runs best, chosen once per call.
HBlendFn pick_hblend() {
#ifdef ED_HAVE_AVX2_PATH
    if (has_avx2()) return hblend_avx2;
#endif
    return static_cast<HBlendFn>(hblend);
}
using VBlendU8Fn = void (*)(const uint8_t*, const uint8_t*, float, float*, int);

VBlendU8Fn pick_vblend_u8() {
#ifdef ED_HAVE_AVX2_PATH
    if (has_avx2()) return vblend_u8_avx2;
#endif
    return vblend_u8;
}

HBlendAffineFn pick_hblend_affine() {
#ifdef ED_HAVE_AVX2_PATH
    if (has_avx2()) return hblend_affine_avx2;
#endif
    return static_cast<HBlendAffineFn>(hblend);
}

// The vertical blend of a source type: float32 rows as the compiler vectorises them, binary16 rows
// through F16C where the CPU has it.
template <typename In>
using VBlendFn = void (*)(const In*, const In*, float, float*, int);

template <typename In>
VBlendFn<In> pick_vblend() {
#ifdef ED_HAVE_AVX2_PATH
    if constexpr (std::is_same<In, uint16_t>::value)
        if (has_f16c()) return vblend_f16c;
#endif
    return static_cast<VBlendFn<In>>(vblend);
}

using StoreRowFn = void (*)(const float*, uint16_t*, int);

StoreRowFn pick_store_row() {
#ifdef ED_HAVE_AVX2_PATH
    if (has_f16c()) return store_row_f16c;
#endif
    return store_row;
}

// Add: accumulate into acc (haccumulate); else overwrite it (hstore).
template <bool Add>
HAccumulateFn pick_hweighted() {
#ifdef ED_HAVE_AVX2_PATH
    if (has_avx2()) return hweighted_avx2<Add>;
#endif
    return hweighted<Add>;
}

inline float as_float(float v) { return v; }
inline float as_float(uint16_t v) { return half_to_float(v); }

// One row band's share of a grid stitch's merged tile row: the blend t0 + (t1 - t0) * f of two
// tile rows, times the row band's weight a, stored into m (first) or added to it. a == 1 skips
// the product (the same bits). next: a tile row wanted soon, which the vector code prefetches.
template <typename In>
void vmerge(const In* __restrict t0, const In* __restrict t1, float f, float a, bool first, float* __restrict m,
            int n, const In* /*next*/) {
    for (int k = 0; k < n; ++k) {
        const float x = as_float(t0[k]), y = as_float(t1[k]);
        const float v = x + (y - x) * f;
        m[k] = first ? (a == 1.0f ? v : v * a) : m[k] + a * v;
    }
}

#ifdef ED_HAVE_AVX2_PATH
__attribute__((target("avx2,f16c"))) inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,f16c"))) inline __m256 load8(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// vmerge 8 wide (the compiler vectorises the scalar loop with SSE2 only), same ops, same bits.
template <typename In>
__attribute__((target("avx2,f16c"))) void vmerge_avx2(const In* t0, const In* t1, float f, float a, bool first,
                                                      float* m, int n, const In* next) {
    const __m256 vf = _mm256_set1_ps(f), va = _mm256_set1_ps(a);
    const bool scale = a != 1.0f;
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        if ((k * sizeof(In)) % 64 == 0) _mm_prefetch(reinterpret_cast<const char*>(next + k), _MM_HINT_T0);  // a line
        const __m256 x = load8(t0 + k), y = load8(t1 + k);
        const __m256 v = _mm256_add_ps(x, _mm256_mul_ps(_mm256_sub_ps(y, x), vf));
        const __m256 r = first ? (scale ? _mm256_mul_ps(v, va) : v)
                               : _mm256_add_ps(_mm256_loadu_ps(m + k), _mm256_mul_ps(va, v));
        _mm256_storeu_ps(m + k, r);
    }
    vmerge(t0 + k, t1 + k, f, a, first, m + k, n - k, next + k);
}
#endif

template <typename In>
using VMergeFn = void (*)(const In*, const In*, float, float, bool, float*, int, const In*);

template <typename In>
VMergeFn<In> pick_vmerge() {
#ifdef ED_HAVE_AVX2_PATH
    if (std::is_same<In, float>::value ? has_avx2() : has_f16c())
        return vmerge_avx2<In>;
#endif
    return vmerge<In>;
}

// Groups of W consecutive columns of a band (counted from its first column) whose taps span at most
// 2W entries, for the vector code: each keeps its first tap (base; -1: the group spans more, a band
// shrunk, and takes narrower code) and its lanes relative to it. Lanes reaching past W entries
// (wide) need a second register; any_wide says whether any group does, so that bands without such
// groups (every enlarged one) skip that test.
template <int W>
struct LaneGroups {
    std::vector<int32_t> base;
    std::vector<uint8_t> wide;
    std::vector<std::array<uint8_t, W>> lanes_lo, lanes_hi;
    bool any_wide = false;

    void build(const std::vector<int32_t>& lo, const std::vector<int32_t>& hi, int count) {
        const int groups = count / W;
        base.assign(static_cast<size_t>(groups), -1);
        wide.assign(base.size(), 0);
        lanes_lo.assign(base.size(), {});
        lanes_hi.assign(base.size(), {});
        for (int g = 0; g < groups; ++g) {
            const int k = W * g, b = lo[k], reach = hi[k + W - 1] - b;
            if (reach >= 2 * W) continue;
            base[g] = b;
            wide[g] = reach >= W;
            any_wide = any_wide || wide[g];
            for (int j = 0; j < W; ++j) {
                lanes_lo[g][j] = static_cast<uint8_t>(lo[k + j] - b);
                lanes_hi[g][j] = static_cast<uint8_t>(hi[k + j] - b);
            }
        }
    }
};

// One column band of a grid stitch: for the band's frame columns first..first+count-1, the taps
// into its tiles' rows and the column window normalised by the column weight sum, and their lane
// groups of 8 (AVX2) and 16 (AVX-512), built once per call instead of once per row. Two-register
// groups of 16 are 3-7 % slower where one would do, hence the one-register path where it does.
struct StitchBand {
    int first = 0, count = 0;
    std::vector<int32_t> lo, hi;
    std::vector<float> frac, weight;
    LaneGroups<8> g8;
    LaneGroups<16> g16;
};

// out[k] (+)= weight[k] * (row[lo[k]] + (row[hi[k]] - row[lo[k]]) * frac[k]) over the band's columns
// [k0, k1); out points at the band's first column.
template <bool Add>
void hband(const float* row, const StitchBand& band, int k0, int k1, float* out) {
    hweighted<Add>(row, band.lo.data() + k0, band.hi.data() + k0, band.frac.data() + k0, band.weight.data() + k0,
                   out + k0, k1 - k0);
}

#ifdef ED_HAVE_AVX2_PATH
// hband with the band's groups: the same arithmetic, op for op, so the same bits.
template <bool Add, bool Wide>
__attribute__((target("avx2"))) void hband_avx2_groups(const float* row, const StitchBand& band, int k0, int k1,
                                                       float* out) {
    int k = std::min(k1, (k0 + 7) / 8 * 8);
    hband<Add>(row, band, k0, k, out);
    for (; k + 8 <= k1; k += 8) {
        const int32_t b = band.g8.base[k / 8];
        if (b < 0) {
            hband<Add>(row, band, k, k + 8, out);
            continue;
        }
        const __m256i l = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(band.g8.lanes_lo[k / 8].data())));
        const __m256i h = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(band.g8.lanes_hi[k / 8].data())));
        const __m256 v = _mm256_loadu_ps(row + b);
        __m256 a = _mm256_permutevar8x32_ps(v, l), d = _mm256_permutevar8x32_ps(v, h);
        if (Wide && band.g8.wide[k / 8]) {  // lanes 8-15 from the next register (permutevar reads the low 3 bits)
            const __m256 v1 = _mm256_loadu_ps(row + b + 8);
            const __m256i seven = _mm256_set1_epi32(7);
            a = _mm256_blendv_ps(a, _mm256_permutevar8x32_ps(v1, l), _mm256_castsi256_ps(_mm256_cmpgt_epi32(l, seven)));
            d = _mm256_blendv_ps(d, _mm256_permutevar8x32_ps(v1, h), _mm256_castsi256_ps(_mm256_cmpgt_epi32(h, seven)));
        }
        const __m256 val = _mm256_add_ps(a, _mm256_mul_ps(_mm256_sub_ps(d, a), _mm256_loadu_ps(band.frac.data() + k)));
        const __m256 term = _mm256_mul_ps(_mm256_loadu_ps(band.weight.data() + k), val);
        _mm256_storeu_ps(out + k, Add ? _mm256_add_ps(_mm256_loadu_ps(out + k), term) : term);
    }
    hband<Add>(row, band, k, k1, out);
}

template <bool Add>
__attribute__((target("avx2"))) void hband_avx2(const float* row, const StitchBand& band, int k0, int k1,
                                                float* out) {
    if (band.g8.any_wide)
        hband_avx2_groups<Add, true>(row, band, k0, k1, out);
    else
        hband_avx2_groups<Add, false>(row, band, k0, k1, out);
}

// hband_avx2 with groups of 16 columns in 512-bit registers; row carries 32 readable floats past
// its last tap.
template <bool Add, bool Wide>
__attribute__((target("avx512f,avx512vl,avx2"))) void hband_avx512_groups(const float* row, const StitchBand& band,
                                                                         int k0, int k1, float* out) {
    int k = std::min(k1, (k0 + 15) / 16 * 16);
    hband_avx2<Add>(row, band, k0, k, out);
    for (; k + 16 <= k1; k += 16) {
        const int32_t b = band.g16.base[k / 16];
        if (b < 0) {
            hband_avx2<Add>(row, band, k, k + 16, out);
            continue;
        }
        const __m512i l = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(band.g16.lanes_lo[k / 16].data())));
        const __m512i h = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(band.g16.lanes_hi[k / 16].data())));
        const __m512 t0 = _mm512_loadu_ps(row + b);
        __m512 a, d;
        if (Wide && band.g16.wide[k / 16]) {
            const __m512 t1 = _mm512_loadu_ps(row + b + 16);
            a = _mm512_permutex2var_ps(t0, l, t1);
            d = _mm512_permutex2var_ps(t0, h, t1);
        } else {
            a = _mm512_permutexvar_ps(l, t0);
            d = _mm512_permutexvar_ps(h, t0);
        }
        const __m512 val = _mm512_add_ps(a, _mm512_mul_ps(_mm512_sub_ps(d, a), _mm512_loadu_ps(band.frac.data() + k)));
        const __m512 term = _mm512_mul_ps(_mm512_loadu_ps(band.weight.data() + k), val);
        _mm512_storeu_ps(out + k, Add ? _mm512_add_ps(_mm512_loadu_ps(out + k), term) : term);
    }
    hband_avx2<Add>(row, band, k, k1, out);
}

template <bool Add>
__attribute__((target("avx512f,avx512vl,avx2"))) void hband_avx512(const float* row, const StitchBand& band, int k0,
                                                                  int k1, float* out) {
    if (band.g16.any_wide)
        hband_avx512_groups<Add, true>(row, band, k0, k1, out);
    else
        hband_avx512_groups<Add, false>(row, band, k0, k1, out);
}
#endif

template <bool Add>
using HBandFn = void (*)(const float*, const StitchBand&, int, int, float*);

template <bool Add>
HBandFn<Add> pick_hband() {
#ifdef ED_HAVE_AVX2_PATH
    if (has_avx512()) return hband_avx512<Add>;
    if (has_avx2()) return hband_avx2<Add>;
#endif
    return hband<Add>;
}

}  // namespace

// Both crops are separable: per output row, the two source rows are blended vertically over the
// box's column span into a row buffer (contiguous, vectorisable), then each output sample blends
// two buffer entries horizontally. That halves the gathers of a direct 4-tap bilinear.
template <typename Out>
void crop_rgb_cpu(const uint8_t* src, int src_h, int src_w, const double* boxes, int n, int out_h,
                  int out_w, const float* scale, const float* bias, Out* out, int threads) {
    const AxisTable ys(boxes, n, 0, out_h, src_h), xs(boxes, n, 1, out_w, src_w);
    const int64_t plane = static_cast<int64_t>(out_h) * out_w;
    const VBlendU8Fn vblend_rows = pick_vblend_u8();
    [[maybe_unused]] const StoreRowFn store_half = pick_store_row();
#ifdef ED_HAVE_AVX2_PATH
    const bool planar = has_avx512_vbmi();
    const HBlendAffineFn hblend_row = planar ? hblend_affine_avx512 : pick_hblend_affine();
#else
    const bool planar = false;
    const HBlendAffineFn hblend_row = pick_hblend_affine();
#endif
    // Planar rows: three planes of src_w floats and 64 readable ones past each (the permutes' loads).
    // Row-buffer indices of the taps: pixel k of the span is entry k of each plane (planar) or
    // entries 3k..3k+2 (interleaved).
    const int64_t stride = static_cast<int64_t>(src_w) + 64;
    const int step = planar ? 1 : 3;
    parallel_for(static_cast<int64_t>(n) * out_h, threads, [&](int64_t begin, int64_t end) {
        std::vector<float> row(static_cast<size_t>(planar ? 3 * stride : static_cast<int64_t>(src_w) * 3));
        std::vector<int32_t> lo3(static_cast<size_t>(out_w)), hi3(static_cast<size_t>(out_w));
        std::vector<float> orow(static_cast<size_t>(out_w));
        int cached_box = -1;
        for (int64_t r = begin; r < end; ++r) {
            const int b = static_cast<int>(r / out_h), i = static_cast<int>(r % out_h);
            const int32_t* xlo = xs.lo.data() + static_cast<size_t>(b) * out_w;
            const int32_t* xhi = xs.hi.data() + static_cast<size_t>(b) * out_w;
            const float* fx = xs.frac.data() + static_cast<size_t>(b) * out_w;
            const int first = xlo[0], span = xhi[out_w - 1] - first + 1;  // taps grow with j
            if (b != cached_box) {
                for (int j = 0; j < out_w; ++j) {
                    lo3[j] = (xlo[j] - first) * step;
                    hi3[j] = (xhi[j] - first) * step;
                }
                cached_box = b;
            }
            const size_t yk = static_cast<size_t>(r);
            const uint8_t* s0 = src + (static_cast<int64_t>(ys.lo[yk]) * src_w + first) * 3;
            const uint8_t* s1 = src + (static_cast<int64_t>(ys.hi[yk]) * src_w + first) * 3;
            const float fy = ys.frac[yk];
#ifdef ED_HAVE_AVX2_PATH
            if (planar) vblend_rgb_planar_avx512(s0, s1, fy, row.data(), stride, span);
#endif
            if (!planar) vblend_rows(s0, s1, fy, row.data(), span * 3);
            for (int ch = 0; ch < 3; ++ch) {
                Out* o = out + (static_cast<int64_t>(b) * 3 + ch) * plane + static_cast<int64_t>(i) * out_w;
                const float* buf = planar ? row.data() + ch * stride : row.data() + ch;
                float* dst = std::is_same<Out, float>::value ? reinterpret_cast<float*>(o) : orow.data();
                hblend_row(buf, lo3.data(), hi3.data(), fx, scale[ch], bias[ch], dst, out_w);
                if constexpr (!std::is_same<Out, float>::value) store_half(orow.data(), o, out_w);
            }
        }
    });
}

template <typename In, typename Out>
void crop_map_cpu(const In* src, int c, int src_h, int src_w, const double* boxes, int n,
                  int out_h, int out_w, Out* out, int threads) {
    const AxisTable ys(boxes, n, 0, out_h, src_h), xs(boxes, n, 1, out_w, src_w);
    const int64_t rows = static_cast<int64_t>(n) * c * out_h;
    const HBlendFn hblend_row = pick_hblend();
    const VBlendFn<In> vblend_rows = pick_vblend<In>();
    [[maybe_unused]] const StoreRowFn store_half = pick_store_row();
    parallel_for(rows, threads, [&](int64_t begin, int64_t end) {
        std::vector<float> row(static_cast<size_t>(src_w) + kPad), orow(static_cast<size_t>(out_w));
        std::vector<int32_t> lo(static_cast<size_t>(out_w)), hi(static_cast<size_t>(out_w));
        int cached_box = -1;
        for (int64_t r = begin; r < end; ++r) {
            const int i = static_cast<int>(r % out_h);
            const int64_t bc = r / out_h;
            const int ch = static_cast<int>(bc % c), b = static_cast<int>(bc / c);
            const int32_t* xlo = xs.lo.data() + static_cast<size_t>(b) * out_w;
            const int32_t* xhi = xs.hi.data() + static_cast<size_t>(b) * out_w;
            const int first = xlo[0], span = xhi[out_w - 1] - first + 1;  // taps grow with j
            if (b != cached_box) {  // row-buffer indices: buffer entry k is source column first + k
                for (int j = 0; j < out_w; ++j) {
                    lo[j] = xlo[j] - first;
                    hi[j] = xhi[j] - first;
                }
                cached_box = b;
            }
            const size_t yk = static_cast<size_t>(b) * out_h + i;
            const In* plane = src + static_cast<int64_t>(ch) * src_h * src_w + first;
            vblend_rows(plane + static_cast<int64_t>(ys.lo[yk]) * src_w, plane + static_cast<int64_t>(ys.hi[yk]) * src_w,
                        ys.frac[yk], row.data(), span);
            const float* fx = xs.frac.data() + static_cast<size_t>(b) * out_w;
            if constexpr (std::is_same<Out, float>::value) {
                hblend_row(row.data(), lo.data(), hi.data(), fx, out + r * out_w, out_w);
            } else {
                hblend_row(row.data(), lo.data(), hi.data(), fx, orow.data(), out_w);
                store_half(orow.data(), out + r * out_w, out_w);
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

namespace {

// The finishing pass over n values. Branch-free on restrict-qualified pointers so it vectorises (a
// uint8_t store may alias anything, so through other pointers every store would force reloads);
// |x| <= FLT_MAX is isfinite in a form that does.
void finish_span(float* __restrict d, uint8_t* __restrict v, int64_t n, float scale, float valid_max) {
    for (int64_t i = 0; i < n; ++i) d[i] = finish_value(d[i], scale, valid_max, v + i);
}

#ifdef ED_HAVE_AVX2_PATH
// finish_span, 32 values per step, from src (which may be d) into d: the compiler's SSE2 version of
// the loop above packs the mask bytes one lane at a time and runs at about 1 ns per value, as slow
// as the stitch itself. Same comparisons and product as the scalar code, so the same bits.
// Stream: d and v take non-temporal stores (finish_stream).
template <bool Stream>
__attribute__((target("avx2"))) void finish_avx2(const float* src, float* d, uint8_t* v, int64_t n, float scale,
                                                 float valid_max) {
    const __m256 sc = _mm256_set1_ps(scale), vmax = _mm256_set1_ps(valid_max);
    const __m256 fmax = _mm256_set1_ps(std::numeric_limits<float>::max()), zero = _mm256_setzero_ps();
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), one = _mm256_set1_epi8(1);
    int64_t i = 0;
    if (Stream) {  // streaming stores of whole vectors need d 32-byte aligned
        for (; i < n && (reinterpret_cast<uintptr_t>(d + i) & 31) != 0; ++i) {
            d[i] = src[i];
            finish_span(d + i, v + i, 1, scale, valid_max);
        }
    }
    for (; i + 32 <= n; i += 32) {
        __m256i m[4];
        for (int k = 0; k < 4; ++k) {
            const __m256 x = _mm256_loadu_ps(src + i + 8 * k);
            const __m256 s = _mm256_mul_ps(x, sc);
            const __m256 good = _mm256_and_ps(_mm256_cmp_ps(_mm256_and_ps(s, abs_mask), fmax, _CMP_LE_OQ),
                                              _mm256_cmp_ps(s, zero, _CMP_GT_OQ));
            const __m256 x_ok = _mm256_and_ps(_mm256_cmp_ps(_mm256_and_ps(x, abs_mask), fmax, _CMP_LE_OQ),
                                              _mm256_cmp_ps(x, vmax, _CMP_LE_OQ));
            if (Stream)
                _mm256_stream_ps(d + i + 8 * k, _mm256_and_ps(s, good));
            else
                _mm256_storeu_ps(d + i + 8 * k, _mm256_and_ps(s, good));
            m[k] = _mm256_castps_si256(_mm256_and_ps(good, x_ok));  // all-ones / zero per value
        }
        // 4 x 8 int32 masks -> 32 bytes: the packs interleave 128-bit lanes, the permute restores order.
        const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(m[0], m[1]), _mm256_packs_epi32(m[2], m[3]));
        const __m256i flags = _mm256_and_si256(_mm256_permutevar8x32_epi32(bytes, order), one);
        if (Stream) {  // movnti needs no alignment
            auto* q = reinterpret_cast<long long*>(v + i);
            _mm_stream_si64(q, _mm256_extract_epi64(flags, 0));
            _mm_stream_si64(q + 1, _mm256_extract_epi64(flags, 1));
            _mm_stream_si64(q + 2, _mm256_extract_epi64(flags, 2));
            _mm_stream_si64(q + 3, _mm256_extract_epi64(flags, 3));
        } else {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(v + i), flags);
        }
    }
    if (src != d) std::memcpy(d + i, src + i, sizeof(float) * static_cast<size_t>(n - i));
    finish_span(d + i, v + i, n - i, scale, valid_max);
}

__attribute__((target("avx2"))) void finish_span_avx2(float* d, uint8_t* v, int64_t n, float scale, float valid_max) {
    finish_avx2<false>(d, d, v, n, scale, valid_max);
}

__attribute__((target("avx2"))) void finish_stream_avx2(const float* src, float* d, uint8_t* v, int64_t n,
                                                        float scale, float valid_max) {
    finish_avx2<true>(src, d, v, n, scale, valid_max);
}

// A row copied with non-temporal stores.
__attribute__((target("avx2"))) void copy_stream_avx2(const float* src, float* d, int64_t n) {
    int64_t i = 0;
    for (; i < n && (reinterpret_cast<uintptr_t>(d + i) & 31) != 0; ++i) d[i] = src[i];
    for (; i + 8 <= n; i += 8) _mm256_stream_ps(d + i, _mm256_loadu_ps(src + i));
    for (; i < n; ++i) d[i] = src[i];
}
#endif

using FinishFn = void (*)(float*, uint8_t*, int64_t, float, float);

FinishFn pick_finish() {
#ifdef ED_HAVE_AVX2_PATH
    if (has_avx2()) return finish_span_avx2;
#endif
    return finish_span;
}

// Writes frame rows built in a row buffer. A 4K frame's depth and validity (41 MB) are far larger
// than the caches and the stitch does not read them back, so with AVX2 they take non-temporal
// stores: plain stores first read every output line into the cache (read for ownership). That made
// the 4K stitch 1.2x faster on one thread (1.15x on two); the joint upsampling, bound by its colour
// arithmetic rather than by memory, ran slower with them and keeps plain stores.
// Threads call fence() before their work counts as done.
constexpr int64_t kStreamBytes = int64_t{16} << 20;

struct RowWriter {
    const Finish* finish;  // nullptr: the row is written as it is
    FinishFn finish_in_place;
    bool stream;

    // bytes: the whole output's size; below kStreamBytes it may stay in the last-level cache for
    // whoever reads it next, and plain stores are faster (a 1080p stitch ran 1.15x slower streamed).
    RowWriter(const Finish* f, int64_t bytes) : finish(f), finish_in_place(pick_finish()) {
#ifdef ED_HAVE_AVX2_PATH
        stream = bytes >= kStreamBytes && has_avx2();
#else
        stream = false;
        (void)bytes;
#endif
    }

    // Where to build the row that will land at out + at: the row buffer when streaming, else the
    // frame row itself.
    float* target(float* buf, float* out, int64_t at) const { return stream ? buf : out + at; }

    // Lands the `width` values built at target(buf, out, at), finished when finishing.
    void commit(const float* buf, float* out, int64_t at, int64_t width) const {
#ifdef ED_HAVE_AVX2_PATH
        if (stream) {
            if (finish)
                finish_stream_avx2(buf, out + at, finish->valid + at, width, finish->scale, finish->valid_max);
            else
                copy_stream_avx2(buf, out + at, width);
            return;
        }
#endif
        (void)buf;
        if (finish) finish_in_place(out + at, finish->valid + at, width, finish->scale, finish->valid_max);
    }

    // Non-temporal stores are weakly ordered: fence them before the thread's work counts as done.
    void fence() const {
#ifdef ED_HAVE_AVX2_PATH
        if (stream) _mm_sfence();
#endif
    }
};

// ---- joint bilateral upsampling

// One low-resolution row expanded to the output width: for every output column, the depth and the
// guide's three channels at its left and right tap, as eight planes of `width` floats
// (d_lo, d_hi, r_lo, r_hi, g_lo, g_hi, b_lo, b_hi). The row loop then reads only contiguous
// memory; each low-resolution row is expanded once for the 2-3 output rows that use it.
// expand_joint_cols fills output columns [x0, x1) of the planes from the row's sources src[4].
void expand_joint_cols(const float* const* src, const int32_t* xlo, const int32_t* xhi, int width, int x0, int x1,
                       float* dst) {
    for (int c = 0; c < 4; ++c) {
        float* lo = dst + static_cast<int64_t>(2 * c) * width;
        float* hi = lo + width;
        for (int x = x0; x < x1; ++x) {
            lo[x] = src[c][xlo[x]];
            hi[x] = src[c][xhi[x]];
        }
    }
}

void expand_joint_row(const float* depth, const float* guide, int64_t plane, int w, int y, const int32_t* xlo,
                      const int32_t* xhi, int width, float* dst) {
    const int64_t row = static_cast<int64_t>(y) * w;
    const float* src[4] = {depth + row, guide + row, guide + plane + row, guide + 2 * plane + row};
    expand_joint_cols(src, xlo, xhi, width, 0, width, dst);
}

#ifdef ED_HAVE_AVX2_PATH
// expand_joint_row for upsampling: 8 consecutive output columns read at most 8 consecutive source
// entries, so one unaligned load and two lane permutes per channel replace 16 scalar loads. Groups
// that would read past the row's end (or span more, when downsampling) take the scalar path.
__attribute__((target("avx2"))) void expand_joint_row_avx2(const float* depth, const float* guide, int64_t plane,
                                                           int w, int y, const int32_t* xlo, const int32_t* xhi,
                                                           int width, float* dst) {
    const int64_t row = static_cast<int64_t>(y) * w;
    const float* src[4] = {depth + row, guide + row, guide + plane + row, guide + 2 * plane + row};
    int x = 0;
    for (; x + 8 <= width; x += 8) {
        __m256i l, h;
        if (xlo[x] + 8 > w || !group_lanes(xlo, xhi, x, &l, &h)) {
            expand_joint_cols(src, xlo, xhi, width, x, x + 8, dst);
            continue;
        }
        for (int c = 0; c < 4; ++c) {
            const __m256 v = _mm256_loadu_ps(src[c] + xlo[x]);
            _mm256_storeu_ps(dst + static_cast<int64_t>(2 * c) * width + x, _mm256_permutevar8x32_ps(v, l));
            _mm256_storeu_ps(dst + static_cast<int64_t>(2 * c + 1) * width + x, _mm256_permutevar8x32_ps(v, h));
        }
    }
    expand_joint_cols(src, xlo, xhi, width, x, width, dst);
}
#endif

using ExpandFn = void (*)(const float*, const float*, int64_t, int, int, const int32_t*, const int32_t*, int, float*);

ExpandFn pick_expand() {
#ifdef ED_HAVE_AVX2_PATH
    if (has_avx2()) return expand_joint_row_avx2;
#endif
    return expand_joint_row;
}

// One output row from the expanded rows above (a) and below (b) it, with the bilinear weight fy of b:
// joint_blend (tile_math.hpp, the CUDA kernel's code too) per pixel. Columns [x0, width).
inline void joint_row_impl_from(const float* __restrict a, const float* __restrict b, const uint8_t* __restrict img,
                                const float* __restrict fx, float fy, float inv2s2, int width, int x0,
                                float* __restrict out) {
    const int64_t W = width;
    for (int x = x0; x < width; ++x) {
        const JointTaps t{{a[x], a[W + x], b[x], b[W + x]},
                          {a[2 * W + x], a[3 * W + x], b[2 * W + x], b[3 * W + x]},
                          {a[4 * W + x], a[5 * W + x], b[4 * W + x], b[5 * W + x]},
                          {a[6 * W + x], a[7 * W + x], b[6 * W + x], b[7 * W + x]}};
        out[x] = joint_blend(t, img + 3 * static_cast<int64_t>(x), fx[x], fy, inv2s2);
    }
}

int joint_row(const float* a, const float* b, const uint8_t* img, const float* fx, float fy, float inv2s2,
              int width, float* out, const Finish*, uint8_t*) {
    joint_row_impl_from(a, b, img, fx, fy, inv2s2, width, 0, out);
    return 0;
}

// A joint row function computes one output row into out; given a Finish (else nullptr) and the
// row's validity bytes it may finish what it writes, and returns how many leading columns it
// finished (the caller finishes the rest).
using JointRowFn = int (*)(const float*, const float*, const uint8_t*, const float*, float, float, int, float*,
                           const Finish*, uint8_t*);

#ifdef ED_HAVE_AVX2_PATH
// range_weight on 8 lanes. max(u, 0) with u first returns 0 for a NaN u, which then takes the floor,
// as the scalar code does.
__attribute__((target("avx2,fma"))) inline __m256 range_weight8(__m256 t) {
    __m256 u = _mm256_max_ps(_mm256_fnmadd_ps(t, _mm256_set1_ps(0.0625f), _mm256_set1_ps(1.0f)), _mm256_setzero_ps());
    u = _mm256_mul_ps(u, u);
    u = _mm256_mul_ps(u, u);
    u = _mm256_mul_ps(u, u);
    u = _mm256_mul_ps(u, u);
    return _mm256_max_ps(u, _mm256_set1_ps(kJointFloor));
}

// Squared colour distance of 8 pixels to 8 taps, summed in the scalar code's order.
__attribute__((target("avx2,fma"))) inline __m256 colour_d2(__m256 r, __m256 g, __m256 b, const float* pr,
                                                        const float* pg, const float* pb) {
    const __m256 dr = _mm256_sub_ps(r, _mm256_loadu_ps(pr));
    const __m256 dg = _mm256_sub_ps(g, _mm256_loadu_ps(pg));
    const __m256 db = _mm256_sub_ps(b, _mm256_loadu_ps(pb));
    return _mm256_fmadd_ps(dr, dr, _mm256_fmadd_ps(dg, dg, _mm256_mul_ps(db, db)));
}

__attribute__((target("avx2,fma"))) inline __m256 weighted4_8(__m256 w0, __m256 w1, __m256 w2, __m256 w3, __m256 v0,
                                                             __m256 v1, __m256 v2, __m256 v3) {
    return _mm256_fmadd_ps(w3, v3, _mm256_fmadd_ps(w2, v2, _mm256_fmadd_ps(w1, v1, _mm256_mul_ps(w0, v0))));
}

// joint_row_impl with intrinsics, 8 pixels per step, op for op the scalar arithmetic (its fused
// multiply-adds where the scalar code calls std::fma), so the same bits. The compiler's own
// vectorisation of that loop unrolls it 32 pixels wide to de-interleave the RGB bytes and spills;
// here each 128-bit lane takes 4 pixels (12 bytes) and one byte shuffle per channel widens them to
// 32-bit integers. The two 16-byte loads reach 4 bytes past the 8 pixels, so
// the last pixels of the row (and rows narrower than 10) take the scalar loop.
// Columns [x0, width).
__attribute__((target("avx2,fma"))) void joint_row_avx2_from(const float* a, const float* b, const uint8_t* img,
                                                         const float* fx, float fy, float inv2s2, int width, int x0,
                                                         float* out) {
    const int64_t W = width;
    const __m256i sel_r = _mm256_setr_epi8(0, -1, -1, -1, 3, -1, -1, -1, 6, -1, -1, -1, 9, -1, -1, -1,
                                           0, -1, -1, -1, 3, -1, -1, -1, 6, -1, -1, -1, 9, -1, -1, -1);
    const __m256i sel_g = _mm256_add_epi32(sel_r, _mm256_set1_epi32(1));  // -1 bytes stay >= 0x80: zeroed
    const __m256i sel_b = _mm256_add_epi32(sel_r, _mm256_set1_epi32(2));
    const __m256 k255 = _mm256_set1_ps(1.0f / 255.0f), one = _mm256_set1_ps(1.0f), s2 = _mm256_set1_ps(inv2s2);
    const __m256 vfy = _mm256_set1_ps(fy), vgy = _mm256_set1_ps(1.0f - fy), vflat = _mm256_set1_ps(kJointFlat);
    int x = x0;
    for (; x + 10 <= width; x += 8) {
        const __m256 ux = _mm256_loadu_ps(fx + x), gx = _mm256_sub_ps(one, ux);
        const __m256 a0 = _mm256_loadu_ps(a + x), a1 = _mm256_loadu_ps(a + W + x);
        const __m256 b0 = _mm256_loadu_ps(b + x), b1 = _mm256_loadu_ps(b + W + x);
        // The scalar loop's bilinear blend, same order. Where a tap is NaN the flat test may differ
        // from std::min's, but either path then gives NaN.
        const __m256 bil = weighted4_8(_mm256_mul_ps(vgy, gx), _mm256_mul_ps(vgy, ux), _mm256_mul_ps(vfy, gx),
                                       _mm256_mul_ps(vfy, ux), a0, a1, b0, b1);
        const __m256 lo = _mm256_min_ps(_mm256_min_ps(a0, a1), _mm256_min_ps(b0, b1));
        const __m256 hi = _mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(b0, b1));
        const __m256 flat = _mm256_cmp_ps(_mm256_sub_ps(hi, lo), _mm256_mul_ps(lo, vflat), _CMP_LE_OQ);
        if (_mm256_movemask_ps(flat) == 0xFF) {
            _mm256_storeu_ps(out + x, bil);
            continue;
        }
        const uint8_t* p = img + 3 * static_cast<int64_t>(x);
        _mm_prefetch(reinterpret_cast<const char*>(p + 3 * W), _MM_HINT_T0);  // as joint_row_avx512 does
        _mm_prefetch(reinterpret_cast<const char*>(p + 3 * W + 23), _MM_HINT_T0);
        const __m256i bytes = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 12)), 1);
        const __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(bytes, sel_r)), k255);
        const __m256 g = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(bytes, sel_g)), k255);
        const __m256 bl = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(bytes, sel_b)), k255);
        const __m256 d00 = colour_d2(r, g, bl, a + 2 * W + x, a + 4 * W + x, a + 6 * W + x);
        const __m256 d01 = colour_d2(r, g, bl, a + 3 * W + x, a + 5 * W + x, a + 7 * W + x);
        const __m256 d10 = colour_d2(r, g, bl, b + 2 * W + x, b + 4 * W + x, b + 6 * W + x);
        const __m256 d11 = colour_d2(r, g, bl, b + 3 * W + x, b + 5 * W + x, b + 7 * W + x);
        // std::min(p, q) is q < p ? q : p, and _mm256_min_ps(q, p) the same, NaN included
        const __m256 m = _mm256_min_ps(_mm256_min_ps(d11, d10), _mm256_min_ps(d01, d00));
        const __m256 w00 = _mm256_mul_ps(_mm256_mul_ps(vgy, gx), range_weight8(_mm256_mul_ps(_mm256_sub_ps(d00, m), s2)));
        const __m256 w01 = _mm256_mul_ps(_mm256_mul_ps(vgy, ux), range_weight8(_mm256_mul_ps(_mm256_sub_ps(d01, m), s2)));
        const __m256 w10 = _mm256_mul_ps(_mm256_mul_ps(vfy, gx), range_weight8(_mm256_mul_ps(_mm256_sub_ps(d10, m), s2)));
        const __m256 w11 = _mm256_mul_ps(_mm256_mul_ps(vfy, ux), range_weight8(_mm256_mul_ps(_mm256_sub_ps(d11, m), s2)));
        const __m256 num = weighted4_8(w00, w01, w10, w11, a0, a1, b0, b1);
        const __m256 den = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(w00, w01), w10), w11);
        _mm256_storeu_ps(out + x, _mm256_blendv_ps(_mm256_div_ps(num, den), bil, flat));
    }
    // The last columns in scalar code.
    joint_row_impl_from(a, b, img, fx, fy, inv2s2, width, x, out);
}

__attribute__((target("avx2,fma"))) int joint_row_avx2(const float* a, const float* b, const uint8_t* img,
                                                   const float* fx, float fy, float inv2s2, int width, float* out,
                                                   const Finish*, uint8_t*) {
    joint_row_avx2_from(a, b, img, fx, fy, inv2s2, width, 0, out);
    return 0;
}
#endif

#ifdef ED_HAVE_AVX2_PATH
ED_AVX512 inline __m512 range_weight16(__m512 t) {
    __m512 u = _mm512_max_ps(_mm512_fnmadd_ps(t, _mm512_set1_ps(0.0625f), _mm512_set1_ps(1.0f)), _mm512_setzero_ps());
    u = _mm512_mul_ps(u, u);
    u = _mm512_mul_ps(u, u);
    u = _mm512_mul_ps(u, u);
    u = _mm512_mul_ps(u, u);
    return _mm512_max_ps(u, _mm512_set1_ps(kJointFloor));
}

ED_AVX512 inline __m512 colour_d2_16(__m512 r, __m512 g, __m512 b, const float* pr, const float* pg, const float* pb) {
    const __m512 dr = _mm512_sub_ps(r, _mm512_loadu_ps(pr));
    const __m512 dg = _mm512_sub_ps(g, _mm512_loadu_ps(pg));
    const __m512 db = _mm512_sub_ps(b, _mm512_loadu_ps(pb));
    return _mm512_fmadd_ps(dr, dr, _mm512_fmadd_ps(dg, dg, _mm512_mul_ps(db, db)));
}

ED_AVX512 inline __m512 weighted4_16(__m512 w0, __m512 w1, __m512 w2, __m512 w3, __m512 v0, __m512 v1, __m512 v2,
                                     __m512 v3) {
    return _mm512_fmadd_ps(w3, v3, _mm512_fmadd_ps(w2, v2, _mm512_fmadd_ps(w1, v1, _mm512_mul_ps(w0, v0))));
}

// finish_span on 16 values (same comparisons and product, so the same bits), stored to d and v;
// scale and valid_max broadcast once by the caller (read through a pointer in the loop, they were
// reloaded after every store).
ED_AVX512 inline void finish16(__m512 x, __m512 scale, __m512 valid_max, float* d, uint8_t* v) {
    const __m512 fmax = _mm512_set1_ps(std::numeric_limits<float>::max());
    const __m512 s = _mm512_mul_ps(x, scale);
    const __mmask16 good = _mm512_cmp_ps_mask(_mm512_abs_ps(s), fmax, _CMP_LE_OQ)
                           & _mm512_cmp_ps_mask(s, _mm512_setzero_ps(), _CMP_GT_OQ);
    const __mmask16 x_ok = _mm512_cmp_ps_mask(_mm512_abs_ps(x), fmax, _CMP_LE_OQ)
                           & _mm512_cmp_ps_mask(x, valid_max, _CMP_LE_OQ);
    _mm512_storeu_ps(d, _mm512_maskz_mov_ps(good, s));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(v), _mm_maskz_set1_epi8(good & x_ok, 1));
}

// joint_row_avx2 16 pixels per step: the same operations in the same order (the same bits); the RGB
// bytes of 16 pixels split into planes by one byte permute (rgb_planes16). With a Finish, each
// group is finished as it is stored (a separate pass over the row took a tenth of the time).
ED_AVX512 int joint_row_avx512(const float* a, const float* b, const uint8_t* img, const float* fx, float fy,
                               float inv2s2, int width, float* out, const Finish* fin, uint8_t* valid) {
    const int64_t W = width;
    const __m512 k255 = _mm512_set1_ps(1.0f / 255.0f), one = _mm512_set1_ps(1.0f), s2 = _mm512_set1_ps(inv2s2);
    const __m512 vfy = _mm512_set1_ps(fy), vgy = _mm512_set1_ps(1.0f - fy);
    const __m512 fin_scale = _mm512_set1_ps(fin ? fin->scale : 1.0f);
    const __m512 fin_max = _mm512_set1_ps(fin ? fin->valid_max : 0.0f);
    int x = 0;
    for (; x + 16 <= width; x += 16) {
        const __m512 ux = _mm512_loadu_ps(fx + x), gx = _mm512_sub_ps(one, ux);
        const __m512 a0 = _mm512_loadu_ps(a + x), a1 = _mm512_loadu_ps(a + W + x);
        const __m512 b0 = _mm512_loadu_ps(b + x), b1 = _mm512_loadu_ps(b + W + x);
        const __m512 bil = weighted4_16(_mm512_mul_ps(vgy, gx), _mm512_mul_ps(vgy, ux), _mm512_mul_ps(vfy, gx),
                                        _mm512_mul_ps(vfy, ux), a0, a1, b0, b1);
        const __m512 lo = _mm512_min_ps(_mm512_min_ps(a0, a1), _mm512_min_ps(b0, b1));
        const __m512 hi = _mm512_max_ps(_mm512_max_ps(a0, a1), _mm512_max_ps(b0, b1));
        const __mmask16 flat = _mm512_cmp_ps_mask(_mm512_sub_ps(hi, lo), _mm512_mul_ps(lo, _mm512_set1_ps(kJointFlat)),
                                                  _CMP_LE_OQ);
        if (flat == 0xFFFF) {
            if (fin)
                finish16(bil, fin_scale, fin_max, out + x, valid + x);
            else
                _mm512_storeu_ps(out + x, bil);
            continue;
        }
        __m512 rgb[3];
        const uint8_t* px = img + 3 * static_cast<int64_t>(x);
        // The next output row mostly has its steps in the same columns (it shares these taps), and
        // reads the frame only there: those sparse reads miss the cache and defeat the hardware
        // prefetcher, so fetch its pixels now. Prefetches never fault, even past the frame's end.
        _mm_prefetch(reinterpret_cast<const char*>(px + 3 * W), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(px + 3 * W + 47), _MM_HINT_T0);
        rgb_planes16(px, rgb);
        const __m512 r = _mm512_mul_ps(rgb[0], k255), g = _mm512_mul_ps(rgb[1], k255), bl = _mm512_mul_ps(rgb[2], k255);
        const __m512 d00 = colour_d2_16(r, g, bl, a + 2 * W + x, a + 4 * W + x, a + 6 * W + x);
        const __m512 d01 = colour_d2_16(r, g, bl, a + 3 * W + x, a + 5 * W + x, a + 7 * W + x);
        const __m512 d10 = colour_d2_16(r, g, bl, b + 2 * W + x, b + 4 * W + x, b + 6 * W + x);
        const __m512 d11 = colour_d2_16(r, g, bl, b + 3 * W + x, b + 5 * W + x, b + 7 * W + x);
        const __m512 m = _mm512_min_ps(_mm512_min_ps(d11, d10), _mm512_min_ps(d01, d00));
        const __m512 w00 = _mm512_mul_ps(_mm512_mul_ps(vgy, gx), range_weight16(_mm512_mul_ps(_mm512_sub_ps(d00, m), s2)));
        const __m512 w01 = _mm512_mul_ps(_mm512_mul_ps(vgy, ux), range_weight16(_mm512_mul_ps(_mm512_sub_ps(d01, m), s2)));
        const __m512 w10 = _mm512_mul_ps(_mm512_mul_ps(vfy, gx), range_weight16(_mm512_mul_ps(_mm512_sub_ps(d10, m), s2)));
        const __m512 w11 = _mm512_mul_ps(_mm512_mul_ps(vfy, ux), range_weight16(_mm512_mul_ps(_mm512_sub_ps(d11, m), s2)));
        const __m512 num = weighted4_16(w00, w01, w10, w11, a0, a1, b0, b1);
        const __m512 den = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(w00, w01), w10), w11);
        const __m512 res = _mm512_mask_blend_ps(flat, _mm512_div_ps(num, den), bil);
        if (fin)
            finish16(res, fin_scale, fin_max, out + x, valid + x);
        else
            _mm512_storeu_ps(out + x, res);
    }
    joint_row_avx2_from(a, b, img, fx, fy, inv2s2, width, x, out);
    return fin ? x : 0;
}
#undef ED_AVX512
#endif

JointRowFn pick_joint_row() {
#ifdef ED_HAVE_AVX2_PATH
    if (has_avx512_vbmi()) return joint_row_avx512;
    if (has_avx2() && __builtin_cpu_supports("fma")) return joint_row_avx2;
#endif
    return joint_row;
}

}  // namespace

template <typename In>
void stitch_cpu(const In* tiles, int n, int c, int th, int tw, const double* boxes, int height,
                int width, Window kind, float* out, int threads, const Finish* finish) {
    const GridLayout layout = grid_layout(boxes, n);
    const int64_t plane = static_cast<int64_t>(height) * width;
    const int64_t tile_plane = static_cast<int64_t>(th) * tw;
    const FinishFn finish_row = pick_finish();
    const VBlendFn<In> vblend_rows = pick_vblend<In>();

    // Each thread owns whole output rows (no atomics, no per-tile temporaries). On a grid the weight
    // of box (i, j) at (y, x) is rowweight_i(y) * colweight_j(x), both normalised per axis, so per
    // output row the tiles of each column band are first blended vertically at the tiles'
    // resolution, their row bands weighted and summed there (one tile row per column band, however
    // many row bands overlap at y), and each column band is then expanded once to the frame: no
    // weight sum, no per-pixel divide, no second pass over the row.
    if (layout.is_grid()) {
        const std::vector<Band>& row_band = layout.rows;
        const std::vector<Band>& col_band = layout.cols;
        const std::vector<int>& box_at = layout.box_at;
        const int rows = static_cast<int>(row_band.size()), cols = static_cast<int>(col_band.size());
        const BandWindows rwin = band_windows(row_band, height, kind), cwin = band_windows(col_band, width, kind);
        // Sorted by start, the bands' first columns never decrease: the columns a row holds so far are
        // one prefix [0, written), so a band stores where it is first and adds where it overlaps,
        // and only columns no band covers are zero-filled.
        std::vector<StitchBand> band(static_cast<size_t>(cols));
        for (int j = 0; j < cols; ++j) {
            StitchBand& sb = band[j];
            const double x0 = col_band[j].first, bw = col_band[j].second;
            sb.first = stitch_first(x0, width);
            sb.count = std::max(0, stitch_stop(x0, bw, width) - sb.first);
            sb.lo.resize(static_cast<size_t>(sb.count));
            sb.hi.resize(sb.lo.size());
            sb.frac.resize(sb.lo.size());
            sb.weight.resize(sb.lo.size());
            for (int k = 0; k < sb.count; ++k) {
                const double u = stitch_u(x0, bw, sb.first + k);
                const Tap t = tap_at(u * tw - 0.5, tw);
                sb.lo[k] = t.lo;
                sb.hi[k] = t.hi;
                sb.frac[k] = t.frac;
                sb.weight[k] = static_cast<float>(cwin.profile[j][k] / cwin.sum[sb.first + k]);
            }
            sb.g8.build(sb.lo, sb.hi, sb.count);
            sb.g16.build(sb.lo, sb.hi, sb.count);
        }
        const VMergeFn<In> vmerge_rows = pick_vmerge<In>();
        const HBandFn<true> hband_add = pick_hband<true>();
        const HBandFn<false> hband_store = pick_hband<false>();
        const int64_t stride = static_cast<int64_t>(tw) + 32;  // 32 readable floats past a merged row's end
        const RowWriter writer(finish, plane * (static_cast<int64_t>(sizeof(float)) * c + (finish ? 1 : 0)));
        parallel_for(height, threads, [&](int64_t begin, int64_t end) {
            std::vector<float> merged(static_cast<size_t>(cols) * stride);
            std::vector<float> row(static_cast<size_t>(width));
            // The row bands covering an output row: the tile rows they blend, their normalised row
            // weight, and the lower tile row of the output row two below. Tile rows are read from
            // memory (the tiles are far larger than the caches) as the row is merged, and across a
            // row band's tile rows the hardware prefetcher fell behind; fetching that row now made the
            // 4K stitch 1.1x faster on one thread.
            struct Cover {
                int band;
                Tap tap;
                float weight;
                int ahead;
            };
            std::vector<Cover> cover;
            for (int64_t y64 = begin; y64 < end; ++y64) {
                const int y = static_cast<int>(y64);
                cover.clear();
                for (int i = 0; i < rows; ++i) {
                    const double by0 = row_band[i].first, bh = row_band[i].second;
                    if (y < stitch_first(by0, height) || y >= stitch_stop(by0, bh, height)) continue;
                    cover.push_back({i, tap_at(stitch_u(by0, bh, y) * th - 0.5, th),
                                     static_cast<float>(rwin.profile[i][y - rwin.first[i]] / rwin.sum[y]),
                                     tap_at(stitch_u(by0, bh, y + 2) * th - 0.5, th).hi});
                }
                for (int ch = 0; ch < c; ++ch) {
                    const int64_t at = ch * plane + y64 * width;
                    float* o = writer.target(row.data(), out, at);
                    int written = 0;
                    for (int j = 0; j < cols && !cover.empty(); ++j) {
                        const StitchBand& sb = band[j];
                        if (sb.count == 0) continue;
                        float* m = merged.data() + j * stride;
                        for (size_t r = 0; r < cover.size(); ++r) {
                            const Cover& cv = cover[r];
                            const int b = box_at[static_cast<size_t>(cv.band) * cols + j];
                            const In* tile = tiles + (static_cast<int64_t>(b) * c + ch) * tile_plane;
                            vmerge_rows(tile + static_cast<int64_t>(cv.tap.lo) * tw, tile + static_cast<int64_t>(cv.tap.hi) * tw,
                                        cv.tap.frac, cv.weight, r == 0, m, tw, tile + static_cast<int64_t>(cv.ahead) * tw);
                        }
                        if (sb.first > written) std::fill(o + written, o + sb.first, 0.0f);  // no band covers these
                        written = std::max(written, sb.first);
                        // [0, add) of this band's columns overlap what the row holds; [add, count) are new.
                        const int add = std::min(sb.count, written - sb.first);
                        hband_add(m, sb, 0, add, o + sb.first);
                        hband_store(m, sb, add, sb.count, o + sb.first);
                        written = std::max(written, sb.first + sb.count);
                    }
                    if (written < width) std::fill(o + written, o + width, 0.0f);
                    writer.commit(o, out, at, width);
                }
            }
            writer.fence();
        });
        return;
    }
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
    const HAccumulateFn haccumulate_row = pick_hweighted<true>();
    // Other layouts: the tiles covering a row add weight*value and weight into row-sized
    // accumulators, then the row is normalised and written once.
    parallel_for(height, threads, [&](int64_t begin, int64_t end) {
        std::vector<float> acc(static_cast<size_t>(c) * width), wsum(static_cast<size_t>(width));
        std::vector<float> w(static_cast<size_t>(width)), trow(static_cast<size_t>(tw) + kPad);
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
                    vblend_rows(t0, t1, ty.frac, trow.data(), tw);  // separable: vertical first
                    haccumulate_row(trow.data(), lo, hi, f, w.data(), acc.data() + static_cast<size_t>(ch) * width + first,
                                    count);
                }
            }
            // Branch-free so the loop vectorises: covered weights are >= 1e-12 (window floor squared),
            // so the max never changes them, and a pixel no box covers gets 0 / 1e-30 = 0.
            for (int x = 0; x < width; ++x) {
                const float ws = wsum[x];
                wsum[x] = (ws > 0.0f ? 1.0f : 0.0f) / std::max(ws, 1e-30f);
            }
            for (int ch = 0; ch < c; ++ch) {
                float* o = out + ch * plane + static_cast<int64_t>(y) * width;
                const float* a = acc.data() + static_cast<size_t>(ch) * width;
                for (int x = 0; x < width; ++x) o[x] = a[x] * wsum[x];
            }
            if (finish)
                finish_row(out + y64 * width, finish->valid + y64 * width, width, finish->scale, finish->valid_max);
        }
    });
}

void joint_upsample_cpu(const float* depth, const float* guide, int h, int w, const uint8_t* image, int height,
                        int width, float sigma, float* out, int threads, const Finish* finish) {
    const AxisTable cols = whole_map_columns(w, width);
    const float inv2s2 = static_cast<float>(1.0 / (2.0 * static_cast<double>(sigma) * sigma));
    const int64_t plane = static_cast<int64_t>(h) * w;
    const JointRowFn row_fn = pick_joint_row();
    const ExpandFn expand = pick_expand();
    const FinishFn finish_row = pick_finish();
    const RowChunks chunks = upsample_chunks(threads, height);
    parallel_for(chunks.count, threads, [&](int64_t c0, int64_t c1) {
        ExpandedRows rows(static_cast<size_t>(8) * width);
        auto expand_row = [&](int y, float* dst) {
            expand(depth, guide, plane, w, y, cols.lo.data(), cols.hi.data(), width, dst);
        };
        for (int64_t y = c0 * chunks.per; y < std::min<int64_t>(height, c1 * chunks.per); ++y) {
            const Tap t = crop_tap(0.0, h, height, static_cast<int>(y), h);
            const float* a = rows.get(t.lo, expand_row);
            const float* b = rows.get(t.hi, expand_row);
            float* dst = out + y * width;
            uint8_t* valid = finish ? finish->valid + y * width : nullptr;
            const int done = row_fn(a, b, image + y * width * 3, cols.frac.data(), t.frac, inv2s2, width, dst, finish,
                                    valid);
            if (finish) finish_row(dst + done, valid + done, width - done, finish->scale, finish->valid_max);
        }
    });
}

// ---- guided-filter upsampling

namespace {

namespace guided_generic {
#include "guided_kernels.inc"
}  // namespace guided_generic

#ifdef ED_HAVE_AVX2_PATH
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace guided_avx2 {
#include "guided_kernels.inc"
}  // namespace guided_avx2
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")
#endif
namespace guided_avx512 {
#include "guided_kernels.inc"
}  // namespace guided_avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

// One instruction set's loops, picked once per call (EDGEDEPTH_MAX_ISA caps it, as everywhere).
struct GuidedKernels {
    decltype(&guided_generic::guided_pool_rows) pool;
    decltype(&guided_generic::guided_fit_rows) fit;
    decltype(&guided_generic::guided_mean_rows) mean;
    decltype(&guided_generic::guided_expand_row) expand;
    decltype(&guided_generic::guided_row) row;
};

GuidedKernels pick_guided() {
#ifdef ED_HAVE_AVX2_PATH
    if (has_avx512())
        return {guided_avx512::guided_pool_rows, guided_avx512::guided_fit_rows, guided_avx512::guided_mean_rows,
                guided_avx512::guided_expand_row, guided_avx512::guided_row};
    if (has_avx2())
        return {guided_avx2::guided_pool_rows, guided_avx2::guided_fit_rows, guided_avx2::guided_mean_rows,
                guided_avx2::guided_expand_row, guided_avx2::guided_row};
#endif
    return {guided_generic::guided_pool_rows, guided_generic::guided_fit_rows, guided_generic::guided_mean_rows,
            guided_generic::guided_expand_row, guided_generic::guided_row};
}

}  // namespace

void guided_upsample_cpu(const float* depth, const float* guide, int h, int w, int step, const uint8_t* image,
                         int height, int width, int radius, double eps, float scale, float valid_max, float* out,
                         uint8_t* valid, int threads) {
    const GuidedKernels kern = pick_guided();
    const int hp = (h + step - 1) / step, wp = (w + step - 1) / step;
    const int64_t pp = static_cast<int64_t>(hp) * wp;
    // One contiguous row range per thread: each range first makes the horizontal sums of the radius
    // rows above it.
    const int chunks = std::max(1, std::min(threads, hp));
    const int64_t per = (hp + chunks - 1) / chunks;
    std::vector<double> pooled(static_cast<size_t>(5) * pp);
    parallel_for(chunks, threads, [&](int64_t c0, int64_t c1) {
        kern.pool(depth, guide, h, w, step, c0 * per, std::min<int64_t>(hp, c1 * per), pooled.data());
    });
    // The output stays within the pooled map's ln depth range: where a frame pixel's colour lies
    // far outside its window's (a thin wire the pooled guide averaged away), the fit would
    // extrapolate, and a depth nearer than anything the refiner saw is the error a robot pays for.
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (int64_t i = 0; i < pp; ++i)
        if (pooled[i] > 0.5) {
            lo = std::min(lo, pooled[4 * pp + i]);
            hi = std::max(hi, pooled[4 * pp + i]);
        }
    const GuidedRange range = guided_range(lo, hi);
    std::vector<float> fit(static_cast<size_t>(5) * pp);
    parallel_for(chunks, threads, [&](int64_t c0, int64_t c1) {
        kern.fit(pooled.data(), hp, wp, radius, eps, c0 * per, std::min<int64_t>(hp, c1 * per), fit.data());
    });
    std::vector<float> coef(static_cast<size_t>(4) * pp);
    parallel_for(chunks, threads, [&](int64_t c0, int64_t c1) {
        kern.mean(pooled.data(), hp, wp, radius, c0 * per, std::min<int64_t>(hp, c1 * per), fit.data(), coef.data());
    });
    // At full resolution: A and B resized bilinearly from (hp, wp) (crop semantics, as
    // joint_upsample_cpu), q = A . rgb / 255 + B, depth = exp(q). Each pooled row is expanded to the
    // frame's width once per chunk for the output rows that use it.
    const AxisTable cols = whole_map_columns(wp, width);
    const RowChunks out_chunks = upsample_chunks(threads, height);
    parallel_for(out_chunks.count, threads, [&](int64_t c0, int64_t c1) {
        ExpandedRows rows(static_cast<size_t>(4) * width);
        auto expand_row = [&](int y, float* dst) {
            kern.expand(coef.data() + static_cast<int64_t>(y) * wp, pp, cols.lo.data(), cols.hi.data(), cols.frac.data(),
                        width, dst);
        };
        for (int64_t y = c0 * out_chunks.per; y < std::min<int64_t>(height, c1 * out_chunks.per); ++y) {
            const Tap t = crop_tap(0.0, hp, height, static_cast<int>(y), hp);
            const float* a = rows.get(t.lo, expand_row);
            const float* b = rows.get(t.hi, expand_row);
            float* dst = out + y * width;
            kern.row(a, b, image + y * width * 3, t.frac, width, range.qlo, range.qhi, scale, valid_max, dst,
                     valid + y * width);
        }
    });
}

void snap_edges_cpu(const float* depth, const float* guide, int h, int w, float ratio, float* out, int threads) {
    const int64_t plane = static_cast<int64_t>(h) * w;
    const float fmax = std::numeric_limits<float>::max();
    // Per inner row, the 3x3 minimum and maximum from three rows' horizontal ones, branch-free so
    // that they vectorise; no frame-sized buffers (fresh pages cost more than the work). Most pixels
    // stop at the 3x3 ratio: only steps look at their 5x5 neighbourhood and colours. NaN may drop
    // out of a minimum or maximum, but the 5x5 "all positive and finite" test then fails.
    parallel_for(h, threads, [&](int64_t y0, int64_t y1) {
        std::vector<float> buf(static_cast<size_t>(8) * w);
        float *lo3 = buf.data(), *hi3 = lo3 + w, *hlo = hi3 + w, *hhi = hlo + 3 * w;
        auto horizontal = [&](int64_t y, float* lo, float* hi) {
            const float* d = depth + y * w;
            for (int x = 1; x + 1 < w; ++x) {
                lo[x] = std::min(std::min(d[x - 1], d[x]), d[x + 1]);
                hi[x] = std::max(std::max(d[x - 1], d[x]), d[x + 1]);
            }
        };
        for (int64_t y = y0; y < y1; ++y) {
            std::memcpy(out + y * w, depth + y * w, sizeof(float) * static_cast<size_t>(w));
            // The two outermost rows and columns keep their depth: a 5x5 clipped by the border makes
            // a slope look level.
            if (y < 2 || y >= h - 2) continue;
            for (int k = 0; k < 3; ++k) horizontal(y - 1 + k, hlo + k * w, hhi + k * w);
            for (int x = 2; x + 2 < w; ++x) {
                lo3[x] = std::min(std::min(hlo[x], hlo[w + x]), hlo[2 * w + x]);
                hi3[x] = std::max(std::max(hhi[x], hhi[w + x]), hhi[2 * w + x]);
            }
            for (int x = 2; x + 2 < w; ++x) {
                const float r3 = hi3[x] / lo3[x];
                if (!(r3 > ratio)) continue;
                const int64_t i = y * w + x;
                float lo5 = lo3[x], hi5 = hi3[x];
                bool good = true;
                for (int64_t yy = y - 2; yy <= y + 2; ++yy)
                    for (int xx = x - 2; xx <= x + 2; ++xx) {
                        const float v = depth[yy * w + xx];
                        good = good && v > 0.0f && v <= fmax;
                        lo5 = std::min(lo5, v);
                        hi5 = std::max(hi5, v);
                    }
                const float root = std::sqrt(r3);  // r3^1.75 from exact square roots, as the reference
                if (!good || !(hi5 / lo5 < r3 * root * std::sqrt(root))) continue;
                int64_t kmin = -1, kmax = -1;  // the first minimum and maximum in row order
                for (int64_t yy = y - 1; yy <= y + 1; ++yy)
                    for (int xx = x - 1; xx <= x + 1; ++xx) {
                        const int64_t j = yy * w + xx;
                        if (kmin < 0 || depth[j] < depth[kmin]) kmin = j;
                        if (kmax < 0 || depth[j] > depth[kmax]) kmax = j;
                    }
                auto colour_distance = [&](int64_t j) {
                    const float dr = guide[j] - guide[i], dg = guide[plane + j] - guide[plane + i];
                    const float db = guide[2 * plane + j] - guide[2 * plane + i];
                    return dr * dr + dg * dg + db * db;
                };
                out[i] = colour_distance(kmax) < colour_distance(kmin) ? depth[kmax] : depth[kmin];
            }
        }
    });
}

void finish_cpu(float* depth, int64_t n, float scale, float valid_max, uint8_t* valid, int threads) {
    // Chunks of 64 Ki values: enough work per thread to pay for its spawn.
    constexpr int64_t kChunk = int64_t{1} << 16;
    const FinishFn finish_span_fn = pick_finish();
    parallel_for((n + kChunk - 1) / kChunk, threads, [=](int64_t begin, int64_t end) {
        const int64_t start = begin * kChunk;
        finish_span_fn(depth + start, valid + start, std::min(n, end * kChunk) - start, scale, valid_max);
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
template void stitch_cpu<float>(const float*, int, int, int, int, const double*, int, int, Window, float*, int,
                                const Finish*);
template void stitch_cpu<uint16_t>(const uint16_t*, int, int, int, int, const double*, int, int, Window, float*,
                                   int, const Finish*);

}  // namespace edgedepth
