// Runs the CUDA engine's per-pixel code on the host, as its kernels do on a GPU, for
// tests/test_cuda_code_on_host.py. Usage: cuda_code_host grid|joint|guided|maps IN OUT.
//
// grid: the grid stitch (csrc/grid_stitch.hpp): the plan, both axis tables, then every output pixel.
//   IN holds int32 n, c, th, tw, height, width, kind, half; then the (n, 4) float64 boxes; then the
//   (n, c, th, tw) tiles, float32 or (half = 1) binary16. OUT gets the (c, height, width) float32
//   result. Exit status 3: the plan refused the boxes (not a grid it takes).
// joint: the joint upsampling (csrc/tile_math.hpp: joint_taps, joint_blend, finish_value). IN holds
//   int32 h, w, height, width; float32 sigma, scale, valid_max; the (h, w) float32 depth, the
//   (3, h, w) float32 guide and the (height, width, 3) uint8 image. OUT gets the (height, width)
//   float32 depth and then the (height, width) validity bytes.
// guided: the guided-filter upsampling (csrc/guided_math.hpp), kernel by kernel as
//   tile_engine_cuda.cu guided_upsample_cuda launches them. IN holds int32 h, w, height, width, step,
//   radius; float64 eps; float32 scale, valid_max; then depth, guide and image as for joint. OUT as
//   for joint.
// maps: several maps cut at the same boxes in one go (csrc/map_crops.hpp, crop_maps_cuda's two
//   kernels). IN holds int32 count, n, src_half, half; int32 c, src_h, src_w, out_h, out_w per map;
//   the (count, n, 4) float64 boxes; then each map, float32 or (src_half = 1) binary16. OUT gets
//   each map's (n, c, out_h, out_w) crops in turn, float32 or (half = 1) binary16.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "grid_stitch.hpp"
#include "guided_math.hpp"
#include "map_crops.hpp"
#include "tile_math.hpp"

using namespace edgedepth;

