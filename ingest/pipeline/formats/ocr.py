"""OCR with Tesseract (Debian ``tesseract-ocr``, through pytesseract): images (PNG, JPEG,
TIFF) and, via :mod:`ingest.pipeline.formats.pdf`, PDF pages without a text layer.

Invariants:

- A missing ``tesseract`` binary, or missing language data for ``OCR_LANGUAGES``, raises
  :class:`~ingest.errors.Unsupported`: the file is fine and our set-up is not, so it is never
  auto-corrected (deleted); the operator is alerted. This is checked before any page is
  OCRed, with ``tesseract --list-langs`` (a successful answer is cached per binary).
- Images are checked for size from their header before a pixel is decoded: more than
  ``ExtractLimits.ocr_max_pixels`` pixels (a decompression bomb, or just too big), or more
  than ``ocr_max_pages`` frames, raise ``ProcessingError`` ("too large"). Over the page cap
  the file fails instead of being indexed in part: a half-searchable contract that looks
  complete is worse than a clear "split it" message.
- Pillow's errors on malformed images become ``ProcessingError`` ("corrupt"); a tesseract
  failure on an image Pillow decoded is not a property of the file and propagates
  (``internal_error``, nothing deleted). A tesseract run longer than the extraction timeout
  is killed and raises ``ResourceLimit``.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import warnings
import zlib
from collections.abc import Callable
from typing import TypeVar

import pytesseract
from PIL import Image, ImageOps, UnidentifiedImageError

from ingest.errors import ProcessingError, ResourceLimit, Unsupported
from ingest.pipeline.formats.base import Block, ExtractLimits, check_chars, unwrap_lines

# What Pillow raises on malformed image data. OSError is safe to catch here because the
# image is decoded from memory: no file system or network call happens inside these calls.
_IMAGE_ERRORS: tuple[type[Exception], ...] = (
    UnidentifiedImageError,
    OSError,  # "image file is truncated", "broken data stream", decoder errors
    SyntaxError,  # some plugins' "not a ... file"
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
)
_PNG_MODES = frozenset({"1", "L", "P", "RGB", "I", "I;16"})
_LIST_LANGS_TIMEOUT_SECONDS = 30
_T = TypeVar("_T")
_installed: dict[str, frozenset[str]] = {}  # tesseract binary -> its languages (success only)


def installed_languages(tesseract_cmd: str) -> frozenset[str]:
    """The language packs ``tesseract_cmd`` has; ``Unsupported`` if it cannot be run."""
    if tesseract_cmd in _installed:
        return _installed[tesseract_cmd]
    try:
        done = subprocess.run([tesseract_cmd, "--list-langs"], capture_output=True, text=True,
                              timeout=_LIST_LANGS_TIMEOUT_SECONDS, check=False)
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise Unsupported(
            f"OCR unavailable: tesseract is not installed (cannot run {tesseract_cmd!r}: "
            f"{exc.strerror}); install the Debian package tesseract-ocr or set TESSERACT_CMD"
        ) from exc
    if done.returncode != 0:
        raise Unsupported(f"OCR unavailable: '{tesseract_cmd} --list-langs' failed "
                          f"(exit {done.returncode}): {done.stderr.strip()[:300]}")
    # First line: "List of available languages in "/usr/share/.../tessdata/" (2):"
    languages = frozenset(line.strip() for line in done.stdout.splitlines()[1:] if line.strip())
    _installed[tesseract_cmd] = languages
    return languages


def check_ocr_available(limits: ExtractLimits) -> None:
    """Raise ``Unsupported`` unless tesseract runs and has every ``OCR_LANGUAGES`` pack."""
    have = installed_languages(limits.tesseract_cmd)
    missing = [lang for lang in limits.ocr_languages.split("+") if lang not in have]
    if missing:
        _installed.pop(limits.tesseract_cmd, None)  # a pack installed meanwhile is seen next time
        packages = " ".join(f"tesseract-ocr-{lang.lower()}" for lang in missing)
        raise Unsupported(
            f"OCR unavailable: tesseract has no language data for {'+'.join(missing)} "
            f"(OCR_LANGUAGES={limits.ocr_languages}); install {packages}"
        )


def ocr_image(image: Image.Image, limits: ExtractLimits) -> str:
    """Tesseract's text of one decoded image (call :func:`check_ocr_available` first)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels are black in the raw data; put them on white paper first.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    elif image.mode not in _PNG_MODES:  # CMYK JPEGs, YCbCr or LAB TIFFs, ...
        image = image.convert("RGB")  # pytesseract hands tesseract a PNG
    pytesseract.pytesseract.tesseract_cmd = limits.tesseract_cmd
    pytesseract.pytesseract.environ = tesseract_environment()
    try:
        return unwrap_lines(pytesseract.image_to_string(image, lang=limits.ocr_languages,
                                                        timeout=limits.timeout_seconds))
    except pytesseract.TesseractNotFoundError as exc:  # removed since check_ocr_available
        raise Unsupported(f"OCR unavailable: tesseract is not installed ({exc})") from exc
    except RuntimeError as exc:
        if type(exc) is RuntimeError:  # pytesseract's timeout; TesseractError propagates
            raise ResourceLimit(f"OCR of one page took longer than "
                                f"{limits.timeout_seconds:g} s (EXTRACT_TIMEOUT_SECONDS)") from exc
        raise


