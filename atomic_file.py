"""Replace a file atomically, and only if it is a regular file (or does not exist yet).

Every file this project writes for others to read (catalog.json, the cached ONNX export) goes
through `atomic_path`: the content is written to a temporary file in the target's own folder,
flushed to disk, and renamed over the target with os.replace. A reader, a concurrent writer or a
crash therefore sees either the old file or the new one, never half of one.

The target is checked first: a symbolic link, a device, a directory, a FIFO or a socket is
refused rather than replaced. A rename over a symlink would silently swap the link for a file,
and over a device node (``--output /dev/null`` run as root) would remove the device.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

FILE_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


class NotARegularFileError(OSError):
    """The target exists and is not a regular file, so it is left alone. An OSError, so that
    callers reporting "cannot write <path>" report this too, with this message."""


def refuse_unless_regular(target: Path) -> None:
    """Raise NotARegularFileError if `target` exists and is anything but a regular file.
    lstat, not stat: a symlink is judged as itself, never as what it points to."""
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    kind = next((name for is_kind, name in FILE_KINDS if is_kind(mode)), "not a regular file")
    raise NotARegularFileError(f"{target} is {kind}; only a regular file is ever replaced: give another path")


def fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path | str, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside `target` for the caller to write (by name or by opening
    it); when the block ends without an exception, the file is fsynced, given `mode` (mkstemp
    makes it 0600, and these files are meant to be shared) and renamed over `target`. On an
    exception the temporary file is removed and `target` is untouched.

    A process killed mid-write (SIGKILL) leaves its hidden `.<name>.<random>.tmp` behind, never
    a partial `target`."""
    target = Path(target)
    refuse_unless_regular(target)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    temp = Path(temp_name)
    try:
        yield temp
        fsync_path(temp)
        os.chmod(temp, mode)
        # Checked again just before the rename: the target may have changed while we wrote.
        refuse_unless_regular(target)
        os.replace(temp, target)
        fsync_path(target.parent, directory=True)
    finally:
        temp.unlink(missing_ok=True)


def write_text_atomic(target: Path | str, text: str, mode: int = 0o644) -> None:
    """`text` as UTF-8 with "\\n" line endings, replacing `target` atomically (see atomic_path)."""
    with atomic_path(target, mode) as temp:
        temp.write_text(text, encoding="utf-8", newline="\n")
