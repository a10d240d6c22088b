"""Llama 3.2 Vision (``MllamaForConditionalGeneration``): the cross-attention family's published model.

Its language model interleaves two kinds of layer in one stack: Llama self-attention layers and, at
``cross_attention_layers``, gated cross-attention layers that read the projected image tiles. In mmgraph terms that
is a frozen Llama causal LM made of the self-attention layers alone, and ``mllama`` cross-attention blocks
(:mod:`orchestrator.fusion`) before the layers that follow each cross-attention layer -- the same computation,
since a cross-attention layer consumes no position and keeps no self-attention cache. The image goes through
``mllama_vision`` (the tiled encoder, padding tiles flagged) and a ``masked_linear`` projector.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, MllamaForConditionalGeneration, PreTrainedModel
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from core.config import FusionConfig, LLMConfig, ModalityConfig, PeerConfig, ProjectorConfig, PromptFormat, SystemConfig
from core.errors import ConfigError
from core.hub import model_identity
from modalities.base import ModalityEncoder
from modalities.image import MllamaVisionEncoder
from orchestrator.peers.base import Peer

#: an Mllama cross-attention layer's parameters -> an mllama block's (orchestrator.fusion.MllamaBlock)
BLOCK_KEYS = {
    "input_layernorm.weight": "attn_norm.weight",
    "cross_attn.q_proj.weight": "q_proj.weight",
    "cross_attn.k_proj.weight": "k_proj.weight",
    "cross_attn.v_proj.weight": "v_proj.weight",
    "cross_attn.o_proj.weight": "o_proj.weight",
    "cross_attn.q_norm.weight": "q_norm.weight",
    "cross_attn.k_norm.weight": "k_norm.weight",
    "cross_attn_attn_gate": "attn_gate",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn.gate_proj.weight",
    "mlp.up_proj.weight": "ffn.up_proj.weight",
    "mlp.down_proj.weight": "ffn.down_proj.weight",
    "cross_attn_mlp_gate": "ffn_gate",
}


class Mllama(Peer):
    """``MllamaForConditionalGeneration`` (meta-llama/Llama-3.2-11B-Vision(-Instruct), 90B)."""

    architecture: ClassVar[str] = "MllamaForConditionalGeneration"
    model_class: ClassVar[type[PreTrainedModel]] = MllamaForConditionalGeneration

    @property
    def cross_layers(self) -> list[int]:
        return sorted(self.hf_config.text_config.cross_attention_layers)

    def block_positions(self) -> list[int]:
        """Where each cross-attention layer sits among the self-attention layers: before the one that follows it
        (layer ``c`` of the mixed stack, with ``i`` cross-attention layers before it, comes before self-attention
        layer ``c - i``)."""
        return [c - i for i, c in enumerate(self.cross_layers)]

    def system_config(self) -> SystemConfig:
        text = self.hf_config.text_config
        template = self.chat_template()
        if not template:
            raise ConfigError(f"{self.path}: no chat template in the checkpoint (chat_template.jinja / .json)")
        if self.cross_layers[-1] == text.num_hidden_layers - 1:
            raise ConfigError(f"{self.path}: a cross-attention layer after the last self-attention layer")
        return SystemConfig(
            name=f"{self.architecture} ({self.path})",
            llm=LLMConfig(model=self.path, prompt=PromptFormat(system="", chat_template=template)),
            fusion=FusionConfig(
                kind="cross_attention",
                block="mllama",
                layers=self.block_positions(),
                heads=text.num_attention_heads,
                kv_heads=text.num_key_value_heads,
                ffn_size=text.intermediate_size,
                norm_eps=text.rms_norm_eps,
            ),
            modalities={
                "image": ModalityConfig(
                    encoder=MllamaVisionEncoder.kind,
                    model=self.path,
                    placeholder=self.placeholder(self.hf_config.image_token_index),
                    projector=ProjectorConfig(kind="masked_linear"),
                )
            },
            peer=PeerConfig(path=self.path, architecture=self.architecture),
        )

    def language_model(self, model: PreTrainedModel) -> PreTrainedModel:
        """A ``LlamaForCausalLM`` of the self-attention layers (their modules' tensors, not copies), the embedding
        (which has rows for the image token and reserved ids the head never predicts), the final norm, the rotary
        embedding and the LM head."""
        text = self.hf_config.text_config
        stack = model.model.language_model
        cross = set(self.cross_layers)
        selves = [layer for i, layer in enumerate(stack.layers) if i not in cross]
        config = LlamaConfig(
            vocab_size=text.vocab_size,
            hidden_size=text.hidden_size,
            intermediate_size=text.intermediate_size,
            num_hidden_layers=len(selves),
            num_attention_heads=text.num_attention_heads,
            num_key_value_heads=text.num_key_value_heads,
            hidden_act=text.hidden_act,
            max_position_embeddings=text.max_position_embeddings,
            rms_norm_eps=text.rms_norm_eps,
            rope_parameters=text.rope_parameters,
            tie_word_embeddings=False,
            bos_token_id=text.bos_token_id,
            eos_token_id=text.eos_token_id,
            pad_token_id=text.pad_token_id,
        )
        config._attn_implementation = text._attn_implementation
        with torch.device("meta"):
            lm = LlamaForCausalLM(config)
        layers = []
        for j, layer in enumerate(selves):
            with torch.device("meta"):
                ours = LlamaDecoderLayer(config, layer_idx=j)
            ours.load_state_dict(layer.state_dict(), assign=True)  # the same tensors, under Llama's layer class
            layers.append(ours)
        lm.model.layers = nn.ModuleList(layers)
        lm.model.embed_tokens = stack.embed_tokens
        lm.model.norm = stack.norm
        lm.model.rotary_emb = stack.rotary_emb
        lm.lm_head = model.lm_head
        stray = [n for n, p in lm.named_parameters() if p.is_meta] + [n for n, b in lm.named_buffers() if b.is_meta]
        if stray:
            raise ConfigError(f"{self.path}: parts of the language model not taken from the checkpoint: {stray[:3]}")
        return lm

    def encoder(self, model: PreTrainedModel, modality: str, cfg: ModalityConfig) -> ModalityEncoder:
        encoder = MllamaVisionEncoder(cfg, model.model.vision_model, self.image_processor())
        encoder.model_ref = model_identity(self.folder)
        return encoder

    def imported_state(self, model: PreTrainedModel) -> dict[str, torch.Tensor]:
        state = {
            f"input_projectors.image.proj.{k}": v for k, v in model.model.multi_modal_projector.state_dict().items()
        }
        layers = model.model.language_model.layers
        for position, c in zip(self.block_positions(), self.cross_layers, strict=True):
            theirs = layers[c].state_dict()
            if set(theirs) != set(BLOCK_KEYS):
                raise ConfigError(f"{self.path}: cross-attention layer {c} has tensors {sorted(theirs)}")
            state.update({f"fusion.blocks.{position}.{BLOCK_KEYS[k]}": v for k, v in theirs.items()})
        return state
