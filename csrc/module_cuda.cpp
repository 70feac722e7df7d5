// edgedepth._native_cuda: the CUDA tile engine for Python. Arrays arrive as raw device pointers
// (edgedepth/tiling.py reads them from __cuda_array_interface__ or DLPack) plus a stream handle;
// boxes arrive as host numpy arrays. Before any launch this file checks sizes, boxes, that every
// pointer is device memory of one device and, where the driver can say, that each buffer's extent
// lies inside its allocation. Then the GIL is released for the CUDA work (the launchers enqueue on
// the caller's stream; the boxes are a private copy by then). cudart is linked statically, so the
// module imports without a GPU.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime_api.h>

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "checks.hpp"
#include "tile_engine_cuda.hpp"

namespace py = pybind11;
using namespace edgedepth;

namespace {

void check_cuda(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// cuMemGetAddressRange from the driver, looked up at run time so the module never links libcuda.
using AddressRangeFn = int (*)(unsigned long long*, size_t*, unsigned long long);

AddressRangeFn address_range_fn() {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult status;
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault, &status) != cudaSuccess ||
        status != cudaDriverEntryPointSuccess)
        return nullptr;
    return reinterpret_cast<AddressRangeFn>(fn);
}

// Returns the device of `ptr` after checking it is device (or managed) memory with `bytes` room.
int check_device_ptr(const char* name, uintptr_t ptr, size_t bytes) {
    if (ptr == 0) fail(std::string(name) + " is a null pointer");
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr)) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error of a failed query
        fail(std::string(name) + " is not a CUDA pointer");
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        fail(std::string(name) + " is not device memory");
    if (AddressRangeFn range = address_range_fn()) {
        unsigned long long base = 0;
        size_t size = 0;
        if (range(&base, &size, static_cast<unsigned long long>(ptr)) == 0 && ptr + bytes > base + size)
            fail(std::string(name) + " needs " + std::to_string(bytes) + " bytes but its allocation ends " +
                 std::to_string(base + size - ptr) + " bytes after it");
    }
    return attr.device;
}

// Boxes (N, 4) float64, copied and checked (checks.hpp, checked_box_copy).
std::vector<double> checked_boxes(const py::array& boxes, int64_t frame_h, int64_t frame_w) {
    if (boxes.ndim() != 2 || boxes.shape(1) != 4 || boxes.shape(0) < 1) fail("boxes must have shape (N, 4) with N >= 1");
    if (boxes.dtype().kind() != 'f' || boxes.dtype().itemsize() != 8) fail("boxes must be float64");
    if (!(boxes.flags() & py::array::c_style)) fail("boxes must be C-contiguous");
    return checked_box_copy("boxes", static_cast<const double*>(boxes.data()), boxes.shape(0), frame_h, frame_w);
}

// Makes the pointers' device current for the call; restore() gives the caller's back and checks it.
// The destructor restores only when an error is already on its way out (nothing to add to it).
class DeviceGuard {
   public:
    explicit DeviceGuard(std::initializer_list<int> devices) : DeviceGuard(std::vector<int>(devices)) {}
    explicit DeviceGuard(const std::vector<int>& devices) {
        check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
        const int d = devices.front();
        for (int other : devices)
            if (other != d) fail("all arrays must be on one CUDA device");
        if (d != previous_) {
            check_cuda(cudaSetDevice(d), "cudaSetDevice");
            switched_ = true;
        }
    }
    void restore() {
        if (!switched_) return;
        switched_ = false;
        check_cuda(cudaSetDevice(previous_), "cudaSetDevice (restoring the caller's device)");
    }
    ~DeviceGuard() {
        if (switched_) cudaSetDevice(previous_);
    }

   private:
    int previous_ = 0;
    bool switched_ = false;
};

// Runs a launcher without the GIL (the work is only enqueued, but a launch or pool call may still
// block), then checks its result and restores the caller's device.
template <typename F>
void run_released(DeviceGuard& guard, const char* what, F launch) {
    cudaError_t err;
    {
        py::gil_scoped_release release;
        err = launch();
    }
    check_cuda(err, what);
    guard.restore();
}

cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// The sizes and boxes of a crop from a (src_h, src_w) source to (out_h, out_w) outputs; returns the boxes.
std::vector<double> checked_crop(const py::array& boxes, int src_h, int src_w, int out_h, int out_w) {
    check_side("src_h", src_h);
    check_side("src_w", src_w);
    check_side("out_h", out_h);
    check_side("out_w", out_w);
    return checked_boxes(boxes, src_h, src_w);
}

