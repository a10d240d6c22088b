"""Generator tools: tiny Stable Diffusion, text-to-video and AudioLDM 2 pipelines built locally, loaded through
``from_pretrained(path)``, and driven by embeddings (offline, CPU, 2 denoising steps)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from core.config import GeneratorConfig, MediaLimits
from core.hub import resolve_model
from core.registry import UnknownKindError


def _decode_png(data: bytes) -> dict:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return {"width": image.width, "height": image.height}


def _decode_mp4(data: bytes) -> dict:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(stream))
    return {"width": frames[0].width, "height": frames[0].height, "frames": len(frames)}


def _decode_wav(data: bytes) -> dict:
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(data))
    assert samples.ndim == 1
    return {"sample_rate": rate, "samples": len(samples)}


# kind -> (tiny model, cfg.options, mime, decoder, what the decoded medium must show)
CASES = {
    "stable_diffusion": (
        "@tiny/stable-diffusion",
        {"height": 40, "width": 48},
        "image/png",
        _decode_png,
        {"width": 48, "height": 40},
    ),
    "text_to_video_sd": (
        "@tiny/text-to-video-sd",
        {"num_frames": 4, "fps": 8},
        "video/mp4",
        _decode_mp4,
        {"width": 32, "height": 32, "frames": 4},
    ),
    "animatediff": (
        "@tiny/animatediff",
        {"num_frames": 4, "fps": 8},
        "video/mp4",
        _decode_mp4,
        {"width": 32, "height": 32, "frames": 4},
    ),
    "audioldm2": (
        "@tiny/audioldm2",
        {"audio_length_in_s": 0.128},
        "audio/wav",
        _decode_wav,
        {"sample_rate": 16000, "samples": 2048},
    ),
}
PROMPT = "a red square"


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory):
    """Build the tiny pipelines into a temporary MMGRAPH_CACHE (restored afterwards)."""
    previous = os.environ.get("MMGRAPH_CACHE")
    os.environ["MMGRAPH_CACHE"] = str(tmp_path_factory.mktemp("mmgraph-cache"))
    yield Path(os.environ["MMGRAPH_CACHE"])
    if previous is None:
        os.environ.pop("MMGRAPH_CACHE", None)
    else:
        os.environ["MMGRAPH_CACHE"] = previous


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tiny_cache):
    """``(kind, tool)`` for each generator kind, loaded once per module."""
    from generators import GENERATORS

    kind = request.param
    model, options = CASES[kind][:2]
    cfg = GeneratorConfig(kind=kind, model=model, num_inference_steps=2, options=options)
    return kind, GENERATORS.get(kind).from_config(cfg, seed=0)


@pytest.fixture(scope="module")
def prompt_conditioning(case):
    return case[1].encode_text([PROMPT])


def test_tiny_pipeline_folder(case, tiny_cache):
    kind, tool = case
    folder = Path(resolve_model(CASES[kind][0]))
    assert folder.is_relative_to(tiny_cache)
    assert (folder / "model_index.json").exists()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 5 * 1024 * 1024, f"{folder} is {size} bytes"
    assert isinstance(tool.pipeline, tool.pipeline_class)


def test_specs_match_encode_text(case):
    _, tool = case
    specs = tool.conditioning_specs()
    assert specs and len({s.name for s in specs}) == len(specs)
    features = tool.encode_text([PROMPT, "two short beeps of a high tone"])
    assert {name: tuple(t.shape) for name, t in features.items()} == {s.name: (2, s.length, s.dim) for s in specs}
    negative = tool.negative_conditioning()
    assert {name: tuple(t.shape) for name, t in negative.items()} == {s.name: (1, s.length, s.dim) for s in specs}
    assert tool.negative_conditioning() is negative  # cached
    assert all(t.dtype == torch.float32 and not t.requires_grad for t in features.values())


def test_generate_returns_decodable_media(case, prompt_conditioning):
    kind, tool = case
    mime, decode, expected = CASES[kind][2:]
    media = tool.generate(prompt_conditioning, num_inference_steps=2)
    assert media.mime == mime and media.modality == tool.modality
    assert decode(media.data) == expected
    assert media.metadata["steps"] == 2 and media.metadata["seed"] == 0
    assert {k: media.metadata[k] for k in expected} == expected


def test_seed_determines_output(case, prompt_conditioning):
    _, tool = case
    first = tool.generate(prompt_conditioning, seed=7).data
    assert tool.generate(prompt_conditioning, seed=7).data == first
    assert tool.generate(prompt_conditioning, seed=8).data != first


def test_conditioning_drives_output(case, prompt_conditioning):
    _, tool = case
    other = tool.encode_text(["a rising whistle and a falling whistle"])
    assert tool.generate(prompt_conditioning, seed=3).data != tool.generate(other, seed=3).data


def test_generate_without_guidance(case, prompt_conditioning):
    kind, tool = case
    media = tool.generate(prompt_conditioning, guidance_scale=1.0, seed=5)
    assert media.metadata["guidance_scale"] == 1.0
    assert CASES[kind][3](media.data) == CASES[kind][4]
    assert media.data != tool.generate(prompt_conditioning, guidance_scale=7.5, seed=5).data


def test_progress_called_once_per_step(case, prompt_conditioning):
    _, tool = case
    calls: list[tuple[int, int]] = []
    tool.generate(prompt_conditioning, num_inference_steps=2, progress=lambda step, total: calls.append((step, total)))
    assert calls == [(1, 2), (2, 2)]


def test_progress_can_cancel(case, prompt_conditioning):
    _, tool = case

    class Cancelled(Exception):
        pass

    def cancel(step: int, total: int) -> None:
        raise Cancelled(f"stop at {step}/{total}")

    with pytest.raises(Cancelled, match="stop at 1/2"):
        tool.generate(prompt_conditioning, progress=cancel)


def test_wrong_shape_raises(case, prompt_conditioning):
    _, tool = case
    spec = tool.conditioning_specs()[-1]
    bad = dict(prompt_conditioning)
    bad[spec.name] = torch.zeros(1, spec.length + 1, spec.dim)
    with pytest.raises(ValueError, match=rf"{spec.name}.*\(1, {spec.length}, {spec.dim}\)"):
        tool.generate(bad)
    with pytest.raises(ValueError, match="missing conditioning"):
        tool.generate({k: v for k, v in prompt_conditioning.items() if k != spec.name})


def test_a_conditioning_only_tool_encodes_the_same_text_features_and_refuses_to_generate(case, prompt_conditioning):
    """What output-projector training needs: the text side alone, with the full tool's very targets."""
    from generators import GENERATORS

    kind, tool = case
    light = GENERATORS.get(kind).from_config(tool.cfg, seed=0, conditioning_only=True)
    assert light.conditioning_only and not tool.conditioning_only
    assert all(getattr(light.pipeline, name) is None for name in light.generation_components)
    assert light.conditioning_specs() == tool.conditioning_specs()
    features = light.encode_text([PROMPT])
    assert features.keys() == prompt_conditioning.keys()
    assert all(torch.equal(features[name], prompt_conditioning[name]) for name in features)
    assert 0 < sum(p.numel() for p in light.parameters()) < sum(p.numel() for p in tool.parameters())
    with pytest.raises(RuntimeError, match="text conditioning only.*cannot generate"):
        light.generate(prompt_conditioning)


