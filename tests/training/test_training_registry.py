"""The training package: a method is its module plus one registry line (shown by registering one
here, without touching any other file), checkpoints written before the package train alike (and, predating the
learning-rate schedules, are refused by --resume), and the loop stays generic and small."""

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import wsmooth_ext.training as training
from wsmooth_ext.inputs.checkpoint import load_checkpoint, load_training_state, save_checkpoint
from wsmooth_ext.cli import main
from wsmooth_ext.core.noises import add_noise
from wsmooth_ext.training.keywords import derive_seed, train
from wsmooth_ext.training import registry
from wsmooth_ext.training.method import Batch, TrainingMethod
from wsmooth_ext.training.params import hyper

from conftest import wong_digits_model as _model

pytestmark = [pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning"),
              pytest.mark.usefixtures("one_thread")]
QUIET = dict(progress=False, log=lambda line: None)
DATA = Path(__file__).resolve().parents[1] / "data"
PACKAGE = Path(training.__file__).parent


# ---------------------------------------------------------------------------------- a new method: its module
@dataclass(frozen=True)
class SmoothingParams:
    smoothing: float = hyper(0.1, "weight of the uniform distribution in the label", low=0, high=1, high_open=True,
                             metavar="S")


def _smoothing_losses(params: SmoothingParams, batch: Batch):
    logits = batch.net(batch.noisy(batch.x))
    return logits, F.cross_entropy(logits, batch.y, reduction="none", label_smoothing=params.smoothing)


LABEL_SMOOTHING = TrainingMethod("label-smoothing", "method", SmoothingParams, _smoothing_losses,
                                 "cross-entropy with smoothed labels on one noisy copy", needs_noise=True)


@pytest.fixture
def label_smoothing(monkeypatch):
    monkeypatch.setitem(registry.METHODS, "label-smoothing", LABEL_SMOOTHING)  # ... and its one registry line


