"""The tinyworld renderer: deterministic, validated, and every attribute readable back from the medium with plain
measurements (so a model that fails to learn an attribute cannot blame the data)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tinyworld.text import Exchange, answer, answer_words, caption, generation, request_caption, understanding
from tinyworld.world import COLOURS, DIRECTIONS, PITCHES, POSITIONS, SAMPLE_RATE, SIZES, Clip, Picture, Sound, encode


def _mask(image) -> np.ndarray:
    pixels = np.asarray(image).astype(int)
    return np.abs(pixels - 255).sum(-1) > 60  # (H, W) non-background


def measure_picture(image) -> dict:
    pixels = np.asarray(image).astype(float)
    mask = _mask(image)
    mean = pixels[mask].mean(0)
    colour = min(COLOURS, key=lambda c: np.linalg.norm(mean - np.array(COLOURS[c])))
    ys, xs = np.nonzero(mask)
    side = image.size[0]
    centre = (xs.mean() / side, ys.mean() / side)
    position = min(POSITIONS, key=lambda p: np.hypot(centre[0] - POSITIONS[p][0], centre[1] - POSITIONS[p][1]))
    box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    fill = mask.sum() / box  # square ~1, circle ~0.79, triangle ~0.5, cross ~0.56
    extent = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) / side
    size = min(SIZES, key=lambda s: abs(SIZES[s] - extent))
    return {"colour": colour, "position": position, "size": size, "fill": fill}


def measure_clip(frames) -> dict:
    first, last = (measure_picture(f) for f in (frames[0], frames[-1]))
    centres = []
    for frame in (frames[0], frames[-1]):
        ys, xs = np.nonzero(_mask(frame))
        centres.append((xs.mean(), ys.mean()))
    dx, dy = centres[1][0] - centres[0][0], centres[1][1] - centres[0][1]
    direction = max(DIRECTIONS, key=lambda d: DIRECTIONS[d][0] * dx + DIRECTIONS[d][1] * dy)
    return {"colour": first["colour"], "direction": direction, "fill": first["fill"]}


def measure_sound(samples: np.ndarray) -> dict:
    loud = np.abs(samples) > 0.05
    # beeps: runs of loudness separated by more than 50 ms of silence
    frame = SAMPLE_RATE // 100
    active = np.array([loud[i : i + frame].any() for i in range(0, len(samples), frame)])
    beeps = int(np.sum(active[1:] & ~active[:-1]) + active[0])
    spectrum = np.abs(np.fft.rfft(samples))
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    f0 = freqs[spectrum.argmax()]
    pitch = min(PITCHES, key=lambda p: abs(np.log(PITCHES[p] / f0)))
    band = lambda f: spectrum[(freqs > 0.9 * f) & (freqs < 1.1 * f)].max()  # noqa: E731
    second, third = band(2 * f0) / band(f0), band(3 * f0) / band(f0)
    waveform = "sine" if third < 0.1 else ("sawtooth" if second > 0.25 else "square")
    return {"beeps": beeps, "pitch": pitch, "waveform": waveform}


FILL_ORDER = {"square": 0.95, "circle": 0.78, "cross": 0.58, "triangle": 0.5}


@pytest.mark.parametrize("seed", range(40))
def test_pictures_render_their_attributes(seed):
    thing = Picture.sample(random.Random(seed))
    got = measure_picture(thing.render(seed))
    assert (got["colour"], got["position"], got["size"]) == (thing.colour, thing.position, thing.size)
    shape = min(FILL_ORDER, key=lambda s: abs(FILL_ORDER[s] - got["fill"]))
    assert shape == thing.shape or {shape, thing.shape} == {"cross", "triangle"} and thing.size == "small"


@pytest.mark.parametrize("seed", range(24))
def test_clips_move_in_their_direction(seed):
    thing = Clip.sample(random.Random(seed))
    frames = thing.render(seed)
    assert len(frames) == 8 and frames[0].size == (32, 32)
    got = measure_clip(frames)
    assert (got["colour"], got["direction"]) == (thing.colour, thing.direction)


@pytest.mark.parametrize("seed", range(27))
def test_sounds_have_their_pitch_waveform_and_beeps(seed):
    thing = Sound.sample(random.Random(seed))
    samples = thing.render(seed)
    assert samples.dtype == np.float32 and samples.shape == (SAMPLE_RATE,) and np.abs(samples).max() <= 0.5 + 1e-6
    assert measure_sound(samples) == {"beeps": thing.beeps, "pitch": thing.pitch, "waveform": thing.waveform}


def test_rendering_is_deterministic_and_seeds_vary_it():
    thing = Picture("red", "circle", "centre", "large")
    assert encode(thing, 3) == encode(thing, 3)
    assert encode(thing, 3) != encode(thing, 4)
    clip = Clip("blue", "cross", "up")
    assert [np.asarray(f).tolist() for f in clip.render(1)] == [np.asarray(f).tolist() for f in clip.render(1)]
    assert np.array_equal(Sound("low", "square", 2).render(5), Sound("low", "square", 2).render(5))


def test_bad_attributes_and_pinned_sampling():
    with pytest.raises(ValueError, match="colour must be one of"):
        Picture("pink", "circle", "centre", "large")
    with pytest.raises(ValueError, match="beeps must be one of"):
        Sound("low", "sine", 4)
    rng = random.Random(0)
    assert {Picture.sample(rng, colour="green").colour for _ in range(20)} == {"green"}


def test_text_names_the_attributes():
    pic, clip, sound = (
        Picture("red", "circle", "top left", "small"),
        Clip("blue", "square", "up"),
        Sound("high", "sine", 2),
    )
    assert caption(pic) == "a small red circle in the top left"
    assert caption(clip) == "a blue square moving up"
    assert caption(sound) == "two high sine beeps"
    assert request_caption(sound) == "two high beeps" and request_caption(pic) == "a red circle"
    for thing in (pic, clip, sound):
        for attribute in thing.attributes:
            assert answer_words(thing, attribute) in answer(thing, attribute)


def test_exchanges_use_placeholders_for_inputs_and_outputs():
    rng = random.Random(0)
    for _ in range(20):
        ex = understanding(Clip.sample(rng), rng)
        assert isinstance(ex, Exchange) and ex.user.count("<video>") == 1 and ex.media_in and not ex.media_out
        gen = generation(Sound.sample(rng), rng)
        assert gen.assistant.count("<audio>") == 1 and gen.media_out[0][1] == request_caption(gen.media_out[0][0])
