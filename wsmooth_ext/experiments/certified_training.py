"""The certified-training comparison: every training method at every σ, certified on held-out digits.

A declaration on :mod:`.engine`. For each (method, σ) it trains ``arch`` (default ``wong_mnist``; any of
``inputs.models.ARCHS``) on the training images of ``dataset`` (``mnist5k``, ``digits`` or the official ``mnist``
files) exactly as ``wsmooth train --arch ARCH --method METHOD`` would, with the method's hyper-parameters at their
defaults except those given (one setting per hyper-parameter of the registry's ``--method`` methods, the options
of ``wsmooth train``; a value applies to every method of ``methods`` that has it, and is refused where none has
it), certifies the first ``max_images`` held-out images taken every ``skip``-th (``wsmooth certify --skip
--max-images``) exactly as ``wsmooth certify`` would, and writes into the output folder:

* ``METHOD_sigmaS.pt`` — the checkpoint (resumable, with per-epoch history);
* ``METHOD_sigmaS.tsv`` — the certify log;
* ``summary.md`` — one table row per run: smoothed accuracy, abstain %, median certified W1, ACR, certified
  accuracy at chosen radii (the definitions of :mod:`wsmooth_ext.analysis.certify`), training and
  certification time; ``certified_accuracy.png`` — one certified-accuracy curve per run;
* ``experiment.json`` — the settings the folder was started with (``--resume`` continues only those).

``radii`` (the table's columns) and ``certify_batch`` are not settings: they change no checkpoint or log.
"""

from __future__ import annotations

from functools import partial

from ..core.certificates import CERTIFICATES
from ..core.noises import NOISES, help_text
from ..training.registry import names
from ..infra import options as shared
from . import _checks, options
from .engine import Experiment, Report
from .options import Option
from .steps import Certify, Run, Train

NAME = "certified-training"
PLOT_FILE = "certified_accuracy.png"
DEFAULT_RADII = (0.01, 0.02, 0.03)
METHODS = names("method")  # the certified-training methods of the registry (wsmooth_ext.training.registry)


def _stem(method: str, sigma: float) -> str:
    return f"{method}_sigma{sigma:g}"


def _sigmas(name, values) -> tuple:
    from ..core import noises

    sigmas = tuple(noises.check_sigma(sigma, "--sigmas: each sigma") for sigma in values)
    if not sigmas:
        raise ValueError("--sigmas must give at least one sigma")
    if len({_stem("", sigma) for sigma in sigmas}) != len(sigmas):  # file names use 6 significant digits
        raise ValueError(f"--sigmas names a sigma twice: {options.format_value(sigmas)}")
    return sigmas


METHOD_OPTIONS = options.method_options("method")  # --num-noise, --consistency-lambda, ... as `wsmooth train`'s
METHOD_KEYS = tuple(o.name for o in METHOD_OPTIONS)

OPTIONS = (
    Option("methods", METHODS, f"training methods, among {', '.join(METHODS)}",
           rule=partial(_checks.names, allowed=METHODS, noun="method"), metavar="M"),
    Option("sigmas", (0.01, 0.02), "noise std per flow edge, mass-normalized units", rule=_sigmas, metavar="S"),
    *options.TRAINING,
    options.arch_option(),
    *METHOD_OPTIONS,
    Option("noise", "flow-laplace", f"training and smoothing noise: {help_text()}", choices=NOISES),
    Option("certificate", None, "certificate", kind=str, choices=CERTIFICATES, optional=True,
           none="the strongest valid one for --noise: tight for the laplace noises, uniform for the uniform ones"),
    options.images(500),
    options.SKIP,
    *options.CERTIFY,
)


def _check(s):
    import dataclasses

    from ..core.certificates import resolve_certificate
    from ..core.smooth import check_vote_budget

    try:
        certificate = resolve_certificate(s.noise, s.certificate)
    except ValueError as exc:
        raise ValueError(f"--certificate: {exc}") from None
    check_vote_budget("--n0 + --samples", s.n0 + s.samples)
    options.check_method_values(s, s.methods, METHOD_KEYS)
    return dataclasses.replace(s, certificate=certificate)