def test_a_registered_method_trains_through_the_loop(label_smoothing, digits, tmp_path):
    """train() with the new method equals a hand-written loop of label-smoothed cross-entropy on the same
    noise draws and batches; its setting is recorded and fixed for --resume."""
    (x, y), _ = digits
    x, y = x[:64], y[:64]
    seed, sigma, bs = 5, 0.05, 16
    path = tmp_path / "m.pt"
    trained = _model()
    train(trained, x, y, noise="flow-laplace", sigma=sigma, epochs=2, lr=0.05, batch_size=bs, seed=seed,
          method="label-smoothing", smoothing=0.2, checkpoint_path=path, **QUIET)
    manual = _model()
    opt = torch.optim.SGD(manual.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for epoch in range(2):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(derive_seed(seed, 3, epoch)))
        for start in range(0, 64, bs):
            idx = order[start:start + bs]
            xn = add_noise(x[idx], "flow-laplace", sigma, seed=derive_seed(seed, 1), keys=idx, sample_offset=epoch)
            loss = F.cross_entropy(manual(xn), y[idx], label_smoothing=0.2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for a, b in zip(trained.state_dict().values(), manual.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    args = load_training_state(path)[1]["train_args"]
    assert (args["method"], args["smoothing"], args["adversarial"], args["num_noise"]) == (
        "label-smoothing", 0.2, "none", None)
    with pytest.raises(ValueError, match="smoothing was 0.2 there, now 0.3"):
        train(_model(), x, y, noise="flow-laplace", sigma=sigma, epochs=3, lr=0.05, batch_size=bs, seed=seed,
              method="label-smoothing", smoothing=0.3, checkpoint_path=path, resume=True, **QUIET)
    with pytest.raises(ValueError, match=r"smoothing must be a number in \[0, 1\)"):
        train(_model(), x, y, noise="flow-laplace", sigma=sigma, epochs=1, method="label-smoothing", smoothing=1.0,
              **QUIET)
    with pytest.raises(ValueError, match=r"method noise does not use \['smoothing'\]"):
        train(_model(), x, y, noise="flow-laplace", sigma=sigma, epochs=1, smoothing=0.1, **QUIET)
    with pytest.raises(ValueError, match="method label-smoothing needs a smoothing noise"):
        train(_model(), x, y, noise="none", sigma=0, epochs=1, method="label-smoothing", **QUIET)


def test_a_registered_method_gets_its_cli_options(label_smoothing, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--method {noise,consistency,smoothadv,macer,label-smoothing}" in text
    assert "label-smoothing (cross-entropy with smoothed labels on one noisy copy)" in text
    assert ("--smoothing S label-smoothing: weight of the uniform distribution in the label, unitless "
            "(default 0.1)") in text
    out = tmp_path / "c.pt"
    args = ["train", "--dataset", "digits", "--train-size", "32", "--batch", "16", "--epochs", "1", "--no-progress",
            "--method", "label-smoothing", "--out", str(out)]
    assert main(args + ["--smoothing", "0.25"]) == 0
    assert load_training_state(out)[1]["train_args"]["smoothing"] == 0.25
    fresh = [str(tmp_path / "d.pt") if a == str(out) else a for a in args]
    for extra, message in [(["--smoothing", "1.5"], "--smoothing must be a number in [0, 1) (unitless) for method "
                            "label-smoothing, got 1.5"),
                           (["--num-noise", "2"], "method label-smoothing does not use ['num_noise']: --num-noise "
                            "belongs to --method consistency or --method macer or --method noise or --method smoothadv"),
                           (["--noise", "none"], "method label-smoothing needs a smoothing noise")]:
        assert main(fresh + extra) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    plain = [a for a in fresh if a not in ("--method", "label-smoothing")]
    assert main(plain + ["--smoothing", "0.2"]) == 2
    assert "--smoothing belongs to --method label-smoothing" in capsys.readouterr().err
    assert not (tmp_path / "d.pt").exists()


def test_registry_without_the_new_method_is_as_before():
    assert "label-smoothing" not in registry.METHODS  # the fixture's registration was undone
    assert registry.names("method") == ("noise", "consistency", "smoothadv", "macer")
    assert registry.names("adversarial") == ("none", "sinkhorn", "frank-wolfe", "pgd-dual", "flow")


# ---------------------------------------------------------------------------------- old checkpoints
# Written by `wsmooth train` of commit cfda37a (before wsmooth_ext/training existed), 1 of 2 epochs, with
#   wsmooth train --dataset digits --arch wong_mnist --train-size 48 --batch 16 --optimizer sgd --momentum 0
#                 --lr 0.05 --epochs 1 --no-progress  + the options below
OLD = {"noise": ["--noise", "flow-laplace", "--sigma", "0.05"],
       "consistency": ["--noise", "flow-laplace", "--sigma", "0.05", "--method", "consistency",
                       "--consistency-lambda", "2"],
       "adversarial_flow": ["--adversarial", "flow", "--adv-attack-steps", "2", "--adv-eps-warmup", "2"]}
OLD_BASE = ["train", "--dataset", "digits", "--arch", "wong_mnist", "--train-size", "48", "--batch", "16",
            "--optimizer", "sgd", "--momentum", "0", "--lr", "0.05", "--no-progress"]


@pytest.mark.parametrize("name", sorted(OLD))
def test_checkpoints_written_before_the_schedules_are_refused_and_train_alike(name, tmp_path, capsys):
    """They predate the learning-rate schedules: --resume refuses them in one line naming the missing
    key and leaves them as they were; a fresh run of today's code with their settings trains their first epoch
    as the code that wrote them did, and records the same train_args plus the schedule's defaults."""
    from wsmooth_ext.training import options, schedules

    path = tmp_path / "old.pt"
    shutil.copy(DATA / f"{name}.pt", path)
    old_state, old_meta, _ = load_training_state(path)
    assert main(OLD_BASE + OLD[name] + ["--epochs", "2", "--resume", "--out", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "it records no lr_schedule (it was written before learning-rate schedules" in err[0], err
    assert path.read_bytes() == (DATA / f"{name}.pt").read_bytes()
    fresh = tmp_path / "fresh.pt"
    assert main(OLD_BASE + OLD[name] + ["--epochs", "1", "--out", str(fresh)]) == 0
    state, meta, _ = load_training_state(fresh)
    # the same train_args, key for key, with the schedule's keys (at their defaults) after augment
    old_args = list(old_meta["train_args"].items())
    after = [k for k, _ in old_args].index("augment") + 1
    defaults = [(o.name, o.default) for o in options.SCHEDULE]
    assert list(meta["train_args"].items()) == old_args[:after] + defaults + old_args[after:]
    assert tuple(k for k, _ in defaults) == schedules.KEYS
    # bit for bit on the CPU that wrote the file; the tolerance allows another CPU's float rounding
    for key in old_state:
        torch.testing.assert_close(state[key], old_state[key], rtol=1e-4, atol=1e-5, msg=key)


def test_old_checkpoint_lacking_a_setting_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "old.pt"
    model = load_checkpoint(DATA / "noise.pt")[0]
    _, meta, training_state = load_training_state(DATA / "noise.pt")
    from wsmooth_ext.training import options

    # as written today (the schedule's settings at their defaults), but for the one setting removed
    meta["train_args"].update({o.name: o.default for o in options.SCHEDULE})
    del meta["train_args"]["num_noise"]
    save_checkpoint(path, model, meta, training_state=training_state)
    assert main(OLD_BASE + OLD["noise"] + ["--epochs", "2", "--resume", "--out", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its train_args lack 'num_noise', a setting a resumed run must keep" in err, err


# ---------------------------------------------------------------------------------- the shape of the package
def _functions(path: Path):
    tree = ast.parse(path.read_text())
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_loop_names_no_method_and_functions_stay_small():
    source = (PACKAGE / "loop.py").read_text()
    for name in list(registry.METHODS) + ["adversarial", "adv_", "num_noise"]:
        assert f'"{name}' not in source and f"'{name}" not in source, name
    lengths = {f"{p.name}:{name}": n for p in PACKAGE.glob("*.py") for name, n in _functions(p)}
    assert lengths["loop.py:train_loop"] <= 80
    assert max(n for key, n in lengths.items() if key != "loop.py:train_loop") <= 60, lengths
