"""A small ``mmgraph eval`` of the shipped ``tiny-world`` system: every row's bar holds, with a margin.

The full evaluation (``mmgraph eval --n 200``, README table) takes minutes; this one asks 30 held-out questions /
requests per row, so each row's score carries sampling noise of a few points: the bars are checked with a margin
of 15 points for understanding and generation rows (about 2.5 standard errors at n = 30) and 4 points for the
routing rows, which see every turn (over 300 of them).
"""

from __future__ import annotations

import pytest

from tinyworld.evaluate import BARS, HONEST_SILENT_ROW, NEW_BARS, evaluate

pytestmark = pytest.mark.integration  # the evaluation of the shipped system, end to end

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
    from core.config import DEFAULT_PRESET, load_config

    assert DEFAULT_PRESET == "tiny-world"
    assert load_config().weights == "@tinyworld/projectors"


def _rows(routing: bool):
    return [name for name in BARS if name.startswith("routing") == routing]


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


# -- free phrasing, other renderers, honest answers (issue 29) ----------------------------------------------------
#: each row's score (%) on the shipped weights, retrained with free phrasing, honest answers and augmentation:
#: ``mmgraph eval --n 200`` (seed 0), docs/tinyworld.md "The phrasing retrain". Rows under their bar are expected to
#: fail (the reason names the score); the rows that meet it must keep meeting it, with the same margin as the others.
MEASURED = {
    "free phrasing: image understanding: colour": 50.0,
    "free phrasing: image understanding: shape": 92.5,
    "free phrasing: image understanding: position": 63.0,
    "free phrasing: video understanding: colour": 77.5,
    "free phrasing: video understanding: shape": 92.0,
    "free phrasing: video understanding: direction": 53.5,
    "free phrasing: audio understanding: pitch": 79.5,
    "free phrasing: audio understanding: beeps": 93.5,
    "free phrasing: audio understanding: waveform": 69.0,
    "free phrasing: image generation: colour + shape": 91.5,
    "free phrasing: video generation: colour + shape + direction": 81.0,
    "free phrasing: audio generation: pitch + beeps": 52.0,
    "free phrasing: a request naming no medium gets its most likely medium": 68.5,
    "free phrasing: two requests in one turn": 12.5,
    "other renderer: image understanding: colour": 100.0,
    "other renderer: image understanding: shape": 96.0,
    "other renderer: image understanding: position": 100.0,
    "other renderer: video understanding: colour": 100.0,
    "other renderer: video understanding: shape": 96.0,
    "other renderer: video understanding: direction": 99.0,
    "other renderer: audio understanding: pitch": 100.0,
    "other renderer: audio understanding: beeps": 88.5,
    "other renderer: audio understanding: waveform": 100.0,
    "honest: a question about a medium not attached": 62.5,
    "honest: an unknown colour is declined": 71.0,
    "honest: an unknown shape is declined": 66.5,
    "honest: an unknown count is declined": 53.0,
    "honest: an unknown motion is declined": 60.0,
    "honest: an unknown medium is declined": 50.5,
}


def _new_row(row: str):
    measured = MEASURED[row]
    if measured / 100 >= NEW_BARS[row]:
        return row
    reason = f"{measured:.1f} % on the shipped weights (n=200), under its bar of {NEW_BARS[row]:.0%}"
    return pytest.param(row, marks=pytest.mark.xfail(reason=reason, strict=False))


def test_the_free_phrasing_other_renderer_and_honest_rows_are_all_measured_and_reported(result, report_dir):
    assert set(MEASURED) == set(NEW_BARS)
    assert set(result.rows) == set(BARS)  # the new rows never join the rows that fail a run
    for row in NEW_BARS:
        assert result.extra[row].total == N and result.extra[row].bar == NEW_BARS[row]
    assert result.extra[HONEST_SILENT_ROW].total == 6 * N
    page = (report_dir / "report.html").read_text()
    assert "Free phrasing, other renderers, honest answers" in page and all(row in page for row in NEW_BARS)


@pytest.mark.parametrize("row", [_new_row(row) for row in NEW_BARS])
def test_free_phrasing_other_renderer_and_honest_rows_meet_their_bars(result, row):
    r = result.extra[row]
    assert r.accuracy >= NEW_BARS[row] - MARGIN, f"{row}: {r.correct}/{r.total}"
