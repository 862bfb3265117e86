"""Pictures (wsmooth_ext.analysis.pictures, `wsmooth show`): drawn from the right data, written safely.

What is checked against what: the noise panels against the fused op called directly with the same seed, keys
and sample indices, and the votes printed on them against Smooth's own vote counts; the attack panels against
the saved tensors; the transport arrows against an independent computation of the moved mass (half the L1
distance of the normalized images) and against the exact W1 of the existing LP; files against refusal,
replacement and interruption.
"""

import math
import re

import numpy as np
import pytest
import torch

from wsmooth_ext import Smooth
from wsmooth_ext.core import ops
from wsmooth_ext.analysis.pictures import (attack_figure, attack_picture, load_attack_examples, nearest_fooled,
                                           noise_grid, noise_samples, save_figure)
from wsmooth_ext.analysis.pictures.scales import pixel_scale, stretch, unstretch
from wsmooth_ext.attacks import WassersteinPGD
from wsmooth_ext.inputs.checkpoint import save_checkpoint
from wsmooth_ext.cli import main
from wsmooth_ext.inputs.data import load_dataset
from wsmooth_ext.runs.attack import attack_to_log
from wsmooth_ext.runs.logfile import read_log
from wsmooth_ext.core.wasserstein import transport_plan, wasserstein_distance

from conftest import wong_digits_model
from picture_checks import assert_attack_row_shows, assert_noise_grid_shows, attack_axes

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.py


def _normalized(image):
    image = torch.as_tensor(image, dtype=torch.float64)
    return image / image.sum()


# ---------------------------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transport_plan_is_the_lp_of_wasserstein_distance(seed):
    rng = np.random.default_rng(seed)
    x = rng.random((1, 7, 6)) * (rng.random((1, 7, 6)) < 0.6)
    y = rng.random((1, 7, 6)) * (rng.random((1, 7, 6)) < 0.6)
    x[0, 0, 0] += 0.1
    y[0, 3, 3] += 0.1
    plan = transport_plan(x, y)
    assert plan.value == pytest.approx(wasserstein_distance(x, y), abs=1e-9)
    X, Y = _normalized(x)[0].numpy(), _normalized(y)[0].numpy()
    # the mass that moves is what X has in excess of Y, pixel by pixel: half their L1 distance
    assert plan.moved_mass == pytest.approx(0.5 * np.abs(X - Y).sum(), abs=1e-9)
    out, into = np.zeros_like(X), np.zeros_like(X)
    np.add.at(out, (plan.source[:, 0], plan.source[:, 1]), plan.mass)
    np.add.at(into, (plan.target[:, 0], plan.target[:, 1]), plan.mass)
    np.testing.assert_allclose(out, np.maximum(X - Y, 0), atol=1e-9)  # each pixel sends its excess
    np.testing.assert_allclose(into, np.maximum(Y - X, 0), atol=1e-9)  # and each deficit is filled
    lengths = np.hypot(*(plan.source - plan.target).T)
    assert (plan.mass * lengths).sum() == pytest.approx(plan.value, abs=1e-9)
    assert (plan.mass > 0).all() and (lengths > 0).all()


def test_transport_plan_options_match_the_distance():
    rng = np.random.default_rng(4)
    x, y = rng.random((2, 5, 5)) + 0.01, rng.random((2, 5, 5)) + 0.01
    y *= (x.sum(axis=(1, 2)) / y.sum(axis=(1, 2)))[:, None, None]  # equal channel shares
    for kwargs in ({"ground": "l1"}, {"ground": "l2", "window": 3}):
        plan = transport_plan(x, y, **kwargs)
        assert plan.value == pytest.approx(wasserstein_distance(x, y, **kwargs), abs=1e-9)
        metric = (np.abs(plan.source - plan.target).sum(axis=1) if kwargs["ground"] == "l1"
                  else np.hypot(*(plan.source - plan.target).T))
        assert (plan.mass * metric).sum() == pytest.approx(plan.value, abs=1e-9)
    assert set(transport_plan(x, y).channel.tolist()) == {0, 1}
    y[0] *= 2  # channel shares differ: no plan in the threat model
    plan = transport_plan(x, y, on_mismatch="inf")
    assert plan.value == math.inf and plan.mass.size == 0
    far = np.zeros((1, 9, 9))
    far[0, 0, 0], near = 1.0, np.zeros((1, 9, 9))
    near[0, 8, 8] = 1.0
    assert transport_plan(far, near, window=3).value == math.inf


