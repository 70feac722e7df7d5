// CUDA tile engine launchers (edgedepth/tiling_reference.py semantics). Pointers are device
// pointers already checked by module_cuda.cpp, on the current device; boxes are host float64
// (n, 4), passed to the device as kernel arguments (n * 32 bytes, the only host->device transfer;
// the host array may be freed as soon as the call returns). All work is ordered on `stream`; the
// first failing CUDA call's error is returned. Callable without the GIL.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "map_crops.hpp"

namespace edgedepth {

cudaError_t crop_rgb_cuda(const uint8_t* src, int src_h, int src_w, const double* boxes, int n, int out_h,
                          int out_w, const float* scale, const float* bias, void* out, bool half,
                          cudaStream_t stream);
cudaError_t crop_map_cuda(const void* src, bool src_half, int c, int src_h, int src_w, const double* boxes,
                          int n, int out_h, int out_w, void* out, bool half, cudaStream_t stream);
// crop_map_cuda for `count` (1..kMaxMapCrops) maps of one source and one output precision in one
// go, the same bits: boxes are (count, n, 4), map k's n boxes in its own pixels. The boxes' upload,
// one table kernel and one crop kernel serve all maps, where each crop_map_cuda call launches four
// kernels and allocates its own scratch: the runtime's feature crops on a GPU cost launches.
cudaError_t crop_maps_cuda(const MapCrop* maps, int count, bool src_half, const double* boxes, int n, bool half,
                           cudaStream_t stream);
cudaError_t window_cuda(int h, int w, int kind, float* out, cudaStream_t stream);
cudaError_t stitch_cuda(const void* tiles, bool tiles_half, int n, int c, int th, int tw, const double* boxes,
                        int height, int width, int kind, float* out, cudaStream_t stream);
// (h, w) float32 depth + (3, h, w) float32 guide + (height, width, 3) uint8 RGB frame -> (height, width)
// float32 depth, joint-bilaterally upsampled and finished (tile_engine_cpu.hpp: joint_upsample_cpu),
// and its validity bytes.
cudaError_t joint_upsample_cuda(const float* depth, const float* guide, int h, int w, const uint8_t* image, int height,
                                int width, float sigma, float scale, float valid_max, float* out, uint8_t* valid,
                                cudaStream_t stream);
// (h, w) float32 depth + (3, h, w) float32 guide + (height, width, 3) uint8 RGB frame -> (height, width)
// float32 depth upsampled by the fast guided filter and finished (tile_engine_cpu.hpp:
// guided_upsample_cpu, the same bits), and its validity bytes.
cudaError_t guided_upsample_cuda(const float* depth, const float* guide, int h, int w, int step, const uint8_t* image,
                                 int height, int width, int radius, double eps, float scale, float valid_max, float* out,
                                 uint8_t* valid, cudaStream_t stream);
// The finishing pass over n float32 depth values in place (tile_engine_cpu.hpp: finish_cpu), and
// their validity bytes.
cudaError_t finish_cuda(float* depth, int64_t n, float scale, float valid_max, uint8_t* valid, cudaStream_t stream);

}  // namespace edgedepth
