"""Text extraction per file type.

``extract_blocks`` picks an extractor by file extension, falling back to the MIME type, and
returns the normalised text as :class:`~ingest.pipeline.formats.base.Block` s (text, section,
page); ``extract_text`` joins them. Format families with more than a few lines live in
``ingest/pipeline/formats/``; what they share (limits, zip checks) is in its ``base``.
PDF: ``formats/pdf.py`` (PDFium for the text, 2-4x the pages/s of pypdf, which stays as
the gate for encryption and capped inflation); images and scanned PDF pages: OCR with
Tesseract, ``formats/ocr.py`` (caps ``OCR_MAX_PAGES`` and a pixel cap: "too large"; no
tesseract: ``Unsupported``, never deleted).
Corrupt, encrypted, empty or unsupported input raises
:class:`~ingest.errors.ProcessingError` (permanent: retrying cannot help).

Limits (:class:`ExtractLimits`, one value per call; ``limits=None`` means the defaults):

- ``max_unzipped_bytes`` (``MAX_UNZIPPED_BYTES``): zip-based formats (DOCX, PPTX, XLSX, ODT,
  EPUB) are checked before a library parses them. Members whose declared uncompressed sizes
  add up to more than the limit raise ``ProcessingError`` ("too large"); so does a part that
  exceeds the XML parser's own size limits. Every member is then read once with a capped read, so a
  member holding more data than its header declares is rejected as corrupt
  (``ProcessingError``) after at most one chunk, instead of being inflated in full.
- ``max_chars`` (``MAX_EXTRACTED_CHARS``): extracted text longer than this raises
  ``ProcessingError`` ("too large"). Characters are counted as the extractors produce them,
  before whitespace normalisation, so a runaway extraction stops as soon as it crosses the
  limit. A PDF stream that trips one of pypdf's own decompression limits
  (``LimitReachedError``) is reported the same way.
- ``timeout_seconds`` (``EXTRACT_TIMEOUT_SECONDS``): wall time of one extraction. Exceeding
  it raises :class:`~ingest.errors.ResourceLimit`: our limit stopped the work, the file may
  be fine, so it is never treated as a property of the file (and never auto-deleted).

Formats and libraries (files/s: ``bench/formats.py`` on one core, test sample / larger
sample of 40 slides, 2,000 rows, 300 paragraphs or 20 chapters; see its docstring):

====== =========================== ========== ============================================
format library (licence)           files/s    why
====== =========================== ========== ============================================
pptx   python-pptx (MIT)           151 / 29   the one maintained reader (markitdown wraps it)
xlsx   openpyxl (MIT), read-only   327 / 15   streams rows (~30k rows/s), cached formulas
odt    odfpy (Apache-2.0 option)   1134 / 235 the OASIS reference reader
rtf    striprtf (BSD)              9069 / 83  small, pure Python, honours code pages
epub   zipfile + lxml + HTML above 624 / 36   ebooklib is AGPL; we need the spine only
eml    stdlib email (PSF)          485 / 72   policy.default parses MIME in full
msg    olefile (BSD)               3313 / 78  extract-msg is GPL; properties are streams
xml    lxml (BSD), entities off    21331 / 89 bounded parser, already a dependency
====== =========================== ========== ============================================

Size limits are properties of the file (``processing_error``); the time limit is not
(``resource_limit``). ``MemoryError``, Celery's ``SoftTimeLimitExceeded`` and any other
exception that is not a known library error on bad input propagate unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from types import FrameType
from typing import Any

from bs4 import BeautifulSoup
from docx import Document
from docx.exceptions import PythonDocxError
from docx.opc.exceptions import OpcError
from docx.table import Table
from docx.text.paragraph import Paragraph
from lxml import etree

from ingest.errors import ProcessingError, ResourceLimit
from ingest.pipeline.formats import epub, mail, office, text_formats
from ingest.pipeline.formats.base import (
    DEFAULT_LIMITS,
    ZIP_ERRORS,
    Block,
    ExtractLimits,
    Extractor,
    check_chars,
    check_zip_package,
    decode,
    join_capped,
    record_text,
    too_much_text,
)
from ingest.pipeline.formats.ocr import extract_image
from ingest.pipeline.formats.pdf import extract_pdf
from ingest.pipeline.formats.supported import SUPPORTED_EXTENSIONS

_EXTENSION_KINDS: dict[str, str] = {
    ".txt": "text",
    ".md": "markdown",
    ".csv": "csv",
    ".json": "json",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".odt": "odt",
    ".rtf": "rtf",
    ".epub": "epub",
    ".eml": "eml",
    ".msg": "msg",
    ".xml": "xml",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".tiff": "image",
    ".tif": "image",
}

_MIME_KINDS: dict[str, str] = {
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/csv": "csv",
    "application/json": "json",
    "text/html": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.oasis.opendocument.text": "odt",
    "application/rtf": "rtf",
    "text/rtf": "rtf",
    "application/epub+zip": "epub",
    "message/rfc822": "eml",
    "application/vnd.ms-outlook": "msg",
    "application/xml": "xml",
    "text/xml": "xml",
    "image/png": "image",
    "image/jpeg": "image",
    "image/tiff": "image",
}

_HTML_DROPPED_TAGS = ("script", "style", "noscript", "template")
_HTML_BLOCK_TAGS = (
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
    "ol", "p", "pre", "section", "table", "title", "tr", "ul",
)  # fmt: skip
_HTML_CELL_TAGS = ("td", "th")

_BLANK_LINES = re.compile(r"\n{3,}")
_INLINE_SPACE = re.compile(r"[ \t\xa0]+")


# Exceptions the libraries raise on malformed input: properties of the file, reported as
# ProcessingError (PDF: formats/pdf.py PDF_ERRORS). Deliberately narrow and never Exception,
# BaseException or MemoryError:
# Celery's SoftTimeLimitExceeded is a plain Exception subclass, and a time limit or a memory
# error is not a property of the file. Caught as "corrupt" they would get a good file deleted.
# Anything not listed (pypdf's DependencyError, a bug of ours, ...) propagates unchanged.
_DOCX_ERRORS: tuple[type[Exception], ...] = (
    *ZIP_ERRORS,
    OpcError,  # PackageNotFoundError: not a zip package at all
    PythonDocxError,  # InvalidXmlError: a required element is missing
    etree.LxmlError,  # XMLSyntaxError and the other lxml errors on malformed XML
    TypeError,
    AttributeError,
    IndexError,
    RecursionError,
)

def extract_blocks(
    data: bytes,
    file_name: str,
    mime_type: str | None = None,
    *,
    limits: ExtractLimits | None = None,
) -> list[Block]:
    """Return the document's normalised text as blocks in reading order (none empty).

    The type is decided by ``file_name``'s extension, then by ``mime_type``. Raises
    ``ProcessingError`` for unsupported, corrupt, text-less or too large input and
    ``ResourceLimit`` when the extraction runs longer than ``limits.timeout_seconds``.
    ``limits=None`` means :data:`DEFAULT_LIMITS`.
    """
    limits = DEFAULT_LIMITS if limits is None else limits
    kind = _detect_kind(file_name, mime_type)
    if kind is None:
        raise ProcessingError(
            f"unsupported file type: {file_name!r} (mime type {mime_type or 'unknown'}); "
            f"supported extensions: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    with _deadline(limits.timeout_seconds):
        raw = _EXTRACTORS[kind](data, limits)
    pieces = [Block(raw)] if isinstance(raw, str) else raw
    blocks = [Block(text, b.section, b.page) for b in pieces if (text := normalise_text(b.text))]
    # Already enforced during extraction; kept as a backstop.
    if sum(len(b.text) for b in blocks) > limits.max_chars:
        raise too_much_text(_KIND_LABELS[kind], limits)
    if not blocks:
        raise ProcessingError(f"no text could be extracted from {file_name!r} ({kind})")
    return blocks


def extract_text(
    data: bytes,
    file_name: str,
    mime_type: str | None = None,
    *,
    limits: ExtractLimits | None = None,
) -> str:
    """The document's normalised plain text: :func:`extract_blocks` joined by blank lines."""
    return "\n\n".join(b.text for b in extract_blocks(data, file_name, mime_type,
                                                       limits=limits))


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


