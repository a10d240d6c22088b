"""The frozen modality encoder interface every input modality implements.

An encoder turns a batch of decoded media (what :mod:`modalities.media` returns) into features of shape
``(B, G, T, D_enc)``: ``B`` items, ``G`` groups per item (1 for an image or an audio clip, the number of frames
for a video), ``T`` tokens per group, ``D_enc`` channels. The input projector then maps each group's
``(T, D_enc)`` to the LLM's embedding width.

Encoders are frozen: parameters never require gradients, the module stays in eval mode even when a parent
module calls ``.train()``, and ``forward`` runs without autograd. They load real Hugging Face models with
``from_pretrained`` on whatever :func:`core.hub.resolve_model` returns, so a hub id, a local path and
an ``@tiny/<name>`` test component all take the same code path.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from core.config import ModalityConfig
from core.hub import model_identity, resolve_model
from modalities.registry import ENCODERS

E = TypeVar("E", bound="ModalityEncoder")


class ModalityEncoder(nn.Module, ABC):
    """A frozen encoder: decoded media -> features ``(B, G, T, D_enc)``.

    Subclasses set :attr:`input_kind` and :attr:`kind`, implement :meth:`load` (build the module from a
    resolved model folder or id), :meth:`preprocess`, :meth:`forward` and the size properties, and extend
    :meth:`cache_fields` with whatever else changes their features.
    """

    input_kind: ClassVar[str]
    """Which media decoder feeds this encoder: ``"image"``, ``"audio"`` or ``"video"``."""

    kind: ClassVar[str] = ""
    """The registry kind this class is normally registered under (used in cache keys)."""

    def __init__(self, cfg: ModalityConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model_ref = cfg.model  # replaced by from_config with the model's identity (seed / content fingerprint)

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls: type[E],
        cfg: ModalityConfig,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> E:
        """Load ``cfg.model`` (hub id, local path or ``@tiny/<name>``), move it to ``device``/``dtype``, freeze it."""
        path = resolve_model(cfg.model, seed)
        encoder = cls.load(cfg, path)
        encoder.model_ref = model_identity(cfg.model, seed)
        encoder.to(device=device, dtype=dtype)
        return encoder.freeze()

    @classmethod
    @abstractmethod
    def load(cls: type[E], cfg: ModalityConfig, path: str) -> E:
        """Build the encoder from a resolved model path or hub id (``from_pretrained(path)``)."""
        ...

    def freeze(self: E) -> E:
        """Stop gradients to every parameter and switch to eval mode; returns ``self``."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)
        return self

    def train(self: E, mode: bool = True) -> E:
        """Frozen encoders ignore ``train(True)`` so dropout never switches on under a training parent."""
        return super().train(False)

    # -- sizes -----------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """``D_enc``: channels of the returned features."""
        ...

    @property
    @abstractmethod
    def tokens_per_group(self) -> int:
        """``T``: tokens per group (per image, per audio clip, per video frame)."""
        ...

    @property
    def groups(self) -> int:
        """``G``: groups per item (1 for images and audio, the number of frames for video)."""
        return 1

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # -- running ---------------------------------------------------------------------------------------------
    @abstractmethod
    def preprocess(self, items: list[Any]) -> dict[str, torch.Tensor]:
        """Decoded media objects -> batched model inputs (CPU tensors) for :meth:`forward`."""
        ...

    @abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The tensors :meth:`preprocess` returns, passed as keywords -> features ``(B, G, T, D_enc)``."""
        ...

    def encode(self, items: list[Any]) -> torch.Tensor:
        """Convenience: ``forward(**preprocess(items))`` -> ``(B, G, T, D_enc)``."""
        return self(**self.preprocess(items))

    def _to_model(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move an input tensor to the model's device, and floating tensors to its dtype."""
        if tensor.is_floating_point():
            return tensor.to(device=self.device, dtype=self.dtype)
        return tensor.to(device=self.device)

    # -- feature caches --------------------------------------------------------------------------------------
    def cache_fields(self) -> dict[str, Any]:
        """Everything that determines the features; subclasses add their own knobs."""
        return {"kind": self.kind or type(self).__name__, "model": self.model_ref, "dtype": str(self.dtype)}

    def cache_key(self) -> str:
        """A short stable key for feature caches: ``<kind>-<16 hex digits of a hash of cache_fields()>``."""
        fields = self.cache_fields()
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
        return f"{fields['kind']}-{digest[:16]}"


def build_encoder(cfg: ModalityConfig, **kwargs: Any) -> ModalityEncoder:
    """Build the frozen encoder ``cfg.encoder`` names (``device=``, ``dtype=``, ``seed=`` are passed through)."""
    return ENCODERS.get(cfg.encoder).from_config(cfg, **kwargs)