void crop_rgb(uintptr_t src, int src_h, int src_w, const py::array& boxes, uintptr_t out, int out_h, int out_w,
              std::array<float, 3> scale, std::array<float, 3> bias, bool half, uintptr_t stream) {
    const std::vector<double> box_copy = checked_crop(boxes, src_h, src_w, out_h, out_w);
    const double* bx = box_copy.data();
    const int n = static_cast<int>(boxes.shape(0));
    const size_t out_bytes = static_cast<size_t>(n) * 3 * out_h * out_w * (half ? 2 : 4);
    DeviceGuard guard{check_device_ptr("src", src, static_cast<size_t>(src_h) * src_w * 3),
                      check_device_ptr("out", out, out_bytes)};
    run_released(guard, "crop_rgb", [&] {
        return crop_rgb_cuda(reinterpret_cast<const uint8_t*>(src), src_h, src_w, bx, n, out_h, out_w, scale.data(),
                             bias.data(), reinterpret_cast<void*>(out), half, as_stream(stream));
    });
}

void crop_map(uintptr_t src, bool src_half, int c, int src_h, int src_w, const py::array& boxes, uintptr_t out,
              int out_h, int out_w, bool half, uintptr_t stream) {
    check_side("c", c);
    const std::vector<double> box_copy = checked_crop(boxes, src_h, src_w, out_h, out_w);
    const double* bx = box_copy.data();
    const int n = static_cast<int>(boxes.shape(0));
    const size_t src_bytes = static_cast<size_t>(c) * src_h * src_w * (src_half ? 2 : 4);
    const size_t out_bytes = static_cast<size_t>(n) * c * out_h * out_w * (half ? 2 : 4);
    DeviceGuard guard{check_device_ptr("src", src, src_bytes), check_device_ptr("out", out, out_bytes)};
    run_released(guard, "crop_map", [&] {
        return crop_map_cuda(reinterpret_cast<const void*>(src), src_half, c, src_h, src_w, bx, n, out_h, out_w,
                             reinterpret_cast<void*>(out), half, as_stream(stream));
    });
}

// crop_map for several maps at once: srcs[k] (c, h, w) = shapes[k], cropped at boxes[k] (boxes is
// (K, N, 4) float64, each map's boxes in its own pixels) to outs[k] (N, c, out_sizes[k]).
void crop_maps(const std::vector<uintptr_t>& srcs, const std::vector<std::array<int, 3>>& shapes, bool src_half,
               const py::array& boxes, const std::vector<uintptr_t>& outs, const std::vector<std::array<int, 2>>& out_sizes,
               bool half, uintptr_t stream) {
    const size_t count = srcs.size();
    if (count < 1 || count > static_cast<size_t>(kMaxMapCrops))
        fail("crop_maps takes 1 to " + std::to_string(kMaxMapCrops) + " maps, got " + std::to_string(count));
    if (shapes.size() != count || outs.size() != count || out_sizes.size() != count)
        fail("srcs, shapes, outs and out_sizes must have one entry per map");
    if (boxes.ndim() != 3 || static_cast<size_t>(boxes.shape(0)) != count || boxes.shape(2) != 4 || boxes.shape(1) < 1)
        fail("boxes must have shape (K, N, 4) with one (N, 4) block per map and N >= 1");
    if (boxes.dtype().kind() != 'f' || boxes.dtype().itemsize() != 8) fail("boxes must be float64");
    if (!(boxes.flags() & py::array::c_style)) fail("boxes must be C-contiguous");
    check_side("number of boxes over all maps", boxes.shape(0) * boxes.shape(1));
    const int n = static_cast<int>(boxes.shape(1));
    const double* all = static_cast<const double*>(boxes.data());
    std::vector<double> box_copy;
    box_copy.reserve(count * n * 4);
    std::vector<MapCrop> maps(count);
    std::vector<int> devices;
    for (size_t k = 0; k < count; ++k) {
        const auto [c, h, w] = shapes[k];
        const auto [oh, ow] = out_sizes[k];
        const std::string map = "maps[" + std::to_string(k) + "] ";
        for (const auto& [name, v] : {std::pair{"c", c}, {"src_h", h}, {"src_w", w}, {"out_h", oh}, {"out_w", ow}})
            check_side((map + name).c_str(), v);
        const std::vector<double> bx = checked_box_copy((map + "boxes").c_str(), all + 4 * k * n, n, h, w);
        box_copy.insert(box_copy.end(), bx.begin(), bx.end());
        const size_t src_bytes = static_cast<size_t>(c) * h * w * (src_half ? 2 : 4);
        const size_t out_bytes = static_cast<size_t>(n) * c * oh * ow * (half ? 2 : 4);
        devices.push_back(check_device_ptr((map + "src").c_str(), srcs[k], src_bytes));
        devices.push_back(check_device_ptr((map + "out").c_str(), outs[k], out_bytes));
        maps[k] = MapCrop{reinterpret_cast<const void*>(srcs[k]), reinterpret_cast<void*>(outs[k]), c, h, w, oh, ow};
    }
    DeviceGuard guard{devices};
    run_released(guard, "crop_maps", [&] {
        return crop_maps_cuda(maps.data(), static_cast<int>(count), src_half, box_copy.data(), n, half,
                              as_stream(stream));
    });
}

