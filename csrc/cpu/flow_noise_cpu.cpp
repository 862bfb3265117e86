// CPU kernels of wsmooth_ext::flow_noise and its backward.
//
// Work is split over samples (rows of the output) with at::parallel_for. For each sample the noise of all
// its edges is generated into a small per-thread scratch buffer (one sample: 6 KB for MNIST, L1-resident;
// no noise tensor is ever materialized), 16 Philox counters at a time so the compiler vectorizes the rounds,
// and the stencil then writes each output pixel exactly once. The hot loops are compiled for several
// instruction sets (GCC function multiversioning), so one build runs everywhere and uses AVX-512 or AVX2
// where the processor has them.
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "../flow_noise.h"
#include "../ops_common.h"

#include <cstdlib>
#include <type_traits>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define WS_AVX512_PATH 1
#else
#define WS_AVX512_PATH 0
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define WS_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WS_MULTIVERSION
#endif
// Helpers of the multiversioned functions must be inlined into each clone: an out-of-line copy would be
// compiled for the baseline instruction set only.
#define WS_INLINE inline __attribute__((always_inline))

namespace wsmooth {
namespace {

// Scratch size for one sample's draws, rounded up to whole batches (generate() never needs a tail).
int64_t scratch_size(int64_t draws) { return (draws + kDrawsPerBatch - 1) / kDrawsPerBatch * kDrawsPerBatch; }

// words[i][l] = word i of Philox block first_block + l, l < 16. Written lane-wise so that GCC vectorizes it
// for whatever instruction set the enclosing clone targets.
WS_INLINE void philox_batch_portable(const Stream& s, uint32_t first_block, uint32_t words[4][kBlocksPerBatch]) {
  for (int l = 0; l < kBlocksPerBatch; ++l) {
    uint32_t w[4];
    philox_block(s, first_block + l, w);
    words[0][l] = w[0];
    words[1][l] = w[1];
    words[2][l] = w[2];
    words[3][l] = w[3];
  }
}

#if WS_AVX512_PATH
#define WS_AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))

// (hi, lo) 32-bit halves of the 16 products a·m with two 32x32->64 multiplies (vpmuludq) on the even and odd
// lanes; the auto-vectorized portable loop widens to 64-bit lanes and uses the slower vpmullq instead.
WS_AVX512_TARGET inline __attribute__((always_inline)) void mulhilo16(__m512i a, __m512i m, __m512i& hi,
                                                                        __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

// Same result as philox_batch_portable (the scalar rounds of flow_noise.h, 16 lanes at once).
WS_AVX512_TARGET inline __attribute__((always_inline)) void philox_batch_avx512(
    const Stream& s, uint32_t first_block, uint32_t words[4][kBlocksPerBatch]) {
  __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(first_block)),
                                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  __m512i c1 = _mm512_set1_epi32(static_cast<int>(s.sample));
  __m512i c2 = _mm512_set1_epi32(static_cast<int>(s.image0));
  __m512i c3 = _mm512_set1_epi32(static_cast<int>(s.image1));
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(kPhiloxM1));
  uint32_t k0 = s.key0, k1 = s.key1;
  for (int round = 0; round < kPhiloxRounds; ++round) {
    __m512i hi0, lo0, hi1, lo1;
    mulhilo16(c0, m0, hi0, lo0);
    mulhilo16(c2, m1, hi1, lo1);
    // 0x96: three-way xor
    c0 = _mm512_ternarylogic_epi32(hi1, c1, _mm512_set1_epi32(static_cast<int>(k0)), 0x96);
    c2 = _mm512_ternarylogic_epi32(hi0, c3, _mm512_set1_epi32(static_cast<int>(k1)), 0x96);
    c1 = lo1;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  _mm512_storeu_si512(words[0], c0);
  _mm512_storeu_si512(words[1], c1);
  _mm512_storeu_si512(words[2], c2);
  _mm512_storeu_si512(words[3], c3);
}
#endif

// out[i*16 + l] = unit noise of words[i][l]: contiguous stores thanks to the word-major layout of flow_noise.h.
template <typename scalar_t>
WS_INLINE void convert_batch(const uint32_t words[4][kBlocksPerBatch], int64_t kind, scalar_t* __restrict out) {
  if (kind == kLaplace) {
    for (int i = 0; i < 4; ++i)
      for (int l = 0; l < kBlocksPerBatch; ++l) out[i * kBlocksPerBatch + l] = unit_noise<scalar_t>(words[i][l], kLaplace);
  } else {
    for (int i = 0; i < 4; ++i)
      for (int l = 0; l < kBlocksPerBatch; ++l) out[i * kBlocksPerBatch + l] = unit_noise<scalar_t>(words[i][l], kUniform);
  }
}

// buf[g] = unit noise of draw g of stream s, for g < scratch_size(draws).
template <typename scalar_t>
WS_INLINE void generate_portable(const Stream& s, int64_t kind, int64_t draws, scalar_t* __restrict buf) {
  const int64_t batches = scratch_size(draws) / kDrawsPerBatch;
  for (int64_t batch = 0; batch < batches; ++batch) {
    uint32_t words[4][kBlocksPerBatch];
    philox_batch_portable(s, static_cast<uint32_t>(batch * kBlocksPerBatch), words);
    convert_batch<scalar_t>(words, kind, buf + batch * kDrawsPerBatch);
  }
}

WS_MULTIVERSION void generate_portable_f32(const Stream& s, int64_t kind, int64_t draws, float* buf) {
  generate_portable<float>(s, kind, draws, buf);
}
WS_MULTIVERSION void generate_portable_f64(const Stream& s, int64_t kind, int64_t draws, double* buf) {
  generate_portable<double>(s, kind, draws, buf);
}

#if WS_AVX512_PATH
// generate_portable with the AVX-512 Philox. Not shared through a template parameter on purpose: an
// always_inline AVX-512 function can only be inlined into a function that itself carries the AVX-512 target.
template <typename scalar_t>
WS_AVX512_TARGET void generate_avx512(const Stream& s, int64_t kind, int64_t draws, scalar_t* __restrict buf) {
  const int64_t batches = scratch_size(draws) / kDrawsPerBatch;
  for (int64_t batch = 0; batch < batches; ++batch) {
    uint32_t words[4][kBlocksPerBatch];
    philox_batch_avx512(s, static_cast<uint32_t>(batch * kBlocksPerBatch), words);
    convert_batch<scalar_t>(words, kind, buf + batch * kDrawsPerBatch);
  }
}
#endif

template <typename scalar_t>
using GenerateFn = void (*)(const Stream&, int64_t, int64_t, scalar_t*);

// The generator for this processor: the AVX-512 Philox where available (unless WSMOOTH_CPU_PORTABLE=1, which
// the tests use to check that both paths agree), else the multiversioned portable one.
template <typename scalar_t>
GenerateFn<scalar_t> pick_generator() {
  const char* portable = std::getenv("WSMOOTH_CPU_PORTABLE");
  const bool force_portable = portable != nullptr && portable[0] == '1';
#if WS_AVX512_PATH
  static const bool has_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  if (has_avx512 && !force_portable) return &generate_avx512<scalar_t>;
#endif
  (void)force_portable;
  if constexpr (std::is_same_v<scalar_t, float>) {
    return &generate_portable_f32;
  } else {
    return &generate_portable_f64;
  }
}

// One output sample: out = x + f·div(n) (flow) or x + f·n (pixel), n the unit noise in buf.
template <typename scalar_t>
WS_INLINE void apply_sample(const scalar_t* __restrict x, const scalar_t* __restrict buf, scalar_t f, int64_t C,
                         int64_t H, int64_t W, bool pixel, scalar_t* __restrict row_tmp,
                         scalar_t* __restrict out) {
  if (pixel) {
    const int64_t n = C * H * W;
    for (int64_t p = 0; p < n; ++p) out[p] = x[p] + f * buf[p];
    return;
  }
  const int64_t r = draws_per_channel(H, W, false);
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* v = buf + c * r;             // [H-1, W]: v[i,j] moves mass (i,j) -> (i+1,j)
    const scalar_t* h = v + (H - 1) * W;         // [H, W-1]: h[i,j] moves mass (i,j) -> (i,j+1)
    for (int64_t i = 0; i < H; ++i) {
      const scalar_t* above = v + (i - 1) * W;   // inflow from the pixel above (valid when i > 0)
      const scalar_t* below = v + i * W;         // outflow to the pixel below (valid when i < H-1)
      if (i == 0) {
        for (int64_t j = 0; j < W; ++j) row_tmp[j] = -below[j];
      } else if (i == H - 1) {
        for (int64_t j = 0; j < W; ++j) row_tmp[j] = above[j];
      } else {
        for (int64_t j = 0; j < W; ++j) row_tmp[j] = above[j] - below[j];
      }
      const scalar_t* hr = h + i * (W - 1);
      row_tmp[0] -= hr[0];
      for (int64_t j = 1; j < W - 1; ++j) row_tmp[j] += hr[j - 1] - hr[j];
      row_tmp[W - 1] += hr[W - 2];
      const scalar_t* xr = x + (c * H + i) * W;
      scalar_t* orow = out + (c * H + i) * W;
      for (int64_t j = 0; j < W; ++j) orow[j] = xr[j] + f * row_tmp[j];
    }
  }
}

// ⟨g, div(n)⟩ = Σ_v n_v·(g[below] − g[above]) + Σ_h n_h·(g[right] − g[left])  (or ⟨g, n⟩ for pixel noise).
template <typename scalar_t>
WS_INLINE double dot_sample(const scalar_t* __restrict g, const scalar_t* __restrict buf, int64_t C, int64_t H,
                         int64_t W, bool pixel) {
  double total = 0;
  if (pixel) {
    const int64_t hw = H * W;
    for (int64_t c = 0; c < C * H; ++c) {  // accumulate a row in scalar_t, rows in double
      scalar_t acc = 0;
      for (int64_t j = 0; j < W; ++j) acc += g[c * W + j] * buf[c * W + j];
      total += acc;
    }
    (void)hw;
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

struct Geometry {
  int64_t C, H, W, num_samples, sample_offset, draws;
  uint64_t seed;
  int64_t kind;
  bool pixel;
};

template <typename scalar_t>
WS_INLINE void forward_rows_impl(const Geometry& geo, GenerateFn<scalar_t> generate, int64_t begin, int64_t end,
                                 const scalar_t* x, const int64_t* keys, const double* factor, scalar_t* scratch,
                                 scalar_t* row_tmp, scalar_t* out) {
  const int64_t chw = geo.C * geo.H * geo.W;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / geo.num_samples, k = row % geo.num_samples;
    generate(make_stream(geo.seed, keys[b], geo.sample_offset + k), geo.kind, geo.draws, scratch);
    apply_sample<scalar_t>(x + b * chw, scratch, static_cast<scalar_t>(factor[b]), geo.C, geo.H, geo.W, geo.pixel,
                           row_tmp, out + row * chw);
  }
}

template <typename scalar_t>
WS_INLINE void dot_rows_impl(const Geometry& geo, GenerateFn<scalar_t> generate, int64_t begin, int64_t end,
                             const scalar_t* grad, const int64_t* keys, scalar_t* scratch, double* dots) {
  const int64_t chw = geo.C * geo.H * geo.W;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / geo.num_samples, k = row % geo.num_samples;
    generate(make_stream(geo.seed, keys[b], geo.sample_offset + k), geo.kind, geo.draws, scratch);
    dots[row] = dot_sample<scalar_t>(grad + row * chw, scratch, geo.C, geo.H, geo.W, geo.pixel);
  }
}

// The multiversioned entry points (target_clones needs plain functions, hence one per dtype): the templates
// above are inlined into each clone, so each instruction set gets its own vectorized stencil.
WS_MULTIVERSION void forward_rows(const Geometry& g, int64_t b, int64_t e, const float* x, const int64_t* k,
                                  const double* f, float* s, float* t, float* o) {
  forward_rows_impl<float>(g, pick_generator<float>(), b, e, x, k, f, s, t, o);
}
WS_MULTIVERSION void forward_rows(const Geometry& g, int64_t b, int64_t e, const double* x, const int64_t* k,
                                  const double* f, double* s, double* t, double* o) {
  forward_rows_impl<double>(g, pick_generator<double>(), b, e, x, k, f, s, t, o);
}
WS_MULTIVERSION void dot_rows(const Geometry& g, int64_t b, int64_t e, const float* gr, const int64_t* k, float* s,
                              double* d) {
  dot_rows_impl<float>(g, pick_generator<float>(), b, e, gr, k, s, d);
}
WS_MULTIVERSION void dot_rows(const Geometry& g, int64_t b, int64_t e, const double* gr, const int64_t* k,
                              double* s, double* d) {
  dot_rows_impl<double>(g, pick_generator<double>(), b, e, gr, k, s, d);
}

Geometry make_geometry(const at::Tensor& x, int64_t num_samples, int64_t noise, int64_t seed,
                       int64_t sample_offset, bool pixel) {
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  return Geometry{C, H, W, num_samples, sample_offset, C * draws_per_channel(H, W, pixel),
                  static_cast<uint64_t>(seed), noise, pixel};
}

// Rows per parallel task: ~256k draws (~0.2 ms), so small calls (a training batch) stay on one thread: an
// OpenMP region costs little on an idle machine but can stall for many milliseconds when the cores are shared.
int64_t grain_rows(int64_t draws) { return std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(draws, 1)); }

