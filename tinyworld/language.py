"""The tinyworld's language model: a SentencePiece tokenizer and a small Llama trained on the world's text.

MM PT assumes an LLM that already speaks and can answer from its context (LLaVA starts from Vicuna). Here that
LLM is trained from scratch, on text-only dialogues of the world in which every attached thing is *described*
by its caption where the media will later be (``a small red circle in the top left\\nWhat colour is the
shape?`` -> ``It is red.``), generation requests are answered with the reply that will precede the signal
tokens (``Here is a picture of a red circle:``), and plain chat is answered without generating anything. MM PT
then only has to teach the input projectors to produce embeddings the LLM reads like those captions, and MM IT
to emit the signal tokens after such replies.

    python -m tinyworld.language OUT [--steps N]    # tokenizer + LLM into OUT, prints held-out answer accuracy
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from core.config import LLMConfig, PromptFormat
from orchestrator.backbone import Backbone, PromptTurn, Text
from orchestrator.tiny import sentencepiece_tokenizer, special_ids
from tinyworld import phrasing
from tinyworld import text as world_text
from tinyworld.world import THINGS
from training.lm import train_text_lm

#: the tinyworld's prompt layout: no system prompt (short sequences), Vicuna-style turns
PROMPT = PromptFormat(system="", user_prefix="USER: ", assistant_prefix="ASSISTANT: ", turn_separator="\n")

#: LlamaForCausalLM size: ~1.1 M parameters with the ~500-piece vocabulary
LLM_SIZE = dict(
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    intermediate_size=320,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
VOCAB_SIZE = 512

_PLACEHOLDER = re.compile(r"<(image|video|audio)>")


def as_text(exchange: world_text.Exchange) -> tuple[str, str]:
    """``(user, assistant)`` with attached things replaced by their captions and output placeholders dropped."""
    things = iter(exchange.media_in)
    user = _PLACEHOLDER.sub(lambda _: world_text.caption(next(things)), exchange.user)
    assistant = _PLACEHOLDER.sub("", exchange.assistant).strip()
    return user, assistant


def text_dialogues(
    n: int,
    *,
    seed: int = 0,
    free_phrasing: float = 0.0,
    honest_answers: float = 0.0,
    glossary: float = 0.0,
    reading: float = 0.0,
    shapes: dict[str, float] | None = None,
    novel: float = 0.0,
) -> list[list[tuple[str, str]]]:
    """``n`` text dialogues: 80 % mixed conversations of the world, 20 % caption copying (MM PT's layout: the
    description where the medium will be, the caption as the reply). ``free_phrasing`` / ``honest_answers``: the
    share of exchanges written freely (training split of :mod:`tinyworld.phrasing`) / with honest answers;
    ``glossary``: the share of dialogues that are dictionary entries instead (:func:`tinyworld.phrasing.glossary`,
    one of the two places held-out words are written); ``reading``: the share that are everyday sentences instead
    (:func:`tinyworld.phrasing.reading`, the other); ``shapes``: the weights of a free generation exchange's shapes
    (:data:`tinyworld.phrasing.GENERATE_SHAPES`). All 0: the canonical dialogues, draw for draw."""
    rng = random.Random(seed)
    out: list[list[tuple[str, str]]] = []
    for _ in range(n):
        if glossary and rng.random() < glossary:
            out.append(_turns(phrasing.glossary(rng)))
            continue
        if reading and rng.random() < reading:
            out.append(_turns(phrasing.reading(rng)))
            continue
        if rng.random() < 0.2:
            thing = world_text.exchange(rng, task="understand").media_in[0]
            out.append([("user", world_text.caption(thing)), ("assistant", world_text.caption(thing))])
            continue
        turns: list[tuple[str, str]] = []
        for ex in phrasing.dialogue(rng, free=free_phrasing, honest_share=honest_answers, shapes=shapes, novel=novel):
            user, assistant = as_text(ex)
            turns += [("user", user), ("assistant", assistant)]
        out.append(turns)
    return out


def _turns(exchanges: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [turn for user, reply in exchanges for turn in (("user", user), ("assistant", reply))]


def train_tokenizer(out: str | Path, vocab_size: int = VOCAB_SIZE, *, free_phrasing: bool = False):
    """A SentencePiece BPE tokenizer (byte fallback) trained on :func:`tinyworld.text.corpus`, saved to ``out``;
    with ``free_phrasing``, on the training split of the free phrasing too (:func:`tinyworld.phrasing.tokenizer_corpus`;
    held-out words are left to the pieces of training words and the byte fallback)."""
    corpus = world_text.corpus() + (phrasing.tokenizer_corpus() if free_phrasing else [])
    return sentencepiece_tokenizer(Path(out), vocab_size, corpus=corpus)


def llm_config(model: str | Path) -> LLMConfig:
    """The tinyworld LLM's config section (greedy, short replies, :data:`PROMPT`)."""
    return LLMConfig(model=str(model), max_new_tokens=40, prompt=PROMPT)


