"""Trainable output projectors: signal-token states of the LLM -> a generator's conditioning tensors.

``hidden (B, k, D_llm) [+ input embeddings] --OutputProjector--> {spec.name: (B, L_spec, D_spec)}``

The ``k`` signal tokens' last-layer hidden states (plus, as in NExT-GPT and GILL, their input embeddings) are
mapped to every tensor a generator is driven by (:class:`~generators.base.ConditioningSpec`), e.g. 77x768 for
Stable Diffusion 1.5, or the T5 and GPT-2 sequences of AudioLDM 2. Kinds (registry
:data:`generators.OUTPUT_PROJECTORS`, entry-point group ``mmgraph.output_projectors``):

* ``mlp`` -- a per-token MLP to ``width``, the ``k`` tokens flattened, then one Linear per spec to ``L * D``.
* ``transformer`` -- GILL / NExT-GPT: Linear(D_llm -> width), an ``nn.Transformer`` whose encoder reads the
  ``k`` signal states and whose decoder decodes one learned query set per spec (``L_spec`` queries), then one
  Linear(width -> D_spec) per spec.

They are trained with :func:`alignment_loss` against the generator's own text-encoder features of the caption
(:meth:`~generators.base.GeneratorTool.encode_text`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from core.config import OutputProjectorConfig
from generators.base import ConditioningSpec
from generators.registry import OUTPUT_PROJECTORS


class OutputProjector(nn.Module, ABC):
    """Base class: validates the input, adds the input embeddings, and delegates to :meth:`project`.

    Args:
        llm_dim: the LLM hidden size ``D_llm``.
        num_signal_tokens: ``k``, the signal tokens per generation (``[IMG0]..[IMG{k-1}]``).
        specs: the generator's conditioning specs, one output tensor each.
        cfg: kind, width, layers, heads, add_input_embeddings.
    """

    def __init__(
        self, llm_dim: int, num_signal_tokens: int, specs: Sequence[ConditioningSpec], cfg: OutputProjectorConfig
    ) -> None:
        super().__init__()
        if not specs:
            raise ValueError("an output projector needs at least one conditioning spec")
        self.llm_dim = llm_dim
        self.num_signal_tokens = num_signal_tokens
        self.specs = list(specs)
        self.cfg = cfg
        self.add_input_embeddings = cfg.add_input_embeddings

    def forward(self, hidden: torch.Tensor, input_embeds: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``hidden`` (and ``input_embeds``) ``(B, k, D_llm)`` -> ``{spec.name: (B, L, D)}``."""
        expected = (self.num_signal_tokens, self.llm_dim)
        if hidden.dim() != 3 or tuple(hidden.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__}: signal states must have shape (B, {expected[0]}, {expected[1]}), "
                f"got {tuple(hidden.shape)}"
            )
        x = hidden
        if self.add_input_embeddings and input_embeds is not None:
            if input_embeds.shape != hidden.shape:
                raise ValueError(
                    f"{type(self).__name__}: input_embeds {tuple(input_embeds.shape)} must match the "
                    f"hidden states {tuple(hidden.shape)}"
                )
            x = hidden + input_embeds  # NExT-GPT / GILL: last-layer states + the signal tokens' input embeddings
        return self.project(x)

    @abstractmethod
    def project(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, k, D_llm)`` -> ``{spec.name: (B, L, D)}``."""
        ...

    def extra_repr(self) -> str:
        specs = ", ".join(f"{s.name}={s.length}x{s.dim}" for s in self.specs)
        return f"k={self.num_signal_tokens}, llm_dim={self.llm_dim}, specs=[{specs}]"


class MLPOutputProjector(OutputProjector):
    """Per-token MLP (``cfg.layers`` Linear+GELU layers to ``cfg.width``), flatten the ``k`` tokens, then one
    Linear(k * width -> L * D) per spec."""

    def __init__(
        self, llm_dim: int, num_signal_tokens: int, specs: Sequence[ConditioningSpec], cfg: OutputProjectorConfig
    ) -> None:
        super().__init__(llm_dim, num_signal_tokens, specs, cfg)
        layers: list[nn.Module] = []
        for i in range(cfg.layers):
            layers += [nn.Linear(llm_dim if i == 0 else cfg.width, cfg.width), nn.GELU()]
        self.token_mlp = nn.Sequential(*layers)
        self.heads = nn.ModuleDict(
            {spec.name: nn.Linear(num_signal_tokens * cfg.width, spec.length * spec.dim) for spec in self.specs}
        )

    def project(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = x.shape[0]
        flat = self.token_mlp(x).reshape(batch, -1)  # (B, k, width) -> (B, k * width)
        return {
            spec.name: self.heads[spec.name](flat).reshape(batch, spec.length, spec.dim)  # (B, L*D) -> (B, L, D)
            for spec in self.specs
        }


class TransformerOutputProjector(OutputProjector):
    """GILL / NExT-GPT mapper: Linear(D_llm -> width), ``nn.Transformer`` (``cfg.layers`` encoder and decoder
    layers, ``cfg.heads`` heads, pre-norm, no dropout) encoding the ``k`` signal states and decoding one learned
    query set of ``L_spec`` queries per spec, then Linear(width -> D_spec) per spec."""

    def __init__(
        self, llm_dim: int, num_signal_tokens: int, specs: Sequence[ConditioningSpec], cfg: OutputProjectorConfig
    ) -> None:
        super().__init__(llm_dim, num_signal_tokens, specs, cfg)
        if cfg.width % cfg.heads:
            raise ValueError(f"output projector width {cfg.width} is not divisible by heads {cfg.heads}")
        width = cfg.width
        self.in_proj = nn.Linear(llm_dim, width)
        layer: dict[str, Any] = dict(
            d_model=width, nhead=cfg.heads, dim_feedforward=4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        # Pre-norm layers cannot use the nested-tensor fast path; build the encoder without it (no warning).
        encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer), cfg.layers, norm=nn.LayerNorm(width), enable_nested_tensor=False
        )
        self.transformer = nn.Transformer(
            d_model=width,
            nhead=cfg.heads,
            num_encoder_layers=cfg.layers,
            num_decoder_layers=cfg.layers,
            dim_feedforward=4 * width,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
            custom_encoder=encoder,
        )
        self.queries = nn.ParameterDict(
            {spec.name: nn.Parameter(torch.randn(spec.length, width) * 0.02) for spec in self.specs}
        )
        self.heads = nn.ModuleDict({spec.name: nn.Linear(width, spec.dim) for spec in self.specs})

    def project(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = x.shape[0]
        memory = self.transformer.encoder(self.in_proj(x))  # (B, k, width)
        out: dict[str, torch.Tensor] = {}
        for spec in self.specs:
            queries = self.queries[spec.name].unsqueeze(0).expand(batch, -1, -1)  # (L, width) -> (B, L, width)
            decoded = self.transformer.decoder(queries, memory)  # (B, L, width)
            out[spec.name] = self.heads[spec.name](decoded)  # (B, L, D)
        return out


def build_output_projector(
    llm_dim: int, num_signal_tokens: int, specs: Sequence[ConditioningSpec], cfg: OutputProjectorConfig
) -> OutputProjector:
    """Build the output projector ``cfg.kind`` names (raises ``UnknownKindError`` for an unknown kind)."""
    return OUTPUT_PROJECTORS.get(cfg.kind)(llm_dim, num_signal_tokens, specs, cfg)


def alignment_loss(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean per-token L2 distance, summed over the conditioning tensors (GILL / NExT-GPT ``l2_loss``).

    For each name: ``||pred - target||_2`` over the last dimension, averaged over batch and positions; i.e.
    ``((u - v) ** 2).sum(-1).sqrt().mean()``, computed with ``vector_norm`` so the gradient stays finite when a
    prediction is exact.
    """
    missing = set(pred) ^ set(target)
    if missing:
        raise ValueError(f"alignment_loss: predictions {sorted(pred)} and targets {sorted(target)} differ")
    if not pred:
        raise ValueError("alignment_loss: no conditioning tensors to compare")
    terms = []
    for name, u in pred.items():
        v = target[name].to(device=u.device, dtype=u.dtype)
        if u.shape != v.shape:
            raise ValueError(f"alignment_loss: {name!r} prediction {tuple(u.shape)} vs target {tuple(v.shape)}")
        terms.append(torch.linalg.vector_norm(u - v, dim=-1).mean())
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total
