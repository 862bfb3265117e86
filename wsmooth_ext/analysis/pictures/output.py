"""Writing a Figure: the format from the file's suffix, atomically, never over an existing file unless asked."""

from __future__ import annotations

import errno
import os
from pathlib import Path

DPI = 110  # pictures are laid out in inches for this resolution: about 1,000 pixels wide


def formats() -> tuple[str, ...]:
    """The file suffixes matplotlib can write (png, pdf, svg, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted(FigureCanvasBase.get_supported_filetypes()))


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``path`` as a Path once it is known to be writable as a picture: a suffix matplotlib knows, not a
    folder, and (unless ``overwrite``) not an existing file. Run before any work, so a refusal costs nothing."""
    path = Path(path)
    kind = path.suffix[1:].lower()
    if kind not in formats():
        raise ValueError(f"out must end in a picture format ({', '.join('.' + f for f in formats())}), got {path}")
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a picture file", str(path))
    if path.exists() and not overwrite:
        raise _exists(path)
    return path


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "exists; pass --overwrite (overwrite=True) to replace it", str(path))


def save_figure(fig, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``fig`` to ``path``: into a temporary file in the same folder, then moved into place in one step,
    so a reader sees no file or the complete picture. Without ``overwrite`` an existing file is refused,
    also one that appears while the picture is drawn (hard link, which never replaces)."""
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format=path.suffix[1:].lower(), dpi=DPI)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise _exists(path) from None
            except OSError as exc:  # a file system without hard links: check, then move
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                if path.exists():
                    raise _exists(path) from None
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
