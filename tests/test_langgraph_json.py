"""langgraph.json at the repository root: ``langgraph dev`` and LangGraph Studio open the default graph from it.

The graph is imported the way LangGraph's server imports a ``./path/to/file.py:attr`` spec (from the file, under
a module name of its own), without the langgraph-cli package.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from pathlib import Path

import pytest
from langgraph.graph.state import CompiledStateGraph

from core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
NODES = {"ingest", "encode", "reason", "generate_image", "generate_video", "generate_audio", "merge"}


def load_spec(spec: str):
    """What a ``graphs`` entry of langgraph.json names: the object, or what a factory function returns."""
    path, _, attr = spec.rpartition(":")
    file = (ROOT / path).resolve()
    assert path.startswith("./") and file.is_file() and file.is_relative_to(ROOT), spec
    name = f"langgraph_json_{uuid.uuid4().hex}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    graph = getattr(module, attr)
    return graph if isinstance(graph, CompiledStateGraph) or not callable(graph) else graph()


def edges(graph) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in graph.get_graph().edges}


@pytest.fixture(scope="module")
def config() -> dict:
    return json.loads((ROOT / "langgraph.json").read_text())


def test_langgraph_json_names_the_default_any_to_any_graph(config):
    assert "." in config["dependencies"]  # the project itself, installed as a package
    assert list(config["graphs"]) == ["mmgraph"]
    graph = load_spec(config["graphs"]["mmgraph"])
    assert isinstance(graph, CompiledStateGraph)
    assert set(graph.nodes) == NODES | {"__start__"}
    wiring = edges(graph)
    assert {("__start__", "ingest"), ("ingest", "encode"), ("ingest", "reason"), ("encode", "reason")} <= wiring
    for name in ("image", "video", "audio"):
        assert {("reason", f"generate_{name}"), (f"generate_{name}", "merge")} <= wiring
    assert {("reason", "merge"), ("merge", "__end__")} <= wiring
    # Studio builds its input form and its state view from these schemas
    assert "inputs" in graph.get_input_jsonschema()["properties"]
    assert "reply" in graph.get_output_jsonschema()["properties"]


def test_it_is_the_graph_the_assistant_runs(config, world_assistant):
    graph = load_spec(config["graphs"]["mmgraph"])
    assert graph.name == world_assistant.graph.name
    assert set(graph.nodes) == set(world_assistant.graph.nodes)
    assert edges(graph) == edges(world_assistant.graph)
    assert graph.checkpointer is None  # the LangGraph server brings its own persistence


def test_a_turn_runs_with_the_json_context_langgraphs_server_sends(config, world_assistant, tmp_path, monkeypatch):
    """LangGraph's server sends the run's context as JSON (``{}`` by default): the studio graph's context then loads
    the system itself, and the turn is the one the Assistant runs."""
    monkeypatch.setenv("MMGRAPH_HOME", str(tmp_path))  # the default artifact store: $MMGRAPH_HOME/artifacts
    graph = load_spec(config["graphs"]["mmgraph"])
    out = graph.invoke({"inputs": [{"type": "text", "text": "Draw a red circle."}], "generate": ["image"]}, context={})
    reply = world_assistant.chat("Draw a red circle.", generate=["image"])
    assert [p.type for p in out["reply"]] == [p.type for p in reply.parts] and "media" in [p.type for p in reply.parts]
    assert out["reply"] == reply.parts  # the same text and the same picture (content-addressed ids)
    drawn = next(p for p in out["reply"] if p.type == "media")
    assert (tmp_path / "artifacts" / drawn.artifact.id[:2]).is_dir()  # stored where the context's store says


def test_mmgraph_config_picks_another_system(config, tmp_path, monkeypatch):
    system = load_config("tiny-world")
    only_images = system.model_copy(update={"generators": {"image": system.generators["image"]}})
    only_images.save(tmp_path / "images.yaml")
    monkeypatch.setenv("MMGRAPH_CONFIG", str(tmp_path / "images.yaml"))
    graph = load_spec(config["graphs"]["mmgraph"])
    assert set(graph.nodes) == NODES - {"generate_video", "generate_audio"} | {"__start__"}