namespace {

template <typename T>
bool read(std::FILE* f, std::vector<T>* v, size_t count) {
    v->resize(count);
    return std::fread(v->data(), sizeof(T), count, f) == count;
}

template <typename T>
bool write(std::FILE* f, const std::vector<T>& v) {
    return std::fwrite(v.data(), sizeof(T), v.size(), f) == v.size();
}

template <typename In>
std::vector<float> grid_stitch(const std::vector<In>& tiles, int c, int th, int tw, const GridPlan& plan, int height,
                               int width, Window kind) {
    std::vector<GridEntry> ytab(static_cast<size_t>(height) * kGridCover), xtab(static_cast<size_t>(width) * kGridCover);
    for (int y = 0; y < height; ++y) grid_axis_entries(plan.rows, plan.nrows, th, height, kind, y, &ytab[y * kGridCover]);
    for (int x = 0; x < width; ++x) grid_axis_entries(plan.cols, plan.ncols, tw, width, kind, x, &xtab[x * kGridCover]);
    const int64_t plane = static_cast<int64_t>(height) * width;
    std::vector<float> out(static_cast<size_t>(plane) * c);
    for (int64_t idx = 0; idx < plane; ++idx)
        for (int ch = 0; ch < c; ++ch)
            out[ch * plane + idx] = grid_stitch_pixel(tiles.data(), c, th, tw, plan.boxes, plan.ncols,
                                                      &ytab[(idx / width) * kGridCover], &xtab[(idx % width) * kGridCover], ch);
    return out;
}

int grid(std::FILE* in, std::FILE* out) {
    std::vector<int32_t> h;
    std::vector<double> boxes;
    if (!read(in, &h, 8)) return 2;
    const int n = h[0], c = h[1], th = h[2], tw = h[3], height = h[4], width = h[5];
    const size_t count = static_cast<size_t>(n) * c * th * tw;
    if (!read(in, &boxes, static_cast<size_t>(n) * 4)) return 2;
    GridPlan plan;
    if (!grid_stitch_plan(boxes.data(), n, height, width, &plan)) return 3;
    std::vector<float> result;
    if (h[7]) {
        std::vector<uint16_t> tiles;
        if (!read(in, &tiles, count)) return 2;
        result = grid_stitch(tiles, c, th, tw, plan, height, width, static_cast<Window>(h[6]));
    } else {
        std::vector<float> tiles;
        if (!read(in, &tiles, count)) return 2;
        result = grid_stitch(tiles, c, th, tw, plan, height, width, static_cast<Window>(h[6]));
    }
    return write(out, result) ? 0 : 2;
}

int joint(std::FILE* in, std::FILE* out) {
    std::vector<int32_t> size;
    std::vector<float> args, depth, guide;
    std::vector<uint8_t> image;
    if (!read(in, &size, 4) || !read(in, &args, 3)) return 2;
    const int h = size[0], w = size[1], height = size[2], width = size[3];
    const int64_t plane = static_cast<int64_t>(h) * w, frame = static_cast<int64_t>(height) * width;
    if (!read(in, &depth, plane) || !read(in, &guide, 3 * plane) || !read(in, &image, 3 * frame)) return 2;
    // The CUDA launcher's colour scale and crop tables (crop_table_kernel: crop_tap of the whole map).
    const float inv2s2 = static_cast<float>(1.0 / (2.0 * static_cast<double>(args[0]) * args[0]));
    std::vector<float> result(frame);
    std::vector<uint8_t> valid(frame);
    for (int64_t idx = 0; idx < frame; ++idx) {
        const Tap ty = crop_tap(0.0, h, height, static_cast<int>(idx / width), h);
        const Tap tx = crop_tap(0.0, w, width, static_cast<int>(idx % width), w);
        const JointTaps t = joint_taps(depth.data(), guide.data(), w, plane, ty, tx);
        result[idx] = finish_value(joint_blend(t, &image[3 * idx], tx.frac, ty.frac, inv2s2), args[1], args[2], &valid[idx]);
    }
    return write(out, result) && write(out, valid) ? 0 : 2;
}

int guided(std::FILE* in, std::FILE* out) {
    std::vector<int32_t> size;
    std::vector<double> eps;
    std::vector<float> args, depth, guide;
    std::vector<uint8_t> image;
    if (!read(in, &size, 6) || !read(in, &eps, 1) || !read(in, &args, 2)) return 2;
    const int h = size[0], w = size[1], height = size[2], width = size[3], step = size[4], r = size[5];
    const int64_t plane = static_cast<int64_t>(h) * w, frame = static_cast<int64_t>(height) * width;
    if (!read(in, &depth, plane) || !read(in, &guide, 3 * plane) || !read(in, &image, 3 * frame)) return 2;
    const int hp = (h + step - 1) / step, wp = (w + step - 1) / step;
    const int64_t pp = static_cast<int64_t>(hp) * wp;
    std::vector<double> pooled(5 * pp), hs(kGuidedPlanes * pp), v(kGuidedPlanes);
    std::vector<float> fit(5 * pp), coef(4 * pp);
    for (int64_t idx = 0; idx < pp; ++idx) {  // guided_pool_kernel
        guided_pool_pixel(depth.data(), guide.data(), h, w, step, static_cast<int>(idx / wp), static_cast<int>(idx % wp),
                          v.data());
        for (int k = 0; k < 5; ++k) pooled[k * pp + idx] = v[k];
    }
    double lo = 1.0 / 0.0, hi = -lo;  // guided_range_kernel
    for (int64_t i = 0; i < pp; ++i)
        if (pooled[i] > 0.5) {
            lo = std::min(lo, pooled[4 * pp + i]);
            hi = std::max(hi, pooled[4 * pp + i]);
        }
    const GuidedRange range = guided_range(lo, hi);
    for (int64_t idx = 0; idx < pp; ++idx) {  // guided_hsum_kernel<kGuidedPlanes>
        guided_hsum_at<kGuidedPlanes>(FitValues{pooled.data(), pp}, wp, r, idx / wp, static_cast<int>(idx % wp), v.data());
        for (int k = 0; k < kGuidedPlanes; ++k) hs[k * pp + idx] = v[k];
    }
    for (int64_t idx = 0; idx < pp; ++idx) {  // guided_fit_kernel
        guided_vsum_at<kGuidedPlanes>(hs.data(), hp, wp, r, idx / wp, static_cast<int>(idx % wp), v.data());
        const GuidedFit f = guided_solve(v.data(), eps[0]);
        const float values[5] = {f.a0, f.a1, f.a2, f.b, f.has};
        for (int k = 0; k < 5; ++k) fit[k * pp + idx] = values[k];
    }
    for (int64_t idx = 0; idx < pp; ++idx) {  // guided_hsum_kernel<kMeanPlanes>
        guided_hsum_at<kMeanPlanes>(MeanValues{fit.data(), pp}, wp, r, idx / wp, static_cast<int>(idx % wp), v.data());
        for (int k = 0; k < kMeanPlanes; ++k) hs[k * pp + idx] = v[k];
    }
    for (int64_t idx = 0; idx < pp; ++idx) {  // guided_mean_kernel
        guided_vsum_at<kMeanPlanes>(hs.data(), hp, wp, r, idx / wp, static_cast<int>(idx % wp), v.data());
        for (int k = 0; k < 4; ++k) coef[k * pp + idx] = guided_coefficient(v[0], v[k + 1], k, pooled[idx]);
    }
    std::vector<float> result(frame);
    std::vector<uint8_t> valid(frame);
    for (int64_t idx = 0; idx < frame; ++idx) {  // guided_frame_kernel with crop_table_kernel's taps
        const Tap ty = crop_tap(0.0, hp, height, static_cast<int>(idx / width), hp);
        const Tap tx = crop_tap(0.0, wp, width, static_cast<int>(idx % width), wp);
        result[idx] = guided_frame_pixel(coef.data(), pp, wp, ty, tx, &image[3 * idx], range.qlo, range.qhi, args[0],
                                         args[1], &valid[idx]);
    }
    return write(out, result) && write(out, valid) ? 0 : 2;
}

}  // namespace