# ---------------------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("noise, op", [("flow-laplace", ops.flow_noise), ("pixel-laplace", ops.pixel_noise),
                                       ("flow-uniform", ops.flow_noise)])
def test_noise_samples_are_the_ops_draws(digits, noise, op):
    (_, _), (x, _) = digits
    keys = torch.tensor([5, 17])
    got = noise_samples(x[keys], keys, noise, 0.02, 3, seed=9)
    expected = op(x[keys], 3, 0.02, noise=noise.split("-")[1], seed=9, sample_offset=0, keys=keys)
    torch.testing.assert_close(got, expected.reshape(2, 3, 1, 8, 8), rtol=0, atol=0)
    assert not torch.equal(got, noise_samples(x[keys], keys, noise, 0.02, 3, seed=10))


def _votes_in_title(ax):
    found = re.search(r"vote (\d+)", ax.get_title())
    return None if found is None else int(found.group(1))


def test_noise_grid_panels_are_the_samples_and_votes_are_smooths(digits, digits_model):
    (_, _), (x, y) = digits
    keys = torch.tensor([3, 40])
    fig = noise_grid(x[keys], keys, labels=y[keys], noise_names=["flow-laplace", "pixel-laplace"],
                     sigmas=[0.01, 0.03], samples=3, seed=4, model=digits_model)
    axes = assert_noise_grid_shows(fig, x[keys], keys.tolist(), ["flow-laplace", "pixel-laplace"], [0.01, 0.03],
                                   3, 4)  # the op's own samples
    row = 0
    drawn_values = []
    for b in range(2):
        for noise in ("flow-laplace", "pixel-laplace"):
            for sigma in (0.01, 0.03):
                samples = noise_samples(x[keys[b:b + 1]], keys[b:b + 1], noise, sigma, 3, seed=4)[0]
                smooth = Smooth(digits_model, 10, sigma, noise=noise, seed=4)
                counts = smooth.count_classes(x[keys[b:b + 1]], 3, sample_offset=0, keys=keys[b:b + 1])[0]
                shown_votes = []
                for k in range(3):
                    ax = axes[row, k + 1]
                    assert f"mass {float(samples[k].sum()):.1f}" in ax.get_title()
                    shown_votes.append(_votes_in_title(ax))
                    drawn_values.append(ax.images[0].get_array())
                # the votes printed are the votes Smooth counts on the same samples
                assert np.bincount(shown_votes, minlength=10).tolist() == counts.tolist()
                row += 1
    norm = axes[0, 1].images[0].norm
    assert all(ax.images[0].norm is norm for ax in axes.ravel())  # one scale for every panel
    everything = np.concatenate([v.ravel() for v in drawn_values])
    assert norm.vmin == everything.min() < 0 and norm.vmax == everything.max() > 1  # nothing clipped
    assert "nothing clipped" in fig.axes[-1].get_xlabel()


def test_pixel_scale_keeps_every_value_apart():
    values = np.array([-20.0, -1.0, -0.01, 0.0, 0.3, 1.0, 1.01, 5.0, 40.0])
    np.testing.assert_allclose(unstretch(stretch(values)), values, rtol=1e-12)
    np.testing.assert_array_equal(stretch([0.0, 0.25, 1.0]), [0.0, 0.25, 1.0])  # linear inside [0, 1]
    cmap, norm = pixel_scale(-20.0, 40.0)
    apart = np.array([-20.0, -5.0, -1.0, 0.0, 0.3, 0.7, 1.0, 3.0, 10.0, 40.0])  # 256 colours tell these apart
    colours = cmap(norm(apart))
    assert len({tuple(np.round(c, 6)) for c in colours}) == len(apart)  # the extremes too: nothing clipped
    assert 0 <= norm(-20.0) < norm(-5.0) and norm(10.0) < norm(40.0) <= 1
    np.testing.assert_allclose(colours[3, :3], 0.0, atol=1e-6)  # 0 is black
    np.testing.assert_allclose(colours[6, :3], 1.0, atol=2e-2)  # 1 is white


