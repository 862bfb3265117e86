"""Learning-rate schedules and the sigma warm-up: the learning rate of every step against
closed forms written here and against torch's own schedulers, the sigma of every epoch, what the loop sets and
draws, resume == uninterrupted run, the resume refusals, the defaults training as before, and the options of
`wsmooth train` and the experiments."""

import inspect
import math

import pytest
import torch

from wsmooth_ext.cli import main
from wsmooth_ext.core import noises
from wsmooth_ext.inputs.checkpoint import load_training_state
from wsmooth_ext.training import options, schedules
from wsmooth_ext.training.config import RESUME_FIXED, TrainConfig
from wsmooth_ext.training.keywords import train
from wsmooth_ext.training.schedules import epoch_sigma, learning_rate

from conftest import wong_digits_model as _model

pytestmark = [pytest.mark.filterwarnings("ignore:wsmooth_ext. no compiled flow_noise kernel:RuntimeWarning"),
              pytest.mark.usefixtures("one_thread")]
QUIET = dict(progress=False, log=lambda line: None)
BASE = dict(noise="flow-laplace", sigma=0.05, lr=0.05, batch_size=64, seed=1, **QUIET)


# ---------------------------------------------------------------------------------- the formulas
def _lr(schedule, epoch, batch, **settings):
    """B = 5 batches per epoch, T = 4 epochs (N = 20 steps), base lr 0.1."""
    return learning_rate(0.1, schedule, epoch, batch, 5, 4, **settings)


def test_constant_without_warmup_is_the_base_lr_at_every_step():
    for lr in (0.1, 0.001, 1 / 3):
        assert all(learning_rate(lr, "constant", e, b, 7, 3) == lr for e in range(3) for b in range(7))


@pytest.mark.parametrize("schedule, epoch, batch, settings, expected", [
    # warm-up alone (D = 10, W = 1 epoch = 5 steps): 0.1·(1/10 + 9/10·k/5), then 0.1
    ("constant", 0, 0, dict(warmup=1, div=10), 0.01),
    ("constant", 0, 2, dict(warmup=1, div=10), 0.1 * (0.1 + 0.9 * 2 / 5)),
    ("constant", 1, 0, dict(warmup=1, div=10), 0.1),
    ("constant", 3, 4, dict(warmup=1, div=10), 0.1),
    # half an epoch of warm-up: 2.5 steps
    ("constant", 0, 2, dict(warmup=0.5, div=10), 0.1 * (0.1 + 0.9 * 2 / 2.5)),
    ("constant", 0, 3, dict(warmup=0.5, div=10), 0.1),
    # step: x0.5 every 2 epochs, per epoch
    ("step", 0, 4, dict(step=2, gamma=0.5), 0.1),
    ("step", 1, 4, dict(step=2, gamma=0.5), 0.1),
    ("step", 2, 0, dict(step=2, gamma=0.5), 0.05),
    ("step", 3, 4, dict(step=1, gamma=0.5), 0.1 / 8),
    ("step", 0, 1, dict(step=2, gamma=0.5, warmup=1, div=10), 0.1 * (0.1 + 0.9 / 5)),
    # cosine over the 20 steps: 0.1 at k = 0, 0.05 at k = 10, (1 ± cos 45°)/2 at k = 5 and 15
    ("cosine", 0, 0, {}, 0.1),
    ("cosine", 1, 0, {}, 0.1 * (1 + math.sqrt(0.5)) / 2),
    ("cosine", 2, 0, {}, 0.05),
    ("cosine", 3, 0, {}, 0.1 * (1 - math.sqrt(0.5)) / 2),
    ("cosine", 3, 4, {}, 0.1 * (1 + math.cos(math.pi * 19 / 20)) / 2),
    ("cosine", 0, 2, dict(warmup=1, div=10), 0.1 * (0.1 + 0.9 * 2 / 5) * (1 + math.cos(math.pi * 2 / 20)) / 2),
    # one-cycle, W = 1 (w = 5), D = 10: 0.01 -> 0.1 linearly over steps 0..5, then cosine over the 15 left
    ("one-cycle", 0, 0, dict(warmup=1, div=10), 0.01),
    ("one-cycle", 0, 2, dict(warmup=1, div=10), 0.1 * (0.1 + 0.9 * 2 / 5)),
    ("one-cycle", 1, 0, dict(warmup=1, div=10), 0.1),
    ("one-cycle", 2, 0, dict(warmup=1, div=10), 0.1 * (1 + math.cos(math.pi / 3)) / 2),  # k - w = 5 of 15
    ("one-cycle", 3, 4, dict(warmup=1, div=10), 0.1 * (1 + math.cos(math.pi * 14 / 15)) / 2),
    ("one-cycle", 1, 0, dict(warmup=2, div=4), 0.1 * (0.25 + 0.75 * 5 / 10)),
])
def test_learning_rate_against_closed_forms(schedule, epoch, batch, settings, expected):
    assert _lr(schedule, epoch, batch, **settings) == pytest.approx(expected, rel=1e-12, abs=0)


