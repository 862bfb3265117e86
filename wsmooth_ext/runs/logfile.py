"""The row-per-image TSV logs of ``certify``, ``predict`` and ``attack`` runs: format, reading, resuming, merging.

Certify logs have the header of Cohen et al.'s ``certify.py`` first — ``idx label predict radius correct
time`` — so existing analysis scripts read them, then extra columns (``CERTIFY_COLUMNS``). Predict logs
follow Cohen's ``predict.py`` — ``idx label predict correct time`` — then extras (``PREDICT_COLUMNS``).
``radius`` is the certified W1 radius with the L2 ground metric (mass-normalized units), ``radius_l1`` the
same with the L1 ground metric; ``predict`` is -1 (ABSTAIN) when abstaining; ``time`` is the wall-clock
seconds spent on the image; floats are written with ``repr`` (exact, never rounded up).

Rows are appended one per image and flushed at once. Files are never truncated or overwritten:

* the log must not exist (or be empty) unless ``resume=True``;
* one writer at a time: the log is locked (``fcntl.flock``) while a run appends to it;
* with ``resume=True`` the header and every existing row's settings (n0, n, alpha, certificate, noise,
  sigma, seed) and identity (the model's SHA-256 — every member's, for an ensemble —, the dataset and split) must
  equal this run's, the labels
  must agree, the logged images must be the first images of this run's selection in its order (so the
  finished log equals an uninterrupted run; a longer selection extends a log, another one is refused), and
  images whose ``idx`` is already logged are skipped. A half-written last line (an interruption mid-write) is removed and its image redone;
  per-image RNG keys (the dataset index) make the redone row equal to what the interrupted run would have
  written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from ..infra.files import write_atomic

COHEN_CERTIFY_HEADER = ("idx", "label", "predict", "radius", "correct", "time")
COHEN_PREDICT_HEADER = ("idx", "label", "predict", "correct", "time")
CERTIFY_SETTINGS = ("n0", "n", "alpha", "certificate", "noise", "sigma", "seed")
PREDICT_SETTINGS = ("n", "alpha", "noise", "sigma", "seed")
# what produced a run: the checkpoint's SHA-256 (first 16 hex digits; for an ensemble base classifier its
# checkpoints' joined with '+' in the order given, so another set or order is another classifier), the dataset
# and its split, and the precision the base classifier voted in (a bf16 model is another classifier than its fp32
# original)
IDENTITY_COLUMNS = ("model_sha256", "dataset", "split", "precision")
CERTIFY_COLUMNS = (COHEN_CERTIFY_HEADER + ("radius_l1", "p_lower", "count_top", "count_label") + CERTIFY_SETTINGS
                   + IDENTITY_COLUMNS)
PREDICT_COLUMNS = (COHEN_PREDICT_HEADER + ("count_top", "count_second", "pvalue", "count_label") + PREDICT_SETTINGS
                   + IDENTITY_COLUMNS)


def identity_settings(identity: dict | None) -> dict:
    """The identity columns of a run (empty where unknown, e.g. a model that came from no file)."""
    identity = identity or {}
    unknown = set(identity) - set(IDENTITY_COLUMNS)
    if unknown:
        raise ValueError(f"identity keys must be among {list(IDENTITY_COLUMNS)}, got {sorted(unknown)}")
    return {c: identity.get(c) for c in IDENTITY_COLUMNS}


def format_field(value) -> str:
    """A value as a log field: '' for None, 0/1 for booleans, exact repr for floats."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_field(text: str):
    """A log field back to int, float or str (empty → None)."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_log(path: str | os.PathLike) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a TSV log; a half-written last line is ignored. Values parsed to int/float/str."""
    columns, rows, _ = _read(Path(path))
    return columns, rows


def _read(path: Path) -> tuple[list[str], list[dict], int]:
    """Columns, complete rows, and the byte length of the complete part of the file."""
    return _parse_rows(path, path.read_bytes())


class LogBusyError(BlockingIOError):
    """Another process holds the log open for writing (its advisory lock)."""


