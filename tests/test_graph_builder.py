"""Custom graphs: a user's nodes wired around ours with graphs.builder, run through the Assistant and the server.

The example is a safety filter between ``reason`` and the generators that refuses to draw a forbidden colour:
on tiny-world, "Draw a red circle." makes the LLM emit image signal tokens, so without the filter the image
generator draws; with it the image is never generated and the reply says why, while blue circles still come.
"""

from __future__ import annotations

import re

import openai
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START
from langgraph.types import interrupt
from live_server import LiveServer

from core.artifacts import ArtifactStore
from core.turns import TextPart
from graphs import GraphBuilder, GraphError, RunContext, build_graph
from orchestrator.assistant import Assistant
from serving import create_app

FORBIDDEN = "red"
REFUSAL = f"I can't draw {FORBIDDEN} things."
GENERATORS = ["image", "video", "audio"]


def no_red_images(state: dict) -> dict:
    """A user's safety filter: a plain node, state in, partial update out. After ``reason`` the state holds the
    LLM's ``draft`` (text and signal parts) and its ``signals`` (the generator calls waiting to run); dropping an
    image signal means the image generator is never called, and its place in the draft gets the refusal."""
    said = " ".join(p.text for p in [*state["inputs"], *state["draft"]] if p.type == "text")
    refused = {s.index for s in state["signals"] if s.generator == "image"}
    if not refused or not re.search(rf"\b{FORBIDDEN}\b", said, re.IGNORECASE):
        return {}
    get_stream_writer()({"type": "token", "text": REFUSAL})  # streamed like the LLM's own text
    draft = [
        {"type": "text", "text": REFUSAL} if p.type == "signal" and p.index in refused else p for p in state["draft"]
    ]
    return {"draft": draft, "signals": [s for s in state["signals"] if s.index not in refused]}


def safe_builder(system) -> GraphBuilder:
    return GraphBuilder(system).insert_after("reason", "safety", no_red_images)


@pytest.fixture(scope="module")
def safe_bot(world_assistant, tmp_path_factory):
    """tiny-world (the models the session already loaded) behind the custom graph, on its own threads."""
    folder = tmp_path_factory.mktemp("safe-bot")
    bot = Assistant(
        system=world_assistant.system,
        graph=safe_builder(world_assistant.system),
        db=folder / "threads.sqlite",
        artifacts=folder / "artifacts",
    )
    yield bot
    bot.close()


def turn(text: str) -> dict:
    return {"inputs": [{"type": "text", "text": text}], "generate": [], "params": {}}


# -- wiring (no models) ---------------------------------------------------------------------------------------------


def test_default_builder_is_the_default_graph():
    builder = GraphBuilder(GENERATORS)
    gens = [f"generate_{n}" for n in GENERATORS]
    assert builder.nodes == ["ingest", "encode", "reason", *gens, "merge"]
    assert set(builder.edges) == {
        (START, "ingest"),
        ("ingest", "encode"),
        ("ingest", "reason"),
        ("encode", "reason"),
        *[("reason", g) for g in gens],
        ("reason", "merge"),
        *[(g, "merge") for g in gens],
        ("merge", END),
    }
    assert set(build_graph(GENERATORS).nodes) == set(builder.nodes)


def test_insert_after_and_before_rewire_the_routers():
    builder = (
        GraphBuilder(GENERATORS)
        .insert_after("reason", "safety", no_red_images)
        .insert_before("reason", "retrieve", lambda state: {})
        .insert_before(END, "audit", lambda state: {})
    )
    edges = set(builder.edges)
    # reason's router (generate_* | merge) now leaves from safety; what led to reason leads to retrieve.
    assert ("reason", "safety") in edges and ("reason", "merge") not in edges
    assert {("safety", f"generate_{n}") for n in GENERATORS} | {("safety", "merge")} <= edges
    assert {("ingest", "retrieve"), ("encode", "retrieve"), ("retrieve", "reason")} <= edges
    assert ("ingest", "reason") not in edges and ("encode", "reason") not in edges
    assert {("merge", "audit"), ("audit", END)} <= edges and ("merge", END) not in edges
    mermaid = builder.compile().get_graph().draw_mermaid()
    assert "ingest -. &nbsp;reason&nbsp; .-> retrieve" in mermaid  # route_inputs' "reason" now means retrieve


