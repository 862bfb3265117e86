// Run-time choice of the CPU path (see cpu_paths.h for the rules).
#include "cpu_paths.h"

#include <c10/util/Exception.h>

#include <chrono>
#include <ctime>
#include <cstdlib>
#include <cstring>
#include <algorithm>

namespace wsmooth {
namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0), not only CPUID.
bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#else
bool has_avx512() { return false; }
bool has_avx2() { return false; }
#endif
bool always() { return true; }

// The value of an environment variable, "" when unset.
std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

// Values PyTorch itself accepts on some architecture (ATen/native/DispatchStub.cpp): set for torch's sake on
// other processors, they are not an error here, but no path of ours matches them.
bool is_torch_capability(const std::string& value) {
  for (const char* name : {"default", "avx2", "avx512", "vsx", "zvector", "sve128", "sve256"})
    if (value == name) return true;
  return false;
}

}  // namespace

const std::vector<CpuPath>& cpu_paths() {
  static const std::vector<CpuPath> paths = {
      {"avx512", &kAvx512PathKernels, &has_avx512},
      {"avx2", &kAvx2PathKernels, &has_avx2},
      {"default", &kDefaultPathKernels, &always},
  };
  return paths;
}

CpuPathChoice choose_cpu_path() {
  const auto& paths = cpu_paths();
  CpuPathChoice choice{nullptr, env("ATEN_CPU_CAPABILITY"), ""};
  // The paths at or below the requested one are allowed (all of them without a request).
  size_t first_allowed = 0;
  if (!choice.requested.empty()) {
    first_allowed = paths.size();
    for (size_t i = 0; i < paths.size(); ++i)
      if (choice.requested == paths[i].name) first_allowed = i;
    if (first_allowed == paths.size()) {  // no path of ours: the best one runs
      first_allowed = 0;
      if (is_torch_capability(choice.requested)) {
        choice.note = choice.requested + " is not a path of wsmooth_ext (avx512, avx2, default)";
      } else {
        choice.note = "ignoring invalid ATEN_CPU_CAPABILITY=" + choice.requested;
        TORCH_WARN_ONCE("wsmooth_ext: ", choice.note);
      }
    }
  }
  for (size_t i = first_allowed; i < paths.size() && choice.path == nullptr; ++i)
    if (paths[i].runnable()) choice.path = &paths[i];
  if (!choice.requested.empty() && choice.note.empty() && choice.path != &paths[first_allowed]) {
    choice.note = choice.requested + " requested, but " +
                  (paths[first_allowed].compiled() ? "this processor lacks its instructions"
                                                   : "it is not compiled into this build") +
                  "; using " + choice.path->name;
  }
  return choice;
}

namespace {

// CPU time of the calling thread where POSIX has it (what the generator costs, however busy the machine is),
// else elapsed time.
double thread_seconds() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
#else
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
#endif
}

template <typename scalar_t>
double time_streams(const CpuKernels& kernels, int64_t kind, int64_t draws, int64_t streams) {
  std::vector<scalar_t> scratch(scratch_size(draws));
  const auto generate = row_fns<scalar_t>(kernels).generate;
  generate(0, kind, draws, std::min<int64_t>(streams, 16), scratch.data());  // warm caches and code
  const double start = thread_seconds();
  generate(0, kind, draws, streams, scratch.data());
  return thread_seconds() - start;
}

}  // namespace

double time_generator(const std::string& path, bool float64, int64_t kind, int64_t draws, int64_t streams) {
  TORCH_CHECK(find_distribution(kind) != nullptr, "time_generator: noise must be ", distribution_codes());
  TORCH_CHECK(draws >= 1 && draws < (int64_t(1) << 31) && streams >= 1 && streams < (int64_t(1) << 31),
              "time_generator: draws and streams must be in [1, 2^31)");
  for (const CpuPath& candidate : cpu_paths()) {
    if (path != candidate.name) continue;
    TORCH_CHECK(candidate.runnable(), "time_generator: path ", path, " cannot run here");
    return float64 ? time_streams<double>(*candidate.kernels, kind, draws, streams)
                   : time_streams<float>(*candidate.kernels, kind, draws, streams);
  }
  TORCH_CHECK(false, "time_generator: unknown path ", path);
}

}  // namespace wsmooth
