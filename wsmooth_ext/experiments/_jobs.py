"""``--jobs N``: the engine's independent steps run in worker processes.

A step is a model to obtain (train or load) or an evaluation of a ready model. Each is a pure function of the
settings, the images, the device and its seeds, and writes only its own files (a checkpoint, a log, saved
examples), so steps that do not depend on one another can run at once: every model's step at any time, an
evaluation once its model is obtained (and once the log it reads, ``source``, is written). The parent hands the
ready step that comes first in the order ``--jobs 1`` runs them to the next idle worker, prints the workers' lines
(each names its step; workers draw no progress bars) and assembles the runs in plan order; the report is made
from the files afterwards, exactly as with ``--jobs 1``.

Workers are spawned (not forked: torch's threads and CUDA state do not survive a fork), get the settings, the
images and the given models once, as bytes, and each runs on ``max(1, T // N)`` intra-op threads, T being the
threads of the parent (``OMP_NUM_THREADS`` or the cores). A worker's error stops the run: the others are told to
stop (SIGTERM, which unwinds them so that no temporary file is left) and the parent raises the worker's error;
a worker that dies without a word is a :class:`WorkerFailedError`. Interrupted steps continue with ``--resume``
(any ``--jobs``), each through its own resume rules.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
from dataclasses import dataclass

from ..infra.distributed import PeerFailedError
from ..infra.options import FREE, Option, integers

MAX_JOBS = 64


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


JOBS = Option("jobs", None, "steps run at once (trainings; evaluations whose model is ready), each in a worker "
              "process with its share of the threads; results do not depend on it (the checkpoints, logs and summary "
              "of --jobs 1 at equal threads per step); not recorded: --resume may use another N",
              integers(1, MAX_JOBS),
              optional=True, none=f"the number of cores, {min(cores(), MAX_JOBS)} here", resume=FREE,
              metavar="N")


def default_jobs() -> int:
    return min(cores(), MAX_JOBS)


class WorkerFailedError(PeerFailedError):
    """A worker process of ``--jobs`` died without reporting an error (killed, out of memory)."""


@dataclass(frozen=True)
class Task:
    run: int  # index of the run in the plan
    step: int | None  # index of its evaluation; None: obtain its model
    tag: str  # "[3/8]", as --jobs 1 names it
    label: str
    needs: int | None = None  # an earlier evaluation of the same run whose log this one reads


def tasks(plan: list, models_first: bool) -> list[Task]:
    """Every step, in the order ``--jobs 1`` runs them, tagged as it tags them."""
    obtain = [Task(k, None, f"[{k + 1}/{len(plan)}]", run.model.label) for k, run in enumerate(plan)]
    pairs = [(k, j) for k, run in enumerate(plan) for j in range(len(run.evaluations))]

    def evaluation(k, j, tag):
        steps = plan[k].evaluations
        source = getattr(steps[j], "source", None)  # e.g. the demo's Rederive reads an earlier log of its run
        needs = next((i for i in range(j) if source is not None and steps[i].log == source), None)
        return Task(k, j, tag, steps[j].label, needs)

    if models_first:
        return obtain + [evaluation(k, j, f"[{i}/{len(pairs)}]") for i, (k, j) in enumerate(pairs, start=1)]
    return [t for k in range(len(plan)) for t in [obtain[k]] + [evaluation(k, j, obtain[k].tag)
                                                                  for j in range(len(plan[k].evaluations))]]


def workers_for(plan: list, jobs: int) -> int:
    """How many workers can be busy at once: every model at the start, every evaluation once they are ready."""
    return max(1, min(jobs, max(len(plan), sum(len(run.evaluations) for run in plan))))


# ---- what crosses the process boundary: bytes made by the plain pickler (no shared-memory tensors) --------------

def _settings_bytes(settings) -> tuple:
    """(class name, field values): an experiment's settings class is made at run time and cannot be pickled."""
    return type(settings).__name__, {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def _settings_from(name: str, values: dict):
    from typing import Any

    cls = dataclasses.make_dataclass(name, [(k, Any) for k in values], frozen=True)
    return cls(**values)


def _model_bytes(model) -> bytes:
    import copy

    return pickle.dumps(dataclasses.replace(model, net=copy.deepcopy(model.net).cpu()), protocol=5)


def _model_from(data: bytes, device):
    model = pickle.loads(data)
    return dataclasses.replace(model, net=model.net.to(device).eval())


def _exception_bytes(exc: BaseException) -> bytes:
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its type and message
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


class _RemoteTraceback(Exception):
    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self):
        return self.text


# ---- the worker --------------------------------------------------------------------------------------------------

def _stop(signum, frame):
    raise SystemExit(128 + signum)  # unwinds: files being written are removed by their own cleanup


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this worker when the parent dies (a killed parent leaves no worker running on)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        raise SystemExit(0)


