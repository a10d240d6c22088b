"""Frozen Whisper encoder for audio: 16 kHz mono samples -> log-mel (openai-whisper) -> WhisperEncoder.

The encoder's positional table fixes its input length: ``2 * max_source_positions`` mel frames of 10 ms
(3000 frames = 30 s for the released checkpoints, 200 frames = 2 s for the tiny test model). Every clip is
therefore padded with silence or trimmed to exactly that many samples before the spectrogram is computed, as
Whisper itself does. The output has ``max_source_positions`` positions (the conv stem halves the frame rate);
``cfg.options["pool"]`` average-pools them by that stride to cut the token count.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from transformers import WhisperModel

from core.config import ModalityConfig
from core.errors import ConfigError
from modalities.base import ModalityEncoder
from modalities.media import SAMPLE_RATE

HOP_LENGTH = SAMPLE_RATE // 100
"""Samples per mel frame: 10 ms (160 samples at 16 kHz), as in Whisper."""


class WhisperAudioEncoder(ModalityEncoder):
    """Audio clips -> Whisper encoder states ``(B, 1, T, D)`` with ``T = ceil(max_source_positions / pool)``."""

    input_kind: ClassVar[str] = "audio"
    kind: ClassVar[str] = "whisper"

    def __init__(self, cfg: ModalityConfig, encoder: torch.nn.Module) -> None:
        super().__init__(cfg)
        self.encoder = encoder
        pool = cfg.options.get("pool", 1)
        if not isinstance(pool, int) or pool < 1:
            raise ConfigError(f"whisper option 'pool' must be a positive integer, got {pool!r}")
        self.pool = pool

    @classmethod
    def load(cls, cfg: ModalityConfig, path: str) -> WhisperAudioEncoder:
        # Released checkpoints hold the full encoder-decoder; keep the encoder, let the decoder be freed.
        encoder = WhisperModel.from_pretrained(path).get_encoder()
        return cls(cfg, encoder)

    # -- sizes -----------------------------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.encoder.config

    @property
    def num_mel_frames(self) -> int:
        """Mel frames the encoder requires: two per output position (the conv stem has stride 2)."""
        return 2 * int(self.config.max_source_positions)

    @property
    def num_samples(self) -> int:
        """Audio samples per clip after padding/trimming (``num_mel_frames`` hops of 10 ms)."""
        return self.num_mel_frames * HOP_LENGTH

    @property
    def hidden_size(self) -> int:
        return int(self.config.d_model)

    @property
    def tokens_per_group(self) -> int:
        return math.ceil(int(self.config.max_source_positions) / self.pool)

    # -- running ---------------------------------------------------------------------------------------------
    def preprocess(self, items: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """16 kHz float mono clips -> ``{"input_features": (B, n_mels, 2 * max_source_positions)}``."""
        import whisper  # noqa: PLC0415 - openai-whisper pulls in numba (slow to import); only preprocess needs it

        mels = []
        for samples in items:
            audio = torch.as_tensor(np.asarray(samples, dtype=np.float32).reshape(-1))
            audio = whisper.pad_or_trim(audio, self.num_samples)  # (num_samples,)
            mel = whisper.log_mel_spectrogram(audio, n_mels=int(self.config.num_mel_bins))  # (n_mels, frames)
            mels.append(mel[:, : self.num_mel_frames])
        return {"input_features": torch.stack(mels)}  # (B, n_mels, frames)

    @torch.no_grad()
    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        """``input_features`` (B, n_mels, frames) -> features (B, 1, T, D)."""
        states = self.encoder(input_features=self._to_model(input_features)).last_hidden_state  # (B, P, D)
        if self.pool > 1:
            # avg_pool1d pools the last axis: (B, P, D) -> (B, D, P) -> (B, D, ceil(P / pool)) -> back.
            states = F.avg_pool1d(states.transpose(1, 2), self.pool, self.pool, ceil_mode=True).transpose(1, 2)
        return states.unsqueeze(1)  # (B, T, D) -> (B, G=1, T, D)

    def cache_fields(self) -> dict[str, Any]:
        return {**super().cache_fields(), "pool": self.pool, "frames": self.num_mel_frames}
