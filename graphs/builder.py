"""Assemble the any-to-any LangGraph from whatever modalities and generators a system has, and let users wire
their own nodes around ours.

``START -> ingest -> encode (Send per item) -> reason -> generate_<name> (Send per signal group) -> merge -> END``

A registered plugin modality or generator gets its nodes here with no change to this file: encoders share the
one ``encode`` node (the item says which modality), and every generator gets its own ``generate_<name>`` node.

Custom graphs
-------------
:class:`GraphBuilder` holds the default graph as editable parts -- nodes, plain edges and routers (conditional
edges with a path map) -- and builds a ``StateGraph`` with the same state, context and input/output schemas, so
the result runs under :class:`~orchestrator.assistant.Assistant` (threads, checkpointer, streaming, the HTTP
server) exactly like the default one. A custom node is a plain function: the state in, a partial update out
(``def safety(state) -> dict``; add a ``runtime`` argument for the models in :class:`~graphs.context.RunContext`).

>>> builder = GraphBuilder(system)                       # a SystemConfig, an MMSystem or generator names
>>> builder.insert_after("reason", "safety", no_red)     # reason -> safety -> generate_*|merge
>>> builder.insert_before("reason", "retrieve", lookup)  # ingest|encode -> retrieve -> reason
>>> builder.insert_before(END, "audit", log_turn)        # merge -> audit -> END
>>> bot = Assistant(system=system, graph=builder)        # checked, compiled with the Assistant's checkpointer
>>> approval = builder.compile(interrupt_before=["generate_video"])   # compile options pass through

- ``insert_after(anchor, name, fn)``: ``name`` takes over everything that left ``anchor`` (edges and its
  router, which then runs on the state *after* ``name``), and ``anchor -> name``. After ``reason`` the node
  sees ``draft`` and ``signals`` before any generator runs: dropping a signal (and its draft part) means that
  generator is never called.
- ``insert_before(anchor, name, fn)``: everything that led to ``anchor`` (edges and router targets) leads to
  ``name``, and ``name -> anchor``. Not before a fan-out node (``encode``, ``generate_<name>``): they run once
  per ``Send`` on its payload, not on the state, so the node belongs after the router that sends to them.
- ``add_node`` / ``add_edge`` / ``remove_edge`` / ``route(source, fn, targets)`` wire anything else; ``route``
  replaces whatever left ``source``. Unknown names fail with a :class:`~graphs.check.GraphError` naming them.
- ``build()`` gives the uncompiled ``StateGraph``; ``compile(checkpointer, **kwargs)`` passes ``kwargs``
  (``interrupt_before``, ``interrupt_after``, ``store``, ``cache``, ``debug``) to LangGraph.

``graphs.check.check_graph(builder, config)`` validates the wiring before it runs (the Assistant calls it on a
custom graph); ``mmgraph graph --check CONFIG --graph mypkg.graphs:build`` does the same for a factory
``build(config) -> GraphBuilder | StateGraph | compiled graph`` (:func:`load_graph`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from core.config import SystemConfig
from core.errors import ConfigError
from graphs import nodes
from graphs.check import FANOUT, GraphError
from graphs.context import RunContext
from graphs.state import InputState, OutputState, State


def generator_names(system: Any) -> list[str]:
    """Generator names of a SystemConfig, an MMSystem, or an iterable of names."""
    if isinstance(system, SystemConfig):
        return list(system.generators)
    if hasattr(system, "generator_names"):
        return list(system.generator_names)
    return list(system)


class GraphBuilder:
    """The default any-to-any graph as editable parts; see the module docstring for the API."""

    def __init__(self, system: SystemConfig | Iterable[str] | Any) -> None:
        self.generators = generator_names(system)
        self._nodes: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}
        self._edges: list[tuple[str, str]] = []
        self._routes: dict[str, tuple[Callable[..., Any], dict[Hashable, str]]] = {}  # source -> (path fn, path map)

        gen_nodes = [f"generate_{n}" for n in self.generators]
        self.add_node("ingest", nodes.ingest)
        self.add_node("encode", nodes.encode, metadata={FANOUT: "one task per input item"})
        self.add_node("reason", nodes.reason)
        for name, node in zip(self.generators, gen_nodes):
            self.add_node(node, nodes.make_generate_node(name), metadata={FANOUT: "one task per signal group"})
        self.add_node("merge", nodes.merge)

        self.add_edge(START, "ingest")
        self.route("ingest", nodes.route_inputs, ["encode", "reason"])
        self.add_edge("encode", "reason")
        self.route("reason", nodes.route_signals, gen_nodes + ["merge"])
        for node in gen_nodes:
            self.add_edge(node, "merge")
        self.add_edge("merge", END)

    # -- inspection -------------------------------------------------------------------------------------------------
    @property
    def nodes(self) -> list[str]:
        return list(self._nodes)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """Plain and conditional edges, as (source, target) pairs."""
        return list(self._edges) + [(s, t) for s, (_, ends) in self._routes.items() for t in ends.values()]

    def _need(self, name: str, role: str, *, start: bool = False, end: bool = False) -> None:
        if name in self._nodes or (start and name == START) or (end and name == END):
            return
        raise GraphError(f"no node {name!r} {role}; nodes: {', '.join(self._nodes)}", node=name)

    # -- wiring -----------------------------------------------------------------------------------------------------
    def add_node(self, name: str, fn: Callable[..., Any], **kwargs: Any) -> GraphBuilder:
        """A node running ``fn(state) -> partial update``; ``kwargs`` go to ``StateGraph.add_node`` (``metadata``,
        ``retry_policy``, ``cache_policy``, ``defer``, ``input_schema``)."""
        if name in (START, END) or name in self._nodes:
            raise GraphError(
                f"node {name!r} already exists" if name in self._nodes else f"{name!r} is reserved by LangGraph",
                node=name,
            )
        self._nodes[name] = (fn, kwargs)
        return self

    def add_edge(self, source: str, target: str) -> GraphBuilder:
        """``source -> target`` (both may be added later; :meth:`build` checks them)."""
        if (source, target) not in self._edges:
            self._edges.append((source, target))
        return self

    def remove_edge(self, source: str, target: str) -> GraphBuilder:
        """Drop ``source -> target``: a plain edge, or ``target`` from ``source``'s router."""
        if (source, target) in self._edges:
            self._edges.remove((source, target))
            return self
        if source in self._routes and target in self._routes[source][1].values():
            path, ends = self._routes[source]
            self._routes[source] = (path, {k: t for k, t in ends.items() if t != target})
            return self
        raise GraphError(f"there is no edge {source!r} -> {target!r} to remove", node=source)

    def route(self, source: str, path: Callable[..., Any], targets: list[str] | dict[Hashable, str]) -> GraphBuilder:
        """``path(state)`` picks where ``source`` goes next (a name, a list of names or ``Send``s); ``targets`` lists
        the nodes it may pick (or maps what it returns to node names). Replaces whatever left ``source``."""
        ends: dict[Hashable, str] = dict(targets) if isinstance(targets, dict) else {t: t for t in targets}
        self._edges = [(s, t) for s, t in self._edges if s != source]
        self._routes[source] = (path, ends)
        return self

    def insert_after(self, anchor: str, name: str, fn: Callable[..., Any], **kwargs: Any) -> GraphBuilder:
        """``anchor -> name -> (whatever followed anchor)``; ``anchor``'s router moves to ``name``."""
        self._need(anchor, "to insert after", start=True)
        self.add_node(name, fn, **kwargs)
        self._edges = [(name if s == anchor else s, t) for s, t in self._edges]
        if anchor in self._routes:
            self._routes[name] = self._routes.pop(anchor)
        self._edges.append((anchor, name))
        return self

    def insert_before(self, anchor: str, name: str, fn: Callable[..., Any], **kwargs: Any) -> GraphBuilder:
        """``(whatever led to anchor) -> name -> anchor``; routers that picked ``anchor`` pick ``name``."""
        self._need(anchor, "to insert before", end=True)
        fanout = (self._nodes[anchor][1].get("metadata") or {}).get(FANOUT) if anchor != END else None
        if fanout:
            senders = [s for s, (_, ends) in self._routes.items() if anchor in ends.values()]
            raise GraphError(
                f"cannot insert {name!r} before {anchor!r}: it runs {fanout} (a Send payload, not the state); "
                f"insert it after {' / '.join(map(repr, senders)) or 'the node that sends to it'} instead",
                node=anchor,
            )
        self.add_node(name, fn, **kwargs)
        self._edges = [(s, name if t == anchor else t) for s, t in self._edges]
        for source, (path, ends) in self._routes.items():
            self._routes[source] = (path, {k: name if t == anchor else t for k, t in ends.items()})
        self._edges.append((name, anchor))
        return self

    # -- output -----------------------------------------------------------------------------------------------------
    def build(self) -> StateGraph[State, RunContext, InputState, OutputState]:
        """The uncompiled StateGraph (callers may still add to it before compiling)."""
        for source, target in self.edges:
            self._need(source, f"for the edge {source!r} -> {target!r}", start=True)
            self._need(target, f"for the edge {source!r} -> {target!r}", end=True)
        graph = StateGraph(State, context_schema=RunContext, input_schema=InputState, output_schema=OutputState)
        for name, (fn, kwargs) in self._nodes.items():
            graph.add_node(name, fn, **kwargs)
        for source, target in self._edges:
            graph.add_edge(source, target)
        for source, (path, ends) in self._routes.items():
            graph.add_conditional_edges(source, path, dict(ends))
        return graph

    def compile(
        self, checkpointer: Checkpointer = None, **kwargs: Any
    ) -> CompiledStateGraph[State, RunContext, InputState, OutputState]:
        """The compiled graph; ``kwargs`` (``interrupt_before=["generate_video"]``, ``store``, ...) go to LangGraph."""
        kwargs.setdefault("name", "mmgraph")
        return self.build().compile(checkpointer=checkpointer, **kwargs)