def worker(conn, threads: int, parent: int, retain: bool = False) -> None:
    """A worker's life: the shared inputs once, then steps until told to stop (None) or terminated. ``retain``:
    keep freed memory as the parent does (:mod:`wsmooth_ext.infra.allocator`; the ``wsmooth`` command's choice)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops the workers
    signal.signal(signal.SIGTERM, _stop)
    _die_with_parent(parent)
    if retain:
        from ..infra.allocator import retain_freed_memory

        retain_freed_memory()
    import torch

    from .engine import _obtain
    from .steps import Context

    torch.set_num_threads(threads)
    plan, fields, settings = pickle.loads(conn.recv_bytes())
    base = Context(**fields, settings=_settings_from(*settings), log=None)
    while (message := conn.recv()) is not None:
        task, model = message

        def log(line: str, task=task) -> None:
            named = line.startswith(task.tag + " ")
            conn.send(("log", line if named else f"{task.tag} {task.label}: {line}"))

        ctx = dataclasses.replace(base, log=log)
        try:
            if task.step is None:
                reply = _model_bytes(_obtain(plan[task.run], ctx, task.tag))
            else:
                reply = plan[task.run].evaluations[task.step].run(ctx, _model_from(model, ctx.device), task.tag)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the run with it
            import traceback

            conn.send(("failed", _exception_bytes(exc), traceback.format_exc()))
        else:
            conn.send(("done", reply))


# ---- the parent --------------------------------------------------------------------------------------------------

def execute(plan: list, ctx, jobs: int, models_first: bool) -> tuple[list, list]:
    """(models, logs per run) of ``plan``, run by ``min(jobs, ...)`` workers (at least two)."""
    import multiprocessing
    from multiprocessing.connection import wait

    import torch

    from ..infra.allocator import retaining

    order = tasks(plan, models_first)
    count = workers_for(plan, jobs)
    threads = max(1, torch.get_num_threads() // count)
    ctx.log(f"--jobs {jobs}: {count} worker processes, {threads} thread{'s' if threads > 1 else ''} each; "
            "their steps' lines as they come")
    fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx) if f.name not in ("settings", "log")}
    shared = pickle.dumps((plan, {**fields, "progress": False}, _settings_bytes(ctx.settings)), protocol=5)
    spawn = multiprocessing.get_context("spawn")
    procs, conns = [], []
    busy: dict[int, Task] = {}
    completed = False
    try:
        for i in range(count):
            mine, theirs = spawn.Pipe()
            proc = spawn.Process(target=worker, args=(theirs, threads, os.getpid(), retaining()),
                                 name=f"wsmooth-job-{i + 1}")
            proc.start()
            theirs.close()
            procs.append(proc)
            conns.append(mine)
        for conn in conns:
            conn.send_bytes(shared)
        pending, models, logs, done = list(order), {}, {}, 0

        def ready(t: Task) -> bool:
            return t.step is None or (t.run in models and (t.needs is None or (t.run, t.needs) in logs))

        while pending or busy:
            for w in range(count):
                if w in busy:
                    continue
                task = next((t for t in pending if ready(t)), None)
                if task is None:
                    break
                pending.remove(task)
                busy[w] = task
                conns[w].send((task, None if task.step is None else models[task.run]))
            waiting = {conns[w]: w for w in range(count)}
            waiting.update({procs[w].sentinel: w for w in range(count)})
            for handle in wait(list(waiting)):
                w = waiting[handle]
                message = _receive(conns[w])
                if message is None:  # the worker is gone without a word
                    if handle is conns[w] or not conns[w].poll():
                        _died(procs[w], busy.get(w))
                    continue
                kind, *rest = message
                if kind == "log":
                    ctx.log(rest[0])
                    continue
                task = busy.pop(w)
                if kind == "failed":
                    exc = pickle.loads(rest[0])
                    raise exc from _RemoteTraceback(f"in the worker of {task.tag} {task.label}:\n{rest[1]}")
                done += 1
                if task.step is None:
                    models[task.run] = rest[0]
                    what = "model ready"
                else:
                    logs[(task.run, task.step)] = rest[0]
                    what = f"{rest[0].name} written"
                ctx.log(f"{task.tag} {task.label}: {what} ({done}/{len(order)} steps done)")
        completed = True
    finally:
        _close(procs, conns, completed)
    finished = [_model_from(models[k], ctx.device) for k in range(len(plan))]
    return finished, [[logs[(k, j)] for j in range(len(run.evaluations))] for k, run in enumerate(plan)]


def _receive(conn):
    """The worker's next message, or None where its end is closed (or nothing is there: only its sentinel woke)."""
    try:
        return conn.recv() if conn.poll() else None
    except (EOFError, OSError):
        return None


def _died(proc, task: Task | None) -> None:
    proc.join(timeout=5)
    code = proc.exitcode
    how = (f"was killed by signal {-code}{' (out of memory?)' if -code == signal.SIGKILL else ''}"
           if code is not None and code < 0 else f"exited with status {code} (its error is above)"
           if code is not None else "stopped answering")
    step = f"{task.tag} {task.label}: its" if task else "a"
    raise WorkerFailedError(f"{step} worker process {how}; the other steps were stopped, --resume continues them")


def _close(procs, conns, completed: bool) -> None:
    """Stop every worker: told to when all is done, else terminated (SIGTERM unwinds it); killed if it hangs."""
    for proc, conn in zip(procs, conns):
        if not proc.is_alive():
            continue
        if completed:
            try:
                conn.send(None)
            except OSError:
                proc.terminate()
        else:
            proc.terminate()
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    for conn in conns:
        conn.close()
