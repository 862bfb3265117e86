"""Adversarial training with ``flow``: :class:`~wsmooth_ext.attacks.FlowAttack` (PGD over flow plans, the
certificate's geometry): steps of 0.05·ε. ‖δ‖₁ ≤ ε (mass-normalized), so W1 (L1 ground, hence also L2
ground) ≤ ε; mass kept, pixels in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

from .adversarial import AdversarialParams, adversarial_method, eps_field

ATTACK_PARAMS = {"step": 0.05}


@dataclass(frozen=True)
class FlowParams(AdversarialParams):
    adv_eps: float = eps_field("flow L1 norm >= W1, L1 ground")


def build(model, eps, steps, **params):
    from ..attacks import FlowAttack

    return FlowAttack(model, eps=eps, max_iter=steps, **params)


METHOD = adversarial_method("flow", FlowParams, build, ATTACK_PARAMS, "PGD over flow plans",
                            "L1 norm of the flow plan, mass-normalized (bounds W1, L1 ground)", min_size=2)
