"""The noise distributions, in one table: everything the package knows about Laplace and uniform noise.

Each :class:`Distribution` entry of :data:`DISTRIBUTIONS` gives

* ``code``: the ops' ``noise`` argument, the same as in ``csrc/distributions.h`` (``tests/kernels/test_distributions.py``
  compares this table with the compiled one, ``_C.distributions()``);
* λ(σ) = σ·``lambda_mul``/``lambda_div``, the scale of a unit draw that gives it standard deviation σ (Laplace
  λ = σ/√2, uniform half-width λ = √3·σ), evaluated as the C++ side evaluates it;
* ``unit_bound``: no unit draw is larger in magnitude (31·ln 2, 1): the op's range check uses it;
* ``words_to_noise``: the word → noise rule of the random stream in tensor arithmetic (the reference's, the
  kernels' up to the logarithm's rounding), and ``torch_noise``: draws from torch's generator (the
  benchmarks' baseline, ``rng="torch"``);
* ``certificates``: the L1 certificates valid for the distribution, strongest first, each ρ₁(p, λ) — the
  noise-space radius before rounding, for 1/2 < p ≤ 1 (``docs/math.md`` §Certificates);
  :mod:`wsmooth_ext.core.certificates` rounds and converts them;
* ``macer_radius``: the radius MACER trains with, as a differentiable torch function of p and q = 1 − p.

Families (:mod:`wsmooth_ext.core.noises`) name a distribution; ``core/reference.py``, ``core/ops.py``,
``core/certificates.py`` and ``training/macer.py`` read everything else about it from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch


# ------------------------------------------------------------------------------------------ laplace
def _laplace_noise(words: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """sign = bit 31, m = low 31 bits, u = (m + 1)·2**-31 in (0, 1], value = ±scale·(−ln u): u never reaches 0,
    so every value is finite."""
    m = (words & 0x7FFFFFFF).to(dtype)
    magnitude = -torch.log((m + 1.0) * 2.0 ** -31)
    sign = 1.0 - 2.0 * ((words >> 31) & 1).to(dtype)
    return scale * sign * magnitude


def _laplace_torch(shape, scale: float, like: torch.Tensor) -> torch.Tensor:
    dist = torch.distributions.Laplace(torch.zeros((), dtype=like.dtype, device=like.device),
                                       torch.full((), scale, dtype=like.dtype, device=like.device))
    return dist.sample(shape)


def _tight(p: float, lam: float) -> float:
    """Teng et al. 2020: −λ·ln(2(1 − p)); 2(1 − p) is exact."""
    if p == 1.0:
        return math.inf
    return -lam * math.log(2.0 * (1.0 - p))


def _paper(p: float, lam: float) -> float:
    """Lecuyer et al. 2019, the paper's Eq. 18/20: (λ/2)·ln(p/(1 − p)), as log1p((2p − 1)/(1 − p)): no
    cancellation near p = 1/2 (2p − 1 and 1 − p are exact in float64 for p in [1/2, 1])."""
    if p == 1.0:
        return math.inf
    return 0.5 * lam * math.log1p((2.0 * p - 1.0) / (1.0 - p))


def _laplace_macer(p: torch.Tensor, q: torch.Tensor, scale: float) -> torch.Tensor:
    """The tight certificate, −scale·ln(2q) (q clamped away from 0)."""
    return -scale * torch.log(2 * q.clamp(min=1e-30))


# ------------------------------------------------------------------------------------------ uniform
def _uniform_noise(words: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """value = scale·((int32)(word ^ 2**31) + 0.5)·2**-31, in (−scale, scale)."""
    centred = (words - 2 ** 31).to(dtype)  # (int32)(word ^ 2**31) in C
    return scale * (centred + 0.5) * 2.0 ** -31


def _uniform_torch(shape, scale: float, like: torch.Tensor) -> torch.Tensor:
    return (torch.rand(shape, dtype=like.dtype, device=like.device) * 2.0 - 1.0) * scale


def _uniform(p: float, lam: float) -> float:
    """Yang et al. 2020: 2λ(p − 1/2)."""
    return 2.0 * lam * (p - 0.5)


def _uniform_macer(p: torch.Tensor, q: torch.Tensor, scale: float) -> torch.Tensor:
    """2·scale·(p − 1/2) = scale·(p − q)."""
    return scale * (p - q)


# ------------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Distribution:
    """One noise distribution of the ops (see the module's docstring for the fields)."""

    name: str
    code: int
    lambda_mul: float
    lambda_div: float
    unit_bound: float
    words_to_noise: Callable[[torch.Tensor, float, torch.dtype], torch.Tensor]
    torch_noise: Callable[[tuple, float, torch.Tensor], torch.Tensor]
    certificates: Mapping[str, Callable[[float, float], float]]
    macer_radius: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    summary: str

    def scale(self, sigma: float) -> float:
        """λ(σ) = σ·lambda_mul/lambda_div (one multiply, one divide: σ/√2 or σ·√3 exactly as ever)."""
        return sigma * self.lambda_mul / self.lambda_div

    @property
    def certificate_names(self) -> tuple[str, ...]:
        """The valid certificates, strongest first."""
        return tuple(self.certificates)


DISTRIBUTIONS: dict[str, Distribution] = {d.name: d for d in (
    Distribution("laplace", 0, 1.0, math.sqrt(2.0), 31 * math.log(2), _laplace_noise, _laplace_torch,
                 {"tight": _tight, "paper": _paper}, _laplace_macer, "Laplace(0, λ), λ = σ/√2"),
    Distribution("uniform", 1, math.sqrt(3.0), 1.0, 1.0, _uniform_noise, _uniform_torch,
                 {"uniform": _uniform}, _uniform_macer, "Uniform[−λ, λ], λ = √3·σ"),
)}


def get(name) -> Distribution:
    """The distribution called ``name``, or ValueError listing the valid names."""
    distribution = DISTRIBUTIONS.get(name) if isinstance(name, str) else None
    if distribution is None:
        raise ValueError(f"noise must be one of {list(DISTRIBUTIONS)}, got {name!r}")
    return distribution


def certificate_names() -> tuple[str, ...]:
    """Every certificate of some distribution, in table order (strongest first within each)."""
    return tuple(dict.fromkeys(c for d in DISTRIBUTIONS.values() for c in d.certificates))
