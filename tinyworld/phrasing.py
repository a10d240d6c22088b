"""Free phrasing: the world's questions and requests in its users' many words, with a held-out split, and the honest
answers to what the world cannot do.

:mod:`tinyworld.text` asks every question and makes every request with a handful of fixed templates ("Draw a red
circle."), and the system learnt exactly those words. This module writes the same exchanges from a grammar:

- **templates** in families -- questions per attribute (``ask/image/colour``, ...), descriptions
  (``describe/<kind>``), imperative clauses per medium (``bare/<kind>``: "paint a red circle"), request frames
  around them (``frame``: "Could you {c}?", "For a school project, {c}."), whole requests (``request/<kind>``: "I
  want a short video where a red circle goes left."), requests naming no medium (``ambiguous``: the most likely
  reading is the medium the caption implies), two requests in one turn (``pair``), a question then a request
  (``both``), question wrappers (``qframe``) and the ways to say what is wanted (``caption/<kind>``: "a circle that
  is red", ``clause/<kind>``: "a red circle goes left"). The canonical templates of :mod:`tinyworld.text` are
  members, pinned to the training split.
- **synonyms** for every verb and noun (:data:`GROUPS`: draw / paint / sketch, make / create / generate, picture /
  image / photo, video / clip / animation / movie, sound / audio / tone, shape / object, beep / bleep, moving /
  going / travelling, left / leftwards / to the left, high / high-pitched / shrill, two / 2, ...).
- **surface variation** (:func:`surface`) -- case, punctuation, British and American spelling (colour / color,
  centre / center, grey / gray), and common typos (a swapped, dropped, doubled or mistyped letter; never in the words
  that name an attribute's value).
- **honest answers** (:data:`MISSING`, :data:`OUT_OF_VOCABULARY`) -- a question about a medium that is not attached
  gets "I see no picture. ..." and nothing generated; a request for a colour, shape, count, motion or medium the
  world lacks ("a pink hexagon", "five beeps", "a 3D model") gets the sentence saying what it can do instead.

**The split** (:func:`held_out_templates`, :func:`held_out_words`), deterministic and documented: in each family,
the ``max(1, round(0.25 * size))`` unpinned templates with the smallest ``sha256("tinyworld-phrasing-1:" + id)``
are held out; in each synonym group, the ``len(others) // 3`` non-canonical words with the smallest
``sha256("tinyworld-phrasing-1:" + group + ":" + word)`` are held out (so groups of one or two alternatives hold none
out). Training data (``split="train"``) uses only the rest; the eval (``split="held_out"``) forces at least one
held-out template into every item and draws each synonym from the held-out words half of the time. Surface
variation is not split.

The tokenizer: held-out words are never in the LLM's or IT's dialogues, and not in the tokenizer's corpus either
(:func:`tokenizer_corpus` is the training split only); they are spelt with the pieces of training words or, failing
that, SentencePiece's byte fallback, so every held-out word is representable (tests/test_tinyworld_phrasing.py checks
the shipped tokenizer and a freshly trained one), and no vocabulary row exists that the LLM never trained.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from tinyworld import text as world_text
from tinyworld.text import CHAT, NUMBERS, TASKS, Exchange, answer, caption, request_caption
from tinyworld.world import COLOURS, DIRECTIONS, SHAPES, THINGS, Clip, Picture, Sound, Thing

Split = Literal["train", "held_out"]
SALT = "tinyworld-phrasing-1"
HELD_OUT_SHARE = 0.25
#: in the held-out split, the chance that a synonym slot takes a held-out word (when its group has one)
HELD_OUT_WORD_CHANCE = 0.5


def _rank(key: str) -> int:
    return int(hashlib.sha256(f"{SALT}:{key}".encode()).hexdigest(), 16)


# ------------------------------------------------------------------------------------------------------------------
# synonyms
# ------------------------------------------------------------------------------------------------------------------
#: group -> (canonical words, always in training; other words). ``dir:left``, ``pitch:high``, ``count:2`` are per
#: value; ``oov:*`` are words outside the world (honest answers).
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "draw": (("draw", "paint"), ("sketch", "illustrate", "doodle")),
    "make": (("make",), ("create", "generate", "produce", "render", "give me", "come up with", "whip up")),
    "show": (("show me",), ("let me see", "display", "bring up")),
    "animate": (("animate",), ("film", "shoot", "capture")),
    "play": (("play", "let me hear"), ("play me", "emit", "sound out")),
    "picture": (("picture",), ("image", "photo", "drawing", "pic", "illustration", "painting", "artwork")),
    "video": (("video",), ("clip", "animation", "movie", "gif", "cartoon")),
    "sound": (("sound",), ("audio", "tone", "noise", "recording", "sound effect", "jingle")),
    "thing": (("shape",), ("object", "thing", "figure", "item", "form")),
    "colour_n": (("colour",), ("hue", "shade", "tint")),
    "beep_n": (("beep",), ("bleep", "blip", "ping", "chirp", "pip")),
    "short": (("short",), ("little", "quick", "brief", "tiny")),
    "moving": (("moving",), ("going", "travelling", "traveling", "sliding", "heading", "drifting", "gliding")),
    "moves": (("moves",), ("goes", "travels", "slides", "heads", "drifts", "glides")),
    "dir:left": (("left",), ("to the left", "leftwards", "leftward", "towards the left")),
    "dir:right": (("right",), ("to the right", "rightwards", "rightward", "towards the right")),
    "dir:up": (("up",), ("upwards", "upward", "to the top", "towards the top")),
    "dir:down": (("down",), ("downwards", "downward", "to the bottom", "towards the bottom")),
    "pitch:low": (("low",), ("low-pitched", "deep", "bass")),
    "pitch:middle": (("middle",), ("medium", "mid", "mid-pitched", "medium-pitched")),
    "pitch:high": (("high",), ("high-pitched", "shrill", "squeaky")),
    "count:1": (("one", "a"), ("a single", "just one", "1")),
    "count:2": (("two",), ("2", "a pair of")),
    "count:3": (("three",), ("3", "a trio of")),
    "oov:colour": ((), ("pink", "brown", "black", "white", "grey", "cyan", "magenta", "turquoise", "beige", "silver")),
    "oov:shape": ((), ("hexagon", "pentagon", "star", "heart", "octagon", "arrow", "crescent")),
    "oov:count": ((), ("four", "five", "six", "seven", "ten", "twenty", "4", "5", "a dozen")),
    "oov:motion": ((), ("diagonally", "in a circle", "in a zigzag", "round and round", "clockwise", "back and forth")),
    "oov:medium": ((), ("3D model", "point cloud", "spreadsheet", "PDF", "text file", "hologram", "website")),
}
TIMES = {1: "once", 2: "twice", 3: "three times"}
#: where a direction goes from and to ("going from right to left")
FROM_TO = {"left": ("right", "left"), "right": ("left", "right"), "up": ("bottom", "top"), "down": ("top", "bottom")}
#: British -> American spellings the surface variation swaps (whole words)
AMERICAN = {
    "colour": "color",
    "colours": "colors",
    "coloured": "colored",
    "centre": "center",
    "grey": "gray",
    "favour": "favor",
    "travelling": "traveling",
}


def held_out_words(group: str) -> tuple[str, ...]:
    """The words of ``group`` never used in training: the ``len(others) // 3`` non-canonical ones of smallest hash."""
    _, others = GROUPS[group]
    ranked = sorted(others, key=lambda w: _rank(f"{group}:{w}"))
    return tuple(ranked[: len(others) // 3])


def words(group: str, split: Split | Literal["all"]) -> tuple[str, ...]:
    """The words of ``group`` in ``split`` (``"all"``: every word)."""
    canonical, others = GROUPS[group]
    if split == "all":
        return canonical + others
    held = set(held_out_words(group))
    return tuple(w for w in canonical + others if (w in held) == (split == "held_out"))


def all_held_out_words() -> set[str]:
    """Every held-out word of every group, lowercased, with its American spelling."""
    out = {w.lower() for group in GROUPS for w in held_out_words(group)}
    return out | {AMERICAN[w] for w in out if w in AMERICAN}


# ------------------------------------------------------------------------------------------------------------------
# templates
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """Templates of one kind of sentence: ``(id, text)`` pairs; ``pinned`` ids are always in training (the canonical
    templates of :mod:`tinyworld.text`)."""

    name: str
    templates: tuple[tuple[str, str], ...]
    pinned: frozenset[str] = frozenset()

    def text(self, template_id: str) -> str:
        return dict(self.templates)[template_id]


_HELD_WORD = re.compile(
    r"(?<![\w-])(" + "|".join(sorted(map(re.escape, all_held_out_words()), key=len, reverse=True)) + r")(?![\w-])"
)


def has_held_out_word(text: str) -> bool:
    """Whether ``text`` says a held-out synonym (whole words, any case)."""
    return bool(_HELD_WORD.search(text.lower()))


def _family(name: str, pinned: Iterable[str], *texts: str, prefix: str) -> Family:
    """A family whose first ``len(pinned)`` texts are the pinned ones; ids are ``prefix-<index>``."""
    pinned = list(pinned)
    templates = tuple((f"{prefix}-{i}", t) for i, t in enumerate([*pinned, *texts]))
    return Family(name, templates, frozenset(f"{prefix}-{i}" for i in range(len(pinned))))


Q = world_text.QUESTIONS
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # -- questions about an attached thing ---------------------------------------------------------------------
        _family(
            "ask/image/colour",
            Q["image"]["colour"],
            "What colour is the {thing}?",
            "What colour is it?",
            "What's the {colour_n} of the {thing} in this {picture}?",
            "Tell me the {colour_n} of the {thing}.",
            "Which {colour_n} does the {thing} have?",
            "Can you tell me what colour the {thing} is?",
            "Is the {thing} red, green, blue, yellow, purple or orange?",
            "{colour_n} of the {thing}?",
            "In this {picture}, what colour do you see?",
            "What colour has the {thing} in the {picture} got?",
            prefix="q-ic",
        ),
        _family(
            "ask/image/shape",
            Q["image"]["shape"],
            "What kind of {thing} is in the {picture}?",
            "What shape is drawn here?",
            "Which shape is shown in this {picture}?",
            "Is it a square, a circle, a triangle or a cross?",
            "Name the shape.",
            "What's the shape in the {picture}?",
            "Tell me which shape this is.",
            "shape?",
            "What is the {thing} in this {picture} shaped like?",
            prefix="q-is",
        ),
        _family(
            "ask/image/position",
            Q["image"]["position"],
            "Where is the {thing} in this {picture}?",
            "In which part of the {picture} is the {thing}?",
            "Where's the {thing} located?",
            "Is the {thing} in a corner or in the centre?",
            "Tell me where the {thing} is.",
            "Which corner is it in, if any?",
            "Where does the {thing} sit?",
            "position of the {thing}?",
            "Where in the {picture} do you see the {thing}?",
            prefix="q-ip",
        ),
        _family(
            "ask/image/size",
            Q["image"]["size"],
            "What size is the {thing}?",
            "Is the {thing} big or small?",
            "How large is the {thing} in the {picture}?",
            "Is it a small or a large {thing}?",
            "Tell me the size of the {thing}.",
            "How big is the {thing} in this {picture}?",
            prefix="q-iz",
        ),
        _family(
            "ask/video/colour",
            Q["video"]["colour"],
            "What colour is the {thing} that is {moving}?",
            "What's the {colour_n} of the {thing} in this {video}?",
            "Which colour is the {moving} {thing}?",
            "Tell me the {colour_n} of the {thing} in the {video}.",
            "What colour do you see {moving} around?",
            "{colour_n} of the {moving} {thing}?",
            "What colour is the {thing} in the {video}?",
            prefix="q-vc",
        ),
        _family(
            "ask/video/shape",
            Q["video"]["shape"],
            "What kind of {thing} {moves} in this {video}?",
            "Which shape is {moving} in the {video}?",
            "What is the shape that {moves}?",
            "Is the moving {thing} a square, a circle, a triangle or a cross?",
            "Name the shape in the {video}.",
            "What shape do you see {moving}?",
            "What shape is the {thing} in this {video}?",
            prefix="q-vs",
        ),
        _family(
            "ask/video/direction",
            Q["video"]["direction"],
            "Where is the {thing} {moving}?",
            "Which way is the {thing} {moving} in the {video}?",
            "Does it move left, right, up or down?",
            "What direction does the {thing} go in?",
            "Tell me which way the {thing} {moves}.",
            "Where does the {thing} head in this {video}?",
            "direction of motion?",
            "Which way does the {thing} in the {video} move?",
            prefix="q-vd",
        ),
        _family(
            "ask/audio/pitch",
            Q["audio"]["pitch"],
            "How high is the {sound}?",
            "What pitch are the {beeps_n}?",
            "Is the {sound} high or low?",
            "Tell me the pitch of the {sound}.",
            "What's the pitch of this {sound}?",
            "How high or low are the {beeps_n}?",
            "pitch?",
            "Is this {sound} low, middle or high?",
            prefix="q-ap",
        ),
        _family(
            "ask/audio/waveform",
            Q["audio"]["waveform"],
            "What kind of wave makes this {sound}?",
            "Which waveform do the {beeps_n} have?",
            "What's the waveform of the {sound}?",
            "Is this {sound} a sine wave, a square wave or a sawtooth?",
            "Tell me the wave shape.",
            "waveform?",
            "What waveform does the {sound} use?",
            prefix="q-aw",
        ),
        _family(
            "ask/audio/beeps",
            Q["audio"]["beeps"],
            "How many {beeps_n} are in this {sound}?",
            "How many times does it beep?",
            "Count the {beeps_n}.",
            "How many {beeps_n} can you hear in the {sound}?",
            "What's the number of {beeps_n}?",
            "Tell me how many {beeps_n} there are.",
            "number of beeps?",
            "How many {beeps_n} does the {sound} have?",
            prefix="q-ab",
        ),
        _family(
            "describe/image",
            world_text.DESCRIBE,
            "What's in this {picture}?",
            "Can you describe the {picture}?",
            "What does this {picture} show?",
            "Describe what you see in the {picture}.",
            "What is in the {picture}?",
            "Give me a description of this {picture}.",
            "What am I looking at?",
            prefix="d-i",
        ),
        _family(
            "describe/video",
            world_text.DESCRIBE,
            "What happens in this {video}?",
            "Can you describe the {video}?",
            "What does the {video} show?",
            "Describe what you see in the {video}.",
            "What takes place in the {video}?",
            "Tell me what happens in the {video}.",
            prefix="d-v",
        ),
        _family(
            "describe/audio",
            world_text.DESCRIBE_AUDIO,
            "What does this {sound} sound like?",
            "Can you describe this {sound}?",
            "Tell me what you hear.",
            "Describe the {sound} for me.",
            "What's in this {sound}?",
            "What can you hear in the {sound}?",
            prefix="d-a",
        ),
        _family(
            "qframe",
            ["{Q}"],
            "Quick question: {q}",
            "Hi! {Q}",
            "{Q} Thanks.",
            "Hey, {q}",
            "Please tell me: {q}",
            "I was wondering, {q}",
            "Can you help me? {Q}",
            "{Q} Just curious.",
            "Here's something for you. {Q}",
            "Check this out. {Q}",
            "{Q} Please answer briefly.",
            "So, {q}",
            prefix="qf",
        ),
        # -- what is wanted ------------------------------------------------------------------------------------------
        _family(
            "caption/image",
            ["a {colour} {shape}"],
            "a {shape} that is {colour}",
            "a {colour}-coloured {shape}",
            "a {shape} in {colour}",
            "one {colour} {shape}",
            "a single {colour} {shape}",
            "a {shape}, {colour}",
            "a {shape} coloured {colour}",
            prefix="ci",
        ),
        _family(
            "caption/video",
            ["a {colour} {shape} moving {direction}"],
            "a {colour} {shape} {moving} {dir}",
            "a {shape} in {colour} {moving} {dir}",
            "a {colour} {shape} that {moves} {dir}",
            "a {colour} {shape} {moving} from {from} to {to}",
            "a {colour} {shape}, {moving} {dir}",
            "a {shape} that is {colour} and {moves} {dir}",
            "one {colour} {shape} {moving} {dir}",
            prefix="cv",
        ),
        _family(
            "caption/audio",
            ["{count} {pitch0} beep{s}"],
            "{count} {pitch} {beeps_n}",
            "{count} {beeps_n} at a {pitch0} pitch",
            "{count} {beeps_n}, {pitch}",
            "{count} {beeps_n} with a {pitch0} pitch",
            "{count} short {pitch} {beeps_n}",
            "{count} {beeps_n} that sound {pitch}",
            "{count} {pitch} {beeps_n} in a row",
            prefix="ca",
        ),
        _family(
            "clause/image",
            [],
            "there is {x}",
            "{x} is shown",
            "you can see {x}",
            "{x} sits on its own",
            "all I see is {x}",
            prefix="ki",
        ),
        _family(
            "clause/video",
            [],
            "a {colour} {shape} {moves} {dir}",
            "a {colour} {shape} is {moving} {dir}",
            "a {shape} in {colour} {moves} from {from} to {to}",
            "the {shape} is {colour} and {moves} {dir}",
            "a {colour} {shape} keeps {moving} {dir}",
            prefix="kv",
        ),
        _family(
            "clause/audio",
            [],
            "there {are} {x}",
            "it beeps {times} at a {pitch0} pitch",
            "{x} play",
            "you hear {x}",
            "{x} go off",
            prefix="ka",
        ),
        # -- requests --------------------------------------------------------------------------------------------------
        _family(
            "bare/image",
            ["draw {x}", "show me {x}", "paint {x}", "make a picture of {x}"],
            "{draw} {x}",
            "{make} a {picture} of {x}",
            "{show} a {picture} of {x}",
            "{make} a {picture} where {xc}",
            "{draw} me {x}",
            "{make} {x} as a {picture}",
            "{draw} a {picture} of {x}",
            "{make} me a {picture} with {x}",
            prefix="bi",
        ),
        _family(
            "bare/video",
            ["animate {x}", "make a video of {x}", "show me a video of {x}"],
            "{animate} {x}",
            "{make} a {video} of {x}",
            "{show} a {video} of {x}",
            "{make} a {short} {video} where {xc}",
            "{make} a {video} in which {xc}",
            "{animate} {x} for me",
            "{make} me a {short} {video} of {x}",
            "{show} a {short} {video} where {xc}",
            prefix="bv",
        ),
        _family(
            "bare/audio",
            ["play {x}", "make a sound of {x}", "let me hear {x}"],
            "{play} {x}",
            "{make} a {sound} of {x}",
            "{make} a {sound} with {x}",
            "{play} a {sound} of {x}",
            "{make} a {sound} where {xc}",
            "{make} {x} for me to hear",
            "{play} {x} for me",
            prefix="ba",
        ),
        _family(
            "frame",
            ["{C}."],
            "{C}!",
            "Please {c}.",
            "{C}, please.",
            "Can you {c}?",
            "Could you {c}?",
            "Would you {c}, please?",
            "I'd like you to {c}.",
            "I want you to {c}.",
            "Hey, {c}.",
            "Hi! {C}.",
            "{C}, thanks!",
            "I need you to {c} for my slides.",
            "For a school project, {c}.",
            "Quick favour: {c}.",
            "My little brother loves shapes. {C}.",
            "Go ahead and {c}.",
            "Would you mind if I asked you to {c}?",
            "I was hoping you could {c}.",
            "Right, next thing: {c}.",
            "Okay so can you {c} real quick?",
            "{C} when you get a chance.",
            "If it's not too much trouble, {c}.",
            "Let's try something: {c}.",
            prefix="f",
        ),
        _family(
            "request/image",
            [],
            "I want a {picture} of {x}.",
            "I'd like a {picture} of {x}.",
            "A {picture} of {x}, please.",
            "Can I see a {picture} of {x}?",
            "Is it possible to get a {picture} of {x}?",
            "{X}: {draw} it.",
            "How about a {picture} of {x}?",
            "I need a {picture} showing {x}.",
            "{picture} of {x} pls",
            "Could I get a {picture} where {xc}?",
            "I'd love to see {x}.",
            "Would love a {picture} with {x} in it.",
            "Can you make me a {picture}? It should show {x}.",
            prefix="ri",
        ),
        _family(
            "request/video",
            [],
            "I want a {short} {video} where {xc}.",
            "I'd like a {video} of {x}.",
            "A {video} of {x}, please.",
            "Can I see a {video} of {x}?",
            "I need a {short} {video} showing {x}.",
            "{X}: {animate} it.",
            "How about a {video} in which {xc}?",
            "{video} of {x} pls",
            "Could you {make} a {short} {video} where {xc}?",
            "I'd love to watch {x}.",
            "{Show} how {xc}.",
            "Let's see {x} in a {video}.",
            "Can you make something where {xc}? A {video}, I mean.",
            prefix="rv",
        ),
        _family(
            "request/audio",
            [],
            "I'd like to hear {x}, please.",
            "I want to hear {x}.",
            "A {sound} of {x}, please.",
            "Can I hear {x}?",
            "Could you {make} a {sound} with {x}?",
            "{X}, {play} that.",
            "How about a {sound} of {x}?",
            "{sound} of {x} pls",
            "I need a {sound} where {xc}.",
            "I'd love the {sound} of {x}.",
            "Let me listen to {x}.",
            "Can you beep {times} at a {pitch0} pitch?",
            "What would {x} sound like? {Play} it.",
            prefix="ra",
        ),
        _family(
            "ambiguous",
            [],
            "{Make} {x}.",
            "{Show} {x}.",
            "I want {x}.",
            "{X}, please.",
            "Can I have {x}?",
            "I'd like {x}.",
            "How about {x}?",
            "{X}!",
            "Could you do {x}?",
            "{Play} {x}.",
            "Let's have {x}.",
            "{X}. Can you do that?",
            "Now {x}.",
            prefix="am",
        ),
        _family(
            "pair",
            [],
            "{C1}, and {c2}.",
            "{C1}. Also {c2}.",
            "First {c1}, then {c2}.",
            "{C1}, then {c2}, please.",
            "Could you {c1} and {c2}?",
            "I'd like you to {c1} and also {c2}.",
            "{C1}; after that, {c2}.",
            "Two things: {c1}, and {c2}.",
            "Please {c1} and then {c2}.",
            "{C1} and {c2} too.",
            prefix="p",
        ),
        _family(
            "both",
            ["{Q} Then {c}."],
            "{Q} After that, {c}.",
            "{Q} Also, {c}.",
            "{Q} And then {c}, please.",
            "{Q} Once you've answered, {c}.",
            "{Q} Next, {c}.",
            "{Q} And could you {c}?",
            prefix="bo",
        ),
    )
}
#: ambiguous templates -> the kinds of thing they may ask for ("Show me two beeps" is not said; "Play a red circle
#: moving left" most likely means its video); the others ask for any kind
AMBIGUOUS_KINDS: dict[str, tuple[str, ...]] = {
    tid: ("image", "video") if text.startswith("{Show}") else ("video",)
    for tid, text in FAMILIES["ambiguous"].templates
    if text.startswith(("{Show}", "{Play}"))
}
#: the medium slots; a template with one names its medium
MEDIUM_SLOTS = {"image": "picture", "video": "video", "audio": "sound"}