def _torch_lrs(make, steps: int, per_batch: bool, batches: int) -> list[float]:
    """The learning rate of every step under a torch scheduler, stepped per batch or per epoch."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make(opt)
    lrs = []
    for k in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if per_batch or (k + 1) % batches == 0:
            scheduler.step()
    return lrs


def test_step_and_cosine_equal_torchs_schedulers():
    """torch's StepLR stepped per epoch and CosineAnnealingLR(T_max = N, eta_min = 0) stepped per batch: an
    independent implementation of the same schedules."""
    B, T = 5, 6
    ours = [learning_rate(0.1, "step", e, b, B, T, step=2, gamma=0.3) for e in range(T) for b in range(B)]
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.3), B * T, False, B)
    assert ours == pytest.approx(theirs, rel=1e-12)
    ours = [learning_rate(0.1, "cosine", e, b, B, T) for e in range(T) for b in range(B)]
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=B * T), B * T, True, B)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15)


def test_one_cycle_rises_to_its_peak_and_falls_to_zero():
    B, T, W = 4, 5, 2
    lrs = [learning_rate(0.1, "one-cycle", e, b, B, T, warmup=W, div=25) for e in range(T) for b in range(B)]
    peak = W * B
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[peak] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # rising, linearly
    assert all(b - a == pytest.approx(lrs[1] - lrs[0]) for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))  # then falling
    assert 0 < lrs[-1] < 1e-3 * 0.1 * 25


def test_sigma_ramp():
    sigma = 0.05
    assert [epoch_sigma(sigma, 4, 0.1, e) for e in range(6)] == pytest.approx(
        [0.005, 0.005 + 0.045 / 4, 0.005 + 0.045 / 2, 0.005 + 0.045 * 3 / 4, 0.05, 0.05], rel=1e-12)
    assert epoch_sigma(sigma, 4, 0.1, 4) == sigma and epoch_sigma(sigma, 4, 0.1, 100) == sigma  # exactly
    assert all(epoch_sigma(sigma, 0, 0.1, e) == sigma for e in range(5))  # no warm-up: sigma itself
    assert [epoch_sigma(1.0, 2, 0.5, e) for e in range(3)] == [0.5, 0.75, 1.0]


def test_one_declaration_per_setting():
    """The keywords of train(), TrainConfig's fields, the options and the recorded keys agree: names, defaults;
    and every one is fixed for --resume."""
    assert tuple(o.name for o in options.SCHEDULE) == schedules.KEYS
    keywords = inspect.signature(train).parameters
    fields = TrainConfig.__dataclass_fields__
    for option in options.SCHEDULE:
        assert keywords[option.name].default == option.default == fields[option.name].default, option.name
    assert set(schedules.KEYS) <= set(RESUME_FIXED)
    assert options.LR_SCHEDULE.choices == schedules.SCHEDULES


# ---------------------------------------------------------------------------------- what the loop does
@pytest.fixture
def recorded(monkeypatch):
    """Every noise draw (sigma, seed, sample offset, keys) and the learning rate of every optimizer step."""
    draws, lrs = [], []
    sample = noises.NoiseFamily.sample

    def recording_sample(self, x, num_samples, sigma, *, seed, sample_offset, keys):
        draws.append((sigma, seed, sample_offset, keys.tolist()))
        return sample(self, x, num_samples, sigma, seed=seed, sample_offset=sample_offset, keys=keys)

    step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(noises.NoiseFamily, "sample", recording_sample)
    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    return draws, lrs


def test_the_loop_sets_every_steps_lr_and_scales_the_same_draws(recorded, digits):
    (x, y), _ = digits
    x, y = x[:300], y[:300]  # 5 batches of 64 per epoch
    draws, lrs = recorded
    train(_model(), x, y, epochs=3, **BASE)
    plain_draws, plain_lrs = list(draws), list(lrs)
    draws.clear(), lrs.clear()
    settings = dict(lr_schedule="one-cycle", lr_warmup=1, sigma_warmup=2, sigma_warmup_start=0.2)
    train(_model(), x, y, epochs=3, **BASE, **settings)
    assert plain_lrs == [0.05] * 15
    assert lrs == [learning_rate(0.05, "one-cycle", e, b, 5, 3, warmup=1) for e in range(3) for b in range(5)]
    assert lrs[0] == pytest.approx(0.05 / 25) and lrs[5] == 0.05
    # the same draws (seed, sample indices, keys) in the same order; only sigma differs, per epoch
    assert [d[1:] for d in draws] == [d[1:] for d in plain_draws] and len(draws) == 15
    assert [d[0] for d in plain_draws] == [0.05] * 15
    assert [d[0] for d in draws] == pytest.approx([0.01] * 5 + [0.03] * 5 + [0.05] * 5, rel=1e-12)
    assert draws[-1][0] == 0.05  # exactly sigma after the warm-up


def test_evaluation_under_noise_uses_the_final_sigma(monkeypatch, digits):
    from wsmooth_ext.training import loop

    (x, y), (xt, yt) = digits
    seen = []
    count = loop.count_correct
    monkeypatch.setattr(loop, "count_correct", lambda *a, **k: seen.append(k.get("sigma")) or count(*a, **k))
    lines = []
    history = train(_model(), x[:128], y[:128], epochs=3, test_images=xt[:20], test_labels=yt[:20],
                    **{**BASE, "log": lines.append}, sigma_warmup=2)
    assert [s for s in seen if s is not None] == [0.05] * 3
    assert [row["sigma"] for row in history] == pytest.approx([0.005, 0.0275, 0.05])
    assert "lr" not in history[0]  # the learning rate does not move
    assert any(line.startswith("sigma warm-up: 0.005 in epoch 1, rising linearly to 0.05 from epoch 3 on; test "
                               "accuracy under noise uses sigma 0.05") for line in lines), lines
    assert "sigma 0.005" in next(line for line in lines if line.startswith("epoch   1/3"))


# ---------------------------------------------------------------------------------- resume
class Interrupted(Exception):
    pass


def _stop_before_saving(epoch: int):
    """A log that stops the run at the line of ``epoch`` (1-based): that epoch's checkpoint is never written."""
    def log(line):
        if line.startswith(f"epoch {epoch:>3}/"):
            raise Interrupted(line)
    return log


