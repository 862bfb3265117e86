"""The commands refuse bad input up front, in one line naming the argument: non-finite weights, unwritable --save-adv
folders, attack options, every stated range, full disks, files that are not checkpoints."""
import math

import numpy as np
import pytest
import torch

from wsmooth_ext.inputs.checkpoint import load_checkpoint, save_checkpoint
from wsmooth_ext.cli import main
from wsmooth_ext.inputs.models import build_model
from wsmooth_ext.runs.logfile import read_log

from helpers import ATTACK_FAST, checkpoint as _checkpoint, error_line as _error_line

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning")]


# ------------------------------------------------------------------------------------------ non-finite weights
@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_commands_refuse_a_checkpoint_with_non_finite_weights(tmp_path, capsys, poison):
    # before: certify/predict/attack ran a NaN model and logged abstentions (or argmax 0) as results
    ckpt = _checkpoint(tmp_path / "nan.pt", poison=poison)
    with pytest.raises(ValueError, match="non-finite weights"):
        load_checkpoint(ckpt)
    for command in (["certify", ckpt, "--n0", "8", "--samples", "32"], ["predict", ckpt, "--samples", "32"],
                    ["attack", ckpt] + ATTACK_FAST):
        out = tmp_path / f"{command[0]}.tsv"
        assert main(command + ["--dataset", "digits", "--max-images", "2", "--out", str(out)]) == 2
        assert "non-finite weights" in _error_line(capsys)
        assert not out.exists()

# ------------------------------------------------------------------------------------------ --save-adv folder
def test_save_adv_into_a_missing_folder_is_created(tmp_path):
    # before: validation passed, the attack ran, and saving failed with "No such file or directory"
    ckpt = _checkpoint(tmp_path / "m.pt")
    out, adv = tmp_path / "logs" / "a.tsv", tmp_path / "tensors" / "deeper" / "adv.pt"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "3", "--out", str(out),
                 "--save-adv", str(adv)] + ATTACK_FAST) == 0
    saved = torch.load(adv, weights_only=True)
    assert saved["idx"].tolist() == [r["idx"] for r in read_log(out)[1]] == [0, 1, 2]


def test_save_adv_under_a_file_is_refused_up_front(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "m.pt")
    (tmp_path / "plain").write_text("x")
    out = tmp_path / "a.tsv"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "2", "--out", str(out),
                 "--save-adv", str(tmp_path / "plain" / "adv.pt")] + ATTACK_FAST) == 2
    assert "--save-adv" in _error_line(capsys)
    assert not out.exists()

# ------------------------------------------------------------------------------------------ attack options
@pytest.mark.parametrize("extra", [["--n-grad", "16"], ["--n-test", "500"], ["--success-test", "fixed"],
                                   ["--alpha", "0.01"], ["--batch", "100"], ["--seed", "3"], ["--sigma", "0.1"]])
def test_smoothed_only_options_are_refused_without_smoothed(tmp_path, capsys, extra):
    # before: --success-test/--n-grad/--n-test were silently ignored on a plain attack
    ckpt = _checkpoint(tmp_path / "m.pt")
    out = tmp_path / "a.tsv"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "1", "--out", str(out)] + extra
                + ATTACK_FAST) == 2
    line = _error_line(capsys)
    assert extra[0] in line and "--smoothed" in line
    assert not out.exists()


@pytest.mark.parametrize("test", ["sequential", "fixed"])
def test_a_success_test_that_can_never_decide_is_refused(tmp_path, capsys, test):
    # before: `attack --smoothed --n-test 3` printed a raw UserWarning per iteration and counted every image fooled
    ckpt = _checkpoint(tmp_path / "m.pt")
    out = tmp_path / "a.tsv"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "1", "--out", str(out), "--smoothed",
                 "--n-test", "3", "--success-test", test] + ATTACK_FAST) == 2
    assert "--n-test 3 is too small" in _error_line(capsys)
    assert not out.exists()

