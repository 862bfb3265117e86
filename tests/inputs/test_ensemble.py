"""The ensemble base classifier: `load_ensemble`, `Smooth(Ensemble)`, and `wsmooth certify/predict CKPT CKPT ...`
(rows equal to the Python API's, every checkpoint's hash in the log, resume and metadata refusals)."""

import pytest
import torch

from wsmooth_ext.cli import main
from wsmooth_ext.core.smooth import Smooth
from wsmooth_ext.inputs.checkpoint import checkpoint_sha256, load_checkpoint, load_ensemble, save_checkpoint
from wsmooth_ext.inputs.data import DATASETS, load_dataset
from wsmooth_ext.inputs.models import Ensemble, build_model
from wsmooth_ext.runs.logfile import CERTIFY_COLUMNS, read_log
from wsmooth_ext.training.keywords import train

pytestmark = [pytest.mark.filterwarnings("ignore:.*no compiled flow_noise kernel:RuntimeWarning"),
              pytest.mark.usefixtures("one_thread")]

FAST = ["--dataset", "digits", "--skip", "9", "--max", "6", "--batch", "256", "--no-progress"]
IDX = [0, 9, 18, 27, 36, 45]


def _trained(path, arch, seed, sigma=0.05, noise="flow-laplace", epochs=1):
    """A model of the 8x8 digits trained for a second (different seeds and archs: members that disagree)."""
    (x, y) = load_dataset("digits", "train")
    info = DATASETS["digits"]
    model = build_model(arch, input_shape=(1, 8, 8), mean=info.mean, std=info.std, seed=seed)
    train(model, x[:300], y[:300], noise=noise, sigma=sigma, epochs=epochs, lr=0.003, batch_size=32, seed=seed,
          optimizer="adam", progress=False, log=lambda line: None)
    save_checkpoint(path, model, {"dataset": "digits", "noise": noise, "sigma": sigma})
    return str(path)


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    paths = [_trained(folder / "a.pt", "wong_mnist", 0), _trained(folder / "b.pt", "mnist_cnn4", 1)]
    torch.set_num_threads(before)
    return paths


