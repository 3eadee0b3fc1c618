"""The ingestion chunker: its invariants on any text, its sentence splitter, its config."""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noa.builtin_plugins.retrieval.chunking import (
    MAX_CHUNK_SIZE,
    Chunk,
    ChunkingConfig,
    ChunkingMode,
    chunk_text,
    split_sentences,
)

_TOKEN = re.compile(r"\w+|[^\w\s]")


def word_tokens(text: str) -> list[tuple[int, int]]:
    """A stand-in tokenizer: words and single punctuation marks, covering all non-space."""
    return [match.span() for match in _TOKEN.finditer(text)]


def chunk(text: str, mode: ChunkingMode, size: int, overlap: int) -> list[Chunk]:
    config = ChunkingConfig(mode=mode, size=size, overlap=overlap)
    return chunk_text(text, config, count_tokens=word_tokens)


def tokens_in(text: str, item: Chunk) -> list[tuple[int, int]]:
    return [span for span in word_tokens(text) if item.start <= span[0] < item.end]


# Pieces that exercise the splitter and the refiner: abbreviations, decimals, every
# kind of break, combining marks, an emoji ZWJ sequence, long words.
PIECES = [
    "a", "Bc", "word", "Mr.", "e.g.", "3.14", "U.S.", ".", "!", "?", "…", "。", '"', ")",
    " ", " ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u2028", "e\u0301", "\u0301",
    "\U0001f469\u200d\U0001f4bb", "Zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "The", "9",
]  # fmt: skip
texts = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=120).map("".join),
    st.text(max_size=400),
)
modes: st.SearchStrategy[ChunkingMode] = st.sampled_from(get_args(ChunkingMode))


@st.composite
def configs(draw: st.DrawFn) -> ChunkingConfig:
    size = draw(st.integers(1, 120))
    overlap = draw(st.integers(0, size - 1))
    return ChunkingConfig(mode=draw(modes), size=size, overlap=overlap)


def non_space(text: str) -> str:
    return "".join(text.split())


# --- invariants -------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(text=texts, config=configs())
def test_chunks_are_exact_slices_in_order_and_cover_the_text(
    text: str, config: ChunkingConfig
) -> None:
    chunks = chunk_text(text, config, count_tokens=word_tokens)

    assert [item.index for item in chunks] == list(range(len(chunks)))
    for item in chunks:
        assert 0 <= item.start < item.end <= len(text)
        assert item.text == text[item.start : item.end]
        assert item.text.strip() == item.text
    for previous, current in pairwise(chunks):
        assert previous.start < current.start and previous.end < current.end
    # Merged in order, the chunks give back every non-whitespace character once.
    covered = 0
    merged = []
    for item in chunks:
        assert text[covered : item.start].isspace() or item.start <= covered
        merged.append(text[max(covered, item.start) : item.end])
        covered = item.end
    assert non_space("".join(merged)) == non_space(text)
    assert chunks == chunk_text(text, config, count_tokens=word_tokens)


@settings(max_examples=400, deadline=None)
@given(text=texts, config=configs())
def test_chunks_fit_the_size_and_overlap_at_most_by_overlap(
    text: str, config: ChunkingConfig
) -> None:
    chunks = chunk_text(text, config, count_tokens=word_tokens)

    for previous, current in pairwise(chunks):
        if config.mode == "tokens":
            shared = set(tokens_in(text, previous)) & set(tokens_in(text, current))
            # The stand-in tokenizer has no whitespace tokens, so the window is exact.
            assert len(shared) == config.overlap
        else:
            assert previous.end - current.start <= config.overlap
    for item in chunks:
        if config.mode == "tokens":
            assert len(tokens_in(text, item)) <= config.size
        else:
            assert len(item.text) <= config.size


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab\u00e9", min_size=1, max_size=500), data=st.data())
def test_a_word_cut_hard_overlaps_by_exactly_overlap(text: str, data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 60))
    overlap = data.draw(st.integers(0, size - 1))

    chunks = chunk(text, "characters", size, overlap)

    assert all(len(item.text) == size for item in chunks[:-1])
    assert all(b.start == a.end - overlap for a, b in pairwise(chunks))
    assert chunks[-1].end == len(text)


