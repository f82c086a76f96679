"""Chunking: by the embedding model's tokens (``chunk_blocks``), or by characters
(``chunk_text``, the fallback of the ``hashing`` backend, which has no tokenizer).

Structure: :func:`chunk_blocks` never lets a chunk span two sections (or pages): consecutive
blocks of one (section, page) are chunked together, each chunk starts with its section's
heading ("Heading\n\n...") and carries ``section`` and ``page``.

Tokens: every chunk, heading and [CLS]/[SEP] included, fits the model's window, so the
model reads all of it. A chunk ends at the last paragraph break before the budget, else
the last sentence break, else the last word break (breaks in the first half are ignored so
chunks do not become tiny); only a single word longer than the budget is cut elsewhere (at
punctuation inside it, else between word pieces). The next chunk starts at the sentence
nearest ``overlap`` tokens before the previous one's end (no overlap when that chunk ended
at a sentence and none is near), else about ``overlap`` tokens before it at a word start.

Characters (``chunk_text``): a chunk ends at the last paragraph break before the hard
limit, else the last sentence break, else the last word break, else at the hard limit
itself. Breaks in the first half of a chunk are ignored so chunks do not become tiny. The
next chunk starts ``overlap`` characters before the previous chunk's end, moved forward to
the start of a word.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby

from ingest.pipeline.formats.base import Block
from ingest.pipeline.tokens import ModelTokenizer

# Break separators by preference; a chunk ends just after the separator.
_BREAK_LEVELS: tuple[tuple[str, ...], ...] = (
    ("\n\n",),
    (". ", "? ", "! ", "\n"),
    (" ",),
)
_WHITESPACE = re.compile(r"\s")


def chunk_text(text: str, chunk_size: int = 1000, overlap: int = 200) -> list[str]:
    """Split ``text`` into stripped, non-empty chunks of at most ``chunk_size`` characters.

    Consecutive chunks share roughly ``overlap`` characters. Raises ``ValueError`` unless
    ``chunk_size > 0`` and ``0 <= overlap < chunk_size``.
    """
    _validate(chunk_size, overlap)
    text = text.strip()
    if len(text) <= chunk_size:
        return [text] if text else []

    chunks: list[str] = []
    start = 0
    while start < len(text):
        start = _skip_whitespace(text, start)
        end = _chunk_end(text, start, chunk_size, overlap)
        chunk = text[start:end].strip()
        if chunk:
            chunks.append(chunk)
        if end >= len(text):
            break
        start = max(_next_start(text, end, overlap), start + 1)  # always make progress
    return chunks


def _validate(chunk_size: int, overlap: int) -> None:
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not 0 <= overlap < chunk_size:
        raise ValueError(f"overlap must satisfy 0 <= overlap < chunk_size, got {overlap}")


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _chunk_end(text: str, start: int, chunk_size: int, overlap: int) -> int:
    """End index (exclusive) of the chunk starting at ``start``.

    A break is only accepted past ``min_end`` (half a chunk, and beyond the overlap) so
    the following chunk is guaranteed to start after ``start``.
    """
    limit = start + chunk_size
    if limit >= len(text):
        return len(text)
    min_end = start + max(chunk_size // 2, overlap + 1)
    for separators in _BREAK_LEVELS:
        best = max(_break_after(text, sep, min_end, limit) for sep in separators)
        if best > 0:
            return best
    return limit


def _break_after(text: str, separator: str, min_end: int, limit: int) -> int:
    """Index just after the last ``separator`` ending within [min_end, limit], or -1."""
    index = text.rfind(separator, min_end - len(separator), limit)
    return index + len(separator) if index >= 0 else -1


def _next_start(text: str, end: int, overlap: int) -> int:
    """Start of the next chunk: ``overlap`` chars before ``end``, moved to a word start."""
    candidate = end - overlap
    if overlap == 0 or text[candidate - 1].isspace():
        return candidate
    boundary = _WHITESPACE.search(text, candidate, end)
    # Without a word boundary in the overlap (one huge word) keep the character overlap.
    return boundary.start() if boundary else candidate


# --- structure- and token-aware chunks ----------------------------------------------------

# Break levels before a token, best first; _INSIDE_WORD cuts between word pieces.
_PARAGRAPH, _SENTENCE, _WORD, _PUNCTUATION, _INSIDE_WORD = range(5)
_SENTENCE_ENDS = frozenset(".?!。！？")
# A heading takes at most this share of a chunk's tokens (a runaway "heading" is cut).
_HEADING_SHARE = 4


@dataclass(frozen=True)
class Chunk:
    """A chunk's text (heading prefix included) and where it comes from."""

    text: str
    section: str | None = None
    page: int | None = None


