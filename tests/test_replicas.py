"""Replicas that share threads: a real PostgreSQL server (tests/postgres.py, started here), one artifact folder that
several processes write, a replica killed with SIGKILL in the middle of a turn, and replicas under Ray Serve.

Nothing here is a mock: the database is Debian's PostgreSQL server in a temporary folder, the replicas are real
``mmgraph serve`` processes (or Ray Serve actors) talking HTTP on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2
import psycopg
import pytest
from langgraph.checkpoint.postgres import PostgresSaver
from live_server import free_port
from postgres import PostgresServer, server_bindir
from pydantic import BaseModel

from core.artifacts import ArtifactStore
from core.errors import ConfigError
from mmgraph import cli
from orchestrator.assistant import Assistant, checkpoint_serde
from orchestrator.thread_store import open_checkpointer
from serving.replicas import REPLICA_HEADER, check_shared
from tinyworld.world import Picture, encode

MODEL = "tiny-world"
RED_CIRCLE = encode(Picture(colour="red", shape="circle", position="centre", size="large"), 1)


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session (about a second to start); each test takes a fresh database."""
    bindir = server_bindir()
    if bindir is None:
        reason = (
            "no PostgreSQL server binaries (initdb, pg_ctl in /usr/lib/postgresql/*/bin or on PATH): "
            "apt-get install postgresql (.ci/run does)"
        )
        if os.environ.get("CI"):  # CI installs them: their absence there is a broken CI, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    server = PostgresServer.start(bindir)
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    return postgres.create_database()


# -- the thread database ------------------------------------------------------------------------------------------


def test_a_thread_in_postgres_continues_in_another_assistant(tiny_system, pg_url, tmp_path, media):
    """Two Assistants (as two replicas would) on one Postgres database and one artifact folder."""
    shared = tmp_path / "artifacts"
    with Assistant(system=tiny_system, db=pg_url, artifacts=shared) as first:
        assert isinstance(first.checkpointer, PostgresSaver)
        r1 = first.chat("Remember this picture.", images=[media["image"]], thread_id="conv", generate=["image"])
    with Assistant(system=tiny_system, db=pg_url, artifacts=shared) as second:
        second.chat("What did I show you?", thread_id="conv", allow=[], max_new_tokens=4)
        history = second.history("conv")
        assert [t.role for t in history] == ["user", "assistant"] * 2
        image = history[0].parts[0].artifact
        assert second.store.get(image.id) == media["image"]
        assert [p.artifact.id for p in history[1].media] == [a.id for a in r1.artifacts]
        assert second.store.get(r1.artifacts[0].id)[:8] == b"\x89PNG\r\n\x1a\n"

    with psycopg.connect(pg_url) as conn:
        (count,) = conn.execute("select count(*) from checkpoints where thread_id = 'conv'").fetchone()
        blobs = [bytes(row[0]) for row in conn.execute("select blob from checkpoint_blobs where blob is not null")]
    assert count > 0 and blobs
    assert not any(media["image"][100:164] in blob or b"\x89PNG" in blob for blob in blobs)  # references, never bytes


def test_a_replica_survives_a_restart_of_the_database_server(tiny_system, tmp_path):
    """The pool replaces the connections a restarted server broke: the next turn works, the thread is whole."""
    server = PostgresServer.start(server_bindir())  # its own server: the session's is not restarted under others
    try:
        with Assistant(system=tiny_system, db=server.create_database(), artifacts=tmp_path / "a") as bot:
            bot.chat("Hello.", thread_id="t", allow=[], max_new_tokens=4)
            server.restart()
            bot.chat("Hello again.", thread_id="t", allow=[], max_new_tokens=4)
            assert [t.role for t in bot.history("t")] == ["user", "assistant"] * 2
    finally:
        server.stop()


class Intruder(BaseModel):
    """Not part of the turn vocabulary: a checkpoint naming it must not revive it, in Postgres as in SQLite."""

    command: str


def test_postgres_checkpoints_revive_the_turn_vocabulary_and_nothing_else(tiny_system, pg_url, tmp_path):
    with Assistant(system=tiny_system, db=pg_url, artifacts=tmp_path / "a") as bot:
        config = {"configurable": {"thread_id": "tampered"}}
        bot.graph.update_state(config, {"params": {"x": Intruder(command="rm -rf /")}}, as_node="merge")
    with Assistant(system=tiny_system, db=pg_url, artifacts=tmp_path / "a") as bot:
        revived = bot.graph.get_state(config).values["params"]["x"]
    assert not isinstance(revived, Intruder) and revived == {"command": "rm -rf /"}


