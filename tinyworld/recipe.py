"""The tinyworld recipe: every component of the ``tiny-world`` system trained from scratch, in order.

    mmgraph train world --out runs/world            # or: python -m tinyworld.recipe --out runs/world
    MMGRAPH_TINYWORLD=runs/world/weights mmgraph demo   # use the freshly trained system
    mmgraph train world --plan --out runs/plan --jobs 2  # how long a run would take here (tinyworld.plan)

Steps (each a real Hugging Face / diffusers class at tiny size, seeded from one seed):

1. ``language``  -- SentencePiece tokenizer + ``LlamaForCausalLM`` on the world's text (:mod:`tinyworld.language`)
2. ``encoders``  -- CLIP-style image/text pair and a Whisper-encoder audio tower bound to the same text tower,
   contrastively (:mod:`tinyworld.encoders`)
3. ``vae``       -- ``AutoencoderKL`` for pictures / frames and one for mel spectrograms (:mod:`tinyworld.diffusion`)
4. ``image-generator``, ``video-generator``, ``audio-generator`` -- UNets conditioned on the frozen text tower:
   a ``StableDiffusionPipeline``, a ``TextToVideoSDPipeline`` and a mel-spectrogram ``StableDiffusionPipeline``
5. ``data``      -- MM PT / MM IT data sets rendered from the world (:mod:`tinyworld.data`)
6. ``pt``, ``it`` -- MM PT then MM IT of the projectors (and signal rows, LoRA in IT) with
   :mod:`training`, encoders / LLM / generators frozen
7. ``judges``    -- the independent classifiers ``mmgraph eval`` judges generated media with, trained separately
   from everything above (:mod:`tinyworld.judges`)

Everything lands in ``OUT/weights`` in the layout of the packaged ``tinyworld/weights`` (``@tinyworld/<name>``),
intermediate products in ``OUT/work``; ``OUT/recipe.json`` records each step's seconds and metrics. A step whose
output exists is skipped, so an interrupted run resumes where it stopped (``--overwrite`` starts over).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from core.config import PRESET_DIR, SystemConfig
from core.hub import PACKAGED_WORLD_WEIGHTS as PACKAGED_WEIGHTS


class RecipeConfig(BaseModel):
    """Sizes of every step; the defaults are the shipped system's. :meth:`small` shrinks them for tests."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    threads: int | None = Field(None, description="torch threads (default: torch's own choice)")
    device: str = Field(
        "cpu",
        description="device every step trains on (cpu | cuda | auto); data is rendered and "
        "batches are drawn on the CPU, so a seed draws the same batches anywhere",
    )
    lm_steps: int = 1500
    lm_dialogues: int = 6000
    encoder_steps: int = Field(
        1500,
        description="steps of the CLIP / Whisper encoders (1500 lifted zero-shot picture "
        "shape from 94.7 % at 1000 to 97.7 %; see docs/tinyworld.md)",
    )
    encoder_train: int | None = Field(None, description="pre-rendered training items (default: the module's)")
    samples: int | None = Field(
        None, description="rendered training items of each VAE and generator (default: the diffusion module's)"
    )
    vae_steps: int = 800
    vae_batch: int = 16
    image_steps: int = 1500
    image_batch: int = 64
    video_pretrain_steps: int = Field(
        1000,
        description="steps of the video UNet's 2D twin on single frames (with 500, "
        "900 clip steps drew the asked direction in 82 % of 200 clips)",
    )
    video_steps: int = Field(
        900,
        description="steps of the video UNet on whole clips (the judges found the whole "
        "request in 68.5 / 92.5 / 99 / 98.5 % of 200 clips after 500 / 700 / "
        "900 / 1200; see docs/tinyworld.md)",
    )
    video_batch: int = 16
    audio_steps: int = Field(
        600,
        description="steps of the audio UNet (judged: all of 200 sounds right after 1200 "
        "steps, 99 % after 600; see docs/tinyworld.md)",
    )
    audio_batch: int = 64
    pt_rows: int = 12000
    pt_mix: dict[str, int] | None = Field(
        None,
        description=(
            "weights of the PT tasks ({'video/describe': 6, ...}; see tinyworld.data.task_schedule); "
            "default: tinyworld.data.PT_MIX"
        ),
    )
    it_rows: int = 6000
    it_turns: int = Field(4, description="most exchanges in an IT conversation")
    it_follow_ups: float = Field(
        0.35,
        description="share of later IT exchanges that revisit an earlier thing with "
        "one attribute changed (tinyworld.text.follow_up)",
    )
    group_by_length: bool | list[Literal["language", "pt", "it"]] = Field(
        False,
        description=(
            "batch by token length (less padding, the same data): true for the LLM's dialogues and the PT / IT "
            "samples, or a list of those steps. Off by default: it makes steps 1.3-1.9x faster, but a grouped LLM "
            "dropped image position to 79 % (46.5 % grouped everywhere); see docs/tinyworld.md"
        ),
    )
    pt_steps: int = Field(
        1500,
        description="MM PT steps (image shape on 1000 held-out pictures after PT + IT steps: "
        "1500 + 1000: 97.0 %, 1500 + 1500: 99.1 %, 3000 + 1500: 99.3 %; "
        "see docs/tinyworld.md)",
    )
    it_steps: int = 1500
    pt_batch: int = 32
    it_batch: int = 16
    pt_lr: float = 2e-3
    it_lr: float = 1e-3
    lora: bool = True
    judge_steps: int | None = Field(None, description="judge training steps (default: the module's)")
    preset: str = "tiny-world"

    micro_batches: dict[Literal["language", "pt", "it"], PositiveInt] = Field(
        default_factory=lambda: {"language": 4, "it": 2},
        description=(
            "cut each batch of the LLM's dialogues / the PT / IT samples into this many micro-batches of similar "
            "length and accumulate (a step missing here: 1): the same batches and steps with less padding. On one "
            "CPU thread LLM steps run 1.6x faster with 4, IT steps 1.1x with 2; PT's batches pad little and gain "
            "nothing (docs/tinyworld.md)"
        ),
    )

    def grouped(self, step: str) -> bool:
        """Whether ``step`` (``language``, ``pt`` or ``it``) batches by token length."""
        return self.group_by_length if isinstance(self.group_by_length, bool) else step in self.group_by_length

    @classmethod
    def small(cls, **overrides) -> RecipeConfig:
        """A shrunken recipe for tests: every step runs, each only long enough to show that it learns."""
        base = dict(
            lm_steps=120,
            lm_dialogues=600,
            encoder_steps=60,
            encoder_train=240,
            samples=240,
            vae_steps=60,
            vae_batch=8,
            image_steps=60,
            image_batch=16,
            video_pretrain_steps=30,
            video_steps=15,
            video_batch=4,
            audio_steps=40,
            audio_batch=16,
            pt_rows=90,
            it_rows=60,
            pt_steps=60,
            it_steps=40,
            pt_batch=8,
            it_batch=4,
            judge_steps=60,
            group_by_length=True,
        )
        return cls(**{**base, **overrides})


