// The CPU paths of the kernels and the run-time choice between them (csrc/cpu/cpu_paths.cpp).
//
// Paths, from the most capable down, named as PyTorch's ATEN_CPU_CAPABILITY spells them:
//   avx512   16-lane Philox with AVX-512 (x86-64 builds; processors with AVX-512 F/DQ/BW/VL)
//   avx2     8-lane Philox with AVX2 (x86-64 builds; processors with AVX2 and FMA)
//   default  the portable 4-lane vector code for the build's baseline instruction set (every build; NEON on ARM)
// All paths produce bit-identical output. The chosen path is the most capable one that is compiled, that the
// processor supports and that no environment variable rules out:
//   ATEN_CPU_CAPABILITY=default|avx2|avx512   an upper bound, as for PyTorch's own kernels ("avx512" on a
//                                             processor without it gives avx2, with a note); other values are
//                                             ignored with a warning, as PyTorch does.
// Unlike PyTorch, which reads ATEN_CPU_CAPABILITY once at start-up, the choice is made at every call, so a
// test can run every path in one process.
#pragma once

#include <string>
#include <vector>

#include "kernel_rows.h"

namespace wsmooth {

extern const CpuKernels kDefaultPathKernels;
extern const CpuKernels kAvx2PathKernels;    // empty (null functions) where not compiled
extern const CpuKernels kAvx512PathKernels;  // empty where not compiled

struct CpuPath {
  const char* name;
  const CpuKernels* kernels;
  bool (*processor_has)();  // the processor and the OS support the path's instructions

  bool compiled() const { return kernels->f32.forward != nullptr; }
  bool runnable() const { return compiled() && processor_has(); }
};

// Every path, most capable first; the last, "default", is always runnable.
const std::vector<CpuPath>& cpu_paths();

struct CpuPathChoice {
  const CpuPath* path;
  std::string requested;  // what the environment asked for ("" when nothing)
  std::string note;       // why the path differs from the request, or why a value was ignored ("" when not)
};

CpuPathChoice choose_cpu_path();

// Seconds (CPU time of the calling thread where POSIX has it, else elapsed) for `streams` runs of one path's
// generator alone, on the calling thread, into an L1-resident buffer: Philox + conversion to noise (+ log for laplace), no stencil, no output. The benchmarks'
// floor. TORCH_CHECK fails for an unknown or unrunnable path and for draws or streams outside [1, 2^31).
double time_generator(const std::string& path, bool float64, int64_t kind, int64_t draws, int64_t streams);

}  // namespace wsmooth