@pytest.mark.parametrize("kwargs, message", [
    ({"samples": 0}, "samples must be an integer in [1, 12]"),
    ({"noise_names": ["flow-laplace", "flow-laplace"]}, "noise_names must name distinct"),
    ({"sigmas": [0.0]}, "sigmas must be a number in (0,"),
    ({"noise_names": ["gaussian"]}, "noise must be one of"),
])
def test_noise_grid_arguments(digits, kwargs, message):
    (_, _), (x, _) = digits
    with pytest.raises(ValueError, match=re.escape(message)):
        noise_grid(x[:1], [0], **kwargs)


# ---------------------------------------------------------------------------------------------- attack
@pytest.fixture(scope="module")
def attack_run(tmp_path_factory, digits_model):
    """A real attack log and its --save-adv file: projected-Sinkhorn PGD on a logistic digits classifier."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("attack")
    test = load_dataset("digits", "test")
    attack = WassersteinPGD(digits_model, eps0=0.05, eps_factor=1.5, eps_every=3, max_iter=15, sinkhorn_iter=60)
    log, adv = folder / "attack.tsv", folder / "adv.pt"
    attack_to_log(attack, *test, list(range(10)), log, adv, {"mode": "plain", "method": "sinkhorn"},
                  torch.device("cpu"), progress=False)
    torch.set_num_threads(before)
    return log, adv


def _arrows(ax):
    return [child for child in ax.get_children() if child.get_gid() == "transport"]


def test_attack_panels_are_the_saved_tensors_and_arrows_the_plan(attack_run):
    log, adv = attack_run
    rows = read_log(log)[1]
    saved = torch.load(adv, weights_only=True)
    examples = load_attack_examples(log, adv)
    fig = attack_figure(examples, arrows=None)
    axes = attack_axes(fig, len(examples))
    assert [e.idx for e in examples] == [r["idx"] for r in rows] == saved["idx"].tolist()
    checked = 0
    for e, row, (clean_ax, adv_ax, diff_ax) in zip(examples, rows, axes):
        at = saved["idx"].tolist().index(row["idx"])
        assert_attack_row_shows((clean_ax, adv_ax, diff_ax), saved["clean"][at], saved["adv"][at])
        assert f"true label {row['label']}" in clean_ax.get_title()
        arrows = _arrows(diff_ax)
        X, Y = _normalized(saved["clean"][at]).numpy(), _normalized(saved["adv"][at]).numpy()
        moved = 0.5 * np.abs(X - Y).sum()  # independent of the LP: what must move
        if not arrows:
            assert moved < 1e-9
            continue
        widths = np.array([a.arrow_patch.get_linewidth() for a in arrows])
        lengths = np.array([math.dist(a.xy, a.xyann) for a in arrows])
        plan = transport_plan(saved["clean"][at], saved["adv"][at], on_mismatch="rescale")
        masses = widths * plan.mass.max() / widths.max()  # widths are proportional to mass
        np.testing.assert_allclose(np.sort(masses), np.sort(plan.mass), rtol=1e-9, atol=1e-12)
        assert masses.sum() == pytest.approx(moved, abs=1e-7)  # all arrows: the whole moved mass
        assert (masses * lengths).sum() == pytest.approx(wasserstein_distance(saved["clean"][at], saved["adv"][at],
                                                                              on_mismatch="rescale"), abs=1e-7)
        for a in arrows:  # from a pixel that lost mass to one that gained it (image coordinates: column, row)
            (sj, si), (tj, ti) = a.xyann, a.xy
            assert X[0, int(si), int(sj)] > Y[0, int(si), int(sj)] and Y[0, int(ti), int(tj)] > X[0, int(ti), int(tj)]
        if row["success"] and row["predict"] == row["label"]:
            assert f"exact W1 {row['w1']:.4g}" in diff_ax.get_title()  # the log's exact W1
            assert f"nominal ε {row['radius']:.4g}" in diff_ax.get_title()
            checked += 1
    assert checked >= 2  # the attack fooled some images, so the W1 titles were checked


def test_attack_arrows_are_the_largest_moves(attack_run):
    log, adv = attack_run
    examples = load_attack_examples(log, adv, only_success=True, sort_by="w1")
    fig = attack_figure(examples, arrows=4)
    for e, ax in zip(examples, attack_axes(fig, len(examples))[:, 2]):
        plan = transport_plan(e.clean, e.adv, on_mismatch="rescale")
        widths = sorted((a.arrow_patch.get_linewidth() for a in _arrows(ax)), reverse=True)
        largest = np.sort(plan.mass)[::-1][:4]
        assert len(widths) == min(4, plan.mass.size)
        np.testing.assert_allclose(np.array(widths) / widths[0], largest / largest[0], rtol=1e-9)


def test_selection_and_order(attack_run):
    log, adv = attack_run
    rows = read_log(log)[1]
    fooled = [r for r in rows if r["success"] and r["predict"] == r["label"]]
    chosen = load_attack_examples(log, adv, only_success=True, sort_by="w1", max_examples=2)
    assert [e.idx for e in chosen] == [r["idx"] for r in sorted(fooled, key=lambda r: r["w1"])][:2]
    assert all(e.fooled for e in chosen)
    assert [e.idx for e in load_attack_examples(log, adv, max_examples=3)] == [r["idx"] for r in rows[:3]]
    everything = load_attack_examples(log, adv, sort_by="w1")
    w1 = [e.w1 for e in everything]
    assert w1 == sorted(w1) and math.isinf(w1[-1]) == any(not r["success"] for r in rows)
    fig = attack_picture(log, adv, only_success=True, sort_by="w1", max_examples=2)
    assert "sinkhorn attack on the base classifier" in fig.get_suptitle()


def test_nearest_fooled_takes_each_images_nearest_example_over_attacks(attack_run, tmp_path):
    log, adv = attack_run
    rows = read_log(log)[1]
    fooled = sorted((r for r in rows if r["success"] and r["predict"] == r["label"]), key=lambda r: r["w1"])
    assert len(fooled) >= 3
    # a second "attack": the same log, but its examples of the two nearest images replaced by clean images
    # (W1 0), so it is nearer on exactly those: they come first and are credited to it
    saved = torch.load(adv, weights_only=True)
    near = [saved["idx"].tolist().index(r["idx"]) for r in fooled[:2]]
    saved["adv"][near] = saved["clean"][near]
    second_log, second_adv = tmp_path / "second.tsv", tmp_path / "second.pt"
    columns, _ = read_log(log)
    lines = log.read_text().splitlines(keepends=True)
    w1_at = columns.index("w1")
    with open(second_log, "w") as handle:
        handle.write(lines[0])
        for line, row in zip(lines[1:], rows):
            fields = line.rstrip("\n").split("\t")
            if row["idx"] in (fooled[0]["idx"], fooled[1]["idx"]):
                fields[w1_at] = "0.0"
            handle.write("\t".join(fields) + "\n")
    torch.save(saved, second_adv)
    chosen = nearest_fooled({"first": (log, adv), "second": (second_log, second_adv)}, 3)
    zeros = sorted(r["idx"] for r in fooled[:2])  # equal distances: in the log's order (idx ascending here)
    assert [r["idx"] for r in rows] == sorted(r["idx"] for r in rows)
    assert [(e.idx, e.found_by, e.w1) for e in chosen] == [
        (zeros[0], "second", 0.0), (zeros[1], "second", 0.0), (fooled[2]["idx"], "first", fooled[2]["w1"])]
    torch.testing.assert_close(chosen[0].adv, chosen[0].clean, rtol=0, atol=0)
    # equal distances: the attack named first; the title of the adversarial panel names it
    same = nearest_fooled({"a": (log, adv), "b": (log, adv)}, 2)
    assert [(e.idx, e.found_by) for e in same] == [(r["idx"], "a") for r in fooled[:2]]
    assert attack_axes(attack_figure(same, arrows=0), 2)[0, 1].get_title().startswith("adversarial (a): predicted")
    assert nearest_fooled({}, 4) == []


# ---------------------------------------------------------------------------------------------- files
def test_save_figure_refuses_replaces_and_is_atomic(tmp_path, monkeypatch, digits):
    (_, _), (x, _) = digits
    fig = noise_grid(x[:1], [0], samples=1, sigmas=[0.01], noise_names=["flow-laplace"])
    out = tmp_path / "grid.png"
    out.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError):
        save_figure(fig, out)
    assert out.read_bytes() == b"the user's file"
    save_figure(fig, out, overwrite=True)
    first = out.read_bytes()
    assert first.startswith(b"\x89PNG")

    def interrupted(self, fname, **kwargs):  # the disk fills up half way through the picture
        with open(fname, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(fig), "savefig", interrupted)
    with pytest.raises(OSError):
        save_figure(fig, out, overwrite=True)
    assert out.read_bytes() == first  # the old picture, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no temporary file left
    with pytest.raises(ValueError, match="picture format"):
        save_figure(fig, tmp_path / "grid.tsv")


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "digits.pt"
    save_checkpoint(path, wong_digits_model(0).eval(), {"dataset": "digits", "noise": "flow-laplace",
                                                         "sigma": 0.01})
    return path


def test_show_commands_write_and_refuse(attack_run, digits_checkpoint, tmp_path, capsys):
    log, adv = attack_run
    out = tmp_path / "attack.png"
    assert main(["show", "attack", str(log), "--adv", str(adv), "--only-success", "--sort-by", "w1", "--max", "3",
                 "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG") and "wrote" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(["show", "attack", str(log), "--adv", str(adv), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; pass --overwrite" in err and out.read_bytes() == before
    assert main(["show", "attack", str(log), "--adv", str(adv), "--max", "2", "--arrows", "all", "--out", str(out),
                 "--overwrite"]) == 0
    grid = tmp_path / "noise.png"
    assert main(["show", "noise", "--dataset", "digits", "--indices", "0,4", "--sigmas", "0.01", "--samples", "2",
                 "--checkpoint", str(digits_checkpoint), "--out", str(grid)]) == 0
    assert grid.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attack.png", "noise.png"]


def _one_line_error(capsys, argv, expected):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("wsmooth show: error: "), captured.err
    assert expected in captured.err, captured.err


def test_bad_inputs_give_one_line(attack_run, tmp_path, capsys):
    log, adv = attack_run
    out = str(tmp_path / "x.png")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a tensor file")
    not_a_log = tmp_path / "certify.tsv"
    not_a_log.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.1\t1\t0.5\n")
    other = tmp_path / "other.pt"  # a valid tensor file of other images
    torch.save({"clean": torch.rand(2, 1, 8, 8), "adv": torch.rand(2, 1, 8, 8), "idx": torch.tensor([50, 51])},
               other)
    wrong_shape = tmp_path / "shape.pt"
    torch.save({"clean": torch.rand(3, 8, 8), "adv": torch.rand(3, 8, 8), "idx": torch.arange(3)}, wrong_shape)
    show = ["show", "attack"]
    _one_line_error(capsys, show + [str(not_a_log), "--adv", str(adv), "--out", out], "is not an attack log")
    _one_line_error(capsys, show + [str(log), "--adv", str(garbage), "--out", out],
                    "is not a file of adversarial examples written by wsmooth attack")
    _one_line_error(capsys, show + [str(log), "--adv", str(other), "--out", out], "not the --save-adv file of")
    _one_line_error(capsys, show + [str(log), "--adv", str(wrong_shape), "--out", out], "float [N, C, H, W]")
    _one_line_error(capsys, show + [str(tmp_path / "none.tsv"), "--adv", str(adv), "--out", out], "none.tsv")
    _one_line_error(capsys, show + [str(log), "--adv", str(adv), "--max", "0", "--out", out], "--max must be in")
    _one_line_error(capsys, show + [str(log), "--adv", str(adv), "--out", str(tmp_path / "x.tsv")],
                    "picture format")
    noise = ["show", "noise", "--dataset", "digits", "--out", out]
    _one_line_error(capsys, noise + ["--indices", "100000"], "--indices must lie in [0,")
    _one_line_error(capsys, noise + ["--indices", "1,1"], "distinct")
    _one_line_error(capsys, noise + ["--sigmas", "-1"], "--sigmas must be a number")
    _one_line_error(capsys, noise + ["--samples", "13"], "--samples must be in [1, 12]")
    _one_line_error(capsys, noise + ["--checkpoint", str(garbage)], "garbage.pt")
    assert not (tmp_path / "x.png").exists()


def test_help_states_scales(capsys):
    for picture in ("noise", "attack"):
        with pytest.raises(SystemExit):
            main(["show", picture, "--help"])
        text = capsys.readouterr().out
        assert "nothing is clipped" in text and "mass-normalized" in text
