"""Trust under abuse (issue 20): bad values refused up front, failed runs leave no debris, resumes that cannot
equal an uninterrupted run refused. Each test reproduces a defect a hostile user found; the comment says what
happened before."""

import math

import numpy as np
import pytest
import torch

import wsmooth_ext
from wsmooth_ext import Smooth
from wsmooth_ext.attacks import FlowAttack, FrankWolfeAttack, SmoothedTarget, WassersteinPGD
from wsmooth_ext.inputs.checkpoint import load_checkpoint, save_checkpoint
from wsmooth_ext.cli import main
from wsmooth_ext.inputs.models import build_model
from wsmooth_ext.runs.attack import attack_to_log
from wsmooth_ext.runs.certify import certify_to_log
from wsmooth_ext.runs.logfile import read_log

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning")]

ATTACK_FAST = ["--max-iter", "4", "--eps0", "0.05", "--eps-factor", "1.5", "--eps-every", "2", "--sinkhorn-iter", "30",
               "--no-progress"]


def _checkpoint(path, seed=0, poison=None):
    model = build_model("wong_mnist", input_shape=(1, 8, 8), num_classes=10, seed=seed)
    if poison is not None:
        with torch.no_grad():
            model.net[0].weight[0, 0, 0, 0] = poison
    save_checkpoint(path, model, {"arch": "wong_mnist", "dataset": "digits", "noise": "flow-laplace", "sigma": 0.05})
    return str(path)


def _error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "Warning" not in err, err
    return err


# ------------------------------------------------------------------------------------------ 9. Python API
def test_certify_refuses_an_image_without_mass():
    # before: a zero image got prediction and a positive certified radius
    smooth = Smooth(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)), 3, 0.1)
    with pytest.raises(ValueError, match="no mass"):
        smooth.certify(torch.zeros(1, 4, 4), 10, 100, 0.05)
    with pytest.raises(ValueError, match=r"images \[1\]"):
        smooth.certify_batch(torch.stack([torch.rand(1, 4, 4), torch.zeros(1, 4, 4)]), 10, 100, 0.05)


@pytest.mark.parametrize("labels, message", [(torch.tensor([1.0, 2.0]), "integer"),
                                             (torch.tensor([1, 3]), r"\[0, 3\)"),
                                             (torch.tensor([-1, 0]), r"\[0, 3\)")])
@pytest.mark.parametrize("smoothed", [False, True])
def test_attacks_refuse_float_or_out_of_range_labels(labels, message, smoothed):
    # before: float labels were cast to int and labels outside the classes were attacked (or counted as fooled)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        x = torch.rand(2, 1, 4, 4)
    target = Smooth(model, 3, 0.1) if smoothed else model
    smoothing = SmoothedTarget(n_test=100) if smoothed else None
    for attack in (WassersteinPGD(target, max_iter=1, sinkhorn_iter=5, kernel_size=3, smoothing=smoothing),
                   FrankWolfeAttack(target, max_iter=1, kernel_size=3, smoothing=smoothing),
                   FlowAttack(target, max_iter=1)):
        with pytest.raises(ValueError, match=message):
            attack.attack(x, labels)


def test_noise_ops_accept_numpy_integers():
    # before: np.int64 counts (what numpy-based code hands over) were refused as "not an integer"
    x = torch.rand(2, 1, 5, 5)
    expected = wsmooth_ext.flow_noise(x, 3, 0.1, seed=7, sample_offset=2)
    got = wsmooth_ext.flow_noise(x, np.int64(3), np.float64(0.1), seed=np.int64(7), sample_offset=np.int32(2))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(wsmooth_ext.pixel_noise(x, np.int64(3), 0.1), wsmooth_ext.pixel_noise(x, 3, 0.1),
                               rtol=0, atol=0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25, 3))
    y = np.array([0, 1])
    for attack in (WassersteinPGD(model, kernel_size=np.int64(3), max_iter=np.int64(2), sinkhorn_iter=np.int64(5)),
                   FrankWolfeAttack(model, kernel_size=np.int64(3), max_iter=np.int64(2)),
                   FlowAttack(model, max_iter=np.int64(2), eps_every=np.int64(1))):
        assert attack.attack(x, torch.from_numpy(y)).adversarial.shape == x.shape


