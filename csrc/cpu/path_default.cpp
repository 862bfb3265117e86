// The "default" CPU path: the portable generator on 4-lane vectors (one SSE2 register on x86-64, one NEON
// register on AArch64: wider generic vectors get split by GCC, and their compares scalarized on SSE2), the
// widening multiply left to the compiler. Compiled for the build's baseline instruction set; runs everywhere.
#include "kernel_rows.h"

namespace wsmooth {
WS_DEFINE_CPU_PATH(kDefaultPathKernels, , simd::PortableMultiply<4>)
}  // namespace wsmooth