SCHEDULED = {
    "one-cycle": dict(lr_schedule="one-cycle", lr_warmup=1, sigma_warmup=2),
    "cosine-adam": dict(lr_schedule="cosine", lr_warmup=0.5, sigma_warmup=1, sigma_warmup_start=0.5,
                        optimizer="adam", lr=0.01),
    "step": dict(lr_schedule="step", lr_step=1, lr_gamma=0.5, lr_warmup=1, sigma_warmup=2),
}


@pytest.mark.parametrize("name", sorted(SCHEDULED))
def test_resume_equals_the_uninterrupted_run(name, tmp_path, digits):
    """3 epochs uninterrupted == stopped in epoch 3 (checkpoint after 2), resumed from fresh weights to 3."""
    (x, y), (xt, yt) = digits
    x, y = x[:300], y[:300]
    kwargs = {**BASE, **SCHEDULED[name], "test_images": xt[:30], "test_labels": yt[:30]}
    full_model = _model()
    full = train(full_model, x, y, epochs=3, checkpoint_path=tmp_path / "full.pt", **kwargs)
    part = tmp_path / "part.pt"
    with pytest.raises(Interrupted):
        train(_model(), x, y, epochs=3, checkpoint_path=part, **{**kwargs, "log": _stop_before_saving(3)})
    assert load_training_state(part)[2]["epoch"] == 2
    resumed_model = _model(seed=77)  # other weights: everything must come from the checkpoint
    resumed = train(resumed_model, x, y, epochs=3, checkpoint_path=part, resume=True, **kwargs)
    full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(resumed) == strip(full)
    assert [r["lr"] for r in full] == [learning_rate(kwargs["lr"], kwargs["lr_schedule"], e, 0, 5, 3,
                                                     warmup=kwargs["lr_warmup"], step=kwargs.get("lr_step", 30),
                                                     gamma=kwargs.get("lr_gamma", 0.1)) for e in range(3)]
    args = load_training_state(part)[1]["train_args"]
    assert {k: args[k] for k in ("lr_schedule", "lr_warmup", "sigma_warmup")} == {
        k: SCHEDULED[name][k] for k in ("lr_schedule", "lr_warmup", "sigma_warmup")}


