"""Adversarial examples as pictures: clean | adversarial | signed difference, with the optimal transport plan.

The images are the tensors ``wsmooth attack --save-adv`` wrote (rows aligned with the log by ``idx``); the
distance and the arrows come from the exact W1 linear program of :mod:`wsmooth_ext.core.wasserstein` (L2 ground
metric, each image divided by its own mass, colour channels matched as the attack log's ``w1`` column is),
so the W1 in a panel's title is the cost Σ mass·length of the plan whose moves the arrows draw.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...runs.attack import load_adversarial
from ...core.smooth import ABSTAIN
from ...core.wasserstein import TransportPlan, transport_plan
from ..attack import read_attack_log
from .layout import wrap_to_width
from .scales import difference_scale, displayed, pixel_scale, pixel_scale_label, pixel_ticks, value_range

SORT_KEYS = ("log", "w1")  # log order, or smallest exact W1 first (never-fooled images last)
DEFAULT_ARROWS = 30
MAX_EXAMPLES = 32  # rows of one picture
WIDEST_ARROW_POINTS = 3.0  # the largest drawn move; the others in proportion to their mass
RGB_ARROWS = ("#b00000", "#007000", "#0000b0")  # colour images: each channel's moves in its colour


@dataclass(frozen=True)
class AttackExample:
    """One attacked image: its log row's facts and the saved clean and adversarial tensors [C, H, W]."""

    idx: int
    label: int
    predict: int
    adv_predict: int | None
    success: bool
    radius: float  # nominal ε when first fooled (0: wrong before the attack, inf: never fooled)
    w1: float  # the log's exact W1 (L2 ground), inf if never fooled
    clean: torch.Tensor
    adv: torch.Tensor
    found_by: str | None = None  # the attack that made it, where a picture gathers examples of several attacks

    @property
    def fooled(self) -> bool:
        """Correct before the attack and fooled by it (an attack 'success' also counts images wrong from the start)."""
        return self.success and self.predict == self.label


def _number(value) -> float:
    return math.inf if value is None else float(value)


def attack_examples(log: str | os.PathLike, adv: str | os.PathLike) -> list[AttackExample]:
    """Every row of an attack log, in the log's order, joined with its ``--save-adv`` tensors by ``idx``.
    ValueError (one line) for a file that is not an attack log or not its tensors."""
    rows = read_attack_log(log)
    saved = load_adversarial(Path(adv))
    clean, adversarial, idx = saved["clean"], saved["adv"], saved["idx"]
    if (clean.dim() != 4 or adversarial.shape != clean.shape or idx.dim() != 1 or idx.shape[0] != clean.shape[0]
            or not clean.is_floating_point() or not adversarial.is_floating_point()):
        raise ValueError(f"{adv} is not a file of adversarial examples written by wsmooth attack (clean/adv must "
                         "be float [N, C, H, W] and idx [N])")
    where = {}
    for position, i in enumerate(idx.tolist()):
        where.setdefault(int(i), position)
    missing = [row["idx"] for row in rows if row["idx"] not in where]
    if missing:
        raise ValueError(f"{adv} holds no images for {len(missing)} rows of {log} (first idx {missing[0]}): not "
                         "the --save-adv file of this attack log")
    return [AttackExample(idx=row["idx"], label=int(row["label"]), predict=int(row["predict"]),
                          adv_predict=row.get("adv_predict"), success=bool(int(row["success"])),
                          radius=_number(row["radius"]), w1=_number(row["w1"]),
                          clean=clean[where[row["idx"]]], adv=adversarial[where[row["idx"]]]) for row in rows]


def _check_max_examples(max_examples) -> None:
    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, numbers.Integral)
                                     or not 1 <= max_examples <= MAX_EXAMPLES):
        raise ValueError(f"max_examples must be an integer in [1, {MAX_EXAMPLES}], got {max_examples!r}")


def load_attack_examples(log: str | os.PathLike, adv: str | os.PathLike, *, max_examples: int | None = None,
                         only_success: bool = False, sort_by: str = "log") -> list[AttackExample]:
    """The rows of an attack log joined with its ``--save-adv`` tensors by ``idx`` (:func:`attack_examples`).

    ``only_success``: keep the images the attack fooled (correct before, wrong or abstaining after);
    ``sort_by``: "log" (the log's order) or "w1" (smallest exact W1 first); ``max_examples``: keep the first
    so many (1..32; None: all, at most 32). ValueError (one line) for a file that is not an attack log or not
    its tensors, or when no example is left.
    """
    if sort_by not in SORT_KEYS:
        raise ValueError(f"sort_by must be one of {list(SORT_KEYS)}, got {sort_by!r}")
    _check_max_examples(max_examples)
    examples = attack_examples(log, adv)
    if only_success:
        examples = [e for e in examples if e.fooled]
    if sort_by == "w1":
        examples.sort(key=lambda e: e.w1)  # stable: log order among equal distances
    if not examples:
        raise ValueError(f"{log} has no {'images the attack fooled' if only_success else 'rows'} to draw")
    if max_examples is None and len(examples) > MAX_EXAMPLES:
        raise ValueError(f"{len(examples)} examples are too many for one picture: choose at most {MAX_EXAMPLES}")
    return examples[:max_examples]


