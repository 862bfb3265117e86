"""Training methods: the losses against naive formulas, the SmoothAdv perturbation's constraints,
the noise-draw contract for m copies, learning, resume exactness per method, and the CLI."""

import math

import pytest
import torch
import torch.nn.functional as F

import wsmooth_ext
from wsmooth_ext.inputs.checkpoint import load_checkpoint, load_training_state, save_checkpoint
from wsmooth_ext.core.flows import apply_flow, flow_l1_norm
from wsmooth_ext.core.noises import add_noise
from wsmooth_ext.training.common import noise_loss, smoothed_cross_entropy
from wsmooth_ext.training.consistency import consistency_loss
from wsmooth_ext.training.keywords import derive_seed, train
from wsmooth_ext.training.macer import macer_loss, macer_radius
from wsmooth_ext.training.params import specs
from wsmooth_ext.training.registry import METHODS, choose, group_keys, record
from wsmooth_ext.training.smoothadv import smoothadv_epsilon, smoothadv_perturb

from conftest import wong_digits_model as _model

pytestmark = [pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning"),
              pytest.mark.usefixtures("one_thread")]
QUIET = dict(progress=False, log=lambda line: None)


def _method_args(method: str = "noise", **given) -> dict:
    """The method's part of train_args as train(method=..., **given) records it: the registry's choice and
    validation (choose), then its record, cut to the method option's keys (group_keys)."""
    chosen, params = choose({"method": method}, given, "flow-laplace")
    return {k: v for k, v in record(chosen, params).items() if k in group_keys("method")}


def test_method_train_args_defaults_and_validation():
    assert _method_args() == {"method": "noise", "num_noise": 1, "consistency_lambda": None,
                              "consistency_eta": None, "adv_epsilon": None, "adv_steps": None, "adv_warmup": None,
                              "macer_lambda": None, "macer_gamma": None, "macer_beta": None}
    c = _method_args("consistency")
    assert (c["num_noise"], c["consistency_lambda"], c["consistency_eta"], c["adv_epsilon"]) == (2, 3.0, 0.5, None)
    a = _method_args("smoothadv", adv_epsilon=0.05)
    assert (a["num_noise"], a["adv_epsilon"], a["adv_steps"], a["adv_warmup"]) == (2, 0.05, 4, 10)
    assert specs(METHODS["smoothadv"].params)["adv_epsilon"][0] == 0.02
    mc = _method_args("macer")
    assert (mc["num_noise"], mc["macer_lambda"], mc["macer_gamma"], mc["macer_beta"]) == (8, 1.0, 0.03, 16.0)
    with pytest.raises(ValueError, match=r"macer_gamma must be a number in \[1e-06, 100\]"):
        _method_args("macer", macer_gamma=0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        _method_args("trades")
    with pytest.raises(ValueError, match=r"num_noise must be an integer in \[2, 1024\]"):
        _method_args("consistency", num_noise=1)
    with pytest.raises(ValueError, match=r"adv_epsilon must be a number in \[0, 100\]"):
        _method_args("smoothadv", adv_epsilon=float("nan"))
    with pytest.raises(ValueError, match="adv_steps"):
        _method_args("smoothadv", adv_steps=0)


def _naive_consistency(logits, labels, lam, eta):
    out = []
    for b in range(logits.shape[0]):
        p = [torch.softmax(logits[b, j].double(), 0) for j in range(logits.shape[1])]
        mean = sum(p) / len(p)
        ce = sum(-math.log(float(pj[labels[b]])) for pj in p) / len(p)
        kl = sum(float((mean * (mean.log() - pj.log())).sum()) for pj in p) / len(p)
        ent = -float((mean * mean.log()).sum())
        out.append(ce + lam * kl + eta * ent)
    return torch.tensor(out)


def test_losses_match_naive_formulas():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, 4, generator=gen, dtype=torch.float64) * 2
    labels = torch.tensor([0, 3, 1, 2, 2])
    torch.testing.assert_close(consistency_loss(logits, labels, 10.0, 0.5),
                               _naive_consistency(logits, labels, 10.0, 0.5).double())
    torch.testing.assert_close(noise_loss(logits, labels), _naive_consistency(logits, labels, 0.0, 0.0).double())
    same = logits[:, :1].expand(5, 3, 4)  # identical copies: no KL, and CE + entropy of that one prediction
    p = torch.softmax(logits[:, 0], -1)
    torch.testing.assert_close(consistency_loss(same, labels, 10.0, 0.0),
                               F.cross_entropy(logits[:, 0], labels, reduction="none"))
    torch.testing.assert_close(consistency_loss(same, labels, 0.0, 1.0) - noise_loss(same, labels),
                               -(p * p.log()).sum(-1))
    soft = torch.softmax(logits, -1).mean(1)
    torch.testing.assert_close(smoothed_cross_entropy(logits, labels), -soft[torch.arange(5), labels].log())


