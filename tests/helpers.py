"""Plain helpers the test modules share (fixtures live in conftest.py): a small checkpoint on the 8x8 digits, the
one-line error a refused command must print, and fast attack options. Import them: ``from helpers import ...``."""

from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent  # the repository
DATA = TESTS / "data"  # checkpoints written by earlier code, kept to test what reads them

ATTACK_FAST = ["--max-iter", "4", "--eps0", "0.05", "--eps-factor", "1.5", "--eps-every", "2", "--sinkhorn-iter", "30",
               "--no-progress"]


def checkpoint(path, seed=0, poison=None):
    """A freshly initialized wong_mnist for the digits, saved at ``path`` (flow-laplace, σ 0.05); ``poison``: the
    value of one weight (NaN, inf)."""
    from wsmooth_ext.inputs.checkpoint import save_checkpoint
    from wsmooth_ext.inputs.models import build_model

    model = build_model("wong_mnist", input_shape=(1, 8, 8), num_classes=10, seed=seed)
    if poison is not None:
        with torch.no_grad():
            model.net[0].weight[0, 0, 0, 0] = poison
    save_checkpoint(path, model, {"arch": "wong_mnist", "dataset": "digits", "noise": "flow-laplace", "sigma": 0.05})
    return str(path)


def error_line(capsys):
    """The one line a refused command printed on stderr (no traceback, no warning)."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "Warning" not in err, err
    return err
