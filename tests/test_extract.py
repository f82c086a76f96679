"""Text extraction per file type (no services needed)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import signal
import struct
import threading
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from pypdf import PdfWriter

from devtools import samples
from ingest.errors import (
    PROCESSING_ERROR,
    RESOURCE_LIMIT,
    PermanentError,
    ProcessingError,
    ResourceLimit,
)
from ingest.pipeline import extract
from ingest.pipeline.extract import (
    DEFAULT_LIMITS,
    SUPPORTED_EXTENSIONS,
    ExtractLimits,
    _deadline,
    extract_blocks,
    extract_text,
)
from ingest.pipeline.formats import ocr as ocr_format
from ingest.pipeline.formats import pdf as pdf_format

SENTENCE = "The quarterly llama census counted 42 llamas in the north paddock."


def _flat(text: str) -> str:
    """Collapse all whitespace so line wrapping (PDF) does not matter."""
    return " ".join(text.split())


def _encrypted_pdf(user_password: str) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(samples.make_pdf(SENTENCE)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _blank_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _zip_without_docx_parts() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "not a word document")
    return buffer.getvalue()


# --- every type round-trips ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "data"),
    [
        ("note.txt", samples.make_txt(f"Intro line.\n\n{SENTENCE}\n")),
        ("readme.md", samples.make_md(f"# Llamas\n\n{SENTENCE}\n")),
        ("census.csv", samples.make_csv([["id", "summary"], ["1", SENTENCE]])),
        ("census.json", samples.make_json({"census": {"summary": SENTENCE}})),
        ("census.html", samples.make_html("Llama census", SENTENCE)),
        ("census.htm", samples.make_html("Llama census", SENTENCE)),
        ("census.pdf", samples.make_pdf(f"Llama census\n\n{SENTENCE}")),
        ("census.docx", samples.make_docx(["Llama census", SENTENCE])),
    ],
)
def test_each_type_round_trips_a_sentence(file_name: str, data: bytes) -> None:
    text = extract_text(data, file_name)
    assert SENTENCE in _flat(text)


@pytest.mark.parametrize("doc", samples.sample_documents(), ids=lambda doc: doc.file_name)
def test_sample_documents_contain_their_topic_sentence(doc: samples.SampleDocument) -> None:
    text = extract_text(doc.data, doc.file_name, doc.mime_type)
    assert doc.topic_sentence in _flat(text)


def test_sample_documents_cover_every_supported_type_but_aliases() -> None:
    extensions = {"." + doc.file_name.rsplit(".", 1)[1] for doc in samples.sample_documents()}
    assert extensions == set(SUPPORTED_EXTENSIONS) - {".htm", ".jpeg", ".tif"}


def test_long_pdf_spans_multiple_lines_and_keeps_all_paragraphs() -> None:
    doc = samples.sample_documents()[0]
    text = extract_text(doc.data, doc.file_name)
    assert len(text) > 2500
    assert "#ask-finance channel" in text  # the last paragraph survives


# --- type detection -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mime_type", "data"),
    [
        ("text/plain", samples.make_txt(SENTENCE)),
        ("text/plain; charset=utf-8", samples.make_txt(SENTENCE)),
        ("text/markdown", samples.make_md(f"## {SENTENCE}")),
        ("text/csv", samples.make_csv([["summary"], [SENTENCE]])),
        ("application/json", samples.make_json([SENTENCE])),
        ("text/html", samples.make_html("Llamas", SENTENCE)),
        ("application/pdf", samples.make_pdf(SENTENCE)),
        ("APPLICATION/PDF", samples.make_pdf(SENTENCE)),
        (samples.DOCX_MIME, samples.make_docx([SENTENCE])),
    ],
)
def test_mime_type_is_used_when_the_name_has_no_extension(mime_type: str, data: bytes) -> None:
    assert SENTENCE in _flat(extract_text(data, "upload", mime_type))


def test_mime_type_is_used_when_the_extension_is_unknown() -> None:
    data = samples.make_pdf(SENTENCE)
    assert SENTENCE in _flat(extract_text(data, "scan.bin", "application/pdf"))


def test_extension_wins_over_mime_type() -> None:
    # A .txt file labelled as PDF is decoded as text, not handed to pypdf.
    assert extract_text(b"plain words", "notes.txt", "application/pdf") == "plain words"


def test_extension_is_case_insensitive() -> None:
    assert SENTENCE in _flat(extract_text(samples.make_pdf(SENTENCE), "SCAN.PDF"))


# --- format details -----------------------------------------------------------------------


def test_text_decoding_handles_bom_and_non_utf8() -> None:
    assert extract_text(b"\xef\xbb\xbfcaf\xc3\xa9 menu", "menu.txt") == "café menu"
    assert extract_text(b"caf\xe9 \x80 menu", "menu.txt") == "café € menu"  # cp1252


def test_normalisation_strips_nuls_and_collapses_blank_lines() -> None:
    text = extract_text(b"one\x00\r\ntwo\r\rthree\n\n\n\n\nfour   \n", "n.txt")
    assert text == "one\ntwo\n\nthree\n\nfour"


def test_csv_rows_are_labelled_with_the_header() -> None:
    data = samples.make_csv([["name", "team"], ["Alice", "Payments"], ["Bob", ""]])
    # A record per row, one field per line; a cell under no header is "column N".
    assert extract_text(data, "people.csv") == "name: Alice\nteam: Payments\n\nname: Bob"
    extra = samples.make_csv([["name"], ["Carol", "Audit"]])
    assert extract_text(extra, "extra.csv") == "name: Carol\ncolumn 2: Audit"


def test_csv_without_data_rows_is_joined_cells() -> None:
    assert extract_text(samples.make_csv([["only", "header"]]), "h.csv") == "only, header"


def test_json_is_flattened_to_paths_of_string_and_number_leaves() -> None:
    data = samples.make_json(
        {"faq": [{"q": "Refunds?", "a": "Within 14 days."}], "n": 3, "ok": True, "x": None}
    )
    text = extract_text(data, "faq.json")
    assert text.splitlines() == ["faq[0].q: Refunds?", "faq[0].a: Within 14 days.", "n: 3"]


def test_json_top_level_string() -> None:
    assert extract_text(b'"just a string"', "s.json") == "just a string"


def test_html_drops_script_style_and_noscript() -> None:
    page = (
        b"<html><head><title>Kitchen</title><style>p { color: red; }</style>"
        b"<script>var secretToken = 'abc';</script></head>"
        b"<body><p>Clean the <b>fridge</b> on Thursdays.</p>"
        b"<noscript>Enable JavaScript</noscript><!-- hidden note --></body></html>"
    )
    text = extract_text(page, "kitchen.html")
    assert "Clean the fridge on Thursdays." in text
    assert "Kitchen" in text
    for hidden in ("color: red", "secretToken", "Enable JavaScript", "hidden note"):
        assert hidden not in text


def test_html_sample_page_drops_its_script_and_style() -> None:
    text = extract_text(samples.make_html("Title", "Body text."), "page.html")
    assert "Body text." in text
    assert "tracking-snippet" not in text
    assert "font-family" not in text


def test_html_blocks_become_separate_lines() -> None:
    text = extract_text(b"<div>first</div><div>second</div><ul><li>a</li><li>b</li></ul>", "x.htm")
    assert [line for line in text.splitlines() if line] == ["first", "second", "a", "b"]


def test_docx_includes_table_cells() -> None:
    data = samples.make_docx(["Rota"], [["Week", "Engineer"], ["W1", "Dana Okafor"]])
    text = extract_text(data, "rota.docx")
    assert "Rota" in text
    assert "W1 | Dana Okafor" in text


def test_pdf_with_a_wrong_page_count_is_read_by_pypdf() -> None:
    """PDFium trusts /Count (3 pages, two of them missing); pypdf walks the page tree."""
    data = samples.make_pdf(SENTENCE).replace(b"/Count 1", b"/Count 3")
    (block,) = extract_blocks(data, "miscounted.pdf")
    assert SENTENCE in _flat(block.text) and block.page == 1


def test_pdf_encrypted_with_empty_password_is_opened() -> None:
    assert SENTENCE in _flat(extract_text(_encrypted_pdf(""), "open.pdf"))


# --- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "mime_type", "data", "message"),
    [
        ("broken.pdf", None, samples.make_corrupt_pdf(), "PDF"),
        ("truncated.pdf", None, samples.make_pdf(SENTENCE)[:300], "PDF"),
        ("not-a-pdf.pdf", None, b"hello, I am not a PDF", "PDF"),
        ("locked.pdf", None, _encrypted_pdf("secret"), "encrypted"),
        ("blank.pdf", None, _blank_pdf(), "no text could be extracted"),
        ("broken.docx", None, b"definitely not a zip file", "DOCX"),
        ("truncated.docx", None, samples.make_docx([SENTENCE])[:200], "DOCX"),
        ("other.docx", None, _zip_without_docx_parts(), "DOCX"),
        ("bad.json", None, b'{"question": "unterminated', "invalid JSON"),
        ("diagram.xyz", None, b"some bytes", "unsupported file type"),
        ("diagram.exe", "application/octet-stream", b"MZ\x90\x00", "unsupported file type"),
        ("no-extension", None, b"some bytes", "unsupported file type"),
        ("slides.key", "application/zip", b"PK\x03\x04", "unsupported file type"),
        ("empty.txt", "text/plain", b"", "no text could be extracted"),
        ("blank.md", None, b"  \n\t\r\n\x00 ", "no text could be extracted"),
        ("empty.json", None, b"{}", "no text could be extracted"),
        ("empty.html", None, b"<html><script>x()</script></html>", "no text could be extracted"),
        ("empty.docx", None, samples.make_docx([]), "no text could be extracted"),
    ],
)
def test_bad_input_raises_processing_error(
    file_name: str, mime_type: str | None, data: bytes, message: str
) -> None:
    with pytest.raises(ProcessingError, match=message) as info:
        extract_text(data, file_name, mime_type)
    assert info.value.category == PROCESSING_ERROR
    assert isinstance(info.value, PermanentError)


@pytest.mark.parametrize("doc", samples.bad_documents(), ids=lambda doc: doc.file_name)
def test_bad_sample_documents_are_rejected(doc: samples.BadDocument) -> None:
    with pytest.raises(ProcessingError) as info:
        extract_text(doc.data, doc.file_name, doc.mime_type)
    assert info.value.category == "processing_error"


def test_library_errors_are_chained() -> None:
    with pytest.raises(ProcessingError) as info:
        extract_text(samples.make_corrupt_pdf(), "broken.pdf")
    assert info.value.__cause__ is not None
    assert not isinstance(info.value.__cause__, ProcessingError)


# --- limits: zip-based formats ------------------------------------------------------------

_MIB = 1024 * 1024


@pytest.fixture(scope="module")
def docx_bomb() -> bytes:
    """About 190 KB that declares (and really holds) 150 MB of ``word/document.xml``."""
    return samples.make_docx_bomb()


def _lie_about_member_size(data: bytes, name: str, declared: int, *, fix_crc: bool) -> bytes:
    """Patch ``name``'s local and central headers to declare ``declared`` bytes.

    With ``fix_crc`` the CRC is also patched to that of the first ``declared`` bytes, so the
    truncated member passes zipfile's CRC check.
    """
    patched = bytearray(data)
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = archive.getinfo(name)
    crc = zlib.crc32(archive.read(name)[:declared]) if fix_crc else info.CRC
    struct.pack_into("<II", patched, info.header_offset + 18, info.compress_size, declared)
    struct.pack_into("<I", patched, info.header_offset + 14, crc)
    encoded = name.encode()
    at = patched.find(b"PK\x01\x02")
    while at != -1:  # central directory entries
        name_length = struct.unpack_from("<H", patched, at + 28)[0]
        if bytes(patched[at + 46 : at + 46 + name_length]) == encoded:
            struct.pack_into("<I", patched, at + 16, crc)
            struct.pack_into("<I", patched, at + 24, declared)
        at = patched.find(b"PK\x01\x02", at + 4)
    return bytes(patched)


def _recompress(data: bytes, method: int) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for info in source.infolist():
            archive.writestr(info.filename, source.read(info))
    return buffer.getvalue()


def test_default_limits() -> None:
    assert ExtractLimits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_unzipped_bytes == 100 * _MIB
    assert DEFAULT_LIMITS.max_chars == 10_000_000
    assert DEFAULT_LIMITS.timeout_seconds == 120.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LIMITS.max_chars = 1  # type: ignore[misc]


def test_docx_bomb_sample_is_small_and_declares_150_mb(docx_bomb: bytes) -> None:
    declared = sum(info.file_size for info in zipfile.ZipFile(io.BytesIO(docx_bomb)).infolist())
    assert 100_000 < len(docx_bomb) < 300_000
    assert 150 * _MIB <= declared < 152 * _MIB


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        # The default: caught by the declared-size check, before anything is inflated.
        (None, r"too large.*100 MB.*MAX_UNZIPPED_BYTES"),
        # Above a raised size limit, the XML parser's text-node limit still stops it.
        (ExtractLimits(max_unzipped_bytes=200 * _MIB), r"DOCX is too large"),
    ],
    ids=["default-limits", "raised-size-limit"],
)
def test_docx_bomb_is_rejected_quickly_as_too_large(
    docx_bomb: bytes, limits: ExtractLimits | None, message: str
) -> None:
    started = time.monotonic()
    with pytest.raises(ProcessingError, match=message) as info:
        extract_text(docx_bomb, "bomb.docx", limits=limits)
    assert time.monotonic() - started < 30  # a limit, not a benchmark (CI may be loaded)
    assert info.value.category == PROCESSING_ERROR
    # The next, normal document is unaffected.
    assert SENTENCE in _flat(extract_text(samples.make_docx([SENTENCE]), "ok.docx"))


@pytest.mark.parametrize("fix_crc", [False, True], ids=["bad-crc", "matching-crc"])
def test_docx_member_holding_more_than_it_declares_is_corrupt_and_not_inflated(
    docx_bomb: bytes, fix_crc: bool
) -> None:
    liar = _lie_about_member_size(docx_bomb, "word/document.xml", 5_000, fix_crc=fix_crc)
    assert sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(liar)).infolist()) < 1 * _MIB
    tracemalloc.start()
    try:
        with pytest.raises(ProcessingError, match="corrupt or unreadable DOCX"):
            extract_text(liar, "liar.docx")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # zipfile's own read() would inflate all 150 MB before noticing the lie.
    assert peak < 20 * _MIB


def test_docx_with_bzip2_members_is_unsupported() -> None:
    data = _recompress(samples.make_docx([SENTENCE]), zipfile.ZIP_BZIP2)
    with pytest.raises(ProcessingError, match="unsupported DOCX.*compression method 12"):
        extract_text(data, "bz.docx")


def test_docx_recompressed_as_stored_still_extracts() -> None:
    data = _recompress(samples.make_docx([SENTENCE]), zipfile.ZIP_STORED)
    assert SENTENCE in _flat(extract_text(data, "stored.docx"))


def test_pdf_tripping_a_pypdf_decompression_limit_is_too_large() -> None:
    started = time.monotonic()
    with pytest.raises(ProcessingError, match="PDF is too large.*LimitReachedError") as info:
        extract_text(samples.make_pdf_bomb(), "bomb.pdf")
    assert time.monotonic() - started < 30  # a limit, not a benchmark (CI may be loaded)
    assert info.value.category == PROCESSING_ERROR


# --- limits: extracted characters ---------------------------------------------------------

_LONG = " ".join([SENTENCE] * 20)  # about 1,350 characters


@pytest.mark.parametrize(
    ("file_name", "data"),
    [
        ("long.txt", samples.make_txt(_LONG)),
        ("long.md", samples.make_md(_LONG)),
        ("long.csv", samples.make_csv([["summary"]] + [[SENTENCE]] * 20)),
        ("long.json", samples.make_json([SENTENCE] * 20)),
        ("long.html", samples.make_html("Llamas", _LONG)),
        ("long.pdf", samples.make_pdf(_LONG)),
        ("long.docx", samples.make_docx([SENTENCE] * 20)),
    ],
)
def test_text_over_max_chars_is_too_large(file_name: str, data: bytes) -> None:
    assert len(extract_text(data, file_name)) > 1000
    with pytest.raises(ProcessingError, match="too large.*MAX_EXTRACTED_CHARS") as info:
        extract_text(data, file_name, limits=ExtractLimits(max_chars=1000))
    assert info.value.category == PROCESSING_ERROR


def test_text_of_exactly_max_chars_is_accepted() -> None:
    assert extract_text(b"x" * 100, "x.txt", limits=ExtractLimits(max_chars=100)) == "x" * 100
    with pytest.raises(ProcessingError, match="too large"):
        extract_text(b"x" * 101, "x.txt", limits=ExtractLimits(max_chars=100))


def test_csv_labels_count_towards_max_chars() -> None:
    # 200 bytes of CSV, but every row repeats the long header label in the text.
    data = samples.make_csv([["a-very-long-column-header-" * 4]] + [["1"]] * 50)
    assert len(data) < 400 < len(extract_text(data, "labels.csv"))
    with pytest.raises(ProcessingError, match="CSV is too large"):
        extract_text(data, "labels.csv", limits=ExtractLimits(max_chars=400))


# --- limits: wall time --------------------------------------------------------------------


def _busy(seconds: float) -> None:
    """Pure-Python work: signal handlers run between its bytecodes."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.fixture
