"""Free phrasing (:mod:`tinyworld.phrasing`): the grammar's variety, the held-out split and its disjointness from
every training dialogue, the honest answers, and the tokenizer's reach over held-out words."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from core.config import MediaLimits
from modalities.media import decode
from tinyworld import phrasing as P
from tinyworld import text as world_text
from tinyworld.data import write_datasets
from tinyworld.language import text_dialogues
from tinyworld.world import COLOURS, SHAPES, THINGS, Clip, Picture, Sound

WEIGHTS = Path(__file__).resolve().parents[1] / "tinyworld" / "weights"


def _items(split: P.Split, n: int = 700, seed: int = 0) -> list[world_text.Exchange]:
    """Every kind of freely phrased exchange, ``n`` rounds."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        thing = THINGS[rng.choice(list(THINGS))].sample(rng)
        other = THINGS[rng.choice([k for k in THINGS if k != thing.kind])].sample(rng)
        out += [
            P.generation(thing, rng, split),
            P.understanding(thing, rng, split),
            P.ambiguous(thing, rng, split),
            P.two_requests(thing, other, rng, split),
            P.both(thing, other, rng, split),
            P.honest(rng, [], split),
        ]
    return out


@pytest.fixture(scope="module")
def everything() -> list[str]:
    return [ex.user.lower() for split in ("train", "held_out") for ex in _items(split)]


def _has(texts: list[str], phrase: str) -> bool:
    pattern = re.compile(rf"(?<![\w-]){re.escape(phrase.lower())}(?![\w-])")
    return any(pattern.search(t) for t in texts)


# -- the grammar's variety -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "phrase",
    [
        # verbs
        *("draw", "paint", "make", "create", "generate", "show me", "can i see", "animate", "play", "let me hear"),
        # nouns of the media
        *("picture", "image", "photo", "drawing", "video", "clip", "animation", "movie"),
        *("sound", "audio", "tone", "beep", "beeps", "bleep"),
        # motion, pitch and counts in many words
        *("moving", "goes", "to the left", "leftwards", "from right to left", "high-pitched", "deep", "2"),
        # politeness and longer sentences
        *("please", "could you", "would you", "thanks", "for a school project", "my little brother loves shapes"),
    ],
)
def test_the_grammar_says_each_thing_in_many_words(everything, phrase):
    assert _has(everything, phrase), phrase


def test_the_grammar_varies_structure_case_punctuation_spelling_and_typos():
    rng = random.Random(1)
    texts = [ex.user for split in ("train", "held_out") for ex in _items(split, 300, seed=1)]
    plain = [re.sub(r"<\w+>\n?|\n<\w+>", "", t) for t in texts]
    assert any(t.endswith("?") for t in plain) and any(t.endswith(".") for t in plain)  # questions, imperatives
    assert any(t.endswith("!") for t in plain) and any(t[-1:].isalpha() for t in plain)  # and no punctuation
    assert any(t == t.lower() and any(c.isalpha() for c in t) for t in plain)  # all lowercase
    assert any(t == t.upper() and any(c.isalpha() for c in t) for t in plain)  # all capitals
    low = " ".join(plain).lower()
    assert re.search(r"\bcolou?r\b", low) and " colour" in low and " color" in low  # British and American
    assert re.search(r"\bcentre\b", low) and re.search(r"\bcenter\b", low)
    # word order: the colour after the shape ("a circle that is red", "a circle, red")
    assert re.search(r"\b(square|circle|triangle|cross) (that is |in |coloured |colored |, )?(red|green|blue)", low)
    # two requests in one turn, a question and a request in one turn
    assert any(ex.user.count(" and ") or "then" in ex.user.lower() for ex in _items("train", 50, seed=2))
    # typos: words that are in no template, no synonym group and no English we wrote
    vocabulary = {w for f in P.FAMILIES.values() for _, t in f.templates for w in re.findall(r"[a-z]+", t.lower())}
    vocabulary |= {w for c, o in P.GROUPS.values() for phrase in c + o for w in re.findall(r"[a-z]+", phrase.lower())}
    vocabulary |= set(P.AMERICAN.values()) | {"beeps", "times", "sawtooth"} | set(COLOURS) | set(SHAPES)
    typos = {w for w in re.findall(r"[a-z]+", low) if w not in vocabulary and not w.endswith("s")}
    assert len(typos) >= 10, typos
    assert P.typo("picture", rng) != "picture" and len(P.typo("a", rng)) == 1


