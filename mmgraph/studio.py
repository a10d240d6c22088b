"""The default any-to-any graph for LangGraph's own tools: ``langgraph.json`` at the repository root names
:data:`graph`, so ``langgraph dev`` serves it and LangGraph Studio opens it and runs turns on it.

>>> from mmgraph.studio import graph
>>> list(graph.nodes)  # __start__, ingest, encode, reason, generate_image, generate_video, generate_audio, merge

:data:`graph` is what :class:`~orchestrator.assistant.Assistant` compiles for the default system (tiny-world, or the
preset or YAML that ``MMGRAPH_CONFIG`` names): the same nodes, edges and state schemas. It is compiled without a
checkpointer, because the LangGraph server brings its own persistence. Building it reads the config only.

The nodes take the model from the run's context (:class:`graphs.context.RunContext`), which holds live objects, so
the LangGraph server cannot send it as JSON. Its context here is :class:`StudioContext`, whose model and artifact
store default to the system loaded on the first turn (then kept) and ``$MMGRAPH_HOME/artifacts``. Both are built on
first use inside a node, which LangGraph runs in a worker thread: the server's event loop never blocks on loading
the model (``langgraph dev`` refuses blocking calls there). A turn's input is the graph's input state, e.g.
``{"inputs": [{"type": "text", "text": "Draw a red circle."}], "generate": ["image"]}``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.artifacts import ArtifactStore
from core.config import SystemConfig, load_config
from core.hub import default_home
from graphs import GraphBuilder, RunContext


def studio_config() -> SystemConfig:
    """The system ``MMGRAPH_CONFIG`` names (a preset or a YAML path), or the default one."""
    return load_config(os.environ.get("MMGRAPH_CONFIG") or None)


@functools.cache
def _loaded_system() -> Any:
    from orchestrator.system import MMSystem  # noqa: PLC0415 - the model libraries load on the first turn only

    return MMSystem.from_config(studio_config())


@functools.cache
def _home_store() -> ArtifactStore:
    return ArtifactStore(default_home() / "artifacts")


class _OnFirstUse:
    """Stands for the object ``build()`` returns, built when an attribute is first read."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build

    def __getattr__(self, name: str) -> Any:
        return getattr(self._build(), name)


@dataclass(kw_only=True)
class StudioContext(RunContext):
    """The run context of a turn started by LangGraph's server, where the context arrives as JSON (``{}``)."""

    system: Any = field(
        default_factory=lambda: _OnFirstUse(_loaded_system),
        metadata={"description": "The loaded model; default: the studio system, loaded once on the first turn."},
    )
    store: Any = field(
        default_factory=lambda: _OnFirstUse(_home_store),
        metadata={"description": "Where media live; default: $MMGRAPH_HOME/artifacts."},
    )


def build_studio_graph() -> Any:
    """The default any-to-any graph of :func:`studio_config`, compiled with :class:`StudioContext`."""
    builder = GraphBuilder(studio_config()).build()
    builder.context_schema = StudioContext
    return builder.compile(name="mmgraph")


#: the default any-to-any graph, compiled (``langgraph.json``: ``./mmgraph/studio.py:graph``)
graph = build_studio_graph()
