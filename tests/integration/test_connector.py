"""The connector as a real process against the real Kafka and MinIO: exact events for each change."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from control import localstack
from services.contracts import (
    Bucket,
    ChangeKind,
    DocumentDiscovered,
    DocumentRejected,
    RejectReason,
)
from services.storage import minio_client, stat_object
from tests.integration.harness import AFINA, Inbox, afina_service, wait_for_log

pytestmark = pytest.mark.integration


def kinds(events, source_id: str) -> list[str]:
    return [str(e.kind) for e in events if isinstance(e, DocumentDiscovered) and e.source_id == source_id]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def settle(seconds: float = 2.5) -> None:
    """Leave time for any event that should NOT come (duplicates) to show up."""
    time.sleep(seconds)


def test_folder_create_resave_edit_delete(local_stack, event_log, tmp_path):
    inbox = Inbox(local_stack, tmp_path)
    with inbox.connector():
        doc = inbox.dir / "manual.md"
        doc.write_text("# Manual\n\nVacaciones: 23 días laborables.\n")
        first = doc.read_bytes()
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("manual.md")) == ["created"])

        doc.write_bytes(first)  # saved again, same bytes
        settle()
        assert kinds(event_log.events, inbox.sid("manual.md")) == ["created"]

        doc.write_text("# Manual\n\nVacaciones: 25 días laborables.\n")
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("manual.md")) == ["created", "updated"])

        doc.unlink()
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("manual.md")) == ["created", "updated", "deleted"])

    created, updated, deleted = event_log.about(inbox.sid("manual.md"))
    assert (created.sha256, created.size, created.media_type) == (sha(first), len(first), "text/markdown")
    assert updated.sha256 == sha("# Manual\n\nVacaciones: 25 días laborables.\n".encode())
    assert (deleted.sha256, deleted.size) == (None, None)
    # claim check: the bytes are in raw/<sha256>
    assert minio_client(local_stack).get_object(Bucket.RAW, created.sha256).read() == first


def test_rename_is_delete_plus_create_and_content_decides_type(local_stack, event_log, tmp_path):
    inbox = Inbox(local_stack, tmp_path)
    with inbox.connector():
        (inbox.dir / "sub").mkdir()
        (inbox.dir / "sub" / "report.txt").write_bytes(b"%PDF-1.7\n" + os.urandom(64))  # a PDF named .txt
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("sub/report.txt")) == ["created"])
        (inbox.dir / "sub" / "report.txt").rename(inbox.dir / "sub" / "report.pdf")
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("sub/report.pdf")) == ["created"])
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("sub/report.txt")) == ["created", "deleted"])
        (inbox.dir / "sub").rename(inbox.dir / "moved")  # a folder: its files send no events of their own
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("moved/report.pdf")) == ["created"])
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("sub/report.pdf")) == ["created", "deleted"])
    assert {e.media_type for e in event_log.about(inbox.sid("")) if e.kind != ChangeKind.DELETED} == {"application/pdf"}


def test_ignored_odd_and_unreadable_names(local_stack, event_log, tmp_path):
    inbox = Inbox(local_stack, tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the model")
    odd = ["con espacio ñandú 🎉.txt", "-leading-dash.txt", "new\nline.txt", "Ünïcödé/ça va.md"]
    ignored = [".hidden.txt", "~$draft.docx", "upload.part", "save.tmp", ".~lock.doc#", ".git/config"]
    with inbox.connector():
        for name in ignored + odd:
            (inbox.dir / name).parent.mkdir(parents=True, exist_ok=True)
            (inbox.dir / name).write_text(f"content of {name}")
        (inbox.dir / "escape.txt").symlink_to(outside)  # out of the inbox: never followed
        os.mkfifo(inbox.dir / "pipe.txt")  # would block a naive reader forever
        (inbox.dir / "zz-last.txt").write_text("the stream keeps moving")
        event_log.wait_for(lambda: all(kinds(event_log.events, inbox.sid(n)) == ["created"] for n in odd + ["zz-last.txt"]))
        settle()
        metrics = httpx.get(f"http://127.0.0.1:{inbox.metrics_port}/metrics").text

    seen = {e.source_id for e in event_log.about(inbox.sid(""))}
    assert seen == {inbox.sid(n) for n in odd + ["zz-last.txt"]}
    assert 'afina_connector_skipped_total{reason="symbolic link pointing outside the inbox"} 1.0' in metrics
    assert "afina_connector_skipped_total{reason=\"not a regular file (FIFO, socket, device or folder)\"} 1.0" in metrics
    assert 'afina_connector_events_published_total{kind="created"} 5.0' in metrics


def test_a_folder_replaced_by_a_link_out_of_the_inbox_is_never_read(local_stack, event_log, tmp_path):
    """Drop d/x.txt, swap d for a link to a private folder: the rescan must not ingest the private file."""
    inbox = Inbox(local_stack, tmp_path)
    private = tmp_path / "private"
    private.mkdir()
    (private / "x.txt").write_text(f"salario del director ({inbox.name}): 1 millón")  # unique: raw/ is shared
    (inbox.dir / "d").mkdir()
    (inbox.dir / "d" / "x.txt").write_text("horario: de 9 a 17")
    (inbox.dir / "keep.txt").write_text("stays: one of two gone is no storage fault")
    with inbox.connector():
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("d/x.txt")) == ["created"])
    (inbox.dir / "d").rename(tmp_path / "d-gone")
    (inbox.dir / "d").symlink_to(private)
    with inbox.connector():  # its start-up reconcile re-reads every indexed path
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("d/x.txt")) == ["created", "deleted"])
        settle()
    secret = sha((private / "x.txt").read_bytes())
    assert secret not in {e.sha256 for e in event_log.about(inbox.sid(""))}
    assert stat_object(minio_client(local_stack), Bucket.RAW, secret) is None


def test_a_missing_inbox_folder_deletes_nothing_and_is_waited_for(local_stack, event_log, tmp_path):
    """An unmounted drive looked like every document deleted: the folder was recreated empty, or
    walked as empty by the rescan, and each indexed document was tombstoned."""
    inbox = Inbox(local_stack, tmp_path, AFINA_CONNECTOR_RESCAN_S="0.5")
    (inbox.dir / "a.txt").write_text("política de viajes")
    (inbox.dir / "b.txt").write_text("política de gastos")
    away = tmp_path / "unmounted"
    with inbox.connector():
        event_log.wait_for(lambda: all(kinds(event_log.events, inbox.sid(n)) == ["created"] for n in ("a.txt", "b.txt")))
        inbox.dir.rename(away)  # while running: several rescans find nothing there
        settle()
        assert "inbox folder refused" in inbox.log.read_text()
    assert not inbox.dir.exists()
    with afina_service(["connector"], inbox.env, inbox.log, ready="a drive not mounted?"):
        settle(1)
        assert not inbox.dir.exists()  # not created empty at start-up either
        assert "afina_connector_inbox_refused 1.0" in httpx.get(f"http://127.0.0.1:{inbox.metrics_port}/metrics").text
        away.rename(inbox.dir)
        wait_for_log(inbox.log, '"msg": "connector ready"')
        settle()
    assert all(kinds(event_log.events, inbox.sid(n)) == ["created"] for n in ("a.txt", "b.txt"))


def test_a_second_inbox_with_the_same_name_is_refused(local_stack, event_log, tmp_path):
    """Two connectors given one AFINA_INBOX_NAME tombstoned each other's documents at start-up."""
    first = Inbox(local_stack, tmp_path / "first")
    (first.dir / "mine.txt").write_text("manual de la primera sede")
    with first.connector():
        event_log.wait_for(lambda: kinds(event_log.events, first.sid("mine.txt")) == ["created"])
    second = Inbox(local_stack, tmp_path / "second")
    (second.dir / "theirs.txt").write_text("manual de la segunda sede")
    with afina_service(["connector"], {**second.env, "AFINA_INBOX_NAME": first.name}, second.log,
                       ready="has no .afina-inbox file"):  # a new folder: it may be the first one unmounted
        settle()
    with second.connector():  # once an inbox of its own, it holds a marker with its own id
        event_log.wait_for(lambda: kinds(event_log.events, second.sid("theirs.txt")) == ["created"])
    with afina_service(["connector"], {**second.env, "AFINA_INBOX_NAME": first.name}, second.log,
                       ready="belongs to another folder"):
        settle()
    assert kinds(event_log.events, first.sid("mine.txt")) == ["created"]
    assert kinds(event_log.events, first.sid("theirs.txt")) == []