@pytest.mark.parametrize("settings", [{}, dict(lr_schedule="step", lr_step=1, lr_gamma=0.5, lr_warmup=0.5)],
                         ids=["constant", "step"])
def test_constant_and_step_runs_extend_to_the_uninterrupted_run(settings, tmp_path, digits):
    (x, y), _ = digits
    x, y = x[:300], y[:300]
    full_model = _model()
    train(full_model, x, y, epochs=3, **BASE, **settings)
    path = tmp_path / "short.pt"
    train(_model(), x, y, epochs=2, checkpoint_path=path, **BASE, **settings)  # a finished 2-epoch run ...
    extended = _model(seed=5)
    train(extended, x, y, epochs=3, checkpoint_path=path, resume=True, **BASE, **settings)  # ... extended
    assert all(torch.equal(a, b) for a, b in zip(full_model.state_dict().values(), extended.state_dict().values()))


@pytest.mark.parametrize("schedule", ["cosine", "one-cycle"])
def test_epoch_dependent_schedules_refuse_another_number_of_epochs(schedule, tmp_path, digits):
    (x, y), _ = digits
    x, y = x[:128], y[:128]
    settings = dict(lr_schedule=schedule, lr_warmup=1)
    path = tmp_path / "run.pt"
    train(_model(), x, y, epochs=2, checkpoint_path=path, **BASE, **settings)
    model = _model(seed=9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for epochs in (3, 4):
        with pytest.raises(ValueError, match=rf"epochs {epochs} differs from the 2 it was started with, and the "
                           rf"{schedule} learning-rate schedule depends on the total epochs"):
            train(model, x, y, epochs=epochs, checkpoint_path=path, resume=True, **BASE, **settings)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # refused before loading
    assert load_training_state(path)[2]["epoch"] == 2
    # the same epochs resume (nothing left to do)
    assert len(train(model, x, y, epochs=2, checkpoint_path=path, resume=True, **BASE, **settings)) == 2


@pytest.mark.parametrize("key, value", [("lr_schedule", "cosine"), ("lr_warmup", 0.5), ("lr_div", 10.0),
                                        ("lr_step", 2), ("lr_gamma", 0.3), ("sigma_warmup", 0),
                                        ("sigma_warmup_start", 0.2)])
def test_resume_refuses_a_changed_schedule(key, value, tmp_path, digits):
    (x, y), _ = digits
    x, y = x[:64], y[:64]
    settings = dict(lr_schedule="step", lr_step=1, lr_gamma=0.5, lr_warmup=1.0, sigma_warmup=1)
    path = tmp_path / "run.pt"
    train(_model(), x, y, epochs=2, checkpoint_path=path, **BASE, **settings)
    was = settings.get(key, getattr(options, key.upper()).default)
    with pytest.raises(ValueError, match=rf"cannot resume from .*: {key} was {was!r} there, now {value!r} "
                       r"\(only epochs may change\)"):
        train(_model(), x, y, epochs=3, checkpoint_path=path, resume=True, **BASE, **{**settings, key: value})


def test_a_checkpoint_without_the_schedule_keys_is_refused(tmp_path, digits):
    """A checkpoint written before the schedules existed (its train_args lack their keys)."""
    from wsmooth_ext.inputs.checkpoint import save_checkpoint

    (x, y), _ = digits
    x, y = x[:64], y[:64]
    path = tmp_path / "old.pt"
    train(_model(), x, y, epochs=1, checkpoint_path=path, **BASE)
    state, meta, training_state = load_training_state(path)
    meta["train_args"] = {k: v for k, v in meta["train_args"].items() if k not in schedules.KEYS}
    model = _model()
    model.load_state_dict(state)
    save_checkpoint(path, model, meta, training_state=training_state)
    with pytest.raises(ValueError, match=r"cannot resume from .*old.pt: it records no lr_schedule \(it was written "
                       "before learning-rate schedules and the sigma warm-up existed\\); train anew"):
        train(_model(), x, y, epochs=2, checkpoint_path=path, resume=True, **BASE)


# ---------------------------------------------------------------------------------- the defaults
def test_the_defaults_train_as_without_the_options(tmp_path, digits):
    (x, y), _ = digits
    x, y = x[:300], y[:300]
    plain, explicit = _model(), _model()
    a = train(plain, x, y, epochs=2, checkpoint_path=tmp_path / "a.pt", **BASE)
    b = train(explicit, x, y, epochs=2, checkpoint_path=tmp_path / "b.pt", **BASE,
              **{o.name: o.default for o in options.SCHEDULE})
    assert all(torch.equal(p, q) for p, q in zip(plain.state_dict().values(), explicit.state_dict().values()))
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in a] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in b]
    assert set(a[0]) == {"epoch", "loss", "train_noisy_acc", "test_clean_acc", "test_noisy_acc", "seconds"}
    args = load_training_state(tmp_path / "a.pt")[1]["train_args"]
    assert {k: args[k] for k in schedules.KEYS} == {o.name: o.default for o in options.SCHEDULE}


