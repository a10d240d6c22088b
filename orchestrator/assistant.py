"""The Python workflow API.

>>> from mmgraph import Assistant
>>> bot = Assistant.from_config("tiny-random")
>>> reply = bot.chat("Describe this, then draw it at night.", images=["cat.png"], thread_id="t1")
>>> reply.text, reply.parts, reply.artifacts[0].path
>>> for event in bot.stream("Make a sound of rain", audio=["clip.wav"], generate=["audio"]): ...
>>> bot.resume("t1", True)   # a turn a custom graph paused (``interrupt()`` in a node, ``interrupt_before``)

Each call is one run of the compiled LangGraph (:attr:`Assistant.graph`) on a thread kept by the checkpointer (a
SQLite file, or a ``postgresql://`` database that replicas share), so a conversation continues across calls and
across Assistant instances sharing a database.
``graph=`` runs a custom graph instead (a :class:`graphs.builder.GraphBuilder` with your nodes around ours), checked
by :func:`graphs.check.check_graph` before any turn runs.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Command

from core import turns as T
from core.artifacts import ArtifactRef, ArtifactStore
from core.config import SystemConfig
from core.hub import default_home
from core.turns import CHECKPOINT_TYPES, MediaPart, Part, TextPart, Turn
from graphs import RunContext, check_graph, compile_graph
from modalities.media import sniff_mime
from orchestrator.system import MMSystem, pretrained_config
from orchestrator.thread_store import open_checkpointer

MediaInput = str | os.PathLike[str] | bytes


# -- reply types --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """A medium of a reply where this Assistant's store keeps it: its reference, its file, who made it."""

    ref: ArtifactRef
    path: Path
    generator: str | None = None

    @property
    def id(self) -> str:
        return self.ref.id

    @property
    def modality(self) -> str:
        return self.ref.modality

    @property
    def mime(self) -> str:
        return self.ref.mime

    @property
    def size(self) -> int:
        return self.ref.size


@dataclass
class Reply:
    """An interleaved multimodal reply: the assistant's parts (:mod:`core.turns`) in the order it produced them."""

    parts: list[TextPart | MediaPart]
    thread_id: str
    finish_reason: str = "stop"  # stop | length | cancelled | interrupted
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens of the LLM call
    pending: list[dict[str, Any]] = field(default_factory=list)
    """When a custom graph paused the turn (``finish_reason == "interrupted"``): ``{"node", "value"}`` per waiting
    node, ``value`` being what the node passed to LangGraph's ``interrupt()`` (None at an ``interrupt_before``
    breakpoint). :meth:`Assistant.resume` carries on; ``parts`` then hold the LLM's text so far."""
    store: ArtifactStore | None = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def turn(self) -> Turn:
        return Turn(role="assistant", parts=tuple(self.parts))

    def artifact(self, part: MediaPart) -> Artifact:
        """Where ``part``'s medium lies on disk."""
        if self.store is None:
            raise ValueError("this reply was made without an artifact store to find its files in")
        return Artifact(part.artifact, self.store.path(part.artifact.id), part.generator)

    @property
    def artifacts(self) -> list[Artifact]:
        """The reply's media, located on disk."""
        return [self.artifact(p) for p in self.parts if isinstance(p, MediaPart)]


