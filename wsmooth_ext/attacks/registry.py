"""The attack registry, the way :data:`wsmooth_ext.core.noises.FAMILIES` holds the noise families and
:data:`wsmooth_ext.training.registry.METHODS` the training methods.

:data:`ATTACKS` maps each attack's name to its :class:`AttackSpec`: the class, the settings it takes, how it is
built from them, what its nominal ε bounds and a one-line help. :data:`SETTINGS` are the settings an attack can
take — each an :class:`~wsmooth_ext.infra.options.Option` of ``wsmooth attack`` with its default, its range
or choices, and its help. The smoothed target every attack takes is not a setting of its own: it is one
:class:`~.target.SmoothedTarget` (``smoothing=``). ``wsmooth attack``'s ``--method`` choices and options, the
settings its logs record (:func:`log_settings`: the ones the attack takes), the experiments' attack steps and
choices, the analysis' axis labels, and adversarial training against each attack (``wsmooth train
--adversarial``, :mod:`wsmooth_ext.training.adversarial`) all derive from here (read at call time, so an entry
added later counts; training's methods are made when the training registry is imported). Adding an attack is
its class and one entry in :data:`ATTACKS` (docs/architecture.md §How to add an attack;
``tests/attacks/test_attack_recipe.py`` follows it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..infra.options import EPS0, EPS_EVERY, EPS_FACTOR, MAX_ITER, Option
from ..infra.ranges import Range
from .dual_pgd import DualProjectionPGD
from .flow import FlowAttack
from .frank_wolfe import GROUNDS, FrankWolfeAttack
from .pgd import NORMS, PROJECTIONS, WassersteinPGD
from .target import SmoothedTarget

__all__ = ["ATTACKS", "AttackSpec", "DEFAULT", "SCHEDULE", "SETTINGS", "defaults", "get", "log_settings",
           "method_help", "owners", "setting"]

# The radius schedule of the outer loop: every attack takes these.
SCHEDULE = ("eps0", "eps_factor", "eps_every", "max_iter")


def _own(name, default, help, range=None, choices=None):
    return Option(name, default, help, range, choices)


# The settings an attack can take, each an Option of `wsmooth attack`, in the order of its --help (after
# --method and --eps); a number's range is stated in --help and checked.
SETTINGS: tuple[Option, ...] = (
    _own("ground", "l2", "frank-wolfe, pgd-dual: transport cost |offset|_2 (default) or |offset|_1", choices=GROUNDS),
    _own("gamma", 0.03, "frank-wolfe: entropy weight of the LMO, units of the normalized gradient", Range(1e-6, 1e3)),
    _own("flow_step", 0.05, "flow: gradient step as a fraction of eps", Range(0, 10, low_open=True)),
    _own("p", 1.0, "transport cost |offset|^p in pixels", Range(0, 10, low_open=True)).but(default_note=": W1"),
    _own("kernel_size", 5, "side k of the local transport window", Range(1, 63, integer=True, odd=True)),
    _own("reg", 1000.0, "entropic regularization lambda", Range(1e-3, 1e5)),
    EPS0.but(help="initial radius, mass-normalized units"),
    EPS_FACTOR.but(help="radius growth factor; --eps0 x factor ** (--max-iter // --eps-every) at most 1e30"),
    EPS_EVERY,
    MAX_ITER.but(help="PGD iterations"),
    _own("step", 0.1, "step size in pixel units (sinkhorn) or pixel-mass units per coupling entry (pgd-dual)",
         Range(0, 100, low_open=True)),
    _own("norm", "linf", "linf: sign steps (default); l2: normalized gradient", choices=NORMS),
    _own("projection", "box", "sinkhorn: box (default) projects onto the intersection of the ball, the clean "
         "image's mass and pixels <= 1 (Hu et al. 2020), so examples keep their mass; clamp is the published "
         "attack (Wong et al. 2019): project onto the ball, then clamp to [0, 1], changing the mass",
         choices=PROJECTIONS),
    _own("sinkhorn_iter", 400, "projection iterations at most", Range(1, 10 ** 5, integer=True)),
    _own("sinkhorn_tol", 1e-4, "projection stops once |mass(Z)/mass(X) - 1| <= this and its transport cost "
         "<= eps*(1+1e-3)", Range(0, 1, low_open=True, high_open=True)),
)


def setting(name: str) -> Option:
    """The setting called ``name`` (KeyError otherwise)."""
    for s in SETTINGS:
        if s.name == name:
            return s
    raise KeyError(name)


def defaults() -> dict:
    """Every setting at its default: ``wsmooth attack`` without options."""
    return {s.name: s.default for s in SETTINGS}


@dataclass(frozen=True)
class AttackSpec:
    """One attack.

    ``name``: the value of ``--method``. ``cls``: its class, a :class:`~.base.StateAttack` (or anything with
    ``attack(x, y, keys)`` → :class:`~.base.AttackResult`) whose constructor takes the target, the radius as
    keyword ``radius``, ``eps_factor``, ``eps_every``, ``max_iter``, ``smoothing`` (the smoothed target's
    :class:`~.target.SmoothedTarget`, None for a plain classifier) and its own ``settings`` (names of
    :data:`SETTINGS`; ``keywords`` renames those its constructor calls otherwise). ``nominal``: what its
    nominal ε (the logged ``radius``) measures, in words: the axis label of the analysis, and the units of
    ``--adv-eps`` when training against it. ``help``: what ``--method``'s help says after its name ("" where the
    name says it). ``min_size``: the fewest pixels its images may have each way.

    Adversarial training against it (``wsmooth train --adversarial NAME``) runs its settings at their
    defaults, except ``training``: constructor keywords it takes instead of, or besides, those; the defaults and
    ``training`` are recorded in the checkpoint (``adv_attack_params``, constructor keywords), but for the
    names in ``unrecorded``, given and not recorded (what checkpoints trained before the setting existed lack).
    """

    name: str
    cls: type
    settings: tuple[str, ...]
    nominal: str
    help: str
    radius: str = "eps"
    keywords: dict = field(default_factory=dict)
    min_size: int = 1
    training: dict = field(default_factory=dict)
    unrecorded: tuple[str, ...] = ()

    def takes(self, name: str) -> bool:
        """Whether the attack uses setting ``name`` (its own, or one every attack takes)."""
        return name in self.settings or name in SCHEDULE

    def build(self, target, values: dict, *, eps: float | None = None, smoothing: SmoothedTarget | None = None):
        """The attack on ``target`` (a classifier or a ``Smooth``) with ``values`` ({setting: value}, every
        setting it takes; others are ignored): a radius growing from ``eps0``, or fixed at ``eps`` when given
        (factor 1). ``smoothing``: the smoothed target's settings (a ``Smooth`` only; None: the defaults)."""
        radius, factor = (values["eps0"], values["eps_factor"]) if eps is None else (eps, 1.0)
        own = {self.keywords.get(name, name): values[name] for name in self.settings}
        return self.cls(target, **{self.radius: radius}, eps_factor=factor, eps_every=values["eps_every"],
                        max_iter=values["max_iter"], smoothing=smoothing, **own)


