"""`wsmooth demo` as a declaration on :mod:`.engine`: Wasserstein (flow-laplace) against Laplace (pixel-laplace)
smoothing in miniature (paper §6.1, Table 1), on the embedded ``mnist5k`` digits, offline.

Per noise: a wong_mnist trained here (:class:`~.steps.Train`, on one thread; the demo's recipe: Adam, lr 0.001,
batch 64, weight decay 5e-4, 40 epochs), certified once with the tight certificate (:class:`~.steps.Certify`), and
the paper certificate's log derived from the same rows' ``p_lower`` (:class:`Rederive`), so the two
certificates are compared on identical samples. The report: the Table-1-style comparison, every summary column,
the seconds the checkpoints and logs record, and ``certified_accuracy.png``.

The demo's command (``wsmooth_ext.commands.demo``) always continues its folder (rerunning reuses what is
finished), and ``--epochs`` and ``--num-certify`` may grow on a rerun (:attr:`.engine.Experiment.grows`). Its
logs leave the identity columns (model hash, dataset, split) empty, as the demo's logs always have; the engine's
other experiments fill them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..infra import options as shared
from ..infra.options import integers
from . import _folder, options
from .engine import SUMMARY_FILE, Experiment, Report
from .steps import Certify, Run, Train

NAME = "demo"
DATASET = "mnist5k"
NOISES = ("flow-laplace", "pixel-laplace")
CERTIFICATES = ("paper", "tight")  # both valid for both noises; tight is the default
TRAIN_DIGITS, HELD_OUT_DIGITS = 4000, 1000  # mnist5k's splits
PLOT = "certified_accuracy.png"

# the demo's training recipe (see the command's epilog for why it is not the paper's)
RECIPE = {"epochs": 40, "optimizer": "adam", "lr": 0.001, "batch": 64, "weight_decay": 5e-4, "momentum": 0.9}
WORDS = {"train_size": f"train on the first N of the {TRAIN_DIGITS:,} training digits",
         "epochs": "training epochs per model", "seed": "seed of weights, training and certification noise"}


def _training(option):
    option = option.but(default=RECIPE[option.name]) if option.name in RECIPE else option
    if option.name == "train_size":  # at most the digits there are
        option = option.but(range=integers(1, TRAIN_DIGITS))
    return option.but(help=WORDS[option.name]) if option.name in WORDS else option


OPTIONS = (
    options.DATASET.but(choices=(DATASET,), help="the demo's digits (4,000 train / 1,000 held-out, embedded)"),
    shared.SIGMA.but(default=0.01, help="noise std per flow edge / per pixel, mass-normalized units"),
    *(_training(o) for o in options.TRAINING[1:]),  # the training block, at the demo's recipe
    options.images(100).but(cli="--num-certify", aliases=(), metavar="N", optional=False,
                            range=integers(1, HELD_OUT_DIGITS),
                            help=f"certify the first N of the {HELD_OUT_DIGITS:,} held-out digits"),
    shared.N0.but(help="selection samples per digit", group=options.E),
    shared.N.but(cli=None, aliases=(), help="estimation samples per digit", group=options.E),
    shared.ALPHA.but(help="failure probability", group=options.E),
)
# what `wsmooth demo` takes on its command line, in its --help order (the rest is the recipe: experiment.json
# records it)
COMMAND_OPTIONS = ("sigma", "epochs", "train_size", "max_images", "n0", "n", "alpha")
BATCH = shared.BATCH.but(name="batch_size", default=10000, help="noisy images per forward pass while certifying",
                         images_at_once=lambda s, batch: batch)


def _check(s):
    from ..core.smooth import check_vote_budget

    check_vote_budget("--n0 + --n", s.n0 + s.n)
    return s


def stem(noise: str, sigma: float) -> str:
    return f"{noise}_sigma{sigma:g}"


def derive_log(src: Path, dst: Path, certificate: str) -> None:
    """Rewrite certify log ``src`` as ``dst`` with the radii of another ``certificate``, from the same rows'
    p_lower (:func:`wsmooth_ext.analysis.certify.rederived_radius`); rebuilt from scratch each time (it is cheap)."""
    from ..analysis.certify import rederived_radius
    from ..infra.files import write_atomic
    from ..runs.logfile import format_field, read_log

    columns, rows = read_log(src)
    lines = ["\t".join(columns)]
    for row in rows:
        row = {**row, "radius": rederived_radius(row, certificate),
               "radius_l1": rederived_radius(row, certificate, "l1"), "certificate": certificate}
        lines.append("\t".join(format_field(row[c]) for c in columns))
    write_atomic(dst, ("\n".join(lines) + "\n").encode())


@dataclass(frozen=True)
class OneThreadTrain(Train):
    """:class:`~.steps.Train` on one intra-op thread: batches of 64 tiny images gain little from more, and on a
    shared CPU each parallel region's barrier can stall for seconds (measured: one 4,000-image epoch took 25 s
    with 2 threads next to two busy processes, 0.4 s with 1). Certification's big batches use them all."""

    def obtain(self, ctx, tag):
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return super().obtain(ctx, tag)
        finally:
            torch.set_num_threads(threads)


