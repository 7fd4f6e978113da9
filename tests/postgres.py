"""A PostgreSQL server for the test session: `TEST_POSTGRES_URL`/`DATABASE_URL`, or our own.

Our own is the Debian packages' binaries (`apt-get install postgresql`) run on a free port
in a temporary directory; as root it runs as the `postgres` user, since postgres refuses root.
"""

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from services.procs import free_port

DATABASE = "tokenbus_test"


def find_bin_dir() -> Path | None:
    """Where `initdb` and `pg_ctl` are: PATH first, then /usr/lib/postgresql/<newest>/bin."""
    if on_path := shutil.which("initdb"):
        return Path(on_path).resolve().parent  # through symlinks, e.g. /usr/local/bin
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name or 0)
    )
    return Path(dirs[-1]) if dirs and (Path(dirs[-1]) / "pg_ctl").exists() else None


def asyncpg_url(url: str) -> str:
    """The same database, through SQLAlchemy's asyncpg driver."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str]) -> None:
    done = subprocess.run(_as_postgres(args), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


class LocalPostgres:
    """A server of our own: `url` while it runs; `stop()` and `start()` again on the same data
    (the chaos tests take the database away)."""

    def __init__(self, root: Path, bin_dir: Path, durable: bool) -> None:
        self.root, self._bin = root, bin_dir
        self.data, self.port = root / "data", free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{DATABASE}"
        self._options = f"-k {root} -p {self.port} -c listen_addresses=127.0.0.1"
        if not durable:
            self._options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"

    def start(self) -> None:
        log = str(self.root / "postgres.log")
        _run([str(self._bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", self._options,
              "-w", "-t", "60", "start"])  # fmt: skip

    def stop(self) -> None:
        _run([str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])


@contextlib.contextmanager
def own_postgres(durable: bool = False) -> Iterator[LocalPostgres]:
    """initdb + pg_ctl start on a free port; yield the server; stop and delete.

    Without `durable`, fsync is off: tests need a real PostgreSQL, not a power-cut-proof one.
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL binaries: apt-get install -y postgresql")
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="tokenbus-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    server = LocalPostgres(root, bin_dir, durable)
    try:
        _run([str(bin_dir / "initdb"), "-D", str(server.data), "-A", "trust", "-U", "postgres",
              "-E", "UTF8", "--no-sync", "--no-instructions"])  # fmt: skip
        server.start()
        try:
            _run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U",
                  "postgres", DATABASE])  # fmt: skip
            yield server
        finally:
            with contextlib.suppress(RuntimeError):  # already stopped
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def local_postgres(durable: bool = False) -> Iterator[str]:
    """A server of our own (`own_postgres`), as its URL."""
    with own_postgres(durable) as server:
        yield server.url


@contextlib.contextmanager
def session_postgres() -> Iterator[str]:
    """`TEST_POSTGRES_URL` or `DATABASE_URL` if set (as asyncpg), else a server of our own."""
    if url := os.environ.get("TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL"):
        yield asyncpg_url(url)
        return
    with local_postgres() as url:
        yield url


async def fresh_database(server_url: str) -> str:
    """A new, empty database on the server of `server_url`; return its URL."""
    import asyncpg

    url = make_url(server_url)
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        database=url.database,
    )  # fmt: skip
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)