@pytest.mark.parametrize("op", [wsmooth_ext.flow_noise, wsmooth_ext.pixel_noise])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_ops_refuse_sigma_whose_samples_overflow(op, dtype):
    # before: flow_noise(x, 1, 1e37) returned inf pixels silently
    x = torch.rand(1, 1, 6, 6, dtype=dtype)
    huge = 1e37 if dtype == torch.float32 else 1e306
    with pytest.raises(ValueError, match="sigma=.* too large"):
        op(x, 1, huge)
    with pytest.raises(ValueError, match="too large"):  # big pixel values (Smooth accepts any non-negative image)
        Smooth(torch.nn.Flatten(), 36, 1e4).count_classes((x + 1) * (torch.finfo(dtype).max / 1e6), 2)
    # the bound is sound: just below it, the samples are finite
    out = op(x, 50, huge / 1e3)
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("shape", [(2, 1, 1, 5), (2, 3, 4, 1), (1, 1, 1, 1)])
def test_pixel_noise_takes_images_one_pixel_wide(shape):
    # before: pixel_noise refused H or W of 1 ("flows live between pixels"), though pixel noise has no flows
    from wsmooth_ext.core.reference import pixel_noise_reference

    x = torch.rand(*shape, dtype=torch.float64) + 0.1
    out = wsmooth_ext.pixel_noise(x, 4, 0.2, seed=3)
    torch.testing.assert_close(out, pixel_noise_reference(x, 4, 0.2, seed=3), rtol=1e-12, atol=1e-12)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: wsmooth_ext.pixel_noise(t, 3, 0.2, seed=3), (xg,))
    with pytest.raises(ValueError, match="H >= 2 and W >= 2"):
        wsmooth_ext.flow_noise(x, 4, 0.2)


# ------------------------------------------------------------------------------------------ 3. non-finite weights
@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_commands_refuse_a_checkpoint_with_non_finite_weights(tmp_path, capsys, poison):
    # before: certify/predict/attack ran a NaN model and logged abstentions (or argmax 0) as results
    ckpt = _checkpoint(tmp_path / "nan.pt", poison=poison)
    with pytest.raises(ValueError, match="non-finite weights"):
        load_checkpoint(ckpt)
    for command in (["certify", ckpt, "--n0", "8", "--samples", "32"], ["predict", ckpt, "--samples", "32"],
                    ["attack", ckpt] + ATTACK_FAST):
        out = tmp_path / f"{command[0]}.tsv"
        assert main(command + ["--dataset", "digits", "--max-images", "2", "--out", str(out)]) == 2
        assert "non-finite weights" in _error_line(capsys)
        assert not out.exists()


# ------------------------------------------------------------------------------------------ 4. debris
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


# ------------------------------------------------------------------------------------------ 5. --save-adv folder
def test_save_adv_into_a_missing_folder_is_created(tmp_path):
    # before: validation passed, the attack ran, and saving failed with "No such file or directory"
    ckpt = _checkpoint(tmp_path / "m.pt")
    out, adv = tmp_path / "logs" / "a.tsv", tmp_path / "tensors" / "deeper" / "adv.pt"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "3", "--out", str(out),
                 "--save-adv", str(adv)] + ATTACK_FAST) == 0
    saved = torch.load(adv, weights_only=True)
    assert saved["idx"].tolist() == [r["idx"] for r in read_log(out)[1]] == [0, 1, 2]


def test_save_adv_under_a_file_is_refused_up_front(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "m.pt")
    (tmp_path / "plain").write_text("x")
    out = tmp_path / "a.tsv"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "2", "--out", str(out),
                 "--save-adv", str(tmp_path / "plain" / "adv.pt")] + ATTACK_FAST) == 2
    assert "--save-adv" in _error_line(capsys)
    assert not out.exists()


# ------------------------------------------------------------------------------------------ 12. attack options
@pytest.mark.parametrize("extra", [["--n-grad", "16"], ["--n-test", "500"], ["--success-test", "fixed"],
                                   ["--alpha", "0.01"], ["--batch", "100"], ["--seed", "3"], ["--sigma", "0.1"]])