def test_a_rescan_that_finds_most_documents_gone_deletes_none(local_stack, event_log, tmp_path):
    inbox = Inbox(local_stack, tmp_path)
    names = [f"doc{i}.txt" for i in range(4)]
    for name in names:
        (inbox.dir / name).write_text(f"contenido {name}")
    with inbox.connector():
        event_log.wait_for(lambda: all(kinds(event_log.events, inbox.sid(n)) == ["created"] for n in names))
    for name in names[1:]:
        (inbox.dir / name).unlink()  # three of four gone while it was down
    with inbox.connector():
        settle()
    assert "none is deleted" in inbox.log.read_text()
    assert all(kinds(event_log.events, inbox.sid(n)) == ["created"] for n in names)
    inbox.env["AFINA_CONNECTOR_MAX_DELETE_SHARE"] = "1"  # on purpose: the user says so
    with inbox.connector():
        event_log.wait_for(lambda: all(kinds(event_log.events, inbox.sid(n)) == ["created", "deleted"] for n in names[1:]))
    assert kinds(event_log.events, inbox.sid(names[0])) == ["created"]


def test_slow_writer_gives_one_event_when_complete(local_stack, event_log, tmp_path):
    inbox = Inbox(local_stack, tmp_path)
    pieces = [f"parte {i}: {'x' * 1000}\n".encode() for i in range(10)]
    with inbox.connector():
        with (inbox.dir / "slow.txt").open("wb") as file:
            for piece in pieces:
                file.write(piece)
                file.flush()
                time.sleep(0.2)
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("slow.txt")) == ["created"])
        settle()
    (event,) = event_log.about(inbox.sid("slow.txt"))
    assert event.sha256 == sha(b"".join(pieces)) and event.size == len(b"".join(pieces))


