// Runs the CUDA engine's grid stitch (csrc/grid_stitch.hpp) on the host, as its kernels do on a GPU:
// the plan, both axis tables, then every output pixel. For tests/test_cuda_code_on_host.py.
//
// Usage: grid_stitch_host IN OUT. IN holds int32 n, c, th, tw, height, width, kind, half; then the
// (n, 4) float64 boxes; then the (n, c, th, tw) tiles, float32 or (half = 1) binary16. OUT gets the
// (c, height, width) float32 result. Exit status 3: the plan refused the boxes (not a grid it takes).
#include <cstdint>
#include <cstdio>
#include <vector>

#include "grid_stitch.hpp"

using namespace edgedepth;

template <typename In>
static std::vector<float> run(const std::vector<In>& tiles, int c, int th, int tw, const GridPlan& plan, int height,
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

template <typename T>
static bool read(std::FILE* f, std::vector<T>* v, size_t count) {
    v->resize(count);
    return std::fread(v->data(), sizeof(T), count, f) == count;
}

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    std::FILE* in = std::fopen(argv[1], "rb");
    if (!in) return 2;
    std::vector<int32_t> h;
    std::vector<double> boxes;
    if (!read(in, &h, 8)) return 2;
    const int n = h[0], c = h[1], th = h[2], tw = h[3], height = h[4], width = h[5];
    const size_t count = static_cast<size_t>(n) * c * th * tw;
    if (!read(in, &boxes, static_cast<size_t>(n) * 4)) return 2;
    GridPlan plan;
    if (!grid_stitch_plan(boxes.data(), n, height, width, &plan)) return 3;
    std::vector<float> out;
    if (h[7]) {
        std::vector<uint16_t> tiles;
        if (!read(in, &tiles, count)) return 2;
        out = run(tiles, c, th, tw, plan, height, width, static_cast<Window>(h[6]));
    } else {
        std::vector<float> tiles;
        if (!read(in, &tiles, count)) return 2;
        out = run(tiles, c, th, tw, plan, height, width, static_cast<Window>(h[6]));
    }
    std::fclose(in);
    std::FILE* f = std::fopen(argv[2], "wb");
    if (!f || std::fwrite(out.data(), sizeof(float), out.size(), f) != out.size()) return 2;
    return std::fclose(f) == 0 ? 0 : 2;
}