def sentinel_alarm() -> Iterator[Callable[[int, object], None]]:
    """Install a known SIGALRM handler and a 1000 s timer; put the original ones back after."""

    def sentinel(signum: int, frame: object) -> None:
        raise AssertionError("the sentinel timer must not fire during the test")

    original_handler = signal.signal(signal.SIGALRM, sentinel)
    original_timer = signal.setitimer(signal.ITIMER_REAL, 1000)
    started = time.monotonic()
    yield sentinel
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, original_handler)
    if original_timer[0] > 0:  # e.g. pytest-timeout's own alarm
        remaining = original_timer[0] - (time.monotonic() - started)
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001), original_timer[1])


def test_extraction_over_the_deadline_raises_resource_limit() -> None:
    # Three million CSV rows take about 4 s to extract; the deadline stops it at 0.5 s.
    data = b"id,name\n" + b"1,x\n" * 3_000_000
    limits = ExtractLimits(max_chars=10**9, timeout_seconds=0.5)
    message = r"longer than 0\.5 s \(EXTRACT_TIMEOUT_SECONDS\)"
    # Without the deadline the extraction would return its text: the exception is the proof
    # (no wall-clock bound here: a loaded CI machine stretches it).
    with pytest.raises(ResourceLimit, match=message) as info:
        extract_text(data, "rows.csv", limits=limits)
    assert info.value.category == RESOURCE_LIMIT
    assert not isinstance(info.value, ProcessingError)