def chunk_blocks(
    blocks: Sequence[Block],
    tokenizer: ModelTokenizer,
    max_tokens: int = 0,
    overlap: int = 32,
    record_tokens: int = 0,
) -> list[Chunk]:
    """Token-aware chunks of ``blocks``; each fits ``max_tokens`` (0: the model's window;
    never more than it), specials and heading included.

    Records (a block of ``key: value`` lines, as CSV rows and JSON leaves are extracted)
    are kept whole and packed, without overlap, into chunks of at most ``record_tokens``
    (0: one record per chunk), so a one-row fact is not diluted among other rows.
    Raises ``ValueError`` unless ``0 <= overlap < max_tokens // 2``.
    """
    limit = min(max_tokens or tokenizer.window, tokenizer.window)
    if limit <= tokenizer.specials + 8:
        raise ValueError(f"max_tokens must exceed {tokenizer.specials + 8}, got {limit}")
    if not 0 <= overlap < limit // 2:
        raise ValueError(f"overlap must satisfy 0 <= overlap < max_tokens / 2, got {overlap}")
    chunks: list[Chunk] = []
    for section, page, text in _groups(blocks):
        heading = _heading(section, tokenizer, limit // _HEADING_SHARE)
        if text == heading:  # a heading without a body is its own text
            heading = ""
        prefix = f"{heading}\n\n" if heading else ""
        budget = limit - tokenizer.specials - (len(tokenizer.encode(heading).ids) if heading else 0)
        records = _records(text)
        pieces = (_pack_records(records, tokenizer, min(record_tokens, budget), budget,
                                min(overlap, budget // 2)) if records
                  else _token_pieces(text, tokenizer, budget, min(overlap, budget // 2)))
        for body in pieces:
            chunk = prefix + body
            while tokenizer.count(chunk) > limit:  # re-tokenising a cut word can add a piece
                body = _shorten(body, tokenizer, tokenizer.count(chunk) - limit)
                chunk = prefix + body
            chunks.append(Chunk(chunk, section or None, page))
    return chunks


def chunk_blocks_by_chars(blocks: Sequence[Block], chunk_size: int = 1000,
                          overlap: int = 200) -> list[Chunk]:
    """Character chunks of ``blocks`` (no tokenizer): as :func:`chunk_blocks`, sections
    kept apart and headings prefixed, but sized by :func:`chunk_text` in characters."""
    _validate(chunk_size, overlap)
    chunks: list[Chunk] = []
    for section, page, text in _groups(blocks):
        heading = " ".join(section.split())[: chunk_size // _HEADING_SHARE] if section else ""
        heading = "" if text == heading else heading
        prefix = f"{heading}\n\n" if heading else ""
        size = chunk_size - len(prefix)
        for body in chunk_text(text, size, min(overlap, size - 1)):
            chunks.append(Chunk(prefix + body, section or None, page))
    return chunks


def _groups(blocks: Sequence[Block]) -> Iterator[tuple[str | None, int | None, str]]:
    """(section, page, text) of each run of consecutive blocks sharing section and page."""
    for (section, page), run in groupby(blocks, key=lambda b: (b.section, b.page)):
        text = "\n\n".join(b.text.strip() for b in run if b.text.strip())
        if text:
            yield section, page, text


_RECORD_LINE = re.compile(r"^([^\s:][^:\n]{0,120}): \S")
_MIN_RECORD_LINES = 3


def _records(text: str) -> list[str]:
    """``text`` as records when it is made of ``key: value`` lines (else ``[]``).

    Table rows (CSV, XLSX) come as blank-line separated paragraphs of ``Header: value``
    lines, a record each. A single paragraph of such lines (JSON leaves
    ``items[3].name: ...``, ``items[3].team: ...``; XML ``staff.person@id: 7``,
    ``staff.person.name: ...``) is grouped: consecutive lines whose keys are paths sharing a
    parent form one record, until a key repeats (the next XML element of the same name);
    other lines are a record each. A grouped record names its fields by their own names
    (``name: ...`` / ``team: ...``), without the parent path: the path's tokens buried the
    values, and the model matched such rows a third less often (bench/retrieval.py).
    """
    paragraphs = text.split("\n\n")
    if len(paragraphs) > 1:
        rows = [p for p in paragraphs if p]
        if len(rows) >= 2 and all(_RECORD_LINE.match(line) for p in rows
                                  for line in p.split("\n")):
            return rows
        return []
    lines = text.split("\n")
    if len(lines) < _MIN_RECORD_LINES:
        return []
    grouped: list[tuple[str | None, list[str]]] = []  # (parent, lines) of each record
    parent: str | None = None
    keys: set[str] = set()
    for line in lines:
        match = _RECORD_LINE.match(line)
        if match is None:
            return []
        key = match.group(1)
        cut = max(key.rfind("."), key.rfind("["), key.rfind("@"))
        line_parent = key[:cut] if cut > 0 else None
        if line_parent is not None and line_parent == parent and key not in keys and grouped:
            grouped[-1][1].append(line)
            keys.add(key)
        else:
            grouped.append((line_parent, [line]))
            keys = {key}
        parent = line_parent
    return [_record_text(p, group) for p, group in grouped]


def _record_text(parent: str | None, lines: list[str]) -> str:
    """One record's text: a lone line as it is; several as ``field: value`` lines."""
    if parent is None or len(lines) == 1:
        return "\n".join(lines)
    return "\n".join(line[len(parent):].lstrip(".@") for line in lines)


def _pack_records(records: list[str], tokenizer: ModelTokenizer, record_tokens: int,
                  budget: int, overlap: int) -> Iterator[str]:
    """Whole records packed into pieces of at most ``record_tokens`` tokens (0: one record
    a piece); a record longer than ``budget`` is cut as text."""
    pending: list[str] = []
    used = 0
    for record in records:
        size = len(tokenizer.encode(record).ids)
        if pending and (not record_tokens or used + size > record_tokens):
            yield "\n\n".join(pending)
            pending, used = [], 0
        if size > budget:
            yield from _token_pieces(record, tokenizer, budget, overlap)
            continue
        pending.append(record)
        used += size
    if pending:
        yield "\n\n".join(pending)


def _heading(section: str | None, tokenizer: ModelTokenizer, max_tokens: int) -> str:
    """The section as a one-line heading of at most ``max_tokens`` tokens ("" for none)."""
    heading = " ".join((section or "").split())
    if not heading:
        return ""
    encoding = tokenizer.encode(heading)
    if len(encoding.ids) <= max_tokens:
        return heading
    return heading[: encoding.offsets[max_tokens - 1][1]]


def _token_pieces(text: str, tokenizer: ModelTokenizer, budget: int, overlap: int) -> list[str]:
    """``text`` cut into pieces of at most ``budget`` tokens (see the module docstring)."""
    encoding = tokenizer.encode(text)
    offsets = encoding.offsets
    count = len(offsets)
    if count <= budget:
        return [text.strip()] if text.strip() else []
    levels = _break_levels(text, offsets, encoding.word_ids)
    pieces: list[str] = []
    start = 0
    while start < count:
        end = _token_piece_end(levels, start, budget, overlap, count)
        pieces.append(text[offsets[start][0]:offsets[end - 1][1]])
        if end >= count:
            break
        start = _next_token_start(levels, start, end, overlap)
    return pieces


def _break_levels(text: str, offsets: list[tuple[int, int]],
                  word_ids: list[int | None]) -> list[int]:
    """``levels[i]``: how good a cut just before token ``i`` is (lower is better)."""
    levels = [_PARAGRAPH]
    for i in range(1, len(offsets)):
        previous_end, current_start = offsets[i - 1][1], offsets[i][0]
        gap = text[previous_end:current_start]
        last = text[previous_end - 1] if previous_end else ""
        if "\n\n" in gap:
            levels.append(_PARAGRAPH)
        elif "\n" in gap or (gap.isspace() and last in _SENTENCE_ENDS):
            levels.append(_SENTENCE)
        elif any(c.isspace() for c in gap):
            levels.append(_WORD)
        elif word_ids[i] != word_ids[i - 1]:
            # CJK characters are words of their own; other changes are punctuation in a word
            cjk = _is_cjk(last) or _is_cjk(text[current_start:current_start + 1])
            if cjk and last in _SENTENCE_ENDS:
                levels.append(_SENTENCE)
            else:
                levels.append(_WORD if cjk else _PUNCTUATION)
        else:
            levels.append(_INSIDE_WORD)
    return levels


def _is_cjk(char: str) -> bool:
    return bool(char) and (
        "\u3000" <= char <= "\u9fff" or "\uac00" <= char <= "\ud7af" or "\uf900" <= char <= "\ufaff"
        or "\uff00" <= char <= "\uffef" or "\U00020000" <= char <= "\U0002fa1f"
    )


def _token_piece_end(levels: list[int], start: int, budget: int, overlap: int, count: int) -> int:
    """Token index (exclusive) where the piece starting at ``start`` ends."""
    limit = start + budget
    if limit >= count:
        return count
    min_end = start + max(budget // 2, overlap + 1)
    best: dict[int, int] = {}  # level -> latest cut at that level in (start, limit]
    for i in range(limit, start, -1):
        best.setdefault(levels[i], i)
    for level in (_PARAGRAPH, _SENTENCE, _WORD):
        candidates = [cut for lvl, cut in best.items() if lvl <= level and cut >= min_end]
        if candidates:
            return max(candidates)
    # No word break in the second half: any word break, else a single word longer than
    # the budget, cut at punctuation inside it, else between word pieces.
    for level in (_WORD, _PUNCTUATION):
        candidates = [cut for lvl, cut in best.items() if lvl <= level]
        if candidates:
            return max(candidates)
    return limit


def _next_token_start(levels: list[int], start: int, end: int, overlap: int) -> int:
    """Start of the next piece: the sentence start nearest ``overlap`` tokens before
    ``end`` (at most twice that), else ``end`` itself when the piece ended at a sentence,
    else a word start about ``overlap`` tokens before ``end``.

    A piece that starts mid-sentence embeds a fragment; starting at a sentence (or with no
    overlap after a piece that ended at one) keeps every sentence whole in some piece.
    """
    if overlap == 0:
        return end
    target = end - overlap
    sentences = [i for i in range(max(start + 1, end - 2 * overlap), end)
                 if levels[i] <= _SENTENCE]
    if sentences:
        return min(sentences, key=lambda i: abs(i - target))
    if levels[end] <= _SENTENCE:
        return end
    for i in range(target, max(start, end - 2 * overlap), -1):  # at least `overlap` shared
        if levels[i] <= _WORD:
            return i
    for i in range(max(target, start + 1), end):  # else a little less
        if levels[i] <= _WORD:
            return i
    return end  # inside one long word: no overlap


def _shorten(body: str, tokenizer: ModelTokenizer, excess: int) -> str:
    """``body`` without its last ``excess`` tokens, cut at a word start when one exists."""
    encoding = tokenizer.encode(body)
    offsets = encoding.offsets
    keep = max(1, len(offsets) - excess)
    levels = _break_levels(body, offsets, encoding.word_ids)
    for i in range(keep, 0, -1):
        if levels[i] <= _WORD:
            keep = i
            break
    return body[: offsets[keep - 1][1]]
