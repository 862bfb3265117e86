// The CUDA ops of wsmooth_ext, built for the CPU through cuda_emulation.h: the kernels of
// csrc/cuda/flow_noise_kernels.cuh and the host side of csrc/cuda/flow_noise_launch.h, compiled by the host
// compiler, registered for CPU tensors with the schemas of wsmooth_ext::flow_noise, pixel_noise and their
// backwards.
//
// Test infrastructure: tests/test_cuda_emulation.py builds it with torch.utils.cpp_extension.load. Two macros
// let the tests build variants of it: WS_KERNELS_HEADER (a deliberately broken copy of the kernels, to show
// that the tests catch it) and WS_EMULATED_LIBRARY (the operator namespace, default wsmooth_emulated).
#include "cuda_emulation.h"

#ifndef WS_KERNELS_HEADER
#define WS_KERNELS_HEADER "../cuda/flow_noise_kernels.cuh"
#endif
#ifndef WS_EMULATED_LIBRARY
#define WS_EMULATED_LIBRARY wsmooth_emulated
#endif

#include WS_KERNELS_HEADER

#include <torch/library.h>

#include "../cuda/flow_noise_launch.h"
#include "../op_schemas.h"

namespace wsmooth {
namespace {

CUDA_EMULATION_DYNAMIC_SHARED(dynamic_smem);

struct EmulatedLaunch {
  template <typename... Params, typename... Args>
  void operator()(const LaunchPlan& plan, void (*kernel)(Params...), Args... args) const {
    try {
      cuda_emulation::launch(dim3(static_cast<unsigned>(plan.blocks)), dim3(plan.threads), plan.smem_bytes,
                             cuda_emulation::SharedArena{dynamic_smem, sizeof dynamic_smem}, kernel, args...);
    } catch (const std::runtime_error& e) {
      TORCH_CHECK(false, e.what());
    }
  }
};

// kPixel: pixel_noise, else flow_noise (as csrc/cuda/flow_noise_cuda.cu).
template <bool kPixel>
at::Tensor noise_emulated(const at::Tensor& x, int64_t num_samples, double sigma, int64_t noise, int64_t seed,
                          int64_t sample_offset, const at::Tensor& keys, bool normalize) {
  return flow_noise_launch(EmulatedLaunch{}, kPixel ? "pixel_noise (emulated CUDA)" : "flow_noise (emulated CUDA)",
                           x, num_samples, sigma, noise, seed, sample_offset, keys, normalize, kPixel);
}

template <bool kPixel>
at::Tensor noise_backward_emulated(const at::Tensor& grad, const at::Tensor& x, int64_t num_samples, double sigma,
                                   int64_t noise, int64_t seed, int64_t sample_offset, const at::Tensor& keys,
                                   bool normalize) {
  return flow_noise_backward_launch(
      EmulatedLaunch{}, kPixel ? "pixel_noise_backward (emulated CUDA)" : "flow_noise_backward (emulated CUDA)",
      grad, x, num_samples, sigma, noise, seed, sample_offset, keys, normalize, kPixel);
}

}  // namespace
}  // namespace wsmooth

// Indirection so that WS_EMULATED_LIBRARY is expanded before TORCH_LIBRARY pastes it into names.
#define WS_TORCH_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define WS_TORCH_LIBRARY_IMPL(ns, key, m) TORCH_LIBRARY_IMPL(ns, key, m)

WS_TORCH_LIBRARY(WS_EMULATED_LIBRARY, m) {
  for (const char* schema : wsmooth::kOpSchemas) m.def(schema);
}

WS_TORCH_LIBRARY_IMPL(WS_EMULATED_LIBRARY, CPU, m) {
  m.impl("flow_noise", &wsmooth::noise_emulated<false>);
  m.impl("flow_noise_backward", &wsmooth::noise_backward_emulated<false>);
  m.impl("pixel_noise", &wsmooth::noise_emulated<true>);
  m.impl("pixel_noise_backward", &wsmooth::noise_backward_emulated<true>);
}
