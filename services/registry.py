"""The model registry in MinIO `models`: versions and the aliases that point at them.

    models/aliases/champion.json         {"version": N}   (moved by one atomic write)
    models/versions/<N>/tokenizer.json   the version's tokenizer (Hugging Face tokenizers format)
"""

from __future__ import annotations

import hashlib
import json

from minio import Minio
from tokenizers import Tokenizer

from services.contracts import Bucket
from services.storage import read_object

CHAMPION = "champion"


def alias_key(alias: str) -> str:
    return f"aliases/{alias}.json"


def tokenizer_key(version: int) -> str:
    return f"versions/{version}/tokenizer.json"


def alias_version(client: Minio, alias: str = CHAMPION) -> int | None:
    data = read_object(client, Bucket.MODELS, alias_key(alias))
    return None if data is None else int(json.loads(data)["version"])


def load_tokenizer(client: Minio, version: int) -> tuple[Tokenizer, str]:
    """A version's fast tokenizer, and a name for it that changes when its content does."""
    data = read_object(client, Bucket.MODELS, tokenizer_key(version))
    if data is None:
        raise LookupError(f"model version {version} has no tokenizer in the registry")
    return Tokenizer.from_str(data.decode()), f"v{version}:{hashlib.sha256(data).hexdigest()[:12]}"
