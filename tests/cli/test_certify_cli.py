"""`wsmooth certify` / `wsmooth predict` in-process: logs, defaults from the checkpoint, exit codes, resume."""

import pytest
import torch

from wsmooth_ext.runs.logfile import read_log
from wsmooth_ext.inputs.checkpoint import load_checkpoint, save_checkpoint
from wsmooth_ext.cli import main
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.inputs.models import build_model
from wsmooth_ext.core.smooth import Smooth

pytestmark = pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning")

FAST = ["--n0", "16", "--n", "64", "--batch", "256", "--no-progress"]


def _checkpoint(path, noise="flow-laplace", sigma=0.05):
    model = build_model("wong_mnist", input_shape=(1, 8, 8), num_classes=10, seed=0)
    save_checkpoint(path, model, {"arch": "wong_mnist", "dataset": "digits", "noise": noise, "sigma": sigma})
    return str(path)


@pytest.fixture
def ckpt(tmp_path):
    return _checkpoint(tmp_path / "model.pt")


def _no_time(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_certify_writes_the_log_of_the_library(tmp_path, ckpt, capsys):
    out = tmp_path / "certify.tsv"
    assert main(["certify", ckpt, "--dataset", "digits", "--skip", "3", "--max", "5", "--out", str(out)] + FAST) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith(
        "certified 5 images (noise flow-laplace, sigma 0.05, certificate tight, n0 16, n 64, alpha 0.05): accuracy")
    columns, rows = read_log(out)
    assert columns[:6] == ["idx", "label", "predict", "radius", "correct", "time"]
    assert [r["idx"] for r in rows] == [0, 3, 6, 9, 12]
    assert {(r["noise"], r["sigma"], r["certificate"], r["n0"], r["n"]) for r in rows} == {
        ("flow-laplace", 0.05, "tight", 16, 64)}
    # the same numbers straight from the library, with dataset indices as keys
    model, _ = load_checkpoint(ckpt)
    images, labels = load_dataset("digits", "test")
    idx = [0, 3, 6, 9, 12]
    records = Smooth(model, 10, 0.05).certify_batch(images[idx], 16, 64, 0.05, 256, keys=idx, labels=labels[idx])
    assert [(r["predict"], r["radius"], r["count_label"]) for r in rows] == [
        (x.prediction, x.radius, x.count_label) for x in records]
    assert [r["label"] for r in rows] == labels[idx].tolist()


def test_overrides_and_paper_certificate(tmp_path, ckpt):
    out = tmp_path / "c.tsv"
    assert main(["certify", ckpt, "--dataset", "digits", "--max", "2", "--noise", "pixel-laplace", "--sigma", "0.02",
                 "--certificate", "paper", "--seed", "7", "--out", str(out)] + FAST) == 0
    rows = read_log(out)[1]
    settings = {(r["noise"], r["sigma"], r["certificate"], r["seed"]) for r in rows}
    assert settings == {("pixel-laplace", 0.02, "paper", 7)}


def test_resume_through_the_cli(tmp_path, ckpt):
    full, log = tmp_path / "full.tsv", tmp_path / "log.tsv"
    args = ["certify", ckpt, "--dataset", "digits", "--max", "6"] + FAST
    assert main(args + ["--out", str(full)]) == 0
    lines = full.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:3]) + lines[3][:5])  # interrupted: 2 rows and half of the third
    assert main(args + ["--out", str(log), "--resume"]) == 0
    assert _no_time(read_log(log)[1]) == _no_time(read_log(full)[1])


@pytest.mark.parametrize("extra", [
    [],  # the log exists and --resume was not given
    ["--resume", "--n", "65"],  # settings differ from the log's
    ["--resume", "--sigma", "0.06"],
    ["--resume", "--noise", "flow-uniform", "--certificate", "tight"],  # invalid pair
    ["--alpha", "1.5"], ["--alpha", "0"], ["--n0", "0"], ["--batch", "0"], ["--sigma", "-1"], ["--skip", "0"],
    ["--max", "0"],
])
def test_user_errors_exit_2_with_one_line_and_leave_the_log_intact(tmp_path, ckpt, capsys, extra):
    out = tmp_path / "log.tsv"
    assert main(["certify", ckpt, "--dataset", "digits", "--max", "2", "--out", str(out)] + FAST) == 0
    before = out.read_bytes()
    capsys.readouterr()
    code = main(["certify", ckpt, "--dataset", "digits", "--max", "3", "--out", str(out)] + FAST + extra)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("wsmooth certify: error:") and "Traceback" not in err
    assert out.read_bytes() == before


