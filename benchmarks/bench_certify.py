"""End-to-end certification throughput: wsmooth_ext's pipeline vs the paper's procedure, same model and batch.

Run: python -m pytest benchmarks/bench_certify.py
     (on a shared machine: WSMOOTH_BENCH_THREADS=1 python -m pytest benchmarks/bench_certify.py
      --benchmark-timer time.process_time, i.e. CPU time of one thread, which other jobs disturb far less)

Both certify with n0 = 1,000 and n = 10,000 samples, alpha = 0.05, batch 1,000 (10,000 on a GPU), on real held-out digits
(mnist5k) for `wong_mnist` and on CIFAR-shaped inputs for `cifar_small` (throughput does not depend on the
weights, so the models are freshly initialized). The reference pipeline is the paper's: repeat the image
`batch` times, draw the flow noise with pure tensor ops (wsmooth_ext.core.reference, torch's generator), take the
base classifier's hard votes, Clopper–Pearson bound. Ours: Smooth.certify (fused op, inference mode, votes
counted on the device):

* "ours": the eager float32 model;
* "ours-compiled": the torch.compile (inductor) copy that `--compile` uses, accepted only with identical
  predictions on a check set (asserted here);
* "ours-bf16": the eager bfloat16 copy of `--precision bf16`; "ours-compiled-bf16": its compiled copy, when the
  acceptance check takes it (else the case is skipped, saying so).

Correctness first: fed the same Philox noise, the reference pipeline must reproduce our results exactly (for the
bf16 cases, with the same bf16 model). "floor-eager"/"floor-compiled": the model's forward passes alone over the
same number of pre-drawn noisy samples in the same chunks — the floor for that model; the summary also prints
the achieved GFLOP/s of each case (forward FLOPs from torch's FLOP counter).
"""

import os

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from wsmooth_ext.core import reference
from wsmooth_ext.core.certificates import certified_radius
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.core.inference import compile_for_inference, with_precision
from wsmooth_ext.inputs.models import build_model
from wsmooth_ext.core.noises import CHECK_SAMPLES
from wsmooth_ext.core.smooth import ABSTAIN, Smooth
from wsmooth_ext.core.statistics import clopper_pearson_lower

from bench_common import DEVICES, FLOPS, sync

N0, N, ALPHA, SIGMA = 1000, 10_000, 0.05, 0.01
# Noisy images per forward pass, the same for both pipelines: 1,000 on CPU (larger chunks no longer help), 10,000
# on a GPU (what Smooth's automatic size picks there; 1,000-image chunks leave an H100 mostly idle).
BATCHES = {"cpu": 1000, "cuda": 10_000}


def batch_for(device) -> int:
    return BATCHES[torch.device(device).type]
