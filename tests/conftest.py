"""Shared fixtures: an isolated cache for tiny components, sample media, and one tiny-random system per session."""

from __future__ import annotations

import os
import tempfile

import pytest

# Tiny components are built into a per-run cache unless the caller points MMGRAPH_CACHE somewhere (CI does).
os.environ.setdefault("MMGRAPH_CACHE", tempfile.mkdtemp(prefix="mmgraph-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_system():
    """The tiny-random preset, loaded once (encoders, LLM, all three generators)."""
    from orchestrator.system import MMSystem

    return MMSystem.from_config("tiny-random", device="cpu")


@pytest.fixture
def assistant(tiny_system, tmp_path):
    from orchestrator.assistant import Assistant

    bot = Assistant(system=tiny_system, db=tmp_path / "threads.sqlite", artifacts=tmp_path / "artifacts")
    yield bot
    bot.close()


@pytest.fixture(scope="session")
def media():
    """Encoded sample inputs: a PNG, a WAV and an MP4."""
    from modalities import samples

    return {
        "image": samples.png_bytes(colour="red"),
        "audio": samples.wav_bytes(freq=440.0, seconds=1.0),
        "video": samples.mp4_bytes(colour="blue", frames=6),
    }


def pytest_configure(config):
    """Loading bars of transformers / diffusers are noise in test logs."""
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    """Toy-sized ops run many times faster on one thread than on two oversubscribed ones on this machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def world_assistant(tmp_path_factory):
    """The default tiny-world system behind one Assistant, loaded once (servers in tests share it)."""
    from orchestrator.assistant import Assistant

    folder = tmp_path_factory.mktemp("world-server")
    bot = Assistant.from_config("tiny-world", db=folder / "threads.sqlite", artifacts=folder / "artifacts")
    yield bot
    bot.close()


@pytest.fixture(scope="session")
def world_server(world_assistant):
    """``mmgraph serve`` of tiny-world on 127.0.0.1 (uvicorn in a thread): ``world_server.url``."""
    from live_server import LiveServer

    from serving import ServerSettings, create_app

    with LiveServer(create_app(world_assistant, settings=ServerSettings(queue_size=2))) as server:
        yield server