def build_graph(system: SystemConfig | Iterable[str]) -> StateGraph[State, RunContext, InputState, OutputState]:
    """The uncompiled default graph for a SystemConfig (or a list of generator names), so callers can add their
    own nodes and edges before compiling (:class:`GraphBuilder` rewires ours)."""
    return GraphBuilder(system).build()


def compile_graph(
    system: SystemConfig | Iterable[str], checkpointer: Checkpointer = None, **kwargs: Any
) -> CompiledStateGraph[State, RunContext, InputState, OutputState]:
    return GraphBuilder(system).compile(checkpointer=checkpointer, **kwargs)


def load_graph(spec: str, config: SystemConfig) -> Any:
    """The custom graph that ``"package.module:function"`` builds: the function takes the SystemConfig and returns
    a GraphBuilder, a StateGraph or a compiled graph (``mmgraph graph --graph``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"a graph factory is MODULE:FUNCTION (e.g. mypkg.graphs:build), got {spec!r}")
    if os.getcwd() not in sys.path:  # as uvicorn does: a console script does not see the working folder otherwise
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import graph factory module {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"module {module_name!r} has no function {attr!r} to build a graph")
    graph = factory(config)
    compiled = isinstance(getattr(graph, "builder", None), StateGraph)
    if not compiled and not isinstance(graph, (GraphBuilder, StateGraph)):
        raise ConfigError(
            f"graph factory {spec} returned a {type(graph).__name__}, not a GraphBuilder, a StateGraph "
            "or a compiled graph"
        )
    return graph
