"""The inbox folder: which names count, how a file is opened safely, its source id, and
whether the folder is the one the index's documents came from."""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
import uuid
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from services.contracts import InboxClaim

# A dotfile (never a document) that names the folder: its id is what an inbox name is claimed by.
MARKER = ".afina-inbox"

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


def open_document(root: Path, rel: str, _links: int = 0) -> tuple[BinaryIO, os.stat_result]:
    """Open an inbox file for reading without leaving the inbox or blocking on a FIFO.

    Every folder on the path is opened without following links (a folder swapped for a link
    to a private folder is refused, not read); the file itself may be a link to another file
    in the inbox. Raises FileNotFoundError when it is gone and Unreadable when it must not be read.
    """
    *folders, name = PurePosixPath(rel).parts
    folder = _open_folders(root, folders)
    try:
        link = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if stat.S_ISLNK(link.st_mode):
            target = (root / rel).resolve()
            inside = root.resolve()
            if not target.is_relative_to(inside) or _links >= 8:
                raise Unreadable("symbolic link pointing outside the inbox")
            return open_document(inside, target.relative_to(inside).as_posix(), _links + 1)
        if not stat.S_ISREG(link.st_mode):
            raise Unreadable("not a regular file (FIFO, socket, device or folder)")
        # O_NONBLOCK: should the path be swapped for a FIFO after the check, open does not hang;
        # O_NOFOLLOW: nor does it follow a link swapped in.
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Unreadable("symbolic link pointing outside the inbox") from None
            raise
    finally:
        os.close(folder)
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode):
        os.close(fd)
        raise Unreadable("not a regular file (FIFO, socket, device or folder)")
    return os.fdopen(fd, "rb"), opened


def _open_folders(root: Path, folders: list[str]) -> int:
    """A descriptor of the innermost folder, each one opened relative to the last, links refused."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for part in folders:
        try:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            # a link opened with O_DIRECTORY | O_NOFOLLOW fails with ENOTDIR (Linux) or ELOOP
            is_link = exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd)
            os.close(fd)
            if is_link:
                raise Unreadable("a folder on the path is a symbolic link") from None
            if exc.errno == errno.ENOTDIR:  # a file where a folder was: the document is gone
                raise FileNotFoundError(exc.errno, "a folder on the path is not a folder", part) from None
            raise
        os.close(fd)
        fd = inner
    return fd


def _is_link(name: str, folder: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


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


def folder_id(root: Path) -> str | None:
    """The id in the folder's marker file; None when the folder or its marker is missing."""
    try:
        text = (root / MARKER).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text if re.fullmatch(r"[0-9a-f]{32}", text) else None


def mark(root: Path) -> str:
    """Give the folder (created if need be) a marker with a new id, unless it has one."""
    root.mkdir(parents=True, exist_ok=True)
    new = uuid.uuid4().hex
    try:
        with open(root / MARKER, "x") as file:
            file.write(new + "\n")
    except FileExistsError:
        if (existing := folder_id(root)) is not None:
            return existing
        raise
    return new


def claim_problem(root: Path, inbox_name: str, claim: InboxClaim | None, indexed: int) -> str | None:
    """Why this folder must not act as the inbox ``inbox_name`` (None: it may).

    Reading a wrong folder would tombstone every document indexed under the name: the folder
    of an unmounted drive (missing, or an empty mount point) and a second inbox given the
    same name are both told apart from the real one by the marker's id.
    """
    found = folder_id(root)
    if claim is None or found == claim.folder_id or (found is None and indexed == 0):
        return None  # first claim, ours, or a new folder where nothing is lost
    fix = "set AFINA_CONNECTOR_TAKE_OVER_INBOX=true to make this folder the inbox"
    if found is None:
        state = "is missing" if not root.exists() else f"has no {MARKER} file"
        return (f"the inbox folder {root} {state}, but {indexed} documents are indexed from inbox '{inbox_name}' "
                f"(folder {claim.folder}): a drive not mounted? Nothing is read or deleted until it is back; "
                f"if this is a new inbox, {fix}")
    return (f"the inbox name '{inbox_name}' belongs to another folder ({claim.folder}, id {claim.folder_id}); "
            f"{root} is a different inbox (id {found}): give it its own AFINA_INBOX_NAME, or {fix}")