def held_out_templates(family: str) -> tuple[str, ...]:
    """The ids of ``family``'s held-out templates: ``max(1, round(0.25 * size))`` unpinned ones of smallest hash."""
    f = FAMILIES[family]
    free = sorted((tid for tid, _ in f.templates if tid not in f.pinned), key=_rank)
    return tuple(free[: max(1, round(HELD_OUT_SHARE * len(f.templates)))]) if free else ()


def templates(family: str, split: Split | Literal["all"]) -> tuple[str, ...]:
    """The template ids of ``family`` in ``split``."""
    ids = tuple(tid for tid, _ in FAMILIES[family].templates)
    if split == "all":
        return ids
    held = set(held_out_templates(family))
    return tuple(t for t in ids if (t in held) == (split == "held_out"))


def all_held_out_templates() -> set[str]:
    return {t for name in FAMILIES for t in held_out_templates(name)}


# ------------------------------------------------------------------------------------------------------------------
# honest answers
# ------------------------------------------------------------------------------------------------------------------
#: the answer to a question about a medium that is not attached (``None``: a question naming none, nothing attached)
MISSING: dict[str | None, str] = {
    "image": "I see no picture. Please attach one and ask again.",
    "video": "I see no video. Please attach one and ask again.",
    "audio": "I hear no sound. Please attach one and ask again.",
    None: "Nothing is attached. Please attach a picture, a video or a sound and ask again.",
}
#: the answer to a request for something outside the world, by what is outside it
OUT_OF_VOCABULARY: dict[str, str] = {
    "colour": "I cannot make that colour. I know red, green, blue, yellow, purple and orange.",
    "shape": "I cannot make that shape. I know squares, circles, triangles and crosses.",
    "count": "I cannot make that many beeps. I can make one, two or three.",
    "motion": "I cannot make that motion. Shapes can move left, right, up or down.",
    "medium": "I cannot make that. I can make pictures, videos and sounds.",
}
#: out-of-vocabulary category -> the kinds of request it can appear in
OOV_KINDS: dict[str, tuple[str, ...]] = {
    "colour": ("image", "video"),
    "shape": ("image", "video"),
    "count": ("audio",),
    "motion": ("video",),
    "medium": ("image", "video", "audio"),
}


