"""Tiny random-weight components, every one of them in this file: ``@tiny/<name>`` models for the tests and the
``tiny-random`` preset.

Nothing can be downloaded at run time, so each builder creates the real transformers / diffusers class a
released checkpoint uses, at a toy size, from a config with seeded weights, trains its tokenizer here on a small
built-in corpus, and writes the folder with ``save_pretrained(path)``. :func:`core.hub.resolve_model` calls a
builder once (through :data:`core.hub.TINY_BUILDERS`) and the components then load the folder with the
ordinary ``from_pretrained(path)`` code -- exactly the code path a Hugging Face id takes.

Sizes:

- LLMs (``llama``, ``qwen2``, ``gpt2``): hidden 64, 2 layers, 4 heads (2 KV heads), MLP 128, 2048 positions;
  ``llama`` with a SentencePiece BPE tokenizer (byte fallback), the others with byte-level BPE.
- vision towers (``clip-vision``, ``siglip-vision``): 32x32 images in 8x8 patches (16 patches), width 32,
  2 layers, 2 heads; ``whisper-encoder``: width 32, 2 layers, 80 mel bins, ``max_source_positions=100`` (2 s).
- ``stable-diffusion``: CLIP text encoder 32-d / 2 layers, 77-token prompts, UNet (16, 32), VAE (16, 32) -> 32x32
  images; ``text-to-video-sd`` / ``animatediff``: the same text side, a 3-D / motion UNet -> 32x32 frames;
  ``audioldm2``: CLAP (16-d text projection), T5 encoder 32-d with 16-token prompts, GPT-2 16-d producing 8
  states, AudioLDM2 UNet (16, 32), 1-channel VAE, HiFi-GAN at 16 kHz (hop 16) -> 0.064 s clips;
  ``mel-diffusion``: a 1-channel Stable Diffusion over 32-band log-mel spectrograms.
"""

from __future__ import annotations

import io
import itertools
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import sentencepiece as spm
import torch
from diffusers import (
    AnimateDiffPipeline,
    AudioLDM2Pipeline,
    AudioLDM2ProjectionModel,
    AudioLDM2UNet2DConditionModel,
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    TextToVideoSDPipeline,
    UNet2DConditionModel,
    UNet3DConditionModel,
    UNetMotionModel,
)
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    BertTokenizer,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2VisionConfig,
    BlipImageProcessorPil,
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    CLIPImageProcessorPil,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    GPT2Config,
    GPT2LMHeadModel,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    MllamaConfig,
    MllamaForConditionalGeneration,
    MllamaImageProcessorPil,
    MllamaProcessor,
    MllamaTextConfig,
    MllamaVisionConfig,
    OPTConfig,
    PreTrainedConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    RobertaTokenizer,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)

from generators.audio import MelParams

# ===============================================================================================================
# LLMs and their tokenizers
# ===============================================================================================================
# A small built-in corpus: enough text for the tokenizers to learn common English pieces.
_COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
_THINGS = ["square", "circle", "triangle", "cat", "dog", "tree", "house", "car", "bird", "sound", "tone", "video"]
_VERBS = ["draw", "show", "paint", "play", "make", "describe", "generate", "animate", "hear", "see"]


def _corpus() -> list[str]:
    lines = [
        "A chat between a user and a multimodal assistant that can see, hear, draw, animate and play sounds.",
        "USER: What is in this picture? ASSISTANT: It is a picture of a small object.",
        "Sure, here is the image you asked for. Here is a short video. Here is a sound.",
        "The quick brown fox jumps over the lazy dog. Hello world! How are you today?",
    ]
    for colour, thing, verb in itertools.product(_COLOURS, _THINGS, _VERBS):
        lines.append(f"Please {verb} a {colour} {thing}. The {thing} is {colour}.")
    return lines


