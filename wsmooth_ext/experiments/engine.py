"""The experiment engine: an experiment is declared as data, the engine runs it into one folder.

A declaration (:class:`Experiment`) gives
* its settings as a list of :class:`~.options.Option` (recorded in ``experiment.json``; ``--resume`` refuses a
  change), the values of ``--quick``, and a check across settings where one option's range depends on another;
* ``plan(settings, extras)``: the runs, in the order they execute, each a model (:class:`~.steps.Train` here or
  a :class:`~.steps.Given` checkpoint) with the evaluations run on it (:class:`~.steps.Certify`,
  :class:`~.steps.Predict`, :class:`~.steps.Attack`), and what the report needs to know of it (``about``);
* ``report(result)``: the tables, the text of ``summary.md`` and the plots, from the finished runs' logs.

The engine owns what every experiment needs the same way: the output folder (new or empty; with ``--resume`` one
whose ``experiment.json`` records the same settings and the same given checkpoints), checking everything before
any work, progress lines, skipping finished steps and continuing unfinished ones (each through its own resume
rules), the closing command line of ``summary.md`` that reruns the experiment, and atomic writes of the report.
``extras`` are options that are not settings: they change no checkpoint or log (batch sizes; the report's
columns), so they may change on ``--resume``; only ``view`` (the report's columns) is part of the command line.

An experiment is run by ``wsmooth experiment NAME`` unless it names its own ``command`` (``wsmooth demo``, whose
reruns continue the folder without ``--resume``); settings it declares in ``grows`` may be raised on resume (the
demo's ``--epochs``: each model is trained further and the logs of its older weights are redone).

``jobs`` (``--jobs N``) is a way of running, not a setting (not recorded; ``--resume`` may use another): with 1
the steps run one after the other in this process; with more, the steps that do not wait on one another (every
model; an evaluation once its model is ready) run in up to N spawned worker processes (:mod:`._jobs`), and the
runs are assembled in plan order before the report, so the folder is the same for every N (at the same intra-op
threads per step: a worker gets ``T // N`` of the parent's T, and training on a CPU rounds differently with
another thread count).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from ..infra.options import flag
from . import _checks, _folder, _jobs, options
from .steps import Context, Data, Given, Model, Run, Train

__all__ = ["Experiment", "Finished", "Report", "Result", "SUMMARY_FILE", "check_folder", "command_line",
           "run_experiment"]

SUMMARY_FILE = "summary.md"


@dataclass(frozen=True)
class Report:
    tables: str  # printed when the command ends
    text: str  # summary.md, less its closing command line (the engine adds it)
    plots: dict  # file name -> function(path) that draws it there


@dataclass(frozen=True)
class Experiment:
    name: str  # `wsmooth experiment NAME`; recorded in experiment.json
    options: tuple  # the settings, in the order experiment.json records them
    plan: Callable  # (settings, extras) -> [Run]
    report: Callable  # (Result) -> Report
    quick: dict = dataclasses.field(default_factory=dict)  # --quick: a miniature of the same experiment
    check: Callable | None = None  # settings -> settings, after each option's own check
    view: options.Option | None = None  # the report's columns (radii, grid): an extra in the command line
    tuning: tuple = ()  # extras that change no result (batch sizes)
    models_first: bool = False  # obtain every model before the first evaluation (else run by run)
    unit: str = "images"  # what progress lines call the evaluated images
    arch: str = options.ARCH
    split: str = "test"
    # settings --resume may raise (numbers): "epochs" trains each model further and redoes the logs of its older
    # weights; "max_images" extends every log
    grows: tuple = ()
    command: str | None = None  # the command that runs it, where it is not `wsmooth experiment NAME`
    continues: str = "add `--resume` to continue it"  # how summary.md says to continue it with that command

    @cached_property
    def settings(self) -> type:
        """The frozen dataclass of this experiment's settings."""
        return options.settings_class(f"{self.name.title().replace('-', '')}Settings", self.options)

    @property
    def extras(self) -> tuple:
        return ((self.view,) if self.view else ()) + tuple(self.tuning)

    def defaults(self, quick: bool = False):
        return self.settings(**(self.quick if quick else {}))

    def check_settings(self, settings):
        settings = options.check_settings(self.options, settings, self.settings)
        return self.check(settings) if self.check else settings

    def check_extras(self, extras: dict) -> dict:
        unknown = set(extras) - {o.name for o in self.extras}
        if unknown:
            raise TypeError(f"{self.name}: unknown extras {sorted(unknown)}")
        return {o.name: o.check(extras.get(o.name, o.default)) for o in self.extras}