@torch.no_grad()
def answer_accuracy(model_dir: str | Path, n: int = 60, *, seed: int = 10_000) -> float:
    """Greedy accuracy of the LLM on ``n`` held-out single-turn text exchanges: an answer counts when it names
    the asked attribute's true value and no other (:func:`tinyworld.text.values_named`), a reply to a
    generation request when it restates what was asked for and names the right medium."""
    backbone = Backbone.from_config(
        llm_config(model_dir), placeholders={}, signals={}, device="cpu", dtype=torch.float32
    )
    rng = random.Random(seed)
    right = 0
    for i in range(n):
        task = ("understand", "generate")[i % 2]
        thing = THINGS[rng.choice(list(THINGS))].sample(rng)
        ex = world_text.understanding(thing, rng) if task == "understand" else world_text.generation(thing, rng)
        user, expected = as_text(ex)
        reply = _greedy(backbone, user, max_new_tokens=24)
        if task == "generate":
            medium = {"image": "picture", "video": "video", "audio": "sound"}[thing.kind]
            right += world_text.request_caption(thing) in reply and medium in reply
        elif expected[0].isupper() and expected.endswith(".") and world_text.caption(thing) in expected.lower():
            right += reply.lower().rstrip(".") == world_text.caption(thing)  # "Describe it." -> the caption
        else:
            attribute = next(a for a in thing.attributes if world_text.answer(thing, a) == expected)
            right += world_text.values_named(reply, thing.kind, attribute) == {str(getattr(thing, attribute))}
    return right / n


