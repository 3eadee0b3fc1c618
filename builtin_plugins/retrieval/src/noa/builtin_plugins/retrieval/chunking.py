"""Cutting a document's text into the chunks that ingestion embeds and stores.

One packer serves every mode. The text is first cut into *units* that must not be
split, then consecutive units are packed greedily into chunks of at most ``size``:

- ``"sentences"``: units are sentences (see :func:`split_sentences`); ``size`` and
  ``overlap`` count characters, so no tokenizer is needed.
- ``"characters"``: units are words (runs of non-whitespace); ``size`` and ``overlap``
  count characters.
- ``"tokens"``: units are the tokens the embedder's tokenizer reports (their character
  spans, as a Hugging Face fast tokenizer's offsets give them); ``size`` and ``overlap``
  count tokens, so a chunk never exceeds the model's input window.

In the character-counted modes a chunk's size is the length of its text, whitespace
between units included. A unit longer than ``size`` is refined before packing: a sentence
into its words, a word into user-perceived characters (a base character with its
combining marks, variation selectors, skin-tone modifiers and zero-width-joiner
sequences), and only a cluster still longer than ``size`` into code points. So nothing is
dropped, every chunk fits within ``size``, and a cut lands inside a word only when the
word alone is longer than ``size``.

Consecutive chunks overlap by whole units: the next chunk starts with the longest run of
the previous chunk's trailing units that measures at most ``overlap`` and still leaves
room for one new unit. Every chunk adds at least one new unit, so the packer always
ends, and it finds each chunk's end by bisection, so its cost grows with the number of
chunks, not with ``size``.

Every chunk's ``start``/``end`` are character offsets into the original text with
``text == original[start:end]``; chunks never begin or end with whitespace, and
together they cover every non-whitespace character of the text, in order.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from typing import Final, Literal, get_args

import msgspec

__all__ = [
    "MAX_CHUNK_SIZE",
    "Chunk",
    "ChunkingConfig",
    "ChunkingMode",
    "TokenSpans",
    "chunk_text",
    "split_sentences",
]

ChunkingMode = Literal["sentences", "tokens", "characters"]

# Large enough for a long-context embedder's window in tokens (8k) and its text in
# characters (~4 characters a token); larger is more likely a typo than a wish.
MAX_CHUNK_SIZE: Final = 32_768

TokenSpans = Callable[[str], Sequence[tuple[int, int]]]
"""Returns the ``(start, end)`` character span of each token of a text, in order."""


class ChunkingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How ingestion cuts a document; ``size`` and ``overlap`` count the mode's unit."""

    mode: ChunkingMode = "sentences"
    size: int = 200
    overlap: int = 40

    def __post_init__(self) -> None:
        # Checked here, not with msgspec.Meta, so that a Struct built in code fails as
        # loudly as one decoded from the config file.
        if self.mode not in get_args(ChunkingMode):
            choices = ", ".join(repr(mode) for mode in get_args(ChunkingMode))
            raise ValueError(f"chunking mode must be one of {choices}, not {self.mode!r}")
        for name, value in (("size", self.size), ("overlap", self.overlap)):
            if type(value) is not int:
                raise ValueError(f"chunking {name} must be an integer, not {value!r}")
        if not 1 <= self.size <= MAX_CHUNK_SIZE:
            raise ValueError(
                f"chunking size must be between 1 and {MAX_CHUNK_SIZE}, not {self.size}"
            )
        if not 0 <= self.overlap < self.size:
            raise ValueError(
                f"chunking overlap must be at least 0 and less than size ({self.size}), "
                f"not {self.overlap}"
            )


class Chunk(msgspec.Struct, frozen=True):
    """A piece of a document: ``text == document[start:end]``, ``index`` counts from 0."""

    index: int
    text: str
    start: int
    end: int


