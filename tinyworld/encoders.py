"""Train the tinyworld's frozen encoders: a CLIP image/text pair and a Whisper audio encoder bound to the same text.

The tinyworld recipe does not download encoders: it trains them here, CLIP-style, with the real transformers
classes at toy size, so the folders it writes load through exactly the code a released checkpoint takes
(:class:`modalities.image.ClipVisionEncoder`, :class:`modalities.audio.WhisperAudioEncoder`).

What is trained, jointly, in every step:

- a ``CLIPModel`` (vision tower 32x32 images in 4x4 patches, 64-d, 3 layers; text tower 64-d, 2 layers,
  16 positions, the world's BPE vocabulary) on (picture, caption) pairs and (single video frame,
  ``"a <colour> <shape>"``) pairs;
- the same vision tower on (video clip, ``"a <colour> <shape> moving <direction>"``) pairs: a clip is embedded
  by a linear "motion head" over the vision states of its first and last frame (X-CLIP-style temporal pooling at
  its simplest). This is what teaches the text tower the direction words -- without it they are words no
  training signal ever reaches, and a text-to-video model conditioned on the frozen tower cannot tell
  ``moving left`` from ``moving up``;
- a ``WhisperModel`` encoder (64-d, 3 layers, 2 s of 80-bin log-mel input) whose states, mean-pooled over time
  and linearly projected to the joint 64-d space, are contrasted with the SAME CLIP text tower on
  (sound, caption) pairs -- ImageBind-style binding of images and sounds through one text space.

One symmetric contrastive (InfoNCE) loss is computed over the whole batch: every medium (pictures, frames,
sounds) against every caption. Captions come in several forms (full caption, request caption, captions without
the position or size, ...), so one caption can truly describe several media of a batch ("a red circle" fits
every red circle). The targets are therefore soft: each row / column spreads its probability mass uniformly
over the captions / media it is a true description of, instead of assuming the diagonal is the only match.

The training set is rendered once (seeded) and kept as tensors: processor outputs for images, whisper log-mels
for sounds, token ids for every caption. Zero-shot accuracy is measured on held-out renders by ranking the text
embeddings of the candidate captions that differ from the true one only in the attribute under test.

``python -m tinyworld.encoders OUT [--steps N]`` trains with the defaults and prints the metrics table.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)

from orchestrator.tiny import tiny_clip_tokenizer
from tinyworld import text as world_text
from tinyworld.world import (
    BEEPS,
    COLOURS,
    DIRECTIONS,
    PITCHES,
    POSITIONS,
    SHAPES,
    SIZES,
    WAVEFORMS,
    Clip,
    Picture,
    Sound,
    as_received,
)
from training.meter import metered
from training.optim import adamw

# -- sizes --------------------------------------------------------------------------------------------------------
IMAGE_SIZE = 32
PATCH_SIZE = 4
WIDTH = 64  # every tower's width, and the joint embedding size
PROJECTION_DIM = 64
TEXT_MAX_LENGTH = 16
TOKENIZER_MERGES = 300
MEL_BINS = 80
MAX_SOURCE_POSITIONS = 100  # 200 mel frames of 10 ms = 2 s of audio per clip
LOGIT_SCALE_INIT = 30.0  # initial inverse temperature of the contrastive logits (learned, capped at 100)

# -- training defaults (the recipe's own settings are in tinyworld.config) -------------------------------------------
STEPS = 1000
BATCH_SIZE = 128  # images (pictures and clip frames) per step
AUDIO_BATCH_SIZE = 24  # sounds per step (scaled with batch_size): a sound costs ~2x an image to encode, and
# the sound attributes are learnt long before the picture shapes are
CLIP_BATCH_SIZE = 16  # clips per step (scaled with batch_size); each costs two frames through the vision tower
NUM_TRAIN = 3000  # pre-rendered pictures and sounds (plus NUM_TRAIN // 3 clip frames)
LR = 1e-3

# -- the attribute table ------------------------------------------------------------------------------------------
#: Every attribute a medium or a caption can carry, in a fixed order; codes are indices into the value lists.
ATTRIBUTES: dict[str, list] = {
    "colour": list(COLOURS),
    "shape": list(SHAPES),
    "position": list(POSITIONS),
    "size": list(SIZES),
    "pitch": list(PITCHES),
    "waveform": list(WAVEFORMS),
    "beeps": list(BEEPS),
    "direction": list(DIRECTIONS),
}
# A medium's codes and a caption's constraints are rows of 9 ints: [kind, colour, shape, position, size, pitch,
# waveform, beeps, direction], kind 0 for images (pictures and frames), 1 for sounds and 2 for clips.
ANY = -1  # in a caption's constraints: the caption does not mention this attribute
NOT_APPLICABLE = -9  # in a medium's attributes: the medium has no such attribute (never matches)

PICTURE_ATTRIBUTES = ("colour", "shape", "position", "size")
SOUND_ATTRIBUTES = ("pitch", "waveform", "beeps")
CLIP_ATTRIBUTES = ("colour", "shape", "direction")


def _codes(kind: int, values: dict, missing: int) -> list[int]:
    """``[kind, colour, shape, ...]`` codes for ``values`` (attribute -> value); absent attributes get ``missing``."""
    return [kind] + [ATTRIBUTES[a].index(values[a]) if a in values else missing for a in ATTRIBUTES]


# -- captions -----------------------------------------------------------------------------------------------------
def picture_captions(picture: Picture) -> list[tuple[str, dict]]:
    """The caption forms used for a picture, each with the attributes it mentions: the full caption, the request
    caption (colour and shape only), and the caption without the position or without the size."""
    p = picture
    return [
        (world_text.caption(p), p.as_dict()),
        (world_text.request_caption(p), {"colour": p.colour, "shape": p.shape}),
        (f"a {p.size} {p.colour} {p.shape}", {"colour": p.colour, "shape": p.shape, "size": p.size}),
        (f"a {p.colour} {p.shape} in the {p.position}", {"colour": p.colour, "shape": p.shape, "position": p.position}),
    ]


PICTURE_FORM_WEIGHTS = (0.4, 0.2, 0.2, 0.2)


def frame_caption(clip: Clip) -> tuple[str, dict]:
    """A single frame of a clip shows no motion: it is captioned ``a <colour> <shape>``."""
    return f"a {clip.colour} {clip.shape}", {"colour": clip.colour, "shape": clip.shape}


def sound_captions(sound: Sound) -> list[tuple[str, dict]]:
    """The caption forms used for a sound: the full caption, the request caption (no waveform), and the caption
    without the pitch. Every form names the number of beeps."""
    s = sound
    count = world_text.NUMBERS[s.beeps]
    plural = "s" if s.beeps > 1 else ""
    return [
        (world_text.caption(s), s.as_dict()),
        (world_text.request_caption(s), {"pitch": s.pitch, "beeps": s.beeps}),
        (f"{count} {s.waveform} beep{plural}", {"waveform": s.waveform, "beeps": s.beeps}),
    ]


SOUND_FORM_WEIGHTS = (0.5, 0.25, 0.25)


def clip_caption(clip: Clip) -> tuple[str, dict]:
    """A whole clip is captioned with its motion: ``a <colour> <shape> moving <direction>``."""
    return world_text.caption(clip), clip.as_dict()


def first_and_last_frame(clip: Clip, seed: int) -> list:
    """The first and last frame of ``clip`` rendered from ``seed``: what the motion head sees of a clip."""
    frames = clip.render(seed, side=IMAGE_SIZE)
    return [frames[0], frames[-1]]


def clip_pixels(processor, ends: list) -> torch.Tensor:
    """Consecutive (first, last) frame pairs -> processed pixels ``(N, 2, 3, 32, 32)``."""
    pixels = processor(images=ends, return_tensors="pt")["pixel_values"]  # (2N, 3, 32, 32)
    return pixels.reshape(-1, 2, *pixels.shape[1:])  # (2N, 3, H, W) -> (N, 2, 3, H, W)


# -- builders -----------------------------------------------------------------------------------------------------
def build_tokenizer():
    """The world's ``CLIPTokenizer`` (BPE trained on :func:`tinyworld.text.corpus`, 16 positions)."""
    return tiny_clip_tokenizer(TEXT_MAX_LENGTH, corpus=world_text.corpus(), num_merges=TOKENIZER_MERGES)


