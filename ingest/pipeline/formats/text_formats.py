"""RTF (striprtf), XML (lxml, entities never expanded) and HTML split at its headings.

The XML parser resolves no entities, loads no DTD and touches no network, and keeps lxml's
default size limits (``huge_tree=False``): a "billion laughs" or an external-entity file is
read as the text it literally holds, never expanded. :func:`html_sections` reuses
:mod:`ingest.pipeline.extract`'s HTML extractor for EPUB chapters and HTML e-mail bodies.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator

from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning
from lxml import etree
from striprtf.striprtf import rtf_to_text

from ingest.errors import ProcessingError
from ingest.pipeline.formats.base import Block, ExtractLimits, check_chars, join_capped

# --- RTF ----------------------------------------------------------------------------------

_RTF_ERRORS: tuple[type[Exception], ...] = (ValueError, LookupError, OverflowError,
                                            RecursionError)  # bad \u, \'xx or \ansicpg


def extract_rtf(data: bytes, limits: ExtractLimits) -> str:
    """Plain text of an RTF document (striprtf; the code page it declares decodes ``\\'xx``)."""
    if not data.lstrip().startswith(b"{\\rtf"):
        raise ProcessingError("corrupt or unreadable RTF: it does not start with {\\rtf")
    source = data.decode("latin-1")  # RTF is 7-bit; other bytes are escaped as \'xx
    check_chars(len(source), "RTF", limits)  # the text is never longer than its source
    try:
        return rtf_to_text(source, errors="replace")
    except _RTF_ERRORS as exc:
        raise ProcessingError(f"corrupt or unreadable RTF: {type(exc).__name__}: {exc}") from exc


# --- XML ----------------------------------------------------------------------------------

_XML_CONTEXT = 3  # element names kept before a leaf's text: "book.author.name: ..."


def _xml_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


def extract_xml(data: bytes, limits: ExtractLimits) -> str:
    """``path: text`` lines: an element's own text with the names of its last ancestors.

    Attributes follow as ``path@name: value``. Unexpanded entity references contribute no
    text, so an entity bomb yields its literal text (often none) instead of expanding.
    """
    try:
        root = etree.fromstring(data, parser=_xml_parser())
    except etree.XMLSyntaxError as exc:
        raise ProcessingError(f"corrupt or unreadable XML: {exc}") from exc
    if root is None:
        raise ProcessingError("corrupt or unreadable XML: no root element")
    return join_capped(_xml_lines(root), "\n", "XML", limits)


def _xml_lines(root: etree._Element) -> Iterator[str]:
    path: list[str] = []
    for event, element in etree.iterwalk(root, events=("start", "end")):
        if not isinstance(element.tag, str):  # entity references (unexpanded)
            continue
        if event == "end":
            path.pop()
            continue
        path.append(etree.QName(element).localname)
        label = ".".join(path[-_XML_CONTEXT:])
        for name, value in element.attrib.items():
            if value.strip():
                yield f"{label}@{etree.QName(name).localname}: {value.strip()}"
        own = [element.text or ""] + [child.tail or "" for child in element]
        text = " ".join(" ".join(own).split())
        if text:
            yield f"{label}: {text}"


# --- HTML with sections -------------------------------------------------------------------

_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_MARK = "\ue000"  # a private-use character: kept by the HTML extractor (C0 controls are not)
_SPLIT = re.compile(f"{_MARK}(.*?){_MARK}", re.S)


def html_sections(markup: bytes, limits: ExtractLimits, page: int | None = None) -> list[Block]:
    """The visible text of an (X)HTML page as blocks under their heading paths (the HTML
    extractor's), without the ``<head>`` (its title repeats the first heading), on ``page``."""
    from ingest.pipeline.extract import _extract_html  # extract imports this module

    with warnings.catch_warnings():  # XHTML (EPUB) is read leniently as HTML, on purpose
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(markup, "html.parser")
    for head in soup.find_all("head"):
        head.decompose()
    return [Block(b.text, b.section, page) for b in _extract_html(str(soup).encode(), limits)]
