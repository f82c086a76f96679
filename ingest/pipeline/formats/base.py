"""What every extractor shares: its limits, its output (:class:`Block`), text decoding,
the character cap and the zip-bomb checks of zip-based formats (DOCX, PPTX, XLSX, ODT, EPUB).

:mod:`ingest.pipeline.extract` picks the extractor; the format families live beside this
module, one module each.
"""

from __future__ import annotations

import copy
import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ingest.errors import ProcessingError

_MIB = 1024 * 1024


@dataclass(frozen=True)
class ExtractLimits:
    """Resource limits of one extraction (see the module docstring for what each raises).

    ``timeout_seconds <= 0`` runs without a deadline.
    """

    max_unzipped_bytes: int = 100 * _MIB  # zip-based formats (docx): checked before parsing
    max_chars: int = 10_000_000  # extracted characters
    timeout_seconds: float = 120.0  # wall time of one extraction
    # OCR (ingest.pipeline.formats.ocr): images, and PDF pages without a text layer.
    ocr_languages: str = "eng"  # tesseract's -l syntax, e.g. eng+deu
    ocr_max_pages: int = 20  # pages or frames OCRed per file; more fail as "too large"
    ocr_dpi: int = 300  # resolution PDF pages are rendered at for OCR
    ocr_max_pixels: int = 40_000_000  # largest image OCRed (A4 at 300 dpi is 8.7 million)
    tesseract_cmd: str = "tesseract"  # the tesseract binary (name on PATH, or a path)


DEFAULT_LIMITS = ExtractLimits()



@dataclass(frozen=True)
class Block:
    """A piece of a document's text and where it sits: the heading it falls under
    (``section``) and its page, slide or sheet number (``page``), when the format has them."""

    text: str
    section: str | None = None
    page: int | None = None


# An extractor returns plain text (one block) or the document's blocks in reading order.
Extractor = Callable[[bytes, ExtractLimits], "str | list[Block]"]

# Encodings tried in order for text formats; latin-1 maps every byte, so it never fails.
_TEXT_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")

def decode(data: bytes) -> str:
    """Decode text bytes: UTF-8 (BOM allowed), else cp1252, else latin-1."""
    for encoding in _TEXT_ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise AssertionError("unreachable: latin-1 decodes any byte string")


def too_much_text(label: str, limits: ExtractLimits) -> ProcessingError:
    return ProcessingError(
        f"{label} is too large: it has more than {limits.max_chars:,} characters of text "
        f"(MAX_EXTRACTED_CHARS)"
    )


def check_chars(count: int, label: str, limits: ExtractLimits) -> None:
    if count > limits.max_chars:
        raise too_much_text(label, limits)


def join_capped(pieces: Iterable[str], separator: str, label: str, limits: ExtractLimits) -> str:
    """``separator.join(pieces)``, failing as soon as the text passes ``limits.max_chars``."""
    kept: list[str] = []
    total = -len(separator)
    for piece in pieces:
        total += len(separator) + len(piece)
        check_chars(total, label, limits)
        kept.append(piece)
    return separator.join(kept)


_WRAPPED_SHARE = 0.6  # a line this long, against a page's long lines, was wrapped