@settings(max_examples=300, deadline=None)
@given(text=texts, size=st.integers(1, 120), data=st.data())
def test_a_word_is_cut_only_when_it_is_longer_than_size(
    text: str, size: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, size - 1))
    words = [match.span() for match in re.finditer(r"\S+", text)]

    for item in chunk(text, "characters", size, overlap):
        for edge in (item.start, item.end):
            inside = [(s, e) for s, e in words if s < edge < e]
            assert all(e - s > size for s, e in inside)


@settings(max_examples=300, deadline=None)
@given(text=texts, size=st.integers(1, 120), data=st.data())
def test_a_sentence_is_cut_only_when_it_is_longer_than_size(
    text: str, size: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, size - 1))
    sentences = split_sentences(text)

    for item in chunk(text, "sentences", size, overlap):
        for edge in (item.start, item.end):
            inside = [(s, e) for s, e in sentences if s < edge < e]
            assert all(e - s > size for s, e in inside)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_sentences_are_stripped_ordered_and_cover_the_text(text: str) -> None:
    spans = split_sentences(text)

    for start, end in spans:
        assert start < end and text[start:end].strip() == text[start:end]
    assert all(a[1] <= b[0] for a, b in pairwise(spans))
    assert non_space("".join(text[s:e] for s, e in spans)) == non_space(text)


@pytest.mark.parametrize("mode", ["sentences", "tokens", "characters"])
@pytest.mark.parametrize("text", ["", " ", " \n\t\u00a0\u2028 " * 50])
def test_whitespace_only_text_gives_no_chunks(mode: ChunkingMode, text: str) -> None:
    assert chunk(text, mode, 10, 2) == []


@pytest.mark.parametrize("mode", ["sentences", "tokens", "characters"])
@pytest.mark.parametrize(
    "text",
    [
        "a" * 100_000,
        "." * 100_000,
        "A. " * 33_000,
        "\u0301" * 100_000,
        "\u200d" * 100_000,
        "e\u0301" * 50_000,
        ("x" * 5_000 + " ") * 20,
    ],
    ids=["letters", "periods", "initials", "marks", "joiners", "accented", "long-words"],
)
def test_adversarial_text_ends_and_keeps_everything(mode: ChunkingMode, text: str) -> None:
    chunks = chunk(text, mode, 200, 40)

    assert chunks and chunks[0].start == 0 and chunks[-1].end == len(text.rstrip())
    assert all(len(item.text) <= 200 for item in chunks if mode != "tokens")


def test_size_one_on_a_long_text_ends() -> None:
    chunks = chunk("b" * 100_000, "characters", 1, 0)

    assert len(chunks) == 100_000 and {item.text for item in chunks} == {"b"}


# --- each mode by example ---------------------------------------------------------------


def test_characters_mode_packs_words_and_carries_whole_words() -> None:
    text = "alpha beta gamma delta epsilon zeta"

    chunks = chunk(text, "characters", 16, 6)

    assert [item.text for item in chunks] == [
        "alpha beta gamma",
        "gamma delta",
        "delta epsilon",
        "zeta",
    ]
    # "epsilon" (7) doesn't fit a 6-character overlap, so nothing is carried before zeta.


def test_characters_mode_cuts_a_long_word_with_an_exact_overlap() -> None:
    chunks = chunk("abcdefghijklmnopqrstuvwxyz", "characters", 10, 4)

    assert [(item.start, item.end) for item in chunks] == [(0, 10), (6, 16), (12, 22), (18, 26)]


def test_tokens_mode_is_a_sliding_window_over_tokens() -> None:
    text = "one two three four five six seven"

    chunks = chunk(text, "tokens", 3, 1)

    assert [item.text for item in chunks] == [
        "one two three",
        "three four five",
        "five six seven",
    ]


