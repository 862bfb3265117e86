"""The recipe "how to add an attack" of docs/architecture.md, followed: an attack class and one AttackSpec entry
in the registry (``attacks/registry.py``: ``ATTACKS``) and nothing else; ``wsmooth attack --method NAME`` then
runs it and logs its examples with their exact W1 (against the model, or the smoothed classifier: the attack takes
the one smoothed target of every attack), and without the entry the name is refused."""

import math

import pytest
import torch

from wsmooth_ext.attacks import registry
from wsmooth_ext.attacks.base import StateAttack
from wsmooth_ext.attacks.registry import AttackSpec
from wsmooth_ext.cli import main
from wsmooth_ext.core.flows import apply_flow, flow_gradient
from wsmooth_ext.experiments import fig5  # noqa: F401  (see below)
from wsmooth_ext.experiments.steps import Attack
from wsmooth_ext.inputs.checkpoint import load_checkpoint
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.runs.logfile import format_field, parse_field, read_log

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.py
# fig5 takes its --methods choices from the registry when it is first imported, which any `main` call does
# (it builds every command's parser): imported above, before a test registers, the registration cannot leak
# into fig5's choices for the tests that follow.

IMAGES = 20
SCHEDULE = ["--eps0", "0.01", "--eps-factor", "1.5", "--eps-every", "2", "--max-iter", "20"]


# step 1 of the recipe: the class
class OneEdgeAttack(StateAttack):
    """Moves mass along the one edge of the local flow graph where it raises the loss most (to first order), as
    far as the radius ε and the pixel bounds allow: x' = x + s·div δ with δ non-zero on one edge, |δ_e| ≤ ε. The
    examples keep their mass and stay in [0, 1], and differ from x at two neighbouring pixels only, so their
    exact W1 (either ground metric, mass-normalized) is |δ_e|."""

    def __init__(self, model_or_callable, eps: float = 0.3, *, eps_factor: float = 1.0, eps_every: int = 10,
                 max_iter: int = 100, smoothing=None):
        self._init_target(model_or_callable, smoothing)  # the smoothed target, declared by attacks/target.py
        self._init_schedule(eps, eps_factor, eps_every, max_iter)

    def init_state(self, x):
        b, c, h, w = x.shape
        return {"v": x.new_zeros(b, c, h - 1, w, dtype=torch.float64),
                "h": x.new_zeros(b, c, h, w - 1, dtype=torch.float64)}

    def image(self, x, state):
        # the clamp only removes float64 rounding: the move never exceeds the source's mass or the target's room
        return apply_flow(x.double(), state["v"], state["h"]).clamp(0, 1).to(x.dtype)

    def update(self, x, state, grad, eps, t):
        xd = x.double()
        gv, gh = flow_gradient(xd, grad.double())  # the loss's gradient with respect to each edge's flow
        s = xd.sum(dim=(1, 2, 3), keepdim=True)
        room = {  # mass-normalized: the least of the source's mass and the target's headroom
            "down": torch.minimum(xd[..., :-1, :], 1 - xd[..., 1:, :]) / s,
            "up": torch.minimum(xd[..., 1:, :], 1 - xd[..., :-1, :]) / s,
            "right": torch.minimum(xd[..., :, :-1], 1 - xd[..., :, 1:]) / s,
            "left": torch.minimum(xd[..., :, 1:], 1 - xd[..., :, :-1]) / s}
        g = torch.cat([gv.flatten(1), gh.flatten(1)], dim=1)
        forward = torch.cat([room["down"].flatten(1), room["right"].flatten(1)], dim=1)
        backward = torch.cat([room["up"].flatten(1), room["left"].flatten(1)], dim=1)
        size = torch.minimum(torch.where(g > 0, forward, backward), eps.double()[:, None])
        best = (g.abs() * size).argmax(dim=1)
        rows = torch.arange(g.shape[0], device=g.device)
        move = torch.zeros_like(g)
        move[rows, best] = torch.sign(g[rows, best]) * size[rows, best]
        nv = gv[0].numel()
        return {"v": move[:, :nv].reshape(gv.shape), "h": move[:, nv:].reshape(gh.shape)}


# step 3: the entry (it takes no settings beyond the radius schedule every attack has)
ONE_EDGE = AttackSpec("one-edge", OneEdgeAttack, (), "W1 of its one-edge move (either ground metric)",
                      "mass moved along the one edge that raises the loss most")


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(registry.ATTACKS, ONE_EDGE.name, ONE_EDGE)  # what the entry in attacks/registry.py does
    return ONE_EDGE.name


