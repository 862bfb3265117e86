"""The Wasserstein-smoothed classifier: Cohen et al.'s ``predict`` / ``certify`` over flow or pixel noise.

``Smooth`` wraps a base classifier (an ``nn.Module`` mapping [N, C, H, W] pixels in [0, 1] to logits). The
smoothed classifier returns the class the base classifier most likely outputs on a noisy copy of the
image, with noise of a family of the registry (:mod:`wsmooth_ext.core.noises`) drawn by the fused op (:func:`wsmooth_ext.flow_noise` /
:func:`wsmooth_ext.pixel_noise`).

Randomness: every image is identified in the counter-based RNG by a key — use its dataset index — so the
result for an image depends only on (seed, key), never on batching or sharding. Within an image, the
procedures use disjoint ranges of sample indices, so their draws are independent:

* ``certify``: selection samples [0, n0), estimation samples [n0, n0 + n);
* ``predict``: samples [0, n) (``predict_batch_sequential``: the prefixes [0, m_k) of the same range);
* ``soft_forward``: samples of ``noises.SOFT_SAMPLES``, [step·n, (step + 1)·n) for an attack's iteration
  ``step`` (a pure function of (seed, key, step)), or fresh ones on every call without a step.

The ranges are reserved in :mod:`wsmooth_ext.core.noises`.

Counting runs under ``torch.inference_mode`` in chunks of at most ``batch_size`` noisy images (None: the
automatic size of :func:`auto_batch_size`); class counts come from ``bincount`` on the images' device and reach
the host once per call. The base classifier runs on the images' device; put it in eval mode. Faster base
classifiers (compiled, reduced precision): :mod:`wsmooth_ext.core.inference`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import certificates, noises, statistics

ABSTAIN = -1  # the class reported when the statistical test cannot decide (Cohen et al.'s convention)


@dataclass
class CertifyRecord:
    """Result of ``certify`` for one image.

    ``radius`` is the certified W1 radius with the L2 ground metric and ``radius_l1`` with the L1 ground
    metric (both 0.0 when abstaining); ``p_lower`` the Clopper–Pearson lower bound on the selected class's
    probability; ``count_top`` how many of the n estimation samples the base classifier put on the selected
    class; ``count_label`` how many it put on the true label (None without labels).
    """

    prediction: int
    radius: float
    radius_l1: float
    p_lower: float
    count_top: int
    count_label: int | None
    n0: int
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_vote_budget(name: str, total: int) -> None:
    """predict and certify draw their votes from noises.VOTE_SAMPLES only (disjoint from soft_forward's)."""
    if total > len(noises.VOTE_SAMPLES):
        raise ValueError(f"{name} must be <= 2**31 (the sample indices reserved for votes), got {total}")


def _check_images(x, dims: int, name: str = "x", values: bool = True, mass: bool = False) -> torch.Tensor:
    """x's type and shape, (``values``) that its pixels are finite and non-negative, and (``mass``, with values)
    that every image has positive mass: a radius is a distance between distributions, x/s needs s > 0."""
    shape = "[C, H, W]" if dims == 3 else "[B, C, H, W]"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {shape}, got {type(x).__name__}")
    if x.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D {shape}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if values and x.numel():
        # One pass and one host sync for both value checks (on a GPU every sync stalls the queue): NaN
        # propagates into min and max, so the pixels are finite and non-negative exactly when 0 <= min and
        # max < inf.
        stats = list(torch.aminmax(x))
        if mass:  # the smallest image mass joins the same sync
            stats.append(x.flatten(1).sum(dim=1).min())
        low, high, *least_mass = (float(v) for v in torch.stack(stats).tolist())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{name} must be finite: found NaN or inf pixels")
        if low < 0:
            raise ValueError(f"{name} must have non-negative pixels (images are mass distributions), "
                             f"found min {low:g}")
        if least_mass and least_mass[0] <= 0:
            empty = (x.flatten(1).sum(dim=1) <= 0).nonzero().flatten().tolist()
            raise ValueError(f"images {empty[:5]} of {name} have no mass (all pixels 0): an image without "
                             "mass is not a distribution and has no Wasserstein certificate")
    return x


# The automatic chunk size: as many noisy images as fit in this many bytes of float32 input, at most the cap.
# Beyond ~1,000 images a chunk no longer speeds up a CPU forward pass; a GPU needs large chunks to be busy.
AUTO_BATCH_BYTES = {"cpu": 64 * 2 ** 20, "cuda": 1024 * 2 ** 20}
AUTO_BATCH_CAP = {"cpu": 1000, "cuda": 10_000}


def auto_batch_size(x: torch.Tensor) -> int:
    """Chunk size used when none is given: ``min(cap, bytes // (4·C·H·W))``, at least 1, for x [B, C, H, W].

    cap and bytes per device type: CPU 1,000 images and 64 MiB, CUDA 10,000 images and 1 GiB (others: CPU's).
    1,000 divides the usual n0 = 1,000 and n = 10,000, so chunks keep one size.
    """
    kind = x.device.type if x.device.type in AUTO_BATCH_CAP else "cpu"
    per_image = 4 * max(1, x[0].numel() if x.shape[0] else 1)
    return max(1, min(AUTO_BATCH_CAP[kind], AUTO_BATCH_BYTES[kind] // per_image))


class Smooth:
    """Smoothed classifier over flow-domain (or pixel) noise with sound prediction and certification.

    Args:
        base_classifier: ``nn.Module`` mapping [N, C, H, W] images in [0, 1] to logits [N, num_classes].
        num_classes: number of classes (the width of the base classifier's output).
        sigma: per-coordinate noise standard deviation, mass-normalized units, in (0, noises.MAX_SIGMA].
        noise: a family of ``wsmooth_ext.core.noises.NOISES``: "flow-laplace" (the paper's), "flow-uniform",
            "pixel-laplace" (the paper's baseline) or "pixel-uniform".
        certificate: "tight", "paper" or "uniform"; None → the strongest valid one for ``noise``.
        seed: seed of the counter-based RNG, 0 <= seed < 2**63.
    """

    def __init__(self, base_classifier: nn.Module, num_classes: int, sigma: float,
                 noise: str = "flow-laplace", certificate: str | None = None, seed: int = 0):
        if not callable(base_classifier):
            raise ValueError(f"base_classifier must be a callable nn.Module, got {type(base_classifier).__name__}")
        self.base_classifier = base_classifier
        self.num_classes = _check_int("num_classes", num_classes, minimum=2)
        self.sigma = noises.check_sigma(sigma)
        self.family = noises.get(noise)
        self.noise = self.family.name
        self.certificate = certificates.resolve_certificate(noise, certificate)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        self.seed = int(seed)
        self._soft_offset = noises.SOFT_SAMPLES.start

    def __repr__(self) -> str:
        return (f"Smooth(num_classes={self.num_classes}, sigma={self.sigma}, noise={self.noise!r}, "
                f"certificate={self.certificate!r}, seed={self.seed})")

    # ----------------------------------------------------------------------------------------- noise
    def _noisy(self, x: torch.Tensor, num_samples: int, sample_offset: int, keys: torch.Tensor) -> torch.Tensor:
        return self.family.sample(x, num_samples, self.sigma, seed=self.seed, sample_offset=sample_offset,
                                  keys=keys)

    def _logits(self, noisy: torch.Tensor) -> torch.Tensor:
        logits = self.base_classifier(noisy)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape != (
                noisy.shape[0], self.num_classes):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"num_classes={self.num_classes} does not match the base classifier, whose output "
                             f"for {noisy.shape[0]} images has shape {got} (expected "
                             f"[{noisy.shape[0]}, {self.num_classes}])")
        return logits

    def _keys(self, x: torch.Tensor, keys) -> torch.Tensor:
        if keys is None:
            return torch.arange(x.shape[0], dtype=torch.int64)
        keys = torch.as_tensor(keys)
        if keys.dim() != 1 or keys.shape[0] != x.shape[0] or keys.is_floating_point():
            raise ValueError(f"keys must be a 1-D integer tensor with one key per image ({x.shape[0]}), "
                             f"got {keys.dtype} of shape {tuple(keys.shape)}")
        return keys.to(torch.int64).cpu()

    def count_classes(self, x: torch.Tensor, num_samples: int, batch_size: int | None = None, *,
                      sample_offset: int = 0, keys=None) -> torch.Tensor:
        """Base-classifier votes [B, num_classes] (int64, on CPU) over samples [offset, offset+num_samples).

        At most ``batch_size`` noisy images are materialized at once (None: :func:`auto_batch_size`): several
        images share a chunk when ``num_samples`` is small, a single image's samples are split over chunks
        when it is large. Votes are accumulated on the images' device (``bincount``); the counts are copied
        to the host once, at the end, so a GPU never waits for the host between chunks.
        """
        x = _check_images(x, 4)
        num_samples = _check_int("num_samples", num_samples)
        batch_size = self._batch_size(x, batch_size)
        keys = self._keys(x, keys)
        if sample_offset + num_samples > noises.SAMPLE_INDEX_LIMIT:
            raise ValueError(f"sample_offset + num_samples must be <= 2**32, got {sample_offset + num_samples}")
        return self._votes(x, num_samples, batch_size, sample_offset, keys)

    def _votes(self, x: torch.Tensor, num_samples: int, batch_size: int, sample_offset: int,
               keys: torch.Tensor) -> torch.Tensor:
        """count_classes on checked arguments. No host sync until the final copy of the counts: keys move to
        the device once, and votes are added with index_add_ (CUDA's bincount reads its input's max first)."""
        keys = keys.to(x.device)
        bsz, classes = x.shape[0], self.num_classes
        counts = torch.zeros(bsz * classes, dtype=torch.int64, device=x.device)
        with torch.inference_mode():
            if num_samples <= batch_size:
                per_chunk = max(1, batch_size // num_samples)
                for start in range(0, bsz, per_chunk):
                    stop = min(bsz, start + per_chunk)
                    preds = self._logits(self._noisy(x[start:stop], num_samples, sample_offset,
                                                     keys[start:stop])).argmax(dim=1)
                    image = torch.arange(start * classes, stop * classes, classes, device=x.device)
                    slots = image.repeat_interleave(num_samples) + preds
                    counts.index_add_(0, slots, torch.ones_like(slots))
            else:
                for b in range(bsz):
                    row = counts[b * classes:(b + 1) * classes]
                    for s in range(0, num_samples, batch_size):
                        chunk = min(batch_size, num_samples - s)
                        preds = self._logits(self._noisy(x[b:b + 1], chunk, sample_offset + s,
                                                         keys[b:b + 1])).argmax(dim=1)
                        row.index_add_(0, preds, torch.ones_like(preds))
        return counts.reshape(bsz, classes).cpu()

    @staticmethod
    def _batch_size(x: torch.Tensor, batch_size) -> int:
        return auto_batch_size(x) if batch_size is None else _check_int("batch_size", batch_size)

    # ----------------------------------------------------------------------------------------- predict
    def predict_batch(self, x: torch.Tensor, n: int, alpha: float, batch_size: int | None = None,
                      keys=None) -> torch.Tensor:
        """Cohen's ``predict`` for each image of x [B, C, H, W]: LongTensor [B], ABSTAIN where abstaining."""
        return self.predict_batch_details(x, n, alpha, batch_size, keys=keys)[0]

    def predict_batch_details(self, x: torch.Tensor, n: int, alpha: float, batch_size: int | None = None,
                              keys=None):
        """``predict_batch`` plus the evidence: (predictions [B], counts [B, num_classes], p-values [B]).

        With top-two counts nA ≥ nB, the two-sided binomial test of nA out of nA + nB at 1/2 decides;
        abstain if its p-value exceeds α (so the prediction is wrong with probability ≤ α).
        """
        n = _check_int("n", n)
        check_vote_budget("n", n)
        alpha = statistics._check_alpha(alpha)
        batch_size = None if batch_size is None else _check_int("batch_size", batch_size)
        if n < statistics.min_samples_to_predict(alpha):
            warnings.warn(f"n={n} is too small to ever predict at alpha={alpha}: every prediction will "
                          f"abstain (need n >= {statistics.min_samples_to_predict(alpha)})", UserWarning,
                          stacklevel=3)
        counts = self.count_classes(x, n, batch_size, sample_offset=0, keys=keys)
        top2 = counts.topk(2, dim=1)
        predictions = torch.empty(counts.shape[0], dtype=torch.int64)
        pvalues = []
        for b in range(counts.shape[0]):
            n_a, n_b = int(top2.values[b, 0]), int(top2.values[b, 1])
            pvalue = statistics.binomial_test_pvalue(n_a, n_a + n_b)
            pvalues.append(pvalue)
            predictions[b] = ABSTAIN if pvalue > alpha else int(top2.indices[b, 0])
        return predictions, counts, pvalues

    def predict_batch_sequential(self, x: torch.Tensor, n: int, alpha: float, batch_size: int | None = None,
                                 keys=None, looks=None):
        """Group-sequential ``predict`` for each image of x [B, C, H, W]: stops counting an image's votes at the
        first look that decides (:func:`statistics.sequential_looks`; Bonferroni, sound at level α).

        Votes come from the same samples [0, n) as ``predict_batch``; look k counts the prefix [0, m_k) and
        tests it at α_k. The images still undecided after a look are counted further together, so a batch
        of clear-cut images costs ~m_1 votes each instead of n. ``looks``: [(m_k, α_k), …] to override the
        default schedule (sizes increasing, the last ≤ n; the caller answers for Σ α_k ≤ α).

        Returns (predictions [B] int64 with ABSTAIN, counts [B, num_classes] of the votes counted, samples [B]
        int64: how many votes each image used, the m_k of its deciding look or of the last look).
        """
        n = _check_int("n", n)
        check_vote_budget("n", n)
        alpha = statistics._check_alpha(alpha)
        x = _check_images(x, 4)  # once: every look below counts votes on checked arguments
        batch_size = self._batch_size(x, batch_size)
        keys = self._keys(x, keys)
        if looks is None:
            looks = statistics.sequential_looks(n, alpha)
        sizes = [m for m, _ in looks]
        if (not sizes or any(isinstance(m, bool) or not isinstance(m, numbers.Integral) for m in sizes)
                or sizes != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] > n):
            raise ValueError(f"looks must have increasing sample counts in [1, n={n}], got {sizes}")
        if n < statistics.min_samples_to_predict(alpha):
            warnings.warn(f"n={n} is too small to ever predict at alpha={alpha}: every prediction will "
                          f"abstain (need n >= {statistics.min_samples_to_predict(alpha)})", UserWarning,
                          stacklevel=3)
        bsz = x.shape[0]
        counts = torch.zeros(bsz, self.num_classes, dtype=torch.int64)
        predictions = torch.full((bsz,), ABSTAIN, dtype=torch.int64)
        samples = torch.zeros(bsz, dtype=torch.int64)
        undecided = torch.arange(bsz)
        counted = 0
        for m, level in looks:
            if undecided.numel() == 0:
                break
            rows = undecided.to(x.device)
            counts[undecided] += self._votes(x[rows], int(m) - counted, batch_size, counted, keys[undecided])
            samples[undecided] = int(m)
            counted = int(m)
            still = []
            for b in undecided.tolist():
                top, decided = statistics.decide_look(counts[b].tolist(), level)
                if decided:
                    predictions[b] = top
                else:
                    still.append(b)
            undecided = torch.tensor(still, dtype=torch.int64)
        return predictions, counts, samples

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int | None = None, key: int = 0) -> int:
        """Cohen's ``predict`` for one image x [C, H, W]: the class, or ABSTAIN."""
        x = _check_images(x, 3, values=False)  # the batch call below checks the pixels
        return int(self.predict_batch(x.unsqueeze(0), n, alpha, batch_size, keys=[key])[0])

    # ----------------------------------------------------------------------------------------- certify
    def certify_batch(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | None = None,
                      keys=None, labels=None) -> list[CertifyRecord]:
        """Cohen's ``certify`` for each image of x [B, C, H, W].

        n0 selection samples pick the top class; n independent estimation samples bound its probability
        from below (Clopper–Pearson, level 1 − α); abstain (radius 0) if that bound is ≤ 1/2.
        ``labels`` (optional, [B]) adds ``count_label``: the base classifier's votes for the true label.
        """
        x = _check_images(x, 4, mass=True)
        n0 = _check_int("n0", n0)
        n = _check_int("n", n)
        alpha = statistics._check_alpha(alpha)
        batch_size = None if batch_size is None else _check_int("batch_size", batch_size)
        check_vote_budget("n0 + n", n0 + n)
        if labels is not None:
            labels = torch.as_tensor(labels).reshape(-1).to(torch.int64).cpu()
            if labels.numel() != x.shape[0]:
                raise ValueError(f"labels must have one entry per image ({x.shape[0]}), got {labels.numel()}")
            if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes:
                raise ValueError(f"labels must lie in [0, num_classes={self.num_classes}), got "
                                 f"[{int(labels.min())}, {int(labels.max())}]")
        if n < statistics.min_samples_to_certify(alpha):
            warnings.warn(f"n={n} is too small to ever certify at alpha={alpha}: every image will abstain "
                          f"(need n >= {statistics.min_samples_to_certify(alpha)})", UserWarning, stacklevel=3)
        keys = self._keys(x, keys)
        batch_size = self._batch_size(x, batch_size)
        selected = self._votes(x, n0, batch_size, 0, keys).argmax(dim=1)
        counts = self._votes(x, n, batch_size, n0, keys)
        records = []
        for b in range(x.shape[0]):
            top = int(selected[b])
            count_top = int(counts[b, top])
            p_lower = statistics.clopper_pearson_lower(count_top, n, alpha)
            certified = p_lower > 0.5
            radius = certificates.certified_radius(p_lower, self.sigma, self.noise, self.certificate, "l2")
            radius_l1 = certificates.certified_radius(p_lower, self.sigma, self.noise, self.certificate, "l1")
            count_label = None
            if labels is not None:
                count_label = int(counts[b, int(labels[b])])
            records.append(CertifyRecord(prediction=top if certified else ABSTAIN,
                                         radius=radius if certified else 0.0,
                                         radius_l1=radius_l1 if certified else 0.0, p_lower=p_lower,
                                         count_top=count_top, count_label=count_label, n0=n0, n=n))
        return records

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | None = None,
                key: int = 0) -> tuple[int, float]:
        """Cohen's ``certify`` for one image x [C, H, W]: (class, certified W1 radius, L2 ground) or (ABSTAIN, 0.0)."""
        x = _check_images(x, 3, values=False)  # the batch call below checks the pixels
        record = self.certify_batch(x.unsqueeze(0), n0, n, alpha, batch_size, keys=[key])[0]
        return record.prediction, record.radius

    # ----------------------------------------------------------------------------------------- soft
    def soft_forward(self, x: torch.Tensor, num_samples: int, keys=None, step: int | None = None) -> torch.Tensor:
        """Differentiable soft smoothed classifier: mean softmax [B, num_classes] over noise samples.

        ``step`` (an attack's iteration) picks the samples: [step·n, (step + 1)·n) of ``noises.SOFT_SAMPLES``
        (n = num_samples), so the noise is a pure function of (seed, image key, step) — batching, sharding
        and resuming change nothing, as for the votes. Without ``step`` each call draws new samples (a
        per-object counter advances through the range), for callers that only need independent estimates.
        Both ranges are disjoint from predict/certify's. Gradients flow to ``x`` through the noise op. All
        B·num_samples noisy images go through the model at once.
        """
        x = _check_images(x, 4)
        num_samples = _check_int("num_samples", num_samples)
        keys = self._keys(x, keys)
        if num_samples > len(noises.SOFT_SAMPLES):
            raise ValueError(f"num_samples must be <= {len(noises.SOFT_SAMPLES)}, got {num_samples}")
        if step is not None:
            step = _check_int("step", step, minimum=0)
            if (step + 1) * num_samples > len(noises.SOFT_SAMPLES):
                raise ValueError(f"(step + 1) * num_samples must be <= {len(noises.SOFT_SAMPLES)} (the soft samples "
                                 f"of one image), got step {step} with {num_samples} samples")
            offset = noises.SOFT_SAMPLES.start + step * num_samples
        else:
            if self._soft_offset + num_samples > noises.SOFT_SAMPLES.stop:
                self._soft_offset = noises.SOFT_SAMPLES.start  # wrap: reuse only after ~2**31 samples per image
            offset = self._soft_offset
            self._soft_offset += num_samples
        probs = torch.softmax(self._logits(self._noisy(x, num_samples, offset, keys)), dim=1)
        return probs.reshape(x.shape[0], num_samples, self.num_classes).mean(dim=1)
