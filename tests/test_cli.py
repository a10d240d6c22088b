"""The mmgraph command line."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from core.turns import TextPart
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
    # before the first message, the world's vocabulary: what a newcomer can ask
    assert out.index("colours: red, green, blue, yellow, purple, orange") < out.index("(attached")

    from orchestrator.assistant import Assistant

    with Assistant(db=tmp_path / "home" / "threads.sqlite", artifacts=tmp_path / "home" / "artifacts") as bot:
        history = bot.history("repl")
    assert [t.role for t in history] == ["user", "assistant"] * 2
    assert history[0].parts[0].type == "media" and history[2].parts == (TextPart(text="And again?"),)


def test_run_with_a_custom_graph_factory(tmp_path, monkeypatch, capsys):
    """``--graph MODULE:FUNCTION`` (also on chat and serve): here a node after reason that drops every signal."""
    (tmp_path / "text_only_graph.py").write_text(
        "from graphs import GraphBuilder\n\n"
        "def no_media(state):\n"
        "    return {'draft': [p for p in state['draft'] if p.type != 'signal'], 'signals': []}\n\n"
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


def _flat(text: str) -> str:
    """``text`` without whitespace: argparse wraps help lines (and may break them at hyphens)."""
    return "".join(text.split())


def test_train_help_lists_every_train_config_field_with_its_description():
    from training.config import TrainConfig

    result = subprocess.run(
        [sys.executable, "-m", "mmgraph.cli", "train", "pt", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert result.returncode == 0, result.stderr
    help_text = _flat(result.stdout)
    for name, info in TrainConfig.model_fields.items():
        if name == "stage":  # the subcommand: mmgraph train pt|it
            continue
        flag = cli.TRAIN_RENAMES.get(name, "--" + name.replace("_", "-"))
        assert flag in result.stdout, name
        assert info.description, f"TrainConfig.{name} has no description"
        assert _flat(info.description.rstrip(".")) in help_text, name


def test_the_train_options_are_read_without_torch():
    """``mmgraph train pt|it`` reads its options from TrainConfig, which is plain pydantic: no torch to load."""
    code = (
        "import sys, argparse\n"
        "from core.options import add_options\n"
        "from training.config import TrainConfig\n"
        "add_options(argparse.ArgumentParser(), TrainConfig)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_train_flags_reach_the_train_config_and_bad_values_name_their_flag(monkeypatch, tmp_path, capsys):
    import training

    seen = []
    monkeypatch.setattr(training, "train", lambda *a, **kw: seen.append((a, kw)) or SimpleNamespace(main_process=False))
    base = ["train", "it", "--data", "d.json", "--out", str(tmp_path / "o")]
    flags = ["--micro-batches", "3", "--steps", "7", "--cache", str(tmp_path / "c"), "--lora", "--no-progress"]
    assert cli.main([*base, *flags, "--lora-targets", '["q_proj", "v_proj"]', "--resume"]) == 0
    ((args, kwargs),) = seen
    config = kwargs["train"]
    assert args == (None, ["d.json"], str(tmp_path / "o")) and kwargs["resume"] is True
    assert (config.stage, config.micro_batches, config.max_steps, config.cache_dir) == ("it", 3, 7, str(tmp_path / "c"))
    assert config.lora is True and config.progress is False and config.lora_targets == ["q_proj", "v_proj"]

    capsys.readouterr()
    assert cli.main([*base, "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmgraph: error: --batch-size:") and "greater than or equal to 1" in err
    assert cli.main([*base, "--steps", "0"]) == 2  # a renamed flag is named as typed
    assert capsys.readouterr().err.startswith("mmgraph: error: --steps:")
    assert len(seen) == 1  # nothing trained on a bad value

    result = subprocess.run(
        [sys.executable, "-m", "mmgraph.cli", "train", "pt", "--data", "d.json", "--out", "o", "--batch-size", "0"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "--batch-size" in result.stderr


def test_serve_limits_come_from_server_settings(monkeypatch, capsys):
    from serving.settings import ServerSettings

    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--help"])
    help_text = _flat(capsys.readouterr().out)
    for name, info in ServerSettings.model_fields.items():
        assert info.description, f"ServerSettings.{name} has no description"
        assert _flat(info.description.rstrip(".")) in help_text, name

    args = parser.parse_args(
        ["serve", "--queue-size", "2", "--max-body-bytes", "4096", "--allow-media-domain", "a.example"]
        + ["--allow-media-domain", "b.example", "--allowed-local-media-path", "/srv/media"]
    )
    settings = cli._settings(ServerSettings, args, cli.SERVE_RENAMES)
    assert (settings.queue_size, settings.max_body_bytes) == (2, 4096)
    assert settings.allowed_media_domains == ["a.example", "b.example"]
    assert str(settings.allowed_local_media_path) == "/srv/media"
    assert cli._settings(ServerSettings, parser.parse_args(["serve"]), cli.SERVE_RENAMES) == ServerSettings()

    created = []
    monkeypatch.setattr("serving.app.create_app", lambda **kw: created.append(kw))
    assert cli.main(["serve", "--max-body-bytes", "10"]) == 2
    assert capsys.readouterr().err.startswith("mmgraph: error: --max-body-bytes:") and not created