def test_smoothed_only_options_are_refused_without_smoothed(tmp_path, capsys, extra):
    # before: --success-test/--n-grad/--n-test were silently ignored on a plain attack
    ckpt = _checkpoint(tmp_path / "m.pt")
    out = tmp_path / "a.tsv"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "1", "--out", str(out)] + extra
                + ATTACK_FAST) == 2
    line = _error_line(capsys)
    assert extra[0] in line and "--smoothed" in line
    assert not out.exists()


@pytest.mark.parametrize("test", ["sequential", "fixed"])
def test_a_success_test_that_can_never_decide_is_refused(tmp_path, capsys, test):
    # before: `attack --smoothed --n-test 3` printed a raw UserWarning per iteration and counted every image fooled
    ckpt = _checkpoint(tmp_path / "m.pt")
    out = tmp_path / "a.tsv"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "1", "--out", str(out), "--smoothed",
                 "--n-test", "3", "--success-test", test] + ATTACK_FAST) == 2
    assert "--n-test 3 is too small" in _error_line(capsys)
    assert not out.exists()


# ------------------------------------------------------------------------------------------ 2. stated ranges
ABSURD = [
    (["attack"], "--eps", "1e39"), (["attack"], "--eps0", "3.5e38"), (["attack", "--smoothed"], "--n-grad", "1e8"),
    (["attack"], "--kernel-size", "9999"), (["attack"], "--kernel-size", "4"), (["attack"], "--reg", "1e300"),
    (["attack"], "--gamma", "1e-300"), (["attack"], "--eps-factor", "1e308"), (["attack"], "--eps", "nan"),
    (["attack"], "--p", "inf"), (["attack"], "--step", "-1"), (["attack"], "--flow-step", "0"),
    (["attack"], "--max-iter", "1e9"), (["attack"], "--eps-every", "0"), (["attack"], "--sinkhorn-iter", "1e9"),
    (["attack"], "--sinkhorn-tol", "1"), (["attack"], "--attack-batch", "1e9"),
    (["attack", "--smoothed"], "--n-test", "1e12"), (["attack", "--smoothed"], "--alpha", "1"),
    (["attack", "--smoothed"], "--sigma", "1e5"), (["attack", "--smoothed"], "--seed", "-1"),
    (["attack", "--smoothed"], "--batch", "1e12"), (["attack"], "--skip", "0"), (["attack"], "--max-images", "1e12"),
    (["attack"], "--max", "0"),
    (["certify"], "--n0", "0"), (["certify"], "--samples", "1e12"), (["certify"], "--n", "2.5"),
    (["certify"], "--alpha", "0"), (["certify"], "--sigma", "-0.1"), (["certify"], "--batch", "1e12"),
    (["certify"], "--seed", "1e19"), (["certify"], "--skip", "1e10"), (["predict"], "--samples", "0"),
    (["predict"], "--alpha", "nan"), (["predict"], "--max-images", "-3"),
]


@pytest.mark.parametrize("command, option, value", ABSURD)
def test_absurd_values_are_refused_before_anything_is_loaded(tmp_path, capsys, command, option, value):
    # before: --eps 1e39 failed inside the first batch (leaving a header-only log), --n-grad 1e8 and
    # --kernel-size 9999 ran out of memory or hung, --reg 1e300 / --gamma 1e-300 / --eps-factor 1e308 crashed late
    missing = str(tmp_path / "no-such-model.pt")  # the range error must come first: nothing is loaded
    out = tmp_path / "o.tsv"
    assert main([command[0], missing, "--dataset", "digits", "--out", str(out)] + command[1:] + [option, value]) == 2
    line = _error_line(capsys)
    assert f"error: {option} must be " in line and "checkpoint" not in line, line
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--smoothed", "--n-grad", "100000", "--attack-batch", "1000"], "--attack-batch x --n-grad"),
    (["--eps0", "1000", "--eps-factor", "10", "--max-iter", "1000"], "exceeds the largest radius"),
    (["--smoothed", "--batch", "10000000"], "--batch"),
])
def test_combinations_beyond_memory_or_float_range_are_refused(tmp_path, capsys, extra, message):
    out = tmp_path / "o.tsv"
    assert main(["attack", str(tmp_path / "no-such-model.pt"), "--dataset", "cifar10", "--out", str(out)]
                + extra) == 2
    assert message in _error_line(capsys)