def test_changes_while_stopped_are_found_at_start(local_stack, event_log, tmp_path):
    inbox = Inbox(local_stack, tmp_path)
    with inbox.connector():
        for name in ("keep.txt", "edit.txt", "remove.txt"):
            (inbox.dir / name).write_text(f"first {name}")
        event_log.wait_for(lambda: len(event_log.about(inbox.sid(""))) == 3)
    (inbox.dir / "edit.txt").write_text("second version")
    (inbox.dir / "remove.txt").unlink()
    (inbox.dir / "new.txt").write_text("arrived while the connector was down")
    with inbox.connector():
        event_log.wait_for(lambda: len(event_log.about(inbox.sid(""))) == 6)
        settle()
    assert kinds(event_log.events, inbox.sid("keep.txt")) == ["created"]
    assert kinds(event_log.events, inbox.sid("edit.txt")) == ["created", "updated"]
    assert kinds(event_log.events, inbox.sid("remove.txt")) == ["created", "deleted"]
    assert kinds(event_log.events, inbox.sid("new.txt")) == ["created"]


def test_too_large_is_rejected_not_read(local_stack, event_log, tmp_path):
    inbox = Inbox(local_stack, tmp_path, AFINA_CONNECTOR_MAX_FILE_BYTES="1000")
    with inbox.connector():
        (inbox.dir / "big.bin").write_bytes(b"z" * 2000)
        (inbox.dir / "small.txt").write_text("fits")
        event_log.wait_for(lambda: len(event_log.about(inbox.sid(""))) == 2)
        settle()
    rejected = [e for e in event_log.about(inbox.sid("big.bin"))]
    assert len(rejected) == 1 and isinstance(rejected[0], DocumentRejected)
    assert rejected[0].reason is RejectReason.TOO_LARGE and rejected[0].stage == "connector"
    assert "2000 bytes" in rejected[0].message and "AFINA_CONNECTOR_MAX_FILE_BYTES" in rejected[0].message
    assert kinds(event_log.events, inbox.sid("small.txt")) == ["created"]


def test_a_file_grown_past_the_limit_takes_its_older_text_out_of_the_dataset(local_stack, event_log, tmp_path):
    """The newest version wins, even an unusable one: a document that grows past the size limit is
    rejected and published as deleted, so its earlier version's part is tombstoned (before, the
    old text stayed trainable and its later deletion published nothing)."""
    inbox = Inbox(local_stack, tmp_path, AFINA_CONNECTOR_MAX_FILE_BYTES="1000")
    sid = inbox.sid("grows.txt")
    with inbox.connector():
        (inbox.dir / "grows.txt").write_text("a short first version")
        event_log.wait_for(lambda: kinds(event_log.events, sid) == ["created"])
        (inbox.dir / "grows.txt").write_text("much longer " * 200)
        event_log.wait_for(lambda: len(event_log.about(sid)) == 3, what="the rejection and the deletion")
        (inbox.dir / "grows.txt").unlink()
        settle()
    rejected = [e for e in event_log.about(sid) if isinstance(e, DocumentRejected)]
    assert [e.reason for e in rejected] == [RejectReason.TOO_LARGE]
    assert kinds(event_log.events, sid) == ["created", "deleted"]  # deleted once: when it grew past the limit


