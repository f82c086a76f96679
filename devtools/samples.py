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
