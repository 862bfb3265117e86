"""`wsmooth experiment fig5` in miniature (8x8 digits, 2 epochs, 4 digits, 3 attack iterations, n_test 32): its
outputs, its tables against the logs (counted here) and its logs against `wsmooth attack`, given checkpoints,
resuming after interruptions, refusals."""

import math
import shutil
import statistics

import pytest
import torch

from wsmooth_ext.analysis.pictures import nearest_fooled
from wsmooth_ext.core.wasserstein import wasserstein_distance
from wsmooth_ext.experiments import fig5
from wsmooth_ext.inputs.checkpoint import load_training_state
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.cli import main
from wsmooth_ext.runs.logfile import read_log

pytestmark = [pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning"),
              pytest.mark.usefixtures("one_thread")]

MODELS = ("standard", "adversarial", "smoothed")
METHODS = ("sinkhorn", "frank-wolfe")
GRID = (0.0, 0.1, 0.2, 0.4)
ATTACK = ["--max-images", "4", "--max-iter", "3", "--eps0", "0.1", "--eps-factor", "2", "--eps-every", "1"]
TINY = ["--dataset", "digits", "--train-size", "300", "--epochs", "2", "--lr", "0.01", "--batch", "32",
        "--adv-eps-warmup", "1", *ATTACK, "--n-grad", "4", "--n-test", "32", "--attack-batch", "2",
        "--grid", "0,0.1,0.2,0.4", "--device", "cpu", "--no-progress",
        "--jobs", "1"]  # in this process: the tests replace its runners (--jobs N: tests/test_jobs.py)


def _experiment(out, *extra):
    return main(["experiment", "fig5", "--out", str(out), *TINY, *extra])


