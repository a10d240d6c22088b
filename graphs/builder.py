"""Assemble the any-to-any LangGraph from whatever modalities and generators a system has.

``START -> ingest -> encode (Send per item) -> reason -> generate_<name> (Send per signal group) -> merge -> END``

A registered plugin modality or generator gets its nodes here with no change to this file: encoders share the
one ``encode`` node (the item says which modality), and every generator gets its own ``generate_<name>`` node.
"""

from __future__ import annotations

from typing import Iterable

from langgraph.graph import END, START, StateGraph

from graphs import nodes
from graphs.context import RunContext
from graphs.state import InputState, OutputState, State
from orchestrator.config import SystemConfig


def build_graph(system: "SystemConfig | Iterable[str]") -> StateGraph:
    """The uncompiled graph for a SystemConfig (or a list of generator names), so callers can add their own
    nodes and edges before compiling."""
    generator_names = list(system.generators if isinstance(system, SystemConfig) else system)
    graph = StateGraph(State, context_schema=RunContext, input_schema=InputState, output_schema=OutputState)
    graph.add_node("ingest", nodes.ingest)
    graph.add_node("encode", nodes.encode)
    graph.add_node("reason", nodes.reason)
    for name in generator_names:
        graph.add_node(f"generate_{name}", nodes.make_generate_node(name))
    graph.add_node("merge", nodes.merge)

    graph.add_edge(START, "ingest")
    graph.add_conditional_edges("ingest", nodes.route_inputs, ["encode", "reason"])
    graph.add_edge("encode", "reason")
    graph.add_conditional_edges("reason", nodes.route_signals, [f"generate_{n}" for n in generator_names] + ["merge"])
    for name in generator_names:
        graph.add_edge(f"generate_{name}", "merge")
    graph.add_edge("merge", END)
    return graph


def compile_graph(system: "SystemConfig | Iterable[str]", checkpointer=None, **kwargs):
    return build_graph(system).compile(checkpointer=checkpointer, name="mmgraph", **kwargs)
