"""PDF text: pypdfium2 (PDFium, BSD/Apache) reads the text layer, one block per page;
pages without one are rendered and OCRed (:mod:`ingest.pipeline.formats.ocr`).

Why two libraries (measured with ``bench/pdf_speed.py``): PDFium extracts text many times
faster than pure-Python pypdf, but it inflates streams without an output cap (a 580 KB
file whose content stream inflates to 400 MB costs 870 MB of memory). So pypdf, which
parses lazily, stays as the gate in front of PDFium:

- it opens the file first: what it cannot parse is "corrupt", and an encrypted file that
  the empty password does not open is "encrypted" (both ``ProcessingError``), as before;
- when the two disagree on the page count (a wrong ``/Count``, which PDFium trusts), the
  text comes from pypdf, as before PDFium, instead of failing a readable file;
- it inflates each page's content streams and form XObjects under its
  ``zlib_maximum_output_length`` cap (75 MB): a decompression bomb trips
  ``LimitReachedError`` ("too large") before PDFium sees it. Inflating is C code; parsing
  the operators, the slow part of pypdf, is left to PDFium.

Image XObjects of pages to OCR are checked against ``ocr_max_pixels`` from their
dictionaries before the page is rendered, and the render itself is scaled down to stay
within that cap. Every PDFium document, page, text page and bitmap is closed (they hold
native memory).
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import TypeVar

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image
from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import LimitReachedError, PyPdfError
from pypdf.generic import DictionaryObject, IndirectObject, StreamObject

from ingest.errors import ProcessingError
from ingest.pipeline.formats.base import Block, ExtractLimits, check_chars, unwrap_lines
from ingest.pipeline.formats.ocr import (
    check_ocr_available,
    check_page_count,
    check_pixels,
    ocr_image,
)

log = logging.getLogger(__name__)

# Exceptions pypdf raises on malformed files: properties of the file, reported as
# ProcessingError. Deliberately narrow and never Exception, BaseException or MemoryError:
# Celery's SoftTimeLimitExceeded is a plain Exception subclass, and a time limit or a memory
# error is not a property of the file. Caught as "corrupt" they would get a good file deleted.
# Anything not listed (pypdf's DependencyError, a bug of ours, ...) propagates unchanged.
PDF_ERRORS: tuple[type[Exception], ...] = (
    PyPdfError,  # PdfReadError, PdfStreamError, ParseError, LimitReachedError, ...
    pdfium.PdfiumError,  # PDFium could not load the document or a page
    # Built-ins pypdf is known to leak on malformed files:
    ValueError,  # also UnicodeDecodeError, binascii.Error
    LookupError,  # KeyError, IndexError, unknown codec names
    TypeError,
    AttributeError,
    AssertionError,
    ArithmeticError,  # ZeroDivisionError, OverflowError
    EOFError,
    NotImplementedError,  # unsupported filter or encryption method
    RecursionError,  # pathologically nested objects
    struct.error,
    zlib.error,
)

# A page whose text layer has fewer visible characters than this, and that shows an image,
# is treated as scanned (a scanner may stamp a page number or a date on it).
_MIN_TEXT_LAYER_CHARS = 10
_POINTS_PER_INCH = 72
_T = TypeVar("_T")


def extract_pdf(data: bytes, limits: ExtractLimits) -> list[Block]:
    """One block per page (``page`` 1-based): the text layer, or OCR for scanned pages."""
    reader = _reading(lambda: PdfReader(io.BytesIO(data)))
    password = _reading(lambda: _unlock(reader))
    with closing(_reading(lambda: pdfium.PdfDocument(data, password=password))) as document:
        if _reading(lambda: len(reader.pages)) != len(document):
            # E.g. a wrong /Count, which PDFium trusts and pypdf does not: pypdf's text, as
            # before PDFium (its page list is the one _inflate_capped would check).
            log.warning("pypdf finds %d PDF pages, PDFium %d: text by pypdf, no OCR",
                        len(reader.pages), len(document))
            return _reading(lambda: _pypdf_blocks(reader, limits))
        layers = _reading(lambda: list(_text_layers(reader, document, limits)))
        texts = [text for text, _ in layers]
        scanned = [index for index, (text, has_image) in enumerate(layers)
                   if has_image and _visible_chars(text) < _MIN_TEXT_LAYER_CHARS]
        if scanned:
            check_page_count(len(scanned), "PDF", limits)
            check_ocr_available(limits)
            log.info("OCR of %d PDF page(s) without a text layer", len(scanned))
        for index in scanned:
            picture = _reading(lambda i=index: _render(document, i, limits))
            texts[index] = ocr_image(picture, limits)  # outside _reading: not the file's errors
            check_chars(sum(len(text) for text in texts), "PDF", limits)
    return [Block(text, page=number) for number, text in enumerate(texts, start=1)]


def _reading(call: Callable[[], _T]) -> _T:
    """Run a pypdf/PDFium call; their errors on bad input become ``ProcessingError``."""
    try:
        return call()
    except LimitReachedError as exc:  # a pypdf safety limit, e.g. a decompression bomb
        raise ProcessingError(
            f"PDF is too large or too complex: it exceeds a pypdf safety limit "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    except PDF_ERRORS as exc:  # not Exception: see PDF_ERRORS
        raise ProcessingError(f"corrupt or unreadable PDF: {type(exc).__name__}: {exc}") from exc


def _unlock(reader: PdfReader) -> str | None:
    """The password that opens the file ("" if encrypted with an empty one), else fail."""
    if not reader.is_encrypted:
        return None
    if reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise ProcessingError("encrypted PDF: it cannot be opened without a password")
    return ""


def _text_layers(reader: PdfReader, document: pdfium.PdfDocument,
                 limits: ExtractLimits) -> Iterator[tuple[str, bool]]:
    """(text layer, shows an image) per page, counting characters against the cap."""
    total = 0
    for index in range(len(document)):
        _inflate_capped(reader.pages[index])
        with closing(document[index]) as page:
            with closing(page.get_textpage()) as textpage:
                text = unwrap_lines(textpage.get_text_bounded())
            has_image = next(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]), None)
        total += len(text)
        check_chars(total, "PDF", limits)
        yield text, has_image is not None


def _pypdf_blocks(reader: PdfReader, limits: ExtractLimits) -> list[Block]:
    """Every page's text by pypdf (its own decompression caps apply)."""
    blocks, total = [], 0
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text() or ""
        total += len(text)
        check_chars(total, "PDF", limits)
        blocks.append(Block(text, page=number))
    return blocks


