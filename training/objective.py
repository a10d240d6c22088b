"""The loss of one batch: what a training step computes, from cached features to the weighted total.

A step reads like the method: cached encoder features -> input projectors -> splice -> frozen LLM (the system's
one composite forward, :meth:`MMSystem.forward <orchestrator.system.MMSystem.forward>`) -> LM loss on assistant
tokens; hidden states at the signal tokens -> output projectors -> alignment loss with cached targets (and,
optionally, the frozen generator's latent-diffusion loss through the output projector).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from generators.output_projectors import alignment_loss
from training.batches import Batch, Share


class ProjectorObjective(nn.Module):
    """Wraps an MMSystem; ``forward(batch)`` returns ``(total loss, {name: detached loss})``. This is the module
    DDP wraps: it owns the projectors and the backbone (frozen but for signal rows / LoRA)."""

    def __init__(
        self,
        system,
        *,
        lm_weight: float = 1.0,
        align_weight: float = 1.0,
        diffusion_weight: float = 0.0,
        compile_llm: bool = False,
    ) -> None:
        super().__init__()
        self.system = system
        self.lm_weight = lm_weight
        self.align_weight = align_weight
        self.diffusion_weight = diffusion_weight
        self.compile_llm = compile_llm
        self._compiled: dict[int, Any] = {}  # id(LLM) -> its compiled wrapper; a plain dict, so not a submodule

    def llm(self):
        """The frozen LLM as this objective runs it: compiled on first use when ``compile_llm`` is set (again if the
        backbone's model was replaced, e.g. by LoRA wrapping)."""
        model = self.system.backbone.model
        if not self.compile_llm:
            return model
        if id(model) not in self._compiled:
            self._compiled = {id(model): torch.compile(model)}
        return self._compiled[id(model)]

    def forward(self, batch: Batch, share: Share | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch's mean losses; with ``share`` (``batch`` is one micro-batch of a step), this micro-batch's part
        of the step's means: summed over its tokens / outputs and divided by the step's counts."""
        system = self.system
        # 1. the system's composite forward: cached encoder features -> input projectors -> splice -> frozen LLM.
        #    The LM head runs only at the columns that predict a label (logits at t predict the label at t+1), not
        #    over every image slot and prompt token: at LLaVA's shape (576 image tokens) that is most of the
        #    sequence, and its (B, L, V) float logits are the largest tensor of the step
        targets = batch.labels[:, 1:]  # (B, L-1)
        keep = (targets != -100).any(0).nonzero().squeeze(1)  # (P,) columns with a label in some row
        out, embeds = system(
            batch.input_ids,
            batch.features,
            attention_mask=batch.attention_mask,
            instructions=batch.instructions,
            llm=self.llm(),
            use_cache=False,
            output_hidden_states=bool(batch.outputs),
            logits_to_keep=keep,
        )
        # 2. LM loss on assistant tokens
        logits = out.logits.float()  # (B, P, V)
        lm = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets[:, keep].reshape(-1),
            ignore_index=-100,
            reduction="mean" if share is None else "sum",
        )
        if share is not None:
            lm = lm / max(share.tokens, 1)
        parts = {"lm_loss": lm.detach()}
        total = self.lm_weight * lm
        # 3. alignment: hidden states (+ input embeddings) at each signal group -> output projector vs. targets
        if batch.outputs:
            hidden = out.hidden_states[-1]  # (B, L, D)
            for name, (rows, starts) in batch.outputs.items():
                projector = system.output_projectors[name]
                dtype = next(projector.parameters()).dtype
                k = projector.num_signal_tokens
                pos = starts[:, None] + torch.arange(k, device=starts.device)  # (N, k)
                h = hidden[rows[:, None], pos].to(dtype)  # (N, k, D)
                e = embeds[rows[:, None], pos].to(dtype)  # (N, k, D)
                conditioning = projector(h, e)  # {spec: (N, L, D)}
                align = alignment_loss(conditioning, batch.targets[name])  # a mean over outputs (and positions)
                if share is not None:
                    align = align * (len(rows) / share.outputs[name])
                parts[f"align/{name}"] = align.detach()
                total = total + self.align_weight * align
                # 4. optional: the frozen generator's denoising loss on the wanted outputs, through the projector
                if self.diffusion_weight and name in batch.latents:
                    which, latents = batch.latents[name]
                    noise = torch.Generator().manual_seed(batch.noise_seed)
                    diffusion = system.generator(name).diffusion_loss(
                        {k: v[which] for k, v in conditioning.items()}, latents, noise
                    )
                    if share is not None:
                        diffusion = diffusion * (len(which) / share.latents[name])
                    parts[f"diffusion/{name}"] = diffusion.detach()
                    total = total + self.diffusion_weight * diffusion
        return total, parts


__all__ = ["ProjectorObjective"]
