"""`train` under torchrun: 2 CPU processes (gloo, DistributedDataParallel) train the same weights as one
process with the same global batch, write one checkpoint, and resume to the uninterrupted result."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wsmooth_ext.inputs.checkpoint import load_training_state
from wsmooth_ext.cli import main
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.infra.distributed import DistContext
from wsmooth_ext.inputs.models import build_model
from wsmooth_ext.training.keywords import train

pytestmark = pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning")

# 255 images in global batches of 63: four batches split 32/31 between the ranks and a last one of 3 split
# 2/1, so unequal slices are weighted right or the weights drift apart; Adam with a large lr moves the
# weights far from their start, and augmentation checks that its draws follow the example, not the rank
ARGS = ["train", "--dataset", "digits", "--arch", "wong_mnist", "--train-size", "255", "--batch", "63",
        "--optimizer", "adam", "--lr", "0.01", "--noise", "flow-laplace", "--sigma", "0.05", "--augment",
        "--no-progress"]
N_TRAIN, N_TEST = 255, 355


# gloo's teardown at interpreter exit, after all the work is done and rank 0 has printed "final:", aborts a
# rank now and then on this torch (about 1 launch in 80 here, with the barrier before leaving the group);
# such a launch, and only such a launch, is run once more (a rerun without --resume starts afresh; one with
# --resume finds the finished checkpoint, which the test then checks as before)
_TEARDOWN_ABORT = "terminate called without an active exception"


def _torchrun(args, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "wsmooth_ext.cli", "--"] + args  # "--": torchrun would take --out/--epochs as its own
    for attempt in range(2):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if result.returncode == 0 or attempt or not (_TEARDOWN_ABORT in result.stderr
                                                     and "final:" in result.stdout):
            break
        if "--resume" not in args:  # starting afresh: the aborted launch's checkpoint would be refused
            Path(args[args.index("--out") + 1]).unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One single-process run and one 2-process run of the same 2-epoch command, shared by the tests."""
    single_dir, ddp_dir = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("ddp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process runs; faster on this 2-core machine
    try:
        assert main(ARGS + ["--epochs", "2", "--out", str(single_dir / "m.pt")]) == 0
    finally:
        torch.set_num_threads(threads)
    result = _torchrun(ARGS + ["--epochs", "2", "--out", str(ddp_dir / "m.pt")])
    return single_dir / "m.pt", ddp_dir / "m.pt", result


def _strip(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_two_processes_train_the_single_process_weights(runs):
    single_path, ddp_path, result = runs
    single_state, single_meta, single_train = load_training_state(single_path)
    ddp_state, ddp_meta, ddp_train = load_training_state(ddp_path)
    assert single_state.keys() == ddp_state.keys()
    moved = 0.0
    for key in single_state:
        # equal up to float summation order: the same examples, noise, augmentation and averaged gradient
        torch.testing.assert_close(ddp_state[key], single_state[key], rtol=1e-5, atol=1e-5, msg=key)
        moved = max(moved, float((single_state[key] - _initial_state()[key]).abs().max()))
    assert moved > 0.01  # the comparison is not between two barely trained copies of the initial weights
    for a, b in zip(ddp_train["optimizer"]["state"].values(), single_train["optimizer"]["state"].values()):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=1e-4, atol=1e-6)
    # per-epoch figures: summed over the ranks (train) and over the test-set shards (evaluation); an
    # accuracy may differ by one image where float rounding flips a near-tie
    for d, s in zip(ddp_train["history"], single_train["history"]):
        assert d["epoch"] == s["epoch"] and d["loss"] == pytest.approx(s["loss"], rel=1e-5)
        assert abs(d["train_noisy_acc"] - s["train_noisy_acc"]) <= 1.01 / N_TRAIN
        for key in ("test_clean_acc", "test_noisy_acc"):
            assert abs(d[key] - s[key]) <= 1.01 / N_TEST
    assert ddp_meta["train_args"]["world_size"] == 2 and single_meta["train_args"]["world_size"] == 1
    assert {k: v for k, v in ddp_meta["train_args"].items() if k != "world_size"} == \
        {k: v for k, v in single_meta["train_args"].items() if k != "world_size"}


def test_rank_zero_alone_prints_and_writes(runs):
    _, ddp_path, result = runs
    # one checkpoint, written once (no per-rank copies, no leftover temporary file)
    assert sorted(p.name for p in ddp_path.parent.iterdir()) == ["m.pt"]
    assert load_training_state(ddp_path)[2]["epoch"] == 2
    out = result.stdout
    assert out.count("training wong_mnist on digits") == 1 and "x 2 processes" in out
    assert out.count("epoch   1/2") == 1 and out.count("epoch   2/2") == 1 and out.count("final:") == 1


def test_interrupted_two_process_run_resumes_to_the_uninterrupted_one(runs, tmp_path):
    _, ddp_path, _ = runs
    path = tmp_path / "part.pt"
    _torchrun(ARGS + ["--epochs", "1", "--out", str(path)])  # "interrupted" after epoch 1
    assert load_training_state(path)[2]["epoch"] == 1
    resumed = _torchrun(ARGS + ["--epochs", "2", "--out", str(path), "--resume"])
    assert resumed.stdout.count("resuming from") == 1 and "epoch   1/2" not in resumed.stdout
    full_state, _, full_train = load_training_state(ddp_path)
    state, meta, training = load_training_state(path)
    # same world size, same reduction order: bit for bit
    for key in full_state:
        torch.testing.assert_close(state[key], full_state[key], rtol=0, atol=0, msg=key)
    assert _strip(training["history"]) == _strip(full_train["history"])
    assert meta["train_args"]["world_size"] == 2 and training["epoch"] == 2


def test_batch_smaller_than_world_is_refused(monkeypatch, capsys, tmp_path):
    (x, y) = load_dataset("digits", "train")
    with pytest.raises(ValueError, match="batch_size 1 is smaller than the number of processes 2"):
        train(_initial_model(), x[:8], y[:8], noise="none", sigma=0, epochs=1, batch_size=1, progress=False,
              dist_ctx=DistContext(0, 2))
    with pytest.raises(ValueError, match="dist_ctx must be a wsmooth_ext.infra.distributed.DistContext"):
        train(_initial_model(), x[:8], y[:8], noise="none", sigma=0, epochs=1, progress=False, dist_ctx=2)
    # the command refuses before joining any process group (torchrun's environment, rank 0 of 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(ARGS + ["--epochs", "1", "--batch", "1", "--out", str(tmp_path / "unused.pt")]) == 2
    assert "--batch 1 is smaller than the number of processes (2)" in capsys.readouterr().err
    assert not (tmp_path / "unused.pt").exists()


def _initial_model():
    from wsmooth_ext.inputs.data import DATASETS
    info = DATASETS["digits"]
    # as `wsmooth train --seed 0` builds it
    return build_model("wong_mnist", input_shape=(1, 8, 8), num_classes=10, mean=info.mean, std=info.std, seed=0)


def _initial_state():
    return _initial_model().state_dict()


@pytest.mark.parametrize("method", [["--method", "consistency", "--num-noise", "3"],
                                    ["--adversarial", "flow", "--adv-attack-steps", "2", "--adv-eps-warmup", "0"]])
def test_two_processes_train_the_single_process_weights_with_each_method(method, tmp_path):
    # every method's loss is a sum of per-example terms (and the SmoothAdv and adversarial-training attacks
    # are per example), so the 2-process run matches the single-process one up to float summation order, as
    # for plain training
    base = ARGS
    if method[0] == "--adversarial":  # a plain base model: no noise
        base = [a for i, a in enumerate(ARGS) if a not in ("--noise", "--sigma")
                and ARGS[i - 1] not in ("--noise", "--sigma")]
    args = base + method + ["--epochs", "1"]
    (single_state, single_meta, single_train), (ddp_state, ddp_meta, ddp_train) = _single_then_ddp(args, tmp_path)
    initial = _initial_state()
    moved = 0.0
    for key in single_state:
        torch.testing.assert_close(ddp_state[key], single_state[key], rtol=1e-4, atol=1e-5, msg=key)
        moved = max(moved, float((single_state[key] - initial[key]).abs().max()))
    assert moved > 0.01
    key = method[0].lstrip("-")
    assert ddp_meta["train_args"][key] == single_meta["train_args"][key] == method[1]
    assert ddp_train["history"][0]["loss"] == pytest.approx(single_train["history"][0]["loss"], rel=1e-4)


SMOOTHADV = ["--method", "smoothadv", "--adv-steps", "2", "--adv-warmup", "0", "--adv-epsilon", "0.05"]


def test_two_processes_take_the_single_process_smoothadv_step(tmp_path, monkeypatch):
    # What smoothadv guarantees under torchrun: each example's attack and noise are its own (keyed by dataset
    # index, not by rank), and the ranks' scaled losses average to the global batch's mean loss. Compared over
    # one optimizer step (SGD: a mis-scaled loss moves the weights by a different amount), with the
    # single-process attack run on the ranks' shares (positions 0, 2, ... and 1, 3, ...) so that both runs do
    # the same attack arithmetic on any CPU. Over several steps the runs part for a reason outside this
    # guarantee: the feasibility check of a flow step (core/flows.py nonnegative_step) keeps or rejects a
    # row's whole step, and the ~1e-8 weight difference of a data-parallel gradient sum flips that choice
    # now and then (measured on an AMD EPYC: after 4 steps, weights 1e-4 apart).
    import wsmooth_ext.training.smoothadv as smoothadv
    attack = smoothadv.smoothadv_perturb

    def attack_per_rank_share(model, x, labels, sample_noise, num_noise, epsilon, steps):
        shares = [slice(rank, None, 2) for rank in range(2)]
        index = torch.arange(len(x))
        parts = [attack(model, x[s], labels[s], _share_noise(sample_noise, x, index[s], num_noise), num_noise,
                        epsilon, steps)[0] for s in shares]
        out = torch.empty_like(x)
        for s, part in zip(shares, parts):
            out[s] = part
        return out, None

    monkeypatch.setattr(smoothadv, "smoothadv_perturb", attack_per_rank_share)
    args = ARGS[:ARGS.index("--train-size")] + ["--train-size", "63", "--batch", "63", "--optimizer", "sgd",
                                                "--lr", "0.1", "--noise", "flow-laplace", "--sigma", "0.05",
                                                "--no-progress", "--epochs", "1"] + SMOOTHADV
    (single, _, single_train), (ddp, _, ddp_train) = _single_then_ddp(args, tmp_path)
    initial = _initial_state()
    assert max(float((single[k] - initial[k]).abs().max()) for k in single) > 1e-3  # 100 x the tolerance below
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    assert ddp_train["history"][0]["loss"] == pytest.approx(single_train["history"][0]["loss"], rel=1e-4)


def _single_then_ddp(args, tmp_path):
    """Train ``args`` in this process on one thread (as each torchrun process runs), then with 2 processes;
    the two checkpoints' (state, metadata, training state)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args + ["--out", str(tmp_path / "single.pt")]) == 0
    finally:
        torch.set_num_threads(threads)
    _torchrun(args + ["--out", str(tmp_path / "ddp.pt")])
    return load_training_state(tmp_path / "single.pt"), load_training_state(tmp_path / "ddp.pt")


def _share_noise(sample_noise, batch, rows, num_noise):
    """The noisy copies of the batch's ``rows`` as their own rank draws them: the loop's ``sample_noise`` is
    keyed by the batch's dataset indices, so a share's copies are its rows of the whole batch's copies (the
    other rows hold the clean images, whose copies are dropped)."""
    def noise(images):
        whole = batch.detach().index_put((rows,), images)
        copies = sample_noise(whole).view(len(batch), num_noise, *images.shape[1:])
        return copies[rows].flatten(0, 1)
    return noise
