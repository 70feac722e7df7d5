// edgedepth._native: the CPU tile engine for Python (numpy in, numpy out, GIL released).
// Every argument is checked here before the engine runs; nothing is converted or copied
// implicitly (edgedepth/tiling.py makes arrays contiguous and picks dtypes).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "checks.hpp"
#include "tile_engine_cpu.hpp"

namespace py = pybind11;
using namespace edgedepth;

namespace {

enum class DType { U8, F16, F32, F64, Other };

DType dtype_of(const py::array& a) {
    const py::dtype d = a.dtype();
    if (d.kind() == 'u' && d.itemsize() == 1) return DType::U8;
    if (d.kind() == 'f' && d.itemsize() == 2) return DType::F16;
    if (d.kind() == 'f' && d.itemsize() == 4) return DType::F32;
    if (d.kind() == 'f' && d.itemsize() == 8) return DType::F64;
    return DType::Other;
}

void check_array(const char* name, const py::array& a, py::ssize_t ndim) {
    if (a.ndim() != ndim) fail(std::string(name) + " must have " + std::to_string(ndim) + " dimensions, got " + std::to_string(a.ndim()));
    if (!(a.flags() & py::array::c_style)) fail(std::string(name) + " must be C-contiguous");
    for (py::ssize_t i = 0; i < ndim; ++i)
        if (a.shape(i) <= 0) fail(std::string(name) + " has an empty dimension " + std::to_string(i));
}

// Boxes (N, 4) float64, copied and checked (checks.hpp, checked_box_copy).
std::vector<double> checked_boxes(const py::array& boxes, int64_t frame_h, int64_t frame_w) {
    check_array("boxes", boxes, 2);
    if (dtype_of(boxes) != DType::F64) fail("boxes must be float64");
    if (boxes.shape(1) != 4) fail("boxes must have shape (N, 4)");
    return checked_box_copy("boxes", static_cast<const double*>(boxes.data()), boxes.shape(0), frame_h, frame_w);
}

py::array empty_out(bool half, std::initializer_list<py::ssize_t> shape) {
    return py::array(half ? py::dtype("float16") : py::dtype("float32"), std::vector<py::ssize_t>(shape));
}

// The caller's output array when one is given (checked: dtype, shape, C order, writeable, not
// overlapping the source), else a new one. Reusing one spares a large output its fresh pages.
py::array output_for(const py::object& out, const py::array& src, bool half, std::initializer_list<py::ssize_t> shape) {
    if (out.is_none()) return empty_out(half, shape);
    if (!py::isinstance<py::array>(out)) fail("out must be a numpy array or None");
    py::array o = py::reinterpret_borrow<py::array>(out);
    if (dtype_of(o) != (half ? DType::F16 : DType::F32)) fail(std::string("out must be ") + (half ? "float16" : "float32"));
    const std::vector<py::ssize_t> want(shape);
    if (o.ndim() != static_cast<py::ssize_t>(want.size()) || !std::equal(want.begin(), want.end(), o.shape()))
        fail("out has the wrong shape for these arguments");
    if (!(o.flags() & py::array::c_style)) fail("out must be C-contiguous");
    if (!o.writeable()) fail("out must be writeable");
    const auto* s0 = static_cast<const char*>(src.data());
    const auto* o0 = static_cast<const char*>(o.data());
    if (o0 < s0 + src.nbytes() && s0 < o0 + o.nbytes()) fail("out must not overlap src");
    return o;
}

py::array crop_rgb(const py::array& src, const py::array& boxes, int out_h, int out_w,
                   std::array<float, 3> scale, std::array<float, 3> bias, bool half, int threads,
                   const py::object& out_arg) {
    check_array("src", src, 3);
    if (dtype_of(src) != DType::U8 || src.shape(2) != 3) fail("src must be an (H, W, 3) uint8 RGB image");
    check_side("out_h", out_h);
    check_side("out_w", out_w);
    check_threads(threads);
    const int src_h = check_side("src height", src.shape(0)), src_w = check_side("src width", src.shape(1));
    const std::vector<double> box_copy = checked_boxes(boxes, src_h, src_w);
    const double* bx = box_copy.data();
    const int n = static_cast<int>(boxes.shape(0));
    py::array out = output_for(out_arg, src, half, {n, 3, out_h, out_w});
    const auto* s = static_cast<const uint8_t*>(src.data());
    void* o = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        if (half)
            crop_rgb_cpu(s, src_h, src_w, bx, n, out_h, out_w, scale.data(), bias.data(), static_cast<uint16_t*>(o), threads);
        else
            crop_rgb_cpu(s, src_h, src_w, bx, n, out_h, out_w, scale.data(), bias.data(), static_cast<float*>(o), threads);
    }
    return out;
}