@dataclass
class Finished:
    """A run once done: its declaration, its model and one log per evaluation (in declared order)."""

    run: Run
    model: Model
    logs: list

    @property
    def about(self) -> dict:
        return self.run.about


@dataclass
class Result:
    experiment: Experiment
    settings: Any
    extras: dict
    out: Path
    quick: bool
    data: Data
    runs: list  # [Finished] in plan order
    report: Report | None = None
    data_dir: str | None = None  # where the mnist files were read: not a setting, but the command needs it

    @property
    def command(self) -> str:
        return command_line(self.experiment, self.settings, self.out, self.quick, self.extras, self.data_dir)

    @property
    def train_count(self) -> int | None:
        return None if self.data.train is None else len(self.data.train[0])


def command_line(experiment: Experiment, settings, out, quick: bool = False, extras: dict | None = None,
                 data_dir=None) -> str:
    """The ``wsmooth`` command that runs (or continues) the experiment and reports the same: the options that
    differ from the defaults (or from --quick's), and ``--data-dir`` where the files were read from one."""
    from ..inputs.data import DATASETS

    base = experiment.check_settings(experiment.defaults(quick))
    prefix = shlex.split(experiment.command) if experiment.command else ["wsmooth", "experiment", experiment.name]
    parts = prefix + ["--out", str(out)] + (["--quick"] if quick else [])
    for o in experiment.options:
        value = getattr(settings, o.name)
        if value != getattr(base, o.name):
            parts += [o.flag, o.spell(value)]
    view = experiment.view
    if view is not None and extras and extras[view.name] != view.check(view.default):
        parts += [view.flag, view.spell(extras[view.name])]
    if data_dir is not None and DATASETS[settings.dataset].from_files:
        parts += ["--data-dir", str(data_dir)]
    return shlex.join(parts)


def _spell(experiment: Experiment) -> Callable[[str, Any], str]:
    spelling = {o.name: o.spell for o in experiment.options}
    return lambda name, value: spelling.get(name, _folder.format_value)(value)


def _flag(experiment: Experiment, name: str) -> str:
    """The command-line option of setting ``name`` in ``experiment``'s command."""
    return next((o.flag for o in experiment.options if o.name == name), flag(name))


def check_folder(experiment: Experiment, out_dir, settings, resume: bool) -> bool:
    """Fail before any work unless ``out_dir`` can hold ``experiment`` with ``settings`` (checked ones): a missing
    or empty folder, or with ``resume`` one whose experiment.json records the same settings (those of
    ``experiment.grows`` may have grown). True when it continues an existing experiment. A setting that an existing
    folder's record predates (added to the experiment later) had its default."""
    return _folder.check_output(Path(out_dir), experiment.name, _checks.as_json(settings), resume,
                                spell=_spell(experiment), predates=_checks.as_json(experiment.defaults()),
                                grows=tuple(experiment.grows), flags={o.name: o.flag for o in experiment.options})


def _check_images_at_once(experiment: Experiment, settings, extras: dict) -> None:
    """ValueError naming the option whose batch would hold more pixel values at once than the commands allow."""
    from ..infra.ranges import check_values_at_once
    from ..inputs.data import DATASETS

    for option in tuple(experiment.options) + experiment.extras:
        value = extras[option.name] if option.name in extras else getattr(settings, option.name)
        if option.images_at_once is not None and value is not None:
            check_values_at_once(option.images_at_once(settings, value), DATASETS[settings.dataset].input_shape,
                                 option.flag)


