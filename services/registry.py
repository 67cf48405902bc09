"""The model registry in MinIO `models`: versions and the aliases that point at them.

    models/aliases/champion.json         {"version": N, "previous": M}  (both move in one write)
    models/versions/<N>/card.json        what the version is: base model, metrics, lineage
    models/versions/<N>/tokenizer.json   the version's tokenizer (Hugging Face tokenizers format)
    models/versions/<N>/model/...        weights and configs (safetensors), when stored here
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

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


def card_key(version: int) -> str:
    return f"versions/{version}/card.json"


def model_prefix(version: int) -> str:
    return f"versions/{version}/model/"


def read_card(client: Minio, version: int) -> dict | None:
    data = read_object(client, Bucket.MODELS, card_key(version))
    return None if data is None else json.loads(data)


def register_version(client: Minio, version: int, card: dict, tokenizer_json: bytes,
                     model_folder: Path | None = None) -> None:
    """Store a version's files; the card last, so a version with a card is complete."""
    if model_folder is not None:
        for path in sorted(p for p in model_folder.rglob("*") if p.is_file()):
            client.fput_object(Bucket.MODELS, model_prefix(version) + path.relative_to(model_folder).as_posix(), str(path))
    _put(client, tokenizer_key(version), tokenizer_json)
    _put(client, card_key(version), json.dumps(card, indent=2, sort_keys=True).encode())


def set_alias(client: Minio, alias: str, version: int, previous: int | None = None) -> None:
    """Point an alias at a version: one object written whole, so readers see the old or the new."""
    _put(client, alias_key(alias), json.dumps({"version": version, "previous": previous}).encode())


def previous_version(client: Minio, alias: str = CHAMPION) -> int | None:
    data = read_object(client, Bucket.MODELS, alias_key(alias))
    return None if data is None else json.loads(data).get("previous")


def versions(client: Minio) -> list[int]:
    found = {int(o.object_name.split("/")[1]) for o in client.list_objects(Bucket.MODELS, prefix="versions/")}
    return sorted(found)


def promote(client: Minio, version: int) -> tuple[int, int | None]:
    """Make a registered version the champion; the old champion becomes the previous one."""
    if read_card(client, version) is None:
        raise LookupError(f"there is no model version {version} in the registry")
    current = alias_version(client)
    if current == version:
        return version, previous_version(client)
    set_alias(client, CHAMPION, version, previous=current)
    return version, current


def rollback(client: Minio) -> tuple[int, int | None]:
    """Give the champion alias back to the previous version."""
    previous, current = previous_version(client), alias_version(client)
    if previous is None:
        raise LookupError("there is no previous champion to roll back to")
    set_alias(client, CHAMPION, previous, previous=current)
    return previous, current


def _put(client: Minio, key: str, data: bytes) -> None:
    client.put_object(Bucket.MODELS, key, io.BytesIO(data), len(data))
