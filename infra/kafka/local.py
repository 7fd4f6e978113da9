"""Run a single-node KRaft Kafka broker from infra/kafka/.libs as a child process (no Docker)."""

import argparse
import asyncio
import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from string import Template

from contracts import TOPICS
from services.common.kafka import cluster_answers, ensure_topics

HERE = Path(__file__).resolve().parent
LIBS = HERE / ".libs"
POM = HERE / "pom.xml"
TEMPLATE = HERE / "server.properties.template"
LOG4J = HERE / "log4j2.properties"
JAVA = shutil.which("java") or "java"


class BrokerError(RuntimeError):
    """The broker could not be set up, did not start, or died."""


def cluster_id() -> str:
    """A random KRaft cluster id: 22 chars of base64url, never starting with '-' (a flag)."""
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    return cluster_id() if cid.startswith("-") else cid


def ensure_jars() -> Path:
    """The folder of broker jars, fetched with Maven first if it is empty."""
    if not any(LIBS.glob("*.jar")):
        mvn = [shutil.which("mvn") or "mvn", "-B", "-q", "-f", str(POM)]
        subprocess.run([*mvn, "dependency:copy-dependencies"], check=True)
    return LIBS


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def broker_answers(bootstrap: str, timeout: float = 5) -> bool:
    """True when a Kafka client gets cluster metadata (with a broker in it) from `bootstrap`."""
    if not _port_open(int(bootstrap.rsplit(":", 1)[1])):
        return False  # cheap check first: no JVM listening yet
    # A thread with its own loop, so this works inside a running event loop too.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, cluster_answers(bootstrap, int(timeout * 1000))).result()


