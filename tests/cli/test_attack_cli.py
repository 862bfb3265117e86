"""`wsmooth attack` end to end (tiny model on 8×8 digits) and the attack-log analysis."""

import math

import numpy as np
import pytest
import torch

from wsmooth_ext import Smooth
from wsmooth_ext.analysis.attack import (ATTACK_HEADER, accuracy_under_attack, analyze_attack_logs,
                                         check_certified_vs_attack, is_attack_log, median_attack_radius)
from wsmooth_ext.runs.logfile import read_log
from wsmooth_ext.inputs.checkpoint import load_checkpoint
from wsmooth_ext.cli import main
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.core.wasserstein import wasserstein_distance

FAST = ["--max-iter", "12", "--eps0", "0.05", "--eps-factor", "1.5", "--eps-every", "3", "--sinkhorn-iter", "60",
        "--no-progress"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.py


@pytest.fixture(scope="module")
def checkpoint(trained_digits_checkpoint):
    """wong_mnist on the 8×8 digits (conftest.trained_digits_checkpoint)."""
    return trained_digits_checkpoint


def test_plain_attack_log_and_saved_examples(checkpoint, tmp_path):
    out, adv_path = tmp_path / "attack.tsv", tmp_path / "adv.pt"
    assert main(["attack", str(checkpoint), "--dataset", "digits", "--max", "6", "--attack-batch", "4",
                 "--out", str(out), "--save-adv", str(adv_path), *FAST]) == 0
    columns, rows = read_log(out)
    assert tuple(columns[:7]) == ATTACK_HEADER and is_attack_log(out)
    assert [r["idx"] for r in rows] == list(range(6))
    saved = torch.load(adv_path, weights_only=True)
    assert saved["idx"].tolist() == list(range(6))
    images, labels = load_dataset("digits", "test")
    torch.testing.assert_close(saved["clean"], images[:6])
    model, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        adv_pred = model(saved["adv"]).argmax(1).tolist()
        clean_pred = model(images[:6]).argmax(1).tolist()
    assert any(r["success"] for r in rows)
    for r, a, c in zip(rows, adv_pred, clean_pred):
        assert r["label"] == int(labels[r["idx"]]) and r["predict"] == c and r["adv_predict"] == a
        assert r["success"] == int(a != r["label"])
        if not r["success"]:
            assert r["radius"] == math.inf and r["w1"] == math.inf
        elif r["predict"] != r["label"]:
            assert r["radius"] == 0.0 and r["w1"] == 0.0
        else:
            assert r["radius"] > 0 and r["mode"] == "plain"
            w1 = wasserstein_distance(images[r["idx"]], saved["adv"][r["idx"]])
            assert r["w1"] == pytest.approx(w1, rel=1e-9)
            assert r["w1_l1"] >= r["w1"] - 1e-9  # L1 ground distances dominate L2 ones


def test_resume_continues_without_duplicates(checkpoint, tmp_path):
    out, adv_path = tmp_path / "a.tsv", tmp_path / "a.pt"
    base = ["attack", str(checkpoint), "--dataset", "digits", "--out", str(out), "--save-adv", str(adv_path), *FAST]
    assert main(base + ["--max", "3"]) == 0
    assert main(base + ["--max", "3"]) == 2  # never overwrites
    assert main(base + ["--max", "5", "--resume"]) == 0
    _, rows = read_log(out)
    assert [r["idx"] for r in rows] == list(range(5))
    saved = torch.load(adv_path, weights_only=True)
    assert saved["idx"].tolist() == list(range(5)) and saved["adv"].shape[0] == 5
    # a resumed run equals a fresh one (per-image attack; the batch does not matter)
    fresh = tmp_path / "fresh.tsv"
    assert main(["attack", str(checkpoint), "--dataset", "digits", "--out", str(fresh), "--max", "5", *FAST]) == 0
    _, fresh_rows = read_log(fresh)
    for r, f in zip(rows, fresh_rows):
        assert (r["success"], r["radius"], r["iterations"]) == (f["success"], f["radius"], f["iterations"])
    # settings must match to resume
    assert main(base + ["--max", "6", "--resume", "--step", "0.2"]) == 2


def test_smoothed_attack(checkpoint, tmp_path):
    out, adv_path = tmp_path / "s.tsv", tmp_path / "s.pt"
    assert main(["attack", str(checkpoint), "--dataset", "digits", "--max", "3", "--smoothed", "--n-grad", "4",
                 "--n-test", "64", "--batch", "256", "--seed", "7", "--out", str(out), "--save-adv", str(adv_path),
                 *FAST[:2], "--max-iter", "3", *FAST[4:]]) == 0
    _, rows = read_log(out)
    assert {r["mode"] for r in rows} == {"smoothed"} and {r["noise"] for r in rows} == {"flow-laplace"}
    model, _ = load_checkpoint(checkpoint)
    smooth = Smooth(model, 10, 0.005, noise="flow-laplace", seed=7)
    saved = torch.load(adv_path, weights_only=True)
    again = smooth.predict_batch(saved["adv"], n=64, alpha=0.05, batch_size=256, keys=saved["idx"])
    assert again.tolist() == [r["adv_predict"] for r in rows]
    assert {r["success_test"] for r in rows} == {"sequential"}


def test_smoothed_attack_success_test_is_a_setting(checkpoint, tmp_path):
    # --n-test 1000: looks after 100, 300 and 1000 votes; the fixed test gives the same log on these digits
    logs = {}
    for test in ("sequential", "fixed"):
        out = tmp_path / f"{test}.tsv"
        assert main(["attack", str(checkpoint), "--dataset", "digits", "--max", "2", "--smoothed", "--n-grad", "4",
                     "--n-test", "1000", "--batch", "500", "--seed", "7", "--out", str(out), "--success-test", test,
                     *FAST[:2], "--max-iter", "3", *FAST[4:]]) == 0
        _, logs[test] = read_log(out)
        assert {r["success_test"] for r in logs[test]} == {test}
    for s, f in zip(logs["sequential"], logs["fixed"]):
        assert (s["predict"], s["adv_predict"], s["success"], s["radius"]) == (
            f["predict"], f["adv_predict"], f["success"], f["radius"])
    # a log is resumed only with the test it was written with
    assert main(["attack", str(checkpoint), "--dataset", "digits", "--max", "3", "--smoothed", "--n-grad", "4",
                 "--n-test", "1000", "--batch", "500", "--seed", "7", "--out", str(tmp_path / "fixed.tsv"),
                 *FAST[:2], "--max-iter", "3", *FAST[4:], "--resume"]) == 2
    plain = tmp_path / "plain.tsv"
    assert main(["attack", str(checkpoint), "--dataset", "digits", "--max", "1", "--out", str(plain), *FAST]) == 0
    assert "success_test" not in read_log(plain)[0]  # a plain attack has no smoothed target


@pytest.mark.parametrize("extra, message", [
    (["--kernel-size", "4"], "--kernel-size"), (["--noise", "flow-laplace"], "--smoothed"),
    (["--eps-factor", "0.5"], "--eps-factor"), (["--alpha", "2"], "--alpha")])
def test_user_errors(checkpoint, tmp_path, capsys, extra, message):
    code = main(["attack", str(checkpoint), "--dataset", "digits", "--out", str(tmp_path / "x.tsv"), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "x.tsv").exists()


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["attack", str(tmp_path / "nope.pt"), "--dataset", "digits", "--out", str(tmp_path / "x.tsv")]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_help_states_units(capsys):
    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    text = capsys.readouterr().out
    assert "mass-normalized" in text and "--eps0" in text and "--certified-log" in text


# ---------------------------------------------------------------------------------- analysis (synthetic)
ROWS = [  # idx, label, predict, radius, w1, success, adv_predict
    (0, 1, 1, 0.5, 0.2, 1, 2), (1, 2, 2, 1.0, 0.6, 1, -1), (2, 3, 3, math.inf, math.inf, 0, 3),
    (3, 4, 5, 0.0, 0.0, 1, 5)]


def _write_attack_log(path, rows=ROWS, mode="smoothed"):
    header = list(ATTACK_HEADER) + ["adv_predict", "w1_l1", "iterations", "mass_change", "channel_gap", "mode",
                                    "noise", "sigma"]
    lines = ["\t".join(header)]
    for idx, label, pred, radius, w1, success, adv in rows:
        lines.append("\t".join(map(str, [idx, label, pred, repr(radius), repr(w1), success, 0.5, adv, repr(w1), 3,
                                         0.0, 0.0, mode, "flow-laplace", 0.01])))
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_certify_log(path, radii, predicts=None):
    lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime\talpha\tnoise\tsigma"]
    for (idx, label, *_), radius, pred in zip(ROWS, radii, predicts or [r[1] for r in ROWS]):
        lines.append(f"{idx}\t{label}\t{pred}\t{radius!r}\t{int(pred == label)}\t1.0\t0.05\tflow-laplace\t0.01")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_accuracy_and_median_by_hand(tmp_path):
    rows = read_log(_write_attack_log(tmp_path / "a.tsv"))[1]
    # correct before the attack: idx 0, 1, 2; distances 0.5, 1.0, inf (nominal); idx 3 counts as 0
    np.testing.assert_allclose(accuracy_under_attack(rows, [0.0, 0.5, 0.7, 2.0]), [75.0, 50.0, 50.0, 25.0])
    np.testing.assert_allclose(accuracy_under_attack(rows, [0.1, 0.3], column="w1"), [75.0, 50.0])
    assert median_attack_radius(rows) == 0.75  # median of 0, 0.5, 1.0, inf
    assert median_attack_radius(rows, "w1") == pytest.approx(0.4)


def test_analyze_attack_logs_text_and_plot(tmp_path):
    a = _write_attack_log(tmp_path / "model_a.tsv")
    b = _write_attack_log(tmp_path / "model_b.tsv", rows=[(0, 1, 1, 0.2, 0.1, 1, 2)], mode="plain")
    png = tmp_path / "curves.png"
    text = analyze_attack_logs([a, b], plot=png, markdown=True, grid=[0.0, 0.5])
    assert "model_a.tsv" in text and "model_b.tsv" in text and str(png) in text
    assert "| 75.00 | 50.00 |" in text  # model_a over nominal ε at 0 and 0.5
    assert png.stat().st_size > 1000
    plain = analyze_attack_logs([a])
    assert "exact W1" in plain and "median" in plain
    assert not is_attack_log(_write_certify_log(tmp_path / "c.tsv", [0.1] * 4))


def test_certificate_check_counts_violations(tmp_path):
    attack = _write_attack_log(tmp_path / "a.tsv")
    # idx 0: verified adversarial at w1 0.2 inside radius 0.3 -> violation; idx 1 abstains at 0.6 < 0.9: allowed;
    # idx 2 never fooled; idx 3 not certified (wrong)
    cert = _write_certify_log(tmp_path / "c.tsv", [0.3, 0.9, 5.0, 0.0], predicts=[1, 2, 3, -1])
    result = check_certified_vs_attack(cert, attack)
    assert result["pairs"] == 4 and result["certified"] == 3
    assert result["attacked_certified"] == 1 and result["violations"] == 1 and result["violation_idx"] == [0]
    assert result["abstain_within_radius"] == 1 and result["warnings"] == []
    assert result["expected_violations_bound"] == pytest.approx(0.05)
    cert_small = _write_certify_log(tmp_path / "c2.tsv", [0.1, 0.9, 5.0, 0.0], predicts=[1, 2, 3, -1])
    assert check_certified_vs_attack(cert_small, attack)["violations"] == 0
    with pytest.raises(ValueError, match="attack log"):
        check_certified_vs_attack(attack, attack)


def test_certified_log_option(checkpoint, tmp_path, capsys):
    labels = load_dataset("digits", "test")[1][:2].tolist()
    cert = tmp_path / "c.tsv"
    cert.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
                    + "".join(f"{i}\t{y}\t{y}\t100.0\t1\t1.0\n" for i, y in enumerate(labels)))
    out = tmp_path / "a.tsv"
    assert main(["attack", str(checkpoint), "--dataset", "digits", "--max", "2", "--out", str(out),
                 "--certified-log", str(cert), *FAST]) == 0
    text = capsys.readouterr().out
    _, rows = read_log(out)
    fooled = sum(r["success"] and r["adv_predict"] != -1 for r in rows)
    assert f"certificate check: {fooled} of {fooled} verified" in text and "not smoothed" in text


def test_distances_of_a_colour_example():
    """Clamping can move mass between channels: channel_gap reports it, w1 restores the shares (documented)."""
    from wsmooth_ext.runs.attack import example_distances as _distances

    clean = torch.zeros(2, 5, 5)
    clean[0, 1, 1], clean[1, 3, 3] = 0.5, 0.5
    adv = clean.clone()
    adv[0, 1, 1], adv[0, 1, 2] = 0.25, 0.25  # half of channel 0 moves one pixel right: W1 = 0.5·0.5·1
    w1, w1_l1, mass_change, gap = _distances(clean, adv)
    assert (w1, w1_l1, mass_change, gap) == (pytest.approx(0.25), pytest.approx(0.25), 0.0, 0.0)
    adv[1, 3, 3] = 1.0  # channel 1 gains mass: shares 1/3, 2/3 instead of 1/2, 1/2
    w1, _, mass_change, gap = _distances(clean, adv)
    assert gap == pytest.approx(1 / 3) and mass_change == pytest.approx(0.5) and w1 == pytest.approx(0.25)


@pytest.mark.parametrize("method", ["frank-wolfe", "pgd-dual", "flow", "sinkhorn"])
def test_methods_fixed_eps_log_true_w1_and_refuse_mismatched_resume(checkpoint, tmp_path, capsys, method):
    out, adv_path = tmp_path / f"{method}.tsv", tmp_path / f"{method}.pt"
    base = ["attack", str(checkpoint), "--dataset", "digits", "--out", str(out), "--save-adv", str(adv_path),
            "--method", method, "--eps", "0.4", "--max-iter", "8", "--no-progress"]
    assert main(base + ["--max", "4"]) == 0
    _, rows = read_log(out)
    assert {r["method"] for r in rows} == {method} and {r["eps"] for r in rows} == {0.4}
    saved = torch.load(adv_path, weights_only=True)
    images, _ = load_dataset("digits", "test")
    assert float(saved["adv"].min()) >= 0 and float(saved["adv"].max()) <= 1
    assert any(r["success"] and r["iterations"] > 0 for r in rows)
    for r in rows:
        if r["success"] and r["iterations"] > 0:
            assert r["radius"] == pytest.approx(0.4, rel=1e-6)
            assert r["w1"] == pytest.approx(wasserstein_distance(images[r["idx"]], saved["adv"][r["idx"]]), rel=1e-9)
            if method in ("frank-wolfe", "pgd-dual"):
                assert r["w1"] <= 0.4 * (1 + 1e-5) and abs(r["mass_change"]) < 1e-6
            if method == "flow":
                assert r["w1_l1"] <= 0.4 * (1 + 1e-5) and abs(r["mass_change"]) < 1e-6
    other = "flow" if method != "flow" else "frank-wolfe"
    assert main([*base[:base.index("--method")], "--method", other, *base[base.index("--method") + 2:],
                 "--max", "6", "--resume"]) == 2
    assert f"it was written with method='{method}', this run has method='{other}'" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["frank-wolfe", "pgd-dual", "flow"])
