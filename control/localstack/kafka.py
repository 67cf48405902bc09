"""Apache Kafka 4 in KRaft mode (one broker+controller) from its Maven Central jars.

No distribution tarball and no scripts: Maven resolves ``kafka_2.13`` with its
dependencies into a folder, and we run the two classes the scripts would run
(``kafka.tools.StorageTool`` once, then ``kafka.Kafka``).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from control.localstack.process import (
    ManagedProcess,
    StackError,
    require_tool,
    run_checked,
)
from services.contracts import TOPICS
from services.settings import Settings

KAFKA_VERSION = "4.3.1"
LOG4J_VERSION = "2.26.1"
SLF4J_VERSION = "2.0.17"  # Kafka's own pin is 1.7, which the log4j2 binding does not serve

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.afina</groupId>
  <artifactId>afina-kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{slf4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
"""


def home(tools_dir: Path) -> Path:
    return tools_dir / f"kafka-{KAFKA_VERSION}"


def installed(tools_dir: Path) -> bool:
    return (home(tools_dir) / ".complete").exists()


def install(tools_dir: Path, echo: Callable[[str], None] | None = None) -> Path:
    """Resolve the Kafka jars once into tools/kafka-<version>/libs (Maven caches the downloads)."""
    _java()
    libs = home(tools_dir) / "libs"
    if installed(tools_dir):
        return libs
    mvn = require_tool(
        "mvn", "to fetch Kafka's jars from Maven Central", "Install Maven (Debian: apt-get install maven)."
    )
    home(tools_dir).mkdir(parents=True, exist_ok=True)
    (home(tools_dir) / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION))
    run_checked(
        [mvn, "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        f"fetching Kafka {KAFKA_VERSION} jars with Maven",
        cwd=home(tools_dir), echo=echo,
    )
    (home(tools_dir) / ".complete").touch()
    return libs


def process(settings: Settings) -> ManagedProcess:
    return ManagedProcess(
        name="kafka",
        state_dir=settings.state_dir,
        port=settings.kafka_port,
        extra_ports=(settings.kafka_controller_port,),
        health=lambda: _healthy(settings),
    )


def start(settings: Settings, proc: ManagedProcess) -> None:
    java = _java()
    libs = install(settings.state_dir / "tools")
    home = settings.state_dir / "kafka"
    config = home / "server.properties"
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(_server_properties(settings, home / "data"))
    (home / "log4j2.properties").write_text(_LOG4J2)
    classpath = f"{libs}/*"
    if not (home / "data" / "meta.properties").exists():
        run_checked(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
             "-t", cluster_id(), "-c", str(config)],
            "formatting Kafka's storage",
        )
    proc.start(
        [java, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
         f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
         f"-Dkafka.logs.dir={home / 'logs'}",
         "-cp", classpath, "kafka.Kafka", str(config)],
    )


def create_topics(settings: Settings) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id="afina-stack")
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name=str(topic), num_partitions=spec.partitions, replication_factor=1,
                     topic_configs={"cleanup.policy": "compact"} if spec.compacted else {})
            for topic, spec in TOPICS.items()
            if str(topic) not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another `up` raced us; the topics are there either way
    finally:
        admin.close()


def _healthy(settings: Settings) -> bool:
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="afina-stack-health",
        request_timeout_ms=3000,
    )
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()


def _java() -> str:
    return require_tool(
        "java", "to run Kafka (Java 17 or newer)", "Install a JDK 17+ (Debian: apt-get install openjdk-17-jre-headless)."
    )


def cluster_id() -> str:
    """What `kafka-storage.sh random-uuid` prints: 16 random bytes, URL-safe base64, no padding,
    never starting with '-' (as Kafka's own Uuid.randomUuid ensures): the storage tool would read
    such an id as an option, and one `stack up` in 64 failed with "expected one argument"."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


def _server_properties(settings: Settings, data_dir: Path) -> str:
    port, controller = settings.kafka_port, settings.kafka_controller_port
    if controller == port:
        raise StackError(f"AFINA_KAFKA_CONTROLLER_PORT ({controller}) must differ from Kafka's port ({port}).")
    return f"""# written by `afina stack up`; edits are overwritten
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions=3
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
"""