def load_data(experiment: Experiment, s, data_dir, needs_train: bool) -> Data:
    """The held-out images the experiment evaluates (the first ``max_images``, every ``skip``-th where the
    experiment has that setting) and, when a run trains, the training images (the first ``train_size``)."""
    from ..inputs.data import DATASETS, load_dataset

    train = load_dataset(s.dataset, "train", data_dir) if needs_train else None
    test_x, test_y = load_dataset(s.dataset, experiment.split, data_dir)
    if train is not None and s.train_size is not None:
        if s.train_size > len(train[0]):
            raise ValueError(f"{_flag(experiment, 'train_size')} {s.train_size} exceeds the {len(train[0])} "
                             f"training images of {s.dataset}")
        train = (train[0][:s.train_size], train[1][:s.train_size])
    skip = getattr(s, "skip", 1)
    available = range(0, len(test_x), skip)
    wanted = len(available) if s.max_images is None else s.max_images
    if wanted > len(available):
        every = f" taken every {skip}" if skip > 1 else ""
        raise ValueError(f"{_flag(experiment, 'max_images')} {wanted} exceeds the {len(available)} held-out images "
                         f"of {s.dataset}{every}")
    return Data(s.dataset, DATASETS[s.dataset], test_x, test_y, list(available[:wanted]), train)


