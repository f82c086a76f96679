"""Builders of sample documents as bytes, for the tests and the demo.

``sample_documents()`` returns good documents on clearly different topics, each with a
distinctive topic sentence that survives text extraction; ``bad_documents()`` returns
input the pipeline must reject with a processing error.
"""

from __future__ import annotations

import csv
import html
import io
import json
import zipfile
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from docx import Document
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

PDF_MIME = "application/pdf"
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
# A TrueType font for images of text (Debian fonts-dejavu-core, in SYSTEM_PACKAGES).
TEXT_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


class SampleDocument(NamedTuple):
    """A document to upload: name, MIME type, content and a sentence it is about."""

    file_name: str
    mime_type: str
    data: bytes
    topic_sentence: str


class BadDocument(NamedTuple):
    """A document the pipeline must reject, and why."""

    file_name: str
    mime_type: str
    data: bytes
    problem: str


# --- builders -----------------------------------------------------------------------------


def make_txt(text: str) -> bytes:
    """UTF-8 plain text."""
    return text.encode("utf-8")


def make_md(text: str) -> bytes:
    """UTF-8 Markdown."""
    return text.encode("utf-8")


def make_csv(rows: list[list[str]]) -> bytes:
    """UTF-8 CSV; the first row is conventionally the header."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def make_json(obj: Any) -> bytes:
    """Pretty-printed UTF-8 JSON."""
    return json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8")


def make_html(title: str, body_text: str) -> bytes:
    """A small HTML page: ``title`` as <title> and <h1>, blank-line separated <p>s.

    It also carries a <style> and a <script> whose content must not be extracted.
    """
    parts = [part.strip() for part in body_text.split("\n\n") if part.strip()]
    paragraphs = "\n".join(f"    <p>{html.escape(part)}</p>" for part in parts)
    page = f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>{html.escape(title)}</title>
    <style>body {{ font-family: sans-serif; }}</style>
    <script>window.analyticsId = "tracking-snippet";</script>
  </head>
  <body>
    <h1>{html.escape(title)}</h1>
{paragraphs}
  </body>
</html>
"""
    return page.encode("utf-8")