def _attack(checkpoint, out, method, *extra):
    return main(["attack", str(checkpoint), "--dataset", "digits", "--max", str(IMAGES), "--method", method,
                 *SCHEDULE, "--out", str(out), "--no-progress", *extra])


def test_wsmooth_attack_runs_the_new_attack_and_logs_exact_w1(registered, trained_digits_checkpoint, tmp_path):
    out, adv_path = tmp_path / "one_edge.tsv", tmp_path / "one_edge.pt"
    assert _attack(trained_digits_checkpoint, out, registered, "--save-adv", str(adv_path)) == 0
    _, rows = read_log(out)
    assert [r["idx"] for r in rows] == list(range(IMAGES))
    # the settings: its name and the schedule given; no other attack's settings, no smoothed target's
    columns = read_log(out)[0]
    assert columns[columns.index("channel_gap") + 1:columns.index("model_sha256")] == [
        "mode", "method", "eps", "eps0", "eps_factor", "eps_every", "max_iter", "adv_saved"]
    assert {(r["method"], r["eps0"], r["eps_factor"], r["eps_every"], r["max_iter"], r["eps"]) for r in rows} == {
        (registered, 0.01, 1.5, 2, 20, None)}

    saved = torch.load(adv_path, weights_only=True)
    images, labels = load_dataset("digits", "test")
    model = load_checkpoint(trained_digits_checkpoint)[0]
    with torch.no_grad():
        adv_predictions = model(saved["adv"]).argmax(1).tolist()
    moved_rows = 0
    for r in rows:
        clean, adv = images[r["idx"]].double(), saved["adv"][r["idx"]].double()
        assert r["adv_predict"] == adv_predictions[r["idx"]] and r["success"] == int(r["adv_predict"] != r["label"])
        if not r["success"]:
            assert (r["radius"], r["w1"], r["w1_l1"], r["iterations"]) == (math.inf, math.inf, math.inf, -1)
            continue
        if r["iterations"] == 0:  # misclassified before the attack
            assert (r["radius"], r["w1"]) == (0.0, 0.0) and r["predict"] != r["label"]
            continue
        moved_rows += 1
        # independent of the log's linear program: two neighbouring pixels changed, by equal and opposite
        # amounts, so the exact W1 is the mass moved (one pixel apart) over the image's mass, for both grounds
        changed = (adv - clean).flatten().nonzero().flatten()
        assert changed.numel() == 2
        (i1, j1), (i2, j2) = (divmod(int(k), clean.shape[-1]) for k in changed)
        assert abs(i1 - i2) + abs(j1 - j2) == 1
        diff = (adv - clean).flatten()[changed]
        assert float(diff.sum()) == pytest.approx(0.0, abs=1e-6)
        w1 = float(diff.abs().sum() / 2 / clean.sum())
        assert r["w1"] == pytest.approx(w1, rel=1e-5) and r["w1_l1"] == pytest.approx(w1, rel=1e-5)
        assert 0 < r["w1"] <= r["radius"] * (1 + 1e-6)  # the nominal ε bounds the move
        assert abs(r["mass_change"]) < 1e-6 and r["channel_gap"] == 0
    assert moved_rows >= 1  # the attack fooled the model somewhere, so the W1 checks above ran

    # the command built the registered class with the schedule: its rows are the class's own results
    n = len(rows)
    direct = OneEdgeAttack(model, 0.01, eps_factor=1.5, eps_every=2, max_iter=20)(images[:n], labels[:n],
                                                                                  keys=torch.arange(n))
    assert [r["radius"] for r in rows] == [float(v) for v in direct.radius]
    assert [r["iterations"] for r in rows] == direct.iterations.tolist()
    torch.testing.assert_close(saved["adv"], direct.adversarial, rtol=0, atol=0)

    # an experiment's attack step takes it by name too, with the settings the command logged
    step = Attack(log="x.tsv", label="x", method=registered, eps0=0.01, eps_factor=1.5, eps_every=2, max_iter=20)
    assert {k: parse_field(format_field(v)) for k, v in step.settings().items()} == {k: rows[0][k]
                                                                                    for k in step.settings()}
    assert isinstance(step.build(model), OneEdgeAttack) and step.build(model).eps0 == 0.01


