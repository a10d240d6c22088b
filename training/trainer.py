"""MM PT and MM IT: the training loop for the projectors (and optional LoRA), run by ``accelerate``.

One loop serves both stages; they differ in their data and defaults, as in LLaVA and NExT-GPT:

- **MM PT** (``stage="pt"``): pairs. ``X -> caption`` trains the input projectors with the LM loss on the caption;
  ``caption -> signal tokens`` trains the signal rows with the LM loss on the signal tokens and the output
  projectors with the alignment loss against the generator's own text features of the caption.
- **MM IT** (``stage="it"``): multi-turn dialogues mixing understanding and generation; the LM loss covers every
  assistant token (signal tokens included), the alignment loss every generated output; optionally LoRA adapters
  on the LLM train at their own learning rate.

The loss of a batch is :class:`~training.objective.ProjectorObjective`; the run's knobs are
:class:`~training.config.TrainConfig`. Everything frozen is audited before the first step (:mod:`training.audit`);
the caches it reads are filled once (:mod:`training.features`). Checkpoints hold only safetensors and JSON
(:mod:`training.checkpoint`); resuming replays the same data order and gives the same weights as an uninterrupted
run. Several processes (``torchrun`` / ``accelerate launch``) train with DDP (:mod:`training.distributed`);
``batch_size`` is the global batch. Logs and plots: :mod:`training.report`.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.config import SystemConfig
from core.errors import ConfigError
from orchestrator.system import MMSystem, resolve_config
from training.audit import format_audit, freeze_audit
from training.batches import Share, collate, encode_sample, epoch_order, length_chunks
from training.cache import content_hash
from training.checkpoint import CHECKPOINT_DIR, OPTIMIZER_FILE, load_training_state, write_checkpoint
from training.config import DEFAULT_LR, TrainConfig, TrainResult
from training.data import DataError, Sample, load_samples
from training.distributed import make_accelerator, reduce_losses
from training.features import cache_root, fill_caches
from training.meter import metered
from training.objective import ProjectorObjective
from training.optim import adamw
from training.report import LOG_FILE, PLOT_FILE, StepLog, plot_losses, progress_bar, status, write_settings


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
        self.system_config = system.config if system is not None else resolve_config(config)
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
            status(text)

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

    def _optimizer(self):
        cfg, system = self.cfg, self.system
        lr = cfg.resolved_lr()
        groups = [
            {
                # input projectors, cross-attention blocks, output projectors (less any imported frozen)
                "params": [p for m in system.trainable_modules().values() for p in m.parameters()],
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
        if self.encoded is not None:
            return
        cfg = self.cfg
        self.accelerator = acc = make_accelerator(cfg.device, cfg.mixed_precision)
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
            caches = fill_caches(
                system,
                samples,
                cache_root(cfg.cache_dir),
                batch_size=cfg.cache_batch_size,
                progress=cfg.progress,
                latents=cfg.diffusion_weight > 0,
            )
        self.features, self.targets, self.latents = caches.features, caches.targets, caches.latents
        slots = {m: system.slots(m) for m in system.modality_names}
        self.encoded = [
            encode_sample(s, system.backbone, slots, caches.hashes, content_hash, caches.target_hashes) for s in samples
        ]

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
        for module in system.trainable_modules().values():
            module.train()
        gc = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else acc.device.type == "cuda"
        if gc and system.fusion.eager_only:
            if cfg.gradient_checkpointing:
                raise ConfigError(
                    "gradient checkpointing recomputes the LLM's layers in backward, after the turn's media have "
                    f"left the {system.config.fusion.kind} blocks: train this system without it"
                )
            gc = False
        if cfg.compile and system.fusion.eager_only:
            raise ConfigError(f"compile: the {system.config.fusion.kind} blocks run eagerly; train without --compile")
        if gc:
            self._enable_gradient_checkpointing()
        optimizer = self._optimizer()
        scheduler = self._scheduler(optimizer, total)
        start = 0
        if self.resume:
            checkpoint = self.out / CHECKPOINT_DIR
            system.load_trainable(checkpoint)
            info = load_training_state(checkpoint, optimizer, scheduler)
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
            write_settings(
                self.out,
                {
                    **cfg.model_dump(),
                    "data": [str(p) for p in self.data],
                    "init": str(self.init) if self.init else None,
                    "samples": n,
                    "steps": total,
                    "processes": acc.num_processes,
                },
            )
        self.say(
            f"{cfg.stage}: {n} samples, batch {batch} over {acc.num_processes} process(es), {total} steps "
            f"({per_epoch} per epoch), lr {cfg.resolved_lr():g}, device {acc.device}"
            + (", LoRA" if cfg.lora else "")
            + (", gradient checkpointing" if gc else "")
        )

        # 4. the loop
        history: list[dict] = []
        stop = total if cfg.stop_after is None else min(total, start + cfg.stop_after)
        bar = progress_bar(total, start, f"mm {cfg.stage}", enabled=cfg.progress and acc.is_main_process)
        log = StepLog(self.out / LOG_FILE if acc.is_main_process else None)
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
                logs = reduce_losses(acc, loss.detach(), parts, self.system.generator_names)
                logs.update(
                    step=step + 1,
                    epoch=epoch + (index + 1) / per_epoch,
                    lr=scheduler.get_last_lr()[0],
                    samples_per_s=batch / (time.perf_counter() - tic),
                    elapsed_s=time.perf_counter() - t0,
                )
                history.append(logs)
                if acc.is_main_process:
                    log.write(logs)
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

    def _checkpoint(self, optimizer, scheduler, step: int, total: int, n: int, batch: int) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            write_checkpoint(
                self.out,
                self.system,
                optimizer,
                scheduler,
                step,
                {"total": total, "samples": n, "batch_size": batch, "stage": self.cfg.stage},
            )
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


__all__ = [
    "DEFAULT_LR",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "ProjectorObjective",
    "train",
    "plot_losses",
]
