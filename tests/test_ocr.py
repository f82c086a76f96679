"""OCR with the real Tesseract: images, scanned and mixed PDFs, the caps, and a missing
tesseract (the file fails as ``unsupported`` and is never deleted), end to end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from devtools import samples
from ingest.adapters.vectors import VectorStore
from ingest.db import session_scope
from ingest.errors import (
    CORRECTABLE,
    OPERATOR_CATEGORIES,
    ProcessingError,
    ResourceLimit,
    Unsupported,
)
from ingest.mail.render import CATEGORY_LABELS, SUGGESTIONS
from ingest.models import AutoCorrectionTask, OperatorAlert
from ingest.pipeline.embedding import get_embedder
from ingest.pipeline.extract import ExtractLimits, extract_blocks
from ingest.pipeline.run import default_services
from ingest.settings import SettingsError, get_settings, load_settings
from tests.helpers import (
    cms_file,
    envelope,
    errors_for,
    post,
    s3_exists,
    stages_for,
    uploader,
    wait_terminal,
)

SENTENCE = "The cargo bike fleet is serviced by Velotech every first Monday of the month."
OTHER = "Spare batteries for the cargo bikes are kept in the basement locker B12."
NO_TESSERACT = "/nonexistent/bin/tesseract"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _texts(blocks: list[Any]) -> list[str]:
    return [_flat(block.text) for block in blocks]


# --- images -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "mime_type", "data"),
    [
        ("bikes.png", None, samples.make_png_of_text(SENTENCE)),
        ("bikes.jpg", None, samples.make_jpeg_of_text(SENTENCE)),
        ("BIKES.JPEG", None, samples.make_jpeg_of_text(SENTENCE)),
        ("bikes.tif", None, samples.make_tiff_of_pages([SENTENCE])),
        ("upload.bin", "image/png", samples.make_png_of_text(SENTENCE)),
        ("upload.bin", "image/jpeg", samples.make_jpeg_of_text(SENTENCE)),
        ("upload.bin", "image/tiff", samples.make_tiff_of_pages([SENTENCE])),
    ],
)
def test_an_image_of_text_is_read_word_for_word(file_name: str, mime_type: str | None,
                                                 data: bytes) -> None:
    (block,) = extract_blocks(data, file_name, mime_type)
    assert _flat(block.text) == SENTENCE
    assert block.page is None


def test_a_multi_page_tiff_gives_one_block_per_frame_with_its_page() -> None:
    blocks = extract_blocks(samples.make_tiff_of_pages([SENTENCE, OTHER]), "fax.tiff")
    assert _texts(blocks) == [SENTENCE, OTHER]
    assert [block.page for block in blocks] == [1, 2]


@pytest.mark.parametrize(("mode", "image_format"),
                         [("CMYK", "JPEG"), ("I;16", "PNG"), ("P", "PNG"), ("1", "TIFF"),
                          ("LA", "PNG"), ("YCbCr", "TIFF")])
def test_images_in_other_colour_modes_are_read(mode: str, image_format: str) -> None:
    image = samples.text_image(SENTENCE)
    image = (image.convert("I").point(lambda v: v * 256).convert("I;16") if mode == "I;16"
             else image.convert(mode))
    data = samples.image_bytes(image, image_format)
    (block,) = extract_blocks(data, f"scan.{image_format.lower()}")
    assert _flat(block.text) == SENTENCE


def test_a_phone_photo_is_turned_upright_by_its_exif_orientation() -> None:
    """Stored sideways with orientation 6 ("rotate 90° clockwise to view"), as phones do."""
    sideways = samples.text_image(SENTENCE).transpose(samples.Image.Transpose.ROTATE_90)
    exif = samples.Image.Exif()
    exif[0x0112] = 6  # Orientation
    data = samples.image_bytes(sideways, "JPEG", exif=exif, quality=90)
    (block,) = extract_blocks(data, "photo.jpg")
    assert _flat(block.text) == SENTENCE


def test_a_transparent_png_is_read_on_white() -> None:
    """Text drawn on a transparent background: its raw colour is black on black."""
    mask = samples.text_image(SENTENCE)
    image = samples.Image.new("RGBA", mask.size, (0, 0, 0, 0))
    image.putalpha(mask.point(lambda v: 255 - v))
    (block,) = extract_blocks(samples.image_bytes(image, "PNG"), "logo.png")
    assert _flat(block.text) == SENTENCE


def test_a_decompression_bomb_image_is_too_large_before_it_is_decoded() -> None:
    bomb = samples.make_image_bomb(60_000_000)  # ~20 KB on disk
    assert len(bomb) < 100_000
    with pytest.raises(ProcessingError, match=r"image is too large: 7746x7746 pixels, above "
                                              r"the 40,000,000-pixel limit"):
        extract_blocks(bomb, "bomb.png")


def test_an_image_over_pillows_own_bomb_limit_is_too_large() -> None:
    with pytest.raises(ProcessingError, match="image is too large.*decompression bomb"):
        extract_blocks(samples.make_image_bomb(200_000_000), "bomb.png")


@pytest.mark.parametrize(
    "data",
    [samples.make_png_of_text(SENTENCE)[:400], b"\x89PNG\r\n\x1a\n garbage", b"not an image"],
    ids=["truncated", "bad-chunks", "not-an-image"],
)
def test_a_corrupt_image_is_a_processing_error(data: bytes) -> None:
    with pytest.raises(ProcessingError, match="corrupt or unreadable image"):
        extract_blocks(data, "broken.png")


# --- PDFs ---------------------------------------------------------------------------------


def test_a_scanned_pdf_is_ocred_page_by_page() -> None:
    blocks = extract_blocks(samples.make_scanned_pdf([SENTENCE, OTHER]), "scan.pdf")
    assert _texts(blocks) == [SENTENCE, OTHER]
    assert [block.page for block in blocks] == [1, 2]


def test_a_mixed_pdf_gives_text_pages_and_the_scanned_page_with_their_numbers() -> None:
    pages = ["Chapter one is typed text about tulips.", SENTENCE,
             "Chapter three is typed text about roses."]
    data = samples.make_mixed_pdf(pages, scanned={1})
    blocks = extract_blocks(data, "mixed.pdf")
    assert _texts(blocks) == pages
    assert [block.page for block in blocks] == [1, 2, 3]
    # Page 2 came from OCR: without tesseract the same file cannot be read.
    with pytest.raises(Unsupported):
        extract_blocks(data, "mixed.pdf", limits=ExtractLimits(tesseract_cmd=NO_TESSERACT))


def test_a_text_pdf_never_needs_tesseract() -> None:
    limits = ExtractLimits(tesseract_cmd=NO_TESSERACT)
    blocks = extract_blocks(samples.make_pdf(SENTENCE), "typed.pdf", limits=limits)
    assert _texts(blocks) == [SENTENCE]
    assert [block.page for block in blocks] == [1]


def test_ocr_max_pages_counts_only_the_pages_that_need_ocr() -> None:
    pages = [f"Typed page {n} about the garden shed." for n in range(5)] + [SENTENCE]
    mixed = samples.make_mixed_pdf(pages, scanned={5})
    one = ExtractLimits(ocr_max_pages=1)
    assert _texts(extract_blocks(mixed, "mixed.pdf", limits=one))[5] == SENTENCE
    scanned = samples.make_scanned_pdf([SENTENCE, OTHER])
    with pytest.raises(ProcessingError, match=r"PDF is too large: 2 pages need OCR.*"
                                              r"limit of 1 \(OCR_MAX_PAGES\)"):
        extract_blocks(scanned, "scan.pdf", limits=one)
    fax = samples.make_tiff_of_pages([SENTENCE, OTHER])
    with pytest.raises(ProcessingError, match="image is too large: 2 pages need OCR"):
        extract_blocks(fax, "fax.tiff", limits=one)


def test_a_pdf_page_image_over_the_pixel_cap_is_too_large_before_rendering() -> None:
    data = samples.image_bytes(samples.Image.new("1", (9000, 9000), 1), "PDF", resolution=300)
    with pytest.raises(ProcessingError, match=r"PDF page 1 image is too large: 9000x9000"):
        extract_blocks(data, "poster.pdf")


def test_a_huge_scanned_page_is_rendered_down_to_the_pixel_cap_and_read() -> None:
    """At 12 dpi the page is ~140 inches wide: 300 dpi would be 1.8 billion pixels."""
    data = samples.make_scanned_pdf([SENTENCE], dpi=12)
    limits = ExtractLimits(ocr_max_pixels=9_000_000)
    (block,) = extract_blocks(data, "banner.pdf", limits=limits)
    assert _flat(block.text) == SENTENCE


def test_ocr_past_the_extraction_deadline_is_a_resource_limit() -> None:
    """Our time limit stopped the OCR: not a property of the file, so never "corrupt"."""
    dense = "\n\n".join([f"{SENTENCE} {OTHER}"] * 12)
    page = samples.text_image(dense, font_size=42, width=2480)
    scan = samples.image_bytes(page, "PDF", save_all=True, append_images=[page, page],
                               resolution=300)
    with pytest.raises(ResourceLimit, match="EXTRACT_TIMEOUT_SECONDS"):
        extract_blocks(scan, "long-scan.pdf", limits=ExtractLimits(timeout_seconds=0.5))


# --- tesseract missing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "data"),
    [("scan.png", samples.make_png_of_text(SENTENCE)),
     ("scan.pdf", samples.make_scanned_pdf([SENTENCE]))],
)
def test_missing_tesseract_is_unsupported_with_a_clear_message(file_name: str,
                                                                 data: bytes) -> None:
    with pytest.raises(Unsupported, match="OCR unavailable: tesseract is not installed"):
        extract_blocks(data, file_name, limits=ExtractLimits(tesseract_cmd=NO_TESSERACT))


def test_tesseract_runs_with_one_openmp_thread_through_tesseract_cmd(tmp_path: Any) -> None:
    """A wrapper as TESSERACT_CMD records the environment tesseract gets, then runs it."""
    seen = tmp_path / "omp.txt"
    wrapper = tmp_path / "tesseract"
    wrapper.write_text(f'#!/bin/sh\necho "$OMP_THREAD_LIMIT" >> {seen}\nexec tesseract "$@"\n')
    wrapper.chmod(0o755)
    limits = ExtractLimits(tesseract_cmd=str(wrapper))
    (block,) = extract_blocks(samples.make_png_of_text(SENTENCE), "scan.png", limits=limits)
    assert _flat(block.text) == SENTENCE
    assert seen.read_text().split()[-1] == "1"  # the OCR run (--list-langs may be cached)


def test_missing_language_data_is_unsupported_and_names_the_package() -> None:
    limits = ExtractLimits(ocr_languages="eng+xqz")
    with pytest.raises(Unsupported, match=r"no language data for xqz \(OCR_LANGUAGES=eng\+xqz\)"
                                          r"; install tesseract-ocr-xqz"):
        extract_blocks(samples.make_png_of_text(SENTENCE), "scan.png", limits=limits)


def test_unsupported_is_never_corrected_and_alerts_the_operator() -> None:
    assert "unsupported" not in CORRECTABLE
    assert "unsupported" in OPERATOR_CATEGORIES
    assert "unsupported" in CATEGORY_LABELS and "kept" in SUGGESTIONS["unsupported"]


@pytest.mark.parametrize("value", ["eng deu", "eng+", "../../etc", ""])
def test_a_bad_ocr_languages_value_is_refused(monkeypatch: pytest.MonkeyPatch,
                                              value: str) -> None:
    monkeypatch.setenv("OCR_LANGUAGES", value)
    with pytest.raises(SettingsError, match="OCR_LANGUAGES"):
        load_settings()


# --- end to end ---------------------------------------------------------------------------


@pytest.fixture
def no_tesseract(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The worker's settings point TESSERACT_CMD at a binary that does not exist."""
    monkeypatch.setenv("TESSERACT_CMD", NO_TESSERACT)
    get_settings.cache_clear()
    default_services.cache_clear()  # the worker's adapters and settings, built on first use
    yield
    monkeypatch.undo()
    get_settings.cache_clear()
    default_services.cache_clear()


