"""A minimal Compound File Binary writer ([MS-CFB] version 3), to build .msg test files.

No acceptable writer exists on PyPI (extract-msg is GPL and reads only). ``write_cfb`` takes
stream paths ("storage/stream") → bytes and lays out: FAT sectors, the directory, the mini
FAT, the mini stream, then the big streams. As the spec requires (and olefile checks),
streams shorter than 4096 bytes live in the mini stream (64-byte mini sectors). Limits:
512-byte sectors, at most 109 FAT sectors (no DIFAT, so files up to about 6.8 MB), and the
sibling trees are degenerate chains (all black), which readers accept.
"""

from __future__ import annotations

import struct

SECTOR = 512
MINI_SECTOR = 64
MINI_CUTOFF = 4096
FREE, END_OF_CHAIN, FAT_SECTOR, NO_STREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
_STORAGE, _STREAM, _ROOT = 1, 2, 5


class _Entry:
    def __init__(self, name: str, kind: int, data: bytes = b"") -> None:
        self.name, self.kind, self.data = name, kind, data
        self.children: dict[str, _Entry] = {}
        self.start, self.size = END_OF_CHAIN, 0
        self.left = self.right = self.child = NO_STREAM


def _pad(data: bytes, size: int) -> bytes:
    return data + b"\0" * (-len(data) % size)


def _chain(first: int, count: int) -> list[int]:
    """FAT entries of ``count`` consecutive sectors starting at ``first``."""
    return [first + i + 1 for i in range(count - 1)] + [END_OF_CHAIN] if count else []


def write_cfb(streams: dict[str, bytes]) -> bytes:
    """A compound file holding ``streams`` (paths use "/" between storage and stream)."""
    root = _Entry("Root Entry", _ROOT)
    for path, data in streams.items():
        node = root
        *storages, leaf = path.split("/")
        for name in storages:
            node = node.children.setdefault(name, _Entry(name, _STORAGE))
        node.children[leaf] = _Entry(leaf, _STREAM, data)

    entries: list[_Entry] = []

    def number(entry: _Entry) -> int:  # directory order: depth first; siblings chained right
        entries.append(entry)
        index = len(entries) - 1
        # Sorted as the spec compares names: shorter first, then case-insensitively.
        kids = sorted(entry.children.values(), key=lambda e: (len(e.name), e.name.upper()))
        ids = [number(kid) for kid in kids]
        for this, after in zip(kids, ids[1:], strict=False):
            this.right = after
        entry.child = ids[0] if ids else NO_STREAM
        return index

    number(root)

    mini = bytearray()
    mini_fat: list[int] = []
    big: list[_Entry] = []
    for entry in entries:
        if entry.kind != _STREAM:
            continue
        entry.size = len(entry.data)
        if entry.size >= MINI_CUTOFF:
            big.append(entry)
        elif entry.size:
            entry.start = len(mini) // MINI_SECTOR
            count = -(-entry.size // MINI_SECTOR)
            mini_fat += _chain(entry.start, count)
            mini += _pad(entry.data, MINI_SECTOR)

    directory = b"".join(_dir_entry(e) for e in entries)
    directory = _pad(directory + _dir_entry(None) * (-len(entries) % 4), SECTOR)
    mini_fat_bytes = _pad_free(struct.pack(f"<{len(mini_fat)}I", *mini_fat)) if mini_fat \
        else b""
    blobs = [directory, mini_fat_bytes, _pad(bytes(mini), SECTOR),
             *(_pad(e.data, SECTOR) for e in big)]
    counts = [len(blob) // SECTOR for blob in blobs]
    others = sum(counts)
    fat_count = 1
    while fat_count * (SECTOR // 4) < fat_count + others:
        fat_count += 1
    if fat_count > 109:
        raise ValueError("too large for a compound file without DIFAT sectors")

    fat = [FAT_SECTOR] * fat_count
    starts = []
    for count in counts:
        starts.append(len(fat) if count else END_OF_CHAIN)
        fat += _chain(len(fat), count)
    fat += [FREE] * (fat_count * (SECTOR // 4) - len(fat))
    dir_start, mini_fat_start, mini_start, *big_starts = starts
    entries[0].start, entries[0].size = mini_start, len(mini)  # root: the mini stream
    for entry, start in zip(big, big_starts, strict=True):
        entry.start = start
    directory = b"".join(_dir_entry(e) for e in entries)  # again, now with the starts
    blobs[0] = _pad(directory + _dir_entry(None) * (-len(entries) % 4), SECTOR)

    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        bytes.fromhex("D0CF11E0A1B11AE1"), b"\0" * 16, 0x3E, 3, 0xFFFE, 9, 6, b"\0" * 6,
        0, fat_count, dir_start, 0, MINI_CUTOFF, mini_fat_start, counts[1], END_OF_CHAIN, 0,
    )
    difat = list(range(fat_count)) + [FREE] * (109 - fat_count)
    header += struct.pack("<109I", *difat)
    return header + struct.pack(f"<{len(fat)}I", *fat) + b"".join(blobs)


def _pad_free(data: bytes) -> bytes:
    """Mini FAT bytes padded to a sector with FREE entries."""
    return data + b"\xff" * (-len(data) % SECTOR)


def _dir_entry(entry: _Entry | None) -> bytes:
    """One 128-byte directory entry (``None``: an unused one)."""
    if entry is None:
        return b"\0" * 64 + struct.pack("<HBBIII", 0, 0, 0, NO_STREAM, NO_STREAM, NO_STREAM) \
            + b"\0" * 36 + struct.pack("<IQ", 0, 0)
    name = entry.name.encode("utf-16-le") + b"\0\0"
    if len(name) > 64:
        raise ValueError(f"name too long for a compound file: {entry.name!r}")
    return (
        name.ljust(64, b"\0")
        + struct.pack("<HBBIII", len(name), entry.kind, 1, entry.left, entry.right, entry.child)
        + b"\0" * 16 + b"\0" * 4 + b"\0" * 16  # CLSID, state bits, creation/modified times
        + struct.pack("<IQ", entry.start, entry.size)
    )
