"""From validated samples to training batches: token ids, labels, cached features and alignment targets.

Each :class:`~training.data.Sample` is laid out once with the backbone's own prompt builder (the same
template the assistant uses at inference), so training and serving never disagree about the format:

- a :class:`~training.data.MediaSeg` becomes its modality's placeholder, expanded to as many slots as
  the input projector emits; its features come from the encoder feature cache by the file's content hash;
- an :class:`~training.data.OutputSeg` becomes the generator's ``k`` signal tokens, and its caption's
  text-encoder features (from the target cache) are the output projector's alignment target;
- labels are the assistant tokens (text, signal tokens and the closing EOS); everything else is ``-100``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from orchestrator.backbone import Backbone, Media, PromptTurn, Signal, Text
from training.data import MediaSeg, OutputSeg, Sample, TextSeg

IGNORE = -100


@dataclass
class Encoded:
    """One sample, tokenised: ids and labels, the media it consumes and the outputs it produces, in prompt order."""

    id: str
    input_ids: list[int]
    labels: list[int]
    media: list[tuple[str, str]] = field(default_factory=list)  # (modality, content hash), in order of appearance
    outputs: list[tuple[str, str, int]] = field(default_factory=list)  # (generator, caption hash, first position)
    targets: list[str | None] = field(default_factory=list)  # per output: content hash of its target file, if any
    instructions: list[str] = field(default_factory=list)  # per medium: the text of the turn that shows it


@dataclass
class Batch:
    """Tensors for one step.

    input_ids, attention_mask, labels: ``(B, L)``, right-padded.
    features: modality -> ``(N, G, T, D_enc)`` cached encoder features of the batch's items, in the order their
        placeholders appear (row-major over the batch), which is the order ``masked_scatter`` fills slots in.
    outputs: generator -> ``(rows, first positions)``: where each signal group starts.
    targets: generator -> ``{conditioning name: (N_out, L, D)}`` alignment targets, same order as ``outputs``.
    latents: generator -> ``(which outputs, (N_t, ...) clean latents)`` of the outputs that have a target file
        (only when the latent-diffusion loss is on).
    noise_seed: seeds the diffusion loss's noise and timesteps (per step and process: resumable).
    instructions: modality -> the text of the turn showing each item, same order as ``features`` (what an
        instruction-aware projector, InstructBLIP's Q-Former, reads).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    features: dict[str, torch.Tensor]
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    targets: dict[str, dict[str, torch.Tensor]]
    latents: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    noise_seed: int = 0
    instructions: dict[str, list[str]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            {m: f.to(device) for m, f in self.features.items()},
            {g: (rows.to(device), pos.to(device)) for g, (rows, pos) in self.outputs.items()},
            {g: {n: t.to(device) for n, t in spec.items()} for g, spec in self.targets.items()},
            {g: (which.to(device), lat.to(device)) for g, (which, lat) in self.latents.items()},
            self.noise_seed,
            self.instructions,
        )


def encode_sample(
    sample: Sample,
    backbone: Backbone,
    slots: dict[str, int],
    media_hashes: dict,
    caption_hash,
    target_hashes: dict | None = None,
) -> Encoded:
    """Lay ``sample`` out as the assistant would see it.

    Args:
        slots: modality -> placeholder slots per item (``MMSystem.slots``).
        media_hashes: file path -> content hash.
        caption_hash: caption -> content hash.
        target_hashes: target file path -> content hash (outputs whose target is not in it get ``None``).
    """
    target_hashes = target_hashes or {}
    output_targets: list[str | None] = []
    turns: list[PromptTurn] = []
    media: list[tuple[str, str]] = []
    captions: list[tuple[str, str]] = []
    instructions: list[str] = []
    for role, segs in sample.turns:
        parts = []
        turn_text = "".join(seg.text for seg in segs if isinstance(seg, TextSeg))
        for seg in segs:
            if isinstance(seg, TextSeg):
                parts.append(Text(seg.text))
            elif isinstance(seg, MediaSeg):
                parts.append(Media(seg.modality, slots[seg.modality]))
                media.append((seg.modality, media_hashes[sample.media[seg.modality][seg.index]]))
                instructions.append(turn_text)
            elif isinstance(seg, OutputSeg):
                parts.append(Signal(seg.modality))
                captions.append((seg.modality, caption_hash(seg.caption)))
                output_targets.append(target_hashes.get(seg.target) if seg.target is not None else None)
        turns.append(PromptTurn(role, parts))
    prompt = backbone.build_prompt(turns, add_generation_prompt=False)
    ids = prompt.input_ids
    labels = [t if keep else IGNORE for t, keep in zip(ids, prompt.assistant_mask)]

    # Signal groups appear in the prompt in the order of their OutputSegs; user text cannot contain signal ids.
    starts = {backbone.signal_ids[g][0]: g for g in backbone.signal_ids}
    positions = [(starts[t], i) for i, t in enumerate(ids) if t in starts]
    outputs = []
    for (gen, digest), (found, pos) in zip(captions, positions, strict=True):
        assert gen == found, (gen, found)
        outputs.append((gen, digest, pos))
    return Encoded(sample.id, ids, labels, media, outputs, output_targets, instructions)


def collate(items: list[Encoded], pad_id: int, features, targets, latents=None, noise_seed: int = 0) -> Batch:
    """Pad ``items`` into a :class:`Batch`, reading features and targets from the caches.

    Args:
        features: modality -> :class:`~training.cache.FeatureCache` of encoder outputs.
        targets: generator -> conditioning name -> :class:`~training.cache.FeatureCache`.
        latents: generator -> cache of target latents (``None``: no latent-diffusion loss).
    """
    length = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), length), dtype=torch.long)
    media: dict[str, list[str]] = {}
    instructions: dict[str, list[str]] = {}
    outputs: dict[str, tuple[list[int], list[int], list[str]]] = {}
    wanted: dict[str, tuple[list[int], list[str]]] = {}  # generator -> (output index, target hash)
    for row, e in enumerate(items):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
        for k, (modality, digest) in enumerate(e.media):
            media.setdefault(modality, []).append(digest)
            instructions.setdefault(modality, []).append(e.instructions[k] if k < len(e.instructions) else "")
        for (gen, digest, pos), target in zip(e.outputs, e.targets or [None] * len(e.outputs)):
            rows, starts, digests = outputs.setdefault(gen, ([], [], []))
            if latents is not None and target is not None and gen in latents:
                which, found = wanted.setdefault(gen, ([], []))
                which.append(len(rows))
                found.append(target)
            rows.append(row)
            starts.append(pos)
            digests.append(digest)
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        labels=labels,
        features={m: features[m].stack(d) for m, d in media.items()},
        outputs={g: (torch.tensor(r), torch.tensor(p)) for g, (r, p, _) in outputs.items()},
        targets={g: {name: cache.stack(d) for name, cache in targets[g].items()} for g, (_, _, d) in outputs.items()},
        latents={g: (torch.tensor(which), latents[g].stack(d)) for g, (which, d) in wanted.items()},
        noise_seed=noise_seed,
        instructions=instructions,
    )


