"""Atomic output files: whole or absent, with a new file's permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nnparity import NnparityError
from nnparity.files import atomic_write, atomic_write_text


def test_written_file_has_new_file_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "out.txt", "hello\n")
    finally:
        os.umask(umask)
    assert path.read_text(encoding="utf-8") == "hello\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("umask", [0o077, 0o002])
def test_the_umask_is_read_not_changed(tmp_path: Path, umask: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting the umask to read it would, for that moment, give other threads' new files mode
    0o666: it is read from /proc instead, and os.umask is not called."""
    before = os.umask(umask)
    try:
        calls: list[int] = []
        real = os.umask

        def spy(mask: int) -> int:
            calls.append(mask)
            return real(mask)

        monkeypatch.setattr(os, "umask", spy)
        path = atomic_write_text(tmp_path / "out.txt", "x")
        monkeypatch.undo()
        assert calls == []
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    finally:
        os.umask(before)


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old", encoding="utf-8")

    def fail(tmp: str) -> None:
        Path(tmp).write_text("half", encoding="utf-8")
        raise OSError(28, "No space left on device")

    with pytest.raises(NnparityError, match="No space left on device"):
        atomic_write(path, fail)
    assert path.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unwritable_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NnparityError, match="Cannot write in"):
        atomic_write_text(tmp_path / "missing" / "out.txt", "x")