def test_smoothed_attack_other_methods(checkpoint, tmp_path, method):
    out, adv_path = tmp_path / "s.tsv", tmp_path / "s.pt"
    assert main(["attack", str(checkpoint), "--dataset", "digits", "--max", "2", "--smoothed", "--n-grad", "4",
                 "--n-test", "64", "--batch", "256", "--seed", "7", "--out", str(out), "--save-adv", str(adv_path),
                 "--method", method, "--eps", "0.5", "--max-iter", "3", "--no-progress"]) == 0
    _, rows = read_log(out)
    assert {r["mode"] for r in rows} == {"smoothed"} and {r["method"] for r in rows} == {method}
    model, _ = load_checkpoint(checkpoint)
    smooth = Smooth(model, 10, 0.005, noise="flow-laplace", seed=7)
    saved = torch.load(adv_path, weights_only=True)
    again = smooth.predict_batch(saved["adv"], n=64, alpha=0.05, batch_size=256, keys=saved["idx"])
    assert again.tolist() == [r["adv_predict"] for r in rows]
    assert [r["success"] for r in rows] == [int(a != r["label"]) for a, r in zip(again.tolist(), rows)]


# ---------------------------------------------------------------------------------- the settings a log records
FIRST = ["idx", "label", "predict", "radius", "w1", "success", "time", "adv_predict", "w1_l1", "iterations",
         "mass_change", "channel_gap"]