def test_every_template_is_drawn_and_fills_every_slot():
    used = set()
    for split in ("train", "held_out"):
        for ex in _items(split, 1500, seed=3):
            assert "{" not in ex.user and "}" not in ex.user, ex.user
            used |= set(ex.templates)
        rng = random.Random(4)
        for _ in range(400):  # out-of-vocabulary requests reach the templates that name a medium or a motion
            used |= set(P.out_of_vocabulary(rng.choice(list(P.OUT_OF_VOCABULARY)), rng, split).templates)
    assert used == {t for f in P.FAMILIES.values() for t, _ in f.templates}


def test_requests_name_the_wanted_attributes_and_replies_stay_canonical():
    rng = random.Random(5)
    for _ in range(300):
        thing = Picture.sample(rng) if rng.random() < 0.5 else Clip.sample(rng)
        ex = P.generation(thing, rng, "held_out")
        low = ex.user.lower()
        assert thing.colour in low and thing.shape in low  # typos never touch a value word
        assert ex.media_out == [(thing, world_text.request_caption(thing))]
        assert ex.assistant in {
            r.format(x=world_text.request_caption(thing), p=f"<{thing.kind}>") for r in world_text.REPLIES[thing.kind]
        }


# -- the split -------------------------------------------------------------------------------------------------------
def test_the_split_is_the_documented_hash_rule():
    for name, family in P.FAMILIES.items():
        free = [t for t, _ in family.templates if t not in family.pinned]
        key = lambda t: int(hashlib.sha256(f"tinyworld-phrasing-1:{t}".encode()).hexdigest(), 16)  # noqa: E731
        expected = sorted(free, key=key)[: max(1, round(0.25 * len(family.templates)))]
        assert list(P.held_out_templates(name)) == expected, name
        assert P.templates(name, "train") and P.templates(name, "held_out"), name  # both sides of every family
        assert not family.pinned & set(P.held_out_templates(name))  # the canonical templates stay in training
    for group, (canonical, others) in P.GROUPS.items():
        key = lambda w: int(hashlib.sha256(f"tinyworld-phrasing-1:{group}:{w}".encode()).hexdigest(), 16)  # noqa: B023, E731
        assert list(P.held_out_words(group)) == sorted(others, key=key)[: len(others) // 3], group
        assert not set(canonical) & set(P.held_out_words(group))
    assert len(P.all_held_out_words()) >= 30 and len(P.all_held_out_templates()) >= 60
    P.check_grammar()  # no training template or fixed answer writes a held-out word


def test_held_out_items_each_use_a_held_out_template_and_held_out_words_appear():
    held = P.all_held_out_templates()
    items = _items("held_out", 300, seed=6)
    assert all(set(ex.templates) & held for ex in items if ex.templates)
    texts = [ex.user.lower() for ex in items]
    assert sum(any(_has([t], w) for w in P.all_held_out_words()) for t in texts) > len(texts) // 4


def _training_texts() -> list[tuple[str, tuple[str, ...]]]:
    """Every sentence the recipe's LLM and IT data would train on, with free phrasing and honest answers at 100 %."""
    rng = random.Random(7)
    out = []
    for _ in range(1500):
        for ex in P.dialogue(rng, max_turns=4, follow_ups=0.35, free=1.0, honest_share=0.3):
            out.append((ex.user + "\n" + ex.assistant, ex.templates))
    for dialogue in text_dialogues(300, seed=8, free_phrasing=1.0, honest_answers=0.3):
        out += [(text, ()) for _, text in dialogue]
    return out


def test_training_dialogues_never_see_a_held_out_template_or_word(tmp_path):
    held_templates, held_words = P.all_held_out_templates(), P.all_held_out_words()
    texts = _training_texts()
    assert not {t for _, used in texts for t in used} & held_templates
    paths = write_datasets(
        tmp_path, pt=6, it=300, seed=9, it_turns=4, free_phrasing=1.0, honest_answers=0.3, progress=False
    )
    rows = [json.loads(line) for line in paths["it"].read_text().splitlines()]
    texts += [(turn["value"], ()) for row in rows for turn in row["conversations"]]
    low = [t.lower() for t, _ in texts]
    leaks = {w for w in held_words if _has(low, w)}
    assert not leaks, leaks
    # ...while the training data does say things in other words than the canonical templates
    assert _has(low, "could you") and _has(low, "i see no picture. please attach one and ask again.")


def test_without_free_phrasing_or_honest_answers_the_dialogues_are_the_canonical_ones():
    for s in range(30):
        assert P.dialogue(random.Random(s), 3) == world_text.dialogue(random.Random(s), 3)
    assert text_dialogues(50, seed=2) == text_dialogues(50, seed=2, free_phrasing=0.0, honest_answers=0.0)
    assert text_dialogues(50, seed=2) != text_dialogues(50, seed=2, free_phrasing=0.5)


def test_the_glossary_defines_every_word_and_is_the_only_text_writing_held_out_words():
    rng = random.Random(3)
    entries = [entry for _ in range(3000) for entry in P.glossary(rng)]
    defined = {reply for _, reply in entries}
    for group, (canonical, others) in P.GROUPS.items():
        for word in others:  # every non-canonical word, held-out ones included, has its sentence
            assert P.definition(group, word) in defined, (group, word)
            if not group.startswith("oov:"):  # a synonym is defined by its group's canonical word
                assert P.definition(group, word).lower().rstrip(".").endswith(canonical[0].lower()), word
    assert P.definition("video", "movie") == "A movie is a video."
    assert P.definition("oov:colour", "pink") == "Pink is a colour."
    # an entry only defines: its question is one of the dictionary's, about the word its answer defines
    questions = {
        (q.format(w=w, W=w[:1].upper() + w[1:], aw=f"a {w}" if g in P.NOUN_GROUPS or g.startswith("oov:") else w), g, w)
        for g, (_, others) in P.GROUPS.items()
        for w in others
        for q in P.DEFINE
    }

    def key(text: str) -> str:
        return re.sub(r"\ban\b", "a", P.normalise(text))

    asked = {key(q): P.definition(g, w) for q, g, w in questions}
    for user, reply in entries:
        assert asked.get(key(user)) == reply, (user, reply)
    # in the LLM's dialogues, held-out words are written by the glossary dialogues and nowhere else
    held = P.all_held_out_words()
    mixed = text_dialogues(600, seed=4, free_phrasing=1.0, honest_answers=0.3, glossary=0.2)
    sentences = {P.definition(g, w) for g, (_, others) in P.GROUPS.items() for w in others}
    entries_seen = [d for d in mixed if all(reply in sentences for _, reply in d[1::2])]
    others = [d for d in mixed if d not in entries_seen]
    assert 60 < len(entries_seen) < 180  # about a fifth
    low = [text.lower() for d in others for _, text in d]
    assert not {w for w in held if _has(low, w)}
    assert {w for w in held if _has([t.lower() for d in entries_seen for _, t in d], w)}
    # off by default: the dialogues are unchanged, draw for draw
    assert text_dialogues(40, seed=2, free_phrasing=0.5) == text_dialogues(40, seed=2, free_phrasing=0.5, glossary=0)


def test_reading_writes_every_word_of_a_group_in_that_groups_own_everyday_contexts():
    rng = random.Random(5)
    passages = [P.reading(rng) for _ in range(4000)]
    sentences = [s for ((ask, reply),) in passages for s in re.split(r"(?<=\.) ", reply)]
    assert all(ask in P.READ_ASK for ((ask, _),) in passages)
    held = P.all_held_out_words()
    by_frame = {}
    for group, frames in P.READING.items():
        canonical, others = P.GROUPS[group]
        for frame in frames:
            # one slot per frame; its fixed words say no held-out word, ask nothing and address no one
            assert len(re.findall(r"\{[wW]\}", frame)) == 1 and "?" not in frame, frame
            fixed = re.sub(r"\{[wW]\}", " ", frame).lower()
            assert not {w for w in held if _has([fixed], w)}, frame
            by_frame[frame] = (group, canonical + others + P.READING_WORLD.get(group, ()))
    met: dict[str, set[str]] = {}
    for sentence in sentences:
        group, word = next(
            (g, w)
            for frame, (g, words) in by_frame.items()
            for w in words
            if P._articles(frame.format(w=w, W=w[:1].upper() + w[1:])) == sentence
        )
        met.setdefault(group, set()).add(word)
    for group in P.READING:  # every word, held-out ones included, in its own group's contexts only
        canonical, others = P.GROUPS[group]
        assert met[group] == set(canonical + others + P.READING_WORLD.get(group, ())), group
    assert "The microwave gave a bleep when the soup was ready." in sentences
    assert "Her new scarf is red." in sentences and "Her new scarf is pink." in sentences
    # in the LLM's dialogues, held-out words are written by the reading and glossary dialogues and nowhere else
    mixed = text_dialogues(600, seed=6, free_phrasing=1.0, honest_answers=0.3, glossary=0.1, reading=0.2)
    reading = [d for d in mixed if len(d) == 2 and d[0][1] in P.READ_ASK]
    assert 80 < len(reading) < 160  # about a fifth of the 90 % the glossary leaves
    definitions = {P.definition(g, w) for g, (_, others) in P.GROUPS.items() for w in others}
    rest = [d for d in mixed if d not in reading and not all(reply in definitions for _, reply in d[1::2])]
    assert not {w for w in held if _has([text.lower() for d in rest for _, text in d], w)}
    assert {w for w in held if _has([text.lower() for d in reading for _, text in d], w)}
    # off by default: the dialogues are unchanged, draw for draw
    assert text_dialogues(40, seed=2, free_phrasing=0.5) == text_dialogues(40, seed=2, free_phrasing=0.5, reading=0)


def test_generation_shapes_weigh_single_ambiguous_and_paired_requests():
    rng = random.Random(8)
    pairs = [P.exchange(rng, task="generate", shapes={"pair": 1.0}) for _ in range(30)]
    assert all(len(ex.media_out) == 2 and ex.media_out[0][0].kind != ex.media_out[1][0].kind for ex in pairs)
    singles = [P.exchange(rng, task="generate", shapes={"single": 1.0, "pair": 0.0}) for _ in range(30)]
    assert all(len(ex.media_out) == 1 for ex in singles)
    # the default is GENERATE_SHAPES, draw for draw
    a, b = random.Random(9), random.Random(9)
    assert [P.exchange(a, task="generate") for _ in range(40)] == [
        P.exchange(b, task="generate", shapes=dict(P.GENERATE_SHAPES)) for _ in range(40)
    ]
    share = (
        sum(
            len(P.exchange(rng, task="generate", shapes={"single": 0.5, "pair": 0.5}).media_out) == 2
            for _ in range(400)
        )
        / 400
    )
    assert 0.4 < share < 0.6


def test_novel_words_replace_carrier_words_only_and_leave_the_request_as_it_was():
    rng = random.Random(12)
    exchanges = [P.exchange(rng, task="generate") for _ in range(300)]
    carriers = {w.lower() for g in P.CARRIER_GROUPS for w in P.words(g, "train")}
    known = {w.lower() for canonical, others in P.GROUPS.values() for w in canonical + others}
    changed = 0
    for ex in exchanges:
        new = P.novel_words(ex, rng, 1.0)
        assert (new.assistant, new.media_in, new.media_out, new.templates) == (
            ex.assistant,
            ex.media_in,
            ex.media_out,
            ex.templates,
        )
        low = new.user.lower()
        assert not {w for w in carriers if _has([low], w) or _has([low], w + "s")}, new.user
        for thing, _ in ex.media_out:  # every value and the medium's noun survive
            for value in thing.as_dict().values():
                if isinstance(value, str) and _has([P._CARRIER.sub(" ", ex.user).lower()], value):
                    assert _has([low], value), (ex.user, new.user)
        changed += new.user != ex.user
        for word in set(re.findall(r"[a-z]+", low)) - set(re.findall(r"[a-z]+", ex.user.lower())):
            assert word.rstrip("s") not in known and word not in known, word
    assert changed > 200
    same = exchanges[0]
    state = rng.getstate()
    assert P.novel_words(same, rng, 0.0) is same and rng.getstate() == state
    assert text_dialogues(40, seed=2, free_phrasing=0.5) == text_dialogues(40, seed=2, free_phrasing=0.5, novel=0)
    a = text_dialogues(200, seed=2, free_phrasing=1.0, novel=0.5)
    assert a != text_dialogues(200, seed=2, free_phrasing=1.0)
    assert all(len(d) % 2 == 0 for d in a)


# -- honest answers --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "held_out"])
def test_questions_about_a_missing_medium_get_the_missing_answer_and_generate_nothing(split):
    rng = random.Random(10)
    texts = {tid: text for family in P.FAMILIES.values() for tid, text in family.templates}
    for kind in THINGS:
        for attached in [None, *(THINGS[k].sample(rng) for k in THINGS if {k, kind} not in ({"image", "video"},))]:
            if attached is not None and attached.kind == kind:
                continue
            ex = P.missing(kind, rng, split, attached)
            assert ex.assistant == P.MISSING[kind] and not ex.media_out
            assert ex.media_in == ([attached] if attached else [])
            assert f"<{attached.kind}>" in ex.user if attached else "<" not in ex.user
            # the question names the missing medium: its template has that medium's slot
            (question,) = [t for t in ex.templates if not t.startswith("qf-")]
            assert "{" + P.MEDIUM_SLOTS[kind] + "}" in texts[question], texts[question]
    ex = P.missing(None, rng, split)
    assert ex.assistant == P.MISSING[None] and not ex.media_in and not ex.media_out


def test_missing_medium_refuses_combinations_that_are_not_missing():
    rng = random.Random(11)
    with pytest.raises(ValueError, match="does not make a question about a image unanswerable"):
        P.missing("image", rng, attached=Picture.sample(rng))
    with pytest.raises(ValueError, match="does not make a question about a video unanswerable"):
        P.missing("video", rng, attached=Picture.sample(rng))  # a picture might be what "the video" means
    with pytest.raises(ValueError, match="naming no medium"):
        P.missing(None, rng, attached=Sound.sample(rng))
    with pytest.raises(ValueError, match="unknown medium 'smell'"):
        P.missing("smell", rng)


@pytest.mark.parametrize("category", sorted(P.OUT_OF_VOCABULARY))
def test_out_of_vocabulary_requests_get_the_answer_of_their_category(category):
    rng = random.Random(12)
    oov = P.words(f"oov:{category}", "all")
    for split in ("train", "held_out"):
        for _ in range(60):
            ex = P.out_of_vocabulary(category, rng, split)
            assert ex.assistant == P.OUT_OF_VOCABULARY[category] and not ex.media_out and not ex.media_in
            low = ex.user.lower()
            said = [
                w for w in oov if any(re.search(rf"\b{re.escape(v.lower())}\b", low) for v in (w, P.AMERICAN.get(w, w)))
            ]
            assert said, ex.user  # the unknown word is in the request
            if split == "train":
                assert all(w in P.words(f"oov:{category}", "train") for w in said)
    assert P.OUT_OF_VOCABULARY["colour"].endswith("I know red, green, blue, yellow, purple and orange.")


def test_unknown_words_are_outside_the_world_and_purple_is_not_one_of_them():
    world_values = {str(v) for cls in THINGS.values() for a in cls.attributes for v in cls.choices(a)}
    unknown = {w for g in P.GROUPS if g.startswith("oov:") for w in P.words(g, "all")}
    assert not unknown & (world_values | set(world_text.NUMBERS.values()))
    assert "purple" in COLOURS and "purple" not in unknown


def test_out_of_vocabulary_bad_inputs_give_clear_errors():
    rng = random.Random(13)
    with pytest.raises(ValueError, match="unknown out-of-vocabulary category 'smell'"):
        P.out_of_vocabulary("smell", rng)
    with pytest.raises(ValueError, match="an unknown count cannot be asked of a image"):
        P.out_of_vocabulary("count", rng, kind="image")
    with pytest.raises(ValueError, match="no questions about 'audio' / 'colour'"):
        P.question("audio", "colour", rng)
    with pytest.raises(ValueError, match="split must be 'train' or 'held_out'"):
        P.question("audio", "pitch", rng, "test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overrides must name"):
        P.request(Picture.sample(rng), rng, overrides={"size": "huge"})


def test_honest_answers_compare_without_case_or_spacing():
    assert P.is_expected("  i see NO picture.   Please attach one and ask again.", P.MISSING["image"])
    assert not P.is_expected("I see no picture.", P.MISSING["image"])
    assert not P.is_expected(P.MISSING["image"] + " Here is one:", P.MISSING["image"])


def test_honest_exchanges_fit_the_conversation():
    rng = random.Random(14)
    picture = Picture.sample(rng)
    answers = {P.honest(rng, [picture]).assistant for _ in range(200)}
    # the picture met earlier could be what a question about a picture (or a video) means
    assert answers & set(P.MISSING.values()) == {P.MISSING["audio"]}
    assert answers & set(P.OUT_OF_VOCABULARY.values())
    assert {P.honest(rng, []).assistant for _ in range(300)} >= set(P.MISSING.values())


def test_ambiguous_requests_get_their_most_likely_medium_and_name_none():
    rng = random.Random(15)
    media_words = [w for g in ("picture", "video", "sound") for w in P.words(g, "all")]
    for _ in range(300):
        thing = THINGS[rng.choice(list(THINGS))].sample(rng)
        ex = P.ambiguous(thing, rng, rng.choice(["train", "held_out"]))
        assert [t.kind for t, _ in ex.media_out] == [thing.kind] and f"<{thing.kind}>" in ex.assistant
        assert not any(_has([ex.user.lower()], w) for w in media_words if w != "sound"), ex.user


def test_two_requests_in_one_turn_reply_with_both_in_order():
    rng = random.Random(16)
    ex = P.two_requests(Picture.sample(rng), Sound.sample(rng), rng, "held_out")
    assert [t.kind for t, _ in ex.media_out] == ["image", "audio"]
    assert ex.assistant.index("<image>") < ex.assistant.index("<audio>")


# -- the tokenizer -----------------------------------------------------------------------------------------------------
def _round_trips(tokenizer, phrase: str) -> bool:
    ids = tokenizer(phrase, add_special_tokens=False)["input_ids"]
    return tokenizer.unk_token_id not in ids and tokenizer.decode(ids).strip() == phrase


def test_held_out_words_are_representable_by_the_shipped_and_a_retrained_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from tinyworld.language import train_tokenizer

    shipped = AutoTokenizer.from_pretrained(WEIGHTS / "llm")
    retrained = train_tokenizer(tmp_path, free_phrasing=True)
    corpus = " ".join(P.tokenizer_corpus()).lower()
    held = sorted(P.all_held_out_words())
    for word in held:
        assert not re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", corpus), word  # never in its corpus...
        for tokenizer in (shipped, retrained):
            assert _round_trips(tokenizer, word), word  # ...yet spelt exactly, without an unknown piece
            assert _round_trips(tokenizer, f"Could you {word} it?"), word
    assert _round_trips(retrained, "CAN I SEE A PHOTO OF A GREEN TRIANGLE?")


def test_datasets_with_free_phrasing_honest_answers_and_augmentation_load(tmp_path):
    from training.data import load_samples

    paths = write_datasets(
        tmp_path, pt=12, it=20, seed=3, free_phrasing=1.0, honest_answers=0.3, augment=1.0, progress=False
    )
    kinds = ["image", "video", "audio"]
    it = load_samples(paths["it"], modalities=kinds, generators=kinds)
    assert len(it) == 20
    suffixes = {p.suffix for p in (tmp_path / "media").iterdir()}
    assert suffixes & {".jpg", ".gif"} and ".wav" in suffixes
    for path in sorted((tmp_path / "media").iterdir())[:12]:
        kind = path.stem.split("-")[1]
        medium = decode(kind, path.read_bytes(), MediaLimits(), **({"num_frames": 8} if kind == "video" else {}))
        assert medium is not None and len(medium) > 0 if kind != "image" else medium.size[0] >= 8


def test_two_requests_in_one_turn_load_as_two_outputs_for_it(tmp_path):
    from tinyworld.data import _conversation, _MediaWriter
    from training.data import OutputSeg, load_samples

    rng = random.Random(17)
    exchanges = [
        P.two_requests(Picture.sample(rng), Sound.sample(rng), rng),
        P.missing("audio", rng, attached=Picture.sample(rng)),
    ]
    row = {"id": "it-0", **_conversation(exchanges, _MediaWriter(tmp_path, rng))}
    (tmp_path / "it.jsonl").write_text(json.dumps(row) + "\n")
    (sample,) = load_samples(tmp_path / "it.jsonl", modalities=["image", "audio"], generators=["image", "audio"])
    outputs = [seg for _, turn in sample.turns for seg in turn if isinstance(seg, OutputSeg)]
    assert len(outputs) == 2 and row["output_captions"] == {
        "image": [exchanges[0].media_out[0][1]],
        "audio": [exchanges[0].media_out[1][1]],
    }


# -- the LLM-only probe ------------------------------------------------------------------------------------------------
def test_the_llm_probe_scores_right_replies_right_and_wrong_ones_wrong(monkeypatch):
    """``tinyworld.language.free_probe`` judges greedy text replies to held-out items: fed the expected reply it scores
    every cell 1, fed a reply naming nothing it scores every cell 0; on the shipped LLM it runs end to end."""
    from core.hub import PACKAGED_WORLD_WEIGHTS
    from tinyworld import language

    llm = PACKAGED_WORLD_WEIGHTS / "llm"
    expected: dict[str, str] = {}
    real_as_text = language.as_text

    def remember(ex):
        user, reply = real_as_text(ex)
        expected[user] = reply
        return user, reply

    monkeypatch.setattr(language, "as_text", remember)
    monkeypatch.setattr(language, "_greedy", lambda backbone, user: expected[user])
    right = language.free_probe(llm, n=24)
    assert set(right) == {"understand", "generate", "honest"}
    for cells in right.values():
        assert cells["held_word_n"] + cells["train_words_n"] == 24 and cells["held_word_n"] > 0
        assert cells["held_word"] == cells["train_words"] == 1.0
    monkeypatch.setattr(language, "_greedy", lambda backbone, user: "I like turtles.")
    assert all(c["held_word"] == c["train_words"] == 0.0 for c in language.free_probe(llm, n=24).values())
    monkeypatch.undo()
    real = language.free_probe(llm, n=8)
    assert sum(c["held_word"] * c["held_word_n"] + c["train_words"] * c["train_words_n"] for c in real.values()) > 0
