"""One base model in memory, the LoRA adapters loaded on it, and the one thread that runs them.

Everything that touches the model (loading an adapter, dropping one, generating a batch) runs on
the engine's single generation thread, one thing at a time, so an adapter is never added or
removed under a running batch and the event loop never waits on the model. Requests wait in the
engine's bounded queue; the batcher task takes them out in batches of one version and hands each
batch to the thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import TypeVar

from services.inference import metrics
from services.inference.batching import BatchQueue
from services.inference.generation import Job, Vocabulary, run_batch
from services.inference.params import InvalidArgument, Params

log = logging.getLogger("afina.inference")
T = TypeVar("T")


class LoadedVersions:
    """Which adapter versions are in memory, most recently used last, and how many requests use
    each. The base version is always there and does not count against the capacity."""

    def __init__(self, capacity: int, base_version: int) -> None:
        self.capacity = capacity
        self.base_version = base_version
        self._recent: OrderedDict[int, None] = OrderedDict()
        self._users: Counter[int] = Counter()

    def __contains__(self, version: int) -> bool:
        return version == self.base_version or version in self._recent

    def __len__(self) -> int:
        return len(self._recent)

    def add(self, version: int) -> None:
        if version != self.base_version:
            self._recent[version] = None

    def adapters(self) -> list[int]:
        return list(self._recent)

    def acquire(self, version: int) -> None:
        """A request starts using version (it must be loaded)."""
        if version not in self:
            raise KeyError(version)
        self._users[version] += 1
        if version in self._recent:
            self._recent.move_to_end(version)

    def release(self, version: int) -> None:
        self._users[version] -= 1
        if self._users[version] <= 0:
            del self._users[version]

    def in_use(self) -> int:
        return sum(self._users.values())

    def evictable(self, keep: Iterable[int]) -> list[int]:
        """The least recently used adapters beyond the capacity that no request uses and that are
        not to be kept; they are forgotten here at once, so no new request picks them."""
        keep = set(keep)
        over = len(self._recent) - self.capacity
        chosen = [v for v in self._recent if v not in keep and not self._users[v]][: max(0, over)]
        for version in chosen:
            del self._recent[version]
        return chosen


def adapter_name(version: int) -> str:
    return f"v{version}"


def _device_and_dtype():
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


class Engine:
    def __init__(self, base: str, base_version: int, *, capacity: int, max_queue: int, max_batch: int,
                 batch_wait_s: float, threads: int = 0) -> None:
        self.base = base  # a local folder or a Hugging Face id
        self.base_version = base_version
        self.threads = threads
        self.versions = LoadedVersions(capacity, base_version)
        self.queue: BatchQueue[Job] = BatchQueue(max_queue, max_batch, batch_wait_s, alive=lambda job: job.alive())
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"generation-base-v{base_version}")
        self._batcher: asyncio.Task | None = None
        self._loads_waiting = 0  # a running batch admits no one while an adapter waits to load
        self.model = self.peft = self.encoder = None
        self.vocab: Vocabulary | None = None

    # -- on the event loop ------------------------------------------------------------------
    async def start(self) -> None:
        await self._on_thread(self._load_base)
        self._batcher = asyncio.create_task(self._batches(), name=f"batcher-base-v{self.base_version}")

    async def close(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
            await asyncio.gather(self._batcher, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def add_adapter(self, version: int, folder: Path) -> None:
        # queued on the generation thread behind the running batch, which then stops admitting
        # requests and ends: a load never starves behind a stream of calls
        self._loads_waiting += 1
        try:
            await self._on_thread(self._add_adapter, version, folder)
        finally:
            self._loads_waiting -= 1
        self.versions.add(version)

    async def evict(self, keep: Iterable[int]) -> list[int]:
        evicted = self.versions.evictable(keep)
        for version in evicted:
            await self._on_thread(self._remove_adapter, version)
        metrics.LOADED_ADAPTERS.set(len(self.versions))
        return evicted

    def encode(self, params: Params) -> list[int]:
        """The prompt's token ids (a chat rendered with the model's chat template)."""
        if params.prompt is not None:
            return self.encoder(params.prompt)["input_ids"]
        if not getattr(self.encoder, "chat_template", None):
            raise InvalidArgument("chat: this model has no chat template; send a prompt")
        rendered = self.encoder.apply_chat_template([{"role": r, "content": c} for r, c in params.messages],
                                                    add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(rendered["input_ids"])

    def submit(self, job: Job, version: int) -> None:
        """Queue a job for a loaded version (raises QueueFull)."""
        self.queue.put(job, key=version)
        metrics.QUEUE_DEPTH.set(len(self.queue))

    @property
    def idle(self) -> bool:
        return not len(self.queue) and not self.queue.running and not self.versions.in_use()

    async def _on_thread(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _batches(self) -> None:
        while True:
            version, jobs = await self.queue.next_batch()
            metrics.QUEUE_DEPTH.set(len(self.queue))
            metrics.BATCH_SIZE.observe(len(jobs))
            try:
                await self._on_thread(self.generate, version, jobs)
            finally:
                self.queue.running = 0

    # -- on the generation thread -------------------------------------------------------------
    def _load_base(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

        started = time.perf_counter()
        if self.threads:
            torch.set_num_threads(self.threads)
        device, dtype = _device_and_dtype()
        self.model = AutoModelForCausalLM.from_pretrained(self.base, dtype=dtype).to(device).eval()
        # two tokenizers: one encodes on the event loop while the other decodes here
        self.encoder = AutoTokenizer.from_pretrained(self.base)
        decoder = AutoTokenizer.from_pretrained(self.base)
        config = self.model.config
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos_ids = {*(eos if isinstance(eos, list) else [eos]), decoder.eos_token_id} - {None}
        pad = decoder.pad_token_id if decoder.pad_token_id is not None else min(eos_ids, default=0)
        self.vocab = Vocabulary(
            pad_id=pad, eos_ids=frozenset(eos_ids),
            decode=lambda ids: decoder.decode(ids, skip_special_tokens=True),
            context=int(getattr(config, "max_position_embeddings", None) or decoder.model_max_length),
        )
        log.info("base model loaded", extra={"base": self.base, "base_version": self.base_version, "device": device,
                                              "seconds": round(time.perf_counter() - started, 2)})

    def _add_adapter(self, version: int, folder: Path) -> None:
        from peft import PeftModel

        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.model, str(folder), adapter_name=adapter_name(version))
        else:
            self.peft.load_adapter(str(folder), adapter_name=adapter_name(version))
        self.peft.eval()

    def _remove_adapter(self, version: int) -> None:
        self.peft.delete_adapter(adapter_name(version))

    def generate(self, version: int, jobs: list[Job]) -> None:
        """Generate a batch of one version to its end, with the requests for it that arrive meanwhile
        (the batcher calls this on the generation thread; a benchmark may call it directly)."""
        started = time.perf_counter()
        everyone = list(jobs)

        def admit(running: int) -> list[Job]:
            if self._loads_waiting:
                return []
            joining = self.queue.take(version, self.queue.max_batch - running)
            self.queue.running = running + len(joining)
            if joining:
                everyone.extend(joining)
                metrics.BATCH_SIZE.observe(running + len(joining))
                metrics.QUEUE_DEPTH.set(len(self.queue))
            return joining

        try:
            if version == self.base_version:
                adapters = self.peft.disable_adapter() if self.peft is not None else nullcontext()
            else:
                self.peft.set_adapter(adapter_name(version))
                adapters = nullcontext()
            with adapters:
                tokens = run_batch(self.model, jobs, self.vocab, admit=admit)
        except Exception as exc:  # noqa: BLE001 (every caller of the batch gets the error)
            log.exception("generation failed", extra={"version": version, "batch": len(everyone)})
            for job in everyone:
                job.sink.failed(exc)
            return
        metrics.TOKENS.inc(tokens)
        metrics.TOKENS_PER_SECOND.set(tokens / max(time.perf_counter() - started, 1e-9))
