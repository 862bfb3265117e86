"""Wasserstein adversarial attacks on plain and smoothed classifiers.

:mod:`.sinkhorn` projects onto the entropic Wasserstein ball (projected Sinkhorn); :mod:`.pgd` is the
projected-Sinkhorn PGD attack with a growing ball (Wong, Schmidt & Kolter 2019) used in the paper's §6.2;
:mod:`.frank_wolfe` optimizes local couplings by Frank–Wolfe and :mod:`.dual_pgd` by PGD with a dual projection (both after Wu, Wang & Yu 2020); :mod:`.flow` is PGD over local flows with ‖δ‖₁ ≤ ε (Lemma 1's geometry); :mod:`.base` holds
the target (plain or smoothed) and the outer loop they share.
:mod:`.target` declares the smoothed target every attack takes (``smoothing=SmoothedTarget(...)``).
:mod:`.registry` names them all (``ATTACKS``) with the settings each takes: what the commands, experiments and
analyses read.
"""

from .base import AttackResult
from .dual_pgd import DualProjectionPGD
from .flow import FlowAttack
from .frank_wolfe import FrankWolfeAttack
from .pgd import NORMS, PROJECTIONS, WassersteinPGD
from .sinkhorn import local_cost, log_local_operator, projected_sinkhorn, wright_omega
from .target import SmoothedTarget

__all__ = ["WassersteinPGD", "FrankWolfeAttack", "DualProjectionPGD", "FlowAttack", "AttackResult", "SmoothedTarget",
           "NORMS", "PROJECTIONS", "projected_sinkhorn", "local_cost", "wright_omega", "log_local_operator"]
