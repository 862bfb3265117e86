// The noise generator of the CPU kernel, written once on fixed-width SIMD vectors (GCC/Clang vector types),
// for every CPU path: csrc/cpu/path_*.cpp instantiate it with a lane count and a 32x32->64-bit multiply
// (portable, AVX2 or AVX-512) inside a function compiled for that instruction set.
//
// Portability: vector types are plain C++ for GCC and Clang on every target. The portable path uses 4 lanes, one
// SSE2 register on x86-64 or one NEON register on AArch64, and the compiler turns its widening multiply into
// pmuludq / umull (checked in the objects): it is the route to ARM, cross-built and run under qemu by
// tests/test_cpu_paths_cross.py. Nothing here includes ATen: a translation unit that compiles part of it for
// AVX2 must not emit out-of-line copies of library inlines.
//
// Bit-identity: each lane performs the same IEEE operations, in the same order, as the scalar rule of its
// distribution (csrc/distributions.h; log_reduced is shared; the selects become masks whose untaken side adds an
// exact zero); with FMA contraction off (setup.py) every path gives the same bits.
#pragma once

// GCC notes that passing 32/64-byte vectors by value changes the ABI without AVX: every function here is
// inlined (or internal to one path), so no such call crosses between code of different instruction sets.
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12 under -Wall sees "maybe uninitialized" in the counter arrays of batch_words (all set before use) and in
// its own AVX-512 intrinsics (`__m512i __Y = __Y;` in avx512fintrin.h): false positives.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../distributions.h"

#define WS_INLINE inline __attribute__((always_inline))


namespace wsmooth {
namespace simd {

// N lanes of each element type.
template <int N>
struct Vec {
  typedef uint32_t u32 __attribute__((vector_size(4 * N)));
  typedef int32_t i32 __attribute__((vector_size(4 * N)));
  typedef float f32 __attribute__((vector_size(4 * N)));
  typedef uint64_t u64 __attribute__((vector_size(8 * N)));
};

// Reinterprets the bits of a vector (or scalar) as another type of the same size; compiles to nothing.
template <typename To, typename From>
WS_INLINE To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
  To to;
  std::memcpy(&to, &v, sizeof to);
  return to;
}

// Vectors are loaded and stored through memcpy: buffers need no alignment, and the compiler emits plain
// unaligned vector moves.
template <typename V, typename T>
WS_INLINE void store(T* dst, V v) { std::memcpy(dst, &v, sizeof v); }

// The portable 32x32->64 multiply, lane by lane in plain C++: GCC's vectorizer recognizes the widening multiply
// and emits pmuludq (SSE2) or umull (NEON) for it; a 64-bit vector multiply written with vector types would
// instead be emulated with shifts and adds on both.
template <int N>
struct PortableMultiply {
  static constexpr int kLanes = N;
  using u32 = typename Vec<N>::u32;
  WS_INLINE static void mulhilo(u32 a, uint32_t m, u32& hi, u32& lo) {
    uint32_t in[N], h[N], l[N];
    store(in, a);
    for (int i = 0; i < N; ++i) {
      const uint64_t p = static_cast<uint64_t>(in[i]) * m;
      h[i] = static_cast<uint32_t>(p >> 32);
      l[i] = static_cast<uint32_t>(p);
    }
    std::memcpy(&hi, h, sizeof hi);
    std::memcpy(&lo, l, sizeof lo);
  }
};

// One stream's key schedule, broadcast once: round r XORs with (key0 + r·W0, key1 + r·W1) in every lane.
template <int N>
struct KeySchedule {
  typename Vec<N>::u32 k0[kPhiloxRounds], k1[kPhiloxRounds];
  WS_INLINE explicit KeySchedule(const Stream& s) {
    uint32_t a = s.key0, b = s.key1;
    for (int round = 0; round < kPhiloxRounds; ++round, a += kPhiloxW0, b += kPhiloxW1) {
      k0[round] = typename Vec<N>::u32{} + a;
      k1[round] = typename Vec<N>::u32{} + b;
    }
  }
};

// The words of one batch of 64 draws, word-major as in flow_noise.h: words[i*16 + l] = word i of Philox block
// first_block + l. The same rounds as philox_block, one counter per lane; the 16 / N vectors of counters of a
// batch go through the rounds together, so their independent multiplies overlap.
template <class Multiply>
WS_INLINE void batch_words(const Stream& s, const KeySchedule<Multiply::kLanes>& keys, uint32_t first_block,
                           uint32_t* __restrict words) {
  constexpr int N = Multiply::kLanes, P = kBlocksPerBatch / N;
  static_assert(kBlocksPerBatch % N == 0, "a batch must hold whole vectors");
  using u32 = typename Vec<N>::u32;
  u32 lane;
  for (int l = 0; l < N; ++l) lane[l] = static_cast<uint32_t>(l);
  u32 c0[P], c1[P], c2[P], c3[P];
  for (int p = 0; p < P; ++p) {
    c0[p] = lane + (first_block + static_cast<uint32_t>(p * N));
    c1[p] = u32{} + s.sample;
    c2[p] = u32{} + s.image0;
    c3[p] = u32{} + s.image1;
  }
  for (int round = 0; round < kPhiloxRounds; ++round) {
    for (int p = 0; p < P; ++p) {
      u32 hi0, lo0, hi1, lo1;
      Multiply::mulhilo(c0[p], kPhiloxM0, hi0, lo0);
      Multiply::mulhilo(c2[p], kPhiloxM1, hi1, lo1);
      c0[p] = hi1 ^ c1[p] ^ keys.k0[round];
      c2[p] = hi0 ^ c3[p] ^ keys.k1[round];
      c1[p] = lo1;
      c3[p] = lo0;
    }
  }
  for (int p = 0; p < P; ++p) {
    store(words + 0 * kBlocksPerBatch + p * N, c0[p]);
    store(words + 1 * kBlocksPerBatch + p * N, c1[p]);
    store(words + 2 * kBlocksPerBatch + p * N, c2[p]);
    store(words + 3 * kBlocksPerBatch + p * N, c3[p]);
  }
}

// K independent vectors of N float lanes with element-wise arithmetic. log_reduced evaluated on a Pack issues
// the K vectors' operations side by side: the polynomial is a long chain of dependent multiplies and adds, and
// interleaving independent chains hides its latency (GCC does not reorder them on its own for x86).
template <int N, int K>
struct Pack {
  typename Vec<N>::f32 v[K];

