"""Schema migrations: numbered SQL files applied once each, in order, as the owner role.

Each file runs in its own transaction together with its row in `schema_migrations`, which also
stores the file's SHA-256: a migration that was edited after it was applied is refused rather
than silently diverging between environments.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

MIGRATIONS_PACKAGE = "cdr_mediation.infra.postgres.migrations"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    found = []
    for item in resources.files(MIGRATIONS_PACKAGE).iterdir():
        if item.name.endswith(".sql"):
            version, _, rest = item.name.partition("_")
            found.append(Migration(int(version), rest.removesuffix(".sql"), item.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..n without gaps, found {versions}")
    return found


async def apply_migrations(conn, *, owner_role: str, app_role: str) -> list[int]:
    """Apply pending migrations on an asyncpg connection of a role that may SET ROLE owner_role.

    Migration SQL may use the placeholders {app_role} and {owner_role}. Returns the versions
    applied now.
    """
    await conn.execute(f"SET ROLE {owner_role}")
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            checksum char(64) NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    await conn.execute(f"GRANT SELECT ON schema_migrations TO {app_role}")
    applied = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}
    done = []
    for migration in load_migrations():
        if migration.version in applied:
            if applied[migration.version].strip() != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version} ({migration.name}) was changed after it was applied"
                )
            continue
        async with conn.transaction():
            await conn.execute(migration.sql.replace("{app_role}", app_role).replace("{owner_role}", owner_role))
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version, migration.name, migration.checksum,
            )
        done.append(migration.version)
    await conn.execute("RESET ROLE")
    return done
