"""The tiny world's vocabulary as a newcomer reads it (``core/presets/tiny-world.yaml``, shown by the web page,
``mmgraph chat`` and ``GET /v1/models``) says exactly what the world holds."""

from __future__ import annotations

import re

from core.config import SystemConfig, Vocabulary
from core.config import load_config as load_preset
from tinyworld import phrasing
from tinyworld.world import BEEPS, COLOURS, DIRECTIONS, PITCHES, POSITIONS, SHAPES, SIZES, WAVEFORMS


def test_the_preset_vocabulary_is_the_worlds():
    vocabulary = load_preset("tiny-world").vocabulary
    assert vocabulary is not None
    assert vocabulary.words == {
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
        "positions": sorted(POSITIONS, key=lambda p: p != "centre"),
        "sizes": list(SIZES),
        "directions (videos)": list(DIRECTIONS),
        "pitches (sounds)": list(PITCHES),
        "waveforms (sounds)": list(WAVEFORMS),
        "beeps (sounds)": [str(n) for n in BEEPS],
        "media": list(phrasing.MEDIUM_SLOTS.values()),
    }
    # what it says it declines is what the honest answers decline: no listed word is out of the world's vocabulary
    listed = {w for values in vocabulary.words.values() for w in values}
    assert not listed & {w for g in phrasing.GROUPS if g.startswith("oov:") for w in phrasing.GROUPS[g][1]}


def test_a_vocabulary_is_optional_plain_data():
    config = load_preset("tiny-random")
    assert config.vocabulary is None  # a system that says nothing shows nothing
    v = Vocabulary(summary="s", words={"colours": ["red"]}, examples=["Draw it."], limits=["none"])
    assert v.lines() == ["s", "  colours: red", "try:", "  Draw it.", "limits:", "  none"]
    again = SystemConfig.model_validate({**config.model_dump(), "vocabulary": v.model_dump()})
    assert again.vocabulary == v


def test_the_examples_a_newcomer_clicks_make_what_they_ask_for(world_assistant):
    """The requests among the vocabulary's examples are answered by the shipped system with that very medium."""
    from tinyworld import text as world_text

    examples = [e for e in load_preset("tiny-world").vocabulary.examples if "(attach" not in e]
    wanted = {"draw": "image", "video": "video", "hear": "audio"}
    assert len(examples) == 3
    for i, example in enumerate(examples):
        kind = next(k for word, k in wanted.items() if word in example.lower())
        reply = world_assistant.chat(example, thread_id=f"vocabulary-example-{i}")
        assert [a.mime.split("/")[0] for a in reply.artifacts] == [kind], (example, reply.text)
        # the reply restates what it makes: every value the example names
        values = [*COLOURS, *SHAPES, *DIRECTIONS, *PITCHES, *(world_text.NUMBERS[n] for n in BEEPS)]
        named = [v for v in values if re.search(rf"\b{v}\b", example.lower())]
        assert named and all(re.search(rf"\b{v}\b", reply.text.lower()) for v in named), (example, reply.text)
