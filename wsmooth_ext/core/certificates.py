"""Certified Wasserstein radii from a lower bound on the top class's probability .

The formulas for ρ₁ and λ(σ) come from the distribution table (:mod:`wsmooth_ext.core.distributions`), which
certificates a family admits and the ρ₁ → W1 factors from the noise registry (:mod:`wsmooth_ext.core.noises`);
the validation, the conversion and the rounding live here. Derivations: ``docs/math.md`` §Certificates.

ρ₁ is the certified L1 radius in the *noise space* (the edge flows δ for flow noise, the normalized
pixels x/s for pixel noise); λ is the noise scale (Laplace λ = σ/√2, uniform half-width λ = √3·σ):

=============  ==========================  ======================  =============  ==============
noise          certificate                 ρ₁                      W1, L1 ground  W1, L2 ground
=============  ==========================  ======================  =============  ==============
flow-laplace   ``paper`` (Eq. 18/20)        (λ/2)·ln(p/(1−p))       ρ₁             ρ₁/√2
flow-laplace   ``tight`` (Teng et al.)      −λ·ln(2(1−p))           ρ₁             ρ₁/√2
flow-uniform   ``uniform`` (Yang et al.)    2λ(p − 1/2)             ρ₁             ρ₁/√2
pixel-laplace  ``paper`` (Eq. 21)/``tight`` as for flow-laplace     ρ₁/2           ρ₁/2
pixel-uniform  ``uniform``                  as for flow-uniform     ρ₁/2           ρ₁/2
=============  ==========================  ======================  =============  ==============

Why it holds: an image x' with the same mass as x and W1(x/s, x'/s) ≤ ρ (L1 ground metric) equals Δ(x, δ)
for a flow δ with ‖δ‖₁ ≤ ρ (paper Lemma 1), so smoothing x' is smoothing x with the flow noise shifted by δ,
and any L1 certificate for the noise applies. With the L2 ground metric, a unit of mass moved costs at
most √2 times less, hence ρ₁/√2. For pixel noise, ‖x/s − x'/s‖₁ ≤ 2·W1 under either ground metric.

**Scope: mass-preserving perturbations.** The certificate is about the Wasserstein threat model, where the
attacked image is a transport of the clean one. An x' whose total mass differs from x's is outside it: no
radius here covers it (a changed mass is not a finite Wasserstein distance between the unnormalized images).

Radii are computed in float64 from numerically stable forms and then rounded *down* by a margin larger than
the floating-point error of the formula, so a reported radius never exceeds the exact one. ``p_lower ≤ 1/2``
gives radius 0.0 (no certificate: ``Smooth.certify`` abstains there); ``p_lower = 1`` gives ``inf`` for the
Laplace certificates (a Clopper–Pearson bound is always < 1, so this happens only for exact probabilities).
"""

from __future__ import annotations

import math
import numbers

from . import distributions, noises

CERTIFICATES = distributions.certificate_names()  # ("tight", "paper", "uniform")
GROUND_METRICS = ("l2", "l1")

# Relative error bound of the float64 formulas (core/distributions.py) is a handful of ulps; 16 ulps is a safe margin.
_ROUND_DOWN_ULPS = 16


def resolve_certificate(noise: str, certificate: str | None) -> str:
    """The certificate to use: ``None`` → the strongest valid one; an invalid pair raises ValueError."""
    family = noises.get(noise)
    if certificate is None:
        return family.default_certificate
    known = distributions.certificate_names()
    if certificate not in known:
        raise ValueError(f"certificate must be one of {list(known)} or None, got {certificate!r}")
    if certificate not in family.certificates:
        raise ValueError(f"certificate {certificate!r} is not valid for noise {noise!r}; valid: "
                         f"{list(family.certificates)}")
    return certificate


def _round_down(r: float) -> float:
    if r <= 0.0 or math.isinf(r):
        return max(r, 0.0)
    return max(0.0, r - _ROUND_DOWN_ULPS * math.ulp(r))


def certified_radius(p_lower: float, sigma: float, noise: str, certificate: str | None,
                     ground: str = "l2") -> float:
    """Certified W1 radius (mass-normalized units) of the smoothed classifier, given p_lower.

    Args:
        p_lower: a lower bound on the smoothed probability of the predicted class, in [0, 1].
        sigma: per-coordinate standard deviation of the smoothing noise (> 0).
        noise: a family of ``wsmooth_ext.core.noises.NOISES``.
        certificate: "tight", "paper", "uniform", or None for the strongest valid one for ``noise``.
        ground: ground metric of the Wasserstein distance, "l2" (Wong et al.'s threat model) or "l1".

    Returns:
        The radius as a float64, rounded down; 0.0 when p_lower ≤ 1/2 (nothing certified).
    """
    if isinstance(p_lower, bool) or not isinstance(p_lower, numbers.Real) or not 0.0 <= float(p_lower) <= 1.0:
        raise ValueError(f"p_lower must be a probability in [0, 1], got {p_lower!r}")
    sigma = noises.check_sigma(sigma)
    certificate = resolve_certificate(noise, certificate)
    if ground not in GROUND_METRICS:
        raise ValueError(f"ground must be one of {list(GROUND_METRICS)}, got {ground!r}")
    p = float(p_lower)
    if p <= 0.5:
        return 0.0
    family = noises.get(noise)
    distribution = distributions.get(family.distribution)
    rho1 = distribution.certificates[certificate](p, distribution.scale(sigma))  # for 1/2 < p <= 1
    return _round_down(rho1 * family.w1_per_rho1[ground])
