"""Faster base-classifier inference for counting votes: compiled models and opt-in reduced precision.

Certification spends most of its time in the base classifier's forward pass over noisy copies.

* **Compiled** (:func:`compile_for_inference`): ``torch.compile`` (inductor by default, on CPU and CUDA) of the
  model, with weight freezing (constant folding, prepacked convolution weights). Compilation may change
  logits in the last bits (fused or reordered arithmetic), so the compiled model is accepted only if its
  argmax equals the eager model's on *every* image of a check set of noisy samples (drawn from
  ``noises.CHECK_SAMPLES``, never used for votes), run in the same chunk size as the votes; otherwise the
  eager model is kept, with a note. Compilation happens during that check, so its time is reported
  separately, and the compiled model is then reused for every image.
* **Reduced precision** (:func:`with_precision`, opt-in): the base classifier runs in bfloat16 or float16 (a
  cast copy of the model; inputs cast on the way in, float32 logits out). The smoothed classifier that is
  certified is then the one built on *this* reduced-precision base classifier: the certificates are sound for
  it, because the statistics only need i.i.d. votes of a fixed classifier, but its predictions may differ
  from the float32 model's. Compiled-vs-eager acceptance then compares against the eager reduced-precision
  model.

Either way the certificates are sound for the classifier that was actually evaluated.
"""

from __future__ import annotations

import copy
import time
import warnings

import torch
from torch import nn

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SHAPES = ("dynamic", "padded")


class ReducedPrecision(nn.Module):
    """A copy of ``model`` cast to ``dtype``: inputs are cast to it, logits come back as float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = copy.deepcopy(model).to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).float()


def with_precision(model: nn.Module, precision: str) -> nn.Module:
    """``model`` itself for "fp32", else a :class:`ReducedPrecision` copy ("bf16", "fp16")."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return model
    return ReducedPrecision(model, PRECISIONS[precision]).eval()


class PaddedBatches(nn.Module):
    """Runs ``fn`` on chunks of exactly ``size`` images: shorter inputs are zero-padded, longer ones split.

    Keeps a compiled model with static shapes on one graph whatever the chunk sizes of the votes.
    """

    def __init__(self, fn, size: int):
        super().__init__()
        self.fn, self.size = fn, int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for start in range(0, x.shape[0], self.size):
            chunk = x[start:start + self.size]
            m = chunk.shape[0]
            if m < self.size:
                chunk = torch.cat([chunk, chunk.new_zeros((self.size - m,) + tuple(chunk.shape[1:]))])
            outs.append(self.fn(chunk)[:m])
        return outs[0] if len(outs) == 1 else torch.cat(outs)


class CompiledModel(nn.Module):
    """What :func:`compile_for_inference` returns when it accepts the compiled model."""

    def __init__(self, compiled, eager: nn.Module, shapes: str, batch_size: int):
        super().__init__()
        self.eager = eager  # keeps the parameters the compiled graph was built from
        self.shapes = shapes
        self.run = PaddedBatches(compiled, batch_size) if shapes == "padded" else compiled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shapes == "dynamic":
            if x.shape[0] == 1:  # dynamo specializes sizes 0 and 1: a lone image goes in as a pair
                return self.run(torch.cat([x, x]))[:1]
            torch._dynamo.mark_dynamic(x, 0)  # only the batch dimension is symbolic
        return self.run(x)


def _argmax_in_chunks(fn, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.inference_mode():  # inference tensors, like the votes' (else dynamo would compile twice)
        images = images.clone()
        return torch.cat([fn(images[s:s + batch_size]).argmax(1) for s in range(0, images.shape[0], batch_size)])


def compile_for_inference(model: nn.Module, check_images: torch.Tensor, batch_size: int, *,
                          backend: str = "inductor", shapes: str = "dynamic", precision: str = "fp32",
                          ) -> tuple[nn.Module, str, float]:
    """(model to count votes with, one-line note of what was chosen, seconds spent compiling and checking).

    ``check_images``: [N, C, H, W] noisy samples like those the votes will see, on the model's device; they are
    run in chunks of ``batch_size`` (the votes' chunk size). ``backend``: a ``torch.compile`` backend
    ("inductor"; "aot_eager"/"eager" for tests). ``shapes``: "dynamic" (the batch dimension is symbolic: one
    graph for every chunk size) or "padded" (static shapes; chunks padded to ``batch_size``). ``precision``:
    see :func:`with_precision`. The eager model returned on rejection is in the same precision.
    """
    if check_images.dim() != 4 or check_images.shape[0] < 1:
        raise ValueError(f"check_images must be [N, C, H, W] with N >= 1, got {tuple(check_images.shape)}")
    if shapes not in SHAPES:
        raise ValueError(f"shapes must be one of {list(SHAPES)}, got {shapes!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    eager = with_precision(model.eval(), precision)
    start = time.perf_counter()
    try:
        options = {"freezing": True} if backend == "inductor" else None
        compiled = torch.compile(eager, backend=backend, dynamic=False if shapes == "padded" else None,
                                 options=options)
        candidate = CompiledModel(compiled, eager, shapes, batch_size)
        got = _argmax_in_chunks(candidate, check_images, batch_size)
    except Exception as exc:  # noqa: BLE001 - a model the compiler cannot handle is simply run eagerly
        root = exc
        while (getattr(root, "inner_exception", None) or root.__cause__) is not None:  # dynamo wraps the
            root = getattr(root, "inner_exception", None) or root.__cause__       # compiler's own error
        reason = str(root).strip().splitlines()[0][:200] if str(root).strip() else ""
        return eager, f"eager model (compilation failed: {type(root).__name__}: {reason})", time.perf_counter() - start
    seconds = time.perf_counter() - start
    expected = _argmax_in_chunks(eager, check_images, batch_size)
    if not torch.equal(got, expected):
        differ = int((got != expected).sum())
        warnings.warn(f"compiled model disagrees with the eager one on {differ} of {check_images.shape[0]} check "
                      "samples; using the eager model", RuntimeWarning, stacklevel=2)
        return eager, (f"eager model (compiled copy disagreed on {differ} of {check_images.shape[0]} check "
                       "samples)"), seconds
    return candidate, (f"compiled model ({backend}, {shapes} batch; identical predictions on "
                       f"{check_images.shape[0]} check samples)"), seconds
