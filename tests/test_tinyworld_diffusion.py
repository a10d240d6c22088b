"""The tinyworld diffusion generators (tinyworld.diffusion_*, tinyworld.readers) and the mel-diffusion audio tool:
the mel round trip, the measurements that judge generated media, the tool on ``@tiny/mel-diffusion``, and shrunken
training runs of every ``train_*`` function whose saved folders load into the matching generator tool."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from core.config import GeneratorConfig
from generators.audio import MEL_FILE, MelParams
from tinyworld import diffusion_data, diffusion_eval, diffusion_models, diffusion_training, readers
from tinyworld import text as world_text
from tinyworld.world import Clip, Picture, Sound

# Shrunken models for the training runs: the real layouts, narrower.
SMALL_UNET = {"block_out_channels": (16, 32), "attention_head_dim": 2, "norm_num_groups": 8}
SMALL_UNET_3D = {"block_out_channels": (16, 32), "attention_head_dim": 4, "norm_num_groups": 8}


def _wav(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


# ---------------------------------------------------------------------------------------------------------------
# mel spectrograms
# ---------------------------------------------------------------------------------------------------------------
def test_mel_round_trip_keeps_pitch_and_beep_count():
    mel = MelParams()
    rng = random.Random(3)
    for i, (pitch, beeps) in enumerate((p, b) for p in ("low", "middle", "high") for b in (1, 2, 3)):
        sound = Sound(pitch, rng.choice(["sine", "square", "sawtooth"]), beeps)
        wave = sound.render(seed=i)
        spectrogram = mel.mel(wave)
        assert spectrogram.shape == (mel.n_mels, mel.frames) and spectrogram.dtype == np.float32
        assert 0.0 <= spectrogram.min() and spectrogram.max() <= 1.0
        back = mel.waveform(spectrogram, seed=i)
        assert back.shape == (mel.samples,) == (16000,)
        found = readers.read_sound(back)
        assert (found["pitch"], found["beeps"]) == (pitch, beeps), (sound, found)


def test_mel_silence_inverts_to_silence_and_shapes_are_checked():
    mel = MelParams()
    assert np.all(mel.mel(np.zeros(16000)) == 0.0)
    assert np.abs(mel.waveform(np.zeros((mel.n_mels, mel.frames)))).max() == 0.0
    with pytest.raises(ValueError):
        mel.waveform(np.zeros((mel.n_mels + 1, mel.frames)))


def test_mel_params_saved_next_to_the_pipeline(tmp_path):
    assert MelParams.load(tmp_path) == MelParams()  # no mel.json: the defaults
    custom = MelParams(n_mels=16, db_min=-20.0)
    custom.save(tmp_path)
    assert (tmp_path / MEL_FILE).is_file()
    assert MelParams.load(tmp_path) == custom


# ---------------------------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------------------------
def test_measurements_read_rendered_media():
    rng = random.Random(5)
    for i in range(12):
        picture = Picture.sample(rng)
        assert readers.read_picture(np.asarray(picture.render(seed=i))) == {
            "colour": picture.colour,
            "shape": picture.shape,
        }
        clip = Clip.sample(rng)
        assert readers.read_clip(clip.render(seed=i)) == {
            "colour": clip.colour,
            "shape": clip.shape,
            "direction": clip.direction,
        }
    blank = np.full((32, 32, 3), 255, dtype=np.uint8)
    assert readers.read_picture(blank) == {"colour": None, "shape": None}
    static = [Picture("red", "square", "centre", "large").render(seed=0)] * 8
    assert readers.read_clip(static)["direction"] is None
    assert readers.read_sound(np.zeros(16000))["beeps"] == 0


# ---------------------------------------------------------------------------------------------------------------
# the tool on @tiny/mel-diffusion
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mel_tool():
    from generators import GENERATORS

    cfg = GeneratorConfig(kind="mel_diffusion", model="@tiny/mel-diffusion", num_inference_steps=2)
    return GENERATORS.get("mel_diffusion").from_config(cfg, seed=0)


def test_mel_diffusion_tool_generates_one_second_of_wav(mel_tool):
    (spec,) = mel_tool.conditioning_specs()
    conditioning = mel_tool.encode_text(["two high beeps"])
    assert tuple(conditioning["prompt_embeds"].shape) == (1, spec.length, spec.dim)
    media = mel_tool.generate(conditioning)
    samples, rate = _wav(media.data)
    assert media.mime == "audio/wav" and media.modality == "audio"
    assert rate == 16000 and samples.shape == (16000,)
    assert media.metadata["sample_rate"] == 16000 and media.metadata["samples"] == 16000
    assert media.metadata["seconds"] == pytest.approx(1.0) and media.metadata["format"] == "wav"
    assert media.metadata["steps"] == 2
    # the same seed gives the same bytes, another seed other bytes
    assert mel_tool.generate(conditioning).data == media.data
    assert mel_tool.generate(conditioning, seed=1).data != media.data


def test_mel_diffusion_tool_rejects_wrong_conditioning(mel_tool):
    (spec,) = mel_tool.conditioning_specs()
    with pytest.raises(ValueError):
        mel_tool.generate({"prompt_embeds": torch.zeros(1, spec.length + 1, spec.dim)})
    with pytest.raises(ValueError):
        mel_tool.generate({"prompt_embeds": torch.zeros(1, spec.length, spec.dim - 1)})
    with pytest.raises(ValueError):
        mel_tool.generate({"other": torch.zeros(1, spec.length, spec.dim)})


def test_mel_diffusion_tool_reads_mel_json(tmp_path):
    from core.hub import resolve_model
    from generators.audio import MelDiffusionTool

    folder = resolve_model("@tiny/mel-diffusion", 0)
    assert MelParams.load(folder) == MelParams()
    cfg = GeneratorConfig(kind="mel_diffusion", model=folder, num_inference_steps=1)
    tool = MelDiffusionTool.from_config(cfg)
    assert tool.mel == MelParams() and tool.call_options == {"height": 32, "width": 64}


# ---------------------------------------------------------------------------------------------------------------
# weight surgery
# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_centre_latents_keeps_reconstructions():
    torch.manual_seed(0)
    vae = diffusion_models.make_vae(3).eval()
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    before_latents = vae.encode(pixels).latent_dist.mean
    before = vae.decode(before_latents).sample
    shift = torch.tensor([0.5, -1.0, 2.0, 0.0])
    diffusion_models.centre_latents(vae, shift)
    after_latents = vae.encode(pixels).latent_dist.mean
    torch.testing.assert_close(after_latents, before_latents - shift[None, :, None, None], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vae.decode(after_latents).sample, before, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_inflated_unet_denoises_each_frame_like_its_2d_twin():
    torch.manual_seed(0)
    config = {**diffusion_models.UNET_3D_CONFIG, **SMALL_UNET_3D}
    twin = diffusion_models.make_unet_2d(8, 64, **diffusion_models.unet_2d_twin(config)).eval()
    for p in twin.parameters():  # move every weight away from its initial value
        p.add_(0.02 * torch.randn_like(p))
    unet = diffusion_models.make_unet_3d(8, 64, **config).eval()
    diffusion_models.inflate_unet(unet, twin)
    frames = torch.randn(3, 4, 8, 8)  # (F, C, h, w)
    text = torch.randn(1, 16, 64)
    video = unet(frames.permute(1, 0, 2, 3)[None], 10, encoder_hidden_states=text).sample  # (1, C, F, h, w)
    images = twin(frames, 10, encoder_hidden_states=text.expand(3, -1, -1)).sample  # (F, C, h, w)
    torch.testing.assert_close(video[0].permute(1, 0, 2, 3), images, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_motion_unet_starts_as_its_2d_twin_and_its_frame_positions_tell_frames_apart():
    torch.manual_seed(0)
    config = {**diffusion_models.UNET_3D_CONFIG, **SMALL_UNET_3D}
    twin = diffusion_models.make_unet_2d(8, 64, **diffusion_models.unet_2d_twin(config)).eval()
    for p in twin.parameters():
        p.add_(0.02 * torch.randn_like(p))
    unet = diffusion_models.motion_unet(twin).eval()
    assert unet.config.motion_max_seq_length >= diffusion_data.FRAMES
    frames = torch.randn(3, 4, 8, 8)  # (F, C, h, w)
    text = torch.randn(1, 16, 64).expand(3, -1, -1)  # one condition per frame
    video = unet(frames.permute(1, 0, 2, 3)[None], 10, encoder_hidden_states=text).sample  # (1, C, F, h, w)
    images = twin(frames, 10, encoder_hidden_states=text).sample  # (F, C, h, w)
    torch.testing.assert_close(video[0].permute(1, 0, 2, 3), images, atol=1e-4, rtol=1e-4)
    # once the motion modules are trained (here: perturbed), identical frames come out different: each knows where
    # it is in the clip, which a position-free temporal attention cannot tell
    for name, p in unet.named_parameters():
        if ".motion_modules." in name:
            p.add_(0.2 * torch.randn_like(p))
    same = torch.randn(1, 4, 1, 8, 8).expand(1, 4, 3, 8, 8)  # (1, C, F, h, w): three equal frames
    out = unet(same, 10, encoder_hidden_states=text).sample
    assert (out[:, :, 0] - out[:, :, 2]).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# shrunken training runs
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A stand-in text encoder and both VAEs, trained for a few steps."""
    root = tmp_path_factory.mktemp("diffusion")
    text_dir = diffusion_models.build_standin_text_encoder(root / "text")
    vaes = {}
    for name, channels in (("vae-rgb", 3), ("vae-mel", 1)):
        vaes[name] = diffusion_training.train_vae(
            root / name, channels=channels, steps=30, batch_size=8, seed=0, progress=False, samples=48
        )
    return root, text_dir, vaes


