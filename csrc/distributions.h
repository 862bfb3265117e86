// The noise distributions of the ops, in one table: for each, the code the ops' `noise` argument takes, its scale
// λ(σ), the bound of one unit draw, and the rule that turns a random word into a unit draw.
//
// Each distribution is one struct below; the list `Distributions` names them once, and everything else derives
// from it: the host's table `Distributions::kTable` (the ops' argument check, λ(σ) and the range bound in
// ops_common.h, `_C.distributions()` for Python) and the one dispatch from a code to its struct,
// `with_distribution` (the CPU generator in cpu/simd_noise.h, unit_noise below for the CUDA kernels).
// wsmooth_ext/core/distributions.py is the Python side of the same table (the reference's tensor arithmetic,
// certificates, MACER's radius); tests/test_distributions.py checks that the two agree.
//
// The word -> unit-noise rules are part of the frozen random stream (flow_noise.h, docs/math.md §RNG contract):
// changing one changes every sample.
#pragma once

#include <cstdint>
#include <string>

#include "flow_noise.h"

namespace wsmooth {

// Correctly rounded constants (what std::sqrt(2.0), std::sqrt(3.0), std::log(2.0) return; Python's math.sqrt and
// math.log give the same doubles).
constexpr double kSqrt2 = 1.41421356237309504880;
constexpr double kSqrt3 = 1.73205080756887729353;
constexpr double kLn2 = 0.69314718055994530942;

// What the host needs to know about a distribution.
struct DistributionInfo {
  const char* name;
  int64_t code;  // the ops' `noise` argument
  // λ(σ) = σ·lambda_mul / lambda_div, the factor of a unit draw that gives it standard deviation σ: one multiply
  // and one divide, evaluated as written (so σ/√2 and σ·√3 keep the roundings they always had).
  double lambda_mul, lambda_div;
  double unit_bound;  // no unit draw is larger in magnitude

  constexpr double scale(double sigma) const { return sigma * lambda_mul / lambda_div; }
};

// Laplace(0, λ), λ = σ/√2. Word -> unit draw: sign = bit 31, m = bits 0..30, u = (m + 1)·2^-31 in (0, 1],
// value = ±(−ln u); u > 0 always, so the value is finite: |value| <= −ln 2^-31 = 31·ln 2.
struct Laplace {
  static constexpr int64_t kCode = 0;
  static constexpr DistributionInfo kInfo{"laplace", kCode, 1.0, kSqrt2, 31.0 * kLn2};

  template <typename scalar_t>
  WS_HOST_DEVICE static scalar_t unit(uint32_t word) {
    const int32_t m = static_cast<int32_t>(word & 0x7FFFFFFFu);
    const scalar_t u = (static_cast<scalar_t>(m) + scalar_t(1)) * scalar_t(4.656612873077392578125e-10);
    const scalar_t magnitude = -log_positive(u);
    return (word >> 31) ? -magnitude : magnitude;
  }
};

// Uniform[−λ, λ], λ = √3·σ. Word -> unit draw: ((int32)(word ^ 2^31) + 0.5)·2^-31, in (−1, 1), symmetric.
struct Uniform {
  static constexpr int64_t kCode = 1;
  static constexpr DistributionInfo kInfo{"uniform", kCode, kSqrt3, 1.0, 1.0};

  template <typename scalar_t>
  WS_HOST_DEVICE static scalar_t unit(uint32_t word) {
    const int32_t centred = static_cast<int32_t>(word ^ 0x80000000u);
    return (static_cast<scalar_t>(centred) + scalar_t(0.5)) * scalar_t(4.656612873077392578125e-10);
  }
};

template <typename... D>
struct DistributionList {
  static constexpr int64_t kSize = sizeof...(D);
  static constexpr DistributionInfo kTable[sizeof...(D)] = {D::kInfo...};  // host only (device code sees the structs)
};

// Every distribution of the ops, codes 0, 1, ... in order (checked below).
using Distributions = DistributionList<Laplace, Uniform>;

namespace detail {
template <typename... D>
constexpr bool codes_are_positions(DistributionList<D...>) {
  for (int64_t i = 0; i < DistributionList<D...>::kSize; ++i)
    if (DistributionList<D...>::kTable[i].code != i) return false;
  return true;
}

template <typename F, typename D, typename... Rest>
WS_HOST_DEVICE auto dispatch(int64_t code, const F& f, DistributionList<D, Rest...>*) {
  if constexpr (sizeof...(Rest) == 0) {
    return f(D{});  // the last one: the host checks codes (ops_common.h) before any kernel runs
  } else {
    if (code == D::kCode) return f(D{});
    return dispatch(code, f, static_cast<DistributionList<Rest...>*>(nullptr));
  }
}
}  // namespace detail

static_assert(detail::codes_are_positions(Distributions{}), "distribution codes must be 0, 1, ... in list order");

// f(D{}) for the distribution D whose code is `code`: the one switch over distributions. Call it outside loops
// where the code is the same for all their iterations, so that each distribution gets its own loop.
template <typename F>
WS_HOST_DEVICE auto with_distribution(int64_t code, const F& f) {
  return detail::dispatch(code, f, static_cast<Distributions*>(nullptr));
}

// The entry of `code`, or nullptr when no distribution has it.
inline const DistributionInfo* find_distribution(int64_t code) {
  return code >= 0 && code < Distributions::kSize ? &Distributions::kTable[code] : nullptr;
}

// "0 (laplace) or 1 (uniform)": the codes the `noise` argument takes, for messages.
inline std::string distribution_codes() {
  std::string text;
  for (int64_t i = 0; i < Distributions::kSize; ++i) {
    const DistributionInfo& d = Distributions::kTable[i];
    text += (i == 0 ? "" : i + 1 == Distributions::kSize ? " or " : ", ") + std::to_string(d.code) + " (" + d.name + ")";
  }
  return text;
}

// Unit noise of distribution `code` from one random word, on host or device. (Callables given to
// with_distribution are function objects with an inline operator(), not lambdas: see cpu/simd_noise.h.)
template <typename scalar_t>
struct UnitNoise {
  uint32_t word;
  template <class D>
  WS_HOST_DEVICE scalar_t operator()(D) const { return D::template unit<scalar_t>(word); }
};

template <typename scalar_t>
WS_HOST_DEVICE scalar_t unit_noise(uint32_t word, int64_t code) {
  return with_distribution(code, UnitNoise<scalar_t>{word});
}

}  // namespace wsmooth
