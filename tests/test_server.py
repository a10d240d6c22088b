"""The OpenAI-compatible server, through the official ``openai`` client against uvicorn on 127.0.0.1.

The server runs the shipped tiny-world system, so answers can be checked: it names the colour of a red circle,
the pitch of a beep, the colour of a moving square, and it draws / plays / animates when asked.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time

import numpy as np
import openai
import pytest
from live_server import LiveServer
from PIL import Image

from serving import ServerSettings, create_app
from tinyworld.world import Clip, Picture, Sound, encode

pytestmark = pytest.mark.integration  # the HTTP server end to end (uvicorn + the official openai client)

MODEL = "tiny-world"


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def ask(text: str, *parts: dict) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, *parts]}]


def image_part(data: bytes, mime: str = "image/png") -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(mime, data)}}


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def video_part(data: bytes) -> dict:
    return {"type": "video_url", "video_url": {"url": data_url("video/mp4", data)}}


RED_CIRCLE = encode(Picture(colour="red", shape="circle", position="centre", size="large"), 1)


@pytest.fixture(scope="module")
def client(world_server):
    return openai.OpenAI(base_url=f"{world_server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def fetch_artifact(client, part: dict) -> tuple[bytes, str]:
    url = part[part["type"]]["url"]
    response = client._client.get(url)  # the client's own HTTP connection pool
    assert response.status_code == 200
    return response.content, response.headers["content-type"]


# -- the happy paths --------------------------------------------------------------------------------------------------


def test_models_and_health(client, world_server):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert set(models.data[0].model_extra["output_modalities"]) == {"text", "image", "video", "audio"}
    health = client._client.get(f"{world_server.url}/health").json()
    assert health["status"] == "ok" and health["queue"]["capacity"] == 2 + ServerSettings().batch_size


def test_the_model_card_carries_the_vocabulary(client, world_server):
    card = client._client.get(f"{world_server.url}/v1/models/tiny-world").json()
    vocabulary = card["vocabulary"]  # an mmgraph field beside OpenAI's: what a newcomer can ask
    assert "red" in vocabulary["words"]["colours"] and vocabulary["examples"] and vocabulary["limits"]
    assert client.models.retrieve("tiny-world").id == "tiny-world"  # the official client still reads the card


def test_text_only_turn(client):
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello!"}])
    message = reply.choices[0].message
    assert reply.object == "chat.completion" and message.role == "assistant"
    assert message.content and reply.choices[0].finish_reason in ("stop", "length")
    assert message.model_extra["parts"] == [{"type": "text", "text": message.content}]
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.model_extra["thread_id"]


def test_image_turn(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("What colour is the shape?", image_part(RED_CIRCLE))
    )
    assert "red" in reply.choices[0].message.content.lower()


def test_audio_turn(client):
    wav = encode(Sound(pitch="high", waveform="sine", beeps=3), 2)
    reply = client.chat.completions.create(model=MODEL, messages=ask("How many beeps are there?", audio_part(wav)))
    assert "three" in reply.choices[0].message.content.lower()


def test_video_turn(client):
    mp4 = encode(Clip(colour="green", shape="square", direction="right"), 3)
    reply = client.chat.completions.create(model=MODEL, messages=ask("What colour is it?", video_part(mp4)))
    assert "green" in reply.choices[0].message.content.lower()


def test_streamed_turn_with_generated_image(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ask("What colour is the shape? Then draw a blue circle.", image_part(RED_CIRCLE)),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) > 3  # token by token
    assert "red" in text.lower()
    progress = [c.model_extra["progress"] for c in chunks if c.model_extra.get("progress")]
    assert progress and progress[-1]["step"] == progress[-1]["total"] and progress[0]["generator"] == "image"
    announced = [p for c in chunks if c.choices for p in (c.choices[0].delta.model_extra or {}).get("parts", [])]
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == "stop"
    parts = final[0].model_extra["parts"]
    assert [p["type"] for p in announced] == ["image_url"]
    assert [p for p in parts if p["type"] == "image_url"] == announced
    assert "".join(p["text"] for p in parts if p["type"] == "text") == text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize(
    "modality, prompt, mime, check",
    [
        ("image", "Draw a yellow square.", "image/png", lambda data: Image.open(io.BytesIO(data)).size == (32, 32)),
        (
            "audio",
            "Play two low beeps.",
            "audio/wav",
            lambda data: __import__("soundfile").read(io.BytesIO(data))[0].size > 1000,
        ),
        (
            "video",
            "Animate a red circle moving left.",
            "video/mp4",
            lambda data: (
                len(
                    __import__("modalities.media", fromlist=["x"]).decode_video(
                        data, __import__("core.config", fromlist=["x"]).MediaLimits(), num_frames=8
                    )
                )
                == 8
            ),
        ),
    ],
)
def test_requested_output_modality_returns_an_artifact_that_decodes(client, modality, prompt, mime, check):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], modalities=["text", modality], seed=1
    )
    media = [p for p in reply.choices[0].message.model_extra["parts"] if p["type"] != "text"]
    assert [p["artifact"]["modality"] for p in media] == [modality]
    data, content_type = fetch_artifact(client, media[0])
    assert content_type == mime == media[0]["artifact"]["mime"] and len(data) == media[0]["artifact"]["size"]
    assert check(data)


def test_generation_knobs_map_through(client):
    def image_id(**knobs) -> str:
        extra = {k: knobs.pop(k) for k in ("steps", "guidance") if k in knobs}
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Draw a red circle."}],
            modalities=["text", "image"],
            extra_body=extra,
            **knobs,
        )
        return next(p["artifact"]["id"] for p in reply.choices[0].message.model_extra["parts"] if p["type"] != "text")

    base = image_id(seed=3)
    assert image_id(seed=3) == base  # the same seed draws the same picture (content-addressed ids)
    assert len({base, image_id(seed=4), image_id(seed=3, steps=5), image_id(seed=3, guidance=1.0)}) == 4
    short = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=2, temperature=0.7, seed=0
    )
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2


# -- OpenAI's output shapes: message.audio, inline media parts, the Images API --------------------------------------


def wav_frames(data: bytes) -> int:
    import soundfile

    samples, _ = soundfile.read(io.BytesIO(data))
    return samples.shape[0]


def test_audio_output_is_openais_message_audio(client):
    before = int(time.time())
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Play two low beeps."}],
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"},
        seed=1,
    )
    message = reply.choices[0].message
    audio = message.audio  # the client's own ChatCompletionAudio type
    clip = [p for p in message.model_extra["parts"] if p["type"] == "audio_url"]
    assert len(clip) == 1 and audio is not None
    data = base64.b64decode(audio.data, validate=True)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and wav_frames(data) > 1000
    assert data == fetch_artifact(client, clip[0])[0]  # the clip of the interleaved reply
    assert audio.id == "audio_" + hashlib.sha256(data).hexdigest() == "audio_" + clip[0]["artifact"]["id"]
    assert audio.transcript == message.content and "beep" in audio.transcript
    assert audio.expires_at > max(before, reply.created)


def test_streamed_audio_output_follows_openais_delta_audio(client):
    request = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "Play three high beeps."}],
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"},
        seed=2,
    )
    whole = client.chat.completions.create(**request).choices[0].message
    chunks = list(client.chat.completions.create(**request, stream=True))
    deltas = [(i, c.choices[0].delta.audio) for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.audio]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    transcript = [a.transcript for _, a in deltas if a.transcript is not None]
    assert len(transcript) > 3 and "".join(transcript) == text == whole.audio.transcript  # token by token
    (at, clip), (last, final) = [(i, a) for i, a in deltas if a.transcript is None]
    assert (clip.id, clip.data, clip.expires_at) == (whole.audio.id, whole.audio.data, None)
    assert final.model_dump(exclude_none=True) == {"expires_at": final.expires_at} and final.expires_at > 0
    finish = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].finish_reason)
    assert max(i for i, a in deltas if a.transcript is not None) < at < last < finish
    assert chunks[last].choices[0].finish_reason is None


def test_audio_format_that_cannot_be_produced_is_refused(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Play two low beeps."}],
            modalities=["text", "audio"],
            audio={"voice": "alloy", "format": "mp3"},
        )
    assert info.value.body["code"] == "unsupported_audio_format" and info.value.body["param"] == "audio.format"
    assert "'mp3'" in info.value.body["message"] and "wav" in info.value.body["message"]


def test_an_assistant_message_may_refer_back_to_a_clip_by_its_audio_id(client):
    question = {"role": "user", "content": "Play two low beeps."}
    first = client.chat.completions.create(model=MODEL, messages=[question], modalities=["text", "audio"], seed=1)
    audio_id = first.choices[0].message.audio.id
    follow_up = [question, {"role": "assistant", "audio": {"id": audio_id}}, {"role": "user", "content": "Thanks!"}]
    reply = client.chat.completions.create(model=MODEL, messages=follow_up)
    thread = client._client.get(f"{client.base_url}threads/{reply.model_extra['thread_id']}").json()
    said = thread["turns"][1]
    assert said["role"] == "assistant" and [p["type"] for p in said["parts"]] == ["audio_url"]
    assert "audio_" + said["parts"][0]["artifact"]["id"] == audio_id and said["parts"][0]["generator"] == "audio"
    follow_up[1]["audio"]["id"] = "audio_" + "0" * 64
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=follow_up)
    assert info.value.body["code"] == "audio_not_found" and info.value.body["param"] == "messages[1].audio.id"


def test_generated_media_parts_can_carry_data_urls(client):
    def image_part(**extra) -> dict:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Draw a green triangle."}],
            modalities=["text", "image"],
            seed=4,
            **extra,
        )
        assert isinstance(reply.choices[0].message.content, str)  # stock clients still read a string
        return next(p for p in reply.choices[0].message.model_extra["parts"] if p["type"] == "image_url")

    linked, inline = image_part(), image_part(extra_body={"media_format": "data_url"})
    assert linked["artifact"] == inline["artifact"] and linked["image_url"]["url"].startswith("http://")
    prefix = "data:image/png;base64,"
    assert inline["image_url"]["url"].startswith(prefix)
    png = base64.b64decode(inline["image_url"]["url"][len(prefix) :], validate=True)
    assert png == fetch_artifact(client, linked)[0] and Image.open(io.BytesIO(png)).size == (32, 32)


def test_images_api_draws_through_the_same_assistant_turn_as_chat(client):
    prompt = "Draw a yellow square."
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], modalities=["text", "image"], seed=7
    )
    drawn = next(p for p in chat.choices[0].message.model_extra["parts"] if p["type"] == "image_url")

    b64 = client.images.generate(model=MODEL, prompt=prompt, response_format="b64_json", extra_body={"seed": 7})
    assert len(b64.data) == 1 and b64.data[0].url is None and b64.output_format == "png" and b64.size == "32x32"
    png = base64.b64decode(b64.data[0].b64_json, validate=True)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (32, 32)
        image.load()  # decodes
    assert hashlib.sha256(png).hexdigest() == drawn["artifact"]["id"]  # the same turn draws the same picture

    linked = client.images.generate(prompt=prompt, response_format="url", size="32x32", extra_body={"seed": 7})
    assert linked.data[0].b64_json is None and linked.data[0].model_extra["artifact"]["id"] == drawn["artifact"]["id"]
    response = client._client.get(linked.data[0].url)  # GET /v1/artifacts/{id}
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == png


def test_images_api_n_images_are_n_turns_seeded_one_apart(client):
    def ids(n: int, seed: int) -> list[str]:
        answer = client.images.generate(
            prompt="a red circle", n=n, response_format="b64_json", extra_body={"seed": seed, "steps": 8}
        )
        return [hashlib.sha256(base64.b64decode(d.b64_json)).hexdigest() for d in answer.data]

    pair = ids(2, 5)
    assert len(set(pair)) == 2 and pair == ids(1, 5) + ids(1, 6)


def test_images_api_size_falls_back_to_the_pipelines_own(world_assistant):
    """Without ``width`` / ``height`` in the config, the size is what diffusers draws by default: the UNet's sample
    size times the VAE's scale factor, as the generator computes it for its training targets."""
    from serving.app import Server

    system = world_assistant.system
    unsized = system.config.generators["image"].model_copy(update={"options": {}})
    config = system.config.model_copy(update={"generators": {**system.config.generators, "image": unsized}})

    class Unsized:
        def __init__(self, inner):
            self.inner, self.config = inner, config

        def __getattr__(self, name):
            return getattr(self.inner, name)

    class Bot:
        def __init__(self):
            self.system, self.config, self.store = Unsized(system), config, world_assistant.store

    server = Server(Bot(), ServerSettings())
    pipeline = system.generator("image").pipeline
    side = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
    assert server.image_size("image") == (side, side) == system.generator("image")._output_size()
    assert Server(world_assistant, ServerSettings()).image_size("image") == (32, 32)  # the configured size