@dataclass(frozen=True)
class Share:
    """The denominators of a whole step's mean losses, for a step cut into micro-batches: its labelled tokens and
    its outputs (and target latents) per generator. Each micro-batch divides its summed losses by these, so the
    micro-batches' losses and gradients add up to the whole batch's."""

    tokens: int
    outputs: dict[str, int]
    latents: dict[str, int]

    @classmethod
    def of(cls, items: Sequence[Encoded], latents=None) -> Share:
        outputs: dict[str, int] = {}
        wanted: dict[str, int] = {}
        for e in items:
            for (gen, _, _), target in zip(e.outputs, e.targets or [None] * len(e.outputs)):
                outputs[gen] = outputs.get(gen, 0) + 1
                if latents is not None and target is not None and gen in latents:
                    wanted[gen] = wanted.get(gen, 0) + 1
        # the LM loss predicts labels[1:] of each row (position t's logits predict the label at t + 1)
        tokens = sum(sum(t != IGNORE for t in e.labels[1:]) for e in items)
        return cls(tokens, outputs, wanted)


def length_chunks(items: Sequence, parts: int, length=lambda e: len(e.input_ids)) -> list[list]:
    """``items`` sorted by ``length`` and cut into ``parts`` consecutive runs of near-equal size (fewer when there
    are fewer items): micro-batches of similar length, which pad far less than the batch they came from. One part:
    the items as they are, in their order (a one-pass step is unchanged)."""
    parts = max(1, min(parts, len(items)))
    if parts == 1:
        return [list(items)]
    ranked = sorted(items, key=length)
    bounds = [round(i * len(ranked) / parts) for i in range(parts + 1)]
    return [ranked[a:b] for a, b in zip(bounds, bounds[1:])]


def length_grouped_order(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator, megabatch: int = 50
) -> list[int]:
    """A random order of ``range(len(lengths))`` whose consecutive runs of ``batch_size`` have similar lengths, so
    that right-padding wastes little (Hugging Face's ``group_by_length``).

    Shuffle; cut into mega-batches of ``megabatch * batch_size``; sort each by length, longest first; cut those
    into batches; shuffle the order of the batches (a trailing short batch stays last). Every index appears once,
    and the order depends only on ``generator``'s state."""
    n = len(lengths)
    order = torch.randperm(n, generator=generator).tolist()
    size = max(1, megabatch) * batch_size
    batches: list[list[int]] = []
    for start in range(0, n, size):
        group = sorted(order[start : start + size], key=lambda i: -lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    rest = [i for b in batches if len(b) < batch_size for i in b]
    shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return [i for b in shuffled for i in b] + rest


def epoch_order(lengths: Sequence[int], batch_size: int, seed: int, grouped: bool) -> list[int]:
    """One epoch's sample order, seeded by ``seed``: :func:`length_grouped_order` when ``grouped``, else a plain
    random permutation (the Trainer's order; its consecutive runs of ``batch_size`` are the batches)."""
    shuffle = torch.Generator().manual_seed(seed)
    if grouped:
        return length_grouped_order(lengths, batch_size, shuffle)
    return torch.randperm(len(lengths), generator=shuffle).tolist()