def test_tokens_mode_counts_punctuation_tokens() -> None:
    chunks = chunk("Hi, you. Yes!", "tokens", 2, 0)

    assert [item.text for item in chunks] == ["Hi,", "you.", "Yes!"]


def test_tokens_mode_skips_empty_spans_and_whitespace_windows() -> None:
    text = "a   b"

    def with_specials(_: str) -> list[tuple[int, int]]:
        return [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 5)]

    chunks = chunk_text(
        text, ChunkingConfig(mode="tokens", size=2, overlap=0), count_tokens=with_specials
    )

    assert [item.text for item in chunks] == ["a", "b"]


def test_tokens_mode_accepts_overlapping_byte_level_spans() -> None:
    text = "ab\U0001f600cd"

    def byte_level(_: str) -> list[tuple[int, int]]:
        return [(0, 2), (2, 3), (2, 3), (3, 5)]

    chunks = chunk_text(
        text, ChunkingConfig(mode="tokens", size=2, overlap=0), count_tokens=byte_level
    )

    assert [item.text for item in chunks] == ["ab\U0001f600", "\U0001f600cd"]


def test_tokens_mode_needs_a_tokenizer() -> None:
    with pytest.raises(ValueError, match="chunking mode 'tokens' needs count_tokens"):
        chunk_text("text", ChunkingConfig(mode="tokens"))


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        ([(0, 9)], r"count_tokens gave span \(0, 9\) outside a text of 4 characters"),
        ([(2, 1)], r"count_tokens gave span \(2, 1\) outside"),
        ([(2, 3), (0, 1)], r"count_tokens gave span \(0, 1\) after one starting at 2"),
    ],
)
def test_tokens_mode_rejects_bad_spans(spans: list[tuple[int, int]], message: str) -> None:
    config = ChunkingConfig(mode="tokens", size=2, overlap=0)

    with pytest.raises(ValueError, match=message):
        chunk_text("text", config, count_tokens=lambda _: spans)


def test_sentences_mode_packs_whole_sentences_and_carries_the_last_ones() -> None:
    text = "One is here. Two is here. Three is here. Four is here."

    chunks = chunk(text, "sentences", 30, 15)

    assert [item.text for item in chunks] == [
        "One is here. Two is here.",
        "Two is here. Three is here.",
        "Three is here. Four is here.",
    ]


def test_sentences_mode_without_overlap_does_not_repeat() -> None:
    text = "One is here. Two is here. Three is here. Four is here."

    chunks = chunk(text, "sentences", 30, 0)

    assert [item.text for item in chunks] == [
        "One is here. Two is here.",
        "Three is here. Four is here.",
    ]


def test_sentences_mode_cuts_a_long_sentence_at_words() -> None:
    text = "Short one. " + " ".join(["word"] * 10) + ". End."

    chunks = chunk(text, "sentences", 20, 0)

    # The long sentence's words are units like any other: they fill the chunk they
    # start in, and the sentence after them still starts a unit of its own.
    assert [item.text for item in chunks] == [
        "Short one. word word",
        "word word word word",
        "word word word word.",
        "End.",
    ]


def test_offsets_point_into_the_document() -> None:
    text = "  First line.\n\n   Second line here.  "

    chunks = chunk(text, "sentences", 12, 0)

    assert [(item.text, item.start, item.end) for item in chunks] == [
        ("First line.", 2, 13),
        ("Second line", 18, 29),
        ("here.", 30, 35),
    ]


# --- sentence splitting -----------------------------------------------------------------