def chunk_text(
    text: str, config: ChunkingConfig, *, count_tokens: TokenSpans | None = None
) -> list[Chunk]:
    """Cut ``text`` into chunks as ``config`` says; whitespace-only text gives ``[]``.

    ``count_tokens`` is required in ``"tokens"`` mode and ignored otherwise. Its spans
    must lie within the text with non-decreasing starts; empty spans (special tokens)
    are skipped. Characters no token covers are covered by no chunk either.
    """
    if config.mode == "tokens":
        if count_tokens is None:
            raise ValueError("chunking mode 'tokens' needs count_tokens, the tokenizer's spans")
        return _pack_tokens(text, _token_spans(text, count_tokens), config)
    if config.mode == "sentences":
        spans = split_sentences(text)
    else:
        spans = [match.span() for match in _WORD.finditer(text)]
    units = _fit(text, spans, config.size)
    starts = [start for start, _ in units]
    ends = [end for _, end in units]
    return _pack(text, starts, ends, starts, ends, config, strip=False)


# --- sentences ----------------------------------------------------------------------

# The line breaks str.splitlines() knows; every one ends a sentence.
_LINE = re.compile(r"[^\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
_WORD = re.compile(r"\S+")
# Latin end punctuation needs whitespace and a capital after it; CJK full stops don't.
_LATIN_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*")
_CJK_END = re.compile(r"[\u3002\uff01\uff1f]+[\u300d\u300f\uff09\"'\u201d\u2019]*")
_OPENERS: Final = frozenset("\"'\u201c\u2018([\u00bf\u00a1")
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)+")
# Titles, references and months, lowercased with their period. Deliberately missing:
# "etc." and "no.", which end sentences as often as not.
_ABBREVIATIONS: Final = frozenset(
    (
        *("mr.", "mrs.", "ms.", "mx.", "dr.", "prof.", "sr.", "jr.", "st.", "mt.", "rev."),
        *("hon.", "gen.", "col.", "capt.", "lt.", "sgt.", "gov.", "sen.", "rep."),
        *("vs.", "cf.", "al.", "fig.", "figs.", "vol.", "vols.", "pp.", "ch.", "sec."),
        *("eq.", "eqs.", "approx.", "dept.", "inc.", "ltd.", "co.", "corp."),
        *("jan.", "feb.", "apr.", "jun.", "jul.", "aug.", "sep.", "sept.", "oct."),
        *("nov.", "dec."),
    )
)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` spans of ``text``'s sentences, stripped of whitespace.

    A sentence ends at a line break, at a CJK full stop, exclamation or question mark
    (U+3002, U+FF01, U+FF1F), or at ``. ! ? …`` (with any closing quotes or brackets)
    followed by whitespace and then a capital letter, a digit or an opening quote or
    bracket. A single ``.`` does not end one after a known abbreviation
    ("Mr.", "Dr.", "vs.", "Fig.") or an initialism ("e.g.", "i.e.", "U.S.", "J."), so
    "Plan A. Then" stays one sentence: the heuristic prefers too few cuts to too many.
    Decimals ("3.14") never split, for no whitespace follows their point.
    """
    spans: list[tuple[int, int]] = []
    for line in _LINE.finditer(text):
        line_start, line_end = line.span()
        start = line_start
        for cut in _sentence_ends(text, line_start, line_end):
            _append_stripped(text, start, cut, spans)
            start = cut
        _append_stripped(text, start, line_end, spans)
    return spans


def _sentence_ends(text: str, line_start: int, line_end: int) -> list[int]:
    cuts = [match.end() for match in _CJK_END.finditer(text, line_start, line_end)]
    for match in _LATIN_END.finditer(text, line_start, line_end):
        after = match.end()
        following = after
        while following < line_end and text[following].isspace():
            following += 1
        if following in (after, line_end):
            continue
        first = text[following]
        if not (first.isupper() or first.istitle() or first.isdigit() or first in _OPENERS):
            continue
        if match.group() == "." and _is_abbreviation(text, line_start, match.start()):
            continue
        cuts.append(after)
    return sorted(cuts)


def _is_abbreviation(text: str, line_start: int, period: int) -> bool:
    word_start = period
    while word_start > line_start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start : period + 1].lstrip("".join(_OPENERS)).lower()
    return word in _ABBREVIATIONS or _INITIALISM.fullmatch(word) is not None


def _append_stripped(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    start, end = _stripped(text, start, end)
    if start < end:
        spans.append((start, end))


# --- units that fit -------------------------------------------------------------------


def _fit(text: str, spans: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """``spans`` with each one longer than ``size`` replaced by smaller pieces."""
    units: list[tuple[int, int]] = []
    for start, end in spans:
        if end - start <= size:
            units.append((start, end))
            continue
        for word in _WORD.finditer(text, start, end):
            if word.end() - word.start() <= size:
                units.append(word.span())
                continue
            for cluster_start, cluster_end in _clusters(text, *word.span()):
                if cluster_end - cluster_start <= size:
                    units.append((cluster_start, cluster_end))
                else:
                    units.extend((point, point + 1) for point in range(cluster_start, cluster_end))
    return units


def _clusters(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Approximate grapheme clusters, enough never to separate a mark from its base."""
    clusters: list[tuple[int, int]] = []
    position = start
    while position < end:
        cluster_start = position
        position += 1
        while position < end and (
            text[position - 1] == "\u200d" or _extends_cluster(text[position])
        ):
            position += 1
        clusters.append((cluster_start, position))
    return clusters


def _extends_cluster(char: str) -> bool:
    point = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")
        or point == 0x200D  # zero-width joiner
        or 0xFE00 <= point <= 0xFE0F  # variation selectors
        or 0x1F3FB <= point <= 0x1F3FF  # skin-tone modifiers
        or 0xE0020 <= point <= 0xE007F  # tag characters (flag sequences)
    )


# --- tokens -----------------------------------------------------------------------------


def _token_spans(text: str, count_tokens: TokenSpans) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    previous_start = 0
    for start, end in count_tokens(text):
        if not 0 <= start <= end <= len(text):
            raise ValueError(
                f"count_tokens gave span ({start}, {end}) outside a text of {len(text)} characters"
            )
        if start < previous_start:
            raise ValueError(
                f"count_tokens gave span ({start}, {end}) after one starting at {previous_start}; "
                "spans must be in text order"
            )
        previous_start = start
        if start < end:
            spans.append((start, end))
    return spans


def _pack_tokens(text: str, spans: list[tuple[int, int]], config: ChunkingConfig) -> list[Chunk]:
    starts = [start for start, _ in spans]
    # Byte-level tokenizers may give spans that overlap; a chunk ends where the furthest
    # of its tokens ends.
    ends: list[int] = []
    furthest = 0
    for _, end in spans:
        furthest = max(furthest, end)
        ends.append(furthest)
    positions = list(range(len(spans)))
    return _pack(text, starts, ends, positions, [p + 1 for p in positions], config, strip=True)


# --- packing ----------------------------------------------------------------------------


def _pack(
    text: str,
    starts: list[int],
    ends: list[int],
    lows: list[int],
    highs: list[int],
    config: ChunkingConfig,
    *,
    strip: bool,
) -> list[Chunk]:
    """Pack units ``i`` (characters ``starts[i]:ends[i]``) into chunks.

    ``lows``/``highs`` place each unit on the scale ``size`` counts (character offsets,
    or token positions): units ``a..b`` measure ``highs[b] - lows[a]``. Both must be
    non-decreasing and no single unit may measure more than ``size``.
    """
    chunks: list[Chunk] = []
    count = len(starts)
    first = 0
    while first < count:
        last = max(first, bisect_right(highs, lows[first] + config.size, first, count) - 1)
        start, end = starts[first], ends[last]
        if strip:
            start, end = _stripped(text, start, end)
        # A chunk whose only new tokens are whitespace adds nothing: skip it.
        if start < end and (not chunks or end > chunks[-1].end):
            chunks.append(Chunk(index=len(chunks), text=text[start:end], start=start, end=end))
        if last == count - 1:
            break
        # The trailing units that fit in the overlap, less any that leave no room for the
        # next unit; never the chunk's first unit, so every chunk brings a new one.
        carry = bisect_left(lows, highs[last] - config.overlap, first + 1, last + 1)
        carry = bisect_left(lows, highs[last + 1] - config.size, carry, last + 1)
        first = carry
    return chunks


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
