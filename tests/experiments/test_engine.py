"""A new experiment added purely as a declaration on the engine (the recipe of docs/architecture.md): take a given
checkpoint, certify a few 8x8 digits, report a table. It runs, stops half-way, resumes to the same log and
summary, refuses a changed setting or a changed checkpoint, and takes its options from a generated command."""

import argparse
import math
import shutil

import pytest

from wsmooth_ext.cli import main
from wsmooth_ext.experiments import options
from wsmooth_ext.experiments.engine import Experiment, Report, command_line, run_experiment
from wsmooth_ext.experiments.options import Option
from wsmooth_ext.experiments.steps import Certify, Given, Run
from wsmooth_ext.runs.logfile import read_log

pytestmark = [pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning"),
              pytest.mark.usefixtures("one_thread")]


# ---- the declaration: everything a newcomer writes -----------------------------------------------------------

def _plan(s, extras):
    certify = Certify(log="given.tsv", label="given model", noise="flow-laplace", sigma=s.sigma,
                      certificate="paper", n0=s.n0, n=s.samples, alpha=s.alpha, seed=s.seed)
    return [Run(Given("given", "given model", s.checkpoint, "--checkpoint"), (certify,))]


def _report(result):
    from wsmooth_ext.analysis.certify import summarize_certify_log

    summary = summarize_certify_log(result.runs[0].logs[0])
    table = (f"| N | accuracy % | median W1 |\n|---|---|---|\n"
             f"| {summary['n_images']} | {summary['accuracy']:.2f} | {summary['median_radius']} |")
    return Report(table, f"# A given checkpoint, certified\n\n{table}\n\n", {})


EXPERIMENT = Experiment(
    "certify-given",
    (Option("checkpoint", None, "the model to certify", rule=options.checkpoint_file, kind=str, optional=True, path=True),
     options.DATASET, options.images(6), options.SEED,
     Option("sigma", 0.01, "flow-laplace noise, std per flow edge, mass-normalized", rule=options.sigma),
     *options.CERTIFY),
    _plan, _report, quick={"samples": 32})

# ---- the test ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A wong_mnist trained 3 epochs (adam) under flow-laplace noise on 600 digits (as `wsmooth train` writes it)."""
    import torch

    from conftest import wong_digits_model
    from wsmooth_ext.inputs.data import load_dataset
    from wsmooth_ext.training.keywords import train

    path = tmp_path_factory.mktemp("given") / "model.pt"
    x, y = load_dataset("digits", "train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(wong_digits_model(), x[:600], y[:600], noise="flow-laplace", sigma=0.01, epochs=3, lr=0.01,
              batch_size=32, optimizer="adam", checkpoint_path=path, progress=False, log=lambda line: None,
              metadata={"dataset": "digits"})
    finally:
        torch.set_num_threads(threads)
    return path


def _settings(path, changes):
    values = {"checkpoint": str(path), "dataset": "digits", "n0": 16, "samples": 64, **changes}
    return EXPERIMENT.settings(**values)


def _run(out, checkpoint, lines=None, **kwargs):
    return run_experiment(EXPERIMENT, out, _settings(checkpoint, kwargs.pop("changes", {})), progress=False,
                          log=(lines.append if lines is not None else lambda line: None), **kwargs)


def _rows(path):
    return [{k: v for k, v in row.items() if k != "time"} for row in read_log(path)[1]]


def test_a_declared_experiment_runs_resumes_and_reports(checkpoint, tmp_path, monkeypatch):
    import wsmooth_ext.runs.certify as certify_module

    whole = tmp_path / "whole"
    result = _run(whole, checkpoint)
    rows = read_log(whole / "given.tsv")[1]
    assert [r["idx"] for r in rows] == list(range(6))
    assert {(r["n0"], r["n"], r["certificate"], r["sigma"], r["dataset"]) for r in rows} == {
        (16, 64, "paper", 0.01, "digits")}
    # the table, counted here from the log: accuracy and median certified radius (N/A as None: < half correct)
    correct = sorted((r["radius"] for r in rows if r["correct"] == 1), reverse=True)
    median = correct[2] if len(correct) >= 3 else None  # the 3rd largest of 6, wrong ones counting as -inf
    summary = (whole / "summary.md").read_text()
    assert f"| 6 | {100 * len(correct) / 6:.2f} | {median} |" in summary
    assert len(correct) >= 3 and median > 0 and math.isfinite(median)  # the model certifies something
    command = f"wsmooth experiment certify-given --out {whole} --checkpoint {checkpoint} --dataset digits " \
              "--n0 16 --samples 64"
    assert summary.endswith(f"Command: `{command}` (add `--resume` to continue it).\n")
    assert result.command == command == command_line(EXPERIMENT, result.settings, whole)

    from conftest import interrupted_after

    real = certify_module.certify_to_log
    out = tmp_path / "interrupted"
    monkeypatch.setattr(certify_module, "certify_to_log", interrupted_after(real, 2))
    with pytest.raises(KeyboardInterrupt):
        _run(out, checkpoint)
    assert len(read_log(out / "given.tsv")[1]) == 2 and not (out / "summary.md").exists()
    monkeypatch.setattr(certify_module, "certify_to_log", real)
    with pytest.raises(FileExistsError, match="--resume"):
        _run(out, checkpoint)
    lines = []
    _run(out, checkpoint, lines, resume=True)
    assert "[1/1] given model: given " + str(checkpoint) in lines
    assert "[1/1] given model: certifying 6 images from image 2" in lines
    assert _rows(out / "given.tsv") == _rows(whole / "given.tsv")  # none lost, none repeated
    assert (out / "summary.md").read_text().replace(str(out), "OUT") == summary.replace(str(whole), "OUT")
    lines.clear()
    _run(out, checkpoint, lines, resume=True)  # finished: only re-read
    assert "[1/1] given model: certified (6 images), not recertified" in lines


