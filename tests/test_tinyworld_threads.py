"""The recipe scheduler's thread grants: a worker takes up the count written to its grant file."""

from __future__ import annotations

import torch

from tinyworld.threads import THREADS_FILE, refresh_threads


def test_a_worker_takes_up_the_threads_granted_to_it(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    grant = tmp_path / "video-generator"
    try:
        torch.set_num_threads(1)
        refresh_threads()  # outside a recipe worker: nothing to read, nothing changes
        assert torch.get_num_threads() == 1
        monkeypatch.setenv(THREADS_FILE, str(grant))
        refresh_threads()  # no grant written yet
        assert torch.get_num_threads() == 1
        grant.write_text("2")
        refresh_threads()
        assert torch.get_num_threads() == 2
        grant.write_text("not a number")
        refresh_threads()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
