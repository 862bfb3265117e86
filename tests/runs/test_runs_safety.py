"""Runs never lose or mix results: refusals, identities, locks, commit order, I/O errors, early validation.

Each test reproduces a defect found by probing the commands as a hostile user would; the comment says what
happened before.
"""

import contextlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from wsmooth_ext.inputs.checkpoint import save_checkpoint
from wsmooth_ext.cli import build_parser, main
from wsmooth_ext.inputs.models import build_model
from wsmooth_ext.runs import attack as attack_runner
from wsmooth_ext.runs.logfile import LogBusyError, exclusive_output, open_log, read_log

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning")]

CERTIFY_FAST = ["--n0", "16", "--samples", "64", "--batch", "256", "--no-progress"]
ATTACK_FAST = ["--max-iter", "6", "--eps0", "0.05", "--eps-factor", "1.5", "--eps-every", "2", "--sinkhorn-iter", "40",
               "--no-progress"]
TRAIN = ["train", "--dataset", "digits", "--optimizer", "adam", "--lr", "0.01", "--batch", "64", "--train-size", "100",
         "--epochs", "1", "--no-progress"]


def _checkpoint(path, seed=0):
    model = build_model("wong_mnist", input_shape=(1, 8, 8), num_classes=10, seed=seed)
    save_checkpoint(path, model, {"arch": "wong_mnist", "dataset": "digits", "noise": "flow-laplace", "sigma": 0.05})
    return str(path)


def _error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------ 1. train --out
def test_train_refuses_an_existing_checkpoint_without_resume(tmp_path, capsys):
    # before: a forgotten --resume silently replaced a trained model
    out = tmp_path / "model.pt"
    assert main(TRAIN + ["--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(TRAIN + ["--out", str(out)]) == 2
    assert "already exists" in _error_line(capsys)
    assert out.read_bytes() == before


# ------------------------------------------------------------------------------------------ 2. identity
def test_resume_refuses_another_checkpoint_or_split(tmp_path, capsys):
    # before: rows of a different model or split were appended to the log
    a, b = _checkpoint(tmp_path / "a.pt", 0), _checkpoint(tmp_path / "b.pt", 1)
    out = tmp_path / "c.tsv"
    base = ["certify", "--dataset", "digits", "--out", str(out)] + CERTIFY_FAST
    assert main(["certify", a] + base[1:] + ["--max-images", "2"]) == 0
    rows = read_log(out)[1]
    assert {r["model_sha256"] for r in rows} != {None} and {r["split"] for r in rows} == {"test"}
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["certify", b] + base[1:] + ["--max-images", "3", "--resume"]) == 2
    assert "model_sha256" in _error_line(capsys)
    assert main(["certify", a] + base[1:] + ["--max-images", "3", "--resume", "--split", "train"]) == 2
    assert "split" in _error_line(capsys)
    assert out.read_bytes() == before
    assert main(["certify", a] + base[1:] + ["--max-images", "3", "--resume", "--precision", "bf16"]) == 2
    assert "precision" in _error_line(capsys)
    assert main(["certify", a] + base[1:] + ["--max-images", "3", "--resume"]) == 0
    assert [r["idx"] for r in read_log(out)[1]] == [0, 1, 2]


# ------------------------------------------------------------------------------------------ 3. one writer
def test_a_second_writer_of_a_log_fails_fast(tmp_path, capsys):
    # before: two concurrent --resume runs interleaved rows of 128-161 fields
    log = tmp_path / "log.tsv"
    handle, _ = open_log(log, ("idx", "label", "x"), {}, {}, resume=False)
    with handle:
        with pytest.raises(LogBusyError, match="another process"):
            open_log(log, ("idx", "label", "x"), {}, {}, resume=True)
        ckpt = _checkpoint(tmp_path / "m.pt")
        assert main(["certify", ckpt, "--dataset", "digits", "--out", str(log), "--resume"] + CERTIFY_FAST) == 2
        assert "being written by another process" in _error_line(capsys)
    handle2, existing = open_log(log, ("idx", "label", "x"), {}, {}, resume=True)  # free again once closed
    handle2.close()
    assert existing == []


def test_a_second_training_run_on_one_checkpoint_fails_fast(tmp_path, capsys):
    # before: two train runs on one --out shared a temporary file name and one died
    out = tmp_path / "model.pt"
    with exclusive_output(out):
        assert main(TRAIN + ["--out", str(out)]) == 2
        assert "being written by another process" in _error_line(capsys)
        with pytest.raises(LogBusyError):
            with exclusive_output(out):
                pass
    assert not out.exists() and not list(tmp_path.glob(".*"))  # the lock file goes with its holder
    assert main(TRAIN + ["--out", str(out)]) == 0


# ------------------------------------------------------------------------------------------ 4. commit order
def test_attack_save_adv_resumes_after_a_kill_between_its_two_files(tmp_path, monkeypatch):
    # before: rows were flushed before the tensor file was replaced; a kill in between left a log that
    # could never be resumed
    ckpt = _checkpoint(tmp_path / "m.pt")
    out, adv = tmp_path / "a.tsv", tmp_path / "a.pt"
    args = ["attack", ckpt, "--dataset", "digits", "--max-images", "4", "--attack-batch", "2", "--out", str(out),
            "--save-adv", str(adv)] + ATTACK_FAST
    real_append = attack_runner.append_rows
    calls = []

    def killed_on_second_batch(handle, text):
        calls.append(text)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill: after the tensors of batch 2 were committed, before its rows
        real_append(handle, text)

    monkeypatch.setattr(attack_runner, "append_rows", killed_on_second_batch)
    assert main(args) == 130
    assert len(read_log(out)[1]) == 2 and torch.load(adv, weights_only=True)["idx"].tolist() == [0, 1, 2, 3]
    monkeypatch.setattr(attack_runner, "append_rows", real_append)
    assert main(args + ["--resume"]) == 0
    rows = read_log(out)[1]
    assert [r["idx"] for r in rows] == [0, 1, 2, 3]
    assert torch.load(adv, weights_only=True)["idx"].tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------ 6. I/O errors
def _run_with_file_size_limit(tmp_path, argv, limit_bytes):
    """Run the CLI in a child whose files cannot grow beyond ``limit_bytes`` (a disk that fills up)."""
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))
        import torch
        torch.set_num_threads(1)
        from wsmooth_ext.cli import main
        sys.exit(main({argv!r}))
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_a_full_disk_gives_one_line_and_leaves_nothing_half_written(tmp_path):
    # before: raw tracebacks, and train left its .tmp file behind
    run = _run_with_file_size_limit(tmp_path, TRAIN + ["--out", str(tmp_path / "m.pt")], 20_000)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr and "cannot write" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    ckpt = _checkpoint(tmp_path / "m.pt")
    out = tmp_path / "c.tsv"
    run = _run_with_file_size_limit(tmp_path, ["certify", ckpt, "--dataset", "digits", "--out", str(out)]
                                    + CERTIFY_FAST, 700)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert not out.exists()  # not one row fitted: the run leaves nothing that would block its rerun
    run = _run_with_file_size_limit(tmp_path, ["certify", ckpt, "--dataset", "digits", "--out", str(out)]
                                    + CERTIFY_FAST, 2500)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    data = out.read_bytes()
    assert data.count(b"\n") > 1  # rows were logged: the partial log stays for --resume
    assert data.endswith(b"\n")  # only complete rows: a --resume continues it
    assert main(["certify", ckpt, "--dataset", "digits", "--out", str(out), "--resume", "--max-images", "30"]
                + CERTIFY_FAST) == 0  # 2,500 bytes hold fewer than 30 rows: the resume extends the log