def test_resume_refuses_changed_settings_and_a_changed_checkpoint(checkpoint, tmp_path):
    out = tmp_path / "run"
    _run(out, checkpoint, changes={"max_images": 2})
    with pytest.raises(ValueError, match=r"--samples 64 \(now 32\)"):
        _run(out, checkpoint, resume=True, changes={"max_images": 2, "samples": 32})
    mine = tmp_path / "mine.pt"
    shutil.copy(checkpoint, mine)
    other = tmp_path / "other"
    _run(other, mine, changes={"max_images": 2})
    with open(mine, "ab") as handle:  # a different file at the same path
        handle.write(b"\0")
    with pytest.raises(ValueError, match="--checkpoint .* changed"):
        _run(other, mine, resume=True, changes={"max_images": 2})


@pytest.mark.parametrize("changes, needle", [({"sigma": 0}, "--sigma"), ({"max_images": 0}, "--max-images"),
                                             ({"max_images": 10 ** 6}, "--max-images"), ({"alpha": 1}, "--alpha"),
                                             ({"checkpoint": "missing.pt"}, "--checkpoint")])
def test_bad_settings_fail_before_any_work(checkpoint, tmp_path, changes, needle):
    with pytest.raises((ValueError, FileNotFoundError), match=needle):
        _run(tmp_path / "x", checkpoint, changes=changes)
    assert not (tmp_path / "x").exists()


def test_its_command_comes_from_the_declaration(checkpoint, tmp_path, capsys):
    from wsmooth_ext.commands.experiments._cli import command

    add_arguments, run = command(EXPERIMENT)  # what commands/experiments/certify_given.py would hold
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "--checkpoint CHECKPOINT the model to certify (default none)" in text
    assert "(default 10000; 32 with --quick)" in text and "--resume" in text
    out = tmp_path / "cli"
    args = parser.parse_args(["--out", str(out), "--checkpoint", str(checkpoint), "--dataset", "digits", "--quick",
                              "--n0", "16", "--max-images", "2", "--device", "cpu", "--no-progress"])
    assert run(args) == 0
    assert {r["n"] for r in read_log(out / "given.tsv")[1]} == {32}
    assert f"wsmooth experiment certify-given --out {out} --quick --checkpoint" in (out / "summary.md").read_text()
    assert f"wrote {out}/summary.md" in capsys.readouterr().out


@pytest.mark.parametrize("name, bad, needle", [
    ("table1", ["--samples", "3000000000"], "--samples must be an integer in [1, 2**31]"),
    ("table1", ["--certify-batch", "99999999999"], "--certify-batch must be an integer in [1, 1e+07]"),
    # in range, but 9,999,999 MNIST images at once are 7.8e9 pixel values (31 GiB): refused as `certify --batch`
    ("table1", ["--certify-batch", "9999999"], "--certify-batch = 9999999 images of [1, 28, 28] at once"),
    ("certified-training", ["--certify-batch", "9999999"], "above the limit of 2**31"),
    ("fig5", ["--attack-batch", "100000", "--n-grad", "100000"], "--attack-batch = 10000000000 images"),
    ("certified-training", ["--n0", "3000000000"], "--n0 must be an integer in [1, 2**31]"),
    ("fig5", ["--n-grad", "100000000"], "--n-grad must be an integer in [1, 100000]"),
    ("fig5", ["--eps0", "1e308"], "--eps0 must be a number in (0, 10000]"),
    ("fig5", ["--eps-factor", "10", "--max-iter", "1000000", "--eps-every", "1"], "exceeds the largest radius"),
    ("fig5", ["--max-iter", "1000000", "--n-grad", "100000"], "exceeds the largest radius"),
    ("fig5", ["--max-iter", "100000", "--n-grad", "100000", "--eps-factor", "1"], "independent soft samples"),
])
def test_experiments_refuse_what_the_commands_refuse_before_any_work(name, bad, needle, tmp_path, capsys):
    # the same quantity has one stated range (ranges.RANGES) in `wsmooth certify`/`attack` and the experiments
    out = tmp_path / "out"
    assert main(["experiment", name, "--out", str(out), "--no-progress", *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not out.exists()