def nearest_fooled(attacks: dict, max_examples: int) -> list[AttackExample]:
    """The nearest adversarial examples several attacks found on one model: of every image some attack fooled,
    the example of smallest exact W1 (ties: the attack named first), smallest first, at most ``max_examples``
    (1..32); each example's ``found_by`` names its attack. ``attacks``: name -> (attack log, its ``--save-adv``
    file), all of the same images. An empty list when no attack fooled an image."""
    _check_max_examples(max_examples)
    nearest = {}
    for name, (log, adv) in attacks.items():
        for e in attack_examples(log, adv):
            if e.fooled and (e.idx not in nearest or e.w1 < nearest[e.idx].w1):
                nearest[e.idx] = dataclasses.replace(e, found_by=name)
    return sorted(nearest.values(), key=lambda e: e.w1)[:max_examples]  # stable: first found among equals


def largest_moves(plan: TransportPlan, count: int | None) -> np.ndarray:
    """Indices of the plan's ``count`` largest moves by mass (all for None), largest first."""
    order = np.argsort(-plan.mass, kind="stable")
    return order if count is None else order[:count]


def attack_figure(examples: list[AttackExample], *, arrows: int | None = DEFAULT_ARROWS, title: str | None = None):
    """A Figure with one row per example: clean | adversarial | adversarial − clean with the transport arrows.

    ``arrows``: how many of each plan's largest moves to draw (None: all), each from the pixel the mass
    leaves to the pixel it reaches, line width ∝ mass, one scale for the whole figure (stated in the title).
    Colour scales (on the colour bars): pixels grey on [0, 1] (blue/red beyond, if any); differences blue
    (lost) to red (gained), symmetric, wide enough for the largest change.
    """
    from matplotlib.figure import Figure

    if not examples or len(examples) > MAX_EXAMPLES:
        raise ValueError(f"examples must hold 1 to {MAX_EXAMPLES} attack examples, got {len(examples)}")
    if arrows is not None and (isinstance(arrows, bool) or not isinstance(arrows, numbers.Integral) or arrows < 0):
        raise ValueError(f"arrows must be None (all) or an integer >= 0, got {arrows!r}")
    plans = [transport_plan(e.clean, e.adv, ground="l2", on_mismatch="rescale") for e in examples]
    drawn = [largest_moves(p, arrows) for p in plans]
    widest = max([float(p.mass[d].max()) for p, d in zip(plans, drawn) if d.size] + [0.0])
    points_per_mass = WIDEST_ARROW_POINTS / widest if widest > 0 else 0.0

    lo, hi = value_range([displayed(t) for e in examples for t in (e.clean, e.adv)])
    cmap, norm = pixel_scale(lo, hi)
    differences = [displayed(e.adv - e.clean) * e.clean.shape[0] for e in examples]  # channel sum
    diff_cmap, diff_norm, limit = difference_scale(differences)

    rows = len(examples)
    width = 8.4
    fig = Figure(figsize=(width, 2.75 * rows + 1.9), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False)
    for r, (e, plan, chosen, diff) in enumerate(zip(examples, plans, drawn, differences)):
        _image(axes[r, 0], displayed(e.clean), cmap, norm, f"idx {e.idx}: true label {e.label}\n"
               f"clean: predicted {_class(e.predict)}")
        outcome, colour = _outcome(e)
        by = "" if e.found_by is None else f" ({e.found_by})"
        _image(axes[r, 1], displayed(e.adv), cmap, norm,
               f"adversarial{by}: predicted {_class(e.adv_predict)}\n{outcome}", colour)
        _image(axes[r, 2], diff, diff_cmap, diff_norm, f"adversarial − clean\nnominal ε {_fmt(e.radius)}, "
               f"exact W1 {_fmt(plan.value)}")
        _arrows(axes[r, 2], plan, chosen, points_per_mass, e.clean.shape[0])
        share = float(plan.mass[chosen].sum()) / plan.moved_mass if plan.moved_mass > 0 else 0.0
        axes[r, 2].set_xlabel(f"arrows: {chosen.size} largest of {plan.mass.size} moves,\n{100 * share:.0f}% of the "
                              f"moved mass ({_fmt(plan.moved_mass)} of the image)", fontsize=8)
    images_bar = fig.colorbar(axes[0, 0].images[0], ax=axes[:, :2], location="bottom", shrink=0.9, aspect=30)
    images_bar.set_label(wrap_to_width(pixel_scale_label(lo, hi, "pixel value" + _channels_note(examples, "mean")),
                                       0.6 * width, 8), fontsize=8)
    diff_bar = fig.colorbar(axes[0, 2].images[0], ax=axes[:, 2], location="bottom", shrink=0.95, aspect=15)
    diff_bar.set_label(f"adversarial − clean, pixel value{_channels_note(examples, 'sum')}:\nblue lost, red gained; "
                       f"scale ±{limit:.3g}, nothing clipped", fontsize=8)
    diff_bar.set_ticks([-limit, -limit / 2, 0.0, limit / 2, limit],
                       labels=[f"{t:.3g}" for t in (-limit, -limit / 2, 0.0, limit / 2, limit)])
    diff_bar.ax.tick_params(labelsize=7)
    images_bar.set_ticks(pixel_ticks(lo, hi), labels=[f"{t:.3g}" for t in pixel_ticks(lo, hi)])
    images_bar.ax.tick_params(labelsize=7)
    key = (f"arrow width ∝ mass moved: {WIDEST_ARROW_POINTS:g} pt = {_fmt(widest)} of the image's mass"
           if widest > 0 else "no mass moved")
    fig.suptitle(wrap_to_width(f"{title or 'Adversarial examples'}\nexact W1: linear program, L2 ground metric, "
                               f"images divided by their mass; arrows: the optimal plan, {key}", width, 9), fontsize=9)
    return fig


