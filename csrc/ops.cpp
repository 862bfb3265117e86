// Operator schemas of the wsmooth_ext library; the kernels register per device in csrc/cpu and csrc/cuda.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing wsmooth_ext._C only loads this library so that the static TORCH_LIBRARY registrations run;
// the ops are reached through torch.ops.wsmooth_ext, not through this (empty) Python module.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(wsmooth_ext, m) {
  // x [B,C,H,W] -> [B*num_samples,C,H,W]; noise 0 = laplace, 1 = uniform; pixel = the per-pixel baseline.
  m.def("flow_noise(Tensor x, int num_samples, float sigma, int noise, int seed, int sample_offset, "
        "Tensor keys, bool normalize, bool pixel) -> Tensor");
  // Gradient w.r.t. x; regenerates the noise from its counters instead of storing it.
  m.def("flow_noise_backward(Tensor grad, Tensor x, int num_samples, float sigma, int noise, int seed, "
        "int sample_offset, Tensor keys, bool normalize, bool pixel) -> Tensor");
}
