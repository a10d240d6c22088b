"""Tiny random-weight diffusion pipelines for ``@tiny/stable-diffusion``, ``@tiny/text-to-video-sd`` and
``@tiny/audioldm2``.

Each builder creates the real diffusers / transformers classes at toy sizes from configs (seeded, so every
machine builds the same weights), trains its tokenizers on a small built-in corpus (nothing is downloaded), and
writes the pipeline with ``save_pretrained(path)``. :func:`orchestrator.tiny.resolve_model` calls a builder once
and the generator tools then load the folder through ``Pipeline.from_pretrained(path)`` -- exactly the code path
a Hugging Face id takes.

Sizes (defaults of the saved pipelines):

- stable-diffusion: CLIP text encoder 32-d / 2 layers, 77-token prompts, UNet (16, 32), VAE (16, 32)
  -> 32x32 images.
- text-to-video-sd: the same text side, UNet3D (16, 32), VAE (16, 32) -> 32x32 frames (4 by default).
- audioldm2: CLAP (16-d text projection), T5 encoder 32-d with 16-token prompts, GPT-2 16-d producing 8
  states, AudioLDM2 UNet (16, 32), 1-channel VAE, HiFi-GAN at 16 kHz (hop 16) -> 0.064 s clips.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import torch

# A small built-in corpus for the tokenizers: captions of the kind the tiny world talks about.
CORPUS: tuple[str, ...] = (
    "a red square on a white background",
    "a blue circle in the top left corner",
    "a green triangle moving to the right",
    "a yellow star spinning slowly",
    "a small purple square moving down",
    "a large orange circle bouncing up and down",
    "two short beeps of a high sine tone",
    "a low square wave hum for one second",
    "three quick clicks followed by silence",
    "a rising whistle and a falling whistle",
    "the sound of a bell ringing twice",
    "a black background with a white dot",
    "draw a cat sitting on a mat",
    "play a gentle piano melody",
    "show me a video of a ball rolling left",
    "an image of the sea at sunset with boats",
    "noise, tones, shapes, colours and motion",
    "the quick brown fox jumps over the lazy dog",
)

CLIP_MAX_LENGTH = 77   # as in Stable Diffusion 1.x / 2.x
CLAP_MAX_LENGTH = 16
T5_MAX_LENGTH = 16
GPT2_NEW_TOKENS = 8

# Shared toy sizes: two resolution levels everywhere, so latents are half the pixel (or mel-frame) size.
_UNET = dict(in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32), attention_head_dim=8,
             norm_num_groups=8)
_UNET_2D_BLOCKS = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
_DDIM = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
             set_alpha_to_one=False, steps_offset=1)


# ---------------------------------------------------------------------------------------------------------------
# tokenizers, trained locally
# ---------------------------------------------------------------------------------------------------------------
def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2's table: printable Latin-1 maps to
    itself, every other byte to ``chr(256 + n)``), indexed by byte value."""
    printable = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def _train_byte_bpe(*, num_merges: int, special_tokens: list[str], word_pattern: str,
                    end_of_word_suffix: str = "", corpus: "Iterable[str]" = CORPUS,
                    ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn byte-level BPE merges on ``corpus`` (default :data:`CORPUS`; lower-cased), deterministically.

    Words are the ``word_pattern`` matches; each word is a sequence of byte symbols, its last one carrying
    ``end_of_word_suffix`` (CLIP's ``</w>``). The most frequent adjacent pair is merged, ties broken by the pair
    itself, so every machine learns the same table. Returns ``(vocab, merges)`` as the transformers tokenizer
    classes take them: special tokens first, then every byte symbol (bare and suffixed), then the merges.
    """
    import re
    from collections import Counter

    symbols = _byte_symbols()
    words: Counter[tuple[str, ...]] = Counter()
    for line in corpus:
        for word in re.findall(word_pattern, line.lower()):
            pieces = [symbols[b] for b in word.encode("utf-8")]
            pieces[-1] += end_of_word_suffix
            words[tuple(pieces)] += 1

    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged

    alphabet = symbols + ([s + end_of_word_suffix for s in symbols] if end_of_word_suffix else [])
    vocab: dict[str, int] = {}
    for token in [*special_tokens, *alphabet, *(a + b for a, b in merges)]:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def tiny_clip_tokenizer(model_max_length: int = CLIP_MAX_LENGTH, *, corpus: "Iterable[str]" = CORPUS,
                        num_merges: int = 150):
    """A ``CLIPTokenizer`` (``<|startoftext|>`` = 0, ``<|endoftext|>`` = 1) with a vocabulary trained here on
    ``corpus`` (default: :data:`CORPUS`) with ``num_merges`` BPE merges."""
    from transformers import CLIPTokenizer

    vocab, merges = _train_byte_bpe(num_merges=num_merges, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                    word_pattern=r"[a-z]+|[0-9]|[^\sa-z0-9]+", end_of_word_suffix="</w>",
                                    corpus=corpus)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def tiny_roberta_tokenizer(model_max_length: int = CLAP_MAX_LENGTH):
    """A ``RobertaTokenizer`` (``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2) for the CLAP text branch."""
    from transformers import RobertaTokenizer

    # GPT-2's split: a word keeps its leading space (which becomes the byte symbol "\u0120").
    vocab, merges = _train_byte_bpe(num_merges=150, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                    word_pattern=r" ?[a-z]+| ?[0-9]+| ?[^\sa-z0-9]+|\s+")
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def tiny_t5_tokenizer(model_max_length: int = T5_MAX_LENGTH):
    """A ``T5Tokenizer`` from a unigram SentencePiece model trained here (``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2)."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=proto, vocab_size=120, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2, num_threads=1,
        seed_sentencepiece_size=10_000, shuffle_input_sentence=False,
    )
    processor = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


def tiny_clip_text(seed: int = 0):
    """``(CLIPTokenizer, CLIPTextModel)`` at toy size: 32-d, 2 layers, ``CLIP_MAX_LENGTH`` positions.

    Shared by the image and video builders, and handy for tests that want real text-encoder features without
    building a whole pipeline.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH, projection_dim=32, hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer, CLIPTextModel(config).eval()


def _tiny_vae(channels: int):
    """A two-level ``AutoencoderKL`` (scale factor 2, 4 latent channels) for ``channels``-channel inputs."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=channels, out_channels=channels, latent_channels=4, block_out_channels=(16, 32),
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=32,
    )


