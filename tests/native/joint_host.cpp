// Runs the CUDA engine's joint upsampling per pixel (csrc/tile_math.hpp: joint_taps, joint_blend,
// finish_value) on the host, as its kernel does on a GPU. For tests/test_cuda_code_on_host.py.
//
// Usage: joint_host IN OUT. IN holds int32 h, w, height, width; float32 sigma, scale, valid_max; the
// (h, w) float32 depth, the (3, h, w) float32 guide and the (height, width, 3) uint8 image. OUT gets
// the (height, width) float32 depth and then the (height, width) validity bytes.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "tile_math.hpp"

using namespace edgedepth;

template <typename T>
static bool read(std::FILE* f, std::vector<T>* v, size_t count) {
    v->resize(count);
    return std::fread(v->data(), sizeof(T), count, f) == count;
}

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    std::FILE* in = std::fopen(argv[1], "rb");
    if (!in) return 2;
    std::vector<int32_t> size;
    std::vector<float> args, depth, guide;
    std::vector<uint8_t> image;
    if (!read(in, &size, 4) || !read(in, &args, 3)) return 2;
    const int h = size[0], w = size[1], height = size[2], width = size[3];
    const int64_t plane = static_cast<int64_t>(h) * w, frame = static_cast<int64_t>(height) * width;
    if (!read(in, &depth, plane) || !read(in, &guide, 3 * plane) || !read(in, &image, 3 * frame)) return 2;
    std::fclose(in);
    // The CUDA launcher's colour scale and crop tables (crop_table_kernel: crop_tap of the whole map).
    const float inv2s2 = static_cast<float>(1.0 / (2.0 * static_cast<double>(args[0]) * args[0]));
    std::vector<float> out(frame);
    std::vector<uint8_t> valid(frame);
    for (int64_t idx = 0; idx < frame; ++idx) {
        const Tap ty = crop_tap(0.0, h, height, static_cast<int>(idx / width), h);
        const Tap tx = crop_tap(0.0, w, width, static_cast<int>(idx % width), w);
        const JointTaps t = joint_taps(depth.data(), guide.data(), w, plane, ty, tx);
        out[idx] = finish_value(joint_blend(t, &image[3 * idx], tx.frac, ty.frac, inv2s2), args[1], args[2], &valid[idx]);
    }
    std::FILE* f = std::fopen(argv[2], "wb");
    if (!f || std::fwrite(out.data(), 4, frame, f) != static_cast<size_t>(frame) ||
        std::fwrite(valid.data(), 1, frame, f) != static_cast<size_t>(frame))
        return 2;
    return std::fclose(f) == 0 ? 0 : 2;
}