@dataclass(frozen=True, kw_only=True)
class CohenCertify(Certify):
    """:class:`~.steps.Certify` writing the rows the demo has always written: the identity columns (model hash,
    dataset, split, precision) left empty."""

    def write(self, ctx, model, path, identity):
        super().write(ctx, model, path, None)


@dataclass(frozen=True, kw_only=True)
class Rederive:
    """An evaluation that certifies nothing: the log ``source`` of the same run (an earlier evaluation) rewritten
    with ``certificate``'s radii from its rows' p_lower."""

    log: str
    label: str
    source: str
    certificate: str

    def run(self, ctx, model, tag) -> Path:
        path = ctx.out / self.log
        derive_log(ctx.out / self.source, path, self.certificate)
        ctx.log(f"{tag} {self.label}: {self.certificate} certificate from the p_lower of {self.source}")
        return path


def _plan(s, extras) -> list:
    runs = []
    for noise in NOISES:
        name = stem(noise, s.sigma)
        tight = CohenCertify(log=f"{name}_tight.tsv", label=noise, noise=noise, sigma=s.sigma, certificate="tight",
                             n0=s.n0, n=s.n, alpha=s.alpha, seed=s.seed, batch=extras.get("batch_size"))
        paper = Rederive(log=f"{name}_paper.tsv", label=noise, source=tight.log, certificate="paper")
        how = f"{noise} noise, {s.optimizer} lr {s.lr:g}, batch {s.batch}"
        runs.append(Run(OneThreadTrain(name, noise, {"noise": noise, "sigma": s.sigma}, how=how), (tight, paper),
                        about={"noise": noise}))
    return runs


def outputs(settings) -> list[str]:
    """The files a demo with ``settings`` writes in its folder."""
    names = [_folder.SETTINGS_FILE, SUMMARY_FILE, PLOT]
    for run in _plan(settings, {}):
        names += [f"{run.model.name}.pt"] + [evaluation.log for evaluation in run.evaluations]
    return names


def remove_outputs(out: Path, settings) -> None:
    """``--overwrite``: delete what the demo in ``out`` wrote (with ``settings``, and with those its experiment.json
    records); other files stay. ValueError where experiment.json records another experiment."""
    if not out.is_dir():
        return
    runs = [settings]
    if (out / _folder.SETTINGS_FILE).exists():
        recorded = _folder.read_record(out, NAME).get("settings") or {}
        if isinstance(recorded.get("sigma"), float):
            runs.append(dataclasses.replace(settings, sigma=recorded["sigma"]))
    for name in {name for s in runs for name in outputs(s)}:
        (out / name).unlink(missing_ok=True)


