"""Adversarial training with ``sinkhorn``: :class:`~wsmooth_ext.attacks.WassersteinPGD` (projected-Sinkhorn
PGD, Wong et al.'s own attack): sign steps of 0.1 in pixel units, entropic projection onto the ball of radius
ε (cost ‖offset‖₂, p = 1, k = 5, λ = 1000, mass tolerance 1e-4), clamp to [0, 1]. ε is the *nominal* radius of
the entropic ball (mass-normalized); the examples' exact W1 is typically about half of it."""

from __future__ import annotations

from dataclasses import dataclass

from .adversarial import AdversarialParams, adversarial_method, eps_field

ATTACK_PARAMS = {"p": 1.0, "kernel_size": 5, "reg": 1000.0, "step": 0.1, "norm": "linf", "sinkhorn_iter": 400,
                 "sinkhorn_tol": 1e-4}


@dataclass(frozen=True)
class SinkhornParams(AdversarialParams):
    adv_eps: float = eps_field("nominal entropic-ball radius")


def build(model, eps, steps, **params):
    from ..attacks import WassersteinPGD

    # Training keeps the published projection (clamp to [0, 1] after projecting): checkpoints trained before
    # the attack's default became the mass-keeping "box" projection resume to the same weights.
    return WassersteinPGD(model, eps0=eps, eps_factor=1.0, max_iter=steps, projection="clamp", **params)


METHOD = adversarial_method("sinkhorn", SinkhornParams, build, ATTACK_PARAMS, "projected-Sinkhorn PGD",
                            "nominal radius of the entropic Wasserstein ball, cost |offset|_2, mass-normalized")
