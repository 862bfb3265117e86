#!/usr/bin/env bash
# One command for a machine with a GPU: build the CUDA kernels in place, run the CUDA tests, the kernel
# benchmarks and the end-to-end certify benchmark, and write benchmarks/gpu_report.md.
#
#   bash benchmarks/run_gpu.sh
#
# Nothing is downloaded: it uses the first of $PYTHON, .venv/bin/python, python3 whose torch is a CUDA build
# that sees a GPU, and builds against that torch (setup.py build_ext --inplace, FORCE_CUDA=1), so the extension
# matches it. Tests and benchmarks need that python to have the project's dependencies (numpy, scipy, tqdm,
# matplotlib, scikit-learn, mlxtend) and pytest, pytest-benchmark; the script names any that are missing.
# Environment: PYTHON, CUDA_HOME (else found as in .ci/run), TORCH_CUDA_ARCH_LIST (else the GPU's own).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REPORT=benchmarks/gpu_report.md
LOGS=$(mktemp -d)
# RUN_GPU_LOGS=DIR keeps every step's full log there; WSMOOTH_BENCH_DEVICES=cuda skips the CPU benchmark cases.
trap '[ -n "${RUN_GPU_LOGS:-}" ] && mkdir -p "$RUN_GPU_LOGS" && cp "$LOGS"/*.log "$RUN_GPU_LOGS"/; rm -rf "$LOGS"' EXIT

die() { echo "run_gpu.sh: $*" >&2; exit 1; }

PY=""
for candidate in "${PYTHON:-}" .venv/bin/python python3; do
  [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 || continue
  if "$candidate" -c "import sys, torch; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)" \
      >/dev/null 2>&1; then
    PY=$(command -v "$candidate")
    break
  fi
done
[ -n "$PY" ] || die "no python with a CUDA build of torch that sees a GPU (tried \$PYTHON, .venv/bin/python, python3)"

missing=$("$PY" - <<'PY'
import importlib.util
need = ["numpy", "scipy", "tqdm", "matplotlib", "sklearn", "mlxtend", "pytest", "pytest_benchmark", "setuptools"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
PY
)
[ -z "$missing" ] || die "$PY lacks: $missing (install them into that environment, e.g. from a local wheel folder)"

TORCH_CUDA=$("$PY" -c "import torch; print(torch.version.cuda)")
if [ -z "${CUDA_HOME:-}" ]; then
  # The nvcc on PATH may be a wrapper script: find the toolkit folder that holds the real compiler, preferring
  # the version torch was built with.
  torch_home=$("$PY" -c "from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or '')" 2>/dev/null)
  for candidate in "/usr/local/cuda-$TORCH_CUDA" "$torch_home" /usr/local/cuda /usr/local/cuda-*; do
    if [ -n "$candidate" ] && [ -x "$candidate/bin/nvcc" ] && [ -f "$candidate/bin/nvcc.profile" ]; then
      CUDA_HOME=$candidate
      break
    fi
  done
fi
[ -n "${CUDA_HOME:-}" ] || die "no CUDA toolkit found (set CUDA_HOME)"
export CUDA_HOME
NVCC_VERSION=$("$CUDA_HOME/bin/nvcc" --version | tail -n 2 | head -n 1)
ARCH=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}

echo "== build: $PY, CUDA_HOME=$CUDA_HOME ($NVCC_VERSION), TORCH_CUDA_ARCH_LIST=$ARCH"
MAX_JOBS=${MAX_JOBS:-$(nproc)} FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$ARCH "$PY" setup.py build_ext --inplace > "$LOGS/build.log" 2>&1 \
  || { tail -n 40 "$LOGS/build.log"; die "build failed"; }
grep "wsmooth_ext build" "$LOGS/build.log"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build, ahead of any installed copy
"$PY" -c "import wsmooth_ext, sys; sys.exit(0 if wsmooth_ext.has_kernel('cuda') else 1)" \
  || die "the CUDA kernel is not registered after the build"

status=0
step() {  # step NAME COMMAND...: run, keep the log, remember a failure, carry on
  local name=$1; shift
  echo "== $name: $*"
  if "$@" > "$LOGS/$name.log" 2>&1; then echo "   passed"; else echo "   FAILED (log in the report)"; status=1; fi
  tail -n 3 "$LOGS/$name.log"
}
# The CUDA tests must run, not skip: -m cuda selects them, and a skip is reported as a failure below.
step cuda_tests "$PY" -m pytest -m cuda tests -rs -q -p no:cacheprovider
if grep -q "skipped" "$LOGS/cuda_tests.log"; then echo "   CUDA tests were skipped"; status=1; fi
step kernel_tests "$PY" -m pytest tests/kernels/test_flow_noise.py tests/kernels/test_cuda_emulation.py -q -p no:cacheprovider
step bench_flow_noise "$PY" -m pytest benchmarks/bench_flow_noise.py --benchmark-only -q -p no:cacheprovider
step bench_certify "$PY" -m pytest benchmarks/bench_certify.py --benchmark-only -q -p no:cacheprovider

summary() {  # the ratio table that benchmarks/conftest.py prints at the end of a benchmark run
  sed -n '/wsmooth_ext: ours vs reference/,/^GPU peak\|^$/p' "$LOGS/$1.log"
}
{
  echo "# GPU report"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- device: $("$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}')")"
  echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 || echo unknown)"
  echo "- torch: $("$PY" -c "import torch; print(torch.__version__)") (CUDA $TORCH_CUDA); nvcc: $NVCC_VERSION; arch $ARCH"
  echo "- python: $PY ($("$PY" -c "import platform; print(platform.python_version())"))"
  echo "- command: \`bash benchmarks/run_gpu.sh\` (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ', with local changes'))"
  echo "- result: $([ $status -eq 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED (see below)')"
  echo
  for name in cuda_tests kernel_tests; do
    echo "## $name"
    echo
    echo '```'
    tail -n 15 "$LOGS/$name.log"
    echo '```'
    echo
  done
  echo "## Kernel benchmarks (benchmarks/bench_flow_noise.py)"
  echo
  echo "Medians; speed-up against the paper's pure-tensor procedure on the same device in the same run; GB/s is"
  echo "the output written once per call; % of peak is that against the device's peak DRAM bandwidth (its"
  echo "source is named under the table)."
  echo
  echo '```'
  summary bench_flow_noise
  grep -E "FAILED|Error" "$LOGS/bench_flow_noise.log" | head -n 20
  echo '```'
  echo
  echo "## End-to-end certification (benchmarks/bench_certify.py)"
  echo
  echo '```'
  summary bench_certify
  grep -E "FAILED|Error" "$LOGS/bench_certify.log" | head -n 20
  echo '```'
} > "$REPORT"
echo "== report: $REPORT"
exit $status