@pytest.mark.parametrize(
    "fields, status, code, param",
    [
        ({"size": "1024x1024"}, 400, "unsupported_size", "size"),
        ({"size": "big"}, 400, "unsupported_size", "size"),
        ({"output_format": "jpeg"}, 400, "unsupported_output_format", "output_format"),
        ({"background": "transparent"}, 400, "unsupported_parameter", "background"),
        ({"response_format": "svg"}, 400, "invalid_request", "response_format"),
        ({"n": 11}, 400, "invalid_request", "n"),
        ({"prompt": ""}, 400, "invalid_request", "prompt"),
        ({"model": "dall-e-3"}, 404, "model_not_found", "model"),
    ],
)
def test_images_api_refuses_what_it_cannot_draw(client, fields, status, code, param):
    request = {"prompt": "a red circle", **fields}
    with pytest.raises(openai.APIStatusError) as info:
        client.images.generate(**request)
    assert info.value.status_code == status and info.value.body["code"] == code, info.value.body
    assert info.value.body["param"] == param


def test_text_only_modalities_forbid_media_output(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Draw a red circle."}], modalities=["text"]
    )
    assert [p["type"] for p in reply.choices[0].message.model_extra["parts"]] == ["text"]


def test_signal_tokens_typed_by_a_user_are_plain_text(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "[IMG0][IMG1][IMG2][IMG3] <image> [AUD0]"}]
    )
    assert all(p["type"] == "text" for p in reply.choices[0].message.model_extra["parts"])


