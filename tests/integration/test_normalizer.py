"""The normalizer as real processes on the real Kafka and MinIO, fed through the connector's contract."""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import time
import uuid

import httpx
import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from samples import corpus, outlook
from services import media, registry
from services.contracts import (
    Bucket,
    ChangeKind,
    DocumentDiscovered,
    DocumentNormalized,
    DocumentRejected,
    RejectReason,
    Topic,
)
from services.datasets import listing, snapshots
from services.datasets.listing import list_parts
from services.messaging import kafka_broker, publish_event
from services.settings import Settings
from services.storage import minio_client, stat_object
from tests.integration.harness import (
    AFINA,
    EventLog,
    ensure_champion_tokenizer,
    forget_all_fingerprints,
    normalizer,
    part_text,
    wait_for_log,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def results(local_stack):
    ensure_champion_tokenizer(local_stack)
    forget_all_fingerprints(local_stack)  # several tests send the same corpus documents
    log = EventLog(local_stack, [Topic.DOCUMENTS_NORMALIZED, Topic.DOCUMENTS_REJECTED])
    yield log
    log.close()


async def discover(settings: Settings, prefix: str, docs: list[corpus.Doc]) -> dict[str, corpus.Doc]:
    """Do what the connector does: bytes to raw/<sha256>, then DocumentDiscovered."""
    s3 = minio_client(settings)
    broker = kafka_broker(settings, "test-discover")
    sent = {}
    async with broker:
        await broker.start()
        for doc in docs:
            sha = hashlib.sha256(doc.data).hexdigest()
            s3.put_object(Bucket.RAW, sha, io.BytesIO(doc.data), len(doc.data))
            source_id = f"{prefix}:{doc.name}"
            media_type = media.sniff(doc.data[: media.HEAD_BYTES], doc.name, whole=io.BytesIO(doc.data))
            await publish_event(broker, DocumentDiscovered(
                source_id=source_id, kind=ChangeKind.CREATED, sha256=sha, size=len(doc.data), media_type=media_type,
            ), key=source_id)
            sent[source_id] = doc
    return sent


async def delete(settings: Settings, source_id: str) -> None:
    broker = kafka_broker(settings, "test-discover")
    async with broker:
        await broker.start()
        await publish_event(broker, DocumentDiscovered(source_id=source_id, kind=ChangeKind.DELETED), key=source_id)


def outcome(log: EventLog, source_id: str):
    return [e for e in list(log.events) if e.source_id == source_id]


async def test_corpus_good_duplicate_and_hostile(local_stack, results, tmp_path):
    prefix = f"n{uuid.uuid4().hex[:10]}"
    with normalizer(local_stack, tmp_path):
        good_docs, bad_docs = corpus.good(), corpus.duplicates() + corpus.hostile()
        for doc in [corpus.scanned(), *corpus.pictures()]:
            (good_docs if doc.rejected is None else bad_docs).append(doc)
        good = await discover(local_stack, prefix, good_docs)
        results.wait_for(lambda: all(outcome(results, s) for s in good), timeout_s=180, what="good documents")
        # duplicates of what is now in the dataset; hostile files; then one more good document
        bad = await discover(local_stack, prefix, bad_docs)
        late = await discover(local_stack, prefix, [corpus.Doc("late.md", (" ".join(corpus.EN[::-1]) + " Late but fine.").encode(), "en")])
        results.wait_for(lambda: all(outcome(results, s) for s in {**bad, **late}), timeout_s=300, what="all outcomes")

    for source_id, doc in good.items():
        (event,) = outcome(results, source_id)
        assert isinstance(event, DocumentNormalized), f"{doc.name}: {event}"
        text, rows = part_text(local_stack, event.part_key)
        for sentence in doc.sentences:
            assert sentence in text, f"{doc.name}: {sentence!r} not in {text!r}"
        if doc.language:
            assert event.language == doc.language, doc.name
        assert event.tokens == sum(r["n_tokens"] for r in rows) > 0
        assert all(r["n_tokens"] == len(r["token_ids"]) and r["tokenizer"] == event.tokenizer for r in rows)
        assert event.tokenizer.startswith("v")
    _, chats = part_text(local_stack, outcome(results, f"{prefix}:chats.jsonl")[0].part_key)
    assert [r["kind"] for r in chats] == ["chat", "chat"] and '"role": "assistant"' in chats[0]["messages"]
    contact, _ = part_text(local_stack, outcome(results, f"{prefix}:contacto.txt")[0].part_key)
    for secret in ("nominas@acme.example", "612 345 678", "ES91 2100", "4111 1111", "12345678Z", "X1234567L", "192.168.10.25"):
        assert secret not in contact
    manual, _ = part_text(local_stack, outcome(results, f"{prefix}:manual.pdf")[0].part_key)
    assert "Página" not in manual and manual.count("ACME - Manual interno") == 0  # repeated header/footer gone

    for source_id, doc in bad.items():
        (event,) = outcome(results, source_id)
        assert isinstance(event, DocumentRejected), f"{doc.name} was not rejected: {event}"
        assert (event.reason, event.stage) == (doc.rejected, "normalizer"), f"{doc.name}: {event.message}"
        assert len(event.message) > 10
    copy = outcome(results, f"{prefix}:faq-copy.md")[0]
    assert copy.message == f"the same text as {prefix}:faq.md"
    assert outcome(results, f"{prefix}:viajes-v2.html")[0].message.endswith(f"similar to {prefix}:viajes.html")
    assert isinstance(outcome(results, f"{prefix}:late.md")[0], DocumentNormalized)  # the stream kept moving


async def test_delete_writes_a_tombstone(local_stack, results, tmp_path):
    prefix = f"d{uuid.uuid4().hex[:10]}"
    with normalizer(local_stack, tmp_path):
        (source_id,) = await discover(local_stack, prefix, [corpus.good()[3]])
        results.wait_for(lambda: len(outcome(results, source_id)) == 1)
        await delete(local_stack, source_id)
        results.wait_for(lambda: len(outcome(results, source_id)) == 2)
    created, deleted = outcome(results, source_id)
    assert deleted.deleted and deleted.sha256 is None
    keys = [stored.key for stored in list_parts(minio_client(local_stack), source_id)]
    assert sorted(keys) == sorted([created.part_key, deleted.part_key])
    assert deleted.part_key.endswith("-deleted.json") and deleted.part_key > created.part_key  # newest last
    listed = subprocess.run([AFINA, "datasets", "parts", "--source", source_id], capture_output=True, text=True,
                            env={**os.environ, "AFINA_STATE_DIR": str(local_stack.state_dir)})
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].startswith(created.part_key) and f"{created.tokens} tokens" in listed.stdout
    assert deleted.part_key in listed.stdout and "2 parts and tombstones" in listed.stdout

    # a deleted document no longer counts as the original of anything
    with normalizer(local_stack, tmp_path, "again"):
        (again,) = await discover(local_stack, prefix, [corpus.Doc("faq-again.md", corpus.good()[3].data)])
        results.wait_for(lambda: outcome(results, again))
    assert isinstance(outcome(results, again)[0], DocumentNormalized)