def make_pdf(text: str) -> bytes:
    """A PDF (fpdf2, core Helvetica) whose text pypdf can extract.

    Core fonts are latin-1 only: keep ``text`` ASCII. Blank lines separate paragraphs.
    """
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for paragraph in text.split("\n\n"):
        pdf.multi_cell(0, 6, paragraph.strip(), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
    return bytes(pdf.output())


def make_docx(paragraphs: list[str], table_rows: list[list[str]] | None = None) -> bytes:
    """A Word document with ``paragraphs`` and, optionally, a table of ``table_rows``."""
    document = Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table_rows:
        table = document.add_table(rows=len(table_rows), cols=max(map(len, table_rows)))
        for row, values in zip(table.rows, table_rows, strict=False):
            for cell, value in zip(row.cells, values, strict=False):
                cell.text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_pptx(slides: list[dict[str, Any]]) -> bytes:
    """A PowerPoint deck: per slide a ``title``, ``bullets`` (a body placeholder), optional
    ``table`` rows, ``group`` texts (text boxes inside one group shape) and ``notes``."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    for spec in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
        slide.shapes.title.text = spec["title"]
        slide.placeholders[1].text_frame.text = "\n".join(spec.get("bullets", []))
        if rows := spec.get("table"):
            table = slide.shapes.add_table(len(rows), len(rows[0]), Inches(1), Inches(4),
                                           Inches(8), Inches(2)).table
            for r, values in enumerate(rows):
                for c, value in enumerate(values):
                    table.cell(r, c).text = value
        if texts := spec.get("group"):
            group = slide.shapes.add_group_shape()
            for n, text in enumerate(texts):
                box = group.shapes.add_textbox(Inches(1 + 3 * n), Inches(6), Inches(3),
                                               Inches(1))
                box.text_frame.text = text
        if notes := spec.get("notes"):
            slide.notes_slide.notes_text_frame.text = notes
    buffer = io.BytesIO()
    deck.save(buffer)
    return buffer.getvalue()


def make_xlsx(sheets: dict[str, list[list[Any]]]) -> bytes:
    """An Excel workbook, one sheet per item (rows as given; a str starting with "=" is a
    formula, saved without a cached value since openpyxl does not compute formulas)."""
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def make_odt(items: list[tuple[str, Any]]) -> bytes:
    """An OpenDocument text from ("h", heading), ("p", paragraph), ("list", [items]) and
    ("table", rows) items, in order."""
    from odf.opendocument import OpenDocumentText
    from odf.table import Table, TableCell, TableColumn, TableRow
    from odf.text import H, List, ListItem, P

    document = OpenDocumentText()
    for kind, value in items:
        if kind == "h":
            document.text.addElement(H(outlinelevel=1, text=value))
        elif kind == "p":
            document.text.addElement(P(text=value))
        elif kind == "list":
            bullets = List()
            for item in value:
                entry = ListItem()
                entry.addElement(P(text=item))
                bullets.addElement(entry)
            document.text.addElement(bullets)
        else:
            table = Table(name=f"Table{len(document.text.childNodes)}")
            table.addElement(TableColumn(numbercolumnsrepeated=max(map(len, value))))
            for values in value:
                row = TableRow()
                for text in values:
                    cell = TableCell()
                    cell.addElement(P(text=text))
                    row.addElement(cell)
                table.addElement(row)
            document.text.addElement(table)
    buffer = io.BytesIO()
    document.write(buffer)
    return buffer.getvalue()


def make_rtf(paragraphs: list[str]) -> bytes:
    """An RTF document (cp1252; other characters as \\uN escapes), one \\par per paragraph."""

    def escape(text: str) -> str:
        out = []
        for char in text:
            if char in "\\{}":
                out.append("\\" + char)
            elif ord(char) < 128:
                out.append(char)
            elif char.encode("cp1252", "ignore"):
                out.append(f"\\'{char.encode('cp1252')[0]:02x}")
            else:
                out.append(f"\\u{ord(char) if ord(char) < 32768 else ord(char) - 65536}?")
        return "".join(out)

    body = "\n".join(f"{{\\pard {escape(p)}\\par}}" for p in paragraphs)
    return ("{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0\\fswiss Helvetica;}}"
            f"{{\\info{{\\title metadata not text}}}}\\f0\\fs22\n{body}\n}}").encode("ascii")


def make_epub(title: str, chapters: list[tuple[str, str]]) -> bytes:
    """An EPUB 3 book: one XHTML file per (heading, paragraphs) chapter, blank-line separated
    paragraphs; a "## " paragraph becomes an <h2>. The manifest lists the chapters in reverse,
    so only the spine gives the reading order."""
    files = {}
    for number, (heading, text) in enumerate(chapters, start=1):
        parts = []
        for part in (p.strip() for p in text.split("\n\n") if p.strip()):
            parts.append(f"<h2>{html.escape(part[3:])}</h2>" if part.startswith("## ")
                         else f"<p>{html.escape(part)}</p>")
        files[f"text/chapter{number}.xhtml"] = (
            '<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
            f"<head><title>{html.escape(heading)}</title></head><body>"
            f"<h1>{html.escape(heading)}</h1>{''.join(parts)}</body></html>"
        )
    manifest = "".join(f'<item id="c{n}" href="{name}" media-type="application/xhtml+xml"/>'
                       for n, name in reversed(list(enumerate(files, start=1))))
    spine = "".join(f'<itemref idref="c{n}"/>' for n in range(1, len(files) + 1))
    opf = (
        '<?xml version="1.0" encoding="utf-8"?>\n<package xmlns="http://www.idpf.org/2007/opf" '
        'version="3.0" unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/'
        f'1.1/"><dc:identifier id="id">sample</dc:identifier><dc:title>{html.escape(title)}'
        f"</dc:title></metadata><manifest>{manifest}</manifest><spine>{spine}</spine></package>"
    )
    container = (
        '<?xml version="1.0"?>\n<container version="1.0" xmlns="urn:oasis:names:tc:opendocument'
        ':xmlns:container"><rootfiles><rootfile full-path="OEBPS/content.opf" '
        'media-type="application/oebps-package+xml"/></rootfiles></container>'
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        book.writestr("META-INF/container.xml", container)
        book.writestr("OEBPS/content.opf", opf)
        for name, page in files.items():
            book.writestr(f"OEBPS/{name}", page)
    return out.getvalue()


def make_eml(subject: str, body: str, attachments: Sequence[tuple[str, str, bytes]] = (),
             html_body: str | None = None, sender: str = "Dana Office <dana@example.com>",
             to: str = "all-staff@example.com") -> bytes:
    """An RFC 5322 message: a text body (plus an HTML alternative when given) and
    (file name, MIME type, bytes) attachments."""
    from email.message import EmailMessage
    from email.utils import format_datetime

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Date"] = format_datetime(datetime(2025, 3, 3, 9, 30, tzinfo=UTC))
    if body:
        message.set_content(body)
    if html_body:
        if body:
            message.add_alternative(html_body, subtype="html")
        else:
            message.set_content(html_body, subtype="html")
    for name, mime, data in attachments:
        maintype, subtype = mime.split("/", 1)
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(message)


def make_msg(subject: str, body: str, attachments: Sequence[tuple[str, bytes]] = (),
             sender: tuple[str, str] = ("Sam Security", "sam@example.com"),
             to: str = "IT Operations") -> bytes:
    """An Outlook .msg (a compound file, see :mod:`devtools.cfb`) with Unicode properties and
    (file name, bytes) attachments."""
    from devtools.cfb import write_cfb

    def unicode(text: str) -> bytes:
        return text.encode("utf-16-le")

    headers = f"Date: Mon, 03 Mar 2025 09:30:00 +0000\r\nSubject: {subject}\r\n\r\n"
    streams = {
        "__properties_version1.0": b"\0" * 32,  # the top-level property header
        "__substg1.0_0037001F": unicode(subject),
        "__substg1.0_0C1A001F": unicode(sender[0]),
        "__substg1.0_0C1F001F": unicode(sender[1]),
        "__substg1.0_0E04001F": unicode(to),
        "__substg1.0_007D001F": unicode(headers),
        "__substg1.0_1000001F": unicode(body),
    }
    for number, (name, data) in enumerate(attachments):
        storage = f"__attach_version1.0_#{number:08X}/"
        streams[storage + "__properties_version1.0"] = b"\0" * 8
        streams[storage + "__substg1.0_3707001F"] = unicode(name)
        streams[storage + "__substg1.0_37010102"] = data
    return write_cfb(streams)


def make_xml(root: str, records: list[dict[str, str]], record: str = "record") -> bytes:
    """``<root><record id="1"><key>value</key>...</record>...</root>`` as UTF-8 XML."""
    rows = "".join(
        f'  <{record} id="{n}">' + "".join(f"<{k}>{html.escape(v)}</{k}>" for k, v in r.items())
        + f"</{record}>\n" for n, r in enumerate(records, start=1))
    return f'<?xml version="1.0" encoding="utf-8"?>\n<{root}>\n{rows}</{root}>\n'.encode()
def text_image(text: str, *, font_size: int = 40, width: int = 1700) -> Image.Image:
    """A white grayscale page with ``text`` in black (DejaVu Sans), wrapped to ``width``.

    At the defaults it looks like an A4 line of 12 pt text scanned at about 200 dpi, which
    Tesseract reads word for word. Blank lines separate paragraphs.
    """
    font = ImageFont.truetype(TEXT_FONT, font_size)
    margin, line_height = font_size * 2, int(font_size * 1.5)
    lines: list[str] = []
    for paragraph in text.split("\n\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}".strip()
            if line and font.getlength(candidate) > width - 2 * margin:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines += [line, ""]
    image = Image.new("L", (width, 2 * margin + line_height * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((margin, margin + number * line_height), line, font=font, fill=0)
    return image


def make_png_of_text(text: str) -> bytes:
    """A PNG image of ``text`` (no text layer: only OCR reads it)."""
    return image_bytes(text_image(text), "PNG")


def make_jpeg_of_text(text: str) -> bytes:
    """A JPEG photo-like image of ``text``."""
    return image_bytes(text_image(text).convert("RGB"), "JPEG", quality=85)


def make_tiff_of_pages(pages: list[str]) -> bytes:
    """A multi-page TIFF (one frame per page), as a fax or a document scanner makes."""
    first, *rest = [text_image(page) for page in pages]
    return image_bytes(first, "TIFF", save_all=True, append_images=rest,
                        compression="tiff_deflate")


def make_scanned_pdf(pages: list[str], dpi: int = 200) -> bytes:
    """An image-only PDF, one scanned page per item of ``pages``: it has no text layer."""
    first, *rest = [text_image(page) for page in pages]
    return image_bytes(first, "PDF", save_all=True, append_images=rest, resolution=dpi)


def make_mixed_pdf(pages: list[str], scanned: set[int]) -> bytes:
    """A PDF whose pages (0-based) in ``scanned`` are images of their text, the others text."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    for index, text in enumerate(pages):
        pdf.add_page()
        if index in scanned:
            pdf.image(text_image(text), x=0, y=0, w=pdf.w)
        else:
            pdf.set_font("Helvetica", size=11)
            pdf.multi_cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def make_image_bomb(pixels: int = 100_000_000) -> bytes:
    """A PNG that is tiny on disk but declares ``pixels`` pixels (a decompression bomb)."""
    side = int(pixels**0.5) + 1
    return image_bytes(Image.new("1", (side, side), 1), "PNG", optimize=True)


def image_bytes(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def make_corrupt_pdf() -> bytes:
    """Starts like a PDF but is truncated garbage, so pypdf cannot read it."""
    return (
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
        b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R\n"
        b"\x00\x17\x8f\xfe garbage garbage \xba\xad\xf0\x0d stream\nx\x9c\xcb\x48\xcd"
    )


def make_docx_bomb(inflated_bytes: int = 150 * 1024 * 1024) -> bytes:
    """A valid-looking .docx whose ``word/document.xml`` inflates to ``inflated_bytes``.

    A normal python-docx document whose only paragraph holds one run of repeated text, so
    the XML stays well-formed; deflated at level 9 the archive is about 1/1000 of
    ``inflated_bytes`` (about 190 KB for the default 150 MB). The member sizes are declared
    truthfully: it is the declared total that a zip-size check must reject.
    """
    marker = "ZIP-BOMB-FILLER"
    document = Document()
    document.add_paragraph(marker)
    buffer = io.BytesIO()
    document.save(buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    head, tail = source.read("word/document.xml").split(marker.encode("ascii"))
    filler_bytes = max(inflated_bytes - len(head) - len(tail), 0)
    chunk = b"la " * (1024 * 1024 // 3)  # a 3-byte period compresses about 1000:1

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for info in source.infolist():
            if info.filename != "word/document.xml":
                archive.writestr(info.filename, source.read(info))
                continue
            with archive.open(info.filename, "w") as member:  # a str name: level 9 applies
                member.write(head)
                left = filler_bytes
                while left > 0:
                    piece = chunk[:left]
                    member.write(piece)
                    left -= len(piece)
                member.write(tail)
    return out.getvalue()


def make_pdf_bomb(inflated_bytes: int = 80_000_000) -> bytes:
    """A one-page PDF whose content stream inflates to ``inflated_bytes`` (a ~120 KB file).

    The default is above pypdf's 75 MB ``zlib_maximum_output_length``, so reading the page's
    text trips pypdf's ``LimitReachedError``. The page has a font resource and text
    operators, so pypdf really inflates the stream when extracting text.
    """
    operators = b"BT ET\n" * (1024 * 1024 // 6)
    compressor = zlib.compressobj(9)
    parts = []
    left = inflated_bytes
    while left > 0:
        piece = operators[:left]
        parts.append(compressor.compress(piece))
        left -= len(piece)
    parts.append(compressor.flush())
    content = b"".join(parts)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%b\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    pdf = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n%b\nendobj\n" % (number, body)
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(pdf)


# --- sample content -----------------------------------------------------------------------

TRAVEL_SENTENCE = (
    "Employees must submit travel expense claims within 30 days of returning from a trip."
)
TRAVEL_POLICY = f"""Travel Expense Policy

{TRAVEL_SENTENCE} Claims older than 30 days need written approval from a department head \
and are paid in the following payroll cycle at the earliest. Every claim is filed in the \
expenses portal and must list the purpose of the trip, the client or project code, and the \
dates of travel.

Flights: economy class is the default for all flights shorter than six hours. Premium economy \
may be booked for longer flights, and business class only with prior approval from the chief \
financial officer. Book flights through the company travel agent at least fourteen days in \
advance whenever possible; late bookings must be justified in the claim.

Hotels: the nightly hotel allowance is 180 euros in capital cities and 130 euros elsewhere, \
breakfast included. Staying with friends or family is allowed, and a flat allowance of 40 \
euros per night is then paid instead of the hotel cost. Minibar items, in-room movies and \
laundry for trips shorter than five nights are not reimbursed.

Meals: the daily meal allowance is 55 euros for a full day away and 25 euros for a half day. \
Alcohol is not reimbursed unless it is part of a client dinner approved in advance. Keep \
itemised receipts for every meal; a card statement alone is not a receipt.

Ground transport: public transport and airport trains are preferred. Taxis and ride-hailing \
are reimbursed when no reasonable public option exists, for example late at night or when \
carrying heavy equipment. Rental cars need approval and must be returned with a full tank; \
refuelling charges added by the rental company are not reimbursed.

Private cars: using your own car for business trips is reimbursed at 0.30 euros per kilometre, \
plus parking and tolls. Log the start and end address of each journey in the claim. The \
kilometre rate already covers fuel, insurance and wear, so fuel receipts are not reimbursed.

Travel abroad: trips outside the European Union need a security briefing from the travel desk \
and proof of travel insurance, which the company provides free of charge. Foreign currency \
expenses are converted at the rate on the card statement; cash withdrawals are converted at \
the official rate on the day of withdrawal.

Receipts: photograph every receipt on the day it is issued and attach it to the claim. Lost \
receipts can be replaced by a signed declaration at most twice per calendar year. The finance \
team audits a random ten percent of claims each quarter and may ask for original documents.

Questions about this policy go to the finance team in the #ask-finance channel.
"""

ONBOARDING_SENTENCE = (
    "New engineers receive their laptop on the first day and must enable full-disk "
    "encryption before cloning any repository."
)
ONBOARDING_PARAGRAPHS = [
    "Onboarding Guide for New Engineers",
    ONBOARDING_SENTENCE,
    "The IT desk on the second floor hands out laptops from 9:00. Bring a photo ID. The laptop "
    "comes with the standard image: the password manager, the VPN client and the chat app are "
    "preinstalled. Sign in to the password manager first; every other credential lives there.",
    "During the first week your onboarding buddy pairs with you to set up the development "
    "environment: install the toolchain with the bootstrap script, request read access to the "
    "main repositories, and run the test suite locally once before opening your first pull "
    "request.",
    "By the end of the second week you should have shipped one small change to production, "
    "attended the architecture overview session, and joined the on-call shadow rotation.",
]
ONBOARDING_TABLE = [
    ["Day", "Task"],
    ["Day 1", "Laptop pickup and disk encryption"],
    ["Day 2", "Repository access and bootstrap script"],
    ["Day 5", "First pull request reviewed by your buddy"],
]

COFFEE_SENTENCE = (
    "The office coffee machine is descaled every Friday afternoon by the facilities team."
)
COFFEE_PAGE = f"""{COFFEE_SENTENCE} Please do not use the machine between 15:00 and 15:30 on \
Fridays while the descaling program runs.

Daily cleaning: whoever makes the last coffee of the day empties the drip tray and the grounds \
container, rinses the milk frother with the steam wand, and wipes the nozzle with a damp cloth.

Weekly cleaning: on Mondays the kitchen rota volunteer runs the rinse program with a cleaning \
tablet. The rota is pinned to the fridge door.

If the display shows an error code, switch the machine off, wait one minute and switch it back \
on. If the error persists, report it in the #facilities channel instead of opening the machine.
"""

PAYMENTS_SENTENCE = (
    "To restart the payments service, drain traffic from the node in the load balancer "
    "before stopping the payments-api process."
)
PAYMENTS_RUNBOOK = f"""# Runbook: restarting the payments service

{PAYMENTS_SENTENCE}

## When to restart

- Error rate on `/v1/charges` above 5% for more than five minutes.
- Memory usage of `payments-api` above 90% and still climbing.

## Steps

1. Announce the restart in the #incidents channel.
2. Mark the node as draining in the load balancer and wait until active connections reach zero.
3. Run `sudo systemctl restart payments-api` on the node.
4. Check `/healthz` returns 200 and the queue consumer lag is back under 100 messages.
5. Put the node back into rotation and repeat for the next node, one node at a time.

## Rollback

If the service does not come back healthy within ten minutes, page the payments on-call engineer
and restore the previous release with the deploy tool.
"""

ROTA_SENTENCE = "The support on-call rota rotates every Monday at 09:00 Central European Time."
ROTA_ROWS = [
    ["week", "primary", "secondary", "notes"],
    ["2025-W01", "Alice Martin", "Bruno Costa", ROTA_SENTENCE],
    ["2025-W02", "Bruno Costa", "Chiara Rossi", "Escalate billing tickets to finance."],
    ["2025-W03", "Chiara Rossi", "Dmitri Ivanov", "Holiday cover arranged with Alice."],
    ["2025-W04", "Dmitri Ivanov", "Alice Martin", "Pager app update due on Tuesday."],
]

FAQ_SENTENCE = "The Acme Widget Pro battery lasts up to 14 hours on a single charge."
PRODUCT_FAQ = {
    "product": "Acme Widget Pro",
    "faq": [
        {"question": "How long does the battery last?", "answer": FAQ_SENTENCE},
        {
            "question": "Is the widget waterproof?",
            "answer": "It is splash resistant (IPX4) but must not be submerged.",
        },
        {
            "question": "What is the warranty period?",
            "answer": "Two years from the date of purchase, covering manufacturing defects.",
        },
    ],
    "support": {"email": "support@example.com", "hours": "Monday to Friday, 8:00-18:00"},
    "version": 3,
}

PARKING_SENTENCE = (
    "Parking permits for the staff car park are renewed every January through the facilities "
    "portal."
)
PARKING_NOTE = f"""Parking permits

{PARKING_SENTENCE} A permit costs 25 euros per month and is deducted from your salary.

Permits are tied to one licence plate. To change the car, update the plate in the portal at
least two working days before you first park the new car.

Visitors park on level -1 in the bays marked "Guest"; reception issues a day pass on arrival.
"""


SALES_SENTENCE = (
    "The Nordic sales team must close 4.2 million euros of new business in the third quarter."
)
SALES_DECK = [
    {"title": "Q3 Sales Kickoff", "bullets": ["Welcome to the third-quarter kickoff",
                                               "Agenda: targets, pricing, incentives"]},
    {"title": "Regional targets", "bullets": [SALES_SENTENCE],
     "table": [["Region", "Target"], ["Nordics", "4.2 M EUR"], ["Benelux", "3.1 M EUR"]],
     "notes": "Remind the Benelux team that partner deals count at half value."},
    {"title": "Incentives", "bullets": ["Accelerators start at 110% of target"],
     "group": ["President's club trip to Lisbon", "Top seller wins an extra holiday week"]},
]

PRICE_SENTENCE = "The Orion X2 standing desk costs 649 euros per unit, delivery included."
PRICE_SHEETS: dict[str, list[list[Any]]] = {
    "Desks": [
        ["Product", "Unit price (EUR)", "Notes"],
        ["Orion X2 standing desk", 649, PRICE_SENTENCE],
        ["Orion X1 fixed desk", 389, "Oak or white top."],
        [None, None, None],
        ["Total", "=SUM(B2:B3)", None],
    ],
    "Chairs": [
        ["Product", "Unit price (EUR)"],
        ["Vega ergonomic chair", 299],
    ],
}

FIRE_SENTENCE = (
    "Fire wardens check every emergency exit on the first Tuesday of each month."
)
FIRE_PROCEDURE: list[tuple[str, Any]] = [
    ("h", "Fire safety procedure"),
    ("p", FIRE_SENTENCE),
    ("h", "When the alarm sounds"),
    ("list", ["Leave by the nearest marked exit.", "Do not use the lifts.",
              "Gather at assembly point B in the north car park."]),
    ("h", "Wardens per floor"),
    ("table", [["Floor", "Warden"], ["Ground", "Lena Berg"], ["First", "Omar Haddad"]]),
]

WIFI_SENTENCE = (
    "The guest Wi-Fi password changes every Sunday night and is printed on the card at the "
    "reception desk."
)
WIFI_NOTE = [
    "Visitor Wi-Fi at the caf\u00e9 and the offices",
    WIFI_SENTENCE,
    "Staff devices use the {corporate} network with their own credentials, never the guest one.",
]

HISTORY_SENTENCE = (
    "Northwind was founded in 1987 in a garage in Rotterdam by two marine engineers."
)
HISTORY_CHAPTERS = [
    ("The early years", f"{HISTORY_SENTENCE}\n\nTheir first product was a bilge pump "
                        "controller sold to fishing cooperatives."),
    ("Growth", "## Going abroad\n\nThe first foreign office opened in Hamburg in 1995.\n\n"
               "## Going public\n\nNorthwind listed on the Amsterdam exchange in 2004."),
]

ALL_HANDS_SENTENCE = (
    "The quarterly all-hands meeting moves to the Atrium auditorium on 12 March at 16:00."
)
AGENDA_SENTENCE = "Agenda item three covers the new parental leave policy of sixteen weeks."

BADGE_SENTENCE = (
    "Access badges for the server room are reviewed by the security team every quarter."
)
BADGE_CHECKLIST = [["step", "owner"], ["Export badge log", "Security"],
                   ["Revoke badges of leavers within 24 hours", "IT Operations"]]

FLEET_SENTENCE = "Delivery vans get new winter tyres every November at the Eastside depot."
FLEET_RECORDS = [
    {"plate": "KB-101-X", "model": "Electric cargo van", "service": FLEET_SENTENCE},
    {"plate": "KB-204-Y", "model": "Compact hatchback", "service": "Annual inspection in May."},
]

PPTX_MIME = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ODT_MIME = "application/vnd.oasis.opendocument.text"


def format_samples() -> list[SampleDocument]:
    """One document per format added in issue 12 (office, e-book, mail, XML)."""
    eml_attachments = [
        ("agenda.txt", "text/plain", make_txt(f"All-hands agenda\n\n{AGENDA_SENTENCE}")),
        ("floorplan.bin", "application/octet-stream", b"\x00\x01binary"),
    ]
    return [
        SampleDocument("q3-sales-kickoff.pptx", PPTX_MIME, make_pptx(SALES_DECK), SALES_SENTENCE),
        SampleDocument("furniture-price-list.xlsx", XLSX_MIME, make_xlsx(PRICE_SHEETS),
                       PRICE_SENTENCE),
        SampleDocument("fire-safety-procedure.odt", ODT_MIME, make_odt(FIRE_PROCEDURE),
                       FIRE_SENTENCE),
        SampleDocument("visitor-wifi.rtf", "application/rtf", make_rtf(WIFI_NOTE),
                       WIFI_SENTENCE),
        SampleDocument("northwind-history.epub", "application/epub+zip",
                       make_epub("Northwind: a history", HISTORY_CHAPTERS), HISTORY_SENTENCE),
        SampleDocument("all-hands-moved.eml", "message/rfc822",
                       make_eml("All-hands moves to the Atrium",
                                f"Hello everyone,\n\n{ALL_HANDS_SENTENCE}\n\nSee the agenda.",
                                eml_attachments), ALL_HANDS_SENTENCE),
        SampleDocument("server-room-badges.msg", "application/vnd.ms-outlook",
                       make_msg("Quarterly badge review", f"Hi all,\n\n{BADGE_SENTENCE}",
                                [("checklist.csv", make_csv(BADGE_CHECKLIST))]),
                       BADGE_SENTENCE),
        SampleDocument("fleet-maintenance.xml", "application/xml",
                       make_xml("fleet", FLEET_RECORDS, "vehicle"), FLEET_SENTENCE),
    ]  # fmt: skip

LEASE_SENTENCE = "The office lease for the Harbour Street building ends on 30 June 2031."
LEASE_PAGES = [
    f"Lease agreement (scanned copy)\n\n{LEASE_SENTENCE} The tenant may extend it once by "
    "five years with six months notice.",
    "The monthly rent is 18,400 euros, due on the first working day of each month.",
]
RELEASE_SENTENCE = "The mobile app release train leaves every second Thursday at noon."
GARDEN_SENTENCE = "The rooftop garden is watered by the facilities team every Tuesday morning."
WAREHOUSE_PAGES = [
    "The Rotterdam warehouse accepts pallet deliveries between 06:00 and 14:00 only.",
    "Drivers must book a loading dock slot through the logistics portal a day ahead.",
]


def sample_documents() -> list[SampleDocument]:
    """Good documents on clearly different topics (the PDF is long enough to chunk)."""
    return [
        SampleDocument("travel-expense-policy.pdf", PDF_MIME, make_pdf(TRAVEL_POLICY),
                       TRAVEL_SENTENCE),
        SampleDocument("engineer-onboarding.docx", DOCX_MIME,
                       make_docx(ONBOARDING_PARAGRAPHS, ONBOARDING_TABLE), ONBOARDING_SENTENCE),
        SampleDocument("coffee-machine-cleaning.html", "text/html",
                       make_html("Coffee machine cleaning schedule", COFFEE_PAGE),
                       COFFEE_SENTENCE),
        SampleDocument("payments-restart-runbook.md", "text/markdown",
                       make_md(PAYMENTS_RUNBOOK), PAYMENTS_SENTENCE),
        SampleDocument("support-oncall-rota.csv", "text/csv", make_csv(ROTA_ROWS),
                       ROTA_SENTENCE),
        SampleDocument("product-faq.json", "application/json", make_json(PRODUCT_FAQ),
                       FAQ_SENTENCE),
        SampleDocument("parking-permits.txt", "text/plain", make_txt(PARKING_NOTE),
                       PARKING_SENTENCE),
        *format_samples(),
        # No text layer: these are read by OCR.
        SampleDocument("office-lease-scan.pdf", PDF_MIME, make_scanned_pdf(LEASE_PAGES),
                       LEASE_SENTENCE),
        SampleDocument("release-whiteboard.png", "image/png", make_png_of_text(
            f"Release planning\n\n{RELEASE_SENTENCE} Hotfixes ship any day."), RELEASE_SENTENCE),
        SampleDocument("rooftop-garden-notice.jpg", "image/jpeg", make_jpeg_of_text(
            f"Notice\n\n{GARDEN_SENTENCE} Please leave the gate closed."), GARDEN_SENTENCE),
        SampleDocument("warehouse-deliveries-fax.tiff", "image/tiff",
                       make_tiff_of_pages(WAREHOUSE_PAGES), WAREHOUSE_PAGES[0]),
    ]  # fmt: skip


def bad_documents() -> list[BadDocument]:
    """Documents that must fail with a processing error."""
    return [
        BadDocument("scanned-contract.pdf", PDF_MIME, make_corrupt_pdf(), "corrupt PDF"),
        BadDocument("diagram.exe", "application/octet-stream", b"MZ\x90\x00\x03\x00\x00\x00",
                    "unsupported file type"),
        BadDocument("empty-notes.txt", "text/plain", b"", "empty file"),
    ]  # fmt: skip
