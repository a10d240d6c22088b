"""SystemConfig: the whole MM-LLM as plain data (pydantic, YAML round-trip), plus preset loading.

A system names an LLM, a set of input modalities (encoder kind + model + input projector) and a set of
output generators (pipeline kind + model + output projector + signal tokens). Every ``model`` field is a
Hugging Face id, a local path, or ``@tiny/<name>`` -- a tiny random-weight component that
``orchestrator.tiny`` builds from a config and saves locally, so tests and the ``tiny-random`` preset load it
through the same ``from_pretrained(path)`` code as real checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import ConfigError

#: how the LLM steps while decoding (orchestrator.decoding; plain data here so configs can name it)
CacheKind = Literal["auto", "dynamic", "static", "graph", "compiled"]

PRESET_DIR = Path(__file__).parent / "presets"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class MediaLimits(_Data):
    """Limits applied while decoding every input medium (the defaults are the safe ones)."""

    max_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest encoded medium accepted, in bytes.")
    max_pixels: int = Field(4096 * 4096, ge=1, description="Largest image (or video frame) area, in pixels.")
    min_side: int = Field(8, ge=1, description="Smallest accepted image side, in pixels.")
    max_audio_seconds: float = Field(60.0, gt=0, description="Longest accepted audio clip.")
    max_video_seconds: float = Field(120.0, gt=0, description="Longest accepted video.")
    max_video_frames: int = Field(20_000, ge=1, description="Most frames a video may declare or contain.")


class ProjectorConfig(_Data):
    """Input projector: encoder features (T x D_enc) -> LLM embeddings (M x D_llm)."""

    kind: str = Field(
        "mlp",
        description="Registry kind: linear | masked_linear | mlp | resampler | qformer | blip2_qformer | "
        "instructblip_qformer (or a plugin).",
    )
    num_queries: int = Field(16, ge=1, description="Learned queries (resampler, qformer).")
    depth: int = Field(2, ge=1, description="Layers (mlp: linear layers; resampler/qformer: blocks).")
    heads: int = Field(4, ge=1, description="Attention heads (resampler, qformer).")
    width: int | None = Field(None, description="Inner width (resampler/qformer); default: the LLM width.")
    time_embeddings: int = Field(
        0,
        ge=0,
        description=(
            "Resampler/qformer only: if > 0, the frames of a video are projected jointly (Flamingo): a learned "
            "embedding per frame (up to this many frames) is added and the queries attend to all frames' tokens at "
            "once, so motion is visible to the projector. 0: frames are projected one by one."
        ),
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Kind-specific knobs, e.g. blip2_qformer's Hugging Face Q-Former config ({qformer: {...}}).",
    )


class ModalityConfig(_Data):
    """One input modality: decoder, frozen encoder, placeholder token and trainable input projector."""

    encoder: str = Field(
        description="Registry kind of the encoder, e.g. clip_vision, siglip_vision, whisper, video_frames."
    )
    model: str = Field(description="Hugging Face id, local path, or @tiny/<name>.")
    placeholder: str | None = Field(None, description="Placeholder token; default '<{name}>'.")
    feature_layer: int = Field(-2, description="Hidden layer whose states are used (vision towers).")
    keep_cls: bool = Field(False, description="Keep the CLS token of vision towers.")
    num_frames: int = Field(5, ge=1, description="Frames sampled uniformly from a video.")
    projector: ProjectorConfig = Field(default_factory=ProjectorConfig)
    options: dict[str, Any] = Field(default_factory=dict, description="Extra encoder-specific knobs (plugins).")


class OutputProjectorConfig(_Data):
    """Output projector: signal-token hidden states (k x D_llm) -> the generator's conditioning."""

    kind: str = Field("transformer", description="Registry kind: mlp | transformer (or a plugin).")
    width: int = Field(256, ge=8, description="Inner width.")
    layers: int = Field(2, ge=1, description="Encoder and decoder layers (transformer) or hidden layers (mlp).")
    heads: int = Field(4, ge=1)
    add_input_embeddings: bool = Field(
        True, description="Add the signal tokens' input embeddings to their hidden states (NExT-GPT/GILL)."
    )


