"""The inbox folder: which names count, how a file is opened safely, and its source id."""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path, PurePosixPath
from typing import BinaryIO

# Editors' lock files, partial downloads and uploads, temporary saves.
IGNORED_NAMES = ("~$*", ".~lock*", "*.part", "*.partial", "*.tmp", "*.crdownload", "*.swp", "*~")


class Unreadable(Exception):
    """A path in the inbox that is never read (symlink out of the inbox, FIFO, socket, device)."""


def is_ignored(rel: str) -> bool:
    """Hidden files and folders (dotfiles) and temporary files are not documents."""
    parts = PurePosixPath(rel).parts
    if any(part.startswith(".") for part in parts):
        return True
    return any(fnmatch.fnmatchcase(parts[-1], pattern) for pattern in IGNORED_NAMES)


def relative(root: Path, path: str | os.PathLike) -> str | None:
    """The inbox-relative POSIX path of ``path``, or None when it is not inside the inbox."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return None
    return None if rel == Path(".") else rel.as_posix()


def source_id(inbox_name: str, rel: str) -> str:
    # File names are bytes on Linux; undecodable ones (surrogate escapes) become a stable, printable id.
    printable = os.fsencode(rel).decode("utf-8", errors="backslashreplace")
    return f"{inbox_name}:{printable}"


def open_document(root: Path, rel: str) -> tuple[BinaryIO, os.stat_result]:
    """Open an inbox file for reading without following a link out of the inbox or blocking on a FIFO.

    Raises FileNotFoundError when it is gone and Unreadable when it must not be read.
    """
    path = root / rel
    link = os.lstat(path)
    if stat.S_ISLNK(link.st_mode):
        target = path.resolve()
        if not target.is_relative_to(root.resolve()):
            raise Unreadable("symbolic link pointing outside the inbox")
        path = target
    before = os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise Unreadable("not a regular file (FIFO, socket, device or folder)")
    # O_NONBLOCK: should the path be swapped for a FIFO after the check, open does not hang.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode):
        os.close(fd)
        raise Unreadable("not a regular file (FIFO, socket, device or folder)")
    return os.fdopen(fd, "rb"), opened


def walk(root: Path) -> list[str]:
    """Every candidate document under the inbox (relative paths), not following folder links."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        rel_folder = relative(root, folder)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            rel = f"{rel_folder}/{name}" if rel_folder else name
            if not is_ignored(rel):
                found.append(rel)
    return found