@pytest.mark.usefixtures("worker")
def test_a_scanned_pdf_becomes_searchable_end_to_end(web: str, s3_server: Any,
                                                     cms: Any) -> None:
    sentence = "Clause 14: the landlord repaints the stairwell of Quay House every seven years."
    entry = cms_file(cms, s3_server, "quay-house-scan.pdf",
                     samples.make_scanned_pdf([f"Scanned contract\n\n{sentence}", OTHER]),
                     "application/pdf", user_email=uploader())
    response = post(web, envelope("entry.create", entry))
    assert response.status_code == 202, response.text
    row = wait_terminal(response.json()["event_id"], timeout=120)
    assert row.status == "done", row.last_error
    (vector,) = get_embedder("minilm").embed(["How often is the Quay House stairwell repainted?"])
    (hit,) = VectorStore(get_settings()).query(vector, n_results=1)
    assert hit.metadata["document_id"] == entry["documentId"]
    assert sentence in _flat(hit.text)


@pytest.mark.usefixtures("worker", "no_tesseract")
def test_without_tesseract_a_scan_fails_as_unsupported_and_nothing_is_deleted(
    web: str, s3_server: Any, cms: Any
) -> None:
    entry = cms_file(cms, s3_server, "tenancy-scan.pdf", samples.make_scanned_pdf([SENTENCE]),
                     "application/pdf", user_email=uploader())
    assert os.environ["TESSERACT_CMD"] == NO_TESSERACT
    response = post(web, envelope("entry.create", entry))
    row = wait_terminal(response.json()["event_id"], timeout=60)
    assert row.status == "failed"
    (error,) = errors_for(entry["documentId"])
    assert error.error_category == "unsupported"
    assert "OCR unavailable: tesseract is not installed" in error.error_message
    assert not error.auto_correction_triggered
    assert stages_for(row.id)[-1] == ("failed", "failed")
    with session_scope() as s:  # planned in the failing transaction, so absent for good
        assert s.execute(select(AutoCorrectionTask).where(
            AutoCorrectionTask.file_document_id == entry["documentId"])).first() is None
        alerts = s.execute(select(OperatorAlert).where(
            OperatorAlert.document_id == entry["documentId"])).scalars().all()
    (alert,) = alerts
    assert alert.kind == "file_needs_operator"
    assert "A file failed with unsupported" in alert.body
    assert s3_exists(s3_server, entry["storage_key"])
    assert cms.state.get_file(entry["documentId"]) is not None


def test_limits_default_to_the_settings_defaults() -> None:
    settings, limits = get_settings(), ExtractLimits()
    assert (limits.ocr_languages, limits.ocr_max_pages, limits.ocr_dpi, limits.tesseract_cmd) == (
        settings.ocr_languages, settings.ocr_max_pages, settings.ocr_dpi, settings.tesseract_cmd)