def attack_picture(log: str | os.PathLike, adv: str | os.PathLike, *, max_examples: int | None = None,
                   only_success: bool = False, sort_by: str = "log", arrows: int | None = DEFAULT_ARROWS):
    """:func:`attack_figure` of an attack log and its ``--save-adv`` file, titled with the attack's settings.
    E.g. the smallest successful examples: ``attack_picture(log, adv, only_success=True, sort_by="w1",
    max_examples=4)``."""
    examples = load_attack_examples(log, adv, max_examples=max_examples, only_success=only_success,
                                    sort_by=sort_by)
    return attack_figure(examples, arrows=arrows, title=describe_attack(log))


def describe_attack(log: str | os.PathLike) -> str:
    """One line naming the log, the attack method and its target, from the settings in the log's rows."""
    first = read_attack_log(log)[0]
    target = "the base classifier"
    if first.get("mode") == "smoothed":
        target = f"the smoothed classifier ({first.get('noise')} σ={first.get('sigma'):g})"
    return f"{Path(log).name}: {first.get('method') or 'sinkhorn'} attack on {target}"


def _outcome(e: AttackExample) -> tuple[str, str]:
    if e.predict != e.label:
        return "wrong before the attack", "#7a4a00"
    if not e.success:
        return "not fooled", "black"
    if e.adv_predict == ABSTAIN:
        return "fooled: the smoothed classifier abstains", "#c00000"
    return "fooled", "#c00000"


def _class(value) -> str:
    if value is None:
        return "?"
    return "abstain" if int(value) == ABSTAIN else str(int(value))


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.4g}"


def _channels_note(examples, how: str) -> str:
    return f" ({how} over channels)" if examples[0].clean.shape[0] > 1 else ""


def _image(ax, array, cmap, norm, text: str, colour: str = "black") -> None:
    ax.imshow(array, cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_title(text, fontsize=8.5, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])


def _arrows(ax, plan: TransportPlan, chosen: np.ndarray, points_per_mass: float, channels: int) -> None:
    """One arrow per chosen move, (column, row) image coordinates, tagged gid="transport" (tests read them)."""
    for k in chosen:
        (si, sj), (ti, tj) = plan.source[k], plan.target[k]
        colour = "black" if channels == 1 else RGB_ARROWS[int(plan.channel[k]) % len(RGB_ARROWS)]
        ax.annotate("", xy=(float(tj), float(ti)), xytext=(float(sj), float(si)), gid="transport",
                    annotation_clip=False,
                    arrowprops=dict(arrowstyle="-|>", color=colour, lw=float(plan.mass[k]) * points_per_mass,
                                    shrinkA=0, shrinkB=0, mutation_scale=7, alpha=0.85))
