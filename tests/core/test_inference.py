"""wsmooth_ext.core.inference: compiled vote counting accepted only with identical predictions; reduced precision.

Most compilations here use the "eager"/"aot_eager" backends or a counting backend (seconds); the real inductor
compilations are one small model here and the CLI test in test_certify_cli.py.
"""

import pytest
import torch
from torch import nn

from wsmooth_ext.core.inference import (CompiledModel, PaddedBatches, ReducedPrecision, compile_for_inference,
                                   with_precision)
from wsmooth_ext.inputs.models import build_model
from wsmooth_ext.core.noises import CHECK_SAMPLES
from wsmooth_ext.core.smooth import Smooth, auto_batch_size

pytestmark = pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning")


def _model(shape=(1, 8, 8)):
    return build_model("wong_mnist", input_shape=shape, seed=0).eval()


def _check_set(model, shape=(1, 8, 8), images=3, samples=200):
    x = torch.rand((images,) + shape, generator=torch.Generator().manual_seed(1))
    smooth = Smooth(model, 10, 0.05)
    return smooth, x, smooth._noisy(x, samples, CHECK_SAMPLES.start, torch.arange(images))


class CountingBackend:
    """A torch.compile backend that runs the traced graph as is and counts how often dynamo compiles."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_accepted_compiled_model_counts_like_the_eager_one(backend):
    model = _model()
    smooth, x, check = _check_set(model)
    expected = smooth.count_classes(x, 300, 128)
    chosen, note, seconds = compile_for_inference(model, check, 128, backend=backend)
    assert isinstance(chosen, CompiledModel) and note.startswith(f"compiled model ({backend}") and seconds >= 0
    smooth.base_classifier = chosen
    assert torch.equal(smooth.count_classes(x, 300, 128), expected)


def test_dynamic_batch_compiles_once_for_every_chunk_size():
    torch._dynamo.reset()
    model, backend = _model(), CountingBackend()
    smooth, x, check = _check_set(model)
    chosen, _, _ = compile_for_inference(model, check, 128, backend=backend, shapes="dynamic")
    smooth.base_classifier = chosen
    for num_samples, batch in ((300, 128), (50, 128), (97, 64), (1000, 333)):  # chunk sizes 128, 44, 100, 97, ...
        smooth.count_classes(x, num_samples, batch)
    assert len(backend.graphs) == 1


def test_padded_batches_keep_one_static_shape_and_the_same_votes():
    torch._dynamo.reset()
    model, backend = _model(), CountingBackend()
    smooth, x, check = _check_set(model)
    expected = [smooth.count_classes(x, n, b) for n, b in ((300, 128), (50, 128), (1000, 333))]
    chosen, _, _ = compile_for_inference(model, check, 128, backend=backend, shapes="padded")
    smooth.base_classifier = chosen
    got = [smooth.count_classes(x, n, b) for n, b in ((300, 128), (50, 128), (1000, 333))]
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
    assert len(backend.graphs) == 1
    sizes = []
    padded = PaddedBatches(lambda v: (sizes.append(v.shape[0]), v.flatten(1)[:, :3])[1], 8)
    out = padded(torch.arange(20.0).reshape(20, 1, 1, 1).expand(20, 1, 1, 3))
    assert sizes == [8, 8, 8] and out.shape == (20, 3) and torch.equal(out[:, 0], torch.arange(20.0))


class CompileSensitive(nn.Module):
    """Predicts class 0 eagerly and class 1 when compiled: a compiled copy that changes predictions."""

    def forward(self, x):
        scores = torch.zeros(x.shape[0], 2, dtype=x.dtype)
        if torch.compiler.is_compiling():
            return scores + torch.tensor([0.0, 1.0])
        return scores + torch.tensor([1.0, 0.0])


def test_disagreeing_compiled_model_is_rejected():
    model = CompileSensitive()
    with pytest.warns(RuntimeWarning, match="disagrees"):
        chosen, note, _ = compile_for_inference(model, torch.rand(10, 1, 4, 4), 4, backend="eager")
    assert chosen is model and "disagreed on 10 of 10" in note


def test_failing_compilation_falls_back_to_eager():
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    torch._dynamo.reset()
    model = _model()
    chosen, note, _ = compile_for_inference(model, torch.rand(6, 1, 8, 8), 4, backend=broken_backend)
    assert chosen is model and note.startswith("eager model (compilation failed:") and "no compiler here" in note


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="check_images"):
        compile_for_inference(model, torch.rand(8, 8), 4)
    with pytest.raises(ValueError, match="shapes"):
        compile_for_inference(model, torch.rand(2, 1, 8, 8), 4, shapes="ragged")
    with pytest.raises(ValueError, match="batch_size"):
        compile_for_inference(model, torch.rand(2, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="precision"):
        with_precision(model, "int8")


def test_inductor_compiles_a_small_model_with_identical_votes():
    torch._dynamo.reset()
    model = _model()
    smooth, x, check = _check_set(model)
    expected = smooth.count_classes(x, 300, 128)
    chosen, note, _ = compile_for_inference(model, check, 128)
    assert note.startswith("compiled model (inductor, dynamic batch; identical predictions on 600"), note
    smooth.base_classifier = chosen
    assert torch.equal(smooth.count_classes(x, 300, 128), expected)


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_reduced_precision_copies_the_model_and_returns_float32_logits(precision, dtype):
    model = _model()
    low = with_precision(model, precision)
    assert isinstance(low, ReducedPrecision) and with_precision(model, "fp32") is model
    assert next(low.parameters()).dtype == dtype and next(model.parameters()).dtype == torch.float32
    x = torch.rand(64, 1, 8, 8)
    with torch.inference_mode():
        logits, exact = low(x), model(x)
    assert logits.dtype == torch.float32
    assert not torch.equal(logits, exact)  # it really ran in reduced precision
    torch.testing.assert_close(logits, exact, atol=0.05, rtol=0.05)
    # the reduced-precision base classifier votes like the float32 one on almost every noisy sample
    smooth, xs, _ = _check_set(model)
    full = smooth.count_classes(xs, 500, 250)
    smooth.base_classifier = low
    reduced = smooth.count_classes(xs, 500, 250)
    assert reduced.sum() == full.sum() and (reduced - full).abs().sum() <= 0.02 * full.sum()


def test_automatic_batch_size_rule_and_votes():
    assert auto_batch_size(torch.zeros(1, 1, 28, 28)) == 1000
    assert auto_batch_size(torch.zeros(1, 3, 224, 224)) == 64 * 2 ** 20 // (4 * 3 * 224 * 224)  # 111
    assert auto_batch_size(torch.zeros(1, 3, 4096, 4096)) == 1
    model = _model()
    smooth, x, _ = _check_set(model)
    assert torch.equal(smooth.count_classes(x, 2500), smooth.count_classes(x, 2500, 1000))
    assert torch.equal(smooth.predict_batch(x, 300, 0.05), smooth.predict_batch(x, 300, 0.05, 1000))
