"""Wasserstein adversarial training of base models (Wong, Schmidt & Kolter 2019; Madry et al. 2018's PGD training).

Every training batch is replaced by adversarial examples that one of the package's attacks finds against the
current weights, at a radius ε that grows over the first epochs:

* ``sinkhorn`` — :class:`~wsmooth_ext.attacks.WassersteinPGD` (projected-Sinkhorn PGD, Wong et al.'s own
  attack): sign steps of 0.1 in pixel units, entropic projection onto the ball of radius ε (cost ‖offset‖₂,
  p = 1, k = 5, λ = 1000, mass tolerance 1e-4), clamp to [0, 1]. ε is the *nominal* radius of the entropic
  ball (mass-normalized); the examples' exact W1 is typically about half of it (``docs/attacks.md``).
* ``frank-wolfe`` — :class:`~wsmooth_ext.attacks.FrankWolfeAttack` (after Wu et al. 2020): k = 5 window,
  L2 ground cost, LMO entropy γ = 0.03, 10 capacity rounds. Every example satisfies W1 (L2 ground,
  mass-normalized) ≤ ε exactly, keeps its mass and stays in [0, 1].
* ``flow`` — :class:`~wsmooth_ext.attacks.FlowAttack` (PGD over flow plans, the certificate's geometry):
  steps of 0.05·ε. ‖δ‖₁ ≤ ε (mass-normalized), so W1 (L1 ground, hence also L2 ground) ≤ ε; mass kept,
  pixels in [0, 1].

The inner maximization runs ``adv_attack_steps`` steps of the attack's own update from the clean image, every
example updated every step (no early stop at the first misclassified iterate, no success test): PGD training
as Madry et al. run it; the last iterate is the training example. The attack is deterministic — no random
start, no sampling — so the examples are a pure function of (weights, batch, epoch), and a resumed run equals
an uninterrupted one. It sees the bare model in eval mode, as ``smoothadv`` does.

Schedule (``adversarial_epsilon``): geometric, like Wong et al.'s ε ramps (which multiply ε by a constant
factor; their public MNIST script grows it ×1.4 per PGD iteration inside a batch, we grow it per epoch):
epoch e (0-based) of a warm-up of W epochs uses ε·10^{−(1 − e/(W − 1))}, from ε/10 in the first epoch to ε in
epoch W; later epochs use ε. W = 0 or 1: ε from the start.

Loss per example: (1 − w)·CE(f(x'), y) + w·CE(f(x), y) with w = ``adv_clean_weight`` (default 0: adversarial
examples only, as Wong et al. and Madry et al. train). w > 0 adds one clean forward pass per batch.

Only base models trained without noise: ``--noise none`` with the plain ``noise`` method. Adversarial training
of a smoothed classifier is ``--method smoothadv`` (the attack then targets the soft smoothed classifier).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ADVERSARIAL", "ADVERSARIAL_DEFAULTS", "ATTACK_PARAMS", "EPS_START_FRACTION", "Adversary",
           "LEGACY_ADVERSARIAL", "UNITS", "adversarial_epsilon", "adversarial_settings", "describe_adversarial",
           "make_adversary"]

NONE = "none"
ADVERSARIAL = (NONE, "sinkhorn", "frank-wolfe", "flow")
ADVERSARIAL_DEFAULTS = {
    "adv_eps": 0.1,  # final radius, in the attack's own units (UNITS)
    "adv_eps_warmup": 10,  # epochs over which ε grows geometrically from ε·EPS_START_FRACTION to ε
    "adv_attack_steps": 10,  # steps of the attack per batch
    "adv_clean_weight": 0.0,  # weight w of the clean cross-entropy in the loss
}
EPS_START_FRACTION = 0.1
# the attacks' settings during training; recorded in the checkpoint, so a changed default refuses --resume
ATTACK_PARAMS = {
    "sinkhorn": {"p": 1.0, "kernel_size": 5, "reg": 1000.0, "step": 0.1, "norm": "linf", "sinkhorn_iter": 400,
                 "sinkhorn_tol": 1e-4},
    "frank-wolfe": {"kernel_size": 5, "ground": "l2", "gamma": 0.03, "capacity_rounds": 10},
    "flow": {"step": 0.05},
}
UNITS = {
    "sinkhorn": "nominal radius of the entropic Wasserstein ball, cost |offset|_2, mass-normalized",
    "frank-wolfe": "W1 with L2 ground metric, mass-normalized (exact bound)",
    "flow": "L1 norm of the flow plan, mass-normalized (bounds W1, L1 ground)",
}
# what a checkpoint written before adversarial training existed means: none
LEGACY_ADVERSARIAL = {"adversarial": NONE, "adv_eps": None, "adv_eps_warmup": None, "adv_attack_steps": None,
                      "adv_clean_weight": None, "adv_eps_start": None, "adv_attack_params": None}


def adversarial_settings(adversarial: str = NONE, *, adv_eps=None, adv_eps_warmup=None, adv_attack_steps=None,
                         adv_clean_weight=None) -> dict:
    """The validated settings (the keys of ``LEGACY_ADVERSARIAL``), defaults filled in; all None but
    ``adversarial`` when it is "none". ValueError on an unknown attack, a bad value, or a setting given
    without an attack."""
    if adversarial not in ADVERSARIAL:
        raise ValueError(f"adversarial must be one of {list(ADVERSARIAL)}, got {adversarial!r}")
    given = {"adv_eps": adv_eps, "adv_eps_warmup": adv_eps_warmup, "adv_attack_steps": adv_attack_steps,
             "adv_clean_weight": adv_clean_weight}
    if adversarial == NONE:
        stray = [k for k, v in given.items() if v is not None]
        if stray:
            raise ValueError(f"{stray} only apply to adversarial training (adversarial is 'none')")
        return dict(LEGACY_ADVERSARIAL)
    out = {"adversarial": adversarial}
    for key, value in given.items():
        value = ADVERSARIAL_DEFAULTS[key] if value is None else value
        if key in ("adv_eps_warmup", "adv_attack_steps"):
            low = 0 if key == "adv_eps_warmup" else 1
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= 10 ** 6:
                raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
            value = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
                raise ValueError(f"{key} must be a finite number, got {value!r}")
            value = float(value)
            if key == "adv_eps" and value <= 0:
                raise ValueError(f"adv_eps must be > 0 (units: {UNITS[adversarial]}), got {value!r}")
            if key == "adv_clean_weight" and not 0 <= value < 1:
                raise ValueError(f"adv_clean_weight must be in [0, 1) (1 would be clean training), got {value!r}")
        out[key] = value
    out["adv_eps_start"] = out["adv_eps"] * EPS_START_FRACTION if out["adv_eps_warmup"] > 1 else out["adv_eps"]
    out["adv_attack_params"] = dict(ATTACK_PARAMS[adversarial])
    return out


def adversarial_epsilon(settings: dict, epoch: int) -> float:
    """ε of 0-based ``epoch``: geometric from ``adv_eps_start`` (epoch 0) to ``adv_eps`` (epoch W − 1 and on)."""
    eps, start, warmup = settings["adv_eps"], settings["adv_eps_start"], settings["adv_eps_warmup"]
    if warmup <= 1 or epoch >= warmup - 1:
        return float(eps)
    return float(start * (eps / start) ** (epoch / (warmup - 1)))


def describe_adversarial(train_args: dict | None) -> str | None:
    """One line saying how a checkpoint's model was adversarially trained (None if it was not): for logs and
    for commands that show what produced a model."""
    if not train_args or train_args.get("adversarial", NONE) in (NONE, None):
        return None
    a = train_args
    schedule = (f"eps grown geometrically from {a['adv_eps_start']:g} over {a['adv_eps_warmup']} epochs"
                if a["adv_eps_warmup"] > 1 else "no warm-up")
    text = (f"adversarially trained ({a['adversarial']}, eps {a['adv_eps']:g} [{UNITS[a['adversarial']]}], "
            f"{a['adv_attack_steps']} steps, {schedule}")
    if a.get("adv_clean_weight"):
        text += f", clean weight {a['adv_clean_weight']:g}"
    return text + ")"


class Adversary:
    """The adversarial step of a training batch: :meth:`perturb` finds x', :meth:`step` trains on it."""

    def __init__(self, settings: dict):
        if settings.get("adversarial") in (None, NONE):
            raise ValueError("Adversary needs an attack (settings['adversarial'] is 'none')")
        self.settings = settings

    def attack(self, model: nn.Module, eps: float):
        """The attack object for ``model`` at radius ``eps`` (fixed: no growth inside a batch)."""
        from .attacks import FlowAttack, FrankWolfeAttack, WassersteinPGD

        name, params = self.settings["adversarial"], self.settings["adv_attack_params"]
        steps = self.settings["adv_attack_steps"]
        if name == "sinkhorn":
            return WassersteinPGD(model, eps0=eps, eps_factor=1.0, max_iter=steps, **params)
        if name == "frank-wolfe":
            return FrankWolfeAttack(model, eps=eps, max_iter=steps, **params)
        return FlowAttack(model, eps=eps, max_iter=steps, **params)

    def epsilon(self, epoch: int) -> float:
        return adversarial_epsilon(self.settings, epoch)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """Adversarial examples [B, C, H, W] for images x in [0, 1] against ``model`` (whose mode is restored),
        at the radius of ``epoch``. Images without mass (no Wasserstein ball) are returned unchanged."""
        attack = self.attack(model, self.epsilon(epoch))
        out = x.detach().clone()
        has_mass = x.flatten(1).sum(dim=1) > 0
        if not bool(has_mass.any()):
            return out
        was_training = model.training
        model.eval()  # the attack sees the model as evaluation will (BatchNorm statistics, no dropout)
        try:
            if bool(has_mass.all()):
                return attack.perturb(x, y, attack.eps0, self.settings["adv_attack_steps"])
            out[has_mass] = attack.perturb(x[has_mass], y[has_mass], attack.eps0, self.settings["adv_attack_steps"])
            return out
        finally:
            model.train(was_training)

    def step(self, model: nn.Module, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
             epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits on x' [B, K], loss per example [B]) for one batch. The attack uses the bare ``model``; the
        training forward pass goes through ``net`` (the model, or its DistributedDataParallel wrapper)."""
        adv = self.perturb(model, x, y, epoch)
        w = self.settings["adv_clean_weight"]
        if not w:
            logits = net(adv)
            return logits, F.cross_entropy(logits, y, reduction="none")
        both = net(torch.cat([adv, x]))
        logits, clean = both[:len(x)], both[len(x):]
        losses = ((1 - w) * F.cross_entropy(logits, y, reduction="none")
                  + w * F.cross_entropy(clean, y, reduction="none"))
        return logits, losses


def make_adversary(settings: dict) -> Adversary | None:
    """The :class:`Adversary` of ``settings`` (from :func:`adversarial_settings`), None for "none"."""
    return None if settings.get("adversarial") in (None, NONE) else Adversary(settings)
