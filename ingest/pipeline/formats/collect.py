"""A list of blocks that fails as soon as its text passes the character limit."""

from __future__ import annotations

from ingest.pipeline.formats.base import Block, ExtractLimits, check_chars


class BlockCollector:
    """Collects :class:`Block` s in reading order, counting characters as they arrive, so a
    runaway extraction (a sheet with a million rows) stops at the limit, not after it."""

    def __init__(self, label: str, limits: ExtractLimits) -> None:
        self.label = label
        self.limits = limits
        self.blocks: list[Block] = []
        self.chars = 0

    def add(self, text: str, section: str | None = None, page: int | None = None) -> None:
        """Append one block (blank text is dropped)."""
        if not text.strip():
            return
        self.chars += len(text)
        check_chars(self.chars, self.label, self.limits)
        self.blocks.append(Block(text, section, page))

    def check(self, pending: int) -> None:
        """Fail if ``pending`` characters (those collected plus a block being built) pass the
        limit: lets a long block fail while it is read, not after."""
        check_chars(pending, self.label, self.limits)
