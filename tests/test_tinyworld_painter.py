"""The eval's second renderer (:mod:`tinyworld.painter`), the hand-written analytic judge (:mod:`tinyworld.analytic`)
and the training renderer's augmentation (:func:`tinyworld.world.augmented`).

The painter and the analytic judge share no code: the painter draws sub-pixel inside-tests and additive harmonics,
the judge measures moments, hues, envelopes and spectra. So the judge reading the painter's labels back checks both.
"""

from __future__ import annotations

import ast
import io
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from core.errors import InvalidMediaError
from tinyworld import analytic, painter
from tinyworld.analytic import AnalyticJudge, judge_clip, judge_picture, judge_sound
from tinyworld.painter import RANGES, paint
from tinyworld.world import (
    AUGMENT,
    MIN_GAP,
    SAMPLE_RATES,
    Clip,
    Picture,
    Sound,
    as_received,
    augment_params,
    augmented,
    colour_label,
    encode,
)

KINDS = {"image": Picture, "video": Clip, "audio": Sound}
#: least share of renders whose attribute the analytic judge must read right
BAR = {"image": 0.95, "video": 0.95, "audio": 0.95}


def _scores(kind: str, media, n: int, seed: int) -> dict[str, float]:
    """The analytic judge's accuracy per attribute on ``n`` things of ``kind`` drawn by ``media(thing, i)``."""
    rng, judge, hits = random.Random(seed), AnalyticJudge(), Counter()
    cls = KINDS[kind]
    for i in range(n):
        thing = cls.sample(rng)
        found = judge.judge(kind, media(thing, i))
        hits.update(a for a in cls.attributes if str(found[a]) == str(getattr(thing, a)))
    return {a: hits[a] / n for a in cls.attributes}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_analytic_judge_reads_the_painters_labels_back(kind):
    scores = _scores(kind, lambda thing, i: paint(thing, 1000 + i).data, 90 if kind == "video" else 150, seed=1)
    assert min(scores.values()) >= BAR[kind], scores


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("augment", [False, True])
def test_the_analytic_judge_reads_the_world_renderers_labels_too(kind, augment):
    scores = _scores(kind, lambda thing, i: encode(thing, 2000 + i, augment=augment), 90, seed=2)
    if kind == "image" and not augment:  # a small aliased cross of 8 pixels is nearly a blob: shape has slack
        assert scores["shape"] >= 0.9 and min(scores.values()) >= 0.9, scores
    else:
        assert min(scores.values()) >= 0.93, scores


def test_paintings_are_deterministic_vary_with_the_seed_and_stay_in_their_ranges():
    picture, clip, sound = (
        Picture("red", "circle", "top left", "small"),
        Clip("blue", "cross", "up"),
        Sound("low", "square", 2),
    )
    for thing in (picture, clip, sound):
        assert paint(thing, 3).data == paint(thing, 3).data and paint(thing, 3).data != paint(thing, 4).data
    formats, rates, channels = Counter(), set(), set()
    for i in range(120):
        for thing in (picture, clip, sound):
            p = paint(thing, i)
            formats[p.mime] += 1
            for name, (low, high) in RANGES[thing.kind].items():
                values = p.params[name] if isinstance(p.params[name], list) else [p.params[name]]
                assert all(low <= v <= high + (1 if name == "side" else 0) for v in values), (name, values)
            if thing.kind == "audio":
                wave, rate = sf.read(io.BytesIO(p.data), always_2d=True)
                rates.add(rate)
                channels.add(wave.shape[1])
                assert wave.shape[0] / rate <= painter.LONGEST + 1e-6
                assert all(g >= MIN_GAP for g in p.params["gap"])
            if thing.kind == "image":
                image = Image.open(io.BytesIO(p.data))
                assert image.size == (p.params["side"], p.params["side"])
    assert {"image/png", "image/jpeg", "video/mp4", "image/gif", "audio/wav"} <= set(formats)
    assert len(rates) >= 5 and min(rates) <= 11025 and max(rates) >= 44100 and channels == {1, 2}


def test_painted_pictures_differ_from_the_training_renderers():
    thing = Picture("green", "square", "centre", "large")
    pixels = np.asarray(Image.open(io.BytesIO(paint(thing, 5).data)).convert("RGB"))
    corner = pixels[:3, :3].reshape(-1, 3)
    assert pixels.shape[0] != 32 or (corner != 255).any()  # another size, or a background that is not white
    edge = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(edge) > 10  # anti-aliased edges and noise: many colours, where the world draws two


def test_the_painter_shares_no_drawing_code_with_the_world_renderer():
    source = Path(painter.__file__).read_text()
    tree = ast.parse(source)
    from_world = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "tinyworld.world"
        for alias in node.names
    }
    assert from_world <= {
        "COLOURS",
        "DIRECTIONS",
        "PITCHES",
        "POSITION_RADIUS",
        "POSITIONS",
        "SIZES",
        "Clip",
        "Picture",
        "Sound",
        "Thing",
        "colour_label",
    }  # the labels' definitions, never draw_shape, waveform or a render
    from_pil = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "PIL"
        for alias in node.names
    }
    assert from_pil == {"Image"}  # no ImageDraw: every pixel is the painter's own inside-test
    assert "tinyworld.painter" not in Path(analytic.__file__).read_text()  # the judge knows nothing of the painter


