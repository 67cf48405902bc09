"""`afina doctor`: what it finds on real sockets, a real PATH and real files, and what it tells a person."""

from __future__ import annotations

import os
import socket
import time
from collections import namedtuple
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control import doctor
from control.cli import app
from control.doctor import Check
from control.localstack import kafka
from control.localstack.process import _start_ticks, free_port
from services.settings import Settings


@pytest.fixture
def held_port():
    """A port another program listens on (this test, on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def by_name(results: list[Check], name: str) -> Check:
    [found] = [check for check in results if check.name == name]
    return found


def fake_tool(folder: Path, name: str, answer: str) -> None:
    """A command on PATH that answers like the real one (on stderr, as `java -version` does)."""
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{answer}' >&2\n")
    path.chmod(0o755)


def test_a_port_taken_by_another_program_fails_with_its_number_and_the_setting_that_moves_it(held_port, tmp_path):
    settings = Settings(state_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{held_port}")
    check = by_name(doctor.check_ports(settings), "port kafka")
    assert not check.ok and check.required
    assert str(held_port) in check.detail and "another program" in check.detail
    assert f"free port {held_port}" in check.fix and "AFINA_KAFKA_BOOTSTRAP_SERVERS" in check.fix


def test_a_free_port_is_ok(tmp_path):
    port = free_port()
    check = by_name(doctor.check_ports(Settings(state_dir=tmp_path, s3_endpoint=f"127.0.0.1:{port}")), "port minio")
    assert check.ok and check.detail == f"{port} free"


def test_a_port_held_by_afinas_own_running_server_is_ok(held_port, tmp_path):
    """`afina doctor` beside a running `afina up` must not tell a person to free afina's own ports."""
    settings = Settings(state_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{held_port}")
    pid_file = kafka.process(settings).pid_file  # this process plays the running Kafka
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{os.getpid()} {_start_ticks(os.getpid())}")
    check = by_name(doctor.check_ports(settings), "port kafka")
    assert check.ok and f"afina's running kafka (pid {os.getpid()})" in check.detail


def test_two_servers_configured_on_one_port_fail(tmp_path):
    """Each port alone looks free, yet the second server to start would fail."""
    settings = Settings(state_dir=tmp_path, s3_endpoint="127.0.0.1:9500", s3_console_port=9500)
    check = by_name(doctor.check_ports(settings), "ports distinct")
    assert not check.ok and check.required and "9500: minio and minio console" in check.detail
    assert "AFINA_S3_CONSOLE_PORT" in check.fix


def test_without_java_on_path_the_java_check_fails_and_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    check = doctor.check_java()
    assert not check.ok and check.required and "not found" in check.detail
    assert "JDK 17" in check.fix


def test_an_old_java_fails_and_a_new_one_passes(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    fake_tool(tmp_path, "java", 'openjdk version "11.0.22" 2024-01-16')
    old = doctor.check_java()
    assert not old.ok and "Java 11" in old.detail and old.fix
    fake_tool(tmp_path, "java", 'openjdk version "21" 2023-09-19')
    assert doctor.check_java().ok


@pytest.mark.parametrize(("answer", "major"), [
    ('openjdk version "17.0.15" 2025-04-15', 17), ('java version "1.8.0_392"', 8),
    ('openjdk version "21" 2023-09-19', 21), ("command not found", None)])
def test_java_versions_are_read_as_java_writes_them(answer, major):
    assert doctor.java_major(answer) == major


def test_go_is_required_only_while_minio_is_not_built(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    missing = doctor.check_go(minio_built=False, test_tools_built=True)
    assert not missing.ok and missing.required and "MinIO" in missing.detail and "go.dev" in missing.fix
    for_tests_only = doctor.check_go(minio_built=True, test_tools_built=False)
    assert not for_tests_only.ok and not for_tests_only.required and "grpcurl" in for_tests_only.detail
    fake_tool(tmp_path, "go", "go version go1.22.1 linux/amd64")
    too_old = doctor.check_go(minio_built=False, test_tools_built=True)
    assert not too_old.ok and too_old.required and "1.24" in too_old.detail
    assert doctor.check_go(minio_built=True, test_tools_built=True).ok  # built: any Go will do


def test_python_outside_requires_python_fails():
    assert doctor.check_python("3.11.9", ">=3.11,<3.12").ok
    newer = doctor.check_python("3.12.1", ">=3.11,<3.12")
    assert not newer.ok and newer.required and "PYTHON=python3.11" in newer.fix


def test_little_memory_is_a_warning_not_a_failure():
    small = doctor.check_memory("MemTotal:        4000000 kB\nMemFree:  100 kB\nMemAvailable:    3000000 kB\n")
    assert not small.ok and not small.required and "3.8 GiB total" in small.detail
    assert doctor.check_memory("MemTotal: 16777216 kB\nMemAvailable: 8388608 kB\n").ok


@pytest.mark.parametrize(("free_gib", "ok", "required"), [(50, True, True), (5, False, False), (1, False, True)])
def test_disk_warns_then_fails_as_it_fills(monkeypatch, tmp_path, free_gib, ok, required):
    usage = namedtuple("usage", "total used free")(100 * doctor.GiB, 0, free_gib * doctor.GiB)
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: usage)
    check = doctor.check_disk(tmp_path / "not" / "made" / "yet")
    assert (check.ok, check.required) == (ok, required) and f"under {tmp_path}" in check.detail


def test_tools_not_built_yet_are_warnings_that_say_how_they_get_built(tmp_path):
    results = doctor.run(Settings(state_dir=tmp_path))
    for name in ("kafka jars", "minio"):
        check = by_name(results, name)
        assert not check.ok and not check.required and "afina stack up" in check.fix


def test_a_check_that_raises_is_reported_as_failed_and_the_others_still_run(monkeypatch, tmp_path):
    def broken(meminfo=None):
        raise PermissionError("no /proc here")

    monkeypatch.setattr(doctor, "check_memory", broken)
    started = time.monotonic()
    results = doctor.run(Settings(state_dir=tmp_path))
    assert time.monotonic() - started < 5
    memory = by_name(results, "memory")
    assert not memory.ok and memory.required and "PermissionError: no /proc here" in memory.detail
    assert by_name(results, "java") and by_name(results, "tesseract")


def test_healthy_means_no_required_failure():
    ok, warning = Check("a", True, "fine"), Check("b", False, "meh", "do x", required=False)
    failure = Check("c", False, "bad", "do y")
    assert doctor.healthy([ok, warning]) and not doctor.healthy([ok, warning, failure])


def test_the_report_has_a_line_per_check_and_a_tally():
    lines = doctor.report([Check("python", True, "3.11.7"), Check("tesseract", False, "not found", "make ocr", False),
                           Check("java", False, "not found", "install a JDK")])
    assert lines == ["ok   python: 3.11.7", "warn tesseract: not found — make ocr",
                     "FAIL java: not found — install a JDK",
                     "1 ok, 1 warnings, 1 failed: not ready: fix the FAIL lines"]


def test_afina_doctor_prints_every_check_and_exits_1_on_a_required_failure(monkeypatch, held_port, tmp_path):
    seen: list[Check] = []
    real_run = doctor.run
    monkeypatch.setattr(doctor, "run", lambda settings: seen.extend(real_run(settings)) or seen)
    result = CliRunner().invoke(app, ["doctor"], env={
        "AFINA_STATE_DIR": str(tmp_path), "AFINA_PREFECT_API_URL": f"http://127.0.0.1:{held_port}/api"})
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) == len(seen) + 1 and lines[-1].endswith("not ready: fix the FAIL lines")
    assert [line.split(":")[0].split(" ", 1)[1].strip() for line in lines[:-1]] == [check.name for check in seen]
    assert any(line.startswith("FAIL port prefect:") and str(held_port) in line for line in lines)


def test_afina_doctor_exits_0_with_warnings_only(monkeypatch):
    monkeypatch.setattr(doctor, "run", lambda settings: [Check("python", True, "3.11.7"),
                                                         Check("tesseract", False, "not found", "make ocr", False)])
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["ok   python: 3.11.7", "warn tesseract: not found — make ocr",
                                          "1 ok, 1 warnings, 0 failed: ready"]
