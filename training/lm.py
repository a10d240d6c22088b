"""Teaching a small causal LM a world's language, before the multimodal stages.

MM PT assumes an LLM that already speaks (LLaVA starts from Vicuna): the projectors only have to make it talk
about what it is shown. For the tiny systems of the tests and of tinyworld, this module trains the LLM itself on
text dialogues, laid out by the very prompt builder the assistant uses, so the token boundaries it learns are
the ones it will see. All weights train here; this is plain language modelling, not one of the MM stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from core.config import LLMConfig
from core.hub import resolve_model
from orchestrator.backbone import Backbone, PromptTurn, Text
from training.batches import length_chunks, length_grouped_order
from training.meter import metered
from training.optim import adamw

Dialogue = Sequence[tuple[str, str]]  # (role, text) pairs: ("user", ...), ("assistant", ...)


def dialogue_ids(backbone: Backbone, dialogues: Sequence[Dialogue]) -> list[list[int]]:
    """Each dialogue's token ids, laid out by the backbone's prompt builder (whole conversations, no generation
    prompt): the rows :func:`train_text_lm` trains on."""
    return [
        backbone.build_prompt(
            [PromptTurn(role, [Text(text)]) for role, text in d], add_generation_prompt=False
        ).input_ids
        for d in dialogues
    ]


def _pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(ids, labels)``, each ``(len(rows), longest)``; labels are -100 on the padding."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row)
        labels[b, : len(row)] = torch.tensor(row)
    return ids, labels


def train_text_lm(
    llm: LLMConfig | str,
    dialogues: Sequence[Dialogue],
    out: str | Path,
    *,
    steps: int = 200,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
    losses: list[float] | None = None,
    group_by_length: bool = False,
    micro_batches: int = 1,
    device: str = "cpu",
) -> Path:
    """Train every weight of ``llm`` on ``dialogues`` (next-token loss over whole conversations) and save the
    model and its tokenizer to ``out`` with ``save_pretrained`` (safetensors). Returns ``out``; each step's
    loss is appended to ``losses`` when given.

    Each step draws ``batch_size`` dialogues at random; with ``group_by_length`` the batches are cut from shuffled
    epochs instead, each batch of dialogues of similar length (:func:`~training.batches.
    length_grouped_order`), which pads far less (docs/training.md has the figures).
    ``micro_batches``: cut each drawn batch into this many runs of similar length and accumulate their gradients,
    which keeps the batches (and, up to float rounding, the steps) and drops most of the padding. ``device``: where
    the model trains (batches are drawn on the CPU, so a seed gives the same batches anywhere)."""
    cfg = llm if isinstance(llm, LLMConfig) else LLMConfig(model=llm)
    # The backbone lays the dialogues out; a separately loaded copy of the LM trains (the backbone's own copy is
    # frozen, with a gradient mask on its embeddings).
    backbone = Backbone.from_config(cfg, placeholders={}, signals={}, device="cpu", dtype=torch.float32, seed=seed)
    tokenizer = backbone.tokenizer
    model = AutoModelForCausalLM.from_pretrained(resolve_model(cfg.model, seed), dtype=torch.float32)
    rows = dialogue_ids(backbone, dialogues)
    if not rows:
        raise ValueError("train_text_lm needs at least one dialogue")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    model.to(device).requires_grad_(True)
    model.train()
    optimizer = adamw(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10) * (1 - s / steps))
    generator = torch.Generator().manual_seed(seed)
    lengths = [len(r) for r in rows]
    queue: list[int] = []
    for _ in metered(tqdm(range(steps), desc="text LM", disable=not progress, leave=False, mininterval=0.5), "text LM"):
        if group_by_length and len(rows) >= batch_size:
            if len(queue) < batch_size:  # a new epoch of length-grouped batches (a short last batch is dropped)
                queue = length_grouped_order(lengths, batch_size, generator)
            pick, queue = queue[:batch_size], queue[batch_size:]
        else:
            pick = torch.randint(len(rows), (batch_size,), generator=generator).tolist()
        predicted = sum(len(rows[i]) - 1 for i in pick)  # every token but each row's first is a target
        loss = 0.0
        for chunk in length_chunks(pick, micro_batches, length=lambda i: len(rows[i])):
            ids, labels = _pad([rows[i] for i in chunk], pad)
            ids, labels = ids.to(device), labels.to(device)
            logits = model(input_ids=ids, attention_mask=(labels != -100).long()).logits[:, :-1]  # (b, L-1, V)
            part = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
            ) / max(predicted, 1)  # this chunk's share of the batch's mean
            part.backward()
            loss += part.item()
        if losses is not None:
            losses.append(loss)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.cpu().eval()
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
