"""``mmgraph bench serve``: the mixed workload, the option parsing, and a tiny run against a real ``mmgraph serve``."""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from benchmarks import BENCHES, DEFAULT_BENCHES
from benchmarks.run import add_arguments, counts, main
from benchmarks.serve import own_cpu_seconds, process_cpu_seconds
from benchmarks.workload import IMAGE_QUESTION, KINDS, TEXT_QUESTION, problem, turn


def test_the_workload_cycles_through_its_three_kinds_with_a_fresh_picture_for_every_image_question():
    turns = [turn(i, image_seed=100 + i) for i in range(9)]
    assert [kind for kind, _ in turns] == list(KINDS) * 3
    image, text, draw = (body for _, body in turns[:3])
    parts = image["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": IMAGE_QUESTION} and image["modalities"] == ["text"]
    url = parts[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1])[:4] == b"\x89PNG"
    assert text["messages"] == [{"role": "user", "content": TEXT_QUESTION}] and text["modalities"] == ["text"]
    assert draw["messages"][0]["content"].startswith("Draw a ") and draw["modalities"] == ["text", "image"]
    pictures = {body["messages"][0]["content"][1]["image_url"]["url"] for kind, body in turns if kind == KINDS[0]}
    assert len(pictures) == 3  # no two image questions send the same bytes: no cache answers for the server
    assert turn(0, image_seed=100) == turns[0]  # the same index and seed: the same request again


def test_a_reply_counts_only_when_it_is_whole():
    def reply(text: str, *modalities: str) -> dict:
        media = [{"type": "image_url", "artifact": {"modality": m}} for m in modalities]
        return {"choices": [{"message": {"content": text, "parts": [{"type": "text", "text": text}, *media]}}]}

    assert problem("text question", reply("I can draw shapes.")) is None
    assert problem("image generation", reply("Sure: ", "image")) is None
    assert "expected ['image']" in problem("image generation", reply("Sure, but no picture."))
    assert "expected []" in problem("image question", reply("It is red.", "image"))
    assert problem("text question", reply("  ")) == "empty reply text"
    assert "no choices" in problem("text question", {"error": {"message": "busy"}})


def test_bench_options_name_serve_and_load_but_do_not_run_them_by_default():
    assert {"serve", "load"} <= set(BENCHES) and not {"serve", "load"} & set(DEFAULT_BENCHES)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["serve", "--requests", "3", "--clients", "1,2"])
    assert args.benches == ["serve"] and args.requests == 3 and args.clients == (1, 2)
    assert parser.parse_args([]).clients == (1, 4, 8, 16) and parser.parse_args([]).requests == 16
    assert parser.parse_args(["load", "--server-arg=--device=cpu"]).server_arg == ["--device=cpu"]
    for bad in ("0,4", "four", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            counts(bad)


@pytest.mark.integration  # starts an mmgraph serve process and sends it 12 turns
def test_cpu_time_is_read_from_proc_as_the_process_itself_counts_it():
    before_proc, before_own = process_cpu_seconds(os.getpid()), own_cpu_seconds()
    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn 0.3 s of CPU
        pass
    spent_proc = process_cpu_seconds(os.getpid()) - before_proc
    spent_own = own_cpu_seconds() - before_own
    assert 0.25 < spent_proc < 1.0 and spent_proc == pytest.approx(spent_own, abs=0.05)


def test_bench_serve_runs_every_client_count_against_a_real_server_and_stops_it(tmp_path, capsys):
    out = tmp_path / "serve.json"
    main(["serve", "--requests", "3", "--clients", "1,2", "--json", str(out)])
    rows = json.loads(out.read_text())
    runs = [r for r in rows if "throughput" in r["notes"]]
    assert [r["notes"]["clients"] for r in runs] == [0, 1, 2]  # serial, then each client count
    for row in runs:
        notes = row["notes"]
        assert notes["turns"] == 3 and notes["failed"] == 0, notes["failures"]
        assert row["unit"] == "turns/s" and row["ours"] == pytest.approx(3 / notes["wall_s"])
        assert set(notes["kind_p50_s"]) == set(KINDS)
        assert 0 < notes["p50_s"] <= notes["p99_s"] <= max(notes["latencies_s"]) < notes["wall_s"] + 0.1
        # the server answered 3 turns (one an image generation): real CPU time, no more than its cores allow
        assert 0.01 < notes["server_cpu_s"] <= notes["cores"] * notes["wall_s"] + 0.05
        assert notes["server_cpu_per_turn_s"] == pytest.approx(notes["server_cpu_s"] / 3)
        assert notes["client_cpu_s"] > 0 and notes["cpu_ceiling_turns_s"] > 0
    assert runs[0]["ratio"] == pytest.approx(1.0)
    latency = [r for r in rows if r["measure"].startswith("serve p50 latency")]
    assert [r["notes"]["clients"] for r in latency] == [1, 2] and all(r["unit"] == "s" for r in latency)

    printed = capsys.readouterr().out
    assert "| serial | 3 | 0 |" in printed and "| 2 | 3 | 0 |" in printed

    # the server was stopped by SIGTERM and shut down gracefully; nothing of it is left
    notes = runs[0]["notes"]
    assert notes["queue_after"]["running"] == 0 and notes["queue_after"]["waiting"] == 0
    assert notes["server_returncode"] == -signal.SIGTERM and notes["server_graceful"] is True
    assert notes["server_leftovers"] == [] and not Path(f"/proc/{notes['server_pid']}").exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", notes["server_port"])):
        pass
