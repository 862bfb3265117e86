// CPU kernels of wsmooth_ext::flow_noise, wsmooth_ext::pixel_noise and their backwards: argument checks, the
// run-time choice of CPU path (csrc/cpu/cpu_paths.h: avx512 / avx2 / default, ATEN_CPU_CAPABILITY), and the work
// split over threads.
//
// For each output row (one sample of one image) the chosen path generates the noise of all its edges into a
// small per-thread scratch buffer (one sample: 6 KB for MNIST, L1-resident; no noise tensor is ever
// materialized) and the stencil then writes each output pixel exactly once (csrc/cpu/kernel_rows.h).
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "../flow_noise.h"
#include "../ops_common.h"
#include "cpu_paths.h"

namespace wsmooth {
namespace {

Geometry make_geometry(const at::Tensor& x, int64_t num_samples, int64_t noise, int64_t seed,
                       int64_t sample_offset, bool pixel) {
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  return Geometry{C, H, W, num_samples, sample_offset, C * draws_per_channel(H, W, pixel),
                  static_cast<uint64_t>(seed), noise, pixel};
}

// Calls of fewer than ~256k draws (~0.5 ms on AVX2; a training batch) stay on the calling thread: an OpenMP region costs
// little on an idle machine but can stall for many milliseconds when the cores are shared.
constexpr int64_t kSerialDraws = int64_t(1) << 18;
// Larger calls are cut into chunks of ~32k draws (~55 µs on AVX2) that the threads take from a shared counter, rather
// than one fixed share per thread (at::parallel_for's split): when another process occupies one core, the
// thread on it takes fewer chunks instead of making the other wait for its half.
constexpr int64_t kChunkDraws = int64_t(1) << 15;

// body(begin, end, scratch) over [0, rows), on one thread or on all of torch's intra-op threads.
template <typename scalar_t, typename Body>
void for_each_chunk(int64_t rows, int64_t draws, const Body& body) {
  const int64_t work = rows * std::max<int64_t>(draws, 1);
  const int threads = at::get_num_threads();
  if (threads <= 1 || work <= kSerialDraws || at::in_parallel_region()) {
    std::vector<scalar_t> scratch(scratch_size(draws));
    body(0, rows, scratch.data());
    return;
  }
  const int64_t chunk = std::max<int64_t>(1, kChunkDraws / std::max<int64_t>(draws, 1));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    std::vector<scalar_t> scratch(scratch_size(draws));
    for (int64_t begin = next.fetch_add(chunk); begin < rows; begin = next.fetch_add(chunk))
      body(begin, std::min(rows, begin + chunk), scratch.data());
  });
}

// The forward of either graph (kPixel: pixel_noise, else flow_noise); the two share everything but the stencil.
template <bool kPixel>
at::Tensor noise_cpu(const at::Tensor& x_in, int64_t num_samples, double sigma, int64_t noise, int64_t seed,
                     int64_t sample_offset, const at::Tensor& keys_in, bool normalize) {
  constexpr bool pixel = kPixel;
  check_noise_args(x_in, num_samples, sigma, noise, sample_offset, keys_in, normalize, pixel);
  const auto x = x_in.contiguous();
  const auto keys = keys_in.contiguous();
  auto out = at::empty({x.size(0) * num_samples, x.size(1), x.size(2), x.size(3)}, x.options());
  if (out.numel() == 0) return out;
  const auto factor = noise_factor(x, noise_scale(noise, sigma), normalize).contiguous();
  const Geometry geo = make_geometry(x, num_samples, noise, seed, sample_offset, pixel);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wsmooth_ext_flow_noise_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t* kp = keys.data_ptr<int64_t>();
    const double* fp = factor.data_ptr<double>();
    const auto forward = row_fns<scalar_t>(*choose_cpu_path().path->kernels).forward;
    for_each_chunk<scalar_t>(out.size(0), geo.draws, [&](int64_t begin, int64_t end, scalar_t* scratch) {
      forward(geo, begin, end, xp, kp, fp, scratch, op);
    });
  });
  return out;
}

template <bool kPixel>
at::Tensor noise_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, int64_t num_samples, double sigma,
                              int64_t noise, int64_t seed, int64_t sample_offset, const at::Tensor& keys_in,
                              bool normalize) {
  constexpr bool pixel = kPixel;
  check_backward_args(grad_in, x_in, num_samples, sigma, noise, sample_offset, keys_in, pixel);
  const auto grad = grad_in.contiguous();
  const auto keys = keys_in.contiguous();
  at::Tensor dots;
  if (normalize && grad.numel() > 0) {  // without normalization the noise does not depend on x
    dots = at::empty({grad.size(0)}, grad.options().dtype(at::kDouble));
    const Geometry geo = make_geometry(x_in, num_samples, noise, seed, sample_offset, pixel);
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "wsmooth_ext_flow_noise_backward_cpu", [&] {
      const scalar_t* gp = grad.data_ptr<scalar_t>();
      const int64_t* kp = keys.data_ptr<int64_t>();
      double* dp = dots.data_ptr<double>();
      const auto dot = row_fns<scalar_t>(*choose_cpu_path().path->kernels).dot;
      for_each_chunk<scalar_t>(grad.size(0), geo.draws, [&](int64_t begin, int64_t end, scalar_t* scratch) {
        dot(geo, begin, end, gp, kp, scratch, dp);
      });
    });
  }
  return finish_backward(grad, x_in, num_samples, dots, noise_scale(noise, sigma));
}

}  // namespace

TORCH_LIBRARY_IMPL(wsmooth_ext, CPU, m) {
  m.impl("flow_noise", &noise_cpu<false>);
  m.impl("flow_noise_backward", &noise_backward_cpu<false>);
  m.impl("pixel_noise", &noise_cpu<true>);
  m.impl("pixel_noise_backward", &noise_backward_cpu<true>);
}

}  // namespace wsmooth
