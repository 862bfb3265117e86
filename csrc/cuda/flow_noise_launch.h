// Host side of the CUDA ops: argument checks, output allocation, launch plan, launch, backward reduction.
//
// Shared by the CUDA build (flow_noise_cuda.cu) and the emulated one (csrc/cuda_emulation), which differ only in
// the `launch` callable: `launch(plan, kernel, args...)` runs `kernel` with plan's geometry — with <<<>>> on the
// current stream there, on CPU threads in the emulation. So the tests run this code as well as the kernels.
// Include flow_noise_kernels.cuh first.
#pragma once

#include <ATen/ATen.h>

#include "../ops_common.h"

namespace wsmooth {
namespace {

template <typename Launch>
at::Tensor flow_noise_launch(const Launch& launch, const char* op, const at::Tensor& x_in, int64_t num_samples,
                             double sigma, int64_t noise, int64_t seed, int64_t sample_offset,
                             const at::Tensor& keys_in, bool normalize, bool pixel) {
  check_noise_args(x_in, num_samples, sigma, noise, sample_offset, keys_in, normalize, pixel);
  const auto x = x_in.contiguous();
  const auto keys = keys_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), rows = B * num_samples;
  auto out = at::empty({rows, C, H, W}, x.options());
  if (out.numel() == 0) return out;
  const auto factor = noise_factor(x, noise_scale(noise, sigma), normalize).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wsmooth_ext_flow_noise_launch", [&] {
    const auto plan = plan_launch(pixel ? KernelId::kPixelForward : KernelId::kFlowForward, rows, C, H, W,
                                  sizeof(scalar_t));
    TORCH_CHECK(plan.blocks < (int64_t(1) << 31), op, ": too many samples in one call");
    TORCH_CHECK(plan.smem_bytes <= kMaxDynamicSharedBytes, op, ": image width ", W, " needs ", plan.smem_bytes,
                " bytes of shared memory");
    if (pixel) {
      launch(plan, &pixel_forward_kernel<scalar_t>, x.data_ptr<scalar_t>(), keys.data_ptr<int64_t>(),
             factor.data_ptr<double>(), out.data_ptr<scalar_t>(), C * H * W, plan.batches, rows, num_samples,
             sample_offset, static_cast<uint64_t>(seed), noise);
    } else {
      launch(plan, &flow_forward_kernel<scalar_t>, x.data_ptr<scalar_t>(), keys.data_ptr<int64_t>(),
             factor.data_ptr<double>(), out.data_ptr<scalar_t>(), C, H, W, num_samples, sample_offset,
             static_cast<uint64_t>(seed), noise, plan.tiles);
    }
  });
  return out;
}

template <typename Launch>
at::Tensor flow_noise_backward_launch(const Launch& launch, const char* op, const at::Tensor& grad_in,
                                      const at::Tensor& x_in, int64_t num_samples, double sigma, int64_t noise,
                                      int64_t seed, int64_t sample_offset, const at::Tensor& keys_in,
                                      bool normalize, bool pixel) {
  check_backward_args(grad_in, x_in, num_samples, sigma, noise, sample_offset, keys_in, pixel);
  const auto grad = grad_in.contiguous();
  const auto keys = keys_in.contiguous();
  at::Tensor dots;
  if (normalize && grad.numel() > 0) {  // without normalization the noise does not depend on x
    const int64_t rows = grad.size(0);
    TORCH_CHECK(rows < (int64_t(1) << 31), op, ": too many samples");
    dots = at::empty({rows}, grad.options().dtype(at::kDouble));
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "wsmooth_ext_flow_noise_backward_launch", [&] {
      const auto plan = plan_launch(KernelId::kDot, rows, x_in.size(1), x_in.size(2), x_in.size(3),
                                    sizeof(scalar_t));
      launch(plan, &dot_kernel<scalar_t>, grad.data_ptr<scalar_t>(), keys.data_ptr<int64_t>(),
             dots.data_ptr<double>(), x_in.size(1), x_in.size(2), x_in.size(3), num_samples, sample_offset,
             static_cast<uint64_t>(seed), noise, pixel);
    });
  }
  return finish_backward(grad, x_in, num_samples, dots, noise_scale(noise, sigma));
}

}  // namespace
}  // namespace wsmooth