class GeneratorConfig(_Data):
    """One output generator: a frozen diffusion pipeline driven by prompt embeddings, and its signal tokens."""

    kind: str = Field(
        description="Registry kind: stable_diffusion | text_to_video_sd | animatediff | audioldm2 | "
        "mel_diffusion (or a plugin)."
    )
    model: str = Field(description="Hugging Face id, local path, or @tiny/<name>.")
    signal_prefix: str | None = Field(
        None, description="Signal token stem, e.g. IMG -> [IMG0]..; default from the kind."
    )
    num_signal_tokens: int = Field(4, ge=1, le=64)
    projector: OutputProjectorConfig = Field(default_factory=OutputProjectorConfig)
    num_inference_steps: int = Field(25, ge=1)
    guidance_scale: float = Field(7.5, ge=0)
    options: dict[str, Any] = Field(
        default_factory=dict, description="Pipeline call knobs: height, width, num_frames, audio_length_in_s, fps ..."
    )
    compile: bool = Field(
        False,
        description="torch.compile the denoiser (on CUDA with CUDA graphs, mode "
        "reduce-overhead): a one-off compilation, then faster denoising steps.",
    )


class PromptFormat(_Data):
    """How turns are laid out for the LLM: Vicuna / LLaVA-1.5 style prefixes by default, or a Jinja chat template
    (an imported checkpoint's own, so its prompts are token for token what its processor makes)."""

    system: str = "A chat between a user and a multimodal assistant that can see, hear, draw, animate and play sounds."
    user_prefix: str = "USER: "
    assistant_prefix: str = "ASSISTANT: "
    turn_separator: str = "\n"
    chat_template: str | None = Field(
        None,
        description=(
            "A Jinja chat template over OpenAI-style messages (content parts {type: text} and {type: <modality>}); "
            "when set it lays out the turns instead of the prefixes above. 'tokenizer' uses the tokenizer's own."
        ),
    )
    media_first: bool = Field(
        False,
        description="With a chat template: every medium's placeholder slots go before the whole tokenised prompt "
        "(as BLIP-2's and InstructBLIP's processors put them), not where the template writes them.",
    )


class LLMConfig(_Data):
    model: str = Field(description="Causal LM: Hugging Face id, local path, or @tiny/<name>.")
    dtype: str = Field("auto", description="auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16")
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0, description="0 means greedy decoding.")
    decoding: CacheKind = Field(
        "auto",
        description="How the LLM steps (orchestrator.decoding): auto is graph on CUDA (CUDA-graph steps over "
        "a static cache) and dynamic elsewhere; compiled adds torch.compile to the graph steps "
        "(fastest, after a one-off compilation).",
    )
    prompt: PromptFormat = Field(default_factory=PromptFormat)


class FusionConfig(_Data):
    """How projected media features reach the LLM (DESIGN §1: the two MM-LLM families).

    ``splice`` (LLaVA, BLIP-2, NExT-GPT): each medium's projected tokens replace its placeholder slots in the input
    sequence. ``cross_attention`` (Flamingo, Llama 3.2 Vision): each medium is one placeholder token in the text,
    and gated cross-attention blocks inserted into the frozen LLM let every later text token attend to the media
    item that most recently precedes it.
    """

    kind: str = Field("splice", description="Registry kind: splice | cross_attention (or a plugin).")
    block: str = Field(
        "flamingo",
        description="cross_attention: the block kind, flamingo (LayerNorm, GELU feed-forward) or mllama (RMSNorm, "
        "q/k norms, SwiGLU feed-forward; Llama 3.2 Vision's layout).",
    )
    every: int = Field(
        4, ge=1, description="cross_attention: a block before every k-th LLM layer (layers k-1, 2k-1, ...; Flamingo)."
    )
    layers: list[int] | None = Field(
        None, description="cross_attention: the LLM layers a block runs before (overrides every; Llama 3.2 Vision)."
    )
    heads: int | None = Field(None, ge=1, description="cross_attention: attention heads; default the LLM's.")
    kv_heads: int | None = Field(None, ge=1, description="cross_attention: key/value heads; default heads.")
    ffn_size: int | None = Field(None, ge=1, description="cross_attention: feed-forward width; default 4x the LLM's.")
    norm_eps: float = Field(1e-5, gt=0, description="cross_attention: epsilon of the blocks' norms.")


class Vocabulary(_Data):
    """What a system can be asked, in words a newcomer reads before the first message (the web page, ``mmgraph
    chat``, ``GET /v1/models``). Plain data; a system trained on a closed world says its limits here."""

    summary: str = Field("", description="One or two sentences: what the system knows and makes.")
    words: dict[str, list[str]] = Field(
        default_factory=dict, description="Each attribute it knows -> its values (colours -> red, green, ...)."
    )
    examples: list[str] = Field(default_factory=list, description="Messages to try, one per line in the UIs.")
    limits: list[str] = Field(default_factory=list, description="What it cannot do, said plainly.")

    def lines(self) -> list[str]:
        """The vocabulary as plain text lines (``mmgraph chat``'s ``/vocab``)."""
        out = [self.summary] if self.summary else []
        out += [f"  {name}: {', '.join(values)}" for name, values in self.words.items()]
        if self.examples:
            out += ["try:", *(f"  {example}" for example in self.examples)]
        if self.limits:
            out += ["limits:", *(f"  {limit}" for limit in self.limits)]
        return out