def test_deadline_interrupts_a_busy_loop_and_restores_the_previous_alarm(
    sentinel_alarm: Callable[[int, object], None],
) -> None:
    started = time.monotonic()
    with pytest.raises(ResourceLimit, match="EXTRACT_TIMEOUT_SECONDS"), _deadline(0.2):
        _busy(10)
    assert time.monotonic() - started < 9  # cut short of the 10 s loop
    assert signal.getsignal(signal.SIGALRM) is sentinel_alarm
    remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    assert 990 < remaining <= 1000
    # A block that finishes in time changes nothing either.
    with _deadline(5):
        _busy(0.01)
    assert signal.getsignal(signal.SIGALRM) is sentinel_alarm
    assert 990 < signal.getitimer(signal.ITIMER_REAL)[0] <= 1000


def test_deadline_swallowed_by_a_library_is_still_reported() -> None:
    def swallowing_library(then_fail: bool) -> None:
        with contextlib.suppress(Exception):  # what some libraries do internally
            _busy(1)
        if then_fail:
            raise ProcessingError("corrupt or unreadable PDF: PdfReadError: it broke")

    with pytest.raises(ResourceLimit), _deadline(0.1):
        swallowing_library(then_fail=False)
    with pytest.raises(ResourceLimit) as info, _deadline(0.1):
        swallowing_library(then_fail=True)
    assert isinstance(info.value.__cause__, ProcessingError)  # replaced, not reported as corrupt