def _tables(text):
    """[(header, rows)] of the Markdown tables in ``text``, in order."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip("|").split("|")])
        elif current:
            tables.append((current[0], current[2:]))
            current = []
    return tables


def _attack_tables(folder):
    """(nominal, w1) tables of summary.md: the 2nd and 3rd (the 1st lists the models)."""
    tables = _tables((folder / "summary.md").read_text())
    assert len(tables) == 3
    return tables[1], tables[2]


def _without(header, rows, *names):
    keep = [i for i, name in enumerate(header) if name not in names]
    return [[row[i] for i in keep] for row in rows]


def _rows_without_time(path):
    return [{k: v for k, v in row.items() if k not in ("time", "model_sha256")} for row in read_log(path)[1]]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """An uninterrupted miniature run (on one thread, like the tests: module fixtures precede one_thread)."""
    import torch

    out = tmp_path_factory.mktemp("fig5") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _experiment(out) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_writes_models_logs_tables_and_curves(done):
    names = {p.name for p in done.iterdir()}
    assert {f"{m}.pt" for m in MODELS} | {f"{m}_{a}.tsv" for m in MODELS for a in METHODS} | {
        "summary.md", "fig5.png", "experiment.json", "adversarial"} <= names
    assert {p.name for p in (done / "adversarial").iterdir()} == {f"{m}_{a}.pt" for m in MODELS for a in METHODS}
    assert (done / "fig5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each model trained as the experiment says: plain, flow-adversarial, flow-laplace noise
    kinds = {}
    for m in MODELS:
        _, meta, state = load_training_state(done / f"{m}.pt")
        args = meta["train_args"]
        assert state["epoch"] == 2 and meta["dataset"] == "digits"
        assert (args["epochs"], args["lr"], args["batch_size"], args["optimizer"], args["train_size"]) == (
            2, 0.01, 32, "adam", 300)
        kinds[m] = (args["noise"], args["adversarial"], args["adv_eps"])
    assert kinds == {"standard": ("none", "none", None), "adversarial": ("none", "flow", 0.3),
                     "smoothed": ("flow-laplace", "none", None)}
    assert load_training_state(done / "smoothed.pt")[1]["sigma"] == 0.01
    # each log: the 4 digits, growing eps, the smoothed model attacked as a smoothed classifier
    for m in MODELS:
        for a in METHODS:
            columns, rows = read_log(done / f"{m}_{a}.tsv")
            assert columns[:7] == ["idx", "label", "predict", "radius", "w1", "success", "time"]
            assert [r["idx"] for r in rows] == [0, 1, 2, 3]
            settings = {(r["method"], r["mode"], r["eps0"], r["eps_factor"], r["eps_every"], r["max_iter"], r["eps"],
                         r.get("n_test"), r.get("n_grad"), r.get("sigma")) for r in rows}
            assert ("n_grad" in columns) == (m == "smoothed")  # a plain attack's log has no smoothed target
            smoothed = (("smoothed", 0.1, 2.0, 1, 3, None, 32, 4, 0.01) if m == "smoothed"
                        else ("plain", 0.1, 2.0, 1, 3, None, None, None, None))
            assert settings == {(a,) + smoothed}
    nominal, w1 = _attack_tables(done)
    assert nominal[0][:4] == ["model", "attack", "N", "clean acc. %"]
    assert nominal[0][4:] == ["acc. % @ ε 0", "acc. % @ ε 0.1", "acc. % @ ε 0.2", "acc. % @ ε 0.4", "median ε",
                              "s/digit"]
    assert w1[0][4:] == ["acc. % @ W1 0", "acc. % @ W1 0.1", "acc. % @ W1 0.2", "acc. % @ W1 0.4", "median W1",
                         "W1/ε"]
    assert [r[:3] for r in nominal[1]] == [[m, a, "4"] for m in MODELS for a in METHODS] == [r[:3] for r in w1[1]]
    text = (done / "summary.md").read_text()
    assert "Command: `wsmooth experiment fig5 --out" in text and "W1 ≤ r" in text


def _broken_at(row, column):
    """The distance at which the digit counts as broken: 0 if wrong before, inf if never fooled (counted here)."""
    if row["predict"] != row["label"]:
        return 0.0
    return float(row[column]) if row["success"] == 1 else math.inf


def test_tables_equal_an_independent_count_from_the_logs(done):
    nominal, w1 = _attack_tables(done)
    broke_something = 0
    for (header, rows), column in ((nominal, "radius"), (w1, "w1")):
        for row in rows:
            log_rows = read_log(done / f"{row[0]}_{row[1]}.tsv")[1]
            n = len(log_rows)
            correct = sum(r["predict"] == r["label"] for r in log_rows)
            assert row[3] == f"{100 * correct / n:.2f}"
            distances = [_broken_at(r, column) for r in log_rows]
            expected = [f"{100 * sum(d > g for d in distances) / n:.2f}" for g in GRID]
            assert row[4:8] == expected, (row, column)
            median = statistics.median(distances)
            assert row[8] == ("inf" if math.isinf(median) else f"{median:.4g}")
            if column == "radius":
                assert row[9] == f"{sum(r['time'] for r in log_rows) / n:.3g}"
            broke_something += row[5] != row[3]  # fewer correct at 0.1 than before the attack
    assert broke_something >= 2  # the attacks do something on these models


def _assert_same_tensors(one, other):
    one, other = (torch.load(path, weights_only=True) for path in (one, other))
    assert one.keys() == other.keys() == {"clean", "adv", "idx"}
    for key in one:
        torch.testing.assert_close(one[key], other[key], rtol=0, atol=0)


def test_logs_and_examples_equal_wsmooth_attack_on_the_same_checkpoints(done, tmp_path):
    base = ["--dataset", "digits", *ATTACK, "--attack-batch", "2", "--device", "cpu", "--no-progress"]
    for model, method, extra in (("standard", "sinkhorn", []),
                                 ("smoothed", "frank-wolfe", ["--smoothed", "--n-grad", "4", "--n-test", "32"])):
        out, adv = tmp_path / f"{model}_{method}.tsv", tmp_path / f"{model}_{method}.pt"
        assert main(["attack", str(done / f"{model}.pt"), *base, "--method", method, *extra, "--out", str(out),
                     "--save-adv", str(adv)]) == 0
        assert _rows_without_time(out) == _rows_without_time(done / f"{model}_{method}.tsv")
        _assert_same_tensors(adv, done / "adversarial" / f"{model}_{method}.pt")


def test_given_checkpoints_are_attacked_not_retrained(done, tmp_path, capsys):
    out = tmp_path / "given"
    capsys.readouterr()
    assert _experiment(out, "--methods", "frank-wolfe", *[f"--{m}={done / f'{m}.pt'}" for m in MODELS]) == 0
    printed = capsys.readouterr().out
    assert "training" not in printed and "given" in printed
    assert not list(out.glob("*.pt"))
    for m in MODELS:
        assert read_log(out / f"{m}_frank-wolfe.tsv")[1] and _rows_without_time(
            out / f"{m}_frank-wolfe.tsv") == _rows_without_time(done / f"{m}_frank-wolfe.tsv")
    nominal, w1 = _attack_tables(out)
    done_nominal, done_w1 = _attack_tables(done)
    fw = [r for r in done_w1[1] if r[1] == "frank-wolfe"]
    assert w1[1] == fw


def test_resume_after_interruptions_gives_the_same_tables(done, tmp_path, monkeypatch, capsys):
    import wsmooth_ext.runs.attack as attack_module
    import wsmooth_ext.training.keywords as train_module

    real_attack, real_train = attack_module.attack_to_log, train_module.train
    calls = {"attack": 0, "train": 0}

    def train_then_stop(*args, epochs, **kwargs):  # the adversarial model stops after its first epoch
        calls["train"] += 1
        if calls["train"] == 2:
            real_train(*args, epochs=1, **kwargs)
            raise KeyboardInterrupt
        return real_train(*args, epochs=epochs, **kwargs)

    def attack_then_stop(attack, images, labels, indices, *args, **kwargs):  # the 4th log stops after 2 digits
        calls["attack"] += 1
        if calls["attack"] == 4:
            real_attack(attack, images, labels, indices[:2], *args, **kwargs)
            raise KeyboardInterrupt
        return real_attack(attack, images, labels, indices, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(train_module, "train", train_then_stop)
    assert _experiment(out) == 130
    assert load_training_state(out / "adversarial.pt")[2]["epoch"] == 1 and not (out / "smoothed.pt").exists()
    monkeypatch.setattr(train_module, "train", real_train)
    monkeypatch.setattr(attack_module, "attack_to_log", attack_then_stop)
    capsys.readouterr()
    assert _experiment(out, "--resume") == 130
    assert "adversarial: training 2 epochs (flow adversarial training" in capsys.readouterr().out
    assert len(read_log(out / "adversarial_frank-wolfe.tsv")[1]) == 2 and not (out / "summary.md").exists()
    monkeypatch.setattr(attack_module, "attack_to_log", real_attack)
    assert _experiment(out, "--resume") == 0
    printed = capsys.readouterr().out
    assert "adversarial: trained (2 epochs), not retrained" in printed
    assert "standard: trained (2 epochs), not retrained" in printed
    assert "standard (base model), sinkhorn: attacked (4 digits), not reattacked" in printed
    assert "adversarial (base model), frank-wolfe: attacking 4 digits from digit 2" in printed
    for (header, rows), (_, done_rows) in zip(_attack_tables(out), _attack_tables(done)):
        assert _without(header, rows, "s/digit") == _without(header, done_rows, "s/digit")
    for log in done.glob("*.tsv"):  # every row as in the uninterrupted run, none lost or duplicated
        assert _rows_without_time(out / log.name) == _rows_without_time(log)


def _nearest_from_logs(folder, model):
    """[(idx, attack, W1)] of the model's fooled digits, each at its smallest W1 over the attacks (ties: the
    first attack), smallest first, at most 4: counted here from the logs."""
    nearest = {}
    for method in METHODS:
        for r in read_log(folder / f"{model}_{method}.tsv")[1]:
            if r["success"] == 1 and r["predict"] == r["label"] and (r["idx"] not in nearest
                                                                    or r["w1"] < nearest[r["idx"]][1]):
                nearest[r["idx"]] = (method, r["w1"])
    order = sorted(nearest, key=lambda i: (nearest[i][1], i))  # the logs list digits by idx
    return [(i, *nearest[i]) for i in order[:4]]


def test_pictures_show_each_models_nearest_saved_examples(done, tmp_path):
    from picture_checks import assert_attack_row_shows, attack_axes, png_bytes

    text = (done / "summary.md").read_text()
    test_x = load_dataset("digits", "test")[0]
    drawn = 0
    for model in MODELS:
        expected, picture = _nearest_from_logs(done, model), done / f"examples_{model}.png"
        if not expected:
            assert not picture.exists() and f"- {model}: no attack fooled a digit" in text
            continue
        assert f"- {model}: [`examples_{model}.png`](examples_{model}.png)" in text
        attacks = {m: (done / f"{model}_{m}.tsv", done / "adversarial" / f"{model}_{m}.pt") for m in METHODS}
        examples = nearest_fooled(attacks, 4)
        assert [(e.idx, e.found_by, e.w1) for e in examples] == expected
        for e in examples:  # the saved examples: the clean digit, and the image whose W1 the log records
            saved = torch.load(attacks[e.found_by][1], weights_only=True)
            at = saved["idx"].tolist().index(e.idx)
            assert torch.equal(saved["clean"][at], test_x[e.idx]) and torch.equal(e.clean, test_x[e.idx])
            assert torch.equal(e.adv, saved["adv"][at])
            assert wasserstein_distance(e.clean, e.adv, on_mismatch="rescale") == pytest.approx(e.w1, abs=1e-9)
        fig = fig5.example_figure(examples, model, METHODS, 0.01)
        for e, row in zip(examples, attack_axes(fig, len(examples))):
            assert_attack_row_shows(row, e.clean, e.adv)
            assert f"({e.found_by})" in row[1].get_title()
        assert png_bytes(fig, tmp_path) == picture.read_bytes()  # the file is this figure
        drawn += 1
    assert drawn >= 1


def test_resume_of_a_finished_run_rewrites_nothing_differently(done, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(done, out)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != "summary.md")
    before = {f: (out / f).read_bytes() for f in files}
    assert _experiment(out, "--resume") == 0
    assert "attacking" not in capsys.readouterr().out
    assert {f: (out / f).read_bytes() for f in files} == before  # pictures, examples, logs, checkpoints


def _models_given(folder):
    return [f"--{m}={folder / f'{m}.pt'}" for m in MODELS]


def test_a_run_that_fools_no_digit_says_so_instead_of_drawing(done, tmp_path):
    out = tmp_path / "none"
    assert _experiment(out, *_models_given(done), "--methods", "frank-wolfe", "--max-images", "2", "--eps0",
                       "1e-6", "--max-iter", "1") == 0
    for model in MODELS:
        rows = read_log(out / f"{model}_frank-wolfe.tsv")[1]
        assert not [r for r in rows if r["success"] == 1 and r["predict"] == r["label"]]  # nothing fooled
    text = (out / "summary.md").read_text()
    for model in MODELS:
        assert f"- {model}: no attack fooled a digit it classified correctly, so there is no picture." in text
    assert not list(out.glob("examples_*")) and (out / "fig5.png").exists()


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
    assert _experiment(done, "--resume", "--n-test", "64") == 2
    _one_error_line(capsys, "--n-test 32 (now 64)")
    assert _experiment(done, "--resume", "--methods", "sinkhorn") == 2
    _one_error_line(capsys, "--methods sinkhorn,frank-wolfe (now sinkhorn)")
    assert _experiment(done, "--resume", "--standard", str(done / "standard.pt")) == 2
    _one_error_line(capsys, "--standard none (now ")
    assert {p.name: p.stat().st_mtime_ns for p in done.iterdir()} == before  # nothing touched
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _experiment(other, "--resume") == 2
    _one_error_line(capsys, "experiment.json")
    assert _experiment(other / "notes.txt") == 2
    _one_error_line(capsys, "not a directory")


def test_resume_refuses_a_changed_given_checkpoint(done, tmp_path, capsys):
    mine = tmp_path / "mine.pt"
    shutil.copy(done / "standard.pt", mine)
    out = tmp_path / "given"
    assert _experiment(out, "--standard", str(mine), "--max-images", "1", "--methods", "frank-wolfe") == 0
    shutil.copy(done / "adversarial.pt", mine)
    capsys.readouterr()
    assert _experiment(out, "--standard", str(mine), "--max-images", "1", "--methods", "frank-wolfe", "--resume") == 2
    _one_error_line(capsys, "--standard", "changed")


@pytest.mark.parametrize("bad, needle", [
    (["--methods", "sinkhorn,foo"], "--methods"), (["--methods", "flow,flow"], "--methods"),
    (["--sigma", "0"], "--sigma"), (["--grid", "-0.1"], "--grid"), (["--epochs", "0"], "--epochs"),
    (["--max-images", "100000"], "--max-images"), (["--train-size", "100000"], "--train-size"),
    (["--alpha", "1"], "--alpha"), (["--eps-factor", "0.5"], "--eps-factor"), (["--eps0", "0"], "--eps0"),
    (["--n-test", "0"], "--n-test"), (["--max-iter", "0"], "--max-iter"), (["--adv-eps", "-1"], "--adv-eps"),
    (["--attack-batch", "0"], "--attack-batch"), (["--standard", "missing.pt"], "--standard"),
    (["--device", "nosuchdevice"], "--device")])
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, bad, needle):
    assert _experiment(tmp_path / "x", *bad) == 2
    _one_error_line(capsys, needle)
    assert not (tmp_path / "x").exists()


def test_a_given_smoothed_model_must_match_the_smoothing_noise(done, tmp_path, capsys):
    assert _experiment(tmp_path / "x", "--smoothed", str(done / "standard.pt")) == 2
    _one_error_line(capsys, "--smoothed", "without noise")
    assert _experiment(tmp_path / "x", "--smoothed", str(done / "smoothed.pt"), "--sigma", "0.02") == 2
    _one_error_line(capsys, "--smoothed", "sigma 0.01")
    assert not (tmp_path / "x").exists()


def test_help_states_units_defaults_quick_and_time(capsys):
    with pytest.raises(SystemExit):
        main(["experiment", "fig5", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("mass-normalized", "(default sinkhorn,frank-wolfe", "(default 100; 20 with --quick)",
                   "(default 20; 6 with --quick)", "(default 0.3; 0.1 with --quick)", "(default 10000; 1000 with",
                   "(default 128; 16 with --quick)", "default flow)", "(default 0.01, the paper's Fig. 5)",
                   "exact W1", "hours", "about 5 minutes", "--resume"):
        assert phrase in text, phrase


def test_adversarial_training_choices_are_the_attack_registry():
    """fig5 trains its adversarial model against any attack of the registry (what `wsmooth train --adversarial`
    takes), pgd-dual included, and states the eps units of the one chosen."""
    from types import SimpleNamespace

    from wsmooth_ext.attacks.registry import ATTACKS
    from wsmooth_ext.training.registry import names

    option = next(o for o in fig5.OPTIONS if o.name == "adv_training")
    assert option.choices == tuple(ATTACKS) == names("adversarial")[1:] and "pgd-dual" in option.choices
    s = SimpleNamespace(adv_training="pgd-dual", adv_eps=0.2, adv_eps_warmup=3, adv_attack_steps=4, sigma=0.01)
    kwargs, how = fig5._training("adversarial", s)
    assert (kwargs["adversarial"], kwargs["adv_eps"], kwargs["noise"]) == ("pgd-dual", 0.2, "none")
    assert how.startswith("pgd-dual adversarial training, eps 0.2 (W1 bound, L2 ground, mass-normalized)")