class Context:
    """Paths and settings shared by the steps of one run."""

    def __init__(self, out: Path, config: RecipeConfig, progress: bool) -> None:
        self.out, self.config, self.progress = out, config, progress
        self.weights = out / "weights"
        self.work = out / "work"
        from orchestrator.system import resolve_device

        self.device = str(resolve_device(config.device))  # "auto" -> cuda when there is one

    def seed(self, offset: int) -> int:
        """The seed of one step: the run's seed plus a fixed per-step offset."""
        return self.config.seed * 1000 + offset

    def system_config(self) -> SystemConfig:
        """The preset with ``@tinyworld/<name>`` replaced by this run's ``weights/<name>`` folders."""
        text = (PRESET_DIR / f"{self.config.preset}.yaml").read_text()
        text = text.replace('"@tinyworld/', f'"{self.weights.resolve()}/')
        import yaml

        data = yaml.safe_load(text)
        data.pop("weights", None)
        return SystemConfig.model_validate(data)


@dataclass(frozen=True)
class Step:
    """One recipe step: ``output`` (relative to OUT) marks it done; it runs once every step in ``after`` is done."""

    output: str
    fn: Callable[[Context], dict]
    after: tuple[str, ...] = ()


#: step name -> Step, in registration order (the order of a sequential run, which respects ``after``)
STEPS: dict[str, Step] = {}


