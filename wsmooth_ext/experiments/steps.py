"""The steps an experiment declares: where each model comes from (:class:`Train` here, or a :class:`Given`
checkpoint) and what is run on it (:class:`Certify`, :class:`Predict`, :class:`Attack`: one resumable log each).

Every step is a small frozen dataclass holding its settings and one method the engine calls; a step redoes
nothing that is finished (a checkpoint with all its epochs, a log with all its rows) and continues what is not,
through the resume rules of :func:`wsmooth_ext.training.keywords.train` and :mod:`wsmooth_ext.runs`. Each writes exactly what
the matching ``wsmooth`` command writes with the same settings (``wsmooth train``, ``certify``, ``predict``,
``attack``), so a step's file can be checked against that command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["ATTACK_PARAMS", "Attack", "Certify", "Context", "Data", "Given", "Model", "Predict", "Run", "Train"]


@dataclass
class Data:
    """The images of an experiment: the training split (None when nothing is trained) and the held-out images
    it evaluates (``indices`` into ``test_x``)."""

    dataset: str
    info: Any  # wsmooth_ext.inputs.data.DatasetInfo
    test_x: Any
    test_y: Any
    indices: list
    train: tuple | None = None  # (images, labels)


@dataclass
class Context:
    """What every step of one experiment run shares."""

    out: Path
    settings: Any
    data: Data
    device: Any
    progress: bool
    log: Callable[[str], None]
    unit: str  # what the evaluated images are called in progress lines ("images", "digits")
    arch: str
    split: str
    loaded: dict = field(default_factory=dict)  # Given.name -> its nn.Module, loaded and checked up front


@dataclass
class Model:
    """A model ready to evaluate."""

    name: str
    checkpoint: Path
    given: bool  # taken from the command line, not trained here
    how: str  # one line: how it was trained (or "given: PATH")
    net: Any  # the nn.Module, on the device, in eval mode
    sha256: str
    test_accuracy: float | None = None  # clean accuracy (%) on all held-out images after the last epoch
    training_seconds: float | None = None  # the sum of the epochs' seconds (checkpoint history)


def _eval_ready(net, checkpoint: Path, ctx: Context):
    from ..inputs.checkpoint import checkpoint_sha256

    return net.to(ctx.device).eval(), checkpoint_sha256(checkpoint)


@dataclass(frozen=True)
class Train:
    """A model trained here exactly as ``wsmooth train`` would (the same initial weights, call and checkpoint
    ``NAME.pt``): the experiment's training settings (:data:`~.options.TRAINING`; the sigma warm-up only for a
    model trained under noise) plus ``kwargs`` for :func:`wsmooth_ext.training.keywords.train` (noise, sigma,
    method, adversarial training ...)."""

    name: str  # the checkpoint is NAME.pt
    label: str  # how progress lines name the run
    kwargs: dict = field(default_factory=dict)
    how: str | None = None  # one line on how it is trained, said when training starts and in reports

    def obtain(self, ctx: Context, tag: str) -> Model:
        import torch

        from ..training import keywords as training  # looked up on every call: tests interrupt it
        from ..inputs.checkpoint import trained_epochs
        from ..inputs.models import build_model
        from ..training.options import SIGMA_WARMUP_START
        from .options import SCHEDULE_KEYS

        s, data = ctx.settings, ctx.data
        ckpt = ctx.out / f"{self.name}.pt"
        done = trained_epochs(ckpt)
        if done > s.epochs:
            raise ValueError(f"{ckpt} holds {done} epochs, more than --epochs {s.epochs}")
        if done == s.epochs:
            ctx.log(f"{tag} {self.label}: trained ({done} epochs), not retrained")
        else:
            ctx.log(f"{tag} {self.label}: training {s.epochs} epochs" + (f" ({self.how})" if self.how else "")
                    + (f" from epoch {done}" if done else ""))
        train_x, train_y = data.train
        schedule = {key: getattr(s, key) for key in SCHEDULE_KEYS}
        if self.kwargs.get("noise", "none") == "none":  # the sigma warm-up is for the models trained under noise
            schedule.update(sigma_warmup=0, sigma_warmup_start=SIGMA_WARMUP_START.default)
        net = build_model(ctx.arch, num_classes=data.info.num_classes, input_shape=tuple(train_x.shape[1:]),
                          mean=data.info.mean, std=data.info.std, seed=s.seed).to(ctx.device)
        history = training.train(
            net, train_x, train_y, epochs=s.epochs, lr=s.lr, batch_size=s.batch, seed=s.seed, momentum=s.momentum,
            weight_decay=s.weight_decay, test_images=data.test_x, test_labels=data.test_y, checkpoint_path=ckpt,
            resume=True, progress=ctx.progress, optimizer=s.optimizer, augment=False,
            metadata={"dataset": s.dataset}, log=(lambda line: None) if done == s.epochs else ctx.log, **schedule,
            **self.kwargs)
        accuracy = history[-1].get("test_clean_acc") if history else None
        return Model(self.name, ckpt, False, self.how or "", *_eval_ready(net, ckpt, ctx),
                     test_accuracy=None if accuracy is None else 100.0 * accuracy,
                     training_seconds=sum(float(r["seconds"]) for r in history))


@dataclass(frozen=True)
class Given:
    """A checkpoint the user gives (any format :func:`wsmooth_ext.inputs.checkpoint.load_checkpoint` reads). The engine
    loads and checks it before any work and records its SHA-256, so ``--resume`` refuses a changed file."""

    name: str
    label: str
    path: str
    option: str  # the command-line option that named it, for messages ("--smoothed", "--checkpoints")
    noise: tuple | None = None  # (noise, sigma) it must have been trained with, where it records one

    def load(self, data: Data):
        """(nn.Module, metadata), checked against the experiment's images and noise (one-line errors)."""
        from ..inputs.checkpoint import load_checkpoint

        where = f"{self.option} {self.path}"
        net, meta = load_checkpoint(self.path, map_location="cpu")
        classes, shape = meta.get("num_classes"), meta.get("input_shape")
        if classes is not None and classes != data.info.num_classes:
            raise ValueError(f"{where} has {classes} classes, {data.dataset} has {data.info.num_classes}")
        if shape is not None and list(shape) != list(data.test_x.shape[1:]):
            raise ValueError(f"{where} expects images {list(shape)}, {data.dataset} has {list(data.test_x.shape[1:])}")
        noise, sigma = meta.get("noise"), meta.get("sigma")
        if self.noise is not None and noise == "none":
            raise ValueError(f"{where} was trained without noise: give a model trained with {self.noise[0]} noise")
        if self.noise is not None and noise is not None and (noise, sigma) != self.noise:
            raise ValueError(f"{where} was trained with {noise} noise, sigma {sigma}: this experiment smooths with "
                             f"{self.noise[0]}, sigma {self.noise[1]:g}")
        return net, meta

    def obtain(self, ctx: Context, tag: str) -> Model:
        ctx.log(f"{tag} {self.label}: given {self.path}")
        net = ctx.loaded[self.name]
        return Model(self.name, Path(self.path), True, "given: " + self.path, *_eval_ready(net, Path(self.path), ctx))


