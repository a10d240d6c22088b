"""A small ``mmgraph eval`` of the shipped ``tiny-world`` system: every row's bar holds, with a margin.

The full evaluation (``mmgraph eval --n 200``, README table) takes minutes; this one asks 30 held-out questions /
requests per row, so each row's score carries sampling noise of a few points: the bars are checked with a margin
of 15 points for understanding and generation rows (about 2.5 standard errors at n = 30) and 4 points for the
routing rows, which see every turn (over 300 of them).
"""

from __future__ import annotations

import pytest

from tinyworld.evaluate import BARS, evaluate

N = 30
MARGIN = 0.15
ROUTING_MARGIN = 0.04


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def result(report_dir):
    return evaluate(n=N, seed=7, latency=False, progress=False, out=report_dir)


def test_the_default_system_is_the_shipped_tiny_world():
    from orchestrator.config import DEFAULT_PRESET, load_config

    assert DEFAULT_PRESET == "tiny-world"
    assert load_config().weights == "@tinyworld/projectors"


#: rows the shipped system does not meet yet (``mmgraph eval --n 200``: 66 %; see README): strict xfails, so the
#: day they pass the test says so and the mark must go
KNOWN_GAPS = {
    "video generation: colour + shape + direction": (
        "the video generator draws the asked direction in ~62 % of clips even from the caption's own text states, "
        "and the output projector now matches that (66 % at n=200)"),
}


def _rows(routing: bool):
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[name]))
            if name in KNOWN_GAPS else name for name in BARS if name.startswith("routing") == routing]


@pytest.mark.parametrize("row", _rows(routing=False))
def test_understanding_and_generation_rows_meet_their_bars(result, row):
    r = result.rows[row]
    assert r.total == N
    assert r.accuracy >= BARS[row] - MARGIN, f"{row}: {r.correct}/{r.total}"


@pytest.mark.parametrize("row", _rows(routing=True))
def test_routing_rows_meet_their_bars(result, row):
    r = result.rows[row]
    assert r.total >= 3 * N
    assert r.accuracy >= BARS[row] - ROUTING_MARGIN, f"{row}: {r.correct}/{r.total}"


def test_the_report_shows_generated_samples(result, report_dir):
    page = (report_dir / "report.html").read_text()
    assert {s["kind"] for s in result.samples} == {"image", "video", "audio"}
    assert page.count("<figure") == len(result.samples)
    assert "<video" in page and "<audio" in page and "<img" in page
    assert len(list((report_dir / "media").iterdir())) == len(result.samples)
