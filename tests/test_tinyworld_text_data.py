"""The tinyworld's dialogues, the LLM's text view of them, the PT / IT data sets, and the eval's answer check."""

from __future__ import annotations

import json
import random
import struct
import time

import pytest

from core.config import MediaLimits
from modalities.media import decode, encode_mp4
from tinyworld import text as world_text
from tinyworld.data import PT_MIX, held_out_seed, write_datasets
from tinyworld.language import as_text, text_dialogues
from tinyworld.text import values_named
from tinyworld.world import Clip, Picture, Sound
from training.data import MediaSeg, OutputSeg, TextSeg, load_samples


def test_the_text_view_puts_the_caption_where_the_medium_goes_and_drops_output_placeholders():
    rng = random.Random(0)
    picture = Picture(colour="red", shape="circle", position="top left", size="small")
    wanted = Clip(colour="blue", shape="cross", direction="up")
    user, assistant = as_text(world_text.both(picture, wanted, rng))
    assert "<" not in user + assistant
    assert world_text.caption(picture) in user and "a blue cross moving up" in user
    assert assistant.endswith("a video of a blue cross moving up:")


def test_text_dialogues_are_seeded_and_mix_every_task():
    first, again = text_dialogues(200, seed=3), text_dialogues(200, seed=3)
    assert first == again and first != text_dialogues(200, seed=4)
    replies = [text for dialogue in first for role, text in dialogue if role == "assistant"]
    assert any(r.startswith("It is") for r in replies)  # answers
    assert any(r.endswith(":") for r in replies)  # generation replies end where the signal tokens will go
    assert any("a picture of" in r for r in replies) and any("the sound of" in r for r in replies)
    assert any(r in {reply for _, reply in world_text.CHAT} for r in replies)


def test_every_corpus_word_is_a_single_piece_of_the_clip_style_tokenizer():
    from orchestrator.tiny import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer(16, corpus=world_text.corpus(), num_merges=300)
    for thing in world_text.all_things()[::7]:
        words = world_text.caption(thing).split()
        assert len(tokenizer.tokenize(world_text.caption(thing))) == len(words)


def test_datasets_load_with_the_training_loader_and_their_media_decode(tmp_path):
    paths = write_datasets(tmp_path, pt=18, it=10, seed=1, progress=False)  # one cycle of the default PT_MIX
    kinds = ["image", "video", "audio"]
    pt = load_samples(paths["pt"], modalities=kinds, generators=kinds)
    it = load_samples(paths["it"], modalities=kinds, generators=kinds)
    assert len(pt) == 18 and len(it) == 10
    describe = [s for s in pt if s.media]
    generate = [s for s in pt if s.outputs()]
    assert len(describe) == sum(w for k, w in PT_MIX.items() if k.endswith("/describe")) == 12
    assert len(generate) == sum(w for k, w in PT_MIX.items() if k.endswith("/generate")) == 6
    for sample in describe:
        ((kind, (path,)),) = sample.media.items()
        medium = decode(kind, path.read_bytes(), MediaLimits(), **({"num_frames": 8} if kind == "video" else {}))
        assert medium is not None
        # the caption reply names the thing the file shows: the file name carries its kind
        assert path.name.endswith({"image": "png", "video": "mp4", "audio": "wav"}[kind])
    segs = [seg for s in it for _, turn in s.turns for seg in turn]
    assert any(isinstance(s, MediaSeg) for s in segs) and any(isinstance(s, OutputSeg) for s in segs)
    assert all(isinstance(s, (MediaSeg, OutputSeg, TextSeg)) for s in segs)


def test_datasets_are_reproducible(tmp_path):
    a = write_datasets(tmp_path / "a", pt=9, it=6, seed=5, progress=False)
    b = write_datasets(tmp_path / "b", pt=9, it=6, seed=5, progress=False)
    assert a["pt"].read_text() == b["pt"].read_text() and a["it"].read_text() == b["it"].read_text()
    for file in sorted((tmp_path / "a" / "media").iterdir()):
        assert file.read_bytes() == (tmp_path / "b" / "media" / file.name).read_bytes()
    assert held_out_seed(0) >= 2**40


# -- the data sets' MP4 clips are the same bytes each time they are written -----------------------------------------


def mp4_times(data: bytes) -> list[int]:
    """The creation and modification times of every movie, track and media header (mvhd, tkhd, mdhd) of an MP4."""
    times, stack = [], [(0, len(data))]
    while stack:
        at, end = stack.pop()
        while at + 8 <= end:
            size, kind = struct.unpack(">I4s", data[at : at + 8])
            assert size >= 8, f"box {kind!r} at {at} has size {size}"
            if kind in (b"moov", b"trak", b"mdia"):
                stack.append((at + 8, at + size))
            elif kind in (b"mvhd", b"tkhd", b"mdhd"):
                version, fmt = data[at + 8], (">II" if data[at + 8] == 0 else ">QQ")
                times += struct.unpack(fmt, data[at + 12 : at + 12 + struct.calcsize(fmt)])
                assert version in (0, 1)
            at += size
    return times


def clips(count: int) -> list[list]:
    rng = random.Random(11)
    return [Clip.sample(rng).render(rng.randrange(2**31)) for _ in range(count)]