def test_large_file_is_streamed_in_bounded_memory(local_stack, event_log, tmp_path):
    inbox = Inbox(local_stack, tmp_path)
    size = 200 * 1024 * 1024
    digest = hashlib.sha256()
    source = tmp_path / "large.bin"
    with source.open("wb") as file:
        for _ in range(size // (8 * 1024 * 1024)):
            block = os.urandom(8 * 1024 * 1024)
            digest.update(block)
            file.write(block)
    with inbox.connector() as proc:
        baseline = _rss_kib(proc.pid, "VmRSS")
        os.replace(source, inbox.dir / "large.bin")  # arrives complete, by rename
        event_log.wait_for(lambda: kinds(event_log.events, inbox.sid("large.bin")) == ["created"], timeout_s=180)
        peak = _rss_kib(proc.pid, "VmHWM")
    (event,) = event_log.about(inbox.sid("large.bin"))
    s3 = minio_client(local_stack)
    try:
        assert event.sha256 == digest.hexdigest() and event.size == size
        assert s3.stat_object(Bucket.RAW, event.sha256).size == size
        growth_mib = (peak - baseline) / 1024
        assert growth_mib < 64, f"connector memory grew by {growth_mib:.0f} MiB for a 200 MiB file"
    finally:
        s3.remove_object(Bucket.RAW, event.sha256)


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def test_bucket_create_update_delete_and_found_at_start(local_stack, event_log, tmp_path):
    inbox = Inbox(local_stack, tmp_path, AFINA_CONNECTOR_WATCH_BUCKET="true")
    s3 = minio_client(local_stack)
    prefix = f"tests/{uuid.uuid4().hex}/"
    key = prefix + "Informe Año 2026 (final)+v2.html"
    first = b"<!doctype html><html><body><p>Pol\xc3\xadtica de viajes</p></body></html>"
    sid = f"bucket:inbox/{key}"
    with inbox.connector():
        s3.put_object(Bucket.INBOX, key, io.BytesIO(first), len(first))
        event_log.wait_for(lambda: kinds(event_log.events, sid) == ["created"])
        s3.put_object(Bucket.INBOX, key, io.BytesIO(first), len(first))  # same bytes again
        s3.put_object(Bucket.INBOX, key, io.BytesIO(first + b"<!-- v3 -->"), len(first) + 11)
        event_log.wait_for(lambda: kinds(event_log.events, sid) == ["created", "updated"])
        s3.remove_object(Bucket.INBOX, key)
        event_log.wait_for(lambda: kinds(event_log.events, sid) == ["created", "updated", "deleted"])
        # `afina drop --bucket` uploads through the same path
        dropped = tmp_path / f"nota rápida {prefix[6:14]}.txt"  # its own key: a failed run leaves no twin
        dropped.write_text("dejar aquí")
        subprocess.run([AFINA, "drop", "--bucket", str(dropped)], env={**os.environ, **inbox.env}, check=True)
        event_log.wait_for(lambda: kinds(event_log.events, f"bucket:inbox/{dropped.name}") == ["created"])
    later = prefix + "while-down.txt"
    s3.put_object(Bucket.INBOX, later, io.BytesIO(b"uploaded while no connector ran"), 31)
    with inbox.connector():
        event_log.wait_for(lambda: kinds(event_log.events, f"bucket:inbox/{later}") == ["created"])
        settle()
    created = event_log.about(sid)[0]
    assert (created.sha256, created.media_type) == (sha(first), "text/html")
    assert s3.get_object(Bucket.RAW, created.sha256).read() == first
    assert kinds(event_log.events, sid) == ["created", "updated", "deleted"]
    s3.remove_object(Bucket.INBOX, later)
    s3.remove_object(Bucket.INBOX, dropped.name)


def test_drop_into_folder(local_stack, event_log, tmp_path):
    inbox = Inbox(local_stack, tmp_path)
    files = []
    for name in ("a.txt", "-b.txt"):
        (tmp_path / name).write_text(f"dropped {name}")
        files.append(str(tmp_path / name))
    with inbox.connector():
        result = subprocess.run([AFINA, "drop", "--", *files], env={**os.environ, **inbox.env},
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        event_log.wait_for(lambda: len(event_log.about(inbox.sid(""))) == 2)
    assert sorted(e.source_id for e in event_log.about(inbox.sid(""))) == [inbox.sid("-b.txt"), inbox.sid("a.txt")]


def test_kafka_down_for_a_while_loses_nothing(local_stack, event_log, tmp_path):
    inbox = Inbox(local_stack, tmp_path)
    with inbox.connector():
        localstack.down(local_stack, only=["kafka"])
        try:
            for i in range(5):
                (inbox.dir / f"during-outage-{i}.txt").write_text(f"written while Kafka was down {i}")
            time.sleep(5)
        finally:
            localstack.up(local_stack, echo=lambda line: None)
        event_log.wait_for(lambda: len(event_log.about(inbox.sid(""))) >= 5, timeout_s=120)
        settle(4)
    log = inbox.log.read_text()
    assert "Connect call failed" in log or "will retry" in log  # the outage was felt, and outlived
    assert sorted(e.source_id for e in event_log.about(inbox.sid(""))) == [
        inbox.sid(f"during-outage-{i}.txt") for i in range(5)]
