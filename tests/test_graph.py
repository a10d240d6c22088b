"""End to end through the LangGraph graph on tiny systems loaded by path through the production code."""

from __future__ import annotations

import io
import sqlite3

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from core.config import SystemConfig, load_config
from core.errors import InvalidMediaError, MediaTooLargeError, MediaTooSmallError, UnsupportedModalityError
from core.turns import MediaPart
from modalities import samples
from orchestrator.assistant import Assistant
from orchestrator.system import MMSystem

ALL = ["image", "audio", "video"]


def _check_artifacts(reply, config):
    """Every requested generator produced one decodable artifact of the configured size."""
    by_gen = {a.generator: a for a in reply.artifacts}
    assert set(by_gen) == set(config.generators)
    for name, artifact in by_gen.items():
        data = artifact.path.read_bytes()
        options = config.generators[name].options
        if artifact.modality == "image":
            image = Image.open(io.BytesIO(data))
            assert image.format == "PNG" and artifact.mime == "image/png"
            assert image.size == (options["width"], options["height"])
            image.load()
        elif artifact.modality == "audio":
            samples_, rate = sf.read(io.BytesIO(data))
            assert artifact.mime == "audio/wav" and np.isfinite(samples_).all()
            assert len(samples_) / rate == pytest.approx(options["audio_length_in_s"], rel=0.1)
        else:
            with av.open(io.BytesIO(data)) as container:
                frames = [f.to_image() for f in container.decode(video=0)]
            assert artifact.mime == "video/mp4"
            assert len(frames) == options["num_frames"] and frames[0].size == (options["width"], options["height"])
    return by_gen


def test_any_to_any_turn(assistant, media):
    """Image + audio + video in, image + audio + video out, interleaved, streamed."""
    events = list(
        assistant.stream(
            "What are these? Then make one of each.",
            images=[media["image"]],
            audio=[media["audio"]],
            video=[media["video"]],
            generate=ALL,
            thread_id="t1",
        )
    )
    reply = events[-1].reply
    kinds = [e.type for e in events]
    assert kinds.count("encoded") == 3 and "progress" in kinds and kinds.count("part") == 3
    tokens = "".join(e.data["text"] for e in events if e.type == "token")
    assert tokens == reply.text
    _check_artifacts(reply, assistant.config)
    # Interleaved in the order the LLM produced them: the reply's media order is the order of its signal groups.
    assert [p.generator for p in reply.parts if isinstance(p, MediaPart)] == ALL
    assert reply.thread_id == "t1"


def test_without_deltas_a_turn_yields_only_its_reply_and_the_same_reply(assistant, media):
    """``deltas=False`` (what ``chat`` and a plain server request use): no token, media or progress events, only
    ``done``, with the reply the streamed turn gives for the same seed."""
    turn = dict(images=[media["image"]], generate=["image"], seed=3, max_new_tokens=10)
    streamed = list(assistant.stream("Describe it, then draw one.", thread_id="deltas-on", **turn))
    quiet = list(assistant.stream("Describe it, then draw one.", thread_id="deltas-off", deltas=False, **turn))
    assert {"token", "part"} <= {e.type for e in streamed}
    assert [e.type for e in quiet] == ["done"]
    a, b = streamed[-1].reply, quiet[-1].reply
    assert a.text == b.text and [p.generator for p in a.parts if isinstance(p, MediaPart)] == ["image"]
    assert [x.path.read_bytes() for x in a.artifacts] == [x.path.read_bytes() for x in b.artifacts]
    chatted = assistant.chat("Describe it, then draw one.", thread_id="deltas-chat", **turn)
    assert chatted.text == a.text


def test_nothing_is_generated_when_forbidden(assistant, media):
    reply = assistant.chat("Describe the picture.", images=[media["image"]], allow=[], max_new_tokens=8)
    assert reply.artifacts == [] and reply.text


def test_typed_special_tokens_trigger_nothing(assistant):
    typed = "[IMG0][IMG1][IMG2][IMG3] <image> <audio> [VID0] [AUD0]"
    reply = assistant.chat(typed, allow=[], max_new_tokens=4, thread_id="typed")
    assert reply.artifacts == []
    backbone = assistant.system.backbone
    prompt = assistant.system.prompt(assistant.history("typed"))
    assert not backbone.special_new_ids.intersection(prompt.input_ids)


VARIANTS = {
    "qwen2-siglip-linear-mlp": dict(llm="qwen2", vision="siglip", in_proj="linear", out_proj="mlp"),
    "gpt2-clip-qformer-transformer": dict(llm="gpt2", vision="clip", in_proj="qformer", out_proj="transformer"),
    "llama-clip-resampler-mlp": dict(llm="llama", vision="clip", in_proj="resampler", out_proj="mlp"),
}


def _variant_config(llm: str, vision: str, in_proj: str, out_proj: str):
    data = load_config("tiny-random").model_dump()
    data["name"] = f"variant-{llm}"
    data["llm"]["model"] = f"@tiny/{llm}"
    for name in ("image", "video"):
        data["modalities"][name]["model"] = f"@tiny/{vision}-vision"
        data["modalities"][name]["options"]["image_encoder"] = f"{vision}_vision"
    data["modalities"]["image"]["encoder"] = f"{vision}_vision"
    for m in data["modalities"].values():
        m["projector"]["kind"] = in_proj
    for g in data["generators"].values():
        g["projector"]["kind"] = out_proj
    return SystemConfig.model_validate(data)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_any_to_any_turn_variants(variant, media, tmp_path):
    config = _variant_config(**VARIANTS[variant])
    with Assistant(config, db=tmp_path / "t.sqlite", artifacts=tmp_path / "a", device="cpu") as bot:
        reply = bot.chat(
            "Look and listen, then make one of each.",
            images=[media["image"]],
            audio=[media["audio"]],
            video=[media["video"]],
            generate=ALL,
            max_new_tokens=6,
        )
        _check_artifacts(reply, config)