def test_clip_mp4s_hold_no_clock_time_and_repeat_across_a_second_boundary():
    """A write that straddles a second gives the same bytes: the container records no wall-clock time (FFmpeg
    stamps one only when asked to by ``creation_time`` metadata, which the writer never sets)."""
    frames = clips(1)[0]
    first = encode_mp4(frames, fps=8)
    times = mp4_times(first)
    assert len(times) == 6 and set(times) == {0}  # mvhd, tkhd, mdhd: creation and modification
    time.sleep(1.02 - time.time() % 1)  # past the next second boundary of the clock
    assert encode_mp4(frames, fps=8) == first


def test_clip_mp4_encoding_is_repeatable():
    """x264 writes the settings it encoded with into the stream, and those that make it repeatable are checked
    there: one encoder thread and no macroblock-tree rate control. With x264's own thread count and mbtree (the
    writer before commit 4c88abb), encodes of these clips came out different in bursts, about one in eleven over a
    minute, first at byte 43 (the size of the ``mdat`` box, not a time stamp); the repeats are a second check."""
    for frames in clips(20):
        first = encode_mp4(frames, fps=8)
        settings = first[first.index(b"x264 - core") :].split(b"\0")[0].decode().split()
        assert {"threads=1", "lookahead_threads=1", "mbtree=0"} <= set(settings)
        assert all(encode_mp4(frames, fps=8) == first for _ in range(9))


@pytest.mark.parametrize(
    "reply, kind, attribute, expected",
    [
        ("It is in the top left.", "image", "position", {"top left"}),
        ("It moves left.", "video", "direction", {"left"}),
        ("It is red, or maybe orange.", "image", "colour", {"red", "orange"}),
        ("There are two beeps.", "audio", "beeps", {"2"}),
        ("It is a square wave.", "audio", "waveform", {"square"}),
        ("I do not know.", "image", "shape", set()),
    ],
)
def test_the_eval_reads_the_values_a_reply_names(reply, kind, attribute, expected):
    assert values_named(reply, kind, attribute) == expected


def test_sounds_of_the_eval_name_their_beeps_as_words():
    sound = Sound(pitch="low", waveform="sine", beeps=3)
    assert values_named(world_text.answer(sound, "beeps"), "audio", "beeps") == {str(sound.beeps)}


def test_pt_mix_weighs_tasks_and_spreads_them():
    from collections import Counter

    from tinyworld.data import task_schedule

    mix = {"video/describe": 6, "image/describe": 3, "audio/generate": 1}
    cycle = task_schedule(mix)
    assert Counter(f"{k}/{t}" for k, t in cycle) == Counter(mix)
    videos = [i for i, (kind, _) in enumerate(cycle) if kind == "video"]
    assert max(b - a for a, b in zip(videos, videos[1:])) <= 2  # never bunched: at most one other task between
    with pytest.raises(ValueError, match="bad PT mix entry 'smell/describe'"):
        task_schedule({"smell/describe": 1})


def test_pt_rows_follow_the_mix(tmp_path):
    paths = write_datasets(
        tmp_path, pt=20, it=0, seed=2, mix={"video/describe": 3, "audio/generate": 1}, progress=False
    )
    rows = [json.loads(line) for line in paths["pt"].read_text().splitlines()]
    assert sum("video" in r for r in rows) == 15 and sum(r.get("generate") == "audio" for r in rows) == 5


def test_follow_ups_revisit_an_earlier_thing_with_one_requested_attribute_changed():
    rng = random.Random(5)
    sound = Sound(pitch="low", waveform="sine", beeps=3)
    for _ in range(40):
        ex = world_text.follow_up(sound, rng)
        (thing,) = ex.media_in + [t for t, _ in ex.media_out]
        changed = [a for a in Sound.attributes if getattr(thing, a) != getattr(sound, a)]
        assert len(changed) == 1 and changed[0] in world_text.REQUESTED["audio"]
        # the reply names the new value, never the old one
        words = ex.assistant.replace(".", " ").replace(":", " ").split()
        new, old = str(getattr(thing, changed[0])), str(getattr(sound, changed[0]))
        if changed[0] == "beeps":
            new, old = world_text.NUMBERS[int(new)], world_text.NUMBERS[int(old)]
        assert new in words and old not in words
    # with follow-ups certain, every exchange after one that met a thing revisits a thing met before
    rng = random.Random(6)
    revisits = 0
    for _ in range(50):
        dialogue = world_text.dialogue(rng, max_turns=4, follow_ups=1.0)
        for i, ex in enumerate(dialogue[1:], start=1):
            met = [t for e in dialogue[:i] for t in e.media_in + [t for t, _ in e.media_out]]
            if met:
                now = (ex.media_in + [t for t, _ in ex.media_out])[0]
                assert any(
                    type(now) is type(t) and sum(getattr(now, a) != getattr(t, a) for a in t.attributes) == 1
                    for t in met
                )
                revisits += 1
    assert revisits > 20
    # without follow-ups a dialogue draws exactly what plain exchanges draw, so the LLM's text dialogues and the
    # shipped IT data are unchanged by this option

    def plain(rng):
        return [world_text.exchange(rng) for _ in range(rng.randint(1, 3))]

    for s in range(50):
        assert world_text.dialogue(random.Random(s)) == plain(random.Random(s))
