"""Wasserstein adversarial training of base models (Wong, Schmidt & Kolter 2019; Madry et al. 2018's PGD
training) against every attack of the attack registry (:data:`wsmooth_ext.attacks.registry.ATTACKS`): one
training method per entry, made here from the entry (:func:`adversarial_method`), so ``wsmooth train
--adversarial NAME`` takes each registered attack, with its settings at their defaults in ``SETTINGS`` (and
the entry's ``training`` keywords).

Every training batch is replaced by adversarial examples that the attack finds against the current weights,
at a radius ε that grows over the first epochs. The inner maximization runs ``adv_attack_steps`` steps of the
attack's own update from the clean image, every example updated every step (no early stop, no success
test): PGD training as Madry et al. run it; the last iterate is the training example. The attack is
deterministic — no random start, no sampling — so the examples are a pure function of (weights, batch,
epoch), and a resumed run equals an uninterrupted one. It sees the bare model in eval mode.

Schedule (:func:`adversarial_epsilon`): geometric, like Wong et al.'s ε ramps: epoch e (0-based) of a warm-up
of W epochs uses ε·10^{−(1 − e/(W − 1))}, from ε/10 in the first epoch to ε in epoch W; later epochs use ε.
W = 0 or 1: ε from the start. Loss per example: (1 − w)·CE(f(x'), y) + w·CE(f(x), y), w = ``adv_clean_weight``.
Only base models trained without noise; adversarial training of a smoothed classifier is ``smoothadv``.
Math and measurements: docs/attacks.md §Adversarial training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .method import Batch, TrainingMethod
from .params import BIG, RADIUS_MAX, RADIUS_MIN, hyper

EPS_START_FRACTION = 0.1
EPS_HELP = "final radius, in the attack's units, mass-normalized"


def eps_field(units: str):
    """The ``adv_eps`` field, in the attack's own units."""
    return hyper(0.1, EPS_HELP, units=units, low=RADIUS_MIN, high=RADIUS_MAX, metavar="EPS")


@dataclass(frozen=True)
class AdversarialParams:
    num_noise: int = hyper(1, "noisy copies per image and epoch", low=1, high=1, integer=True,
                           note="one copy per example: one adversarial copy per image")
    adv_eps: float = eps_field("mass-normalized")
    adv_eps_warmup: int = hyper(10, "epochs over which eps grows geometrically from --adv-eps/10 to --adv-eps",
                                low=0, high=BIG, integer=True, metavar="EPOCHS",
                                default_note="; 0 or 1: full radius from the start")
    adv_attack_steps: int = hyper(10, "attack steps per batch", low=1, high=BIG, integer=True, metavar="K")
    adv_clean_weight: float = hyper(0.0, "loss (1-W)*CE(adversarial) + W*CE(clean)", low=0, high=1,
                                    high_open=True, note="1 would be clean training", metavar="W",
                                    default_note=": adversarial examples only")


def adversarial_epsilon(settings: dict, epoch: int) -> float:
    """ε of 0-based ``epoch``: geometric from ``adv_eps_start`` (epoch 0) to ``adv_eps`` (epoch W − 1 and on)."""
    eps, start, warmup = settings["adv_eps"], settings["adv_eps_start"], settings["adv_eps_warmup"]
    if warmup <= 1 or epoch >= warmup - 1:
        return float(eps)
    return float(start * (eps / start) ** (epoch / (warmup - 1)))


def _spec(name):
    """The attack registry's entry ``name``, or None."""
    from ..attacks.registry import ATTACKS

    return ATTACKS.get(name) if isinstance(name, str) else None


def eps_units(name: str) -> str:
    """What ``adv_eps`` measures when training against attack ``name``: its nominal ε, mass-normalized."""
    return f"{_spec(name).nominal}, mass-normalized"


def attack_params(spec) -> dict:
    """``adv_attack_params`` of training against the attack of ``spec`` (an ``AttackSpec``), as checkpoints
    record it: the constructor keywords of its settings at their defaults in ``SETTINGS`` and of the entry's
    ``training``, less its ``unrecorded`` ones. A changed default is another training, refused by --resume."""
    from ..attacks.registry import setting

    own = {spec.keywords.get(name, name): setting(name).default for name in spec.settings}
    return {k: v for k, v in {**own, **spec.training}.items() if k not in spec.unrecorded}


def build_attack(spec, model: nn.Module, eps: float, steps: int, params: dict):
    """The attack adversarial training runs: ``spec``'s class on ``model`` at the fixed radius ``eps`` for
    ``steps`` iterations, with ``params`` (``adv_attack_params``) and the entry's unrecorded ``training``."""
    from ..infra.options import EPS_EVERY

    fixed = {k: v for k, v in spec.training.items() if k in spec.unrecorded}
    return spec.cls(model, **{spec.radius: eps}, eps_factor=1.0, eps_every=EPS_EVERY.default, max_iter=steps,
                    **params, **fixed)


