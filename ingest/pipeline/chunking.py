"""Character-based chunking with overlap that prefers natural boundaries.

A chunk ends at the last paragraph break before the hard limit, else the last sentence
break, else the last word break, else at the hard limit itself. Breaks in the first half
of a chunk are ignored so chunks do not become tiny. The next chunk starts ``overlap``
characters before the previous chunk's end, moved forward to the start of a word.
"""

from __future__ import annotations

import re

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
