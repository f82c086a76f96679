"""EPUB: the zip read directly (ebooklib is AGPL), chapters in spine order.

META-INF/container.xml names the package document (OPF); its manifest maps ids to files and
its spine gives the reading order. Each (X)HTML chapter goes through
:func:`~ingest.pipeline.formats.text_formats.html_sections` (headings become sections); the
chapter's position in the spine is its page. The zip passes :func:`check_zip_package` first,
and the XML is parsed without entities, DTDs or network.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from urllib.parse import unquote

from lxml import etree

from ingest.errors import ProcessingError
from ingest.pipeline.formats.base import ZIP_ERRORS, Block, ExtractLimits, check_zip_package
from ingest.pipeline.formats.collect import BlockCollector
from ingest.pipeline.formats.text_formats import html_sections

_CONTAINER = "META-INF/container.xml"
_HTML_TYPES = frozenset({"application/xhtml+xml", "text/html"})
_EPUB_ERRORS: tuple[type[Exception], ...] = (*ZIP_ERRORS, etree.LxmlError)


def extract_epub(data: bytes, limits: ExtractLimits) -> list[Block]:
    """The book's chapters in reading order (page: the chapter's spine position)."""
    check_zip_package(data, "EPUB", limits)
    out = BlockCollector("EPUB", limits)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as book:
            for number, name in enumerate(_spine(book), start=1):
                for block in html_sections(book.read(name), limits, page=number):
                    out.add(block.text, block.section, block.page)
    except _EPUB_ERRORS as exc:
        raise ProcessingError(f"corrupt or unreadable EPUB: {type(exc).__name__}: {exc}") from exc
    return out.blocks


def _xml(data: bytes) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.fromstring(data, parser=parser)


def _spine(book: zipfile.ZipFile) -> list[str]:
    """Zip member names of the spine's (X)HTML items, in reading order."""
    rootfile = _xml(book.read(_CONTAINER)).find(".//{*}rootfile")
    if rootfile is None or not rootfile.get("full-path"):
        raise ProcessingError(f"corrupt or unreadable EPUB: {_CONTAINER} names no package file")
    opf_path = rootfile.get("full-path", "")
    opf = _xml(book.read(opf_path))
    base = posixpath.dirname(opf_path)
    manifest = {
        item.get("id"): (posixpath.normpath(posixpath.join(base, unquote(item.get("href", "")))),
                         item.get("media-type", ""))
        for item in opf.iterfind(".//{*}manifest/{*}item")
    }
    names = []
    for ref in opf.iterfind(".//{*}spine/{*}itemref"):
        name, media_type = manifest.get(ref.get("idref"), ("", ""))
        if name and media_type in _HTML_TYPES:
            names.append(name)
    if not names:
        raise ProcessingError("corrupt or unreadable EPUB: its spine lists no chapters")
    return names
