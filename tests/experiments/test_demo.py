"""`wsmooth demo` in miniature: outputs, the two certificates' radii from the same p_lower (checked against
the closed forms of docs/math.md), rerun/resume and --overwrite, argument errors, and its folder as the
experiment engine's (experiment.json, refused changes, the engine's own run continuing it)."""

import json
import math

import pytest
import torch

from wsmooth_ext.runs.logfile import read_log
from wsmooth_ext.cli import main

pytestmark = [pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning"), pytest.mark.usefixtures("one_thread")]


MINI_SETTINGS = {"--epochs": "1", "--train-size": "200", "--num-certify": "4", "--n0": "20", "--n": "100",
                 "--batch-size": "400"}


def _mini(**changes):
    """The miniature demo's options, with ``n="200"``-style changes."""
    settings = {**MINI_SETTINGS, **{f"--{k.replace('_', '-')}": v for k, v in changes.items()}}
    return [item for pair in settings.items() for item in pair] + ["--no-progress"]


MINI = _mini()


def _closed_form(p, sigma, noise, certificate):
    """W1 radius (L2 ground metric) written out from the table of docs/math.md."""
    if p <= 0.5:
        return 0.0
    lam = sigma / math.sqrt(2)
    rho1 = (lam / 2) * math.log(p / (1 - p)) if certificate == "paper" else -lam * math.log(2 * (1 - p))
    return rho1 / 2 if noise == "pixel-laplace" else rho1 / math.sqrt(2)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), *MINI]) == 0
    return out


def test_demo_writes_everything(demo_dir):
    names = {p.name for p in demo_dir.iterdir()}
    for noise in ("flow-laplace", "pixel-laplace"):
        assert {f"{noise}_sigma0.01.pt", f"{noise}_sigma0.01_tight.tsv", f"{noise}_sigma0.01_paper.tsv"} <= names
    assert {"summary.md", "certified_accuracy.png"} <= names
    assert (demo_dir / "certified_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (demo_dir / "summary.md").read_text()
    assert "median radius (paper)" in summary and "median radius (tight)" in summary and "pixel-laplace" in summary


def test_both_certificates_come_from_the_same_p_lower(demo_dir):
    for noise in ("flow-laplace", "pixel-laplace"):
        columns, tight = read_log(demo_dir / f"{noise}_sigma0.01_tight.tsv")
        _, paper = read_log(demo_dir / f"{noise}_sigma0.01_paper.tsv")
        assert columns[:6] == ["idx", "label", "predict", "radius", "correct", "time"]
        assert [r["idx"] for r in tight] == [0, 1, 2, 3]
        for t, p in zip(tight, paper):
            assert t["certificate"] == "tight" and p["certificate"] == "paper" and t["noise"] == noise
            same = ("idx", "label", "predict", "correct", "p_lower", "count_top", "count_label", "n0", "n", "sigma")
            assert all(t[k] == p[k] for k in same)
            assert (t["n0"], t["n"]) == (20, 100)
            if t["predict"] == -1:
                assert t["radius"] == p["radius"] == 0.0
                continue
            for row, cert in ((t, "tight"), (p, "paper")):
                expected = _closed_form(row["p_lower"], 0.01, noise, cert)
                assert row["radius"] <= expected and row["radius"] == pytest.approx(expected, rel=1e-9, abs=0)


def test_rerun_reuses_outputs_and_overwrite_starts_over(demo_dir, capsys):
    before = (demo_dir / "flow-laplace_sigma0.01_tight.tsv").read_text()
    assert main(["demo", "--out", str(demo_dir), *MINI]) == 0
    out = capsys.readouterr().out
    assert "epoch   1/1" not in out  # both models already trained: nothing retrained
    assert "[1/2] flow-laplace: trained (1 epochs), not retrained" in out
    assert "[2/2] pixel-laplace: certified (4 digits), not recertified" in out
    assert (demo_dir / "flow-laplace_sigma0.01_tight.tsv").read_text() == before  # no duplicated rows
    # changed certification settings do not silently mix into the old log
    assert main(["demo", "--out", str(demo_dir), *_mini(n="200")]) == 2
    err = capsys.readouterr().err
    assert "--n 100 (now 200)" in err and "--overwrite" in err and err.count("\n") == 1


def test_overwrite(tmp_path, capsys):
    small = dict(train_size="64", num_certify="2", n0="10")
    assert main(["demo", "--out", str(tmp_path), *_mini(n="30", **small)]) == 0
    assert main(["demo", "--out", str(tmp_path), "--overwrite", *_mini(n="40", **small)]) == 0
    _, rows = read_log(tmp_path / "pixel-laplace_sigma0.01_tight.tsv")
    assert [r["n"] for r in rows] == [40, 40]
    assert "epoch   1/1" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["--n", "0"], ["--num-certify", "1001"], ["--sigma", "-1"],
                                 ["--train-size", "5000"]])