at::Tensor flow_noise_cpu(const at::Tensor& x_in, int64_t num_samples, double sigma, int64_t noise, int64_t seed,
                          int64_t sample_offset, const at::Tensor& keys_in, bool normalize, bool pixel) {
  check_noise_args(x_in, num_samples, sigma, noise, sample_offset, keys_in, pixel);
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
    at::parallel_for(0, out.size(0), grain_rows(geo.draws), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(scratch_size(geo.draws)), row_tmp(geo.W);
      forward_rows(geo, begin, end, xp, kp, fp, scratch.data(), row_tmp.data(), op);
    });
  });
  return out;
}

at::Tensor flow_noise_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, int64_t num_samples,
                                   double sigma, int64_t noise, int64_t seed, int64_t sample_offset,
                                   const at::Tensor& keys_in, bool normalize, bool pixel) {
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
      at::parallel_for(0, grad.size(0), grain_rows(geo.draws), [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> scratch(scratch_size(geo.draws));
        dot_rows(geo, begin, end, gp, kp, scratch.data(), dp);
      });
    });
  }
  return finish_backward(grad, x_in, num_samples, dots, noise_scale(noise, sigma));
}

}  // namespace

TORCH_LIBRARY_IMPL(wsmooth_ext, CPU, m) {
  m.impl("flow_noise", &flow_noise_cpu);
  m.impl("flow_noise_backward", &flow_noise_backward_cpu);
}

}  // namespace wsmooth
