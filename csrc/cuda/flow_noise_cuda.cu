// CUDA kernels of wsmooth_ext::flow_noise and its backward.
//
// Flow noise (tiled): one thread block per tile = (output sample, channel, band of image rows). The block
// draws the flows of the edges its band touches into shared memory — one Philox call per four edges,
// neighbouring threads taking neighbouring counters — then each thread writes output pixels of the band
// (coalesced, each pixel once). A one-thread-per-pixel variant would need the 4 edges around its pixel and
// so ~8x more Philox work per output; the tile shares it.
// Pixel noise: no neighbours are involved, so each thread turns one Philox block into 4 output pixels.
// Backward: one block per sample computes ⟨grad, D_k⟩ by regenerating the noise; see ops_common.h.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../flow_noise.h"
#include "../ops_common.h"

namespace wsmooth {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kTilePixels = 1024;  // target output pixels per tile

// Unit noise of global draws [g_lo, g_hi) of stream s into dst[g - g_lo], cooperatively by the block.
template <typename scalar_t>
__device__ void fill_draws(const Stream& s, int64_t kind, int64_t g_lo, int64_t g_hi, scalar_t* dst) {
  if (g_hi <= g_lo) return;
  const int64_t batch_lo = g_lo / kDrawsPerBatch;
  const int64_t batch_hi = (g_hi - 1) / kDrawsPerBatch + 1;
  const int64_t tasks = (batch_hi - batch_lo) * kBlocksPerBatch;
  for (int64_t t = threadIdx.x; t < tasks; t += blockDim.x) {
    const int64_t batch = batch_lo + t / kBlocksPerBatch;
    const int lane = static_cast<int>(t % kBlocksPerBatch);
    uint32_t w[4];
    philox_block(s, static_cast<uint32_t>(batch * kBlocksPerBatch + lane), w);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t g = batch * kDrawsPerBatch + i * kBlocksPerBatch + lane;
      if (g >= g_lo && g < g_hi) dst[g - g_lo] = unit_noise<scalar_t>(w[i], kind);
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) flow_forward_kernel(
    const scalar_t* __restrict__ x, const int64_t* __restrict__ keys, const double* __restrict__ factor,
    scalar_t* __restrict__ out, int64_t C, int64_t H, int64_t W, int64_t num_samples, int64_t sample_offset,
    uint64_t seed, int64_t kind, int64_t band_rows, int64_t bands) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // sv holds vertical-edge rows r0-1 .. r0+T-1 (slot 0 unused when r0 = 0); sh holds horizontal rows of the band.
  scalar_t* sv = reinterpret_cast<scalar_t*>(smem_raw);
  scalar_t* sh = sv + (band_rows + 1) * W;

  int64_t tile = blockIdx.x;
  const int64_t band = tile % bands;
  tile /= bands;
  const int64_t c = tile % C;
  const int64_t row = tile / C;
  const int64_t b = row / num_samples, k = row % num_samples;
  const int64_t r0 = band * band_rows;
  const int64_t rows_here = band_rows < H - r0 ? band_rows : H - r0;
  const Stream s = make_stream(seed, keys[b], static_cast<uint64_t>(sample_offset + k));
  const int64_t chan_base = c * draws_per_channel(H, W, false);
  const int64_t nv = (H - 1) * W;

  // vertical edge rows r0-1 .. r0+rows_here-1, clipped to the image's 0 .. H-2
  const int64_t v_lo = (r0 > 0 ? r0 - 1 : 0) * W;
  const int64_t v_hi = (r0 + rows_here < H - 1 ? r0 + rows_here : H - 1) * W;
  fill_draws(s, kind, chan_base + v_lo, chan_base + v_hi, sv + (v_lo - (r0 - 1) * W));
  const int64_t h_lo = nv + r0 * (W - 1), h_hi = nv + (r0 + rows_here) * (W - 1);
  fill_draws(s, kind, chan_base + h_lo, chan_base + h_hi, sh);
  __syncthreads();

  const scalar_t f = static_cast<scalar_t>(factor[b]);
  const int64_t hw = H * W;
  const scalar_t* xc = x + (b * C + c) * hw;
  scalar_t* oc = out + (row * C + c) * hw;
  for (int64_t p = threadIdx.x; p < rows_here * W; p += blockDim.x) {
    const int64_t li = p / W, j = p % W, i = r0 + li;
    scalar_t acc = 0;
    if (i > 0) acc += sv[li * W + j];            // inflow from above: v[i-1, j]
    if (i < H - 1) acc -= sv[(li + 1) * W + j];  // outflow below: v[i, j]
    if (j > 0) acc += sh[li * (W - 1) + j - 1];  // inflow from the left: h[i, j-1]
    if (j < W - 1) acc -= sh[li * (W - 1) + j];  // outflow right: h[i, j]
    oc[i * W + j] = xc[i * W + j] + f * acc;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) pixel_forward_kernel(
    const scalar_t* __restrict__ x, const int64_t* __restrict__ keys, const double* __restrict__ factor,
    scalar_t* __restrict__ out, int64_t draws, int64_t batches, int64_t rows, int64_t num_samples,
    int64_t sample_offset, uint64_t seed, int64_t kind) {
  const int64_t tasks = rows * batches * kBlocksPerBatch;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < tasks;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = t / (batches * kBlocksPerBatch);
    const int64_t rem = t % (batches * kBlocksPerBatch);
    const int64_t batch = rem / kBlocksPerBatch;
    const int lane = static_cast<int>(rem % kBlocksPerBatch);
    const int64_t b = row / num_samples, k = row % num_samples;
    uint32_t w[4];
    philox_block(make_stream(seed, keys[b], static_cast<uint64_t>(sample_offset + k)),
                 static_cast<uint32_t>(batch * kBlocksPerBatch + lane), w);
    const scalar_t f = static_cast<scalar_t>(factor[b]);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t g = batch * kDrawsPerBatch + i * kBlocksPerBatch + lane;
      if (g < draws) out[row * draws + g] = x[b * draws + g] + f * unit_noise<scalar_t>(w[i], kind);
    }
  }
}

