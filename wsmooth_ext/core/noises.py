"""The noise registry: every smoothing-noise family, and the sample-index ranges of the random stream.

Each :class:`NoiseFamily` entry says everything the rest of the package needs to know about a family — which
fused op draws it, its distribution (an entry of :mod:`wsmooth_ext.core.distributions`, which gives its scale
λ(σ), its code in the op and its certificates' formulas), the certificates valid for it (strongest first: the
default), how a noise-space L1 radius converts to a Wasserstein radius, and the graph it lives on. The CLI's
choices, checkpoint validation, training, benchmarks, certificates and the smoothed classifier all derive from
:data:`FAMILIES`; adding a family is one entry here. Math: ``docs/math.md`` (§Noise families, §Certificates).

σ is always the per-coordinate standard deviation in mass-normalized units (the image divided by its mass).

The sample-index ranges are reserved here too, once: a sample index selects an independent draw of an
image's noise (Philox counter word 1), so two uses of the same range with the same seed and key would see the
same noise. Keeping the ranges disjoint keeps their draws independent.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from . import distributions, ops, reference

# ------------------------------------------------------------------------------------------ sample ranges
SAMPLE_INDEX_LIMIT = ops.SAMPLE_INDEX_LIMIT  # the sample index is one 32-bit word of the Philox counter
VOTE_SAMPLES = range(0, 2 ** 31)  # predict: [0, n); certify: selection [0, n0), estimation [n0, n0 + n)
CHECK_SAMPLES = range(2 ** 32 - 2 ** 16, 2 ** 32)  # acceptance checks of optimized models (never certify)
SOFT_SAMPLES = range(2 ** 31, CHECK_SAMPLES.start)  # soft smoothed classifier: fresh draws on every call

# ------------------------------------------------------------------------------------------ σ
# Beyond this no classifier can say anything (the noise is 10⁴ times the whole image's mass per edge), and
# s·λ·|noise| must stay far from float32's 3.4e38 for every image size the op accepts.
MAX_SIGMA = 1e4
NONE = "none"  # training without noise; not a smoothing family


def check_sigma(sigma, name: str = "sigma") -> float:
    """σ as a float, or ValueError naming ``name``: a finite number in (0, MAX_SIGMA]."""
    if (isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not math.isfinite(float(sigma))
            or not 0.0 < float(sigma) <= MAX_SIGMA):
        raise ValueError(f"{name} must be a number in (0, {MAX_SIGMA:g}] (a standard deviation in mass-normalized "
                         f"units), got {sigma!r}")
    return float(sigma)


# ------------------------------------------------------------------------------------------ families
@dataclass(frozen=True)
class NoiseFamily:
    """One smoothing-noise family.

    ``domain``: "flow" (i.i.d. noise on the edges between 4-connected neighbouring pixels, applied through
    the divergence stencil) or "pixel" (i.i.d. noise on every pixel of x/s). ``distribution``: a name of
    ``distributions.DISTRIBUTIONS`` ("laplace", "uniform"). ``certificates``: valid certificates, strongest first,
    among the distribution's. ``w1_per_rho1``: W1 radius per unit of noise-space L1 radius ρ₁, by ground metric.
    """

    name: str
    domain: str
    distribution: str
    certificates: tuple[str, ...]
    w1_per_rho1: dict
    summary: str

    def __post_init__(self):
        if self.domain not in ("flow", "pixel"):
            raise ValueError(f"family {self.name!r}: domain must be 'flow' or 'pixel', got {self.domain!r}")
        valid = distributions.get(self.distribution).certificate_names
        if not self.certificates or not set(self.certificates) <= set(valid):
            raise ValueError(f"family {self.name!r}: certificates must be some of {list(valid)} (those of "
                             f"{self.distribution!r}), got {list(self.certificates)}")

    @property
    def default_certificate(self) -> str:
        return self.certificates[0]

    def scale(self, sigma: float) -> float:
        """λ(σ) of the distribution: Laplace scale σ/√2 or uniform half-width √3·σ (standard deviation σ)."""
        return distributions.get(self.distribution).scale(sigma)

    def sample(self, x: torch.Tensor, num_samples: int, sigma: float, *, seed: int, sample_offset: int,
               keys: torch.Tensor | None) -> torch.Tensor:
        """``num_samples`` noisy copies of every image of x [B, C, H, W]: [B·num_samples, C, H, W]."""
        op = ops.flow_noise if self.domain == "flow" else ops.pixel_noise
        return op(x, num_samples, sigma, noise=self.distribution, seed=seed, sample_offset=sample_offset, keys=keys)

    def sample_reference(self, x: torch.Tensor, num_samples: int, sigma: float, **kwargs) -> torch.Tensor:
        """The same samples from the pure-tensor reference (``rng="torch"``: the paper's procedure)."""
        impl = reference.flow_noise_reference if self.domain == "flow" else reference.pixel_noise_reference
        return impl(x, num_samples, sigma, noise=self.distribution, **kwargs)


_FLOW_W1 = {"l1": 1.0, "l2": 1.0 / math.sqrt(2.0)}  # Lemma 1; an L2-ground unit move costs ≥ 1/√2 of L1
_PIXEL_W1 = {"l1": 0.5, "l2": 0.5}  # ‖x/s − x'/s‖₁ ≤ 2·W1 under either ground metric

_LAPLACE = distributions.get("laplace").certificate_names  # ("tight", "paper")
_UNIFORM = distributions.get("uniform").certificate_names  # ("uniform",)

FAMILIES: dict[str, NoiseFamily] = {f.name: f for f in (
    NoiseFamily("flow-laplace", "flow", "laplace", _LAPLACE, _FLOW_W1,
                "Laplace noise on every flow edge: the paper's Wasserstein smoothing"),
    NoiseFamily("flow-uniform", "flow", "uniform", _UNIFORM, _FLOW_W1,
                "uniform noise on every flow edge"),
    NoiseFamily("pixel-laplace", "pixel", "laplace", _LAPLACE, _PIXEL_W1,
                "Laplace noise on every pixel of x/s: the paper's Laplace-smoothing baseline"),
    NoiseFamily("pixel-uniform", "pixel", "uniform", _UNIFORM, _PIXEL_W1,
                "uniform noise on every pixel of x/s"),
)}
NOISES = tuple(FAMILIES)
TRAINING_NOISES = (NONE,) + NOISES


def get(name) -> NoiseFamily:
    """The family called ``name``, or ValueError listing the valid names."""
    family = FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise ValueError(f"noise must be one of {list(NOISES)}, got {name!r}")
    return family


def add_noise(x: torch.Tensor, noise: str, sigma: float, *, seed: int, keys: torch.Tensor,
              sample_offset: int = 0) -> torch.Tensor:
    """One noisy copy of every image of ``x`` (sample ``sample_offset`` of key ``keys[b]``); x for "none"."""
    if noise == NONE:
        return x
    return get(noise).sample(x, 1, sigma, seed=seed, sample_offset=sample_offset, keys=keys)


def help_text() -> str:
    """One line per family, for --help."""
    return "; ".join(f"{f.name}: {f.summary}" for f in FAMILIES.values())
