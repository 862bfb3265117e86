"""The paper's Fig. 5 (§6.2): accuracy under Wasserstein attack of a standard, an adversarially trained and a
Wasserstein-smoothed ``wong_mnist``, over nominal ε and over the exact W1 of the examples found.

Three models (:data:`MODELS`), each trained here with :func:`wsmooth_ext.train.train` exactly as
``wsmooth train`` would, or taken from a checkpoint the user gives:

* ``standard`` — plain training (``--noise none``);
* ``adversarial`` — Wasserstein adversarial training of the plain model (``--adversarial``; flow-space PGD by
  default, the one that is practical on a CPU: ~0.03 s per step and batch against ~1 s for sinkhorn, the
  attack Wong et al. trained with);
* ``smoothed`` — flow-laplace noise training at σ (the paper's Fig. 5 uses σ = 0.01), attacked as the
  smoothed classifier.

Each model is attacked on the first ``max_images`` held-out digits with each method of ``methods`` through
:func:`wsmooth_ext.runs.attack.attack_to_log` — the log ``wsmooth attack`` writes, with the same columns and
settings — in the paper's growing-ε mode for every model and method alike: ε starts at ``eps0`` and is
multiplied by ``eps_factor`` every ``eps_every`` iterations for the digits still standing, up to ``max_iter``
iterations; an image's nominal radius is the ε in force when it first flips and its exact W1 that of the
example returned then (the first fooling iterate). The smoothed model is attacked as a smoothed classifier
(gradients of the soft smoothed classifier over ``n_grad`` fresh samples; success when the hard smoothed
prediction over ``n_test`` samples, binomial test at ``alpha``, is wrong or abstains). The methods' own
parameters are ``wsmooth attack``'s defaults (:data:`ATTACK_PARAMS`).

Accuracy under attack at r (:func:`wsmooth_ext.analysis.attack.accuracy_under_attack`): the % of the attacked
digits that the model classifies correctly before the attack and that the attack did not break within r. An
image is broken at nominal ε ≤ r when its nominal radius is ≤ r, and broken at W1 ≤ r when the example that
fooled it has exact W1 (L2 ground metric, mass-normalized, by linear program) ≤ r; a digit misclassified (or,
smoothed, abstained on) before the attack is broken at 0; one never fooled is never broken. Nominal ε is in
each method's own units (:data:`NOMINAL_UNITS`), so only the W1 curves compare methods with each other.

Output folder: ``MODEL.pt`` for each trained model, ``MODEL_METHOD.tsv`` attack logs, ``summary.md`` (the
tables and the command that reproduces them), ``fig5.png`` (one row of curves per method: vs nominal ε and
vs exact W1, the three models in each panel) and ``experiment.json`` (the settings). Resumable like the
certified-training experiment: ``resume`` continues unfinished checkpoints and logs of a folder started with
the same settings (and the same given checkpoints), a non-empty folder is refused without it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import _checks
from ._folder import SETTINGS_FILE, check_output, format_value, option, read_record

__all__ = ["ATTACK_METHODS", "ATTACK_PARAMS", "DEFAULT_GRID", "MODELS", "QUICK", "Result", "Settings",
           "check_grid", "check_settings", "command_line", "format_tables", "run_fig5"]

NAME = "fig5"
SUMMARY_FILE = "summary.md"
PLOT_FILE = "fig5.png"
ARCH = "wong_mnist"
DATASETS = ("mnist5k", "digits", "mnist")  # the MNIST-like datasets wong_mnist takes
SPLIT = "test"
NOISE = "flow-laplace"  # the paper's smoothing noise
MODELS = ("standard", "adversarial", "smoothed")
ATTACK_METHODS = ("sinkhorn", "frank-wolfe", "pgd-dual", "flow")
ADV_TRAININGS = ("flow", "sinkhorn", "frank-wolfe")
DEFAULT_GRID = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
# every method's own parameters, at `wsmooth attack`'s defaults (recorded in each log's columns)
ATTACK_PARAMS = {"p": 1.0, "kernel_size": 5, "reg": 1000.0, "step": 0.1, "norm": "linf", "sinkhorn_iter": 400,
                 "sinkhorn_tol": 1e-4, "ground": "l2", "gamma": 0.03, "flow_step": 0.05}
NOMINAL_UNITS = {"sinkhorn": "radius of the entropic ball (cost |offset|_2)",
                 "frank-wolfe": "W1 bound, L2 ground", "pgd-dual": "W1 bound, L2 ground",
                 "flow": "L1 norm of the flow plan (≥ W1, L1 ground)"}


@dataclass(frozen=True)
class Settings:
    """What determines the experiment's checkpoints and logs (the full, paper-like size by default)."""

    methods: tuple = ("sinkhorn", "frank-wolfe")  # attacks; sinkhorn is the paper's (Wong et al.'s)
    dataset: str = "mnist5k"
    train_size: int | None = None  # the first N training digits; None: all (4,000 for mnist5k)
    epochs: int = 20
    optimizer: str = "adam"
    lr: float = 1e-3
    batch: int = 64  # training images per step
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4
    seed: int = 0  # weights, batch order, training noise, smoothing noise of the attacks
    adv_training: str = "flow"  # the attack of adversarial training (wsmooth train --adversarial)
    adv_eps: float = 0.3  # its final radius, in its own units (flow: L1 norm of the flow plan)
    adv_eps_warmup: int = 10  # epochs over which it grows geometrically from adv_eps/10
    adv_attack_steps: int = 10  # attack steps per training batch
    sigma: float = 0.01  # flow-laplace noise of the smoothed model (paper Fig. 5)
    max_images: int = 100  # the first M held-out digits are attacked
    eps0: float = 0.3  # the paper's MNIST schedule: 0.3, x1.1 every 10 iterations, 200 iterations
    eps_factor: float = 1.1
    eps_every: int = 10
    max_iter: int = 200
    n_grad: int = 128  # smoothed model: noise samples per gradient (the paper's 128)
    n_test: int = 10000  # smoothed model: noise samples per success test (the paper's 10,000)
    alpha: float = 0.05  # smoothed model: binomial-test level of the success test
    standard: str | None = None  # checkpoints to attack instead of training the model here
    adversarial: str | None = None
    smoothed: str | None = None


