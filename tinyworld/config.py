"""What a tinyworld recipe run is: its settings (:class:`RecipeConfig`) and its steps, what each writes and reads
(:data:`STEP_TABLE`).

Both are plain data, cheap to import: the command line (:mod:`tinyworld.recipe`) builds its options from them, the
runner (:mod:`tinyworld.runner`) and the plan (:mod:`tinyworld.plan`) schedule by them, and the step bodies
(:mod:`tinyworld.steps`) are bound to the table's names. Why the defaults are what they are is measured in
docs/tinyworld.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

#: the steps that batch by token length or cut their batches into micro-batches
BatchedStep = Literal["language", "pt", "it"]


class RecipeConfig(BaseModel):
    """Sizes of every step; the defaults are the shipped system's. :meth:`small` shrinks them for tests."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="the run's seed; each step draws from it plus a fixed per-step offset")
    threads: int | None = Field(
        None,
        description="torch threads in all, shared among the steps running; none: torch's own choice, or the "
        "machine's cores with --jobs > 1",
    )
    device: str = Field(
        "cpu",
        description="device every step trains on (cpu | cuda | auto); data is rendered and "
        "batches are drawn on the CPU, so a seed draws the same batches anywhere",
    )
    lm_steps: NonNegativeInt = Field(3000, description="training steps of the LLM (tinyworld.language)")
    lm_dialogues: PositiveInt = Field(20000, description="text dialogues the LLM trains on")
    encoder_steps: NonNegativeInt = Field(
        2000, description="training steps of the CLIP / Whisper encoders (tinyworld.encoders)"
    )
    encoder_train: int | None = Field(
        None, ge=0, description="pre-rendered training items of the encoders; none or 0: tinyworld.encoders.NUM_TRAIN"
    )
    samples: int | None = Field(
        None,
        ge=0,
        description="rendered training items of each VAE and generator; none or 0: tinyworld.diffusion_data.SAMPLES",
    )
    vae_steps: NonNegativeInt = Field(800, description="training steps of each VAE (pictures and frames; mels)")
    vae_batch: PositiveInt = Field(16, description="batch size of the VAEs")
    image_steps: NonNegativeInt = Field(1500, description="training steps of the image generator's UNet")
    image_batch: PositiveInt = Field(64, description="pictures per batch of the image generator")
    video_pretrain_steps: NonNegativeInt = Field(
        1000,
        description="steps of the video UNet's 2D twin on single frames, before the clip stage (0: none; the "
        "video UNet then trains from scratch)",
    )
    video_steps: NonNegativeInt = Field(900, description="steps of the video UNet on whole clips")
    video_batch: PositiveInt = Field(16, description="clips per batch of the video UNet")
    audio_steps: NonNegativeInt = Field(600, description="training steps of the audio generator's UNet")
    audio_batch: PositiveInt = Field(64, description="sounds per batch of the audio generator")
    pt_rows: PositiveInt = Field(12000, description="rows of the MM PT data set")
    pt_mix: dict[str, int] | None = Field(
        None,
        description=(
            'weights of the PT tasks ({"video/describe": 6, ...}; see tinyworld.data.task_schedule); '
            "none: tinyworld.data.PT_MIX"
        ),
    )
    it_rows: PositiveInt = Field(12000, description="conversations of the MM IT data set")
    it_turns: PositiveInt = Field(4, description="most exchanges in an IT conversation")
    it_follow_ups: float = Field(
        0.35,
        ge=0.0,
        le=1.0,
        description="share of later IT exchanges that revisit an earlier thing with "
        "one attribute changed (tinyworld.text.follow_up)",
    )
    group_by_length: bool | list[BatchedStep] = Field(
        False,
        description=(
            "batch by token length (less padding, the same data): true for the LLM's dialogues and the PT / IT "
            'samples, or a list of those steps (["pt", "it"]). Faster steps, but it costs accuracy '
            "(docs/tinyworld.md)"
        ),
    )
    pt_steps: NonNegativeInt = Field(1500, description="MM PT steps")
    it_steps: NonNegativeInt = Field(1500, description="MM IT steps")
    pt_batch: PositiveInt = Field(32, description="MM PT batch size")
    it_batch: PositiveInt = Field(16, description="MM IT batch size")
    pt_lr: float = Field(2e-3, description="MM PT learning rate (projectors and signal rows)")
    it_lr: float = Field(1e-3, description="MM IT learning rate (projectors, signal rows and LoRA)")
    lora: bool = Field(True, description="train LoRA adapters of the LLM in MM IT")
    free_phrasing: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="share of the LLM's and IT's exchanges written freely, from the training split of "
        "tinyworld.phrasing (the tokenizer then also reads that split); 0: the canonical templates alone",
    )
    honest_answers: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="share of the LLM's and IT's exchanges that ask about a medium not attached or for something "
        "outside the world, answered honestly (tinyworld.phrasing.MISSING, OUT_OF_VOCABULARY); 0: none",
    )
    glossary: float = Field(
        0.12,
        ge=0.0,
        le=1.0,
        description="share of the LLM's text dialogues that are dictionary entries (tinyworld.phrasing.glossary: "
        "'A movie is a video.'), held-out words included, never used in a request or question; 0: none",
    )
    reading: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of the LLM's text dialogues that are everyday sentences with the synonym groups' words in "
        "each group's own contexts (tinyworld.phrasing.reading: 'The microwave gave a bleep.'), held-out words "
        "included, never used in a request or question; 0: none",
    )
    novel_words: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="chance that a carrier word (a verb, 'beep', 'short', 'moving') of a free request in the LLM's "
        "and IT's data is replaced by a made-up word (tinyworld.phrasing.novel_words): an unfamiliar word there "
        "leaves the request as it was; 0: none",
    )
    generate_shapes: dict[Literal["single", "ambiguous", "pair"], float] | None = Field(
        None,
        description="weights of a free generation exchange's shapes in the LLM's and IT's data: one request, one "
        'naming no medium, two requests in one turn ({"single": 0.8, "ambiguous": 0.1, "pair": 0.1}); none: '
        "tinyworld.phrasing.GENERATE_SHAPES",
    )
    augment: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="share of the encoders' and the PT / IT data's renders drawn with the world renderer's "
        "augmentation (other sizes, positions, backgrounds, codecs, timings, rates; tinyworld.world.AUGMENT); "
        "0: off",
    )
    judge_steps: int | None = Field(
        None, ge=0, description="training steps of each judge; none or 0: tinyworld.judges.STEPS"
    )
    preset: str = Field(
        "tiny-world",
        description="the system preset whose @tinyworld/<name> components this run trains (into OUT/weights/<name>)",
    )

    micro_batches: dict[BatchedStep, PositiveInt] = Field(
        default_factory=lambda: {"language": 4, "it": 2},
        description=(
            "cut each batch of the LLM's dialogues / the PT / IT samples into this many micro-batches of similar "
            "length and accumulate (a step missing here: 1): the same batches and steps with less padding "
            "(docs/tinyworld.md)"
        ),
    )

    def grouped(self, step: str) -> bool:
        """Whether ``step`` (``language``, ``pt`` or ``it``) batches by token length."""
        return self.group_by_length if isinstance(self.group_by_length, bool) else step in self.group_by_length

    @classmethod
    def small(cls, **overrides) -> RecipeConfig:
        """A shrunken recipe for tests: every step runs, each only long enough to show that it learns."""
        return cls(**{**SMALL, **overrides})