def test_bad_arguments(tmp_path, capsys, bad):
    assert main(["demo", "--out", str(tmp_path / "x"), *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wsmooth demo: error:") and err.count("\n") == 1


def test_help_states_recipe_and_units(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    assert "mass-normalized" in text and "Adam" in text and "paper's recipe" in text


def test_more_epochs_retrain_and_recertify(tmp_path, capsys):
    small = dict(train_size="64", num_certify="2", n0="10", n="30")
    assert main(["demo", "--out", str(tmp_path), *_mini(**small)]) == 0
    log = tmp_path / "flow-laplace_sigma0.01_tight.tsv"
    marker = "# certified with the 1-epoch model\n"
    # a marker line the log reader would reject if it were kept: proves the stale log is replaced
    with open(log, "a") as fh:
        fh.write(marker)
    assert main(["demo", "--out", str(tmp_path), *_mini(epochs="2", **small)]) == 0
    out = capsys.readouterr().out
    assert marker not in log.read_text()
    assert "epoch   2/2" in out
    from wsmooth_ext.inputs.checkpoint import load_training_state
    assert load_training_state(tmp_path / "flow-laplace_sigma0.01.pt")[2]["epoch"] == 2
    # the logs were rewritten for the 2-epoch model, not kept from the 1-epoch one
    _, rows = read_log(tmp_path / "flow-laplace_sigma0.01_tight.tsv")
    assert [r["idx"] for r in rows] == [0, 1]
    assert json.loads((tmp_path / "experiment.json").read_text())["settings"]["epochs"] == 2
    # a rerun with more digits extends the logs: the rows there stay as they are
    kept = read_log(log)[1]
    assert main(["demo", "--out", str(tmp_path), *_mini(epochs="2", **{**small, "num_certify": "3"})]) == 0
    rows = read_log(log)[1]
    assert [r["idx"] for r in rows] == [0, 1, 2] and rows[:2] == kept
    out = capsys.readouterr().out
    assert "epoch   1/2" not in out and "[1/2] flow-laplace: trained (2 epochs), not retrained" in out
    assert main(["demo", "--out", str(tmp_path), *_mini(epochs="1", **small)]) == 2
    assert "--epochs 2 (now 1)" in capsys.readouterr().err


def test_the_demo_folder_is_an_experiment_engine_folder(demo_dir, tmp_path, capsys):
    from wsmooth_ext.commands.experiment import experiments
    from wsmooth_ext.experiments import demo
    from wsmooth_ext.experiments.engine import run_experiment

    record = json.loads((demo_dir / "experiment.json").read_text())
    assert record["experiment"] == "demo" and not record["quick"]
    expected = {"dataset": "mnist5k", "sigma": 0.01, "train_size": 200, "epochs": 1, "optimizer": "adam",
                "lr": 0.001, "batch": 64, "momentum": 0.9, "weight_decay": 5e-4, "seed": 0, "max_images": 4,
                "n0": 20, "n": 100, "alpha": 0.05}  # the options given, and the recipe
    assert {k: record["settings"].get(k) for k in expected} == expected
    command = f"wsmooth demo --out {demo_dir} --train-size 200 --epochs 1 --num-certify 4 --n0 20 --n 100"
    assert record["command"] == command
    assert (demo_dir / "summary.md").read_text().endswith(f"Command: `{command}` (rerun it to continue it).\n")
    # the engine's own run continues the folder: everything finished, nothing redone
    lines = []
    settings = demo.EXPERIMENT.settings(**{k: v for k, v in record["settings"].items()})
    before = {p.name: p.read_bytes() for p in demo_dir.glob("*.tsv")}
    run_experiment(demo.EXPERIMENT, demo_dir, settings, resume=True, progress=False, log=lines.append)
    assert "[1/2] flow-laplace: trained (1 epochs), not retrained" in lines
    assert {p.name: p.read_bytes() for p in demo_dir.glob("*.tsv")} == before
    # and refuses what the demo command refuses: a changed setting, an unrelated folder
    with pytest.raises(ValueError, match=r"--num-certify 4 \(now 3\)"):
        run_experiment(demo.EXPERIMENT, demo_dir, demo.EXPERIMENT.settings(**{**record["settings"], "max_images": 3}),
                       resume=True, progress=False, log=lines.append)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(other), *MINI]) == 2
    assert "no experiment.json" in capsys.readouterr().err
    assert main(["demo", "--out", str(other), "--overwrite", *MINI]) == 2  # deletes only the demo's files
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    capsys.readouterr()
    # the demo is not a `wsmooth experiment` subcommand: `wsmooth demo` runs it
    assert "demo" not in experiments()
