// Host-side pieces shared by the CPU and CUDA implementations: argument checks, the noise scale, the
// image masses, and the reduction that turns per-sample dot products into the gradient.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "distributions.h"
#include "op_schemas.h"

namespace wsmooth {

// The scalar arguments, x's shape and dtype, and keys: checked the same way by the forward and the backward
// (the backward reads keys[b] on the device too). `op` names the op in the message.
inline void check_op_args(const char* op, const at::Tensor& x, int64_t num_samples, double sigma, int64_t noise,
                          int64_t sample_offset, const at::Tensor& keys, bool pixel) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D [B, C, H, W], got ", x.dim(), " dims");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              op, ": x must be float32 or float64, got ", x.scalar_type());
  // flows live between pixels (H, W >= 2); pixel noise needs no neighbours
  TORCH_CHECK(pixel ? (x.size(2) >= 1 && x.size(3) >= 1) : (x.size(2) >= 2 && x.size(3) >= 2), op,
              pixel ? ": x must have H >= 1 and W >= 1, got " : ": x must have H >= 2 and W >= 2, got ", x.sizes());
  TORCH_CHECK(num_samples >= 1, op, ": num_samples must be >= 1, got ", num_samples);
  TORCH_CHECK(std::isfinite(sigma) && sigma > 0, op, ": sigma must be finite and > 0, got ", sigma);
  TORCH_CHECK(find_distribution(noise) != nullptr, op, ": noise must be ", distribution_codes(), ", got ", noise);
  TORCH_CHECK(sample_offset >= 0 && sample_offset + num_samples <= (int64_t(1) << 32),
              op, ": need 0 <= sample_offset and sample_offset + num_samples <= 2^32, got ", sample_offset, " + ",
              num_samples);
  TORCH_CHECK(keys.dim() == 1 && keys.size(0) == x.size(0) && keys.scalar_type() == at::kLong,
              op, ": keys must be int64 [B] with B = ", x.size(0), ", got ", keys.sizes(), " ", keys.scalar_type());
  TORCH_CHECK(keys.device() == x.device(), op, ": keys must be on x's device");
  TORCH_CHECK(x.size(0) * num_samples <= (int64_t(1) << 31) - 1, op, ": B * num_samples must be < 2^31 rows");
}

// λ(σ) of distribution `noise` (a checked code), so that each draw has standard deviation σ (distributions.h).
inline double noise_scale(int64_t noise, double sigma) { return find_distribution(noise)->scale(sigma); }

inline void check_noise_args(const at::Tensor& x, int64_t num_samples, double sigma, int64_t noise,
                             int64_t sample_offset, const at::Tensor& keys, bool normalize, bool pixel) {
  const char* op = noise_op_name(pixel, /*backward=*/false);
  check_op_args(op, x, num_samples, sigma, noise, sample_offset, keys, pixel);
  if (x.numel() > 0) {
    // One pass over x and one host sync (the output is num_samples times larger): min, max and the largest
    // image mass together. NaN propagates into min and max, and x is finite and non-negative exactly when
    // 0 <= min and max < inf. TORCH_CHECK_VALUE raises Python's ValueError, as the public API's checks do.
    const auto [lo, hi] = at::aminmax(x);
    const auto mass = normalize ? at::sum(x, {1, 2, 3}, /*keepdim=*/false, at::kDouble).amax()
                                : at::ones({}, x.options().dtype(at::kDouble));
    const auto bounds = at::stack({lo.to(at::kDouble), hi.to(at::kDouble), mass}).cpu();
    const double mn = bounds[0].item<double>(), mx = bounds[1].item<double>();
    TORCH_CHECK_VALUE(std::isfinite(mn) && std::isfinite(mx), op, ": x must be finite");
    TORCH_CHECK_VALUE(mn >= 0, op, ": x must be non-negative");
    // A bound, not a draw, decides: a unit draw is at most unit_bound in size (31·ln 2 for Laplace, 1 for uniform:
    // distributions.h), and a pixel receives one draw (pixel noise) or four edge flows, scaled by s·λ (or λ).
    const double unit = find_distribution(noise)->unit_bound;
    const double largest = mx + bounds[2].item<double>() * noise_scale(noise, sigma) * unit * (pixel ? 1 : 4);
    const double limit = x.scalar_type() == at::kFloat ? double(std::numeric_limits<float>::max())
                                                       : std::numeric_limits<double>::max();
    TORCH_CHECK_VALUE(largest < limit, op, ": sigma=", sigma, " is too large for these images: ",
                      "noisy pixels could reach ", largest, ", beyond ", x.scalar_type(), "'s range ", limit);
  }
}


// Per-image factor multiplying the unit noise: s·λ (mass-normalized units) or λ (pixel units).
inline at::Tensor noise_factor(const at::Tensor& x, double lambda, bool normalize) {
  if (!normalize) return at::full({x.size(0)}, lambda, x.options().dtype(at::kDouble));
  return at::sum(x, {1, 2, 3}, /*keepdim=*/false, at::kDouble) * lambda;
}

// d/dx of out_k = x + s·λ·D_k (D_k = div of unit flows, or unit pixel noise) is I + λ·D_k·1ᵀ, so
// grad_x = Σ_k g_k + λ·Σ_k ⟨g_k, D_k⟩ on every pixel (the second term only when normalizing).
inline at::Tensor finish_backward(const at::Tensor& grad, const at::Tensor& x, int64_t num_samples,
                                  const at::Tensor& dots, double lambda) {
  auto grad_x = grad.view({x.size(0), num_samples, x.size(1), x.size(2), x.size(3)}).sum(1);
  if (dots.defined()) {
    auto per_image = (dots.view({x.size(0), num_samples}).sum(1) * lambda).to(x.scalar_type());
    grad_x = grad_x + per_image.view({x.size(0), 1, 1, 1});
  }
  return grad_x;
}

inline void check_backward_args(const at::Tensor& grad, const at::Tensor& x, int64_t num_samples, double sigma,
                                int64_t noise, int64_t sample_offset, const at::Tensor& keys, bool pixel) {
  const char* op = noise_op_name(pixel, /*backward=*/true);
  check_op_args(op, x, num_samples, sigma, noise, sample_offset, keys, pixel);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == x.size(0) * num_samples && grad.size(1) == x.size(1) &&
                  grad.size(2) == x.size(2) && grad.size(3) == x.size(3),
              op, ": grad must be [B*num_samples, C, H, W], got ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && grad.device() == x.device(),
              op, ": grad must match x's dtype and device");
}

}  // namespace wsmooth
