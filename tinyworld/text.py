"""The tinyworld's language: captions, questions and answers, generation requests, and dialogues mixing both.

Every sentence is built from a thing's attributes, so an answer can be checked by looking for the attribute's
words (:func:`answer_words`, :func:`values_named`). Requests to generate name the attributes the generator is
judged on, and their reply carries the output placeholder plus the caption the output projector is aligned to.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, replace

from tinyworld.world import THINGS, Clip, Picture, Sound, Thing

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


def values_named(reply: str, kind: str, attribute: str) -> set[str]:
    """The values of ``attribute`` a reply names (whole words; longer values first, so "top left" is not also
    "left"); beep counts as number words. An answer is right when this is exactly the true value."""
    options = THINGS[kind].choices(attribute)
    words = {NUMBERS[v] if attribute == "beeps" else str(v): str(v) for v in options}
    found, rest = set(), reply.lower()
    for word in sorted(words, key=len, reverse=True):
        pattern = rf"\b{re.escape(word)}\b"
        if re.search(pattern, rest):
            found.add(words[word])
            rest = re.sub(pattern, " ", rest)
    return found


# -- generation requests ------------------------------------------------------------------------------------------

DRAW = ("Draw {x}.", "Show me {x}.", "Paint {x}.", "Make a picture of {x}.")
ANIMATE = ("Animate {x}.", "Make a video of {x}.", "Show me a video of {x}.")
PLAY = ("Play {x}.", "Make a sound of {x}.", "Let me hear {x}.")
#: replies to generation requests, per output kind; ``{x}``: the request caption, ``{p}``: the output placeholder.
#: Naming the medium and restating the caption right before the signal tokens puts what to generate next to them.
REPLIES: dict[str, tuple[str, ...]] = {
    "image": ("Here is a picture of {x}: {p}", "Sure, a picture of {x}: {p}"),
    "video": ("Here is a video of {x}: {p}", "Sure, a video of {x}: {p}"),
    "audio": ("Here is the sound of {x}: {p}", "Sure, the sound of {x}: {p}"),
}


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
    ``media_out``: things the assistant generates, with the captions the output projector aligns to; ``templates``:
    the ids of the :mod:`tinyworld.phrasing` templates a freely phrased turn was written with (empty here)."""

    user: str
    assistant: str
    media_in: list[Thing]
    media_out: list[tuple[Thing, str]]
    templates: tuple[str, ...] = ()


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
    reply = rng.choice(REPLIES[thing.kind]).format(x=wanted, p=f"<{thing.kind}>")
    return Exchange(user, reply, [], [(thing, wanted)])


def all_things() -> list[Thing]:
    """Every distinct thing of the world (each combination of attribute values), in a fixed order."""
    out: list[Thing] = []
    for cls in THINGS.values():
        names = list(cls.options)
        out += [cls(**dict(zip(names, values))) for values in itertools.product(*(cls.choices(n) for n in names))]
    return out


def corpus() -> list[str]:
    """The world's sentences, deterministic: every caption and request caption, every question, answer,
    request and reply template filled with every thing. Tokenizers are trained on it."""
    lines: list[str] = []
    for thing in all_things():
        lines += [caption(thing), request_caption(thing)]
        templates = {"image": DRAW, "video": ANIMATE, "audio": PLAY}[thing.kind]
        lines += [t.format(x=request_caption(thing)) for t in templates]
        lines += [t.format(x=request_caption(thing), p="") for t in REPLIES[thing.kind]]
        lines += [answer(thing, a) for a in thing.attributes]
    for kind in QUESTIONS.values():
        for questions in kind.values():
            lines += list(questions)
    lines += list(DESCRIBE) + list(DESCRIBE_AUDIO)
    lines += [line for pair in CHAT for line in pair]
    return list(dict.fromkeys(lines))  # unique, first-seen order