def run_experiment(experiment: Experiment, out_dir, settings=None, *, resume: bool = False, quick: bool = False,
                   device=None, data_dir=None, progress: bool = True, log: Callable[[str], None] | None = None,
                   jobs: int | None = 1, **extras) -> Result:
    """Run (or, with ``resume``, continue) ``experiment`` into ``out_dir``; return its result.

    ``settings``: an instance of ``experiment.settings`` (default: the full size). ``extras``: values of
    ``experiment.extras`` by name. ``device``: a torch device (default CPU). ``quick`` only records that the
    settings came from --quick (for messages and the command line). Every setting, every given checkpoint and
    the folder are checked before any work. ``jobs``: steps run at once, each in a worker process (1: one after
    the other in this process; None: one per core); it changes no file but the times they record.
    """
    import torch

    from ..inputs.checkpoint import checkpoint_sha256
    from ..infra.files import write_atomic
    from ..runs.logfile import exclusive_output

    log = log or (lambda line: print(line, flush=True))
    settings = experiment.check_settings(settings if settings is not None else experiment.defaults())
    extras = experiment.check_extras(extras)
    jobs = _jobs.default_jobs() if jobs is None else _jobs.JOBS.check(jobs, "jobs")
    _check_images_at_once(experiment, settings, extras)
    device = torch.device(device if device is not None else "cpu")
    out = Path(out_dir)
    recorded = _checks.as_json(settings)
    check_folder(experiment, out, settings, resume)

    plan = experiment.plan(settings, extras)
    data = load_data(experiment, settings, data_dir, any(isinstance(r.model, Train) for r in plan))
    givens = [r.model for r in plan if isinstance(r.model, Given)]
    loaded = {g.name: g.load(data)[0] for g in givens}
    given_sha = {g.name: checkpoint_sha256(g.path) for g in givens}
    arch = getattr(settings, "arch", experiment.arch)  # an experiment with an arch setting trains that one
    ctx = Context(out, settings, data, device, progress, log, experiment.unit, arch, experiment.split, loaded)

    with exclusive_output(out / _folder.SETTINGS_FILE, what="--out"):
        if check_folder(experiment, out, settings, resume) is False:  # a new folder
            record = {"experiment": experiment.name, "settings": recorded}
            if any(o.path for o in experiment.options):  # it can take checkpoints: record what it was given
                record["given_sha256"] = given_sha
            record.update({"quick": bool(quick),
                           "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "command": command_line(experiment, settings, out, quick, extras, data_dir)})
            write_atomic(out / _folder.SETTINGS_FILE, (json.dumps(record, indent=2) + "\n").encode())
        else:
            record = _folder.read_record(out, experiment.name)
            before = record.get("given_sha256") or {}
            for g in givens:
                if before.get(g.name) != given_sha[g.name]:
                    raise ValueError(f"cannot resume {out}: the checkpoint {g.option} {g.path} changed since the "
                                     "experiment started (its sha256 differs); choose another --out")
            grown = {k: recorded[k] for k in experiment.grows if (record.get("settings") or {}).get(k) != recorded[k]}
            if grown:  # the folder now holds the experiment with these settings raised
                record["settings"] = {**record["settings"], **grown}
                record["command"] = command_line(experiment, settings, out, quick, extras, data_dir)
                write_atomic(out / _folder.SETTINGS_FILE, (json.dumps(record, indent=2) + "\n").encode())
        log(_introduction(experiment, plan, ctx))
        finished = _execute(experiment, plan, ctx, jobs)
        result = Result(experiment, settings, extras, out, bool(quick), data, finished, data_dir=data_dir)
        result.report = experiment.report(result)
        text = result.report.text + f"Command: `{result.command}` ({experiment.continues}).\n"
        write_atomic(out / SUMMARY_FILE, text.encode())
        for name, draw in result.report.plots.items():
            partial = out / f".{name}.partial{Path(name).suffix}"  # the suffix tells matplotlib the format
            draw(partial)
            os.replace(partial, out / name)
    return result


def _introduction(experiment: Experiment, plan: list, ctx: Context) -> str:
    s, data = ctx.settings, ctx.data
    trained = [r.model.label for r in plan if isinstance(r.model, Train)]
    given = [f"{r.model.label} {r.model.path}" for r in plan if isinstance(r.model, Given)]
    parts = [f"{len(plan)} models"]
    if trained:
        parts.append(f"training {len(trained)} {ctx.arch} on {len(data.train[0])} {s.dataset} images "
                     f"({s.epochs} epochs)")
    if given:
        parts.append("given " + ", ".join(given))
    evaluations = sum(len(r.evaluations) for r in plan)
    parts.append(f"{evaluations} evaluations of {len(data.indices)} held-out {experiment.unit}")
    return f"{experiment.name}: {'; '.join(parts)}; {ctx.device}; output in {ctx.out}"


def _execute(experiment: Experiment, plan: list, ctx: Context, jobs: int = 1) -> list:
    """Every run's model and evaluations, in declared order; models first or run by run. With ``jobs`` > 1 (and
    steps that can run at once) in worker processes, each ready step in that order as a worker is free."""
    if _jobs.workers_for(plan, jobs) > 1:
        models, logs = _jobs.execute(plan, ctx, jobs, experiment.models_first)
        return [Finished(run, model, run_logs) for run, model, run_logs in zip(plan, models, logs)]
    if experiment.models_first:
        models = [_obtain(run, ctx, f"[{i}/{len(plan)}]") for i, run in enumerate(plan, start=1)]
        pairs = [(k, evaluation) for k, run in enumerate(plan) for evaluation in run.evaluations]
        logs = [[] for _ in plan]
        for j, (k, evaluation) in enumerate(pairs, start=1):
            logs[k].append(evaluation.run(ctx, models[k], f"[{j}/{len(pairs)}]"))
        return [Finished(run, model, run_logs) for run, model, run_logs in zip(plan, models, logs)]
    finished = []
    for i, run in enumerate(plan, start=1):
        tag = f"[{i}/{len(plan)}]"
        model = _obtain(run, ctx, tag)
        finished.append(Finished(run, model, [evaluation.run(ctx, model, tag) for evaluation in run.evaluations]))
    return finished


def _obtain(run: Run, ctx: Context, tag: str) -> Model:
    """The run's model. One to be trained further than its checkpoint holds (``--epochs`` grown on resume) first
    loses its evaluations' files: they were written with its older weights. (An interrupted training has none.)"""
    from ..inputs.checkpoint import trained_epochs

    if isinstance(run.model, Train) and 0 < trained_epochs(ctx.out / f"{run.model.name}.pt") < ctx.settings.epochs:
        for evaluation in run.evaluations:
            for name in (evaluation.log, getattr(evaluation, "adv", None)):
                if name:
                    (ctx.out / name).unlink(missing_ok=True)
    return run.model.obtain(ctx, tag)
