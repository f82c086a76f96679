"""Text extraction per file type.

``extract_text`` picks an extractor by file extension, falling back to the MIME type, and
returns normalised plain text. Corrupt, empty or unsupported input raises
:class:`~ingest.errors.ProcessingError` (permanent: retrying cannot help).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Any

from bs4 import BeautifulSoup
from docx import Document
from docx.table import Table
from docx.text.paragraph import Paragraph
from pypdf import PasswordType, PdfReader

from ingest.errors import ProcessingError

Extractor = Callable[[bytes], str]

SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".txt",
    ".md",
    ".csv",
    ".json",
    ".html",
    ".htm",
    ".pdf",
    ".docx",
)

_EXTENSION_KINDS: dict[str, str] = {
    ".txt": "text",
    ".md": "text",
    ".csv": "csv",
    ".json": "json",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}

_MIME_KINDS: dict[str, str] = {
    "text/plain": "text",
    "text/markdown": "text",
    "text/csv": "csv",
    "application/json": "json",
    "text/html": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}

# Encodings tried in order for text formats; latin-1 maps every byte, so it never fails.
_TEXT_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")

_HTML_DROPPED_TAGS = ("script", "style", "noscript", "template")
_HTML_BLOCK_TAGS = (
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
    "ol", "p", "pre", "section", "table", "title", "tr", "ul",
)  # fmt: skip
_HTML_CELL_TAGS = ("td", "th")

_BLANK_LINES = re.compile(r"\n{3,}")
_INLINE_SPACE = re.compile(r"[ \t\xa0]+")


def extract_text(data: bytes, file_name: str, mime_type: str | None = None) -> str:
    """Return the normalised text of a document.

    The type is decided by ``file_name``'s extension, then by ``mime_type``.
    Raises ``ProcessingError`` for unsupported, corrupt or text-less input.
    """
    kind = _detect_kind(file_name, mime_type)
    if kind is None:
        raise ProcessingError(
            f"unsupported file type: {file_name!r} (mime type {mime_type or 'unknown'}); "
            f"supported extensions: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    text = normalise_text(_EXTRACTORS[kind](data))
    if not text.strip():
        raise ProcessingError(f"no text could be extracted from {file_name!r} ({kind})")
    return text


def normalise_text(text: str) -> str:
    """Strip NULs, unify newlines, trim line ends and collapse runs of blank lines."""
    text = text.replace("\x00", "")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n").replace("\v", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def _detect_kind(file_name: str, mime_type: str | None) -> str | None:
    """Map an extension (preferred) or a MIME type to an extractor kind, or None."""
    extension = PurePosixPath(file_name.replace("\\", "/")).suffix.lower()
    if extension in _EXTENSION_KINDS:
        return _EXTENSION_KINDS[extension]
    if mime_type:
        return _MIME_KINDS.get(mime_type.split(";", 1)[0].strip().lower())
    return None


def _decode(data: bytes) -> str:
    """Decode text bytes: UTF-8 (BOM allowed), else cp1252, else latin-1."""
    for encoding in _TEXT_ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise AssertionError("unreachable: latin-1 decodes any byte string")


# --- plain text, CSV, JSON -------------------------------------------------------------


def _extract_plain(data: bytes) -> str:
    return _decode(data)


def _extract_csv(data: bytes) -> str:
    """One line per data row: ``header: value, ...`` (plain joined cells without a header)."""
    try:
        rows = [row for row in csv.reader(io.StringIO(_decode(data), newline="")) if any(row)]
    except csv.Error as exc:
        raise ProcessingError(f"malformed CSV: {exc}") from exc
    if len(rows) < 2:
        return "\n".join(", ".join(cell.strip() for cell in row) for row in rows)
    header, *records = rows
    return "\n".join(_csv_line(header, record) for record in records)


def _csv_line(header: list[str], record: list[str]) -> str:
    parts = []
    for index, value in enumerate(record):
        value = value.strip()
        if not value:
            continue
        column = header[index].strip() if index < len(header) else ""
        parts.append(f"{column}: {value}" if column else value)
    return ", ".join(parts)


def _extract_json(data: bytes) -> str:
    """Parse JSON and flatten it to ``path: value`` lines of its string and number leaves."""
    try:
        document = json.loads(_decode(data))
    except (ValueError, RecursionError) as exc:
        raise ProcessingError(f"invalid JSON: {exc}") from exc
    lines = (f"{path}: {value}" if path else str(value) for path, value in _leaves(document))
    return "\n".join(lines)


def _leaves(document: Any) -> Iterator[tuple[str, Any]]:
    """Yield (path, value) for string/number leaves in document order (iteratively)."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            children = [(f"{path}.{key}" if path else str(key), v) for key, v in node.items()]
        elif isinstance(node, list):
            children = [(f"{path}[{index}]", v) for index, v in enumerate(node)]
        else:
            if isinstance(node, str | int | float) and not isinstance(node, bool):
                yield path, node
            continue
        stack.extend(reversed(children))


