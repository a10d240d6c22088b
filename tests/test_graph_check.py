"""graphs.check and ``mmgraph graph --check``: a mis-wired graph is refused naming the node, before any model loads;
a good one is accepted with its parallel stages. Configs only: nothing here loads weights."""

from __future__ import annotations

import pytest
from langgraph.graph import END

from core.config import load_config
from graphs import GraphBuilder, GraphError, build_graph, check_graph
from mmgraph import cli

GENS = ["generate_image", "generate_video", "generate_audio"]


@pytest.fixture(scope="module")
def config():
    return load_config("tiny-random")


def test_the_default_graph_passes_with_its_parallel_stages(config):
    report = check_graph(GraphBuilder(config), config)
    assert report.stages == [["ingest"], ["encode"], ["reason"], GENS, ["merge"]]
    text = report.format()
    assert text.startswith("OK: tiny-random")
    assert "2. encode  [Send: one task per input item]" in text
    assert "4. generate_image, generate_video, generate_audio  [Send: one task per signal group]" in text
    # The same checks read an uncompiled StateGraph and a compiled one (whose interrupts are noted).
    assert check_graph(build_graph(config), config).stages == report.stages
    compiled = GraphBuilder(config).compile(interrupt_before=["generate_video"])
    assert "interrupt before" in check_graph(compiled, config).format()


def test_a_generator_with_no_path_to_merge_is_named(config):
    broken = GraphBuilder(config).remove_edge("generate_image", "merge")
    with pytest.raises(GraphError) as caught:
        check_graph(broken, config)
    assert caught.value.node == "generate_image"
    assert caught.value.problems == [
        "node 'generate_image' cannot reach END (no path to 'merge'; it has no outgoing edge)"
    ]
    # Wired straight to END it ends the run, but its media skip the reply.
    bypass = GraphBuilder(config).remove_edge("generate_image", "merge").add_edge("generate_image", END)
    with pytest.raises(GraphError, match="'generate_image' has no path to 'merge'"):
        check_graph(bypass, config)
    # LangGraph itself compiles both: a node with no way out just ends the run.
    broken.compile(), bypass.compile()


def test_configured_generators_and_modalities_must_be_wired(config):
    with pytest.raises(GraphError) as caught:
        check_graph(GraphBuilder(["image"]), config)  # built for one generator, checked against three
    assert caught.value.problems == [
        "generator 'video' is not wired: there is no node 'generate_video'",
        "generator 'audio' is not wired: there is no node 'generate_audio'",
    ]
    unreached = GraphBuilder(config).remove_edge("reason", "generate_audio")
    with pytest.raises(GraphError, match="'generate_audio' is unreachable from START"):
        check_graph(unreached, config)
    cut = GraphBuilder(config).remove_edge("encode", "reason").add_edge("encode", "merge")
    with pytest.raises(GraphError, match="node 'encode' has no path to 'reason'"):
        check_graph(cut, config)
    # Without a config only the structure is checked: a one-generator graph is fine on its own.
    assert check_graph(GraphBuilder(["image"])).stages[3] == ["generate_image"]


def test_unreachable_nodes_and_cycles(config):
    graph = build_graph(config)  # a raw StateGraph edited by hand
    graph.add_node("orphan", lambda state: {})
    graph.add_edge("orphan", "merge")
    with pytest.raises(GraphError, match="node 'orphan' is unreachable from START") as caught:
        check_graph(graph, config)
    assert caught.value.node == "orphan"

    loop = GraphBuilder(config).insert_after("merge", "again", lambda state: {})
    loop.route("again", lambda state: "merge", ["merge"])  # merge -> again -> merge, forever
    with pytest.raises(GraphError) as caught:
        check_graph(loop, config)
    assert "cycle 'merge' -> 'again' -> 'merge' has no exit to END" in caught.value.problems
    assert not [p for p in caught.value.problems if p.startswith(("node 'merge'", "node 'again'"))]

    retry = GraphBuilder(config).insert_after("merge", "again", lambda state: {})
    retry.route("again", lambda state: END, ["merge", END])  # a loop with an exit is fine
    report = check_graph(retry, config)
    assert report.stages[-1] == ["merge", "again"] and "in a cycle" in report.format()


@pytest.mark.parametrize("preset", ["tiny-random", "tiny-world"])
def test_cli_check_accepts_the_presets(preset, capsys):
    assert cli.main(["graph", "--check", preset]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {preset}")
    assert "1. ingest" in out and "generate_image, generate_video, generate_audio" in out


FACTORIES = """
from graphs import GraphBuilder


def broken(config):
    return GraphBuilder(config).remove_edge("generate_image", "merge")


def safe(config):
    return GraphBuilder(config).insert_after("reason", "safety", lambda state: {})


def nothing(config):
    return None
"""


def test_cli_check_loads_a_custom_graph_and_names_the_broken_node(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_graphs.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["graph", "--check", "tiny-random", "--graph", "my_graphs:broken"]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "node 'generate_image' cannot reach END (no path to 'merge'" in err

    assert cli.main(["graph", "--config", "tiny-random", "--check", "--graph", "my_graphs:safe"]) == 0
    assert "4. safety\n" in capsys.readouterr().out
    assert cli.main(["graph", "--graph", "my_graphs:safe"]) == 0  # without --check: the mermaid drawing
    assert "reason --> safety" in capsys.readouterr().out

    assert cli.main(["graph", "--check", "--graph", "my_graphs:nothing"]) == 2
    assert "returned a NoneType" in capsys.readouterr().err
    assert cli.main(["graph", "--check", "--graph", "my_graphs"]) == 2
    assert "MODULE:FUNCTION" in capsys.readouterr().err


def test_component_kinds_nothing_provides_are_named(config):
    """A plugin that is not installed (or a typo) fails the check, naming the kind and the entry-point group."""
    data = config.model_dump()
    data["modalities"]["image"]["encoder"] = "lidar_sweeps"
    data["modalities"]["audio"]["projector"]["kind"] = "token_merger"
    data["generators"]["video"]["kind"] = "text_to_3d"
    broken = type(config).model_validate(data)
    with pytest.raises(GraphError) as caught:
        check_graph(GraphBuilder(broken), broken)
    assert caught.value.node == "encode" and len(caught.value.problems) == 3
    assert (
        "modality 'image' names modality encoder kind 'lidar_sweeps', which nothing provides "
        "(entry-point group 'mmgraph.modalities'); known: " in caught.value.problems[0]
    )
    assert "clip_vision, " in caught.value.problems[0] and "whisper" in caught.value.problems[0]
    assert "modality 'audio' names input projector kind 'token_merger'" in caught.value.problems[1]
    assert "generator 'video' names generator kind 'text_to_3d'" in caught.value.problems[2]