def _plan(s, extras) -> list:
    given = options.check_method_values(s, s.methods, METHOD_KEYS)  # {method: its hyper-parameters given}
    return [Run(Train(_stem(m, sigma), f"{m}, sigma {sigma:g}",
                      {"noise": s.noise, "sigma": sigma, "method": m, **given[m]}),
                (Certify(log=f"{_stem(m, sigma)}.tsv", label=f"{m}, sigma {sigma:g}", noise=s.noise, sigma=sigma,
                         certificate=s.certificate, n0=s.n0, n=s.samples, alpha=s.alpha, seed=s.seed,
                         batch=extras["certify_batch"]),),
                about={"method": m, "sigma": sigma})
            for sigma in s.sigmas for m in s.methods]


def format_table(runs, radii) -> str:
    """The Markdown table of summary.md: one row per run. Radii and ACR truncated to 4 significant digits,
    percentages to 2 decimals (as ``wsmooth analyze`` prints them), times in seconds."""
    from ..analysis.certify import summarize_certify_log
    from ..analysis.tables import floor_sig, format_table as markdown, pct
    from ..runs.logfile import read_log

    header = (["method", "σ", "N", "smoothed acc. %", "abstain %", "median cert. W1", "ACR"]
              + [f"cert. acc. % @ W1 {floor_sig(r)}" for r in radii] + ["training s", "certification s"])
    body = []
    for run in runs:
        log = run.logs[0]
        s = summarize_certify_log(log, radius_grid=radii)
        by_radius = dict(s["certified_accuracy"])
        certification = sum(float(r["time"]) for r in read_log(log)[1])
        body.append([run.about["method"], f"{run.about['sigma']:g}", str(s["n_images"]), pct(s["accuracy"]),
                     pct(s["abstain"]), "N/A" if s["median_radius"] is None else floor_sig(s["median_radius"]),
                     floor_sig(s["acr"])] + [pct(by_radius[r]) for r in radii]
                    + [f"{run.model.training_seconds:.1f}", f"{certification:.1f}"])
    return markdown(header, body, markdown=True)


def _which_images(s, count: int) -> str:
    if s.skip == 1:
        return f"the first {count} held-out images"
    return f"{count} held-out images (indices 0, {s.skip}, {2 * s.skip}, ...)"


def _report(result) -> Report:
    from ..analysis.certify import plot_certified_accuracy

    s, runs = result.settings, result.runs
    table = format_table(runs, result.extras["radii"])
    changed = [f"`{o.flag} {o.spell(getattr(s, o.name))}`" for o in METHOD_OPTIONS if getattr(s, o.name) is not None]
    text = (f"# Certified training comparison ({NAME})\n\n"
            f"`{s.arch}` trained on {result.train_count} {s.dataset} training images ({options.training_recipe(s)}) "
            f"under {s.noise} noise with each method at its `wsmooth train` defaults"
            + (f" except {', '.join(changed)} (for the methods that have them)" if changed else "")
            + "; its smoothed classifier "
            f"certified on {_which_images(s, len(result.data.indices))} ({s.certificate} certificate, n0 {s.n0}, n "
            f"{s.samples}, alpha {s.alpha:g}, seed {s.seed}).\n\n"
            "Radii: certified Wasserstein-1 radius, L2 ground metric, mass-normalized units. Accuracies in % of the "
            "certified images (abstentions count as wrong; certified accuracy at r: correct with radius >= r); "
            "median: N/A when fewer than half are certified correct; ACR: mean over images of the radius when "
            "correct, 0 otherwise. Times in seconds: training = sum of the epochs' wall times (checkpoint "
            "history), certification = sum of the per-image times of the log.\n\n"
            f"{table}\n\n"
            f"Curves: `{PLOT_FILE}`. Checkpoints and certify logs: `METHOD_sigmaS.pt`, `METHOD_sigmaS.tsv`.\n")
    labels = [f"{r.about['method']}, σ {r.about['sigma']:g}" for r in runs]
    return Report(table, text, {PLOT_FILE: lambda path: plot_certified_accuracy([r.logs[0] for r in runs], path,
                                                                                 labels=labels)})


EXPERIMENT = Experiment(
    NAME, OPTIONS, _plan, _report, check=_check,
    quick={"epochs": 4, "max_images": 100, "n0": 100, "samples": 1000},  # about two minutes on a 2-core CPU
    view=Option("radii", DEFAULT_RADII, "radii of the certified-accuracy columns: W1, L2 ground metric, "
                "mass-normalized", rule=partial(_checks.radii, unit="W1, mass-normalized"), metavar="R"),
    tuning=(shared.BATCH.but(name="certify_batch", help="noisy images per forward pass while certifying; changes no "
                             "result", optional=True, metavar="B", none="automatic, as `wsmooth certify`",
                             images_at_once=lambda s, batch: batch),))