IDENTITY = ["model_sha256", "dataset", "split", "precision"]
SCHEDULE = ["eps0", "eps_factor", "eps_every", "max_iter"]
SMOOTHED = ["--smoothed", "--n-grad", "4", "--n-test", "64", "--batch", "256", "--seed", "7"]


@pytest.mark.parametrize("method, smoothed, settings", [
    ("flow", False, ["mode", "method", "eps", *SCHEDULE, "flow_step", "adv_saved"]),
    ("frank-wolfe", False, ["mode", "method", "eps", *SCHEDULE, "ground", "gamma", "kernel_size", "adv_saved"]),
    ("pgd-dual", False, ["mode", "method", "eps", *SCHEDULE, "ground", "kernel_size", "step", "adv_saved"]),
    ("sinkhorn", False, ["mode", "method", "eps", *SCHEDULE, "p", "kernel_size", "reg", "step", "norm",
                         "projection", "sinkhorn_iter", "sinkhorn_tol", "adv_saved"]),
    ("flow", True, ["mode", "noise", "sigma", "seed", "n_grad", "n_test", "alpha", "success_test", "method", "eps",
                    *SCHEDULE, "flow_step", "adv_saved"])])
def test_each_log_records_the_settings_its_attack_takes(checkpoint, tmp_path, method, smoothed, settings):
    """The columns of a log: its attack's settings (the schedule and its own) and, attacking a smoothed
    classifier, the smoothed target's; never another attack's (the flow log has no reg, p or kernel_size)."""
    out = tmp_path / "a.tsv"
    assert main(["attack", str(checkpoint), "--dataset", "digits", "--max", "2", "--method", method, "--eps", "0.3",
                 "--max-iter", "2", "--out", str(out), "--no-progress", *(SMOOTHED if smoothed else [])]) == 0
    columns, rows = read_log(out)
    assert columns == FIRST + settings + IDENTITY
    assert {(r["method"], r["eps"], r["eps0"], r["max_iter"], r["adv_saved"]) for r in rows} == {
        (method, 0.3, 0.3, 2, 0)}
    if smoothed:
        assert {(r["mode"], r["n_grad"], r["n_test"], r["alpha"], r["seed"], r["success_test"]) for r in rows} == {
            ("smoothed", 4, 64, 0.05, 7, "sequential")}
    else:
        assert {r["mode"] for r in rows} == {"plain"}


