"""The thread database behind :class:`~orchestrator.assistant.Assistant`: LangGraph's SQLite or PostgreSQL saver.

>>> saver, close = open_checkpointer("threads.sqlite", serde)                   # one process (the default)
>>> saver, close = open_checkpointer("postgresql://user@db-host/mmgraph", serde)  # replicas sharing threads

A ``postgresql://`` (or ``postgres://``) URL selects LangGraph's ``PostgresSaver`` over a small connection pool that
replaces a broken connection (a restarted database server) on its next use; anything else is a SQLite file. Both
savers get the same serializer, so a checkpoint revives the turn vocabulary and nothing else whichever database
holds it. The first process on an empty Postgres database creates the tables; processes starting together take
turns on a Postgres advisory lock, so their ``CREATE TABLE`` statements and migrations never race.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.sqlite import SqliteSaver
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from core.errors import ConfigError

__all__ = ["is_postgres", "open_checkpointer", "redact"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: the advisory lock the table setup runs under (any constant both sides agree on; this one spells "mmgraph")
SETUP_LOCK = 0x6D6D6772617068
#: what every pooled connection needs for PostgresSaver: autocommit, no server-side prepared statements, dict rows
_CONNECTION_KWARGS: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}


def is_postgres(db: str | Path) -> bool:
    """Whether ``db`` names a PostgreSQL database (a URL) rather than a SQLite file."""
    return isinstance(db, str) and db.startswith(POSTGRES_SCHEMES)


def redact(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    return re.sub(r"^([a-z]+://[^:/@]*):[^@]*@", r"\1:***@", url)


def open_checkpointer(
    db: str | Path, serde: SerializerProtocol, *, pool_size: int = 2, timeout: float = 30.0
) -> tuple[BaseCheckpointSaver[str], Callable[[], None]]:
    """The saver for ``db`` and the function that closes what it opened.

    ``db``: a ``postgresql://`` URL, or the path of a SQLite file (its folder is created). ``timeout``: how long to
    wait for a Postgres server before giving up with a :class:`~core.errors.ConfigError` naming the database.
    """
    if is_postgres(db):
        return _open_postgres(str(db), serde, pool_size=pool_size, timeout=timeout)
    path = Path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    return SqliteSaver(conn, serde=serde), conn.close


def _open_postgres(
    url: str, serde: SerializerProtocol, *, pool_size: int, timeout: float
) -> tuple[BaseCheckpointSaver[str], Callable[[], None]]:
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(timeout)), **_CONNECTION_KWARGS) as conn:
            _lock(conn, time.monotonic() + timeout)
            try:
                PostgresSaver(cast(Any, conn), serde=serde).setup()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))
    except psycopg.Error as exc:
        raise ConfigError(f"cannot open the thread database {redact(url)}: {exc}".strip()) from exc
    pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
        url,
        kwargs=_CONNECTION_KWARGS,
        min_size=1,
        max_size=pool_size,
        check=ConnectionPool.check_connection,  # a connection the server dropped is replaced, not handed out
        name="mmgraph-threads",
        open=False,
    )
    try:
        pool.open(wait=True, timeout=timeout)
    except psycopg.Error as exc:  # PoolTimeout included
        pool.close()
        raise ConfigError(f"cannot open the thread database {redact(url)}: {exc}".strip()) from exc
    return PostgresSaver(pool, serde=serde), pool.close


def _lock(conn: psycopg.Connection[DictRow], deadline: float) -> None:
    """Take the setup lock, asking again every 50 ms rather than waiting inside ``pg_advisory_lock``: the holder's
    migrations build indexes ``CONCURRENTLY``, which waits for every open transaction -- a blocked lock call is one,
    and the two would deadlock."""
    while not conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (SETUP_LOCK,)).fetchone()["ok"]:  # type: ignore[index]
        if time.monotonic() > deadline:
            raise psycopg.OperationalError("timed out waiting for another process to create the tables")
        time.sleep(0.05)
