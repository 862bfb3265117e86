// The "avx2" CPU path: 8 lanes per 256-bit register, Philox's 32x32->64-bit products with vpmuludq
// (_mm256_mul_epu32) on the even and the odd lanes. Compiled on x86-64 only; chosen at run time when the
// processor has AVX2 and FMA (csrc/cpu/cpu_paths.cpp), as PyTorch requires for its own AVX2 kernels.
#include "kernel_rows.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define WS_AVX2_TARGET __attribute__((target("avx2,fma")))

namespace wsmooth {
namespace {

struct Avx2Multiply {
  static constexpr int kLanes = 8;
  using u32 = simd::Vec<8>::u32;
  // (hi, lo) halves of the 8 products a·m: vpmuludq multiplies the even 32-bit lanes into 64-bit results, so
  // one multiply takes the even lanes and one the odd lanes shifted down; blends put the halves back in place.
  WS_AVX2_TARGET static inline void mulhilo(u32 a, uint32_t m, u32& hi, u32& lo) {
    const __m256i av = simd::bit_cast<__m256i>(a);
    const __m256i mv = _mm256_set1_epi32(static_cast<int>(m));
    const __m256i even = _mm256_mul_epu32(av, mv);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(av, 32), mv);
    hi = simd::bit_cast<u32>(_mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA));
    lo = simd::bit_cast<u32>(_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA));
  }
};

}  // namespace

WS_DEFINE_CPU_PATH(kAvx2PathKernels, WS_AVX2_TARGET, Avx2Multiply)
}  // namespace wsmooth

#else
namespace wsmooth {
extern const CpuKernels kAvx2PathKernels;
const CpuKernels kAvx2PathKernels = {};  // not compiled for this architecture
}  // namespace wsmooth
#endif
