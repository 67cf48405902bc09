"""Which model versions this server holds, and the champion it serves by default.

The champion follows the registry's alias: a new one is loaded in the background (its adapter onto
the base model already in memory) and then made the champion by one assignment, so every call
uses either the old or the new one, whole. A call takes its version when it arrives and keeps it
until it ends: an adapter that calls use is never dropped, so calls in flight during a swap finish
on the version they started with. The most recently used adapters stay loaded (the champion
always), so a call may name an older version; one that is not loaded is loaded for it, if it was
promoted (a candidate the gate rejected only with AFINA_INFERENCE_SERVE_CANDIDATES), and at most
AFINA_INFERENCE_MAX_QUEUE calls wait for loads at once. A version whose adapter cannot be loaded
is never switched to: the current champion keeps serving.

All adapter versions adapt one base model. When a champion on another base is promoted, a second
engine with that base is started, becomes the current one, and the old one is closed once the
calls it holds are done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from services.inference import metrics
from services.inference.batching import QueueFull
from services.inference.engine import Engine
from services.registry import LocalVersion, ModelCard
from services.settings import Settings

log = logging.getLogger("afina.inference")


class Unavailable(Exception):
    """No model is loaded yet."""


class OtherBase(Exception):
    """The version adapts another base model than the one in memory."""


class UnknownVersion(Exception):
    """The registry has no such version."""


class NotServable(Exception):
    """The version exists but is not served to calls that name it (the gate rejected it)."""


class LoadFailed(Exception):
    """The version's files in the registry cannot be loaded."""


def refusal(card: ModelCard, serve_candidates: bool) -> str | None:
    """Why a call naming this version is not served, or None. Base versions and promoted ones are
    served; a champion is always served, even one promoted by hand (it is not asked for by name)."""
    if card.kind == "base" or card.status == "promoted" or serve_candidates:
        return None
    return (f"version {card.version} is a candidate the gate {card.status or 'never passed'}; it is not served "
            "(set AFINA_INFERENCE_SERVE_CANDIDATES=true to serve candidates)")


@dataclass(frozen=True)
class Registry:
    """What the server reads from the model registry (blocking calls; run them in a thread)."""

    champion: Callable[[], int | None]
    fetch: Callable[[int], LocalVersion]  # raises LookupError for an unknown version
    card: Callable[[int], ModelCard | None]
    cards: Callable[[], list[ModelCard]]


@dataclass(frozen=True)
class Lease:
    """A call's hold on a version: the engine that serves it. Released when the call ends."""

    engine: Engine
    version: int


