"""`wsmooth experiment ... --jobs N`: independent steps in worker processes give the folder of `--jobs 1`
(checkpoint weights, log rows but `time`, summary numbers, experiment.json); a parallel run killed (SIGKILL to its
process group) resumes with another N to the same folder; a failing or dying worker stops the run with its one
error, no worker left, nothing half-written; --jobs is a run option, not a setting.

The runs are certified-training in miniature (8x8 digits, 4 trainings of 4 epochs, 6 images) on one intra-op
thread per step: training on a CPU rounds differently with another thread count, so the comparison holds the
threads per step equal (a worker gets T // N of the parent's T = 1)."""

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from wsmooth_ext.cli import main
from wsmooth_ext.inputs.checkpoint import checkpoint_sha256, load_training_state, trained_epochs
from wsmooth_ext.runs.logfile import read_log

pytestmark = [pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning"),
              pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[2]
TINY = ["--dataset", "digits", "--methods", "noise,consistency", "--sigmas", "0.01,0.02", "--train-size", "600",
        "--epochs", "4", "--lr", "0.01", "--batch", "32", "--max-images", "6", "--n0", "16", "--samples", "64",
        "--radii", "0,0.01", "--device", "cpu", "--no-progress"]
STEMS = [f"{m}_sigma{s}" for s in ("0.01", "0.02") for m in ("noise", "consistency")]
TIMES = ("training s", "certification s")


def _experiment(out, *extra):
    return main(["experiment", "certified-training", "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The folder of an uninterrupted `--jobs 1` run, on one thread (module fixtures precede one_thread)."""
    out = tmp_path_factory.mktemp("jobs") / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _experiment(out, "--jobs", "1") == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _tensors(value, prefix=""):
    """{path: tensor} of every tensor in a nested checkpoint object."""
    if torch.is_tensor(value):
        return {prefix: value}
    if isinstance(value, dict):
        return {k: t for key, v in value.items() for k, t in _tensors(v, f"{prefix}.{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: t for i, v in enumerate(value) for k, t in _tensors(v, f"{prefix}[{i}]").items()}
    return {}


def _without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def _summary(folder: Path) -> list:
    """summary.md's lines with the time columns and the folder's own name taken out."""
    lines = []
    for line in (folder / "summary.md").read_text().replace(str(folder), "OUT").splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            lines.append(cells[:-len(TIMES)] if cells[-len(TIMES):] != list(TIMES) else cells[:-len(TIMES)])
        else:
            lines.append(line)
    return lines


def assert_same_folder(a: Path, b: Path) -> None:
    """Everything but the time the two folders record (and their names) is equal."""
    visible = lambda folder: sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))  # noqa: E731
    assert visible(a) == visible(b)
    for stem in STEMS:
        (wa, ma, sa), (wb, mb, sb) = load_training_state(a / f"{stem}.pt"), load_training_state(b / f"{stem}.pt")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), stem
        assert ma == mb and sa["epoch"] == sb["epoch"] == 4
        assert _without_seconds(sa["history"]) == _without_seconds(sb["history"])
        ta, tb = _tensors(sa), _tensors(sb)  # the optimizer's state, tensor by tensor
        assert ta.keys() == tb.keys() and ta and all(torch.equal(ta[k], tb[k]) for k in ta), stem
        rows = []
        for folder in (a, b):
            logged = read_log(folder / f"{stem}.tsv")[1]
            # the checkpoint's hash differs with its recorded seconds: each log names its own folder's file
            assert {r["model_sha256"] for r in logged} == {checkpoint_sha256(folder / f"{stem}.pt")}
            rows.append([{k: v for k, v in r.items() if k not in ("time", "model_sha256")} for r in logged])
        assert rows[0] == rows[1] and len(rows[0]) == 6
    assert _summary(a) == _summary(b)
    ra, rb = (json.loads((f / "experiment.json").read_text().replace(str(f), "OUT")) for f in (a, b))
    assert {k: v for k, v in ra.items() if k != "started"} == {k: v for k, v in rb.items() if k != "started"}
    assert "jobs" not in ra["settings"] and "--jobs" not in ra["command"]


def test_two_jobs_write_the_folder_of_one(sequential, tmp_path, capsys):
    out = tmp_path / "two"
    capsys.readouterr()
    assert _experiment(out, "--jobs", "2") == 0
    printed = capsys.readouterr().out.splitlines()
    assert_same_folder(sequential, out)
    assert "--jobs 2: 2 worker processes, 1 thread each; their steps' lines as they come" in printed
    steps = [line for line in printed if re.match(r"\[\d/4\] ", line)]
    # every step's line names its step (the epoch rows too), and the parent counts the 8 steps done
    for k, stem in enumerate(STEMS, start=1):
        method, sigma = stem.split("_sigma")
        mine = [line for line in steps if line.startswith(f"[{k}/4] {method}, sigma {sigma}: ")]
        assert sum("epoch " in line for line in mine) == 4
        assert f"[{k}/4] {method}, sigma {sigma}: model ready" in " ".join(mine)
        assert any(f"{stem}.tsv written" in line for line in mine)
    assert sum("steps done)" in line for line in steps) == 8 and "(8/8 steps done)" in steps[-1]
    assert not multiprocessing.active_children()


def test_a_killed_parallel_run_resumes_with_another_n_to_the_same_folder(sequential, tmp_path, capsys):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "wsmooth_ext", "experiment", "certified-training", "--out", str(out), *TINY,
               "--jobs", "2"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: the parent and its workers
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.pt")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and both workers at once, mid-training
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    done = [trained_epochs(out / f"{stem}.pt") for stem in STEMS]
    assert not (out / "summary.md").exists() and min(done) < 4, done
    capsys.readouterr()
    assert _experiment(out, "--resume", "--jobs", "1") == 0  # --jobs is no setting: another N resumes it
    printed = capsys.readouterr().out
    assert "from epoch" in printed or "training 4 epochs" in printed
    assert_same_folder(sequential, out)


# ---- a failing or dying worker --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ready:
    """A model that needs no work (a one-layer net)."""

    name: str
    label: str

    def obtain(self, ctx, tag):
        from wsmooth_ext.experiments.steps import Model

        return Model(self.name, ctx.out / f"{self.name}.pt", True, "ready", torch.nn.Linear(1, 1), "0" * 16)


@dataclass(frozen=True, kw_only=True)
class Behave:
    """An evaluation that fails (``raise``), kills its own process (``die``) or writes its file slowly, its
    temporary open all along (``slow``: what a terminated worker must not leave behind)."""

    log: str
    label: str
    how: str

    def run(self, ctx, model, tag):
        path = ctx.out / self.log
        if self.how == "raise":
            time.sleep(1)  # the slow one has started
            raise ValueError(f"{self.label} cannot go on")
        if self.how == "die":
            time.sleep(1)
            os.kill(os.getpid(), signal.SIGKILL)
        partial = path.with_name(f".{path.name}.tmp")
        try:
            partial.write_text("half")
            time.sleep(120)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return path


def _behaving(how):
    from wsmooth_ext.experiments import options
    from wsmooth_ext.experiments.engine import Experiment, Report
    from wsmooth_ext.experiments.steps import Run

    def plan(s, extras):
        return [Run(Ready("a", "slow model"), (Behave(log="a.txt", label="slow model", how="slow"),)),
                Run(Ready("b", "bad model"), (Behave(log="b.txt", label="bad model", how=how),))]

    return Experiment("behave", (options.DATASET, options.images(1)), plan, lambda result: Report("", "", {}))


@pytest.mark.parametrize("how, error, needle", [
    ("raise", ValueError, r"^bad model cannot go on$"),
    ("die", None, r"^\[2/2\] bad model: its worker process was killed by signal 9 .*--resume continues them$"),
])
def test_a_failing_worker_stops_the_run_with_its_one_error(how, error, needle, tmp_path):
    from wsmooth_ext.experiments._jobs import WorkerFailedError
    from wsmooth_ext.experiments.engine import run_experiment

    experiment = _behaving(how)
    out, lines = tmp_path / how, []
    started = time.monotonic()
    with pytest.raises(error or WorkerFailedError, match=needle):
        run_experiment(experiment, out, experiment.settings(dataset="digits"), progress=False, log=lines.append,
                       jobs=2)
    assert time.monotonic() - started < 60  # the slow step (120 s) was stopped, not waited for
    assert not multiprocessing.active_children()
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".lock")) == ["experiment.json"]
    assert any(line.startswith("[1/2] slow model: model ready") for line in lines), lines


def test_jobs_is_a_run_option_with_a_range(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["experiment", "table1", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--jobs N steps run at once" in text and "results do not depend on it" in text
    assert "(default the number of cores" in text and "); an integer in [1, 64]" in text
    for bad in ("0", "65"):
        assert _experiment(tmp_path / "x", "--jobs", bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"wsmooth experiment: error: --jobs must be an integer in [1, 64], got {bad}"], err
        assert not (tmp_path / "x").exists()