# ---------------------------------------------------------------------------------------------------------------
# builders (registered in orchestrator.tiny.TINY_BUILDERS)
# ---------------------------------------------------------------------------------------------------------------
def build_stable_diffusion(path: Path, seed: int) -> None:
    """A tiny ``StableDiffusionPipeline`` (no safety checker) producing 32x32 images, saved to ``path``."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer, text_encoder = tiny_clip_text(seed)
    unet = UNet2DConditionModel(**_UNET, **_UNET_2D_BLOCKS, sample_size=16,
                                cross_attention_dim=text_encoder.config.hidden_size)
    pipeline = StableDiffusionPipeline(
        vae=_tiny_vae(3), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(**_DDIM),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)


def build_text_to_video_sd(path: Path, seed: int) -> None:
    """A tiny ``TextToVideoSDPipeline`` producing 32x32 frames, saved to ``path``."""
    from diffusers import DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel

    torch.manual_seed(seed)
    tokenizer, text_encoder = tiny_clip_text(seed)
    unet = UNet3DConditionModel(
        **_UNET, sample_size=16, cross_attention_dim=text_encoder.config.hidden_size,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    )
    pipeline = TextToVideoSDPipeline(vae=_tiny_vae(3), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                     scheduler=DDIMScheduler(**_DDIM))
    pipeline.save_pretrained(path)


def build_animatediff(path: Path, seed: int) -> None:
    """A tiny ``AnimateDiffPipeline`` (``UNetMotionModel``: motion modules with sinusoidal frame positions)
    producing 32x32 frames, saved to ``path``."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler, UNetMotionModel

    torch.manual_seed(seed)
    tokenizer, text_encoder = tiny_clip_text(seed)
    unet = UNetMotionModel(
        **{k: v for k, v in _UNET.items() if k != "attention_head_dim"}, sample_size=16,
        cross_attention_dim=text_encoder.config.hidden_size, num_attention_heads=2, motion_num_attention_heads=2,
        down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"), motion_max_seq_length=32,
    )
    pipeline = AnimateDiffPipeline(vae=_tiny_vae(3), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   motion_adapter=None, scheduler=DDIMScheduler(**_DDIM))
    pipeline.save_pretrained(path)