def tesseract_environment() -> dict[str, str]:
    """The environment tesseract runs in: ours, with one OpenMP thread unless set otherwise.

    Tesseract starts one OpenMP thread per core by default; beside the worker's other
    processes they oversubscribe the cores and spin. Measured on 2 shared cores
    (bench/pdf_speed.py): one dense A4 page at 300 dpi took 10.7 s with the default and
    3.4 s with ``OMP_THREAD_LIMIT=1``. Set only for tesseract: torch also uses OpenMP.
    """
    return {**os.environ, "OMP_THREAD_LIMIT": os.environ.get("OMP_THREAD_LIMIT", "1")}


def check_pixels(width: int, height: int, what: str, limits: ExtractLimits) -> None:
    """``ProcessingError`` ("too large") if a ``width`` x ``height`` image is over the cap."""
    if width * height > limits.ocr_max_pixels:
        raise ProcessingError(
            f"{what} is too large: {width}x{height} pixels, above the "
            f"{limits.ocr_max_pixels:,}-pixel limit for OCR"
        )


def check_page_count(count: int, what: str, limits: ExtractLimits) -> None:
    """``ProcessingError`` ("too large") if more than ``ocr_max_pages`` pages need OCR."""
    if count > limits.ocr_max_pages:
        raise ProcessingError(
            f"{what} is too large: {count} pages need OCR, above the limit of "
            f"{limits.ocr_max_pages} (OCR_MAX_PAGES); split it into smaller files"
        )


def extract_image(data: bytes, limits: ExtractLimits) -> list[Block]:
    """OCR an image file: one block per frame (a multi-page TIFF), ``page`` 1-based."""
    # Image.open reads the header only: sizes are checked before any pixel is decoded.
    with warnings.catch_warnings():  # its DecompressionBombWarning: our own cap is stricter
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = _pillow(lambda: Image.open(io.BytesIO(data)))
    with image:
        frames = _pillow(lambda: getattr(image, "n_frames", 1))
        check_page_count(frames, "image", limits)
        check_ocr_available(limits)
        blocks = []
        total = 0
        for index in range(frames):
            frame = _pillow(lambda i=index: _decoded_frame(image, i, limits))
            text = ocr_image(frame, limits)  # outside _pillow: its OSErrors are not the file's
            total += len(text)
            check_chars(total, "image", limits)
            blocks.append(Block(text, page=index + 1 if frames > 1 else None))
        return blocks


def _decoded_frame(image: Image.Image, index: int, limits: ExtractLimits) -> Image.Image:
    """Frame ``index``, size-checked before it is decoded (TIFF frames can differ in size)."""
    image.seek(index)
    check_pixels(image.width, image.height, "image", limits)
    image.load()
    return ImageOps.exif_transpose(image)  # a copy, upright as a phone camera meant it


def _pillow(call: Callable[[], _T]) -> _T:
    """Run a Pillow call; its errors on malformed data become ``ProcessingError``."""
    try:
        return call()
    except Image.DecompressionBombError as exc:  # Pillow's own cap (2x MAX_IMAGE_PIXELS)
        raise ProcessingError(f"image is too large: {exc}") from exc
    except _IMAGE_ERRORS as exc:
        raise ProcessingError(f"corrupt or unreadable image: {type(exc).__name__}: {exc}") from exc
