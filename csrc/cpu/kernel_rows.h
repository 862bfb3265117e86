// The per-row work of the CPU kernels (generate one sample's noise, then apply the stencil or take the dot
// product of the backward), written once and compiled once per CPU path: each csrc/cpu/path_*.cpp expands
// WS_DEFINE_CPU_PATH with its instruction set and multiply, and everything below is inlined into those
// functions, so the stencil loops are vectorized for that instruction set too. No ATen here (see simd_noise.h).
#pragma once

#include <cstdint>

#include "simd_noise.h"

namespace wsmooth {

struct Geometry {
  int64_t C, H, W, num_samples, sample_offset, draws;
  uint64_t seed;
  int64_t kind;
  bool pixel;
};

// Scratch size for one sample's draws, rounded up to whole batches (the generators never need a tail).
inline int64_t scratch_size(int64_t draws) { return (draws + kDrawsPerBatch - 1) / kDrawsPerBatch * kDrawsPerBatch; }

template <typename scalar_t>
using ForwardRowsFn = void (*)(const Geometry&, int64_t begin, int64_t end, const scalar_t* x, const int64_t* keys,
                               const double* factor, scalar_t* scratch, scalar_t* out);
template <typename scalar_t>
using DotRowsFn = void (*)(const Geometry&, int64_t begin, int64_t end, const scalar_t* grad, const int64_t* keys,
                           scalar_t* scratch, double* dots);
// `streams` calls of the generator alone (stream i = sample i of image 0) into one scratch buffer: the floor
// the benchmarks compare the op with (Philox + conversion, no stencil, no output traffic).
template <typename scalar_t>
using GenerateStreamsFn = void (*)(uint64_t seed, int64_t kind, int64_t draws, int64_t streams, scalar_t* scratch);

template <typename scalar_t>
struct RowFns {
  ForwardRowsFn<scalar_t> forward;
  DotRowsFn<scalar_t> dot;
  GenerateStreamsFn<scalar_t> generate;
};

// One CPU path's entry points, per dtype.
struct CpuKernels {
  RowFns<float> f32;
  RowFns<double> f64;
};

template <typename scalar_t>
const RowFns<scalar_t>& row_fns(const CpuKernels& k) {
  if constexpr (sizeof(scalar_t) == sizeof(float)) {
    return k.f32;
  } else {
    return k.f64;
  }
}

namespace rows {

// The vertical part of a pixel's net inflow: from the pixel above minus to the pixel below (top row: no inflow,
// bottom row: no outflow).
enum RowKind { kTopRow, kMiddleRow, kBottomRow };
template <RowKind kRow, typename scalar_t>
WS_INLINE scalar_t vertical(const scalar_t* above, const scalar_t* below, int64_t j) {
  if constexpr (kRow == kTopRow) {
    return -below[j];
  } else if constexpr (kRow == kBottomRow) {
    return above[j];
  } else {
    return above[j] - below[j];
  }
}

// One output row, each pixel written once from registers: x + f·(vertical + h[j-1] - h[j]), edges without the
// missing horizontal term. The interior loop vectorizes (unaligned loads of h at j-1 and j).
template <RowKind kRow, typename scalar_t>
WS_INLINE void stencil_row(const scalar_t* __restrict above, const scalar_t* __restrict below,
                           const scalar_t* __restrict hr, const scalar_t* __restrict xr, scalar_t f, int64_t W,
                           scalar_t* __restrict orow) {
  orow[0] = xr[0] + f * (vertical<kRow>(above, below, 0) - hr[0]);
  for (int64_t j = 1; j < W - 1; ++j) orow[j] = xr[j] + f * (vertical<kRow>(above, below, j) + (hr[j - 1] - hr[j]));
  orow[W - 1] = xr[W - 1] + f * (vertical<kRow>(above, below, W - 1) + hr[W - 2]);
}

// One output sample: out = x + f·div(n) (flow) or x + f·n (pixel), n the unit noise in buf.
template <typename scalar_t>
WS_INLINE void apply_sample(const scalar_t* __restrict x, const scalar_t* __restrict buf, scalar_t f, int64_t C,
                            int64_t H, int64_t W, bool pixel, scalar_t* __restrict out) {
  if (pixel) {
    const int64_t n = C * H * W;
    for (int64_t p = 0; p < n; ++p) out[p] = x[p] + f * buf[p];
    return;
  }
  const int64_t r = draws_per_channel(H, W, false);
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* v = buf + c * r;        // [H-1, W]: v[i,j] moves mass (i,j) -> (i+1,j)
    const scalar_t* h = v + (H - 1) * W;    // [H, W-1]: h[i,j] moves mass (i,j) -> (i,j+1)
    const scalar_t* xc = x + c * H * W;
    scalar_t* oc = out + c * H * W;
    stencil_row<kTopRow>(v, v, h, xc, f, W, oc);
    for (int64_t i = 1; i < H - 1; ++i)
      stencil_row<kMiddleRow>(v + (i - 1) * W, v + i * W, h + i * (W - 1), xc + i * W, f, W, oc + i * W);
    const int64_t last = H - 1;
    stencil_row<kBottomRow>(v + (last - 1) * W, v, h + last * (W - 1), xc + last * W, f, W, oc + last * W);
  }
}

// ⟨g, div(n)⟩ = Σ_v n_v·(g[below] − g[above]) + Σ_h n_h·(g[right] − g[left])  (or ⟨g, n⟩ for pixel noise).
// Sums run in a fixed order (a row in scalar_t, rows in double), which no path reorders: no -ffast-math.
template <typename scalar_t>
WS_INLINE double dot_sample(const scalar_t* __restrict g, const scalar_t* __restrict buf, int64_t C, int64_t H,
                            int64_t W, bool pixel) {
  double total = 0;
  if (pixel) {
    for (int64_t c = 0; c < C * H; ++c) {
      scalar_t acc = 0;
      for (int64_t j = 0; j < W; ++j) acc += g[c * W + j] * buf[c * W + j];
      total += acc;
    }
    return total;
  }
  const int64_t r = draws_per_channel(H, W, false);
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* gc = g + c * H * W;
    const scalar_t* v = buf + c * r;
    const scalar_t* h = v + (H - 1) * W;
    for (int64_t i = 0; i < H; ++i) {
      scalar_t acc = 0;
      if (i < H - 1) {
        for (int64_t j = 0; j < W; ++j) acc += v[i * W + j] * (gc[(i + 1) * W + j] - gc[i * W + j]);
      }
      for (int64_t j = 0; j < W - 1; ++j) acc += h[i * (W - 1) + j] * (gc[i * W + j + 1] - gc[i * W + j]);
      total += acc;
    }
  }
  return total;
}