def test_earlier_messages_seed_a_new_thread(client):
    """A stock client sends the whole conversation: its earlier turns become the new thread's history."""
    messages = ask("What colour is the shape?", image_part(RED_CIRCLE)) + [
        {"role": "assistant", "content": "It is red."},
        {"role": "user", "content": "What shape is it?"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages)
    thread = client._client.get(f"{client.base_url}threads/{reply.model_extra['thread_id']}").json()
    assert [t["role"] for t in thread["turns"]] == ["user", "assistant", "user", "assistant"]
    assert [p["type"] for p in thread["turns"][0]["parts"]] == ["text", "image_url"]
    alone = client.chat.completions.create(model=MODEL, messages=messages[-1:])
    assert reply.usage.prompt_tokens > alone.usage.prompt_tokens + 8  # the image's 8 tokens and the earlier text


def test_thread_survives_a_server_restart(tmp_path):
    """Two real ``mmgraph serve`` processes, one after the other, on the same thread database."""
    import os
    import subprocess
    import sys
    import time

    import httpx2
    from live_server import free_port

    def serve():
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "mmgraph.cli",
            "serve",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "threads.sqlite"),
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--log-level",
            "warning",
        ]
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, "MMGRAPH_HOME": str(tmp_path / "home")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx2.get(f"{url}/health").status_code == 200:
                    return proc, openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
            except httpx2.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
            time.sleep(0.2)

    proc, c = serve()
    try:
        first = c.chat.completions.create(
            model=MODEL,
            messages=ask("What colour is the shape?", image_part(RED_CIRCLE)),
            extra_headers={"X-Thread-Id": "t-restart"},
        )
        assert "red" in first.choices[0].message.content.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    proc, c = serve()
    try:
        question = [{"role": "user", "content": "What shape is it?"}]
        second = c.chat.completions.create(model=MODEL, messages=question, extra_body={"thread_id": "t-restart"})
        fresh = c.chat.completions.create(model=MODEL, messages=question)
        assert second.model_extra["thread_id"] == "t-restart" != fresh.model_extra["thread_id"]
        # The new process's prompt holds the first turn (its text and the image's tokens) from the database.
        assert second.usage.prompt_tokens >= fresh.usage.prompt_tokens + first.usage.prompt_tokens
        turns = c._client.get(f"{c.base_url}threads/t-restart").json()["turns"]
        assert [t["role"] for t in turns] == ["user", "assistant"] * 2
        assert sorted(p["type"] for p in turns[0]["parts"]) == ["image_url", "text"]
        image = next(p for p in turns[0]["parts"] if p["type"] == "image_url")
        assert fetch_artifact(c, image) == (RED_CIRCLE, "image/png")  # the artifact store outlived the process
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_artifact_and_page_routes(client, world_server):
    http = client._client
    assert http.get(f"{world_server.url}/v1/artifacts/{'0' * 64}").status_code == 404
    assert http.get(f"{world_server.url}/v1/artifacts/..%2F..%2Fetc%2Fpasswd").status_code == 404
    page = http.get(f"{world_server.url}/")
    assert (
        page.status_code == 200
        and MODEL in page.text
        and "default-src 'self'" in page.headers["content-security-policy"]
    )


