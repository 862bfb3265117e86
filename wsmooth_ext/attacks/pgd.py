"""Wasserstein adversarial attacks: projected-Sinkhorn PGD (Wong, Schmidt & Kolter 2019), reimplemented.

The attack works on plain classifiers (``nn.Module`` or any callable returning logits) and on smoothed
classifiers (:class:`wsmooth_ext.Smooth`): then gradients come from the soft smoothed classifier
(``soft_forward``, fresh noise every iteration) and success is decided by the hard smoothed prediction
(at most n samples, binomial test at α; abstaining counts as fooled, as in the paper §6.2).

The recorded radius is the *nominal* ε of the entropic ball in force when an example first flips. That
projection is approximate (and the published variant's clamp to [0, 1] changes mass), so report the exact W1
of the returned examples too (:func:`wsmooth_ext.wasserstein_distance`; ``wsmooth attack`` logs it as ``w1``).
"""

from __future__ import annotations


import torch

from .base import StateAttack, _positive
from .sinkhorn import local_cost, log_local_operator, projected_sinkhorn
from .target import SmoothedTarget

__all__ = ["WassersteinPGD", "NORMS", "PROJECTIONS"]

NORMS = ("linf", "l2")
# box: onto the intersection of the ball, mass preservation and the [0, 1] box (Hu, Swaminathan, Salman & Yang
# 2020), so examples stay in the threat model; clamp: the published attack (Wong et al. 2019), project onto the
# ball, then clamp to [0, 1], which changes the mass
PROJECTIONS = ("box", "clamp")


class WassersteinPGD(StateAttack):
    """Projected-Sinkhorn PGD with a growing Wasserstein ball (paper §6.2; ``docs/attacks.md`` §PGD...).

    Args:
        model_or_callable: a classifier mapping images [N, C, H, W] in [0, 1] to logits, or a ``Smooth``.
        p: exponent of the transport cost ‖offset‖₂^p (1: W1, the paper's; 2: Wong et al.'s own scripts).
        kernel_size: k, the odd side of the local transport window.
        reg: entropic regularization λ of the projection (MNIST 1000, CIFAR-10 3000).
        eps0: initial radius ε₀ (mass-normalized units, pixels of the cost); eps_factor, eps_every: the radius
            of the examples still standing is multiplied by eps_factor after every eps_every iterations.
        max_iter: PGD iterations; step: step size in pixel units; norm: "linf" (sign steps, the paper's) or
            "l2" (steps along the normalized gradient).
        smoothing: with a ``Smooth``, its :class:`~.target.SmoothedTarget` (None: the defaults, the paper's:
            128 noise samples per gradient, success tested with 10,000 samples at α = 0.05, sequentially).
        sinkhorn_iter, sinkhorn_tol: the projection's iteration limit and its stopping tolerance (relative
            mass error of the projected image; its transport cost must also be ≤ ε(1 + 1e-3)).
        projection: "box" (default: onto the intersection of the ball, the clean image's mass and pixels
            ≤ 1, Hu et al. 2020; mass kept to ``sinkhorn_tol``) or "clamp" (the published attack: project
            onto the ball, then clamp to [0, 1], which changes the mass).
    """

    def __init__(self, model_or_callable, p: float = 1, kernel_size: int = 5, reg: float = 1000,
                 eps0: float = 0.3, eps_factor: float = 1.1, eps_every: int = 10, max_iter: int = 200,
                 step: float = 0.1, norm: str = "linf", *, smoothing: SmoothedTarget | None = None,
                 sinkhorn_iter: int = 400, sinkhorn_tol: float = 1e-4, projection: str = "box"):
        self._init_target(model_or_callable, smoothing)
        self.p = _positive("p", p)
        self.cost = local_cost(kernel_size, self.p, dtype=torch.float64)  # validates kernel_size
        self.kernel_size = int(kernel_size)
        self.reg = _positive("reg", reg)
        self._init_schedule(eps0, eps_factor, eps_every, max_iter)
        self.step = _positive("step", step)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.norm = norm
        self.sinkhorn_iter = _positive("sinkhorn_iter", sinkhorn_iter, integer=True)
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        self.projection = projection
        self.sinkhorn_tol = float(sinkhorn_tol)
        if not 0 <= self.sinkhorn_tol < 1:
            raise ValueError(f"sinkhorn_tol must be in [0, 1), got {sinkhorn_tol!r}")

    # ------------------------------------------------------------------------------------------ pieces
    def _step(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return x + self.step * grad.sign()
        norms = grad.flatten(1).norm(dim=1).clamp_min(torch.finfo(grad.dtype).tiny)
        return x + self.step * grad / norms.view(-1, *([1] * (grad.dim() - 1)))

    def project(self, clean: torch.Tensor, candidate: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Entropic projection of ``candidate`` onto the ε-ball around ``clean`` (both pixels): with
        ``projection="box"`` intersected with pixels ≤ 1 (the clamp then only removes rounding), with
        ``"clamp"`` clamped to [0, 1] afterwards."""
        mass = clean.sum(dim=(1, 2, 3), keepdim=True)
        upper = 1.0 / mass if self.projection == "box" else None  # pixel ≤ 1 ⟺ Z ≤ 1/s
        z = projected_sinkhorn(clean / mass, candidate / mass, eps, self.reg,
                               self.cost.to(dtype=clean.dtype, device=clean.device),
                               max_iter=self.sinkhorn_iter, tol=self.sinkhorn_tol, upper=upper)
        return (z * mass).clamp(0.0, 1.0)

    # ------------------------------------------------------------------------------------------ iterate
    # The state is the adversarial image itself; StateAttack runs the growing-ε outer loop.
    def init_state(self, x: torch.Tensor) -> dict:
        return {"adv": x.clone()}

    def image(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        return state["adv"]

    def update(self, x: torch.Tensor, state: dict, grad: torch.Tensor, eps: torch.Tensor, since) -> dict:
        """One step from the current example, projected back onto the ε-ball around the clean image x."""
        return {"adv": self.project(x, self._step(state["adv"], grad), eps)}