def _no_time(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def _test_images():
    images, labels = load_dataset("digits", "test")
    return images[IDX], labels[IDX]


def test_load_ensemble_is_the_log_mean_softmax_of_the_checkpoints(members):
    ensemble, metas = load_ensemble(members)
    assert isinstance(ensemble, Ensemble) and not ensemble.training
    assert [m["arch"] for m in metas] == ["wong_mnist", "mnist_cnn4"]
    x, _ = _test_images()
    singles = [load_checkpoint(p)[0] for p in members]
    by_hand = torch.log((torch.softmax(singles[0](x), 1) + torch.softmax(singles[1](x), 1)) / 2)
    torch.testing.assert_close(ensemble(x), by_hand, rtol=1e-5, atol=1e-6)
    assert ensemble.num_classes == 10 and ensemble.input_shape == (1, 8, 8)
    import wsmooth_ext

    assert wsmooth_ext.Ensemble is Ensemble and wsmooth_ext.load_ensemble is load_ensemble


def test_one_member_ensemble_certifies_like_the_model(members, tmp_path):
    x, y = _test_images()
    model = load_checkpoint(members[0])[0]
    plain = Smooth(model, 10, 0.05, seed=3).certify_batch(x, 32, 128, 0.05, 512, keys=IDX, labels=y)
    ensemble = Smooth(load_ensemble(members[:1])[0], 10, 0.05, seed=3).certify_batch(x, 32, 128, 0.05, 512,
                                                                                     keys=IDX, labels=y)
    assert ensemble == plain
    # and the command with one checkpoint writes the plain model's rows, with its hash alone (today's format)
    out = tmp_path / "one.tsv"
    assert main(["certify", members[0], "--n0", "32", "--n", "128", "--seed", "3", "--out", str(out)] + FAST) == 0
    columns, rows = read_log(out)
    assert columns == list(CERTIFY_COLUMNS)
    assert [(r["predict"], r["radius"], r["count_label"]) for r in rows] == [
        (p.prediction, p.radius, p.count_label) for p in plain]
    assert {r["model_sha256"] for r in rows} == {checkpoint_sha256(members[0])}


def test_certify_two_checkpoints_equals_the_python_api(members, tmp_path, capsys):
    out = tmp_path / "ensemble.tsv"
    assert main(["certify", *members, "--n0", "32", "--n", "128", "--out", str(out)] + FAST) == 0
    assert capsys.readouterr().out.startswith("certified 6 images (noise flow-laplace, sigma 0.05")
    columns, rows = read_log(out)
    assert columns == list(CERTIFY_COLUMNS)
    x, y = _test_images()
    smooth = Smooth(load_ensemble(members)[0], 10, 0.05)
    records = smooth.certify_batch(x, 32, 128, 0.05, 256, keys=IDX, labels=y)
    assert [(r["idx"], r["predict"], r["radius"], r["radius_l1"], r["p_lower"], r["count_top"], r["count_label"])
            for r in rows] == [(i, p.prediction, p.radius, p.radius_l1, p.p_lower, p.count_top, p.count_label)
                               for i, p in zip(IDX, records)]
    hashes = f"{checkpoint_sha256(members[0])}+{checkpoint_sha256(members[1])}"
    assert {r["model_sha256"] for r in rows} == {hashes}
    # the ensemble is another classifier than either member: the votes differ from each one's somewhere
    for path in members:
        alone = Smooth(load_checkpoint(path)[0], 10, 0.05).certify_batch(x, 32, 128, 0.05, 256, keys=IDX, labels=y)
        assert [p.count_label for p in alone] != [r["count_label"] for r in rows]


def test_predict_two_checkpoints_equals_the_python_api(members, tmp_path):
    out = tmp_path / "predict.tsv"
    assert main(["predict", *members, "--n", "128", "--out", str(out)] + FAST) == 0
    rows = read_log(out)[1]
    x, _ = _test_images()
    preds, counts, pvalues = Smooth(load_ensemble(members)[0], 10, 0.05).predict_batch_details(
        x, 128, 0.05, 256, keys=torch.tensor(IDX))
    assert [(r["predict"], r["count_top"], r["pvalue"]) for r in rows] == [
        (int(p), int(c.max()), v) for p, c, v in zip(preds, counts, pvalues)]


def test_resume_refuses_another_list_of_checkpoints(members, tmp_path, capsys):
    out = tmp_path / "log.tsv"
    args = ["certify", "--n0", "16", "--n", "64", "--out", str(out)] + FAST
    assert main(args[:1] + members + args[1:]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    for changed in ([members[1], members[0]], members[:1], [members[0], members[1], members[0]]):
        assert main(args[:1] + changed + args[1:] + ["--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("wsmooth certify: error:")
        assert out.read_bytes() == before
    # the same list in the same order continues it (here: extends it by more images)
    assert main(args[:1] + members + args[1:] + ["--resume", "--max", "7"]) == 0
    assert [r["idx"] for r in read_log(out)[1]] == IDX + [54]


def test_members_must_agree_on_the_defaults_and_the_data(members, tmp_path, capsys):
    other_sigma = _trained(tmp_path / "c.pt", "wong_mnist", 2, sigma=0.02)
    out = tmp_path / "log.tsv"
    args = ["--n0", "16", "--n", "64", "--out", str(out)] + FAST
    assert main(["certify", members[0], other_sigma] + args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"wsmooth certify: error: checkpoint {other_sigma} records sigma 0.02, checkpoint {members[0]} "
                   "records 0.05: the models of an ensemble must agree on the default sigma (or give --sigma)")
    assert not out.exists()
    # given explicitly, sigma is no default: the ensemble is smoothed with it, and each differing member is noted
    assert main(["certify", members[0], other_sigma, "--sigma", "0.05"] + args) == 0
    err = capsys.readouterr().err
    assert f"note: checkpoint {other_sigma} was trained with noise flow-laplace sigma 0.02" in err
    assert f"checkpoint {members[0]} was trained" not in err
    other_noise = _trained(tmp_path / "d.pt", "wong_mnist", 3, noise="flow-uniform")
    assert main(["predict", members[0], other_noise, "--n", "64", "--out", str(tmp_path / "p.tsv")] + FAST) == 2
    assert f"checkpoint {other_noise} records noise 'flow-uniform'" in capsys.readouterr().err
    save_checkpoint(tmp_path / "five.pt", build_model("wong_mnist", num_classes=5, input_shape=(1, 8, 8), seed=0),
                    {"dataset": "digits", "noise": "flow-laplace", "sigma": 0.05})
    assert main(["certify", members[0], str(tmp_path / "five.pt"), "--out", str(tmp_path / "x.tsv")] + FAST) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"wsmooth certify: error: checkpoint {tmp_path / 'five.pt'} has num_classes 5, checkpoint "
                   f"{members[0]} has 10: the members of an ensemble must agree")
    assert main(["certify", members[0], members[0], "--out", str(tmp_path / "y.tsv")] + FAST) == 2
    assert f"checkpoint {members[0]} is given twice" in capsys.readouterr().err


def test_load_ensemble_refusals(members):
    with pytest.raises(ValueError, match="at least one checkpoint"):
        load_ensemble([])
    with pytest.raises(ValueError, match="not the requested 'resnet18'"):
        load_ensemble(members, arch="resnet18")
    with pytest.raises(FileNotFoundError):
        load_ensemble([members[0], members[0] + ".missing"])


def test_compiled_ensemble_gives_the_same_log(members, tmp_path, capsys):
    # inductor compiles the whole ensemble as one module (a few seconds to tens of seconds cold)
    plain, compiled = tmp_path / "plain.tsv", tmp_path / "compiled.tsv"
    args = ["certify", *members, "--n0", "16", "--n", "64"] + FAST
    assert main(args + ["--out", str(plain)]) == 0
    assert main(args + ["--out", str(compiled), "--compile"]) == 0
    assert "--compile: compiled model" in capsys.readouterr().err
    assert _no_time(read_log(compiled)[1]) == _no_time(read_log(plain)[1])
