"""The smoothed target of an attack, declared once for every attack: :class:`SmoothedTarget`.

Attacking a smoothed classifier (``docs/attacks.md`` §Attacking smoothed classifiers) takes gradients of the soft
smoothed classifier over ``n_grad`` fresh noise samples and decides success by the hard smoothed prediction with
at most ``n_test`` samples at level ``alpha`` (abstaining = fooled), ``batch_size`` noisy images per forward pass.
``success_test`` picks how: "sequential" (default; ``Smooth.predict_batch_sequential``: looks after 1%, 3%, 10%,
30% and 100% of the samples, α split by Bonferroni, so a clear-cut image costs n_test/100 votes) or "fixed"
(``predict_batch``, all n_test votes every time: Cohen's ``predict`` as the paper ran it).

Every attack takes these as one argument, ``smoothing=SmoothedTarget(...)`` (:class:`.base.TargetAttack`), and
``wsmooth attack``, the experiments' ``Attack`` step and the attack logs read them from here: each field's
:class:`~wsmooth_ext.infra.options.Option` (:data:`OPTIONS`) is the shared quantity's (``infra/options.py``
``SHARED``: its range), or :data:`SUCCESS_TEST`'s choices.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

from ..infra.options import ALPHA, BATCH, N_GRAD, N_TEST, Option

__all__ = ["LOGGED", "OPTIONS", "SUCCESS_TEST", "SUCCESS_TESTS", "SmoothedTarget"]

SUCCESS_TESTS = ("sequential", "fixed")
SUCCESS_TEST = Option("success_test", "sequential", "sequential: stop counting votes at the first of the looks after "
                      "1%, 3%, 10%, 30%, 100% of --n-test that decides (level alpha overall; default); fixed: all "
                      "--n-test votes", choices=SUCCESS_TESTS)

# the Option of each field of SmoothedTarget (its range or choices, its default), in the fields' order
OPTIONS: dict[str, Option] = {
    "n_grad": N_GRAD,
    "n_test": N_TEST,
    "alpha": ALPHA.but(help="binomial-test level of the success test"),
    "success_test": SUCCESS_TEST,
    "batch_size": BATCH.but(default=1000, help="noisy images per forward pass of the success test"),
}
# the fields an attack log records (batch_size changes no result: every image's samples are fixed by its key)
LOGGED = ("n_grad", "n_test", "alpha", "success_test")


@dataclass(frozen=True)
class SmoothedTarget:
    """How an attack treats a smoothed target (the module docstring): ``n_grad`` noise samples per gradient,
    success tested with at most ``n_test`` samples at level ``alpha`` by the ``success_test`` ("sequential" or
    "fixed"), ``batch_size`` noisy images per forward pass of the test. Checked when made: each field against
    its :data:`OPTIONS` entry (an integer must be an int), ValueError naming the field otherwise."""

    n_grad: int = OPTIONS["n_grad"].default
    n_test: int = OPTIONS["n_test"].default
    alpha: float = OPTIONS["alpha"].default
    success_test: str = OPTIONS["success_test"].default
    batch_size: int = OPTIONS["batch_size"].default

    def __post_init__(self):
        for f in fields(self):
            option, value = OPTIONS[f.name], getattr(self, f.name)
            if option.integer and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ValueError(option.refusal(value, f.name))  # 5.0 is not a count
            object.__setattr__(self, f.name, option.check(value, f.name))

    def logged(self) -> dict:
        """The columns an attack log records of it (:data:`LOGGED`), with their values."""
        return {name: getattr(self, name) for name in LOGGED}