@contextlib.contextmanager
def _read_only_folder(folder):
    """``folder``, unwritable: mode 0o500, and for root (whom modes do not stop) a read-only bind mount of it."""
    folder.mkdir()
    os.chmod(folder, 0o500)
    mounted = False
    if os.access(folder, os.W_OK):
        mount = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
        if mount.returncode == 0:
            mounted = True
            remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True)
        if not mounted or remount.returncode != 0:
            if mounted:
                subprocess.run(["umount", str(folder)], capture_output=True)
            pytest.skip(f"cannot make a folder unwritable for uid {os.geteuid()} here (no read-only bind mount)")
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        os.chmod(folder, 0o700)


@pytest.mark.parametrize("command", [
    ["certify", "CKPT", "--dataset", "digits", *CERTIFY_FAST, "--out"],
    ["predict", "CKPT", "--dataset", "digits", "--samples", "64", "--out"],
    ["attack", "CKPT", "--dataset", "digits", *ATTACK_FAST, "--out"],
    [*TRAIN, "--out"],
], ids=["certify", "predict", "attack", "train"])
@pytest.mark.parametrize("target", ["/dev/full", "/proc/version", "readonly/x.tsv", "a-file/x.tsv"])
def test_unwritable_outputs_are_one_line_before_any_work(tmp_path, capsys, command, target):
    ckpt = _checkpoint(tmp_path / "m.pt")
    argv = [ckpt if a == "CKPT" else a for a in command]
    with contextlib.ExitStack() as stack:
        if target.startswith("readonly"):
            stack.enter_context(_read_only_folder(tmp_path / "readonly"))
            target = str(tmp_path / target)
        elif target.startswith("a-file"):  # a file where a folder is expected: refused for root too
            (tmp_path / "a-file").write_text("not a folder")
            target = str(tmp_path / target)
        assert main(argv + [target]) == 2
        _error_line(capsys)