def normalise(reply: str) -> str:
    """A reply as honest answers are compared: lowercase, single spaces, no leading / trailing space."""
    return " ".join(reply.lower().split())


def is_expected(reply: str, expected: str) -> bool:
    """Whether ``reply`` is ``expected`` (:func:`normalise` d on both sides)."""
    return normalise(reply) == normalise(expected)


# ------------------------------------------------------------------------------------------------------------------
# filling templates
# ------------------------------------------------------------------------------------------------------------------
_SLOT = re.compile(r"\{(\w+)\}")
_ARTICLE = re.compile(r"\b([Aa])n? (?=([A-Za-z0-9]))")
_VOWEL = set("aeiouAEIOU")


def _articles(text: str) -> str:
    """``a`` / ``an`` by the next word's first letter."""
    return _ARTICLE.sub(lambda m: m.group(1) + ("n " if m.group(2) in _VOWEL else " "), text)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    return (
        text
        if first in ("I", "I'd", "I'm", "I've") or first.isupper() and len(first) > 1
        else text[:1].lower() + text[1:]
    )


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "ch")) else "s")


class _Writer:
    """Fills templates for one thing in one split, remembering the template ids used and which were held out."""

    def __init__(self, rng: random.Random, split: Split, overrides: dict[str, str] | None = None) -> None:
        self.rng, self.split = rng, split
        self.overrides = overrides or {}
        self.used: list[str] = []
        self.words: dict[str, str] = {}

    # -- choosing ------------------------------------------------------------------------------------------------
    def template(self, family: str, force_held_out: bool = False, allowed: Iterable[str] | None = None) -> str:
        """A template id of ``family``: training ids in the train split; in the held-out split a held-out id when
        ``force_held_out``, else any."""
        split: Split | Literal["all"] = "train" if self.split == "train" else "held_out" if force_held_out else "all"
        ids = [t for t in templates(family, split) if allowed is None or t in set(allowed)]
        if not ids:
            raise ValueError(f"no {split} template in {family!r} fits")
        chosen = self.rng.choice(ids)
        self.used.append(chosen)
        return chosen

    def word(self, group: str) -> str:
        if self.split == "held_out" and held_out_words(group) and self.rng.random() < HELD_OUT_WORD_CHANCE:
            return self.rng.choice(held_out_words(group))
        return self.rng.choice(words(group, "train"))

    # -- filling -------------------------------------------------------------------------------------------------
    def fill(self, text: str, slots: dict[str, str]) -> str:
        """Replace every ``{slot}``: given ``slots`` first, then synonym groups (capitalised slot: capitalised word;
        the same slot twice: the same word)."""

        def one(match: re.Match) -> str:
            name = match.group(1)
            if name in slots:
                return slots[name]
            key = name.lower() if name[:1].isupper() else name
            if key not in self.words:
                medium = next((k for k, slot in MEDIUM_SLOTS.items() if slot == key), None)
                if medium is not None and "medium" in self.overrides:
                    self.words[key] = self.overrides["medium"]
                elif key == "beeps_n":
                    self.words[key] = _plural(self.word("beep_n"))
                elif key in GROUPS:
                    self.words[key] = self.word(key)
                else:
                    raise KeyError(f"template slot {{{name}}} has no value")
            value = self.words[key]
            return _capital(value) if name[:1].isupper() else value

        return _SLOT.sub(one, text)

    def caption(self, thing: Thing, force_held_out: bool = False, clause: bool = False) -> str:
        """How the thing is asked for: a ``caption/<kind>`` noun phrase, or a ``clause/<kind>`` sentence."""
        kind = thing.kind
        family = f"{'clause' if clause else 'caption'}/{kind}"
        allowed = _motion_ids(family) if "motion" in self.overrides else None
        tid = self.template(family, force_held_out, allowed)
        slots = self._thing_slots(thing)
        if "{x}" in FAMILIES[family].text(tid):
            slots["x"] = self.caption(thing, force_held_out=False)
        return self.fill(FAMILIES[family].text(tid), slots)

    def _thing_slots(self, thing: Thing) -> dict[str, str]:
        o = self.overrides
        if isinstance(thing, (Picture, Clip)):
            slots = {"colour": o.get("colour", thing.colour), "shape": o.get("shape", thing.shape)}
            if isinstance(thing, Clip):
                slots["direction"] = o.get("motion", thing.direction)
                slots["dir"] = o.get("motion") or self.word(f"dir:{thing.direction}")
                slots["from"], slots["to"] = FROM_TO[thing.direction]
            return slots
        assert isinstance(thing, Sound)
        count = o.get("count") or self.word(f"count:{thing.beeps}")
        many = "count" in o or thing.beeps > 1
        return {
            "count": count,
            "pitch": self.word(f"pitch:{thing.pitch}"),
            "pitch0": thing.pitch,
            "s": "s" if many else "",
            "are": "are" if many else "is",
            "beeps_n": self.word("beep_n") + ("s" if many else ""),
            "times": TIMES.get(thing.beeps, f"{count} times") if "count" not in o else f"{count} times",
        }