def sentencepiece_tokenizer(path: Path, vocab_size: int = 400, corpus: list[str] | None = None) -> LlamaTokenizer:
    """Train a SentencePiece BPE model (byte fallback; pad 0, unk 1, bos 2, eos 3) on ``corpus`` (default: the
    built-in one), wrap it as a Llama tokenizer and save that to ``path``; returns the tokenizer."""

    with tempfile.TemporaryDirectory() as tmp:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus or _corpus()),
            model_prefix=f"{tmp}/tokenizer",
            vocab_size=vocab_size,
            model_type="bpe",
            byte_fallback=True,
            character_coverage=1.0,
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        # Loading a folder that holds tokenizer.model converts it to a fast (tokenizers) tokenizer.
        tokenizer = LlamaTokenizer.from_pretrained(tmp)
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.save_pretrained(path)
    return tokenizer


def _byte_level_tokenizer(
    path: Path,
    vocab_size: int = 512,
    *,
    bos: str = "<|endoftext|>",
    eos: str = "<|endoftext|>",
    pad: str = "<|pad|>",
    unk: str | None = "<|endoftext|>",
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the built-in corpus, its special tokens first, saved to ``path``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(dict.fromkeys([bos, eos, pad])),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk
    )
    tokenizer.save_pretrained(path)
    return tokenizer


def _save_causal_lm(path: Path, seed: int, tokenizer: PreTrainedTokenizerBase, config: PreTrainedConfig) -> None:

    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    return dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


# hidden 64, 2 layers, 4 heads (2 KV heads), MLP 128, 2048 positions
_LLAMA_LIKE: dict[str, Any] = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    max_position_embeddings=2048,
)


def build_llama(path: Path, seed: int) -> None:

    tokenizer = sentencepiece_tokenizer(path)
    _save_causal_lm(
        path, seed, tokenizer, LlamaConfig(**_LLAMA_LIKE, **special_ids(tokenizer), tie_word_embeddings=False)
    )


def build_qwen2(path: Path, seed: int) -> None:

    tokenizer = _byte_level_tokenizer(path)
    _save_causal_lm(
        path, seed, tokenizer, Qwen2Config(**_LLAMA_LIKE, **special_ids(tokenizer), tie_word_embeddings=True)
    )


def build_gpt2(path: Path, seed: int) -> None:

    tokenizer = _byte_level_tokenizer(path)
    _save_causal_lm(
        path, seed, tokenizer, GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=2048, **special_ids(tokenizer))
    )


# ===============================================================================================================
# encoders
# ===============================================================================================================
TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8
TINY_WIDTH = 32
TINY_LAYERS = 2
TINY_HEADS = 2

_TOWER: dict[str, Any] = dict(
    image_size=TINY_IMAGE_SIZE,
    patch_size=TINY_PATCH_SIZE,
    hidden_size=TINY_WIDTH,
    intermediate_size=2 * TINY_WIDTH,
    num_hidden_layers=TINY_LAYERS,
    num_attention_heads=TINY_HEADS,
)