# --- limits -------------------------------------------------------------------------------


_REPEAT_SECONDS = 0.25


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise ``ResourceLimit`` in the block if it runs longer than ``seconds`` (wall time).

    Uses ``SIGALRM`` via ``setitimer(ITIMER_REAL)``; the previous handler and timer are
    restored afterwards (an outer timer resumes with its remaining time, or fires at once if
    it fell due meanwhile). Signals only work in the main thread: elsewhere, or with
    ``seconds <= 0``, the block runs without a deadline. Celery's prefork children and the
    solo pool run tasks in the main thread, so workers get the deadline.

    A Python signal handler runs only between bytecodes: a long C call (a zlib inflate, an
    lxml parse) is interrupted only when it returns. The ``ResourceLimit`` can also land
    where Python ignores it (a weakref callback during garbage collection) or in a library
    that catches ``Exception``: so after the deadline the alarm repeats every
    ``_REPEAT_SECONDS`` until the block ends, and if the block still returns, or fails with
    a ``ProcessingError``, after the deadline passed, ``ResourceLimit`` is raised instead: a
    timed-out extraction is never reported as a property of the file.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    message = f"text extraction took longer than {seconds:g} s (EXTRACT_TIMEOUT_SECONDS)"
    armed = True
    expired = False

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        nonlocal expired
        if armed:
            expired = True
            raise ResourceLimit(message)

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_timer = (0.0, 0.0)
    try:
        previous_timer = signal.setitimer(signal.ITIMER_REAL, seconds, _REPEAT_SECONDS)
        yield
    except ProcessingError as exc:
        if expired:  # the library swallowed our ResourceLimit, then gave up on the file
            raise ResourceLimit(message) from exc
        raise
    finally:
        while True:  # disarm first; a repeat alarm may still land on the way in here
            try:
                armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
                break
            except ResourceLimit:
                continue
        # None: the previous handler was not installed from Python; SIG_DFL is the best guess.
        restored = signal.SIG_DFL if previous_handler is None else previous_handler
        signal.signal(signal.SIGALRM, restored)
        delay, interval = previous_timer
        if delay > 0:  # resume an outer timer with what is left of it (due: fire at once)
            remaining = delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-6), interval)
    if expired:  # the library swallowed our ResourceLimit and finished late
        raise ResourceLimit(message)


