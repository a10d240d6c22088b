"""Content-addressed feature caches: shards, lookups, other writers, torn writes, and keys that follow the config."""

from __future__ import annotations

import pytest
import torch

from training.cache import FeatureCache, content_hash, file_hash


def test_put_get_stack_and_shards(tmp_path):
    cache = FeatureCache(tmp_path, "enc-abc", shard_size=2)
    tensors = {content_hash(f"item {i}"): torch.full((3, 4), float(i)) for i in range(5)}
    cache.put(tensors)
    assert len(list((tmp_path / "enc-abc").glob("*.safetensors"))) == 3  # 2 + 2 + 1
    assert len(cache) == 5 and all(d in cache for d in tensors)
    digests = list(tensors)
    stacked = cache.stack([digests[4], digests[0]])
    assert stacked.shape == (2, 3, 4) and stacked[0, 0, 0] == 4 and stacked[1, 0, 0] == 0
    with pytest.raises(KeyError, match="not in the enc-abc feature cache"):
        cache.get(content_hash("never stored"))


def test_missing_is_deduplicated_and_fill_computes_only_misses(tmp_path):
    cache = FeatureCache(tmp_path, "k")
    calls = []

    def compute(items):
        calls.append(list(items))
        return torch.stack([torch.tensor([float(len(x))]) for x in items])

    sources = {content_hash(s): s for s in ["a", "bb", "ccc"]}
    assert cache.missing([*sources, *sources]) == list(sources)
    assert cache.fill(sources, compute, batch_size=2, progress=False) == 3
    assert calls == [["a", "bb"], ["ccc"]]
    assert cache.fill(sources, compute, progress=False) == 0 and len(calls) == 2
    assert cache.get(content_hash("ccc")).item() == 3.0


def test_a_second_instance_sees_other_writers_and_ignores_torn_files(tmp_path):
    first = FeatureCache(tmp_path, "k")
    second = FeatureCache(tmp_path, "k")
    first.put({content_hash("x"): torch.ones(2)})
    assert content_hash("x") not in second
    (tmp_path / "k" / ".shard-dead.safetensors.tmp").write_bytes(b"half a file")
    second.refresh()
    assert torch.equal(second.get(content_hash("x")), torch.ones(2))


def test_hashes_are_of_content_not_names(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"same bytes")
    (tmp_path / "b.bin").write_bytes(b"same bytes")
    (tmp_path / "c.bin").write_bytes(b"other bytes")
    assert file_hash(tmp_path / "a.bin") == file_hash(tmp_path / "b.bin") == content_hash(b"same bytes")
    assert file_hash(tmp_path / "c.bin") != file_hash(tmp_path / "a.bin")


def test_component_keys_change_with_what_the_features_depend_on():
    from core.config import load_config
    from modalities import build_encoder

    cfg = load_config("tiny-random").modalities["image"]
    base = build_encoder(cfg, device="cpu", dtype=torch.float32, seed=0).cache_key()
    assert build_encoder(cfg, device="cpu", dtype=torch.float32, seed=0).cache_key() == base
    other_layer = cfg.model_copy(update={"feature_layer": -1})
    assert build_encoder(other_layer, device="cpu", dtype=torch.float32, seed=0).cache_key() != base
    assert build_encoder(cfg, device="cpu", dtype=torch.float32, seed=1).cache_key() != base


def test_generator_cache_keys_follow_model_seed_and_dtype(tiny_system):
    from generators import build_generator

    tool = tiny_system.generator("image")
    key = tool.cache_key()
    assert key.startswith("stable_diffusion-")
    assert tiny_system.generator("video").cache_key() != key
    reseeded = build_generator(tiny_system.config.generators["image"], device="cpu", dtype=torch.float32, seed=1)
    assert reseeded.cache_key() != key
