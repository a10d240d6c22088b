"""How projected media features reach the LLM: the two families of MM-LLM, as registry entries (DESIGN §1).

* ``splice`` (:class:`Splice`; LLaVA, BLIP-2, NExT-GPT) -- the *unified embedding* design: each medium's projected
  tokens replace its placeholder slots in the input sequence, and the frozen LLM reads them as if they were words.
* ``cross_attention`` (:class:`CrossAttention`; Flamingo, Llama 3.2 Vision) -- the *cross-modality attention*
  design: each medium is a single placeholder token in the text, marking where it was shown, and gated
  cross-attention blocks inserted into the frozen LLM before chosen layers let every text token attend to the
  media item that most recently precedes it. Tokens before any medium are left exactly as the frozen LLM computes
  them. Each block's attention and feed-forward pass through ``tanh`` gates that start at 0, so an untrained
  system is the frozen LLM to the last logit.

:class:`MMSystem <orchestrator.system.MMSystem>` holds one fusion and calls it in its one composite forward::

    with fusion.inputs(backbone, input_ids, media) as inputs_embeds:   # splice, or attach the media
        llm(inputs_embeds=inputs_embeds, ...)                          # a forward, or a whole decoding loop

The cross-attention blocks read the media through a context variable set by :meth:`Fusion.inputs`, from forward
pre-hooks on the LLM's decoder layers: the frozen LLM's modules, its weights and its key/value cache are untouched.
The media keys and values of each block are computed once per ``inputs`` context -- once per turn -- and reused
at every decoding step.

The blocks come in two registered kinds (:data:`BLOCKS`), one structure with different parts: ``flamingo``
(LayerNorm, GELU feed-forward; a token with no medium before it is left alone) and ``mllama`` (RMSNorm, RMS-normed
queries and keys per head, SwiGLU feed-forward, grouped key/value heads). ``mllama`` also reproduces how the
Hugging Face ``MllamaForConditionalGeneration`` treats a token with no image before it *when the turn has an
image*: its attention spreads over every media token of its sequence (the mask row is all zeros there) and only
its feed-forward output is zeroed -- so imported Llama 3.2 Vision checkpoints give Hugging Face's own logits.
"""

from __future__ import annotations

import contextvars
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from core.config import FusionConfig
from core.errors import ConfigError, PromptError
from core.registry import Registry
from orchestrator.backbone import Backbone

FUSIONS: Registry[Any] = Registry(
    "fusion",
    "mmgraph.fusions",
    {"splice": "orchestrator.fusion:Splice", "cross_attention": "orchestrator.fusion:CrossAttention"},
)
BLOCKS: Registry[Any] = Registry(
    "cross-attention block",
    "mmgraph.blocks",
    {"flamingo": "orchestrator.fusion:FlamingoBlock", "mllama": "orchestrator.fusion:MllamaBlock"},
)


@dataclass
class Projected:
    """One modality's media in a batch, in LLM space.

    Attributes:
        tokens: (N, M, D_llm) the projected tokens of its N items, in order of appearance.
        mask: (N, M) bool, True where a token may be attended to (False: padding, e.g. an unused image tile), or
            None when every token is real.
    """

    tokens: torch.Tensor
    mask: torch.Tensor | None = None


