"""The output folder of an experiment: new and empty, or (with resume) one the same experiment started with the
same settings, recorded in its ``experiment.json``.

Generic over the experiment (its name and its settings as a JSON object); every experiment uses it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from ..infra.options import flag, format_value

SETTINGS_FILE = "experiment.json"


def is_empty(folder: Path) -> bool:
    # our own lock file may be left behind by a killed run; it holds nothing
    return all(p.name == f".{SETTINGS_FILE}.lock" for p in folder.iterdir())


def read_record(out: Path, name: str) -> dict:
    """The experiment.json of ``out``; ValueError (one line) unless it records experiment ``name``."""
    recorded = out / SETTINGS_FILE
    if not recorded.is_file():
        raise ValueError(f"--out {out} holds no {SETTINGS_FILE}: it is not a {name} experiment folder (choose "
                         "another folder)")
    try:
        data = json.loads(recorded.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{recorded} is corrupt ({exc}); choose another --out") from None
    if data.get("experiment") != name:
        raise ValueError(f"--out {out} holds a {data.get('experiment')!r} experiment, not {name}")
    return data


def check_output(out: Path, name: str, settings: dict, resume: bool,
                 spell: Callable[[str, Any], str] | None = None, predates: dict | None = None,
                 grows: tuple = (), flags: dict | None = None) -> bool:
    """Fail before any work unless ``out`` can hold experiment ``name`` with ``settings`` (a JSON object).
    True when it continues an existing experiment.

    A new experiment needs a missing or empty folder; ``resume`` continues a folder whose experiment.json
    records the same settings (and starts a new experiment in a missing or empty one). ``spell(name, value)``
    writes a setting's value in messages as its option takes it (default :func:`format_value`). ``predates``:
    the value of a setting that the recorded experiment.json lacks (one added to the experiment since: its
    default, which is what the folder's runs used). ``grows``: settings that ``resume`` may raise (numbers; the
    demo's epochs). ``flags``: a setting's option where it is not ``--name`` (the demo's ``--num-certify``)."""
    from ..runs.logfile import check_new_output

    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    if not out.exists() or is_empty(out):
        check_new_output(out / SETTINGS_FILE, False)  # can the folder be created and written?
        return False
    if not resume:
        raise FileExistsError(f"--out {out} already exists and is not empty; pass --resume to continue the "
                              "experiment in it, or choose another folder")
    data = read_record(out, name)
    before = {**(predates or {}), **(data.get("settings") or {})}
    spell = spell or (lambda key, value: format_value(value))
    flags = flags or {}

    def grown(key, value) -> bool:
        was = before.get(key)
        return key in grows and isinstance(was, (int, float)) and isinstance(value, (int, float)) and value > was

    changed = [f"{flags.get(k, flag(k))} {spell(k, before.get(k))} (now {spell(k, v)})"
               for k, v in settings.items() if before.get(k) != v and not grown(k, v)]
    if changed:
        quick = " (it was started with --quick)" if data.get("quick") else ""
        raise ValueError(f"cannot resume {out}: it was started with {', '.join(changed)}{quick}; rerun with its "
                         "settings or choose another --out")
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: cannot write in it")
    return True
