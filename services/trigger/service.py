"""The tuning trigger: a consumer group on ``afina.documents.normalized`` that, whenever a master
document arrives, measures the master data that arrived since the tuning last trained
(tuning/arrivals.py) and, once it reaches AFINA_TUNING_TRIGGER_DOCUMENTS documents or
AFINA_TUNING_TRIGGER_TOKENS tokens, emits the Prefect event ``afina.dataset.master-arrived``. The
tuning deployment's event trigger starts a run on it, with the reason as the run's ``why``, so the
dashboard shows why each run started; the deployment runs one at a time.

It emits once per state of the registry: again only after a new version is registered (the run
trained) or, should the run have failed, after AFINA_TUNING_TRIGGER_COOLDOWN_S.
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.contracts import DocumentNormalized, Stability, Topic
from services.lifecycle import retry_forever, run_until_stopped
from services.messaging import kafka_broker, subscribe_batches
from services.settings import Settings
from services.storage import minio_client
from services.tuning import arrivals

log = logging.getLogger("afina.trigger")
GROUP = "afina-tuning-trigger"


class TuningTrigger:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.s3 = minio_client(settings)
        self.broker = kafka_broker(settings, "afina-tuning-trigger")
        # from the newest record: what arrived while this was down is measured at start, from the store
        subscribe_batches(self.broker, Topic.DOCUMENTS_NORMALIZED, DocumentNormalized, self.on_batch, group_id=GROUP,
                          auto_offset_reset="latest")
        self._emitted: tuple[int, float] | None = None  # (the version measured against, when)

    async def on_batch(self, events: list[DocumentNormalized]) -> None:
        trained_on = {Stability.MASTER, Stability.VOLATILE} if self.settings.tuning.train_volatile else {Stability.MASTER}
        if any(event.stability in trained_on for event in events):
            await self.check()

    async def check(self) -> None:
        tuning = self.settings.tuning
        arrived = await asyncio.to_thread(arrivals.measure, self.s3, self.settings)
        if arrived is None or not arrivals.due(arrived, tuning.trigger_documents, tuning.trigger_tokens):
            return
        if self._emitted is not None and self._emitted[0] == arrived.since_version and \
                time.monotonic() - self._emitted[1] < tuning.trigger_cooldown_s:
            return  # a run was asked for on this state already
        await asyncio.to_thread(emit, arrived)
        self._emitted = (arrived.since_version, time.monotonic())
        log.info("asked for a tuning run", extra={"reason": arrived.reason()})

    async def run(self) -> None:
        await retry_forever(self.broker.start, "connecting to Kafka", log, cleanup=self.broker.stop)
        await retry_forever(self.check, "measuring the arrived data", log)
        log.info("tuning trigger ready", extra={"documents": self.settings.tuning.trigger_documents,
                                                "tokens": self.settings.tuning.trigger_tokens})
        try:
            await asyncio.Event().wait()
        finally:
            await self.broker.stop()


def emit(arrived: arrivals.Arrived) -> None:
    from prefect.events import emit_event

    emit_event(event=arrivals.EVENT, resource={"prefect.resource.id": arrivals.RESOURCE,
                                               "prefect.resource.name": "afina's master documents"},
               related=[{"prefect.resource.id": f"afina.model.v{arrived.since_version}",
                         "prefect.resource.role": "trained-since"}],
               payload={"reason": arrived.reason(), "documents": arrived.documents, "tokens": arrived.tokens,
                        "since_version": arrived.since_version, "since_snapshot": arrived.since_snapshot})


def run(settings: Settings) -> None:
    """Run the tuning trigger until SIGTERM or SIGINT (its Prefect client pointed at afina's server)."""
    if not (settings.tuning.trigger_documents or settings.tuning.trigger_tokens):
        log.warning("both thresholds are 0: no tuning run will be asked for (the cron schedule still runs)")
    run_until_stopped(TuningTrigger(settings).run, "trigger", log)
