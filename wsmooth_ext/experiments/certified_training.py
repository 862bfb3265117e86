"""The certified-training comparison (issue 12): every training method at every σ, certified on held-out digits.

For each (method, σ) of :class:`Settings` it trains ``wong_mnist`` on the training digits with
:func:`wsmooth_ext.train.train` (the method's own hyper-parameters at their ``wsmooth train`` defaults), certifies
the first ``max_images`` held-out digits with :func:`wsmooth_ext.runs.certify.certify_to_log`, and writes into the
output folder:

* ``METHOD_sigmaS.pt`` — the checkpoint, as ``wsmooth train`` writes it (resumable, with per-epoch history);
* ``METHOD_sigmaS.tsv`` — the certify log, as ``wsmooth certify`` writes it;
* ``summary.md`` — one table row per run: smoothed accuracy, abstain %, median certified W1, ACR, certified
  accuracy at chosen radii (the definitions of :mod:`wsmooth_ext.analysis.certify`), training and
  certification time;
* ``certified_accuracy.png`` — one certified-accuracy curve per run;
* ``experiment.json`` — the settings the folder was started with.

Resuming: the folder's settings are fixed by ``experiment.json``; a rerun with ``resume=True`` and the same
settings continues the unfinished checkpoints and logs (each with its own resume checks: training settings,
model hash, certification settings) and only re-renders what is finished. Without ``resume`` a non-empty
folder is refused. ``radii``, the device and the certification chunk size are not settings: they change
neither a checkpoint nor a log (results are independent of chunking; see :mod:`wsmooth_ext.runs.logfile`).

Settings are named like the command's options (``max_images`` is ``--max-images``) and the errors name the
options, since the command line is this workflow's main user.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..methods import METHODS
from . import _checks, _folder

__all__ = ["DATASETS", "DEFAULT_RADII", "QUICK", "Run", "Settings", "check_output", "check_radii", "check_settings",
           "command_line", "format_table", "run_certified_training"]

NAME = "certified-training"
SETTINGS_FILE = _folder.SETTINGS_FILE
SUMMARY_FILE = "summary.md"
PLOT_FILE = "certified_accuracy.png"
ARCH = "wong_mnist"
DATASETS = ("mnist5k", "digits", "mnist")  # the MNIST-like datasets wong_mnist takes
DEFAULT_RADII = (0.01, 0.02, 0.03)
SPLIT = "test"


@dataclass(frozen=True)
class Settings:
    """What determines the experiment's checkpoints and logs (the issue's full size by default)."""

    methods: tuple = METHODS
    sigmas: tuple = (0.01, 0.02)
    dataset: str = "mnist5k"
    train_size: int | None = None  # the first N training digits; None: all (4,000 for mnist5k)
    epochs: int = 20
    optimizer: str = "adam"
    lr: float = 1e-3
    batch: int = 64  # training images per step
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4
    seed: int = 0  # weights, batch order, training noise and certification noise
    noise: str = "flow-laplace"
    certificate: str | None = None  # None: the strongest valid one for the noise (tight for Laplace noises)
    max_images: int = 500  # the first M held-out digits are certified
    n0: int = 1000
    samples: int = 10000
    alpha: float = 0.05


# --quick: a miniature of the same comparison, a couple of minutes on a 2-core CPU
QUICK = {"epochs": 4, "max_images": 100, "n0": 100, "samples": 1000}


@dataclass
class Run:
    """One (method, σ) of the experiment once it is finished."""

    method: str
    sigma: float
    checkpoint: Path
    log: Path
    training_seconds: float
    certification_seconds: float
    summary: dict  # summarize_certify_log(log, radius_grid=radii)


option = _folder.option


def run_stem(method: str, sigma: float) -> str:
    return f"{method}_sigma{sigma:g}"


def _format_value(value) -> str:
    return _folder.format_value(value, none="all")  # an unset --train-size means all the digits


def check_settings(settings: Settings) -> Settings:
    """``settings`` validated and normalized (tuples, floats); ValueError naming the option otherwise."""
    from .. import noises
    from ..certificates import resolve_certificate
    from ..smooth import check_vote_budget
    from ..train import OPTIMIZERS

    if not isinstance(settings, Settings):
        raise ValueError(f"settings must be a {__name__}.Settings, got {type(settings).__name__}")
    s = settings
    methods = _checks.names("methods", s.methods, METHODS, "method")
    sigmas = tuple(noises.check_sigma(sigma, "--sigmas: each sigma") for sigma in s.sigmas)
    if not sigmas:
        raise ValueError("--sigmas must give at least one sigma")
    if len({run_stem('', sigma) for sigma in sigmas}) != len(sigmas):  # file names use 6 significant digits
        raise ValueError(f"--sigmas names a sigma twice: {_format_value(sigmas)}")
    if s.dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {', '.join(DATASETS)} (images {ARCH} takes), got {s.dataset!r}")
    _checks.integer("train_size", s.train_size, allow_none=True)
    for name in ("epochs", "batch", "max_images", "n0", "samples"):
        _checks.integer(name, getattr(s, name))
    _checks.choices("optimizer", s.optimizer, OPTIMIZERS)
    lr = _checks.number("lr", s.lr)
    momentum = _checks.number("momentum", s.momentum, positive=False)
    weight_decay = _checks.number("weight_decay", s.weight_decay, positive=False)
    _checks.seed(s.seed)
    _checks.choices("noise", s.noise, noises.NOISES)
    try:
        certificate = resolve_certificate(s.noise, s.certificate)
    except ValueError as exc:
        raise ValueError(f"--certificate: {exc}") from None
    if isinstance(s.alpha, bool) or not isinstance(s.alpha, (int, float)) or not 0.0 < s.alpha < 1.0:
        raise ValueError(f"--alpha must be in (0, 1), got {s.alpha!r}")
    check_vote_budget("--n0 + --samples", s.n0 + s.samples)
    return dataclasses.replace(s, methods=methods, sigmas=sigmas, lr=lr, momentum=momentum,
                               weight_decay=weight_decay, certificate=certificate, alpha=float(s.alpha))


def check_radii(radii) -> tuple:
    """The certified-accuracy radii, sorted; ValueError naming --radii unless each is a finite number >= 0."""
    return _checks.radii("radii", radii, "W1, mass-normalized")


def check_output(out: Path, settings: Settings, resume: bool) -> bool:
    """Fail before any work unless ``out`` can hold this experiment. True when it continues an existing one.

    A new experiment needs a missing or empty folder; ``resume`` continues a folder whose experiment.json
    records the same settings (and starts a new experiment in a missing or empty one)."""
    return _folder.check_output(out, NAME, _checks.as_json(settings), resume, none="all")


def command_line(settings: Settings, out, quick: bool = False, radii=DEFAULT_RADII) -> str:
    """The ``wsmooth`` command that runs (or continues) this experiment and prints the same table: the
    options that differ from the defaults (or from --quick's)."""
    import shlex

    base = check_settings(dataclasses.replace(Settings(), **QUICK) if quick else Settings())
    parts = ["wsmooth", "experiment", NAME, "--out", str(out)] + (["--quick"] if quick else [])
    for field in dataclasses.fields(Settings):
        value = getattr(settings, field.name)
        if value != getattr(base, field.name):
            parts += [option(field.name), _format_value(value)]
    if tuple(radii) != check_radii(DEFAULT_RADII):
        parts += ["--radii", _format_value(tuple(radii))]
    return shlex.join(parts)


def format_table(runs: list[Run]) -> str:
    """The Markdown table of summary.md: one row per run. Radii and ACR truncated to 4 significant digits,
    percentages to 2 decimals (as ``wsmooth analyze`` prints them), times in seconds."""
    from ..analysis.tables import floor_sig, format_table as markdown, pct

    radii = [r for r, _ in runs[0].summary["certified_accuracy"]] if runs else []

    header = (["method", "σ", "N", "smoothed acc. %", "abstain %", "median cert. W1", "ACR"]
              + [f"cert. acc. % @ W1 {floor_sig(r)}" for r in radii] + ["training s", "certification s"])
    body = []
    for run in runs:
        s = run.summary
        by_radius = dict(s["certified_accuracy"])
        body.append([run.method, f"{run.sigma:g}", str(s["n_images"]), pct(s["accuracy"]), pct(s["abstain"]),
                     "N/A" if s["median_radius"] is None else floor_sig(s["median_radius"]), floor_sig(s["acr"])]
                    + [pct(by_radius[r]) for r in radii]
                    + [f"{run.training_seconds:.1f}", f"{run.certification_seconds:.1f}"])
    return markdown(header, body, markdown=True)


def _training_state(path: Path) -> tuple[int, list]:
    """(epochs done, history) of a checkpoint written by train; (0, []) if there is none yet."""
    from ..checkpoint import load_training_state

    if not path.exists():
        return 0, []
    state = load_training_state(path)[2]
    if state is None:
        raise ValueError(f"{path} holds no training state: it was not written by this experiment")
    return int(state["epoch"]), list(state["history"])


def run_certified_training(out_dir, settings: Settings = Settings(), *, resume: bool = False,
                           radii=DEFAULT_RADII, device=None, certify_batch: int | None = None,
                           data_dir=None, progress: bool = True, quick: bool = False,
                           log: Callable[[str], None] | None = None) -> list[Run]:
    """Run (or, with ``resume``, continue) the comparison into ``out_dir``; return its runs in table order.

    ``device``: a torch device (default CPU). ``certify_batch``: noisy images per forward pass while
    certifying (default automatic: :func:`wsmooth_ext.smooth.auto_batch_size`). ``data_dir``: where the
    ``mnist`` files are. ``quick`` only records that the settings came from --quick (for messages). Every
    setting and the folder are checked before anything is trained.
    """
    import torch

    from ..data import load_dataset

    log = log or (lambda line: print(line, flush=True))
    settings = check_settings(settings)
    radii = check_radii(radii)
    if certify_batch is not None and (isinstance(certify_batch, bool) or not isinstance(certify_batch, int)
                                      or certify_batch < 1):
        raise ValueError(f"--certify-batch must be an integer >= 1, got {certify_batch!r}")
    device = torch.device(device if device is not None else "cpu")
    out = Path(out_dir)
    check_output(out, settings, resume)

    train_x, train_y = load_dataset(settings.dataset, "train", data_dir)
    test_x, test_y = load_dataset(settings.dataset, SPLIT, data_dir)
    if settings.train_size is not None:
        if settings.train_size > len(train_x):
            raise ValueError(f"--train-size {settings.train_size} exceeds the {len(train_x)} training images of "
                             f"{settings.dataset}")
        train_x, train_y = train_x[:settings.train_size], train_y[:settings.train_size]
    if settings.max_images > len(test_x):
        raise ValueError(f"--max-images {settings.max_images} exceeds the {len(test_x)} held-out images of "
                         f"{settings.dataset}")

    from ..runs.logfile import exclusive_output, write_atomic

    with exclusive_output(out / SETTINGS_FILE, what="--out"):
        if check_output(out, settings, resume) is False:  # the folder is new: record what it holds
            record = {"experiment": NAME, "settings": _checks.as_json(settings), "quick": bool(quick),
                      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      "command": command_line(settings, out, quick, radii)}
            write_atomic(out / SETTINGS_FILE, (json.dumps(record, indent=2) + "\n").encode())
        pairs = [(m, s) for s in settings.sigmas for m in settings.methods]
        log(f"{NAME}: {len(pairs)} runs ({', '.join(settings.methods)} x sigma {_format_value(settings.sigmas)}); "
            f"{ARCH} on {len(train_x)} {settings.dataset} training images, {settings.epochs} epochs; certifying "
            f"{settings.max_images} held-out images (n0 {settings.n0}, n {settings.samples}, alpha "
            f"{settings.alpha:g}, {settings.certificate}); {device}; output in {out}")
        runs = []
        for number, (method, sigma) in enumerate(pairs, start=1):
            runs.append(_one_run(out, settings, method, sigma, f"[{number}/{len(pairs)}]", train_x, train_y,
                                 test_x, test_y, radii, device, certify_batch, progress, log))
        table = format_table(runs)
        write_atomic(out / SUMMARY_FILE, _summary_text(settings, out, quick, radii, len(train_x), table).encode())
        from ..analysis.certify import plot_certified_accuracy

        plot_certified_accuracy([r.log for r in runs], out / PLOT_FILE,
                                labels=[f"{r.method}, σ {r.sigma:g}" for r in runs])
    return runs


def _one_run(out, settings, method, sigma, tag, train_x, train_y, test_x, test_y, radii, device, certify_batch,
             progress, log) -> Run:
    import torch

    from ..analysis.certify import summarize_certify_log
    from ..analysis.tables import floor_sig
    from ..checkpoint import checkpoint_sha256
    from ..data import DATASETS as INFO
    from ..models import build_model
    from ..runs.certify import certify_to_log
    from ..runs.logfile import read_log
    from ..smooth import Smooth, auto_batch_size
    from ..train import train

    info = INFO[settings.dataset]
    stem = run_stem(method, sigma)
    ckpt, log_path = out / f"{stem}.pt", out / f"{stem}.tsv"
    done, _ = _training_state(ckpt)
    if done > settings.epochs:
        raise ValueError(f"{ckpt} holds {done} epochs, more than --epochs {settings.epochs}")
    if done == settings.epochs:
        log(f"{tag} {method}, sigma {sigma:g}: trained ({done} epochs), not retrained")
    else:
        log(f"{tag} {method}, sigma {sigma:g}: training {settings.epochs} epochs"
            + (f" from epoch {done}" if done else ""))
    # exactly what `wsmooth train` does: the same initial weights, the same call, the same checkpoint
    torch.manual_seed(settings.seed)
    model = build_model(ARCH, num_classes=info.num_classes, input_shape=tuple(train_x.shape[1:]), mean=info.mean,
                        std=info.std).to(device)
    history = train(model, train_x, train_y, noise=settings.noise, sigma=sigma, epochs=settings.epochs,
                    lr=settings.lr, batch_size=settings.batch, seed=settings.seed, momentum=settings.momentum,
                    weight_decay=settings.weight_decay, test_images=test_x, test_labels=test_y, checkpoint_path=ckpt,
                    resume=True, progress=progress, optimizer=settings.optimizer, augment=False,
                    metadata={"dataset": settings.dataset}, method=method,
                    log=(lambda line: None) if done == settings.epochs else log)

    indices = list(range(settings.max_images))
    logged = len(read_log(log_path)[1]) if log_path.exists() else 0
    if logged >= len(indices):
        log(f"{tag} {method}, sigma {sigma:g}: certified ({logged} images), not recertified")
    else:
        log(f"{tag} {method}, sigma {sigma:g}: certifying {len(indices)} images"
            + (f" from image {logged}" if logged else ""))
    smooth = Smooth(model.eval(), info.num_classes, sigma, noise=settings.noise, certificate=settings.certificate,
                    seed=settings.seed)
    images = test_x.to(device)
    identity = {"model_sha256": checkpoint_sha256(ckpt), "dataset": settings.dataset, "split": SPLIT,
                "precision": "fp32"}
    batch = certify_batch or auto_batch_size(images[:1])
    rows = certify_to_log(smooth, images, test_y, indices, log_path, n0=settings.n0, n=settings.samples,
                          alpha=settings.alpha, batch_size=batch, resume=True, progress=progress, identity=identity)
    summary = summarize_certify_log(log_path, radius_grid=radii)
    run = Run(method, sigma, ckpt, log_path, training_seconds=sum(float(r["seconds"]) for r in history),
              certification_seconds=sum(float(r["time"]) for r in rows), summary=summary)
    median = "N/A" if summary["median_radius"] is None else floor_sig(summary["median_radius"])
    log(f"{tag} {method}, sigma {sigma:g}: smoothed accuracy {summary['accuracy']:.2f}% (abstain "
        f"{summary['abstain']:.2f}%), median certified W1 {median}, ACR {floor_sig(summary['acr'])}; training "
        f"{run.training_seconds:.1f} s, certification {run.certification_seconds:.1f} s")
    return run


def _summary_text(settings: Settings, out: Path, quick: bool, radii, train_count: int, table: str) -> str:
    s = settings
    optimizer = f"{s.optimizer} lr {s.lr:g}" + (f" momentum {s.momentum:g}" if s.optimizer == "sgd" else "")
    return (f"# Certified training comparison ({NAME})\n\n"
            f"`{ARCH}` trained on {train_count} {s.dataset} training images ({s.epochs} epochs, {optimizer}, "
            f"weight decay {s.weight_decay:g}, batch {s.batch}, seed {s.seed}) under {s.noise} noise with each "
            f"method at its `wsmooth train` defaults; its smoothed classifier certified on the first "
            f"{s.max_images} held-out images ({s.certificate} certificate, n0 {s.n0}, n {s.samples}, alpha "
            f"{s.alpha:g}, seed {s.seed}).\n\n"
            "Radii: certified Wasserstein-1 radius, L2 ground metric, mass-normalized units. Accuracies in % of the "
            "certified images (abstentions count as wrong; certified accuracy at r: correct with radius >= r); "
            "median: N/A when fewer than half are certified correct; ACR: mean over images of the radius when "
            "correct, 0 otherwise. Times in seconds: training = sum of the epochs' wall times (checkpoint "
            "history), certification = sum of the per-image times of the log.\n\n"
            f"{table}\n\n"
            f"Curves: `{PLOT_FILE}`. Checkpoints and certify logs: `METHOD_sigmaS.pt`, `METHOD_sigmaS.tsv`.\n"
            f"Command: `{command_line(settings, out, quick, radii)}` (add `--resume` to continue it).\n")
