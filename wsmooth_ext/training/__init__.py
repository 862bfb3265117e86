"""Training: one loop (:mod:`.loop`) and pluggable methods (:mod:`.registry`), one small module per method.

* methods selected by ``train(method=...)`` / ``--method``: :mod:`.noise` (the paper's), :mod:`.consistency`,
  :mod:`.smoothadv`, :mod:`.macer` — docs/math.md §Certified training;
* adversarial training of base models, ``train(adversarial=...)`` / ``--adversarial``: one method per attack of
  the attack registry, made by :mod:`.adversarial` from its entry — docs/attacks.md §Adversarial training.

A method is a :class:`~.method.TrainingMethod`: its name, the option that selects it, a hyper-parameter
dataclass (:func:`~.params.hyper` fields: default, range, units, help) and one function batch → (logits,
loss per example). Adding one is its module and one line in :data:`.registry.METHODS`.
"""

from .config import OPTIMIZERS, TrainConfig
from .evaluation import evaluate
from .loop import train_loop
from .method import Batch, TrainingMethod
from .params import hyper
from .registry import METHODS, OPTIONS, choose, describe_training
from .keywords import train  # noqa: E402  the keyword interface (README), after what it builds on

__all__ = ["Batch", "METHODS", "OPTIMIZERS", "OPTIONS", "TrainConfig", "TrainingMethod", "choose",
           "describe_training", "evaluate", "hyper", "train", "train_loop"]
