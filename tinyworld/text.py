"""The tinyworld's language: captions, questions and answers, generation requests, and dialogues mixing both.

Every sentence is built from a thing's attributes, so an answer can be checked by looking for the attribute's
words (:func:`answer_words`). Requests to generate name the attributes the generator is judged on, and their
reply carries the output placeholder plus the caption the output projector is aligned to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tinyworld.world import Clip, Picture, Sound, Thing

NUMBERS = {1: "one", 2: "two", 3: "three"}


def caption(thing: Thing) -> str:
    """The canonical description: ``a large red circle in the top left``, ``a blue square moving up``,
    ``two high sine beeps``."""
    if isinstance(thing, Picture):
        return f"a {thing.size} {thing.colour} {thing.shape} in the {thing.position}"
    if isinstance(thing, Clip):
        return f"a {thing.colour} {thing.shape} moving {thing.direction}"
    if isinstance(thing, Sound):
        plural = "s" if thing.beeps > 1 else ""
        return f"{NUMBERS[thing.beeps]} {thing.pitch} {thing.waveform} beep{plural}"
    raise TypeError(f"no caption for {type(thing).__name__}")


QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "image": {
        "colour": ("What colour is the shape?", "Which colour is it?"),
        "shape": ("What shape is it?", "Which shape do you see?"),
        "position": ("Where is the shape?", "Where is it in the picture?"),
        "size": ("Is the shape small or large?", "How big is it?"),
    },
    "video": {
        "colour": ("What colour is the moving shape?", "Which colour is it?"),
        "shape": ("What shape is moving?", "Which shape is it?"),
        "direction": ("Which way does it move?", "In which direction is it moving?"),
    },
    "audio": {
        "pitch": ("Is the sound low, middle or high?", "What is the pitch?"),
        "waveform": ("What waveform is it?", "Is it a sine, square or sawtooth wave?"),
        "beeps": ("How many beeps are there?", "How many beeps do you hear?"),
    },
}
DESCRIBE = ("Describe it.", "What is this?", "What do you see?", "Tell me about it.")
DESCRIBE_AUDIO = ("Describe the sound.", "What do you hear?", "What is this sound?")


#: attribute -> answer template (``{v}``: the value's words)
ANSWERS: dict[str, str] = {
    "colour": "It is {v}.",
    "shape": "It is a {v}.",
    "position": "It is in the {v}.",
    "size": "It is {v}.",
    "direction": "It moves {v}.",
    "pitch": "The pitch is {v}.",
    "waveform": "It is a {v} wave.",
}


def answer(thing: Thing, attribute: str) -> str:
    """The short answer to a question about ``attribute`` of ``thing``."""
    if attribute == "beeps":
        n = thing.beeps
        return f"There {'is' if n == 1 else 'are'} {NUMBERS[n]} beep{'s' if n > 1 else ''}."
    return ANSWERS[attribute].format(v=getattr(thing, attribute))


def answer_words(thing: Thing, attribute: str) -> str:
    """The words of ``attribute``'s value as they appear in answers (``"top left"``, ``"two"``)."""
    value = getattr(thing, attribute)
    return NUMBERS[value] if attribute == "beeps" else str(value)


# -- generation requests ------------------------------------------------------------------------------------------

DRAW = ("Draw {x}.", "Show me {x}.", "Paint {x}.", "Make a picture of {x}.")
ANIMATE = ("Animate {x}.", "Make a video of {x}.", "Show me a video of {x}.")
PLAY = ("Play {x}.", "Make a sound of {x}.", "Let me hear {x}.")
REPLIES = ("Here it is: {p}", "Sure. {p}", "Here you go: {p}")


def request_caption(thing: Thing) -> str:
    """What a generation request names (the attributes generation is judged on): ``a red circle``,
    ``a blue square moving up``, ``two high beeps``."""
    if isinstance(thing, Picture):
        return f"a {thing.colour} {thing.shape}"
    if isinstance(thing, Clip):
        return f"a {thing.colour} {thing.shape} moving {thing.direction}"
    if isinstance(thing, Sound):
        return f"{NUMBERS[thing.beeps]} {thing.pitch} beep{'s' if thing.beeps > 1 else ''}"
    raise TypeError(type(thing).__name__)


@dataclass
class Exchange:
    """One user turn and the assistant's reply. ``media_in``: things the user attaches (placeholders in order);
    ``media_out``: things the assistant generates, with the captions the output projector aligns to."""

    user: str
    assistant: str
    media_in: list[Thing]
    media_out: list[tuple[Thing, str]]


def understanding(thing: Thing, rng: random.Random) -> Exchange:
    """A question about an attached thing (or a request to describe it) and its answer."""
    placeholder = f"<{thing.kind}>"
    if rng.random() < 0.25:
        question = rng.choice(DESCRIBE_AUDIO if thing.kind == "audio" else DESCRIBE)
        reply = caption(thing)
        reply = reply[0].upper() + reply[1:] + "."
    else:
        attribute = rng.choice(thing.attributes)
        question = rng.choice(QUESTIONS[thing.kind][attribute])
        reply = answer(thing, attribute)
    user = f"{placeholder}\n{question}" if rng.random() < 0.7 else f"{question}\n{placeholder}"
    return Exchange(user, reply, [thing], [])


def generation(thing: Thing, rng: random.Random) -> Exchange:
    """A request to generate ``thing`` and the reply with the output placeholder."""
    templates = {"image": DRAW, "video": ANIMATE, "audio": PLAY}[thing.kind]
    wanted = request_caption(thing)
    user = rng.choice(templates).format(x=wanted)
    reply = rng.choice(REPLIES).format(p=f"<{thing.kind}>")
    return Exchange(user, reply, [], [(thing, wanted)])
