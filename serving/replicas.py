"""What replicas of ``mmgraph serve`` share, and how a response names the replica that made it.

Several ``mmgraph serve`` processes (Ray Serve replicas, or servers behind any balancer) are one service when they
share the thread database -- a ``postgresql://`` URL -- and the artifact folder. Each response carries the header
``X-MMGraph-Replica: <host>:<pid>``, so a client, a balancer's log or a test can tell which replica answered.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from orchestrator.thread_store import is_postgres

REPLICA_HEADER = "X-MMGraph-Replica"


def replica_name() -> str:
    """``<host>:<pid>`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ReplicaHeader:
    """ASGI middleware: every HTTP response gets :data:`REPLICA_HEADER` naming this process. ``app`` is the app
    it wraps."""

    def __init__(self, app: Any, name: str | None = None) -> None:
        self.app = app
        self._header = (REPLICA_HEADER.lower().encode(), (name or replica_name()).encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan and websockets pass through
            return await self.app(scope, receive, send)

        async def named_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self._header]}
            await send(message)

        await self.app(scope, receive, named_send)


def check_shared(db: str | Path | None, replicas: int) -> None:
    """Several replicas continue each other's threads only through one database server: refuse a SQLite file."""
    if replicas > 1 and (db is None or not is_postgres(db)):
        raise ConfigError(
            f"{replicas} replicas must share their threads: give --db postgresql://USER@HOST/DATABASE "
            f"(a SQLite file{'' if db is None else f' such as {db}'} belongs to one process)"
        )