def test_certify_batch_beyond_memory_is_refused(tmp_path, capsys):
    assert main(["certify", str(tmp_path / "none.pt"), "--dataset", "cifar10", "--batch", "1000000",
                 "--out", str(tmp_path / "o.tsv")]) == 2
    assert "--batch = 1000000 images of [3, 32, 32]" in _error_line(capsys)


def test_help_states_every_range(capsys):
    from wsmooth_ext.core.noises import MAX_SIGMA
    from wsmooth_ext.attacks.registry import setting
    from wsmooth_ext.infra.options import SHARED

    def stated(name):
        return (SHARED[name] if name in SHARED else setting(name)).text()

    assert SHARED["sigma"].range.high == MAX_SIGMA
    for command in ("attack", "certify", "predict"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for name in ("seed", "alpha", "skip", "max_images", "batch", "sigma"):
            assert stated(name) in text, (command, name)
    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("eps", "eps0", "eps_factor", "n_grad", "n_test", "kernel_size", "reg", "gamma", "step", "p",
                 "flow_step", "sinkhorn_iter", "sinkhorn_tol", "attack_batch", "max_iter", "eps_every"):
        assert stated(name) in text, name


@pytest.mark.parametrize("word, expected", [("1e3", 1000), ("7", 7)])
def test_integer_options_accept_whole_numbers_in_e_notation(word, expected):
    from wsmooth_ext.infra.options import N_GRAD

    assert N_GRAD.parse(word) == expected
    assert N_GRAD.allows(expected)


# ------------------------------------------------------------------------------------------ 6. resume selection
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


# ------------------------------------------------------------------------------------------ 7. analyze
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


# ------------------------------------------------------------------------------------------ 8. messages
@pytest.fixture
def full_disk(tmp_path):
    """A folder on a real 64 KiB file system (tmpfs), or skip where mounting is not allowed."""
    import shutil
    import subprocess

    where = tmp_path / "small"
    where.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)  # a file still open: detach it anyway