@dataclass(frozen=True, kw_only=True)
class _LogStep:
    """An evaluation that writes one resumable log row per held-out image (``log``: its file name)."""

    log: str
    label: str
    verbs = ("evaluated", "evaluating", "reevaluated")

    def run(self, ctx: Context, model: Model, tag: str) -> Path:
        from ..runs.logfile import read_log

        path, indices, unit = ctx.out / self.log, ctx.data.indices, ctx.unit
        logged = len(read_log(path)[1]) if path.exists() else 0
        done, doing, redone = self.verbs
        what = f"{tag} {self.label}"
        if logged >= len(indices):
            ctx.log(f"{what}: {done} ({logged} {unit}), not {redone}")
        else:
            ctx.log(f"{what}: {doing} {len(indices)} {unit}" + (f" from {unit[:-1]} {logged}" if logged else ""))
        identity = {"model_sha256": model.sha256, "dataset": ctx.data.dataset, "split": ctx.split,
                    "precision": "fp32"}
        self.write(ctx, model, path, identity)
        ctx.log(f"{what}: {self.outcome(path, model, ctx)}")
        return path

    def _smooth(self, model: Model, ctx: Context, **kwargs):
        from ..core.smooth import Smooth

        return Smooth(model.net, ctx.data.info.num_classes, self.sigma, noise=self.noise, seed=self.seed, **kwargs)

    def _batch(self, images) -> int:
        from ..core.smooth import auto_batch_size

        return self.batch or auto_batch_size(images[:1])


