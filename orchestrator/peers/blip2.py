"""BLIP-2 (``Blip2ForConditionalGeneration``) and InstructBLIP (``InstructBlipForConditionalGeneration``): a ViT
whose final states a Querying Transformer reduces to ``num_query_tokens`` queries, projected into a decoder-only LM
(OPT, Vicuna) ahead of the prompt. InstructBLIP's Q-Former also reads the instruction.

In mmgraph terms: encoder ``blip_vision``, projector ``blip2_qformer`` / ``instructblip_qformer`` (Hugging Face's
own Q-Former modules, their config in the projector's options), fusion ``splice``. Neither checkpoint carries a chat
template: the processor puts the image tokens first, before the BOS, and the text after; the template below lays a
conversation out the same way. The Flan-T5 variants (an encoder-decoder LM) are refused with a clear error.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from transformers import Blip2ForConditionalGeneration, InstructBlipForConditionalGeneration, PreTrainedModel

from core.config import LLMConfig, ModalityConfig, PeerConfig, ProjectorConfig, PromptFormat, SystemConfig
from core.errors import ConfigError
from core.hub import model_identity
from modalities.base import ModalityEncoder
from modalities.image import BlipVisionEncoder
from orchestrator.peers.base import Peer

#: BLIP's layout: the texts in order, an assistant's closed by the EOS; the image tokens go before it all
#: (``PromptFormat.media_first``), as the processors prepend them to the tokenised text
BLIP_TEMPLATE = (
    "{% for message in messages %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
#: config keys that describe a config file, not the Q-Former
_NOT_SETTINGS = {"model_type", "transformers_version", "architectures", "encoder_hidden_size", "dtype"}


class Blip2(Peer):
    """``Blip2ForConditionalGeneration`` (Salesforce/blip2-opt-2.7b and its kin)."""

    architecture: ClassVar[str] = "Blip2ForConditionalGeneration"
    model_class: ClassVar[type[PreTrainedModel]] = Blip2ForConditionalGeneration
    projector_kind: ClassVar[str] = "blip2_qformer"

    def projector_options(self) -> dict[str, Any]:
        settings = {k: v for k, v in self.hf_config.qformer_config.to_dict().items() if k not in _NOT_SETTINGS}
        return {"qformer": settings}

    def system_config(self) -> SystemConfig:
        hf = self.hf_config
        if not hf.use_decoder_only_language_model:
            raise ConfigError(
                f"{self.path}: its language model is {hf.text_config.model_type}, an encoder-decoder; mmgraph's LLM "
                "is a decoder-only causal LM (the OPT / Vicuna variants import)"
            )
        return SystemConfig(
            name=f"{self.architecture} ({self.path})",
            llm=LLMConfig(
                model=self.path,
                prompt=PromptFormat(system="", chat_template=self.chat_template() or BLIP_TEMPLATE, media_first=True),
            ),
            modalities={
                "image": ModalityConfig(
                    encoder=BlipVisionEncoder.kind,
                    model=self.path,
                    placeholder=self.placeholder(hf.image_token_index),
                    projector=ProjectorConfig(
                        kind=self.projector_kind,
                        num_queries=hf.num_query_tokens,
                        options=self.projector_options(),
                    ),
                )
            },
            peer=PeerConfig(path=self.path, architecture=self.architecture),
        )

    def language_model(self, model: PreTrainedModel) -> PreTrainedModel:
        return cast(PreTrainedModel, model.language_model)  # already a causal LM with its head

    def encoder(self, model: PreTrainedModel, modality: str, cfg: ModalityConfig) -> ModalityEncoder:
        encoder = BlipVisionEncoder(cfg, cast(PreTrainedModel, model.vision_model), self.image_processor())
        encoder.model_ref = model_identity(self.folder)
        return encoder

    def imported_state(self, model: PreTrainedModel) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {"input_projectors.image.query_tokens": cast(torch.Tensor, model.query_tokens)}
        for name in ("qformer", "language_projection"):
            part = getattr(model, name).state_dict()
            state.update({f"input_projectors.image.{name}.{k}": v for k, v in part.items()})
        return state


class InstructBlip(Blip2):
    """``InstructBlipForConditionalGeneration`` (Salesforce/instructblip-vicuna-7b and its kin): the Q-Former also
    reads the instruction, tokenised by the checkpoint's ``qformer_tokenizer``."""

    architecture: ClassVar[str] = "InstructBlipForConditionalGeneration"
    model_class: ClassVar[type[PreTrainedModel]] = InstructBlipForConditionalGeneration
    projector_kind: ClassVar[str] = "instructblip_qformer"

    def projector_options(self) -> dict[str, Any]:
        return {
            **super().projector_options(),
            "instruction_tokenizer": {"model": self.path, "subfolder": "qformer_tokenizer"},
        }
