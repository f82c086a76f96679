"""The file extensions kb-ingest extracts text from, in a module light enough for the web
process (its failure suggestions list them) to import without any parsing library."""

from __future__ import annotations

SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".txt",
    ".md",
    ".csv",
    ".json",
    ".html",
    ".htm",
    ".pdf",
    ".docx",
    ".pptx",
    ".xlsx",
    ".odt",
    ".rtf",
    ".epub",
    ".eml",
    ".msg",
    ".xml",
    ".png",
    ".jpg",
    ".jpeg",
    ".tiff",
    ".tif",
)
