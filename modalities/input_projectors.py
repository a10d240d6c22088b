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
* ``llava_next`` -- LLaVA-NeXT's MLP and any-resolution layout (tiles laid out as the image, a newline token per
  row); the token count depends on the image, :meth:`InputProjector.token_mask` says how many.
* ``blip2_qformer`` / ``instructblip_qformer`` -- BLIP-2's and InstructBLIP's Q-Formers exactly as Hugging Face
  builds them, so imported checkpoints load into them; the InstructBLIP one also reads the turn's instruction.

A video's ``(B, G, T, D)`` features go through :meth:`InputProjector.project_groups`: by default group by group
(flattened to ``(B * G, T, D)``, ``G * M`` tokens out). With ``cfg.time_embeddings > 0`` the query projectors
instead add a learned embedding per frame and read all ``G * T`` tokens at once (Flamingo's Perceiver
Resampler), so ``M`` tokens come out per video and they can encode motion.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import nn
from transformers import (
    AutoTokenizer,
    Blip2QFormerConfig,
    Blip2QFormerModel,
    InstructBlipQFormerConfig,
    InstructBlipQFormerModel,
)
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

from core.config import ProjectorConfig
from core.errors import ConfigError
from core.hub import resolve_model
from modalities.registry import PROJECTORS


class InputProjector(nn.Module):
    """Base class: ``forward(x (B, T, in_dim)) -> (B, M, out_dim)``; ``M = num_output_tokens(T)``."""

    #: whether the projector reads the text of the turn that shows its medium (InstructBLIP's Q-Former): then
    #: :meth:`project_groups` takes ``instructions``, one string per item
    reads_instructions: ClassVar[bool] = False
    #: whether every item gives the same number of tokens (False: :meth:`token_mask` says how many each gives)
    fixed_length: ClassVar[bool] = True

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

    def project_groups(self, features: torch.Tensor, instructions: list[str] | None = None) -> torch.Tensor:
        """``(B, G, T, D_in)`` -> ``(B, N, D_out)`` with ``N = num_group_tokens(G, T)``; each group on its own
        (``instructions``: read only by projectors that :attr:`reads_instructions`)."""
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