def _seeded_build(seed: int, make_model: Callable[[], Any]) -> Any:
    """Build a model with ``torch.manual_seed(seed)`` without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model()


def build_clip_vision(path: Path, seed: int) -> None:
    """A tiny ``CLIPVisionModel`` plus a PIL ``CLIPImageProcessor`` (resize shortest edge, centre crop)."""

    config = CLIPVisionConfig(**_TOWER, projection_dim=TINY_WIDTH)
    model = _seeded_build(seed, lambda: CLIPVisionModel(config))
    model.save_pretrained(path)
    CLIPImageProcessorPil(
        size={"shortest_edge": TINY_IMAGE_SIZE},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
    ).save_pretrained(path)


def build_siglip_vision(path: Path, seed: int) -> None:
    """A tiny ``SiglipVisionModel`` plus a PIL ``SiglipImageProcessor`` (resize to a square)."""

    config = SiglipVisionConfig(**_TOWER)
    model = _seeded_build(seed, lambda: SiglipVisionModel(config))
    model.save_pretrained(path)
    SiglipImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}).save_pretrained(path)


def build_whisper_encoder(path: Path, seed: int) -> None:
    """A tiny ``WhisperModel`` (a one-layer decoder rides along so the folder loads like a released checkpoint).

    A matching ``WhisperFeatureExtractor`` config (80 mel bins, 2 s chunks) is saved for tools that want it;
    :class:`modalities.audio.WhisperAudioEncoder` computes its mels with openai-whisper.
    """

    max_source_positions = 100  # 200 mel frames of 10 ms = 2 s of audio
    config = WhisperConfig(
        vocab_size=64,
        d_model=TINY_WIDTH,
        encoder_layers=TINY_LAYERS,
        encoder_attention_heads=TINY_HEADS,
        encoder_ffn_dim=2 * TINY_WIDTH,
        decoder_layers=1,
        decoder_attention_heads=TINY_HEADS,
        decoder_ffn_dim=2 * TINY_WIDTH,
        num_mel_bins=80,
        max_source_positions=max_source_positions,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    model = _seeded_build(seed, lambda: WhisperModel(config))
    model.save_pretrained(path)
    WhisperFeatureExtractor(
        feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=2 * max_source_positions // 100
    ).save_pretrained(path)


# ===============================================================================================================
# diffusion pipelines
# ===============================================================================================================
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

CLIP_MAX_LENGTH = 77  # as in Stable Diffusion 1.x / 2.x
CLAP_MAX_LENGTH = 16
T5_MAX_LENGTH = 16
GPT2_NEW_TOKENS = 8

# Shared toy sizes: two resolution levels everywhere, so latents are half the pixel (or mel-frame) size.
_UNET = dict(
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(16, 32),
    attention_head_dim=8,
    norm_num_groups=8,
)
_UNET_2D_BLOCKS = dict(
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")
)
_DDIM = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


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


def _train_byte_bpe(
    *,
    num_merges: int,
    special_tokens: list[str],
    word_pattern: str,
    end_of_word_suffix: str = "",
    corpus: Iterable[str] = CORPUS,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn byte-level BPE merges on ``corpus`` (default :data:`CORPUS`; lower-cased), deterministically.

    Words are the ``word_pattern`` matches; each word is a sequence of byte symbols, its last one carrying
    ``end_of_word_suffix`` (CLIP's ``</w>``). The most frequent adjacent pair is merged, ties broken by the pair
    itself, so every machine learns the same table. Returns ``(vocab, merges)`` as the transformers tokenizer
    classes take them: special tokens first, then every byte symbol (bare and suffixed), then the merges.
    """

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
                if word[i : i + 2] == best:
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