class Fusion(nn.Module, ABC):
    """How projected media reach the LLM; built by :func:`build_fusion` from the system's FusionConfig."""

    #: whether decoding must run the LLM eagerly (no CUDA graphs, no ``torch.compile``): hooks read per-turn state
    eager_only: ClassVar[bool] = False

    def __init__(self, cfg: FusionConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg

    @abstractmethod
    def slots(self, projected_tokens: int) -> int:
        """Placeholder positions one medium occupies in the prompt, given how many tokens its projector emits."""

    @abstractmethod
    def prepare(
        self, backbone: Backbone, input_ids: torch.Tensor, media: dict[str, Projected]
    ) -> tuple[torch.Tensor, Any]:
        """The LLM's (B, L, D) input embeddings for ``input_ids`` with ``media``, and the state the LLM must see while
        it reads them (:meth:`active`; None when there is none)."""

    @contextmanager
    def active(self, state: Any) -> Iterator[None]:
        """While open, the LLM's forwards see ``state`` (a :meth:`prepare` or :meth:`batched` state)."""
        yield

    def batched(self, states: Sequence[Any]) -> Any:
        """One state for the decoding steps of a batch whose rows were prepared with ``states`` (a row per state;
        each row's new tokens read what its prompt's last token read). None when there is nothing to see."""
        return None

    @contextmanager
    def inputs(
        self, backbone: Backbone, input_ids: torch.Tensor, media: dict[str, Projected]
    ) -> Iterator[torch.Tensor]:
        """:meth:`prepare` and :meth:`active` in one: yields the input embeddings, with ``media`` reaching the LLM
        this fusion's way while the context is open (one forward, or a whole decoding loop)."""
        embeds, state = self.prepare(backbone, input_ids, media)
        with self.active(state):
            yield embeds


class Splice(Fusion):
    """Projected tokens replace the placeholder slots (``masked_scatter``); the LLM is untouched."""

    def slots(self, projected_tokens: int) -> int:
        return projected_tokens

    def prepare(
        self, backbone: Backbone, input_ids: torch.Tensor, media: dict[str, Projected]
    ) -> tuple[torch.Tensor, Any]:
        # every item's real tokens, item after item: (N*M, D), or fewer where items differ in length
        real = {m: p.tokens.flatten(0, 1) if p.mask is None else p.tokens[p.mask] for m, p in media.items()}
        return backbone.embed(input_ids, real), None


# ---------------------------------------------------------------------------------------------------------------
# Cross-attention
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class MediaContext:
    """The media of one batch as the cross-attention blocks read them, for one :meth:`CrossAttention.inputs`.

    Attributes:
        tokens: (N, T, D) every medium's projected tokens, all modalities, in order of position (row-major over the
            batch), padded to the longest.
        valid: (N, T) tokens a text token may attend to.
        present: (N, T) tokens that exist (not padding added here to stack media of different lengths).
        owner: (N,) the batch row each medium belongs to.
        rows: (B, L) for each position of the prompt, the medium its token attends to (-1: none yet).
        first: (N,) the first medium of the run of adjacent placeholders each medium ends (itself when alone): a block
            that reads whole runs (Llama 3.2 Vision, several images shown together) lets a token read them all.
    """

    tokens: torch.Tensor
    valid: torch.Tensor
    present: torch.Tensor
    owner: torch.Tensor
    rows: torch.Tensor
    first: torch.Tensor
    seen: int = 0  # positions the LLM has read so far (prompt, then one per decoding step)
    current: torch.Tensor | None = None  # (B, q) rows of the forward in progress
    kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # per block, once per context
    kv_computations: int = 0  # how many times a block computed its media keys/values (tests read it)

    def begin_forward(self, length: int) -> None:
        """The LLM starts a forward over ``length`` new positions: fix which medium each of them attends to."""
        last = self.rows.shape[1] - 1
        positions = torch.arange(self.seen, self.seen + length, device=self.rows.device).clamp(max=last)
        self.current = self.rows[:, positions]  # (B, q): a token past the prompt sees what the prompt's last saw
        self.seen += length


_ACTIVE: contextvars.ContextVar[MediaContext | None] = contextvars.ContextVar("mmgraph_media", default=None)


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (as Llama's), scaled by a learned weight."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``, Llama's feed-forward."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GatedCrossAttentionBlock(nn.Module):
    """Text hidden states attend to media tokens, then a feed-forward; each added to the residual stream through a
    ``tanh`` gate that starts at 0.

    ``h = h + tanh(attn_gate) * CrossAttn(norm(h), media)``; ``h = h + tanh(ffn_gate) * FFN(norm(h))``.
    Subclasses choose the norms, the feed-forward, whether queries and keys are RMS-normed per head, and what a
    token with no medium before it does.
    """

    qk_norm: ClassVar[bool] = False
    #: a token reads the medium most recently before it, or (``True``) the whole run of adjacent placeholders that
    #: ends there (Llama 3.2 Vision's processor: images shown together are read together)
    reads_runs: ClassVar[bool] = False
    #: a token with no medium before it: ``skip`` -- left alone (attention and feed-forward zeroed); ``spread`` --
    #: attends to every media token of its sequence and only its feed-forward is zeroed (Hugging Face Mllama)
    empty_rows: ClassVar[str] = "skip"

    def __init__(self, dim: int, heads: int, kv_heads: int, ffn_size: int, eps: float) -> None:
        super().__init__()
        if dim % heads or heads % kv_heads:
            raise ConfigError(
                f"cross-attention: width {dim} must split into {heads} heads, and heads into {kv_heads} kv heads"
            )
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.attn_norm = self.make_norm(dim, eps)
        self.q_proj = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, dim, bias=False)
        self.q_norm: nn.Module = RMSNorm(self.head_dim, eps) if self.qk_norm else nn.Identity()
        self.k_norm: nn.Module = RMSNorm(self.head_dim, eps) if self.qk_norm else nn.Identity()
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ffn_norm = self.make_norm(dim, eps)
        self.ffn = self.make_ffn(dim, ffn_size)
        self.ffn_gate = nn.Parameter(torch.zeros(1))

    def make_norm(self, dim: int, eps: float) -> nn.Module:
        return nn.LayerNorm(dim, eps=eps)

    def make_ffn(self, dim: int, hidden: int) -> nn.Module:
        return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.GELU(), nn.Linear(hidden, dim, bias=False))

    def keys_values(self, media: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Media tokens (N, T, D) -> keys and values (H_kv, N*T, hd), as every query reads them."""
        n, t, _ = media.shape
        keys = self.k_norm(self.k_proj(media).view(n, t, self.kv_heads, self.head_dim))  # (N, T, H_kv, hd)
        values = self.v_proj(media).view(n, t, self.kv_heads, self.head_dim)  # (N, T, H_kv, hd)
        return keys.flatten(0, 1).transpose(0, 1), values.flatten(0, 1).transpose(0, 1)  # (H_kv, N*T, hd)

    def forward(self, hidden: torch.Tensor, ctx: MediaContext, key: str) -> torch.Tensor:
        """Hidden states (B, q, D) of the positions ``ctx.current`` names -> the same, media mixed in."""
        rows = cast(torch.Tensor, ctx.current)  # (B, q)
        if key not in ctx.kv:  # once per turn: every decoding step reuses them
            ctx.kv[key] = self.keys_values(ctx.tokens.to(hidden.dtype))
            ctx.kv_computations += 1
        keys, values = ctx.kv[key]
        b, q, _ = hidden.shape
        n, t = ctx.valid.shape
        has_media = rows >= 0  # (B, q)

        # which media tokens each query may read: those of the medium it follows (B, q, N, T) -> (B, 1, q, N*T)
        media = torch.arange(n, device=rows.device)
        follows = rows.unsqueeze(-1) == media  # (B, q, N)
        if self.reads_runs:  # the run of adjacent media ending at that one
            start = ctx.first[rows.clamp(min=0)]  # (B, q)
            follows = (media >= start.unsqueeze(-1)) & (media <= rows.unsqueeze(-1))
        allowed = follows.unsqueeze(-1) & ctx.valid  # (B, q, N, T)
        if self.empty_rows == "spread":
            own = (ctx.owner == torch.arange(b, device=rows.device).unsqueeze(1)).view(b, 1, n, 1)  # (B, 1, N, 1)
            allowed = torch.where(has_media.view(b, q, 1, 1), allowed, own & ctx.present)
        allowed = allowed.reshape(b, 1, q, n * t)
        dead = ~allowed.any(-1, keepdim=True)  # (B, 1, q, 1) a query with nothing to read
        allowed = allowed | dead  # attend anywhere, then zero it: no NaN from an all-masked row

        x = self.attn_norm(hidden)
        queries = self.q_norm(self.q_proj(x).view(b, q, self.heads, self.head_dim)).transpose(1, 2)  # (B, H, q, hd)
        repeat = self.heads // self.kv_heads
        k = keys.repeat_interleave(repeat, dim=0).unsqueeze(0)  # (1, H, N*T, hd): each kv head serves `repeat`
        v = values.repeat_interleave(repeat, dim=0).unsqueeze(0)  # (1, H, N*T, hd)
        attended = F.scaled_dot_product_attention(queries, k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1), allowed)
        attended = attended.masked_fill(dead, 0.0)  # (B, H, q, hd)
        if self.empty_rows == "skip":
            attended = attended * has_media.view(b, 1, q, 1)
        attended = self.o_proj(attended.transpose(1, 2).reshape(b, q, self.heads * self.head_dim))  # (B, q, D)
        hidden = hidden + self.attn_gate.tanh() * attended

        fed = self.ffn(self.ffn_norm(hidden)) * has_media.unsqueeze(-1)  # (B, q, D): only tokens after a medium
        return hidden + self.ffn_gate.tanh() * fed


class FlamingoBlock(GatedCrossAttentionBlock):
    """Flamingo's GATED XATTN-DENSE: LayerNorm, attention to the preceding medium, GELU feed-forward."""


class MllamaBlock(GatedCrossAttentionBlock):
    """Llama 3.2 Vision's cross-attention layer: RMSNorm, per-head RMS-normed queries and keys, SwiGLU."""

    qk_norm = True
    reads_runs = True
    empty_rows = "spread"

    def make_norm(self, dim: int, eps: float) -> nn.Module:
        return RMSNorm(dim, eps)

    def make_ffn(self, dim: int, hidden: int) -> nn.Module:
        return SwiGLU(dim, hidden)


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The decoder layer stack of a Hugging Face causal LM (``model.layers``, ``model.decoder.layers``,
    ``transformer.h`` ...): the module list with one entry per hidden layer."""
    count = getattr(llm.config, "num_hidden_layers", None)
    for _, module in llm.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ConfigError(f"cross_attention: cannot find the {count} decoder layers of {type(llm).__name__}")


class CrossAttention(Fusion):
    """Gated cross-attention blocks before chosen decoder layers of the frozen LLM (see the module docstring)."""

    eager_only = True

    def __init__(self, cfg: FusionConfig, backbone: Backbone) -> None:
        super().__init__(cfg, backbone)
        llm = backbone.model
        layers = decoder_layers(llm)
        at = cfg.layers if cfg.layers is not None else [i for i in range(len(layers)) if (i + 1) % cfg.every == 0]
        if not at or sorted(set(at)) != list(at) or at[0] < 0 or at[-1] >= len(layers):
            raise ConfigError(
                f"cross_attention: layers {at} must be distinct, ascending and within the LLM's {len(layers)} layers"
            )
        dim = backbone.hidden_size
        heads = cfg.heads or int(getattr(llm.config, "num_attention_heads", 0)) or 1
        block = BLOCKS.get(cfg.block)
        self.layers = list(at)
        self.blocks = nn.ModuleDict(
            {str(i): block(dim, heads, cfg.kv_heads or heads, cfg.ffn_size or 4 * dim, cfg.norm_eps) for i in at}
        )
        self.blocks.to(backbone.device)
        llm.register_forward_pre_hook(self._begin_forward, with_kwargs=True)
        for i in at:
            layers[i].register_forward_pre_hook(self._block_hook(str(i)), with_kwargs=True)

    def slots(self, projected_tokens: int) -> int:
        return 1  # one placeholder token marks where the medium was shown

    # -- the hooks: run only while an ``inputs`` context with media is open ------------------------------------
    @staticmethod
    def _begin_forward(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ctx = _ACTIVE.get()
        if ctx is None:
            return
        inputs = kwargs.get("inputs_embeds")
        if inputs is None:
            inputs = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        ctx.begin_forward(int(inputs.shape[1]))

    def _block_hook(self, key: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            ctx = _ACTIVE.get()
            if ctx is None:
                return None
            block = self.blocks[key]
            if args:
                return (block(args[0], ctx, key), *args[1:]), kwargs
            kwargs["hidden_states"] = block(kwargs["hidden_states"], ctx, key)
            return args, kwargs

        return hook

    # -- the per-turn media context ------------------------------------------------------------------------------
    def prepare(
        self, backbone: Backbone, input_ids: torch.Tensor, media: dict[str, Projected]
    ) -> tuple[torch.Tensor, Any]:
        embeds = backbone.embed_tokens(input_ids)  # (B, L, D): the placeholder tokens keep their own rows
        return embeds, self.context(backbone, input_ids, media)

    @contextmanager
    def active(self, state: Any) -> Iterator[None]:
        token = _ACTIVE.set(state)
        try:
            yield
        finally:
            _ACTIVE.reset(token)

    def batched(self, states: Sequence[Any]) -> MediaContext | None:
        """The media of several single-row contexts as one context for decoding steps: every row's media, the row
        owning them, and for each row the medium its prompt's last token reads (new tokens read the same)."""
        contexts = [(b, ctx) for b, ctx in enumerate(states) if ctx is not None]
        if not contexts:
            return None
        device = contexts[0][1].tokens.device
        longest = max(ctx.tokens.shape[1] for _, ctx in contexts)
        tokens, valid, present, owner, first = [], [], [], [], []
        reads = torch.full((len(states), 1), -1, dtype=torch.long, device=device)  # (B, 1)
        offset = 0
        for b, ctx in contexts:
            pad = longest - ctx.tokens.shape[1]
            tokens.append(F.pad(ctx.tokens, (0, 0, 0, pad)))  # (N_b, T, D)
            valid.append(F.pad(ctx.valid, (0, pad)))
            present.append(F.pad(ctx.present, (0, pad)))
            owner.append(torch.full_like(ctx.owner, b))
            first.append(ctx.first + offset)
            last = int(ctx.rows[0, -1])
            reads[b, 0] = last + offset if last >= 0 else -1
            offset += ctx.tokens.shape[0]
        return MediaContext(
            tokens=torch.cat(tokens),
            valid=torch.cat(valid),
            present=torch.cat(present),
            owner=torch.cat(owner),
            rows=reads,
            first=torch.cat(first),
        )

    def context(self, backbone: Backbone, input_ids: torch.Tensor, media: dict[str, Projected]) -> MediaContext | None:
        """Match each placeholder token to its medium and lay the media out for the blocks (None: no media)."""
        unknown = set(media) - set(backbone.placeholder_ids)
        if unknown:
            raise PromptError(f"features given for modalities without a placeholder: {sorted(unknown)}")
        found: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []  # (row, position, tokens (M, D), mask (M,))
        for modality, token_id in backbone.placeholder_ids.items():
            where = (input_ids == token_id).nonzero().tolist()  # row-major: the order media are given in
            projected = media.get(modality)
            count = 0 if projected is None else projected.tokens.shape[0]
            if len(where) != count:
                raise PromptError(
                    f"{modality} features and placeholder tokens do not match: tokens: {len(where)}, features: {count}"
                )
            if projected is None:
                continue
            mask = projected.mask
            for k, (row, pos) in enumerate(where):
                valid = mask[k] if mask is not None else torch.ones(projected.tokens.shape[1], dtype=torch.bool)
                found.append((row, pos, projected.tokens[k], valid))
        if not found:
            return None
        found.sort(key=lambda item: (item[0], item[1]))
        device = input_ids.device
        longest = max(item[2].shape[0] for item in found)
        dim = found[0][2].shape[-1]
        tokens = torch.zeros(len(found), longest, dim, device=device, dtype=found[0][2].dtype)  # (N, T, D)
        valid = torch.zeros(len(found), longest, dtype=torch.bool, device=device)  # (N, T)
        present = torch.zeros_like(valid)
        marks = torch.full(input_ids.shape, -1, dtype=torch.long, device=device)  # (B, L) medium at its placeholder
        for n, (row, pos, item, item_valid) in enumerate(found):
            tokens[n, : item.shape[0]] = item.to(device)
            valid[n, : item.shape[0]] = item_valid.to(device)
            present[n, : item.shape[0]] = True
            marks[row, pos] = n
        rows = marks.cummax(dim=1).values  # (B, L): media are numbered in position order, so the running max is the
        # most recent medium at or before each position (-1 before the first)
        owner = torch.tensor([item[0] for item in found], device=device)
        first = list(range(len(found)))
        for n in range(1, len(found)):
            if found[n][0] == found[n - 1][0] and found[n][1] == found[n - 1][1] + 1:  # adjacent placeholders
                first[n] = first[n - 1]
        return MediaContext(
            tokens=tokens,
            valid=valid,
            present=present,
            owner=owner,
            rows=rows,
            first=torch.tensor(first, device=device),
        )


def build_fusion(cfg: FusionConfig, backbone: Backbone) -> Fusion:
    """The fusion ``cfg.kind`` names, built over ``backbone`` (cross-attention hooks its decoder layers)."""
    return cast(Fusion, FUSIONS.get(cfg.kind)(cfg, backbone))


def active_media() -> MediaContext | None:
    """The media context of the forward or decoding loop in progress on this thread (None outside one)."""
    return _ACTIVE.get()
