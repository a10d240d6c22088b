"""LangGraph state machine of mmgraph: state schemas, nodes, the graph builder and its checker."""

from graphs.builder import GraphBuilder, build_graph, compile_graph, load_graph
from graphs.check import GraphError, GraphReport, check_graph
from graphs.context import RunContext, TensorCache
from graphs.state import InputState, OutputState, State

__all__ = [
    "GraphBuilder",
    "build_graph",
    "compile_graph",
    "load_graph",
    "GraphError",
    "GraphReport",
    "check_graph",
    "RunContext",
    "TensorCache",
    "InputState",
    "OutputState",
    "State",
]
