"""How the eval's free-phrasing, other-renderer and honest rows score, with stand-ins for the system and the judges
(no model):
honest answers must be exact and silent, a generation sample needs both judges, the understanding rows attach the
medium they ask about, and the extra rows never fail ``mmgraph eval``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tinyworld import phrasing
from tinyworld import text as world_text
from tinyworld.analytic import AnalyticJudge
from tinyworld.evaluate import (
    AMBIGUOUS_ROW,
    BARS,
    FREE_HELD_WORD_ROW,
    FREE_TRAIN_WORDS_ROW,
    MISSING_ROW,
    NEW_BARS,
    PAIR_ROW,
    EvalResult,
    Evaluator,
    Row,
)
from tinyworld.phrasing import has_held_out_word
from tinyworld.world import Picture, encode


@dataclass
class Artifact:
    modality: str
    path: Path
    mime: str = "application/octet-stream"


@dataclass
class Reply:
    text: str
    artifacts: list[Artifact] = field(default_factory=list)


class Bot:
    """Answers every turn with ``respond(text, media)``; remembers what it was asked."""

    def __init__(self, respond) -> None:
        self.respond, self.asked = respond, []

    def chat(self, text: str, seed: int = 0, **media):
        self.asked.append((text, media))
        return self.respond(text, media)


class Judge:
    def __init__(self, verdict: dict) -> None:
        self.verdict = verdict

    def judge(self, kind: str, data: bytes) -> dict:
        return self.verdict


def _evaluator(bot, judges=None, analytic=None) -> Evaluator:
    return Evaluator(bot, judges or Judge({}), progress=False, analytic=analytic or Judge({}))


def test_an_honest_answer_counts_only_exact_and_without_media(tmp_path):
    rng = random.Random(0)
    ex = phrasing.missing("image", rng, "held_out")
    medium = tmp_path / "x.png"
    medium.write_bytes(b"")
    for reply, right in [
        (Reply("  i see NO picture.  Please attach one and ask again. "), True),
        (Reply("I see no picture."), False),
        (Reply(phrasing.MISSING["image"], [Artifact("image", medium)]), False),
        (Reply(phrasing.MISSING["audio"]), False),
    ]:
        ev = _evaluator(Bot(lambda text, media, reply=reply: reply))
        ev._honest(ev.extra[MISSING_ROW], ex)
        assert ev.extra[MISSING_ROW].correct == right, reply
        # a wrong item is kept for results.json: what was asked, what came back, with which media
        misses = [] if right else [{"asked": ex.user, "reply": reply.text, "media": [a.mime for a in reply.artifacts]}]
        assert ev.extra[MISSING_ROW].misses == misses


def test_a_generation_sample_passes_only_when_both_judges_agree(tmp_path):
    thing = Picture("red", "circle", "centre", "small")
    medium = tmp_path / "x.png"
    medium.write_bytes(encode(thing, 1))
    reply = Reply("Sure.", [Artifact("image", medium)])
    right, wrong = {"colour": "red", "shape": "circle"}, {"colour": "red", "shape": "square"}
    name = "free phrasing: image generation: colour + shape"
    for trained, analytic, both in [(right, right, 1), (right, wrong, 0), (wrong, right, 0)]:
        ev = _evaluator(Bot(lambda *a: reply), Judge(trained), Judge(analytic))
        ev._generation_row(name, reply, [thing], "Paint a red circle.")
        rows = ev.extra
        assert rows[name].correct == both
        assert rows[name + " [trained judge]"].correct == (trained == right)
        assert rows[name + " [analytic judge]"].correct == (analytic == right)
    ev = _evaluator(Bot(lambda *a: reply), Judge(right), Judge(right))
    ev._generation_row(
        name, Reply("Sure.", [Artifact("video", medium)]), [thing], "Doodle a red circle."
    )  # wrong medium
    assert ev.extra[name].correct == 0 and ev.extra[name].total == 1
    # the report-only rows split the free items by their words: "doodle" is a held-out synonym, "paint" is not
    assert ev.extra[FREE_HELD_WORD_ROW].total == 1 and ev.extra[FREE_TRAIN_WORDS_ROW].total == 0
    assert has_held_out_word("DOODLE a circle") and not has_held_out_word("Paint a circle, doodled")


def _reader(text: str, media: dict) -> Reply:
    """A stand-in system that reads the attached medium with the analytic judge and says every attribute."""
    ((arg, (data,)),) = media.items()
    kind = {"images": "image", "video": "video", "audio": "audio"}[arg]
    found = AnalyticJudge().judge(kind, data)
    if kind == "audio":
        beeps = world_text.NUMBERS.get(found["beeps"], "no")
        return Reply(f"There are {beeps} beeps. The pitch is {found['pitch']}. It is a {found['waveform']} wave.")
    words = " ".join(f"It is {v}." for k, v in found.items() if k != "size")
    return Reply(words)


@pytest.mark.parametrize("kind, attribute", [("image", "shape"), ("video", "direction"), ("audio", "beeps")])
def test_the_understanding_rows_attach_the_thing_they_ask_about(kind, attribute):
    bot = Bot(_reader)
    ev = _evaluator(bot)
    ev.other_renderer(kind, attribute, 20)
    ev.free_understanding(kind, attribute, 20)
    assert ev.extra[f"other renderer: {kind} understanding: {attribute}"].accuracy >= 0.9
    assert ev.extra[f"free phrasing: {kind} understanding: {attribute}"].accuracy >= 0.9
    questions = [text for text, _ in bot.asked]
    assert all("<" not in q for q in questions)  # placeholders dropped, the medium attached instead
    assert len(set(questions[20:])) > 10  # the free questions vary


def test_every_new_row_has_its_bar_and_the_rows_of_before_are_untouched():
    ev = _evaluator(Bot(lambda *a: Reply("")))
    assert set(ev.rows) == set(BARS) and all(ev.rows[r].bar == BARS[r] for r in BARS)
    assert {r for r in ev.extra if ev.extra[r].bar is not None} == set(NEW_BARS)
    assert {NEW_BARS[r] for r in NEW_BARS if r.startswith("free phrasing")} == {0.90}
    assert {NEW_BARS[r] for r in NEW_BARS if r.startswith("other renderer")} == {0.90}
    assert {NEW_BARS[r] for r in NEW_BARS if r.startswith("honest")} == {0.95}
    assert AMBIGUOUS_ROW in NEW_BARS and PAIR_ROW in NEW_BARS
    assert len([r for r in NEW_BARS if r.startswith("other renderer")]) == 9
    assert len([r for r in NEW_BARS if r.startswith("free phrasing") and "understanding" in r]) == 9
    assert len([r for r in NEW_BARS if r.startswith("free phrasing") and "generation" in r]) == 3


def test_the_extra_rows_are_reported_but_never_fail_mmgraph_eval(monkeypatch, tmp_path, capsys):
    from mmgraph.cli import main
    from tinyworld import evaluate as module

    rows = {name: Row(name, correct=1, total=1, bar=bar) for name, bar in BARS.items()}
    extra = {name: Row(name, correct=0, total=1, bar=bar) for name, bar in NEW_BARS.items()}
    monkeypatch.setattr(module, "evaluate", lambda *a, **k: EvalResult(rows, None, [], extra))
    assert main(["eval", "--n", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Free phrasing, other renderers and honest answers" in out and "below its bar" in out
    assert "**FAIL**" not in out
    result = EvalResult(rows, None, [], extra)
    assert set(result.to_dict()["extra"]) == set(NEW_BARS)


def test_missing_medium_items_cycle_through_every_case():
    bot = Bot(lambda text, media: Reply(""))
    ev = _evaluator(bot)
    ev.honest_missing(8)
    attached = [sorted(media) for _, media in bot.asked]
    assert attached.count([]) == 4 and ["images"] in attached and ["audio"] in attached and ["video"] in attached
    assert ev.extra[MISSING_ROW].total == 8


def test_two_requests_ask_for_two_media_of_different_kinds():
    seen = []

    def respond(text, media):
        seen.append(text)
        return Reply("")

    ev = _evaluator(Bot(respond))
    ev.free_pairs(6)
    assert ev.extra[PAIR_ROW].total == 6 and ev.extra[PAIR_ROW].correct == 0
    assert len(set(seen)) == 6
