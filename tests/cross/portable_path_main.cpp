// Runs the "default" CPU path of the kernel (csrc/cpu/path_default.cpp, no ATen) on fixed inputs and writes the
// outputs' raw bytes to stdout; tests/kernels/test_cpu_paths_cross.py builds it for AArch64, runs it under qemu and
// compares the bytes with the x86 build's op. Inputs: x[c,i,j] = ((c*H + i)*W + j) % 17 / 16, keys {5, 2^34 + 1},
// seed 2^40 + 7, sample_offset 9, num_samples 4, shape [2, 3, 7, 9], normalize = false, sigma 0.05.
#include <cmath>
#include <cstdio>
#include <vector>

#include "kernel_rows.h"

namespace wsmooth {
extern const CpuKernels kDefaultPathKernels;
}
using namespace wsmooth;

template <typename T>
void run(const DistributionInfo& distribution, bool pixel) {
  const int64_t B = 2, C = 3, H = 7, W = 9, n = 4, kind = distribution.code;
  const double lambda = distribution.scale(0.05);  // sigma 0.05, as noise_scale in csrc/ops_common.h
  const Geometry geo{C, H, W, n, 9, C * draws_per_channel(H, W, pixel), (uint64_t(1) << 40) + 7, kind, pixel};
  std::vector<T> x(B * C * H * W), out(B * n * C * H * W), scratch(scratch_size(geo.draws));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>((i % (C * H * W)) % 17) / T(16);
  const int64_t keys[2] = {5, (int64_t(1) << 34) + 1};
  const double factor[2] = {lambda, lambda};
  row_fns<T>(kDefaultPathKernels).forward(geo, 0, B * n, x.data(), keys, factor, scratch.data(), out.data());
  std::fwrite(out.data(), sizeof(T), out.size(), stdout);
}

int main() {
  for (const DistributionInfo& distribution : Distributions::kTable)  // in code order: laplace, uniform
    for (bool pixel : {false, true}) {
      run<float>(distribution, pixel);
      run<double>(distribution, pixel);
    }
  return 0;
}
