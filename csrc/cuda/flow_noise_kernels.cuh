// CUDA kernels of wsmooth_ext::flow_noise and its backward, and the one function that plans their launches.
//
// Flow noise (tiled): one thread block per tile = (output sample, channel, band of image rows, band of image
// columns). The block draws the flows of the edges its tile touches into shared memory — one Philox call per
// four edges, neighbouring threads taking neighbouring counters — then each thread writes output pixels of the
// tile (coalesced, each pixel once). A one-thread-per-pixel variant would need the 4 edges around its pixel and
// so ~8x more Philox work per output; the tile shares it. Images up to kMaxTileCols wide are tiled by whole
// rows (the edges of a tile are then one contiguous range of draws); wider ones also by columns, so the shared
// memory of a tile stays within the 48 KiB every GPU grants without opting in, whatever the width.
// Pixel noise: no neighbours are involved, so each thread turns one Philox block into 4 output pixels.
// Backward: one block per sample computes ⟨grad, D_k⟩ by regenerating the noise; see ops_common.h.
//
// Only the core of the CUDA dialect is used here — built-in indices, __shared__, __syncthreads, qualifiers —
// and neither the runtime API nor ATen. That lets the tests compile this very text with a host compiler
// against csrc/cuda_emulation/cuda_emulation.h and run it on CPU threads. Everything is in an unnamed
// namespace: each translation unit that includes the header (the CUDA build's, or one emulated variant each)
// gets its own copy.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../distributions.h"

namespace wsmooth {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kTilePixels = 1024;   // target output pixels per tile
constexpr int64_t kMaxTileCols = 1024;  // wider images are tiled by columns as well
// The dynamic shared memory a block may use without cudaFuncSetAttribute, on every GPU.
constexpr size_t kMaxDynamicSharedBytes = 48 * 1024;

// The flow kernel's tiling. sv holds band_rows + 1 rows of tile_cols vertical edges; sh holds band_rows rows
// of horizontal edges, sh_stride apart (W - 1 when a tile spans whole rows, so that they are contiguous).
struct FlowTiles {
  int64_t band_rows, bands, tile_cols, col_tiles, sh_stride;
};

// Dynamic shared memory of the flow kernel. Declared once, at namespace scope, so that the emulated build can
// define it as its per-block arena.
extern __shared__ __align__(16) unsigned char dynamic_smem[];

// The backward's per-thread partial sums (static shared memory).
__shared__ double dot_partial[kThreads];

// Unit noise of the draws of Philox block (batch, lane) that fall in [g_lo, g_hi), stored at at_g_lo[g - g_lo].
template <typename scalar_t>
__device__ __forceinline__ void store_block_draws(const Stream& s, int64_t kind, int64_t batch, int lane,
                                                  int64_t g_lo, int64_t g_hi, scalar_t* at_g_lo) {
  uint32_t w[4];
  philox_block(s, static_cast<uint32_t>(batch * kBlocksPerBatch + lane), w);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t g = batch * kDrawsPerBatch + i * kBlocksPerBatch + lane;
    if (g >= g_lo && g < g_hi) at_g_lo[g - g_lo] = unit_noise<scalar_t>(w[i], kind);
  }
}

// Unit noise of global draws [g_lo, g_hi) of stream s into dst[g - g_lo], cooperatively by the block.
template <typename scalar_t>
__device__ void fill_draws(const Stream& s, int64_t kind, int64_t g_lo, int64_t g_hi, scalar_t* dst) {
  if (g_hi <= g_lo) return;
  const int64_t batch_lo = g_lo / kDrawsPerBatch;
  const int64_t batch_hi = (g_hi - 1) / kDrawsPerBatch + 1;
  const int64_t tasks = (batch_hi - batch_lo) * kBlocksPerBatch;
  for (int64_t t = threadIdx.x; t < tasks; t += blockDim.x) {
    store_block_draws(s, kind, batch_lo + t / kBlocksPerBatch, static_cast<int>(t % kBlocksPerBatch), g_lo, g_hi,
                      dst);
  }
}

