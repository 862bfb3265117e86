"""`wsmooth experiment certified-training` in miniature (8x8 digits, 2 epochs, 8 images, n 64): its outputs, its
table against `wsmooth analyze` and against the logs themselves, resuming after interruptions, refusals."""

import math
import shlex
import shutil
import sys

import pytest

from wsmooth_ext.analysis.tables import floor_sig, pct
from wsmooth_ext.inputs.checkpoint import load_training_state
from wsmooth_ext.cli import main
from wsmooth_ext.runs.logfile import read_log

pytestmark = [pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning"),
              pytest.mark.usefixtures("one_thread")]

METHODS = ("noise", "consistency", "smoothadv", "macer")
SIGMAS = ("0.01", "0.02")
RADII = (0.0, 0.01, 0.02)
TINY = ["--dataset", "digits", "--train-size", "300", "--epochs", "2", "--lr", "0.01", "--batch", "32",
        "--max-images", "8", "--n0", "16", "--samples", "64", "--radii", "0,0.01,0.02", "--device", "cpu",
        "--no-progress", "--jobs", "1"]  # in this process: the tests replace its runners (--jobs N: tests/test_jobs.py)
TIMES = ("training s", "certification s")


def _experiment(out, *extra):
    return main(["experiment", "certified-training", "--out", str(out), *TINY, *extra])


