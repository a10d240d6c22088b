"""What an importer of a published MM-LLM checkpoint provides (:class:`Peer`), and the parts they share."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from core.config import ModalityConfig, SystemConfig
from core.errors import ConfigError
from modalities.base import ModalityEncoder


class Peer(ABC):
    """One peer checkpoint folder: its equivalent config, and its parts as mmgraph components.

    The Hugging Face class loads its own checkpoint (:meth:`load`), so every key layout it knows -- the one
    ``save_pretrained`` writes today and the older one published checkpoints on the Hub carry -- is read; mmgraph
    then takes its modules as they are (no copy): the vision tower inside an encoder, the language model under a
    causal-LM head, the projector's and blocks' tensors loaded into mmgraph's own modules (:meth:`imported_state`).
    """

    architecture: ClassVar[str]
    model_class: ClassVar[type[PreTrainedModel]]

    def __init__(self, path: str, folder: str, *, freeze: bool = True) -> None:
        self.path = path  # as the config names it (a folder, a hub id or @tiny/<name>)
        self.folder = folder  # where it is on disk
        self.freeze = freeze  # imported projectors and blocks stay frozen
        self.hf_config = AutoConfig.from_pretrained(folder)

    # -- what it is -----------------------------------------------------------------------------------------------
    @abstractmethod
    def system_config(self) -> SystemConfig:
        """The equivalent mmgraph system: LLM and prompt template, modalities (encoder, projector), fusion, peer."""

    def tokenizer(self) -> Any:
        return AutoTokenizer.from_pretrained(self.folder)

    def image_processor(self) -> Any:
        return AutoImageProcessor.from_pretrained(self.folder, backend="pil")

    def chat_template(self) -> str | None:
        """The checkpoint's chat template: the processor's (``chat_template.jinja`` / ``.json``), else the
        tokenizer's."""
        folder = Path(self.folder)
        if (folder / "chat_template.jinja").is_file():
            return (folder / "chat_template.jinja").read_text()
        if (folder / "chat_template.json").is_file():
            return str(json.loads((folder / "chat_template.json").read_text())["chat_template"])
        template = self.tokenizer().chat_template
        return str(template) if template else None

    def placeholder(self, token_id: int) -> str:
        """The token string of the checkpoint's image token id (which must be one token of its tokenizer)."""
        token = self.tokenizer().convert_ids_to_tokens(token_id)
        if not isinstance(token, str):
            raise ConfigError(f"{self.path}: the image token id {token_id} is not in the tokenizer")
        return token

    # -- its parts ------------------------------------------------------------------------------------------------
    def load(self, *, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
        """The whole Hugging Face model, from its own checkpoint, on ``device``."""
        model: torch.nn.Module = self.model_class.from_pretrained(self.folder, dtype=dtype)
        return cast(PreTrainedModel, model.to(device).eval())

    @abstractmethod
    def language_model(self, model: PreTrainedModel) -> PreTrainedModel:
        """A causal LM (``AutoModelForCausalLM`` class of the text config) running ``model``'s language model."""

    @abstractmethod
    def encoder(self, model: PreTrainedModel, modality: str, cfg: ModalityConfig) -> ModalityEncoder:
        """The frozen encoder of ``modality``, wrapping ``model``'s vision module."""

    @abstractmethod
    def imported_state(self, model: PreTrainedModel) -> dict[str, torch.Tensor]:
        """The peer's projector (and block) tensors, keyed as in :meth:`MMSystem.trainable_state_dict`
        (``input_projectors.image.*``, ``fusion.*``)."""


def causal_lm(text_config: Any, decoder: torch.nn.Module, head: torch.nn.Module) -> PreTrainedModel:
    """The ``AutoModelForCausalLM`` class of ``text_config`` around an existing decoder stack and LM head (shared,
    not copied): what a peer's ``language_model`` + ``lm_head`` compute, as a standalone causal LM."""
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(text_config)
    setattr(lm, lm.base_model_prefix, decoder)
    lm.set_output_embeddings(head)
    stray = [name for name, p in lm.named_parameters() if p.is_meta] + [n for n, b in lm.named_buffers() if b.is_meta]
    if stray:
        raise ConfigError(f"{type(lm).__name__}: parts not taken from the checkpoint: {stray[:3]}")
    return lm


__all__ = ["Peer", "causal_lm"]