def _finish(text: str) -> str:
    """Single spaces and the right articles (templates carry their own capitals)."""
    return _articles(" ".join(text.split()))


# ------------------------------------------------------------------------------------------------------------------
# surface variation
# ------------------------------------------------------------------------------------------------------------------
#: keyboard neighbours for typos: the next key on the letter's QWERTY row (the one before, at the row's end)
_NEAR = {
    row[i]: row[i + 1] if i + 1 < len(row) else row[i - 1]
    for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    for i in range(len(row))
}


def protected_words() -> set[str]:
    """Words typos never touch: every attribute value, count and out-of-vocabulary word."""
    out: set[str] = set()
    for cls in THINGS.values():
        for attribute in cls.attributes:
            out |= {str(v) for v in cls.choices(attribute)}
    out |= set(NUMBERS.values()) | set(TIMES.values())
    for group, (canonical, others) in GROUPS.items():
        if group.startswith(("oov:", "dir:", "pitch:", "count:")):
            out |= {piece for w in canonical + others for piece in w.lower().split()}
    return out


_PROTECTED = protected_words()


def typo(word: str, rng: random.Random) -> str:
    """One common typo in ``word``: two letters swapped, a letter dropped, doubled or replaced by a keyboard
    neighbour."""
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double", "near"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    return word[:i] + _NEAR.get(word[i].lower(), word[i]) + word[i + 1 :]


