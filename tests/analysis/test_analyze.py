"""Log summaries (accuracy, abstain, median radius, certified accuracy), tables, plots and `wsmooth analyze`."""

import math

import numpy as np
import pytest

from wsmooth_ext.analysis import (default_radius_grid, format_summary_table, plot_certified_accuracy,
                                  summarize_certify_log)
from wsmooth_ext.runs.logfile import CERTIFY_COLUMNS, PREDICT_COLUMNS
from wsmooth_ext.cli import main


def _write_certify_log(path, rows):
    """rows: (label, predict, radius, count_label, n); the other columns get fixed settings."""
    lines = ["\t".join(CERTIFY_COLUMNS)]
    for idx, (label, predict, radius, count_label, n) in enumerate(rows):
        values = dict(idx=idx, label=label, predict=predict, radius=radius, correct=int(predict == label), time=0.01,
                      radius_l1=radius * math.sqrt(2), p_lower=0.9, count_top=n, count_label=count_label, n0=10, n=n,
                      alpha=0.05, certificate="tight", noise="flow-laplace", sigma=0.01, seed=0,
                      model_sha256="0123456789abcdef", dataset="digits", split="test", precision="fp32")
        lines.append("\t".join(str(values[c]) for c in CERTIFY_COLUMNS))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_summary_by_hand(tmp_path):
    # 6 images: 3 certified correct (radii 0.3, 0.1, 0.2), 1 wrong, 2 abstained.
    log = _write_certify_log(tmp_path / "a.tsv", [(1, 1, 0.3, 90, 100), (2, 2, 0.1, 80, 100), (3, 3, 0.2, 70, 100),
                                                   (4, 5, 0.4, 10, 100), (6, -1, 0.0, 40, 100), (7, -1, 0.0, 50, 100)])
    s = summarize_certify_log(log, radius_grid=[0, 0.15, 0.25, 0.35])
    assert s["kind"] == "certify" and s["n_images"] == 6
    assert s["accuracy"] == pytest.approx(50.0) and s["abstain"] == pytest.approx(100 / 3)
    assert s["median_radius"] == 0.1  # the largest r with >= 3 of 6 certified correct
    assert s["certified_accuracy"] == [(0.0, 50.0), (0.15, pytest.approx(100 / 3)), (0.25, pytest.approx(50 / 3)),
                                       (0.35, 0.0)]
    assert s["base_accuracy"] == pytest.approx(340 / 6)
    assert (s["noise"], s["sigma"], s["certificate"], s["n0"], s["n"], s["alpha"]) == (
        "flow-laplace", 0.01, "tight", 10, 100, 0.05)
    assert s["max_radius"] == 0.3
    # ACR: (0.3 + 0.1 + 0.2 + 0 [wrong, radius 0.4 not counted] + 0 + 0) / 6
    assert s["acr"] == pytest.approx(0.1)
    assert "0.1" in format_summary_table([s]).splitlines()[1].split()  # the ACR column
    assert "ACR" in format_summary_table([s]).splitlines()[0]


def test_acr_matches_brute_force(tmp_path):
    rng = np.random.default_rng(5)
    for trial in range(20):
        size = int(rng.integers(1, 12))
        rows = [(int(rng.integers(0, 3)), int(rng.integers(-1, 3)), round(float(rng.random()), 3), 0, 1)
                for _ in range(size)]
        s = summarize_certify_log(_write_certify_log(tmp_path / f"acr{trial}.tsv", rows))
        assert s["acr"] == pytest.approx(sum(r for label, pred, r, _, _ in rows if pred == label) / size)


def test_median_is_not_available_below_half_and_matches_brute_force(tmp_path):
    log = _write_certify_log(tmp_path / "b.tsv", [(1, 1, 0.3, 1, 1), (1, 1, 0.2, 1, 1), (1, 0, 0.5, 0, 1),
                                                   (1, -1, 0, 0, 1), (1, -1, 0, 0, 1)])
    assert summarize_certify_log(log)["median_radius"] is None  # 2 of 5 certified correct
    rng = np.random.default_rng(3)
    for trial in range(30):
        size = int(rng.integers(1, 12))
        rows = [(0, int(rng.choice([0, 0, 1, -1])), round(float(rng.random()), 3), 0, 1) for _ in range(size)]
        s = summarize_certify_log(_write_certify_log(tmp_path / f"r{trial}.tsv", rows))
        # brute force: the largest candidate r at which >= 50% are correct with radius >= r
        ok = [r for label, pred, r, _, _ in rows if pred == label]
        feasible = [r for r in ok if 2 * sum(x >= r for x in ok) >= size]
        assert s["median_radius"] == (max(feasible) if feasible else None)


