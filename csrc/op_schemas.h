// Schemas of the wsmooth_ext operators, in one place: csrc/ops.cpp registers them, and the emulated CUDA build
// of the tests registers the same ones under its own library name.
#pragma once

namespace wsmooth {

// The arguments of every noise op: images x [B,C,H,W]; `noise` a distribution's code (csrc/distributions.h:
// 0 = laplace, 1 = uniform); seed, sample_offset and keys (int64 [B]) select the draws (flow_noise.h);
// normalize: σ in mass-normalized units (else pixel units).
#define WS_NOISE_OP_ARGS \
  "Tensor x, int num_samples, float sigma, int noise, int seed, int sample_offset, Tensor keys, bool normalize"

// x -> [B*num_samples,C,H,W]: x + s·div(δ), noise δ on the edges between neighbouring pixels (H, W >= 2).
constexpr const char* kFlowNoiseSchema = "flow_noise(" WS_NOISE_OP_ARGS ") -> Tensor";
// x -> [B*num_samples,C,H,W]: x + s·ε, noise ε on every pixel (the paper's per-pixel baseline).
constexpr const char* kPixelNoiseSchema = "pixel_noise(" WS_NOISE_OP_ARGS ") -> Tensor";
// Gradients w.r.t. x (grad [B*num_samples,C,H,W] -> [B,C,H,W]); they regenerate the noise from its counters
// instead of storing it.
constexpr const char* kFlowNoiseBackwardSchema = "flow_noise_backward(Tensor grad, " WS_NOISE_OP_ARGS ") -> Tensor";
constexpr const char* kPixelNoiseBackwardSchema = "pixel_noise_backward(Tensor grad, " WS_NOISE_OP_ARGS ") -> Tensor";

#undef WS_NOISE_OP_ARGS

// Every schema, for the libraries' m.def.
constexpr const char* kOpSchemas[] = {kFlowNoiseSchema, kFlowNoiseBackwardSchema, kPixelNoiseSchema,
                                      kPixelNoiseBackwardSchema};

// The name the checks' messages give the op of a graph ("wsmooth_ext.flow_noise", ...).
constexpr const char* noise_op_name(bool pixel, bool backward) {
  return pixel ? (backward ? "wsmooth_ext.pixel_noise_backward" : "wsmooth_ext.pixel_noise")
               : (backward ? "wsmooth_ext.flow_noise_backward" : "wsmooth_ext.flow_noise");
}

}  // namespace wsmooth
