"""The paper's Table 1: Wasserstein (flow-laplace) and Laplace (pixel-laplace) smoothing on the MNIST
test set at every σ of the paper's grid, next to the published values.

A declaration on :mod:`.engine`. For each (noise, σ): a model, either the file ``--checkpoints DIR/PATTERN``
(``{noise}`` and ``{sigma}`` filled in, so the authors' folder works as it is; where ``--checkpoints`` is given, a
row without a file is skipped and listed as such) or, without ``--checkpoints``, trained here with the training
options (``--epochs``, ``--optimizer`` ...; the paper trained with SGD for 200 epochs). On the chosen test images
(``--skip``, ``--max-images``) the paper's protocol: ``predict`` with n = 10,000 (accuracy, % abstained) and
``certify`` with n0 = 1,000, n = 10,000, α = 0.05 and the paper's certificate (Eq. 20/21); the tight certificate's
radii are computed from the same samples (each row's ``p_lower``), and the base classifier's accuracy under noise
from the same votes (``count_label / n``). ``noise_samples.png``: the first few of these test images under every noise
at every σ of the run, the samples certification draws for them (same op, seed and keys), as ``wsmooth show noise``
draws them.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from pathlib import Path

from ..infra import options as shared
from . import _checks, options
from .engine import Experiment, Report
from .options import Option
from .steps import Certify, Given, Predict, Run, Train

NAME = "table1"
NOISES = ("flow-laplace", "pixel-laplace")
SIGMAS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
PATTERN = "{noise}_sigma{sigma}.pth"  # the authors' files: flow-laplace_sigma0.01.pth

# Levine & Feizi, "Wasserstein Smoothing: Certified Robustness against Wasserstein Adversarial Attacks", AISTATS
# 2020, Table 1 (MNIST test set): accuracy %, abstained %, median certified W1 (paper certificate; "0" and "N/A"
# as printed there), base-classifier accuracy % under noise.
PAPER = {
    "flow-laplace": {0.005: (98.71, 0.04, 0.0101, 97.94), 0.01: (97.98, 0.19, 0.0132, 94.95),
                     0.02: (93.99, 0.58, 0.0095, 79.72), 0.05: (74.22, 3.95, 0.0, 43.67),
                     0.1: (49.41, 1.29, 0.0, 30.26), 0.2: (31.80, 8.40, None, 25.13), 0.5: (22.58, 0.84, None, 22.67)},
    "pixel-laplace": {0.005: (98.87, 0.06, 0.0062, 97.47), 0.01: (97.44, 0.19, 0.0053, 89.32),
                      0.02: (91.11, 1.29, 0.0030, 67.08), 0.05: (61.44, 7.45, 0.0, 33.80),
                      0.1: (34.92, 9.36, None, 25.56), 0.2: (24.02, 5.67, None, 22.85), 0.5: (22.57, 1.05, None, 22.70)},
}
NOISE_FILE = "noise_samples.png"
GRID_ROWS = 8  # the noise grid shows a second (third) image only while it stays within this many rows
GRID_IMAGES = 3
GRID_SAMPLES = 4  # samples per row: sample indices 0..3 of each image's votes
HALVES = {"flow-laplace": "Wasserstein smoothing (flow-laplace)", "pixel-laplace": "Laplace smoothing (pixel-laplace)"}


def _sigmas(name, values) -> tuple:
    sigmas = tuple(options.sigma(name, v) for v in values)
    if not sigmas or len({f"{v:g}" for v in sigmas}) != len(sigmas):  # file names use %g
        raise ValueError(f"--sigmas must give distinct sigmas, got {options.format_value(sigmas)}")
    return sigmas


def _folder(name, value):
    if value is not None and not Path(value).is_dir():
        raise FileNotFoundError(f"{_checks.option(name)} {value}: no such directory")
    return value


def _pattern(name, value):
    try:
        filled = value.format(noise="N", sigma="S")
    except (AttributeError, KeyError, IndexError, ValueError):
        filled = ""
    if "N" not in filled or "S" not in filled or "/" in value:
        raise ValueError(f"--pattern must be a file name with {{noise}} and {{sigma}} (and no other fields), "
                         f"got {value!r}")
    return value


OPTIONS = (
    Option("noises", NOISES, "smoothing noises", rule=partial(_checks.names, allowed=NOISES, noun="noise"),
           metavar="N"),
    Option("sigmas", SIGMAS, "noise std per flow edge or pixel, mass-normalized", rule=_sigmas, metavar="S"),
    Option("checkpoints", None, "take each row's model from DIR/PATTERN (rows without a file are skipped)",
           rule=_folder, kind=str, metavar="DIR", default_note=": train every model here", path=True, group="models"),
    Option("pattern", PATTERN, "file name of a row's checkpoint in --checkpoints; {sigma} as %g", rule=_pattern,
           group="models"),
    options.DATASET.but(default="mnist"),
    *options.TRAINING[1:],
    shared.SKIP.but(help="evaluate every skip-th test image", group=options.E),
    options.images(None),
    shared.N.but(name="n_predict", cli=None, aliases=(), help="predict samples per image (accuracy, abstentions)",
                 group=options.E),
    *options.CERTIFY,
)


def _plan(s, extras) -> list:
    runs = []
    for noise in s.noises:
        for sigma in s.sigmas:
            stem, label = f"{noise}_sigma{sigma:g}", f"{noise}, sigma {sigma:g}"
            path = s.checkpoints and Path(s.checkpoints) / s.pattern.format(noise=noise, sigma=f"{sigma:g}")
            if path and not path.is_file():
                continue
            model = (Given(stem, label, str(path), "--checkpoints", noise=(noise, sigma)) if path
                     else Train(stem, label, {"noise": noise, "sigma": sigma}, how=f"{noise} noise training"))
            common = dict(label=label, noise=noise, sigma=sigma, alpha=s.alpha, seed=s.seed, batch=extras["certify_batch"])
            runs.append(Run(model, (Predict(log=f"{stem}_predict.tsv", n=s.n_predict, **common),
                                    Certify(log=f"{stem}_certify.tsv", certificate="paper", n0=s.n0, n=s.samples,
                                            **common)),
                            about={"noise": noise, "sigma": sigma}))
    if not runs:
        raise ValueError(f"--checkpoints {s.checkpoints} holds no file {s.pattern} for the noises and sigmas asked")
    return runs


def tight_median(certify_log):
    """Median over all images of the tight certificate's radius from each row's p_lower (wrong or abstained: −inf);
    None when fewer than half are certified correct (:func:`analysis.certify.median_certified_radius`)."""
    from ..analysis.certify import median_certified_radius, rederived_radius
    from ..runs.logfile import read_log

    rows = read_log(certify_log)[1]
    return median_certified_radius(rederived_radius(r, "tight") if r["correct"] == 1 else -math.inf for r in rows)


def _interval(percent: float, n: int) -> tuple[float, float]:
    """Two-sided 95% Clopper–Pearson interval (%) of an accuracy of ``percent`` over ``n`` images."""
    from ..core.statistics import clopper_pearson_lower

    k = round(percent * n / 100)
    return 100 * clopper_pearson_lower(k, n, 0.025), 100 * (1 - clopper_pearson_lower(n - k, n, 0.025))


def _cells(run, paper) -> list:
    from ..analysis.certify import summarize_certify_log
    from ..analysis.tables import floor_sig, pct

    predicted, certified = (summarize_certify_log(log) for log in run.logs)
    n, (low, high) = predicted["n_images"], _interval(predicted["accuracy"], predicted["n_images"])
    median, tight = certified["median_radius"], tight_median(run.logs[1])
    seconds = sum(_seconds(log) for log in run.logs) / n
    diff = (lambda ours, theirs: "—" if ours is None or theirs is None else f"{ours - theirs:+.4g}")
    return [str(n), f"{pct(predicted['accuracy'])} ({pct(predicted['abstain'])})", f"{pct(paper[0])} ({pct(paper[1])})",
            diff(predicted["accuracy"], paper[0]),
            f"{low:.2f}–{high:.2f}" + (" ✓" if paper[0] is not None and low <= paper[0] <= high else ""),
            "N/A" if median is None else floor_sig(median), "N/A" if paper[2] is None else f"{paper[2]:g}",
            diff(median, paper[2]), "N/A" if tight is None else floor_sig(tight), pct(certified["base_accuracy"]),
            pct(paper[3]), diff(certified["base_accuracy"], paper[3]), f"{seconds:.3g}"]


def _seconds(log) -> float:
    from ..runs.logfile import read_log

    return sum(float(r["time"]) for r in read_log(log)[1])


HEADER = ["σ", "N", "accuracy % (abstain %)", "paper", "Δ", "95% interval (✓: paper inside)", "median cert. W1",
          "paper", "Δ", "median W1, tight cert.", "base acc. % under noise", "paper", "Δ", "s/image"]


def format_tables(result) -> str:
    """One Markdown table per noise (the two halves of the paper's Table 1), a row per σ; rows without a model
    show the paper's values only."""
    from ..analysis.tables import format_table as markdown

    done = {(r.about["noise"], r.about["sigma"]): r for r in result.runs}
    parts = []
    for noise in result.settings.noises:
        body = []
        for sigma in result.settings.sigmas:
            paper = PAPER.get(noise, {}).get(sigma, (None,) * 4)
            run = done.get((noise, sigma))
            body.append([f"{sigma:g}"] + (_cells(run, paper) if run else ["no checkpoint"] + ["—"] * 12))
        parts.append(f"{HALVES.get(noise, noise)}:\n\n" + markdown(HEADER, body, markdown=True))
    return "\n\n".join(parts)


def noise_figure(images, labels, keys, noise_names, sigmas, seed: int, dataset: str):
    """The Figure of ``noise_samples.png``: ``images[keys]`` (``keys``: their test-set indices, the RNG keys of
    certification) under each noise at each σ: samples 0..3 of their votes with ``seed``, the first votes of
    predict and of certify's selection step."""
    import torch

    from ..analysis.pictures import noise_grid

    keys = torch.as_tensor(keys, dtype=torch.int64)
    return noise_grid(images[keys], keys, labels=labels[keys], noise_names=noise_names, sigmas=sigmas,
                      samples=GRID_SAMPLES, seed=seed, title=f"{NAME}: smoothing samples of {dataset} test images, "
                      "as predict and certify draw them for their votes")


def _noise_picture(result) -> tuple[dict, str]:
    """({file: draw} of the noise grid, the summary's line on it): the first evaluated images (as many as fit in
    GRID_ROWS rows, at least one), every noise at every σ (at most noise_grid's rows: the first σ beyond that)."""
    from ..analysis.pictures import save_figure
    from ..analysis.pictures.noise import MAX_ROWS

    s, data = result.settings, result.data
    per_image = len(s.noises) * len(s.sigmas)
    sigmas = s.sigmas[:max(1, MAX_ROWS // len(s.noises))]
    keys = data.indices[:max(1, min(GRID_IMAGES, GRID_ROWS // per_image))]
    draw = (lambda path: save_figure(noise_figure(data.test_x, data.test_y, keys, s.noises, sigmas, s.seed,
                                                  s.dataset), path, overwrite=True))  # the engine's partial file
    left = "" if len(sigmas) == len(s.sigmas) else (
        f" (σ {', '.join(f'{v:g}' for v in s.sigmas[len(sigmas):])} not drawn: at most {MAX_ROWS} rows)")
    text = (f"Noise samples: [`{NOISE_FILE}`]({NOISE_FILE}): test image{'s' if len(keys) > 1 else ''} "
            f"{', '.join(map(str, keys))} under each noise at each σ{left}, samples 0–{GRID_SAMPLES - 1} of their "
            f"votes, the first that predict and certify's selection step count (seed {s.seed}, key = test-set "
            "index), with each sample's mass; pixels outside [0, 1] in colour, not clipped.\n")
    return {NOISE_FILE: draw}, text


def _report(result) -> Report:
    from ..analysis.certify import plot_certified_accuracy

    s, runs = result.settings, result.runs
    tables = format_tables(result)
    models = (f"the files `{s.pattern}` in `{s.checkpoints}` (rows without one are skipped)" if s.checkpoints else
              f"trained here on {result.train_count} {s.dataset} training images ({options.training_recipe(s)})")
    plots = {f"certified_accuracy_{noise}.png": partial(
        lambda logs, labels, path: plot_certified_accuracy(logs, path, labels=labels),
        [r.logs[1] for r in runs if r.about["noise"] == noise],
        [f"{noise}, σ {r.about['sigma']:g}" for r in runs if r.about["noise"] == noise])
        for noise in s.noises if any(r.about["noise"] == noise for r in runs)}
    text = (f"# Table 1 of Levine & Feizi (2020) ({NAME})\n\n"
            f"Models: {models}. Images: {len(result.data.indices)} {s.dataset} test images (every {s.skip}-th"
            f"{'' if s.max_images is None else f', the first {s.max_images} of them'}). Each: `predict` with n "
            f"{s.n_predict} (accuracy, % abstained) and `certify` with n0 {s.n0}, n {s.samples}, the paper's "
            f"certificate (Eq. 20/21), α {s.alpha:g}, seed {s.seed}.\n\n"
            "Accuracy: % of the images predicted correctly (abstentions count as wrong), with its two-sided 95% "
            "Clopper–Pearson interval over N images (✓: the paper's value lies inside). Median certified W1: over "
            "all images, wrong or abstained ones counting below every radius; N/A when fewer than half are certified "
            "correct (the paper prints 0 and N/A without defining them). Tight: the median of the tight certificate "
            "(Teng et al. 2020) from the same samples. Base accuracy: % of the certification's noisy samples the "
            "base classifier labels correctly. Δ: ours − paper (percentage points, or W1). s/image: predict and "
            "certify seconds per image. Paper: Levine & Feizi, AISTATS 2020, Table 1 (full MNIST test set).\n\n"
            f"{tables}\n\n"
            f"Curves: {', '.join(f'`{name}`' for name in plots)}. Logs: `NOISE_sigmaS_predict.tsv`, "
            "`NOISE_sigmaS_certify.tsv`" + ("" if s.checkpoints else "; checkpoints `NOISE_sigmaS.pt`") + ".\n\n")
    noise_plot, noise_text = _noise_picture(result)
    return Report(tables, text + noise_text, {**plots, **noise_plot})


EXPERIMENT = Experiment(
    NAME, OPTIONS, _plan, _report,
    # --quick: every 200th test digit (50), a tenth of the samples; trained models: 2 epochs on 10,000 digits
    quick={"skip": 200, "n_predict": 1000, "n0": 100, "samples": 1000, "epochs": 2, "train_size": 10000},
    tuning=(shared.BATCH.but(name="certify_batch", help="noisy images per forward pass; changes no result",
                             optional=True, metavar="B", none="automatic", images_at_once=lambda s, batch: batch),))