def test_replicas_starting_together_create_the_tables_once(pg_url):
    """Six processes' worth of savers open one empty database at once: each waits its turn for the setup (a blocked
    ``pg_advisory_lock`` would deadlock with the migrations' ``CREATE INDEX CONCURRENTLY``)."""
    errors: list[BaseException] = []

    def open_and_close() -> None:
        try:
            saver, close = open_checkpointer(pg_url, checkpoint_serde())
            saver.get_tuple({"configurable": {"thread_id": "x", "checkpoint_ns": ""}})
            close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    with psycopg.connect(pg_url) as conn:
        versions = [v for (v,) in conn.execute("select v from checkpoint_migrations order by v")]
    assert versions == list(range(len(PostgresSaver.MIGRATIONS)))


def test_an_unreachable_database_is_a_clear_error_without_its_password():
    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/threads"
    with pytest.raises(ConfigError, match="cannot open the thread database") as caught:
        open_checkpointer(url, checkpoint_serde(), timeout=2)
    assert "s3cret" not in str(caught.value) and "someone:***@127.0.0.1" in str(caught.value)


def test_several_replicas_need_a_shared_database():
    check_shared("postgresql://db-host/threads", 3)
    check_shared("threads.sqlite", 1)
    for db in ("threads.sqlite", None):
        with pytest.raises(ConfigError, match="postgresql://"):
            check_shared(db, 2)


def test_serve_takes_replica_options_only_with_ray(capsys):
    assert cli.main(["serve", "--replicas", "3"]) == 2
    assert "are options of --ray" in capsys.readouterr().err


def test_serve_with_ray_refuses_a_sqlite_file_for_several_replicas_before_anything_starts(capsys):
    assert cli.main(["serve", "--ray", "--replicas", "2", "--db", "threads.sqlite"]) == 2
    assert "2 replicas must share their threads: give --db postgresql://" in capsys.readouterr().err


def test_serve_with_ray_names_the_missing_extra(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "serving.ray_app", raising=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the ray extra were not installed
    assert cli.main(["serve", "--ray", "--db", "postgresql://db-host/threads"]) == 2
    assert "pip install 'mmgraph[ray]'" in capsys.readouterr().err


# -- the artifact folder ------------------------------------------------------------------------------------------

WRITER = """
import hashlib, sys
from core.artifacts import ArtifactStore
from mmgraph import cli
store = ArtifactStore(sys.argv[1])
for round in range(3):
    for i in range(int(sys.argv[2])):
        data = hashlib.sha256(str(i).encode()).digest() * (32768 + i)  # 1 MiB and a bit, distinct per i
        store.put(data, modality="image", mime="image/png")
"""


def test_processes_sharing_an_artifact_folder_never_see_a_partial_file(tmp_path):
    """Two processes write the same artifacts at once while this one reads whatever has appeared: every artifact
    it can see is whole (its bytes hash to its id, its sidecar parses), and no temporary file is left behind."""
    root, n = tmp_path / "shared", 24
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(n)], env=env, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    reader, seen = ArtifactStore(root), set()
    deadline = time.monotonic() + 60
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        for meta in root.glob("*/*.json"):
            artifact_id = meta.stem
            if artifact_id in reader:
                data = reader.get(artifact_id)
                assert hashlib.sha256(data).hexdigest() == artifact_id and reader.ref(artifact_id).size == len(data)
                seen.add(artifact_id)
    for w in writers:
        assert w.wait(timeout=60) == 0, w.stderr.read().decode()
    assert len(seen) > 0 and len(list(root.glob("*/*.json"))) == n
    assert not list(root.rglob(".tmp-*"))


def test_a_writer_killed_between_data_and_sidecar_is_repaired_by_the_next_put(tmp_path):
    store = ArtifactStore(tmp_path / "a")
    ref = store.put(RED_CIRCLE, modality="image", mime="image/png")
    sidecar = tmp_path / "a" / ref.id[:2] / f"{ref.id}.json"
    sidecar.unlink()  # what a SIGKILL between the two renames leaves: the data, no sidecar
    assert ref.id not in store
    assert store.put(RED_CIRCLE, modality="image", mime="image/png") == ref
    assert ref.id in store and store.get(ref.id) == RED_CIRCLE