@pytest.mark.parametrize("name", ["vae-rgb", "vae-mel"])
def test_train_vae_lowers_loss_and_scales_latents(trained, name):
    from diffusers import AutoencoderKL

    root, _, vaes = trained
    metrics = vaes[name]
    assert metrics["loss_last"] < metrics["loss_first"]
    assert metrics["recon_after"] < metrics["recon_before"]
    vae = AutoencoderKL.from_pretrained(str(root / name))
    assert vae.config.scaling_factor == pytest.approx(1.0 / metrics["latent_std"])
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 4 and vae.config.latent_channels == 4
    # centred and scaled: the data set's latents have zero mean per channel and unit spread
    data = diffusion_data.vae_training_data(vae.config.in_channels, 48, 0)
    latents = diffusion_models.encode_latents(vae, data)
    assert latents.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert float(latents.std()) == pytest.approx(1.0, abs=1e-3)


def _assert_learned(metrics: dict) -> None:
    assert metrics["loss_after"] < metrics["loss_before"]
    assert metrics["loss_last"] < metrics["loss_first"]
    assert metrics["parameters"] > 0


def test_train_image_generator_saves_a_stable_diffusion_pipeline(trained, tmp_path):
    from PIL import Image

    from generators.image import StableDiffusionTool

    root, text_dir, _ = trained
    metrics = diffusion_training.train_image_generator(
        text_dir,
        root / "vae-rgb",
        tmp_path / "image",
        steps=40,
        batch_size=16,
        seed=0,
        progress=False,
        samples=48,
        config=SMALL_UNET,
    )
    _assert_learned(metrics)
    cfg = GeneratorConfig(
        kind="stable_diffusion",
        model=str(tmp_path / "image"),
        num_inference_steps=2,
        options={"height": 32, "width": 32},
    )
    tool = StableDiffusionTool.from_config(cfg)
    assert [tuple(s.shape) for s in tool.conditioning_specs()] == [(16, 64)]
    assert tool.pipeline.vae_scale_factor == 4
    media = tool.generate(tool.encode_text(["a red circle"]), guidance_scale=4.0)
    assert Image.open(io.BytesIO(media.data)).size == (32, 32)