def _parse_rows(path: Path, data: bytes) -> tuple[list[str], list[dict], int]:
    complete = data[:data.rfind(b"\n") + 1]  # drop a half-written last line
    try:
        lines = complete.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = complete[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line} is not UTF-8 text (byte {exc.start}): not a log written by "
                         "wsmooth, or a damaged one") from None
    if not lines:
        return [], [], len(complete)
    columns = lines[0].split("\t")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise ValueError(f"{path}: line {number} has {len(fields)} fields, the header has {len(columns)}; "
                             "the log is corrupt")
        rows.append({c: parse_field(f) for c, f in zip(columns, fields)})
    return columns, rows, len(complete)


def _check_resumable(path: Path, found: list[str], existing: list[dict], columns: tuple, settings: dict,
                     labels: dict) -> None:
    if found != list(columns):
        raise ValueError(f"cannot resume {path}: its header {found} differs from this run's {list(columns)}")
    # The log must hold the first images of this run's selection, in order, so that the finished log equals an
    # uninterrupted run of that selection (a longer selection extends it; another one would mix selections).
    order, logged = list(labels), [row["idx"] for row in existing]
    if logged != order[:len(logged)]:
        k = next((k for k, (a, b) in enumerate(zip(logged, order)) if a != b), len(order))
        there = f"image {order[k]}" if k < len(order) else f"no image (this run selects {len(order)})"
        raise ValueError(f"cannot resume {path}: its row {k + 1} is image {logged[k]}, where this run's image "
                         f"selection has {there}; a resumed log must hold the first images of the selection, in "
                         "order: resume with the selection that wrote it (a larger maximum may extend it)")
    for row in existing:
        changed = changed_setting(path, row, settings)
        if changed:
            raise ValueError(changed)
        if row["idx"] in labels and row["label"] != labels[row["idx"]]:
            raise ValueError(f"cannot resume {path}: image {row['idx']} is logged with label "
                             f"{row['label']} but the dataset has label {labels[row['idx']]}")


def changed_setting(path, row: dict, settings: dict) -> str | None:
    """The refusal of a resume whose ``settings`` differ from those logged in ``row`` (the first that differs,
    among the settings the row has), or None."""
    for key, value in settings.items():
        if key in row and row[key] != parse_field(format_field(value)):
            return f"cannot resume {path}: it was written with {key}={row[key]!r}, this run has {key}={value!r}"
    return None


