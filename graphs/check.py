"""Validate a graph before it runs (``mmgraph graph --check``), with networkx.

LangGraph's own ``compile()`` checks only that edges name known nodes; a node with no way out simply ends the
run, so a generator wired to nothing would produce media that never reach the reply, silently. This reads the
wiring (plain edges, routers' path maps, ``destinations``) into a ``networkx.DiGraph`` and checks:

- every node is reachable from START and can reach END;
- no cycle lacks an exit (a loop whose nodes cannot reach END runs until the recursion limit);
- with a SystemConfig: the assistant's contract -- ``ingest``, ``reason`` and ``merge`` exist, every configured
  modality has the ``encode`` node on its way to ``reason``, and every generator's ``generate_<name>`` node is
  reachable from ``reason`` and reaches ``merge``; and every component kind the config names (encoder, its
  decoder, input projector, generator, output projector) is provided by a registry entry or an installed plugin.

All problems are collected and raised together as one :class:`GraphError` (its ``node`` is the first offender);
a valid graph gives a :class:`GraphReport` whose ``stages`` are the topological generations of the graph (cycles
condensed): nodes in one stage have no path between them, so they can run in the same LangGraph step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from langgraph.graph import END, START, StateGraph

from core.errors import ConfigError
from generators import GENERATORS, OUTPUT_PROJECTORS
from modalities import ENCODERS, PROJECTORS
from modalities.media import DECODERS

FANOUT = "fanout"  # node metadata key: what one task is of a node that runs once per Send (set by graphs.builder)

# Nodes an Assistant's graph must have, and why (they are the Assistant's contract with the state).
REQUIRED = {
    "ingest": "it validates the turn before any model runs",
    "reason": "it runs the LLM",
    "merge": "it assembles the reply",
}


class GraphError(ConfigError):
    """A graph is mis-wired. ``node`` names the (first) offending node; ``problems`` lists every problem found."""

    def __init__(self, message: str, *, node: str | None = None, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.problems = problems or [message]


@dataclass
class GraphReport:
    """What a valid graph looks like: its nodes, edges and parallel stages, with per-node notes (fan-out,
    interrupts)."""

    name: str
    nodes: list[str]
    edges: list[tuple[str, str]]
    stages: list[list[str]]
    notes: dict[str, list[str]] = field(default_factory=dict)

    def format(self) -> str:
        lines = [
            f"OK: {self.name}: {len(self.nodes)} nodes, {len(self.edges)} edges, every node on a path from "
            f"START to END",
            "parallel stages (the nodes of a stage have no path between them, so they can run in one step):",
        ]
        for i, stage in enumerate(self.stages, 1):
            notes = {n: "; ".join(self.notes.get(n, [])) for n in stage}
            if len(set(notes.values())) == 1:  # one note for the whole stage (e.g. every generator fans out)
                text, shared = ", ".join(stage), next(iter(notes.values()))
                lines.append(f"  {i}. {text}" + (f"  [{shared}]" if shared else ""))
            else:
                lines.append(f"  {i}. " + ", ".join(f"{n} [{notes[n]}]" if notes[n] else n for n in stage))
        return "\n".join(lines)

    __str__ = format


def _state_graph(graph: Any) -> tuple[StateGraph[Any, Any, Any, Any], Any]:
    """(the StateGraph, the compiled graph or None) of a GraphBuilder, a StateGraph or a compiled graph."""
    if isinstance(graph, StateGraph):
        return graph, None
    if isinstance(getattr(graph, "builder", None), StateGraph):  # a CompiledStateGraph
        return graph.builder, graph
    if callable(getattr(graph, "build", None)):  # graphs.builder.GraphBuilder
        return graph.build(), None
    raise GraphError(f"cannot check a {type(graph).__name__}: pass a GraphBuilder, a StateGraph or a compiled graph")


def to_networkx(graph: Any) -> nx.DiGraph:
    """The wiring as a DiGraph over node names plus ``START`` / ``END``; an edge's ``conditional`` says it is a
    router's choice. A router without a path map may go anywhere, so it gets an edge to every node."""
    sg, _ = _state_graph(graph)
    g = nx.DiGraph()
    g.add_node(START)
    g.add_nodes_from(sg.nodes)
    g.add_node(END)
    for source, target in sg.edges:
        g.add_edge(source, target, conditional=False)
    for sources, target in sg.waiting_edges:
        for source in sources:
            g.add_edge(source, target, conditional=False)
    for source, branches in sg.branches.items():
        for branch in branches.values():
            targets = branch.ends.values() if branch.ends is not None else [*sg.nodes, END]
            for target in targets:
                g.add_edge(source, target, conditional=True)
    for name, spec in sg.nodes.items():
        for target in spec.ends or ():  # ``destinations=`` of nodes that return Command(goto=...)
            g.add_edge(name, target, conditional=True)
    return g