// Unit noise of draws base + r * row_len + col for rows [r_lo, r_hi) and columns [col_lo, col_hi) into
// dst[(r - r_lo) * dst_stride + col - col_lo], cooperatively by the block.
template <typename scalar_t>
__device__ void fill_rows(const Stream& s, int64_t kind, int64_t base, int64_t row_len, int64_t r_lo, int64_t r_hi,
                          int64_t col_lo, int64_t col_hi, scalar_t* dst, int64_t dst_stride) {
  if (r_hi <= r_lo || col_hi <= col_lo) return;
  if (col_lo == 0 && col_hi == row_len && dst_stride == row_len) {  // whole rows: one contiguous range
    fill_draws(s, kind, base + r_lo * row_len, base + r_hi * row_len, dst);
    return;
  }
  // A row segment of `cols` draws overlaps at most cols / 64 + 2 batches; tasks past a row's last one idle.
  const int64_t cols = col_hi - col_lo;
  const int64_t tasks_per_row = ((cols - 1) / kDrawsPerBatch + 2) * kBlocksPerBatch;
  const int64_t tasks = (r_hi - r_lo) * tasks_per_row;
  for (int64_t t = threadIdx.x; t < tasks; t += blockDim.x) {
    const int64_t r = t / tasks_per_row, rt = t % tasks_per_row;
    const int64_t g_lo = base + (r_lo + r) * row_len + col_lo, g_hi = g_lo + cols;
    const int64_t batch = g_lo / kDrawsPerBatch + rt / kBlocksPerBatch;
    if (batch * kDrawsPerBatch >= g_hi) continue;
    store_block_draws(s, kind, batch, static_cast<int>(rt % kBlocksPerBatch), g_lo, g_hi, dst + r * dst_stride);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) flow_forward_kernel(
    const scalar_t* __restrict__ x, const int64_t* __restrict__ keys, const double* __restrict__ factor,
    scalar_t* __restrict__ out, int64_t C, int64_t H, int64_t W, int64_t num_samples, int64_t sample_offset,
    uint64_t seed, int64_t kind, FlowTiles t) {
  // sv: vertical-edge rows r0-1 .. r0+T-1 of the tile's columns (row slot 0 unused when r0 = 0);
  // sh: horizontal-edge rows r0 .. r0+T-1, from the left inflow of the first column (h0) to the last outflow.
  scalar_t* sv = reinterpret_cast<scalar_t*>(dynamic_smem);
  scalar_t* sh = sv + (t.band_rows + 1) * t.tile_cols;

  int64_t tile = blockIdx.x;
  const int64_t col_tile = tile % t.col_tiles;
  tile /= t.col_tiles;
  const int64_t band = tile % t.bands;
  tile /= t.bands;
  const int64_t c = tile % C;
  const int64_t row = tile / C;
  const int64_t b = row / num_samples, k = row % num_samples;
  const int64_t r0 = band * t.band_rows, c0 = col_tile * t.tile_cols;
  const int64_t rows_here = t.band_rows < H - r0 ? t.band_rows : H - r0;
  const int64_t cols_here = t.tile_cols < W - c0 ? t.tile_cols : W - c0;
  const Stream s = make_stream(seed, keys[b], static_cast<uint64_t>(sample_offset + k));
  const int64_t chan_base = c * draws_per_channel(H, W, false);
  const int64_t nv = (H - 1) * W;

  // vertical edge rows r0-1 .. r0+rows_here-1, clipped to the image's 0 .. H-2
  const int64_t v_lo = r0 > 0 ? r0 - 1 : 0;
  const int64_t v_hi = r0 + rows_here < H - 1 ? r0 + rows_here : H - 1;
  fill_rows(s, kind, chan_base, W, v_lo, v_hi, c0, c0 + cols_here, sv + (v_lo - (r0 - 1)) * t.tile_cols,
            t.tile_cols);
  // horizontal edges h0 .. c0+cols_here-1 of the band's rows, clipped to the image's 0 .. W-2
  const int64_t h0 = c0 > 0 ? c0 - 1 : 0;
  const int64_t h_hi = c0 + cols_here < W - 1 ? c0 + cols_here : W - 1;
  fill_rows(s, kind, chan_base + nv, W - 1, r0, r0 + rows_here, h0, h_hi, sh, t.sh_stride);
  __syncthreads();

  const scalar_t f = static_cast<scalar_t>(factor[b]);
  const int64_t hw = H * W;
  const scalar_t* xc = x + (b * C + c) * hw;
  scalar_t* oc = out + (row * C + c) * hw;
  for (int64_t p = threadIdx.x; p < rows_here * cols_here; p += blockDim.x) {
    const int64_t li = p / cols_here, lj = p % cols_here, i = r0 + li, j = c0 + lj;
    scalar_t acc = 0;
    if (i > 0) acc += sv[li * t.tile_cols + lj];                // inflow from above: v[i-1, j]
    if (i < H - 1) acc -= sv[(li + 1) * t.tile_cols + lj];      // outflow below: v[i, j]
    if (j > 0) acc += sh[li * t.sh_stride + (j - 1 - h0)];      // inflow from the left: h[i, j-1]
    if (j < W - 1) acc -= sh[li * t.sh_stride + (j - h0)];      // outflow right: h[i, j]
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
  dot_partial[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) dot_partial[threadIdx.x] += dot_partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) dots[row] = dot_partial[0];
}

enum class KernelId { kFlowForward, kPixelForward, kDot };

// How one op call launches its kernel. Bounds that a call can exceed (blocks >= 2^31) are checked by the
// caller, which can raise a proper error.
struct LaunchPlan {
  int64_t blocks;
  int threads;
  size_t smem_bytes;  // dynamic shared memory
  FlowTiles tiles;    // kFlowForward only
  int64_t batches;    // kPixelForward only: batches of 64 draws per sample
};

// The launch geometry of `kernel` for `rows` output samples of C x H x W images of elem_size-byte scalars: the
// one definition, used by the CUDA launch and by the emulated one, so the emulation runs what a GPU runs.
inline LaunchPlan plan_launch(KernelId kernel, int64_t rows, int64_t C, int64_t H, int64_t W, size_t elem_size) {
  LaunchPlan plan{0, kThreads, 0, FlowTiles{1, 1, 1, 1, 1}, 0};
  if (kernel == KernelId::kFlowForward) {
    FlowTiles& t = plan.tiles;
    t.col_tiles = (W + kMaxTileCols - 1) / kMaxTileCols;
    t.tile_cols = (W + t.col_tiles - 1) / t.col_tiles;  // balanced, at most kMaxTileCols
    t.band_rows = kTilePixels / t.tile_cols < H ? kTilePixels / t.tile_cols : H;
    if (t.band_rows < 1) t.band_rows = 1;
    t.bands = (H + t.band_rows - 1) / t.band_rows;
    t.sh_stride = t.col_tiles == 1 ? W - 1 : t.tile_cols + 1;
    plan.smem_bytes = static_cast<size_t>((t.band_rows + 1) * t.tile_cols + t.band_rows * t.sh_stride) * elem_size;
    plan.blocks = rows * C * t.bands * t.col_tiles;
  } else if (kernel == KernelId::kPixelForward) {
    plan.batches = (C * H * W + kDrawsPerBatch - 1) / kDrawsPerBatch;
    const int64_t tasks = rows * plan.batches * kBlocksPerBatch;
    // A grid-stride loop covers the rest: 2^20 blocks keep every SM busy.
    const int64_t wanted = (tasks + kThreads - 1) / kThreads;
    plan.blocks = wanted < (int64_t(1) << 20) ? wanted : (int64_t(1) << 20);
  } else {
    plan.blocks = rows;
  }
  return plan;
}

}  // namespace
}  // namespace wsmooth