def build_audioldm2(path: Path, seed: int) -> None:
    """A tiny ``AudioLDM2Pipeline`` (CLAP + T5 + GPT-2 + AudioLDM2 UNet + HiFi-GAN), saved to ``path``."""
    from diffusers import AudioLDM2Pipeline, AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, DDIMScheduler
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig,
                              GPT2Config, GPT2LMHeadModel, SpeechT5HifiGan, SpeechT5HifiGanConfig, T5Config,
                              T5EncoderModel)

    torch.manual_seed(seed)
    # 1. CLAP: the text branch gives one pooled, projected vector; the audio branch only ranks waveforms.
    tokenizer = tiny_roberta_tokenizer()
    clap_text = ClapTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=CLAP_MAX_LENGTH + 2, bos_token_id=0, pad_token_id=1, eos_token_id=2,
        projection_dim=16,
    )
    clap_audio = ClapAudioConfig(
        spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=37, depths=[2, 2],
        num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=32, patch_size=2, patch_stride=2,
        patch_embeds_hidden_size=32, patch_embed_input_channels=4, projection_dim=16,
    )
    text_encoder = ClapModel(ClapConfig(text_config=clap_text.to_dict(), audio_config=clap_audio.to_dict(),
                                        projection_dim=16))
    feature_extractor = ClapFeatureExtractor()  # the 48 kHz HTSAT defaults; used only to rank waveforms

    # 2. T5 encoder: the sequence the UNet cross-attends to through ``encoder_hidden_states_1``.
    tokenizer_2 = tiny_t5_tokenizer()
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=32, d_ff=37, d_kv=8, num_heads=2,
                                             num_layers=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))

    # 3. GPT-2 "language model" that generates GPT2_NEW_TOKENS states from the projected CLAP + T5 features.
    language_model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=8, n_positions=64,
                                                 bos_token_id=0, eos_token_id=0))
    language_model.config.max_new_tokens = GPT2_NEW_TOKENS
    projection_model = AudioLDM2ProjectionModel(
        text_encoder_dim=clap_text.projection_dim, text_encoder_1_dim=text_encoder_2.config.d_model,
        langauge_model_dim=language_model.config.n_embd,  # (sic) the diffusers argument name
    )

    # 4. Latent diffusion over a 1-channel mel spectrogram, and a vocoder to waveforms.
    unet = AudioLDM2UNet2DConditionModel(
        **_UNET, **_UNET_2D_BLOCKS, sample_size=32,
        cross_attention_dim=([None, language_model.config.n_embd, text_encoder_2.config.d_model],) * 2,
    )
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=16, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        normalize_before=False,
    ))
    pipeline = AudioLDM2Pipeline(
        text_encoder=text_encoder, text_encoder_2=text_encoder_2, projection_model=projection_model,
        language_model=language_model, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        feature_extractor=feature_extractor, unet=unet, scheduler=DDIMScheduler(**_DDIM), vocoder=vocoder,
        vae=_tiny_vae(1),
    )
    pipeline.save_pretrained(path)


def build_mel_diffusion(path: Path, seed: int) -> None:
    """A tiny ``StableDiffusionPipeline`` over 1-channel log-mel spectrograms (``@tiny/mel-diffusion``) with its
    ``mel.json`` (the default :class:`~generators.audio.MelParams`: 32 mel bands x 64 frames = one second at
    16 kHz), saved to ``path`` for :class:`~generators.audio.MelDiffusionTool`."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from generators.audio import MelParams

    torch.manual_seed(seed)
    tokenizer, text_encoder = tiny_clip_text(seed)
    mel = MelParams()
    unet = UNet2DConditionModel(**_UNET, **_UNET_2D_BLOCKS, sample_size=mel.n_mels // 2,
                                cross_attention_dim=text_encoder.config.hidden_size)
    pipeline = StableDiffusionPipeline(
        vae=_tiny_vae(1), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(**_DDIM),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)
    mel.save(path)