def surface(text: str, rng: random.Random) -> str:
    """Case, punctuation, spelling and typo variation of a user's sentence, drawn from ``rng``: American spelling
    (35 %), one typo (15 %; never in a protected word, :func:`protected_words`), all lowercase (20 %) or all capitals
    (3 %), the final punctuation dropped (20 %), a final full stop made an exclamation mark (8 %)."""
    if rng.random() < 0.35:
        text = re.sub(r"\b(\w+)\b", lambda m: AMERICAN.get(m.group(1).lower(), m.group(1)), text)
    if rng.random() < 0.15:
        tokens = text.split(" ")
        candidates = [i for i, t in enumerate(tokens) if t.isalpha() and len(t) >= 4 and t.lower() not in _PROTECTED]
        if candidates:
            i = rng.choice(candidates)
            changed = typo(tokens[i], rng)
            if changed.lower() not in all_held_out_words():
                tokens[i] = changed
        text = " ".join(tokens)
    roll = rng.random()
    if roll < 0.2:
        text = text.lower()
    elif roll < 0.23:
        text = text.upper()
    roll = rng.random()
    if roll < 0.2 and text[-1:] in ".!?":
        text = text[:-1]
    elif roll < 0.28 and text.endswith("."):
        text = text[:-1] + "!"
    return text


# ------------------------------------------------------------------------------------------------------------------
# exchanges
# ------------------------------------------------------------------------------------------------------------------
def _forced(rng: random.Random, split: Split, parts: dict[str, Iterable[str] | None]) -> str | None:
    """In the held-out split, which of ``parts`` (family -> the template ids allowed there, None: all) must take a
    held-out template: one of those with a held-out template allowed."""
    if split == "train":
        return None
    eligible = [
        family
        for family, allowed in parts.items()
        if family == "caption"  # the thing's words: checked by _caption_part
        or set(held_out_templates(family)) & (set(allowed) if allowed is not None else set(templates(family, "all")))
    ]
    if not eligible:
        raise ValueError(f"none of {sorted(parts)} has a held-out template to draw")
    return rng.choice(eligible)


def question(kind: str, attribute: str | None, rng: random.Random, split: Split = "train") -> tuple[str, list[str]]:
    """A question about an attached thing's ``attribute`` (``None``: a request to describe it), and the template ids
    used. Not yet surface-varied."""
    family = f"ask/{kind}/{attribute}" if attribute else f"describe/{kind}"
    if family not in FAMILIES:
        asked = {k: list(cls.attributes) for k, cls in THINGS.items()}
        raise ValueError(f"no questions about {kind!r} / {attribute!r}; kinds and attributes: {asked}")
    _check_split(split)
    return _question(_Writer(rng, split), family, rng, split)


def _check_split(split: str) -> None:
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")


def _question(w: _Writer, family: str, rng: random.Random, split: Split, allowed=None) -> tuple[str, list[str]]:
    forced = _forced(rng, split, {family: allowed, "qframe": None})
    inner = w.fill(FAMILIES[family].text(w.template(family, forced == family, allowed)), {})
    inner = _capital(inner)
    frame = FAMILIES["qframe"].text(w.template("qframe", forced == "qframe"))
    return _finish(w.fill(frame, {"Q": inner, "q": _lower_first(inner)})), w.used


def _caption_slots(w: _Writer, text: str, thing: Thing, force: bool) -> dict[str, str]:
    """``{x}`` / ``{X}`` (a ``caption/<kind>`` phrase) and ``{xc}`` (a ``clause/<kind>`` sentence) for ``text``;
    ``force``: the one the template uses (the phrase, when it uses both) takes a held-out template."""
    slots: dict[str, str] = {}
    has_x = "{x}" in text or "{X}" in text
    if has_x:
        slots["x"] = w.caption(thing, force)
        slots["X"] = _capital(slots["x"])
    if "{xc}" in text:
        slots["xc"] = w.caption(thing, force and not has_x, clause=True)
    return slots


def _clause(w: _Writer, thing: Thing, forced: str | None, allowed=None) -> str:
    """An imperative clause asking for ``thing`` ("paint a circle that is red"); ``forced``: the part that takes a
    held-out template (``bare/<kind>``, or ``caption`` for the thing's words)."""
    family = f"bare/{thing.kind}"
    text = FAMILIES[family].text(w.template(family, forced == family, allowed))
    return w.fill(text, _caption_slots(w, text, thing, forced == "caption"))


def _medium_ids(family: str) -> list[str]:
    """The templates of ``family`` that name a medium (a ``{picture}`` / ``{video}`` / ``{sound}`` slot)."""
    slots = {f"{{{s}}}" for s in MEDIUM_SLOTS.values()}
    return [t for t, text in FAMILIES[family].templates if any(s in text for s in slots)]


def _caption_part(kind: str, overrides: dict[str, str] | None) -> dict[str, list[str] | None]:
    """The ``caption`` part of a held-out draw (the thing's words, a phrase or a clause), when both of ``kind``'s
    families have held-out templates that can carry ``overrides``."""
    for family in (f"caption/{kind}", f"clause/{kind}"):
        allowed = set(_motion_ids(family) if overrides and "motion" in overrides else templates(family, "all"))
        if not set(held_out_templates(family)) & allowed:
            return {}
    return {"caption": None}


def _motion_ids(family: str) -> list[str]:
    """Templates of ``family`` that can say an unknown motion ("from right to left" cannot)."""
    return [t for t, text in FAMILIES[family].templates if "{from}" not in text]


def request(thing: Thing, rng: random.Random, split: Split = "train", overrides=None) -> tuple[str, list[str]]:
    """A request to make ``thing``: a request frame around an imperative clause, or a whole request sentence; and the
    template ids used. ``overrides`` replace words (out-of-vocabulary requests): ``colour``, ``shape``, ``count``,
    ``motion`` or ``medium`` (only templates naming a medium are then drawn)."""
    _check_split(split)
    if overrides and not set(overrides) <= set(OUT_OF_VOCABULARY):
        raise ValueError(f"overrides must name {sorted(OUT_OF_VOCABULARY)}, got {sorted(overrides)}")
    w = _Writer(rng, split, overrides)
    kind = thing.kind
    medium_only = overrides is not None and "medium" in overrides
    whole = rng.random() < 0.4
    captions = _caption_part(kind, overrides)
    if whole:
        family = f"request/{kind}"
        allowed = _medium_ids(family) if medium_only else None
        forced = _forced(rng, split, {family: allowed, **captions})
        if forced == "caption":  # a template that says the thing's words ("Can you beep twice ...?" does not)
            allowed = [t for t in allowed or templates(family, "all") if "{x" in FAMILIES[family].text(t).lower()]
        text = FAMILIES[family].text(w.template(family, forced == family, allowed))
        slots = w._thing_slots(thing)  # "Can you beep {times} at a {pitch0} pitch?"
        slots.update(_caption_slots(w, text, thing, forced == "caption"))
        return _finish(w.fill(text, slots)), w.used
    family = f"bare/{kind}"
    allowed = _medium_ids(family) if medium_only else None
    forced = _forced(rng, split, {"frame": None, family: allowed, **captions})
    clause = _clause(w, thing, forced, allowed)
    frame = FAMILIES["frame"].text(w.template("frame", forced == "frame"))
    return _finish(w.fill(frame, {"C": _capital(clause), "c": clause})), w.used


def reply(thing: Thing, rng: random.Random) -> str:
    """The canonical reply to a request for ``thing`` (:data:`tinyworld.text.REPLIES`), output placeholder included."""
    return rng.choice(world_text.REPLIES[thing.kind]).format(x=request_caption(thing), p=f"<{thing.kind}>")


def _attach(placeholder: str, text: str, rng: random.Random) -> str:
    return f"{placeholder}\n{text}" if rng.random() < 0.7 else f"{text}\n{placeholder}"


def _asked(thing: Thing, rng: random.Random) -> tuple[str | None, str]:
    """What a question about ``thing`` asks -- an attribute, or (a quarter of the time, ``None``) a description --
    and the canonical answer to it."""
    if rng.random() < 0.25:
        return None, _capital(caption(thing)) + "."
    attribute = rng.choice(thing.attributes)
    return attribute, answer(thing, attribute)


def understanding(thing: Thing, rng: random.Random, split: Split = "train") -> Exchange:
    """A freely phrased question about an attached thing (or a request to describe it) and its canonical answer."""
    attribute, reply_text = _asked(thing, rng)
    text, used = question(thing.kind, attribute, rng, split)
    return Exchange(_attach(f"<{thing.kind}>", surface(text, rng), rng), reply_text, [thing], [], tuple(used))