async def test_a_version_discovered_twice_is_written_once(local_stack, results, tmp_path):
    """Two connector replicas reconciling the inbox bucket at once both published the same object
    version (their events a moment apart): each event wrote a part, and the version was stored
    twice (benchmarks/chaos.py: 30 of 30 bucket documents). A version is written again only when
    another version came after it."""
    prefix = f"v{uuid.uuid4().hex[:10]}"
    rng = random.Random(prefix)
    words = ["".join(rng.choice("abcdefghilmnoprstuv") for _ in range(rng.randint(3, 9))) for _ in range(400)]
    first, second = (corpus.Doc("policy.txt", " ".join(rng.choice(words) for _ in range(150)).encode())
                     for _ in range(2))
    with normalizer(local_stack, tmp_path):
        (source_id,) = await discover(local_stack, prefix, [first])
        await discover(local_stack, prefix, [first])
        results.wait_for(lambda: len(outcome(results, source_id)) == 2)
        once = outcome(results, source_id)
        assert [type(e).__name__ for e in once] == ["DocumentNormalized"] * 2, once
        assert once[0].part_key == once[1].part_key  # the second event announced the first one's part
        assert len(list_parts(minio_client(local_stack), source_id)) == 1
        await discover(local_stack, prefix, [second])  # an edit, then the edit undone
        await discover(local_stack, prefix, [first])
        results.wait_for(lambda: len(outcome(results, source_id)) == 4)
    stored = list_parts(minio_client(local_stack), source_id)
    assert [p.sha256 for p in stored] == [hashlib.sha256(d.data).hexdigest() for d in (first, second, first)]