# ------------------------------------------------------------------------------------------ 7./8./9. validation
@pytest.mark.parametrize("argv,message", [
    (["certify", "CKPT", "--dataset", "digits", "--samples", "99999999999999999999", "--out", "OUT"], "--samples"),
    (["certify", "CKPT", "--dataset", "digits", "--samples", "2147483648", "--out", "OUT"], "--n0 + --samples"),
    (["predict", "CKPT", "--dataset", "digits", "--samples", "3000000000", "--out", "OUT"], "--samples"),
    (["certify", "CKPT", "--dataset", "digits", "--sigma", "1e300", "--out", "OUT"], "--sigma"),
    (["attack", "CKPT", "--dataset", "digits", "--smoothed", "--sigma", "1e300", "--out", "OUT"], "--sigma"),
    (["attack", "CKPT", "--dataset", "digits", "--certified-log", "missing.tsv", "--out", "OUT"], "missing.tsv"),
    (["attack", "CKPT", "--dataset", "digits", "--save-adv", "OUT", "--out", "OUT"], "--save-adv"),
    ([*TRAIN, "--sigma", "1e300", "--out", "OUT"], "--sigma"),
    ([*TRAIN, "--lr", "-1", "--out", "OUT"], "--lr"),
    (["demo", "--alpha", "2", "--out", "OUTDIR"], "--alpha"),
    (["demo", "--seed", "-1", "--out", "OUTDIR"], "--seed"),
    (["demo", "--n", "2147483648", "--out", "OUTDIR"], "--n0 + --n"),  # --n itself at most 2**31
    (["bench", "--threads", "65535"], "--threads"),
    (["certify", "CKPT", "--dataset", "digits", "--device", "cuda", "--out", "OUT"], "--device"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, argv, message):
    # before: these were accepted, or failed only after work had started (leaving a header-only log, a
    # trained model, or a finished attack), or segfaulted / raised tracebacks
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    ckpt = _checkpoint(tmp_path / "m.pt")
    subs = {"CKPT": ckpt, "OUT": str(tmp_path / "out.file"), "OUTDIR": str(tmp_path / "demo")}
    assert main([subs.get(a, a) for a in argv]) == 2
    assert message in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # nothing written


# ------------------------------------------------------------------------------------------ 11. messages
def test_corrupt_checkpoints_and_malicious_adversarial_files_are_explained(tmp_path, capsys):
    # before: "...: 101", "Unsupported operand 36", and a traceback for a malicious --save-adv on resume
    good = tmp_path / "good.pt"
    _checkpoint(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[:len(data) // 2])
    assert main(["certify", str(bad), "--dataset", "digits", "--out", str(tmp_path / "c.tsv")]) == 2
    assert "damaged or truncated" in _error_line(capsys)

    out, adv = tmp_path / "a.tsv", tmp_path / "a.pt"
    args = ["attack", str(good), "--dataset", "digits", "--out", str(out), "--save-adv", str(adv)] + ATTACK_FAST
    assert main(args + ["--max-images", "2"]) == 0
    torch.save({"clean": torch.zeros(1), "adv": torch.zeros(1), "idx": [print]}, adv)  # needs full unpickling
    before = out.read_bytes()
    assert main(args + ["--max-images", "4", "--resume"]) == 2
    assert "not a file of adversarial examples" in _error_line(capsys)
    assert out.read_bytes() == before


# ------------------------------------------------------------------------------------------ 12. torchrun
def test_documented_options_pass_through_torchrun_without_a_separator():
    # before: `torchrun ... -m wsmooth_ext.cli certify ... --n 1000` failed inside torchrun ("ambiguous option")
    from torch.distributed.run import get_args_parser

    ours = ["certify", "m.pt", "--dataset", "digits", "--samples", "1000", "--n0", "100", "--max-images", "5",
            "--out", "c.tsv"]
    parsed = get_args_parser().parse_args(["--standalone", "--nproc-per-node", "2", "-m", "wsmooth_ext.cli", *ours])
    assert parsed.training_script_args == ours
    args = build_parser().parse_args(parsed.training_script_args)
    assert (args.n, args.n0, args.max_images) == (1000, 100, 5)
    # every long option of every subcommand is safe from torchrun's prefix matching, except the aliases
    torchrun_options = {o for a in get_args_parser()._actions for o in a.option_strings}
    aliases = {"--n", "--max", "--help"}
    for name, sub in build_parser()._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in aliases:
                    assert not any(t.startswith(option) for t in torchrun_options), (name, option)
