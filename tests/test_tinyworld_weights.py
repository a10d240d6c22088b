"""The packaged tinyworld weights: safetensors only, within the size limit, from one recorded from-scratch run;
and ``ship``, which puts a run's weights into the package."""

from __future__ import annotations

import json

import pytest

from tinyworld.config import STEP_TABLE
from tinyworld.ship import PACKAGED_WEIGHTS, SHIP_LIMIT_BYTES, ship

COMPONENTS = (
    "llm",
    "image-encoder",
    "audio-encoder",
    "image-generator",
    "video-generator",
    "audio-generator",
    "projectors",
    "judges",
)


def test_the_package_holds_every_component_as_safetensors_within_the_limit():
    files = [f for f in PACKAGED_WEIGHTS.rglob("*") if f.is_file()]
    for name in COMPONENTS:
        assert (PACKAGED_WEIGHTS / name).is_dir(), name
        assert any(f.suffix == ".safetensors" for f in (PACKAGED_WEIGHTS / name).rglob("*")), name
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    assert not [f for f in files if "checkpoint" in f.parts]
    assert sum(f.stat().st_size for f in files) <= SHIP_LIMIT_BYTES


def test_the_packaged_weights_were_trained_within_the_hour():
    """``recipe.json`` records every invocation that produced the packaged weights: together they ran every step
    from scratch, and their wall-clock times add up to at most an hour (an upper bound: a step rerun with new
    settings counts twice)."""
    record = json.loads((PACKAGED_WEIGHTS / "recipe.json").read_text())
    assert set(record["steps"]) == set(STEP_TABLE)
    assert set().union(*(run["steps"] for run in record["runs"])) == set(STEP_TABLE)
    assert set(record["runs"][0]["steps"]) == set(STEP_TABLE)  # the first one started from nothing
    assert sum(run["wall_seconds"] for run in record["runs"]) <= 3600
    assert record["config"]["seed"] == 0


def _weights(tmp_path, files: dict[str, int]):
    root = tmp_path / "run" / "weights"
    for name, size in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * size)
    return root


def test_ship_copies_weights_but_not_training_checkpoints_and_halves_the_projectors(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    root = _weights(
        tmp_path,
        {"llm/model.safetensors": 100, "llm/config.json": 10, "projectors/checkpoint/optimizer.safetensors": 500},
    )
    weight = torch.randn(8, 4)
    ids = torch.tensor([5, 6, 7])
    save_file(
        {"output_projectors.image.w": weight, "signal_rows.signal_token_ids": ids},
        root / "projectors" / "trainable.safetensors",
        metadata={"lora": "{}"},
    )
    result = ship(root, tmp_path / "dest")
    assert set(result["per_component"]) == {"llm", "projectors"} and result["per_component"]["llm"] == 110
    assert (tmp_path / "dest" / "llm" / "model.safetensors").stat().st_size == 100
    assert not (tmp_path / "dest" / "projectors" / "checkpoint").exists()
    shipped = load_file(tmp_path / "dest" / "projectors" / "trainable.safetensors")
    assert shipped["output_projectors.image.w"].dtype == torch.float16
    assert torch.allclose(shipped["output_projectors.image.w"].float(), weight, atol=1e-3)
    assert shipped["signal_rows.signal_token_ids"].dtype == ids.dtype and shipped[
        "signal_rows.signal_token_ids"
    ].tolist() == [5, 6, 7]


@pytest.mark.parametrize(
    "files, limit, message",
    [
        ({"llm/pytorch_model.bin": 10}, 1000, "not safetensors"),
        ({"llm/model.safetensors": 600, "judges/judges.safetensors": 600}, 1000, "over the"),
    ],
)
def test_ship_refuses_pickles_and_oversized_weights_before_touching_the_destination(tmp_path, files, limit, message):
    root = _weights(tmp_path, files)
    dest = tmp_path / "dest"
    (dest / "llm").mkdir(parents=True)
    (dest / "llm" / "keep.json").write_text("{}")
    with pytest.raises(ValueError, match=message):
        ship(root, dest, limit=limit)
    assert (dest / "llm" / "keep.json").exists()
