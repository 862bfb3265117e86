"""wsmooth analyze refuses damaged logs and unwritable plots, naming the file and the line."""

import numpy as np
import pytest

from wsmooth_ext.cli import main

from helpers import ATTACK_FAST, checkpoint as _checkpoint, error_line as _error_line

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning")]


# ------------------------------------------------------------------------------------------ analyze
def _certify_log(path, rows=3):
    from wsmooth_ext.runs.logfile import CERTIFY_COLUMNS

    lines = ["\t".join(CERTIFY_COLUMNS)]
    for idx in range(rows):
        values = dict(idx=idx, label=idx % 3, predict=idx % 3, radius=0.01 * (idx + 1), correct=1, time=0.01,
                      radius_l1=0.02, p_lower=0.9, count_top=90, count_label=90, n0=10, n=100, alpha=0.05,
                      certificate="tight", noise="flow-laplace", sigma=0.01, seed=0, model_sha256="0123456789abcdef",
                      dataset="digits", split="test", precision="fp32")
        lines.append("\t".join(str(values[c]) for c in CERTIFY_COLUMNS))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_analyze_plot_refuses_to_overwrite_and_names_every_file(tmp_path, capsys):
    # before: --plot replaced an existing file, and with an attack log also wrote FILE-attack.png unasked
    log = _certify_log(tmp_path / "c.tsv")
    plot = tmp_path / "curves.png"
    plot.write_bytes(b"the user's picture")
    assert main(["analyze", str(log), "--plot", str(plot)]) == 2
    assert "already exists" in _error_line(capsys) and plot.read_bytes() == b"the user's picture"
    assert main(["analyze", str(log), "--plot", str(plot), "--overwrite"]) == 0
    assert str(plot) in capsys.readouterr().out and plot.read_bytes().startswith(b"\x89PNG")


def test_analyze_plot_checks_the_attack_file_it_adds(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "m.pt")
    attack = tmp_path / "a.tsv"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "2", "--out", str(attack)] + ATTACK_FAST) == 0
    log = _certify_log(tmp_path / "c.tsv")
    plot, extra = tmp_path / "p.png", tmp_path / "p-attack.png"
    extra.write_bytes(b"kept")
    capsys.readouterr()
    assert main(["analyze", str(log), str(attack), "--plot", str(plot)]) == 2
    assert str(extra) in _error_line(capsys) and not plot.exists() and extra.read_bytes() == b"kept"
    extra.unlink()
    assert main(["analyze", str(log), str(attack), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert str(plot) in out and str(extra) in out and plot.exists() and extra.exists()


@pytest.mark.parametrize("column, value, message", [
    ("radius", "nan", "radius nan"), ("radius", "-0.5", "radius -0.5"), ("radius", "1e300", "radius 1e+300"),
    ("radius", "inf", "radius inf"), ("idx", "0", "image 0 is logged twice"), ("sigma", "0.5", "mixes runs"),
    ("label", "-3", "label -3"), ("label", "2.5", "label 2.5"), ("label", "cat", "label 'cat'"),
    ("predict", "-7", "predict -7"), ("correct", "0", "correct 0 disagrees"),
])
def test_analyze_refuses_damaged_rows_naming_file_and_line(tmp_path, capsys, column, value, message):
    # before: NaN, negative or absurd radii, duplicated images, mixed settings and bad labels gave a table of
    # plausible-looking numbers
    from wsmooth_ext.runs.logfile import CERTIFY_COLUMNS

    log = _certify_log(tmp_path / "c.tsv")
    lines = log.read_text().splitlines()
    fields = lines[2].split("\t")  # line 3 of the file
    fields[CERTIFY_COLUMNS.index(column)] = value
    lines[2] = "\t".join(fields)
    log.write_text("\n".join(lines) + "\n")
    assert main(["analyze", str(log)]) == 2
    line = _error_line(capsys)
    assert f"{log}: line 3: " in line and message in line, line


def test_analyze_refuses_damaged_attack_rows(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "m.pt")
    attack = tmp_path / "a.tsv"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "2", "--out", str(attack)] + ATTACK_FAST) == 0
    lines = attack.read_text().splitlines()
    columns = lines[0].split("\t")
    fields = lines[1].split("\t")
    fields[columns.index("w1")] = "-1.0"
    attack.write_text("\n".join([lines[0], "\t".join(fields)] + lines[2:]) + "\n")
    capsys.readouterr()
    assert main(["analyze", str(attack)]) == 2
    assert f"{attack}: line 2: w1 -1.0" in _error_line(capsys)


def test_a_log_that_is_not_text_names_the_file(tmp_path, capsys):
    log = tmp_path / "c.tsv"
    log.write_bytes(_certify_log(tmp_path / "ok.tsv").read_bytes() + b"\xff\xfe\n")
    assert main(["analyze", str(log)]) == 2
    assert f"{log}: line 5 is not UTF-8" in _error_line(capsys)


def test_analyze_radii_have_a_range(tmp_path, capsys):
    log = _certify_log(tmp_path / "c.tsv")
    for bad in ("inf", "1e300", "-1", "nan"):
        assert main(["analyze", str(log), "--radii", bad]) == 2
        assert "--radii must each be a number in [0, 10000]" in _error_line(capsys)
