"""Checks of the rows of a log before anything is computed from them: a damaged or edited log is refused with
its file and line named, never summarized into numbers that look right.

A row must hold a non-negative integer ``idx`` seen once, an integer class ``label`` >= 0, a ``predict`` that is
a class or ABSTAIN, numbers (no NaN) in [0, MAX_RADIUS] for radii (``inf`` only where the column allows it:
an attack distance of an image never fooled), 0/1 flags consistent with the predictions, and the same
settings on every row (one run per log).
"""

from __future__ import annotations

import math

from ..infra.ranges import MAX_RADIUS
from ..core.smooth import ABSTAIN

# columns whose value describes the run, not the image: one value per log
RUN_COLUMNS = ("n0", "n", "alpha", "certificate", "noise", "sigma", "seed", "model_sha256", "dataset", "split",
               "precision", "mode", "n_grad", "n_test", "p", "kernel_size", "reg", "eps0", "eps_factor",
               "eps_every", "max_iter", "step", "norm", "sinkhorn_iter", "sinkhorn_tol", "method", "eps", "ground",
               "gamma", "flow_step", "success_test", "adv_saved", "projection")


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _distance(value, allow_inf: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return False
    return 0 <= value <= MAX_RADIUS or (allow_inf and value == math.inf)


def check_log_rows(path, columns: list[str], rows: list[dict], *, distances=(), infinite_ok=()) -> None:
    """ValueError naming ``path`` and the line of the first damaged row (see the module docstring).

    ``distances``: radius-like columns, each in [0, MAX_RADIUS] (or ``inf`` for those in ``infinite_ok``);
    empty fields are allowed only where the column is optional (``w1`` of an image the attack did not reach).
    """
    seen: dict[int, int] = {}
    first: dict[str, object] = {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        def bad(what: str):
            return ValueError(f"{path}: line {number}: {what}; the log is damaged or was edited, refusing to "
                              "summarize it")

        idx, label, predict = row.get("idx"), row.get("label"), row.get("predict")
        if not _integer(idx) or idx < 0:
            raise bad(f"idx {idx!r} is not an image index (an integer >= 0)")
        if idx in seen:
            raise bad(f"image {idx} is logged twice (first on line {seen[idx]})")
        seen[idx] = number
        if not _integer(label) or label < 0:
            raise bad(f"label {label!r} is not a class (an integer >= 0)")
        for column in ("predict", "adv_predict"):
            value = row.get(column)
            if column in columns and (not _integer(value) or value < ABSTAIN):
                raise bad(f"{column} {value!r} is neither a class nor {ABSTAIN} (abstain)")
        if "correct" in columns and row.get("correct") != int(predict == label):
            raise bad(f"correct {row.get('correct')!r} disagrees with predict {predict} and label {label}")
        if "success" in columns and row.get("success") not in (0, 1):
            raise bad(f"success {row.get('success')!r} is not 0 or 1")
        for column in distances:
            if column in columns and row.get(column) is not None \
                    and not _distance(row[column], column in infinite_ok):
                limit = f"[0, {MAX_RADIUS:g}]" + (" or inf" if column in infinite_ok else "")
                raise bad(f"{column} {row[column]!r} is not a distance in {limit}")
        for column in RUN_COLUMNS:
            if column not in columns:
                continue
            value = row.get(column)
            if isinstance(value, float) and math.isnan(value):
                raise bad(f"{column} is NaN")
            if column not in first:
                first[column] = value
            elif value != first[column]:
                raise bad(f"{column} {value!r} differs from {first[column]!r} on line 2: the log mixes runs with "
                          "different settings")
