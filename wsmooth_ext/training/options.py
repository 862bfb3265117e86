"""The options of a training run besides its method, declared once: ``wsmooth train`` adds them to its parser,
the experiments that train take them as settings (with their own defaults), and
:func:`wsmooth_ext.training.train` checks its keywords with them. A method's hyper-parameters are declared in
its dataclass (``training/params.py``), the training noise in ``core/noises.py``.

``TRAIN_OPTIONS`` lists them in the order ``wsmooth train --help`` shows them; :data:`KEYWORDS` maps an option
to the keyword of :func:`~wsmooth_ext.training.train` (and the key of the checkpoint's ``train_args``) where
the two differ (``--batch`` is ``batch_size``). :data:`SCHEDULE`: the learning-rate schedule and the sigma
warm-up (their formulas: ``training/schedules.py``).
"""

from __future__ import annotations

from ..infra import options as _shared
from ..infra.options import FREE, NON_NEGATIVE, POSITIVE, Option, integers, numbers
from .schedules import SCHEDULES

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

# the learning-rate schedule and the sigma warm-up (formulas: training/schedules.py)
LR_SCHEDULE = Option("lr_schedule", "constant", "learning-rate schedule: constant; step (x --lr-gamma every "
                     "--lr-step epochs); cosine (from --lr to 0 over the run, per batch); one-cycle (linear from "
                     "lr/--lr-div to --lr over --lr-warmup epochs, then cosine to 0, per batch)", choices=SCHEDULES,
                     default_note=": --lr throughout")
LR_WARMUP = Option("lr_warmup", 0.0, "epochs of linear learning-rate warm-up from lr/--lr-div, per batch (fractions "
                   "allowed; one-cycle's rising part)", NON_NEGATIVE, units="epochs", metavar="EPOCHS",
                   default_note="; 0: none")
LR_DIV = Option("lr_div", 25.0, "the warm-up starts at lr/--lr-div", numbers(1, 1e6), metavar="D",
                default_note=", torch's OneCycleLR's")
LR_STEP = Option("lr_step", 30, "step schedule: epochs between two decays", integers(1, 10 ** 6), metavar="EPOCHS")
LR_GAMMA = Option("lr_gamma", 0.1, "step schedule: factor of each decay", numbers(0, 1, low_open=True),
                  metavar="GAMMA")
SIGMA_WARMUP = Option("sigma_warmup", 0, "epochs over which the training noise's sigma rises linearly from "
                      "--sigma-warmup-start x --sigma to --sigma (same noise draws, scaled)", integers(0, 10 ** 6),
                      metavar="K", default_note="; 0: --sigma from the first epoch")
SIGMA_WARMUP_START = Option("sigma_warmup_start", 0.1, "sigma of the warm-up's first epoch, as a fraction of --sigma",
                            numbers(0, 1, low_open=True), note="the noise ops need sigma > 0", metavar="S")
SCHEDULE = (LR_SCHEDULE, LR_WARMUP, LR_DIV, LR_STEP, LR_GAMMA, SIGMA_WARMUP, SIGMA_WARMUP_START)

# option name -> keyword of train() and key of train_args, where they differ
KEYWORDS = {"batch": "batch_size"}


def keyword(option: Option) -> str:
    """The keyword of :func:`~wsmooth_ext.training.train` that ``option`` sets."""
    return KEYWORDS.get(option.name, option.name)