py::array crop_map(const py::array& src, const py::array& boxes, int out_h, int out_w, bool half, int threads,
                   const py::object& out_arg) {
    check_array("src", src, 3);
    const DType dt = dtype_of(src);
    if (dt != DType::F32 && dt != DType::F16) fail("src must be a (C, H, W) float32 or float16 map");
    check_side("out_h", out_h);
    check_side("out_w", out_w);
    check_threads(threads);
    const int c = check_side("src channels", src.shape(0));
    const int src_h = check_side("src height", src.shape(1)), src_w = check_side("src width", src.shape(2));
    const std::vector<double> box_copy = checked_boxes(boxes, src_h, src_w);
    const double* bx = box_copy.data();
    const int n = static_cast<int>(boxes.shape(0));
    py::array out = output_for(out_arg, src, half, {n, c, out_h, out_w});
    const void* s = src.data();
    void* o = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        if (dt == DType::F32 && !half)
            crop_map_cpu(static_cast<const float*>(s), c, src_h, src_w, bx, n, out_h, out_w, static_cast<float*>(o), threads);
        else if (dt == DType::F32)
            crop_map_cpu(static_cast<const float*>(s), c, src_h, src_w, bx, n, out_h, out_w, static_cast<uint16_t*>(o), threads);
        else if (!half)
            crop_map_cpu(static_cast<const uint16_t*>(s), c, src_h, src_w, bx, n, out_h, out_w, static_cast<float*>(o), threads);
        else
            crop_map_cpu(static_cast<const uint16_t*>(s), c, src_h, src_w, bx, n, out_h, out_w, static_cast<uint16_t*>(o), threads);
    }
    return out;
}

py::array window(int h, int w, int kind) {
    check_side("h", h);
    check_side("w", w);
    const Window k = check_window(kind);
    py::array out = empty_out(false, {h, w});
    window_cpu(h, w, k, static_cast<float*>(out.mutable_data()));
    return out;
}

// Checks the stitch's arguments (before any memory is touched) and runs it into a new (c, height,
// width) float32 array, finishing each row on the way when `finish` is given.
py::array run_stitch(const py::array& tiles, const py::array& boxes, int height, int width, int kind, int threads,
                     Finish* finish, py::array* valid, const py::object& out_arg = py::none()) {
    check_array("tiles", tiles, 4);
    const DType dt = dtype_of(tiles);
    if (dt != DType::F32 && dt != DType::F16) fail("tiles must be (N, C, th, tw) float32 or float16");
    check_side("height", height);
    check_side("width", width);
    check_threads(threads);
    const Window k = check_window(kind);
    const std::vector<double> box_copy = checked_boxes(boxes, height, width);
    const double* bx = box_copy.data();
    if (boxes.shape(0) != tiles.shape(0))
        fail("tiles has " + std::to_string(tiles.shape(0)) + " tiles but boxes has " + std::to_string(boxes.shape(0)) + " rows");
    const int n = check_side("number of tiles", tiles.shape(0)), c = check_side("tile channels", tiles.shape(1));
    const int th = check_side("tile height", tiles.shape(2)), tw = check_side("tile width", tiles.shape(3));
    if (finish && c != 1) fail("a finished stitch takes one-channel (depth) tiles, got " + std::to_string(c) + " channels");
    py::array out = output_for(out_arg, tiles, false, {c, height, width});
    if (finish) {
        *valid = py::array(py::dtype("bool"), std::vector<py::ssize_t>{height, width});
        finish->valid = static_cast<uint8_t*>(valid->mutable_data());
    }
    const void* t = tiles.data();
    auto* o = static_cast<float*>(out.mutable_data());
    {
        py::gil_scoped_release nogil;
        if (dt == DType::F32)
            stitch_cpu(static_cast<const float*>(t), n, c, th, tw, bx, height, width, k, o, threads, finish);
        else
            stitch_cpu(static_cast<const uint16_t*>(t), n, c, th, tw, bx, height, width, k, o, threads, finish);
    }
    return out;
}

py::array stitch(const py::array& tiles, const py::array& boxes, int height, int width, int kind, int threads,
                 const py::object& out) {
    return run_stitch(tiles, boxes, height, width, kind, threads, nullptr, nullptr, out);
}


// The stitch of one-channel depth tiles with the finishing pass fused: -> ((height, width) float32
// depth, (height, width) bool validity mask).
py::tuple stitch_finish(const py::array& tiles, const py::array& boxes, int height, int width, int kind,
                        double scale, double valid_max, int threads) {
    check_finish_args(scale, valid_max);
    Finish fin{static_cast<float>(scale), static_cast<float>(valid_max), nullptr};
    py::array valid;
    py::array depth = run_stitch(tiles, boxes, height, width, kind, threads, &fin, &valid);
    return py::make_tuple(depth.attr("reshape")(height, width), valid);
}