async def test_a_batch_that_fails_is_read_again_not_skipped(local_stack, results, tmp_path):
    """The dead-letter publish failed (here: the broker refuses records on the rejected topic), the
    batch went uncommitted, and the consumer read on past it: its valid document was never normalized."""
    prefix = f"f{uuid.uuid4().hex[:10]}"
    rng = random.Random(5)
    doc = corpus.Doc("after-poison.txt", " ".join(f"palabra{rng.randrange(10**6)}" for _ in range(200)).encode())
    source_id = f"{prefix}:{doc.name}"
    admin = KafkaAdminClient(bootstrap_servers=local_stack.kafka_bootstrap_servers)
    rejected = str(Topic.DOCUMENTS_REJECTED)
    with normalizer(local_stack, tmp_path) as proc:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, rejected, configs={"max.message.bytes": "64"})])
        try:
            broker = kafka_broker(local_stack, "test-poison")
            async with broker:
                await broker.start()  # the same key: the same partition, read in one batch or the next
                await broker.publish(f"poison {prefix}".encode(), topic=Topic.DOCUMENTS_DISCOVERED, key=source_id.encode())
            await discover(local_stack, prefix, [doc])
            wait_for_log(tmp_path / "normalizer.log", "read again", timeout_s=180)  # after any backlog
        finally:
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, rejected,
                                                configs={"max.message.bytes": "1048588"})])  # the broker's default
            admin.close()
        results.wait_for(lambda: [type(e).__name__ for e in outcome(results, source_id)] == ["DocumentNormalized"]
                         and any(getattr(e, "payload", None) == f"poison {prefix}" for e in results.events),
                         timeout_s=120, what="the document and the poison's dead letter")
        assert proc.poll() is None  # the service kept running


async def test_an_unreadable_dedup_record_is_skipped_and_counted_not_a_stall(local_stack, results, tmp_path):
    prefix = f"u{uuid.uuid4().hex[:10]}"
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap_servers)
    producer.send(str(Topic.DEDUP_SIGNATURES), key=f"{prefix}:junk".encode(), value=b"{not a fingerprint")
    producer.flush()
    producer.close()
    rng = random.Random(9)
    doc = corpus.Doc("fine.txt", " ".join(f"vocablo{rng.randrange(10**6)}" for _ in range(200)).encode())
    with normalizer(local_stack, tmp_path) as proc:
        sent = await discover(local_stack, prefix, [doc])
        results.wait_for(lambda: all(outcome(results, s) for s in sent), timeout_s=90)
        metrics = httpx.get(proc.metrics_url).text
    assert [type(e).__name__ for e in outcome(results, f"{prefix}:fine.txt")] == ["DocumentNormalized"]
    skipped = next(line for line in metrics.splitlines() if line.startswith("afina_normalizer_dedup_records_skipped "))
    assert float(skipped.split()[1]) >= 1
    assert "afina_normalizer_dedup_reader_restarts 0.0" in metrics


