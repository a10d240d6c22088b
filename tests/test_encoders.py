"""Frozen modality encoders, loaded from tiny seeded checkpoints through resolve_model + from_pretrained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import modalities
from core.config import MediaLimits, ModalityConfig
from core.errors import ConfigError
from core.hub import resolve_model
from core.registry import UnknownKindError
from modalities import ENCODERS, ModalityEncoder, build_encoder
from modalities.media import SAMPLE_RATE, decode_image, decode_video, encode_mp4, encode_png

TOWER_PATCHES = 16  # tiny towers: 32x32 images, 8x8 patches
TINY_WIDTH = 32


@pytest.fixture(scope="module", autouse=True)
def tiny_cache(tmp_path_factory):
    """Build the tiny models into a temporary cache for this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMGRAPH_CACHE", str(tmp_path_factory.mktemp("mmgraph-cache")))
        yield


def cfg(encoder: str, model: str, **kw) -> ModalityConfig:
    return ModalityConfig(encoder=encoder, model=model, **kw)


def images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(count)
    return [Image.fromarray(rng.integers(0, 255, (40 + 4 * i, 36, 3), dtype=np.uint8)) for i in range(count)]


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def clip(frames: int) -> list[Image.Image]:
    return [Image.new("RGB", (48, 40), (40 * i, 100, 200 - 40 * i)) for i in range(frames)]


CASES = {
    # name: (config, batch of decoded items, expected (G, T))
    "clip_vision": (cfg("clip_vision", "@tiny/clip-vision"), images(2), (1, TOWER_PATCHES)),
    "siglip_vision": (cfg("siglip_vision", "@tiny/siglip-vision"), images(2), (1, TOWER_PATCHES)),
    "whisper": (cfg("whisper", "@tiny/whisper-encoder"), [tone(1.0), tone(0.3, 880)], (1, 100)),
    "video_frames": (cfg("video_frames", "@tiny/clip-vision", num_frames=5), [clip(3), clip(7)], (5, TOWER_PATCHES)),
}


@pytest.fixture(scope="module")
def encoders() -> dict[str, ModalityEncoder]:
    return {name: build_encoder(config) for name, (config, _, _) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_output_shape_matches_declared_sizes(encoders, name):
    encoder = encoders[name]
    _, items, (groups, tokens) = CASES[name]
    features = encoder(**encoder.preprocess(items))
    assert features.shape == (len(items), groups, tokens, TINY_WIDTH)
    assert (encoder.groups, encoder.tokens_per_group, encoder.hidden_size) == (groups, tokens, TINY_WIDTH)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    assert (
        encoder.input_kind
        == {"clip_vision": "image", "siglip_vision": "image", "whisper": "audio", "video_frames": "video"}[name]
    )


@pytest.mark.parametrize("name", list(CASES))
def test_encoders_are_frozen(encoders, name):
    encoder = encoders[name]
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()  # a training parent must not switch dropout on
    assert not encoder.training and not any(m.training for m in encoder.modules())
    features = encoder.encode(CASES[name][1])
    assert features.grad_fn is None


@pytest.mark.parametrize("name", list(CASES))
def test_deterministic_for_a_seed(encoders, name):
    config, items, _ = CASES[name]
    first = encoders[name].encode(items)
    again = build_encoder(config, seed=0).encode(items)  # reloaded from the cached folder
    other = build_encoder(config, seed=1).encode(items)  # a different tiny model
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


def test_tiny_builder_is_reproducible(tmp_path):
    from orchestrator.tiny import build_clip_vision

    build_clip_vision(tmp_path / "a", 3)
    build_clip_vision(tmp_path / "b", 3)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "preprocessor_config.json").exists()


def test_feature_layer_and_cls(encoders):
    pixels = encoders["clip_vision"].preprocess(images(1))
    penultimate = encoders["clip_vision"](**pixels)
    last = build_encoder(cfg("clip_vision", "@tiny/clip-vision", feature_layer=-1))
    with_cls = build_encoder(cfg("clip_vision", "@tiny/clip-vision", keep_cls=True))

    assert not torch.allclose(last(**pixels), penultimate)
    assert with_cls.tokens_per_group == TOWER_PATCHES + 1
    features_cls = with_cls(**pixels)
    assert features_cls.shape == (1, 1, TOWER_PATCHES + 1, TINY_WIDTH)
    torch.testing.assert_close(features_cls[:, :, 1:], penultimate)  # dropping CLS drops exactly position 0

    keys = {encoders["clip_vision"].cache_key(), last.cache_key(), with_cls.cache_key()}
    assert len(keys) == 3
    assert encoders["clip_vision"].cache_key() == build_encoder(CASES["clip_vision"][0]).cache_key()  # stable
    assert encoders["clip_vision"].cache_key() != build_encoder(CASES["clip_vision"][0], seed=1).cache_key()


