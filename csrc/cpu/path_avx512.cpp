// The "avx512" CPU path: 16 lanes per 512-bit register (a whole batch of 16 Philox blocks at once), products
// with vpmuludq on the even and odd lanes. Compiled on x86-64 only; chosen at run time when the processor has
// AVX-512 F/DQ/BW/VL (csrc/cpu/cpu_paths.cpp), as PyTorch's own AVX512 kernels require.
#include "kernel_rows.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define WS_AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))

namespace wsmooth {
namespace {

struct Avx512Multiply {
  static constexpr int kLanes = 16;
  using u32 = simd::Vec<16>::u32;
  // As Avx2Multiply, 16 lanes; the auto-vectorized widening multiply would use the slower vpmullq instead.
  WS_AVX512_TARGET static inline void mulhilo(u32 a, uint32_t m, u32& hi, u32& lo) {
    const __m512i av = simd::bit_cast<__m512i>(a);
    const __m512i mv = _mm512_set1_epi32(static_cast<int>(m));
    const __m512i even = _mm512_mul_epu32(av, mv);
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(av, 32), mv);
    hi = simd::bit_cast<u32>(_mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd));
    lo = simd::bit_cast<u32>(_mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32)));
  }
};

}  // namespace

WS_DEFINE_CPU_PATH(kAvx512PathKernels, WS_AVX512_TARGET, Avx512Multiply)
}  // namespace wsmooth

#else
namespace wsmooth {
extern const CpuKernels kAvx512PathKernels;
const CpuKernels kAvx512PathKernels = {};  // not compiled for this architecture
}  // namespace wsmooth
#endif
