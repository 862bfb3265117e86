"""`wsmooth experiment table1` in miniature: two given 8x8-digit models (flow- and pixel-laplace, sigma 0.01), six test
digits, small sample counts. The table's layout, its cells against the logs (counted here), the paper's numbers
against the paper's text, resume, refusals; a few official MNIST test digits with the authors' model where the
shared data and checkpoints are present."""

import dataclasses
import math
import re
import shutil
from pathlib import Path

import pytest

from wsmooth_ext.analysis.tables import floor_sig, pct
from wsmooth_ext.cli import main
from wsmooth_ext.experiments.table1 import NOISES, PAPER, SIGMAS
from wsmooth_ext.runs.logfile import read_log

pytestmark = [pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning"),
              pytest.mark.usefixtures("one_thread")]

# ../shared beside the checkout (or beside the folder of worktrees): full MNIST, the paper, the authors' models
SHARED = next((p / "shared" for p in Path(__file__).resolve().parents[3:5] if (p / "shared").is_dir()),
              Path("../shared"))
PAPER_TEXT = SHARED / "paper" / "wasserstein_smoothing_levine_feizi_2020.txt"
AUTHORS = SHARED / "checkpoints" / "levine_feizi_2020"
TINY = ["--dataset", "digits", "--sigmas", "0.01,0.02", "--skip", "2", "--max-images", "6", "--n-predict", "64",
        "--n0", "16", "--samples", "64", "--pattern", "{noise}_sigma{sigma}.pt", "--device", "cpu", "--no-progress",
        "--jobs", "1"]  # in this process: the tests replace its runners (--jobs N: tests/test_jobs.py)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A folder with flow-laplace_sigma0.01.pt and pixel-laplace_sigma0.01.pt, trained 3 epochs on 600 digits."""
    import torch

    from conftest import wong_digits_model
    from wsmooth_ext.inputs.data import load_dataset
    from wsmooth_ext.training.keywords import train

    folder = tmp_path_factory.mktemp("models")
    x, y = load_dataset("digits", "train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for noise in ("flow-laplace", "pixel-laplace"):
            train(wong_digits_model(), x[:600], y[:600], noise=noise, sigma=0.01, epochs=3, lr=0.01, batch_size=32,
                  optimizer="adam", checkpoint_path=folder / f"{noise}_sigma0.01.pt", progress=False,
                  log=lambda line: None, metadata={"dataset": "digits"})
    finally:
        torch.set_num_threads(threads)
    return folder


def _experiment(out, models, *extra):
    return main(["experiment", "table1", "--out", str(out), "--checkpoints", str(models), *TINY, *extra])


@pytest.fixture(scope="module")
def done(models, tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("table1") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _experiment(out, models) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _halves(text):
    """{title: (header, rows)} of the Markdown tables of summary.md, each titled by the line "TITLE:" before it."""
    halves, title, table = {}, None, []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
            continue
        if table:
            halves[title], table = (table[0], table[2:]), []
        if line.endswith(":"):
            title = line[:-1]
    return halves


def _tight_w1(p, noise, sigma=0.01):
    """Tight certificate, computed here: rho1 = -lambda ln(2(1-p)), lambda = sigma/sqrt(2); W1 (L2 ground) is
    rho1/sqrt(2) for flow noise, rho1/2 for pixel noise."""
    if p <= 0.5:
        return 0.0
    rho1 = -(sigma / math.sqrt(2)) * math.log(2 * (1 - p))
    return rho1 / (math.sqrt(2) if noise == "flow-laplace" else 2)


def test_summary_has_the_papers_layout_and_our_cells_from_the_logs(done):
    halves = _halves((done / "summary.md").read_text())
    assert list(halves) == ["Wasserstein smoothing (flow-laplace)", "Laplace smoothing (pixel-laplace)"]
    for noise, (header, rows) in zip(("flow-laplace", "pixel-laplace"), halves.values()):
        assert header[:5] == ["σ", "N", "accuracy % (abstain %)", "paper", "Δ"]
        assert header[6:] == ["median cert. W1", "paper", "Δ", "median W1, tight cert.", "base acc. % under noise",
                              "paper", "Δ", "s/image"]
        assert [r[0] for r in rows] == ["0.01", "0.02"]
        assert rows[1][1] == "no checkpoint"  # no file for sigma 0.02: skipped
        row, paper = rows[0], PAPER[noise][0.01]
        predicted = read_log(done / f"{noise}_sigma0.01_predict.tsv")[1]
        certified = read_log(done / f"{noise}_sigma0.01_certify.tsv")[1]
        assert [r["idx"] for r in predicted] == [r["idx"] for r in certified] == [0, 2, 4, 6, 8, 10]
        assert {(r["n"], r["sigma"], r["noise"]) for r in predicted} == {(64, 0.01, noise)}
        assert {(r["n0"], r["n"], r["certificate"]) for r in certified} == {(16, 64, "paper")}
        accuracy = 100 * sum(r["predict"] == r["label"] for r in predicted) / 6
        abstain = 100 * sum(r["predict"] == -1 for r in predicted) / 6
        assert row[1:5] == ["6", f"{pct(accuracy)} ({pct(abstain)})", f"{pct(paper[0])} ({pct(paper[1])})",
                            f"{accuracy - paper[0]:+.4g}"]
        radii = sorted((r["radius"] if r["correct"] == 1 else -math.inf for r in certified), reverse=True)
        tight = sorted((_tight_w1(r["p_lower"], noise) if r["correct"] == 1 else -math.inf for r in certified),
                       reverse=True)
        assert row[6] == ("N/A" if radii[2] == -math.inf else floor_sig(radii[2]))
        assert row[7] == f"{paper[2]:g}"
        assert row[9] == ("N/A" if tight[2] == -math.inf else floor_sig(tight[2]))
        if radii[2] > 0:  # the tight certificate is larger than the paper's at every p > 1/2
            assert tight[2] > radii[2] and row[8] == f"{radii[2] - paper[2]:+.4g}"
        base = 100 * sum(r["count_label"] for r in certified) / sum(r["n"] for r in certified)
        assert row[10:13] == [pct(base), pct(paper[3]), f"{base - paper[3]:+.4g}"]
        low, high = (float(v) for v in row[5].split(" ")[0].split("–"))
        assert low <= accuracy <= high and ("✓" in row[5]) == (low <= paper[0] <= high)
    assert any(h[1][0][6] != "N/A" for h in halves.values())  # something is certified
    text = (done / "summary.md").read_text()
    assert "Command: `wsmooth experiment table1 --out" in text and "--skip 2" in text
    assert {p.name for p in done.glob("*.png")} == {"certified_accuracy_flow-laplace.png",
                                                     "certified_accuracy_pixel-laplace.png", "noise_samples.png"}


def test_noise_picture_shows_the_samples_certification_votes_on(done, models, tmp_path):
    import numpy as np
    import torch

    from picture_checks import assert_noise_grid_shows, png_bytes
    from wsmooth_ext import Smooth
    from wsmooth_ext.experiments.table1 import noise_figure
    from wsmooth_ext.inputs.checkpoint import load_checkpoint
    from wsmooth_ext.inputs.data import load_dataset

    text = (done / "summary.md").read_text()
    # 2 noises x 2 sigmas = 4 rows an image: the first two evaluated images (every 2nd) fill the grid's 8 rows
    assert "Noise samples: [`noise_samples.png`](noise_samples.png): test images 0, 2 under each noise" in text
    x, y = load_dataset("digits", "test")
    noises, sigmas, keys = ("flow-laplace", "pixel-laplace"), (0.01, 0.02), [0, 2]
    fig = noise_figure(x, y, keys, noises, sigmas, 0, "digits")
    axes = assert_noise_grid_shows(fig, x[keys], keys, noises, sigmas, 4, seed=0)  # the op's samples, seed 0
    assert png_bytes(fig, tmp_path) == (done / "noise_samples.png").read_bytes()  # the file is this figure
    for noise in noises:  # what the certified model votes on these panels is what Smooth counts when certifying
        model = load_checkpoint(models / f"{noise}_sigma0.01.pt")[0].eval()
        smooth = Smooth(model, 10, 0.01, noise=noise, seed=0)
        for b, key in enumerate(keys):
            row = axes[b * 4 + noises.index(noise) * 2]  # σ 0.01
            panels = torch.tensor(np.stack([ax.images[0].get_array() for ax in row[1:]]), dtype=torch.float32)
            with torch.no_grad():
                votes = model(panels[:, None]).argmax(dim=1)
            counts = smooth.count_classes(x[key:key + 1], 4, sample_offset=0, keys=torch.tensor([key]))[0]
            assert torch.bincount(votes, minlength=10).tolist() == counts.tolist()


def test_noise_picture_size_follows_the_runs_noises_and_sigmas(tmp_path):
    """Images while the grid fits 8 rows (1 to 3); σ beyond the grid's 32 rows are named as not drawn."""
    from types import SimpleNamespace

    from wsmooth_ext.experiments.table1 import NOISE_FILE, _noise_picture
    from wsmooth_ext.inputs.data import load_dataset

    x, y = load_dataset("digits", "test")
    data = SimpleNamespace(test_x=x, test_y=y, indices=[0, 5, 10, 15])

    def picture(noises, sigmas):
        settings = SimpleNamespace(noises=noises, sigmas=sigmas, seed=3, dataset="digits")
        return _noise_picture(SimpleNamespace(settings=settings, data=data))

    assert "test images 0, 5, 10 under each noise at each σ, samples" in picture(("flow-laplace",), (0.01, 0.02))[1]
    assert "test images 0, 5 under" in picture(("flow-laplace", "pixel-laplace"), (0.01, 0.02))[1]
    assert "test image 0 under each noise at each σ, samples" in picture(NOISES, SIGMAS)[1]
    many = tuple(round(0.001 * k, 3) for k in range(1, 18))  # 2 x 17 rows: the last σ does not fit
    plots, text = picture(NOISES, many)
    assert "test image 0 under each noise at each σ (σ 0.017 not drawn: at most 32 rows)" in text
    plots[NOISE_FILE](tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(not PAPER_TEXT.is_file(), reason="the paper's text is not in ../shared")
def test_the_papers_numbers_are_those_printed_in_its_table_1():
    lines = PAPER_TEXT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Table 1 Certified"))
    printed = [re.fullmatch(r"([\d.]+) ([\d.]+)\(([\d.]+)\) (\S+) ([\d.]+)", line) for line in lines[start:start + 30]]
    printed = [m.groups() for m in printed if m]
    assert len(printed) == 14
    ours = [(sigma, values) for noise in ("flow-laplace", "pixel-laplace") for sigma, values in PAPER[noise].items()]
    for (sigma, accuracy, abstain, median, base), (our_sigma, values) in zip(printed, ours):
        assert float(sigma) == our_sigma
        assert (float(accuracy), float(abstain), None if median == "N/A" else float(median), float(base)) == values


def test_resume_after_an_interruption_gives_the_same_logs(done, models, tmp_path, monkeypatch, capsys):
    import wsmooth_ext.runs.certify as certify_module

    from conftest import interrupted_after

    real = certify_module.certify_to_log
    out = tmp_path / "run"
    monkeypatch.setattr(certify_module, "certify_to_log", interrupted_after(real, 2))
    assert _experiment(out, models) == 130
    assert len(read_log(out / "flow-laplace_sigma0.01_certify.tsv")[1]) == 2 and not (out / "summary.md").exists()
    monkeypatch.setattr(certify_module, "certify_to_log", real)
    capsys.readouterr()
    assert _experiment(out, models, "--resume") == 0
    printed = capsys.readouterr().out
    assert "flow-laplace, sigma 0.01: predicted (6 images), not repredicted" in printed
    assert "flow-laplace, sigma 0.01: certifying 6 images from image 2" in printed
    for log in done.glob("*.tsv"):
        assert [{k: v for k, v in r.items() if k != "time"} for r in read_log(out / log.name)[1]] == [
            {k: v for k, v in r.items() if k != "time"} for r in read_log(log)[1]]
    pictures = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert pictures["noise_samples.png"] == (done / "noise_samples.png").read_bytes()
    assert _experiment(out, models, "--resume") == 0  # finished: the same pictures again
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == pictures


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    assert err.startswith("wsmooth experiment: error:") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def test_refusals(done, models, tmp_path, capsys):
    assert _experiment(done, models, "--resume", "--samples", "32") == 2
    _one_error_line(capsys, "--samples 64 (now 32)")
    changed = tmp_path / "changed"
    shutil.copytree(models, changed)
    resumed = tmp_path / "resumed"
    assert _experiment(resumed, changed, "--noises", "flow-laplace", "--max-images", "1") == 0
    with open(changed / "flow-laplace_sigma0.01.pt", "ab") as handle:  # another file at the same path
        handle.write(b"\0")
    capsys.readouterr()
    assert _experiment(resumed, changed, "--noises", "flow-laplace", "--max-images", "1", "--resume") == 2
    _one_error_line(capsys, "--checkpoints", "changed since")
    shutil.copy(changed / "pixel-laplace_sigma0.01.pt", changed / "flow-laplace_sigma0.01.pt")
    # a file whose recorded noise is not its row's
    assert _experiment(tmp_path / "x", changed, "--noises", "flow-laplace") == 2
    _one_error_line(capsys, "trained with pixel-laplace noise")
    for bad, needle in ((["--pattern", "model.pt"], "--pattern"), (["--sigmas", "0.01,0.01"], "--sigmas"),
                        (["--noises", "flow-uniform"], "--noises"), (["--skip", "0"], "--skip"),
                        (["--sigmas", "0.03"], "holds no file")):
        assert _experiment(tmp_path / "x", models, *bad) == 2
        _one_error_line(capsys, needle)
    assert main(["experiment", "table1", "--out", str(tmp_path / "x"), "--checkpoints", str(tmp_path / "none")]) == 2
    _one_error_line(capsys, "--checkpoints", "no such directory")
    assert not (tmp_path / "x").exists()


def test_data_dir_comes_from_wsmooth_data_and_missing_files_are_named(models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WSMOOTH_DATA", str(tmp_path))
    assert main(["experiment", "table1", "--out", str(tmp_path / "x"), "--checkpoints", str(models),
                 "--pattern", "{noise}_sigma{sigma}.pt", "--sigmas", "0.01"]) == 2
    _one_error_line(capsys, f"MNIST test files not found under {tmp_path}", "MNIST/raw/t10k-images-idx3-ubyte")


@pytest.mark.skipif(not (SHARED / "data" / "MNIST").is_dir() or not AUTHORS.is_dir(),
                    reason="full MNIST or the authors' checkpoints are not in ../shared")
def test_the_authors_model_on_official_test_digits(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WSMOOTH_DATA", str(SHARED / "data"))
    out = tmp_path / "authors"
    assert main(["experiment", "table1", "--out", str(out), "--checkpoints", str(AUTHORS), "--noises",
                 "flow-laplace", "--sigmas", "0.01", "--skip", "1000", "--n-predict", "200", "--n0", "50",
                 "--samples", "200", "--device", "cpu", "--no-progress"]) == 0
    rows = read_log(out / "flow-laplace_sigma0.01_certify.tsv")[1]
    assert [r["idx"] for r in rows] == list(range(0, 10000, 1000)) and rows[0]["dataset"] == "mnist"
    assert sum(r["correct"] for r in rows) >= 8  # the paper's model: 98% accurate under this noise


def test_the_closing_command_names_where_the_mnist_files_were_read(tmp_path):
    # a run on the official files reproduces only with their folder; the embedded datasets need none
    from wsmooth_ext.experiments.engine import command_line
    from wsmooth_ext.experiments.table1 import EXPERIMENT

    mnist = EXPERIMENT.check_settings(EXPERIMENT.defaults(quick=True))
    assert mnist.dataset == "mnist"
    line = command_line(EXPERIMENT, mnist, tmp_path, quick=True, data_dir="../shared/data")
    assert line.endswith("--data-dir ../shared/data")
    assert "--data-dir" not in command_line(EXPERIMENT, mnist, tmp_path, quick=True)
    digits = EXPERIMENT.check_settings(dataclasses.replace(mnist, dataset="digits"))
    assert "--data-dir" not in command_line(EXPERIMENT, digits, tmp_path, quick=True, data_dir="../shared/data")
