"""LLaVA-1.5 (``LlavaForConditionalGeneration``) and LLaVA-NeXT (``LlavaNextForConditionalGeneration``).

LLaVA-1.5: a CLIP (or SigLIP) tower read at ``vision_feature_layer``, CLS dropped under the ``default`` feature
strategy, a 2-layer GELU MLP projector, spliced into a Llama / Vicuna LM. In mmgraph terms: encoder ``clip_vision``
(``feature_layer``, ``keep_cls``), projector ``mlp`` of depth 2, fusion ``splice``, the checkpoint's chat template
and ``<image>`` token.

LLaVA-NeXT adds any-resolution tiling: the image whole plus the tiles of its best grid resolution, laid out as the
image with a learned newline token per row, so an image's token count depends on its size. In mmgraph terms:
encoder ``llava_next_vision``, projector ``llava_next`` (the MLP and the layout), fusion ``splice``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration, PreTrainedModel

from core.config import LLMConfig, ModalityConfig, PeerConfig, ProjectorConfig, PromptFormat, SystemConfig
from core.errors import ConfigError
from core.hub import model_identity
from modalities.base import ModalityEncoder
from modalities.image import ClipVisionEncoder, LlavaNextVisionEncoder, SiglipVisionEncoder, VisionTowerEncoder
from orchestrator.peers.base import Peer, causal_lm

#: the vision towers LLaVA checkpoints carry, by their config's model_type -> mmgraph's encoder class
VISION_TOWERS: dict[str, type[VisionTowerEncoder]] = {
    "clip_vision_model": ClipVisionEncoder,
    "siglip_vision_model": SiglipVisionEncoder,
}


class Llava(Peer):
    """``LlavaForConditionalGeneration`` (llava-hf/llava-1.5-7b-hf and its kin)."""

    architecture: ClassVar[str] = "LlavaForConditionalGeneration"
    model_class: ClassVar[type[PreTrainedModel]] = LlavaForConditionalGeneration

    def _tower(self) -> type[VisionTowerEncoder]:
        kind = self.hf_config.vision_config.model_type
        if kind not in VISION_TOWERS:
            raise ConfigError(
                f"{self.path}: a {kind} vision tower; mmgraph imports LLaVA with {', '.join(VISION_TOWERS)}"
            )
        return VISION_TOWERS[kind]

    def system_config(self) -> SystemConfig:
        hf = self.hf_config
        if not isinstance(hf.vision_feature_layer, int):
            raise ConfigError(
                f"{self.path}: features from several vision layers ({hf.vision_feature_layer}) are not supported yet"
            )
        if not getattr(hf, "multimodal_projector_bias", True) or hf.projector_hidden_act != "gelu":
            raise ConfigError(f"{self.path}: mmgraph's mlp projector has biases and GELU; this one differs")
        template = self.chat_template()
        if not template:
            raise ConfigError(f"{self.path}: no chat template in the checkpoint (chat_template.jinja / .json)")
        return SystemConfig(
            name=f"{self.architecture} ({self.path})",
            llm=LLMConfig(model=self.path, prompt=PromptFormat(system="", chat_template=template)),
            modalities={
                "image": ModalityConfig(
                    encoder=self._tower().kind,
                    model=self.path,
                    placeholder=self.placeholder(hf.image_token_id),
                    feature_layer=hf.vision_feature_layer,
                    keep_cls=hf.vision_feature_select_strategy == "full",
                    projector=ProjectorConfig(kind="mlp", depth=2),
                )
            },
            peer=PeerConfig(path=self.path, architecture=self.architecture),
        )

    def language_model(self, model: PreTrainedModel) -> PreTrainedModel:
        return causal_lm(self.hf_config.text_config, model.model.language_model, model.lm_head)

    def encoder(self, model: PreTrainedModel, modality: str, cfg: ModalityConfig) -> ModalityEncoder:
        encoder = self._tower()(cfg, model.model.vision_tower, self.image_processor())
        encoder.model_ref = model_identity(self.folder)
        return encoder

    def imported_state(self, model: PreTrainedModel) -> dict[str, torch.Tensor]:
        projector = model.model.multi_modal_projector
        state = {"net.0": projector.linear_1, "net.2": projector.linear_2}
        return {
            f"input_projectors.image.{name}.{key}": value
            for name, layer in state.items()
            for key, value in layer.state_dict().items()
        }


class LlavaNext(Llava):
    """``LlavaNextForConditionalGeneration`` (llava-hf/llava-v1.6-vicuna-7b-hf, -mistral-7b-hf and their kin)."""

    architecture: ClassVar[str] = "LlavaNextForConditionalGeneration"
    model_class: ClassVar[type[PreTrainedModel]] = LlavaNextForConditionalGeneration

    def _tower(self) -> type[VisionTowerEncoder]:
        kind = self.hf_config.vision_config.model_type
        if kind != "clip_vision_model":
            raise ConfigError(f"{self.path}: a {kind} vision tower; mmgraph imports LLaVA-NeXT with CLIP")
        return LlavaNextVisionEncoder

    def system_config(self) -> SystemConfig:
        config = super().system_config()
        image = config.modalities["image"]
        projector = ProjectorConfig(
            kind="llava_next",
            options={
                "image_grid_pinpoints": [list(p) for p in self.hf_config.image_grid_pinpoints],
                "tile_size": self.hf_config.vision_config.image_size,
            },
        )
        return config.model_copy(update={"modalities": {"image": image.model_copy(update={"projector": projector})}})

    def imported_state(self, model: PreTrainedModel) -> dict[str, torch.Tensor]:
        projector = model.model.multi_modal_projector
        state = {"input_projectors.image.image_newline": model.model.image_newline.detach()}
        for name, layer in (("mlp.0", projector.linear_1), ("mlp.2", projector.linear_2)):
            state.update({f"input_projectors.image.{name}.{k}": v for k, v in layer.state_dict().items()})
        return state