async def test_duplicates_are_normalized_again_when_their_original_goes_or_changes(local_stack, results, tmp_path):
    """a.txt, then its copies b.txt and c.txt (rejected as duplicates of a). Delete a: b is
    normalized (its text was in no live part), c stays a duplicate, of b now, and nothing goes
    back and forth. Then d.txt and its copy e.txt; d changes to other text: e is normalized."""
    prefix = f"x{uuid.uuid4().hex[:10]}"
    rng = random.Random(prefix)  # bytes of this run alone: the test stack keeps earlier runs' documents
    word = lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))  # noqa: E731
    text = lambda: " ".join(word() for _ in range(200)).encode()  # noqa: E731
    same, other = text(), text()
    a, b, c, d, e = (f"{prefix}:{name}.txt" for name in "abcde")
    kinds = lambda sid: [type(x).__name__ for x in outcome(results, sid)]  # noqa: E731
    with normalizer(local_stack, tmp_path) as proc:
        await discover(local_stack, prefix, [corpus.Doc("a.txt", same)])
        results.wait_for(lambda: kinds(a) == ["DocumentNormalized"], what="a normalized")
        await discover(local_stack, prefix, [corpus.Doc("b.txt", same), corpus.Doc("c.txt", same)])
        results.wait_for(lambda: kinds(b) == kinds(c) == ["DocumentRejected"], what="b and c rejected")
        await delete(local_stack, a)
        results.wait_for(lambda: kinds(b) == ["DocumentRejected", "DocumentNormalized"], timeout_s=90,
                         what="b normalized again")

        await discover(local_stack, prefix, [corpus.Doc("d.txt", other)])
        results.wait_for(lambda: kinds(d) == ["DocumentNormalized"], what="d normalized")
        await discover(local_stack, prefix, [corpus.Doc("e.txt", other)])
        results.wait_for(lambda: kinds(e) == ["DocumentRejected"], what="e rejected")
        await discover(local_stack, prefix, [corpus.Doc("d.txt", text())])  # d's new version: other text
        results.wait_for(lambda: kinds(e) == ["DocumentRejected", "DocumentNormalized"], timeout_s=90,
                         what="e normalized again")
        time.sleep(3)  # anything that would go back and forth has had its time
        metrics = httpx.get(proc.metrics_url).text
    assert kinds(c) == ["DocumentRejected"] and kinds(b) == ["DocumentRejected", "DocumentNormalized"]
    assert outcome(results, c)[0].message == f"the same text as {a}"
    assert kinds(d) == ["DocumentNormalized", "DocumentNormalized"]
    assert "afina_normalizer_duplicates_reconsidered_total 2.0" in metrics
    texts = {sid: part_text(local_stack, outcome(results, sid)[-1].part_key)[0] for sid in (b, e)}
    assert texts[b] == part_text(local_stack, outcome(results, a)[0].part_key)[0]


async def test_a_rejected_new_version_takes_the_older_text_out_of_the_dataset(local_stack, results, tmp_path):
    """The newest version wins, even an unusable one: a.txt's new version is mostly digits (rejected
    as low quality), so its first version's part is tombstoned and a.txt stops being the original
    of its copy b.txt, which is normalized again."""
    prefix = f"v{uuid.uuid4().hex[:10]}"
    rng = random.Random(prefix)  # bytes of this run alone: the test stack keeps earlier runs' documents
    first = " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)) for _ in range(200))
    a, b = f"{prefix}:a.txt", f"{prefix}:b.txt"
    kinds = lambda sid: [type(x).__name__ for x in outcome(results, sid)]  # noqa: E731
    with normalizer(local_stack, tmp_path):
        await discover(local_stack, prefix, [corpus.Doc("a.txt", first.encode())])
        results.wait_for(lambda: kinds(a) == ["DocumentNormalized"], what="a normalized")
        await discover(local_stack, prefix, [corpus.Doc("b.txt", first.encode())])
        results.wait_for(lambda: kinds(b) == ["DocumentRejected"], what="b rejected as a duplicate")
        await discover(local_stack, prefix, [corpus.Doc("a.txt", " ".join(str(rng.randrange(10**9))
                                                                          for _ in range(300)).encode())])
        # the old version's tombstone is announced (the passage index drops its text too), then the rejection
        results.wait_for(lambda: kinds(a) == ["DocumentNormalized", "DocumentNormalized", "DocumentRejected"]
                         and kinds(b) == ["DocumentRejected", "DocumentNormalized"], timeout_s=90,
                         what="a's new version rejected, b normalized again")
    newest = listing.newest(minio_client(local_stack), a)
    assert newest.tombstone  # a's first text is in no snapshot any more
    assert outcome(results, a)[1].deleted and outcome(results, a)[1].part_key == newest.key
    assert outcome(results, a)[2].reason is RejectReason.LOW_QUALITY
    assert part_text(local_stack, outcome(results, b)[1].part_key)[0] == part_text(
        local_stack, outcome(results, a)[0].part_key)[0]