# -- replicas as processes ----------------------------------------------------------------------------------------


class Replica:
    """A ``mmgraph serve`` process of tiny-world on a free port, with the shared database and artifact folder."""

    def __init__(self, db: str, artifacts: Path, home: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "mmgraph.cli", "serve", "--port", str(self.port), "--db", db]
        cmd += ["--artifacts", str(artifacts), "--log-level", "warning", *extra]
        self.log = home.parent / f"replica-{self.port}.log"  # a file, not a pipe: a full pipe would stall the server
        with self.log.open("wb") as out:
            env = {**os.environ, "MMGRAPH_HOME": str(home)}
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx2.get(f"{self.url}/health").status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"replica did not start:\n{self.log.read_text()}")
            time.sleep(0.2)

    def chat(self, thread: str, text: str, *parts: dict, **body) -> httpx2.Response:
        content = [{"type": "text", "text": text}, *parts]
        payload = {"model": MODEL, "messages": [{"role": "user", "content": content}], "thread_id": thread, **body}
        response = httpx2.post(f"{self.url}/v1/chat/completions", json=payload, timeout=120)
        assert response.status_code == 200, response.text
        return response

    def turns(self, thread: str) -> list[dict]:
        return httpx2.get(f"{self.url}/v1/threads/{thread}").json()["turns"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _portable(turns: list[dict]) -> list[dict]:
    """Turns as any replica renders them: artifact URLs carry the answering server's address, so drop it."""
    text = json.dumps(turns)
    for part in (p for t in turns for p in t["parts"] if p["type"] != "text"):
        url = part[part["type"]]["url"]
        text = text.replace(url, url[url.index("/v1/") :])
    return json.loads(text)


@pytest.mark.integration  # two servers end to end (about 7 s)
def test_a_replica_killed_mid_turn_leaves_the_thread_whole_for_another(pg_url, tmp_path):
    """Two ``mmgraph serve`` replicas on one Postgres database and one artifact folder. Replica A answers a turn,
    then is SIGKILLed while it generates a video for the next; replica B continues the thread: the answered turn is
    there, the interrupted one is not (never half of it), B's prompt holds exactly the answered turn, and B answers.
    """
    shared = tmp_path / "artifacts"
    a = Replica(pg_url, shared, tmp_path / "home-a")
    b = Replica(pg_url, shared, tmp_path / "home-b")  # both start at once on the empty database
    try:
        a.wait_ready()
        b.wait_ready()
        image = {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(RED_CIRCLE).decode()},
        }
        # The answered turn, and the same turn on a control thread: what thread T's context must be after the crash.
        first = a.chat("T", "What colour is the shape?", image, seed=1, max_tokens=12)
        control = a.chat("C", "What colour is the shape?", image, seed=1, max_tokens=12)
        answer = first.json()["choices"][0]["message"]["content"]
        assert "red" in answer.lower() and control.json()["choices"][0]["message"]["content"] == answer
        assert first.headers[REPLICA_HEADER].endswith(f":{a.proc.pid}")
        before = _portable(a.turns("T"))
        assert [t["role"] for t in before] == ["user", "assistant"]

        # The long turn: 500 denoising steps of a video; A dies at the first progress event, mid-generation.
        payload = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Animate a green square moving left."}],
            "thread_id": "T",
            "modalities": ["text", "video"],
            "steps": 500,
            "stream": True,
        }
        with httpx2.stream("POST", f"{a.url}/v1/chat/completions", json=payload, timeout=120) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and '"progress"' in line:
                    a.proc.send_signal(signal.SIGKILL)
                    break
            else:
                raise AssertionError("the long turn ended before it could be interrupted")
        assert a.proc.wait(timeout=30) == -signal.SIGKILL

        # The database does hold the interrupted turn's last checkpoint (its input, waiting nodes), unfinished ...
        saver, close = open_checkpointer(pg_url, checkpoint_serde())
        try:
            latest = saver.get_tuple({"configurable": {"thread_id": "T", "checkpoint_ns": ""}})
        finally:
            close()
        assert "Animate a green square" in json.dumps(
            [p.model_dump() for p in latest.checkpoint["channel_values"]["inputs"]]
        )
        # ... yet B's thread holds the answered turn and nothing of the interrupted one.
        assert _portable(b.turns("T")) == before
        image_url = next(p["image_url"]["url"] for p in before[0]["parts"] if p["type"] == "image_url")
        fetched = httpx2.get(f"{b.url}{image_url}")
        assert fetched.content == RED_CIRCLE  # A's input artifact, read from the shared folder

        # B answers the next turn; its prompt is the answered turn plus the question, exactly as on the control.
        question = {"modalities": ["text"], "seed": 2, "max_tokens": 8}
        nxt = b.chat("T", "What shape is it?", **question)
        reference = b.chat("C", "What shape is it?", **question)
        assert nxt.headers[REPLICA_HEADER].endswith(f":{b.proc.pid}")
        assert nxt.json()["usage"]["prompt_tokens"] == reference.json()["usage"]["prompt_tokens"]
        after = _portable(b.turns("T"))
        assert after[:2] == before and [t["role"] for t in after] == ["user", "assistant"] * 2
        assert "Animate" not in json.dumps(after)
        assert after[3]["parts"][0]["text"] == nxt.json()["choices"][0]["message"]["content"]

        # Every file in the shared folder is whole: the video A was writing is there completely or not at all.
        for path in shared.glob("*/*"):
            if path.suffix != ".json" and not path.name.startswith(".tmp-"):
                assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem, path
    finally:
        a.stop()
        b.stop()