def _pid_alive(pid: int) -> bool:
    try:  # a zombie nobody has reaped yet (we may not be its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class LocalBroker:
    """One broker+controller on 127.0.0.1 whose data, config, log and pid live in `data_dir`."""

    def __init__(self, data_dir: Path, port: int = 9092, controller_port: int = 9093,
                 heap_mb: int = 512, log_file: Path | None = None) -> None:  # fmt: skip
        self.data_dir = Path(data_dir).resolve()
        self.port, self.controller_port, self.heap_mb = port, controller_port, heap_mb
        self.log_file = Path(log_file) if log_file else self.data_dir / "broker.log"
        self.properties_file = self.data_dir / "server.properties"
        self.pid_file = self.data_dir / "broker.pid"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running broker's pid: our child, or the one the pid file names (e.g. after `up`)."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        try:  # guard against pid reuse: it must be a broker run with this data dir's config
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        ours = b"kafka.Kafka" in cmdline and str(self.properties_file).encode() in cmdline
        return pid if ours and _pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float = 90) -> None:
        """Format storage if new, launch the JVM, and return once a client gets metadata."""
        if self.is_running():
            if f"//127.0.0.1:{self.port}," not in self.properties_file.read_text():
                raise BrokerError(f"a broker from {self.data_dir} runs on other ports")
            return self.wait_ready(timeout)
        if _port_open(self.port):
            raise BrokerError(f"port {self.port} is in use by something else")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        values = {"port": self.port, "controller_port": self.controller_port}
        text = Template(TEMPLATE.read_text()).substitute(values, log_dir=self.data_dir / "kraft")
        self.properties_file.write_text(text)
        classpath = f"{ensure_jars()}/*"  # the JVM expands the wildcard itself
        self._format(classpath)
        cmd = [
            JAVA, f"-Xms{self.heap_mb}m", f"-Xmx{self.heap_mb}m", "-XX:+UseG1GC",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp", classpath, "kafka.Kafka", str(self.properties_file),
        ]  # fmt: skip
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            # Own session: a Ctrl-C meant for the parent must not kill the broker mid-write.
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.data_dir, start_new_session=True,
            )  # fmt: skip
        self.pid_file.write_text(f"{self._proc.pid}\n")
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not broker_answers(self.bootstrap):
            if not self.is_running():
                self.stop()  # reap our child and drop the stale pid file
                raise BrokerError(f"broker exited before it was ready\n{self.log_tail()}")
            if time.monotonic() > deadline:
                if self._proc is not None:  # only kill a broker we launched
                    self.stop()
                raise BrokerError(f"broker not ready after {timeout}s\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the broker's process group (a clean shutdown), SIGKILL it after `timeout`."""
        pid = self.pid
        for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            if pid is None or not self.is_running():
                break
            with contextlib.suppress(ProcessLookupError):  # it may exit between the two lines
                os.killpg(pid, sig)  # start_new_session made the broker its group's leader
            deadline = time.monotonic() + wait_s
            while self.is_running() and time.monotonic() < deadline:
                time.sleep(0.1)
        if self._proc is not None:
            self._proc.wait()  # reap it
            self._proc = None
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the broker (a crash: no clean shutdown); `start` brings it back on its data."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.stop()  # reaps it and drops the pid file

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _format(self, classpath: str) -> None:
        if (self.data_dir / "kraft" / "meta.properties").exists():
            return  # formatted already; skip a JVM launch (~1 s)
        cmd = [
            JAVA, f"-Dlog4j2.configurationFile={LOG4J}", "-cp", classpath,
            "kafka.tools.StorageTool", "format", "-c", str(self.properties_file),
            "-t", cluster_id(), "--ignore-formatted",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise BrokerError(f"formatting storage failed:\n{done.stdout}{done.stderr}")

    def __enter__(self) -> "LocalBroker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run(broker: LocalBroker, prefix: str) -> int:
    """Foreground: serve until SIGINT/SIGTERM, then shut the broker down cleanly."""
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    with broker:
        _create_topics(broker.bootstrap, prefix)
        print(f"kafka running at {broker.bootstrap}; Ctrl-C stops it", flush=True)
        while not stopping.wait(0.5):
            if not broker.is_running():
                print(f"kafka died:\n{broker.log_tail()}", file=sys.stderr)
                return 1
    return 0


def _create_topics(bootstrap: str, prefix: str) -> None:
    created = asyncio.run(ensure_topics(bootstrap, TOPICS.with_prefix(prefix)))
    print(f"topics created: {', '.join(created) or 'none (all exist)'}", flush=True)


def _last_port(data_dir: Path) -> int:
    """The port of `data_dir`'s last run (so `status` needs no flags after `up --port`), or 9092."""
    props = data_dir / "server.properties"
    text = props.read_text() if props.exists() else ""
    found = re.search(r"^listeners=PLAINTEXT://[\d.]+:(\d+)", text, re.MULTILINE)
    return int(found.group(1)) if found else 9092


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "run"])
    parser.add_argument("--data-dir", type=Path, default=Path(".kafka-data"))
    parser.add_argument("--port", type=int, help="default: last run's, or 9092 (controller: +1)")
    parser.add_argument("--timeout", type=float, default=90)
    parser.add_argument("--prefix", default=os.environ.get("TOKENBUS_TOPIC_PREFIX", ""))
    args = parser.parse_args(argv)
    port = args.port or _last_port(args.data_dir)
    broker = LocalBroker(args.data_dir, port, controller_port=port + 1)
    pid = broker.pid
    if args.command == "run":
        return _run(broker, args.prefix)
    if args.command == "up":
        started = time.monotonic()
        broker.start(args.timeout)  # returns at once if running; waits if still starting
        took = "already running" if pid else f"started in {time.monotonic() - started:.1f}s"
        print(f"kafka at {broker.bootstrap}: {took} (pid {broker.pid})", flush=True)
        _create_topics(broker.bootstrap, args.prefix)
        return 0
    if args.command == "down":
        broker.stop()
        print(f"kafka stopped (pid {pid})" if pid else "kafka not running")
        return 0
    answers = broker_answers(broker.bootstrap)
    print(f"kafka pid: {pid}; {broker.bootstrap} {'answers' if answers else 'does not answer'}")
    return 0 if pid and answers else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokerError as error:
        sys.exit(f"error: {error}")