def unwrap_lines(text: str) -> str:
    """Join the lines a page layout wrapped (PDF text layers, OCR) back into paragraphs.

    A line at least 60 % as long as the page's long lines (its 90th percentile) continues
    on the next non-blank line; shorter lines (a heading, a paragraph's last line) and blank
    lines stay breaks. Left wrapped, each line end read as a sentence end to the chunker,
    so chunks started and ended mid-sentence ("The servers of the" / "Falcon project stand
    in room F633.") and the model matched such facts less often (bench/retrieval.py).
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    widths = sorted(len(line.strip()) for line in lines if line.strip())
    if len(widths) < 2:
        return "\n".join(lines)
    wrapped = _WRAPPED_SHARE * widths[min(len(widths) - 1, len(widths) * 9 // 10)]
    out = [lines[0]]
    for previous, line in zip(lines, lines[1:], strict=False):
        if previous.strip() and line.strip() and len(previous.strip()) >= wrapped:
            out[-1] = f"{out[-1].rstrip()} {line.strip()}"
        else:
            out.append(line)
    return "\n".join(out)


def record_text(header: Sequence[str], cells: Sequence[str]) -> str:
    """A table row as a record: one ``Header: value`` line per non-empty cell (a cell under
    no header is ``column N``). Extractors separate records by a blank line; the chunker
    keeps each whole. One field per line, not ``a: 1, b: 2`` on one line, because the model
    matched facts in rows a third more often that way (``bench/retrieval.py``)."""
    lines = []
    for index, value in enumerate(cells):
        value = value.strip()
        if not value:
            continue
        column = header[index].strip() if index < len(header) else ""
        lines.append(f"{column or f'column {index + 1}'}: {value}")
    return "\n".join(lines)


def format_bytes(count: int) -> str:
    return f"{count // _MIB} MB" if count % _MIB == 0 else f"{count:,} bytes"


# What zipfile raises on a broken archive (our own reads and python-docx's).
ZIP_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,  # not a zip, bad CRC, overlapping entries, ...
    zlib.error,  # corrupt deflate data
    EOFError,  # truncated compressed data
    ValueError,
    KeyError,  # a member the directory names is missing
    NotImplementedError,  # unsupported compression method
    struct.error,
)
# Compression methods Office documents use; zipfile decompresses the others (bzip2, lzma)
# without an output cap, so they cannot be read safely.
_ZIP_SAFE_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_ZIP_READ_CHUNK = _MIB


# --- zip-based formats --------------------------------------------------------------------


def check_zip_package(data: bytes, label: str, limits: ExtractLimits) -> None:
    """Check a zip-based document before a library parses it; raise ``ProcessingError``.

    The members' declared uncompressed sizes must add up to at most
    ``limits.max_unzipped_bytes``. Declared sizes can lie, and zipfile's ``read()`` (which
    python-docx uses) inflates a member's real data in one call before it notices, so every
    member is also read once here in capped chunks: one holding more than it declares fails
    after at most one chunk. Only stored and deflated members are accepted (zipfile inflates
    bzip2 and lzma members without an output cap).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            declared = sum(member.file_size for member in members)
            if declared > limits.max_unzipped_bytes:
                raise ProcessingError(
                    f"{label} is too large: it unpacks to {declared:,} bytes, above the "
                    f"{format_bytes(limits.max_unzipped_bytes)} limit (MAX_UNZIPPED_BYTES)"
                )
            for member in members:
                check_zip_member(archive, member, label)
    except ZIP_ERRORS as exc:
        message = f"corrupt or unreadable {label}: {type(exc).__name__}: {exc}"
        raise ProcessingError(message) from exc


def check_zip_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, label: str) -> None:
    """Read one member in capped chunks; fail if it holds more than its declared size."""
    if member.flag_bits & 0x1:
        raise ProcessingError(f"encrypted {label}: zip member {member.filename!r} is encrypted")
    if member.compress_type not in _ZIP_SAFE_METHODS:
        raise ProcessingError(
            f"unsupported {label}: zip member {member.filename!r} uses compression method "
            f"{member.compress_type}"
        )
    # One byte of headroom: a member that holds more than it declares yields that extra
    # byte (or fails its CRC check) instead of being cut off silently at the declared size.
    probe = copy.copy(member)
    probe.file_size = member.file_size + 1
    size = 0
    with archive.open(probe) as stream:
        while chunk := stream.read(_ZIP_READ_CHUNK):
            size += len(chunk)
            if size > member.file_size:
                raise ProcessingError(
                    f"corrupt or unreadable {label}: zip member {member.filename!r} holds more "
                    f"than the {member.file_size:,} bytes its header declares"
                )


