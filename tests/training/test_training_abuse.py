"""Training under abuse: absurd hyper-parameters refused before training with
their stated ranges, a diverging loss stopped at once without overwriting a good checkpoint, resuming with
another dataset or fewer epochs refused, clean training that says nothing about noise, and a closed stdout."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from wsmooth_ext.inputs.checkpoint import load_training_state
from wsmooth_ext.cli import main
from wsmooth_ext.training.keywords import train

from conftest import wong_digits_model as _model

pytestmark = [pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning"),
              pytest.mark.usefixtures("one_thread")]
QUIET = dict(progress=False, log=lambda line: None)
BASE = ["train", "--dataset", "digits", "--train-size", "32", "--batch", "16", "--no-progress"]


@pytest.mark.parametrize("option,value,selector", [
    ("--adv-eps", "1e308", ["--adversarial", "flow"]), ("--adv-eps", "1e-300", ["--adversarial", "sinkhorn"]),
    ("--adv-epsilon", "1e308", ["--method", "smoothadv"]),
    ("--consistency-lambda", "1e308", ["--method", "consistency"]),
    ("--macer-beta", "1e308", ["--method", "macer"]), ("--macer-gamma", "1e-300", ["--method", "macer"])])
def test_absurd_method_settings_are_refused_before_training(option, value, selector, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(BASE + selector + [option, value, "--epochs", "1", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"wsmooth train: error: {option} must be ") and "training" not in captured.out
    assert len(captured.err.strip().splitlines()) == 1 and not out.exists()


def test_method_settings_state_their_ranges_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--adv-eps EPS --adversarial: final radius", "(default 0.1); a number in [1e-06, 100]",
                   "(default 0.02); a number in [0, 100]", "(default 3); a number in [0, 1000]",
                   "(default 16); a number in [0.001, 10000]", "(default 0.03); a number in [1e-06, 100]",
                   "(default 10); an integer in [1, 1000000]"):
        assert needle in text, needle


class _Diverging(nn.Module):
    """A digits classifier whose logits become infinite from its ``after``-th training forward pass on: a loss
    that diverges in the middle of a run."""

    def __init__(self, after: int):
        super().__init__()
        self.inner, self.after, self.calls = _model(), after, 0
        self.arch = self.inner.arch

    def forward(self, x):
        self.calls += self.training
        out = self.inner(x)
        return out * float("inf") if self.training and self.calls > self.after else out


def test_non_finite_loss_stops_training_and_keeps_the_good_checkpoint(digits, tmp_path):
    (x, y), _ = digits
    x, y = x[:32], y[:32]
    path = tmp_path / "m.pt"
    model = _Diverging(after=3)  # two batches per epoch: epoch 1 is good, epoch 2 diverges at its 2nd batch
    kwargs = dict(noise="flow-laplace", sigma=0.05, lr=0.05, batch_size=16, checkpoint_path=path, **QUIET)
    with pytest.raises(ValueError, match=r"the training loss is nan in epoch 2 \(batch 2 of 2\)"):
        train(model, x, y, epochs=3, **kwargs)
    state, _, training = load_training_state(path)
    assert training["epoch"] == 1 and all(bool(torch.isfinite(v).all()) for v in state.values())
    # the diverging step changed nothing: the weights are those after epoch 2's first batch, all finite
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_cli_refuses_a_diverging_run_in_one_line(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(BASE + ["--noise", "none", "--optimizer", "sgd", "--lr", "1e30", "--epochs", "2",
                        "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the training loss is " in err and "try a lower learning rate" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # the first epoch never finished: nothing to keep


def test_resume_with_another_dataset_is_refused(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(BASE + ["--noise", "none", "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    args = [a if a != "digits" else "mnist5k" for a in BASE] + ["--noise", "none", "--epochs", "2", "--resume"]
    assert main(args + ["--out", str(out)]) == 2
    assert "dataset was 'digits' there, now 'mnist5k'" in capsys.readouterr().err
    assert load_training_state(out)[2]["epoch"] == 1


def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(BASE + ["--noise", "none", "--epochs", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(BASE + ["--noise", "none", "--epochs", "1", "--resume", "--out", str(out)]) == 2
    assert "has done 2 epochs, more than the 1 asked for" in capsys.readouterr().err
    assert main(BASE + ["--noise", "none", "--epochs", "2", "--resume", "--out", str(out)]) == 0  # done: fine


def test_clean_training_says_nothing_about_noise_and_checks_sigma(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(BASE + ["--noise", "none", "--epochs", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "with no noise," in text and "sigma" not in text and "under noise" not in text, text
    assert main(BASE + ["--noise", "none", "--sigma", "-5", "--epochs", "1", "--out", str(tmp_path / "b.pt")]) == 2
    assert "--sigma must be a number in (0, " in capsys.readouterr().err


def test_closed_stdout_ends_quietly(tmp_path):
    """`wsmooth train ... | head -1`: the reader goes away after one line; no traceback, no 'Broken pipe'."""
    cmd = [sys.executable, "-m", "wsmooth_ext.cli"] + BASE + ["--noise", "none", "--epochs", "50",
                                                             "--out", str(tmp_path / "m.pt")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and first.startswith(b"training ")
    assert err == "", err