def describe_adversarial(train_args: dict | None) -> str | None:
    """One line saying how a checkpoint's model was adversarially trained (None if it was not)."""
    if not train_args or _spec(train_args.get("adversarial")) is None:
        return None
    a = train_args
    schedule = (f"eps grown geometrically from {a['adv_eps_start']:g} over {a['adv_eps_warmup']} epochs"
                if a["adv_eps_warmup"] > 1 else "no warm-up")
    text = (f"adversarially trained ({a['adversarial']}, eps {a['adv_eps']:g} [{eps_units(a['adversarial'])}], "
            f"{a['adv_attack_steps']} steps, {schedule}")
    if a.get("adv_clean_weight"):
        text += f", clean weight {a['adv_clean_weight']:g}"
    return text + ")"


class Adversary:
    """The adversarial step of a training batch: :meth:`perturb` finds x', :meth:`step` trains on it.
    ``settings``: the ``train_args`` entries of an adversarial method (``adversarial``, ``adv_*``)."""

    def __init__(self, settings: dict):
        from ..attacks.registry import ATTACKS

        if _spec(settings.get("adversarial")) is None:
            raise ValueError(f"Adversary needs an attack among {list(ATTACKS)}, got {settings.get('adversarial')!r}")
        self.settings = settings

    def attack(self, model: nn.Module, eps: float):
        """The attack object for ``model`` at radius ``eps`` (fixed: no growth inside a batch)."""
        s = self.settings
        return build_attack(_spec(s["adversarial"]), model, eps, s["adv_attack_steps"], s["adv_attack_params"])

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


def adversarial_method(spec) -> TrainingMethod:
    """The :class:`TrainingMethod` of adversarial training against the attack of ``spec`` (an entry of the attack
    registry): named as the attack, ``adv_eps`` in its nominal units, its settings fixed (:func:`attack_params`,
    recorded in the checkpoint, so a changed default refuses --resume), images of at least ``spec.min_size``
    pixels each way."""
    name = spec.name
    params_type = dataclasses.make_dataclass(
        "".join(part.title() for part in name.split("-")) + "Params", [("adv_eps", float, eps_field(spec.nominal))],
        bases=(AdversarialParams,), frozen=True)
    recorded = attack_params(spec)

    def record(params) -> dict:
        out = dataclasses.asdict(params)
        out["adv_eps_start"] = out["adv_eps"] * EPS_START_FRACTION if out["adv_eps_warmup"] > 1 else out["adv_eps"]
        return {"adversarial": name, **out, "adv_attack_params": dict(recorded)}

    def losses(params, batch: Batch):
        return Adversary(record(params)).step(batch.model, batch.net, batch.x, batch.y, batch.epoch)

    def check(params, noise: str, images: torch.Tensor) -> None:
        if noise != "none":
            raise ValueError(f"adversarial training ({name}) trains a plain base model: it needs noise='none' and "
                             f"method 'noise', got noise {noise!r} (for a smoothed classifier use method smoothadv)")
        size = spec.min_size
        if images.shape[-2] < size or images.shape[-1] < size:
            raise ValueError(f"adversarial training with {name} needs images of at least {size}x{size} "
                             f"pixels, got {tuple(images.shape[1:])}")
        if bool((images < 0).any()) or bool((images > 1).any()) or not bool(torch.isfinite(images).all()):
            raise ValueError(f"adversarial training ({name}) needs pixel values in [0, 1]: images are mass "
                             "distributions")

    def start_lines(params, epochs: int) -> list[str]:
        settings = record(params)
        lines = [describe_adversarial(settings)]
        if epochs < settings["adv_eps_warmup"]:
            lines.append(f"note: training ends (epoch {epochs}) before the warm-up (epoch "
                         f"{settings['adv_eps_warmup']}); the last epoch uses eps "
                         f"{adversarial_epsilon(settings, epochs - 1):.4g}")
        return lines

    def epoch_info(params, epoch: int) -> dict:
        return {"adv_eps": adversarial_epsilon(record(params), epoch)}

    def label(params, noise: str, epoch: int) -> str:
        return f"{name} eps {adversarial_epsilon(record(params), epoch):.4g}"

    return TrainingMethod(name, "adversarial", params_type, losses, spec.help, refuses_noise=True, check=check,
                          record=record, start_lines=start_lines, epoch_info=epoch_info, label=label,
                          describe=describe_adversarial)


def adversarial_methods() -> tuple[TrainingMethod, ...]:
    """One training method per entry of the attack registry, in its order."""
    from ..attacks.registry import ATTACKS

    return tuple(adversarial_method(spec) for spec in ATTACKS.values())
