"""How every afina service lives: retrying what depends on a server that may be away, and
running until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0


async def retry_forever(
    step: Callable[[], Awaitable[T]],
    what: str,
    log: logging.Logger,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Run ``step`` until it succeeds, with exponential backoff; Kafka or MinIO may be away a while."""
    delay = FIRST_DELAY_S
    while True:
        try:
            return await step()
        except retry_on as exc:
            log.warning(f"{what} failed; retrying", extra={"error": repr(exc), "retry_s": delay})
            if cleanup is not None:
                await cleanup()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)


def run_until_stopped(main: Callable[[], Awaitable[None]], name: str, log: logging.Logger) -> None:
    """Run a service's main coroutine until SIGTERM or SIGINT cancels it."""

    async def supervised() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await main()
        except asyncio.CancelledError:
            log.info(f"{name} stopped")

    asyncio.run(supervised())


class Interrupted(Exception):
    """A step stopped from outside (a killed process): running it again picks up where it was."""


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: a server away for a moment or an interrupted step, not a bug or bad data."""
    import urllib3
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
    from minio.error import S3Error

    if isinstance(exc, S3Error):
        return exc.code in ("SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "XMinioServerNotInitialized")
    return isinstance(exc, (ConnectionError, TimeoutError, urllib3.exceptions.HTTPError, KafkaConnectionError,
                            KafkaTimeoutError, Interrupted))