def test_siglip_has_no_cls_so_keep_cls_is_a_no_op(encoders):
    keep = build_encoder(cfg("siglip_vision", "@tiny/siglip-vision", keep_cls=True))
    assert keep.tokens_per_group == TOWER_PATCHES
    torch.testing.assert_close(keep.encode(images(1)), encoders["siglip_vision"].encode(images(1)))


def test_feature_layer_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="feature_layer 7"):
        build_encoder(cfg("clip_vision", "@tiny/clip-vision", feature_layer=7))


def test_whisper_on_one_second_sine_and_pooling(encoders):
    whisper = encoders["whisper"]
    inputs = whisper.preprocess([tone(1.0)])
    assert inputs["input_features"].shape == (1, 80, 200)  # padded to 2 s of 10 ms frames
    features = whisper(**inputs)
    assert features.shape == (1, 1, 100, TINY_WIDTH)

    pooled = build_encoder(cfg("whisper", "@tiny/whisper-encoder", options={"pool": 4}))
    pooled_features = pooled.encode([tone(1.0)])
    assert pooled.tokens_per_group == 25 and pooled_features.shape == (1, 1, 25, TINY_WIDTH)
    torch.testing.assert_close(pooled_features[0, 0, 0], features[0, 0, :4].mean(0))
    assert pooled.cache_key() != whisper.cache_key()

    long = whisper.preprocess([tone(3.0)])["input_features"]  # trimmed to the encoder's 2 s window
    assert long.shape == (1, 80, 200)
    with pytest.raises(ConfigError, match="pool"):
        build_encoder(cfg("whisper", "@tiny/whisper-encoder", options={"pool": 0}))


def test_video_pads_a_three_frame_clip_to_five(encoders):
    video = encoders["video_frames"]
    frames = decode_video(encode_mp4(clip(3)), MediaLimits(), num_frames=5)
    assert len(frames) == 3
    inputs = video.preprocess([frames])
    assert inputs["pixel_values"].shape == (1, 5, 3, 32, 32)
    features = video(**inputs)
    assert features.shape == (1, 5, TOWER_PATCHES, TINY_WIDTH)
    torch.testing.assert_close(features[:, 2], features[:, 4])  # padding repeats the last frame
    # each frame gets exactly the image encoder's features
    torch.testing.assert_close(features[:, 0], encoders["clip_vision"].encode([frames[0]])[:, 0])


def test_video_with_siglip_frames_and_cache_key():
    video = build_encoder(
        cfg("video_frames", "@tiny/siglip-vision", num_frames=2, options={"image_encoder": "siglip_vision"})
    )
    assert video.encode([clip(4)]).shape == (1, 2, TOWER_PATCHES, TINY_WIDTH)
    three = build_encoder(
        cfg("video_frames", "@tiny/siglip-vision", num_frames=3, options={"image_encoder": "siglip_vision"})
    )
    assert video.cache_key() != three.cache_key()


def test_decoded_image_feeds_the_encoder(encoders):
    image = decode_image(encode_png(Image.new("RGBA", (20, 50), (0, 255, 0, 128))), MediaLimits())
    assert encoders["siglip_vision"].encode([image]).shape == (1, 1, TOWER_PATCHES, TINY_WIDTH)


def test_dtype_and_hub_path_code_path(encoders):
    # A local folder (as a hub id would be) loads through the same from_pretrained call.
    path = resolve_model("@tiny/siglip-vision", 0)
    assert Path(path).is_dir()
    encoder = build_encoder(cfg("siglip_vision", path), dtype=torch.bfloat16)
    assert encoder.encode(images(1)).dtype == torch.bfloat16
    assert encoder.cache_key().startswith("siglip_vision-")
    assert encoder.cache_key() != encoders["siglip_vision"].cache_key()  # dtype is part of the key


def test_registry():
    assert set(ENCODERS) >= {"clip_vision", "siglip_vision", "whisper", "video_frames"}
    with pytest.raises(UnknownKindError, match="known kinds: .*clip_vision"):
        build_encoder(cfg("thermal_camera", "@tiny/clip-vision"))
    assert modalities.ModalityEncoder is ModalityEncoder
