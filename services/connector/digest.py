"""Content hashing while streaming: bounded memory whatever the file's size."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

CHUNK = 1024 * 1024


def sha256_of(file: BinaryIO, head_size: int) -> tuple[str, int, bytes]:
    """sha256 hex digest, size and the first ``head_size`` bytes of a file, read once in chunks."""
    digest, size, head = hashlib.sha256(), 0, b""
    while chunk := file.read(CHUNK):
        if len(head) < head_size:
            head += chunk[: head_size - len(head)]
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size, head


class HashingReader:
    """Wraps a binary file; hashes exactly the bytes a consumer (an uploader) reads through it."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._digest.update(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