void window(uintptr_t out, int h, int w, int kind, uintptr_t stream) {
    check_side("h", h);
    check_side("w", w);
    check_window(kind);
    DeviceGuard guard{check_device_ptr("out", out, static_cast<size_t>(h) * w * 4)};
    run_released(guard, "window", [&] { return window_cuda(h, w, kind, reinterpret_cast<float*>(out), as_stream(stream)); });
}

void stitch(uintptr_t tiles, bool tiles_half, int n, int c, int th, int tw, const py::array& boxes, uintptr_t out,
            int height, int width, int kind, uintptr_t stream) {
    check_side("n", n);
    check_side("c", c);
    check_side("th", th);
    check_side("tw", tw);
    check_side("height", height);
    check_side("width", width);
    check_window(kind);
    const std::vector<double> box_copy = checked_boxes(boxes, height, width);
    const double* bx = box_copy.data();
    if (boxes.shape(0) != n)
        fail("tiles has " + std::to_string(n) + " tiles but boxes has " + std::to_string(boxes.shape(0)) + " rows");
    const size_t tile_bytes = static_cast<size_t>(n) * c * th * tw * (tiles_half ? 2 : 4);
    const size_t out_bytes = static_cast<size_t>(c) * height * width * 4;
    DeviceGuard guard{check_device_ptr("tiles", tiles, tile_bytes), check_device_ptr("out", out, out_bytes)};
    run_released(guard, "stitch", [&] {
        return stitch_cuda(reinterpret_cast<const void*>(tiles), tiles_half, n, c, th, tw, bx, height, width, kind,
                           reinterpret_cast<float*>(out), as_stream(stream));
    });
}

// What both upsamplings check and how they launch: the four sides, the finish's arguments and the
// five device buffers (depth (h, w) and guide (3, h, w) float32, image (height, width, 3) uint8, out
// float32 and valid bytes of the frame), then `launch` on their device without the GIL.
template <typename F>
void run_upsample(const char* what, uintptr_t depth, uintptr_t guide, int h, int w, uintptr_t image, int height,
                  int width, double scale, double valid_max, uintptr_t out, uintptr_t valid, F launch) {
    check_side("h", h);
    check_side("w", w);
    check_side("height", height);
    check_side("width", width);
    check_finish_args(scale, valid_max);
    const size_t low = static_cast<size_t>(h) * w, frame = static_cast<size_t>(height) * width;
    DeviceGuard guard{check_device_ptr("depth", depth, low * 4), check_device_ptr("guide", guide, 3 * low * 4),
                      check_device_ptr("image", image, frame * 3), check_device_ptr("out", out, frame * 4),
                      check_device_ptr("valid", valid, frame)};
    run_released(guard, what, launch);
}

void joint_upsample(uintptr_t depth, uintptr_t guide, int h, int w, uintptr_t image, int height, int width, double sigma,
                    double scale, double valid_max, uintptr_t out, uintptr_t valid, uintptr_t stream) {
    check_joint_sigma(sigma);
    run_upsample("joint_upsample", depth, guide, h, w, image, height, width, scale, valid_max, out, valid, [&] {
        return joint_upsample_cuda(reinterpret_cast<const float*>(depth), reinterpret_cast<const float*>(guide), h, w,
                                   reinterpret_cast<const uint8_t*>(image), height, width, static_cast<float>(sigma),
                                   static_cast<float>(scale), static_cast<float>(valid_max),
                                   reinterpret_cast<float*>(out), reinterpret_cast<uint8_t*>(valid), as_stream(stream));
    });
}

