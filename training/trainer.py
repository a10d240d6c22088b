"""MM PT and MM IT: the training loop for the projectors (and optional LoRA), run by ``accelerate``.

One loop serves both stages; they differ in their data and defaults, as in LLaVA and NExT-GPT:

- **MM PT** (``stage="pt"``): pairs. ``X -> caption`` trains the input projectors with the LM loss on the caption;
  ``caption -> signal tokens`` trains the signal rows with the LM loss on the signal tokens and the output
  projectors with the alignment loss against the generator's own text features of the caption.
- **MM IT** (``stage="it"``): multi-turn dialogues mixing understanding and generation; the LM loss covers every
  assistant token (signal tokens included), the alignment loss every generated output; optionally LoRA adapters
  on the LLM train at their own learning rate.

A step reads like the method: cached encoder features -> input projectors -> splice -> frozen LLM -> LM loss on
assistant tokens; hidden states at the signal tokens -> output projectors -> alignment loss with cached targets.

Everything frozen is audited before the first step (:mod:`training.audit`). Checkpoints hold only
safetensors and JSON; resuming replays the same data order and gives the same weights as an uninterrupted run.
Several processes (``torchrun`` / ``accelerate launch``) train with DDP; ``batch_size`` is the global batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from core.config import SystemConfig, load_config
from core.errors import ConfigError
from core.hub import default_home
from training.audit import format_audit, freeze_audit
from training.batches import Batch, Share, collate, encode_sample, epoch_order, length_chunks
from training.cache import FeatureCache, content_hash, file_hash
from training.data import DataError, Sample, load_samples
from training.meter import metered
from training.optim import adamw

CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "log.jsonl"
PLOT_FILE = "loss.png"
TRAIN_FILE = "train.json"
OPTIMIZER_FILE = "optimizer.safetensors"

#: learning rates by stage when none is given (LLaVA: 1e-3 for pre-training the projector, lower for tuning)
DEFAULT_LR = {"pt": 1e-3, "it": 2e-4}


class TrainConfig(BaseModel):
    """Knobs of one training run (plain data; saved as ``train.json`` in the output folder)."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["pt", "it"] = "pt"
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(
        None, ge=1, description="Length of the run (and its LR schedule) in steps; default epochs x steps per epoch."
    )
    stop_after: int | None = Field(
        None,
        ge=1,
        description="Stop after this many steps in this invocation, leaving a checkpoint to resume (time-sliced jobs).",
    )
    batch_size: int = Field(8, ge=1, description="Global batch size, split across processes.")
    lr: float | None = Field(None, gt=0, description="Projector / signal-row learning rate (default by stage).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of the projectors (never of signal rows).")
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = Field(1.0, gt=0)
    lm_weight: float = Field(1.0, ge=0)
    align_weight: float = Field(1.0, ge=0)
    diffusion_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of the optional latent-diffusion loss through the "
        "frozen generator (0: off); needs output target files.",
    )
    lora: bool = False
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: str | list[str] = "all-linear"
    lora_lr: float = Field(2e-4, gt=0)
    seed: int = 0
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0: only when stopping / at the end).")
    cache_dir: str | None = Field(None, description="Feature cache root; default $MMGRAPH_HOME/cache/features.")
    cache_batch_size: int = Field(16, ge=1)
    device: str = Field("auto", description="auto | cpu | cuda")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool | None = Field(None, description="default: on when training on a GPU")
    compile: bool = Field(
        False,
        description="Run the frozen LLM's forward (and so its backward) through "
        "torch.compile: fused norms, rotary and gating kernels, fewer saved "
        "activations; a one-off compilation, then faster steps on a GPU.",
    )
    group_by_length: bool = Field(
        False,
        description="Batch samples of similar token length together (shuffled "
        "mega-batches of 50 batches, each sorted by length): less "
        "padding, the same samples per epoch.",
    )
    micro_batches: int = Field(
        1,
        ge=1,
        description="Cut each step's batch (per process) into this many micro-batches "
        "of similar token length and accumulate their gradients: the "
        "same samples and, up to float rounding, the same step, with "
        "less padding (on a CPU, where padded tokens cost full price).",
    )
    progress: bool = True

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.stage]