# --- plain text, CSV, JSON -------------------------------------------------------------


def _extract_plain(data: bytes, limits: ExtractLimits) -> str:
    text = decode(data)
    check_chars(len(text), "text file", limits)
    return text


_MD_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_MD_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_MD_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _extract_markdown(data: bytes, limits: ExtractLimits) -> list[Block]:
    """Markdown text split at its headings (ATX ``#`` and setext), each part under its
    heading's ``section``; heading lines inside fenced code blocks are text."""
    text = decode(data)
    check_chars(len(text), "Markdown", limits)
    blocks: list[Block] = []
    section: str | None = None
    lines: list[str] = []
    fence: str | None = None

    def close(next_section: str | None) -> None:
        nonlocal section, lines
        body = "\n".join(lines).strip()
        if body or section:  # a heading without a body still holds its own text
            blocks.append(Block(body or section or "", section))
        section, lines = next_section, []

    for line in text.splitlines():
        marker = _MD_FENCE.match(line)
        if marker and (fence is None or marker.group(1) == fence):
            fence = marker.group(1) if fence is None else None
        elif fence is None and (heading := _MD_ATX_HEADING.match(line)):
            close((heading.group(1) or "").strip() or None)
            continue
        elif (fence is None and _MD_SETEXT_UNDERLINE.match(line) and lines
              and lines[-1].strip() and not (len(lines) > 1 and lines[-2].strip())):
            title = lines.pop().strip()
            close(title)
            continue
        lines.append(line)
    close(None)
    return blocks


def _extract_csv(data: bytes, limits: ExtractLimits) -> str:
    """One record per data row (:func:`record_text`), blank-line separated (plain joined
    cells without a header)."""
    try:
        rows = [row for row in csv.reader(io.StringIO(decode(data), newline="")) if any(row)]
    except csv.Error as exc:
        raise ProcessingError(f"malformed CSV: {exc}") from exc
    if len(rows) < 2:
        return join_capped((", ".join(cell.strip() for cell in row) for row in rows), "\n",
                           "CSV", limits)
    header, *records = rows
    # Checked while joining: header labels repeat on every row, so the text can outgrow the file.
    return join_capped((record_text(header, record) for record in records), "\n\n", "CSV",
                       limits)


def _extract_json(data: bytes, limits: ExtractLimits) -> str:
    """Parse JSON and flatten it to ``path: value`` lines of its string and number leaves."""
    try:
        document = json.loads(decode(data))
    except (ValueError, RecursionError) as exc:
        raise ProcessingError(f"invalid JSON: {exc}") from exc
    lines = (f"{path}: {value}" if path else str(value) for path, value in _leaves(document))
    # Checked while joining: paths repeat on every leaf, so the text can outgrow the file.
    return join_capped(lines, "\n", "JSON", limits)


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


_HTML_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_HTML_HEADING_MARK = re.compile("\x00([0-9]+)\x00")


