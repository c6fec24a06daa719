"""Writing output files atomically: a reader never sees half a file, a failed run leaves none."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from nnparity.errors import NnparityError


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Run ``write(temporary path)`` beside ``path``, then move the finished file into place.

    The file gets the permissions a newly created file would (``0o666`` less the umask),
    not the private ones of a temporary file.
    """
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise NnparityError(f"Cannot write in {str(target.parent)!r}: {exc.strerror or exc}.") from exc
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        raise NnparityError(f"Cannot write {str(target)!r}: {exc.strerror or exc}.") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _umask() -> int:
    """The process's umask, read where the system tells it (Linux); elsewhere set and restored,
    which for that moment gives files other threads create mode 0o666."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o077)  # the tightest while it is set, should another thread create a file
    os.umask(umask)
    return umask