def test_thread_survives_a_restart_and_stores_no_media(tiny_system, tmp_path):
    """Two Assistant instances share one SQLite file; a 1-megapixel image leaves no bytes in it."""
    db, store = tmp_path / "threads.sqlite", tmp_path / "artifacts"
    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    big_png = io.BytesIO()
    Image.fromarray(noise).save(big_png, format="PNG")  # 1 megapixel of noise: ~3 MB of distinctive bytes
    big_bytes = big_png.getvalue()

    first = Assistant(system=tiny_system, db=db, artifacts=store)
    r1 = first.chat("Remember this picture.", images=[big_bytes], thread_id="conv", generate=["image"])
    first.close()

    second = Assistant(system=tiny_system, db=db, artifacts=store)
    r2 = second.chat("What did I show you?", thread_id="conv", allow=[], max_new_tokens=4)
    history = second.history("conv")
    second.close()
    assert [t.role for t in history] == ["user", "assistant", "user", "assistant"]
    assert history[0].parts[0].type == "media" and history[0].parts[0].artifact.size == len(big_bytes)
    assert [p.artifact.id for p in history[1].media] == [a.id for a in r1.artifacts]
    assert r2.text is not None

    raw = db.read_bytes()
    assert len(raw) < len(big_bytes) / 10, f"checkpoint db is {len(raw)} bytes"
    assert all(big_bytes[i : i + 32] not in raw for i in range(1000, len(big_bytes), len(big_bytes) // 50))
    assert b"\x89PNG" not in raw
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("select count(*) from checkpoints where thread_id='conv'").fetchone()
    assert count > 0


def test_second_turn_sees_the_first_turn(tiny_system, tmp_path, media):
    """The prompt of turn two contains turn one (its image slots and its signal tokens)."""
    bot = Assistant(system=tiny_system, db=tmp_path / "t.sqlite", artifacts=tmp_path / "a")
    bot.chat("Here is a picture.", images=[media["image"]], thread_id="c", generate=["image"], max_new_tokens=6)
    ids = tiny_system.prompt(bot.history("c")).input_ids
    assert ids.count(tiny_system.backbone.placeholder_ids["image"]) == tiny_system.slots("image")
    assert tiny_system.backbone.signal_ids["image"][0] in ids
    bot.close()


BAD_IMAGES = {
    "truncated": (lambda png: png[: len(png) // 2], InvalidMediaError),
    "corrupt": (lambda png: b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, InvalidMediaError),
    "one-pixel": (lambda png: samples.png_bytes(size=1), MediaTooSmallError),
}


def _huge_png_header() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def no_models(tiny_system, monkeypatch):
    """Fail the test if any model runs."""

    def boom(*a, **k):
        raise AssertionError("a model ran before the input was validated")

    monkeypatch.setattr(tiny_system, "encode", boom)
    monkeypatch.setattr(tiny_system.backbone, "generate", boom)


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_fail_before_any_model(case, assistant, media, no_models):
    make, error = BAD_IMAGES[case]
    with pytest.raises(error):
        assistant.chat("what is it", images=[make(media["image"])])


def test_bad_inputs_fail_before_any_model(assistant, no_models):
    with pytest.raises(MediaTooLargeError, match="50000"):
        assistant.chat("what is it", images=[_huge_png_header()])
    with pytest.raises(InvalidMediaError):
        assistant.chat("hear this", audio=[b"this is certainly not audio" * 10])
    empty_video = samples.mp4_bytes(frames=1)[:48]  # the container header only: no frames
    with pytest.raises((MediaTooSmallError, InvalidMediaError)):
        assistant.chat("watch this", video=[empty_video])
    with pytest.raises(UnsupportedModalityError, match="unknown generator 'smell'"):
        assistant.chat("make a smell", generate=["smell"])


def test_system_save_and_load_trainable(tiny_system, tmp_path):
    tiny_system.save_trainable(tmp_path / "w")
    state = tiny_system.trainable_state_dict()
    assert any(k.startswith("input_projectors.image") for k in state)
    assert any(k.startswith("output_projectors.audio") for k in state)
    assert "signal_rows.signal_token_ids" in state
    other = MMSystem.from_config(tmp_path / "w" / "system.yaml", weights=tmp_path / "w", device="cpu")
    loaded = other.trainable_state_dict()
    for key, value in loaded.items():
        np.testing.assert_array_equal(value.numpy(), state[key].numpy())


def test_the_llm_decodes_with_the_configured_cache(assistant, monkeypatch):
    """``llm.decoding`` in the system config reaches ``Backbone.generate`` from the reasoning node."""
    system = assistant.system
    seen = []
    original = type(system.backbone).generate
    monkeypatch.setattr(
        type(system.backbone),
        "generate",
        lambda self, embeds, **kw: seen.append(kw["cache"]) or original(self, embeds, **kw),
    )
    monkeypatch.setattr(system.config.llm, "decoding", "static")
    assistant.chat("hello there", thread_id="decoding")
    assert seen == ["static"]
    assert any(key[0] == "static" for key in system.backbone._static_steps)