def _cycle_text(g: nx.DiGraph, component: set[str], first: str) -> str:
    cycle = nx.find_cycle(g.subgraph(component), source=first)
    return " -> ".join(repr(s) for s, _ in cycle) + f" -> {cycle[0][0]!r}"


def _unknown_kinds(config: Any) -> list[tuple[str, str]]:
    """Components a config names that no registry entry or installed plugin provides (a plugin not installed,
    a typo): ``(node, message)`` for the node that would fail at run time."""

    def missing(registry: Any, kind: str, what: str) -> str | None:
        if kind in registry:
            return None
        group = f" (entry-point group {registry.entry_point_group!r})" if registry.entry_point_group else ""
        return (
            f"{what} names {registry.what} kind {kind!r}, which nothing provides{group}; known: "
            f"{', '.join(registry) or '(none)'}"
        )

    found = []
    for name, mcfg in config.modalities.items():
        for message in (
            missing(ENCODERS, mcfg.encoder, f"modality {name!r}"),
            missing(PROJECTORS, mcfg.projector.kind, f"modality {name!r}"),
        ):
            if message:
                found.append(("encode", message))
        if mcfg.encoder in ENCODERS:
            try:
                decoder = ENCODERS.get(mcfg.encoder).input_kind
            except (ImportError, AttributeError) as exc:
                found.append(("encode", f"modality {name!r}: encoder kind {mcfg.encoder!r} cannot be loaded ({exc})"))
                continue
            message = missing(DECODERS, decoder, f"modality {name!r} (through its encoder's input_kind)")
            if message:
                found.append(("encode", message))
    for name, gcfg in config.generators.items():
        for message in (
            missing(GENERATORS, gcfg.kind, f"generator {name!r}"),
            missing(OUTPUT_PROJECTORS, gcfg.projector.kind, f"generator {name!r}"),
        ):
            if message:
                found.append((f"generate_{name}", message))
    return found


