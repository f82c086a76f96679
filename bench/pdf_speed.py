"""PDF text extraction speed: the old pure-pypdf path against the new PDFium path, and OCR.

Both paths read the same generated PDFs in this one invocation:

- ``pypdf``: what ``extract.py`` did before (``PdfReader`` + ``page.extract_text()``);
- ``new``: :func:`ingest.pipeline.formats.pdf.extract_pdf` as the pipeline runs it (pypdf
  opens the file and inflates streams under its cap, PDFium extracts the text);
- ``pdfium only``: PDFium's text without the pypdf gate, to show what the gate costs.

It also checks the two paths find the same words, and times OCR per scanned page (A4 at
300 dpi) and per image. Not part of ``make test``.

    .venv/bin/python bench/pdf_speed.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import re
import time
from collections.abc import Callable
from contextlib import closing

import pypdfium2 as pdfium
from fpdf import FPDF, FontFace
from pypdf import PdfReader

from devtools.samples import TEXT_FONT, image_bytes, make_png_of_text, text_image
from ingest.pipeline.formats.base import ExtractLimits
from ingest.pipeline.formats.ocr import extract_image
from ingest.pipeline.formats.pdf import extract_pdf

WORDS = (
    "invoice", "delivery", "warehouse", "contract", "clause", "tenant", "landlord", "payment",
    "schedule", "quarterly", "revenue", "margin", "forecast", "customer", "supplier", "pallet",
    "freight", "insurance", "liability", "renewal", "notice", "period", "termination",
    "amendment", "signature", "witness",
)
LIMITS = ExtractLimits(timeout_seconds=0)


def _paragraph(seed: int, words: int = 90) -> str:
    return " ".join(WORDS[(seed * 7 + i * 13) % len(WORDS)] for i in range(words)) + "."


def plain_pdf(pages: int) -> bytes:
    """Pages of running text in a core font (Helvetica), about 500 words a page."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    pdf.set_font("Helvetica", size=10)
    for page in range(pages):
        pdf.add_page()
        for paragraph in range(6):
            pdf.multi_cell(0, 5, _paragraph(page * 6 + paragraph), new_x="LMARGIN",
                           new_y="NEXT")
            pdf.ln(2)
    return bytes(pdf.output())


def report_pdf(pages: int) -> bytes:
    """A report-like layout: an embedded TrueType font (subset, ToUnicode map), headings,
    a running header and footer with page numbers, two columns of text and a table."""
    pdf = FPDF(format="A4")
    pdf.add_font("DejaVu", fname=TEXT_FONT)
    pdf.set_auto_page_break(auto=False)
    for page in range(pages):
        pdf.add_page()
        pdf.set_font("DejaVu", size=8)
        pdf.cell(0, 5, f"Acme Logistics — Annual report 2026 — page {page + 1}",
                 new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", size=14)
        pdf.cell(0, 10, f"{page + 1}. Warehouse operations in region {page % 9}",
                 new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", size=9)
        top = pdf.get_y()
        for column in range(2):
            pdf.set_xy(10 + column * 97, top)
            pdf.multi_cell(92, 4.5, " ".join(_paragraph(page * 4 + column * 2 + n, 60)
                                             for n in range(2)))
        pdf.set_y(top + 110)
        with pdf.table(col_widths=(40, 30, 30, 30), text_align="LEFT",
                       headings_style=FontFace(emphasis=None)) as table:
            table.row(["Site", "Pallets", "Trucks", "On time"])
            for row in range(12):
                table.row([f"Site {page}-{row}", str(1200 + row * 37), str(40 + row),
                           f"{90 + row % 10}.{row}%"])
        pdf.set_y(-15)
        pdf.set_font("DejaVu", size=8)
        pdf.cell(0, 5, f"Page {page + 1} of {pages}", align="C")
    return bytes(pdf.output())


def old_pypdf(data: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(data))
    return [page.extract_text() or "" for page in reader.pages]


def new_path(data: bytes) -> list[str]:
    return [block.text for block in extract_pdf(data, LIMITS)]


def pdfium_only(data: bytes) -> list[str]:
    texts = []
    with closing(pdfium.PdfDocument(data)) as document:
        for index in range(len(document)):
            with closing(document[index]) as page, closing(page.get_textpage()) as textpage:
                texts.append(textpage.get_text_bounded())
    return texts


def best_of(repeat: int, call: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return min(times)


def _words(texts: list[str]) -> list[str]:
    return re.findall(r"\w+", " ".join(texts).lower())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best)")
    args = parser.parse_args()
    corpus = {"plain 10 pages": plain_pdf(10), "plain 100 pages": plain_pdf(100),
              "plain 400 pages": plain_pdf(400), "report 20 pages": report_pdf(20),
              "report 100 pages": report_pdf(100)}
    print(f"{'PDF':<18}{'KB':>7}{'pypdf p/s':>11}{'new p/s':>10}{'pdfium p/s':>12}"
          f"{'new/pypdf':>11}{'same words':>12}")
    total_old = total_new = 0.0
    total_pages = 0
    for name, data in corpus.items():
        pages = len(PdfReader(io.BytesIO(data)).pages)
        old = best_of(args.repeat, lambda d=data: old_pypdf(d))
        new = best_of(args.repeat, lambda d=data: new_path(d))
        raw = best_of(args.repeat, lambda d=data: pdfium_only(d))
        same = _words(old_pypdf(data)) == _words(new_path(data))
        total_old, total_new, total_pages = total_old + old, total_new + new, total_pages + pages
        print(f"{name:<18}{len(data) // 1024:>7}{pages / old:>11.0f}{pages / new:>10.0f}"
              f"{pages / raw:>12.0f}{old / new:>10.1f}x{'yes' if same else 'NO':>12}")
    print(f"{'all':<18}{'':>7}{total_pages / total_old:>11.0f}{total_pages / total_new:>10.0f}"
          f"{'':>12}{total_old / total_new:>10.1f}x")

    # OCR: an A4 page of 10 pt text scanned at 300 dpi (2480 px wide, 42 px letters).
    dense = "\n\n".join(_paragraph(n, 70) for n in range(8))
    page = text_image(dense, font_size=42, width=2480)
    scanned = image_bytes(page, "PDF", save_all=True, append_images=[page, page],
                          resolution=300)
    ocr_pdf = best_of(1, lambda: extract_pdf(scanned, LIMITS)) / 3
    line = _paragraph(1, 40)
    png = make_png_of_text(line)
    ocr_png = best_of(args.repeat, lambda: extract_image(png, LIMITS))
    words = len(dense.split())
    print(f"\nOCR: scanned A4 page at 300 dpi ({words} words, rendered by PDFium): "
          f"{ocr_pdf:.2f} s/page ({1 / ocr_pdf:.2f} pages/s)")
    print(f"OCR: PNG of {len(line.split())} words ({text_image(line).size[0]} px wide): "
          f"{ocr_png:.2f} s/image")


if __name__ == "__main__":
    main()