#: the fields :meth:`RecipeConfig.small` sets (on top of the defaults)
SMALL: dict[str, object] = dict(
    lm_steps=120,
    lm_dialogues=600,
    free_phrasing=0.0,  # the small runs keep the canonical data (phrasing, glossary, augmentation: their own tests)
    honest_answers=0.0,
    glossary=0.0,
    reading=0.0,
    novel_words=0.0,
    augment=0.0,
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


@dataclass(frozen=True)
class StepSpec:
    """Where a recipe step writes and what it reads: ``output`` (relative to OUT) marks it done; it runs once every
    step in ``after`` is done."""

    output: str
    after: tuple[str, ...] = ()


# PT reads the LLM, the encoders (the frozen towers, and the generators' text encoder) and the data; not the UNets
_SYSTEM = ("language", "encoders", "data")
_DIFFUSION_INPUTS = ("encoders", "vae")  # the frozen text tower and the VAEs

#: step name -> :class:`StepSpec`, in the order of a sequential run (which respects ``after``). The generators come
#: after PT and IT: where the scheduler must choose (equal chains), IT, the longest step, goes first; the video
#: generator first of the three: it is the longest.
STEP_TABLE: dict[str, StepSpec] = {
    "language": StepSpec("weights/llm"),
    "encoders": StepSpec("weights/audio-encoder"),
    "vae": StepSpec("work/vae-mel"),
    "data": StepSpec("work/data/it.jsonl"),
    "pt": StepSpec("work/pt/trainable.safetensors", after=_SYSTEM),
    "it": StepSpec("weights/projectors/trainable.safetensors", after=("pt",)),
    "video-generator": StepSpec("weights/video-generator", after=_DIFFUSION_INPUTS),
    "image-generator": StepSpec("weights/image-generator", after=_DIFFUSION_INPUTS),
    "audio-generator": StepSpec("weights/audio-generator", after=_DIFFUSION_INPUTS),
    "judges": StepSpec("weights/judges"),
}
