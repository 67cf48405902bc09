"""Start, find and stop one local server process: a pid file, a log file, a health check.

A server is "ours" when its pid file names a live process with the start time
recorded there, so ``down`` never stops a process that ``up`` did not start, even
after the OS reused the pid.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class StackError(RuntimeError):
    """Something a person must fix before the stack can run; the message says what."""


@dataclass
class ManagedProcess:
    name: str
    state_dir: Path
    port: int
    health: Callable[[], bool]
    extra_ports: tuple[int, ...] = field(default=())

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of our live process, or None."""
        try:
            pid, started = (int(v) for v in self.pid_file.read_text().split())
        except (FileNotFoundError, ValueError):
            return None
        if _start_ticks(pid) != started:
            return None  # gone, or the pid now belongs to another process
        return pid

    def check_ports_free(self) -> None:
        for port in (self.port, *self.extra_ports):
            if port_in_use(port):
                raise StackError(
                    f"{self.name}: port {port} on 127.0.0.1 is already in use by another program. "
                    f"Stop that program, or give afina another port (see the AFINA_* settings in the README)."
                )

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # its own process group: down stops it and its children
            )
        self.pid_file.write_text(f"{proc.pid} {_start_ticks(proc.pid)}")

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise StackError(f"{self.name} exited during start-up; its log is {self.log_file}:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.25)
        raise StackError(
            f"{self.name} did not become healthy within {timeout_s:.0f} s; its log is {self.log_file}:\n{self.log_tail()}"
        )

    def healthy(self) -> bool:
        try:
            return self.health()
        except Exception:  # any failure of a probe means "not yet"
            return False

    def stop(self, timeout_s: float = 30) -> bool:
        """Stop our process group; True when there was one to stop."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_file, lines)


def log_tail(log_file: Path, lines: int = 20) -> str:
    """The last lines of a log, for an error message that shows why a process failed."""
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


FREE_PORTS_BELOW_EPHEMERAL = 2000  # free_port draws from this many ports under the ephemeral range


_handed_out: set[int] = set()  # free_port's answers so far: none is given twice


def free_port() -> int:
    """A port nothing listens on now, for a server started next, and not one this process was
    handed before (a stack's services get several at once, and bind them later). It is drawn from
    just below the kernel's ephemeral range: a port inside it may be taken by some client's outgoing
    connection before the server binds it (a test stack's inference service once failed to start that way)."""
    low = ephemeral_ports()[0]
    candidates = [port for port in range(max(1024, low - FREE_PORTS_BELOW_EPHEMERAL), low) if port not in _handed_out]
    for port in random.sample(candidates, min(len(candidates), 100)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # nothing free there: any port the kernel gives
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel picks clients' local ports from (Linux; its default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_tool(command: str, what_for: str, how_to_get: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise StackError(f"'{command}' was not found on PATH; it is needed {what_for}. {how_to_get}")
    return path


def run_checked(argv: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                echo: Callable[[str], None] | None = None, every_s: float = 20) -> str:
    """Run a set-up command; on failure raise with its output, so the reason is visible. With
    ``echo``, say what runs and, every ``every_s`` while it does, how long it has taken."""
    started, done = time.monotonic(), threading.Event()

    def tell() -> None:
        while not done.wait(every_s):
            elapsed = int(time.monotonic() - started)
            echo(f"  ... still {what.split(' (')[0]}: {elapsed // 60} min {elapsed % 60:02d} s so far")

    if echo is not None:
        echo(f"  {what} ...")
        threading.Thread(target=tell, daemon=True).start()
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True
        )
    finally:
        done.set()
    if echo is not None and proc.returncode == 0:
        echo(f"  {what}: done in {time.monotonic() - started:.0f} s")
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
        raise StackError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n" + "\n".join(output))
    return proc.stdout


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return None if fields[0] == "Z" else int(fields[19])


def _alive(pid: int) -> bool:
    return _start_ticks(pid) is not None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