def _seconds(path: Path) -> float:
    from ..runs.logfile import read_log

    return sum(float(r["time"]) for r in read_log(path)[1])


@dataclass(frozen=True, kw_only=True)
class Certify(_LogStep):
    """``wsmooth certify``: Cohen's certify with the given noise, σ, certificate, n0, n, α and seed."""

    noise: str
    sigma: float
    certificate: str
    n0: int
    n: int
    alpha: float
    seed: int
    batch: int | None = None  # noisy images per forward pass (None: automatic); changes no row
    verbs = ("certified", "certifying", "recertified")

    def write(self, ctx, model, path, identity):
        from ..runs.certify import certify_to_log  # looked up on every call: tests interrupt it

        images = ctx.data.test_x.to(ctx.device)
        certify_to_log(self._smooth(model, ctx, certificate=self.certificate), images, ctx.data.test_y,
                       ctx.data.indices, path, n0=self.n0, n=self.n, alpha=self.alpha, batch_size=self._batch(images),
                       resume=True, progress=ctx.progress, identity=identity)

    def outcome(self, path, model, ctx) -> str:
        from ..analysis.certify import summarize_certify_log
        from ..analysis.tables import floor_sig

        s = summarize_certify_log(path)
        median = "N/A" if s["median_radius"] is None else floor_sig(s["median_radius"])
        trained = "" if model.training_seconds is None else f"training {model.training_seconds:.1f} s, "
        return (f"smoothed accuracy {s['accuracy']:.2f}% (abstain {s['abstain']:.2f}%), median certified W1 "
                f"{median}, ACR {floor_sig(s['acr'])}; {trained}certification {_seconds(path):.1f} s")


@dataclass(frozen=True, kw_only=True)
class Predict(_LogStep):
    """``wsmooth predict``: Cohen's predict with the given noise, σ, n, α and seed."""

    noise: str
    sigma: float
    n: int
    alpha: float
    seed: int
    batch: int | None = None
    verbs = ("predicted", "predicting", "repredicted")

    def write(self, ctx, model, path, identity):
        from ..runs.certify import predict_to_log

        images = ctx.data.test_x.to(ctx.device)
        predict_to_log(self._smooth(model, ctx), images, ctx.data.test_y, ctx.data.indices, path, n=self.n,
                       alpha=self.alpha, batch_size=self._batch(images), resume=True, progress=ctx.progress,
                       identity=identity)

    def outcome(self, path, model, ctx) -> str:
        from ..runs.logfile import read_log

        rows = read_log(path)[1]
        correct = sum(r["correct"] == 1 for r in rows)
        abstained = sum(r["predict"] == -1 for r in rows)
        return (f"smoothed accuracy {100 * correct / len(rows):.2f}% (abstain {100 * abstained / len(rows):.2f}%); "
                f"prediction {_seconds(path):.1f} s")


def _attack_params() -> dict:
    from ..attacks.registry import SCHEDULE, SETTINGS

    return {s.name: s.default for s in SETTINGS if s.name not in SCHEDULE}


