"""The mmgraph command line."""

from __future__ import annotations

import subprocess
import sys

from mmgraph import cli


def test_graph_prints_mermaid_with_every_node(capsys):
    assert cli.main(["graph"]) == 0
    out = capsys.readouterr().out
    assert out.lstrip().startswith("---") or "graph TD" in out
    for node in ("ingest", "encode", "reason", "generate_image", "generate_video", "generate_audio", "merge"):
        assert f"{node}(" in out or f"\t{node}" in out, node


def test_run_writes_requested_media(tmp_path, media, monkeypatch, capsys):
    image = tmp_path / "in.png"
    image.write_bytes(media["image"])
    monkeypatch.setenv("MMGRAPH_HOME", str(tmp_path / "home"))
    code = cli.main(
        [
            "run",
            "Draw this again.",
            "--image",
            str(image),
            "--generate",
            "image",
            "--max-new-tokens",
            "6",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    files = list((tmp_path / "out").glob("image-*.png"))
    assert len(files) == 1 and str(files[0]) in out


def test_errors_are_reported_not_raised(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    monkeypatch.setenv("MMGRAPH_HOME", str(tmp_path / "home"))
    assert cli.main(["run", "what?", "--image", str(bad)]) == 2
    assert "mmgraph: error:" in capsys.readouterr().err


def test_console_script_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "mmgraph.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "run" in result.stdout and "chat" in result.stdout


def test_chat_repl_attaches_media_and_keeps_the_thread(tmp_path, media, monkeypatch, capsys):
    image = tmp_path / "in.png"
    image.write_bytes(media["image"])
    lines = iter([f"/image {image}", "/generate image", "What is this? Draw it.", "And again?", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    monkeypatch.setenv("MMGRAPH_HOME", str(tmp_path / "home"))
    assert cli.main(["chat", "--thread", "repl", "--max-new-tokens", "5", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "(attached" in out and len(list((tmp_path / "out").glob("image-*.png"))) == 1

    from orchestrator.assistant import Assistant

    with Assistant(db=tmp_path / "home" / "threads.sqlite", artifacts=tmp_path / "home" / "artifacts") as bot:
        history = bot.history("repl")
    assert [t["role"] for t in history] == ["user", "assistant"] * 2
    assert history[0]["parts"][0]["type"] == "media" and history[2]["parts"] == [{"type": "text", "text": "And again?"}]


def test_run_with_a_custom_graph_factory(tmp_path, monkeypatch, capsys):
    """``--graph MODULE:FUNCTION`` (also on chat and serve): here a node after reason that drops every signal."""
    (tmp_path / "text_only_graph.py").write_text(
        "from graphs import GraphBuilder\n\n"
        "def no_media(state):\n"
        "    return {'draft': [p for p in state['draft'] if p['type'] != 'signal'], 'signals': []}\n\n"
        "def build(config):\n"
        "    return GraphBuilder(config).insert_after('reason', 'no_media', no_media)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMGRAPH_HOME", str(tmp_path / "home"))
    for graph, drawn in ((None, 1), ("text_only_graph:build", 0)):
        out = tmp_path / f"out-{drawn}"
        args = ["run", "Draw a red circle.", "--out", str(out)] + (["--graph", graph] if graph else [])
        assert cli.main(args) == 0
        assert len(list(out.glob("image-*.png"))) == drawn, capsys.readouterr().out
    assert cli.main(["run", "hi", "--graph", "text_only_graph:missing"]) == 2
    assert "has no function 'missing'" in capsys.readouterr().err
