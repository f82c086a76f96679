"""Text extraction per file type (no services needed)."""

from __future__ import annotations

import io
import zipfile

import pytest
from pypdf import PdfWriter

from devtools import samples
from ingest.errors import PROCESSING_ERROR, PermanentError, ProcessingError
from ingest.pipeline.extract import SUPPORTED_EXTENSIONS, extract_text

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


def test_sample_documents_cover_every_supported_type_but_htm() -> None:
    extensions = {"." + doc.file_name.rsplit(".", 1)[1] for doc in samples.sample_documents()}
    assert extensions == set(SUPPORTED_EXTENSIONS) - {".htm"}


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
    assert extract_text(data, "people.csv") == "name: Alice, team: Payments\nname: Bob"


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
        ("slides.pptx", "application/zip", b"PK\x03\x04", "unsupported file type"),
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
