"""Continuous batching (orchestrator.engine): replies of many turns decode together, token for token as they would
alone; rows join and leave between steps; one request's failure or cancellation touches only that request; media
and generator calls batch across turns."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from core.artifacts import ArtifactRef
from core.errors import PromptError
from core.turns import MediaPart, TextPart, Turn
from modalities import samples
from orchestrator.system import MMSystem

QUESTIONS = [
    "What colour is the shape?",
    "Draw a blue circle.",
    "Where is the shape in the picture? Tell me in detail.",
    "Hello!",
    "Play two high beeps.",
    "What is in the picture?",
]


@pytest.fixture(scope="module")
def world():
    """The trained default system (its replies are words, so a wrong token would show), private to this module."""
    system = MMSystem.from_config("tiny-world", device="cpu")
    yield system
    system.stop_engine()


def _conversation(system, i: int):
    parts = []
    features = {}
    if i % 2 == 0:  # every other one shows a picture
        ref = ArtifactRef(id=f"{i:064x}", modality="image", mime="image/png", size=1)
        parts.append(MediaPart(artifact=ref))
        colour = ["red", "green", "blue"][i % 3]
        features = {"image": system.encode("image", [samples.square_image(colour, 64)])}
    parts.append(TextPart(text=QUESTIONS[i % len(QUESTIONS)]))
    return [Turn(role="user", parts=tuple(parts))], features


def _tokens(result) -> list[int]:
    return [i for segment in result.segments for i in segment.token_ids]


def _alone(system, n: int, **options):
    results = []
    for i in range(n):
        conversation, features = _conversation(system, i)
        results.append(system.respond_now(conversation, features, max_new_tokens=12 + 3 * i, **options))
    return results


def _together(system, n: int, stagger: float = 0.0, **options):
    conversations = [_conversation(system, i) for i in range(n)]  # encoded before the engine starts

    def one(i: int):
        time.sleep(stagger * i)  # later ones join a batch already decoding
        conversation, features = conversations[i]
        return system.respond(conversation, features, max_new_tokens=12 + 3 * i, **options)

    system.start_engine(max_batch=8)
    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(one, range(n))), dict(system.engine.stats)
    finally:
        system.stop_engine()


@pytest.mark.parametrize("stagger", [0.0, 0.01])
def test_batched_greedy_replies_equal_the_replies_alone(world, stagger):
    alone = _alone(world, 6)
    together, stats = _together(world, 6, stagger=stagger)
    assert [_tokens(r) for r in together] == [_tokens(r) for r in alone]
    assert [r.finish_reason for r in together] == [r.finish_reason for r in alone]
    assert [[(s.generator, s.token_ids) for s in r.signals] for r in together] == [
        [(s.generator, s.token_ids) for s in r.signals] for r in alone
    ]
    for a, b in zip(alone, together, strict=True):  # the signal states the output projectors read
        for sa, sb in zip(a.signals, b.signals, strict=True):
            torch.testing.assert_close(sa.hidden, sb.hidden, rtol=1e-4, atol=1e-4)
    assert stats["most_rows"] >= 2 and stats["rows"] > stats["steps"]  # rows really shared steps


def test_sampled_replies_keep_their_own_seeds(world):
    alone = _alone(world, 4, temperature=0.8, seed=5)
    together, _ = _together(world, 4, temperature=0.8, seed=5)
    assert [_tokens(r) for r in together] == [_tokens(r) for r in alone]


def test_a_failing_or_cancelled_request_touches_only_itself(world):
    alone = _alone(world, 4)
    conversations = [_conversation(world, i) for i in range(4)]
    cancel = threading.Event()
    seen = []

    def stop_after_two(text: str) -> None:
        seen.append(text)
        if len(seen) == 2:
            cancel.set()

    def fail(text: str) -> None:
        raise RuntimeError("the client went away")

    def one(i: int):
        conversation, features = conversations[i]
        options = {"max_new_tokens": 12 + 3 * i}
        if i == 1:
            options["on_text"] = fail
        if i == 2:
            options.update(on_text=stop_after_two, cancel=cancel)
        if i == 3:
            options["require"] = ["smell"]
        try:
            return world.respond(conversation, features, **options)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            return exc

    world.start_engine(max_batch=8)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(one, range(4)))
        # the engine serves on after the failures
        conversation, features = conversations[0]
        again = world.respond(conversation, features, max_new_tokens=12)
    finally:
        world.stop_engine()
    assert _tokens(results[0]) == _tokens(alone[0]) == _tokens(again)
    assert isinstance(results[1], RuntimeError) and "went away" in str(results[1])
    assert results[2].finish_reason == "cancelled" and len(_tokens(results[2])) < len(_tokens(alone[2]))
    assert isinstance(results[3], PromptError) and "smell" in str(results[3])


def test_media_of_concurrent_turns_are_encoded_in_one_batch(world):
    images = [samples.square_image(c, 64) for c in ("red", "green", "blue", "yellow")]
    alone = [world.encode("image", [image]) for image in images]
    world.start_engine()
    try:
        gate = threading.Barrier(len(images))

        def one(image):
            gate.wait()
            return world.encode("image", [image])

        with ThreadPoolExecutor(max_workers=len(images)) as pool:
            together = list(pool.map(one, images))
        batches = world.engine.stats["encode_batches"]
    finally:
        world.stop_engine()
    for a, b in zip(alone, together, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert batches < len(images)


def test_generator_calls_with_the_same_settings_run_as_one_batch(tiny_system):
    tool = tiny_system.generator("image")
    torch.manual_seed(0)
    conditionings = [{spec.name: torch.randn(1, *spec.shape) for spec in tool.conditioning_specs()} for _ in range(3)]
    alone = [tool.generate(c, seed=10 + i).data for i, c in enumerate(conditionings)]
    together = [m.data for m in tool.generate_many(conditionings, seeds=[10, 11, 12])]
    assert together == alone  # each medium is the one its seed gives alone, byte for byte
    assert len(set(alone)) == 3


def test_chat_many_replies_as_turns_one_by_one(tmp_path):
    from orchestrator.assistant import Assistant

    png = samples.png_bytes(colour="red")
    requests = [
        {"text": "What colour is the shape?", "images": [png], "thread_id": "a"},
        {"text": "Draw a green triangle.", "generate": ["image"], "thread_id": "b", "seed": 3},
        {"text": "Hello!", "thread_id": "c"},
        {"text": "Play a low beep.", "generate": ["audio"], "thread_id": "d", "seed": 4},
    ]
    with Assistant.from_config("tiny-world", db=tmp_path / "one.sqlite", artifacts=tmp_path / "a1") as bot:
        one_by_one = [bot.chat(**r) for r in requests]
    system = MMSystem.from_config("tiny-world", device="cpu")
    try:
        with Assistant(system=system, db=tmp_path / "many.sqlite", artifacts=tmp_path / "a2", batching=4) as bot:
            many = bot.chat_many(requests)
    finally:
        system.stop_engine()
    assert [r.text for r in many] == [r.text for r in one_by_one]
    kinds = [[p.modality for p in r.parts if isinstance(p, MediaPart)] for r in many]
    assert kinds == [[p.modality for p in r.parts if isinstance(p, MediaPart)] for r in one_by_one]
    assert kinds[1] == ["image"] and kinds[3] == ["audio"]
    # the media come from the signal states, which batching leaves equal to float rounding (not bit for bit)
    for ours, theirs in zip(many, one_by_one, strict=True):
        for a, b in zip(ours.artifacts, theirs.artifacts, strict=True):
            x, y = _samples(a.path.read_bytes()), _samples(b.path.read_bytes())
            assert x.shape == y.shape and float(abs(x - y).max()) <= 0.02 * max(float(abs(y).max()), 1e-6)


def _samples(data: bytes):
    """A generated file as numbers: an image's pixels or a WAV's samples, scaled to [0, 1] / [-1, 1]."""
    import io

    import numpy as np
    import soundfile
    from PIL import Image

    if data[:4] == b"RIFF":
        return soundfile.read(io.BytesIO(data), dtype="float32")[0]
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255.0


def test_cross_attention_replies_batch_too_and_equal_their_replies_alone():
    """Llama 3.2 Vision (an imported tiny checkpoint): each row keeps its own media context from its prefill; the
    batch's steps read the rows' contexts merged. Rows with an image, with two, and with none decode together."""
    from test_peers import picture

    system = MMSystem.from_pretrained("@tiny/mllama", device="cpu", load_generators=False)

    def conversation(n_images: int, text: str):
        ref = [ArtifactRef(id=f"{k:064x}", modality="image", mime="image/png", size=1) for k in range(n_images)]
        images = [system.encode("image", [picture(40 + 9 * k, 50)]) for k in range(n_images)]
        features = {"image": torch.cat(images)} if images else {}
        parts = (*(MediaPart(artifact=r) for r in ref), TextPart(text=text))
        return [Turn(role="user", parts=parts)], features

    cases = [conversation(1, "What is it?"), conversation(0, "Hello there"), conversation(2, "Compare them.")]
    alone = [system.respond_now(c, f, max_new_tokens=10 + 2 * i) for i, (c, f) in enumerate(cases)]
    system.start_engine(max_batch=4)
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            together = list(pool.map(lambda i: system.respond(*cases[i], max_new_tokens=10 + 2 * i), range(len(cases))))
        stats = dict(system.engine.stats)
    finally:
        system.stop_engine()
    assert [_tokens(r) for r in together] == [_tokens(r) for r in alone]
    assert stats["most_rows"] >= 2


def test_images_denoise_in_one_batch_that_media_join_between_steps(world):
    """Stable Diffusion media denoise step by step in a batch that a later request joins at the next step; each
    image is byte for byte the one its seed gives alone, and the batch's steps were shared."""
    from orchestrator.backbone import SignalGroup

    tool = world.generator("image")
    k = world.config.generators["image"].num_signal_tokens
    torch.manual_seed(1)
    width = world.backbone.hidden_size
    groups = [SignalGroup("image", [0] * k, torch.randn(k, width), torch.randn(k, width)) for _ in range(4)]
    alone = [world.generate_now("image", g, seed=20 + i).data for i, g in enumerate(groups)]
    world.start_engine()
    try:

        def one(i: int):
            time.sleep(0.03 * i)  # later ones join a batch already denoising
            return world.generate("image", groups[i], seed=20 + i).data

        with ThreadPoolExecutor(max_workers=4) as pool:
            together = list(pool.map(one, range(4)))
        stats = dict(world.engine.stats)
    finally:
        world.stop_engine()
    assert together == alone
    assert stats["denoised"] > stats["denoise_steps"] >= tool.cfg.num_inference_steps  # steps were shared