// dots[row] = ⟨grad_row, D_row⟩, D = div of the unit flows (or the unit pixel noise).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) dot_kernel(
    const scalar_t* __restrict__ grad, const int64_t* __restrict__ keys, double* __restrict__ dots, int64_t C,
    int64_t H, int64_t W, int64_t num_samples, int64_t sample_offset, uint64_t seed, int64_t kind, bool pixel) {
  __shared__ double partial[kThreads];
  const int64_t row = blockIdx.x;
  const int64_t b = row / num_samples, k = row % num_samples;
  const Stream s = make_stream(seed, keys[b], static_cast<uint64_t>(sample_offset + k));
  const int64_t r = draws_per_channel(H, W, pixel), draws = C * r, nv = (H - 1) * W, hw = H * W;
  const scalar_t* g = grad + row * C * hw;
  const int64_t tasks = (draws + kDrawsPerBatch - 1) / kDrawsPerBatch * kBlocksPerBatch;
  double acc = 0;
  for (int64_t t = threadIdx.x; t < tasks; t += blockDim.x) {
    const int64_t batch = t / kBlocksPerBatch;
    const int lane = static_cast<int>(t % kBlocksPerBatch);
    uint32_t w[4];
    philox_block(s, static_cast<uint32_t>(batch * kBlocksPerBatch + lane), w);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t d = batch * kDrawsPerBatch + i * kBlocksPerBatch + lane;
      if (d >= draws) continue;
      const scalar_t n = unit_noise<scalar_t>(w[i], kind);
      if (pixel) {
        acc += static_cast<double>(n * g[d]);
        continue;
      }
      const int64_t c = d / r, e = d % r;
      const scalar_t* gc = g + c * hw;
      if (e < nv) {  // vertical edge (i, j) -> (i+1, j)
        acc += static_cast<double>(n * (gc[e + W] - gc[e]));
      } else {       // horizontal edge (i, j) -> (i, j+1)
        const int64_t eh = e - nv, i = eh / (W - 1), j = eh % (W - 1);
        acc += static_cast<double>(n * (gc[i * W + j + 1] - gc[i * W + j]));
      }
    }
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) dots[row] = partial[0];
}

