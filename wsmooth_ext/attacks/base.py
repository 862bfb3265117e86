"""What every attack shares: the target (plain classifier or ``Smooth``), its hard prediction and loss gradient,
input checks, and the outer loop of attacks that carry a state (a coupling, a flow) per example.

Smoothed targets (``docs/attacks.md`` §Attacking smoothed classifiers): gradients of the cross-entropy of the
soft smoothed classifier (``soft_forward``, ``n_grad`` fresh samples per call); success decided by the hard
smoothed prediction at level ``alpha`` with up to ``n_test`` samples (abstaining = fooled), by the
``success_test`` "sequential" (default) or "fixed". Those settings are one argument of every attack,
``smoothing=`` a :class:`~.target.SmoothedTarget`, checked there once.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..infra.options import EPS, EPS0, EPS_FACTOR
from ..infra.ranges import check_grown_radius, check_soft_samples
from .target import SmoothedTarget


@dataclass
class AttackResult:
    """Outcome of an attack on a batch of B images.

    Attributes:
        adversarial: [B, C, H, W] the returned images: the first fooling iterate, the clean image for
            examples misclassified from the start, the last iterate for examples never fooled.
        radius: float64 [B] nominal ε in force when the example first flipped; 0.0 when the clean image is
            already misclassified (or, for a smoothed classifier, abstains); ``inf`` when never fooled.
        success: bool [B] whether the returned image is misclassified (or abstained on).
        clean_prediction / adversarial_prediction: int64 [B] (−1 = abstain, smoothed mode only).
        iterations: int64 [B] the iteration (1-based) of the first flip; 0 if wrong from the start; −1 never.
    """

    adversarial: torch.Tensor
    radius: torch.Tensor
    success: torch.Tensor
    clean_prediction: torch.Tensor
    adversarial_prediction: torch.Tensor
    iterations: torch.Tensor


def _is_smoothed(obj) -> bool:
    return callable(getattr(obj, "soft_forward", None)) and callable(getattr(obj, "predict_batch", None))


def _positive(name, value, integer=False, minimum_exclusive=0.0):
    ok_type = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)) or value <= minimum_exclusive:
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} > {minimum_exclusive:g}, got {value!r}")
    return int(value) if integer else float(value)


class TargetAttack:
    """Base: the attacked classifier and the pieces every attack uses."""

    def _init_target(self, model_or_callable, smoothing: SmoothedTarget | None = None):
        """The target and, for a ``Smooth``, its :class:`~.target.SmoothedTarget` (``smoothing``; None: the
        defaults). ``self.smoothing`` is None for a plain classifier, which takes no smoothing settings."""
        if not callable(model_or_callable) and not _is_smoothed(model_or_callable):
            raise ValueError("model_or_callable must be a classifier (callable returning logits) or a Smooth, "
                             f"got {type(model_or_callable).__name__}")
        self.model = model_or_callable
        self.smoothed = _is_smoothed(model_or_callable)
        if smoothing is not None and not isinstance(smoothing, SmoothedTarget):
            raise ValueError(f"smoothing must be a SmoothedTarget, got {type(smoothing).__name__}")
        if smoothing is not None and not self.smoothed:
            raise ValueError("smoothing applies to a smoothed target (a Smooth); the target is a plain classifier")
        self.smoothing = (smoothing or SmoothedTarget()) if self.smoothed else None

    def _init_schedule(self, eps0, eps_factor, eps_every, max_iter):
        # the stated ranges of the CLI options (wsmooth_ext.infra.ranges): a radius the float32 iterates can hold
        self.eps0 = EPS0.check(eps0, "eps0")
        self.eps_factor = EPS_FACTOR.check(eps_factor, "eps_factor")
        self.eps_every = _positive("eps_every", eps_every, integer=True)
        if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 0:
            raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
        self.max_iter = int(max_iter)
        check_grown_radius(self.eps0, self.eps_factor, self.max_iter, self.eps_every,
                           ("eps0", "eps_factor", "max_iter", "eps_every"))
        if self.smoothed:
            check_soft_samples(self.max_iter, self.smoothing.n_grad, ("max_iter", "n_grad"))

    def predict(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Hard prediction [N] (int64, on x's device): base argmax, or the smoothed prediction (−1 abstain)."""
        with torch.no_grad():
            if self.smoothed:
                t = self.smoothing
                if t.success_test == "sequential":
                    pred = self.model.predict_batch_sequential(x, n=t.n_test, alpha=t.alpha, batch_size=t.batch_size,
                                                               keys=keys.cpu())[0]
                else:
                    pred = self.model.predict_batch(x, n=t.n_test, alpha=t.alpha, batch_size=t.batch_size,
                                                    keys=keys.cpu())
                return torch.as_tensor(pred, dtype=torch.int64).to(x.device)
            return self.model(x).argmax(dim=1)

    def loss_gradient(self, x: torch.Tensor, y: torch.Tensor, keys: torch.Tensor, step: int | None = None
                      ) -> torch.Tensor:
        """∇ₓ of the cross-entropy of the (soft smoothed) classifier, per example (summed loss).

        ``step``: the iteration, which selects the gradient's noise samples (``Smooth.soft_forward``), so an
        example's gradients depend only on (seed, its key, the iteration): never on its batch or a resume.
        """
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            if self.smoothed:
                probs = self.model.soft_forward(x, self.smoothing.n_grad, keys=keys.cpu(), step=step)
                loss = F.nll_loss(torch.log(probs.clamp_min(1e-30)), y, reduction="sum")
            else:
                loss = F.cross_entropy(self.model(x), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
        return grad

    def _num_classes(self, x: torch.Tensor) -> int:
        """The classes of the target: a Smooth's num_classes, or the width of a plain classifier's logits."""
        if self.smoothed:
            return int(self.model.num_classes)
        with torch.no_grad():
            return int(self.model(x[:1]).shape[-1])

    def _check_batch(self, x, y, keys):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError("x must be a floating-point tensor [B, C, H, W], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if not bool(torch.isfinite(x).all()) or bool((x < 0).any()) or bool((x > 1).any()):
            raise ValueError("x must hold pixel values in [0, 1]")
        empty = (x.flatten(1).sum(dim=1) <= 0).nonzero().flatten()
        if empty.numel():
            raise ValueError(f"images {empty.tolist()[:5]} of x are all zero: an image without mass is not a "
                             "distribution and has no Wasserstein ball")
        y = torch.as_tensor(y)
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"y must hold integer class labels, got {y.dtype}")
        y = y.to(device=x.device, dtype=torch.int64).reshape(-1)
        if y.numel() != x.shape[0]:
            raise ValueError(f"y must hold one label per image ({x.shape[0]}), got {y.numel()}")
        classes = self._num_classes(x) if y.numel() else 0
        if y.numel() and not 0 <= int(y.min()) <= int(y.max()) < classes:
            raise ValueError(f"y must hold labels in [0, {classes}) (the classifier's classes), got "
                             f"[{int(y.min())}, {int(y.max())}]")
        if keys is None:
            keys = torch.arange(x.shape[0], dtype=torch.int64)
        keys = torch.as_tensor(keys).reshape(-1)
        if keys.numel() != x.shape[0] or keys.is_floating_point():
            raise ValueError(f"keys must be integers, one per image ({x.shape[0]}), got {keys.numel()}")
        return x, y, keys.to(device=x.device, dtype=torch.int64)


class StateAttack(TargetAttack):
    """Outer loop of an attack whose iterate is a state per example (a coupling, a flow) that stays feasible.

    Subclasses define ``init_state(x) -> dict of tensors [B, ...]``, ``image(x, state) -> [B, C, H, W]`` and
    ``update(x, state, grad, eps, t) -> state`` (t: iterations since the radius last changed). The radius ε
    starts at ``eps0`` and, for the examples still standing, is multiplied by ``eps_factor`` after every
    ``eps_every`` iterations (``eps_factor = 1``: fixed ε). An example is frozen at its first fooling iterate.
    :meth:`perturb` runs the same update at a fixed ε for a fixed number of steps (adversarial training).
    """

    def attack(self, x: torch.Tensor, y: torch.Tensor, keys=None, progress=None) -> AttackResult:
        """Attack a batch. x [B, C, H, W] in [0, 1] with positive mass; y [B] labels; keys [B] the images'
        RNG keys for a smoothed classifier (default 0..B−1); ``progress(t, n_left)`` after every iteration.
        """
        x, y, keys = self._check_batch(x, y, keys)
        bsz = x.shape[0]
        adv = x.clone()
        clean_pred = self.predict(x, keys)
        fooled = clean_pred != y
        adv_pred = clean_pred.clone()
        radius = torch.full((bsz,), math.inf, dtype=torch.float64)
        radius[fooled.cpu()] = 0.0
        iterations = torch.full((bsz,), -1, dtype=torch.int64)
        iterations[fooled.cpu()] = 0
        eps = torch.full((bsz,), self.eps0, dtype=x.dtype, device=x.device)
        since = torch.zeros(bsz, dtype=torch.int64, device=x.device)
        state = self.init_state(x)
        for t in range(self.max_iter):
            active = (~fooled).nonzero().flatten()
            if active.numel() == 0:
                break
            xa, ya, ka = x[active], y[active], keys[active]
            sa = {name: v[active] for name, v in state.items()}
            grad = self.loss_gradient(adv[active], ya, ka, step=t)
            with torch.no_grad():
                sa = self.update(xa, sa, grad, eps[active], since[active])
                for name, v in sa.items():
                    state[name][active] = v
                img = self.image(xa, sa)
                adv[active] = img
                pred = self.predict(img, ka)
                adv_pred[active] = pred
                newly = active[pred != ya]
                fooled[newly] = True
                radius[newly.cpu()] = eps[newly].double().cpu()
                iterations[newly.cpu()] = t + 1
                since[active] += 1
                if (t + 1) % self.eps_every == 0 and self.eps_factor != 1:
                    grow = ~fooled
                    eps[grow] *= self.eps_factor
                    since[grow] = 0
            if progress is not None:
                progress(t + 1, int((~fooled).sum()))
        return AttackResult(adversarial=adv.detach(), radius=radius, success=fooled.cpu(),
                            clean_prediction=clean_pred.cpu(), adversarial_prediction=adv_pred.cpu(),
                            iterations=iterations)

    __call__ = attack

    def perturb(self, x: torch.Tensor, y: torch.Tensor, eps, steps: int, keys=None) -> torch.Tensor:
        """Fixed-radius PGD that maximizes the loss, for adversarial training: ``steps`` updates of every
        example from the clean image (no success test, no early stop, no growth of ε), returning the last
        iterate [B, C, H, W]. It meets the attack's constraints like :meth:`attack`'s examples. ``eps``: a
        float or one radius per example; x, y, keys as in :meth:`attack`.
        """
        x, y, keys = self._check_batch(x, y, keys)
        bsz = x.shape[0]
        eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device).reshape(-1).expand(bsz).clone()
        if not bool((eps > 0).all()) or not bool((eps <= EPS.range.high).all()):
            raise ValueError(f"eps must be a positive finite number <= {EPS.range.high:g} (float32 arithmetic), "
                             f"or one such per image, got {eps.tolist()[:5]}")
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        state = self.init_state(x)
        img = x
        for t in range(int(steps)):
            grad = self.loss_gradient(img, y, keys)
            with torch.no_grad():
                state = self.update(x, state, grad, eps, torch.full((bsz,), t, dtype=torch.int64, device=x.device))
                img = self.image(x, state)
        return img.detach().clone() if img is x else img.detach()