def test_a_full_disk_says_no_space_left_and_names_the_file(full_disk, tmp_path, capsys):
    # before: torch's internal text ("[enforce fail at inline_container.cc:...] unexpected pos ...")
    from wsmooth_ext.runs.attack import save_adversarial

    model = build_model("wong_mnist", input_shape=(1, 28, 28), num_classes=10)  # ~1.3 MB of weights
    target = full_disk / "model.pt"
    with pytest.raises(OSError) as caught:
        save_checkpoint(target, model, {"arch": "wong_mnist", "dataset": "mnist5k"})
    assert "No space left on device" in str(caught.value) and str(target) in str(caught.value)
    assert list(full_disk.iterdir()) == []  # no temporary left behind
    adv = full_disk / "adv.pt"
    with pytest.raises(OSError, match="No space left on device") as caught:
        save_adversarial(adv, [torch.rand(40, 1, 28, 28)], [torch.rand(40, 1, 28, 28)], list(range(40)))
    assert caught.value.filename == str(adv) and list(full_disk.iterdir()) == []
    # through the command line: one line, the reason and the file
    ckpt = _checkpoint(tmp_path / "m.pt")
    out = full_disk / "a.tsv"
    assert main(["attack", ckpt, "--dataset", "digits", "--max-images", "300", "--attack-batch", "300",
                 "--max-iter", "0", "--out", str(out), "--save-adv", str(full_disk / "big" / "adv.pt"),
                 "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "No space left on device" in line and str(full_disk / "big" / "adv.pt") in line, line


def test_a_full_disk_while_logging_names_the_log(full_disk, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "m.pt")
    (full_disk / "filler").write_bytes(b"\0" * (64 * 1024 - 6000))
    out = full_disk / "c.tsv"
    assert main(["certify", ckpt, "--dataset", "digits", "--n0", "4", "--samples", "16", "--out", str(out),
                 "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "No space left on device" in line and str(out) in line, line


def test_a_plain_pickle_is_not_a_checkpoint(tmp_path, capsys):
    # before: "corrupt or unreadable checkpoint ... damaged pickle data: Unsupported operand 149", after a raw
    # UserWarning with its source line
    import pickle

    for name, obj in (("code.pkl", {"net": print}), ("plain.pkl", {"net": {"0.weight": [1.0]}})):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(obj, protocol=4))
        assert main(["certify", str(path), "--dataset", "digits", "--out", str(tmp_path / "c.tsv")]) == 2
        line = _error_line(capsys)
        assert f"{path} is not a checkpoint" in line and "damaged" not in line, line
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(open(_checkpoint(tmp_path / "m.pt"), "rb").read()[:5000])
    assert main(["certify", str(truncated), "--dataset", "digits", "--out", str(tmp_path / "c.tsv")]) == 2
    assert "damaged or truncated" in _error_line(capsys)


def test_the_reference_codes_legacy_files_still_load(tmp_path):
    model = build_model("wong_mnist", input_shape=(1, 28, 28), num_classes=10)
    state = {f"module.{k[len('net.'):]}": v for k, v in model.state_dict().items() if k.startswith("net.")}
    path = tmp_path / "legacy.pth"
    torch.save({"net": state, "acc": 99.0}, path, _use_new_zipfile_serialization=False)
    loaded, meta = load_checkpoint(path)
    assert meta["arch"] == "wong_mnist"


# ------------------------------------------------------------------------------------------ 1. smoothed resume
SMOOTHED_FAST = ["--smoothed", "--n-grad", "8", "--n-test", "64", "--batch", "512", "--max-iter", "6", "--eps0",
                 "0.02", "--eps-factor", "2", "--eps-every", "2", "--no-progress"]


def _rows_without_time(path):
    return [{k: v for k, v in row.items() if k != "time"} for row in read_log(path)[1]]


@pytest.fixture(scope="module")
def trained_checkpoint(trained_digits_checkpoint):
    """wong_mnist on the 8×8 digits (conftest.trained_digits_checkpoint)."""
    return str(trained_digits_checkpoint)


@pytest.mark.parametrize("method", ["sinkhorn", "flow", "frank-wolfe", "pgd-dual"])
def test_smoothed_attack_is_the_same_resumed_or_rebatched(tmp_path, trained_checkpoint, method):
    # before: soft_forward's gradient noise came from a per-object counter, so every row after a resume point
    # (or with another --attack-batch) differed from the uninterrupted run
    base = (["attack", trained_checkpoint, "--dataset", "digits", "--method", method] + SMOOTHED_FAST
            + (["--sinkhorn-iter", "30"] if method == "sinkhorn" else []))  # refused for the other methods

    def run(name, *extra):
        out, adv = tmp_path / f"{name}.tsv", tmp_path / f"{name}.pt"
        assert main(base + ["--out", str(out), "--save-adv", str(adv)] + list(extra)) == 0
        return _rows_without_time(out), torch.load(adv, weights_only=True)

    whole, whole_adv = run("whole", "--max-images", "6", "--attack-batch", "6")
    # the gradients mattered: images were attacked for more than one iteration (fooled later, or never)
    assert any(r["iterations"] > 1 or r["iterations"] == -1 for r in whole)
    for name, extra in (("b2", ["--attack-batch", "2"]), ("b4", ["--attack-batch", "4"])):
        rows, adv = run(name, "--max-images", "6", *extra)
        assert rows == whole
        for key in ("clean", "adv", "idx"):
            assert torch.equal(adv[key], whole_adv[key]), (name, key)
    # interrupted after 3 images (what a kill between batches leaves), then resumed
    run("resumed", "--max-images", "3", "--attack-batch", "2")
    rows, adv = run("resumed", "--max-images", "6", "--attack-batch", "5", "--resume")
    assert rows == whole
    for key in ("clean", "adv", "idx"):
        assert torch.equal(adv[key], whole_adv[key]), key


def test_soft_forward_with_a_step_is_a_pure_function_of_seed_key_and_step():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        smooth = Smooth(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)), 3, 0.2, seed=5)
        x = torch.rand(3, 1, 4, 4)
    keys = torch.tensor([7, 8, 9])
    first = smooth.soft_forward(x, 16, keys=keys, step=4)
    smooth.soft_forward(x, 16, keys=keys)  # other calls in between change nothing
    torch.testing.assert_close(smooth.soft_forward(x[1:], 16, keys=keys[1:], step=4), first[1:], rtol=0, atol=0)
    assert not torch.equal(smooth.soft_forward(x, 16, keys=keys, step=5), first)
    # the samples are the documented ones: [step·n, (step+1)·n) of the soft range
    from wsmooth_ext.core.noises import SOFT_SAMPLES

    noisy = smooth._noisy(x, 16, SOFT_SAMPLES.start + 4 * 16, keys)
    expected = torch.softmax(smooth.base_classifier(noisy), dim=1).reshape(3, 16, 3).mean(dim=1)
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="soft samples"):
        smooth.soft_forward(x, 2 ** 20, keys=keys, step=2 ** 11)