template <typename In, typename Out>
int maps_as(std::FILE* in, std::FILE* out, std::vector<MapCrop> maps, int n) {
    const int count = static_cast<int>(maps.size());
    std::vector<double> boxes;
    if (!read(in, &boxes, static_cast<size_t>(count) * n * 4)) return 2;
    std::vector<std::vector<In>> srcs(count);
    std::vector<std::vector<Out>> outs(count);
    for (int k = 0; k < count; ++k) {
        MapCrop& m = maps[k];
        if (!read(in, &srcs[k], static_cast<size_t>(m.c) * m.src_h * m.src_w)) return 2;
        outs[k].resize(static_cast<size_t>(n) * m.c * m.out_h * m.out_w);
        m.src = srcs[k].data();
        m.out = outs[k].data();
    }
    // As crop_maps_cuda launches them: the shared table, then every output element.
    int64_t tables = 0, total = 0;
    const MapJobs jobs = map_jobs(maps.data(), count, n, &tables, &total);
    std::vector<Entry> table(tables);
    for (int64_t idx = 0; idx < tables; ++idx) table[idx] = map_table_entry(jobs, boxes.data(), idx);
    for (int64_t idx = 0; idx < total; ++idx) map_crop_element<In, Out>(jobs, table.data(), idx);
    for (const auto& o : outs)
        if (!write(out, o)) return 2;
    return 0;
}

int maps(std::FILE* in, std::FILE* out) {
    std::vector<int32_t> head, sizes;
    if (!read(in, &head, 4)) return 2;
    const int count = head[0], n = head[1];
    if (count < 1 || count > kMaxMapCrops || n < 1 || !read(in, &sizes, static_cast<size_t>(count) * 5)) return 2;
    std::vector<MapCrop> maps(count);
    for (int k = 0; k < count; ++k)
        maps[k] = MapCrop{nullptr, nullptr, sizes[5 * k], sizes[5 * k + 1], sizes[5 * k + 2], sizes[5 * k + 3],
                          sizes[5 * k + 4]};
    if (head[2] && head[3]) return maps_as<uint16_t, uint16_t>(in, out, maps, n);
    if (head[2]) return maps_as<uint16_t, float>(in, out, maps, n);
    if (head[3]) return maps_as<float, uint16_t>(in, out, maps, n);
    return maps_as<float, float>(in, out, maps, n);
}

int main(int argc, char** argv) {
    if (argc != 4) return 2;
    std::FILE* in = std::fopen(argv[2], "rb");
    std::FILE* out = std::fopen(argv[3], "wb");
    if (!in || !out) return 2;
    const int status = std::strcmp(argv[1], "grid") == 0    ? grid(in, out)
                       : std::strcmp(argv[1], "joint") == 0 ? joint(in, out)
                       : std::strcmp(argv[1], "guided") == 0 ? guided(in, out)
                       : std::strcmp(argv[1], "maps") == 0   ? maps(in, out)
                                                             : 2;
    std::fclose(in);
    return std::fclose(out) == 0 ? status : 2;
}