def test_the_world_augmentation_covers_the_painters_ranges():
    for kind, ranges in RANGES.items():
        for name, (low, high) in ranges.items():
            assert name in AUGMENT[kind], (kind, name)
            a_low, a_high = AUGMENT[kind][name]
            assert a_low <= low and high <= a_high, (kind, name, (low, high), (a_low, a_high))
    assert set(painter.RATES) <= set(SAMPLE_RATES)
    # and what it draws really spans them
    things = {
        "image": Picture("red", "circle", "centre", "small"),
        "video": Clip("red", "circle", "up"),
        "audio": Sound("low", "sine", 3),
    }
    for kind, thing in things.items():
        drawn: dict[str, list[float]] = {}
        for seed in range(600):
            params = augment_params(thing, seed)
            for name in RANGES[kind]:
                value = params["gaps"] if name == "gap" else params[name]
                drawn.setdefault(name, []).extend(value if isinstance(value, list) else [value])
        for name, (low, high) in RANGES[kind].items():
            span = high - low
            assert min(drawn[name]) <= low + 0.1 * span and max(drawn[name]) >= high - 0.1 * span, (kind, name)


def test_augmented_renders_keep_their_labels_and_reach_other_formats():
    rng = random.Random(3)
    formats, sizes = Counter(), set()
    for seed in range(40):
        picture = Picture.sample(rng)
        image, params = augmented(picture, seed)
        sizes.add(image.size)
        assert image.size == (params["side"],) * 2
        formats[Image.open(io.BytesIO(encode(picture, seed, augment=True))).format] += 1
        clip = Clip.sample(rng)
        frames, params = augmented(clip, seed)
        assert len(frames) == params["frames"]
        sound = Sound.sample(rng)
        wave, params = augmented(sound, seed)
        assert wave.ndim == params["channels"] and len(wave) / params["sample_rate"] <= 1.95 + 1e-6
        received = as_received(sound, seed, augment=True)
        assert received.ndim == 1  # decoded as the system does: mono, 16 kHz
    assert formats.keys() == {"PNG", "JPEG"} and len(sizes) > 20
    assert encode(Picture("red", "circle", "centre", "small"), 1) == encode(
        Picture("red", "circle", "centre", "small"), 1, augment=False
    )
    with pytest.raises(ValueError, match="an augmented render draws its own size"):
        encode(Picture("red", "circle", "centre", "small"), 1, augment=True, side=64)


def test_augmented_colours_keep_their_label():
    rng = random.Random(4)
    for seed in range(200):
        picture = Picture.sample(rng)
        image, _ = augmented(picture, seed)
        mask, core, _soft = analytic.shape_mask(np.asarray(image, dtype=np.float64))
        assert colour_label(np.median(np.asarray(image)[core], axis=0)) == picture.colour


def test_analytic_shape_moments_follow_the_closed_forms():
    for shape, expected in {"square": 0.6, "circle": 0.0, "cross": -0.84}.items():
        coverage = painter.coverage(shape, 200, 100, 100, 150, 2)
        m = analytic.moments(coverage)
        assert abs(m["kurtosis_diagonals"] - m["kurtosis_axes"] - expected) < 0.05, shape
        assert abs(m["skew"]) < 0.01
    assert abs(analytic.moments(painter.coverage("triangle", 200, 100, 100, 150, 2))["skew"] + 0.566) < 0.01


def test_the_analytic_judge_gives_nothing_for_an_empty_picture_and_counts_no_beeps_in_silence():
    blank = Image.new("RGB", (40, 40), (230, 228, 225))
    assert judge_picture(blank) == {"colour": None, "shape": None, "position": None, "size": None}
    assert judge_sound(np.zeros(16000), 16000)["beeps"] == 0
    still = [
        Image.fromarray(
            np.asarray(
                Image.open(io.BytesIO(paint(Picture("red", "square", "centre", "large"), 1).data)).convert("RGB")
            )
        )
    ] * 4
    assert judge_clip(still)["direction"] is None


def test_analytic_judge_bad_input_gives_clear_errors():
    judge = AnalyticJudge()
    with pytest.raises(ValueError, match="unknown media kind 'smell'"):
        judge.judge("smell", b"")
    with pytest.raises(InvalidMediaError):
        judge.judge("image", b"not an image at all")
    with pytest.raises(ValueError, match="at least 2 frames"):
        judge_clip([Image.new("RGB", (32, 32))])
    with pytest.raises(ValueError, match=r"shape \(N,\) or \(N, channels\)"):
        judge_sound(np.zeros((2, 2, 2)), 16000)
    with pytest.raises(ValueError, match="sample rate must be a positive integer"):
        judge_sound(np.zeros(100), 0)
    with pytest.raises(ValueError, match=r"a picture must be \(H, W, 3\)"):
        judge_picture(np.zeros((8, 8)))
    with pytest.raises(TypeError, match="the painter draws pictures, clips and sounds"):
        paint("a red circle", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="samples must be >= 1"):
        painter.coverage("square", 8, 4, 4, 4, 0)
    with pytest.raises(ValueError, match="cannot draw 'hexagon'"):
        painter.coverage("hexagon", 8, 4, 4, 4, 1)


def test_the_encoders_training_set_takes_augmented_renders_only_when_asked():
    import torch

    from tinyworld.encoders import _render_training_set, build_image_processor, build_tokenizer

    tokenizer, processor = build_tokenizer(), build_image_processor()
    plain = _render_training_set(9, 1, tokenizer, processor)
    again = _render_training_set(9, 1, tokenizer, processor, augment=0.0)
    varied = _render_training_set(9, 1, tokenizer, processor, augment=1.0)
    for a, b, c in zip(plain[:3], again[:3], varied[:3]):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.attributes, b.attributes)  # off: as before
        assert a.inputs.shape == c.inputs.shape  # on: other renders, the same tensors for the towers
    assert not torch.equal(plain[0].inputs, varied[0].inputs)