def _seconds(log) -> float:
    from ..runs.logfile import read_log

    return sum(float(r["time"]) for r in read_log(log)[1])


def _table_row(noise: str, sigma: float, s: dict) -> list:
    from ..analysis.tables import floor_sig

    return [noise, f"{sigma:g}", str(s["tight"]["n_images"]),
            f"{s['tight']['accuracy']:.2f} ({s['tight']['abstain']:.2f})",
            "N/A" if s["paper"]["median_radius"] is None else floor_sig(s["paper"]["median_radius"]),
            "N/A" if s["tight"]["median_radius"] is None else floor_sig(s["tight"]["median_radius"]),
            "—" if s["tight"]["base_accuracy"] is None else f"{s['tight']['base_accuracy']:.2f}"]


HEADER = ["noise", "sigma", "N", "accuracy % (abstain %)", "median radius (paper)", "median radius (tight)",
          "base acc. under noise %"]


def _report(result) -> Report:
    """summary.md, the certified-accuracy plot and the printed table."""
    from ..analysis.certify import format_summary_table, plot_certified_accuracy, summarize_certify_log
    from ..analysis.tables import floor_sig

    s = result.settings
    runs = {r.about["noise"]: r for r in result.runs}
    logs = {noise: dict(zip(("tight", "paper"), runs[noise].logs)) for noise in NOISES}
    summaries = {noise: {c: summarize_certify_log(logs[noise][c]) for c in CERTIFICATES} for noise in NOISES}
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(_table_row(noise, s.sigma, summaries[noise])) + " |" for noise in NOISES]
    table = "\n".join(lines)
    details = format_summary_table([summaries[n][c] for n in NOISES for c in CERTIFICATES], markdown=True)
    seconds = {n: (runs[n].model.training_seconds or 0.0, _seconds(logs[n]["tight"])) for n in NOISES}
    timing = "\n".join(f"- {n}: training {seconds[n][0]:.1f} s, certification {seconds[n][1]:.1f} s" for n in NOISES)
    total = f"total {sum(a + b for a, b in seconds.values()):.1f} s"
    flow = summaries["flow-laplace"]["tight"]
    target = (f"flow-laplace target (>= 90% smoothed accuracy, median tight radius >= 0.012): accuracy "
              f"{flow['accuracy']:.2f}%, median tight radius "
              f"{'N/A' if flow['median_radius'] is None else floor_sig(flow['median_radius'])}")
    text = ("# wsmooth demo\n\n" + f"{s.dataset}, {result.train_count} training digits, first "
            f"{len(result.data.indices)} held-out digits; n0 {s.n0}, n {s.n}, alpha {s.alpha:g}. Radii: certified W1 "
            "(L2 ground metric), mass-normalized units.\n\n" + table + "\n\n## All columns\n\n" + details
            + "\n\n## Wall time\n\nAs the checkpoints (the epochs' seconds) and the tight logs (the digits' seconds) "
            "record it.\n\n" + timing + f"\n- {total}\n\n{target}\n\n")
    printed = (table + "\n\nRadii: certified Wasserstein-1 distance (L2 ground metric) in mass-normalized units; "
               "accuracy and radii of the smoothed classifiers on the held-out digits; base acc.: the base classifier "
               f"on noisy copies (estimation samples).\n{target}\n{timing}\n{total}")
    paths = [logs[n][c] for n in NOISES for c in ("tight", "paper")]
    labels = [f"{n} ({c})" for n in NOISES for c in ("tight", "paper")]
    return Report(printed, text, {PLOT: lambda path: plot_certified_accuracy(paths, path, labels=labels)})


EXPERIMENT = Experiment(
    NAME, OPTIONS, _plan, _report, check=_check, tuning=(BATCH,), unit="digits", grows=("epochs", "max_images"),
    command="wsmooth demo", continues="rerun it to continue it")
