"""Twin models for side-by-side runs: Hugging Face LLaVA and an mmgraph system over the *same* modules.

:func:`build_twins` builds ``LlavaForConditionalGeneration`` with random weights at a size of :data:`SIZES` (the
``llava-7b`` shape is LLaVA-1.5-7B's: CLIP ViT-L/14 at 336 px, 576 image tokens, Llama-2-7B) and an
:class:`~orchestrator.system.MMSystem` whose CLIP encoder *is* LLaVA's vision tower, whose ``mlp`` projector holds
LLaVA's two projector layers, and whose backbone's LLM *is* LLaVA's language model and head. Nothing is copied, so
both fit in memory together and any difference in speed comes from the code paths, not the weights.

:func:`make_batch` lays out the same PT batch for both: ``[bos] <image> x 576 text...`` with labels on the text.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from core.config import ModalityConfig, ProjectorConfig, SystemConfig
from modalities.image import ClipVisionEncoder
from modalities.input_projectors import MLPProjector
from orchestrator.backbone import Backbone
from orchestrator.system import MMSystem
from orchestrator.tiny import sentencepiece_tokenizer

#: Sizes as plain data. ``tiny`` is for CPUs and the tests; ``llava-layout`` has LLaVA-1.5's sequence and vocabulary
#: at small widths; ``llava-7b`` is LLaVA-1.5-7B's shape.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        image_size=32,
        patch_size=8,
        vision_width=32,
        vision_layers=3,
        vision_heads=2,
        vision_ffn=64,
        llm_width=64,
        llm_layers=2,
        llm_heads=4,
        llm_kv_heads=4,
        llm_ffn=128,
        vocab=512,
        text_tokens=16,
    ),
    # LLaVA-1.5's sequence layout (576 image tokens, 64 text tokens) and vocabulary at small widths: fits a CPU,
    # and keeps the proportions that decide what computing the LM head only at labelled positions saves
    "llava-layout": dict(
        image_size=336,
        patch_size=14,
        vision_width=64,
        vision_layers=2,
        vision_heads=2,
        vision_ffn=128,
        llm_width=256,
        llm_layers=2,
        llm_heads=4,
        llm_kv_heads=4,
        llm_ffn=512,
        vocab=32064,
        text_tokens=64,
    ),
    "llava-7b": dict(
        image_size=336,
        patch_size=14,
        vision_width=1024,
        vision_layers=24,
        vision_heads=16,
        vision_ffn=4096,
        llm_width=4096,
        llm_layers=32,
        llm_heads=32,
        llm_kv_heads=32,
        llm_ffn=11008,
        vocab=32064,
        text_tokens=64,
    ),
}


@dataclass
class Twins:
    """The two sides and what laying out their inputs needs."""

    size: str
    hf: Any  # LlavaForConditionalGeneration
    ours: Any  # MMSystem
    image_token_id: int  # LLaVA's image token
    placeholder_id: int  # our <image> placeholder
    num_image_tokens: int
    vocab: int

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype


def llava_config(size: str):
    s = SIZES[size]
    vision = CLIPVisionConfig(
        hidden_size=s["vision_width"],
        intermediate_size=s["vision_ffn"],
        num_hidden_layers=s["vision_layers"],
        num_attention_heads=s["vision_heads"],
        image_size=s["image_size"],
        patch_size=s["patch_size"],
        projection_dim=s["llm_width"],
    )
    text = LlamaConfig(
        hidden_size=s["llm_width"],
        intermediate_size=s["llm_ffn"],
        num_hidden_layers=s["llm_layers"],
        num_attention_heads=s["llm_heads"],
        num_key_value_heads=s["llm_kv_heads"],
        vocab_size=s["vocab"],
        max_position_embeddings=4096,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    tokens = (s["image_size"] // s["patch_size"]) ** 2
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=s["vocab"] - 1,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=tokens,
    )


def build_twins(
    size: str = "tiny",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> Twins:
    """Random-weight LLaVA (seeded) and the mmgraph system sharing its modules; both in eval mode, frozen but for
    the projector."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; sizes: {', '.join(SIZES)}")
    config = llava_config(size)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        hf = LlavaForConditionalGeneration(config).to(dtype)
    hf.eval().requires_grad_(False)
    hf.model.multi_modal_projector.requires_grad_(True)

    # ours: the same vision tower, projector layers, language model and head
    vision_cfg = ModalityConfig(
        encoder="clip_vision",
        model=f"llava-twin:{size}",
        feature_layer=-2,
        keep_cls=False,
        projector=ProjectorConfig(kind="mlp", depth=2),
    )
    side = config.vision_config.image_size
    processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    encoder = ClipVisionEncoder(vision_cfg, hf.model.vision_tower, processor)
    projector = MLPProjector(config.vision_config.hidden_size, config.text_config.hidden_size, vision_cfg.projector)
    projector.net[0], projector.net[2] = (
        hf.model.multi_modal_projector.linear_1,
        hf.model.multi_modal_projector.linear_2,
    )
    with torch.device("meta"):
        llm = LlamaForCausalLM(config.text_config)
    llm.model, llm.lm_head = hf.model.language_model, hf.lm_head
    llm.config._attn_implementation = attn_implementation
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = sentencepiece_tokenizer(Path(tmp))
    backbone = Backbone(llm, tokenizer, placeholders={"image": "<image>"}, signals={})
    system_config = SystemConfig(
        name=f"llava-twin-{size}", llm={"model": f"llava-twin:{size}"}, modalities={"image": vision_cfg}, generators={}
    )
    ours = MMSystem(
        system_config,
        encoders={"image": encoder.freeze()},
        input_projectors=torch.nn.ModuleDict({"image": projector}),
        backbone=backbone,
        generators={},
        output_projectors=torch.nn.ModuleDict(),
    )
    ours.eval()
    return Twins(
        size,
        hf,
        ours,
        config.image_token_id,
        backbone.placeholder_ids["image"],
        config.image_seq_length,
        config.text_config.vocab_size,
    )


