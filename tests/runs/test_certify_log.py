"""Cohen-format TSV logs: content, resume without loss or duplication, refusal to damage a log, and a log's
radii under another certificate from its rows' p_lower."""

import math

import pytest
import torch
from torch import nn

from wsmooth_ext.runs.certify import certify_to_log, predict_to_log
from wsmooth_ext.runs.logfile import (CERTIFY_COLUMNS, PREDICT_COLUMNS,
                                     read_log)
from wsmooth_ext.core.smooth import ABSTAIN, Smooth

pytestmark = pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning")

N0, N, ALPHA, BATCH = 20, 100, 0.05, 64


class MeanThreshold(nn.Module):
    """3 classes by thresholds on the noisy top-left pixel: images near a threshold abstain."""

    def forward(self, x):
        v = x[:, 0, 0, 0]
        return torch.stack([torch.zeros_like(v), 50 * (v - 0.3), 50 * (v - 0.7)], dim=1)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 4, 4, generator=g)
    labels = torch.randint(0, 3, (12,), generator=g)
    return images, labels


def _smooth(sigma=0.02, noise="flow-laplace"):
    return Smooth(MeanThreshold(), 3, sigma, noise=noise, seed=4)


def _strip_time(rows):
    return [{k: v for k, v in row.items() if k != "time"} for row in rows]


def test_certify_log_format_and_content(tmp_path, data, capsys):
    images, labels = data
    out = tmp_path / "sub" / "log.tsv"
    indices = list(range(0, 12, 2))
    rows = certify_to_log(_smooth(), images, labels, indices, out, n0=N0, n=N, alpha=ALPHA, batch_size=BATCH)
    text = out.read_text()
    assert text.startswith("idx\tlabel\tpredict\tradius\tcorrect\ttime\t")
    assert text.endswith("\n") and text.count("\n") == 1 + len(indices)
    columns, parsed = read_log(out)
    assert tuple(columns) == CERTIFY_COLUMNS
    assert parsed == rows and [r["idx"] for r in rows] == indices
    expected = _smooth().certify_batch(images[indices], N0, N, ALPHA, BATCH, keys=indices, labels=labels[indices])
    for row, rec in zip(rows, expected):
        assert (row["predict"], row["radius"], row["radius_l1"], row["p_lower"], row["count_top"],
                row["count_label"]) == (rec.prediction, rec.radius, rec.radius_l1, rec.p_lower, rec.count_top,
                                        rec.count_label)
        assert row["correct"] == int(rec.prediction == row["label"] != ABSTAIN)
        assert (row["n0"], row["n"], row["alpha"], row["certificate"], row["noise"], row["sigma"], row["seed"]) == (
            N0, N, ALPHA, "tight", "flow-laplace", 0.02, 4)
        assert row["time"] >= 0
    assert {r["predict"] for r in rows} - {ABSTAIN} and "certify" in capsys.readouterr().err  # progress bar


@pytest.mark.parametrize("keep,partial", [(0, False), (3, False), (3, True), (5, True)])
def test_resume_after_interruption_neither_loses_nor_duplicates(tmp_path, data, keep, partial):
    images, labels = data
    indices = list(range(12))
    full = tmp_path / "full.tsv"
    reference = certify_to_log(_smooth(), images, labels, indices, full, n0=N0, n=N, alpha=ALPHA, batch_size=BATCH,
                               progress=False)
    lines = full.read_text().splitlines(keepends=True)
    # an interrupted run: header + `keep` rows, maybe followed by half of the next row without its newline
    cut = "".join(lines[:1 + keep]) + (lines[1 + keep][:9] if partial else "")
    log = tmp_path / "log.tsv"
    log.write_text(cut)
    rows = certify_to_log(_smooth(), images, labels, indices, log, n0=N0, n=N, alpha=ALPHA, batch_size=7,
                          resume=True, progress=False)
    assert _strip_time(rows) == _strip_time(reference)
    columns, parsed = read_log(log)
    assert _strip_time(parsed) == _strip_time(reference)
    assert log.read_text().count("idx\t") == 1 and log.read_text().endswith("\n")
    assert log.read_text().splitlines()[:1 + keep] == [line.rstrip("\n") for line in lines[:1 + keep]]
    # resuming a finished log adds nothing
    before = log.read_bytes()
    certify_to_log(_smooth(), images, labels, indices, log, n0=N0, n=N, alpha=ALPHA, batch_size=BATCH,
                   resume=True, progress=False)
    assert log.read_bytes() == before