# ------------------------------------------------------------------------------------------ stated ranges
ABSURD = [
    (["attack"], "--eps", "1e39"), (["attack"], "--eps0", "3.5e38"), (["attack", "--smoothed"], "--n-grad", "1e8"),
    (["attack"], "--kernel-size", "9999"), (["attack"], "--kernel-size", "4"), (["attack"], "--reg", "1e300"),
    (["attack"], "--gamma", "1e-300"), (["attack"], "--eps-factor", "1e308"), (["attack"], "--eps", "nan"),
    (["attack"], "--p", "inf"), (["attack"], "--step", "-1"), (["attack"], "--flow-step", "0"),
    (["attack"], "--max-iter", "1e9"), (["attack"], "--eps-every", "0"), (["attack"], "--sinkhorn-iter", "1e9"),
    (["attack"], "--sinkhorn-tol", "1"), (["attack"], "--attack-batch", "1e9"),
    (["attack", "--smoothed"], "--n-test", "1e12"), (["attack", "--smoothed"], "--alpha", "1"),
    (["attack", "--smoothed"], "--sigma", "1e5"), (["attack", "--smoothed"], "--seed", "-1"),
    (["attack", "--smoothed"], "--batch", "1e12"), (["attack"], "--skip", "0"), (["attack"], "--max-images", "1e12"),
    (["attack"], "--max", "0"),
    (["certify"], "--n0", "0"), (["certify"], "--samples", "1e12"), (["certify"], "--n", "2.5"),
    (["certify"], "--alpha", "0"), (["certify"], "--sigma", "-0.1"), (["certify"], "--batch", "1e12"),
    (["certify"], "--seed", "1e19"), (["certify"], "--skip", "1e10"), (["predict"], "--samples", "0"),
    (["predict"], "--alpha", "nan"), (["predict"], "--max-images", "-3"),
]


@pytest.mark.parametrize("command, option, value", ABSURD)
def test_absurd_values_are_refused_before_anything_is_loaded(tmp_path, capsys, command, option, value):
    # before: --eps 1e39 failed inside the first batch (leaving a header-only log), --n-grad 1e8 and
    # --kernel-size 9999 ran out of memory or hung, --reg 1e300 / --gamma 1e-300 / --eps-factor 1e308 crashed late
    missing = str(tmp_path / "no-such-model.pt")  # the range error must come first: nothing is loaded
    out = tmp_path / "o.tsv"
    assert main([command[0], missing, "--dataset", "digits", "--out", str(out)] + command[1:] + [option, value]) == 2
    line = _error_line(capsys)
    assert f"error: {option} must be " in line and "checkpoint" not in line, line
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--smoothed", "--n-grad", "100000", "--attack-batch", "1000"], "--attack-batch x --n-grad"),
    (["--eps0", "1000", "--eps-factor", "10", "--max-iter", "1000"], "exceeds the largest radius"),
    (["--smoothed", "--batch", "10000000"], "--batch"),
])
def test_combinations_beyond_memory_or_float_range_are_refused(tmp_path, capsys, extra, message):
    out = tmp_path / "o.tsv"
    assert main(["attack", str(tmp_path / "no-such-model.pt"), "--dataset", "cifar10", "--out", str(out)]
                + extra) == 2
    assert message in _error_line(capsys)


def test_certify_batch_beyond_memory_is_refused(tmp_path, capsys):
    assert main(["certify", str(tmp_path / "none.pt"), "--dataset", "cifar10", "--batch", "1000000",
                 "--out", str(tmp_path / "o.tsv")]) == 2
    assert "--batch = 1000000 images of [3, 32, 32]" in _error_line(capsys)