@dataclass
class TwinBatch:
    """One PT batch, laid out for both sides: only the image-token id differs."""

    pixel_values: torch.Tensor  # (B, 3, H, W)
    hf_ids: torch.Tensor  # (B, L) with LLaVA's image token
    our_ids: torch.Tensor  # (B, L) with our placeholder
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L), -100 but on the text after the image


def make_batch(twins: Twins, batch_size: int, *, text_tokens: int | None = None, seed: int = 0) -> TwinBatch:
    """``[bos] image-token x N text x T``; labels on the text (a caption, as in PT)."""
    text_tokens = text_tokens or SIZES[twins.size]["text_tokens"]
    g = torch.Generator().manual_seed(seed)
    side = twins.hf.config.vision_config.image_size
    pixels = torch.randn(batch_size, 3, side, side, generator=g)
    reserved = {0, 1, 2, 3, twins.image_token_id, twins.placeholder_id}
    pool = torch.tensor([i for i in range(4, min(twins.vocab, 30000)) if i not in reserved])
    text = pool[torch.randint(len(pool), (batch_size, text_tokens), generator=g)]
    image = torch.full((batch_size, twins.num_image_tokens), -1)
    ids = torch.cat([torch.full((batch_size, 1), 2), image, text], dim=1)  # (B, 1 + N + T)
    labels = torch.full_like(ids, -100)
    labels[:, 1 + twins.num_image_tokens :] = text
    dev = twins.device
    hf_ids = torch.where(ids == -1, twins.image_token_id, ids)
    our_ids = torch.where(ids == -1, twins.placeholder_id, ids)
    return TwinBatch(
        pixels.to(dev, twins.dtype), hf_ids.to(dev), our_ids.to(dev), torch.ones_like(ids).to(dev), labels.to(dev)
    )