// Finishes a float32 depth map in place and returns its (same shape) bool validity mask.
py::array finish(py::array& depth, double scale, double valid_max, int threads) {
    if (dtype_of(depth) != DType::F32) fail("depth must be float32");
    if (!(depth.flags() & py::array::c_style)) fail("depth must be C-contiguous");
    if (!depth.writeable()) fail("depth must be writeable (it is finished in place)");
    if (depth.size() <= 0) fail("depth must not be empty");
    check_finish_args(scale, valid_max);
    check_threads(threads);
    std::vector<py::ssize_t> shape(depth.shape(), depth.shape() + depth.ndim());
    py::array valid(py::dtype("bool"), shape);
    auto* d = static_cast<float*>(depth.mutable_data());
    auto* v = static_cast<uint8_t*>(valid.mutable_data());
    const int64_t n = depth.size();
    {
        py::gil_scoped_release nogil;
        finish_cpu(d, n, static_cast<float>(scale), static_cast<float>(valid_max), v, threads);
    }
    return valid;
}

// The arguments every upsampling takes: an (h, w) float32 depth map, its (3, h, w) float32 guide
// and the (height, width, 3) uint8 frame -> {h, w, height, width}.
std::array<int, 4> check_upsample_args(const py::array& depth, const py::array& guide, const py::array& image) {
    check_array("depth", depth, 2);
    if (dtype_of(depth) != DType::F32) fail("depth must be an (h, w) float32 map");
    check_array("guide", guide, 3);
    if (dtype_of(guide) != DType::F32) fail("guide must be a (3, h, w) float32 image");
    check_array("image", image, 3);
    if (dtype_of(image) != DType::U8 || image.shape(2) != 3) fail("image must be an (H, W, 3) uint8 RGB image");
    const int h = check_side("depth height", depth.shape(0)), w = check_side("depth width", depth.shape(1));
    if (guide.shape(0) != 3 || guide.shape(1) != h || guide.shape(2) != w)
        fail("guide must have shape (3, " + std::to_string(h) + ", " + std::to_string(w) + ") to match depth");
    return {h, w, check_side("image height", image.shape(0)), check_side("image width", image.shape(1))};
}

// Joint bilateral upsampling of a (h, w) depth map to the (height, width) frame, finished on the way:
// -> ((height, width) float32 depth, (height, width) bool valid).
py::tuple joint_upsample(const py::array& depth, const py::array& guide, const py::array& image, double sigma,
                         double scale, double valid_max, int threads) {
    const auto [h, w, height, width] = check_upsample_args(depth, guide, image);
    check_joint_sigma(sigma);
    check_finish_args(scale, valid_max);
    check_threads(threads);
    py::array out = empty_out(false, {height, width});
    py::array valid(py::dtype("bool"), std::vector<py::ssize_t>{height, width});
    Finish fin{static_cast<float>(scale), static_cast<float>(valid_max), static_cast<uint8_t*>(valid.mutable_data())};
    const auto* d = static_cast<const float*>(depth.data());
    const auto* g = static_cast<const float*>(guide.data());
    const auto* im = static_cast<const uint8_t*>(image.data());
    auto* o = static_cast<float*>(out.mutable_data());
    {
        py::gil_scoped_release nogil;
        joint_upsample_cpu(d, g, h, w, im, height, width, static_cast<float>(sigma), o, threads, &fin);
    }
    return py::make_tuple(out, valid);
}

// Guided-filter upsampling of a (h, w) depth map to the (height, width) frame, finished on the way:
// -> ((height, width) float32 depth, (height, width) bool valid).
py::tuple guided_upsample(const py::array& depth, const py::array& guide, const py::array& image, int step,
                          int radius, double eps, double scale, double valid_max, int threads) {
    const auto [h, w, height, width] = check_upsample_args(depth, guide, image);
    check_guided(step, radius, eps);
    check_finish_args(scale, valid_max);
    check_threads(threads);
    py::array out = empty_out(false, {height, width});
    py::array valid(py::dtype("bool"), std::vector<py::ssize_t>{height, width});
    auto* v = static_cast<uint8_t*>(valid.mutable_data());
    const auto* d = static_cast<const float*>(depth.data());
    const auto* g = static_cast<const float*>(guide.data());
    const auto* im = static_cast<const uint8_t*>(image.data());
    auto* o = static_cast<float*>(out.mutable_data());
    {
        py::gil_scoped_release nogil;
        guided_upsample_cpu(d, g, h, w, step, im, height, width, radius, eps, static_cast<float>(scale),
                            static_cast<float>(valid_max), o, v, threads);
    }
    return py::make_tuple(out, valid);
}

