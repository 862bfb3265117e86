"""Build wsmooth_ext: the C++ CPU kernels always, the CUDA kernels when they can be built.

CUDA is built when FORCE_CUDA=1, or when torch is a CUDA build and CUDA_HOME (nvcc) is found; FORCE_ONLY_CPU=1
disables it. TORCH_CUDA_ARCH_LIST selects the GPU architectures (torch's default otherwise). The decision is
printed. OpenMP is used where the compiler accepts -fopenmp; CXXFLAGS and NVCC_FLAGS are appended to the
compiler flags. Build without isolation so the extension is compiled against the torch that will import it:

    pip install --no-build-isolation .
"""

import glob
import os
import shlex
import subprocess
import sys
import tempfile

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover
    sys.exit("wsmooth_ext: building needs PyTorch installed first (pip install torch), then "
             "pip install --no-build-isolation .")

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _cuda_decision() -> tuple[bool, str]:
    if _flag("FORCE_ONLY_CPU"):
        return False, "FORCE_ONLY_CPU=1"
    if _flag("FORCE_CUDA"):
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is not a CUDA build"
    if cpp_extension.CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    return True, f"torch {torch.__version__} (CUDA {torch.version.cuda}) and CUDA_HOME={cpp_extension.CUDA_HOME}"


def _extensions():
    use_cuda, reason = _cuda_decision()
    sources = [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")))]
    sources += [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))]
    # -fopenmp: at::parallel_for runs serially unless the extension itself is compiled with OpenMP; the
    # libgomp it links is the one torch has already loaded (same soname). Only where the compiler takes it
    # (Apple clang does not), as pytorch_scatter's setup.py does.
    openmp = _compiler_accepts("-fopenmp")
    omp = ["-fopenmp"] if openmp else []
    # CXXFLAGS / NVCC_FLAGS from the environment come last, so they can override ours
    # -ffp-contract=off: the CPU paths (csrc/cpu/path_*.cpp, one per instruction set) must round exactly alike,
    # and a multiply-add contracted into an FMA where the instruction set has one would round once instead of
    # twice: bit-identical output across paths needs every product and sum rounded as written.
    cxx_flags = ["-O3", *omp, "-ffp-contract=off", "-fdiagnostics-color=always",
                 *shlex.split(os.environ.get("CXXFLAGS", ""))]
    extra = {"cxx": cxx_flags}
    if use_cuda:
        sources += [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))]
        extra["nvcc"] = ["-O3", "--use_fast_math", "-lineinfo", *shlex.split(os.environ.get("NVCC_FLAGS", ""))]
        ext_cls = cpp_extension.CUDAExtension
    else:
        ext_cls = cpp_extension.CppExtension
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "torch's default")
    print(f"wsmooth_ext build: CUDA kernels {'ON' if use_cuda else 'OFF'} ({reason}); "
          f"TORCH_CUDA_ARCH_LIST={arch if use_cuda else 'n/a'}; OpenMP {'ON' if openmp else 'OFF (CPU kernel single-threaded)'}",
          flush=True)
    return [ext_cls("wsmooth_ext._C", sources, extra_compile_args=extra, extra_link_args=omp + _shared_libstdcxx(),
                    define_macros=[("WSMOOTH_CUDA_VERSION", f'"{torch.version.cuda}"' if use_cuda else '""')],
                    py_limited_api=False)]


def _shared_libstdcxx() -> list[str]:
    """Link the C++ runtime as the shared libstdc++.so.6 that torch itself uses.

    Some toolchains (seen: a GCC under /opt/gcc on a CUDA image) link libstdc++ statically by default. The
    extension then carries a second copy of the C++ runtime beside torch's, and the first TORCH_CHECK that
    formats a number (any bad argument to the raw op) crashes in that copy's uninitialized locale instead of
    raising. Naming the shared library explicitly, ahead of the driver's implicit -lstdc++, makes the link
    dynamic on every GNU toolchain; where it is not accepted (macOS, clang without libstdc++) nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return []
    flag = "-l:libstdc++.so.6"
    return [flag] if _compiler_accepts(flag) else []


def _compiler_accepts(flag: str) -> bool:
    """Whether the C++ compiler builds and links an empty program with ``flag``."""
    compiler = os.environ.get("CXX", "c++")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as handle:
            handle.write("int main() { return 0; }\n")
        try:
            result = subprocess.run([compiler, flag, src, "-o", os.path.join(tmp, "probe")], capture_output=True)
        except OSError:
            return False
    return result.returncode == 0


# Name, version, dependencies and the `wsmooth` script are declared in pyproject.toml.
setup(
    packages=find_packages(include=["wsmooth_ext", "wsmooth_ext.*"]),
    ext_modules=_extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