def test_the_new_attack_gets_the_smoothed_target(registered, trained_digits_checkpoint, tmp_path):
    """Declared nowhere in the attack's class or entry, the smoothed target's options reach it: the log records
    them, the class holds them, and its success test is the smoothed classifier's prediction of the saved example."""
    from wsmooth_ext.attacks.target import SmoothedTarget
    from wsmooth_ext.core.smooth import Smooth

    out, adv_path = tmp_path / "smoothed.tsv", tmp_path / "smoothed.pt"
    assert _attack(trained_digits_checkpoint, out, registered, "--smoothed", "--n-grad", "4", "--n-test", "64",
                   "--alpha", "0.1", "--success-test", "fixed", "--batch", "128", "--seed", "5",
                   "--save-adv", str(adv_path)) == 0
    columns, rows = read_log(out)
    assert columns[columns.index("channel_gap") + 1:columns.index("model_sha256")] == [
        "mode", "noise", "sigma", "seed", "n_grad", "n_test", "alpha", "success_test", "method", "eps", "eps0",
        "eps_factor", "eps_every", "max_iter", "adv_saved"]
    assert {(r["mode"], r["n_grad"], r["n_test"], r["alpha"], r["success_test"], r["seed"]) for r in rows} == {
        ("smoothed", 4, 64, 0.1, "fixed", 5)}
    model, meta = load_checkpoint(trained_digits_checkpoint)
    smooth = Smooth(model, 10, meta["sigma"], noise=meta["noise"], seed=5)
    saved = torch.load(adv_path, weights_only=True)
    again = smooth.predict_batch(saved["adv"], n=64, alpha=0.1, batch_size=128, keys=saved["idx"])
    assert again.tolist() == [r["adv_predict"] for r in rows]
    # the experiments' attack step builds it with the same target
    step = Attack(log="x.tsv", label="x", method=registered, eps0=0.01, eps_factor=1.5, eps_every=2, max_iter=20,
                  smoothing={"noise": meta["noise"], "sigma": meta["sigma"], "seed": 5, "n_grad": 4, "n_test": 64,
                             "alpha": 0.1, "success_test": "fixed"})
    attack = step.build(smooth)
    assert isinstance(attack, OneEdgeAttack) and attack.smoothing == SmoothedTarget(
        n_grad=4, n_test=64, alpha=0.1, success_test="fixed")
    assert {k: parse_field(format_field(v)) for k, v in step.settings().items()} == {k: rows[0][k]
                                                                                    for k in step.settings()}


def test_adversarial_training_against_the_new_attack_comes_from_its_entry(registered, trained_digits_checkpoint):
    """The training method of an entry (what `wsmooth train --adversarial NAME` runs for each registered attack)
    perturbs with its class at the radius of the epoch: every example moved along one edge, by at most eps."""
    from wsmooth_ext.training.adversarial import Adversary, adversarial_method
    from wsmooth_ext.training.registry import record

    method = adversarial_method(ONE_EDGE)
    args = record(method, method.params(adv_eps=0.05, adv_eps_warmup=0, adv_attack_steps=3))
    assert (args["adversarial"], args["adv_attack_params"]) == ("one-edge", {})
    assert Adversary(args).attack(torch.nn.Identity(), 0.05).__class__ is OneEdgeAttack
    images, labels = load_dataset("digits", "test")
    x, y = images[:6], labels[:6]
    model = load_checkpoint(trained_digits_checkpoint)[0]
    adv = Adversary(args).perturb(model, x, y, 0)
    for clean, moved in zip(x.double(), adv.double()):
        changed = (moved - clean).flatten().nonzero().flatten()
        assert changed.numel() == 2
        assert float((moved - clean).abs().sum() / 2 / clean.sum()) <= 0.05 * (1 + 1e-6)


def test_the_new_attack_is_offered_in_help(registered, capsys):
    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "one-edge: mass moved along the one edge that raises the loss most" in text


def test_without_the_entry_the_name_is_refused(trained_digits_checkpoint, tmp_path, capsys):
    assert "one-edge" not in registry.ATTACKS
    with pytest.raises(SystemExit) as refused:
        _attack(trained_digits_checkpoint, tmp_path / "no.tsv", "one-edge")
    assert refused.value.code == 2
    assert "argument --method: invalid choice: 'one-edge'" in capsys.readouterr().err
    assert not (tmp_path / "no.tsv").exists()
    with pytest.raises(ValueError, match="attack method must be one of"):
        registry.get("one-edge")
