"""``mmgraph serve --ray``: N replicas of the OpenAI-compatible app under Ray Serve, behind Ray's HTTP proxy.

    mmgraph serve --ray --replicas 2 --db postgresql://mmgraph@db-host/mmgraph --artifacts /shared/artifacts
    serve run serving.ray_app:build replicas=2 db=postgresql://mmgraph@db-host/mmgraph artifacts=/shared/artifacts

Each replica is a Ray actor that loads its own copy of the model and serves the app of
:func:`serving.app.create_app` through Ray Serve's ASGI ingress; Ray's proxy routes every HTTP request to one of
them. Threads live in the shared PostgreSQL database and media in the shared artifact folder, so any replica
continues any thread (docs/serving.md, "Several replicas"). Ray is an optional dependency: ``pip install
'mmgraph[ray]'``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from core.config import load_config
from core.errors import ConfigError
from core.hub import default_home
from graphs import load_graph
from orchestrator.thread_store import is_postgres, redact
from serving.app import create_app
from serving.replicas import ReplicaHeader, check_shared
from serving.settings import ReplicaSettings, ServerSettings

try:
    import ray
    from ray import serve
    from ray.serve import Application
except ModuleNotFoundError as exc:  # the optional extra is not installed
    if (exc.name or "").split(".")[0] != "ray":
        raise
    raise ConfigError(
        "serving with Ray needs Ray Serve, an optional dependency: pip install 'mmgraph[ray]' "
        "(or pip install 'ray[serve]')"
    ) from exc

APP_NAME = "mmgraph"
#: environment variables every replica gets from the process that deploys it (homes, caches, offline switches)
FORWARDED_ENV = ("MMGRAPH_", "HF_", "TRANSFORMERS_", "DIFFUSERS_")


class RayServeArgs(ReplicaSettings):
    """Everything a replica needs to build its app, as plain data: the Assistant's arguments (those of ``mmgraph
    serve``), the server settings, and the replica layout. ``serve run serving.ray_app:build key=value ...`` and a
    ``serve.yaml``'s ``args:`` are read into it."""

    config: str | None = Field(None, description="Preset name or system YAML.")
    weights: str | None = Field(None, description="Folder of trained projector weights.")
    device: str | None = Field(None, description="cpu | cuda | cuda:N.")
    db: str | None = Field(None, description="The thread database: postgresql://... for several replicas.")
    artifacts: str | None = Field(None, description="The artifact folder every replica shares.")
    graph: str | None = Field(None, description="MODULE:FUNCTION of a custom graph.")
    settings: ServerSettings = Field(default_factory=ServerSettings, description="Each replica's server settings.")

    @field_validator("settings", mode="before")
    @classmethod
    def _settings_json(cls, value: Any) -> Any:
        """``settings='{"queue_size": 4}'`` on ``serve run``'s command line."""
        return json.loads(value) if isinstance(value, str) else value

    def absolute(self) -> RayServeArgs:
        """Paths made absolute here, where they were typed: a replica runs in another working directory."""

        def resolve(value: str | None, *, existing: bool = False) -> str | None:
            if value is None or (existing and not Path(value).exists()):
                return value
            return str(Path(value).expanduser().resolve())

        return self.model_copy(
            update={
                "config": resolve(self.config, existing=True),  # a preset name stays a name
                "weights": resolve(self.weights),
                "db": self.db if self.db is None or is_postgres(self.db) else resolve(self.db),
                "artifacts": resolve(self.artifacts or str(default_home() / "artifacts")),
            }
        )


@serve.deployment(name="mmgraph")
@serve.ingress()
class Replica:
    """One model replica: its own Assistant over the shared database and artifact folder, and the app around it."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = RayServeArgs.model_validate(args)

    def __serve_build_asgi_app__(self) -> Any:
        """Called by Ray Serve in the replica once ``__init__`` has run: the ASGI app it serves."""
        a = self.args
        graph = load_graph(a.graph, load_config(a.config)) if a.graph else None
        app = create_app(
            config=a.config,
            settings=a.settings,
            weights=a.weights,
            device=a.device,
            db=a.db,
            artifacts=a.artifacts,
            graph=graph,
        )
        return ReplicaHeader(app)


def application(args: RayServeArgs) -> Application:
    """The Ray Serve application: ``args.replicas`` replicas, each admitted as many requests at a time as its
    queue holds (one running plus ``queue_size`` waiting), so Ray's router spreads the rest."""
    check_shared(args.db, args.replicas)
    args = args.absolute()
    actor: dict[str, Any] = {"num_cpus": args.replica_cpus}
    if args.replica_gpus:
        actor["num_gpus"] = args.replica_gpus
    return Replica.options(  # type: ignore[attr-defined]
        num_replicas=args.replicas,
        ray_actor_options=actor,
        max_ongoing_requests=1 + args.settings.queue_size,
    ).bind(args.model_dump(mode="json"))


def build(args: dict[str, Any]) -> Application:
    """The application builder of ``serve run serving.ray_app:build key=value ...`` (Ray's command line)."""
    try:
        return application(RayServeArgs.model_validate(args))
    except ValueError as exc:  # pydantic's ValidationError is one
        raise ConfigError(f"serving.ray_app:build: {exc}") from exc


def serve_replicas(
    args: RayServeArgs, *, host: str, port: int, address: str | None = None, log_level: str = "info"
) -> int:
    """Deploy ``args.replicas`` replicas behind Ray's HTTP proxy on ``host:port`` and serve until SIGINT / SIGTERM.

    ``address``: an existing Ray cluster (``auto``, ``ray://head:10001``); none starts a local one for this
    process, stopped again on the way out.
    """
    app = application(args)  # refuses a SQLite database for several replicas before Ray starts
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    ray.init(
        address=address or "local",  # never an unrelated cluster found on this machine
        include_dashboard=False,
        logging_level=log_level.upper(),
        runtime_env={"env_vars": env} if env else None,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/", logging_config={"log_level": log_level.upper()})
        model = args.settings.served_model_name or load_config(args.config).name
        where = redact(args.db) if args.db else "the default SQLite file"
        print(
            f"mmgraph: serving {model} with {args.replicas} replica(s) under Ray Serve on http://{host}:{port}/ "
            f"(OpenAI base URL http://{host}:{port}/v1; threads in {where})",
            flush=True,
        )
        while not stop.wait(1.0):
            pass
    finally:
        if address is None:
            serve.shutdown()
        else:  # a shared cluster: take back only this application
            serve.delete(APP_NAME)
        ray.shutdown()
    return 0