def test_pipeline_is_frozen(case):
    _, tool = case
    params = list(tool.parameters())
    assert params and not any(p.requires_grad for p in params)
    modules = [m for m in tool.pipeline.components.values() if isinstance(m, torch.nn.Module)]
    assert modules and not any(m.training for m in modules)


def test_video_gif_format(tiny_cache):
    from generators import GENERATORS

    model, options = CASES["text_to_video_sd"][:2]
    cfg = GeneratorConfig(kind="text_to_video_sd", model=model, num_inference_steps=2, options=options)
    tool = GENERATORS.get("text_to_video_sd").from_config(cfg, seed=0)
    from PIL import Image

    media = tool.generate(tool.encode_text([PROMPT]), format="gif")
    assert media.mime == "image/gif"
    gif = Image.open(io.BytesIO(media.data))
    assert gif.format == "GIF" and gif.size == (32, 32) and gif.n_frames == 4


def test_build_generator_and_registry(tiny_cache):
    from generators import GENERATORS, build_generator
    from generators.image import StableDiffusionTool

    assert {"stable_diffusion", "text_to_video_sd", "audioldm2"} <= set(GENERATORS.kinds())
    tool = build_generator(GeneratorConfig(kind="stable_diffusion", model="@tiny/stable-diffusion"))
    assert isinstance(tool, StableDiffusionTool)
    assert tool.signal_tokens == ["[IMG0]", "[IMG1]", "[IMG2]", "[IMG3]"]
    with pytest.raises(UnknownKindError):
        build_generator(GeneratorConfig(kind="no_such_generator", model="@tiny/stable-diffusion"))
    with pytest.raises(ValueError, match="unknown options"):
        build_generator(
            GeneratorConfig(kind="stable_diffusion", model="@tiny/stable-diffusion", options={"num_frames": 4})
        )


def test_a_compiled_denoiser_wraps_the_unet_and_the_diffusion_loss_stays_eager(tiny_cache, monkeypatch):
    """``GeneratorConfig(compile=True)``: the pipeline's UNet becomes torch.compile's wrapper (here with a backend
    that refuses to run, so any compiled call fails loudly); ``diffusion_loss`` (training) uses the module under
    it and works."""
    from generators import build_generator

    def refuse(graph, example_inputs):
        raise AssertionError("the compiled UNet ran")

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: real(module, backend=refuse))
    tool = build_generator(GeneratorConfig(kind="stable_diffusion", model="@tiny/stable-diffusion", compile=True))
    unet = tool.pipeline.unet
    assert type(unet).__name__ == "OptimizedModule" and type(unet._orig_mod).__name__ == "UNet2DConditionModel"
    conditioning = tool.encode_text(["a red square"])
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    loss = tool.diffusion_loss(conditioning, latents, torch.Generator().manual_seed(1))
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("kind", ["text_to_video_sd", "animatediff"])
def test_video_diffusion_loss_reaches_the_conditioning_through_the_frozen_unet(tiny_cache, kind):
    """The training-time loss of both video families: target latents ``(N, C, F, h, w)`` from a video file, a finite
    loss, a gradient on the (projector-made) conditioning, none on the frozen UNet; AnimateDiff's image UNet gets
    the prompt once per frame."""
    from generators import GENERATORS

    model, options = CASES[kind][:2]
    tool = GENERATORS.get(kind).from_config(
        GeneratorConfig(kind=kind, model=model, num_inference_steps=2, options=options), seed=0
    )
    video = tool.generate(tool.encode_text([PROMPT]), seed=1).data
    latents = tool.target_latents([video, video], MediaLimits())
    assert latents.shape[:3] == (2, 4, 4)
    conditioning = {k: v.repeat(2, 1, 1).requires_grad_(True) for k, v in tool.encode_text([PROMPT]).items()}
    loss = tool.diffusion_loss(conditioning, latents, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and conditioning["prompt_embeds"].grad.abs().sum() > 0
    assert all(p.grad is None for p in tool.pipeline.unet.parameters())
    per_frame = tool.denoiser_conditioning(conditioning["prompt_embeds"], latents)
    assert per_frame.shape[0] == (8 if kind == "animatediff" else 2)