def test_the_defaults_equal_a_hand_written_constant_lr_loop(digits):
    """Today's training, written out (plain SGD steps at one lr on the same draws and batches)."""
    from wsmooth_ext.core.noises import add_noise
    from wsmooth_ext.training.keywords import derive_seed

    (x, y), _ = digits
    x, y = x[:128], y[:128]
    trained = _model()
    train(trained, x, y, epochs=2, **{**BASE, "batch_size": 32})
    manual = _model()
    opt = torch.optim.SGD(manual.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for epoch in range(2):
        order = torch.randperm(128, generator=torch.Generator().manual_seed(derive_seed(1, 3, epoch)))
        for start in range(0, 128, 32):
            idx = order[start:start + 32]
            noisy = add_noise(x[idx], "flow-laplace", 0.05, seed=derive_seed(1, 1), keys=idx, sample_offset=epoch)
            loss = torch.nn.functional.cross_entropy(manual(noisy), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for a, b in zip(trained.state_dict().values(), manual.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------- the commands
def _flat(text: str) -> str:
    return " ".join(text.split())


def test_train_help_states_the_options_with_their_ranges(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no breaks inside --lr-div
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = _flat(capsys.readouterr().out)
    for needle in ["--lr-schedule {constant,step,cosine,one-cycle} learning-rate schedule: constant; step",
                   "(default constant: --lr throughout)",
                   "--lr-warmup EPOCHS epochs of linear learning-rate warm-up from lr/--lr-div, per batch",
                   "(default 0; 0: none); a finite number >= 0",
                   "--lr-div D the warm-up starts at lr/--lr-div (default 25, torch's OneCycleLR's); a number in "
                   "[1, 1000000]",
                   "--lr-step EPOCHS step schedule: epochs between two decays (default 30); an integer in [1, 1000000]",
                   "--lr-gamma GAMMA step schedule: factor of each decay (default 0.1); a number in (0, 1]",
                   "--sigma-warmup K epochs over which the training noise's sigma rises linearly",
                   "(default 0; 0: --sigma from the first epoch); an integer in [0, 1000000]",
                   "--sigma-warmup-start S sigma of the warm-up's first epoch, as a fraction of --sigma (default "
                   "0.1); a number in (0, 1]",
                   "--epochs may be raised to extend a finished run, except under --lr-schedule cosine or one-cycle",
                   "cosine lr * (1 + cos(pi k / N)) / 2 per batch"]:
        assert needle in text, needle


TRAIN = ["train", "--dataset", "digits", "--train-size", "64", "--batch", "32", "--epochs", "2", "--no-progress"]


@pytest.mark.parametrize("bad, message", [
    (["--lr-gamma", "2"], "--lr-gamma must be a number in (0, 1], got 2.0"),
    (["--lr-step", "0"], "--lr-step must be an integer in [1, 1000000], got 0"),
    (["--lr-div", "0.5"], "--lr-div must be a number in [1, 1000000], got 0.5"),
    (["--lr-warmup", "-1"], "--lr-warmup must be a finite number >= 0 (epochs), got -1.0"),
    (["--sigma-warmup", "1.5"], "--sigma-warmup must be an integer in [0, 1000000], got 1.5"),
    (["--sigma-warmup-start", "0"], "--sigma-warmup-start must be a number in (0, 1] (the noise ops need sigma > 0), "
                                    "got 0.0"),
    (["--lr-schedule", "one-cycle"], "--lr-schedule one-cycle needs --lr-warmup > 0"),
    (["--lr-warmup", "2"], "--lr-warmup 2 must be less than --epochs 2"),
    (["--sigma-warmup", "2"], "--sigma-warmup 2 must be less than --epochs 2"),
    (["--sigma-warmup", "1", "--noise", "none"], "--sigma-warmup needs a training noise (noise is none)"),
])
def test_a_bad_value_is_one_line_naming_the_option(bad, message, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(TRAIN + bad + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_the_command_records_resumes_and_refuses(tmp_path, capsys, monkeypatch):
    import wsmooth_ext.training.loop as loop

    out = tmp_path / "m.pt"
    run = TRAIN + ["--lr-schedule", "cosine", "--lr-warmup", "0.5", "--sigma-warmup", "1", "--out", str(out)]
    original = loop.format_row

    def stop_in_epoch_2(row, *args):  # before epoch 2's checkpoint, as a killed run
        if row["epoch"] == 2:
            raise Interrupted()
        return original(row, *args)

    monkeypatch.setattr(loop, "format_row", stop_in_epoch_2)
    with pytest.raises(Interrupted):
        main(run)
    monkeypatch.setattr(loop, "format_row", original)
    assert load_training_state(out)[2]["epoch"] == 1
    printed = capsys.readouterr().out
    assert "learning rate: cosine from 0.001 to 0 over 2 epochs, per batch; linear warm-up from 4e-05 over the " \
           "first 0.5 epochs, per batch (2 batches per epoch)" in printed
    assert main(run + ["--resume"]) == 0
    assert "resuming from" in capsys.readouterr().out
    args = load_training_state(out)[1]["train_args"]
    assert (args["lr_schedule"], args["lr_warmup"], args["sigma_warmup"]) == ("cosine", 0.5, 1)
    assert main(run + ["--resume", "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochs 3 differs from the 2 it was started with" in err[0], err
    assert main([a if a != "cosine" else "step" for a in run] + ["--resume"]) == 2
    assert "lr_schedule was 'cosine' there, now 'step'" in capsys.readouterr().err


def test_experiments_take_the_schedule(tmp_path, capsys):
    """certified-training passes the block to train(): the checkpoint is the one `wsmooth train` writes with the
    same options, the report says how it was trained, and a bad combination fails before any work."""
    out = tmp_path / "exp"
    schedule = ["--lr-schedule", "step", "--lr-step", "1", "--lr-gamma", "0.5", "--sigma-warmup", "1"]
    common = ["--dataset", "digits", "--train-size", "64", "--epochs", "2", "--lr", "0.01", "--batch", "32"]
    assert main(["experiment", "certified-training", "--out", str(out), *common, "--methods", "noise", "--sigmas",
                 "0.02", "--max-images", "2", "--n0", "8", "--samples", "16", "--device", "cpu", "--no-progress",
                 *schedule]) == 0
    summary = (out / "summary.md").read_text()
    assert "step schedule x0.5 every 1 epochs, sigma warm-up from 0.1 sigma over 1 epochs" in summary
    assert "--lr-schedule step --lr-step 1 --lr-gamma 0.5 --sigma-warmup 1" in summary  # the command that reruns it
    alone = tmp_path / "alone.pt"
    assert main(["train", *common, "--optimizer", "adam", "--sigma", "0.02", *schedule, "--out", str(alone),
                 "--no-progress"]) == 0
    ours, theirs = load_training_state(out / "noise_sigma0.02.pt"), load_training_state(alone)
    assert ours[1]["train_args"] == theirs[1]["train_args"]
    assert all(torch.equal(ours[0][k], theirs[0][k]) for k in theirs[0]) and ours[0].keys() == theirs[0].keys()
    capsys.readouterr()
    for name in ("certified-training", "fig5", "table1"):
        bad = tmp_path / name
        assert main(["experiment", name, "--out", str(bad), "--lr-schedule", "one-cycle", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--lr-schedule one-cycle needs --lr-warmup > 0" in err[0], err
        assert not bad.exists()


def test_experiments_warm_sigma_up_only_for_models_trained_under_noise(monkeypatch, tmp_path, digits):
    """fig5 trains a plain and an adversarial model without noise: they get no sigma warm-up (train() would
    refuse one), the smoothed model gets it; every model gets the learning-rate schedule."""
    from wsmooth_ext.experiments import fig5, steps
    from wsmooth_ext.inputs.data import DATASETS
    from wsmooth_ext.training import keywords

    (x, y), (xt, yt) = digits
    seen = {}

    def fake_train(net, images, labels, **kwargs):
        seen[kwargs.get("adversarial", kwargs["noise"])] = kwargs
        raise Interrupted()

    monkeypatch.setattr(keywords, "train", fake_train)
    experiment = fig5.EXPERIMENT
    s = experiment.check_settings(experiment.settings(dataset="digits", epochs=3, lr_schedule="cosine",
                                                      sigma_warmup=2, sigma_warmup_start=0.3))
    data = steps.Data("digits", DATASETS["digits"], xt, yt, [0], train=(x[:32], y[:32]))
    ctx = steps.Context(tmp_path, s, data, torch.device("cpu"), False, lambda line: None, "digits", "wong_mnist",
                        "test")
    for run in fig5._plan(s, {"attack_batch": 10}):
        with pytest.raises(Interrupted):
            run.model.obtain(ctx, "[1/3]")
    assert set(seen) == {"none", "flow", "flow-laplace"}
    assert all(kw["lr_schedule"] == "cosine" for kw in seen.values())
    assert (seen["flow-laplace"]["sigma_warmup"], seen["flow-laplace"]["sigma_warmup_start"]) == (2, 0.3)
    assert seen["none"]["sigma_warmup"] == seen["flow"]["sigma_warmup"] == 0
