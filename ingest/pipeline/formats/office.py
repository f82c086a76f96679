"""PowerPoint (python-pptx), Excel (openpyxl) and OpenDocument text (odfpy) extraction.

Each returns :class:`Block` s with real structure: a slide's title and number, a sheet's name
and index, an ODT heading. Zip packages pass :func:`check_zip_package` before a library opens
them; the library errors each catches are what it raises on malformed input, never
``Exception`` (see ``_PDF_ERRORS`` in :mod:`ingest.pipeline.extract` for why).
"""

from __future__ import annotations

import datetime as dt
import io
import xml.etree.ElementTree as ElementTree
import xml.sax
from collections.abc import Iterator
from typing import Any

from lxml import etree
from openpyxl import load_workbook
from openpyxl.utils.exceptions import InvalidFileException
from pptx import Presentation
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pptx.exc import PythonPptxError

from ingest.errors import ProcessingError
from ingest.pipeline.formats.base import (
    ZIP_ERRORS,
    Block,
    ExtractLimits,
    check_zip_package,
    record_text,
)
from ingest.pipeline.formats.collect import BlockCollector

# What each library raises on a malformed package, beyond the zip errors.
_PPTX_ERRORS: tuple[type[Exception], ...] = (
    *ZIP_ERRORS, PythonPptxError, etree.LxmlError, TypeError, AttributeError, IndexError,
    RecursionError,
)  # fmt: skip
_XLSX_ERRORS: tuple[type[Exception], ...] = (
    *ZIP_ERRORS, InvalidFileException, ElementTree.ParseError, etree.LxmlError, TypeError,
    AttributeError, IndexError,
    OSError,  # "File contains no valid workbook part": a zip that is no workbook
)  # fmt: skip
_ODT_ERRORS: tuple[type[Exception], ...] = (
    *ZIP_ERRORS, xml.sax.SAXException, TypeError, AttributeError, IndexError, RecursionError,
)  # fmt: skip


def _corrupt(label: str, exc: Exception) -> ProcessingError:
    return ProcessingError(f"corrupt or unreadable {label}: {type(exc).__name__}: {exc}")


# --- PPTX ---------------------------------------------------------------------------------


def extract_pptx(data: bytes, limits: ExtractLimits) -> list[Block]:
    """One block per slide (section: its title, page: its number), then one for its notes."""
    check_zip_package(data, "PPTX", limits)
    out = BlockCollector("PPTX", limits)
    try:
        for number, slide in enumerate(Presentation(io.BytesIO(data)).slides, start=1):
            title_shape = slide.shapes.title
            title = title_shape.text_frame.text.strip() if title_shape is not None else ""
            title_id = title_shape.shape_id if title_shape is not None else None
            body = [text for shape in slide.shapes if shape.shape_id != title_id
                    for text in _shape_texts(shape)]
            # The title is the section (the chunker prefixes it); a title-only slide keeps it.
            out.add("\n".join(body) or title, title or None, number)
            if slide.has_notes_slide and (notes := slide.notes_slide.notes_text_frame):
                out.add(f"Notes: {notes.text.strip()}" if notes.text.strip() else "",
                        title or None, number)
    except _PPTX_ERRORS as exc:
        raise _corrupt("PPTX", exc) from exc
    return out.blocks


def _shape_texts(shape: Any) -> Iterator[str]:
    """The text of a shape: its text frame, its table rows, or its group's members."""
    if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
        for member in shape.shapes:
            yield from _shape_texts(member)
    elif getattr(shape, "has_table", False) and shape.has_table:
        for row in shape.table.rows:
            yield " | ".join(cell.text.strip() for cell in row.cells if cell.text.strip())
    elif shape.has_text_frame:
        yield shape.text_frame.text


# --- XLSX ---------------------------------------------------------------------------------


def extract_xlsx(data: bytes, limits: ExtractLimits) -> list[Block]:
    """Per sheet (section: its name, page: its index), one record per row
    (:func:`record_text`), blank-line separated.

    The first non-empty row is the header. Opened with ``data_only=True``: a formula cell
    gives the value Excel cached when it saved the file, and is skipped when there is none.
    Rows are counted against the character cap as they are read.
    """
    check_zip_package(data, "XLSX", limits)
    out = BlockCollector("XLSX", limits)
    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            for index, sheet in enumerate(workbook.worksheets, start=1):
                lines: list[str] = []
                chars = out.chars
                header: list[str] | None = None
                # Rows are padded to the sheet's declared size; a file claiming A1:XFD1048576
                # would pad each row to 16,384 cells. Undeclared, rows hold what they hold.
                sheet.reset_dimensions()
                for row in sheet.iter_rows(values_only=True):
                    cells = [_cell_text(value) for value in row]
                    if not any(cells):
                        continue
                    if header is None:  # its labels go into every line below
                        header = cells
                        continue
                    line = record_text(header, cells)
                    chars += len(line) + 2
                    out.check(chars)
                    lines.append(line)
                if header is not None and not lines:  # a header-only sheet: keep its labels
                    lines.append("; ".join(cell for cell in header if cell))
                out.add("\n\n".join(lines), sheet.title, index)
        finally:
            workbook.close()
    except _XLSX_ERRORS as exc:
        raise _corrupt("XLSX", exc) from exc
    return out.blocks


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value).strip()


# --- ODT ----------------------------------------------------------------------------------


def extract_odt(data: bytes, limits: ExtractLimits) -> list[Block]:
    """Paragraphs, lists and tables of an OpenDocument text, sectioned by its headings."""
    from odf import teletype
    from odf.opendocument import load

    check_zip_package(data, "ODT", limits)
    out = BlockCollector("ODT", limits)
    try:
        document = load(io.BytesIO(data))
        section: str | None = None
        lines: list[str] = []
        for kind, text in _odt_items(document.text, teletype):
            if kind == "h":
                out.add("\n".join(lines), section)
                section, lines = text.strip() or section, []
            else:
                lines.append(text)
                out.check(out.chars + sum(map(len, lines)))
        out.add("\n".join(lines), section)
    except _ODT_ERRORS as exc:
        raise _corrupt("ODT", exc) from exc
    return out.blocks


_ODT_CONTAINERS = frozenset({"section", "list", "list-item", "list-header", "table-header-rows",
                             "table-rows", "index-body", "div"})


def _odt_items(node: Any, teletype: Any) -> Iterator[tuple[str, str]]:
    """("h", heading) and ("p", text) items in document order; a table row is one line."""
    for child in node.childNodes:
        name = getattr(child, "tagName", "") or ""
        local = name.split(":", 1)[-1]
        if name == "text:h":
            yield "h", teletype.extractText(child)
        elif name == "text:p":
            yield "p", teletype.extractText(child)
        elif name == "table:table-row":
            cells = [teletype.extractText(cell).strip() for cell in child.childNodes
                     if getattr(cell, "tagName", "") == "table:table-cell"]
            yield "p", " | ".join(cell for cell in cells if cell)
        elif local in _ODT_CONTAINERS or name == "table:table":
            yield from _odt_items(child, teletype)