def test_deadline_is_skipped_off_the_main_thread() -> None:
    outcome: list[object] = []

    def run() -> None:
        try:
            with _deadline(0.01):
                _busy(0.1)
            limits = ExtractLimits(timeout_seconds=0.01)
            outcome.append(extract_text(b"plain words", "n.txt", limits=limits))
        except BaseException as exc:  # reported to the main thread
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert outcome == ["plain words"]


# --- errors that are not properties of the file propagate ---------------------------------


@pytest.mark.parametrize(
    "make_error",
    [MemoryError, lambda: SoftTimeLimitExceeded("soft time limit exceeded")],
    ids=["MemoryError", "SoftTimeLimitExceeded"],
)
@pytest.mark.parametrize(
    ("module", "library_entry_point", "file_name", "data"),
    [
        (pdf_format, "PdfReader", "census.pdf", samples.make_pdf(SENTENCE)),
        (pdf_format.pdfium, "PdfDocument", "census.pdf", samples.make_pdf(SENTENCE)),
        (pdf_format.pdfium.PdfTextPage, "get_text_bounded", "census.pdf",
         samples.make_pdf(SENTENCE)),
        (ocr_format.Image, "open", "census.png", samples.make_png_of_text(SENTENCE)),
        (ocr_format.pytesseract, "image_to_string", "census.png",
         samples.make_png_of_text(SENTENCE)),
        (extract, "Document", "census.docx", samples.make_docx([SENTENCE])),
    ],
    ids=["PdfReader", "PdfDocument", "get_text_bounded", "Image.open", "image_to_string",
         "Document"],
)
def test_memory_and_time_limit_errors_propagate_unchanged(
    monkeypatch: pytest.MonkeyPatch,
    make_error: Callable[[], BaseException],
    module: object,
    library_entry_point: str,
    file_name: str,
    data: bytes,
) -> None:
    error = make_error()

    def failing_library(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(module, library_entry_point, failing_library)
    with pytest.raises(type(error)) as info:
        extract_text(data, file_name)
    assert info.value is error


def test_wrapped_lines_of_a_page_are_joined_and_short_lines_stay_breaks() -> None:
    from ingest.pipeline.formats.base import unwrap_lines

    page = ("Overview\r\n"
            "The servers of the Falcon project stand in room F633, next to the\r\n"
            "loading bay. Facilities repaint the corridor on Friday, so desks must\r\n"
            "be cleared.\r\n"
            "Suppliers\r\n\r\n"
            "The sensors come from Helix Instruments, who deliver every second week.")
    assert unwrap_lines(page) == (
        "Overview\n"
        "The servers of the Falcon project stand in room F633, next to the loading bay. "
        "Facilities repaint the corridor on Friday, so desks must be cleared.\n"
        "Suppliers\n\n"
        "The sensors come from Helix Instruments, who deliver every second week.")
    assert unwrap_lines("one line") == "one line"
