"""docs/peers.md's walk-through runs as written: import and chat, attach, train, chat again (and its Python)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mmgraph.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "peers.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.integration
def test_the_walkthrough_commands_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for folder in ("docs", "examples"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    commands = [line for line in _blocks("bash")[0].splitlines() if line.strip() and not line.startswith("#")]
    assert [c.split()[1] for c in commands] == ["run", "attach", "train", "run"]
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
    out = capsys.readouterr().out
    assert "wrote" in out and (tmp_path / "out/llava-gen-pt/trainable.safetensors").is_file()
    assert list((tmp_path / "out/llava-gen-reply").glob("*.png"))  # the trained folder drew its image

    namespace: dict = {}
    exec(_blocks("python")[0], namespace)  # the Python example, in the same folder
    assert namespace["bot"].config.peer is not None