@pytest.mark.parametrize("architecture", ["motion", "unet3d"])
def test_train_video_generator_saves_a_text_to_video_pipeline(trained, tmp_path, architecture):
    import av

    from generators import GENERATORS

    root, text_dir, _ = trained
    metrics = diffusion_training.train_video_generator(
        text_dir,
        root / "vae-rgb",
        tmp_path / "video",
        steps=12,
        batch_size=4,
        seed=0,
        progress=False,
        samples=24,
        config=SMALL_UNET_3D,
        pretrain_steps=12,
        pretrain_batch_size=16,
        architecture=architecture,
    )
    _assert_learned(metrics)
    _assert_learned({**metrics["pretrain"], "parameters": 1})
    kind = diffusion_eval.video_kind(tmp_path / "video")
    assert kind == diffusion_models.VIDEO_ARCHITECTURES[architecture] and metrics["architecture"] == architecture
    cfg = GeneratorConfig(
        kind=kind,
        model=str(tmp_path / "video"),
        num_inference_steps=2,
        options={"num_frames": 8, "height": 32, "width": 32},
    )
    tool = GENERATORS.get(kind).from_config(cfg)
    media = tool.generate(tool.encode_text(["a blue square moving up"]), guidance_scale=4.0)
    with av.open(io.BytesIO(media.data)) as container:
        frames = list(container.decode(container.streams.video[0]))
    assert len(frames) == 8 and (frames[0].width, frames[0].height) == (32, 32)