def _extract_html(data: bytes, limits: ExtractLimits) -> list[Block]:
    """Visible text of an HTML page, one block element per paragraph, split at its
    headings (h1–h6): each part under its heading path as ``section`` ("Growth > Abroad")."""
    soup = BeautifulSoup(decode(data).replace("\x00", ""), "html.parser")
    for tag in soup.find_all(_HTML_DROPPED_TAGS):
        tag.decompose()
    headings: list[str] = []  # each heading's path: "Growth > Going abroad"
    levels: list[int] = []
    path: list[tuple[int, str]] = []
    for tag in soup.find_all(_HTML_HEADINGS):  # a NUL-delimited mark stands in for each
        level, title = int(tag.name[1]), " ".join(tag.get_text(" ").split())
        path = [(lvl, t) for lvl, t in path if lvl < level] + ([(level, title)] if title else [])
        headings.append(" > ".join(t for _, t in path))
        levels.append(level)
        tag.replace_with(f"\n\n\x00{len(headings) - 1}\x00\n\n")
    for tag in soup.find_all(_HTML_BLOCK_TAGS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    for tag in soup.find_all(_HTML_CELL_TAGS):
        tag.insert_after(" ")
    text = soup.get_text()
    check_chars(len(text), "HTML", limits)
    text = "\n".join(_INLINE_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    parts = _HTML_HEADING_MARK.split(text)  # [before, index, body, index, body, ...]
    blocks = [Block(parts[0])]
    for index, body in zip(parts[1::2], parts[2::2], strict=True):
        n = int(index)
        heading = headings[n] or None
        title = heading.rsplit(" > ", 1)[-1] if heading else None
        if not body.strip():
            if n + 1 < len(levels) and levels[n + 1] > levels[n]:
                continue  # a heading right above a deeper one lives on in that one's path
            body = title or ""  # a lone heading is still text the reader sees
        blocks.append(Block(body, heading))
    return blocks


# --- DOCX ---------------------------------------------------------------------------------


def _extract_docx(data: bytes, limits: ExtractLimits) -> list[Block]:
    """Paragraphs and table cell text of a Word document, in document order, split at its
    headings (paragraph styles "Heading n" and "Title"): each part under its ``section``."""
    check_zip_package(data, "DOCX", limits)
    try:
        document = Document(io.BytesIO(data))
        return _docx_sections(_docx_blocks(document.iter_inner_content()), limits)
    except etree.XMLSyntaxError as exc:
        if exc.code == etree.ErrorTypes.ERR_RESOURCE_LIMIT:  # e.g. a text node over 10 MB
            raise ProcessingError(
                f"DOCX is too large: a part exceeds the XML parser's limits ({exc})"
            ) from exc
        raise ProcessingError(f"corrupt or unreadable DOCX: {type(exc).__name__}: {exc}") from exc
    except _DOCX_ERRORS as exc:  # not Exception: see the comment above
        raise ProcessingError(f"corrupt or unreadable DOCX: {type(exc).__name__}: {exc}") from exc


def _docx_sections(pieces: Iterator[tuple[str, bool]], limits: ExtractLimits) -> list[Block]:
    """Group (text, is_heading) pieces into one block per heading, capping the characters."""
    blocks: list[Block] = []
    section: str | None = None
    texts: list[str] = []
    total = 0
    for text, is_heading in pieces:
        total += len(text) + 2
        check_chars(total, "DOCX", limits)
        if is_heading:
            if texts or section:
                blocks.append(Block("\n\n".join(texts) or section or "", section))
            section, texts = " ".join(text.split()) or None, []
        else:
            texts.append(text)
    if texts or section:
        blocks.append(Block("\n\n".join(texts) or section or "", section))
    return blocks


def _docx_blocks(content: Iterator[Paragraph | Table]) -> Iterator[tuple[str, bool]]:
    """(text, is_heading) of each paragraph and table row, in document order."""
    for block in content:
        if isinstance(block, Paragraph):
            yield block.text, _docx_is_heading(block)
        else:
            yield from ((row, False) for row in _docx_table(block))


def _docx_is_heading(paragraph: Paragraph) -> bool:
    style = paragraph.style
    name = (style.name or "") if style is not None else ""
    return bool(paragraph.text.strip()) and (name.startswith("Heading") or name == "Title")


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


_KIND_LABELS: dict[str, str] = {
    "text": "text file",
    "markdown": "Markdown",
    "csv": "CSV",
    "json": "JSON",
    "html": "HTML",
    "pdf": "PDF",
    "docx": "DOCX",
    "pptx": "PPTX",
    "xlsx": "XLSX",
    "odt": "ODT",
    "rtf": "RTF",
    "epub": "EPUB",
    "eml": "EML",
    "msg": "MSG",
    "xml": "XML",
    "image": "image",
}

_EXTRACTORS: dict[str, Extractor] = {
    "text": _extract_plain,
    "markdown": _extract_markdown,
    "csv": _extract_csv,
    "json": _extract_json,
    "html": _extract_html,
    "pdf": extract_pdf,
    "docx": _extract_docx,
    "pptx": office.extract_pptx,
    "xlsx": office.extract_xlsx,
    "odt": office.extract_odt,
    "rtf": text_formats.extract_rtf,
    "epub": epub.extract_epub,
    "eml": mail.extract_eml,
    "msg": mail.extract_msg,
    "xml": text_formats.extract_xml,
    "image": extract_image,
}