def test_macer_loss_matches_naive_formula():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, 3, generator=gen, dtype=torch.float64) * 0.3
    logits[:3, :, 0] += 0.4  # rows 0-2 lean to class 0, whose label they get: correct, some with a small radius
    labels = torch.tensor([0, 0, 0, 1, 2, 1])
    lam, gamma, beta, scale = 2.0, 0.03, 4.0, 0.01
    got = macer_loss(logits, labels, lam, gamma, beta, "laplace", scale)
    for b in range(6):
        soft = torch.softmax(logits[b], -1).mean(0)
        sharp = torch.softmax(beta * logits[b], -1).mean(0)
        py = float(sharp[labels[b]])
        xi = -scale * math.log(2 * (1 - py))
        hinge = max(0.0, 1 - xi / gamma) if int(sharp.argmax()) == int(labels[b]) else 0.0
        assert float(got[b]) == pytest.approx(-math.log(float(soft[labels[b]])) + lam * hinge, rel=1e-9)
    assert bool((got[:3] > smoothed_cross_entropy(logits, labels)[:3]).all())  # the hinge is active there
    p, q = torch.tensor([0.9]), torch.tensor([0.1])
    assert float(macer_radius(p, q, "uniform", 0.5)) == pytest.approx(2 * 0.5 * (0.9 - 0.5))
    assert float(macer_radius(p, q, "laplace", 0.5)) == pytest.approx(-0.5 * math.log(0.2))
    # a confident correct example beyond the target radius pays no hinge
    sure = torch.tensor([[[20.0, 0.0, 0.0]] * 4], dtype=torch.float64)
    torch.testing.assert_close(macer_loss(sure, torch.tensor([0]), 5.0, 0.03, 16.0, "laplace", 0.01),
                               smoothed_cross_entropy(sure, torch.tensor([0])))


def test_smoothadv_epsilon_warms_up_linearly():
    assert [smoothadv_epsilon(0.02, 4, e) for e in range(6)] == pytest.approx([0.005, 0.01, 0.015, 0.02, 0.02, 0.02])
    assert smoothadv_epsilon(0.02, 0, 0) == 0.02


def _sampler(keys, m, sigma=0.01, seed=5):
    return lambda images: wsmooth_ext.flow_noise(images, m, sigma, seed=seed, sample_offset=0, keys=keys)


def test_smoothadv_perturbation_is_feasible_and_raises_the_smoothed_loss(digits):
    (x, y), _ = digits
    model = _model()
    train(model, x, y, noise="flow-laplace", sigma=0.01, epochs=3, lr=0.003, batch_size=32, optimizer="adam", **QUIET)
    x, y = x[:64], y[:64]
    model.eval()
    keys, m, eps = torch.arange(64), 2, 0.05
    sample = _sampler(keys, m)
    for p in model.parameters():
        p.grad = None
    x_adv, (fv, fh) = smoothadv_perturb(model, x, y, sample, m, eps, 4)
    assert all(p.grad is None for p in model.parameters())  # the attack leaves the parameters alone
    norms = flow_l1_norm(fv, fh)
    assert bool((norms <= eps).all()) and float(norms.max()) > 0.5 * eps  # within budget, and using it
    assert bool((x_adv >= 0).all())
    torch.testing.assert_close(x_adv, apply_flow(x, fv, fh), rtol=0, atol=0)
    torch.testing.assert_close(x_adv.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=1e-5, atol=1e-5)  # mass preserved
    with torch.no_grad():
        before = smoothed_cross_entropy(model(sample(x)).view(64, m, -1), y)
        after = smoothed_cross_entropy(model(sample(x_adv)).view(64, m, -1), y)
    assert float(after.mean()) > 1.5 * float(before.mean())
    assert float((after >= before - 1e-6).float().mean()) > 0.8
    # ε = 0: nothing moves
    x0, (fv0, fh0) = smoothadv_perturb(model, x, y, sample, m, 0.0, 4)
    torch.testing.assert_close(x0, x, rtol=0, atol=0)
    assert float(flow_l1_norm(fv0, fh0).max()) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        smoothadv_perturb(model, x - 1, y, sample, m, eps, 1)