int64_t launch_blocks(int64_t tasks) {
  return std::min<int64_t>((tasks + kThreads - 1) / kThreads, int64_t(1) << 20);
}

at::Tensor flow_noise_cuda(const at::Tensor& x_in, int64_t num_samples, double sigma, int64_t noise, int64_t seed,
                           int64_t sample_offset, const at::Tensor& keys_in, bool normalize, bool pixel) {
  check_noise_args(x_in, num_samples, sigma, noise, sample_offset, keys_in);
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const auto x = x_in.contiguous();
  const auto keys = keys_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), rows = B * num_samples;
  auto out = at::empty({rows, C, H, W}, x.options());
  if (out.numel() == 0) return out;
  const auto factor = noise_factor(x, noise_scale(noise, sigma), normalize).contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wsmooth_ext_flow_noise_cuda", [&] {
    if (pixel) {
      const int64_t draws = C * H * W, batches = (draws + kDrawsPerBatch - 1) / kDrawsPerBatch;
      pixel_forward_kernel<scalar_t><<<launch_blocks(rows * batches * kBlocksPerBatch), kThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), keys.data_ptr<int64_t>(), factor.data_ptr<double>(), out.data_ptr<scalar_t>(),
          draws, batches, rows, num_samples, sample_offset, static_cast<uint64_t>(seed), noise);
    } else {
      const int64_t band_rows = std::max<int64_t>(1, std::min<int64_t>(H, kTilePixels / W));
      const int64_t bands = (H + band_rows - 1) / band_rows;
      const size_t smem = ((band_rows + 1) * W + band_rows * (W - 1)) * sizeof(scalar_t);
      TORCH_CHECK(smem <= 48 * 1024, "wsmooth_ext.flow_noise (CUDA): image width ", W, " is too large");
      const int64_t tiles = rows * C * bands;
      TORCH_CHECK(tiles < (int64_t(1) << 31), "wsmooth_ext.flow_noise (CUDA): too many samples in one call");
      flow_forward_kernel<scalar_t><<<tiles, kThreads, smem, stream>>>(
          x.data_ptr<scalar_t>(), keys.data_ptr<int64_t>(), factor.data_ptr<double>(), out.data_ptr<scalar_t>(), C,
          H, W, num_samples, sample_offset, static_cast<uint64_t>(seed), noise, band_rows, bands);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor flow_noise_backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in, int64_t num_samples,
                                    double sigma, int64_t noise, int64_t seed, int64_t sample_offset,
                                    const at::Tensor& keys_in, bool normalize, bool pixel) {
  check_backward_args(grad_in, x_in, num_samples, sigma, noise, sample_offset, keys_in);
  const c10::cuda::CUDAGuard device_guard(grad_in.device());
  const auto grad = grad_in.contiguous();
  const auto keys = keys_in.contiguous();
  at::Tensor dots;
  if (normalize && grad.numel() > 0) {
    TORCH_CHECK(grad.size(0) < (int64_t(1) << 31), "wsmooth_ext.flow_noise_backward (CUDA): too many samples");
    dots = at::empty({grad.size(0)}, grad.options().dtype(at::kDouble));
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "wsmooth_ext_flow_noise_backward_cuda", [&] {
      dot_kernel<scalar_t><<<grad.size(0), kThreads, 0, stream>>>(
          grad.data_ptr<scalar_t>(), keys.data_ptr<int64_t>(), dots.data_ptr<double>(), x_in.size(1), x_in.size(2),
          x_in.size(3), num_samples, sample_offset, static_cast<uint64_t>(seed), noise, pixel);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return finish_backward(grad, x_in, num_samples, dots, noise_scale(noise, sigma));
}

}  // namespace

TORCH_LIBRARY_IMPL(wsmooth_ext, CUDA, m) {
  m.impl("flow_noise", &flow_noise_cuda);
  m.impl("flow_noise_backward", &flow_noise_backward_cuda);
}

}  // namespace wsmooth
