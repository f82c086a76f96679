"""Extraction speed per format added in issue 12: files/s on generated samples.

Two sizes per format: the test sample (``devtools.samples.format_samples``) and a larger
one (about 50-100 KB of text: 40 slides, 2,000 rows, 300 paragraphs, ...). Each file is
extracted with ``extract_blocks`` ``--repeat`` times; the best of three rounds is printed.
Not part of ``make test``.

    .venv/bin/python bench/formats.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

from devtools import samples
from ingest.pipeline.extract import extract_blocks

_WORDS = ["invoice", "delivery", "warehouse", "policy", "customer", "quarter", "budget",
          "contract", "supplier", "meeting", "report", "schedule"]


def _sentence(n: int) -> str:
    words = [_WORDS[(n * 7 + i * 3) % len(_WORDS)] for i in range(14)]
    return f"Item {n}: " + " ".join(words) + "."


def large_samples() -> dict[str, bytes]:
    """One larger document per format, each about 50-100 KB of text."""
    paragraphs = [_sentence(n) for n in range(300)]
    deck = [{"title": f"Slide {n}", "bullets": paragraphs[n * 5:n * 5 + 5],
             "notes": _sentence(1000 + n)} for n in range(40)]
    rows = [["Product", "Price", "Notes"]] + [[f"P{n}", n * 1.5, _sentence(n)]
                                              for n in range(2000)]
    odt = [item for n in range(30) for item in
           [("h", f"Section {n}"), *(("p", p) for p in paragraphs[n * 10:n * 10 + 10])]]
    chapters = [(f"Chapter {n}", "\n\n".join(paragraphs[n * 15:n * 15 + 15])) for n in range(20)]
    body = "\n\n".join(paragraphs)
    attachment = samples.make_docx(paragraphs[:100])
    return {
        "large.pptx": samples.make_pptx(deck),
        "large.xlsx": samples.make_xlsx({"Prices": rows}),
        "large.odt": samples.make_odt(odt),
        "large.rtf": samples.make_rtf(paragraphs),
        "large.epub": samples.make_epub("Large", chapters),
        "large.eml": samples.make_eml("Large", body, [("a.docx", samples.DOCX_MIME, attachment)]),
        "large.msg": samples.make_msg("Large", body, [("a.docx", attachment)]),
        "large.xml": samples.make_xml("items", [{"name": f"P{n}", "text": p}
                                                for n, p in enumerate(paragraphs * 4)]),
    }


def files_per_second(name: str, data: bytes, repeat: int) -> tuple[float, int]:
    """Best of three rounds of ``repeat`` extractions; also the extracted characters."""
    chars = sum(len(b.text) for b in extract_blocks(data, name))
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for _ in range(repeat):
            extract_blocks(data, name)
        best = min(best, time.perf_counter() - began)
    return repeat / best, chars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    small = {doc.file_name: doc.data for doc in samples.format_samples()}
    large = large_samples()
    print(f"{'format':<7} {'sample':>8} {'files/s':>9}  {'large':>9} {'chars':>8} "
          f"{'files/s':>9} {'MB text/s':>9}")
    for (small_name, small_data), (large_name, large_data) in zip(small.items(), large.items(),
                                                                  strict=True):
        small_rate, _ = files_per_second(small_name, small_data, args.repeat)
        large_rate, chars = files_per_second(large_name, large_data, max(args.repeat // 4, 3))
        print(f"{large_name.rsplit('.', 1)[1]:<7} {len(small_data) / 1024:>6.1f}KB "
              f"{small_rate:>9.1f}  {len(large_data) / 1024:>7.1f}KB {chars:>8,} "
              f"{large_rate:>9.1f} {large_rate * chars / 1e6:>9.2f}")


if __name__ == "__main__":
    main()