class LlavaNextProjector(InputProjector):
    """LLaVA-NeXT's projector and layout (``spatial_unpad``): the 2-layer GELU MLP on every tile's patches, then the
    whole-image tile's tokens followed by the grid tiles' tokens laid out as the image -- the padding the resize added
    cut away -- with a learned ``image_newline`` token closing every row. The count depends on the image's size, so
    items are padded to the longest and :meth:`token_mask` marks the real tokens (a splice writes only those).

    Reads :class:`~modalities.image.LlavaNextVisionEncoder`'s features (``in_dim`` counts their three extra
    channels); ``cfg.options``: ``image_grid_pinpoints`` and ``tile_size`` (the tower's image size).
    """

    fixed_length: ClassVar[bool] = False

    def __init__(self, in_dim: int, out_dim: int, cfg: ProjectorConfig) -> None:
        super().__init__(in_dim, out_dim, cfg)
        self.mlp = nn.Sequential(nn.Linear(in_dim - 3, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.image_newline = nn.Parameter(torch.randn(out_dim) * out_dim**-0.5)
        self.pinpoints = [list(p) for p in cfg.options.get("image_grid_pinpoints", [])]
        self.tile = int(cfg.options.get("tile_size", 0))
        if not self.pinpoints or self.tile < 1:
            raise ConfigError("llava_next needs options.image_grid_pinpoints and options.tile_size")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ConfigError("llava_next lays each image's tiles out by its size: project with project_groups")

    def _layout(self, tiles: torch.Tensor, size: tuple[int, int], newline: torch.Tensor) -> torch.Tensor:
        """One image's projected tiles (n, T, C) -> its token sequence (L, C), ``newline`` (C,) closing each row."""
        if tiles.shape[0] == 1:
            return torch.cat([tiles[0], newline[None]])  # (T + 1, C)
        side = math.isqrt(tiles.shape[1])  # patches per tile side
        rows, cols = get_anyres_image_grid_shape(list(size), self.pinpoints, self.tile)
        grid = tiles[1:].view(rows, cols, side, side, -1)  # (rows, cols, side, side, C)
        grid = grid.permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)  # (C, rows*side, cols*side): the image
        grid = unpad_image(grid, list(size))  # (C, h, w): the resize's padding cut away
        grid = torch.cat([grid, newline[:, None, None].expand(*grid.shape[:-1], 1)], dim=-1)  # (C, h, w + 1)
        return torch.cat([tiles[0], grid.flatten(1, 2).transpose(0, 1)])  # (T + h*(w+1), C)

    def _items(self, features: torch.Tensor, project: bool) -> list[torch.Tensor]:
        out = []
        for item in features:  # (G, T, D + 3)
            n = int(item[:, 0, -3].sum())
            size = (int(item[0, 0, -2]), int(item[0, 0, -1]))
            if project:
                out.append(self._layout(self.mlp(item[:n, :, :-3]), size, self.image_newline.to(item.dtype)))
            else:  # the layout alone, on one channel: how many tokens come out
                out.append(self._layout(item[:n, :, :1], size, item.new_zeros(1)))
        return out

    def project_groups(self, features: torch.Tensor, instructions: list[str] | None = None) -> torch.Tensor:
        items = self._items(features, project=True)
        return nn.utils.rnn.pad_sequence(items, batch_first=True)  # (B, L_max, C), zero after each item's end

    def token_mask(self, features: torch.Tensor) -> torch.Tensor:
        lengths = torch.tensor([len(item) for item in self._items(features, project=False)])
        return torch.arange(int(lengths.max())) < lengths[:, None]  # (B, L_max)


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

    def project_groups(self, features: torch.Tensor, instructions: list[str] | None = None) -> torch.Tensor:
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


class Blip2QFormerProjector(InputProjector):
    """BLIP-2's Querying Transformer as Hugging Face builds it (``Blip2QFormerModel``): ``cfg.num_queries`` learned
    query tokens self-attend and cross-attend to the frozen image features, then a linear map to the LLM width
    (``language_projection``); ``M = num_queries``. ``cfg.options["qformer"]`` holds the Q-Former's config (a
    ``Blip2QFormerConfig`` as a dict; width, depth and heads default to ``cfg``'s), so an imported BLIP-2 checkpoint's
    Q-Former loads into it tensor for tensor (``orchestrator.peers.blip2``)."""

    config_class: ClassVar[Any] = Blip2QFormerConfig
    model_class: ClassVar[Any] = Blip2QFormerModel

    def __init__(self, in_dim: int, out_dim: int, cfg: ProjectorConfig) -> None:
        super().__init__(in_dim, out_dim, cfg)
        width = cfg.width or out_dim
        settings = {
            "hidden_size": width,
            "num_hidden_layers": cfg.depth,
            "num_attention_heads": cfg.heads,
            "intermediate_size": 4 * width,
            **cfg.options.get("qformer", {}),
            "encoder_hidden_size": in_dim,
        }
        qformer_config = self.config_class(**settings)
        width = qformer_config.hidden_size
        self.qformer = self.model_class(qformer_config)
        self.query_tokens = nn.Parameter(torch.randn(1, cfg.num_queries, width) * 0.02)  # (1, M, W)
        self.language_projection = nn.Linear(width, out_dim)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return self.cfg.num_queries

    def _queries(self, x: torch.Tensor, **text: torch.Tensor) -> torch.Tensor:
        """The Q-Former's query outputs (B, M, W) over features ``x`` (B, T, D_in) (``text``: an instruction)."""
        queries = self.query_tokens.expand(x.shape[0], -1, -1)  # (B, M, W)
        seen = torch.ones(x.shape[:-1], dtype=torch.long, device=x.device)  # (B, T): every feature is real
        out = self.qformer(query_embeds=queries, encoder_hidden_states=x, encoder_attention_mask=seen, **text)
        return cast(torch.Tensor, out.last_hidden_state[:, : queries.shape[1]])  # (B, M, W): the queries' states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.language_projection(self._queries(x))  # (B, T, D_in) -> (B, M, W) -> (B, M, D_out)


class InstructBlipQFormerProjector(Blip2QFormerProjector):
    """InstructBLIP's instruction-aware Q-Former (``InstructBlipQFormerModel``): the queries also attend to the
    instruction -- the text of the turn that shows the image, tokenised by the checkpoint's own Q-Former tokenizer
    (``cfg.options["instruction_tokenizer"]``: ``{model: <id or path>, subfolder: qformer_tokenizer}``) -- so what
    the image is reduced to depends on what was asked."""

    reads_instructions: ClassVar[bool] = True
    config_class: ClassVar[Any] = InstructBlipQFormerConfig
    model_class: ClassVar[Any] = InstructBlipQFormerModel

    def __init__(self, in_dim: int, out_dim: int, cfg: ProjectorConfig) -> None:
        super().__init__(in_dim, out_dim, cfg)
        where = cfg.options.get("instruction_tokenizer")
        if not where:
            raise ConfigError("instructblip_qformer needs options.instruction_tokenizer: {model, subfolder}")
        folder = Path(resolve_model(where["model"])) / where.get("subfolder", "")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ConfigError("instructblip_qformer reads each image's instruction: project with project_groups")

    def project_groups(self, features: torch.Tensor, instructions: list[str] | None = None) -> torch.Tensor:
        b, g, t, d = features.shape
        if instructions is None or len(instructions) != b:
            raise ConfigError(
                f"instructblip_qformer needs the instruction of each of its {b} images, got "
                f"{'none' if instructions is None else len(instructions)}"
            )
        self._check_input(features[:, 0])
        text = self.tokenizer(instructions, padding=True, return_tensors="pt").to(features.device)
        text_ids = text.input_ids.repeat_interleave(g, dim=0)  # (B*G, S): each frame reads its item's instruction
        text_mask = text.attention_mask.repeat_interleave(g, dim=0)  # (B*G, S)
        queries_mask = torch.ones(b * g, self.cfg.num_queries, dtype=torch.long, device=features.device)
        states = self._queries(
            features.reshape(b * g, t, d),  # (B*G, T, D_in)
            input_ids=text_ids,
            attention_mask=torch.cat([queries_mask, text_mask], dim=1),  # (B*G, M + S)
        )
        out = self.language_projection(states)  # (B*G, M, D_out)
        return out.reshape(b, g * out.shape[1], out.shape[2])  # (B, G*M, D_out)


def build_projector(in_dim: int, out_dim: int, cfg: ProjectorConfig) -> InputProjector:
    """Build the trainable input projector ``cfg.kind`` names, mapping ``in_dim`` features to ``out_dim``."""
    return PROJECTORS.get(cfg.kind)(in_dim, out_dim, cfg)
