"""The recipe "how to add a noise family" of docs/architecture.md, followed: one NoiseFamily entry in the registry
(``core/noises.py``: ``FAMILIES``, from which ``NOISES`` derives) and nothing else; the smoothed classifier and
``wsmooth certify`` then take it by name, with the certificates it declares and no others. Step 2's Python side: a
new distribution is one ``Distribution`` entry in ``core/distributions.py``, which the reference, the op's Python
entry, the certificates and MACER then take by name."""

import dataclasses
import math

import pytest
import torch

from wsmooth_ext.cli import main
from wsmooth_ext.core import distributions, noises, ops, reference
from wsmooth_ext.core.certificates import certified_radius
from wsmooth_ext.core.noises import NoiseFamily
from wsmooth_ext.core.smooth import Smooth
from wsmooth_ext.inputs.checkpoint import load_checkpoint
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.runs.logfile import read_log
from wsmooth_ext.training.macer import macer_radius

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--n0", "32", "--n", "200", "--no-progress"]

# step 1 of the recipe: the entry (here a family that admits only the paper's certificate, on the flow graph)
EDGE_PAPER = NoiseFamily("edge-laplace-paper", "flow", "laplace", ("paper",), {"l1": 1.0, "l2": 1.0 / math.sqrt(2.0)},
                         "Laplace noise on every flow edge, certified with the paper's Eq. 20 only")


@pytest.fixture
def registered(monkeypatch):
    # what editing FAMILIES in core/noises.py does at import: the entry, and the names derived from it
    monkeypatch.setitem(noises.FAMILIES, EDGE_PAPER.name, EDGE_PAPER)
    monkeypatch.setattr(noises, "NOISES", tuple(noises.FAMILIES))
    monkeypatch.setattr(noises, "TRAINING_NOISES", (noises.NONE,) + tuple(noises.FAMILIES))
    return EDGE_PAPER.name


def test_the_new_family_smooths_with_its_declared_certificate(registered, trained_digits_checkpoint):
    model = load_checkpoint(trained_digits_checkpoint)[0]
    images, _ = load_dataset("digits", "test")
    new = Smooth(model, 10, 0.02, noise=registered)
    same_draws = Smooth(model, 10, 0.02, noise="flow-laplace", certificate="paper")
    assert new.certificate == "paper"  # its only, hence default, certificate
    for i in range(3):
        got = new.certify(images[i], 32, 200, 0.05)
        want = same_draws.certify(images[i], 32, 200, 0.05)
        assert got == want and got[0] != -1  # (prediction, radius): the op and seed of flow-laplace
    with pytest.raises(ValueError, match="tight"):
        Smooth(model, 10, 0.02, noise=registered, certificate="tight")


def test_the_cli_takes_the_new_family_by_name(registered, trained_digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "new.tsv"
    assert main(["certify", str(trained_digits_checkpoint), "--dataset", "digits", "--max-images", "2",
                 "--noise", registered, "--sigma", "0.02", "--out", str(out)] + FAST) == 0
    _, rows = read_log(out)
    assert [r["noise"] for r in rows] == [registered] * 2 and {r["certificate"] for r in rows} == {"paper"}
    assert main(["certify", str(trained_digits_checkpoint), "--dataset", "digits", "--max-images", "2",
                 "--noise", registered, "--certificate", "tight", "--out", str(tmp_path / "t.tsv")] + FAST) == 2
    assert "tight" in capsys.readouterr().err


def test_without_the_entry_the_name_is_refused(trained_digits_checkpoint):
    model = load_checkpoint(trained_digits_checkpoint)[0]
    with pytest.raises(ValueError, match="noise must be one of"):
        Smooth(model, 10, 0.02, noise=EDGE_PAPER.name)


# step 2, its Python side: the entry in core/distributions.py. A genuinely new distribution brings its own code, with
# its struct in csrc/distributions.h; this one reuses Laplace's compiled code 0 under another name, with only the
# paper's certificate, so that the op can draw it here.
LAPLACE = distributions.DISTRIBUTIONS["laplace"]
PAPER_ONLY = dataclasses.replace(LAPLACE, name="laplace-paper-only", certificates={"paper": LAPLACE.certificates["paper"]})


@pytest.fixture
def new_distribution(monkeypatch):
    monkeypatch.setitem(distributions.DISTRIBUTIONS, PAPER_ONLY.name, PAPER_ONLY)
    family = NoiseFamily("flow-" + PAPER_ONLY.name, "flow", PAPER_ONLY.name, ("paper",), EDGE_PAPER.w1_per_rho1,
                         "Laplace noise on every flow edge, under a second distribution name")
    monkeypatch.setitem(noises.FAMILIES, family.name, family)
    monkeypatch.setattr(noises, "NOISES", tuple(noises.FAMILIES))
    monkeypatch.setattr(noises, "TRAINING_NOISES", (noises.NONE,) + tuple(noises.FAMILIES))
    return family


def test_a_new_distribution_reaches_every_python_reader(new_distribution, trained_digits_checkpoint):
    name = PAPER_ONLY.name
    x = torch.rand(2, 1, 6, 7, generator=torch.Generator().manual_seed(0))
    kwargs = dict(seed=5, sample_offset=3, keys=torch.tensor([1, 8]))
    for impl in (reference.flow_noise_reference, reference.pixel_noise_reference, ops.flow_noise, ops.pixel_noise):
        assert torch.equal(impl(x, 4, 0.05, noise=name, **kwargs), impl(x, 4, 0.05, noise="laplace", **kwargs))
    for p in (0.6, 0.9, 0.999):
        assert certified_radius(p, 0.1, new_distribution.name, None) == certified_radius(p, 0.1, "flow-laplace", "paper")
    with pytest.raises(ValueError, match="certificates must be some of"):  # the family may only use its distribution's
        NoiseFamily("bad", "flow", name, ("tight",), EDGE_PAPER.w1_per_rho1, "")
    p, q = torch.tensor([0.7, 0.95]), torch.tensor([0.3, 0.05])
    assert torch.equal(macer_radius(p, q, name, 0.5), macer_radius(p, q, "laplace", 0.5))
    model = load_checkpoint(trained_digits_checkpoint)[0]
    images, _ = load_dataset("digits", "test")
    got = Smooth(model, 10, 0.02, noise=new_distribution.name).certify(images[0], 32, 200, 0.05)
    assert got == Smooth(model, 10, 0.02, noise="flow-laplace", certificate="paper").certify(images[0], 32, 200, 0.05)
