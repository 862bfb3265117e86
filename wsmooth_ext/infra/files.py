"""Whole files written at once: a reader sees the old file or the complete new one, never a part."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data, what: str | None = None) -> None:
    """Replace ``path`` with the bytes ``data`` all at once; on any error nothing is left but the old file.

    The bytes go to a temporary in the same folder (named per process, so concurrent writers never share one),
    are flushed to disk, and the temporary is moved over ``path`` (``os.replace``). A failed write (a full disk, a
    file size limit, a read-only folder) is an OSError naming ``path`` and the real reason
    ('cannot write WHAT: No space left on device').
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        label = f"cannot write {what}" if what else "cannot write"
        raise OSError(exc.errno, f"{label}: {exc.strerror or exc}", str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
