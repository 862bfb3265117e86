// Operator schemas of the wsmooth_ext library; the kernels register per device in csrc/cpu and csrc/cuda.
#include <Python.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <string>

#include "cpu/cpu_paths.h"
#include "distributions.h"
#include "op_schemas.h"

namespace {

// _C.cpu_kernel_info() -> {"path", "requested", "note", "paths": [{"name", "compiled", "runnable"}, ...]}: the CPU
// path the next call of the ops will take and why (wsmooth_ext.kernel_info() presents it).
PyObject* cpu_kernel_info(PyObject*, PyObject*) {
  const wsmooth::CpuPathChoice choice = wsmooth::choose_cpu_path();
  PyObject* paths = PyList_New(0);
  if (paths == nullptr) return nullptr;
  for (const wsmooth::CpuPath& path : wsmooth::cpu_paths()) {
    PyObject* entry = Py_BuildValue("{s:s,s:O,s:O}", "name", path.name, "compiled",
                                    path.compiled() ? Py_True : Py_False, "runnable",
                                    path.runnable() ? Py_True : Py_False);
    if (entry == nullptr || PyList_Append(paths, entry) != 0) {
      Py_XDECREF(entry);
      Py_DECREF(paths);
      return nullptr;
    }
    Py_DECREF(entry);
  }
  return Py_BuildValue("{s:s,s:s,s:s,s:N}", "path", choice.path->name, "requested", choice.requested.c_str(), "note",
                       choice.note.c_str(), "paths", paths);
}

// _C.distributions() -> [{"name", "code", "lambda_mul", "lambda_div", "unit_bound"}, ...]: the distribution table the
// kernels were compiled with (csrc/distributions.h), in code order, for the tests to compare with Python's.
PyObject* distributions(PyObject*, PyObject*) {
  PyObject* table = PyList_New(0);
  if (table == nullptr) return nullptr;
  for (const wsmooth::DistributionInfo& d : wsmooth::Distributions::kTable) {
    PyObject* entry = Py_BuildValue("{s:s,s:L,s:d,s:d,s:d}", "name", d.name, "code", static_cast<long long>(d.code),
                                    "lambda_mul", d.lambda_mul, "lambda_div", d.lambda_div, "unit_bound", d.unit_bound);
    if (entry == nullptr || PyList_Append(table, entry) != 0) {
      Py_XDECREF(entry);
      Py_DECREF(table);
      return nullptr;
    }
    Py_DECREF(entry);
  }
  return table;
}

// _C.time_cpu_generator(path, float64, noise, draws, streams) -> seconds of the generator alone (the benchmarks'
// floor; see wsmooth::time_generator). Raises ValueError for bad arguments.
PyObject* time_cpu_generator(PyObject*, PyObject* args) {
  const char* path = nullptr;
  int float64 = 0;
  long long noise = 0, draws = 0, streams = 0;
  if (!PyArg_ParseTuple(args, "spLLL", &path, &float64, &noise, &draws, &streams)) return nullptr;
  double seconds = 0;
  std::string error;
  Py_BEGIN_ALLOW_THREADS
  try {
    seconds = wsmooth::time_generator(path, float64 != 0, noise, draws, streams);
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  }
  Py_END_ALLOW_THREADS
  if (!error.empty()) {
    PyErr_SetString(PyExc_ValueError, error.c_str());
    return nullptr;
  }
  return PyFloat_FromDouble(seconds);
}

PyMethodDef kMethods[] = {
    {"cpu_kernel_info", cpu_kernel_info, METH_NOARGS, "The CPU path of the kernels and why it was chosen."},
    {"distributions", distributions, METH_NOARGS,
     "The noise distributions of the kernels: name, code, lambda = sigma * lambda_mul / lambda_div, unit_bound."},
    {"time_cpu_generator", time_cpu_generator, METH_VARARGS,
     "time_cpu_generator(path, float64, noise, draws, streams) -> CPU seconds of the noise generator alone."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" {
// Importing wsmooth_ext._C loads this library so that the static TORCH_LIBRARY registrations run; the ops are
// reached through torch.ops.wsmooth_ext. The module itself holds cuda_version, the CUDA version the kernels were
// built against ("" for a CPU-only build), so that Python can refuse a torch whose CUDA major version differs,
// and the functions above.
#ifndef WSMOOTH_CUDA_VERSION
#define WSMOOTH_CUDA_VERSION ""
#endif
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, kMethods};
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr && PyModule_AddStringConstant(module, "cuda_version", WSMOOTH_CUDA_VERSION) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

TORCH_LIBRARY(wsmooth_ext, m) {
  for (const char* schema : wsmooth::kOpSchemas) m.def(schema);
}