# --- HTML ---------------------------------------------------------------------------------


def _extract_html(data: bytes) -> str:
    """Visible text of an HTML page, one block element per paragraph."""
    soup = BeautifulSoup(_decode(data), "html.parser")
    for tag in soup.find_all(_HTML_DROPPED_TAGS):
        tag.decompose()
    for tag in soup.find_all(_HTML_BLOCK_TAGS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    for tag in soup.find_all(_HTML_CELL_TAGS):
        tag.insert_after(" ")
    lines = (_INLINE_SPACE.sub(" ", line).strip() for line in soup.get_text().split("\n"))
    return "\n".join(lines)


# --- PDF ----------------------------------------------------------------------------------


def _extract_pdf(data: bytes) -> str:
    """Join the text of every page; any pypdf failure becomes a ProcessingError."""
    try:
        reader = PdfReader(io.BytesIO(data))
        _unlock_pdf(reader)
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except ProcessingError:
        raise
    except Exception as exc:  # pypdf raises many types (PdfReadError, KeyError, ...) on bad input
        raise ProcessingError(f"corrupt or unreadable PDF: {type(exc).__name__}: {exc}") from exc


def _unlock_pdf(reader: PdfReader) -> None:
    """Open an encrypted PDF with the empty password, or fail permanently."""
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise ProcessingError("encrypted PDF: it cannot be opened without a password")


# --- DOCX ---------------------------------------------------------------------------------


def _extract_docx(data: bytes) -> str:
    """Paragraphs and table cell text of a Word document, in document order."""
    try:
        document = Document(io.BytesIO(data))
        return "\n\n".join(_docx_blocks(document.iter_inner_content()))
    except Exception as exc:  # python-docx raises BadZipFile, KeyError, lxml errors, ...
        raise ProcessingError(f"corrupt or unreadable DOCX: {type(exc).__name__}: {exc}") from exc


def _docx_blocks(content: Iterator[Paragraph | Table]) -> Iterator[str]:
    for block in content:
        if isinstance(block, Paragraph):
            yield block.text
        else:
            yield from _docx_table(block)


def _docx_table(table: Table) -> Iterator[str]:
    """One line per row (cells joined by `` | ``), each followed by its nested tables' text."""
    for row in table.rows:
        texts: list[str] = []
        nested: list[Table] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:  # a horizontally merged cell repeats once per grid column
                continue
            previous = cell._tc
            texts.append(cell.text.strip())
            nested.extend(cell.tables)
        yield " | ".join(text for text in texts if text)
        for inner in nested:
            yield from _docx_table(inner)


_EXTRACTORS: dict[str, Extractor] = {
    "text": _extract_plain,
    "csv": _extract_csv,
    "json": _extract_json,
    "html": _extract_html,
    "pdf": _extract_pdf,
    "docx": _extract_docx,
}