# --quick: a miniature that finishes in a few minutes on a 2-core CPU (OMP_NUM_THREADS=1)
QUICK = {"epochs": 6, "adv_eps_warmup": 3, "max_images": 20, "eps0": 0.1, "eps_factor": 1.5, "eps_every": 5,
         "max_iter": 30, "n_grad": 16, "n_test": 1000}


@dataclass
class Model:
    """One of the three models, ready to attack."""

    name: str
    checkpoint: Path
    given: bool  # taken from the command line, not trained here
    how: str  # one line: how it was trained
    test_accuracy: float | None  # clean accuracy (%) on all held-out digits after the last epoch (trained only)
    training_seconds: float | None


@dataclass
class Result:
    """The finished experiment: its models and one attack log per (model, method)."""

    settings: Settings
    models: list  # [Model] in MODELS order
    logs: dict  # (model, method) -> Path of its attack log
    grid: tuple


def check_settings(settings: Settings) -> Settings:
    """``settings`` validated and normalized (tuples, floats); ValueError naming the option otherwise. Given
    checkpoints are checked for existence here and for content by :func:`run_fig5` (before any work)."""
    from .. import noises
    from ..smooth import check_vote_budget
    from ..train import OPTIMIZERS

    if not isinstance(settings, Settings):
        raise ValueError(f"settings must be a {__name__}.Settings, got {type(settings).__name__}")
    s = settings
    methods = _checks.names("methods", s.methods, ATTACK_METHODS, "attack")
    if s.dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {', '.join(DATASETS)} (images {ARCH} takes), got {s.dataset!r}")
    for name in ("epochs", "batch", "max_images", "eps_every", "n_grad", "n_test", "adv_attack_steps"):
        _checks.integer(name, getattr(s, name))
    _checks.integer("train_size", s.train_size, allow_none=True)
    _checks.integer("max_iter", s.max_iter, low=1)
    _checks.integer("adv_eps_warmup", s.adv_eps_warmup, low=0)
    _checks.choices("optimizer", s.optimizer, OPTIMIZERS)
    _checks.seed(s.seed)
    _checks.choices("adv_training", s.adv_training, ADV_TRAININGS)
    values = {"lr": _checks.number("lr", s.lr), "momentum": _checks.number("momentum", s.momentum, positive=False),
              "weight_decay": _checks.number("weight_decay", s.weight_decay, positive=False),
              "adv_eps": _checks.number("adv_eps", s.adv_eps), "eps0": _checks.number("eps0", s.eps0),
              "eps_factor": _checks.number("eps_factor", s.eps_factor, at_least=1.0),
              "alpha": _checks.number("alpha", s.alpha, below=1.0)}
    sigma = float(noises.check_sigma(s.sigma, "--sigma"))
    check_vote_budget("--n-test", s.n_test)
    for model in MODELS:  # given checkpoints: their training settings are recorded but unused
        path = getattr(s, model)
        if path is None:
            continue
        if not isinstance(path, str) or not path:
            raise ValueError(f"--{model} must be a checkpoint path, got {path!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"--{model} {path}: no such checkpoint file")
    return dataclasses.replace(s, methods=methods, sigma=sigma, **values)


def check_grid(grid) -> tuple:
    """The ε / W1 values of the table columns, sorted; ValueError naming --grid unless each is finite, >= 0."""
    return _checks.radii("grid", grid, "mass-normalized")


def command_line(settings: Settings, out, quick: bool = False, grid=DEFAULT_GRID) -> str:
    """The ``wsmooth`` command that runs (or continues) this experiment and writes the same tables: the options
    that differ from the defaults (or from --quick's)."""
    import shlex

    base = check_settings(dataclasses.replace(Settings(), **QUICK) if quick else Settings())
    parts = ["wsmooth", "experiment", NAME, "--out", str(out)] + (["--quick"] if quick else [])
    for field in dataclasses.fields(Settings):
        value = getattr(settings, field.name)
        if value != getattr(base, field.name):
            parts += [option(field.name), format_value(value)]
    if tuple(grid) != check_grid(DEFAULT_GRID):
        parts += ["--grid", format_value(tuple(grid))]
    return shlex.join(parts)


def log_settings(s: Settings, method: str, smoothed: bool) -> dict:
    """The settings columns of an attack log, as ``wsmooth attack`` records them for the same attack."""
    p = ATTACK_PARAMS
    settings = {"mode": "smoothed" if smoothed else "plain", "noise": NOISE if smoothed else None,
                "sigma": s.sigma if smoothed else None, "n_grad": s.n_grad if smoothed else None,
                "n_test": s.n_test if smoothed else None, "alpha": s.alpha if smoothed else None,
                "seed": s.seed if smoothed else None}
    settings.update({"p": p["p"], "kernel_size": p["kernel_size"], "reg": p["reg"], "eps0": s.eps0,
                     "eps_factor": s.eps_factor, "eps_every": s.eps_every, "max_iter": s.max_iter,
                     "step": p["step"], "norm": p["norm"], "sinkhorn_iter": p["sinkhorn_iter"],
                     "sinkhorn_tol": p["sinkhorn_tol"], "method": method, "eps": None,
                     "ground": p["ground"] if method in ("frank-wolfe", "pgd-dual") else None,
                     "gamma": p["gamma"] if method == "frank-wolfe" else None,
                     "flow_step": p["flow_step"] if method == "flow" else None})
    return settings


def build_attack(method: str, target, s: Settings, batch_size: int = 1000):
    """The growing-ε attack of ``method`` on ``target`` (a model or a Smooth), as ``wsmooth attack`` builds it."""
    from ..attacks import DualProjectionPGD, FlowAttack, FrankWolfeAttack, WassersteinPGD

    p = ATTACK_PARAMS
    common = dict(eps_factor=s.eps_factor, eps_every=s.eps_every, max_iter=s.max_iter, n_grad=s.n_grad,
                  n_test=s.n_test, alpha=s.alpha, batch_size=batch_size)
    if method == "frank-wolfe":
        return FrankWolfeAttack(target, eps=s.eps0, kernel_size=p["kernel_size"], ground=p["ground"],
                                gamma=p["gamma"], **common)
    if method == "pgd-dual":
        return DualProjectionPGD(target, eps=s.eps0, step=p["step"], kernel_size=p["kernel_size"],
                                 ground=p["ground"], **common)
    if method == "flow":
        return FlowAttack(target, eps=s.eps0, step=p["flow_step"], **common)
    return WassersteinPGD(target, p=p["p"], kernel_size=p["kernel_size"], reg=p["reg"], eps0=s.eps0, step=p["step"],
                          norm=p["norm"], sinkhorn_iter=p["sinkhorn_iter"], sinkhorn_tol=p["sinkhorn_tol"],
                          **common)


def log_name(model: str, method: str) -> str:
    return f"{model}_{method}.tsv"


def _training_state(path: Path) -> tuple[int, list]:
    """(epochs done, history) of a checkpoint written by train; (0, []) if there is none yet."""
    from ..checkpoint import load_training_state

    if not path.exists():
        return 0, []
    state = load_training_state(path)[2]
    if state is None:
        raise ValueError(f"{path} holds no training state: it was not written by this experiment")
    return int(state["epoch"]), list(state["history"])


def _load_given(model: str, path: str, s: Settings, info, input_shape):
    """(nn.Module, metadata) of a checkpoint given as --MODEL, checked against the experiment (one-line errors)."""
    from ..checkpoint import load_checkpoint

    net, meta = load_checkpoint(path, map_location="cpu")
    classes = meta.get("num_classes")
    if classes is not None and classes != info.num_classes:
        raise ValueError(f"--{model} {path} has {classes} classes, {s.dataset} has {info.num_classes}")
    shape = meta.get("input_shape")
    if shape is not None and list(shape) != list(input_shape):
        raise ValueError(f"--{model} {path} expects images {list(shape)}, {s.dataset} has {list(input_shape)}")
    noise, sigma = meta.get("noise"), meta.get("sigma")
    if model == "smoothed" and noise not in (None, "none") and (noise, sigma) != (NOISE, s.sigma):
        raise ValueError(f"--smoothed {path} was trained with {noise} noise, sigma {sigma}: this experiment smooths "
                         f"with {NOISE}, sigma {s.sigma:g} (pass --sigma {sigma} if the noise is {NOISE})")
    if model == "smoothed" and noise == "none":
        raise ValueError(f"--smoothed {path} was trained without noise: give a model trained with {NOISE} noise")
    return net, meta


def _describe(model: str, s: Settings) -> str:
    from ..adversarial import UNITS

    if model == "standard":
        return "plain training (no noise)"
    if model == "adversarial":
        return (f"{s.adv_training} adversarial training, eps {s.adv_eps:g} ({UNITS[s.adv_training]}), grown from "
                f"eps/10 over {s.adv_eps_warmup} epochs, {s.adv_attack_steps} attack steps per batch")
    return f"{NOISE} noise training, sigma {s.sigma:g}; attacked as the smoothed classifier"


def run_fig5(out_dir, settings: Settings = Settings(), *, resume: bool = False, grid=DEFAULT_GRID, device=None,
             attack_batch: int = 20, data_dir=None, progress: bool = True, quick: bool = False,
             log: Callable[[str], None] | None = None) -> Result:
    """Run (or, with ``resume``, continue) the Fig. 5 experiment into ``out_dir``; return its result.

    ``grid``: the ε / W1 columns of the tables (not a setting: it changes no log). ``attack_batch``: digits
    attacked together (changes no result beyond float rounding; a resumed run keeps the batches' boundaries).
    ``device``: a torch device (default CPU). ``quick`` only records that the settings came from --quick.
    Every setting, every given checkpoint and the folder are checked before anything is trained.
    """
    import torch

    from ..checkpoint import checkpoint_sha256
    from ..data import DATASETS as INFO
    from ..data import load_dataset
    from ..runs.logfile import exclusive_output, write_atomic

    log = log or (lambda line: print(line, flush=True))
    settings = check_settings(settings)
    grid = check_grid(grid)
    if isinstance(attack_batch, bool) or not isinstance(attack_batch, int) or attack_batch < 1:
        raise ValueError(f"--attack-batch must be an integer >= 1, got {attack_batch!r}")
    device = torch.device(device if device is not None else "cpu")
    out = Path(out_dir)
    s = settings
    check_output(out, NAME, _checks.as_json(s), resume)

    info = INFO[s.dataset]
    train_x, train_y = load_dataset(s.dataset, "train", data_dir)
    test_x, test_y = load_dataset(s.dataset, SPLIT, data_dir)
    if s.train_size is not None:
        if s.train_size > len(train_x):
            raise ValueError(f"--train-size {s.train_size} exceeds the {len(train_x)} training images of {s.dataset}")
        train_x, train_y = train_x[:s.train_size], train_y[:s.train_size]
    if s.max_images > len(test_x):
        raise ValueError(f"--max-images {s.max_images} exceeds the {len(test_x)} held-out images of {s.dataset}")
    given = {m: _load_given(m, getattr(s, m), s, info, tuple(test_x.shape[1:])) for m in MODELS
             if getattr(s, m) is not None}
    given_sha = {m: checkpoint_sha256(getattr(s, m)) for m in given}

    with exclusive_output(out / SETTINGS_FILE, what="--out"):
        if check_output(out, NAME, _checks.as_json(s), resume) is False:  # the folder is new: record what it holds
            record = {"experiment": NAME, "settings": _checks.as_json(s), "given_sha256": given_sha, "quick": bool(quick),
                      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      "command": command_line(s, out, quick, grid)}
            write_atomic(out / SETTINGS_FILE, (json.dumps(record, indent=2) + "\n").encode())
        else:
            before = read_record(out, NAME).get("given_sha256") or {}
            for m, sha in given_sha.items():
                if before.get(m) != sha:
                    raise ValueError(f"cannot resume {out}: the checkpoint --{m} {getattr(s, m)} changed since the "
                                     "experiment started (its sha256 differs); choose another --out")
        trained = [m for m in MODELS if m not in given]
        log(f"{NAME}: {ARCH} on {s.dataset}; "
            + (f"training {', '.join(trained)} on {len(train_x)} digits ({s.epochs} epochs); " if trained else "")
            + (f"given {', '.join(f'{m} {getattr(s, m)}' for m in given)}; " if given else "")
            + f"attacking the first {s.max_images} held-out digits with {', '.join(s.methods)} (eps from "
            f"{s.eps0:g} x{s.eps_factor:g} every {s.eps_every}, {s.max_iter} iterations; smoothed: n_grad "
            f"{s.n_grad}, n_test {s.n_test}, alpha {s.alpha:g}); {device}; output in {out}")
        models, nets = [], {}
        for number, name in enumerate(MODELS, start=1):
            tag = f"[{number}/{len(MODELS)}]"
            if name in given:
                net, _ = given[name]
                models.append(Model(name, Path(getattr(s, name)), True, "given: " + getattr(s, name), None, None))
                log(f"{tag} {name}: given {getattr(s, name)}")
            else:
                net, model = _train_one(out, s, name, tag, info, train_x, train_y, test_x, test_y, device,
                                        progress, log)
                models.append(model)
            nets[name] = net.to(device).eval()
        logs = {}
        pairs = [(m, method) for m in MODELS for method in s.methods]
        for number, (name, method) in enumerate(pairs, start=1):
            model = models[MODELS.index(name)]
            logs[(name, method)] = _attack_one(out, s, model, nets[name], method, f"[{number}/{len(pairs)}]",
                                               info, test_x, test_y, device, attack_batch, progress, log)
        result = Result(s, models, logs, grid)
        tables = format_tables(result)
        write_atomic(out / SUMMARY_FILE, _summary_text(result, out, quick, len(train_x), tables).encode())
        plot_fig5(result, out / PLOT_FILE)
    return result


def _train_one(out, s, name, tag, info, train_x, train_y, test_x, test_y, device, progress, log):
    import torch

    from ..models import build_model
    from ..train import train

    ckpt = out / f"{name}.pt"
    done, _ = _training_state(ckpt)
    if done > s.epochs:
        raise ValueError(f"{ckpt} holds {done} epochs, more than --epochs {s.epochs}")
    if done == s.epochs:
        log(f"{tag} {name}: trained ({done} epochs), not retrained")
    else:
        log(f"{tag} {name}: training {s.epochs} epochs ({_describe(name, s)})" + (f" from epoch {done}" if done else ""))
    # exactly what `wsmooth train` does: the same initial weights, the same call, the same checkpoint
    torch.manual_seed(s.seed)
    net = build_model(ARCH, num_classes=info.num_classes, input_shape=tuple(train_x.shape[1:]), mean=info.mean,
                      std=info.std).to(device)
    kind = {"standard": dict(noise="none"),
            "adversarial": dict(noise="none", adversarial=s.adv_training, adv_eps=s.adv_eps,
                                adv_eps_warmup=s.adv_eps_warmup, adv_attack_steps=s.adv_attack_steps),
            "smoothed": dict(noise=NOISE)}[name]
    history = train(net, train_x, train_y, sigma=s.sigma, epochs=s.epochs, lr=s.lr, batch_size=s.batch, seed=s.seed,
                    momentum=s.momentum, weight_decay=s.weight_decay, test_images=test_x, test_labels=test_y,
                    checkpoint_path=ckpt, resume=True, progress=progress, optimizer=s.optimizer, augment=False,
                    metadata={"dataset": s.dataset}, log=(lambda line: None) if done == s.epochs else log, **kind)
    accuracy = history[-1].get("test_clean_acc") if history else None
    model = Model(name, ckpt, False, _describe(name, s), None if accuracy is None else 100.0 * accuracy,
                  sum(float(r["seconds"]) for r in history))
    return net, model


def _attack_one(out, s, model, net, method, tag, info, test_x, test_y, device, attack_batch, progress, log):
    from ..analysis.attack import summarize_attack_log
    from ..checkpoint import checkpoint_sha256
    from ..runs.attack import attack_to_log
    from ..runs.logfile import read_log
    from ..smooth import Smooth

    path = out / log_name(model.name, method)
    smoothed = model.name == "smoothed"
    target = Smooth(net, info.num_classes, s.sigma, noise=NOISE, seed=s.seed) if smoothed else net
    indices = list(range(s.max_images))
    logged = len(read_log(path)[1]) if path.exists() else 0
    what = f"{tag} {model.name} ({'smoothed classifier' if smoothed else 'base model'}), {method}"
    if logged >= len(indices):
        log(f"{what}: attacked ({logged} digits), not reattacked")
    else:
        log(f"{what}: attacking {len(indices)} digits" + (f" from digit {logged}" if logged else ""))
    identity = {"model_sha256": checkpoint_sha256(model.checkpoint), "dataset": s.dataset, "split": SPLIT,
                "precision": "fp32"}
    attack_to_log(build_attack(method, target, s), test_x, test_y, indices, path, None,
                  log_settings(s, method, smoothed), device, identity=identity, resume=True,
                  attack_batch=attack_batch, progress=progress)
    summary = summarize_attack_log(path)
    log(f"{what}: clean accuracy {summary['clean_accuracy']:.2f}%, median radius {summary['median_radius']:.4g} "
        f"(nominal) / {summary['median_w1']:.4g} (exact W1), {summary['time_per_image']:.3g} s/digit")
    return path


def _distance(value: float) -> str:
    return "inf" if math.isinf(value) else ("—" if math.isnan(value) else f"{value:.4g}")


def format_tables(result: Result) -> str:
    """The two Markdown tables of summary.md: accuracy under attack (%) at each grid value of nominal ε, and of
    exact W1; one row per (model, attack). Medians over all attacked digits (0: wrong before the attack, inf:
    never fooled), 4 significant digits; s/digit: mean attack seconds per digit (the logs' time column)."""
    from ..analysis.attack import accuracy_under_attack, summarize_attack_log
    from ..analysis.tables import format_table as markdown, pct

    grid = result.grid
    parts = []
    for column, title, median in (("radius", "nominal ε", "median ε"), ("w1", "exact W1", "median W1")):
        header = (["model", "attack", "N", "clean acc. %"] + [f"acc. % @ {'ε' if column == 'radius' else 'W1'} "
                                                                f"{g:g}" for g in grid] + [median])
        header += ["s/digit"] if column == "radius" else ["W1/ε"]
        body = []
        for (model, method), path in result.logs.items():
            summary = summarize_attack_log(path)
            rows = summary["rows"]
            acc = accuracy_under_attack(rows, grid, column)
            row = ([model, method, str(len(rows)), pct(summary["clean_accuracy"])] + [pct(a) for a in acc]
                   + [_distance(summary["median_radius" if column == "radius" else "median_w1"])])
            if column == "radius":
                row.append(f"{summary['time_per_image']:.3g}")
            else:
                ratio = summary["w1_over_eps"]
                row.append("—" if ratio is None else f"{ratio:.3g}")
            body.append(row)
        parts.append(f"Accuracy under attack vs {title}:\n\n" + markdown(header, body, markdown=True))
    return "\n\n".join(parts)


def format_models(result: Result) -> str:
    from ..analysis.tables import format_table as markdown, pct

    header = ["model", "checkpoint", "how", "clean test acc. % (base model, all held-out)", "training s"]
    body = [[m.name, f"`{m.checkpoint.name if not m.given else m.checkpoint}`", m.how,
             pct(m.test_accuracy), "—" if m.training_seconds is None else f"{m.training_seconds:.1f}"]
            for m in result.models]
    return markdown(header, body, markdown=True)


def plot_fig5(result: Result, out_png) -> Path:
    """One row per attack: accuracy under attack vs nominal ε (left) and vs exact W1 (right), the three models
    in each panel (step curves: an image counts as broken from its distance on)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..analysis.attack import accuracy_under_attack, read_attack_log

    methods = result.settings.methods
    rows = {key: read_attack_log(path) for key, path in result.logs.items()}
    fig = Figure(figsize=(10, 3.6 * len(methods)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(methods), 2, squeeze=False)
    for i, method in enumerate(methods):
        for ax, column in zip(axes[i], ("radius", "w1")):
            finite = [float(r[column]) for m in MODELS for r in rows[(m, method)]
                      if r.get(column) is not None and math.isfinite(float(r[column]))]
            top = max(finite + [max(result.grid), 1e-3]) * 1.1
            eps = np.linspace(0.0, top, 400)
            for m in MODELS:
                ax.step(eps, accuracy_under_attack(rows[(m, method)], eps, column), where="post", label=m)
            if column == "radius":
                ax.set_xlabel(f"nominal ε: {NOMINAL_UNITS[method]}, mass-normalized", fontsize=8)
            else:
                ax.set_xlabel("exact W1 of the example (L2 ground), mass-normalized", fontsize=8)
            ax.set_ylabel("accuracy under attack (%)")
            ax.set_title(f"{method} attack", fontsize=10)
            ax.set_ylim(0, 100)
            ax.set_xlim(0, top)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    return out_png


def _summary_text(result: Result, out: Path, quick: bool, train_count: int, tables: str) -> str:
    s = result.settings
    optimizer = f"{s.optimizer} lr {s.lr:g}" + (f" momentum {s.momentum:g}" if s.optimizer == "sgd" else "")
    trained = [m.name for m in result.models if not m.given]
    return (f"# Fig. 5: accuracy under Wasserstein attack ({NAME})\n\n"
            f"`{ARCH}` models on {s.dataset}"
            + (f"; trained here on {train_count} training digits ({s.epochs} epochs, {optimizer}, weight decay "
               f"{s.weight_decay:g}, batch {s.batch}, seed {s.seed})" if trained else "")
            + ":\n\n" + format_models(result) + "\n\n"
            f"Attacked: the first {s.max_images} held-out {s.dataset} images, each model with each attack in the "
            f"paper's growing-ε mode (ε from {s.eps0:g}, ×{s.eps_factor:g} every {s.eps_every} iterations for the "
            f"digits still standing, {s.max_iter} iterations; the attacks' own parameters at `wsmooth attack`'s "
            f"defaults). The smoothed model is attacked as the smoothed classifier ({NOISE}, σ {s.sigma:g}): "
            f"gradients of the soft smoothed classifier over {s.n_grad} fresh samples, success when the hard "
            f"smoothed prediction over {s.n_test} samples (binomial test at α {s.alpha:g}) is wrong or abstains.\n\n"
            "Accuracy under attack at r: % of the attacked digits classified correctly before the attack and not "
            "broken within r. A digit is broken at nominal ε ≤ r when ε in force at its first flip is ≤ r, and at "
            "W1 ≤ r when the example that fooled it (the first fooling iterate) has exact W1 ≤ r (L2 ground metric, "
            "linear program, both images mass-normalized); misclassified (smoothed: abstained on) before the attack "
            "= broken at 0; never fooled = never broken. Nominal ε is in each attack's own units (sinkhorn: "
            "entropic-ball radius; frank-wolfe, pgd-dual: W1 bound, L2 ground; flow: L1 norm of the flow plan), so "
            "only the W1 columns compare attacks. Medians over all digits (0 / inf as above); W1/ε: median ratio "
            "over the fooled digits; s/digit: attack seconds per digit.\n\n"
            f"{tables}\n\n"
            f"Curves: `{PLOT_FILE}`. Attack logs: `MODEL_METHOD.tsv` (`wsmooth analyze` reads them); checkpoints "
            f"of the models trained here: `MODEL.pt`.\n"
            f"Command: `{command_line(s, out, quick, result.grid)}` (add `--resume` to continue it).\n")
