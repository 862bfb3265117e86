"""The options of a training run besides its method, declared once: ``wsmooth train`` adds them to its parser,
the experiments that train take them as settings (with their own defaults), and
:func:`wsmooth_ext.training.train` checks its keywords with them. A method's hyper-parameters are declared in
its dataclass (``training/params.py``), the training noise in ``core/noises.py``.

``TRAIN_OPTIONS`` lists them in the order ``wsmooth train --help`` shows them; :data:`KEYWORDS` maps an option
to the keyword of :func:`~wsmooth_ext.training.train` (and the key of the checkpoint's ``train_args``) where
the two differ (``--batch`` is ``batch_size``).
"""

from __future__ import annotations

from ..infra import options as _shared
from ..infra.options import FREE, NON_NEGATIVE, POSITIVE, Option, integers

OPTIMIZERS = ("sgd", "adam")

EPOCHS = Option("epochs", 200, "number of epochs", integers(1), default_note=", the paper's", resume=FREE)
LR = Option("lr", 0.001, "learning rate", POSITIVE)
BATCH = Option("batch", 128, "batch size in images", integers(1))
MOMENTUM = Option("momentum", 0.9, "SGD momentum", NON_NEGATIVE)
WEIGHT_DECAY = Option("weight_decay", 5e-4, "weight decay", NON_NEGATIVE)
OPTIMIZER = Option("optimizer", "sgd", "optimizer", choices=OPTIMIZERS)
SEED = _shared.SEED.but(help="seed of weights, batch order and noise")
TRAIN_SIZE = Option("train_size", None, "train on the first N training images only (quick runs)", integers(1),
                    optional=True, metavar="N", none="all")

# option name -> keyword of train() and key of train_args, where they differ
KEYWORDS = {"batch": "batch_size"}


def keyword(option: Option) -> str:
    """The keyword of :func:`~wsmooth_ext.training.train` that ``option`` sets."""
    return KEYWORDS.get(option.name, option.name)