def test_cohen_format_and_predict_logs(tmp_path):
    cohen = tmp_path / "cohen.tsv"  # Cohen et al.'s own certify output: six columns, time as a timedelta
    cohen.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t7\t7\t0.52\t1\t0:00:01.5\n"
                     "20\t2\t2\t0.11\t1\t0:00:01.4\n40\t1\t0\t0.3\t0\t0:00:01.4\n")
    s = summarize_certify_log(cohen)
    assert s["n_images"] == 3 and s["median_radius"] == 0.11 and s["base_accuracy"] is None and s["noise"] is None
    pred = tmp_path / "pred.tsv"
    pred.write_text("\t".join(PREDICT_COLUMNS) + "\n" + "\n".join(
        "\t".join(str(v) for v in (i, 3, p, int(p == 3), 0.1, 9, 1, 0.01, c, 10, 0.05, "pixel-laplace", 0.02, 0,
                                          "0123456789abcdef", "digits", "test", "fp32"))
        for i, (p, c) in enumerate([(3, 9), (-1, 5), (4, 1), (3, 8)])) + "\n")
    s = summarize_certify_log(pred)
    assert s["kind"] == "predict" and s["accuracy"] == 50.0 and s["abstain"] == 25.0
    assert s["median_radius"] is None and s["certified_accuracy"] == [] and s["base_accuracy"] == 57.5
    table = format_summary_table([summarize_certify_log(cohen, [0, 0.2]), s])
    assert "cohen.tsv" in table and "pred.tsv" in table and "66.67 (0.00)" in table
    md = format_summary_table([summarize_certify_log(cohen, [0, 0.2]), s], markdown=True).splitlines()
    assert md[0].startswith("| log |") and md[1].startswith("|---") and len(md) == 4
    assert "cert. acc. % @ 0.2" in md[0] and md[3].count("—") >= 3
    with pytest.raises(ValueError, match="not a certify log"):
        plot_certified_accuracy([pred], tmp_path / "x.png")
    (tmp_path / "empty.tsv").write_text("\t".join(CERTIFY_COLUMNS) + "\n")
    with pytest.raises(ValueError, match="no rows"):
        summarize_certify_log(tmp_path / "empty.tsv")


def test_table_never_rounds_up(tmp_path):
    log = _write_certify_log(tmp_path / "c.tsv", [(1, 1, 0.0101999, 1, 1)])
    assert "0.01019" in format_summary_table([summarize_certify_log(log)])


def test_default_grid():
    assert default_radius_grid(0.0) == [0.0]
    assert default_radius_grid(1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    grid = default_radius_grid(0.0132)
    assert grid[0] == 0.0 and grid[-1] <= 0.0132 and len(grid) >= 3


def test_plot_writes_a_png(tmp_path):
    a = _write_certify_log(tmp_path / "a.tsv", [(1, 1, 0.3, 1, 1), (1, 1, 0.1, 1, 1), (1, -1, 0, 0, 1)])
    b = _write_certify_log(tmp_path / "b.tsv", [(1, 1, 0.05, 1, 1)])
    out = plot_certified_accuracy([a, b], tmp_path / "plots" / "curves.png", labels=["paper", "tight"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="labels"):
        plot_certified_accuracy([a, b], tmp_path / "y.png", labels=["one"])


def test_analyze_command(tmp_path, capsys):
    a = _write_certify_log(tmp_path / "a.tsv", [(1, 1, 0.3, 1, 1), (1, 1, 0.1, 1, 1), (1, -1, 0, 0, 1)])
    b = _write_certify_log(tmp_path / "b.tsv", [(1, 1, 0.05, 1, 1)])
    png = tmp_path / "curves.png"
    assert main(["analyze", str(a), str(b), "--markdown", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| a.tsv |" in out and "| b.tsv |" in out and png.exists()
    assert main(["analyze", str(a), "--radii", "0", "0.2"]) == 0
    assert "cert. acc. % @ 0.2" in capsys.readouterr().out
    assert main(["analyze", str(a), "--radii", "0.01,0.02,0.03", "0.2"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert all(f"cert. acc. % @ {r}" in header for r in ("0.01", "0.02", "0.03", "0.2")) and "@ 0 " not in header
    with pytest.raises(SystemExit) as exc:  # an argparse error
        main(["analyze", str(a), "--radii", "0.01,x"])
    assert exc.value.code == 2
    assert "comma-separated" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "missing.tsv")]) == 2
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    capsys.readouterr()
    assert main(["analyze", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "notes.txt" in err


def test_analyze_routes_attack_logs_to_the_attack_analysis(tmp_path, capsys, monkeypatch):
    # Only the routing is tested here: stand-ins for the attack analysis record what they are given.
    calls = []
    monkeypatch.setattr("wsmooth_ext.analysis.attack.is_attack_log",
                        lambda path: open(path).readline().startswith("attack"))
    monkeypatch.setattr("wsmooth_ext.analysis.analyze_attack_logs",
                        lambda paths, plot=None, markdown=False: calls.append((paths, plot, markdown)) or "AT")
    attack = tmp_path / "att.tsv"
    attack.write_text("attack\tlog\n")
    cert = _write_certify_log(tmp_path / "c.tsv", [(1, 1, 0.3, 1, 1)])
    assert main(["analyze", str(cert), str(attack), "--plot", str(tmp_path / "p.png")]) == 0
    assert calls == [([attack], str(tmp_path / "p-attack.png"), False)]
    assert capsys.readouterr().out.rstrip().endswith("AT")