@pytest.mark.parametrize("extra, message", [
    (["--method", "flow", "--reg", "2000"], "--reg does not apply to --method flow: it is a setting of sinkhorn"),
    (["--method", "frank-wolfe", "--step", "0.2"],
     "--step does not apply to --method frank-wolfe: it is a setting of sinkhorn, pgd-dual"),
    (["--gamma", "0.1", "--flow-step", "0.1"],
     "--gamma, --flow-step do not apply to --method sinkhorn: --gamma is a setting of frank-wolfe; --flow-step is a "
     "setting of flow"),
    (["--method", "pgd-dual", "--p", "2", "--norm", "l2"],
     "--p, --norm do not apply to --method pgd-dual: they are settings of sinkhorn")])
def test_a_setting_the_method_does_not_take_is_refused(checkpoint, tmp_path, capsys, extra, message):
    out = tmp_path / "x.tsv"
    assert main(["attack", str(checkpoint), "--dataset", "digits", "--out", str(out), "--no-progress", *extra]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"wsmooth attack: error: {message}"]
    assert not out.exists()


def test_resume_compares_only_the_settings_the_attack_takes(checkpoint, tmp_path, capsys):
    out = tmp_path / "flow.tsv"
    base = ["attack", str(checkpoint), "--dataset", "digits", "--method", "flow", "--eps", "0.3", "--max-iter", "3",
            "--out", str(out), "--no-progress"]
    assert main(base + ["--max", "2"]) == 0
    before = out.read_bytes()
    # --reg (sinkhorn's) is refused before any work, however the log was written
    assert main(base + ["--max", "4", "--resume", "--reg", "2000"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "wsmooth attack: error: --reg does not apply to --method flow: it is a setting of sinkhorn"]
    assert out.read_bytes() == before
    # without it the log resumes: the settings flow does not take are no part of it
    assert main(base + ["--max", "4", "--resume"]) == 0
    assert [r["idx"] for r in read_log(out)[1]] == [0, 1, 2, 3]
    # a setting flow takes must match
    assert main(base + ["--max", "5", "--resume", "--flow-step", "0.1"]) == 2
    assert "it was written with flow_step=0.05, this run has flow_step=0.1" in capsys.readouterr().err


# The header of a flow log written before each log recorded only its attack's settings: every attack's settings in
# every log (None where the attack does not take them), the smoothed target's in plain logs too. Taken from the
# frozen checkout: `wsmooth attack m.pt --dataset digits --max 2 --method flow --eps 0.3 --max-iter 2 --out a.tsv`.
OLD_HEADER = ("idx label predict radius w1 success time adv_predict w1_l1 iterations mass_change channel_gap mode "
              "noise sigma n_grad n_test alpha seed p kernel_size reg eps0 eps_factor eps_every max_iter step norm "
              "sinkhorn_iter sinkhorn_tol method eps ground gamma flow_step success_test projection adv_saved "
              "model_sha256 dataset split precision").split()
# what the old layout wrote for the settings the attack did not take: the settings' defaults then
OLD_ALWAYS = {"p": 1.0, "kernel_size": 5, "reg": 1000.0, "step": 0.1, "norm": "linf", "sinkhorn_iter": 400,
              "sinkhorn_tol": 0.0001}


@pytest.mark.parametrize("rows", [2, 0])
def test_a_log_of_the_older_layout_is_refused_on_resume(checkpoint, tmp_path, capsys, rows):
    """A flow log of the older layout, written for this very run (its rows hold this run's values wherever both
    layouts have a column, so comparing the shared columns would continue it): refused in one line saying so, and
    left as it was. The same run's log of this layout resumes."""
    from wsmooth_ext.runs.logfile import format_field

    new, old = tmp_path / "new.tsv", tmp_path / "old.tsv"
    base = ["attack", str(checkpoint), "--dataset", "digits", "--method", "flow", "--eps", "0.3", "--max-iter", "2",
            "--no-progress"]
    assert main(base + ["--max", "2", "--out", str(new)]) == 0
    lines = ["\t".join(OLD_HEADER)]
    for row in read_log(new)[1][:rows]:
        row = {**OLD_ALWAYS, **row}
        lines.append("\t".join(format_field(row.get(c)) for c in OLD_HEADER))
    old.write_text("\n".join(lines) + "\n")
    before = old.read_bytes()
    assert main(base + ["--max", "3", "--out", str(old), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"wsmooth attack: error: cannot resume {old}: it was written by an "
                                               "older layout of the attack log")
    assert err[0].endswith("and cannot be continued: write a new log")
    assert ("which flow does not take" if rows else "settings of several attacks") in err[0]
    assert old.read_bytes() == before
    assert main(base + ["--max", "3", "--out", str(new), "--resume"]) == 0
    assert [r["idx"] for r in read_log(new)[1]] == [0, 1, 2]
