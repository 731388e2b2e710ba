"""PostgreSQL 15: a private cluster under the state directory, run as the `postgres` OS user.

initdb refuses to run as root, so as root the cluster is created and started as `postgres`.
Roles: `postgres` (superuser, local socket only, used here to bootstrap), `cdr_owner` (owns the
schema; NOLOGIN, migrations run as it), `cdr_app` (what every process of the system logs in as;
not the owner, so it cannot disable the append-only triggers).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from cdr_mediation.infra.postgres.migrate import apply_migrations
from cdr_mediation.stack.component import Component
from cdr_mediation.stack.layout import Health
from cdr_mediation.stack.process import StackError, wait_until

DATABASE = "cdr"
OWNER_ROLE = "cdr_owner"
APP_ROLE = "cdr_app"


def _bin_dir() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "postgres").exists():
            return candidate
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise StackError(
        "PostgreSQL server binaries not found; install the Debian package 'postgresql' "
        "(apt-get install -y --no-install-recommends postgresql) or run scripts/bootstrap"
    )


def _run_as() -> tuple[int | None, int | None]:
    """(uid, gid) to run the server as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None, None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("running as root but there is no 'postgres' OS user; install 'postgresql'") from None
    return entry.pw_uid, entry.pw_gid


class Postgres(Component):
    name = "postgres"

    def _cluster_dir(self) -> Path:
        """Where the cluster lives: under the state directory if the server user can reach it.

        As root, a state directory below a private home (0700) is unreachable for `postgres`;
        the cluster then lives in /var/tmp under a name derived from the state directory, and
        stack.json records where.
        """
        recorded = self.config.get("cluster_dir")
        if recorded:
            return Path(recorded)
        uid, gid = _run_as()
        preferred = self.dir / "cluster"
        if uid is None or _reachable_by(preferred.parent, uid, gid):
            return preferred
        digest = hashlib.sha256(str(self.state.root).encode()).hexdigest()[:12]
        return Path("/var/tmp") / f"cdr-stack-postgres-{digest}"

    def start(self) -> None:
        if self.health().healthy:
            # Already running: a newer checkout may still bring migrations (idempotent, checksummed).
            asyncio.run(self._bootstrap())
            return
        bin_dir = _bin_dir()
        uid, gid = _run_as()
        cluster = self._cluster_dir()
        data, sockets = cluster / "data", cluster / "sockets"
        for path in (cluster, sockets):
            path.mkdir(parents=True, exist_ok=True)
            if uid is not None:
                os.chown(path, uid, gid)
        if not (data / "PG_VERSION").exists():
            data.mkdir(mode=0o700, exist_ok=True)
            if uid is not None:
                os.chown(data, uid, gid)
            result = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                 "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"],
                user=uid, group=gid, extra_groups=[] if uid is not None else None,
                capture_output=True, text=True, cwd="/",
            )
            if result.returncode != 0:
                raise StackError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        port = self.port()
        daemon = self.daemon(marker=str(data))
        daemon.stop(first_signal=signal.SIGINT)
        daemon.start(
            [str(bin_dir / "postgres"), "-D", str(data), "-k", str(sockets), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "max_connections=200"],
            user=uid, group=gid, cwd=Path("/"),
        )
        self.state.update_manifest(
            self.name,
            {"port": port, "socket_dir": str(sockets), "cluster_dir": str(cluster),
             "database": DATABASE, "user": APP_ROLE},
        )
        try:
            wait_until(lambda: asyncio.run(self._superuser_ping()), timeout=30, what="PostgreSQL")
        except StackError as exc:
            raise StackError(f"{exc}\n{daemon.exited_early()}") from None
        asyncio.run(self._bootstrap())

    def app_dsn(self) -> str:
        config = self.config
        password = self.state.secret("postgres_app_password")
        return f"postgresql://{APP_ROLE}:{password}@127.0.0.1:{config['port']}/{DATABASE}"

    async def fresh_database(self, name: str) -> str:
        """A new, empty database with the project's schema, and the app's DSN for it: where a
        replay into fresh state writes, beside the live `cdr` database, in the same cluster."""
        import re

        if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name) or name == DATABASE:
            raise StackError(f"not a name for a fresh database: {name!r}")
        conn = await self._superuser()
        try:
            await conn.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
        finally:
            await conn.close()
        await self._install_schema(name)
        return self.app_dsn().rsplit("/", 1)[0] + f"/{name}"

    async def _superuser(self, database: str = "postgres"):
        import asyncpg

        config = self.config
        return await asyncpg.connect(
            host=config["socket_dir"], port=config["port"], user="postgres", database=database, timeout=5
        )

    async def _superuser_ping(self) -> bool:
        conn = await self._superuser()
        try:
            return await conn.fetchval("select 1") == 1
        finally:
            await conn.close()

    async def _bootstrap(self) -> None:
        """Roles and database (cluster-level, the DBA's part), then the project's migrations."""
        password = self.state.secret("postgres_app_password")
        conn = await self._superuser()
        try:
            roles = {r["rolname"] for r in await conn.fetch("select rolname from pg_roles")}
            if OWNER_ROLE not in roles:
                await conn.execute(f"CREATE ROLE {OWNER_ROLE} NOLOGIN")
            if APP_ROLE not in roles:
                await conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
            # Passwords cannot be bind parameters in DDL; the secret is hex, so quoting is safe.
            await conn.execute(f"ALTER ROLE {APP_ROLE} PASSWORD '{password}'")
            if not await conn.fetchval("select 1 from pg_database where datname = $1", DATABASE):
                await conn.execute(f"CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}")
        finally:
            await conn.close()
        await self._install_schema(DATABASE)

    async def _install_schema(self, database: str) -> None:
        """The public schema owned by the owner role and closed to PUBLIC, then the migrations."""
        conn = await self._superuser(database)
        try:
            await conn.execute(f"REVOKE ALL ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO {OWNER_ROLE}")
            await apply_migrations(conn, owner_role=OWNER_ROLE, app_role=APP_ROLE)
        finally:
            await conn.close()

    def health(self) -> Health:
        config = self.config
        if not config or not self.daemon(marker=str(Path(config["cluster_dir"]) / "data")).running():
            return Health(False, self._endpoint(config), "not running")
        try:
            detail = asyncio.run(self._app_check())
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return Health(False, self._endpoint(config), f"app role: {exc!r}")
        return Health(detail == "", self._endpoint(config), detail)

    @staticmethod
    def _endpoint(config: dict) -> str:
        return f"postgresql://127.0.0.1:{config['port']}/{DATABASE}" if config.get("port") else ""

    async def _app_check(self) -> str:
        import asyncpg

        conn = await asyncpg.connect(self.app_dsn(), timeout=5)
        try:
            pending = await conn.fetchval("select count(*) from schema_migrations")
            return "" if pending else "no migrations applied"
        finally:
            await conn.close()

    def stop(self) -> None:
        config = self.config
        if not config.get("cluster_dir"):
            return
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to disconnect.
        self.daemon(marker=str(Path(config["cluster_dir"]) / "data")).stop(first_signal=signal.SIGINT)


def _reachable_by(path: Path, uid: int, gid: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["test", "-x", str(path)], user=uid, group=gid, extra_groups=[], capture_output=True
    )
    return probe.returncode == 0
