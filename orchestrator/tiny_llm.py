"""Tiny random-weight causal LMs and locally trained tokenizers for the ``tiny-random`` preset and the tests.

Three backbone families, each saved with ``save_pretrained`` and loaded back by ``AutoModelForCausalLM`` /
``AutoTokenizer`` exactly as a real checkpoint is:

- ``llama``: LlamaForCausalLM + a SentencePiece BPE tokenizer (byte fallback) trained on a small corpus;
- ``qwen2``: Qwen2ForCausalLM + a byte-level BPE tokenizer (``tokenizers``);
- ``gpt2``:  GPT2LMHeadModel + a byte-level BPE tokenizer.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import torch

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


def sentencepiece_tokenizer(path: Path, vocab_size: int = 400, corpus: "list[str] | None" = None):
    """Train a SentencePiece BPE model (byte fallback; pad 0, unk 1, bos 2, eos 3) on ``corpus`` (default: the
    built-in one), wrap it as a Llama tokenizer and save that to ``path``; returns the tokenizer."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus or _corpus()), model_prefix=f"{tmp}/tokenizer", vocab_size=vocab_size,
            model_type="bpe", byte_fallback=True, character_coverage=1.0, pad_id=0, unk_id=1, bos_id=2,
            eos_id=3, hard_vocab_limit=False, minloglevel=2,
        )
        # Loading a folder that holds tokenizer.model converts it to a fast (tokenizers) tokenizer.
        tokenizer = LlamaTokenizer.from_pretrained(tmp)
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.save_pretrained(path)
    return tokenizer


def _byte_level_tokenizer(path: Path, vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|pad|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.save_pretrained(path)
    return tokenizer


def _save_causal_lm(path: Path, seed: int, tokenizer, config) -> None:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)


def special_ids(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


# hidden 64, 2 layers, 4 heads (2 KV heads), MLP 128, 2048 positions
_LLAMA_LIKE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=128, max_position_embeddings=2048)


def build_llama(path: Path, seed: int) -> None:
    from transformers import LlamaConfig

    tokenizer = sentencepiece_tokenizer(path)
    _save_causal_lm(path, seed, tokenizer,
                    LlamaConfig(**_LLAMA_LIKE, **special_ids(tokenizer), tie_word_embeddings=False))


def build_qwen2(path: Path, seed: int) -> None:
    from transformers import Qwen2Config

    tokenizer = _byte_level_tokenizer(path)
    _save_causal_lm(path, seed, tokenizer,
                    Qwen2Config(**_LLAMA_LIKE, **special_ids(tokenizer), tie_word_embeddings=True))


def build_gpt2(path: Path, seed: int) -> None:
    from transformers import GPT2Config

    tokenizer = _byte_level_tokenizer(path)
    _save_causal_lm(path, seed, tokenizer,
                    GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=2048, **special_ids(tokenizer)))