def test_resume_of_a_half_written_header(tmp_path, data):
    images, labels = data
    log = tmp_path / "log.tsv"
    log.write_text("idx\tlabel\tpre")
    rows = certify_to_log(_smooth(), images, labels, [0, 1], log, n0=N0, n=N, alpha=ALPHA, batch_size=BATCH,
                          resume=True, progress=False)
    assert len(rows) == 2 and read_log(log)[1] == rows


def test_existing_log_is_never_damaged(tmp_path, data):
    images, labels = data
    log = tmp_path / "log.tsv"
    certify_to_log(_smooth(), images, labels, [0, 1, 2], log, n0=N0, n=N, alpha=ALPHA, batch_size=BATCH,
                   progress=False)
    before = log.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        certify_to_log(_smooth(), images, labels, [0, 1, 2, 3], log, n0=N0, n=N, alpha=ALPHA, batch_size=BATCH,
                       progress=False)
    changed = [dict(n=N + 1), dict(n0=N0 + 1), dict(alpha=0.01)]
    for kwargs in changed:
        args = dict(n0=N0, n=N, alpha=ALPHA, batch_size=BATCH)
        args.update(kwargs)
        with pytest.raises(ValueError, match="cannot resume .* written with"):
            certify_to_log(_smooth(), images, labels, [0, 1, 2, 3], log, resume=True, progress=False, **args)
    for smooth in (_smooth(sigma=0.03), _smooth(noise="pixel-laplace"),
                   Smooth(MeanThreshold(), 3, 0.02, certificate="paper", seed=4),
                   Smooth(MeanThreshold(), 3, 0.02, seed=5)):
        with pytest.raises(ValueError, match="cannot resume"):
            certify_to_log(smooth, images, labels, [0, 1, 2, 3], log, n0=N0, n=N, alpha=ALPHA, batch_size=BATCH,
                           resume=True, progress=False)
    with pytest.raises(ValueError, match="header"):  # a certify log resumed as a predict log
        predict_to_log(_smooth(), images, labels, [0, 1], log, n=N, alpha=ALPHA, batch_size=BATCH, resume=True,
                       progress=False)
    with pytest.raises(ValueError, match="label"):  # another dataset
        certify_to_log(_smooth(), images, (labels + 1) % 3, [0, 1, 2, 3], log, n0=N0, n=N, alpha=ALPHA,
                       batch_size=BATCH, resume=True, progress=False)
    with pytest.raises(ValueError, match="^alpha must"):
        certify_to_log(_smooth(), images, labels, [0], log, n0=N0, n=N, alpha=1.5, batch_size=BATCH, resume=True)
    with pytest.raises(ValueError, match="^indices must"):
        certify_to_log(_smooth(), images, labels, [0, 99], log, n0=N0, n=N, alpha=ALPHA, batch_size=BATCH,
                       resume=True)
    assert log.read_bytes() == before
    # a corrupt complete line is refused, not silently dropped
    (tmp_path / "bad.tsv").write_bytes(before + b"7\t1\n")
    with pytest.raises(ValueError, match="corrupt"):
        certify_to_log(_smooth(), images, labels, [0], tmp_path / "bad.tsv", n0=N0, n=N, alpha=ALPHA,
                       batch_size=BATCH, resume=True)
    # bad arguments never create a file
    with pytest.raises(ValueError, match="^n0 must"):
        certify_to_log(_smooth(), images, labels, [0], tmp_path / "new.tsv", n0=0, n=N, alpha=ALPHA, batch_size=BATCH)
    assert not (tmp_path / "new.tsv").exists()