def _inflate_capped(page: PageObject) -> None:
    """Inflate the page's content streams and form XObjects under pypdf's output cap.

    Raises ``LimitReachedError`` for a stream that inflates past the cap. Images are left
    alone: PDFium decodes them only to render a page for OCR, after their size is checked.
    """
    seen: set[int] = set()
    pending = [page.get("/Contents"), page.get("/Resources")]
    while pending:
        item = pending.pop()
        if isinstance(item, IndirectObject):
            if item.idnum in seen:
                continue
            seen.add(item.idnum)
            item = item.get_object()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, StreamObject):
            if item.get("/Subtype") == "/Image":
                continue
            item.get_data()  # capped; cached by pypdf, so each stream is inflated once
            if "/Resources" in item:  # a form XObject: its own resources may hold more
                pending.append(item.raw_get("/Resources"))
        elif isinstance(item, DictionaryObject):
            xobjects = item.get("/XObject")
            if isinstance(xobjects, DictionaryObject | IndirectObject):
                xobjects = xobjects.get_object()
                pending.extend(xobjects.raw_get(name) for name in xobjects)


def _visible_chars(text: str) -> int:
    return sum(1 for char in text if not char.isspace())


def _render(document: pdfium.PdfDocument, index: int, limits: ExtractLimits) -> Image.Image:
    """Page ``index`` as a grayscale image at ``ocr_dpi``, scaled down to the pixel cap."""
    with closing(document[index]) as page:
        for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]):
            width, height = image.get_px_size()
            check_pixels(width, height, f"PDF page {index + 1} image", limits)
        width, height = page.get_size()  # points
        scale = limits.ocr_dpi / _POINTS_PER_INCH
        if width * height * scale * scale > limits.ocr_max_pixels:
            scale = math.sqrt(limits.ocr_max_pixels / (width * height)) * 0.999
        with closing(page.render(scale=scale, grayscale=True)) as bitmap:
            return bitmap.to_pil().copy()  # to_pil shares the bitmap's native buffer