@dataclass
class TrainResult:
    out: Path
    steps: int
    history: list[dict] = field(default_factory=list)
    finished: bool = True
    main_process: bool = True

    def losses(self, key: str = "loss") -> list[float]:
        return [h[key] for h in self.history if key in h]


# ---------------------------------------------------------------------------------------------------------------
# the loss of one batch
# ---------------------------------------------------------------------------------------------------------------
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
        from generators.output_projectors import alignment_loss

        system = self.system
        backbone = system.backbone
        # 1. project the cached encoder features and splice them into the placeholder slots
        features = {m: system.project(m, x).flatten(0, 1) for m, x in batch.features.items()}  # (items*slots, D)
        embeds = backbone.embed(batch.input_ids, features)  # (B, L, D)
        # 2. frozen LLM; the LM head runs only at the columns that predict a label (logits at t predict the label
        #    at t+1), not over every image slot and prompt token: at LLaVA's shape (576 image tokens) that is most
        #    of the sequence, and its (B, L, V) float logits are the largest tensor of the step
        targets = batch.labels[:, 1:]  # (B, L-1)
        keep = (targets != -100).any(0).nonzero().squeeze(1)  # (P,) columns with a label in some row
        out = self.llm()(
            inputs_embeds=embeds,
            attention_mask=batch.attention_mask,
            use_cache=False,
            output_hidden_states=bool(batch.outputs),
            logits_to_keep=keep,
        )
        # 3. LM loss on assistant tokens
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
        # 4. alignment: hidden states (+ input embeddings) at each signal group -> output projector vs. targets
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
                # 5. optional: the frozen generator's denoising loss on the wanted outputs, through the projector
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


# ---------------------------------------------------------------------------------------------------------------
# checkpoints: safetensors + JSON only
# ---------------------------------------------------------------------------------------------------------------
def _save_training_state(path: Path, optimizer, scheduler, step: int, meta: dict) -> None:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    info = {
        "step": step,
        "param_groups": state["param_groups"],
        "scalars": scalars,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        **meta,
    }
    save_file(tensors, str(path / OPTIMIZER_FILE), metadata={"trainer": json.dumps(info)})