class PeerConfig(_Data):
    """A published checkpoint in a peer's Hugging Face layout (LLaVA, BLIP-2, Llama 3.2 Vision ...) that the system's
    LLM, encoders, input projectors and cross-attention blocks are taken from (``orchestrator.peers``)."""

    path: str = Field(description="The checkpoint: a local folder (or a Hugging Face id already in the cache).")
    architecture: str = Field(description="Its transformers class, e.g. LlavaForConditionalGeneration.")
    freeze: bool = Field(
        True,
        description="Keep the imported projectors and blocks frozen (and out of trainable.safetensors): the peer's "
        "own answers stay exactly as they were.",
    )


class SystemConfig(_Data):
    """The whole system. ``generators`` keys are the names used in ``generate=[...]``."""

    name: str = "custom"
    llm: LLMConfig
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    peer: PeerConfig | None = Field(
        None, description="Take the LLM, encoders and input side from a peer's published checkpoint (import)."
    )
    modalities: dict[str, ModalityConfig] = Field(default_factory=dict)
    generators: dict[str, GeneratorConfig] = Field(default_factory=dict)
    limits: MediaLimits = Field(default_factory=MediaLimits)
    weights: str | None = Field(
        None,
        description=(
            "Trained projector weights loaded with the system (a folder with trainable.safetensors, or "
            "@tinyworld/<name>); an explicit weights= argument wins."
        ),
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    seed: int = 0
    vocabulary: Vocabulary | None = Field(
        None, description="What the system can be asked, shown to newcomers (web page, mmgraph chat, /v1/models)."
    )

    @field_validator("modalities", "generators")
    @classmethod
    def _names_are_identifiers(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name.isidentifier():
                raise ValueError(f"component name {name!r} must be a Python identifier")
        return value

    @model_validator(mode="after")
    def _unique_tokens(self) -> SystemConfig:
        seen: dict[str, str] = {}
        for name in self.modalities:
            tok = self.placeholder(name)
            if tok in seen:
                raise ValueError(f"placeholder {tok!r} is used by both {seen[tok]!r} and {name!r}")
            seen[tok] = name
        for name in self.generators:
            prefix = self.signal_prefix(name)
            if prefix in seen:
                raise ValueError(f"signal prefix {prefix!r} is used by both {seen[prefix]!r} and {name!r}")
            seen[prefix] = name
        return self

    # -- derived names -------------------------------------------------------------------------------------------
    def placeholder(self, modality: str) -> str:
        return self.modalities[modality].placeholder or f"<{modality}>"

    def signal_prefix(self, generator: str) -> str:
        cfg = self.generators[generator]
        return cfg.signal_prefix or DEFAULT_SIGNAL_PREFIX.get(generator, generator.upper()[:3])

    def signal_tokens(self, generator: str) -> list[str]:
        prefix = self.signal_prefix(generator)
        return [f"[{prefix}{i}]" for i in range(self.generators[generator].num_signal_tokens)]

    # -- (de)serialisation ---------------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        text: str = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        return text

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    @classmethod
    def from_yaml(cls, path: str | Path) -> SystemConfig:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        try:
            return cls.model_validate(data)
        except Exception as exc:  # pydantic.ValidationError, with the file named
            raise ConfigError(f"{path}: {exc}") from exc


DEFAULT_SIGNAL_PREFIX = {"image": "IMG", "video": "VID", "audio": "AUD"}


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config(spec: str | Path | SystemConfig | dict[str, Any] | None = None) -> SystemConfig:
    """A SystemConfig from a preset name, a YAML path, plain data (a dict), or an existing config (``None`` -> the
    default preset)."""
    if isinstance(spec, SystemConfig):
        return spec
    if isinstance(spec, dict):
        return SystemConfig.model_validate(spec)
    if spec is None:
        spec = DEFAULT_PRESET
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        return SystemConfig.from_yaml(path)
    preset = PRESET_DIR / f"{spec}.yaml"
    if not preset.exists():
        raise ConfigError(f"unknown preset {spec!r}; presets: {', '.join(list_presets())}; or pass a YAML path")
    return SystemConfig.from_yaml(preset)


# Until the tinyworld preset ships, the default system is the tiny random-weight one.
DEFAULT_PRESET = "tiny-world"
