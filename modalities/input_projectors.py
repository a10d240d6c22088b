"""Trainable input projectors: encoder features ``(B, T, D_in)`` -> LLM input embeddings ``(B, M, D_out)``.

Four kinds, registered in :data:`PROJECTORS` (``modalities.PROJECTORS``):

* ``linear`` -- one linear map per token (LLaVA-1.0); ``M = T``.
* ``masked_linear`` -- ``linear`` over features that flag their padding tokens in a last channel (Llama 3.2
  Vision's tiles), which :meth:`InputProjector.token_mask` reports to the cross-attention fusion.
* ``mlp`` -- LLaVA-1.5's ``Linear-GELU-Linear`` with ``cfg.depth`` linear layers; ``M = T``.
* ``resampler`` -- Flamingo's Perceiver Resampler (also Qwen-VL's): ``cfg.num_queries`` learned latents
  cross-attend to ``[features; latents]``, ``cfg.depth`` blocks of attention + feed-forward with
  pre-layer-norms; ``M = num_queries``, whatever ``T`` is.
* ``qformer`` -- a BLIP-2 style query transformer: learned queries, each block self-attention among the
  queries, cross-attention to the features, feed-forward; ``M = num_queries``.

A video's ``(B, G, T, D)`` features go through :meth:`InputProjector.project_groups`: by default group by group
(flattened to ``(B * G, T, D)``, ``G * M`` tokens out). With ``cfg.time_embeddings > 0`` the query projectors
instead add a learned embedding per frame and read all ``G * T`` tokens at once (Flamingo's Perceiver
Resampler), so ``M`` tokens come out per video and they can encode motion.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import cast

import torch
from torch import nn

from core.config import ProjectorConfig
from core.errors import ConfigError
from modalities.registry import PROJECTORS


class InputProjector(nn.Module):
    """Base class: ``forward(x (B, T, in_dim)) -> (B, M, out_dim)``; ``M = num_output_tokens(T)``."""

    def __init__(self, in_dim: int, out_dim: int, cfg: ProjectorConfig) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise ConfigError(f"projector dimensions must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.cfg = cfg

    def num_output_tokens(self, num_input_tokens: int) -> int:
        """``M`` for ``T = num_input_tokens`` input tokens (the default: one output per input token)."""
        return num_input_tokens

    def num_group_tokens(self, groups: int, tokens_per_group: int) -> int:
        """Output tokens for one item of ``groups`` groups (video frames) of ``tokens_per_group`` tokens each."""
        return groups * self.num_output_tokens(tokens_per_group)

    def token_mask(self, features: torch.Tensor) -> torch.Tensor | None:
        """Which of the ``(B, N)`` projected tokens of ``features`` (B, G, T, D_in) are real: ``None`` -- all of them
        (the default). A projector whose encoder marks padding (e.g. unused image tiles) says so here, and the
        cross-attention fusion never attends to those tokens."""
        return None

    def project_groups(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, G, T, D_in)`` -> ``(B, N, D_out)`` with ``N = num_group_tokens(G, T)``; each group on its own."""
        b, g, t, d = features.shape
        out = self(features.reshape(b * g, t, d))  # (B*G, T, D_in) -> (B*G, M, D_out)
        return out.reshape(b, g * out.shape[1], out.shape[2])  # (B*G, M, D_out) -> (B, G*M, D_out)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(
                f"{type(self).__name__} expects features of shape (B, T, {self.in_dim}), got {tuple(x.shape)}"
            )


class LinearProjector(InputProjector):
    """One linear layer applied to every token (LLaVA-1.0)."""

    def __init__(self, in_dim: int, out_dim: int, cfg: ProjectorConfig) -> None:
        super().__init__(in_dim, out_dim, cfg)
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.proj(x)  # (B, T, D_in) -> (B, T, D_out)


