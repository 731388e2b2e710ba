"""The portal's one PostgreSQL pool (one per application), and the one way handlers use it.

Opened on the first request, not at start-up: the portal starts, and `/readyz` says why it is not
ready, while PostgreSQL is down. Closed on the application's cleanup.

`PortalDatabase.connection()` turns every way PostgreSQL can fail to answer into the portal's
error shape — 503 ``not_configured`` (no DSN), ``database_unavailable`` (refused, timed out, a
server error) or ``query_timeout`` (a statement ran longer than `STATEMENT_TIMEOUT_S`) — so
handlers only deal with their own answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from cdr_mediation.portal.errors import ApiError

POOL_MAX_SIZE = 8  # list queries are short; long proofs are limited on their own (proofs.py)
ACQUIRE_TIMEOUT_S = 10.0
# Default for every statement of the pool. A list query that has to walk far to fill a page
# (a sparse filter over a long chain) is stopped here rather than holding a connection.
STATEMENT_TIMEOUT_S = 30.0


class PortalDatabase:
    def __init__(self, pg_dsn: str | None) -> None:
        self.pg_dsn = pg_dsn or None
        self._pool = None
        self._pool_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def connection(self, *, what: str = "this answer") -> AsyncIterator:
        """A pooled connection; every failure to get an answer from PostgreSQL is an ApiError."""
        import asyncpg

        if self.pg_dsn is None:
            raise ApiError(503, "not_configured", f"no PostgreSQL DSN configured: {what} cannot be read")
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                yield conn
        except asyncpg.QueryCanceledError as exc:
            raise ApiError(503, "query_timeout", f"PostgreSQL stopped the query ({exc}); narrow the filters "
                                                 "(an operator_id, a shorter time range)") from None
        except (OSError, asyncio.TimeoutError) as exc:
            raise ApiError(503, "database_unavailable", f"PostgreSQL did not answer in time: {exc!r}") from None
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ApiError(503, "database_unavailable", f"PostgreSQL: {exc.__class__.__name__}: {exc}") from None

    async def _get_pool(self):
        import asyncpg

        async with self._pool_lock:
            if self._pool is None:
                # min_size=0: no connection until the first request.
                # The server stops a statement at STATEMENT_TIMEOUT_S (a `query_timeout` answer);
                # the client gives up a little later only if the server itself does not answer.
                self._pool = await asyncpg.create_pool(
                    self.pg_dsn, min_size=0, max_size=POOL_MAX_SIZE, timeout=ACQUIRE_TIMEOUT_S,
                    command_timeout=STATEMENT_TIMEOUT_S + 5,
                    server_settings={"statement_timeout": str(int(STATEMENT_TIMEOUT_S * 1000))})
            return self._pool

    async def close(self) -> None:
        async with self._pool_lock:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None


DATABASE = web.AppKey("portal_database", PortalDatabase)


def add_database(app: web.Application, pg_dsn: str | None) -> PortalDatabase:
    """The application's pool, closed on its cleanup."""
    database = app[DATABASE] = PortalDatabase(pg_dsn)

    async def close(app: web.Application) -> None:
        await app[DATABASE].close()

    app.on_cleanup.append(close)
    return database