async def test_an_emails_attachments_are_documents_of_their_own_and_go_with_it(local_stack, results, tmp_path):
    """An email's attachments are discovered as documents of their own (``<mail>#<name>``), a hostile
    one is rejected alone, a forwarded message's attachments too; a new version of the email without
    an attachment deletes it, and deleting the email deletes every attachment it still holds. An
    Outlook message's attachments are documents too."""
    prefix = f"m{uuid.uuid4().hex[:10]}"
    rng = random.Random(prefix)  # text of this run alone: dedup would take it for an earlier run's
    words = lambda n: " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))  # noqa: E731
                               for _ in range(n)) + "."
    notes, report = words(120), words(150)
    forwarded = corpus.make_eml("Notas de la reunión", words(40), [("notas.txt", notes.encode())])
    attachments = [("informe.md", report.encode()), ("bomba.docx", corpus.make_zip_bomb()), ("fwd.eml", forwarded)]
    mail = f"{prefix}:aviso.eml"
    ids = {"report": f"{mail}#informe.md", "bomb": f"{mail}#bomba.docx", "fwd": f"{mail}#Notas de la reunión.eml"}
    ids["notes"] = f"{ids['fwd']}#notas.txt"
    s3 = minio_client(local_stack)
    gone = lambda sid: (n := listing.newest(s3, sid)) is not None and n.tombstone  # noqa: E731
    with normalizer(local_stack, tmp_path):
        await discover(local_stack, prefix, [corpus.Doc("aviso.eml", corpus.make_eml("Calendario", words(80),
                                                                                      attachments))])
        results.wait_for(lambda: all(outcome(results, s) for s in [mail, *ids.values()]), timeout_s=120,
                         what="the email and each attachment")
        first = {name: outcome(results, sid)[0] for name, sid in ids.items()}
        assert isinstance(outcome(results, mail)[0], DocumentNormalized)
        assert first["bomb"].reason is RejectReason.BOMB  # rejected alone: the rest went on
        assert part_text(local_stack, first["report"].part_key)[0] == report
        assert part_text(local_stack, first["notes"].part_key)[0] == notes  # inside the forwarded message
        assert isinstance(first["fwd"], DocumentNormalized)

        # an Outlook message's attachments likewise
        annex = words(90)
        await discover(local_stack, prefix, [corpus.Doc("nota.msg", outlook.make_msg(
            "Nota", "Personal", words(60), [("anexo.md", annex.encode())]))])
        results.wait_for(lambda: outcome(results, f"{prefix}:nota.msg#anexo.md"), what="the MSG's attachment")
        assert outcome(results, f"{prefix}:nota.msg")[0].media_type == media.MSG
        assert part_text(local_stack, outcome(results, f"{prefix}:nota.msg#anexo.md")[0].part_key)[0] == annex

        # a new version of the email without the report: the report goes, the others stay
        await discover(local_stack, prefix, [corpus.Doc("aviso.eml", corpus.make_eml("Calendario", words(80),
                                                                                      attachments[1:]))])
        results.wait_for(lambda: gone(ids["report"]), what="the dropped attachment deleted")
        assert not gone(ids["fwd"]) and not gone(ids["notes"])

        await delete(local_stack, mail)
        # a tombstone is stored before its event is published: wait for both, then check the events
        results.wait_for(lambda: all(gone(s) and outcome(results, s)[-1].deleted
                                     for s in (mail, ids["fwd"], ids["notes"])),
                         timeout_s=60, what="the email and every attachment it held deleted, and their events")
        assert outcome(results, ids["report"])[-1].deleted and outcome(results, ids["notes"])[-1].deleted

        # forgetting the email forgets what any of its versions held, down to the forwarded message's
        forgot = subprocess.run([AFINA, "forget", mail], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "AFINA_STATE_DIR": str(local_stack.state_dir)})
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    # sorted; the bomb too: its deletion left a tombstone
    assert f"and the 3 documents it held: {ids['fwd']}, {ids['bomb']}, {ids['report']}" in forgot.stdout
    assert not any(list_parts(s3, sid) for sid in ids.values()) and not list_parts(s3, mail)