def _load_training_state(path: Path, optimizer, scheduler) -> dict:
    from safetensors import safe_open

    with safe_open(str(path / OPTIMIZER_FILE), framework="pt") as handle:
        info = json.loads(handle.metadata()["trainer"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in info["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    scheduler.load_state_dict({**scheduler.state_dict(), **info["scheduler"]})
    torch.set_rng_state(tensors["rng.cpu"])
    return info


# ---------------------------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------------------------
class Trainer:
    """Trains one system on one data set. ``Trainer(...).run()`` or :func:`train`.

    Args:
        config: the system (preset name, YAML path or SystemConfig).
        data: one or more JSON / JSONL files (:mod:`training.data`).
        out: output folder: ``trainable.safetensors`` + ``system.yaml`` (load with ``weights=out``), ``train.json``,
            ``log.jsonl``, ``loss.png`` and ``checkpoint/``.
        init: a previous run's folder whose trainable weights start this one (IT after PT).
        train: a :class:`TrainConfig` (or a dict of its fields).
        resume: continue from ``out/checkpoint``.
        overwrite: start afresh even if ``out`` holds a run.
        callbacks: ``fn(trainer, step, logs)`` after every step (main process).
        system: an already built MMSystem to train in place (tests, notebooks).
    """

    def __init__(
        self,
        config: SystemConfig | str | Path | None,
        data: str | Path | Sequence[str | Path],
        out: str | Path | None,
        *,
        init: str | Path | None = None,
        train: TrainConfig | dict | None = None,
        resume: bool = False,
        overwrite: bool = False,
        callbacks: Sequence[Callable[[Trainer, int, dict], None]] = (),
        system=None,
    ) -> None:
        self.cfg = train if isinstance(train, TrainConfig) else TrainConfig(**(train or {}))
        self.system_config = system.config if system is not None else load_config(config)
        self.data = [Path(p) for p in ([data] if isinstance(data, (str, Path)) else data)]
        self.out = Path(out) if out is not None else None  # None: evaluate() only
        self.init = Path(init) if init is not None else None
        self.resume = resume
        self.callbacks = list(callbacks)
        self.system = system
        self.encoded = None  # set by prepare()
        if not self.data:
            raise ConfigError("no training data given")
        if self.out is None:
            return
        finished = (self.out / "trainable.safetensors").exists() or (self.out / CHECKPOINT_DIR).exists()
        if finished and not (resume or overwrite):
            raise ConfigError(
                f"{self.out} already holds a training run; pass resume=True (--resume) to continue it "
                f"or overwrite=True (--overwrite) to start again"
            )
        if resume and not (self.out / CHECKPOINT_DIR / OPTIMIZER_FILE).exists():
            raise ConfigError(f"nothing to resume: {self.out / CHECKPOINT_DIR} holds no checkpoint")
        if overwrite and not resume:
            for name in (CHECKPOINT_DIR, LOG_FILE, PLOT_FILE):
                target = self.out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()

    # -- helpers ------------------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if self.cfg.progress and self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)

    def _cache_root(self) -> Path:
        if self.cfg.cache_dir:
            return Path(self.cfg.cache_dir)
        return default_home() / "cache" / "features"

    # -- setup --------------------------------------------------------------------------------------------------
    def _setup_accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        cfg = self.cfg
        cuda = torch.cuda.is_available() and cfg.device != "cpu"
        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
        precision = cfg.mixed_precision if cfg.mixed_precision != "auto" else ("bf16" if cuda else "no")
        # Batches without an output (or without a modality) leave some projectors unused: DDP must allow it.
        return Accelerator(
            cpu=not cuda,
            mixed_precision=precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )

    def _load_samples(self) -> list[Sample]:
        samples: list[Sample] = []
        errors: list[str] = []
        for path in self.data:
            if not path.exists():
                raise ConfigError(f"training data file {path} does not exist")
            try:
                samples += load_samples(
                    path, modalities=self.system.modality_names, generators=self.system.generator_names
                )
            except DataError as exc:
                errors += exc.errors
        if errors:
            raise DataError(errors)
        if not samples:
            raise ConfigError(f"no training samples in {', '.join(map(str, self.data))}")
        return samples

    def _fill_caches(self, samples: list[Sample]) -> tuple[dict, dict, dict[Path, str]]:
        """Hash every input file and output caption; compute what the caches miss (main process first)."""
        system, cfg, root = self.system, self.cfg, self._cache_root()
        hashes: dict[Path, str] = {}
        for sample in samples:
            for paths in sample.media.values():
                for p in paths:
                    if p not in hashes:
                        hashes[p] = file_hash(p)
        features: dict[str, FeatureCache] = {}
        for modality in system.modality_names:
            wanted = {hashes[p]: p for s in samples for p in s.media.get(modality, [])}
            if not wanted:
                continue
            cache = features[modality] = FeatureCache(root, system.encoder_key(modality))
            cache.fill(
                wanted,
                lambda paths, m=modality: self._encode(m, paths),
                batch_size=cfg.cache_batch_size,
                desc=f"caching {modality} features",
                progress=cfg.progress,
            )
        targets: dict[str, dict[str, FeatureCache]] = {}
        for name in system.generator_names:
            captions = {content_hash(o.caption): o.caption for s in samples for o in s.outputs() if o.modality == name}
            if not captions:
                continue
            tool = system.generator(name)
            caches = targets[name] = {
                spec.name: FeatureCache(root, f"{tool.cache_key()}-{spec.name}") for spec in tool.conditioning_specs()
            }
            todo = sorted({d for c in caches.values() for d in c.missing(captions)})
            for start in range(0, len(todo), cfg.cache_batch_size):
                chunk = todo[start : start + cfg.cache_batch_size]
                encoded = tool.encode_text([captions[d] for d in chunk])  # {name: (n, L, D)}
                for spec_name, cache in caches.items():
                    cache.put(dict(zip(chunk, encoded[spec_name].float().cpu().unbind(0))))
        latents = self._fill_latents(samples, root) if cfg.diffusion_weight > 0 else None
        return features, targets, hashes, latents

    def _fill_latents(self, samples: list[Sample], root: Path) -> tuple[dict[str, FeatureCache], dict[Path, str]]:
        """Clean VAE latents of every output target file, for the latent-diffusion loss."""
        system, limits = self.system, self.system.config.limits
        files: dict[str, dict[str, Path]] = {}
        hashes: dict[Path, str] = {}
        for sample in samples:
            for out in sample.outputs():
                if out.target is not None:
                    hashes.setdefault(out.target, file_hash(out.target))
                    files.setdefault(out.modality, {})[hashes[out.target]] = out.target
        if not files:
            raise ConfigError(
                "the latent-diffusion loss needs output targets: give 'output_media' (or 'target' in "
                "a caption/generate pair) in the data, or set diffusion_weight to 0"
            )
        unsupported = [g for g in files if not system.generator(g).supports_diffusion_loss]
        if unsupported:
            raise ConfigError(
                f"the latent-diffusion loss is not available for generator(s) {unsupported} "
                f"(kinds: {[system.config.generators[g].kind for g in unsupported]})"
            )
        caches: dict[str, FeatureCache] = {}
        for name, wanted in files.items():
            tool = system.generator(name)
            cache = caches[name] = FeatureCache(root, tool.latents_cache_key())
            cache.fill(
                wanted,
                lambda paths, t=tool: t.target_latents([Path(p).read_bytes() for p in paths], limits),
                batch_size=self.cfg.cache_batch_size,
                desc=f"caching {name} target latents",
                progress=self.cfg.progress,
            )
        return caches, hashes

    def _encode(self, modality: str, paths: list[Path]) -> torch.Tensor:
        from core.errors import MediaError

        items = []
        for path in paths:
            try:
                items.append(self.system.decode(modality, Path(path).read_bytes()))
            except MediaError as exc:
                raise DataError([f"{path}: cannot use this {modality}: {exc}"]) from exc
        return self.system.encode(modality, items).float().cpu()  # (n, G, T, D_enc)

    def _optimizer(self):
        cfg, system = self.cfg, self.system
        lr = cfg.resolved_lr()
        groups = [
            {
                "params": [p for p in system.input_projectors.parameters()]
                + [p for p in system.output_projectors.parameters()],
                "lr": lr,
                "weight_decay": cfg.weight_decay,
                "name": "projectors",
            },
            # no weight decay: a decayed matrix would move its frozen rows too
            {
                "params": list({id(p): p for p in system.backbone.signal_row_parameters().values()}.values()),
                "lr": lr,
                "weight_decay": 0.0,
                "name": "signal_rows",
            },
        ]
        if cfg.lora:
            groups.append(
                {
                    "params": list(system.backbone.lora_parameters().values()),
                    "lr": cfg.lora_lr,
                    "weight_decay": cfg.weight_decay,
                    "name": "lora",
                }
            )
        groups = [g for g in groups if g["params"]]  # e.g. no signal rows in a system without generators
        return adamw(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)

    def _scheduler(self, optimizer, total: int):
        warmup = math.ceil(self.cfg.warmup_ratio * total)
        cosine = self.cfg.schedule == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            progress = (step - warmup) / max(total - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    # -- the run ------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Build the system, apply ``init`` / LoRA, audit what trains, load the data and fill the caches."""
        from orchestrator.system import MMSystem

        if self.encoded is not None:
            return
        cfg = self.cfg
        self.accelerator = acc = self._setup_accelerator()
        if self.system is None:
            # the alignment loss reads only the generators' text encoders: their UNets and VAEs load only for
            # the latent-diffusion loss
            self.system = MMSystem.from_config(
                self.system_config, device=acc.device, conditioning_only=cfg.diffusion_weight == 0
            )
        system = self.system
        if self.init is not None:
            system.load_trainable(self.init)
        if cfg.lora and system.backbone.lora_settings is None:
            system.backbone.add_lora(
                r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, targets=cfg.lora_targets, seed=cfg.seed
            )
        for param in system.backbone.lora_parameters().values():
            param.requires_grad_(cfg.lora)

        # 1. the freeze audit
        self.audit = freeze_audit(system, train_lora=cfg.lora)
        self.say(format_audit(self.audit))

        # 2. data, tokenised once; caches filled by the main process first, then read by all
        samples = self._load_samples()
        with acc.main_process_first():
            self.features, self.targets, hashes, latents = self._fill_caches(samples)
        self.latents, target_hashes = latents if latents is not None else (None, {})
        slots = {m: system.slots(m) for m in system.modality_names}
        self.encoded = [encode_sample(s, system.backbone, slots, hashes, content_hash, target_hashes) for s in samples]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean losses of the current weights over the whole data (no training; sample-weighted batch means)."""
        self.prepare()
        system, batch = self.system, self.cfg.batch_size
        objective = ProjectorObjective(
            system,
            lm_weight=self.cfg.lm_weight,
            align_weight=self.cfg.align_weight,
            diffusion_weight=self.cfg.diffusion_weight,
        )
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for start in range(0, len(self.encoded), batch):
            items = self.encoded[start : start + batch]
            data = collate(
                items,
                system.backbone.tokenizer.pad_token_id or 0,
                self.features,
                self.targets,
                self.latents,
                noise_seed=self.cfg.seed + start,
            )
            loss, parts = objective(data.to(system.device))
            for name, value in {"loss": loss, **parts}.items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(items)
                counts[name] = counts.get(name, 0) + len(items)
        return {name: sums[name] / counts[name] for name in sums}

    def run(self) -> TrainResult:
        cfg = self.cfg
        if self.out is None:
            raise ConfigError("Trainer.run() needs an output folder")
        self.prepare()
        acc, system = self.accelerator, self.system
        encoded = self.encoded

        n = len(encoded)
        lengths = [len(e.input_ids) for e in encoded]
        per_epoch = n // cfg.batch_size if n >= cfg.batch_size else 1
        batch = min(cfg.batch_size, n)
        if batch < acc.num_processes:
            raise ConfigError(f"batch size {batch} is smaller than the {acc.num_processes} processes")
        total = cfg.max_steps or cfg.epochs * per_epoch

        # 3. optimisation state
        torch.manual_seed(cfg.seed)
        system.input_projectors.train()
        system.output_projectors.train()
        gc = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else acc.device.type == "cuda"
        if gc:
            self._enable_gradient_checkpointing()
        optimizer = self._optimizer()
        scheduler = self._scheduler(optimizer, total)
        start = 0
        if self.resume:
            checkpoint = self.out / CHECKPOINT_DIR
            system.load_trainable(checkpoint)
            info = _load_training_state(checkpoint, optimizer, scheduler)
            if info.get("total") != total or info.get("samples") != n or info.get("batch_size") != batch:
                raise ConfigError(
                    f"{checkpoint} was made for {info.get('total')} steps over {info.get('samples')} "
                    f"samples in batches of {info.get('batch_size')}; this run has {total}, {n}, "
                    f"{batch}: resume with the same data and settings"
                )
            start = info["step"]
        objective = ProjectorObjective(
            system,
            lm_weight=cfg.lm_weight,
            align_weight=cfg.align_weight,
            diffusion_weight=cfg.diffusion_weight,
            compile_llm=cfg.compile,
        )
        model, optimizer = acc.prepare(objective, optimizer)  # the scheduler is stepped once per global step
        trainable = [p for group in optimizer.param_groups for p in group["params"]]

        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / TRAIN_FILE).write_text(
                json.dumps(
                    {
                        **cfg.model_dump(),
                        "data": [str(p) for p in self.data],
                        "init": str(self.init) if self.init else None,
                        "samples": n,
                        "steps": total,
                        "processes": acc.num_processes,
                    },
                    indent=2,
                )
            )
        self.say(
            f"{cfg.stage}: {n} samples, batch {batch} over {acc.num_processes} process(es), {total} steps "
            f"({per_epoch} per epoch), lr {cfg.resolved_lr():g}, device {acc.device}"
            + (", LoRA" if cfg.lora else "")
            + (", gradient checkpointing" if gc else "")
        )

        # 4. the loop
        from tqdm.auto import tqdm

        history: list[dict] = []
        stop = total if cfg.stop_after is None else min(total, start + cfg.stop_after)
        bar = tqdm(
            total=total,
            initial=start,
            desc=f"mm {cfg.stage}",
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5,
            disable=not (cfg.progress and acc.is_main_process),
        )
        log = open(self.out / LOG_FILE, "a") if acc.is_main_process else None
        t0 = time.perf_counter()
        step = start
        try:
            order_epoch, order = -1, None
            for step in metered(range(start, stop), f"mm {cfg.stage}"):
                epoch, index = divmod(step, per_epoch)
                if epoch != order_epoch:  # each epoch's order depends only on the seed: resumable
                    order_epoch = epoch
                    order = torch.tensor(epoch_order(lengths, batch, cfg.seed + epoch, cfg.group_by_length))
                ids = order[index * batch : (index + 1) * batch].tolist()
                local = [encoded[i] for i in ids[acc.process_index :: acc.num_processes]]
                tic = time.perf_counter()
                loss, parts = self._forward_backward(
                    model, local, (cfg.seed + 1) * 1_000_003 + step * acc.num_processes + acc.process_index
                )
                if cfg.grad_clip is not None:
                    acc.clip_grad_norm_(trainable, cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                logs = self._reduce(loss.detach(), parts)
                logs.update(
                    step=step + 1,
                    epoch=epoch + (index + 1) / per_epoch,
                    lr=scheduler.get_last_lr()[0],
                    samples_per_s=batch / (time.perf_counter() - tic),
                    elapsed_s=time.perf_counter() - t0,
                )
                history.append(logs)
                if acc.is_main_process:
                    log.write(json.dumps(logs) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{logs['loss']:.4f}", samples_s=f"{logs['samples_per_s']:.1f}")
                    bar.update(1)
                    for callback in self.callbacks:
                        callback(self, step + 1, logs)
                if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < stop:
                    self._checkpoint(optimizer, scheduler, step + 1, total, n, batch)
            step = stop
        except KeyboardInterrupt:
            self.say(f"interrupted: saving a checkpoint at step {step} (resume with --resume)")
            self._checkpoint(optimizer, scheduler, step, total, n, batch)
            raise
        finally:
            bar.close()
            if log is not None:
                log.close()

        # 5. outputs
        self._checkpoint(optimizer, scheduler, stop, total, n, batch)
        finished = stop >= total
        if acc.is_main_process:
            if finished:
                system.save_trainable(self.out)
            plot_losses(
                self.out / LOG_FILE, self.out / PLOT_FILE, title=f"MM {cfg.stage.upper()} - {self.system_config.name}"
            )
        if gc:
            self._disable_gradient_checkpointing()
        system.eval()
        acc.wait_for_everyone()
        self.say(
            f"{'finished' if finished else 'stopped'} at step {stop}/{total}; "
            + (f"weights in {self.out}" if finished else f"resume with --resume ({self.out / CHECKPOINT_DIR})")
        )
        return TrainResult(self.out, stop, history, finished, acc.is_main_process)

    def _forward_backward(self, model, items: list, noise_seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's losses and gradients over ``items`` (this process's share of the batch): in one pass, or in
        ``micro_batches`` passes over runs of similar length whose losses add up to the batch's means."""
        acc, cfg = self.accelerator, self.cfg
        pad = self.system.backbone.tokenizer.pad_token_id or 0
        chunks = length_chunks(items, cfg.micro_batches)
        share = Share.of(items, self.latents) if len(chunks) > 1 else None  # one pass: the objective's own means
        loss, parts = torch.zeros((), device=acc.device), {}
        for j, chunk in enumerate(chunks):
            seed = noise_seed if share is None else noise_seed * len(chunks) + j
            data = collate(chunk, pad, self.features, self.targets, self.latents, noise_seed=seed).to(acc.device)
            # gradients are all-reduced once, after the last micro-batch
            with acc.no_sync(model) if j + 1 < len(chunks) else contextlib.nullcontext():
                with acc.autocast():
                    part_loss, part_parts = model(data, share)
                acc.backward(part_loss)
            loss = loss + part_loss.detach()
            for name, value in part_parts.items():
                parts[name] = parts[name] + value if name in parts else value
        return loss, parts

    def _reduce(self, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> dict[str, float]:
        """Average the step's losses over processes (an alignment term only over processes that had one)."""
        acc = self.accelerator
        names = (
            ["lm_loss"]
            + [f"align/{g}" for g in self.system.generator_names]
            + [f"diffusion/{g}" for g in self.system.generator_names]
        )
        values = torch.zeros(2 * (len(names) + 1), device=acc.device)
        values[0], values[1] = loss.float(), 1.0
        for i, name in enumerate(names, start=1):
            if name in parts:
                values[2 * i], values[2 * i + 1] = parts[name].float(), 1.0
        if acc.num_processes > 1:
            values = acc.reduce(values, reduction="sum")
        out: dict[str, float] = {}
        for i, name in enumerate(["loss"] + names):
            if values[2 * i + 1] > 0:
                out[name] = float(values[2 * i] / values[2 * i + 1])
        aligns = [v for k, v in out.items() if k.startswith("align/")]
        if aligns:
            out["align_loss"] = sum(aligns)
        return out

    def _checkpoint(self, optimizer, scheduler, step: int, total: int, n: int, batch: int) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            folder = self.out / CHECKPOINT_DIR
            tmp = self.out / f".{CHECKPOINT_DIR}.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            self.system.save_trainable(tmp)
            _save_training_state(
                tmp,
                optimizer,
                scheduler,
                step,
                {"total": total, "samples": n, "batch_size": batch, "stage": self.cfg.stage},
            )
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        acc.wait_for_everyone()

    def _enable_gradient_checkpointing(self) -> None:
        """Recompute the frozen LLM's activations in backward. Transformers only checkpoints in train mode, so the
        LLM is put in train mode with every dropout module kept in eval (the LLM itself must not change)."""
        model = self.system.backbone.model
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.eval()

    def _disable_gradient_checkpointing(self) -> None:
        model = self.system.backbone.model
        model.gradient_checkpointing_disable()
        model.eval()


def train(config, data, out, **kwargs: Any) -> TrainResult:
    """``Trainer(config, data, out, **kwargs).run()``; TrainConfig fields may be passed as keywords."""
    fields = set(TrainConfig.model_fields)
    train_fields = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
    if train_fields:
        base = kwargs.pop("train", None)
        base = base.model_dump() if isinstance(base, TrainConfig) else dict(base or {})
        kwargs["train"] = TrainConfig(**{**base, **train_fields})
    return Trainer(config, data, out, **kwargs).run()


def plot_losses(log: Path, png: Path, *, title: str = "training loss") -> Path | None:
    """Draw the LM and alignment losses of a ``log.jsonl`` (one line per step) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
    if not rows:
        return None
    keys = ["loss", "lm_loss"] + sorted({k for r in rows for k in r if k.startswith(("align/", "diffusion/"))})
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=key, linewidth=1.8 if key == "loss" else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


__all__ = ["TrainConfig", "TrainResult", "Trainer", "ProjectorObjective", "train", "plot_losses"]
