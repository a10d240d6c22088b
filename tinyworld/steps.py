"""The bodies of the tinyworld recipe's steps: what each step of :data:`~tinyworld.config.STEP_TABLE` trains, with
which settings and seed, and where its outputs land (:data:`STEPS`).

A step gets a :class:`Context` (the run folder, the :class:`~tinyworld.config.RecipeConfig`, the device) and
returns its metrics. Finished components go to ``OUT/weights/<name>`` in the layout of the packaged
``tinyworld/weights`` (``@tinyworld/<name>``), intermediate products to ``OUT/work``. :mod:`tinyworld.runner`
decides when each step runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.config import PRESET_DIR, SystemConfig
from generators import GENERATORS
from orchestrator.system import resolve_device
from tinyworld.config import STEP_TABLE, RecipeConfig
from tinyworld.data import write_datasets
from tinyworld.diffusion_models import save_text_side
from tinyworld.diffusion_training import train_audio_generator, train_image_generator, train_vae, train_video_generator
from tinyworld.encoders import train_encoders
from tinyworld.judges import train_judges
from tinyworld.language import train_language_model
from tinyworld.threads import refresh_threads
from training import TrainConfig, Trainer


class Context:
    """Paths and settings shared by the steps of one run."""

    def __init__(self, out: Path, config: RecipeConfig, progress: bool) -> None:
        self.out, self.config, self.progress = out, config, progress
        self.weights = out / "weights"
        self.work = out / "work"
        self.device = str(resolve_device(config.device))  # "auto" -> cuda when there is one

    def seed(self, offset: int) -> int:
        """The seed of one step: the run's seed plus a fixed per-step offset."""
        return self.config.seed * 1000 + offset

    def system_config(self) -> SystemConfig:
        """The preset with ``@tinyworld/<name>`` replaced by this run's ``weights/<name>`` folders."""
        text = (PRESET_DIR / f"{self.config.preset}.yaml").read_text()
        text = text.replace('"@tinyworld/', f'"{self.weights.resolve()}/')
        data = yaml.safe_load(text)
        data.pop("weights", None)
        return SystemConfig.model_validate(data)


@dataclass(frozen=True)
class Step:
    """One recipe step: ``output`` (relative to OUT) marks it done; it runs once every step in ``after`` is done."""

    output: str
    fn: Callable[[Context], dict]
    after: tuple[str, ...] = ()


def _language(ctx: Context) -> dict:
    c = ctx.config
    metrics = train_language_model(
        ctx.work / "llm",
        steps=c.lm_steps,
        dialogues=c.lm_dialogues,
        seed=ctx.seed(1),
        progress=ctx.progress,
        group_by_length=c.grouped("language"),
        micro_batches=c.micro_batches.get("language", 1),
        device=ctx.device,
        free_phrasing=c.free_phrasing,
        honest_answers=c.honest_answers,
        glossary=c.glossary,
        reading=c.reading,
        shapes=c.generate_shapes,
        novel=c.novel_words,
    )
    _move(ctx.work / "llm", ctx.weights / "llm")
    return metrics


def _encoders(ctx: Context) -> dict:
    c = ctx.config
    extra = {"num_train": c.encoder_train} if c.encoder_train else {}
    metrics = train_encoders(
        ctx.work / "encoders",
        steps=c.encoder_steps,
        seed=ctx.seed(2),
        progress=ctx.progress,
        device=ctx.device,
        augment=c.augment,
        **extra,
    )
    shutil.copytree(ctx.work / "encoders" / "image", ctx.weights / "image-encoder", dirs_exist_ok=True)
    shutil.copytree(ctx.work / "encoders" / "audio", ctx.weights / "audio-encoder", dirs_exist_ok=True)
    return {
        **metrics,
        "loss_first": metrics["loss/initial"],
        "loss_last": metrics["loss/image"] + metrics["loss/audio"] + metrics["loss/clip"],
    }


def _vaes(ctx: Context) -> dict:
    c = ctx.config
    rgb = train_vae(
        ctx.work / "vae-rgb",
        channels=3,
        steps=c.vae_steps,
        batch_size=c.vae_batch,
        seed=ctx.seed(3),
        progress=ctx.progress,
        samples=c.samples,
        device=ctx.device,
    )
    mel = train_vae(
        ctx.work / "vae-mel",
        channels=1,
        steps=c.vae_steps,
        batch_size=c.vae_batch,
        seed=ctx.seed(4),
        progress=ctx.progress,
        samples=c.samples,
        device=ctx.device,
    )
    return {"rgb": rgb, "mel": mel}


#: generator kind -> its training function (:mod:`tinyworld.diffusion_training`)
_TRAIN_GENERATOR = {"image": train_image_generator, "video": train_video_generator, "audio": train_audio_generator}


def _generator(kind: str, vae: str, offset: int) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        c = ctx.config
        extra = {"pretrain_steps": c.video_pretrain_steps} if kind == "video" else {}
        return _TRAIN_GENERATOR[kind](
            ctx.work / "encoders" / "text",
            ctx.work / vae,
            ctx.weights / f"{kind}-generator",
            steps=getattr(c, f"{kind}_steps"),
            batch_size=getattr(c, f"{kind}_batch"),
            seed=ctx.seed(offset),
            progress=ctx.progress,
            samples=c.samples,
            device=ctx.device,
            **extra,
        )

    return run


