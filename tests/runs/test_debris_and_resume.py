"""Failed runs leave no debris, and a resume that could not equal an uninterrupted run is refused."""

import numpy as np
import pytest
import torch

from wsmooth_ext import Smooth
from wsmooth_ext.attacks import FlowAttack, WassersteinPGD
from wsmooth_ext.cli import main
from wsmooth_ext.runs.attack import attack_to_log
from wsmooth_ext.runs.certify import certify_to_log
from wsmooth_ext.runs.logfile import read_log

from helpers import ATTACK_FAST, checkpoint as _checkpoint, error_line as _error_line

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning")]


# ------------------------------------------------------------------------------------------ debris
def test_an_attack_that_fails_after_opening_its_log_leaves_nothing(tmp_path, digits):
    # before: a header-only log (and no way to rerun without --resume) was left behind
    (_, _), (x, y) = digits
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    failing = WassersteinPGD(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(63, 10)), max_iter=2,
                             sinkhorn_iter=5)  # a model that does not fit the images: fails at its first forward
    out, adv = tmp_path / "new" / "a.tsv", tmp_path / "new" / "adv.pt"
    settings = {"method": "sinkhorn"}
    cpu = torch.device("cpu")
    with pytest.raises(RuntimeError):
        attack_to_log(failing, x, y, [0, 1, 2], out, adv, settings, cpu, progress=False)
    assert not out.exists() and not adv.exists()
    # an empty log the user had is kept (empty); a log with rows is kept as it was
    out.write_bytes(b"")
    with pytest.raises(RuntimeError):
        attack_to_log(failing, x, y, [0, 1, 2], out, None, settings, cpu, progress=False)
    assert out.exists() and out.read_bytes() == b""
    attack_to_log(WassersteinPGD(model, max_iter=2, sinkhorn_iter=5), x, y, [0], out, None, settings, cpu,
                  progress=False)
    before = out.read_bytes()
    with pytest.raises(RuntimeError):
        attack_to_log(failing, x, y, [0, 1], out, None, settings, cpu, progress=False, resume=True)
    assert out.read_bytes() == before


def test_a_certify_run_that_fails_at_once_leaves_nothing(tmp_path, digits):
    (_, _), (x, y) = digits
    smooth = Smooth(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(63, 10)), 10, 0.1)
    out = tmp_path / "c.tsv"
    with pytest.raises(RuntimeError):
        certify_to_log(smooth, x, y, [0, 1], out, n0=4, n=16, alpha=0.05, batch_size=64, progress=False)
    assert not out.exists()


def test_attack_api_refuses_radii_beyond_float_range():
    # before: WassersteinPGD(eps0=1e39) was accepted and failed inside the first batch
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with pytest.raises(ValueError, match="eps0 must be a number in"):
        WassersteinPGD(model, eps0=1e39)
    with pytest.raises(ValueError, match="eps_factor"):
        WassersteinPGD(model, eps_factor=1e308)
    with pytest.raises(ValueError, match="exceeds the largest radius"):
        FlowAttack(model, eps=1.0, eps_factor=10.0, max_iter=10 ** 6, eps_every=1)
    with pytest.raises(ValueError, match="eps must be"):
        FlowAttack(model).perturb(torch.rand(1, 1, 4, 4), torch.tensor([0]), 1e39, steps=1)

# ------------------------------------------------------------------------------------------ resume selection
@pytest.mark.parametrize("command", ["certify", "attack"])
def test_resume_with_another_image_selection_is_refused(tmp_path, capsys, command):
    # before: --resume with another --skip appended other images' rows to the log (a mix of two selections)
    ckpt = _checkpoint(tmp_path / "m.pt")
    out = tmp_path / "log.tsv"
    fast = ["--n0", "8", "--samples", "32", "--no-progress"] if command == "certify" else ATTACK_FAST
    base = [command, ckpt, "--dataset", "digits", "--out", str(out)] + fast
    assert main(base + ["--max-images", "3"]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    for other in (["--skip", "2", "--max-images", "5", "--resume"], ["--max-images", "2", "--resume"]):
        assert main(base + other) == 2
        assert "image selection" in _error_line(capsys)
        assert out.read_bytes() == before
    # a larger maximum extends the log: the result equals an uninterrupted run of the larger selection
    assert main(base + ["--max-images", "5", "--resume"]) == 0
    full = tmp_path / "full.tsv"
    assert main([command, ckpt, "--dataset", "digits", "--out", str(full), "--max-images", "5"] + fast) == 0
    drop = {"time"}
    rows = [{k: v for k, v in r.items() if k not in drop} for r in read_log(out)[1]]
    assert rows == [{k: v for k, v in r.items() if k not in drop} for r in read_log(full)[1]]


def test_attack_resume_without_save_adv_is_refused(tmp_path, capsys):
    # before: the log was continued without its tensors, leaving a --save-adv file that can never be completed
    ckpt = _checkpoint(tmp_path / "m.pt")
    out, adv = tmp_path / "a.tsv", tmp_path / "adv.pt"
    base = ["attack", ckpt, "--dataset", "digits", "--out", str(out)] + ATTACK_FAST
    assert main(base + ["--max-images", "2", "--save-adv", str(adv)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(base + ["--max-images", "4", "--resume"]) == 2
    assert "pass the same --save-adv" in _error_line(capsys)
    assert out.read_bytes() == before
    assert main(base + ["--max-images", "4", "--resume", "--save-adv", str(adv)]) == 0
    assert torch.load(adv, weights_only=True)["idx"].tolist() == [0, 1, 2, 3]