  friend WS_INLINE Pack operator*(const Pack& a, const Pack& b) { return map(a, [&](auto x, int k) { return x * b.v[k]; }); }
  friend WS_INLINE Pack operator*(float a, const Pack& b) { return map(b, [&](auto x, int) { return a * x; }); }
  friend WS_INLINE Pack operator+(const Pack& a, const Pack& b) { return map(a, [&](auto x, int k) { return x + b.v[k]; }); }
  friend WS_INLINE Pack operator+(const Pack& a, float b) { return map(a, [&](auto x, int) { return x + b; }); }
  friend WS_INLINE Pack operator-(const Pack& a, float b) { return map(a, [&](auto x, int) { return x - b; }); }
  WS_INLINE Pack& operator+=(const Pack& b) { return *this = *this + b; }

  template <typename F>
  WS_INLINE static Pack map(const Pack& a, const F& f) {
    Pack r;
    for (int k = 0; k < K; ++k) r.v[k] = f(a.v[k], k);
    return r;
  }
};

// out[j] = D::unit<float>(words[j]) (csrc/distributions.h) for j < N*K. This generic form runs a distribution's
// scalar rule lane by lane; the overloads below are vector forms of Uniform's and Laplace's (the same bits).
template <int N, int K, class D>
WS_INLINE void unit_noise_lanes(D, const uint32_t* __restrict words, float* __restrict out) {
  for (int j = 0; j < N * K; ++j) out[j] = D::template unit<float>(words[j]);
}

template <int N, int K>
WS_INLINE void unit_noise_lanes(Uniform, const uint32_t* __restrict words, float* __restrict out) {
  using u32 = typename Vec<N>::u32;
  using i32 = typename Vec<N>::i32;
  using f32 = typename Vec<N>::f32;
  u32 w[K];
  std::memcpy(w, words, sizeof w);
  for (int k = 0; k < K; ++k) {
    const i32 centred = bit_cast<i32>(w[k] ^ 0x80000000u);
    store(out + k * N, (__builtin_convertvector(centred, f32) + 0.5f) * 4.656612873077392578125e-10f);
  }
}

template <int N, int K>
WS_INLINE void unit_noise_lanes(Laplace, const uint32_t* __restrict words, float* __restrict out) {
  using u32 = typename Vec<N>::u32;
  using i32 = typename Vec<N>::i32;
  using f32 = typename Vec<N>::f32;
  u32 w[K];
  std::memcpy(w, words, sizeof w);
  // log_positive(u), u = (m + 1)·2^-31 with m the low 31 bits, split into mantissa and exponent
  Pack<N, K> m, e;
  for (int k = 0; k < K; ++k) {
    const f32 u = (__builtin_convertvector(bit_cast<i32>(w[k] & 0x7FFFFFFFu), f32) + 1.0f) *
                  4.656612873077392578125e-10f;
    const u32 b = bit_cast<u32>(u);
    e.v[k] = __builtin_convertvector(bit_cast<i32>(b >> 23) - 126, f32);
    m.v[k] = bit_cast<f32>((b & 0x007FFFFFu) | 0x3F000000u);  // in [0.5, 1)
    // log_positive's selects, as masks: where `small`, e - 1 and (m + m) - 1; elsewhere e - 0 and (m + 0) - 1,
    // which round to exactly e and m - 1. (A vector ?: is scalarized by GCC on SSE2.)
    const i32 small = m.v[k] < kSqrtHalf;
    e.v[k] = e.v[k] - bit_cast<f32>(small & bit_cast<i32>(f32{} + 1.0f));
    m.v[k] = (m.v[k] + bit_cast<f32>(small & bit_cast<i32>(m.v[k]))) - 1.0f;
  }
  const Pack<N, K> log_u = log_reduced(m, e);
  // value = ±(−log u): −x only flips the sign bit, so the sign is set when bit 31 of the word is clear
  for (int k = 0; k < K; ++k) store(out + k * N, bit_cast<f32>(bit_cast<u32>(log_u.v[k]) ^ (~w[k] & 0x80000000u)));
}

// The unit noise of one stream's draws for distribution D, into buf[g] for g < round_up(draws, 64). A function
// object, not a lambda, so that with_distribution's call of it is always_inline: everything must inline into the
// path's function (kernel_rows.h), or a call left out of line would pass vectors between code compiled for
// different instruction sets (the -Wpsabi note above), and a lambda's operator() cannot be declared always_inline.
template <class Multiply, typename scalar_t>
struct StreamNoise {
  const Stream& s;
  int64_t draws;
  scalar_t* buf;