def check_graph(graph: Any, config: Any = None) -> GraphReport:
    """Check ``graph`` (a GraphBuilder, StateGraph or compiled graph), and with ``config`` (a SystemConfig) the
    assistant contract for its modalities and generators; raise :class:`GraphError` listing every problem."""
    sg, compiled = _state_graph(graph)
    g = to_networkx(sg)
    order = {n: i for i, n in enumerate(g.nodes)}
    problems: list[tuple[str, str]] = []  # (node, message)
    reported: set[str] = set()

    def problem(node: str, message: str) -> None:
        problems.append((node, message))
        reported.add(node)

    # 0. Edges that name no node (LangGraph's compile() refuses them too, less precisely).
    for node in g:
        if node not in sg.nodes and node not in (START, END):
            sources = ", ".join(repr(s) for s in g.predecessors(node)) or "nothing"
            problem(node, f"there is no node {node!r} (the edge from {sources} leads nowhere)")

    # 1. Reachability from START.
    from_start = nx.descendants(g, START)
    for node in sg.nodes:
        if node not in from_start:
            problem(node, f"node {node!r} is unreachable from START")

    # 2. Cycles with no exit: a strongly connected component none of whose nodes can reach END.
    to_end = nx.ancestors(g, END)
    trapped: set[str] = set()
    for component in nx.strongly_connected_components(g):
        node = min(component, key=order.__getitem__)
        looped = len(component) > 1 or g.has_edge(node, node)
        if looped and not component & to_end:
            trapped |= component
            problem(node, f"cycle {_cycle_text(g, component, node)} has no exit to END")

    # 3. Every node can reach END (say why when the reply's assembler is skipped or the node is a dead end).
    to_merge = nx.ancestors(g, "merge") if "merge" in g else set()
    into_trap = set().union(*(nx.ancestors(g, n) for n in trapped))
    for node in sg.nodes:
        if node in to_end or node in trapped:
            continue
        why = []
        if "merge" in g and node != "merge" and node not in to_merge:
            why.append("no path to 'merge'")
        if g.out_degree(node) == 0:
            why.append("it has no outgoing edge")
        elif node in into_trap:
            why.append("its paths end in a cycle with no exit")
        problem(node, f"node {node!r} cannot reach END" + (f" ({'; '.join(why)})" if why else ""))

    # 4. The assistant's contract for this system's modalities and generators.
    if config is not None:
        for node, purpose in REQUIRED.items():
            if node not in g:
                problem(node, f"the graph has no {node!r} node, which an assistant needs ({purpose})")
        if config.modalities:
            names = ", ".join(config.modalities)
            if "encode" not in g:
                problem(
                    "encode",
                    f"modalities {names} are not wired: there is no 'encode' node (every input item is sent to it)",
                )
            elif "reason" in g and not nx.has_path(g, "encode", "reason") and "encode" not in reported:
                problem("encode", f"node 'encode' has no path to 'reason', so {names} features never reach the LLM")
        from_reason = nx.descendants(g, "reason") if "reason" in g else set()
        for name in config.generators:
            node = f"generate_{name}"
            if node not in g:
                problem(node, f"generator {name!r} is not wired: there is no node {node!r}")
                continue
            if "reason" in g and node not in from_reason:
                problem(node, f"node {node!r} is not reachable from 'reason' (no signal of the LLM can call it)")
            if "merge" in g and node not in to_merge and node not in reported:
                problem(node, f"node {node!r} has no path to 'merge' (its {name} would never join the reply)")

        for node, message in _unknown_kinds(config):
            problem(node, message)

    if problems:
        messages = [m for _, m in problems]
        head = messages[0] if len(messages) == 1 else f"{len(messages)} problems: " + "; ".join(messages)
        raise GraphError(f"graph check failed: {head}", node=problems[0][0], problems=messages)

    # 5. Parallel stages: topological generations of the graph with cycles condensed into one node each.
    inner = g.subgraph(n for n in g if n not in (START, END))
    dag = nx.condensation(inner)
    stages = []
    for generation in nx.topological_generations(dag):
        members = sorted((n for c in generation for n in dag.nodes[c]["members"]), key=order.__getitem__)
        stages.append(members)
    notes: dict[str, list[str]] = {}
    for name, spec in sg.nodes.items():
        fanout = (spec.metadata or {}).get(FANOUT)
        if fanout:
            notes.setdefault(name, []).append(f"Send: {fanout}")
    if compiled is not None:
        for when in ("before", "after"):
            interrupts = getattr(compiled, f"interrupt_{when}_nodes", None) or ()
            for name in list(sg.nodes) if interrupts == "*" else interrupts:
                notes.setdefault(name, []).append(f"interrupt {when}")
    for component in nx.strongly_connected_components(inner):
        if len(component) > 1:
            for name in component:
                notes.setdefault(name, []).append("in a cycle")
    name = getattr(config, "name", None) or getattr(compiled, "name", None) or "graph"
    edges = [(s, t) for s, t in g.edges]
    return GraphReport(name, list(sg.nodes), edges, stages, notes)
