"""tinyworld.encoders: a shrunken CLIP + Whisper binding run learns, saves loadable encoders, and is reproducible."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from core.config import ModalityConfig
from modalities.audio import WhisperAudioEncoder
from modalities.image import ClipVisionEncoder
from modalities.video import VideoFrameEncoder
from tinyworld import encoders, text
from tinyworld.world import COLOURS, Picture, Sound

SMALL = dict(steps=60, batch_size=32, audio_batch_size=8, num_train=300, num_eval=60)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One shrunken training run shared by the tests of this module: ``(out folder, metrics)``."""
    out = tmp_path_factory.mktemp("encoders")
    metrics = encoders.train_encoders(out, seed=0, progress=False, **SMALL)
    return out, metrics


def test_contrastive_loss_falls_and_colour_is_learned(trained):
    _, metrics = trained
    initial = metrics["loss/initial"]
    final = metrics["loss/image"] + metrics["loss/audio"]
    assert final < 0.75 * initial, metrics
    assert metrics["image/colour"] >= 0.5, metrics  # chance: 1/6
    for key in ("image/shape", "image/position", "image/size", "audio/pitch", "audio/waveform", "audio/beeps"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["params/vision"] > 0 and metrics["params/audio_encoder"] > 0


def test_saved_towers_keep_the_trained_alignment(trained):
    """Independently of train_encoders' own evaluation: the saved vision and text towers plus the saved heads rank
    the right colour for new pictures (random towers would sit near 1/6)."""
    from transformers import CLIPVisionModel

    out, _ = trained
    tokenizer, text_model = encoders.load_text_encoder(out / "text")
    vision = CLIPVisionModel.from_pretrained(out / "image").eval()
    heads = encoders.load_projections(out)
    visual_projection = torch.nn.Linear(64, 64, bias=False)
    visual_projection.load_state_dict({"weight": heads["visual_projection.weight"]})
    text_projection = torch.nn.Linear(64, 64, bias=False)
    text_projection.load_state_dict({"weight": heads["text_projection.weight"]})

    rng = random.Random("test-colours")
    pictures = [Picture.sample(rng) for _ in range(48)]
    encoder = ClipVisionEncoder.from_config(ModalityConfig(encoder="clip_vision", model=str(out / "image")))
    pixels = encoder.preprocess([p.render(rng.randrange(10**6)) for p in pictures])["pixel_values"]
    colours = list(COLOURS)
    captions = [text.caption(replace(p, colour=c)) for p in pictures for c in colours]
    tokens = tokenizer(captions, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        media = F.normalize(visual_projection(vision(pixel_values=pixels).pooler_output), dim=-1)  # (N, 64)
        words = text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
        words = F.normalize(text_projection(words), dim=-1).reshape(len(pictures), len(colours), -1)  # (N, 6, 64)
    predicted = torch.einsum("np,ncp->nc", media, words).argmax(1)
    truth = torch.tensor([colours.index(p.colour) for p in pictures])
    assert (predicted == truth).float().mean().item() >= 0.5


def test_saved_folders_load_through_the_project_encoders(trained):
    out, _ = trained
    image = ClipVisionEncoder.from_config(ModalityConfig(encoder="clip_vision", model=str(out / "image")))
    pictures = [Picture.sample(random.Random(i)).render(i) for i in range(2)]
    features = image.encode(pictures)
    assert features.shape == (2, 1, 64, 64)  # (B, G, (32 / 4) ** 2 patches, width 64)
    assert image.hidden_size == 64 and image.tokens_per_group == 64

    video = VideoFrameEncoder.from_config(
        ModalityConfig(encoder="video_frames", model=str(out / "image"), num_frames=3)
    )
    assert video.encode([pictures, pictures[:1]]).shape == (2, 3, 64, 64)

    audio = WhisperAudioEncoder.from_config(ModalityConfig(encoder="whisper", model=str(out / "audio")))
    sounds = [Sound.sample(random.Random(i)).render(i) for i in range(2)]
    features = audio.encode(sounds)
    assert features.shape == (2, 1, 100, 64)  # (B, G, max_source_positions, d_model)
    assert torch.isfinite(features).all()

    # the project's audio preprocessing is the one training used
    mels = audio.preprocess(sounds)["input_features"]
    assert torch.allclose(mels, encoders.log_mels(sounds))


def test_load_text_encoder_round_trip(trained, tmp_path):
    out, _ = trained
    tokenizer, model = encoders.load_text_encoder(out / "text")
    fresh = encoders.build_tokenizer()
    caption = "a small red circle in the top left"
    assert tokenizer(caption).input_ids == fresh(caption).input_ids
    assert tokenizer.model_max_length == 16 and len(tokenizer.tokenize(caption)) == 8  # whole-word tokens
    assert model.config.eos_token_id == tokenizer.eos_token_id and model.config.vocab_size == len(tokenizer)
    assert not model.training and not any(p.requires_grad for p in model.parameters())

    tokens = tokenizer([caption, "two high beeps"], padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        before = model(**tokens).pooler_output
    assert before.shape == (2, 64)
    tokenizer.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    tokenizer_again, model_again = encoders.load_text_encoder(tmp_path)
    with torch.no_grad():
        after = model_again(
            **tokenizer_again([caption, "two high beeps"], padding="max_length", max_length=16, return_tensors="pt")
        ).pooler_output
    assert torch.equal(before, after)


def _weights(folder) -> dict[str, torch.Tensor]:
    return {
        f"{part}/{k}": v
        for part in ("image", "text", "audio")
        for k, v in load_file(folder / part / "model.safetensors").items()
    }


def test_same_seed_same_weights(tmp_path):
    tiny = dict(steps=3, batch_size=8, num_train=24, num_eval=6, progress=False)
    encoders.train_encoders(tmp_path / "a", seed=1, **tiny)
    encoders.train_encoders(tmp_path / "b", seed=1, **tiny)
    encoders.train_encoders(tmp_path / "c", seed=2, **tiny)
    a, b, c = (_weights(tmp_path / name) for name in "abc")
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # a different seed really changes them
    heads_a, heads_b = encoders.load_projections(tmp_path / "a"), encoders.load_projections(tmp_path / "b")
    assert torch.equal(heads_a["audio_projection.weight"], heads_b["audio_projection.weight"])