def test_gradients_flow_through_the_perturbed_noisy_copies(digits):
    (x, y), _ = digits
    x, y = x[:16], y[:16]
    model = _model()
    model.eval()
    sample = _sampler(torch.arange(16), 2)
    x_adv, _ = smoothadv_perturb(model, x, y, sample, 2, 0.05, 2)
    model.train()
    loss = noise_loss(model(sample(x_adv)).view(16, 2, -1), y).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def _record_inputs(model):
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone())
                                    if module.training else None)
    return seen


def test_m_copies_use_sample_indices_epoch_times_m_plus_j(digits):
    (x, _), _ = digits
    n, m, sigma, seed = 4, 3, 0.05, 7
    images, labels = x[:n], torch.zeros(n, dtype=torch.long)
    model = _model()
    seen = _record_inputs(model)
    train(model, images, labels, noise="flow-laplace", sigma=sigma, epochs=2, batch_size=n, seed=seed,
          method="consistency", num_noise=m, **QUIET)
    order = [torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, 3, e))) for e in range(2)]
    for epoch in range(2):
        batch = seen[epoch]
        assert batch.shape[0] == n * m
        for pos, i in enumerate(order[epoch].tolist()):
            for j in range(m):
                expected = wsmooth_ext.flow_noise(images[i:i + 1], 1, sigma, seed=derive_seed(seed, 1),
                                                  sample_offset=epoch * m + j, keys=torch.tensor([i]))
                torch.testing.assert_close(batch[pos * m + j:pos * m + j + 1], expected, rtol=0, atol=1e-6)