// Edge snapping of a (h, w) float32 depth map guided by its (3, h, w) float32 guide -> new (h, w) map.
py::array snap_edges(const py::array& depth, const py::array& guide, double contrast, int threads) {
    check_array("depth", depth, 2);
    if (dtype_of(depth) != DType::F32) fail("depth must be an (h, w) float32 map");
    check_array("guide", guide, 3);
    if (dtype_of(guide) != DType::F32) fail("guide must be a (3, h, w) float32 image");
    const int h = check_side("depth height", depth.shape(0)), w = check_side("depth width", depth.shape(1));
    if (guide.shape(0) != 3 || guide.shape(1) != h || guide.shape(2) != w)
        fail("guide must have shape (3, " + std::to_string(h) + ", " + std::to_string(w) + ") to match depth");
    if (!std::isfinite(contrast) || !(contrast > 0) || contrast > 10) fail("contrast must be in (0, 10]");
    check_threads(threads);
    py::array out = empty_out(false, {h, w});
    const auto* d = static_cast<const float*>(depth.data());
    const auto* g = static_cast<const float*>(guide.data());
    auto* o = static_cast<float*>(out.mutable_data());
    const auto ratio = static_cast<float>(std::exp(contrast));
    {
        py::gil_scoped_release nogil;
        snap_edges_cpu(d, g, h, w, ratio, o, threads);
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "edgedepth CPU tile engine (see edgedepth.tiling for the documented API)";
    m.def("crop_rgb", &crop_rgb, py::arg("src"), py::arg("boxes"), py::arg("out_h"), py::arg("out_w"),
          py::arg("scale"), py::arg("bias"), py::arg("half"), py::arg("threads"), py::arg("out") = py::none(),
          "(H, W, 3) uint8 -> (N, 3, out_h, out_w) float32/float16, value * scale[c] + bias[c] (into out if given)");
    m.def("crop_map", &crop_map, py::arg("src"), py::arg("boxes"), py::arg("out_h"), py::arg("out_w"),
          py::arg("half"), py::arg("threads"), py::arg("out") = py::none(),
          "(C, H, W) float32/float16 -> (N, C, out_h, out_w) (into out if given)");
    m.def("window", &window, py::arg("h"), py::arg("w"), py::arg("kind"), "(h, w) float32 window weights");
    m.def("stitch", &stitch, py::arg("tiles"), py::arg("boxes"), py::arg("height"), py::arg("width"),
          py::arg("kind"), py::arg("threads"), py::arg("out") = py::none(),
          "(N, C, th, tw) tiles -> (C, height, width) float32 (into out when given)");
    m.def("stitch_finish", &stitch_finish, py::arg("tiles"), py::arg("boxes"), py::arg("height"), py::arg("width"),
          py::arg("kind"), py::arg("scale"), py::arg("valid_max"), py::arg("threads"),
          "(N, 1, th, tw) depth tiles -> ((height, width) float32 depth finished, (height, width) bool valid)");
    m.def("joint_upsample", &joint_upsample, py::arg("depth"), py::arg("guide"), py::arg("image"), py::arg("sigma"),
          py::arg("scale"), py::arg("valid_max"), py::arg("threads"),
          "(h, w) float32 depth + (3, h, w) guide + (H, W, 3) uint8 image -> ((H, W) float32 depth finished, "
          "(H, W) bool valid)");
    m.def("guided_upsample", &guided_upsample, py::arg("depth"), py::arg("guide"), py::arg("image"),
          py::arg("step"), py::arg("radius"), py::arg("eps"), py::arg("scale"), py::arg("valid_max"), py::arg("threads"),
          "(h, w) float32 depth + (3, h, w) guide + (H, W, 3) uint8 image -> ((H, W) float32 depth finished, "
          "(H, W) bool valid), by the fast guided filter");
    m.def("snap_edges", &snap_edges, py::arg("depth"), py::arg("guide"), py::arg("contrast"), py::arg("threads"),
          "(h, w) float32 depth + (3, h, w) float32 guide -> (h, w) float32 depth, steps snapped");
    m.def("finish", &finish, py::arg("depth"), py::arg("scale"), py::arg("valid_max"), py::arg("threads"),
          "float32 depth finished in place (scaled, finite, >= 0) -> bool validity mask of the same shape");
#ifdef EDGEDEPTH_SANITIZED
    m.attr("sanitized") = true;
#else
    m.attr("sanitized") = false;
#endif
}