# ------------------------------------------------------------------------------------------ 11. box projection
def _projection_case():
    from wsmooth_ext.inputs.data import load_dataset

    x = load_dataset("digits", "test")[0][:6].double()
    signs = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype).sign()
    candidate = (x + 0.5 * signs).clamp(0, 1.5)  # well outside [0, 1] in places
    return x, candidate


def test_box_projection_keeps_mass_and_pixels_within_one():
    # before: the projected image was clamped to [0, 1] after projecting, which changed its mass
    from wsmooth_ext.attacks import local_cost, projected_sinkhorn

    x, candidate = _projection_case()
    mass = x.sum(dim=(1, 2, 3), keepdim=True)
    cost = local_cost(5, 1.0, dtype=torch.float64)
    eps = 0.3
    z, info = projected_sinkhorn(x / mass, candidate / mass, eps, 1000.0, cost, max_iter=3000, tol=1e-4,
                                 upper=1.0 / mass, return_info=True)
    assert bool(info["converged"].all())
    pixels = z * mass
    assert float(pixels.max()) <= 1.0 + 1e-12 and float(pixels.min()) >= 0.0
    torch.testing.assert_close(pixels.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=1e-4, atol=0)
    assert bool((info["transport_cost"] <= eps * (1 + 1e-3)).all())
    # the exact W1 of the example (an LP, independent of the projection) is within the ball
    from wsmooth_ext.core.wasserstein import wasserstein_distance

    for b in range(x.shape[0]):
        w1 = wasserstein_distance(x[b], pixels[b], ground="l2", window=5, on_mismatch="rescale")
        assert w1 <= eps * (1 + 1e-3) + 1e-6
    # the published projection: the same ball without the cap puts pixels above 1, so its clamp loses mass
    free = projected_sinkhorn(x / mass, candidate / mass, eps, 1000.0, cost, max_iter=2000, tol=1e-6) * mass
    assert float(free.max()) > 1.0
    assert float((free.clamp(0, 1).sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3)) - 1).abs().max()) > 1e-3


def test_a_box_that_binds_nowhere_changes_nothing():
    from wsmooth_ext.attacks import local_cost, projected_sinkhorn

    x, candidate = _projection_case()
    mass = x.sum(dim=(1, 2, 3), keepdim=True)
    cost = local_cost(5, 1.0, dtype=torch.float64)
    free = projected_sinkhorn(x / mass, candidate / mass, 0.3, 1000.0, cost, max_iter=300)
    boxed = projected_sinkhorn(x / mass, candidate / mass, 0.3, 1000.0, cost, max_iter=300, upper=1e6)
    torch.testing.assert_close(boxed, free, rtol=0, atol=0)
    with pytest.raises(ValueError, match="upper must be >= X"):
        projected_sinkhorn(x / mass, candidate / mass, 0.3, 1000.0, cost, upper=0.5 * x / mass)


def test_sinkhorn_attack_examples_keep_their_mass_by_default(tmp_path, trained_checkpoint):
    runs = {}
    for projection in ("box", "clamp"):
        out = tmp_path / f"{projection}.tsv"
        assert main(["attack", trained_checkpoint, "--dataset", "digits", "--max-images", "12", "--eps", "0.3",
                     "--max-iter", "10", "--out", str(out), "--no-progress", "--projection", projection]) == 0
        runs[projection] = read_log(out)[1]
        assert {r["projection"] for r in runs[projection]} == {projection}
    attacked = [i for i, r in enumerate(runs["box"]) if r["iterations"] != 0]
    assert attacked
    assert max(abs(runs["box"][i]["mass_change"]) for i in attacked) <= 2e-4  # the projection's tolerance
    assert max(abs(runs["clamp"][i]["mass_change"]) for i in attacked) > 2e-4