def generation(thing: Thing, rng: random.Random, split: Split = "train") -> Exchange:
    """A freely phrased request to make ``thing`` and the canonical reply with the output placeholder."""
    text, used = request(thing, rng, split)
    return Exchange(surface(text, rng), reply(thing, rng), [], [(thing, request_caption(thing))], tuple(used))


def ambiguous(thing: Thing, rng: random.Random, split: Split = "train") -> Exchange:
    """A request that names no medium ("Make two high beeps.", "I want a red circle moving left."): its most likely
    reading is the medium the caption implies -- a direction makes it a video, beeps a sound, else a picture -- and
    the reply is that medium's."""
    w = _Writer(rng, split)
    allowed = [t for t in templates("ambiguous", "all") if thing.kind in AMBIGUOUS_KINDS.get(t, (thing.kind,))]
    forced = _forced(rng, split, {"ambiguous": allowed, f"caption/{thing.kind}": None})
    text = FAMILIES["ambiguous"].text(w.template("ambiguous", forced == "ambiguous", allowed))
    x = w.caption(thing, forced == f"caption/{thing.kind}")  # every ambiguous template says {x}
    out = _finish(w.fill(text, {"x": x, "X": _capital(x)}))
    return Exchange(surface(out, rng), reply(thing, rng), [], [(thing, request_caption(thing))], tuple(w.used))


def two_requests(first: Thing, second: Thing, rng: random.Random, split: Split = "train") -> Exchange:
    """Two requests in one turn ("Draw a red circle, and play two high beeps.") and both replies, in order."""
    w, w2 = _Writer(rng, split), _Writer(rng, split)
    forced = _forced(rng, split, {"pair": None, f"bare/{first.kind}": None, f"bare/{second.kind}": None})
    c1 = _clause(w, first, forced)
    c2 = _clause(w2, second, forced)
    text = FAMILIES["pair"].text(w.template("pair", forced == "pair"))
    out = _finish(w.fill(text, {"C1": _capital(c1), "c1": c1, "c2": c2}))
    return Exchange(
        surface(out, rng),
        f"{reply(first, rng)} {reply(second, rng)}",
        [],
        [(first, request_caption(first)), (second, request_caption(second))],
        tuple(w.used + w2.used),
    )


def both(seen: Thing, wanted: Thing, rng: random.Random, split: Split = "train") -> Exchange:
    """A question about an attached thing, then a request, in one turn; both answers in one reply."""
    attribute, answer_text = _asked(seen, rng)
    asked, used = question(seen.kind, attribute, rng, split)
    w = _Writer(rng, split)
    forced = _forced(rng, split, {"both": None, f"bare/{wanted.kind}": None})
    clause = _clause(w, wanted, forced)
    out = _finish(w.fill(FAMILIES["both"].text(w.template("both", forced == "both")), {"Q": asked, "c": clause}))
    return Exchange(
        _attach(f"<{seen.kind}>", surface(out, rng), rng),
        f"{answer_text} {reply(wanted, rng)}",
        [seen],
        [(wanted, request_caption(wanted))],
        tuple(used + w.used),
    )


def missing(kind: str | None, rng: random.Random, split: Split = "train", attached: Thing | None = None) -> Exchange:
    """A question about a medium that is not attached, and :data:`MISSING`'s answer; nothing is generated.
    ``kind=None``: a question naming no medium with nothing attached. With ``attached`` (a thing of another medium,
    sounds vs. pictures / videos), the question names ``kind``'s medium."""
    if kind is None:
        if attached is not None:
            raise ValueError("a question naming no medium is honest-missing only when nothing is attached")
        family_kind = rng.choice(list(THINGS))
        family = rng.choice([f for f in FAMILIES if f.startswith((f"ask/{family_kind}/", f"describe/{family_kind}"))])
        allowed = [t for t, _ in FAMILIES[family].templates if t not in _medium_ids(family)]
        text, used = _question(_Writer(rng, split), family, rng, split, allowed)
        return Exchange(surface(text, rng), MISSING[None], [], [], tuple(used))
    if kind not in THINGS:
        raise ValueError(f"unknown medium {kind!r}; kinds: {sorted(THINGS)} or None")
    if attached is not None and (attached.kind == kind or {attached.kind, kind} == {"image", "video"}):
        raise ValueError(f"a {attached.kind} attached does not make a question about a {kind} unanswerable")
    families = [f for f in FAMILIES if f.startswith((f"ask/{kind}/", f"describe/{kind}")) and _medium_ids(f)]
    family = rng.choice(families)
    text, used = _question(_Writer(rng, split), family, rng, split, _medium_ids(family))
    text = surface(text, rng)
    if attached is not None:
        return Exchange(_attach(f"<{attached.kind}>", text, rng), MISSING[kind], [attached], [], tuple(used))
    return Exchange(text, MISSING[kind], [], [], tuple(used))


def out_of_vocabulary(category: str, rng: random.Random, split: Split = "train", kind: str | None = None) -> Exchange:
    """A request for something outside the world (:data:`OUT_OF_VOCABULARY`'s ``category``: an unknown colour, shape,
    beep count, motion or medium), and the answer saying what it can do instead; nothing is generated."""
    if category not in OUT_OF_VOCABULARY:
        raise ValueError(f"unknown out-of-vocabulary category {category!r}; categories: {sorted(OUT_OF_VOCABULARY)}")
    kind = kind or rng.choice(OOV_KINDS[category])
    if kind not in OOV_KINDS[category]:
        raise ValueError(f"an unknown {category} cannot be asked of a {kind}; kinds: {OOV_KINDS[category]}")
    group = f"oov:{category}"
    pick = _Writer(rng, split).word(group)
    text, used = request(THINGS[kind].sample(rng), rng, split, overrides={category: pick})
    return Exchange(surface(text, rng), OUT_OF_VOCABULARY[category], [], [], tuple(used))


# ------------------------------------------------------------------------------------------------------------------
# dialogues
# ------------------------------------------------------------------------------------------------------------------
#: shares of a freely phrased generation exchange: one request, one without a medium word, two in one turn
GENERATE_SHAPES = {"single": 0.8, "ambiguous": 0.1, "pair": 0.1}


def exchange(
    rng: random.Random,
    split: Split = "train",
    *,
    kind: str | None = None,
    task: str | None = None,
    shapes: dict[str, float] | None = None,
) -> Exchange:
    """A freely phrased exchange, like :func:`tinyworld.text.exchange` (tasks drawn by its weights; chat stays
    canonical). ``shapes``: the weights of a generation exchange's shapes (default :data:`GENERATE_SHAPES`)."""
    task = task or rng.choices(list(TASKS), weights=list(TASKS.values()))[0]
    if task == "chat":
        user, reply_text = rng.choice(CHAT)
        return Exchange(user, reply_text, [], [])
    thing = THINGS[kind or rng.choice(list(THINGS))].sample(rng)
    if task == "understand":
        return understanding(thing, rng, split)
    if task == "both":
        return both(thing, THINGS[rng.choice(list(THINGS))].sample(rng), rng, split)
    shapes = shapes or GENERATE_SHAPES
    shape = rng.choices(list(shapes), weights=list(shapes.values()))[0]
    if shape == "ambiguous":
        return ambiguous(thing, rng, split)
    if shape == "pair":
        other = THINGS[rng.choice([k for k in THINGS if k != thing.kind])].sample(rng)
        return two_requests(thing, other, rng, split)
    return generation(thing, rng, split)


def honest(rng: random.Random, met: list[Thing], split: Split = "train") -> Exchange:
    """An honest-answer exchange that fits a conversation which has met ``met`` things so far: a question about a
    medium nobody attached or made (so no earlier turn could be meant; a picture and a video count as one here), or
    an out-of-vocabulary request."""
    kinds_met = {t.kind for t in met}
    if kinds_met & {"image", "video"}:  # "the video" may mean a picture met earlier, and the other way round
        kinds_met |= {"image", "video"}
    if rng.random() < 0.5:
        options: list[tuple[str | None, Thing | None]] = []
        if not met:
            options.append((None, None))
        for kind in THINGS:
            if kind in kinds_met:
                continue
            options.append((kind, None))
            others = [k for k in THINGS if k != kind and {k, kind} != {"image", "video"}]
            options += [(kind, THINGS[k].sample(rng)) for k in others]
        if options:
            kind, attached = rng.choice(options)
            return missing(kind, rng, split, attached)
    return out_of_vocabulary(rng.choice(list(OUT_OF_VOCABULARY)), rng, split)


