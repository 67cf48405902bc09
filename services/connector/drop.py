"""`afina drop`: put files into the watched storage the way a person would, but atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from services.contracts import Bucket
from services.settings import Settings
from services.storage import minio_client


def to_folder(settings: Settings, file: Path, name: str | None = None) -> Path:
    """Copy into the inbox folder under a hidden temporary name, then rename: the connector
    only ever sees the complete file."""
    target = settings.inbox_dir / (name or file.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{uuid.uuid4().hex}.part")
    shutil.copyfile(file, partial)
    os.replace(partial, target)
    return target


def to_bucket(settings: Settings, file: Path, name: str | None = None) -> str:
    key = name or file.name
    minio_client(settings).fput_object(Bucket.INBOX, key, str(file))
    return f"{Bucket.INBOX}/{key}"