def test_predict_log(tmp_path, data):
    images, labels = data
    log = tmp_path / "pred.tsv"
    rows = predict_to_log(_smooth(), images, labels, [1, 3, 5, 7], log, n=N, alpha=ALPHA, batch_size=BATCH,
                          progress=False)
    assert log.read_text().startswith("idx\tlabel\tpredict\tcorrect\ttime\t")
    assert tuple(read_log(log)[0]) == PREDICT_COLUMNS
    preds = _smooth().predict_batch(images[[1, 3, 5, 7]], N, ALPHA, BATCH, keys=[1, 3, 5, 7])
    assert [r["predict"] for r in rows] == preds.tolist()
    for r in rows:
        assert r["count_top"] >= r["count_second"] and r["count_top"] + r["count_second"] <= N
        assert r["correct"] == int(r["predict"] == r["label"])
        assert (r["predict"] == ABSTAIN) == (r["pvalue"] > ALPHA)
    # interrupted after two rows plus half a line: resumed to the same rows
    text = log.read_text().splitlines(keepends=True)
    log.write_text("".join(text[:3]) + text[3][:4])
    again = predict_to_log(_smooth(), images, labels, [1, 3, 5, 7], log, n=N, alpha=ALPHA, batch_size=BATCH,
                           resume=True, progress=False)
    assert _strip_time(again) == _strip_time(rows)


def _w1_closed_form(p, sigma, noise, certificate, ground):
    """The W1 radius written out from the table of docs/math.md (Laplace noise of std sigma: scale sigma/sqrt 2)."""
    if p <= 0.5:
        return 0.0
    lam = sigma / math.sqrt(2)
    rho1 = (lam / 2) * math.log(p / (1 - p)) if certificate == "paper" else -lam * math.log(2 * (1 - p))
    per_rho1 = {("flow-laplace", "l2"): 1 / math.sqrt(2), ("flow-laplace", "l1"): 1.0,
                ("pixel-laplace", "l2"): 1 / 2, ("pixel-laplace", "l1"): 1 / 2}
    return rho1 * per_rho1[noise, ground]


@pytest.mark.parametrize("row", [
    {"predict": 3, "p_lower": 0.9, "sigma": 0.01, "noise": "flow-laplace"},
    {"predict": 0, "p_lower": 0.999, "sigma": 0.02, "noise": "pixel-laplace"},
    {"predict": 7, "p_lower": 0.6, "sigma": 0.5, "noise": "flow-laplace"},
    {"predict": 1, "p_lower": 0.75, "sigma": 0.005, "noise": "pixel-laplace"},
    {"predict": ABSTAIN, "p_lower": 0.31, "sigma": 0.01, "noise": "flow-laplace"},
    {"predict": ABSTAIN, "p_lower": 0.5, "sigma": 0.1, "noise": "pixel-laplace"},
])
@pytest.mark.parametrize("certificate", ["paper", "tight"])
@pytest.mark.parametrize("ground", ["l2", "l1"])
def test_rederived_radius_is_the_certificate_of_the_rows_p_lower(row, certificate, ground):
    from wsmooth_ext.analysis.certify import rederived_radius
    from wsmooth_ext.core.certificates import certified_radius

    got = rederived_radius(row, certificate, ground)
    if row["predict"] == ABSTAIN:
        assert got == 0.0
        return
    assert got == certified_radius(row["p_lower"], row["sigma"], row["noise"], certificate, ground)
    expected = _w1_closed_form(row["p_lower"], row["sigma"], row["noise"], certificate, ground)
    assert 0 < got <= expected and got == pytest.approx(expected, rel=1e-9, abs=0)


@pytest.mark.parametrize("noise", ["flow-laplace", "pixel-laplace"])
def test_one_certification_gives_the_other_certificates_log(tmp_path, data, noise):
    # certify writes each certificate's radii itself (Smooth.certify_batch); rederiving them from the other
    # certificate's log of the same votes must give those very values, abstentions included
    from wsmooth_ext.analysis.certify import rederived_radius

    images, labels = data
    logs = {}
    for certificate in ("paper", "tight"):
        smooth = Smooth(MeanThreshold(), 3, 0.02, noise=noise, seed=4, certificate=certificate)
        logs[certificate] = certify_to_log(smooth, images, labels, list(range(12)), tmp_path / f"{certificate}.tsv",
                                           n0=N0, n=N, alpha=ALPHA, batch_size=BATCH, progress=False)
    assert {r["predict"] for r in logs["tight"]} >= {ABSTAIN} and any(r["radius"] > 0 for r in logs["tight"])
    for source, target in (("paper", "tight"), ("tight", "paper")):
        for a, b in zip(logs[source], logs[target]):
            assert a["p_lower"] == b["p_lower"]
            assert (rederived_radius(a, target), rederived_radius(a, target, "l1")) == (b["radius"], b["radius_l1"])