# every attack's own parameters, at `wsmooth attack`'s defaults (recorded in each log's columns)
ATTACK_PARAMS = _attack_params()


@dataclass(frozen=True, kw_only=True)
class Attack(_LogStep):
    """``wsmooth attack`` in the paper's growing-ε mode: ε from ``eps0``, ×``eps_factor`` every ``eps_every``
    iterations for the images still standing, ``max_iter`` iterations; the method's own parameters at
    :data:`ATTACK_PARAMS`. With ``smoothing`` (noise, sigma, seed and fields of the attacks' ``SmoothedTarget``,
    n_grad, n_test, alpha, ...: the others at its defaults) the model is attacked as its smoothed classifier; with
    ``adv`` its examples are saved as ``--save-adv`` saves them, resumed with the log."""

    method: str
    eps0: float
    eps_factor: float
    eps_every: int
    max_iter: int
    smoothing: dict | None = None
    batch: int = 20  # images attacked together; changes no result beyond float rounding
    adv: str | None = None  # file of its adversarial examples (`wsmooth attack --save-adv`), in the folder
    verbs = ("attacked", "attacking", "reattacked")

    def saved_adv(self, out: Path) -> Path | None:
        """The file in ``out`` its adversarial examples are saved in, or None where none is declared."""
        return None if self.adv is None else out / self.adv

    def settings(self) -> dict:
        """The settings columns of the log, as ``wsmooth attack`` records them for the same attack."""
        from ..attacks.registry import log_settings

        smooth = {k: self.smoothing[k] for k in ("noise", "sigma", "seed")} if self.smoothing else {}
        return {"mode": "smoothed" if self.smoothing else "plain", **smooth,
                **log_settings(self.method, self._values(), None, self.target())}

    def target(self):
        """The attack's ``SmoothedTarget`` (attacks/target.py) from ``smoothing``, None without it."""
        from dataclasses import fields

        from ..attacks.target import SmoothedTarget

        if not self.smoothing:
            return None
        return SmoothedTarget(**{f.name: self.smoothing[f.name] for f in fields(SmoothedTarget)
                                 if f.name in self.smoothing})

    def build(self, target):
        """The attack on ``target`` (a model or a Smooth), as ``wsmooth attack`` builds it."""
        from ..attacks.registry import get

        return get(self.method).build(target, self._values(), smoothing=self.target())

    def _values(self) -> dict:
        """Every attack setting: the schedule of this step, the rest at ``wsmooth attack``'s defaults."""
        return {**ATTACK_PARAMS, "eps0": self.eps0, "eps_factor": self.eps_factor, "eps_every": self.eps_every,
                "max_iter": self.max_iter}

    def write(self, ctx, model, path, identity):
        from ..runs.attack import attack_to_log  # looked up on every call: tests interrupt it
        from ..core.smooth import Smooth

        s = self.smoothing
        target = (Smooth(model.net, ctx.data.info.num_classes, s["sigma"], noise=s["noise"], seed=s["seed"])
                  if s else model.net)
        attack_to_log(self.build(target), ctx.data.test_x, ctx.data.test_y, ctx.data.indices, path,
                      self.saved_adv(ctx.out), self.settings(), ctx.device, identity=identity, resume=True,
                      attack_batch=self.batch, progress=ctx.progress)

    def outcome(self, path, model, ctx) -> str:
        from ..analysis.attack import summarize_attack_log

        s = summarize_attack_log(path)
        return (f"clean accuracy {s['clean_accuracy']:.2f}%, median radius {s['median_radius']:.4g} (nominal) / "
                f"{s['median_w1']:.4g} (exact W1), {s['time_per_image']:.3g} s/{ctx.unit[:-1]}")


@dataclass(frozen=True)
class Run:
    """One model and the evaluations run on it; ``about``: what the report needs to know of it (method, σ ...)."""

    model: Train | Given
    evaluations: tuple = ()
    about: dict = field(default_factory=dict)