IMAGES_PER_ROUND = {"wong_mnist": 2, "cifar_small": 1}
if os.environ.get("WSMOOTH_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["WSMOOTH_BENCH_THREADS"]))


def reference_counts(model, x, num, sample_offset, key, rng):
    """The paper's sampling loop: repeat the image, add pure-tensor flow noise, count hard votes."""
    counts = torch.zeros(10, dtype=torch.int64)
    done = 0
    with torch.no_grad():
        while done < num:
            b = min(batch_for(x.device), num - done)
            if rng == "torch":  # the paper's practice: x.repeat then noise from torch's generator
                batch = x.unsqueeze(0).repeat(b, 1, 1, 1)
                noisy = reference.flow_noise_reference(batch, 1, SIGMA, rng="torch")
            else:  # the same Philox samples as ours, for the correctness check
                noisy = reference.flow_noise_reference(x.unsqueeze(0), b, SIGMA, seed=0,
                                                       sample_offset=sample_offset + done,
                                                       keys=torch.tensor([key]))
            counts += torch.bincount(model(noisy).argmax(1).cpu(), minlength=10)
            done += b
    return counts


def reference_certify(model, x, key, rng="torch"):
    selected = int(reference_counts(model, x, N0, 0, key, rng).argmax())
    n_a = int(reference_counts(model, x, N, N0, key, rng)[selected])
    p_lower = clopper_pearson_lower(n_a, N, ALPHA)
    if p_lower <= 0.5:
        return ABSTAIN, 0.0
    return selected, certified_radius(p_lower, SIGMA, "flow-laplace", "tight")


def _model_and_images(arch, device):
    torch.manual_seed(0)
    if arch == "wong_mnist":
        images, _ = load_dataset("mnist5k", split="test")
        model = build_model(arch, input_shape=(1, 28, 28))
    else:
        images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        model = build_model(arch, input_shape=(3, 32, 32))
    return model.eval().to(device), images[:IMAGES_PER_ROUND[arch]].to(device)


def _forward_flops(model, images) -> float:
    """FLOPs of one forward pass per image (float32 model; the count does not depend on the precision)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(images[:1])
    return counter.get_total_flops()


def _voting_model(model, smooth, images, impl):
    precision = "bf16" if impl.endswith("bf16") else "fp32"
    if "compiled" not in impl:
        return with_precision(model, precision)
    check = smooth._noisy(images[:1].expand(4, *images.shape[1:]).contiguous(), 500, CHECK_SAMPLES.start,
                          torch.arange(4))
    chosen, note, seconds = compile_for_inference(model, check, batch_for(images.device), precision=precision)
    print(f"\n{impl}: {note}; {seconds:.1f} s")
    if not note.startswith("compiled model"):
        if precision == "bf16":
            pytest.skip(f"the bf16 compiled copy was not accepted: {note}")
        raise AssertionError(note)
    return chosen


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["wong_mnist", "cifar_small"])
@pytest.mark.parametrize("impl", ["reference", "ours", "ours-compiled", "ours-bf16", "ours-compiled-bf16",
                                  "floor-eager", "floor-compiled"])
def test_certify_throughput(record, impl, arch, device):
    model, images = _model_and_images(arch, device)
    count = IMAGES_PER_ROUND[arch]
    case = f"certify {device} {arch} ({count} image{'s' * (count > 1)}, n0={N0}, n={N})"
    FLOPS[case] = _forward_flops(model, images) * (N0 + N) * count
    smooth = Smooth(model, 10, SIGMA, noise="flow-laplace", certificate="tight", seed=0)
    if impl == "reference":
        for key in range(count):  # correctness: same noise -> same result
            assert smooth.certify(images[key], N0, N, ALPHA, batch_for(device), key=key) == reference_certify(
                model, images[key], key, rng="philox")

        def run():
            for key in range(count):
                reference_certify(model, images[key], key)
            sync(device)
    elif impl.startswith("floor"):
        voter = _voting_model(model, smooth, images, "ours-compiled" if impl == "floor-compiled" else "ours")
        # the chunks certify draws: n0 samples, then n in chunks of the batch size
        chunks = [(0, N0)] + [(N0 + s, min(batch_for(device), N - s)) for s in range(0, N, batch_for(device))]
        noisy = [smooth._noisy(images[k:k + 1], size, offset, torch.tensor([k]))
                 for k in range(count) for offset, size in chunks]

        def run():
            with torch.inference_mode():
                for chunk in noisy:
                    voter(chunk).argmax(1)
            sync(device)
    else:
        smooth.base_classifier = _voting_model(model, smooth, images, impl)
        eager = with_precision(model, "bf16") if impl.endswith("bf16") else model
        if impl != "ours-compiled-bf16":  # a compiled bf16 copy is its own classifier: nothing to equal
            for key in range(count):
                ours = smooth.certify(images[key], N0, N, ALPHA, batch_for(device), key=key)
                ref = reference_certify(eager, images[key], key, rng="philox")
                if impl == "ours-bf16" and device == "cuda":
                    # cuDNN picks its bf16 kernels by batch shape, and their roundings differ: a vote near a
                    # tie can flip between our chunks and the reference's. Same class, radius within 1%.
                    assert ours[0] == ref[0] and abs(ours[1] - ref[1]) <= 0.01 * max(ref[1], 1e-12), (ours, ref)
                else:
                    assert ours == ref

        def run():
            for key in range(count):
                smooth.certify(images[key], N0, N, ALPHA, batch_for(device), key=key)
            sync(device)

    record(case, impl, run)