def _table(text):
    """(header, rows) of the first Markdown table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return cells[0], cells[2:]


def _without_times(header, rows):
    keep = [i for i, name in enumerate(header) if name not in TIMES]
    return [[row[i] for i in keep] for row in rows]


def _rows_without_time(path):
    columns, rows = read_log(path)
    return [{k: v for k, v in row.items() if k not in ("time", "model_sha256")} for row in rows]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """An uninterrupted miniature run (on one thread, like the tests: module fixtures precede one_thread)."""
    import torch

    out = tmp_path_factory.mktemp("experiment") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _experiment(out) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_writes_one_row_per_run_and_the_curves(done):
    names = {p.name for p in done.iterdir()}
    for method in METHODS:
        for sigma in SIGMAS:
            assert {f"{method}_sigma{sigma}.pt", f"{method}_sigma{sigma}.tsv"} <= names
    assert {"summary.md", "certified_accuracy.png", "experiment.json"} <= names
    assert (done / "certified_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, rows = _table((done / "summary.md").read_text())
    assert header[:7] == ["method", "σ", "N", "smoothed acc. %", "abstain %", "median cert. W1", "ACR"]
    assert header[7:] == [f"cert. acc. % @ W1 {floor_sig(r)}" for r in RADII] + list(TIMES)
    assert [(r[0], r[1]) for r in rows] == [(m, s) for s in SIGMAS for m in METHODS]
    assert all(r[2] == "8" for r in rows)
    # each run was trained and certified with the experiment's settings, by the method it is listed under
    for method in METHODS:
        for sigma in SIGMAS:
            _, meta, state = load_training_state(done / f"{method}_sigma{sigma}.pt")
            args = meta["train_args"]
            assert (args["method"], args["sigma"], args["epochs"], args["lr"], args["batch_size"], args["optimizer"],
                    args["train_size"], meta["dataset"]) == (method, float(sigma), 2, 0.01, 32, "adam", 300, "digits")
            assert state["epoch"] == 2
            _, log_rows = read_log(done / f"{method}_sigma{sigma}.tsv")
            assert [r["idx"] for r in log_rows] == list(range(8))
            assert {(r["n0"], r["n"], r["certificate"], r["noise"], r["sigma"], r["split"]) for r in log_rows} == {
                (16, 64, "tight", "flow-laplace", float(sigma), "test")}


def test_table_equals_analyze_and_the_logs(done, capsys):
    header, rows = _table((done / "summary.md").read_text())
    logs = [done / f"{row[0]}_sigma{row[1]}.tsv" for row in rows]
    capsys.readouterr()
    assert main(["analyze", *map(str, logs), "--markdown", "--radii", "0,0.01,0.02"]) == 0
    a_header, a_rows = _table(capsys.readouterr().out)
    assert a_header[5:8] == ["accuracy % (abstain %)", "median radius", "ACR"]
    assert a_header[9:] == [f"cert. acc. % @ {floor_sig(r)}" for r in RADII]
    assert [r[0] for r in a_rows] == [p.name for p in logs]
    nonzero = 0
    for row, a_row, log in zip(rows, a_rows, logs):
        # the same numbers as `wsmooth analyze` on the same logs
        assert f"{row[3]} ({row[4]})" == a_row[5] and row[5:7] == a_row[6:8] and row[7:10] == a_row[9:]
        assert a_row[4] == row[2] and a_row[2] == row[1]
        # and as the logs' rows, counted here
        _, log_rows = read_log(log)
        correct = [r["correct"] == 1 for r in log_rows]
        radius = [r["radius"] if ok else -math.inf for r, ok in zip(log_rows, correct)]
        assert row[3] == pct(100 * sum(correct) / 8)
        assert row[4] == pct(100 * sum(r["predict"] == -1 for r in log_rows) / 8)
        assert row[6] == floor_sig(sum(max(r, 0.0) for r in radius) / 8)
        assert row[5] == ("N/A" if sum(correct) < 4 else floor_sig(sorted(radius, reverse=True)[3]))
        assert row[7:10] == [pct(100 * sum(r >= t for r in radius) / 8) for t in RADII]
        nonzero += row[6] != "0"
        # training time: the sum of the epochs' seconds in the checkpoint; certification: of the log's times
        method, sigma = row[0], row[1]
        history = load_training_state(done / f"{method}_sigma{sigma}.pt")[2]["history"]
        assert row[10] == f"{sum(h['seconds'] for h in history):.1f}"
        assert row[11] == f"{sum(r['time'] for r in log_rows):.1f}"
    assert nonzero >= 4  # the comparison has something to compare: most runs certify some digits


def test_resume_after_interruptions_completes_to_the_same_table(done, tmp_path, monkeypatch, capsys):
    import wsmooth_ext.runs.certify as certify_module
    import wsmooth_ext.training.keywords as train_module

    real_certify, real_train = certify_module.certify_to_log, train_module.train
    calls = {"certify": 0, "train": 0}

    def certify_then_stop(smooth, images, labels, indices, *args, **kwargs):  # run 3 stops after 3 images
        calls["certify"] += 1
        if calls["certify"] == 3:
            real_certify(smooth, images, labels, indices[:3], *args, **kwargs)
            raise KeyboardInterrupt
        return real_certify(smooth, images, labels, indices, *args, **kwargs)

    def train_then_stop(*args, epochs, **kwargs):  # the 5th run's training stops after its first epoch
        calls["train"] += 1
        if calls["train"] == 5:
            real_train(*args, epochs=1, **kwargs)
            raise KeyboardInterrupt
        return real_train(*args, epochs=epochs, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(certify_module, "certify_to_log", certify_then_stop)
    assert _experiment(out) == 130
    assert len(read_log(out / "smoothadv_sigma0.01.tsv")[1]) == 3 and not (out / "summary.md").exists()
    monkeypatch.setattr(certify_module, "certify_to_log", real_certify)
    monkeypatch.setattr(train_module, "train", train_then_stop)
    calls["train"] = 0  # train is called for every run (a finished one only loads its checkpoint)
    assert _experiment(out, "--resume") == 130
    assert load_training_state(out / "noise_sigma0.02.pt")[2]["epoch"] == 1
    monkeypatch.setattr(train_module, "train", real_train)
    capsys.readouterr()
    assert _experiment(out, "--resume") == 0
    printed = capsys.readouterr().out
    assert "noise, sigma 0.01: trained (2 epochs), not retrained" in printed
    assert "noise, sigma 0.02: training 2 epochs from epoch 1" in printed
    header, rows = _table((out / "summary.md").read_text())
    assert _without_times(header, rows) == _without_times(*_table((done / "summary.md").read_text()))
    for log in done.glob("*.tsv"):  # every row as in the uninterrupted run, none lost or duplicated
        assert _rows_without_time(out / log.name) == _rows_without_time(log)


def test_resume_redoes_a_removed_log_with_the_recorded_command(done, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(done, out)
    (out / "macer_sigma0.02.tsv").unlink()
    text = (out / "consistency_sigma0.01.tsv").read_text()
    (out / "consistency_sigma0.01.tsv").write_text(text[:text.index("\n", text.index("\n") + 1) + 20])  # 1.x rows
    command = next(line for line in (done / "summary.md").read_text().splitlines() if line.startswith("Command: "))
    argv = shlex.split(command.split("`")[1])[1:]
    assert argv[:3] == ["experiment", "certified-training", "--out"]
    argv[3] = str(out)
    capsys.readouterr()
    assert main(argv + ["--resume", "--device", "cpu", "--no-progress"]) == 0
    assert "training 2 epochs" not in capsys.readouterr().out  # nothing retrained
    assert _without_times(*_table((out / "summary.md").read_text())) == _without_times(
        *_table((done / "summary.md").read_text()))
    for name in ("macer_sigma0.02.tsv", "consistency_sigma0.01.tsv"):
        assert _rows_without_time(out / name) == _rows_without_time(done / name)


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    assert err.startswith("wsmooth experiment: error:") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_refuses_an_existing_folder_without_resume_and_changed_settings(done, tmp_path, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in done.iterdir()}
    assert _experiment(done) == 2
    _one_error_line(capsys, "--resume", str(done))
    assert _experiment(done, "--resume", "--samples", "32") == 2
    _one_error_line(capsys, "--samples 64 (now 32)")
    assert _experiment(done, "--resume", "--methods", "noise,macer") == 2
    _one_error_line(capsys, "--methods noise,consistency,smoothadv,macer (now noise,macer)")
    assert {p.name: p.stat().st_mtime_ns for p in done.iterdir()} == before  # nothing touched
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _experiment(other, "--resume") == 2
    _one_error_line(capsys, "experiment.json")
    assert _experiment(other / "notes.txt") == 2
    _one_error_line(capsys, "not a directory")


@pytest.mark.parametrize("bad, needle", [
    (["--methods", "noise,foo"], "--methods"), (["--methods", "noise,noise"], "--methods"),
    (["--sigmas", "0.01,0"], "--sigmas"), (["--radii", "-0.01"], "--radii"), (["--epochs", "0"], "--epochs"),
    (["--max-images", "100000"], "--max-images"), (["--train-size", "100000"], "--train-size"),
    (["--alpha", "1"], "--alpha"), (["--noise", "flow-uniform", "--certificate", "tight"], "--certificate"),
    (["--lr", "0"], "--lr"), (["--certify-batch", "0"], "--certify-batch")])
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, bad, needle):
    assert _experiment(tmp_path / "x", *bad) == 2
    _one_error_line(capsys, needle)
    assert not (tmp_path / "x").exists()


def test_help_states_units_defaults_and_quick(capsys):
    with pytest.raises(SystemExit):
        main(["experiment", "certified-training", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("mass-normalized", "(default 0.01,0.02)", "(default 0.01,0.02,0.03)", "(default 20; 4 with --quick)",
                   "(default 500; 100 with --quick)", "(default 10000; 1000 with --quick)", "(default 1000; 100 with",
                   "(default 64)", "(default 0.001)", "(default 0.05)", "seconds"):
        assert phrase in text, phrase


def test_a_sibling_module_becomes_another_experiment(tmp_path, monkeypatch, capsys):
    import wsmooth_ext.commands.experiments as package

    (tmp_path / "fig5_attack.py").write_text(
        "HELP = 'a later experiment'\n"
        "def add_arguments(parser):\n    parser.add_argument('--eps', type=float, default=0.5)\n"
        "def run(args):\n    print('fig5 ran with', args.eps)\n    return 0\n")
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    try:
        assert main(["experiment", "fig5-attack", "--eps", "0.3"]) == 0
        assert "fig5 ran with 0.3" in capsys.readouterr().out
        with pytest.raises(SystemExit):
            main(["experiment", "--help"])
        listed = capsys.readouterr().out
        assert "certified-training" in listed and "fig5-attack" in listed
    finally:
        sys.modules.pop(f"{package.__name__}.fig5_attack", None)


def _without_keys(path, keys):
    import json

    record = json.loads(path.read_text())
    for key in keys:
        del record["settings"][key]
    path.write_text(json.dumps(record))


def test_arch_and_method_options_reach_the_checkpoints(tmp_path, capsys):
    import torch

    out = tmp_path / "cnn4"
    options = ["--arch", "mnist_cnn4", "--num-noise", "3", "--consistency-lambda", "1.5"]
    picked = ["--methods", "noise,consistency", "--sigmas", "0.02", "--train-size", "200", "--epochs", "1",
              "--max-images", "4", "--skip", "3"]
    assert _experiment(out, *picked, *options) == 0
    assert "training 2 mnist_cnn4 on 200 digits images" in capsys.readouterr().out
    summary = (out / "summary.md").read_text()
    assert "`mnist_cnn4` trained on 200 digits training images" in summary
    assert "defaults except `--num-noise 3`, `--consistency-lambda 1.5`" in summary
    assert "--arch mnist_cnn4 --num-noise 3 --consistency-lambda 1.5" in summary  # the command that reruns it
    assert "certified on 4 held-out images (indices 0, 3, 6, ...)" in summary
    assert [r["idx"] for r in read_log(out / "noise_sigma0.02.tsv")[1]] == [0, 3, 6, 9]
    _, meta, _ = load_training_state(out / "consistency_sigma0.02.pt")
    args = meta["train_args"]
    assert meta["arch"] == "mnist_cnn4"
    assert (args["method"], args["num_noise"], args["consistency_lambda"], args["consistency_eta"]) == (
        "consistency", 3, 1.5, 0.5)  # given, given, the method's default
    _, meta, _ = load_training_state(out / "noise_sigma0.02.pt")
    assert (meta["train_args"]["num_noise"], meta["train_args"]["consistency_lambda"]) == (3, None)
    # the very checkpoint `wsmooth train` writes with the same options
    alone = tmp_path / "alone.pt"
    assert main(["train", "--dataset", "digits", "--train-size", "200", "--epochs", "1", "--lr", "0.01", "--batch",
                 "32", "--optimizer", "adam", "--sigma", "0.02", "--method", "consistency", *options, "--out",
                 str(alone), "--no-progress"]) == 0
    ours, theirs = load_training_state(out / "consistency_sigma0.02.pt")[0], load_training_state(alone)[0]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs) and ours.keys() == theirs.keys()
    capsys.readouterr()
    # --resume refuses another architecture or another method option, and a folder recorded before these
    # settings existed resumes as what it was (wong_mnist, each method's defaults)
    assert _experiment(out, *picked, *options[:2], "--resume") == 2
    _one_error_line(capsys, "--num-noise 3 (now 1 for noise, 2 for consistency, 2 for smoothadv, 8 for macer)")
    assert _experiment(out, *picked, *options[2:], "--resume") == 2
    _one_error_line(capsys, "--arch mnist_cnn4 (now wong_mnist)")
    older = tmp_path / "older"
    assert _experiment(older, "--methods", "noise", "--sigmas", "0.02", "--train-size", "200", "--epochs", "1",
                       "--max-images", "2") == 0
    _without_keys(older / "experiment.json", ["arch", "num_noise", "consistency_lambda", "macer_gamma", "skip"])
    capsys.readouterr()
    assert _experiment(older, "--methods", "noise", "--sigmas", "0.02", "--train-size", "200", "--epochs", "1",
                       "--max-images", "2", "--resume") == 0
    assert "trained (1 epochs), not retrained" in capsys.readouterr().out


@pytest.mark.parametrize("bad, needles", [
    (["--methods", "noise,smoothadv", "--macer-gamma", "0.1"],
     ["--macer-gamma: no method of --methods (noise, smoothadv) has it; it belongs to macer"]),
    (["--methods", "noise,consistency", "--num-noise", "1"],
     ["--num-noise must be an integer in [2, 1024] for method consistency, got 1"]),
    (["--consistency-lambda", "-1"], ["--consistency-lambda must be a number in [0, 1000]"]),
    (["--adv-steps", "0"], ["--adv-steps must be an integer in [1, 1000000]"])])
def test_method_options_are_checked_before_any_work(tmp_path, capsys, bad, needles):
    assert _experiment(tmp_path / "x", *bad) == 2
    _one_error_line(capsys, *needles)
    assert not (tmp_path / "x").exists()


SHARED = next((p / "shared" for p in __import__("pathlib").Path(__file__).resolve().parents[3:5]
               if (p / "shared").is_dir()), None)


@pytest.mark.skipif(SHARED is None or not (SHARED / "data" / "MNIST").is_dir(),
                    reason="full MNIST is not in ../shared/data")
def test_runs_on_the_official_mnist_files(tmp_path, capsys):
    out = tmp_path / "mnist"
    assert main(["experiment", "certified-training", "--out", str(out), "--dataset", "mnist", "--data-dir",
                 str(SHARED / "data"), "--arch", "mnist_cnn4", "--methods", "noise", "--sigmas", "0.01",
                 "--train-size", "256", "--epochs", "1", "--batch", "64", "--max-images", "2", "--n0", "8",
                 "--samples", "16", "--device", "cpu", "--no-progress"]) == 0
    rows = read_log(out / "noise_sigma0.01.tsv")[1]
    assert [r["idx"] for r in rows] == [0, 1] and {r["dataset"] for r in rows} == {"mnist"}
    _, meta, _ = load_training_state(out / "noise_sigma0.01.pt")
    assert meta["arch"] == "mnist_cnn4" and meta["input_shape"] == [1, 28, 28] and meta["dataset"] == "mnist"
