#include "tile_engine_cuda.hpp"

#include <math_constants.h>

#include <mutex>
#include <vector>

#include "grid_stitch.hpp"
#include "guided_math.hpp"
#include "map_crops.hpp"
#include "tile_math.hpp"

namespace edgedepth {
namespace {

constexpr int kBlock = 256;

int blocks_for(int64_t total) {
    // Grid-stride loops cover any size; cap the grid so huge sizes never overflow gridDim.x.
    const int64_t b = (total + kBlock - 1) / kBlock;
    return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

#define ED_GRID_STRIDE(idx, total)                                                       \
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;     \
         idx < (total); idx += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Crop tables: entries [b * out_len + i] for axis `coord` (0 = y, 1 = x), computed in double
// exactly like the CPU engine (this file is built with -fmad=false, as the CPU engine is with
// -ffp-contract=off: no fused multiply-add changes a rounding), once per box and output index
// instead of once per pixel.
__global__ void crop_table_kernel(const double* boxes, int n, int coord, int out_len, int src_len, Entry* table) {
    ED_GRID_STRIDE(idx, static_cast<int64_t>(n) * out_len) {
        const int b = static_cast<int>(idx / out_len), i = static_cast<int>(idx % out_len);
        const Tap t = crop_tap(boxes[4 * b + coord], boxes[4 * b + coord + 2], out_len, i, src_len);
        table[idx] = Entry{t.lo, t.hi, t.frac, 1.0f};
    }
}

// Stitch tables: entries [b * frame_len + p] for frame pixel p along axis `coord`.
__global__ void stitch_table_kernel(const double* boxes, int n, int coord, int tile_len, int frame_len,
                                    int kind, Entry* table) {
    ED_GRID_STRIDE(idx, static_cast<int64_t>(n) * frame_len) {
        const int b = static_cast<int>(idx / frame_len), p = static_cast<int>(idx % frame_len);
        const double start = boxes[4 * b + coord], length = boxes[4 * b + coord + 2];
        if (p < stitch_first(start, frame_len) || p >= stitch_stop(start, length, frame_len)) {
            table[idx] = Entry{-1, -1, 0.0f, 0.0f};
        } else {
            const double u = stitch_u(start, length, p);
            const Tap t = tap_at(u * tile_len - 0.5, tile_len);
            table[idx] = Entry{t.lo, t.hi, t.frac, static_cast<float>(window_profile(u, static_cast<Window>(kind)))};
        }
    }
}

struct Affine3 {
    float scale[3];
    float bias[3];
};

template <typename Out>
__global__ void crop_rgb_kernel(const uint8_t* __restrict__ src, int src_w, const Entry* __restrict__ ytab,
                                const Entry* __restrict__ xtab, int n, int out_h, int out_w, Affine3 affine,
                                Out* __restrict__ out) {
    const int64_t plane = static_cast<int64_t>(out_h) * out_w;
    ED_GRID_STRIDE(idx, n * plane) {
        const int b = static_cast<int>(idx / plane);
        const int i = static_cast<int>((idx % plane) / out_w), j = static_cast<int>(idx % out_w);
        const Entry ty = ytab[static_cast<int64_t>(b) * out_h + i], tx = xtab[static_cast<int64_t>(b) * out_w + j];
        const uint8_t* r0 = src + static_cast<int64_t>(ty.lo) * src_w * 3;
        const uint8_t* r1 = src + static_cast<int64_t>(ty.hi) * src_w * 3;
#pragma unroll
        for (int ch = 0; ch < 3; ++ch) {
            const float a0 = r0[tx.lo * 3 + ch], a1 = r0[tx.hi * 3 + ch];
            const float b0 = r1[tx.lo * 3 + ch], b1 = r1[tx.hi * 3 + ch];
            const float top = a0 + (a1 - a0) * tx.frac, bot = b0 + (b1 - b0) * tx.frac;
            store(out, (static_cast<int64_t>(b) * 3 + ch) * plane + idx % plane,
                  (top + (bot - top) * ty.frac) * affine.scale[ch] + affine.bias[ch]);
        }
    }
}

template <typename In, typename Out>
__global__ void crop_map_kernel(const In* __restrict__ src, int c, int src_h, int src_w,
                                const Entry* __restrict__ ytab, const Entry* __restrict__ xtab, int n, int out_h,
                                int out_w, Out* __restrict__ out) {
    const int64_t plane = static_cast<int64_t>(out_h) * out_w;
    ED_GRID_STRIDE(idx, static_cast<int64_t>(n) * c * plane) {
        store(out, idx, crop_map_value(src, c, src_h, src_w, ytab, xtab, out_h, out_w, idx));
    }
}

__global__ void crop_maps_table_kernel(const __grid_constant__ MapJobs jobs, const double* boxes, int64_t total,
                                       Entry* table) {
    ED_GRID_STRIDE(idx, total) table[idx] = map_table_entry(jobs, boxes, idx);
}

template <typename In, typename Out>
__global__ void crop_maps_kernel(const __grid_constant__ MapJobs jobs, const Entry* __restrict__ table, int64_t total) {
    ED_GRID_STRIDE(idx, total) map_crop_element<In, Out>(jobs, table, idx);
}

__global__ void window_kernel(int h, int w, int kind, float* out) {
    ED_GRID_STRIDE(idx, static_cast<int64_t>(h) * w) {
        const int i = static_cast<int>(idx / w), j = static_cast<int>(idx % w);
        const Window k = static_cast<Window>(kind);
        out[idx] = static_cast<float>(window_profile((i + 0.5) / h, k) * window_profile((j + 0.5) / w, k));
    }
}

// One thread per output pixel gathers from every box that covers it: no atomics, each output
// written once. Row entries are the same across a warp (broadcast), column entries coalesce.
template <typename In>
__global__ void stitch_kernel(const In* __restrict__ tiles, int n, int c, int th, int tw,
                              const Entry* __restrict__ ytab, const Entry* __restrict__ xtab, int height, int width,
                              float* __restrict__ out) {
    const int64_t plane = static_cast<int64_t>(height) * width;
    const int64_t tile_plane = static_cast<int64_t>(th) * tw;
    ED_GRID_STRIDE(idx, plane) {
        const int y = static_cast<int>(idx / width), x = static_cast<int>(idx % width);
        float wsum = 0.0f;
        for (int b = 0; b < n; ++b) {
            const Entry ty = ytab[static_cast<int64_t>(b) * height + y];
            const Entry tx = xtab[static_cast<int64_t>(b) * width + x];
            if (ty.lo >= 0 && tx.lo >= 0) wsum += ty.weight * tx.weight;
        }
        const float inv = wsum > 0.0f ? 1.0f / wsum : 0.0f;
        for (int ch = 0; ch < c; ++ch) {
            float acc = 0.0f;
            for (int b = 0; b < n; ++b) {
                const Entry ty = ytab[static_cast<int64_t>(b) * height + y];
                const Entry tx = xtab[static_cast<int64_t>(b) * width + x];
                if (ty.lo < 0 || tx.lo < 0) continue;
                acc += ty.weight * tx.weight * bilinear(tiles + (static_cast<int64_t>(b) * c + ch) * tile_plane, tw, ty, tx);
            }
            out[ch * plane + idx] = acc * inv;
        }
    }
}

// The grid stitch (grid_stitch.hpp): per-axis tables, then one thread per output pixel. The band and
// box tables are __grid_constant__ so that the functions can take them by reference without each
// thread copying them to local memory.
__global__ void grid_axis_kernel(const __grid_constant__ GridBands bands, int nb, int tile_len, int frame_len, int kind, GridEntry* table) {
    ED_GRID_STRIDE(idx, frame_len) {
        grid_axis_entries(bands, nb, tile_len, frame_len, static_cast<Window>(kind), static_cast<int>(idx),
                          table + idx * kGridCover);
    }
}

template <typename In>
__global__ void grid_stitch_kernel(const In* __restrict__ tiles, int c, int th, int tw,
                                   const __grid_constant__ GridBoxes boxes, int cols,
                                   const GridEntry* __restrict__ ytab, const GridEntry* __restrict__ xtab, int height,
                                   int width, float* __restrict__ out) {
    const int64_t plane = static_cast<int64_t>(height) * width;
    ED_GRID_STRIDE(idx, plane) {
        const GridEntry* ye = ytab + (idx / width) * kGridCover;
        const GridEntry* xe = xtab + (idx % width) * kGridCover;
        for (int ch = 0; ch < c; ++ch) out[ch * plane + idx] = grid_stitch_pixel(tiles, c, th, tw, boxes, cols, ye, xe, ch);
    }
}

// Joint bilateral upsampling of a (h, w) map to the (height, width) frame, finished: one thread per
// output pixel gathers its four taps through the crop tables of the whole map (joint_taps) and runs
// the CPU engine's own per-pixel code (tile_math.hpp: joint_blend, finish_value), so both give the
// same bits; tests/test_cuda_code_on_host.py runs the same three functions on the host.
__global__ void joint_kernel(const float* __restrict__ depth, const float* __restrict__ guide, int w, int64_t plane,
                             const uint8_t* __restrict__ image, const Entry* __restrict__ ytab,
                             const Entry* __restrict__ xtab, int height, int width, float inv2s2, float scale,
                             float valid_max, float* __restrict__ out, uint8_t* __restrict__ valid) {
    ED_GRID_STRIDE(idx, static_cast<int64_t>(height) * width) {
        const Entry ey = ytab[idx / width], ex = xtab[idx % width];
        const Tap ty{ey.lo, ey.hi, ey.frac}, tx{ex.lo, ex.hi, ex.frac};
        const JointTaps t = joint_taps(depth, guide, w, plane, ty, tx);
        out[idx] = finish_value(joint_blend(t, image + 3 * idx, tx.frac, ty.frac, inv2s2), scale, valid_max, valid + idx);
    }
}

// The finishing pass in place (tile_math.hpp finish_value, the CPU engine's code).
__global__ void finish_kernel(float* __restrict__ depth, int64_t n, float scale, float valid_max,
                              uint8_t* __restrict__ valid) {
    ED_GRID_STRIDE(idx, n) { depth[idx] = finish_value(depth[idx], scale, valid_max, valid + idx); }
}

// ---- the guided-filter upsampling (tile_engine_cpu.hpp guided_upsample_cpu): each kernel runs one
// pooled or frame pixel of csrc/guided_math.hpp per thread, in the CPU engine's summation order, so
// both give the same bits (tests/test_cuda_code_on_host.py runs the same functions on the host).
__global__ void guided_pool_kernel(const float* __restrict__ depth, const float* __restrict__ guide, int h, int w,
                                   int step, int hp, int wp, double* __restrict__ pooled) {
    const int64_t pp = static_cast<int64_t>(hp) * wp;
    ED_GRID_STRIDE(idx, pp) {
        double v[5];
        guided_pool_pixel(depth, guide, h, w, step, static_cast<int>(idx / wp), static_cast<int>(idx % wp), v);
        for (int k = 0; k < 5; ++k) pooled[k * pp + idx] = v[k];
    }
}

// The clamp range of the output's exponent: the least and greatest valid pooled ln depth (0, 0 where
// none is), as float; one block (minima and maxima are exact in any order).
__global__ void guided_range_kernel(const double* __restrict__ pooled, int64_t pp, float* __restrict__ range) {
    __shared__ double lo[kBlock], hi[kBlock];
    double l = CUDART_INF, u = -CUDART_INF;
    for (int64_t i = threadIdx.x; i < pp; i += blockDim.x)
        if (pooled[i] > 0.5) {
            l = fmin(l, pooled[4 * pp + i]);
            u = fmax(u, pooled[4 * pp + i]);
        }
    lo[threadIdx.x] = l;
    hi[threadIdx.x] = u;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            lo[threadIdx.x] = fmin(lo[threadIdx.x], lo[threadIdx.x + half]);
            hi[threadIdx.x] = fmax(hi[threadIdx.x], hi[threadIdx.x + half]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const GuidedRange r = guided_range(lo[0], hi[0]);
        range[0] = r.qlo;
        range[1] = r.qhi;
    }
}

template <int K, typename Values>
__global__ void guided_hsum_kernel(const Values values, int hp, int wp, int r, double* __restrict__ hs) {
    const int64_t pp = static_cast<int64_t>(hp) * wp;
    ED_GRID_STRIDE(idx, pp) {
        double out[K];
        guided_hsum_at<K>(values, wp, r, idx / wp, static_cast<int>(idx % wp), out);
        for (int k = 0; k < K; ++k) hs[k * pp + idx] = out[k];
    }
}

__global__ void guided_fit_kernel(const double* __restrict__ hs, int hp, int wp, int r, double eps,
                                  float* __restrict__ fit) {
    const int64_t pp = static_cast<int64_t>(hp) * wp;
    ED_GRID_STRIDE(idx, pp) {
        double s[kGuidedPlanes];
        guided_vsum_at<kGuidedPlanes>(hs, hp, wp, r, idx / wp, static_cast<int>(idx % wp), s);
        const GuidedFit f = guided_solve(s, eps);
        fit[idx] = f.a0;
        fit[pp + idx] = f.a1;
        fit[2 * pp + idx] = f.a2;
        fit[3 * pp + idx] = f.b;
        fit[4 * pp + idx] = f.has;
    }
}

__global__ void guided_mean_kernel(const double* __restrict__ hs, const double* __restrict__ pooled, int hp, int wp,
                                   int r, float* __restrict__ coef) {
    const int64_t pp = static_cast<int64_t>(hp) * wp;
    ED_GRID_STRIDE(idx, pp) {
        double s[kMeanPlanes];
        guided_vsum_at<kMeanPlanes>(hs, hp, wp, r, idx / wp, static_cast<int>(idx % wp), s);
        for (int k = 0; k < 4; ++k) coef[k * pp + idx] = guided_coefficient(s[0], s[k + 1], k, pooled[idx]);
    }
}

__global__ void guided_frame_kernel(const float* __restrict__ coef, int hp, int wp, const uint8_t* __restrict__ image,
                                    const Entry* __restrict__ ytab, const Entry* __restrict__ xtab, int height,
                                    int width, const float* __restrict__ range, float scale, float valid_max,
                                    float* __restrict__ out, uint8_t* __restrict__ valid) {
    const int64_t pp = static_cast<int64_t>(hp) * wp;
    const float qlo = range[0], qhi = range[1];
    ED_GRID_STRIDE(idx, static_cast<int64_t>(height) * width) {
        const Entry ey = ytab[idx / width], ex = xtab[idx % width];
        out[idx] = guided_frame_pixel(coef, pp, wp, Tap{ey.lo, ey.hi, ey.frac}, Tap{ex.lo, ex.hi, ex.frac},
                                      image + 3 * idx, qlo, qhi, scale, valid_max, valid + idx);
    }
}

// Boxes travel to the device as kernel arguments, kBoxChunk at a time (2 KiB, inside the 4 KiB
// every architecture accepts): the driver copies arguments at launch, so no host buffer has to
// outlive the call and nothing waits, as a cudaMemcpyAsync from pageable memory may.
constexpr int kBoxChunk = 64;

struct BoxChunk {
    double v[4 * kBoxChunk];
};

__global__ void upload_boxes_kernel(BoxChunk chunk, int count, double* dst) {
    for (int i = threadIdx.x; i < 4 * count; i += blockDim.x) dst[i] = chunk.v[i];
}

// A memory pool per device, private to this module, that keeps up to kPoolKeep bytes between calls
// (the default pool's release threshold of 0 would hand the scratch back to the driver at every
// synchronisation and allocate it again next call). Created once, kept for the process.
constexpr uint64_t kPoolKeep = 64ull << 20;

cudaError_t module_pool(cudaMemPool_t* pool) {
    static std::mutex mutex;
    static std::vector<cudaMemPool_t> pools;  // by device index; null until first used
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess) return err;
    std::lock_guard<std::mutex> lock(mutex);
    if (pools.size() <= static_cast<size_t>(device)) pools.resize(device + 1, nullptr);
    if (!pools[device]) {
        cudaMemPoolProps props{};
        props.allocType = cudaMemAllocationTypePinned;
        props.location.type = cudaMemLocationTypeDevice;
        props.location.id = device;
        cudaMemPool_t created = nullptr;
        if ((err = cudaMemPoolCreate(&created, &props)) != cudaSuccess) return err;
        uint64_t keep = kPoolKeep;
        if ((err = cudaMemPoolSetAttribute(created, cudaMemPoolAttrReleaseThreshold, &keep)) != cudaSuccess) {
            cudaMemPoolDestroy(created);  // best effort: the set-attribute error is the one reported
            return err;
        }
        pools[device] = created;
    }
    *pool = pools[device];
    return cudaSuccess;
}

// Stream-ordered scratch: the boxes plus two tables of entries E, from the module's pool. release()
// frees it in stream order and reports the result; the destructor frees on error paths only.
template <typename E>
struct Scratch {
    void* base = nullptr;
    cudaStream_t stream;
    double* boxes = nullptr;
    E* ytab = nullptr;
    E* xtab = nullptr;
    void* extra = nullptr;  // extra_bytes after the tables, 16-byte aligned