def build_image_processor():
    """The PIL CLIP image processor for 32x32 inputs (resize shortest edge 32, centre crop 32x32, CLIP norm)."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )


def sincos_positions(grid: int, width: int, scale: float = 0.4) -> torch.Tensor:
    """2-D sine-cosine position table ``(1 + grid * grid, width)`` (row 0, the CLS token's, is zero), as in MAE.

    Used to initialise the vision tower's learned position embeddings: CLIP's default N(0, 0.02) init is ~15x
    weaker than the patch embeddings of these images, and the tower then learns *where* a shape is very late.
    """
    quarter = width // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)  # (W/4,)
    ys, xs = torch.meshgrid(
        torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij"
    )  # (g, g) each
    angles_x = xs.reshape(-1, 1) * frequencies  # (g*g, W/4)
    angles_y = ys.reshape(-1, 1) * frequencies  # (g*g, W/4)
    table = torch.cat([angles_x.sin(), angles_x.cos(), angles_y.sin(), angles_y.cos()], dim=1)  # (g*g, W)
    return scale * torch.cat([torch.zeros(1, width), table])  # (1 + g*g, W)


def build_clip(tokenizer):
    """A freshly initialised ``CLIPModel`` at the tinyworld's size (uses the global torch RNG)."""
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        hidden_size=WIDTH,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=2 * WIDTH,
        projection_dim=PROJECTION_DIM,
    )
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * WIDTH,
        max_position_embeddings=TEXT_MAX_LENGTH,
        projection_dim=PROJECTION_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=PROJECTION_DIM)
    model = CLIPModel(config)
    with torch.no_grad():
        model.vision_model.embeddings.position_embedding.weight.copy_(sincos_positions(IMAGE_SIZE // PATCH_SIZE, WIDTH))
    return model


def build_whisper():
    """A freshly initialised ``WhisperModel``: the trained encoder plus a 1-layer decoder that only lets the folder
    load as a released checkpoint does (uses the global torch RNG)."""
    config = WhisperConfig(
        vocab_size=64,
        d_model=WIDTH,
        encoder_layers=3,
        encoder_attention_heads=4,
        encoder_ffn_dim=2 * WIDTH,
        decoder_layers=1,
        decoder_attention_heads=4,
        decoder_ffn_dim=2 * WIDTH,
        num_mel_bins=MEL_BINS,
        max_source_positions=MAX_SOURCE_POSITIONS,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    return WhisperModel(config)


def log_mels(clips: list[np.ndarray]) -> torch.Tensor:
    """16 kHz clips -> whisper log-mels ``(N, 80, 200)``, computed exactly as
    :meth:`modalities.audio.WhisperAudioEncoder.preprocess` does for a model with ``max_source_positions=100``."""
    import whisper  # noqa: PLC0415 - openai-whisper pulls in numba (seconds to import); only the sounds need it

    frames = 2 * MAX_SOURCE_POSITIONS
    samples = frames * (16000 // 100)
    out = []
    for clip in clips:
        audio = whisper.pad_or_trim(torch.as_tensor(np.asarray(clip, dtype=np.float32).reshape(-1)), samples)
        out.append(whisper.log_mel_spectrogram(audio, n_mels=MEL_BINS)[:, :frames])  # (80, 200)
    return torch.stack(out)  # (N, 80, 200)


class Binder(nn.Module):
    """The trained parts together: the CLIP model, the Whisper model, the audio projection and the motion head.

    ``embed_*`` return L2-normalised joint embeddings ``(N, PROJECTION_DIM)``.
    """

    def __init__(self, clip, whisper_model) -> None:
        super().__init__()
        self.clip = clip
        self.whisper = whisper_model
        self.audio_projection = nn.Linear(WIDTH, PROJECTION_DIM, bias=False)
        self.motion_projection = nn.Linear(2 * WIDTH, PROJECTION_DIM, bias=False)

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` (N, 3, 32, 32) -> (N, P)."""
        pooled = self.clip.vision_model(pixel_values=pixel_values).pooler_output  # (N, W): CLS after post-LN
        return F.normalize(self.clip.visual_projection(pooled), dim=-1)

    def embed_clips(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` (N, 2, 3, 32, 32): each clip's first and last frame -> (N, P)."""
        n = len(pixel_values)
        pooled = self.clip.vision_model(pixel_values=pixel_values.flatten(0, 1)).pooler_output  # (N * 2, W)
        pooled = pooled.reshape(n, 2 * pooled.shape[-1])  # (N * 2, W) -> (N, 2W): [first, last]
        return F.normalize(self.motion_projection(pooled), dim=-1)

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``input_ids`` / ``attention_mask`` (N, L) -> (N, P); pooled at each caption's EOS token."""
        pooled = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output  # (N, W)
        return F.normalize(self.clip.text_projection(pooled), dim=-1)

    def embed_sounds(self, input_features: torch.Tensor) -> torch.Tensor:
        """``input_features`` (N, 80, 200) log-mels -> (N, P); encoder states mean-pooled over time."""
        states = self.whisper.encoder(input_features=input_features).last_hidden_state  # (N, 100, W)
        return F.normalize(self.audio_projection(states.mean(dim=1)), dim=-1)  # (N, W) -> (N, P)


# -- the pre-rendered data ----------------------------------------------------------------------------------------
@dataclass
class Captions:
    """Every distinct caption used, tokenised once. ``constraints`` (C, 9): kind and attribute codes, ANY where
    the caption does not mention an attribute."""

    texts: list[str]
    input_ids: torch.Tensor  # (C, L)
    attention_mask: torch.Tensor  # (C, L)
    constraints: torch.Tensor  # (C, 9)


@dataclass
class MediaSet:
    """Pre-rendered media of one kind with their caption choices.

    ``inputs`` (N, ...): model inputs; ``attributes`` (N, 9): the medium's codes; ``caption_ids`` (N, F): index
    into :class:`Captions` of each caption form; ``form_weights`` (F,): how often each form is drawn.
    """

    inputs: torch.Tensor
    attributes: torch.Tensor
    caption_ids: torch.Tensor
    form_weights: torch.Tensor

    def __post_init__(self) -> None:
        # Group the media by their attribute combination, and link every combination to the ones differing from
        # it in exactly one attribute (its "siblings": a red circle in the top left <-> in the top right),
        # grouped by that attribute.
        combos, self._combo_of = torch.unique(self.attributes, dim=0, return_inverse=True)  # (K, 9), (N,)
        self._members = [torch.nonzero(self._combo_of == k).flatten() for k in range(len(combos))]
        differs = combos[:, None, :] != combos[None, :, :]  # (K, K, 9)
        one = differs.sum(-1) == 1  # (K, K): siblings
        self._siblings = [
            [torch.nonzero(one[k] & differs[k, :, f]).flatten() for f in range(combos.shape[1])]
            for k in range(len(combos))
        ]
        self._siblings = [[group for group in groups if len(group)] for groups in self._siblings]

    def _draw(self, count: int, generator: torch.Generator) -> int:
        return int(torch.randint(count, (1,), generator=generator))

    def sample(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch of ``size``: model inputs, medium codes ``(size, 9)``, caption indices ``(size,)``.

        Half the batch is drawn uniformly; the other half pairs each of those with a random sibling (a medium whose
        attributes differ in exactly one, that attribute chosen uniformly), so every batch holds hard negatives for
        every attribute -- with uniform batches alone, captions differing only in shape or position rarely meet
        and those attributes are learnt late.
        """
        anchors = torch.randint(len(self.inputs), (size - size // 2,), generator=generator)
        partners = []
        for anchor in anchors[: size // 2].tolist():
            groups = self._siblings[int(self._combo_of[anchor])]
            if not groups:  # only in tiny sets: fall back to a uniform draw
                partners.append(self._draw(len(self.inputs), generator))
                continue
            group = groups[self._draw(len(groups), generator)]
            members = self._members[int(group[self._draw(len(group), generator)])]
            partners.append(int(members[self._draw(len(members), generator)]))
        index = torch.cat([anchors, torch.tensor(partners, dtype=torch.long)])  # (size,)
        forms = torch.multinomial(self.form_weights, size, replacement=True, generator=generator)  # (size,)
        return self.inputs[index], self.attributes[index], self.caption_ids[index, forms]


class _CaptionTable:
    """Collects distinct captions while the media are rendered; :meth:`build` tokenises them."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.constraints: list[list[int]] = []

    def add(self, kind: int, text: str, mentions: dict) -> int:
        if text not in self.index:
            self.index[text] = len(self.index)
            self.constraints.append(_codes(kind, mentions, ANY))
        return self.index[text]

    def build(self, tokenizer) -> Captions:
        texts = list(self.index)
        tokens = tokenizer(
            texts, padding="max_length", max_length=TEXT_MAX_LENGTH, truncation=True, return_tensors="pt"
        )
        return Captions(texts, tokens["input_ids"], tokens["attention_mask"], torch.tensor(self.constraints))


def _render_training_set(
    num_train: int, seed: int, tokenizer, processor, augment: float = 0.0
) -> tuple[MediaSet, MediaSet, MediaSet, Captions]:
    """Render ``num_train`` pictures, ``num_train // 3`` single clip frames, ``num_train`` sounds and
    ``num_train // 3`` clips (first and last frame; seeded). ``augment``: the share of them drawn with the world
    renderer's augmentation and taken through encoding and decoding as a user's file is
    (:func:`tinyworld.world.as_received`); 0 draws exactly the renders of before.

    Returns the image set (pictures then frames), the sound set, the clip set and the caption table.
    """
    rng = random.Random(seed)
    table = _CaptionTable()

    def augmented() -> bool:  # draws from rng only when augmentation is on
        return bool(augment) and rng.random() < augment

    images, image_codes, image_caps = [], [], []
    for _ in range(num_train):
        picture = Picture.sample(rng)
        if augmented():
            images.append(as_received(picture, rng.randrange(2**31), augment=True))
        else:
            images.append(picture.render(rng.randrange(2**31), side=IMAGE_SIZE))
        image_codes.append(_codes(0, picture.as_dict(), NOT_APPLICABLE))
        image_caps.append([table.add(0, t, m) for t, m in picture_captions(picture)])
    for _ in range(num_train // 3):
        clip = Clip.sample(rng)
        if augmented():
            frames = as_received(clip, rng.randrange(2**31), augment=True)
        else:
            frames = clip.render(rng.randrange(2**31), side=IMAGE_SIZE)
        images.append(frames[rng.randrange(len(frames))])
        # a frame has a colour and a shape; position and size are not those of a picture (NOT_APPLICABLE)
        image_codes.append(_codes(0, {"colour": clip.colour, "shape": clip.shape}, NOT_APPLICABLE))
        image_caps.append([table.add(0, *frame_caption(clip))] * len(PICTURE_FORM_WEIGHTS))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]  # (N, 3, 32, 32)

    clips, sound_codes, sound_caps = [], [], []
    for _ in range(num_train):
        sound = Sound.sample(rng)
        if augmented():
            clips.append(as_received(sound, rng.randrange(2**31), augment=True))
        else:
            clips.append(sound.render(rng.randrange(2**31)))
        sound_codes.append(_codes(1, sound.as_dict(), NOT_APPLICABLE))
        sound_caps.append([table.add(1, t, m) for t, m in sound_captions(sound)])

    ends, clip_codes, clip_caps = [], [], []
    for _ in range(num_train // 3):
        clip = Clip.sample(rng)
        if augmented():
            frames = as_received(clip, rng.randrange(2**31), augment=True)
            ends += [frames[0], frames[-1]]
        else:
            ends += first_and_last_frame(clip, rng.randrange(2**31))
        clip_codes.append(_codes(2, clip.as_dict(), NOT_APPLICABLE))
        clip_caps.append([table.add(2, *clip_caption(clip))])

    image_set = MediaSet(
        pixels, torch.tensor(image_codes), torch.tensor(image_caps), torch.tensor(PICTURE_FORM_WEIGHTS)
    )
    sound_set = MediaSet(
        log_mels(clips), torch.tensor(sound_codes), torch.tensor(sound_caps), torch.tensor(SOUND_FORM_WEIGHTS)
    )
    clip_set = MediaSet(
        clip_pixels(processor, ends), torch.tensor(clip_codes), torch.tensor(clip_caps), torch.tensor([1.0])
    )
    return image_set, sound_set, clip_set, table.build(tokenizer)


# -- the loss -----------------------------------------------------------------------------------------------------
def matches(media_codes: torch.Tensor, caption_constraints: torch.Tensor) -> torch.Tensor:
    """``(M, 9)`` medium codes x ``(C, 9)`` caption constraints -> ``(M, C)`` bool: caption c describes medium m."""
    media = media_codes[:, None, :]  # (M, 1, 9)
    wanted = caption_constraints[None]  # (1, C, 9)
    return ((wanted == ANY) | (wanted == media)).all(dim=-1)  # (M, C)


def soft_contrastive(logits: torch.Tensor, match: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE with several positives: ``logits`` / ``match`` (M, C) -> per-row and per-column losses
    ``(M,)``, ``(C,)``. Each row's target spreads uniformly over its matching captions, each column's over its
    matching media (every row and column has at least its own pair)."""
    target = match.float()
    rows = -(target / target.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1)  # (M,)
    cols = -(target / target.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0)  # (C,)
    return rows, cols


# -- evaluation ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def zero_shot(binder: Binder, tokenizer, processor, *, num_eval: int = 300, seed: int = 0) -> dict[str, float]:
    """Zero-shot accuracy per attribute on held-out renders: ``num_eval`` pictures, sounds, clip frames and clips.

    The renders use fresh seeds from their own stream, so they are not the training renders. For each medium and
    attribute, the candidates are the medium's full caption (``a <colour> <shape>`` for a frame) with that
    attribute set to each of its values; the prediction is the candidate whose text embedding is closest to the
    medium's. Returns ``{"image/colour": acc, ..., "audio/beeps": acc, "frame/colour": acc, "frame/shape": acc,
    "video/colour": acc, "video/shape": acc, "video/direction": acc}``.
    """
    rng = random.Random(f"held-out-{seed}")
    pictures = [Picture.sample(rng) for _ in range(num_eval)]
    picture_pixels = processor(
        images=[p.render(rng.randrange(2**31), side=IMAGE_SIZE) for p in pictures], return_tensors="pt"
    )["pixel_values"]  # (N, 3, 32, 32)
    sounds = [Sound.sample(rng) for _ in range(num_eval)]
    sound_mels = log_mels([s.render(rng.randrange(2**31)) for s in sounds])  # (N, 80, 200)
    clips = [Clip.sample(rng) for _ in range(num_eval)]
    frames = [c.render(rng.randrange(2**31), side=IMAGE_SIZE)[rng.randrange(8)] for c in clips]
    frame_pixels = processor(images=frames, return_tensors="pt")["pixel_values"]  # (N, 3, 32, 32)
    moving = [Clip.sample(rng) for _ in range(num_eval)]
    end_pixels = clip_pixels(processor, [f for c in moving for f in first_and_last_frame(c, rng.randrange(2**31))])

    was_training = binder.training
    binder.eval()
    device = next(binder.parameters()).device
    picture_pixels, sound_mels, frame_pixels, end_pixels = (
        x.to(device) for x in (picture_pixels, sound_mels, frame_pixels, end_pixels)
    )
    groups = [  # (name, things, attributes, their embeddings (N, P), caption of a thing)
        ("image", pictures, PICTURE_ATTRIBUTES, binder.embed_images(picture_pixels), world_text.caption),
        (
            "audio",
            sounds,
            SOUND_ATTRIBUTES,
            torch.cat([binder.embed_sounds(m) for m in sound_mels.split(64)]),
            world_text.caption,
        ),
        ("frame", clips, ("colour", "shape"), binder.embed_images(frame_pixels), lambda c: frame_caption(c)[0]),
        ("video", moving, CLIP_ATTRIBUTES, binder.embed_clips(end_pixels), lambda c: clip_caption(c)[0]),
    ]
    metrics: dict[str, float] = {}
    for name, things, attributes, media, describe in groups:
        for attribute in attributes:
            values = ATTRIBUTES[attribute]
            texts = [describe(replace(t, **{attribute: v})) for t in things for v in values]
            tokens = tokenizer(
                texts, padding="max_length", max_length=TEXT_MAX_LENGTH, truncation=True, return_tensors="pt"
            )
            candidates = binder.embed_texts(
                tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
            )  # (N * V, P)
            candidates = candidates.reshape(len(things), len(values), -1)  # (N, V, P)
            scores = torch.einsum("np,nvp->nv", media, candidates)  # (N, V)
            truth = torch.tensor([values.index(getattr(t, attribute)) for t in things], device=device)
            metrics[f"{name}/{attribute}"] = (scores.argmax(1) == truth).float().mean().item()
    binder.train(was_training)
    return metrics


# -- training -----------------------------------------------------------------------------------------------------
def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train_encoders(
    out: str | Path,
    *,
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
    progress: bool = True,
    num_train: int = NUM_TRAIN,
    audio_batch_size: int | None = None,
    clip_batch_size: int | None = None,
    lr: float = LR,
    num_eval: int = 300,
    eval_every: int = 0,
    device: str = "cpu",
    augment: float = 0.0,
) -> dict:
    """Train the CLIP pair and the Whisper encoder jointly; write the encoders; return metrics.

    ``num_train`` pictures, ``num_train // 3`` clip frames and ``num_train`` sounds are rendered once (seeded by
    ``seed``, as is the initialisation and the batch order). Every step draws ``batch_size`` images (pictures and
    frames) and ``audio_batch_size`` sounds (default: 24 per 128 images) -- half uniformly, half as siblings of
    those (see :meth:`MediaSet.sample`) --, one caption per medium (its form drawn at random), and minimises the
    sum of the image, audio and clip contrastive losses (``clip_batch_size`` clips, default 16 per 128 images;
    AdamW, ``lr`` with 5 % linear warm-up then cosine decay,
    gradient norm clipped at 1). ``device``: where the towers train; the renders and the batch draws stay on the
    CPU, and the towers come back to it for the evaluation and the saved folders. ``augment``: the share of the
    training renders drawn with the world renderer's augmentation (:func:`_render_training_set`).

    Writes ``out/"image"`` (``CLIPVisionModel`` + ``CLIPImageProcessorPil``), ``out/"text"``
    (``CLIPTextModel`` + ``CLIPTokenizer``), ``out/"audio"`` (``WhisperModel`` + ``WhisperFeatureExtractor``
    config), ``out/"projections.safetensors"`` (the joint-space heads and logit scale, for zero-shot use) and
    ``out/"metrics.json"``. Returns the held-out zero-shot accuracies of :func:`zero_shot` (``"image/colour"``,
    ..., ``"audio/beeps"``, ``"frame/colour"``, ``"frame/shape"``), the losses (``"loss/initial"``: the first
    step's summed loss; ``"loss/image"``, ``"loss/audio"``, ``"loss/clip"``: means over the last steps), the time
    spent rendering and training (``"seconds"`` wall clock, ``"cpu_seconds"``) and parameter counts
    (``"params/..."``).
    """
    out = Path(out)
    audio_batch_size = audio_batch_size or max(2, batch_size * AUDIO_BATCH_SIZE // BATCH_SIZE)
    clip_batch_size = clip_batch_size or max(2, batch_size * CLIP_BATCH_SIZE // BATCH_SIZE)
    started, cpu_started = time.perf_counter(), time.process_time()
    tokenizer, processor = build_tokenizer(), build_image_processor()
    image_set, sound_set, clip_set, captions = _render_training_set(num_train, seed, tokenizer, processor, augment)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        binder = Binder(build_clip(tokenizer), build_whisper())
    binder.whisper.decoder.requires_grad_(False)  # rides along only so the folder loads as a WhisperModel
    binder.clip.logit_scale.data.fill_(math.log(LOGIT_SCALE_INIT))
    binder.to(device)
    parameters = [p for p in binder.parameters() if p.requires_grad]
    decay = [p for p in parameters if p.ndim >= 2]
    no_decay = [p for p in parameters if p.ndim < 2]
    optimizer = adamw(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98)
    )
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, steps, warmup))
    generator = torch.Generator().manual_seed(seed)

    history: list[tuple[float, float]] = []
    binder.train()
    bar = tqdm(range(steps), desc="encoders", disable=not progress)
    for step in metered(bar, "encoders"):
        pixels, image_codes, image_caps = image_set.sample(batch_size, generator)
        mels, sound_codes, sound_caps = sound_set.sample(audio_batch_size, generator)
        ends, clip_codes, clip_caps = clip_set.sample(clip_batch_size, generator)
        # M = images + sounds + clips, in that order; one caption per medium, in the same order
        caption_ids = torch.cat([image_caps, sound_caps, clip_caps])  # (M,)
        texts = binder.embed_texts(
            captions.input_ids[caption_ids].to(device), captions.attention_mask[caption_ids].to(device)
        )  # (M, P)
        media = torch.cat(
            [
                binder.embed_images(pixels.to(device)),
                binder.embed_sounds(mels.to(device)),
                binder.embed_clips(ends.to(device)),
            ]
        )
        match = matches(torch.cat([image_codes, sound_codes, clip_codes]), captions.constraints[caption_ids]).to(
            device
        )  # (M, M)
        scale = binder.clip.logit_scale.clamp(max=math.log(100.0)).exp()
        rows, cols = soft_contrastive(scale * media @ texts.T, match)  # (M,), (M,)
        # each medium is contrasted with every caption (sounds and clips are extra negatives for images, ...)
        a, b = batch_size, batch_size + audio_batch_size
        image_loss = (rows[:a].mean() + cols[:a].mean()) / 2
        audio_loss = (rows[a:b].mean() + cols[a:b].mean()) / 2
        clip_loss = (rows[b:].mean() + cols[b:].mean()) / 2
        loss = image_loss + audio_loss + clip_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        history.append((image_loss.item(), audio_loss.item(), clip_loss.item()))
        if progress and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix(image=f"{history[-1][0]:.3f}", audio=f"{history[-1][1]:.3f}", clip=f"{history[-1][2]:.3f}")
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            accuracies = zero_shot(binder, tokenizer, processor, num_eval=min(num_eval, 100), seed=seed + 1)
            tqdm.write(
                f"step {step + 1}: "
                + " ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in accuracies.items())
                + f" scale {binder.clip.logit_scale.exp().item():.1f}"
            )
    bar.close()
    train_seconds, train_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

    binder.cpu().eval()
    metrics: dict[str, float] = zero_shot(binder, tokenizer, processor, num_eval=num_eval, seed=seed)
    tail = history[-max(1, min(20, steps // 10)) :]  # average the last steps: one batch is noisy
    metrics.update(
        {
            "loss/initial": sum(history[0]) if history else float("nan"),
            "loss/image": float(np.mean([h[0] for h in tail])) if history else float("nan"),
            "loss/audio": float(np.mean([h[1] for h in tail])) if history else float("nan"),
            "loss/clip": float(np.mean([h[2] for h in tail])) if history else float("nan"),
            "seconds": train_seconds,  # wall clock, rendering and training (not evaluation)
            "cpu_seconds": train_cpu_seconds,  # CPU time of this process: robust to other load on the machine
            "params/vision": sum(p.numel() for p in binder.clip.vision_model.parameters()),
            "params/text": sum(p.numel() for p in binder.clip.text_model.parameters()),
            "params/audio_encoder": sum(p.numel() for p in binder.whisper.encoder.parameters()),
            "params/heads": sum(
                p.numel()
                for p in (
                    binder.clip.visual_projection.weight,
                    binder.clip.text_projection.weight,
                    binder.audio_projection.weight,
                    binder.motion_projection.weight,
                )
            ),
        }
    )
    save_encoders(binder, tokenizer, processor, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def save_encoders(binder: Binder, tokenizer, processor, out: Path) -> None:
    """Write the towers as the stand-alone transformers models the project's encoders load."""
    clip = binder.clip
    # transformers 5's CLIPModel holds its towers as a CLIPVisionModel and a CLIPTextModel: save them as they are
    clip.vision_model.save_pretrained(out / "image")
    processor.save_pretrained(out / "image")
    clip.text_model.save_pretrained(out / "text")
    tokenizer.save_pretrained(out / "text")

    binder.whisper.save_pretrained(out / "audio")
    WhisperFeatureExtractor(
        feature_size=MEL_BINS, sampling_rate=16000, hop_length=160, chunk_length=2 * MAX_SOURCE_POSITIONS // 100
    ).save_pretrained(out / "audio")

    heads = {
        "visual_projection.weight": clip.visual_projection.weight,
        "text_projection.weight": clip.text_projection.weight,
        "audio_projection.weight": binder.audio_projection.weight,
        "motion_projection.weight": binder.motion_projection.weight,
        "logit_scale": clip.logit_scale,
    }
    save_file({k: v.detach().contiguous().clone() for k, v in heads.items()}, out / "projections.safetensors")


def load_projections(out: str | Path) -> dict[str, torch.Tensor]:
    """The joint-space heads and logit scale :func:`save_encoders` wrote (safetensors; never unpickled)."""
    return load_file(Path(out) / "projections.safetensors")


def load_text_encoder(path: str | Path):
    """``(CLIPTokenizer, CLIPTextModel)`` from a ``train_encoders`` text folder (``out/"text"``), frozen: eval mode,
    no gradients. The model's ``pooler_output`` is the state at each caption's EOS token (before the joint-space
    projection, which is kept in ``out/"projections.safetensors"``)."""
    model = CLIPTextModel.from_pretrained(str(path)).eval().requires_grad_(False)
    return CLIPTokenizer.from_pretrained(str(path)), model


# -- command line -------------------------------------------------------------------------------------------------
def format_metrics(metrics: dict) -> str:
    """A small plain-text table of the zero-shot accuracies and the losses."""
    lines = [f"{'metric':<18}{'value':>10}", "-" * 28]
    for key, value in metrics.items():
        if key.startswith(("image/", "audio/", "frame/", "video/")):
            lines.append(f"{key:<18}{100 * value:>9.1f}%")
    for key, value in metrics.items():
        if not key.startswith(("image/", "audio/", "frame/", "video/")):
            lines.append(f"{key:<18}{value:>10.3f}" if isinstance(value, float) else f"{key:<18}{value:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tinyworld.encoders", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="output folder (image/, text/, audio/ are written inside)")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="images per step")
    parser.add_argument(
        "--audio-batch-size",
        type=int,
        default=None,
        help=f"sounds per step (default: {AUDIO_BATCH_SIZE} per {BATCH_SIZE} images)",
    )
    parser.add_argument("--num-train", type=int, default=NUM_TRAIN)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    metrics = train_encoders(
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
        num_train=args.num_train,
        audio_batch_size=args.audio_batch_size,
    )
    print(format_metrics(metrics))


if __name__ == "__main__":
    main()