class Models:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.engines: dict[int, Engine] = {}  # by base version
        self.serving: Lease | None = None  # the champion and its engine, switched as one
        self._loading: dict[int, asyncio.Task[Engine]] = {}
        self._waiting = 0  # calls waiting for a version to load
        self._switching = asyncio.Lock()

    @property
    def champion(self) -> int | None:
        return self.serving.version if self.serving else None

    # -- the champion ---------------------------------------------------------------------------
    async def follow_champion(self) -> bool:
        """Serve the registry's champion; True when it changed. Raises LookupError while the
        registry has none, and whatever loading it raised (the caller retries)."""
        version = await asyncio.to_thread(self.registry.champion)
        if version is None:
            raise LookupError("the registry has no champion yet (run `afina base init`)")
        async with self._switching:
            if version == self.champion:
                return False
            engine = await self._ensure(version, new_base=True)
            previous, self.serving = self.champion, Lease(engine, version)  # the switch: one assignment
        metrics.SERVING_VERSION.set(version)
        metrics.SWAPS.inc()
        log.info("serving a new champion", extra={"version": version, "previous": previous})
        await self._tidy()
        return True

    # -- calls ----------------------------------------------------------------------------------
    async def acquire(self, requested: int | None) -> Lease:
        """Hold the version a call asked for (the champion when None), loading it if needed.
        Raises Unavailable, UnknownVersion or OtherBase."""
        serving = self.serving
        if serving is None:
            raise Unavailable("no model is loaded yet; the server is still starting")
        if requested is None or requested == serving.version:
            lease = serving
        else:
            engine = self._holding(requested)
            if engine is None:
                engine = await self._wait_for_load(requested)
            lease = Lease(engine, requested)
        lease.engine.versions.acquire(lease.version)  # no await since it was found: it is still there
        return lease

    def release(self, lease: Lease) -> None:
        versions = lease.engine.versions
        versions.release(lease.version)
        if len(versions) > versions.capacity or (self.serving and lease.engine is not self.serving.engine):
            asyncio.get_running_loop().create_task(self._tidy())

    def loaded(self) -> set[int]:
        return {v for engine in self.engines.values() for v in (engine.base_version, *engine.versions.adapters())}

    async def close(self) -> None:
        for task in list(self._loading.values()):
            task.cancel()
        for engine in self.engines.values():
            await engine.close()

    async def _wait_for_load(self, version: int) -> Engine:
        if self._waiting >= self.settings.inference.max_queue:
            raise QueueFull(f"{self._waiting} calls are already waiting for versions to load; try again later")
        self._waiting += 1
        try:
            engine = None
            while engine is None:  # (loaded, then dropped again before this call could hold it: rare)
                engine = await self._ensure(version, new_base=False)
                engine = engine if version in engine.versions else None
            return engine
        finally:
            self._waiting -= 1

    # -- loading --------------------------------------------------------------------------------
    def _holding(self, version: int) -> Engine | None:
        return next((e for e in self.engines.values() if version in e.versions), None)

    async def _ensure(self, version: int, new_base: bool) -> Engine:
        """The engine holding version, after loading it (one load per version at a time)."""
        if (engine := self._holding(version)) is not None:
            return engine
        task = self._loading.get(version)
        if task is None:
            task = self._loading[version] = asyncio.create_task(self._load(version, new_base))
            task.add_done_callback(lambda _: self._loading.pop(version, None))
        return await asyncio.shield(task)  # a caller that goes away does not cancel others' load

    async def _load(self, version: int, new_base: bool) -> Engine:
        if not new_base:  # for a call that names it, not for the champion
            card = await asyncio.to_thread(self.registry.card, version)
            if card is None:
                raise UnknownVersion(f"there is no model version {version} in the registry")
            if (why := refusal(card, self.settings.inference.serve_candidates)) is not None:
                raise NotServable(why)
        try:
            local = await asyncio.to_thread(self.registry.fetch, version)
        except LookupError as exc:
            raise UnknownVersion(str(exc)) from None
        if local.card.kind == "adapter" and local.adapter is None:
            raise LoadFailed(f"version {version} has no adapter files in the registry")
        engine = self.engines.get(local.base_version)
        if engine is None:
            if self.engines and not new_base:
                raise OtherBase(f"version {version} adapts base version {local.base_version}, which this "
                                f"server does not hold (it serves base version {self.serving.engine.base_version})")
            engine = await self._start_engine(local)
        if local.adapter is not None and version not in engine.versions:
            try:
                await engine.add_adapter(version, local.adapter)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:  # incomplete or damaged adapter files
                raise LoadFailed(f"version {version}'s adapter cannot be loaded: {exc}") from exc
            log.info("adapter loaded", extra={"version": version})
        return engine

    async def _start_engine(self, local: LocalVersion) -> Engine:
        s = self.settings
        engine = Engine(local.base, local.base_version, capacity=s.inference.loaded_versions,
                        max_queue=s.inference.max_queue, max_batch=s.inference.max_batch,
                        batch_wait_s=s.inference.batch_wait_ms / 1000, threads=s.inference.torch_threads)
        await engine.start()
        self.engines[local.base_version] = engine
        return engine

    async def _tidy(self) -> None:
        """Drop adapters beyond the capacity that no call uses, and close the engines of an
        earlier base once their calls are done."""
        if self.serving is None:
            return
        for base_version, engine in list(self.engines.items()):
            if engine is not self.serving.engine:
                if engine.idle and self.engines.pop(base_version, None) is engine:
                    await engine.close()
                    log.info("earlier base model closed", extra={"base_version": base_version})
            elif evicted := await engine.evict(keep={self.serving.version}):
                log.info("adapters unloaded", extra={"versions": evicted})