    cudaError_t init(const double* host_boxes, int n, int64_t y_entries, int64_t x_entries, cudaStream_t s,
                     size_t extra_bytes = 0) {
        stream = s;
        const size_t box_bytes = static_cast<size_t>(n) * 4 * sizeof(double);
        const size_t tables = (box_bytes + static_cast<size_t>(y_entries + x_entries) * sizeof(E) + 15) / 16 * 16;
        const size_t total = tables + extra_bytes;
        cudaMemPool_t pool;
        cudaError_t err = module_pool(&pool);
        if (err != cudaSuccess) return err;
        if ((err = cudaMallocFromPoolAsync(&base, total, pool, stream)) != cudaSuccess) return err;
        boxes = static_cast<double*>(base);
        ytab = reinterpret_cast<E*>(static_cast<char*>(base) + box_bytes);
        xtab = ytab + y_entries;
        extra = static_cast<char*>(base) + tables;
        for (int first = 0; first < n; first += kBoxChunk) {
            const int count = n - first < kBoxChunk ? n - first : kBoxChunk;
            BoxChunk chunk;
            for (int i = 0; i < 4 * count; ++i) chunk.v[i] = host_boxes[4 * first + i];
            upload_boxes_kernel<<<1, 128, 0, stream>>>(chunk, count, boxes + 4 * first);
            if ((err = cudaGetLastError()) != cudaSuccess) return err;
        }
        return cudaSuccess;
    }
    cudaError_t release() {
        void* p = base;
        base = nullptr;
        return p ? cudaFreeAsync(p, stream) : cudaSuccess;
    }
    ~Scratch() {
        if (base) cudaFreeAsync(base, stream);  // already returning an error: this one adds nothing
    }
};

// Returns from the enclosing launcher with the first launch error.
#define ED_LAUNCHED()                                        \
    do {                                                     \
        const cudaError_t launch_err = cudaGetLastError();   \
        if (launch_err != cudaSuccess) return launch_err;    \
    } while (0)

// A crop's scratch: the n boxes on the device and, made from them there, each axis' sample table
// (and extra_bytes after them, Scratch::extra).
cudaError_t crop_tables(Scratch<Entry>& s, const double* boxes, int n, int out_h, int out_w, int src_h, int src_w,
                        cudaStream_t stream, size_t extra_bytes = 0) {
    cudaError_t err =
        s.init(boxes, n, static_cast<int64_t>(n) * out_h, static_cast<int64_t>(n) * out_w, stream, extra_bytes);
    if (err != cudaSuccess) return err;
    crop_table_kernel<<<blocks_for(int64_t{n} * out_h), kBlock, 0, stream>>>(s.boxes, n, 0, out_h, src_h, s.ytab);
    ED_LAUNCHED();
    crop_table_kernel<<<blocks_for(int64_t{n} * out_w), kBlock, 0, stream>>>(s.boxes, n, 1, out_w, src_w, s.xtab);
    ED_LAUNCHED();
    return cudaSuccess;
}

template <typename Out>
void launch_crop_rgb(const uint8_t* src, int src_w, const Scratch<Entry>& s, int n, int out_h, int out_w,
                     const Affine3& a, void* out, cudaStream_t stream) {
    const int64_t total = static_cast<int64_t>(n) * out_h * out_w;
    crop_rgb_kernel<Out><<<blocks_for(total), kBlock, 0, stream>>>(src, src_w, s.ytab, s.xtab, n, out_h, out_w, a,
                                                                   static_cast<Out*>(out));
}

template <typename In, typename Out>
void launch_crop_map(const void* src, int c, int src_h, int src_w, const Scratch<Entry>& s, int n, int out_h, int out_w,
                     void* out, cudaStream_t stream) {
    const int64_t total = static_cast<int64_t>(n) * c * out_h * out_w;
    crop_map_kernel<In, Out><<<blocks_for(total), kBlock, 0, stream>>>(
        static_cast<const In*>(src), c, src_h, src_w, s.ytab, s.xtab, n, out_h, out_w, static_cast<Out*>(out));
}

}  // namespace

cudaError_t crop_rgb_cuda(const uint8_t* src, int src_h, int src_w, const double* boxes, int n, int out_h,
                          int out_w, const float* scale, const float* bias, void* out, bool half,
                          cudaStream_t stream) {
    Scratch<Entry> s;
    cudaError_t err = crop_tables(s, boxes, n, out_h, out_w, src_h, src_w, stream);
    if (err != cudaSuccess) return err;
    Affine3 a;
    for (int ch = 0; ch < 3; ++ch) {
        a.scale[ch] = scale[ch];
        a.bias[ch] = bias[ch];
    }
    if (half)
        launch_crop_rgb<uint16_t>(src, src_w, s, n, out_h, out_w, a, out, stream);
    else
        launch_crop_rgb<float>(src, src_w, s, n, out_h, out_w, a, out, stream);
    ED_LAUNCHED();
    return s.release();
}

cudaError_t crop_map_cuda(const void* src, bool src_half, int c, int src_h, int src_w, const double* boxes,
                          int n, int out_h, int out_w, void* out, bool half, cudaStream_t stream) {
    Scratch<Entry> s;
    cudaError_t err = crop_tables(s, boxes, n, out_h, out_w, src_h, src_w, stream);
    if (err != cudaSuccess) return err;
    if (src_half && half)
        launch_crop_map<uint16_t, uint16_t>(src, c, src_h, src_w, s, n, out_h, out_w, out, stream);
    else if (src_half)
        launch_crop_map<uint16_t, float>(src, c, src_h, src_w, s, n, out_h, out_w, out, stream);
    else if (half)
        launch_crop_map<float, uint16_t>(src, c, src_h, src_w, s, n, out_h, out_w, out, stream);
    else
        launch_crop_map<float, float>(src, c, src_h, src_w, s, n, out_h, out_w, out, stream);
    ED_LAUNCHED();
    return s.release();
}

cudaError_t crop_maps_cuda(const MapCrop* maps, int count, bool src_half, const double* boxes, int n, bool half,
                           cudaStream_t stream) {
    if (count < 1 || count > kMaxMapCrops) return cudaErrorInvalidValue;
    int64_t tables = 0, outs = 0;
    const MapJobs jobs = map_jobs(maps, count, n, &tables, &outs);
    Scratch<Entry> s;  // its "y table" holds every map's two tables; no x table
    cudaError_t err = s.init(boxes, count * n, tables, 0, stream);
    if (err != cudaSuccess) return err;
    crop_maps_table_kernel<<<blocks_for(tables), kBlock, 0, stream>>>(jobs, s.boxes, tables, s.ytab);
    ED_LAUNCHED();
    if (src_half && half)
        crop_maps_kernel<uint16_t, uint16_t><<<blocks_for(outs), kBlock, 0, stream>>>(jobs, s.ytab, outs);
    else if (src_half)
        crop_maps_kernel<uint16_t, float><<<blocks_for(outs), kBlock, 0, stream>>>(jobs, s.ytab, outs);
    else if (half)
        crop_maps_kernel<float, uint16_t><<<blocks_for(outs), kBlock, 0, stream>>>(jobs, s.ytab, outs);
    else
        crop_maps_kernel<float, float><<<blocks_for(outs), kBlock, 0, stream>>>(jobs, s.ytab, outs);
    ED_LAUNCHED();
    return s.release();
}

cudaError_t window_cuda(int h, int w, int kind, float* out, cudaStream_t stream) {
    window_kernel<<<blocks_for(int64_t{h} * w), kBlock, 0, stream>>>(h, w, kind, out);
    return cudaGetLastError();
}

namespace {

// The grid stitch when the layout allows it (*taken false otherwise, nothing launched).
cudaError_t stitch_grid_cuda(const void* tiles, bool tiles_half, int n, int c, int th, int tw, const double* boxes,
                             int height, int width, int kind, float* out, cudaStream_t stream, bool* taken) {
    GridPlan plan;
    *taken = grid_stitch_plan(boxes, n, height, width, &plan);
    if (!*taken) return cudaSuccess;
    Scratch<GridEntry> s;
    cudaError_t err = s.init(nullptr, 0, int64_t{kGridCover} * height, int64_t{kGridCover} * width, stream);
    if (err != cudaSuccess) return err;
    grid_axis_kernel<<<blocks_for(height), kBlock, 0, stream>>>(plan.rows, plan.nrows, th, height, kind, s.ytab);
    ED_LAUNCHED();
    grid_axis_kernel<<<blocks_for(width), kBlock, 0, stream>>>(plan.cols, plan.ncols, tw, width, kind, s.xtab);
    ED_LAUNCHED();
    const int64_t total = static_cast<int64_t>(height) * width;
    if (tiles_half)
        grid_stitch_kernel<uint16_t><<<blocks_for(total), kBlock, 0, stream>>>(
            static_cast<const uint16_t*>(tiles), c, th, tw, plan.boxes, plan.ncols, s.ytab, s.xtab, height, width, out);
    else
        grid_stitch_kernel<float><<<blocks_for(total), kBlock, 0, stream>>>(
            static_cast<const float*>(tiles), c, th, tw, plan.boxes, plan.ncols, s.ytab, s.xtab, height, width, out);
    ED_LAUNCHED();
    return s.release();
}

}  // namespace

cudaError_t stitch_cuda(const void* tiles, bool tiles_half, int n, int c, int th, int tw, const double* boxes,
                        int height, int width, int kind, float* out, cudaStream_t stream) {
    bool grid = false;
    const cudaError_t grid_err =
        stitch_grid_cuda(tiles, tiles_half, n, c, th, tw, boxes, height, width, kind, out, stream, &grid);
    if (grid) return grid_err;
    Scratch<Entry> s;
    cudaError_t err = s.init(boxes, n, static_cast<int64_t>(n) * height, static_cast<int64_t>(n) * width, stream);
    if (err != cudaSuccess) return err;
    stitch_table_kernel<<<blocks_for(int64_t{n} * height), kBlock, 0, stream>>>(s.boxes, n, 0, th, height, kind, s.ytab);
    ED_LAUNCHED();
    stitch_table_kernel<<<blocks_for(int64_t{n} * width), kBlock, 0, stream>>>(s.boxes, n, 1, tw, width, kind, s.xtab);
    ED_LAUNCHED();
    const int64_t total = static_cast<int64_t>(height) * width;
    if (tiles_half)
        stitch_kernel<uint16_t><<<blocks_for(total), kBlock, 0, stream>>>(static_cast<const uint16_t*>(tiles), n, c, th,
                                                                          tw, s.ytab, s.xtab, height, width, out);
    else
        stitch_kernel<float><<<blocks_for(total), kBlock, 0, stream>>>(static_cast<const float*>(tiles), n, c, th, tw,
                                                                       s.ytab, s.xtab, height, width, out);
    ED_LAUNCHED();
    return s.release();
}

cudaError_t joint_upsample_cuda(const float* depth, const float* guide, int h, int w, const uint8_t* image, int height,
                                int width, float sigma, float scale, float valid_max, float* out, uint8_t* valid,
                                cudaStream_t stream) {
    const double whole[4] = {0.0, 0.0, static_cast<double>(h), static_cast<double>(w)};
    Scratch<Entry> s;
    cudaError_t err = crop_tables(s, whole, 1, height, width, h, w, stream);
    if (err != cudaSuccess) return err;
    // The CPU engine's colour scale, computed the same way.
    const float inv2s2 = static_cast<float>(1.0 / (2.0 * static_cast<double>(sigma) * sigma));
    joint_kernel<<<blocks_for(static_cast<int64_t>(height) * width), kBlock, 0, stream>>>(
        depth, guide, w, static_cast<int64_t>(h) * w, image, s.ytab, s.xtab, height, width, inv2s2, scale, valid_max,
        out, valid);
    ED_LAUNCHED();
    return s.release();
}

cudaError_t guided_upsample_cuda(const float* depth, const float* guide, int h, int w, int step, const uint8_t* image,
                                 int height, int width, int radius, double eps, float scale, float valid_max, float* out,
                                 uint8_t* valid, cudaStream_t stream) {
    const int hp = (h + step - 1) / step, wp = (w + step - 1) / step;
    const int64_t pp = static_cast<int64_t>(hp) * wp;
    // pooled planes (5 double), horizontal sums (14 double, then the mean's 5), the fit (5 float),
    // the coefficients (4 float) and the clamp range (2 float), after the crop tables
    const size_t extra = static_cast<size_t>(pp) * (8 * (5 + kGuidedPlanes) + 4 * (5 + 4)) + 16;
    const double whole[4] = {0.0, 0.0, static_cast<double>(hp), static_cast<double>(wp)};
    Scratch<Entry> s;
    cudaError_t err = crop_tables(s, whole, 1, height, width, hp, wp, stream, extra);
    if (err != cudaSuccess) return err;
    double* pooled = static_cast<double*>(s.extra);
    double* hs = pooled + 5 * pp;
    float* fit = reinterpret_cast<float*>(hs + kGuidedPlanes * pp);
    float* coef = fit + 5 * pp;
    float* range = coef + 4 * pp;
    guided_pool_kernel<<<blocks_for(pp), kBlock, 0, stream>>>(depth, guide, h, w, step, hp, wp, pooled);
    ED_LAUNCHED();
    guided_range_kernel<<<1, kBlock, 0, stream>>>(pooled, pp, range);
    ED_LAUNCHED();
    guided_hsum_kernel<kGuidedPlanes><<<blocks_for(pp), kBlock, 0, stream>>>(FitValues{pooled, pp}, hp, wp, radius, hs);
    ED_LAUNCHED();
    guided_fit_kernel<<<blocks_for(pp), kBlock, 0, stream>>>(hs, hp, wp, radius, eps, fit);
    ED_LAUNCHED();
    guided_hsum_kernel<kMeanPlanes><<<blocks_for(pp), kBlock, 0, stream>>>(MeanValues{fit, pp}, hp, wp, radius, hs);
    ED_LAUNCHED();
    guided_mean_kernel<<<blocks_for(pp), kBlock, 0, stream>>>(hs, pooled, hp, wp, radius, coef);
    ED_LAUNCHED();
    guided_frame_kernel<<<blocks_for(static_cast<int64_t>(height) * width), kBlock, 0, stream>>>(
        coef, hp, wp, image, s.ytab, s.xtab, height, width, range, scale, valid_max, out, valid);
    ED_LAUNCHED();
    return s.release();
}

cudaError_t finish_cuda(float* depth, int64_t n, float scale, float valid_max, uint8_t* valid, cudaStream_t stream) {
    finish_kernel<<<blocks_for(n), kBlock, 0, stream>>>(depth, n, scale, valid_max, valid);
    return cudaGetLastError();
}

}  // namespace edgedepth