@torch.no_grad()
def free_probe(model_dir: str | Path, n: int = 150, *, seed: int = 20_000) -> dict[str, dict[str, float | int]]:
    """The LLM alone on the eval's freely phrased items (held-out split of :mod:`tinyworld.phrasing`), attached
    things written as their captions: greedy replies to ``n`` questions about a thing, ``n`` requests and ``n``
    honest-answer items (a missing medium or an out-of-vocabulary request). A question counts when the reply names
    the asked attribute's true value and no other (a description: the caption), a request when the reply restates
    what was asked for and names its medium, an honest item when the reply is the expected sentence.

    Returns ``{kind: {"held_word": accuracy, "held_word_n": items, "train_words": ..., "train_words_n": ...}}`` by
    whether the item says a held-out word: what the language step alone makes of words it only read (the cheap
    probe before a full retrain; docs/tinyworld.md)."""
    backbone = Backbone.from_config(
        llm_config(model_dir), placeholders={}, signals={}, device="cpu", dtype=torch.float32
    )
    rng = random.Random(seed)
    tally: dict[str, dict[bool, list[int]]] = {}
    for kind in ("understand", "generate", "honest"):
        for i in range(n):
            thing = THINGS[rng.choice(list(THINGS))].sample(rng)
            if kind == "understand":
                ex = phrasing.understanding(thing, rng, "held_out")
            elif kind == "generate":
                ex = phrasing.generation(thing, rng, "held_out")
            else:
                ex = (
                    phrasing.out_of_vocabulary(rng.choice(list(phrasing.OUT_OF_VOCABULARY)), rng, "held_out")
                    if i % 2
                    else phrasing.missing(rng.choice([*THINGS, None]), rng, "held_out")
                )
            user, expected = as_text(ex)
            reply = _greedy(backbone, user)
            if kind == "generate":
                medium = {"image": "picture", "video": "video", "audio": "sound"}[thing.kind]
                ok = world_text.request_caption(thing) in reply and medium in reply
            elif kind == "honest":
                ok = phrasing.is_expected(reply, expected)
            elif expected.lower().rstrip(".") == world_text.caption(thing):
                ok = reply.lower().rstrip(".") == world_text.caption(thing)
            else:
                attribute = next(a for a in thing.attributes if world_text.answer(thing, a) == expected)
                ok = world_text.values_named(reply, thing.kind, attribute) == {str(getattr(thing, attribute))}
            cell = tally.setdefault(kind, {True: [0, 0], False: [0, 0]})[phrasing.has_held_out_word(user)]
            cell[0] += int(ok)
            cell[1] += 1
    return {
        kind: {
            **{
                name: cells[held][0] / max(cells[held][1], 1)
                for held, name in ((True, "held_word"), (False, "train_words"))
            },
            **{f"{name}_n": cells[held][1] for held, name in ((True, "held_word"), (False, "train_words"))},
        }
        for kind, cells in tally.items()
    }


def _greedy(backbone: Backbone, user: str, max_new_tokens: int = 32) -> str:
    prompt = backbone.build_prompt([PromptTurn("user", [Text(user)])])
    ids = torch.tensor([prompt.input_ids])
    generated = backbone.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=backbone.tokenizer.eos_token_id,
        pad_token_id=backbone.tokenizer.pad_token_id,
    )
    return backbone.tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True).strip()


def train_language_model(
    out: str | Path,
    *,
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 3e-3,
    dialogues: int = 6000,
    seed: int = 0,
    progress: bool = True,
    group_by_length: bool = False,
    micro_batches: int = 1,
    device: str = "cpu",
    free_phrasing: float = 0.0,
    honest_answers: float = 0.0,
    glossary: float = 0.0,
    reading: float = 0.0,
    shapes: dict[str, float] | None = None,
    novel: float = 0.0,
) -> dict:
    """Tokenizer + randomly initialised ``LlamaForCausalLM`` of :data:`LLM_SIZE`, trained on
    :func:`text_dialogues`; saved to ``out`` (``save_pretrained``, safetensors). ``group_by_length``: batches of
    dialogues of similar length; ``micro_batches``: each batch in runs of similar length (both
    :func:`training.lm.train_text_lm`); ``device``: where it trains; ``free_phrasing``, ``honest_answers``,
    ``glossary``, ``reading``, ``shapes``: see :func:`text_dialogues`.
    Returns held-out metrics."""
    out = Path(out)
    tokenizer = train_tokenizer(out, free_phrasing=free_phrasing > 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        LlamaForCausalLM(LlamaConfig(**LLM_SIZE, **special_ids(tokenizer))).save_pretrained(out)
    losses: list[float] = []
    train_text_lm(
        llm_config(out),
        text_dialogues(
            dialogues,
            seed=seed,
            free_phrasing=free_phrasing,
            honest_answers=honest_answers,
            glossary=glossary,
            reading=reading,
            shapes=shapes,
            novel=novel,
        ),
        out,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
        losses=losses,
        group_by_length=group_by_length,
        micro_batches=micro_batches,
        device=device,
    )
    tenth = max(len(losses) // 10, 1)
    return {
        "loss_first": sum(losses[:tenth]) / tenth,
        "loss_last": sum(losses[-tenth:]) / tenth,
        "answer_accuracy": answer_accuracy(out),
        "vocab": len(tokenizer),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(train_language_model(args.out, steps=args.steps, seed=args.seed))


if __name__ == "__main__":
    main()