def test_help_states_every_range(capsys):
    from wsmooth_ext.core.noises import MAX_SIGMA
    from wsmooth_ext.attacks.registry import setting
    from wsmooth_ext.infra.options import SHARED

    def stated(name):
        return (SHARED[name] if name in SHARED else setting(name)).text()

    assert SHARED["sigma"].range.high == MAX_SIGMA
    for command in ("attack", "certify", "predict"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for name in ("seed", "alpha", "skip", "max_images", "batch", "sigma"):
            assert stated(name) in text, (command, name)
    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("eps", "eps0", "eps_factor", "n_grad", "n_test", "kernel_size", "reg", "gamma", "step", "p",
                 "flow_step", "sinkhorn_iter", "sinkhorn_tol", "attack_batch", "max_iter", "eps_every"):
        assert stated(name) in text, name


@pytest.mark.parametrize("word, expected", [("1e3", 1000), ("7", 7)])
def test_integer_options_accept_whole_numbers_in_e_notation(word, expected):
    from wsmooth_ext.infra.options import N_GRAD

    assert N_GRAD.parse(word) == expected
    assert N_GRAD.allows(expected)

# ------------------------------------------------------------------------------------------ messages
@pytest.fixture
def full_disk(tmp_path):
    """A folder on a real 64 KiB file system (tmpfs), or skip where mounting is not allowed."""
    import shutil
    import subprocess

    where = tmp_path / "small"
    where.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)  # a file still open: detach it anyway


def test_a_full_disk_says_no_space_left_and_names_the_file(full_disk, tmp_path, capsys):
    # before: torch's internal text ("[enforce fail at inline_container.cc:...] unexpected pos ...")
    from wsmooth_ext.runs.attack import save_adversarial

    model = build_model("wong_mnist", input_shape=(1, 28, 28), num_classes=10)  # ~1.3 MB of weights
    target = full_disk / "model.pt"
    with pytest.raises(OSError) as caught:
        save_checkpoint(target, model, {"arch": "wong_mnist", "dataset": "mnist5k"})
    assert "No space left on device" in str(caught.value) and str(target) in str(caught.value)
    assert list(full_disk.iterdir()) == []  # no temporary left behind
    adv = full_disk / "adv.pt"
    with pytest.raises(OSError, match="No space left on device") as caught:
        save_adversarial(adv, [torch.rand(40, 1, 28, 28)], [torch.rand(40, 1, 28, 28)], list(range(40)))
    assert caught.value.filename == str(adv) and list(full_disk.iterdir()) == []
    # through the command line: one line, the reason and the file
    ckpt = _checkpoint(tmp_path / "m.pt")
    out = full_disk / "a.tsv"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "300", "--attack-batch", "300",
                 "--max-iter", "0", "--out", str(out), "--save-adv", str(full_disk / "big" / "adv.pt"),
                 "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "No space left on device" in line and str(full_disk / "big" / "adv.pt") in line, line


def test_a_full_disk_while_logging_names_the_log(full_disk, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "m.pt")
    (full_disk / "filler").write_bytes(b"\0" * (64 * 1024 - 6000))
    out = full_disk / "c.tsv"
    assert main(["certify", ckpt, "--dataset", "digits", "--n0", "4", "--samples", "16", "--out", str(out),
                 "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "No space left on device" in line and str(out) in line, line


def test_a_plain_pickle_is_not_a_checkpoint(tmp_path, capsys):
    # before: "corrupt or unreadable checkpoint ... damaged pickle data: Unsupported operand 149", after a raw
    # UserWarning with its source line
    import pickle

    for name, obj in (("code.pkl", {"net": print}), ("plain.pkl", {"net": {"0.weight": [1.0]}})):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(obj, protocol=4))
        assert main(["certify", str(path), "--dataset", "digits", "--out", str(tmp_path / "c.tsv")]) == 2
        line = _error_line(capsys)
        assert f"{path} is not a checkpoint" in line and "damaged" not in line, line
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(open(_checkpoint(tmp_path / "m.pt"), "rb").read()[:5000])
    assert main(["certify", str(truncated), "--dataset", "digits", "--out", str(tmp_path / "c.tsv")]) == 2
    assert "damaged or truncated" in _error_line(capsys)


def test_the_reference_codes_legacy_files_still_load(tmp_path):
    model = build_model("wong_mnist", input_shape=(1, 28, 28), num_classes=10)
    state = {f"module.{k[len('net.'):]}": v for k, v in model.state_dict().items() if k.startswith("net.")}
    path = tmp_path / "legacy.pth"
    torch.save({"net": state, "acc": 99.0}, path, _use_new_zipfile_serialization=False)
    loaded, meta = load_checkpoint(path)
    assert meta["arch"] == "wong_mnist"