def free_follow_up(earlier: Thing, rng: random.Random, split: Split = "train") -> Exchange:
    """:func:`tinyworld.text.follow_up`, freely phrased: a thing like ``earlier`` with one requested attribute
    changed, to make (60 %) or to be asked about."""
    attribute = rng.choice(world_text.REQUESTED[earlier.kind])
    cls = type(earlier)
    value = rng.choice([v for v in cls.choices(attribute) if v != getattr(earlier, attribute)])
    changed = cls(**{**earlier.as_dict(), attribute: value})
    if rng.random() < 0.6:
        return generation(changed, rng, split)
    text, used = question(changed.kind, attribute, rng, split)
    return Exchange(
        _attach(f"<{changed.kind}>", surface(text, rng), rng), answer(changed, attribute), [changed], [], tuple(used)
    )


def dialogue(
    rng: random.Random,
    max_turns: int = 3,
    follow_ups: float = 0.0,
    *,
    free: float = 0.0,
    honest_share: float = 0.0,
    split: Split = "train",
    shapes: dict[str, float] | None = None,
    novel: float = 0.0,
) -> list[Exchange]:
    """A conversation like :func:`tinyworld.text.dialogue`, where each exchange is freely phrased with probability
    ``free`` and an honest-answer exchange (:func:`honest`) with probability ``honest_share`` (``shapes``: see
    :func:`exchange`; ``novel``: see :func:`novel_words`, on the free exchanges). With both 0 it *is*
    :func:`tinyworld.text.dialogue` (the same draws from ``rng``), so the shipped recipe's data are unchanged."""
    if not free and not honest_share:
        return world_text.dialogue(rng, max_turns, follow_ups)
    exchanges: list[Exchange] = []
    for _ in range(rng.randint(1, max_turns)):
        met = [t for ex in exchanges for t in ex.media_in + [thing for thing, _ in ex.media_out]]
        if honest_share and rng.random() < honest_share:
            exchanges.append(honest(rng, met, split))
        elif follow_ups > 0 and met and rng.random() < follow_ups:
            earlier = rng.choice(met)
            if free and rng.random() < free:
                exchanges.append(novel_words(free_follow_up(earlier, rng, split), rng, novel))
            else:
                exchanges.append(world_text.follow_up(earlier, rng))
        elif free and rng.random() < free:
            exchanges.append(novel_words(exchange(rng, split, shapes=shapes), rng, novel))
        else:
            exchanges.append(world_text.exchange(rng))
    return exchanges


# ------------------------------------------------------------------------------------------------------------------
# novel words: an unknown verb or filler word does not change a request
# ------------------------------------------------------------------------------------------------------------------
#: groups whose words only carry a request (verbs, "beep", "short", "moving"): an unknown word in their place leaves
#: what is asked unchanged. Not the medium nouns (an unknown medium is declined), not "colour" / "shape" (they name
#: the attribute a question asks), not values (an unknown value is declined).
CARRIER_GROUPS = ("draw", "make", "show", "animate", "play", "beep_n", "short", "moving", "moves")
_CARRIER = re.compile(
    r"(?<![\w-])("
    + "|".join(sorted({re.escape(w) for g in CARRIER_GROUPS for w in words(g, "train")}, key=len, reverse=True))
    + r")(s?)(?![\w-])",
    re.IGNORECASE,
)
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def novel_word(rng: random.Random) -> str:
    """A made-up word of two or three syllables ("zuvo", "kapideb"), never a word of the grammar."""
    known = {w.lower() for _, (canonical, others) in GROUPS.items() for w in canonical + others}
    while True:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))) + rng.choice(["", "", "b", "t", "n"])
        if word not in known:
            return word


def novel_words(ex: Exchange, rng: random.Random, share: float) -> Exchange:
    """``ex`` with each carrier word of its user turn (:data:`CARRIER_GROUPS`: "paint", "play me", "beeps",
    "sliding") replaced, with probability ``share``, by a made-up word (:func:`novel_word`); the reply is unchanged.
    It teaches the LLM what a pretrained one knows without being told: an unfamiliar word in a request's verb or
    filler slot is most likely a synonym, so the request still stands (a held-out synonym is such a word). ``share``
    0: ``ex`` itself, and ``rng`` is not drawn."""
    if not share:
        return ex

    def swap(match: re.Match) -> str:
        if rng.random() >= share:
            return match.group(0)
        word = novel_word(rng)
        return (_capital(word) if match.group(1)[:1].isupper() else word) + match.group(2)

    return Exchange(_CARRIER.sub(swap, ex.user), ex.assistant, ex.media_in, ex.media_out, ex.templates)


# ------------------------------------------------------------------------------------------------------------------
# the dictionary: word knowledge without multimodal use
# ------------------------------------------------------------------------------------------------------------------
#: synonym groups whose words are nouns ("A movie is a video."); the others are defined as "X means Y."
NOUN_GROUPS = frozenset({"picture", "video", "sound", "thing", "colour_n", "beep_n"})
#: what an out-of-vocabulary word is, as a dictionary would say it ({w}: the word)
OOV_DEFINITIONS: dict[str, str] = {
    "colour": "{W} is a colour.",
    "shape": "A {w} is a shape.",
    "count": "{W} is more than three.",
    "motion": "{W} is a way to move.",
    "medium": "A {w} is not a picture, a video or a sound.",
}
#: the questions of a dictionary entry
DEFINE = ("What does {w} mean?", "What is {aw}?", "Define {w}.", "What is the meaning of {w}?", "{W}?")


def definition(group: str, word: str) -> str:
    """The dictionary's sentence for ``word`` of ``group``: "A movie is a video.", "Whip up means make.", "Pink is a
    colour.", "Four is more than three."."""
    canonical, _ = GROUPS[group]
    if group.startswith("oov:"):
        return _finish(OOV_DEFINITIONS[group[4:]].format(w=word, W=_capital(word)))
    if group in NOUN_GROUPS:
        return _finish(f"A {word} is a {canonical[0]}.")
    return _finish(f"{_capital(word)} means {canonical[0]}.")


def glossary(rng: random.Random, max_entries: int = 3) -> list[tuple[str, str]]:
    """A text-only conversation of 1 to ``max_entries`` dictionary entries: "What does movie mean?" -> "A movie is a
    video.". Every non-canonical word of every group is defined, held-out ones included.

    This is the tiny LLM's stand-in for the text a pretrained LLM has read: it learns *what* a word means, never
    sees it *used* -- no held-out word is ever in a question about a medium, a request, or any PT / IT row. The
    held-out split then measures what an MM-LLM's instruction data cannot teach and its LLM must bring: words known
    from text, met for the first time in a multimodal request (docs/tinyworld.md)."""
    entries = [(g, w) for g, (_, others) in GROUPS.items() for w in others]
    out = []
    for _ in range(rng.randint(1, max_entries)):
        group, word = rng.choice(entries)
        q = rng.choice(DEFINE)
        article = "" if group not in NOUN_GROUPS and not group.startswith("oov:") else "a "
        user = _finish(q.format(w=word, W=_capital(word), aw=article + word))
        out.append((user, definition(group, word)))
    return out


