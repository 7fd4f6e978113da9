"""Find a Kafka broker, in DESIGN's order: KAFKA_BOOTSTRAP_SERVERS, testcontainers, local."""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from infra.kafka.local import LocalBroker
from services.procs import free_port


def _docker_answers() -> bool:
    """Probe the daemon ourselves: docker-py's failed probe leaks its socket (ResourceWarning)."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return False
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host[len("unix://") :]).exists():
        return False
    try:
        client = docker.from_env(timeout=3)
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except (DockerException, OSError):
        return False
    finally:
        client.close()


@contextlib.contextmanager
def _testcontainers_kafka() -> Iterator[str | None]:
    if not _docker_answers():
        yield None
        return
    try:
        from docker.errors import DockerException
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        yield None
        return
    try:
        container = KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft()
        container.start()
    except (DockerException, OSError):
        yield None  # no Docker daemon answers (CI has none)
        return
    try:
        yield container.get_bootstrap_server()
    finally:
        container.stop()


@contextlib.contextmanager
def session_broker(tmp: Path) -> Iterator[str]:
    """Yield a bootstrap address; start and stop whatever this call had to start (a local
    broker keeps its data, config and log under `tmp`)."""
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield bootstrap
        return
    with _testcontainers_kafka() as bootstrap:
        if bootstrap:
            yield bootstrap
            return
    broker = LocalBroker(
        tmp / "kafka", port=free_port(), controller_port=free_port(), log_file=tmp / "kafka.log"
    )
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
