// CUDA registration of wsmooth_ext::flow_noise, wsmooth_ext::pixel_noise and their backwards: device guard, stream
// and launch. The kernels
// and their launch plans are in flow_noise_kernels.cuh, the host side shared with the emulated build in
// flow_noise_launch.h.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "flow_noise_kernels.cuh"
#include "flow_noise_launch.h"

namespace wsmooth {
namespace {

// Launches on the current stream, then checks the launch.
struct CudaLaunch {
  cudaStream_t stream;

  template <typename... Params, typename... Args>
  void operator()(const LaunchPlan& plan, void (*kernel)(Params...), Args... args) const {
    kernel<<<static_cast<unsigned>(plan.blocks), plan.threads, plan.smem_bytes, stream>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

// kPixel: pixel_noise, else flow_noise.
template <bool kPixel>
at::Tensor noise_cuda(const at::Tensor& x, int64_t num_samples, double sigma, int64_t noise, int64_t seed,
                      int64_t sample_offset, const at::Tensor& keys, bool normalize) {
  const c10::cuda::CUDAGuard device_guard(x.device());
  return flow_noise_launch(CudaLaunch{c10::cuda::getCurrentCUDAStream()},
                           kPixel ? "wsmooth_ext.pixel_noise (CUDA)" : "wsmooth_ext.flow_noise (CUDA)", x,
                           num_samples, sigma, noise, seed, sample_offset, keys, normalize, kPixel);
}

template <bool kPixel>
at::Tensor noise_backward_cuda(const at::Tensor& grad, const at::Tensor& x, int64_t num_samples, double sigma,
                               int64_t noise, int64_t seed, int64_t sample_offset, const at::Tensor& keys,
                               bool normalize) {
  const c10::cuda::CUDAGuard device_guard(grad.device());
  return flow_noise_backward_launch(
      CudaLaunch{c10::cuda::getCurrentCUDAStream()},
      kPixel ? "wsmooth_ext.pixel_noise_backward (CUDA)" : "wsmooth_ext.flow_noise_backward (CUDA)", grad, x,
      num_samples, sigma, noise, seed, sample_offset, keys, normalize, kPixel);
}

}  // namespace

TORCH_LIBRARY_IMPL(wsmooth_ext, CUDA, m) {
  m.impl("flow_noise", &noise_cuda<false>);
  m.impl("flow_noise_backward", &noise_backward_cuda<false>);
  m.impl("pixel_noise", &noise_cuda<true>);
  m.impl("pixel_noise_backward", &noise_backward_cuda<true>);
}

}  // namespace wsmooth
