"""A small ``mmgraph eval`` of the shipped ``tiny-world`` system: every row's bar holds, with a margin.

The full evaluation (``mmgraph eval --n 200``, README table) takes minutes; this one asks 30 held-out questions /
requests per row, so each row's score carries sampling noise of a few points: the bars are checked with a margin
of 15 points for understanding and generation rows (about 2.5 standard errors at n = 30) and 4 points for the
routing rows, which see every turn (over 300 of them).
"""

from __future__ import annotations

import pytest

from tinyworld.evaluate import BARS, evaluate

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