def check_new_output(path: str | os.PathLike, resume: bool, what: str = "--out") -> Path:
    """Fail before any work if ``path`` cannot be a new (or, with ``resume``, a continued) output file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory")
    if path.exists() and not path.is_file():
        raise ValueError(f"{what} {path} is not a regular file")
    if path.exists() and path.stat().st_size > 0 and not resume:
        raise FileExistsError(f"{what} {path} already exists; pass --resume to continue it, or remove it to "
                              "start over")
    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists():  # the folder will be created: check the nearest existing ancestor
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: cannot write in {probe}")
    return path


def open_log(path: Path, columns: tuple, settings: dict, labels: dict, resume: bool):
    """Lock, validate and open a log for appending. Returns (file, existing rows).

    Shared by every row-per-image log (certify, predict, attack): the rules of the module docstring.
    ``labels``: {idx: label} of this run's images in the run's order (the order a resumed log must follow). The
    returned file holds an exclusive advisory lock (``fcntl.flock``) until it is closed, so a second writer
    of the same log fails at once with :class:`LogBusyError` instead of interleaving rows. ``settings`` are
    the columns that identify the run (its settings and what produced it: model hash, dataset, split); each
    existing row must carry the same values.
    """
    path = Path(path)
    header = "\t".join(columns) + "\n"
    check_new_output(path, resume, "log")
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    # unbuffered: rows reach the file as append_rows hands them over, so a failed write can be cut back
    handle = open(path, "a+b", buffering=0)  # creates, never truncates; every write goes to the end
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LogBusyError(errno.EAGAIN, f"{path} is being written by another process (wait for it to finish, "
                               "or choose another output)") from None
        handle.seek(0)
        data = handle.read()  # under the lock: what the last writer left
        existing: list[dict] = []
        keep_bytes = 0
        if data and not resume:
            raise FileExistsError(f"{path} already exists; pass resume=True (--resume) to continue it, or remove "
                                  "it to start over")
        if data and not (b"\n" not in data and header.encode().startswith(data)):  # not just a partial header
            found, existing, keep_bytes = _parse_rows(path, data)
            _check_resumable(path, found, existing, columns, settings, labels)
        handle.truncate(keep_bytes)  # removes only a half-written last line (or header)
        if keep_bytes == 0:
            append_rows(handle, header)
    except BaseException:
        handle.close()
        if created:
            path.unlink(missing_ok=True)
        raise
    return handle, existing


@contextlib.contextmanager
def log_for_run(path: str | os.PathLike, columns: tuple, settings: dict, labels: dict, resume: bool,
                companions: tuple = ()):
    """:func:`open_log` for the length of a run: yields (file, existing rows) and closes the file after.

    A run that fails before it has logged a row leaves no debris that would block its rerun: a log it created
    is removed, an empty log the user had is emptied again, and each of ``companions`` (files the run writes
    beside its log, e.g. saved tensors) that did not exist when the run began is removed. A log with rows (a
    resumable partial run, or what a resumed log held before) is kept as it is, and so are its companions.
    """
    path = Path(path)
    created = not path.exists()
    new_companions = [Path(c) for c in companions if not Path(c).exists()]
    handle, existing = open_log(path, columns, settings, labels, resume)
    header_bytes = len(("\t".join(columns) + "\n").encode())
    try:
        yield handle, existing
    except BaseException:
        if not existing and os.fstat(handle.fileno()).st_size <= header_bytes:  # still locked: nobody else wrote
            if created:
                path.unlink(missing_ok=True)
            else:
                os.ftruncate(handle.fileno(), 0)
            for companion in new_companions:
                companion.unlink(missing_ok=True)
        raise
    finally:
        handle.close()


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike, what: str = "--out"):
    """Hold an advisory lock on ``path`` for a run that replaces it as a whole (a checkpoint): a second run
    on the same output fails at once with :class:`LogBusyError`. The lock lives on a hidden sidecar file
    (``.NAME.lock``), because the output itself is replaced atomically and a lock on it would go with it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    while True:
        handle = open(lock, "a+b")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise LogBusyError(errno.EAGAIN, f"{what} {path} is being written by another process (wait for it "
                               "to finish, or choose another output)") from None
        try:  # the previous holder may have removed the file between our open and our lock: lock the new one
            if os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        try:
            yield path
        finally:
            lock.unlink(missing_ok=True)  # still ours: we hold the lock until the handle closes below
    finally:
        handle.close()


def append_rows(handle, text: str) -> None:
    """Append complete rows; on an I/O error (a full disk) cut the file back to its last full row and raise."""
    data = memoryview(text.encode())
    end = os.lseek(handle.fileno(), 0, os.SEEK_END)
    try:
        while data:
            written = handle.write(data)  # unbuffered: may write a part, and raises once nothing fits
            data = data[written:]
    except OSError as exc:
        try:
            os.ftruncate(handle.fileno(), end)
        except OSError:
            pass  # the half row stays; a --resume drops it
        raise OSError(exc.errno, f"cannot write log: {exc.strerror or exc}", str(handle.name)) from None


def merge_part_logs(out_path: str | os.PathLike, parts: list[Path], order: list[int]) -> int:
    """Write OUT = one header + the parts' rows in the order of ``order`` (the single-process image order).

    Every part must have the same header and together they must hold one row for each index of ``order``
    (a missing or duplicated image is an error, and OUT is then left as it was). OUT is replaced atomically.
    Returns the number of rows written.
    """
    columns = None
    rows: dict[int, dict] = {}
    for part in parts:
        found, part_rows, _ = _read(Path(part))
        if not found:
            raise ValueError(f"{part} is empty")
        if columns is None:
            columns = found
        elif found != columns:
            raise ValueError(f"{part} has a different header from {parts[0]}")
        for row in part_rows:
            if row["idx"] in rows:
                raise ValueError(f"image {row['idx']} appears in more than one part log")
            rows[row["idx"]] = row
    missing = [i for i in order if i not in rows]
    if missing:
        raise ValueError(f"{len(missing)} images have no row in the part logs (first: {missing[:3]}); "
                         "rerun with --resume to finish them")
    lines = ["\t".join(columns) + "\n"]
    lines += ["\t".join(format_field(rows[i][c]) for c in columns) + "\n" for i in order]
    write_atomic(Path(out_path), "".join(lines).encode())
    return len(order)
