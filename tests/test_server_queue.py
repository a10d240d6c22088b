"""The bounded queue: 429 with Retry-After when full, cancellation when a client goes away, isolated failures."""

from __future__ import annotations

import threading
import time

import httpx2
import openai
import pytest
from live_server import LiveServer

from serving import ServerSettings, create_app

pytestmark = pytest.mark.integration  # the HTTP server's queue under concurrent clients

MODEL = "tiny-world"
SLOW = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Animate a red circle moving left."}],
    "modalities": ["text", "video"],
    "steps": 400,
}  # a video with 400 denoising steps: seconds of work


def wait_idle(url: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        queue = httpx2.get(f"{url}/health").json()["queue"]
        if queue["running"] == 0 and queue["waiting"] == 0 or time.monotonic() > deadline:
            return queue
        time.sleep(0.05)


def test_more_requests_than_the_queue_holds_get_429(world_assistant):
    with LiveServer(create_app(world_assistant, settings=ServerSettings(queue_size=1, batch_size=1))) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=120)
        barrier = threading.Barrier(6)
        results: list = [None] * 6

        def call(i: int) -> None:
            barrier.wait()
            try:
                results[i] = client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=SLOW["messages"], modalities=SLOW["modalities"], extra_body={"steps": 60}
                )
            except openai.RateLimitError as exc:
                results[i] = exc

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done = [r for r in results if not isinstance(r, Exception)]
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(done) == 2 and len(refused) == 4, results  # one running + one waiting
        for response in done:
            reply = response.parse()
            assert [
                p["artifact"]["modality"] for p in reply.choices[0].message.model_extra["parts"] if p["type"] != "text"
            ] == ["video"]
        for error in refused:
            assert error.status_code == 429 and int(error.response.headers["retry-after"]) >= 1
            assert error.body["code"] == "queue_full" and "busy" in error.body["message"]
        assert wait_idle(live.url) == {"running": 0, "waiting": 0, "capacity": 2}


def test_image_generations_wait_in_the_same_queue_as_chat(world_assistant):
    with LiveServer(create_app(world_assistant, settings=ServerSettings(queue_size=0, batch_size=1))) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=60)
        # A streamed chat turn holds the only place: one running, none waiting.
        with httpx2.stream(
            "POST", f"{live.url}/v1/chat/completions", json=dict(SLOW, stream=True), timeout=60
        ) as response:
            for line in response.iter_lines():
                if '"progress"' in line:
                    break
            with pytest.raises(openai.RateLimitError) as info:
                client.images.generate(prompt="a red circle", response_format="b64_json")
        assert info.value.body["code"] == "queue_full" and int(info.value.response.headers["retry-after"]) >= 1
        assert wait_idle(live.url) == {"running": 0, "waiting": 0, "capacity": 1}
        drawn = client.images.generate(prompt="a red circle", response_format="b64_json")  # the place is free again
        assert len(drawn.data) == 1 and drawn.data[0].b64_json


def test_clients_that_go_away_cancel_their_work(world_assistant):
    with LiveServer(create_app(world_assistant, settings=ServerSettings(queue_size=2, batch_size=1))) as live:
        # A streamed request, closed after its first progress event, and a second one waiting behind it.
        waiting = threading.Thread(
            target=lambda: pytest.raises(
                httpx2.TimeoutException, httpx2.post, f"{live.url}/v1/chat/completions", json=SLOW, timeout=1.0
            )
        )
        began = time.monotonic()
        with httpx2.stream(
            "POST", f"{live.url}/v1/chat/completions", json=dict(SLOW, stream=True), timeout=60
        ) as response:
            assert response.status_code == 200
            waiting.start()  # a non-streamed request that gives up after 1 s, while the first one still runs
            for line in response.iter_lines():
                if '"progress"' in line and '"step": 5,' in line:
                    break
        waiting.join()
        queue = wait_idle(live.url)
        assert queue["running"] == 0 and queue["waiting"] == 0
        # 400 steps take far longer than this: the runs stopped at the next step after their clients left.
        assert time.monotonic() - began < 15


def test_one_requests_failure_does_not_affect_another(world_assistant):
    class Faulty:
        """The assistant, except that a turn saying 'boom' fails inside the model thread."""

        def __getattr__(self, name):
            return getattr(world_assistant, name)

        def stream(self, text, **kwargs):
            if text == "boom":
                raise RuntimeError("secret internal detail")
            yield from world_assistant.stream(text, **kwargs)

    with LiveServer(create_app(Faulty())) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0)
        outcome: dict = {}

        def boom() -> None:
            with pytest.raises(openai.InternalServerError) as info:
                client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "boom"}])
            outcome["boom"] = info.value

        thread = threading.Thread(target=boom)
        thread.start()
        fine = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello!"}])
        thread.join()
        assert fine.choices[0].message.content
        assert outcome["boom"].status_code == 500 and "secret" not in str(outcome["boom"].body)
        with pytest.raises(openai.APIError, match="internal error"):  # the same failure mid-stream
            list(
                client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "boom"}], stream=True)
            )
        assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}]).choices


def test_turns_run_together_up_to_the_batch_size_and_the_queue_holds_the_rest(world_assistant):
    """batch_size turns run at once (their decoding batched); queue_size more wait; the rest get 429."""
    settings = ServerSettings(queue_size=1, batch_size=3)
    with LiveServer(create_app(world_assistant, settings=settings)) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=120)
        barrier = threading.Barrier(7)
        results: list = [None] * 7
        most_running = [0]

        def call(i: int) -> None:
            barrier.wait()
            try:
                results[i] = client.chat.completions.create(
                    model=MODEL, messages=SLOW["messages"], modalities=SLOW["modalities"], extra_body={"steps": 60}
                )
            except openai.RateLimitError as exc:
                results[i] = exc

        def watch() -> None:
            while any(t.is_alive() for t in threads):
                most_running[0] = max(most_running[0], httpx2.get(f"{live.url}/health").json()["queue"]["running"])
                time.sleep(0.02)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(7)]
        for t in threads:
            t.start()
        watcher = threading.Thread(target=watch)
        watcher.start()
        for t in threads:
            t.join()
        watcher.join()
        done = [r for r in results if not isinstance(r, Exception)]
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(done) == 4 and len(refused) == 3, results  # three running + one waiting
        assert most_running[0] == 3
        assert wait_idle(live.url) == {"running": 0, "waiting": 0, "capacity": 4}
