"""The tinyworld judges: independent classifiers that read attributes back from (generated) media.

One short training run (shrunken settings, a few seconds) is shared by the module; the full-size judges are
trained by ``python -m tinyworld.judges OUT`` and are not needed here.
"""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from core.config import MediaLimits
from modalities.media import decode_audio, decode_video, encode_gif, encode_mp4, encode_png, encode_wav, uniform_indices
from tinyworld import judges as J
from tinyworld.world import SAMPLE_RATE, Clip, Picture, Sound

THINGS = {"picture": Picture, "clip": Clip, "sound": Sound}
SHORT = {"steps": 100, "batch_size": 16, "eval_samples": 200}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Judges trained briefly into a temporary directory, and the clean accuracy train_judges returned."""
    out = tmp_path_factory.mktemp("judges")
    accuracy = J.train_judges(out, progress=False, **SHORT)
    return out, accuracy


@pytest.fixture(scope="module")
def judges(trained):
    return J.Judges.load(trained[0])


def _check_verdict(verdict: dict, thing_cls) -> None:
    """A verdict names every attribute with one of its values (beeps as a plain int)."""
    assert set(verdict) == set(thing_cls.attributes)
    for attribute, value in verdict.items():
        assert value in thing_cls.choices(attribute), (attribute, value)
        assert type(value) is type(next(iter(thing_cls.choices(attribute))))


def _logits_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------------------------
# training, files, accuracy
# ------------------------------------------------------------------------------------------------------------------
def test_training_saves_safetensors_and_json_and_learns_well_above_chance(trained):
    out, accuracy = trained
    assert set(accuracy) == set(THINGS)
    for name, thing_cls in THINGS.items():
        assert sorted(p.name for p in out.glob(f"{name}.*")) == [f"{name}.json", f"{name}.safetensors"]
        # safetensors: an 8-byte little-endian header length, then a JSON header -- no pickle anywhere
        raw = (out / f"{name}.safetensors").read_bytes()
        (header_size,) = struct.unpack("<Q", raw[:8])
        assert json.loads(raw[8 : 8 + header_size])
        config = json.loads((out / f"{name}.json").read_text())
        assert config["judge"] == name and config["format"] == J.FORMAT
        assert config["accuracy"]["clean"] == accuracy[name]
        assert set(config["accuracy"]["noisy"]) == set(thing_cls.attributes)
        assert config["training"]["steps"] == SHORT["steps"] and config["training"]["seed"] == 1000
        assert config["attributes"] == {a: list(thing_cls.choices(a)) for a in thing_cls.attributes}

        assert set(accuracy[name]) == set(thing_cls.attributes)
        for attribute, value in accuracy[name].items():
            chance = 1 / len(thing_cls.choices(attribute))
            assert value >= chance + 0.1, f"{name}.{attribute}: {value:.2f} is not well above chance {chance:.2f}"
        assert np.mean(list(accuracy[name].values())) >= 0.7, (name, accuracy[name])


def test_models_are_small_and_multi_head():
    for name, cls in J.JUDGES.items():
        model = cls()
        assert 10_000 < model.parameter_count() < 300_000, (name, model.parameter_count())
        assert set(model.heads) == set(THINGS[name].attributes)


def test_training_is_reproducible_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = J.train_judge("sound", steps=2, batch_size=4, seed=1000, progress=False)
    b = J.train_judge("sound", steps=2, batch_size=4, seed=1000, progress=False)
    c = J.train_judge("sound", steps=2, batch_size=4, seed=1001, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_evaluation_is_deterministic_and_noisy_is_harder_than_nothing():
    model = J.train_judge("picture", steps=3, batch_size=8, progress=False)
    clean = J.evaluate(model, samples=40, seed=5)
    assert clean == J.evaluate(model, samples=40, seed=5)
    noisy = J.evaluate(model, samples=40, seed=5, noisy=True)
    assert set(noisy) == set(clean) and all(0.0 <= v <= 1.0 for v in noisy.values())
    assert not model.training


# ------------------------------------------------------------------------------------------------------------------
# save / load
# ------------------------------------------------------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = J.train_judge("picture", steps=3, batch_size=8, progress=False)
    J.save_judge(model, tmp_path)
    loaded = J.load_judge(tmp_path, "picture")
    x, _ = J.make_batch("picture", 16, random.Random(5), torch.Generator().manual_seed(5), "noisy")
    with torch.no_grad():
        assert _logits_equal(model(x), loaded(x))


def test_judges_load_and_resave_all_three_exactly(trained, judges, tmp_path):
    for name, model in judges.models.items():
        J.save_judge(model, tmp_path)
        again = J.load_judge(tmp_path, name)
        x, _ = J.make_batch(name, 6, random.Random(1), torch.Generator().manual_seed(1), "noisy")
        with torch.no_grad():
            assert _logits_equal(model(x), again(x)), name
    rng = random.Random(2)
    pic, clip, sound = Picture.sample(rng), Clip.sample(rng), Sound.sample(rng)
    reloaded = J.Judges.load(tmp_path)
    assert reloaded.picture(pic.render(3)) == judges.picture(pic.render(3))
    assert reloaded.clip(clip.render(3)) == judges.clip(clip.render(3))
    assert reloaded.sound(sound.render(3)) == judges.sound(sound.render(3))


def test_loading_refuses_missing_or_foreign_files(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="picture.json"):
        J.Judges.load(tmp_path)
    out = trained[0]
    for name in J.JUDGES:
        for suffix in (".json", ".safetensors"):
            (tmp_path / f"{name}{suffix}").write_bytes((out / f"{name}{suffix}").read_bytes())
    config = json.loads((tmp_path / "clip.json").read_text())
    (tmp_path / "clip.json").write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(ValueError, match="version"):
        J.Judges.load(tmp_path)
    (tmp_path / "clip.json").write_text(json.dumps({**config, "judge": "sound"}))
    with pytest.raises(ValueError, match="not a tinyworld clip judge"):
        J.Judges.load(tmp_path)


# ------------------------------------------------------------------------------------------------------------------
# inference on media and encoded bytes
# ------------------------------------------------------------------------------------------------------------------
def test_judge_decodes_png_mp4_gif_and_wav(judges):
    rng = random.Random(3)
    limits = MediaLimits()

    picture = Picture.sample(rng)
    image = picture.render(11)
    verdict = judges.judge("image", encode_png(image))
    assert verdict == judges.picture(image)  # PNG is lossless
    _check_verdict(verdict, Picture)
    _check_verdict(judges.picture(picture.render(11, side=64)), Picture)  # other sizes are resized

    clip = Clip.sample(rng)
    data = encode_mp4(clip.render(11, frames=16))
    verdict = judges.judge("video", data)
    assert verdict == judges.clip(decode_video(data, limits, num_frames=J.FRAMES))
    _check_verdict(verdict, Clip)
    _check_verdict(judges.judge("video", encode_gif(clip.render(11, frames=4))), Clip)

    sound = Sound.sample(rng)
    data = encode_wav(sound.render(11), SAMPLE_RATE)
    verdict = judges.judge("audio", data)
    assert verdict == judges.sound(decode_audio(data, limits))
    _check_verdict(verdict, Sound)


def test_judging_encoded_media_mostly_gets_the_easy_attributes_right(judges):
    """Even briefly trained judges read direction through MP4 and pitch and beeps through WAV."""
    rng = random.Random(4)
    clips = [Clip.sample(rng) for _ in range(12)]
    frames = [8, 16, 4]
    right = [
        judges.judge("video", encode_mp4(c.render(i, frames=frames[i % 3])))["direction"] == c.direction
        for i, c in enumerate(clips)
    ]
    assert np.mean(right) >= 0.75, right
    sounds = [Sound.sample(rng) for _ in range(12)]
    verdicts = [judges.judge("audio", encode_wav(s.render(i), SAMPLE_RATE)) for i, s in enumerate(sounds)]
    assert np.mean([v["pitch"] == s.pitch for v, s in zip(verdicts, sounds)]) >= 0.75
    assert np.mean([v["beeps"] == s.beeps for v, s in zip(verdicts, sounds)]) >= 0.75


def test_bad_input_gives_clear_errors(judges):
    picture = Picture("red", "circle", "centre", "large")
    with pytest.raises(ValueError, match="unknown media kind 'text'"):
        judges.judge("text", b"hello")
    with pytest.raises(ValueError, match="at least 2 frames"):
        judges.judge("video", encode_mp4([picture.render(0)]))
    with pytest.raises(ValueError, match="at least 2 frames"):
        judges.clip([])
    with pytest.raises(ValueError, match="not a recognised image"):
        judges.judge("image", b"definitely not a png")
    with pytest.raises(ValueError, match="empty"):
        judges.sound(np.zeros(0, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        judges.sound(np.full(100, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="sample_rate"):
        judges.sound(np.zeros(100, dtype=np.float32), sample_rate=0)
    with pytest.raises(ValueError, match="shape"):
        judges.sound(np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="PIL image"):
        judges.picture(np.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="expects"):
        judges.models["clip"](torch.zeros(1, 4, 3, 32, 32))


# ------------------------------------------------------------------------------------------------------------------
# preprocessing, features, augmentation
# ------------------------------------------------------------------------------------------------------------------
def test_pictures_and_clips_are_resized_and_resampled():
    image = Picture("blue", "square", "top left", "large").render(0, side=64)
    array = J.picture_array(image)
    assert array.shape == (3, 32, 32) and array.dtype == np.float32 and 0 <= array.min() <= array.max() <= 1
    rgba = image.convert("RGBA")
    assert np.array_equal(J.picture_array(rgba), array)
    for total in (2, 5, 8, 16, 30):
        indices = J.frame_indices(total)
        assert len(indices) == 8 and indices[0] == 0 and indices[-1] == total - 1 and indices == sorted(indices)
        if total >= 8:  # the same frames decode_video picks from longer videos
            assert indices == uniform_indices(total, 8)
    frames = [Image.new("RGB", (32, 32), (10 * i, 0, 0)) for i in range(4)]
    reds = J.clip_array(frames)[:, 0, 0, 0] * 255
    assert np.allclose(reds, [0, 0, 10, 10, 20, 20, 30, 30])


def test_sounds_are_padded_trimmed_mixed_and_resampled():
    assert J.sound_array(np.ones(8000, dtype=np.float32)).tolist() == [1.0] * 8000 + [0.0] * 8000
    assert J.sound_array(np.ones(40000, dtype=np.float32)).shape == (SAMPLE_RATE,)
    stereo = np.stack([np.ones(16000), -np.ones(16000)], 1)
    assert np.allclose(J.sound_array(stereo), 0.0)
    t = np.arange(22050) / 22050
    resampled = J.sound_array(np.sin(2 * np.pi * 660.0 * t), sample_rate=22050)
    spectrum = np.abs(np.fft.rfft(resampled))
    assert (
        resampled.shape == (SAMPLE_RATE,)
        and abs(np.fft.rfftfreq(SAMPLE_RATE, 1 / SAMPLE_RATE)[spectrum.argmax()] - 660.0) < 2.0
    )


def test_mel_filterbank_covers_every_band_in_pitch_order():
    bank = J.mel_filterbank(512, 64, SAMPLE_RATE, 100.0, 8000.0)
    assert bank.shape == (64, 257) and torch.allclose(bank.sum(1), torch.ones(64))
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    peaks = []
    for freq in (330.0, 660.0, 1320.0, 5000.0):
        spectrum = torch.tensor(
            np.abs(np.fft.rfft(np.sin(2 * np.pi * freq * t)[:512] * np.hanning(512))), dtype=torch.float32
        )
        peaks.append(int((bank @ spectrum).argmax()))
    assert peaks == sorted(peaks) and len(set(peaks)) == 4


def test_augmentations_are_seeded_bounded_and_change_the_input():
    clips, _ = J.make_batch("clip", 4, random.Random(0), torch.Generator().manual_seed(0), "clean")
    for heavy in (False, True):
        a = J.augment_frames(clips, torch.Generator().manual_seed(1), shift=2, heavy=heavy)
        b = J.augment_frames(clips, torch.Generator().manual_seed(1), shift=2, heavy=heavy)
        assert torch.equal(a, b) and a.shape == clips.shape and 0 <= a.min() and a.max() <= 1
        assert (a - clips).abs().mean() > 0.01
    sounds, _ = J.make_batch("sound", 4, random.Random(0), torch.Generator().manual_seed(0), "clean")
    for heavy in (False, True):
        a = J.augment_sounds(sounds, torch.Generator().manual_seed(1), heavy=heavy)
        b = J.augment_sounds(sounds, torch.Generator().manual_seed(1), heavy=heavy)
        assert torch.equal(a, b) and a.shape == sounds.shape and a.abs().max() <= 1
        assert (a - sounds).abs().mean() > 0.001
    # Griffin-Lim from the true magnitude keeps a tone's spectrum where it was
    tone = torch.sin(2 * torch.pi * 660.0 * torch.arange(SAMPLE_RATE) / SAMPLE_RATE)[None] * 0.5
    rebuilt = J._phase_scramble(tone, torch.Generator().manual_seed(0), 8, 1, 0.0)
    assert abs(int(torch.fft.rfft(rebuilt[0]).abs().argmax()) - 660) <= 15


# ------------------------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------------------------
def test_command_line_trains_and_prints_the_table(tmp_path, capsys):
    assert J.main([str(tmp_path), "--steps", "1", "--batch-size", "4", "--eval-samples", "4"]) == 0
    captured = capsys.readouterr()
    assert "picture judge" in captured.err  # the progress bar
    for word in ("colour", "direction", "beeps", "clean", "noisy", "parameters"):
        assert word in captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{name}{suffix}" for name in J.JUDGES for suffix in (".json", ".safetensors")
    )
