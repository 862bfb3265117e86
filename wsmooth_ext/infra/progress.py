"""One place that decides how progress bars look: tqdm on stderr, off when asked or when not wanted."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable=None, *, total: int | None = None, desc: str = "", enabled: bool = True,
                 unit: str = "it", leave: bool = False):
    """A tqdm bar on stderr (so stdout stays clean for tables and logs); a silent pass-through if disabled."""
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, file=sys.stderr, unit=unit,
                leave=leave, dynamic_ncols=True, mininterval=0.5)