async def test_forget_takes_a_document_out_of_everything_and_marks_the_versions_trained_on_it(
        local_stack, results, tmp_path):
    """`afina forget a.txt`: its parts and raw bytes go (its copy b.txt, normalized again, keeps the
    bytes they share), and a version trained on a snapshot that held it is marked."""
    prefix = f"g{uuid.uuid4().hex[:10]}"
    rng = random.Random(prefix)  # bytes of this run alone: the test stack keeps earlier runs' documents
    words = lambda: " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))  # noqa: E731
                             for _ in range(200)).encode()
    shared, alone = words(), words()
    a, b, c = (f"{prefix}:{name}.txt" for name in "abc")
    s3 = minio_client(local_stack)
    kinds = lambda sid: [type(x).__name__ for x in outcome(results, sid)]  # noqa: E731
    env = {**os.environ, "AFINA_STATE_DIR": str(local_stack.state_dir)}
    with normalizer(local_stack, tmp_path):
        await discover(local_stack, prefix, [corpus.Doc("a.txt", shared), corpus.Doc("c.txt", alone)])
        results.wait_for(lambda: kinds(a) == kinds(c) == ["DocumentNormalized"], what="a and c normalized")
        await discover(local_stack, prefix, [corpus.Doc("b.txt", shared)])
        results.wait_for(lambda: kinds(b) == ["DocumentRejected"], what="b rejected as a's copy")
        frozen = snapshots.freeze(s3)
        version = registry.reserve_version(s3)
        registry.register_version(s3, registry.ModelCard(version=version, kind="adapter", base_model="afina-tiny",
                                                         base_version=0, snapshot_id=frozen.id), b"{}")
        try:
            forgot = subprocess.run([AFINA, "forget", a], env=env, capture_output=True, text=True, timeout=300)
            assert forgot.returncode == 0, forgot.stdout + forgot.stderr
            alone_too = subprocess.run([AFINA, "forget", c], env=env, capture_output=True, text=True, timeout=300)
            assert alone_too.returncode == 0 and "0 kept" in alone_too.stdout, alone_too.stdout + alone_too.stderr
            results.wait_for(lambda: kinds(b) == ["DocumentRejected", "DocumentNormalized"], timeout_s=90,
                             what="b normalized again")
            assert list_parts(s3, a) == [] and list_parts(s3, c) == []
            assert stat_object(s3, Bucket.RAW, hashlib.sha256(alone).hexdigest()) is None  # c's bytes: gone
            assert stat_object(s3, Bucket.RAW, hashlib.sha256(shared).hexdigest()) is not None  # b has them
            assert "1 kept" in forgot.stdout and f"v{version}" in forgot.stdout
            assert registry.forgotten(s3, version) == [a, c]
            listed = subprocess.run([AFINA, "models", "list"], env=env, capture_output=True, text=True).stdout
            assert "trained on 2 forgotten document(s)" in listed
            again = subprocess.run([AFINA, "forget", a], env=env, capture_output=True, text=True, timeout=60)
            assert again.returncode == 1 and "holds no part" in again.stderr
        finally:
            for obj in list(s3.list_objects(Bucket.MODELS, prefix=f"versions/{version}/", recursive=True)):
                s3.remove_object(Bucket.MODELS, obj.object_name)