class MaskedLinearProjector(InputProjector):
    """One linear layer over features whose last channel flags real tokens (1.0) and padding (0.0) -- Llama 3.2
    Vision's projector over its tiled encoder (:class:`~modalities.image.MllamaVisionEncoder`). ``in_dim`` counts the
    flag; the map reads the other channels, and :meth:`token_mask` hands the flag to the cross-attention fusion."""

    def __init__(self, in_dim: int, out_dim: int, cfg: ProjectorConfig) -> None:
        super().__init__(in_dim, out_dim, cfg)
        self.proj = nn.Linear(in_dim - 1, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.proj(x[..., :-1])  # (B, T, D_in) -> (B, T, D_out); the flag channel is not content

    def token_mask(self, features: torch.Tensor) -> torch.Tensor:
        return features[..., -1].flatten(1) > 0.5  # (B, G, T) -> (B, G*T)


class MLPProjector(InputProjector):
    """LLaVA-1.5's projector: ``cfg.depth`` linear layers with GELU between them (``mlp2x_gelu`` for depth 2)."""

    def __init__(self, in_dim: int, out_dim: int, cfg: ProjectorConfig) -> None:
        super().__init__(in_dim, out_dim, cfg)
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(cfg.depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.net(x)  # (B, T, D_in) -> (B, T, D_out)


class FeedForward(nn.Sequential):
    """Pre-norm feed-forward: ``LayerNorm -> Linear(W, 4W) -> GELU -> Linear(4W, W)`` (add the residual outside)."""

    def __init__(self, width: int, mult: int = 4) -> None:
        super().__init__(nn.LayerNorm(width), nn.Linear(width, mult * width), nn.GELU(), nn.Linear(mult * width, width))


class QueryProjector(InputProjector, ABC):
    """Shared parts of the query-based projectors: width, learned queries, input/output maps.

    Features are mapped to the inner width ``W = cfg.width or out_dim``; ``cfg.num_queries`` learned queries of
    width ``W`` are refined by ``cfg.depth`` blocks (:meth:`make_block` / :meth:`run_block`), normalised and
    mapped to ``out_dim``.
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: ProjectorConfig) -> None:
        super().__init__(in_dim, out_dim, cfg)
        width = cfg.width or out_dim
        if width % cfg.heads:
            raise ConfigError(
                f"{type(self).__name__}: inner width {width} is not divisible by heads={cfg.heads}; "
                "set projector.width or projector.heads"
            )
        self.width = width
        self.queries = nn.Parameter(torch.randn(cfg.num_queries, width) * width**-0.5)  # (M, W)
        self.input_proj = nn.Linear(in_dim, width) if in_dim != width else nn.Identity()
        self.blocks = nn.ModuleList(self.make_block(width, cfg.heads) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(width)
        self.output_proj = nn.Linear(width, out_dim)
        # (F, W): one learned embedding per frame when frames are projected jointly; zero-initialised so that the
        # projector starts out treating frames alike
        self.time = nn.Parameter(torch.zeros(cfg.time_embeddings, width)) if cfg.time_embeddings else None

    @abstractmethod
    def make_block(self, width: int, heads: int) -> nn.ModuleDict: ...

    @abstractmethod
    def run_block(self, block: nn.ModuleDict, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor: ...

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return self.cfg.num_queries

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._attend(self.input_proj(x))  # (B, T, D_in) -> (B, T, W) -> (B, M, D_out)

    def _attend(self, features: torch.Tensor) -> torch.Tensor:
        """Inner-width features ``(B, T, W)`` -> ``(B, M, D_out)``."""
        queries = self.queries.unsqueeze(0).expand(features.shape[0], -1, -1)  # (M, W) -> (B, M, W)
        for block in self.blocks:  # each one a make_block ModuleDict
            queries = self.run_block(cast(nn.ModuleDict, block), queries, features)  # (B, M, W)
        return self.output_proj(self.norm_out(queries))  # (B, M, W) -> (B, M, D_out)

    def num_group_tokens(self, groups: int, tokens_per_group: int) -> int:
        if self.time is None:
            return super().num_group_tokens(groups, tokens_per_group)
        return self.cfg.num_queries

    def project_groups(self, features: torch.Tensor) -> torch.Tensor:
        if self.time is None:
            return super().project_groups(features)
        b, g, t, d = features.shape
        if d != self.in_dim:
            raise ValueError(
                f"{type(self).__name__} expects features of shape (B, G, T, {self.in_dim}), got {tuple(features.shape)}"
            )
        if g > self.time.shape[0]:
            raise ValueError(
                f"{type(self).__name__} has time embeddings for {self.time.shape[0]} frames, got {g}; "
                "raise projector.time_embeddings or lower num_frames"
            )
        x = self.input_proj(features) + self.time[:g, None, :]  # (B, G, T, W) + (G, 1, W)
        return self._attend(x.reshape(b, g * t, x.shape[-1]))  # (B, G*T, W) -> (B, M, D_out)


def _attention(width: int, heads: int) -> nn.MultiheadAttention:
    return nn.MultiheadAttention(width, heads, batch_first=True)


class ResamplerProjector(QueryProjector):
    """Perceiver Resampler (Flamingo): latents cross-attend to ``[features; latents]``, then a feed-forward."""

    def make_block(self, width: int, heads: int) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "norm_latents": nn.LayerNorm(width),
                "norm_features": nn.LayerNorm(width),
                "attn": _attention(width, heads),
                "ff": FeedForward(width),
            }
        )

    def run_block(self, block: nn.ModuleDict, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        latents = block["norm_latents"](queries)  # (B, M, W)
        context = torch.cat([block["norm_features"](features), latents], dim=1)  # (B, T + M, W)
        queries = queries + block["attn"](latents, context, context, need_weights=False)[0]
        return queries + block["ff"](queries)


class QFormerProjector(QueryProjector):
    """BLIP-2 style query transformer: self-attention among queries, cross-attention to features, feed-forward.

    BLIP-2 cross-attends every other layer and initialises from BERT; here every block cross-attends and all
    weights start random, which suits training from scratch on top of a frozen encoder.
    """

    def make_block(self, width: int, heads: int) -> nn.ModuleDict:
        return nn.ModuleDict(
            {
                "norm_self": nn.LayerNorm(width),
                "self_attn": _attention(width, heads),
                "norm_cross": nn.LayerNorm(width),
                "norm_features": nn.LayerNorm(width),
                "cross_attn": _attention(width, heads),
                "ff": FeedForward(width),
            }
        )

    def run_block(self, block: nn.ModuleDict, queries: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        normed = block["norm_self"](queries)  # (B, M, W)
        queries = queries + block["self_attn"](normed, normed, normed, need_weights=False)[0]
        normed = block["norm_cross"](queries)
        context = block["norm_features"](features)  # (B, T, W)
        queries = queries + block["cross_attn"](normed, context, context, need_weights=False)[0]
        return queries + block["ff"](queries)


def build_projector(in_dim: int, out_dim: int, cfg: ProjectorConfig) -> InputProjector:
    """Build the trainable input projector ``cfg.kind`` names, mapping ``in_dim`` features to ``out_dim``."""
    return PROJECTORS.get(cfg.kind)(in_dim, out_dim, cfg)