  template <class D>
  WS_INLINE void operator()(D distribution) const {
    constexpr int N = Multiply::kLanes, K = kDrawsPerBatch / N;
    const KeySchedule<N> keys(s);
    const int64_t batches = (draws + kDrawsPerBatch - 1) / kDrawsPerBatch;
    for (int64_t batch = 0; batch < batches; ++batch) {
      uint32_t words[kDrawsPerBatch];
      batch_words<Multiply>(s, keys, static_cast<uint32_t>(batch * kBlocksPerBatch), words);
      scalar_t* __restrict out = buf + batch * kDrawsPerBatch;
      if constexpr (std::is_same_v<scalar_t, float>) {
        // The whole batch is converted as one Pack: on AVX2 (8 lanes) this measured 1.85 ns per laplace draw on
        // one core, against 2.3 / 3.3 / 5.4 ns with 4 / 2 / 1 vectors side by side (AMD EPYC Zen 3, under load).
        unit_noise_lanes<N, K>(distribution, words, out);
      } else {
        // float64: the words are vectorized the same way; the conversion is the distribution's scalar rule
        // itself (libm's log, the same function on every path), so only the Philox part differs from the
        // scalar code.
        for (int g = 0; g < kDrawsPerBatch; ++g) out[g] = D::template unit<double>(words[g]);
      }
    }
  }
};

// buf[g] = unit noise of draw g of stream s (distribution `kind`), for g < round_up(draws, 64): one loop per
// distribution, chosen once per stream.
template <class Multiply, typename scalar_t>
WS_INLINE void generate_lanes(const Stream& s, int64_t kind, int64_t draws, scalar_t* __restrict buf) {
  with_distribution(kind, StreamNoise<Multiply, scalar_t>{s, draws, buf});
}

}  // namespace simd
}  // namespace wsmooth