# -- replicas under Ray Serve --------------------------------------------------------------------------------------


@pytest.mark.integration  # a local Ray cluster and two replicas loading the model: about a minute on 2 cores
def test_ray_serve_replicas_share_threads(pg_url, tmp_path):
    """``mmgraph serve --ray --replicas 2``: requests through Ray's HTTP proxy reach both replicas, and a thread
    answered by one replica continues on the other with its whole history (text and media). Skipped without the
    ``ray`` extra (``make venv EXTRAS=dev,ray``); CI does not install it (docs/serving.md, "Tests")."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray Serve is not installed: pip install '.[ray]'")
    port = free_port()
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's unix sockets live under it
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "mmgraph.cli", "serve", "--ray", "--replicas", "2", "--replica-cpus", "0.5"]
    cmd += ["--db", pg_url, "--artifacts", str(tmp_path / "artifacts"), "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "MMGRAPH_HOME": str(tmp_path / "home"), "RAY_TMPDIR": str(ray_tmp)}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx2.get(f"{url}/health", timeout=10).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)

        replicas = {httpx2.get(f"{url}/health").headers[REPLICA_HEADER] for _ in range(24)}
        assert len(replicas) == 2, replicas

        def chat(text: str, *parts: dict, thread: str | None = "R", **body) -> httpx2.Response:
            content = [{"type": "text", "text": text}, *parts]
            payload = {"model": MODEL, "messages": [{"role": "user", "content": content}], "thread_id": thread}
            response = httpx2.post(f"{url}/v1/chat/completions", json={**payload, **body}, timeout=120)
            assert response.status_code == 200, response.text
            return response

        image = {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(RED_CIRCLE).decode()},
        }
        first = chat("What colour is the shape?", image, seed=1, max_tokens=12)
        assert "red" in first.json()["choices"][0]["message"]["content"].lower()
        question = {"modalities": ["text"], "seed": 2, "max_tokens": 6}
        fresh = chat("What shape is it?", thread=None, **question)
        turns = 1
        for _ in range(12):  # until Ray's router hands the thread to the other replica (1/2 a turn)
            nxt = chat("What shape is it?", **question)
            turns += 1
            if nxt.headers[REPLICA_HEADER] != first.headers[REPLICA_HEADER]:
                break
        assert nxt.headers[REPLICA_HEADER] != first.headers[REPLICA_HEADER], "the proxy never changed replica"
        # The other replica's prompt holds every earlier turn, the image's tokens included (read from the shared
        # folder and encoded there): longer than the first turn's prompt and the bare question together.
        usage = nxt.json()["usage"]["prompt_tokens"]
        assert usage > first.json()["usage"]["prompt_tokens"] + fresh.json()["usage"]["prompt_tokens"]
        history = httpx2.get(f"{url}/v1/threads/R").json()["turns"]
        assert [t["role"] for t in history] == ["user", "assistant"] * turns
        image_url = next(p["image_url"]["url"] for p in history[0]["parts"] if p["type"] == "image_url")
        assert httpx2.get(image_url).content == RED_CIRCLE
    finally:
        proc.send_signal(signal.SIGTERM)  # serve.shutdown() and ray.shutdown() stop the replicas and the cluster
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