def _data(ctx: Context) -> dict:
    paths = write_datasets(
        ctx.work / "data",
        pt=ctx.config.pt_rows,
        it=ctx.config.it_rows,
        seed=ctx.seed(8),
        mix=ctx.config.pt_mix,
        progress=ctx.progress,
        it_turns=ctx.config.it_turns,
        follow_ups=ctx.config.it_follow_ups,
        free_phrasing=ctx.config.free_phrasing,
        honest_answers=ctx.config.honest_answers,
        augment=ctx.config.augment,
        shapes=ctx.config.generate_shapes,
        novel=ctx.config.novel_words,
    )
    return {name: str(path) for name, path in paths.items()}


def _stage(ctx: Context, stage: str) -> dict:
    c = ctx.config
    is_it = stage == "it"
    train = TrainConfig(
        stage=stage,
        max_steps=c.it_steps if is_it else c.pt_steps,
        batch_size=c.it_batch if is_it else c.pt_batch,
        lr=c.it_lr if is_it else c.pt_lr,
        lora=c.lora and is_it,
        lora_lr=c.it_lr,
        seed=ctx.seed(9 + is_it),
        cache_dir=str(ctx.work / "cache"),
        device=ctx.device,
        progress=ctx.progress,
        warmup_ratio=0.05,
        group_by_length=c.grouped(stage),
        micro_batches=c.micro_batches.get(stage, 1),
    )
    out = ctx.weights / "projectors" if is_it else ctx.work / "pt"
    trainer = Trainer(
        _text_side_system(ctx),
        ctx.work / "data" / f"{stage}.jsonl",
        out,
        train=train,
        init=ctx.work / "pt" if is_it else None,
        overwrite=True,
        callbacks=[lambda _trainer, _step, _logs: refresh_threads()],
    )
    result = trainer.run()
    ctx.system_config().save(out / "system.yaml")  # the system these projectors drive: the finished generators
    history = result.history
    first, last = history[: max(len(history) // 10, 1)], history[-max(len(history) // 10, 1) :]
    mean = lambda rows, key: sum(r[key] for r in rows if key in r) / max(sum(key in r for r in rows), 1)  # noqa: E731
    keys = sorted({k for r in history for k in r if k == "lm_loss" or k.startswith("align/")})
    return {
        "steps": result.steps,
        **{f"{k}_first": mean(first, k) for k in keys},
        **{f"{k}_last": mean(last, k) for k in keys},
    }


def _text_side_system(ctx: Context) -> SystemConfig:
    """The system PT and IT train: each generator stands in as its text side alone (``work/conditioning/<name>``,
    :func:`tinyworld.diffusion_models.save_text_side`), which the trainer loads with ``conditioning_only=True``. The
    generators cross-attend to that very text encoder (the encoders step's text tower), so the alignment targets
    are the finished generators' own, and PT and IT need not wait for the UNets: they train side by side."""
    config = ctx.system_config()
    generators = {}
    for name, gcfg in config.generators.items():
        folder = ctx.work / "conditioning" / name
        if not (folder / "model_index.json").exists():
            save_text_side(ctx.work / "encoders" / "text", folder, GENERATORS.get(gcfg.kind).pipeline_class)
        generators[name] = gcfg.model_copy(update={"model": str(folder.resolve())})
    return config.model_copy(update={"generators": generators})


def _judges(ctx: Context) -> dict:
    extra = {"steps": ctx.config.judge_steps} if ctx.config.judge_steps else {}
    return train_judges(
        ctx.weights / "judges", seed=ctx.seed(11) + 1_000_000, progress=ctx.progress, device=ctx.device, **extra
    )


def _move(src: Path, dst: Path) -> None:
    """Move a finished folder into place (the step's output appears only once it is complete)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.move(str(src), str(dst))


#: step name -> its body
_BODIES: dict[str, Callable[[Context], dict]] = {
    "language": _language,
    "encoders": _encoders,
    "vae": _vaes,
    "data": _data,
    "pt": lambda ctx: _stage(ctx, "pt"),
    "it": lambda ctx: _stage(ctx, "it"),
    "video-generator": _generator("video", "vae-rgb", 6),
    "image-generator": _generator("image", "vae-rgb", 5),
    "audio-generator": _generator("audio", "vae-mel", 7),
    "judges": _judges,
}
if set(_BODIES) != set(STEP_TABLE):
    raise RuntimeError(f"recipe steps without a body or a table entry: {sorted(set(_BODIES) ^ set(STEP_TABLE))}")

#: step name -> :class:`Step`, in the order of :data:`~tinyworld.config.STEP_TABLE` (a sequential run's order)
STEPS: dict[str, Step] = {name: Step(spec.output, _BODIES[name], spec.after) for name, spec in STEP_TABLE.items()}
