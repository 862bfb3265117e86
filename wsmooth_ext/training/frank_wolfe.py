"""Adversarial training with ``frank-wolfe``: :class:`~wsmooth_ext.attacks.FrankWolfeAttack` (after Wu et al.
2020): k = 5 window, L2 ground cost, LMO entropy γ = 0.03, 10 capacity rounds. Every example satisfies W1 (L2
ground, mass-normalized) ≤ ε exactly, keeps its mass and stays in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

from .adversarial import AdversarialParams, adversarial_method, eps_field

ATTACK_PARAMS = {"kernel_size": 5, "ground": "l2", "gamma": 0.03, "capacity_rounds": 10}


@dataclass(frozen=True)
class FrankWolfeParams(AdversarialParams):
    adv_eps: float = eps_field("W1, L2 ground")


def build(model, eps, steps, **params):
    from ..attacks import FrankWolfeAttack

    return FrankWolfeAttack(model, eps=eps, max_iter=steps, **params)


METHOD = adversarial_method("frank-wolfe", FrankWolfeParams, build, ATTACK_PARAMS,
                            "Frank-Wolfe after Wu et al. 2020", "W1 with L2 ground metric, mass-normalized (exact bound)")
