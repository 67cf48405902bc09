"""The connector's pure parts: names, decisions, notifications, hashing, scheduling."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os

import pytest

from services.connector.bucket import keys_in
from services.connector.digest import HashingReader, sha256_of
from services.connector.inbox import (
    Unreadable,
    is_ignored,
    open_document,
    relative,
    source_id,
    walk,
)
from services.connector.index import decide
from services.connector.scheduler import Scheduler
from services.contracts import ChangeKind, IndexEntry

SHA_A, SHA_B = "a" * 64, "b" * 64


@pytest.mark.parametrize("rel", [".hidden", "dir/.DS_Store", ".git/config", "~$report.docx", ".~lock.a.odt#",
                                 "video.mp4.part", "x.tmp", "file.crdownload", "notes.txt~", "a/.b/c.txt"])
def test_ignored(rel):
    assert is_ignored(rel)


@pytest.mark.parametrize("rel", ["report.docx", "-leading.txt", "con espacio ñ.pdf", "a/b/c.md", "new\nline.txt"])
def test_not_ignored(rel):
    assert not is_ignored(rel)


def test_source_ids_are_stable_and_printable(tmp_path):
    assert source_id("folder", "a/b.txt") == "folder:a/b.txt"
    undecodable = os.fsdecode(b"caf\xe9.txt")  # Latin-1 bytes in a name: not UTF-8
    assert source_id("folder", undecodable) == "folder:caf\\xe9.txt"
    assert relative(tmp_path, tmp_path / "x" / "y") == "x/y"
    assert relative(tmp_path, tmp_path.parent) is None


@pytest.mark.parametrize(
    ("previous", "sha", "expected"),
    [
        (None, SHA_A, ChangeKind.CREATED),
        (IndexEntry(sha256=SHA_A), SHA_A, None),  # same bytes saved again
        (IndexEntry(sha256=SHA_A), SHA_B, ChangeKind.UPDATED),
        (IndexEntry(sha256=SHA_A), None, ChangeKind.DELETED),
        (IndexEntry(deleted=True), SHA_A, ChangeKind.CREATED),  # back after a delete
        (IndexEntry(deleted=True), None, None),
        (None, None, None),
        (IndexEntry(rejected=True, size=10), SHA_A, ChangeKind.CREATED),  # shrunk under the limit
        (IndexEntry(rejected=True, size=10), None, None),  # never published: nothing to delete
    ],
)
def test_decide(previous, sha, expected):
    assert decide(previous, sha) == expected


def test_bucket_notification_keys_are_url_decoded():
    record = {"EventName": "s3:ObjectCreated:Put", "Key": "inbox/a b/ñ+1.pdf",
              "Records": [{"eventName": "s3:ObjectCreated:Put",
                           "s3": {"bucket": {"name": "inbox"}, "object": {"key": "a+b%2F%C3%B1%2B1.pdf", "size": 3}}}]}
    assert keys_in(json.dumps(record).encode(), "inbox") == ["a b/ñ+1.pdf"]
    assert keys_in(json.dumps(record).encode(), "raw") == []
    with pytest.raises(ValueError, match="not a MinIO bucket notification"):
        keys_in(b'{"hello": 1}', "inbox")


def test_hashing_is_streamed_and_verifies_uploads():
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest, size, head = sha256_of(io.BytesIO(data), 100)
    assert (digest, size, head) == (hashlib.sha256(data).hexdigest(), len(data), data[:100])
    reader = HashingReader(io.BytesIO(data))
    while reader.read(65536):
        pass
    assert reader.hexdigest() == digest


def test_open_document_refuses_links_out_and_fifos(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    (inbox / "out").symlink_to(tmp_path / "outside.txt")
    (inbox / "real.txt").write_text("ok")
    (inbox / "in").symlink_to(inbox / "real.txt")
    os.mkfifo(inbox / "fifo")
    with pytest.raises(Unreadable, match="outside the inbox"):
        open_document(inbox, "out")
    with pytest.raises(Unreadable, match="not a regular file"):
        open_document(inbox, "fifo")
    with pytest.raises(FileNotFoundError):
        open_document(inbox, "missing.txt")
    file, _ = open_document(inbox, "in")
    with file:
        assert file.read() == b"ok"
    assert sorted(walk(inbox)) == ["fifo", "in", "out", "real.txt"]  # walk lists; open decides


def test_open_document_refuses_a_folder_on_the_path_that_is_a_link(tmp_path):
    """Only the last component was checked: ``d/x.txt`` with ``d`` a link to a private folder was read."""
    inbox, private = tmp_path / "inbox", tmp_path / "private"
    (inbox / "real").mkdir(parents=True)
    private.mkdir()
    (private / "x.txt").write_text("secret")
    (inbox / "real" / "x.txt").write_text("ok")
    (inbox / "d").symlink_to(private)
    (inbox / "inside").symlink_to(inbox / "real")  # a folder link, even within the inbox, is not followed
    for rel in ("d/x.txt", "inside/x.txt"):
        with pytest.raises(Unreadable, match="folder on the path is a symbolic link"):
            open_document(inbox, rel)
    file, _ = open_document(inbox, "real/x.txt")
    with file:
        assert file.read() == b"ok"


async def test_scheduler_coalesces_bursts_serializes_and_retries():
    runs: list[str] = []
    failing = {"flaky": 1}
    concurrent = 0
    most = 0

    async def run(key: str) -> None:
        nonlocal concurrent, most
        concurrent += 1
        most = max(most, concurrent)
        await asyncio.sleep(0.05)
        concurrent -= 1
        if failing.get(key, 0) > 0:
            failing[key] -= 1
            raise ConnectionError("Kafka is away")
        runs.append(key)

    scheduler = Scheduler(run, workers=4, log=logging.getLogger("test"))
    workers = await scheduler.start()
    for _ in range(20):
        scheduler.touch("burst", 0.05)  # one run for the whole burst
    scheduler.touch("flaky", 0)
    await asyncio.sleep(0.01)
    scheduler.touch("solo", 0)
    await asyncio.wait_for(scheduler.wait_idle(), 10)
    for worker in workers:
        worker.cancel()
    assert sorted(runs) == ["burst", "flaky", "solo"]  # flaky failed once, then succeeded
    assert most <= 3


async def test_scheduler_runs_again_when_touched_while_running():
    started = asyncio.Event()
    release = asyncio.Event()
    runs = 0

    async def run(key: str) -> None:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()

    scheduler = Scheduler(run, workers=2, log=logging.getLogger("test"))
    workers = await scheduler.start()
    scheduler.touch("doc", 0)
    await started.wait()
    scheduler.touch("doc", 0)  # changed again while it is being read
    await asyncio.sleep(0.05)
    assert runs == 1  # never two runs of one key at once
    release.set()
    await asyncio.wait_for(scheduler.wait_idle(), 5)
    for worker in workers:
        worker.cancel()
    assert runs == 2