def test_builder_errors_name_the_node():
    builder = GraphBuilder(GENERATORS)
    with pytest.raises(GraphError, match="no node 'reasn' to insert after") as caught:
        builder.insert_after("reasn", "safety", no_red_images)
    assert caught.value.node == "reasn"
    with pytest.raises(GraphError, match="cannot insert 'gate' before 'generate_image'.*after 'reason'"):
        builder.insert_before("generate_image", "gate", lambda state: {})  # it runs on a Send payload
    with pytest.raises(GraphError, match="node 'merge' already exists"):
        builder.add_node("merge", lambda state: {})
    with pytest.raises(GraphError, match="no node 'nowhere'.*'reason' -> 'nowhere'"):
        GraphBuilder(GENERATORS).add_edge("reason", "nowhere").build()


# -- the safety filter in action ------------------------------------------------------------------------------------


def test_the_default_graph_draws_red(world_assistant):
    """The control: without the filter, the model asks for a red circle and the image generator draws it."""
    reply = world_assistant.chat("Draw a red circle.")
    assert [a.generator for a in reply.artifacts] == ["image"]


def test_safety_filter_through_the_assistant(safe_bot):
    events = list(safe_bot.stream("Draw a red circle.", thread_id="red"))
    reply = events[-1].reply
    assert reply.artifacts == [] and REFUSAL in reply.text
    assert "".join(e.data["text"] for e in events if e.type == "token") == reply.text  # the refusal streamed too
    assert not [e for e in events if e.type in ("progress", "part")]  # the generator never ran
    assert list(safe_bot.history("red")[-1].parts) == reply.parts and all(p.type == "text" for p in reply.parts)

    forced = safe_bot.chat("Draw a red circle.", generate=["image"])  # even when the caller insists
    assert forced.artifacts == [] and REFUSAL in forced.text

    blue = safe_bot.chat("Draw a blue circle.")
    assert [a.generator for a in blue.artifacts] == ["image"] and REFUSAL not in blue.text
    assert blue.artifacts[0].path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.integration