template <class Multiply, typename scalar_t>
WS_INLINE void forward(const Geometry& geo, int64_t begin, int64_t end, const scalar_t* x, const int64_t* keys,
                       const double* factor, scalar_t* scratch, scalar_t* out) {
  const int64_t chw = geo.C * geo.H * geo.W;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / geo.num_samples, k = row % geo.num_samples;
    simd::generate_lanes<Multiply>(make_stream(geo.seed, keys[b], geo.sample_offset + k), geo.kind, geo.draws,
                                   scratch);
    apply_sample<scalar_t>(x + b * chw, scratch, static_cast<scalar_t>(factor[b]), geo.C, geo.H, geo.W, geo.pixel,
                           out + row * chw);
  }
}

template <class Multiply, typename scalar_t>
WS_INLINE void dot(const Geometry& geo, int64_t begin, int64_t end, const scalar_t* grad, const int64_t* keys,
                   scalar_t* scratch, double* dots) {
  const int64_t chw = geo.C * geo.H * geo.W;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / geo.num_samples, k = row % geo.num_samples;
    simd::generate_lanes<Multiply>(make_stream(geo.seed, keys[b], geo.sample_offset + k), geo.kind, geo.draws,
                                   scratch);
    dots[row] = dot_sample<scalar_t>(grad + row * chw, scratch, geo.C, geo.H, geo.W, geo.pixel);
  }
}

template <class Multiply, typename scalar_t>
WS_INLINE void generate_streams(uint64_t seed, int64_t kind, int64_t draws, int64_t streams, scalar_t* scratch) {
  for (int64_t i = 0; i < streams; ++i) {
    simd::generate_lanes<Multiply>(make_stream(seed, 0, static_cast<uint64_t>(i)), kind, draws, scratch);
    // keep the stores: the compiler must not drop work whose result is never read
    asm volatile("" : : "r"(scratch) : "memory");
  }
}

}  // namespace rows
}  // namespace wsmooth

// Defines `const CpuKernels NAME` whose functions are compiled with the function attribute TARGET (e.g.
// __attribute__((target("avx2,fma"))), or nothing) and generate with the multiply policy MULTIPLY. The
// functions have internal linkage: the code of one instruction set never stands in for another's. `flatten`
// inlines the whole call tree into them, so the policy's intrinsics (which need TARGET, and so cannot be
// always_inline into the generic helpers in between) end up inside a function of their instruction set.
#define WS_DEFINE_CPU_PATH(NAME, TARGET, MULTIPLY)                                                              \
  namespace {                                                                                                  \
  template <typename T>                                                                                        \
  TARGET __attribute__((flatten)) void NAME##_forward(const ::wsmooth::Geometry& g, int64_t b, int64_t e, const T* x, const int64_t* k,  \
                             const double* f, T* s, T* o) {                                                    \
    ::wsmooth::rows::forward<MULTIPLY, T>(g, b, e, x, k, f, s, o);                                             \
  }                                                                                                            \
  template <typename T>                                                                                        \
  TARGET __attribute__((flatten)) void NAME##_dot(const ::wsmooth::Geometry& g, int64_t b, int64_t e, const T* gr, const int64_t* k,     \
                         T* s, double* d) {                                                                    \
    ::wsmooth::rows::dot<MULTIPLY, T>(g, b, e, gr, k, s, d);                                                   \
  }                                                                                                            \
  template <typename T>                                                                                        \
  TARGET __attribute__((flatten)) void NAME##_generate(uint64_t seed, int64_t kind, int64_t draws, int64_t streams, T* s) {             \
    ::wsmooth::rows::generate_streams<MULTIPLY, T>(seed, kind, draws, streams, s);                             \
  }                                                                                                            \
  }                                                                                                            \
  extern const ::wsmooth::CpuKernels NAME;                                                                     \
  const ::wsmooth::CpuKernels NAME = {{&NAME##_forward<float>, &NAME##_dot<float>, &NAME##_generate<float>},    \
                                      {&NAME##_forward<double>, &NAME##_dot<double>, &NAME##_generate<double>}};