async def test_large_documents_are_held_a_budget_at_a_time(local_stack, results, tmp_path):
    """Six documents of 0.6 MB in one batch, with a budget of 1 MB: never more than the budget in
    memory at once (one at a time, here), and every document still normalized."""
    prefix = f"m{uuid.uuid4().hex[:10]}"
    rng = random.Random(prefix)  # bytes of this run alone: the test stack keeps earlier runs' documents
    word = lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7))  # noqa: E731
    docs = [corpus.Doc(f"big-{i}.txt", " ".join(word() for _ in range(80_000)).encode()) for i in range(6)]
    assert all(600_000 < len(doc.data) < 1 << 20 for doc in docs)
    with normalizer(local_stack, tmp_path, AFINA_NORMALIZER_MAX_INFLIGHT_MB="1") as proc:
        sent = await discover(local_stack, prefix, docs)
        results.wait_for(lambda: all(outcome(results, s) for s in sent), timeout_s=300, what="every big document")
        metrics = httpx.get(proc.metrics_url).text
    assert all(isinstance(outcome(results, s)[0], DocumentNormalized) for s in sent), [outcome(results, s) for s in sent]
    peak = next(float(line.split()[1]) for line in metrics.splitlines()
                if line.startswith("afina_normalizer_inflight_bytes_peak "))
    assert max(len(doc.data) for doc in docs) <= peak <= 1 << 20


async def test_two_replicas_agree_on_which_duplicate_came_first(local_stack, results, tmp_path):
    prefix = f"r{uuid.uuid4().hex[:10]}"
    rng = random.Random(prefix)  # bytes of this run alone: the test stack keeps earlier runs' documents
    words = "alfa beta gamma delta epsilon zeta eta theta iota kappa lambda sigma omega".split()
    originals = [" ".join(rng.choice(words) + rng.choice(words) for _ in range(150)) for _ in range(12)]
    docs = [corpus.Doc(f"{copy}-{i}.txt", text.encode()) for i, text in enumerate(originals) for copy in ("a", "b")]
    with normalizer(local_stack, tmp_path, "one"), normalizer(local_stack, tmp_path, "two"):
        sent = await discover(local_stack, prefix, docs)
        results.wait_for(lambda: all(outcome(results, s) for s in sent), timeout_s=180)
    for i in range(len(originals)):
        pair = [outcome(results, f"{prefix}:{copy}-{i}.txt")[0] for copy in ("a", "b")]
        assert sorted(type(e).__name__ for e in pair) == ["DocumentNormalized", "DocumentRejected"], pair
    # both replicas took part: each one's log names documents of this run it normalized or rejected
    handled = {name: (tmp_path / f"{name}.log").read_text().count(f'"source_id": "{prefix}:') for name in ("one", "two")}
    assert all(handled.values()), handled


async def test_sigkill_mid_stream_loses_nothing_and_writes_nothing_twice(local_stack, results, tmp_path):
    prefix = f"k{uuid.uuid4().hex[:10]}"
    rng = random.Random(7)
    vocabulary = [f"{a}{b}" for a in ("pre", "con", "tra", "des", "inter", "sub") for b in (
        "venta", "cargo", "forma", "mando", "puesto", "torno", "gasto", "plazo", "grupo", "marca")]
    docs = [corpus.Doc(f"doc-{i:02}.txt", " ".join(rng.choice(vocabulary) for _ in range(120)).encode())
            for i in range(80)]
    with normalizer(local_stack, tmp_path, "first") as proc:
        sent = await discover(local_stack, prefix, docs)
        results.wait_for(lambda: sum(1 for s in sent if outcome(results, s)) >= 5, timeout_s=120)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done_before_kill = sum(1 for s in sent if outcome(results, s))
    assert done_before_kill < len(sent), "the kill came too late to test anything"
    with normalizer(local_stack, tmp_path, "second"):
        results.wait_for(lambda: all(outcome(results, s) for s in sent), timeout_s=240, what="all documents")
    s3 = minio_client(local_stack)
    for source_id in sent:
        kinds = {type(e).__name__ for e in outcome(results, source_id)}
        assert kinds == {"DocumentNormalized"}, f"{source_id}: {outcome(results, source_id)}"
        stored = list_parts(s3, source_id)
        assert len(stored) == 1, f"{source_id} has {len(stored)} parts"