def both(seen: Thing, wanted: Thing, rng: random.Random) -> Exchange:
    """A question about an attached thing and, in the same turn, a request to generate another one."""
    asked, made = understanding(seen, rng), generation(wanted, rng)
    request = made.user[0].lower() + made.user[1:]
    return Exchange(
        f"{asked.user} Then {request}", f"{asked.assistant} {made.assistant}", asked.media_in, made.media_out
    )


#: task -> relative frequency in :func:`exchange`
TASKS: dict[str, int] = {"understand": 8, "generate": 6, "chat": 2, "both": 2}


def exchange(rng: random.Random, *, kind: str | None = None, task: str | None = None) -> Exchange:
    """A random exchange of ``task`` (default: drawn by :data:`TASKS`): "understand" (a question about an
    attached thing of ``kind`` -- "image" / "video" / "audio", default any), "generate" (a request to make one),
    "both" (a question and a request in one turn) or "chat" (plain text, nothing attached or generated)."""
    task = task or rng.choices(list(TASKS), weights=list(TASKS.values()))[0]
    if task == "chat":
        user, reply = rng.choice(CHAT)
        return Exchange(user, reply, [], [])
    thing = THINGS[kind or rng.choice(list(THINGS))].sample(rng)
    if task == "both":
        return both(thing, THINGS[rng.choice(list(THINGS))].sample(rng), rng)
    return understanding(thing, rng) if task == "understand" else generation(thing, rng)


#: plain-text turns: the assistant must answer them without generating anything
CHAT: tuple[tuple[str, str], ...] = (
    ("Hello!", "Hello! Show me a picture, a video or a sound, or ask me to make one."),
    ("What can you do?", "I can describe pictures, videos and sounds, and I can draw, animate and play them."),
    ("Thank you.", "You are welcome."),
    ("Which colours do you know?", "I know red, green, blue, yellow, purple and orange."),
    ("Which shapes do you know?", "I know squares, circles, triangles and crosses."),
    ("Tell me about pictures.", "A picture shows one shape of some colour, small or large, in some place."),
    ("Tell me about sounds.", "A sound has one, two or three low, middle or high beeps."),
    ("Tell me about videos.", "A video shows a shape moving left, right, up or down."),
)


#: attributes a follow-up may change, per kind: the ones a generation request names
REQUESTED: dict[str, tuple[str, ...]] = {
    "image": ("colour", "shape"),
    "video": ("colour", "shape", "direction"),
    "audio": ("pitch", "beeps"),
}


def follow_up(earlier: Thing, rng: random.Random) -> Exchange:
    """An exchange about a thing like ``earlier`` with one requested attribute changed: a request to make it
    (``Play two low beeps.`` after three low ones) or a question about an attached one. Reading the new turn, not
    echoing the earlier one, is what it teaches."""
    cls = type(earlier)
    attribute = rng.choice(REQUESTED[earlier.kind])
    value = rng.choice([v for v in cls.choices(attribute) if v != getattr(earlier, attribute)])
    changed = replace(earlier, **{attribute: value})
    if rng.random() < 0.6:
        return generation(changed, rng)
    question = rng.choice(QUESTIONS[changed.kind][attribute])
    return Exchange(f"<{changed.kind}>\n{question}", answer(changed, attribute), [changed], [])


def dialogue(rng: random.Random, max_turns: int = 3, follow_ups: float = 0.0) -> list[Exchange]:
    """A conversation of 1..``max_turns`` random exchanges mixing understanding, generation and chat; with
    probability ``follow_ups`` an exchange after the first is a :func:`follow_up` of a thing met earlier in the
    conversation (when there is one)."""
    exchanges: list[Exchange] = []
    for _ in range(rng.randint(1, max_turns)):
        met = [t for ex in exchanges for t in ex.media_in + [thing for thing, _ in ex.media_out]]
        if follow_ups > 0 and met and rng.random() < follow_ups:
            exchanges.append(follow_up(rng.choice(met), rng))
        else:
            exchanges.append(exchange(rng))
    return exchanges
