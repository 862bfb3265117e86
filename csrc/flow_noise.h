// Per-element math of the fused smoothing-noise ops, shared by the CPU and CUDA kernels.
//
// Everything here is a pure function of its arguments, so the CPU kernel (csrc/cpu), the CUDA kernel
// (csrc/cuda) and the pure-tensor oracle (wsmooth_ext/reference.py) produce the same noise.
//
// ----------------------------------------------------------------------------------------------------
// Counter layout (Philox4x32-10, Salmon et al. 2011)
//
//   key     = [seed mod 2^32, seed >> 32]                          (the user's 64-bit seed)
//   counter = [block, sample, image_key mod 2^32, image_key >> 32]
//
// where `sample` = sample_offset + k is the global index of the smoothing sample (< 2^32). Each block gives
// four words; draws are grouped in batches of 64 = 16 blocks × 4 words, laid out word-major so that 16
// consecutive draws come from the same word of 16 consecutive blocks (SIMD lanes on the CPU, neighbouring
// threads on the GPU):
//   draw g  <-  word (g % 64) / 16  of  block 16 * (g / 64) + g % 16.
// Draws are numbered channel-major:
//   flow noise : g = c * r + e, r = (H-1)*W + H*(W-1) edges per channel,
//                e = i*W + j               for the vertical edge between pixels (i, j) and (i+1, j),
//                e = (H-1)*W + i*(W-1) + j for the horizontal edge between pixels (i, j) and (i, j+1);
//   pixel noise: g = c*H*W + i*W + j.
// Hence the noise on an edge is a function of (seed, image key, sample index, channel, edge) alone:
// independent of batching, chunking, sharding and device.
//
// Word -> noise of unit scale (multiplied by λ, and by the mass s when normalizing, in the kernels): the rule of
// each distribution, in csrc/distributions.h (laplace: ±(-ln u), u = (bits 0..30 + 1) * 2^-31, sign = bit 31;
// uniform: ((int32)(word ^ 2^31) + 0.5) * 2^-31).
// ----------------------------------------------------------------------------------------------------
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define WS_HOST_DEVICE __host__ __device__ __forceinline__
#define WS_UNROLL _Pragma("unroll")
#else
#define WS_HOST_DEVICE inline __attribute__((always_inline))
#define WS_UNROLL _Pragma("GCC unroll 16")
#endif

namespace wsmooth {

constexpr int kBlocksPerBatch = 16;                    // blocks whose words interleave (see layout above)
constexpr int64_t kDrawsPerBatch = 4 * kBlocksPerBatch;  // 64 draws per batch

// Where draw g comes from: block index and word (0..3) within that block.
WS_HOST_DEVICE uint32_t block_of_draw(int64_t g) {
  return static_cast<uint32_t>(kBlocksPerBatch * (g / kDrawsPerBatch) + g % kBlocksPerBatch);
}
WS_HOST_DEVICE int word_of_draw(int64_t g) { return static_cast<int>((g % kDrawsPerBatch) / kBlocksPerBatch); }

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

// The per-(image, sample) part of the counter, and the key.
struct Stream {
  uint32_t key0, key1;      // seed
  uint32_t sample;          // counter word 1
  uint32_t image0, image1;  // counter words 2, 3
};

WS_HOST_DEVICE Stream make_stream(uint64_t seed, int64_t image_key, uint64_t sample) {
  const uint64_t k = static_cast<uint64_t>(image_key);
  return Stream{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(sample),
                static_cast<uint32_t>(k), static_cast<uint32_t>(k >> 32)};
}

// One Philox round followed by the key bump, on scalars: the CPU kernel calls it on arrays of
// lanes (so it vectorizes), the scalar philox_block below on one counter.
WS_HOST_DEVICE void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t& k0,
                                 uint32_t& k1) {
  const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
  const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
  const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
  const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
  c1 = static_cast<uint32_t>(p1);
  c3 = static_cast<uint32_t>(p0);
  c0 = n0;
  c2 = n2;
  k0 += kPhiloxW0;  // the bump after the last round is harmless: the key is not used again
  k1 += kPhiloxW1;
}

constexpr int kPhiloxRounds = 10;

// Philox4x32-10 of counter [block, s.sample, s.image0, s.image1] under key [s.key0, s.key1].
WS_HOST_DEVICE void philox_block(const Stream& s, uint32_t block, uint32_t out[4]) {
  uint32_t c0 = block, c1 = s.sample, c2 = s.image0, c3 = s.image1;
  uint32_t k0 = s.key0, k1 = s.key1;
  WS_UNROLL
  for (int round = 0; round < kPhiloxRounds; ++round) philox_round(c0, c1, c2, c3, k0, k1);
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

WS_HOST_DEVICE uint32_t float_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
#endif
}

WS_HOST_DEVICE float bits_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
#endif
}

// The Cephes logf polynomial (max error ~1 ulp) on a mantissa m reduced to [sqrt(1/2)-1, sqrt(2)-1) and its
// exponent e: log = log1p(m) + e·ln 2. A template so that the CPU kernel evaluates the very same sequence of
// roundings on SIMD vectors (GCC vector types, csrc/cpu/simd_noise.h) as on scalars here: every path gives
// bit-identical noise as long as no multiply-add is contracted into an FMA (setup.py: -ffp-contract=off).
template <typename F>
WS_HOST_DEVICE F log_reduced(F m, F e) {
  const F z = m * m;
  F y = 7.0376836292e-2f * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * z * m;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

constexpr float kSqrtHalf = 0.707106781186547524f;

// Natural log for normal positive floats, branch-free (so it vectorizes).
WS_HOST_DEVICE float log_positive(float v) {
  const uint32_t b = float_bits(v);
  float e = static_cast<float>(static_cast<int32_t>(b >> 23) - 126);
  float m = bits_float((b & 0x007FFFFFu) | 0x3F000000u);  // in [0.5, 1)
  const bool small = m < kSqrtHalf;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  return log_reduced(m, e);
}

WS_HOST_DEVICE double log_positive(double v) { return log(v); }

// Number of random draws per channel of one sample.
WS_HOST_DEVICE int64_t draws_per_channel(int64_t H, int64_t W, bool pixel) {
  return pixel ? H * W : (H - 1) * W + H * (W - 1);
}

}  // namespace wsmooth