def sentences(text: str) -> list[str]:
    return [text[start:end] for start, end in split_sentences(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It works. It ends.", ["It works.", "It ends."]),
        ("Really? Yes! Fine… Done.", ["Really?", "Yes!", "Fine…", "Done."]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("See (the note.) Next one.", ["See (the note.)", "Next one."]),
        ("It rose. 42 fell.", ["It rose.", "42 fell."]),
        ('It ended. "Why?" she asked.', ["It ended.", '"Why?" she asked.']),
        ("Ends here. ¿Qué pasa?", ["Ends here.", "¿Qué pasa?"]),
        ("Über alles. Ärger folgt.", ["Über alles.", "Ärger folgt."]),
        ("first line\nsecond line", ["first line", "second line"]),
        ("one\r\ntwo\u2028three", ["one", "two", "three"]),
        (
            "这是第一句。这是第二句\uff01好吗\uff1f",
            ["这是第一句。", "这是第二句\uff01", "好吗\uff1f"],
        ),
    ],
)
def test_splits_at_sentence_ends(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Take some fruit, e.g. Apples and pears.",
        "That is, i.e. Nothing at all.",
        "Mr. Smith met Dr. Jones and Mrs. Brown.",
        "It cost 3.14 dollars and 2.5 cents.",
        "Born in the U.S. Army base.",
        "Written by J. R. R. Tolkien long ago.",
        "As shown in Fig. 3 and Vol. 2 of the set.",
        "It is lower case after a period. and goes on.",
        "Version 1.2.3 was released.",
        "Wait... what happened here.",
    ],
)
def test_does_not_split_abbreviations_decimals_or_lower_case(text: str) -> None:
    assert sentences(text) == [text]


def test_etc_and_no_end_sentences() -> None:
    assert sentences("Bring pens, paper, etc. Then sit. No. Not that.") == [
        "Bring pens, paper, etc.",
        "Then sit.",
        "No.",
        "Not that.",
    ]


# --- Unicode ----------------------------------------------------------------------------


def test_combining_marks_stay_with_their_base() -> None:
    text = "e\u0301" * 20

    chunks = chunk(text, "characters", 5, 2)

    assert all(item.text.startswith("e") and item.text.endswith("\u0301") for item in chunks)
    assert all(len(item.text) <= 5 for item in chunks)


def test_an_emoji_sequence_is_not_cut_when_it_fits() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # 5 code points
    text = family * 6

    chunks = chunk(text, "characters", 12, 0)

    assert [item.text for item in chunks] == [family * 2, family * 2, family * 2]


def test_a_cluster_longer_than_size_is_cut_into_code_points() -> None:
    text = "a" + "\u0301" * 9

    chunks = chunk(text, "characters", 4, 0)

    assert "".join(item.text for item in chunks) == text
    assert [len(item.text) for item in chunks] == [4, 4, 2]


# --- config -----------------------------------------------------------------------------


def test_config_defaults() -> None:
    assert ChunkingConfig() == ChunkingConfig(mode="sentences", size=200, overlap=40)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size": 0}, f"chunking size must be between 1 and {MAX_CHUNK_SIZE}, not 0"),
        (
            {"size": MAX_CHUNK_SIZE + 1},
            f"chunking size must be between 1 and {MAX_CHUNK_SIZE}, not {MAX_CHUNK_SIZE + 1}",
        ),
        ({"overlap": -1}, "chunking overlap must be at least 0 and less than size (200), not -1"),
        (
            {"size": 10, "overlap": 10},
            "chunking overlap must be at least 0 and less than size (10), not 10",
        ),
        (
            {"mode": "words"},
            "chunking mode must be one of 'sentences', 'tokens', 'characters', not 'words'",
        ),
        ({"size": True}, "chunking size must be an integer, not True"),
        ({"overlap": 2.5}, "chunking overlap must be an integer, not 2.5"),
    ],
)
def test_config_rejects_bad_values(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ChunkingConfig(**fields)


def test_config_from_a_file_section_fails_the_same_way() -> None:
    assert msgspec.convert(
        {"mode": "tokens", "size": 256, "overlap": 32}, ChunkingConfig
    ) == ChunkingConfig(mode="tokens", size=256, overlap=32)
    with pytest.raises(msgspec.ValidationError, match=r"overlap must be .* less than size \(8\)"):
        msgspec.convert({"size": 8, "overlap": 8}, ChunkingConfig)
    with pytest.raises(msgspec.ValidationError, match="unknown field `sise`"):
        msgspec.convert({"sise": 8}, ChunkingConfig)