def step(name: str, output: str, after: tuple[str, ...] = ()):
    """Register a recipe step (a decorator); ``after``: the steps whose outputs it reads."""

    def register(fn: Callable[[Context], dict]) -> Callable[[Context], dict]:
        unknown = [a for a in after if a not in STEPS]
        if unknown:
            raise ValueError(f"step {name!r} runs after unregistered steps {unknown}")
        STEPS[name] = Step(output, fn, tuple(after))
        return fn

    return register


@step("language", "weights/llm")
def _language(ctx: Context) -> dict:
    from tinyworld.language import train_language_model

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
    )
    _move(ctx.work / "llm", ctx.weights / "llm")
    return metrics


@step("encoders", "weights/audio-encoder")
def _encoders(ctx: Context) -> dict:
    from tinyworld.encoders import train_encoders

    c = ctx.config
    extra = {"num_train": c.encoder_train} if c.encoder_train else {}
    metrics = train_encoders(
        ctx.work / "encoders",
        steps=c.encoder_steps,
        seed=ctx.seed(2),
        progress=ctx.progress,
        device=ctx.device,
        **extra,
    )
    shutil.copytree(ctx.work / "encoders" / "image", ctx.weights / "image-encoder", dirs_exist_ok=True)
    shutil.copytree(ctx.work / "encoders" / "audio", ctx.weights / "audio-encoder", dirs_exist_ok=True)
    return {
        **metrics,
        "loss_first": metrics["loss/initial"],
        "loss_last": metrics["loss/image"] + metrics["loss/audio"] + metrics["loss/clip"],
    }


@step("vae", "work/vae-mel")
def _vaes(ctx: Context) -> dict:
    from tinyworld.diffusion import train_vae

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