# -- refusals -----------------------------------------------------------------------------------------------------


def png_of(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png() -> bytes:
    from test_media import png_header_only

    return png_header_only(50_000, 50_000)  # 2.5 gigapixels declared in a few dozen bytes


def _no_frame_mp4() -> bytes:
    from test_media import _zero_frame_mp4

    return _zero_frame_mp4()


def _long_wav(seconds: float) -> bytes:
    from modalities.media import encode_wav

    return encode_wav(np.zeros(int(16000 * seconds), dtype=np.float32), 16000)


BAD_REQUESTS = {
    "remote URL": (
        ask("hi", {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/x.png"}}),
        400,
        "url_not_allowed",
        "remote media URLs are not allowed",
    ),
    "file URL": (
        ask("hi", {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}),
        400,
        "url_not_allowed",
        "file: URLs are not allowed",
    ),
    "bare path": (
        ask("hi", {"type": "image_url", "image_url": "/etc/passwd"}),
        400,
        "url_not_allowed",
        "only data: URLs",
    ),
    "invalid base64": (
        ask("hi", {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR w0K!!"}}),
        400,
        "invalid_base64",
        "invalid base64",
    ),
    "decompression bomb": (ask("hi", image_part(_bomb_png())), 400, "media_too_large", "pixels"),
    "1x1 image": (ask("hi", image_part(png_of((1, 1)))), 400, "media_too_small", "1x1"),
    "truncated image": (ask("hi", image_part(RED_CIRCLE[: len(RED_CIRCLE) // 2])), 400, "invalid_media", "image"),
    "unknown part type": (
        ask("hi", {"type": "hologram", "hologram": {}}),
        400,
        "invalid_content_part",
        "unknown content part type 'hologram'",
    ),
    "too many parts": (
        [{"role": "user", "content": [{"type": "text", "text": "x"}] * 17}],
        400,
        "too_many_parts",
        "17 content parts, over the limit of 16",
    ),
    "audio too long": (ask("hi", audio_part(_long_wav(61))), 400, "media_too_large", "60"),
    "video without frames": (ask("hi", video_part(_no_frame_mp4())), 400, "media_too_small", "video"),
    "bad audio format": (
        ask("hi", {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "exe"}}),
        400,
        "invalid_audio_format",
        "unsupported audio format 'exe'",
    ),
    "last message not from the user": (
        [{"role": "assistant", "content": "hi"}],
        400,
        "invalid_role",
        "last message must have role 'user'",
    ),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_is_refused_with_an_openai_error(client, name):
    messages, status, code, words = BAD_REQUESTS[name]
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODEL, messages=messages)
    error = info.value
    assert error.status_code == status, error.body
    assert error.body["code"] == code and words in error.body["message"], error.body
    assert error.body["type"] == "invalid_request_error" and "param" in error.body


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_found" and "tiny-world" in info.value.body["message"]


def test_malformed_json_and_oversized_body(client, world_server):
    http = client._client
    response = http.post(
        f"{world_server.url}/v1/chat/completions",
        content=b'{"model": "tiny-world", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert (
        response.json()["error"]["code"] == "invalid_json" and "not valid JSON" in response.json()["error"]["message"]
    )

    big = json.dumps({"model": MODEL, "messages": ask("hi", image_part(b"\0" * (40 * 1024 * 1024)))}).encode()
    response = http.post(
        f"{world_server.url}/v1/chat/completions", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_body_limit_also_counts_bytes_without_content_length(world_assistant):
    import httpx2

    settings = ServerSettings(max_body_bytes=4096)
    with LiveServer(create_app(world_assistant, settings=settings)) as live:

        def chunks():
            for _ in range(10):
                yield b" " * 1024  # chunked transfer encoding: no Content-Length to check up front

        response = httpx2.post(f"{live.url}/v1/chat/completions", content=chunks())
        assert response.status_code == 413 and "4096" in response.json()["error"]["message"]


def test_server_still_answers_after_the_refusals(client):
    for name in BAD_REQUESTS:  # whatever order the tests ran in, run them all once more here
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model=MODEL, messages=BAD_REQUESTS[name][0])
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("What colour is the shape?", image_part(RED_CIRCLE))
    )
    assert "red" in reply.choices[0].message.content.lower()


def test_local_files_only_under_an_allowed_folder(world_assistant, tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "circle.png").write_bytes(RED_CIRCLE)
    (tmp_path / "secret.png").write_bytes(RED_CIRCLE)
    settings = ServerSettings(allowed_local_media_path=tmp_path / "media")
    with LiveServer(create_app(world_assistant, settings=settings)) as live:
        c = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0)
        ok = c.chat.completions.create(
            model=MODEL,
            messages=ask(
                "What colour is the shape?", {"type": "image_url", "image_url": f"file://{tmp_path}/media/circle.png"}
            ),
        )
        assert "red" in ok.choices[0].message.content.lower()
        for path in (f"{tmp_path}/secret.png", f"{tmp_path}/media/../secret.png"):
            with pytest.raises(openai.BadRequestError, match="not a file under allowed_local_media_path"):
                c.chat.completions.create(
                    model=MODEL, messages=ask("hi", {"type": "image_url", "image_url": f"file://{path}"})
                )


def test_allow_listed_host_that_resolves_to_loopback_is_still_refused(world_assistant):
    settings = ServerSettings(allowed_media_domains=["localhost"])
    with LiveServer(create_app(world_assistant, settings=settings)) as live:
        c = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="non-public address"):
            c.chat.completions.create(
                model=MODEL,
                messages=ask(
                    "hi",
                    {"type": "image_url", "image_url": {"url": f"http://localhost:{live.port}/v1/artifacts/x.png"}},
                ),
            )
        with pytest.raises(openai.BadRequestError, match="not in allowed_media_domains"):
            c.chat.completions.create(
                model=MODEL, messages=ask("hi", {"type": "image_url", "image_url": {"url": "http://example.org/a.png"}})
            )