def test_default_method_is_the_plain_noise_training_bit_for_bit(digits):
    """One epoch of train() against a hand-written loop of the paper's training (one draw, sample = epoch)."""
    (x, y), _ = digits
    x, y = x[:96], y[:96]
    seed, sigma, bs = 4, 0.02, 32
    trained = _model()
    train(trained, x, y, noise="flow-laplace", sigma=sigma, epochs=2, lr=0.01, batch_size=bs, seed=seed, **QUIET)
    manual = _model()
    opt = torch.optim.SGD(manual.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    manual.train()
    for epoch in range(2):
        order = torch.randperm(96, generator=torch.Generator().manual_seed(derive_seed(seed, 3, epoch)))
        for start in range(0, 96, bs):
            idx = order[start:start + bs]
            xn = add_noise(x[idx], "flow-laplace", sigma, seed=derive_seed(seed, 1), keys=idx, sample_offset=epoch)
            loss = F.cross_entropy(manual(xn), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for a, b in zip(trained.state_dict().values(), manual.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("method,extra", [("consistency", {}), ("smoothadv", {"adv_steps": 2, "adv_warmup": 2}),
                                          ("noise", {"num_noise": 2}), ("macer", {"num_noise": 4})])
def test_each_method_learns_digits(digits, method, extra):
    (x, y), (xt, yt) = digits
    model = _model()
    history = train(model, x[:600], y[:600], noise="flow-laplace", sigma=0.01, epochs=4, lr=0.003, batch_size=32,
                    optimizer="adam", test_images=xt[:300], test_labels=yt[:300], method=method, **extra, **QUIET)
    losses = [h["loss"] for h in history]
    assert losses[-1] < 0.7 * losses[0]
    assert history[-1]["test_noisy_acc"] > 0.5  # chance is 10%


@pytest.mark.parametrize("method,extra", [("consistency", {"consistency_lambda": 5.0}),
                                          ("smoothadv", {"adv_steps": 2, "adv_warmup": 3, "adv_epsilon": 0.05}),
                                          ("macer", {"num_noise": 2, "macer_gamma": 0.05})])
def test_resume_equals_uninterrupted_run_per_method(tmp_path, digits, method, extra):
    (x, y), (xt, yt) = digits
    x, y = x[:200], y[:200]
    kwargs = dict(noise="flow-laplace", sigma=0.02, lr=0.05, batch_size=64, seed=3, test_images=xt[:40],
                  test_labels=yt[:40], method=method, **extra, **QUIET)
    full_model = _model()
    full = train(full_model, x, y, epochs=3, checkpoint_path=tmp_path / "full.pt", **kwargs)
    part = tmp_path / "part.pt"
    train(_model(), x, y, epochs=1, checkpoint_path=part, **kwargs)
    resumed_model = _model(seed=99)
    resumed = train(resumed_model, x, y, epochs=3, checkpoint_path=part, resume=True, **kwargs)
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(resumed) == strip(full)
    _, meta = load_checkpoint(part)
    assert meta["train_args"]["method"] == method and meta["train_args"]["num_noise"] == 2
    key = next(iter(extra))
    with pytest.raises(ValueError, match=f"{key} was"):
        train(_model(), x, y, epochs=4, checkpoint_path=part, resume=True, **{**kwargs, key: extra[key] + 1})
    with pytest.raises(ValueError, match=f"method was '{method}' there, now 'noise'"):
        train(_model(), x, y, epochs=4, checkpoint_path=part, resume=True,
              **{k: v for k, v in kwargs.items() if k not in extra and k != "method"})


@pytest.mark.parametrize("missing", ["method", "num_noise", "macer_beta", "augment"])
def test_checkpoint_lacking_a_kept_setting_is_refused(tmp_path, digits, missing):
    """A checkpoint whose train_args lack a key --resume must keep (a method's, even one recorded as None for
    this method, or the run's own) is refused with one line naming it: no value is assumed for it."""
    (x, y), _ = digits
    x, y = x[:64], y[:64]
    path = tmp_path / "old.pt"
    kwargs = dict(noise="flow-laplace", sigma=0.02, lr=0.05, batch_size=32, seed=1, **QUIET)
    model = _model()
    train(model, x, y, epochs=1, checkpoint_path=path, **kwargs)
    _, meta, state = load_training_state(path)
    assert len(train(_model(), x, y, epochs=1, checkpoint_path=path, resume=True, **kwargs)) == 1  # as written
    del meta["train_args"][missing]
    save_checkpoint(path, model, meta, training_state=state)
    with pytest.raises(ValueError) as refused:
        train(_model(), x, y, epochs=2, checkpoint_path=path, resume=True, **kwargs)
    assert str(refused.value) == (f"cannot resume from {path}: its train_args lack {missing!r}, a setting a "
                                  "resumed run must keep")
    assert load_training_state(path)[2]["epoch"] == 1  # left as it was


def test_bad_method_arguments(digits):
    (x, y), _ = digits
    with pytest.raises(ValueError, match="method must be one of"):
        train(_model(), x, y, noise="flow-laplace", sigma=0.01, epochs=1, method="trades", **QUIET)
    with pytest.raises(ValueError, match="needs a smoothing noise"):
        train(_model(), x, y, noise="none", sigma=0, epochs=1, method="consistency", **QUIET)
    with pytest.raises(ValueError, match="non-negative pixels"):
        train(_model(), x - 0.5, y, noise="flow-laplace", sigma=0.01, epochs=1, method="smoothadv", **QUIET)
    with pytest.raises(ValueError, match=r"does not use \['adv_epsilon'\]"):
        train(_model(), x, y, noise="flow-laplace", sigma=0.01, epochs=1, method="consistency", adv_epsilon=0.1,
              **QUIET)


def test_cli_method_options(tmp_path, capsys):
    from wsmooth_ext.cli import main
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--method {noise,consistency,smoothadv,macer}", "(default 16)", "(default 0.03)", "8 for macer", "(default noise)", "(default 3)", "(default 0.5)",
                   "mass-normalized units", "(default 0.02)", "(default 4)", "(default 1 for noise, 2 for consistency"):
        assert needle in text, needle
    out = tmp_path / "c.pt"
    args = ["train", "--dataset", "digits", "--optimizer", "adam", "--lr", "0.01", "--batch", "64", "--train-size",
            "128", "--out", str(out), "--no-progress", "--method", "smoothadv", "--adv-steps", "1",
            "--adv-epsilon", "0.03", "--num-noise", "1"]
    assert main(args + ["--epochs", "1"]) == 0
    assert "method smoothadv" in capsys.readouterr().out
    meta = load_checkpoint(out)[1]["train_args"]
    assert (meta["method"], meta["adv_steps"], meta["adv_epsilon"], meta["num_noise"]) == ("smoothadv", 1, 0.03, 1)
    assert main(args[:-4] + ["--adv-epsilon", "0.04", "--num-noise", "1", "--epochs", "2", "--resume"]) == 2
    assert "adv_epsilon was 0.03 there, now 0.04" in capsys.readouterr().err
    fresh = [str(tmp_path / "d.pt") if a == str(out) else a for a in args]  # an existing --out is refused first
    assert main(fresh + ["--epochs", "1", "--consistency-lambda", "3"]) == 2
    assert "does not use ['consistency_lambda']" in capsys.readouterr().err