def test_safety_filter_through_the_server(safe_bot):
    with LiveServer(create_app(safe_bot)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)

        def ask(text: str, **kwargs) -> tuple:
            reply = client.chat.completions.create(
                model="tiny-world", messages=[{"role": "user", "content": text}], **kwargs
            )
            return reply.choices[0].message, reply.choices[0].message.model_extra["parts"]

        message, parts = ask("Draw a red circle.")
        assert [p["type"] for p in parts] == ["text", "text"] and REFUSAL in message.content
        _, parts = ask("Draw a red circle.", modalities=["text", "image"])
        assert "image_url" not in [p["type"] for p in parts]
        message, parts = ask("Draw a blue circle.")
        assert [p["type"] for p in parts] == ["text", "image_url"] and REFUSAL not in message.content

        chunks = list(
            client.chat.completions.create(
                model="tiny-world", messages=[{"role": "user", "content": "Draw a red circle."}], stream=True
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed.endswith(REFUSAL)
        assert not [c for c in chunks if c.model_extra.get("progress")]


# -- other custom graphs --------------------------------------------------------------------------------------------


def test_retrieval_before_reason_sees_the_encoded_features(world_assistant, media, tmp_path):
    """A node before ``reason`` runs once per turn, after every encode branch, with the features in state."""
    seen = []

    def retrieve(state: dict) -> dict:
        seen.append(dict(state.get("features") or {}))
        return {}

    builder = GraphBuilder(world_assistant.system).insert_before("reason", "retrieve", retrieve)
    with Assistant(
        system=world_assistant.system, graph=builder, db=tmp_path / "t.sqlite", artifacts=tmp_path / "a"
    ) as bot:
        reply = bot.chat("What colour is the shape?", images=[media["image"]], allow=[])
        assert reply.text and len(seen) == 1 and len(seen[0]) == 1  # one image encoded before retrieve ran
        bot.chat("Hello!", allow=[], max_new_tokens=4)  # no media: ingest routes straight to retrieve
        assert len(seen) == 2


def test_human_approval_interrupt_before_a_generator(world_assistant, tmp_path):
    """``interrupt_before`` passes through: the run stops before the image generator and resumes on approval."""
    system = world_assistant.system
    graph = GraphBuilder(system).compile(checkpointer=InMemorySaver(), interrupt_before=["generate_image"])
    context = RunContext(system=system, store=ArtifactStore(tmp_path / "a"))
    config = {"configurable": {"thread_id": "approve"}}
    graph.invoke(turn("Draw a blue circle."), config, context=context)
    paused = graph.get_state(config)
    assert paused.next == ("generate_image",) and paused.values["signals"][0].generator == "image"
    done = graph.invoke(None, config, context=context)  # approved: run on
    assert [p.generator for p in done["reply"] if p.type == "media"] == ["image"]


def ask_approval(state: dict) -> dict:
    """A human-approval node: pause the turn (LangGraph ``interrupt``) when the LLM wants to generate; a False
    answer drops the generator calls and says so in their place."""
    wanted = [s.generator for s in state["signals"]]
    if not wanted or interrupt({"generators": wanted}):
        return {}
    draft = [TextPart(text="(not generated)") if p.type == "signal" else p for p in state["draft"]]
    return {"draft": draft, "signals": []}


def test_approval_interrupt_through_the_assistant(world_assistant, tmp_path):
    builder = GraphBuilder(world_assistant.system).insert_after("reason", "approve", ask_approval)
    with Assistant(
        system=world_assistant.system, graph=builder, db=tmp_path / "t.sqlite", artifacts=tmp_path / "a"
    ) as bot:
        events = list(bot.stream("Draw a blue circle.", thread_id="ok"))
        paused = events[-1].reply
        assert paused.finish_reason == "interrupted" and paused.artifacts == []
        assert paused.pending == [{"node": "approve", "value": {"generators": ["image"]}}] == bot.pending("ok")
        assert [e.type for e in events][-2:] == ["interrupt", "done"] and paused.text  # the LLM's words so far
        assert bot.history("ok") == []  # the turn is not over
        done = bot.resume("ok", True)
        assert done.finish_reason == "stop" and [a.generator for a in done.artifacts] == ["image"]
        assert bot.pending("ok") == [] and len(bot.history("ok")) == 2
        with pytest.raises(ValueError, match="no paused turn"):
            bot.resume("ok", True)

        assert bot.chat("Draw a blue circle.", thread_id="no").finish_reason == "interrupted"
        refused = bot.resume("no", False)
        assert refused.artifacts == [] and "(not generated)" in refused.text

        assert bot.chat("What colour is the sky?", thread_id="text", allow=[]).finish_reason == "stop"  # no ask

        assert bot.chat("Draw a blue circle.", thread_id="new").finish_reason == "interrupted"
        fresh = bot.chat("Hello!", thread_id="new", allow=[])  # a new message abandons the paused turn
        assert fresh.finish_reason == "stop" and bot.pending("new") == []
        assert [t.role for t in bot.history("new")] == ["user", "assistant"]


def test_interrupt_before_a_generator_through_the_assistant(world_assistant, tmp_path):
    compiled = GraphBuilder(world_assistant.system).compile(interrupt_before=["generate_image"])
    with Assistant(
        system=world_assistant.system, graph=compiled, db=tmp_path / "t.sqlite", artifacts=tmp_path / "a"
    ) as bot:
        paused = bot.chat("Draw a blue circle.", thread_id="b")
        assert paused.finish_reason == "interrupted" and paused.pending == [{"node": "generate_image", "value": None}]
        done = bot.resume("b")
        assert [a.generator for a in done.artifacts] == ["image"] and done.finish_reason == "stop"


def test_assistant_takes_a_compiled_graph_and_refuses_a_broken_one(world_assistant, tmp_path):
    system = world_assistant.system
    compiled = GraphBuilder(system).compile(interrupt_before=["generate_video"])
    with Assistant(system=system, graph=compiled, db=tmp_path / "t.sqlite", artifacts=tmp_path / "a") as bot:
        assert bot.graph.checkpointer is bot.checkpointer and bot.graph.interrupt_before_nodes == ["generate_video"]
    broken = GraphBuilder(system).remove_edge("generate_audio", "merge")
    with pytest.raises(GraphError, match="'generate_audio' cannot reach END") as caught:
        Assistant(system=system, graph=broken, db=tmp_path / "u.sqlite", artifacts=tmp_path / "a")
    assert caught.value.node == "generate_audio"