@dataclass
class Event:
    """A streamed event: ``token`` (text), ``encoded``, ``progress`` (generator step/total), ``part``, ``interrupt``
    (the turn paused; ``data["pending"]``), ``done``."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    reply: Reply | None = None


# -- the assistant ------------------------------------------------------------------------------------------------


class Assistant:
    """A chat assistant over one MMSystem, one artifact store and one thread database."""

    def __init__(
        self,
        config: SystemConfig | str | Path | None = None,
        *,
        weights: str | Path | None = None,
        db: str | Path | None = None,
        artifacts: str | Path | None = None,
        device: str | None = None,
        system: MMSystem | None = None,
        graph: Any = None,
        batching: int | None = None,
    ) -> None:
        """``graph``: a custom graph -- a GraphBuilder or StateGraph (compiled here with this Assistant's
        checkpointer) or a compiled graph (given this Assistant's checkpointer if it has none); default: the
        any-to-any graph of the system's generators. ``db``: the thread database, a SQLite file (default
        ``$MMGRAPH_HOME/threads.sqlite``) or a ``postgresql://`` URL that several processes share. ``batching``:
        run turns concurrently, up to this many decoding together (:mod:`orchestrator.engine`: the system's model
        calls go through one worker that batches them); ``None``: one turn at a time."""
        self.system = system or MMSystem.from_config(config, weights=weights, device=device)
        if graph is not None:  # a mis-wired graph fails here, naming the node, before a file is opened
            check_graph(graph, self.config)
        home = default_home()
        self.store = ArtifactStore(artifacts if artifacts is not None else home / "artifacts")
        # a SQLite file, or a postgresql:// URL that replicas share (orchestrator.thread_store)
        self.checkpointer, self._close_db = open_checkpointer(
            db if db is not None else home / "threads.sqlite", checkpoint_serde()
        )
        if graph is None:
            self.graph = compile_graph(self.system.generator_names, checkpointer=self.checkpointer)
        else:
            self.graph = self._with_checkpointer(graph)
        self._context = RunContext(system=self.system, store=self.store)
        self.batching = batching
        if batching is not None:
            self.system.start_engine(max_batch=batching)
        self._lock = threading.Lock()  # without an engine: one run at a time over the shared models
        self._threads: dict[str, threading.Lock] = {}  # with one: one run at a time per conversation thread

    def _with_checkpointer(self, graph: Any) -> Any:
        """A user's graph compiled with (or given) the thread database, so threads, streaming and the server work
        as with the default graph."""
        if hasattr(graph, "compile"):  # a GraphBuilder or an uncompiled StateGraph
            return graph.compile(checkpointer=self.checkpointer)
        if graph.checkpointer is None:  # compiled without one: interrupts and threads need ours
            return graph.copy(update={"checkpointer": self.checkpointer})
        return graph

    @classmethod
    def from_config(cls, config: SystemConfig | str | Path | None = None, **kwargs: Any) -> Assistant:
        """Build from a preset name, a YAML path or a SystemConfig (``weights=DIR`` loads trained projectors)."""
        return cls(config, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> Assistant:
        """Build from a folder: an mmgraph system (``system.yaml`` + ``trainable.safetensors``, as training, ``mmgraph
        attach`` and :meth:`MMSystem.save_trainable` write it) or a published MM-LLM checkpoint in its Hugging Face
        layout (LLaVA, LLaVA-NeXT, BLIP-2, InstructBLIP, Llama 3.2 Vision: :mod:`orchestrator.peers`)."""
        return cls(pretrained_config(path), **kwargs)

    @property
    def config(self) -> SystemConfig:
        return self.system.config

    def close(self) -> None:
        self._close_db()

    def __enter__(self) -> Assistant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inputs -----------------------------------------------------------------------------------------------
    def add_media(self, item: MediaInput, modality: str) -> ArtifactRef:
        """Store a file path or raw bytes as an input artifact (validated when the turn runs)."""
        data = Path(item).read_bytes() if isinstance(item, (str, os.PathLike)) else bytes(item)
        return self.store.put(data, modality=modality, mime=sniff_mime(data) or "application/octet-stream")

    def _turn_input(
        self,
        text: str,
        media: dict[str, Sequence[MediaInput]],
        generate: Sequence[str] | None,
        allow: Sequence[str] | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        parts: list[Part] = []
        for modality, items in media.items():
            for item in items or ():
                parts.append(MediaPart(artifact=self.add_media(item, modality)))
        if text:
            parts.append(TextPart(text=text))
        turn: dict[str, Any] = {"inputs": parts, "generate": list(generate or []), "params": params}
        if allow is not None:
            turn["allow"] = list(allow)
        return turn

    def _reply(self, values: dict[str, Any], thread_id: str) -> Reply:
        parts = [p for p in T.parts(values.get("reply")) if isinstance(p, (TextPart, MediaPart))]
        finish = values.get("finish_reason") or "stop"
        return Reply(parts, thread_id, finish, dict(values.get("usage") or {}), store=self.store)

    # -- running --------------------------------------------------------------------------------------------------
    def stream(
        self,
        text: str = "",
        *,
        images: Sequence[MediaInput] = (),
        audio: Sequence[MediaInput] = (),
        video: Sequence[MediaInput] = (),
        media: dict[str, Sequence[MediaInput]] | None = None,
        thread_id: str | None = None,
        generate: Sequence[str] | None = None,
        allow: Sequence[str] | None = None,
        cancel: threading.Event | None = None,
        deltas: bool = True,
        **params: Any,
    ) -> Iterator[Event]:
        """Run one turn, yielding events as they happen; the last event is ``done`` with the Reply.

        Args:
            images/audio/video: file paths or bytes. ``media`` adds items of other (plugin) modalities.
            generate: generators the reply must use, e.g. ``["image"]``.
            allow: generators the reply may use at all (default: all); ``[]`` forbids media output.
            deltas: yield the nodes' events as they come (tokens, media, progress); False yields only the last
                event (``done``, or ``interrupt`` then ``done``), and the nodes' events are not even made -- what
                :meth:`chat` and a non-streamed server request use.
            params: ``max_new_tokens``, ``temperature``, ``top_p``, ``seed``, ``steps``, ``guidance``.
        """
        thread_id = thread_id or uuid.uuid4().hex
        all_media = {"image": images, "audio": audio, "video": video, **(media or {})}
        turn = self._turn_input(text, all_media, generate, allow, params)
        yield from self._run(turn, thread_id, cancel, deltas)

    def resume_stream(
        self, thread_id: str, value: Any = None, *, cancel: threading.Event | None = None, deltas: bool = True
    ) -> Iterator[Event]:
        """Carry on with a paused turn (:attr:`Reply.pending`), yielding events as :meth:`stream` does.

        ``value`` answers a node's ``interrupt(...)`` call (LangGraph's ``Command(resume=value)``); at an
        ``interrupt_before`` breakpoint the run just continues. The signal-token states a waiting generator needs
        live in this process's memory, so resume with the Assistant that ran the turn.
        """
        state = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        if not state.next:
            raise ValueError(f"thread {thread_id!r} has no paused turn to resume")
        asked = any(task.interrupts for task in state.tasks)  # interrupt() calls, not breakpoints
        yield from self._run(Command(resume=value) if asked else None, thread_id, cancel, deltas)

    def resume(self, thread_id: str, value: Any = None, **kwargs: Any) -> Reply:
        """:meth:`resume_stream` to the end; returns the Reply (which may be paused again)."""
        return self._last_reply(self.resume_stream(thread_id, value, **{"deltas": False, **kwargs}))

    def pending(self, thread_id: str) -> list[dict[str, Any]]:
        """What a paused turn waits on: ``[{"node", "value"}]``; empty when the thread is not paused."""
        return self._pending(self.graph.get_state({"configurable": {"thread_id": thread_id}}))

    @staticmethod
    def _pending(state: Any) -> list[dict[str, Any]]:
        if not state.next:
            return []
        return [
            {"node": task.name, "value": value}
            for task in state.tasks
            for value in [i.value for i in task.interrupts] or [None]
        ]

    def _turn_lock(self, thread_id: str) -> threading.Lock:
        """What a turn holds while it runs: the one lock over the models, or -- with an engine, which serialises the
        model calls itself -- its conversation thread's own, so turns of different threads run together."""
        if self.system.engine is None:
            return self._lock
        with self._lock:
            return self._threads.setdefault(thread_id, threading.Lock())

    def _run(
        self, graph_input: Any, thread_id: str, cancel: threading.Event | None, deltas: bool = True
    ) -> Iterator[Event]:
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        # each run its own cancel flag; the feature and scratch caches are shared
        context = RunContext(
            system=self.system,
            store=self.store,
            features=self._context.features,
            scratch=self._context.scratch,
            cancel=cancel or threading.Event(),
        )
        with self._turn_lock(thread_id):
            # without deltas, LangGraph is asked for node updates only: the nodes' stream writer is then a no-op, so
            # no per-token event is made, queued or handed across threads
            modes: list[Any] = ["custom"] if deltas else ["updates"]
            for chunk in self.graph.stream(graph_input, config, context=context, stream_mode=modes, version="v2"):
                if chunk["type"] == "custom":  # the tag narrows the part's type
                    data = chunk["data"]
                    yield Event(data.get("type", "custom"), data)
            state = self.graph.get_state(config)
        pending = self._pending(state)
        if pending:
            draft = [p for p in T.parts(state.values.get("draft")) if isinstance(p, TextPart)]
            usage = dict(state.values.get("usage") or {})
            reply = Reply(list(draft), thread_id, "interrupted", usage, pending, store=self.store)
            yield Event("interrupt", {"thread_id": thread_id, "pending": pending})
        else:
            reply = self._reply(state.values, thread_id)
        yield Event("done", {"thread_id": thread_id}, reply=reply)

    @staticmethod
    def _last_reply(events: Iterator[Event]) -> Reply:
        reply = None
        for event in events:
            if event.type == "done":
                reply = event.reply
        assert reply is not None
        return reply

    def chat(self, text: str = "", **kwargs: Any) -> Reply:
        """Run one turn and return the interleaved Reply (same arguments as :meth:`stream`)."""
        return self._last_reply(self.stream(text, **{"deltas": False, **kwargs}))

    def _chat_request(self, request: dict[str, Any]) -> Reply:
        return self.chat(**request)

    def chat_many(
        self, requests: Sequence[dict[str, Any]], *, return_exceptions: bool = False
    ) -> list[Reply | BaseException]:
        """Run many turns at once, each a dict of :meth:`chat`'s arguments (``{"text": ..., "images": [...], ...}``),
        their decoding batched together (an engine is started with the batch size of ``len(requests)`` if this
        Assistant has none). Replies come back in order. A request that fails raises, after the others finished;
        with ``return_exceptions`` its exception takes its place in the list instead."""
        if self.system.engine is None:
            self.system.start_engine(max_batch=max(len(requests), 1))
        with ThreadPoolExecutor(max_workers=max(len(requests), 1), thread_name_prefix="mmgraph-turn") as pool:
            futures = [pool.submit(self._chat_request, request) for request in requests]
            results: list[Reply | BaseException] = []
            for future in futures:
                error = future.exception()
                results.append(error if error is not None else future.result())
        if not return_exceptions:
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return results

    def seed_history(self, thread_id: str, turns: Sequence[Turn]) -> bool:
        """Start a new thread from earlier turns (media parts name stored artifacts), e.g. the messages an OpenAI
        client sent; returns False, changing nothing, if the thread already has turns."""
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        with self._lock:
            if not turns or self.graph.get_state(config).values.get("history"):
                return False
            self.graph.update_state(config, {"history": list(turns)}, as_node="merge")
        return True

    def history(self, thread_id: str) -> list[Turn]:
        """The thread's finished turns as the checkpoint holds them (text and artifact references, never bytes)."""
        state = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        return T.turns(state.values.get("history"))


def checkpoint_serde() -> JsonPlusSerializer:
    """The thread store's serializer: LangGraph's msgpack, reviving the turn vocabulary (:mod:`core.turns`) and
    nothing else -- a tampered checkpoint cannot make it import and call other classes."""
    return JsonPlusSerializer(allowed_msgpack_modules=list(CHECKPOINT_TYPES))