def test_missing_noise_or_sigma_and_missing_files(tmp_path, capsys):
    clean = _checkpoint(tmp_path / "clean.pt", noise="none", sigma=None)
    out = tmp_path / "x.tsv"
    assert main(["certify", clean, "--dataset", "digits", "--out", str(out)] + FAST) == 2
    assert "--noise is required" in capsys.readouterr().err
    assert main(["certify", clean, "--dataset", "digits", "--noise", "flow-laplace", "--out", str(out)] + FAST) == 2
    assert "--sigma is required" in capsys.readouterr().err
    assert main(["certify", str(tmp_path / "nope.pt"), "--dataset", "digits", "--out", str(out)] + FAST) == 2
    assert not out.exists()
    # an 8x8 model on 28x28 images
    assert main(["certify", _checkpoint(tmp_path / "m.pt"), "--dataset", "mnist5k", "--max", "1",
                 "--out", str(out)] + FAST) == 2
    assert "expects" in capsys.readouterr().err and not out.exists()


def test_predict_command(tmp_path, ckpt, capsys):
    out = tmp_path / "p.tsv"
    assert main(["predict", ckpt, "--dataset", "digits", "--max", "4", "--n", "64", "--batch", "100",
                 "--no-progress", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(
        "predicted 4 images (noise flow-laplace, sigma 0.05, n 64, alpha 0.05): accuracy")
    columns, rows = read_log(out)
    assert columns[:5] == ["idx", "label", "predict", "correct", "time"] and len(rows) == 4
    model, _ = load_checkpoint(ckpt)
    images, _ = load_dataset("digits", "test")
    assert [r["predict"] for r in rows] == Smooth(model, 10, 0.05).predict_batch(images[:4], 64, 0.05, 100).tolist()
    before = out.read_bytes()
    assert main(["predict", ckpt, "--dataset", "digits", "--max", "4", "--n", "64", "--out", str(out)]) == 2
    assert out.read_bytes() == before


def test_help_states_units(capsys):
    for command in ("certify", "predict", "analyze"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "mass-normalized" in text and "radius" in text


def test_compile_gives_the_same_log(tmp_path, ckpt, capsys):
    # the one real inductor compilation of the CLI tests (a tiny model: ~10-20 s cold, less with inductor's cache)
    plain, compiled = tmp_path / "plain.tsv", tmp_path / "compiled.tsv"
    args = ["certify", ckpt, "--dataset", "digits", "--skip", "5", "--max", "6"] + FAST
    assert main(args + ["--out", str(plain)]) == 0
    capsys.readouterr()
    assert main(args + ["--out", str(compiled), "--compile"]) == 0
    err = capsys.readouterr().err
    assert "--compile: compiled model (inductor, dynamic batch; identical predictions on" in err
    assert "compiling and checking took" in err
    assert _no_time(read_log(compiled)[1]) == _no_time(read_log(plain)[1])


def test_precision_bf16_through_the_cli(tmp_path, ckpt, capsys):
    out = tmp_path / "bf16.tsv"
    assert main(["certify", ckpt, "--dataset", "digits", "--max", "3", "--precision", "bf16",
                 "--out", str(out)] + FAST) == 0
    assert "--precision bf16: certified the smoothed classifier of the bf16 base model" in capsys.readouterr().err
    # the log equals the library's with the bf16 copy of the model
    from wsmooth_ext.core.inference import with_precision

    model, _ = load_checkpoint(ckpt)
    images, labels = load_dataset("digits", "test")
    records = Smooth(with_precision(model, "bf16"), 10, 0.05).certify_batch(images[:3], 16, 64, 0.05, 256,
                                                                         labels=labels[:3])
    assert [(r["predict"], r["count_top"], r["count_label"]) for r in read_log(out)[1]] == [
        (x.prediction, x.count_top, x.count_label) for x in records]
    with pytest.raises(SystemExit) as exc:  # argparse rejects an unknown precision
        main(["certify", ckpt, "--dataset", "digits", "--precision", "fp8", "--out", str(tmp_path / "x.tsv")] + FAST)
    assert exc.value.code == 2


def test_automatic_batch_gives_the_same_log(tmp_path, ckpt):
    auto, explicit = tmp_path / "auto.tsv", tmp_path / "explicit.tsv"
    args = ["certify", ckpt, "--dataset", "digits", "--max", "3", "--n0", "16", "--n", "64", "--no-progress"]
    assert main(args + ["--out", str(auto)]) == 0
    assert main(args + ["--batch", "7", "--out", str(explicit)]) == 0
    assert _no_time(read_log(auto)[1]) == _no_time(read_log(explicit)[1])