def _generator(kind: str, vae: str, offset: int) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        from tinyworld import diffusion

        c = ctx.config
        train = getattr(diffusion, f"train_{kind}_generator")
        extra = {"pretrain_steps": c.video_pretrain_steps} if kind == "video" else {}
        return train(
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


@step("data", "work/data/it.jsonl")
def _data(ctx: Context) -> dict:
    from tinyworld.data import write_datasets

    paths = write_datasets(
        ctx.work / "data",
        pt=ctx.config.pt_rows,
        it=ctx.config.it_rows,
        seed=ctx.seed(8),
        mix=ctx.config.pt_mix,
        progress=ctx.progress,
        it_turns=ctx.config.it_turns,
        follow_ups=ctx.config.it_follow_ups,
    )
    return {name: str(path) for name, path in paths.items()}


def _stage(ctx: Context, stage: str) -> dict:
    from training import TrainConfig, Trainer

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
    :func:`tinyworld.diffusion.save_text_side`), which the trainer loads with ``conditioning_only=True``. The
    generators cross-attend to that very text encoder (the encoders step's text tower), so the alignment targets
    are the finished generators' own, and PT and IT need not wait for the UNets: they train side by side."""
    from generators import GENERATORS
    from tinyworld.diffusion import save_text_side

    config = ctx.system_config()
    generators = {}
    for name, gcfg in config.generators.items():
        folder = ctx.work / "conditioning" / name
        if not (folder / "model_index.json").exists():
            save_text_side(ctx.work / "encoders" / "text", folder, GENERATORS.get(gcfg.kind).pipeline_class)
        generators[name] = gcfg.model_copy(update={"model": str(folder.resolve())})
    return config.model_copy(update={"generators": generators})


# PT reads the LLM, the encoders (the frozen towers, and the generators' text encoder) and the data; not the UNets
_SYSTEM = ("language", "encoders", "data")
step("pt", "work/pt/trainable.safetensors", after=_SYSTEM)(lambda ctx: _stage(ctx, "pt"))
step("it", "weights/projectors/trainable.safetensors", after=("pt",))(lambda ctx: _stage(ctx, "it"))

_DIFFUSION_INPUTS = ("encoders", "vae")  # the frozen text tower and the VAEs
# Registered after PT and IT: where the scheduler must choose (equal chains), IT, the longest step, goes first.
# The video generator first of the three: it is the longest.
step("video-generator", "weights/video-generator", after=_DIFFUSION_INPUTS)(_generator("video", "vae-rgb", 6))
step("image-generator", "weights/image-generator", after=_DIFFUSION_INPUTS)(_generator("image", "vae-rgb", 5))
step("audio-generator", "weights/audio-generator", after=_DIFFUSION_INPUTS)(_generator("audio", "vae-mel", 7))


@step("judges", "weights/judges")
def _judges(ctx: Context) -> dict:
    from tinyworld.judges import train_judges

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


#: environment variable naming the file in which the scheduler grants a running step more threads
THREADS_FILE = "TINYWORLD_THREADS_FILE"


def refresh_threads() -> None:
    """In a recipe worker, take up the thread count last granted to this step (:func:`_run_parallel` hands the
    cores of finished steps to the ones still running). Long training loops call it now and then; elsewhere it
    does nothing."""
    import os

    path = os.environ.get(THREADS_FILE)
    if not path:
        return
    try:
        granted = int(Path(path).read_text())
    except (OSError, ValueError):
        return
    import torch

    if granted > 0 and granted != torch.get_num_threads():
        torch.set_num_threads(granted)


def _run_step(
    name: str, out: Path, config: RecipeConfig, progress: bool, threads: int | None, grant: str | None = None
) -> tuple[float, dict, list[dict]]:
    """Run one step (in this process or a worker); returns ``(seconds, metrics, loops)``, ``loops`` being the
    :mod:`~training.meter` records of its training loops. ``grant``: the file through which the
    scheduler may raise the step's thread count while it runs (:func:`refresh_threads`)."""
    from training import meter

    meter.reset()
    if threads:
        import torch

        torch.set_num_threads(threads)
    if grant:
        import os

        os.environ[THREADS_FILE] = grant
    start = time.perf_counter()
    metrics = STEPS[name].fn(Context(out, config, progress))
    return time.perf_counter() - start, metrics, meter.collected()


def run(
    out: str | Path,
    config: RecipeConfig | None = None,
    *,
    only: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    jobs: int = 1,
) -> dict:
    """Run the recipe into ``out``; returns the ``recipe.json`` record ``{"config", "steps": {step: {"seconds",
    "metrics", "loops"}}, "total_seconds", "runs": [{"jobs", "threads", "config", "wall_seconds", "steps",
    "timeline"}, ...]}`` (``timeline``: step -> [start, end] seconds into that run; the top ``config`` is the latest
    run's, each run's own is in ``runs``, since ``--only`` can rerun some steps with other settings). ``loops``: the
    seconds per step of the step's training loops (:mod:`training.meter`), which :mod:`tinyworld.plan`
    predicts from.

    ``jobs > 1`` runs independent steps side by side in that many worker processes (the LLM trains while the
    encoders, VAEs and generators do): a step starts once the steps it reads (:attr:`Step.after`) are done, the
    steps at the head of the longest chains first (:func:`chain_lengths`). Each worker gets ``threads / (steps
    running or ready)`` torch threads, at least one; ``threads`` defaults to the machine's cores when ``jobs > 1``.
    Small models use cores far better as separate processes than as threads of one. ``total_seconds`` sums the
    steps' own times; ``wall_seconds`` is what a run took on the clock.
    """
    config = config or RecipeConfig()
    out = Path(out)
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "recipe.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    record["config"] = config.model_dump()
    todo = []
    for name, spec in STEPS.items():
        if only and name not in only:
            continue
        if (out / spec.output).exists() and name in record.get("steps", {}):
            log(f"[{name}] done before ({record['steps'][name]['seconds']:.0f} s), skipped")
            continue
        todo.append(name)
    started = time.perf_counter()
    timeline: dict[str, list[float]] = {}  # step -> [start, end], seconds since this run started

    def begun(name: str) -> None:
        timeline[name] = [round(time.perf_counter() - started, 1)]

    def finished(name: str, seconds: float, metrics: dict, loops: list[dict]) -> None:
        timeline[name].append(round(time.perf_counter() - started, 1))
        if record_path.exists():  # another run of this folder (``--only`` other steps) may have written meanwhile
            record["steps"] = {**json.loads(record_path.read_text()).get("steps", {}), **record.get("steps", {})}
        record.setdefault("steps", {})[name] = {"seconds": round(seconds, 1), "metrics": metrics, "loops": loops}
        record["total_seconds"] = round(sum(s["seconds"] for s in record["steps"].values()), 1)
        record_path.write_text(json.dumps(record, indent=2, default=str))
        log(f"[{name}] {seconds:.0f} s  {json.dumps(metrics, default=str)[:300]}")

    if jobs <= 1:
        for name in todo:
            log(f"[{name}] ...")
            begun(name)
            finished(name, *_run_step(name, out, config, progress, config.threads))
    else:
        _run_parallel(todo, out, config, progress, jobs, log, begun, finished)
    if todo:
        record.setdefault("runs", []).append(
            {
                "jobs": jobs,
                "threads": config.threads,
                "config": config.model_dump(),
                "steps": todo,
                "wall_seconds": round(time.perf_counter() - started, 1),
                "timeline": timeline,
            }
        )
        record_path.write_text(json.dumps(record, indent=2, default=str))
    weights = out / "weights"
    if weights.exists():
        shutil.copy(record_path, weights / "recipe.json")
    return record


def chain_lengths() -> dict[str, int]:
    """Step -> the number of steps on the longest chain that starts with it and follows what reads what (``it``: 1,
    ``pt``: 2, ``encoders``: 3 through PT and IT, ``vae``: 2 through a generator). The parallel scheduler starts
    the longest chains first, ties in recipe order: the LLM and the encoders, then the data and the VAEs."""
    readers: dict[str, list[str]] = {name: [] for name in STEPS}
    for name, spec in STEPS.items():
        for before in spec.after:
            readers[before].append(name)
    lengths: dict[str, int] = {}

    def length(name: str) -> int:
        if name not in lengths:
            lengths[name] = 1 + max((length(r) for r in readers[name]), default=0)
        return lengths[name]

    return {name: length(name) for name in STEPS}


def _run_parallel(
    todo: list[str],
    out: Path,
    config: RecipeConfig,
    progress: bool,
    jobs: int,
    log: Callable[[str], None],
    begun: Callable[[str], None],
    finished: Callable[[str, float, dict, list], None],
) -> None:
    """Schedule ``todo`` over ``jobs`` spawned worker processes, each step once its ``after`` steps are done."""
    import multiprocessing
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    cores = config.threads or os.cpu_count() or 1
    grants = out / "work" / "threads"
    grants.mkdir(parents=True, exist_ok=True)
    granted: dict[str, int] = {}  # running step -> threads
    waiting, running = list(todo), {}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while waiting or running:
            starts, raised = schedule(waiting, granted, jobs, cores)
            for name, threads in starts:
                log(f"[{name}] ... ({threads} thread{'s' * (threads > 1)})")
                begun(name)
                granted[name] = threads
                (grants / name).write_text(str(threads))
                running[pool.submit(_run_step, name, out, config, progress, threads, str(grants / name))] = name
                waiting.remove(name)
            for name, threads in raised.items():
                log(f"[{name}] now {threads} threads")
                granted[name] = threads
                (grants / name).write_text(str(threads))
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                granted.pop(name)
                finished(name, *future.result())


def schedule(
    waiting: list[str], granted: dict[str, int], jobs: int, cores: int
) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """The parallel scheduler's decision at one moment, shared by the real run and :func:`tinyworld.plan.simulate`.

    ``waiting``: steps not started, in recipe order; ``granted``: running step -> its threads. Returns the steps
    to start now with their threads -- the ready ones (nothing they read is waiting or running) at the head of the
    longest chains first (:func:`chain_lengths`), as many as free slots, each ``cores / min(jobs, steps running
    or ready)`` threads -- and the running steps whose threads rise: when a slot stays idle, its cores go to the
    running steps."""
    chain = chain_lengths()  # longest chains first; ties in recipe order
    busy = set(waiting) | set(granted)
    ready = sorted((n for n in waiting if not busy.intersection(STEPS[n].after)), key=lambda n: -chain[n])
    starts: list[tuple[str, int]] = []
    for name in ready[: max(jobs - len(granted), 0)]:
        starts.append((name, max(1, cores // min(jobs, len(granted) + len(starts) + len(ready)))))
    running = len(granted) + len(starts)
    share = max(1, cores // max(running, 1))
    raised = {name: share for name, threads in [*granted.items(), *starts] if share > threads}
    return starts, raised


#: what the package may hold of a run's weights: the limit of the tinyworld issue, and the file kinds it may contain
SHIP_LIMIT_BYTES = 40 * 1000 * 1000  # 40 MB
SHIP_SUFFIXES = {".safetensors", ".json", ".txt", ".model", ".yaml", ".png", ".jsonl"}


#: files shipped with their floating-point tensors stored as float16: the trained projectors, which the system loads
#: with ``load_state_dict`` into its float32 parameters (the pipelines' and models' own files stay as trained)
SHIP_HALF = ("projectors/trainable.safetensors",)


def _half_precision(src: Path) -> bytes:
    """``src`` (safetensors) with every floating tensor as float16; integer tensors and metadata kept."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(src), framework="pt") as handle:
        metadata = handle.metadata()
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    return save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, metadata=metadata)


def ship(weights: str | Path, dest: str | Path = PACKAGED_WEIGHTS, *, limit: int = SHIP_LIMIT_BYTES) -> dict:
    """Copy a run's ``OUT/weights`` into the package (``tinyworld/weights``, the ``@tinyworld/`` components).

    Training checkpoints (optimizer state, only needed to resume) stay behind; the files of :data:`SHIP_HALF`
    are stored in float16. Refuses anything that is not safetensors, JSON, text, a SentencePiece model or a plot
    -- no pickles -- and a total over ``limit`` bytes, before touching ``dest``. Returns ``{"files", "bytes",
    "per_component": {name: bytes}}``."""
    weights, dest = Path(weights), Path(dest)
    files = [f for f in sorted(weights.rglob("*")) if f.is_file() and "checkpoint" not in f.relative_to(weights).parts]
    refused = [str(f.relative_to(weights)) for f in files if f.suffix not in SHIP_SUFFIXES]
    if refused:
        raise ValueError(f"refusing to ship files that are not safetensors / json / text: {refused[:5]}")
    contents = {f: _half_precision(f) if f.relative_to(weights).as_posix() in SHIP_HALF else None for f in files}
    per_component: dict[str, int] = {}
    for f, data in contents.items():
        top = f.relative_to(weights).parts[0]
        per_component[top] = per_component.get(top, 0) + (len(data) if data is not None else f.stat().st_size)
    total = sum(per_component.values())
    if total > limit:
        raise ValueError(
            f"{total / 1e6:.1f} MB of weights is over the {limit / 1e6:.0f} MB limit: "
            + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sorted(per_component.items()))
        )
    if dest.exists():
        shutil.rmtree(dest)
    for f, data in contents.items():
        target = dest / f.relative_to(weights)
        target.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            shutil.copyfile(f, target)
        else:
            target.write_bytes(data)
    return {"files": len(files), "bytes": total, "per_component": per_component}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="run folder (weights land in OUT/weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in all (default: torch's choice; with --jobs > 1 the machine's cores)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="steps run side by side in worker processes")
    parser.add_argument("--device", default="cpu", help="device every step trains on (cpu | cuda | auto)")
    parser.add_argument("--small", action="store_true", help="the shrunken test recipe (minutes, not an hour)")
    parser.add_argument(
        "--set",
        dest="settings",
        metavar="KEY=VALUE",
        type=_setting,
        action="append",
        default=[],
        help="override one RecipeConfig field, e.g. --set video_steps=1200 (repeatable; values "
        'read as JSON when they parse: 1200, 0.35, true, {"image/describe": 2})',
    )
    parser.add_argument("--only", nargs="+", choices=list(STEPS), help="run only these steps")
    parser.add_argument("--overwrite", action="store_true", help="delete OUT and start over")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--ship",
        action="store_true",
        help="afterwards copy OUT/weights into the package (tinyworld/weights): the new default system",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="train nothing for real: probe every step with short loops and predict how long this "
        "run would take here (OUT/plan.json; minutes, see tinyworld.plan)",
    )
    parser.add_argument("--probe-steps", type=int, default=16, help="steps of each loop in a --plan probe")
    parser.add_argument("--keep-probe", action="store_true", help="keep the --plan probe's run folder (OUT/probe)")


def _setting(text: str) -> tuple[str, object]:
    """One ``--set KEY=VALUE``: the value read as JSON where it parses (numbers, booleans, objects), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def config_from_args(args: argparse.Namespace) -> RecipeConfig:
    """The run's :class:`RecipeConfig`: the shipped defaults (or :meth:`RecipeConfig.small`), then ``--seed``,
    ``--threads``, ``--device`` and every ``--set``. An unknown or ill-typed setting raises :class:`ConfigError`."""
    from pydantic import ValidationError

    from core.errors import ConfigError

    settings = dict(seed=args.seed, threads=args.threads, device=args.device)
    for key, value in args.settings:
        if key not in RecipeConfig.model_fields:
            raise ConfigError(
                f"unknown recipe setting {key!r}; the settings are " + ", ".join(sorted(RecipeConfig.model_fields))
            )
        settings[key] = value
    try:
        return RecipeConfig.small(**settings) if args.small else RecipeConfig(**settings)
    except ValidationError as exc:
        raise ConfigError(f"bad recipe setting: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None


def run_from_args(args: argparse.Namespace) -> dict:
    config = config_from_args(args)
    if args.plan:
        from core.errors import ConfigError
        from tinyworld.plan import format_plan, plan

        if args.only or args.ship:
            raise ConfigError("--plan probes the whole recipe and trains nothing to keep: drop --only / --ship")
        result = plan(
            args.out,
            config,
            jobs=args.jobs,
            probe_steps=args.probe_steps,
            progress=not args.no_progress,
            keep_probe=args.keep_probe,
        )
        print(format_plan(result))
        return result
    record = run(
        args.out, config, only=args.only, overwrite=args.overwrite, progress=not args.no_progress, jobs=args.jobs
    )
    wall = record["runs"][-1]["wall_seconds"] if record.get("runs") else 0.0
    print(
        f"recipe finished: {wall:.0f} s on the clock, {record.get('total_seconds', 0):.0f} s of steps; "
        f"weights in {Path(args.out) / 'weights'}"
    )
    if args.ship:
        shipped = ship(Path(args.out) / "weights")
        print(f"shipped {shipped['files']} files, {shipped['bytes'] / 1e6:.1f} MB, into {PACKAGED_WEIGHTS}")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