def tiny_clip_tokenizer(
    model_max_length: int = CLIP_MAX_LENGTH, *, corpus: Iterable[str] = CORPUS, num_merges: int = 150
) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` (``<|startoftext|>`` = 0, ``<|endoftext|>`` = 1) with a vocabulary trained here on
    ``corpus`` (default: :data:`CORPUS`) with ``num_merges`` BPE merges."""

    vocab, merges = _train_byte_bpe(
        num_merges=num_merges,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        word_pattern=r"[a-z]+|[0-9]|[^\sa-z0-9]+",
        end_of_word_suffix="</w>",
        corpus=corpus,
    )
    # merges: the annotation says list[str], but the tokenizers BPE it builds takes (a, b) pairs, as given here
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)  # type: ignore[arg-type]


def tiny_roberta_tokenizer(model_max_length: int = CLAP_MAX_LENGTH) -> RobertaTokenizer:
    """A ``RobertaTokenizer`` (``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2) for the CLAP text branch."""

    # GPT-2's split: a word keeps its leading space (which becomes the byte symbol "\u0120").
    vocab, merges = _train_byte_bpe(
        num_merges=150,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        word_pattern=r" ?[a-z]+| ?[0-9]+| ?[^\sa-z0-9]+|\s+",
    )
    # merges as (a, b) pairs, which the tokenizers BPE takes (the annotation says list[str])
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)  # type: ignore[arg-type]


def tiny_t5_tokenizer(model_max_length: int = T5_MAX_LENGTH) -> T5Tokenizer:
    """A ``T5Tokenizer`` from a unigram SentencePiece model trained here (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2)."""

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=proto,
        vocab_size=120,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
        seed_sentencepiece_size=10_000,
        shuffle_input_sentence=False,
    )
    processor = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


def tiny_clip_text(seed: int = 0) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """``(CLIPTokenizer, CLIPTextModel)`` at toy size: 32-d, 2 layers, ``CLIP_MAX_LENGTH`` positions.

    Shared by the image and video builders, and handy for tests that want real text-encoder features without
    building a whole pipeline.
    """

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=32,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer, CLIPTextModel(config).eval()


def _tiny_vae(channels: int) -> Any:  # an AutoencoderKL (see the note on diffusers types above)
    """A two-level ``AutoencoderKL`` (scale factor 2, 4 latent channels) for ``channels``-channel inputs."""

    return AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        latent_channels=4,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=32,
    )


# ---------------------------------------------------------------------------------------------------------------
# builders (registered in core.hub.TINY_BUILDERS)
# ---------------------------------------------------------------------------------------------------------------
# Under a type checker the diffusers classes are its placeholder "dummy objects" (diffusers/__init__.py imports
# ``utils.dummy_*`` in its TYPE_CHECKING block), which declare no methods: the pipelines are ``Any`` here.
def build_stable_diffusion(path: Path, seed: int) -> None:
    """A tiny ``StableDiffusionPipeline`` (no safety checker) producing 32x32 images, saved to ``path``."""

    torch.manual_seed(seed)
    tokenizer, text_encoder = tiny_clip_text(seed)
    unet = UNet2DConditionModel(
        **_UNET, **_UNET_2D_BLOCKS, sample_size=16, cross_attention_dim=text_encoder.config.hidden_size
    )
    pipeline: Any = StableDiffusionPipeline(
        vae=_tiny_vae(3),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**_DDIM),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)


def build_text_to_video_sd(path: Path, seed: int) -> None:
    """A tiny ``TextToVideoSDPipeline`` producing 32x32 frames, saved to ``path``."""

    torch.manual_seed(seed)
    tokenizer, text_encoder = tiny_clip_text(seed)
    unet = UNet3DConditionModel(
        **_UNET,
        sample_size=16,
        cross_attention_dim=text_encoder.config.hidden_size,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    )
    pipeline: Any = TextToVideoSDPipeline(
        vae=_tiny_vae(3), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(**_DDIM)
    )
    pipeline.save_pretrained(path)


def build_animatediff(path: Path, seed: int) -> None:
    """A tiny ``AnimateDiffPipeline`` (``UNetMotionModel``: motion modules with sinusoidal frame positions)
    producing 32x32 frames, saved to ``path``."""

    torch.manual_seed(seed)
    tokenizer, text_encoder = tiny_clip_text(seed)
    unet = UNetMotionModel(
        **{k: v for k, v in _UNET.items() if k != "attention_head_dim"},
        sample_size=16,
        cross_attention_dim=text_encoder.config.hidden_size,
        num_attention_heads=2,
        motion_num_attention_heads=2,
        down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"),
        motion_max_seq_length=32,
    )
    pipeline: Any = AnimateDiffPipeline(
        vae=_tiny_vae(3),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        motion_adapter=None,
        scheduler=DDIMScheduler(**_DDIM),
    )
    pipeline.save_pretrained(path)


def build_audioldm2(path: Path, seed: int) -> None:
    """A tiny ``AudioLDM2Pipeline`` (CLAP + T5 + GPT-2 + AudioLDM2 UNet + HiFi-GAN), saved to ``path``."""

    torch.manual_seed(seed)
    # 1. CLAP: the text branch gives one pooled, projected vector; the audio branch only ranks waveforms.
    tokenizer = tiny_roberta_tokenizer()
    clap_text = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CLAP_MAX_LENGTH + 2,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        projection_dim=16,
    )
    # A transformers config types as a dataclass of its own fields, but its __init__ also takes (and keeps, in
    # config.json) keys it has no field for: this one and the T5Config below carry a ``type: ignore[call-arg]``.
    clap_audio = ClapAudioConfig(
        spec_size=64,
        window_size=4,
        num_mel_bins=64,
        intermediate_size=37,  # type: ignore[call-arg]
        depths=[2, 2],
        num_attention_heads=[2, 2],
        num_hidden_layers=2,
        hidden_size=32,
        patch_size=2,
        patch_stride=2,
        patch_embeds_hidden_size=32,
        patch_embed_input_channels=4,
        projection_dim=16,
    )
    text_encoder = ClapModel(
        ClapConfig(text_config=clap_text.to_dict(), audio_config=clap_audio.to_dict(), projection_dim=16)
    )
    feature_extractor = ClapFeatureExtractor()  # the 48 kHz HTSAT defaults; used only to rank waveforms

    # 2. T5 encoder: the sequence the UNet cross-attends to through ``encoder_hidden_states_1``.
    tokenizer_2 = tiny_t5_tokenizer()
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_ff=37,
            d_kv=8,
            num_heads=2,
            num_layers=2,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,  # type: ignore[call-arg]
        )
    )

    # 3. GPT-2 "language model" that generates GPT2_NEW_TOKENS states from the projected CLAP + T5 features.
    language_model = GPT2LMHeadModel(
        GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=8, n_positions=64, bos_token_id=0, eos_token_id=0)
    )
    language_model.config.max_new_tokens = GPT2_NEW_TOKENS
    projection_model = AudioLDM2ProjectionModel(
        text_encoder_dim=clap_text.projection_dim,
        text_encoder_1_dim=text_encoder_2.config.d_model,
        langauge_model_dim=language_model.config.n_embd,  # (sic) the diffusers argument name
    )

    # 4. Latent diffusion over a 1-channel mel spectrogram, and a vocoder to waveforms.
    unet = AudioLDM2UNet2DConditionModel(
        **_UNET,
        **_UNET_2D_BLOCKS,
        sample_size=32,
        cross_attention_dim=([None, language_model.config.n_embd, text_encoder_2.config.d_model],) * 2,
    )
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=16,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[4, 4],
            upsample_kernel_sizes=[8, 8],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
        )
    )
    pipeline: Any = AudioLDM2Pipeline(
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        projection_model=projection_model,
        language_model=language_model,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=feature_extractor,
        unet=unet,
        scheduler=DDIMScheduler(**_DDIM),
        vocoder=vocoder,
        vae=_tiny_vae(1),
    )
    pipeline.save_pretrained(path)


def build_mel_diffusion(path: Path, seed: int) -> None:
    """A tiny ``StableDiffusionPipeline`` over 1-channel log-mel spectrograms (``@tiny/mel-diffusion``) with its
    ``mel.json`` (the default :class:`~generators.audio.MelParams`: 32 mel bands x 64 frames = one second at
    16 kHz), saved to ``path`` for :class:`~generators.audio.MelDiffusionTool`."""

    torch.manual_seed(seed)
    tokenizer, text_encoder = tiny_clip_text(seed)
    mel = MelParams()
    unet = UNet2DConditionModel(
        **_UNET, **_UNET_2D_BLOCKS, sample_size=mel.n_mels // 2, cross_attention_dim=text_encoder.config.hidden_size
    )
    pipeline: Any = StableDiffusionPipeline(
        vae=_tiny_vae(1),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**_DDIM),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)
    mel.save(path)


# ===============================================================================================================
# published MM-LLM checkpoints (peers): the Hugging Face classes at toy size, each saved with its processor and chat
# template exactly as a released checkpoint folder is, for orchestrator.peers to import
# ===============================================================================================================
#: LLaVA-1.5's prompt layout (``USER: <image>\n... ASSISTANT:``): images first, then the text, per turn
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% for part in message['content'] if part['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %} {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _peer_llama_tokenizer(path: Path, extra: list[str]) -> Any:
    """The tiny Llama SentencePiece tokenizer with ``extra`` special tokens (an image token ...), saved to ``path``."""
    tokenizer = sentencepiece_tokenizer(path)
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    tokenizer.save_pretrained(path)
    return tokenizer


def _random_init(model: Any, std: float = 0.2) -> Any:
    """Wider random weights than Hugging Face's 0.02 init, so a tiny model's logits (and greedy tokens) differ from
    position to position and image to image; norms and gates at non-trivial values too. Returns ``model``."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, std)
            elif "gate" in name:  # tanh gates: open, so the cross-attention changes the logits
                param.uniform_(0.5, 1.0)
            else:
                param.add_(0.05 * torch.randn_like(param))
    return model


def build_llava(path: Path, seed: int) -> None:
    """A tiny ``LlavaForConditionalGeneration``: the tiny CLIP tower (16 patches), a Llama LM, ``<image>`` token,
    ``vision_feature_layer=-2`` and the ``default`` strategy (CLS dropped), with its ``LlavaProcessor``."""
    tokenizer = _peer_llama_tokenizer(path, ["<image>"])
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_TOWER).to_dict(),
        text_config=LlamaConfig(**_LLAMA_LIKE, **special_ids(tokenizer), tie_word_embeddings=False).to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = _seeded_build(seed, lambda: _random_init(LlavaForConditionalGeneration(config)))
    model.save_pretrained(path)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    )
    LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=TINY_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    ).save_pretrained(path)


#: Llama 3's prompt layout with Llama 3.2 Vision's image token: headers, the text, ``<|eot_id|>`` after each turn
MLLAMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|image|>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_MLLAMA_SPECIALS = [
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|python_tag|>",
    "<|image|>",  # the last id: one past the LM head's vocabulary, as in the released checkpoints
]


def _llama3_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with Llama 3's special tokens, ``<|image|>`` the last id, saved to ``path``."""
    tokenizer = _byte_level_tokenizer(
        path, 384, bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>", unk=None
    )
    tokenizer.add_special_tokens({"additional_special_tokens": _MLLAMA_SPECIALS})
    tokenizer.save_pretrained(path)
    return tokenizer


def build_mllama(path: Path, seed: int) -> None:
    """A tiny ``MllamaForConditionalGeneration``: 32-pixel tiles (up to 4 per image) of 8-pixel patches, a 5-layer
    text stack with cross-attention layers at 1 and 3, Llama 3 rope scaling, with its ``MllamaProcessor``."""
    tokenizer = _llama3_tokenizer(path)
    image_id = int(cast(int, tokenizer.convert_tokens_to_ids("<|image|>")))
    vision = MllamaVisionConfig(
        hidden_size=TINY_WIDTH,
        num_hidden_layers=2,
        num_global_layers=1,
        attention_heads=TINY_HEADS,
        intermediate_size=2 * TINY_WIDTH,
        vision_output_dim=2 * TINY_WIDTH,  # the last layer + one intermediate layer
        intermediate_layers_indices=[0],
        image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH_SIZE,
        max_num_tiles=4,
    )
    text = MllamaTextConfig(
        vocab_size=image_id,  # the head predicts every id below the image token
        hidden_size=64,
        num_hidden_layers=5,
        cross_attention_layers=[1, 3],
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=2048,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 1024,
        },
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = MllamaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=image_id)
    model = _seeded_build(seed, lambda: _random_init(MllamaForConditionalGeneration(config)))
    model.save_pretrained(path)
    image_processor = MllamaImageProcessorPil(
        size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}, max_image_tiles=4
    )
    MllamaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=MLLAMA_TEMPLATE
    ).save_pretrained(path)


def _opt_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """OPT's kind of tokenizer: byte-level BPE that writes ``</s>`` (its BOS) before every text, plus ``<image>``."""
    tokenizer = _byte_level_tokenizer(path, 384, bos="</s>", eos="</s>", pad="<pad>", unk="</s>")
    bos = tokenizer.convert_tokens_to_ids("</s>")
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A $B", special_tokens=[("</s>", bos)]
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.save_pretrained(path)
    return tokenizer


def _bert_tokenizer(path: Path) -> BertTokenizer:
    """A WordPiece tokenizer with BERT's specials (``[CLS] text [SEP]``), as InstructBLIP's Q-Former reads."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        _corpus(), trainer=trainers.WordPieceTrainer(vocab_size=256, special_tokens=specials, show_progress=False)
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = BertTokenizer(tokenizer_object=tok)
    tokenizer.save_pretrained(path)
    return tokenizer


def _qformer_config(**extra: Any) -> dict[str, Any]:
    return dict(
        hidden_size=TINY_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=TINY_HEADS,
        intermediate_size=2 * TINY_WIDTH,
        encoder_hidden_size=TINY_WIDTH,
        cross_attention_frequency=1,
        **extra,
    )


def build_blip2(path: Path, seed: int) -> None:
    """A tiny ``Blip2ForConditionalGeneration``: the tiny ViT, a 2-layer Q-Former with 4 queries, an OPT LM, with
    its ``Blip2Processor`` (image tokens before the BOS)."""
    tokenizer = _opt_tokenizer(path)
    text = OPTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        ffn_dim=128,
        num_attention_heads=4,
        word_embed_proj_dim=64,
        max_position_embeddings=2048,
        **special_ids(tokenizer),
    )
    config = Blip2Config(
        vision_config=Blip2VisionConfig(**_TOWER).to_dict(),
        qformer_config=_qformer_config(),
        text_config=text.to_dict(),
        num_query_tokens=4,
        image_token_index=int(cast(int, tokenizer.convert_tokens_to_ids("<image>"))),
    )
    model = _seeded_build(seed, lambda: _random_init(Blip2ForConditionalGeneration(config)))
    model.save_pretrained(path)
    image_processor = BlipImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=4).save_pretrained(path)


def build_instructblip(path: Path, seed: int) -> None:
    """A tiny ``InstructBlipForConditionalGeneration``: the tiny ViT, an instruction-aware 2-layer Q-Former with 4
    queries and its own BERT-style tokenizer, a Llama (Vicuna-like) LM, with its ``InstructBlipProcessor``."""
    tokenizer = _peer_llama_tokenizer(path, ["<image>"])
    with tempfile.TemporaryDirectory() as tmp:
        qformer_tokenizer = _bert_tokenizer(Path(tmp))
    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(**_TOWER).to_dict(),
        qformer_config=_qformer_config(vocab_size=len(qformer_tokenizer), pad_token_id=0),
        text_config=LlamaConfig(**_LLAMA_LIKE, **special_ids(tokenizer), tie_word_embeddings=False).to_dict(),
        num_query_tokens=4,
        image_token_index=int(cast(int, tokenizer.convert_tokens_to_ids("<image>"))),
    )
    model = _seeded_build(seed, lambda: _random_init(InstructBlipForConditionalGeneration(config)))
    model.save_pretrained(path)
    image_processor = BlipImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    InstructBlipProcessor(
        image_processor=image_processor, tokenizer=tokenizer, qformer_tokenizer=qformer_tokenizer, num_query_tokens=4
    ).save_pretrained(path)


def build_llava_next(path: Path, seed: int) -> None:
    """A tiny ``LlavaNextForConditionalGeneration``: the tiny CLIP tower over 32-pixel tiles, grid resolutions up to
    64x64 (so up to 1 + 4 tiles), a Llama LM, with its ``LlavaNextProcessor``."""
    tokenizer = _peer_llama_tokenizer(path, ["<image>"])
    pinpoints = [[32, 64], [64, 32], [64, 64], [32, 96]]
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**_TOWER).to_dict(),
        text_config=LlamaConfig(**_LLAMA_LIKE, **special_ids(tokenizer), tie_word_embeddings=False).to_dict(),
        image_token_index=int(cast(int, tokenizer.convert_tokens_to_ids("<image>"))),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = _seeded_build(seed, lambda: _random_init(LlavaNextForConditionalGeneration(config)))
    model.save_pretrained(path)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": TINY_IMAGE_SIZE},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        image_grid_pinpoints=pinpoints,
    )
    LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=TINY_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    ).save_pretrained(path)