def test_unknown_video_architecture_is_refused(trained, tmp_path):
    root, text_dir, _ = trained
    with pytest.raises(ValueError, match="unknown video architecture 'unet4d'"):
        diffusion_training.train_video_generator(
            text_dir, root / "vae-rgb", tmp_path / "v", steps=1, batch_size=1, seed=0, samples=4, architecture="unet4d"
        )


def test_train_audio_generator_saves_a_mel_diffusion_pipeline(trained, tmp_path):
    from generators.audio import MelDiffusionTool

    root, text_dir, _ = trained
    metrics = diffusion_training.train_audio_generator(
        text_dir,
        root / "vae-mel",
        tmp_path / "audio",
        steps=40,
        batch_size=16,
        seed=0,
        progress=False,
        samples=27,
        config=SMALL_UNET,
    )
    _assert_learned(metrics)
    assert MelParams.load(tmp_path / "audio") == MelParams()
    cfg = GeneratorConfig(kind="mel_diffusion", model=str(tmp_path / "audio"), num_inference_steps=2)
    tool = MelDiffusionTool.from_config(cfg)
    media = tool.generate(tool.encode_text(["two high beeps"]), guidance_scale=4.0)
    samples, rate = _wav(media.data)
    assert rate == 16000 and samples.shape == (16000,) and media.metadata["seconds"] == pytest.approx(1.0)


def test_caption_forms_and_balanced_data():
    _, things = diffusion_data.render_pictures(48, seed=1)
    assert len({(t.colour, t.shape, t.position, t.size) for t in things}) == 48  # one cycle: all distinct
    captions, ids = diffusion_data.caption_table(things[:3], (world_text.request_caption, world_text.caption))
    assert captions[0] == diffusion_data.EMPTY and ids.shape == (3, 2)
    assert captions[ids[0, 0]] == world_text.request_caption(things[0])
    assert captions[ids[0, 1]] == world_text.caption(things[0])


class _FixedJudges:
    """Reads every medium as the same thing and remembers what it was given."""

    def __init__(self, verdict: dict) -> None:
        self.verdict, self.seen = verdict, []

    def judge(self, kind: str, data: bytes) -> dict:
        self.seen.append((kind, data[:12]))
        return dict(self.verdict)


def test_evaluate_video_can_be_read_by_the_judges():
    from core.hub import resolve_model

    judges = _FixedJudges({"colour": "red", "shape": "circle", "direction": "up"})
    result = diffusion_eval.evaluate_video(
        resolve_model("@tinyworld/video-generator"), samples=6, steps=2, judges=judges, seed=4
    )
    wanted = diffusion_eval._request_things(Clip, 6, ("colour", "shape", "direction"), 4)
    assert [kind for kind, _ in judges.seen] == ["video"] * 6
    assert all(head[4:8] == b"ftyp" for _, head in judges.seen)  # the tool's own MP4, not the analytic GIF
    for attribute, value in judges.verdict.items():
        assert result[f"{attribute}_accuracy"] == sum(getattr(t, attribute) == value for t in wanted) / 6
    assert result["accuracy"] == sum((t.colour, t.shape, t.direction) == ("red", "circle", "up") for t in wanted) / 6
    assert len(result["failures"]) == min(8, 6 - round(result["accuracy"] * 6))