DEFAULT = "sinkhorn"  # the paper's attack

ATTACKS: dict[str, AttackSpec] = {a.name: a for a in (
    # training keeps the published projection (clamp to [0, 1] after projecting), which it used before the
    # attack's default became the mass-keeping "box" and before checkpoints recorded a projection
    AttackSpec("sinkhorn", WassersteinPGD,
               ("p", "kernel_size", "reg", "step", "norm", "projection", "sinkhorn_iter", "sinkhorn_tol"),
               "radius of the entropic ball (cost |offset|_2)", "projected-Sinkhorn PGD", radius="eps0",
               training={"projection": "clamp"}, unrecorded=("projection",)),
    AttackSpec("frank-wolfe", FrankWolfeAttack, ("kernel_size", "ground", "gamma"), "W1 bound, L2 ground", "",
               training={"capacity_rounds": 10}),
    AttackSpec("pgd-dual", DualProjectionPGD, ("step", "kernel_size", "ground"), "W1 bound, L2 ground",
               "PGD with dual projection on couplings"),
    AttackSpec("flow", FlowAttack, ("flow_step",), "L1 norm of the flow plan (≥ W1, L1 ground)", "PGD over flows",
               keywords={"flow_step": "step"}, min_size=2),
)}


def get(name) -> AttackSpec:
    """The attack called ``name``, or ValueError listing the valid names."""
    spec = ATTACKS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"attack method must be one of {list(ATTACKS)}, got {name!r}")
    return spec


def method_help() -> str:
    """The help of ``--method``: every attack with its help, the default marked."""
    return "; ".join(name + (f": {spec.help}" if spec.help else "") + (" (default)" if name == DEFAULT else "")
                     for name, spec in ATTACKS.items())


def owners(name: str) -> list[str]:
    """The attacks that take setting ``name``, in registry order."""
    return [spec.name for spec in ATTACKS.values() if spec.takes(name)]


def log_settings(name: str, values: dict, eps: float | None, smoothing: SmoothedTarget | None = None) -> dict:
    """The attack's settings columns of a log, in order: the smoothed target's (:meth:`SmoothedTarget.logged`,
    only with ``smoothing``: a smoothed target), ``method``, the fixed radius ``eps`` (None: grown from eps0),
    the schedule (:data:`SCHEDULE`) and the attack's own settings, in :data:`SETTINGS` order; none other.
    ``values``: {setting: value as recorded}."""
    spec = get(name)
    target = smoothing.logged() if smoothing is not None else {}
    own = {s.name: values[s.name] for s in SETTINGS if s.name in spec.settings and s.name not in SCHEDULE}
    return {**target, "method": name, "eps": eps, **{n: values[n] for n in SCHEDULE}, **own}