void guided_upsample(uintptr_t depth, uintptr_t guide, int h, int w, int step, uintptr_t image, int height, int width,
                     int radius, double eps, double scale, double valid_max, uintptr_t out, uintptr_t valid,
                     uintptr_t stream) {
    check_guided(step, radius, eps);
    run_upsample("guided_upsample", depth, guide, h, w, image, height, width, scale, valid_max, out, valid, [&] {
        return guided_upsample_cuda(reinterpret_cast<const float*>(depth), reinterpret_cast<const float*>(guide), h, w,
                                    step, reinterpret_cast<const uint8_t*>(image), height, width, radius, eps,
                                    static_cast<float>(scale), static_cast<float>(valid_max),
                                    reinterpret_cast<float*>(out), reinterpret_cast<uint8_t*>(valid), as_stream(stream));
    });
}

void finish(uintptr_t depth, int64_t n, double scale, double valid_max, uintptr_t valid, uintptr_t stream) {
    check_positive("n", n);
    check_finish_args(scale, valid_max);
    DeviceGuard guard{check_device_ptr("depth", depth, static_cast<size_t>(n) * 4),
                      check_device_ptr("valid", valid, static_cast<size_t>(n))};
    run_released(guard, "finish", [&] {
        return finish_cuda(reinterpret_cast<float*>(depth), n, static_cast<float>(scale), static_cast<float>(valid_max),
                           reinterpret_cast<uint8_t*>(valid), as_stream(stream));
    });
}

int device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return count;
}

}  // namespace

PYBIND11_MODULE(_native_cuda, m) {
    m.doc() = "edgedepth CUDA tile engine (see edgedepth.tiling for the documented API)";
    m.def("crop_rgb", &crop_rgb, py::arg("src"), py::arg("src_h"), py::arg("src_w"), py::arg("boxes"), py::arg("out"),
          py::arg("out_h"), py::arg("out_w"), py::arg("scale"), py::arg("bias"), py::arg("half"), py::arg("stream"));
    m.def("crop_map", &crop_map, py::arg("src"), py::arg("src_half"), py::arg("c"), py::arg("src_h"), py::arg("src_w"),
          py::arg("boxes"), py::arg("out"), py::arg("out_h"), py::arg("out_w"), py::arg("half"), py::arg("stream"));
    m.def("crop_maps", &crop_maps, py::arg("srcs"), py::arg("shapes"), py::arg("src_half"), py::arg("boxes"),
          py::arg("outs"), py::arg("out_sizes"), py::arg("half"), py::arg("stream"));
    m.def("window", &window, py::arg("out"), py::arg("h"), py::arg("w"), py::arg("kind"), py::arg("stream"));
    m.def("stitch", &stitch, py::arg("tiles"), py::arg("tiles_half"), py::arg("n"), py::arg("c"), py::arg("th"),
          py::arg("tw"), py::arg("boxes"), py::arg("out"), py::arg("height"), py::arg("width"), py::arg("kind"),
          py::arg("stream"));
    m.def("joint_upsample", &joint_upsample, py::arg("depth"), py::arg("guide"), py::arg("h"), py::arg("w"),
          py::arg("image"), py::arg("height"), py::arg("width"), py::arg("sigma"), py::arg("scale"), py::arg("valid_max"),
          py::arg("out"), py::arg("valid"), py::arg("stream"));
    m.def("guided_upsample", &guided_upsample, py::arg("depth"), py::arg("guide"), py::arg("h"), py::arg("w"),
          py::arg("step"), py::arg("image"), py::arg("height"), py::arg("width"), py::arg("radius"), py::arg("eps"),
          py::arg("scale"), py::arg("valid_max"), py::arg("out"), py::arg("valid"), py::arg("stream"));
    m.def("finish", &finish, py::arg("depth"), py::arg("n"), py::arg("scale"), py::arg("valid_max"), py::arg("valid"),
          py::arg("stream"));
    m.def("device_count", &device_count, "number of CUDA devices the driver reports (0 without a driver or GPU)");
    m.attr("cuda_runtime_version") = CUDART_VERSION;
}
