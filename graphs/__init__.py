"""LangGraph state machine of mmgraph: state schemas, nodes, and the graph builder."""

from graphs.builder import build_graph, compile_graph
from graphs.context import RunContext, TensorCache
from graphs.state import InputState, OutputState, State

__all__ = ["build_graph", "compile_graph", "RunContext", "TensorCache", "InputState", "OutputState", "State"]