def tokenizer_corpus(n: int = 4000, seed: int = 0) -> list[str]:
    """Sentences for the tokenizer, training split only: ``n`` freely phrased user turns (placeholders dropped), the
    honest answers, and every training word of every synonym group."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        ex = (
            honest(rng, [], "train")
            if i % 10 == 0
            else exchange(rng, "train", task=("understand", "generate", "both")[i % 3])
        )
        lines.append(re.sub(r"<(image|video|audio)>", "", ex.user).strip())
    lines += list(MISSING.values()) + list(OUT_OF_VOCABULARY.values())
    lines += [w for group in GROUPS for w in words(group, "train")]
    return list(dict.fromkeys(lines))


def check_grammar() -> None:
    """Raise if the split leaks: a held-out word written into a training template's fixed text, a word in two groups,
    or a family without training templates."""
    seen: dict[str, str] = {}
    for group, (canonical, others) in GROUPS.items():
        for w in canonical + others:
            if w in seen and seen[w] != group:
                raise ValueError(f"{w!r} is in groups {seen[w]!r} and {group!r}")
            seen[w] = group
    held = all_held_out_words()
    for name, family in FAMILIES.items():
        if not templates(name, "train"):
            raise ValueError(f"family {name!r} has no training template")
        for tid in templates(name, "train"):
            fixed = _SLOT.sub(" ", family.text(tid)).lower()
            for w in held:
                if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", fixed):
                    raise ValueError(f"training template {tid!r} ({family.text(tid)!r}) writes held-out {w!r}")
    for text in [*MISSING.values(), *OUT_OF_VOCABULARY.values(), *(line for pair in CHAT for line in pair)]:
        for w in held:
            if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text.lower()):
                raise ValueError(f"{text!r} writes held-out {w!r}")


# ------------------------------------------------------------------------------------------------------------------
# reading: words met in running text, as a pretrained LLM met them
# ------------------------------------------------------------------------------------------------------------------
#: group -> sentences about everyday life in which every word of the group fits the slot ({w}, {W} capitalised).
#: Each group has its own contexts, so its words share contexts with one another and with no other group's. None is
#: a question to the assistant, a request to it, or about an attached medium.
READING: dict[str, tuple[str, ...]] = {
    "draw": (
        "Mia likes to {w} horses after school.",
        "Every summer he would {w} the old harbour.",
        "In art class the children {w} birds and trees.",
        "My grandfather taught me to {w} with charcoal.",
    ),
    "make": (
        "The baker will {w} a cake for the party.",
        "Our team has to {w} a new plan by Friday.",
        "The old machine could {w} enough bread for the town.",
        "She promised to {w} something for dinner.",
    ),
    "show": (
        "At the gate the guard said: {w} your ticket.",
        "The teacher asked: {w} your homework.",
        "Tom told his brother: {w} the map again.",
    ),
    "animate": (
        "The studio will {w} the race for the evening news.",
        "They want to {w} the whole wedding.",
        "It took a week to {w} the scene with the dragon.",
    ),
    "play": (
        "The old radio would {w} a song every morning.",
        "The little box can {w} the sound of rain.",
        "At midnight the clock tower would {w} a long chime.",
    ),
    "picture": (
        "There is an old {w} of the harbour on the wall.",
        "She framed the {w} and hung it in the hall.",
        "The museum bought a {w} of the king.",
        "Grandma keeps a {w} of the farm in her purse.",
    ),
    "video": (
        "We watched a funny {w} about cats last night.",
        "The {w} of the concert lasted an hour.",
        "My cousin made a {w} of his trip to the mountains.",
        "Everyone laughed at the {w} of the dancing dog.",
    ),
    "sound": (
        "We heard a strange {w} from the attic.",
        "The {w} of the engine woke the baby.",
        "The {w} from the speaker was too loud.",
        "Nobody knew where the {w} came from.",
    ),
    "thing": (
        "A dark {w} appeared in the fog.",
        "The child found a round {w} on the beach.",
        "Something like a {w} stood at the end of the road.",
    ),
    "colour_n": (
        "The {w} of the wall faded in the sun.",
        "She picked a warmer {w} for the front door.",
        "The sea changed its {w} before the storm.",
    ),
    "beep_n": (
        "The microwave gave a {w} when the soup was ready.",
        "Every {w} of the alarm made the dog bark.",
        "The truck made a {w} as it backed up.",
        "Her watch gives a {w} on the hour.",
    ),
    "short": (
        "We took a {w} walk before lunch.",
        "He gave a {w} speech and sat down.",
        "After a {w} nap she felt better.",
    ),
    "moving": (
        "The boat was {w} slowly along the river.",
        "A flock of geese was {w} over the hills.",
        "The train kept {w} through the night.",
    ),
    "moves": (
        "Every evening the cloud {w} across the valley.",
        "The ferry {w} along the coast.",
        "The old cat {w} quietly along the fence.",
    ),
    "dir:left": (
        "At the bridge the road turns {w}.",
        "The bus swerved {w} to miss the dog.",
        "Walk past the bakery, then go {w}.",
    ),
    "dir:right": (
        "At the church the road bends {w}.",
        "The cyclist leaned {w} into the corner.",
        "Cross the square, then turn {w}.",
    ),
    "dir:up": (
        "The balloon floated {w} into the sky.",
        "The smoke rose {w} from the chimney.",
        "The kite climbed {w} in the wind.",
    ),
    "dir:down": (
        "The leaf fell slowly {w}.",
        "The rain ran {w} along the window.",
        "The stone rolled {w} into the valley.",
    ),
    "pitch:low": ("The cello played a {w} note.", "He spoke in a {w} voice.", "Far away a {w} horn sounded."),
    "pitch:middle": (
        "The singer held a {w} note.",
        "The flute began on a {w} tone.",
        "Her voice was neither high nor low but {w}.",
    ),
    "pitch:high": ("The whistle made a {w} sound.", "A {w} cry came from the tree.", "The kettle gave a {w} whine."),
    "count:1": (
        "There was {w} pear left in the bowl.",
        "She saw {w} bird on the roof.",
        "He ate {w} biscuit with his tea.",
    ),
    "count:2": ("{W} dogs slept by the fire.", "She bought {w} loaves of bread.", "We saw {w} boats in the bay."),
    "count:3": (
        "{W} children ran across the field.",
        "He read {w} books in a week.",
        "There were {w} cups on the table.",
    ),
    "oov:colour": ("Her new scarf is {w}.", "They painted the fence {w}.", "The car outside is {w}."),
    "oov:shape": (
        "The window was shaped like a {w}.",
        "She cut the paper into a {w}.",
        "The garden path ended in a {w} of stones.",
    ),
    "oov:count": (
        "The spider walked on {w} legs.",
        "We waited {w} days for the letter.",
        "He has {w} cousins in the city.",
    ),
    "oov:motion": (
        "The dancer spun {w} across the stage.",
        "The fly buzzed {w} around the lamp.",
        "The skater glided {w} on the ice.",
    ),
    "oov:medium": (
        "The office sent us a {w} of the new building.",
        "Her brother made a {w} for his school.",
        "The company keeps every {w} on a server.",
    ),
}
#: the world's own values, written in the out-of-vocabulary groups' contexts too: running text says "a red scarf" as
#: often as "a pink scarf", so these contexts tell a colour from a non-colour, not the world's colours from others
READING_WORLD: dict[str, tuple[str, ...]] = {
    "oov:colour": tuple(COLOURS),
    "oov:shape": SHAPES,
    "oov:count": ("one", "two", "three"),
    "oov:motion": tuple(DIRECTIONS),
    "oov:medium": ("picture", "video", "sound"),
}
#: what a reading passage is asked with (the passage is the reply)
READ_ASK = ("Tell me a story.", "Say something.", "Write a few sentences.", "Tell me about your day.")


def reading(rng: random.Random, max_sentences: int = 4) -> list[tuple[str, str]]:
    """A text-only exchange whose reply is 1 to ``max_sentences`` everyday sentences from :data:`READING`, each with
    a word of its group (held-out words included) in its group's own contexts: "The microwave gave a bleep when the
    soup was ready.".

    This is the tiny LLM's stand-in for running text a pretrained LLM has read: a word's meaning shows in the
    contexts it shares with its synonyms (bleep where beep also goes), without the word ever being used in a
    request, a question about a medium, or any PT / IT row (docs/tinyworld.md)."""
    sentences = []
    for _ in range(rng.randint(1, max_sentences)):
        group = rng.choice(list(READING))
        canonical, others = GROUPS[group]
        word = rng.choice(canonical + others + READING_WORLD.get(group, ()))
        frame = rng.choice(READING[group])
        sentences.append(_articles(frame.format(w=word, W=_capital(word))))
    return [(rng.choice(READ_ASK), " ".join(sentences))]
