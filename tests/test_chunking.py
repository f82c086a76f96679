"""Character chunking with overlap and boundary preferences."""

from __future__ import annotations

import random

import pytest

from devtools import samples
from ingest.pipeline.chunking import chunk_text
from ingest.pipeline.extract import extract_text

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
         "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu")  # fmt: skip


def _prose(n_words: int, seed: int = 7) -> str:
    """Deterministic prose: sentences of 5-14 words, paragraphs of 3-6 sentences."""
    rng = random.Random(seed)
    paragraphs, sentences, words = [], [], []
    for index in range(n_words):
        words.append(f"{rng.choice(WORDS)}{index}")  # every word is unique
        if len(words) >= rng.randint(5, 14):
            sentences.append(" ".join(words).capitalize() + rng.choice([".", "?", "!"]))
            words = []
            if len(sentences) >= rng.randint(3, 6):
                paragraphs.append(" ".join(sentences))
                sentences = []
    paragraphs.append(" ".join(sentences + [" ".join(words)]).strip())
    return "\n\n".join(p for p in paragraphs if p)


def _shared_length(previous: str, following: str) -> int:
    """Length of the longest suffix of ``previous`` that is a prefix of ``following``."""
    for length in range(min(len(previous), len(following)), 0, -1):
        if previous.endswith(following[:length]):
            return length
    return 0


def test_empty_and_whitespace_text_gives_no_chunks() -> None:
    assert chunk_text("") == []
    assert chunk_text(" \n\n\t ") == []


def test_short_text_is_one_stripped_chunk() -> None:
    assert chunk_text("  A short note about parking.\n") == ["A short note about parking."]


def test_text_of_exactly_chunk_size_is_one_chunk() -> None:
    text = "x" * 50
    assert chunk_text(text, chunk_size=50, overlap=10) == [text]


@pytest.mark.parametrize(("chunk_size", "overlap"), [(1000, 200), (300, 50), (120, 0), (80, 79)])
def test_chunks_respect_size_and_are_non_empty_and_stripped(chunk_size: int, overlap: int) -> None:
    chunks = chunk_text(_prose(900), chunk_size=chunk_size, overlap=overlap)
    assert len(chunks) > 1
    for chunk in chunks:
        assert 0 < len(chunk) <= chunk_size
        assert chunk == chunk.strip()


@pytest.mark.parametrize(("chunk_size", "overlap"), [(1000, 200), (300, 50), (120, 0), (80, 79)])
def test_every_word_appears_whole_in_some_chunk(chunk_size: int, overlap: int) -> None:
    text = _prose(900)
    chunks = chunk_text(text, chunk_size=chunk_size, overlap=overlap)
    chunk_words = {word for chunk in chunks for word in chunk.split()}
    assert set(text.split()) <= chunk_words


def test_consecutive_chunks_overlap() -> None:
    overlap = 200
    chunks = chunk_text(_prose(900), chunk_size=1000, overlap=overlap)
    assert len(chunks) >= 3
    for previous, following in zip(chunks, chunks[1:], strict=False):
        shared = _shared_length(previous, following)
        # The start moves forward to a word boundary, so a little less than `overlap` is shared.
        assert overlap - 25 <= shared <= overlap


def test_zero_overlap_chunks_partition_the_words() -> None:
    text = _prose(600)
    chunks = chunk_text(text, chunk_size=250, overlap=0)
    assert " ".join(chunks).split() == text.split()


def test_chunks_prefer_paragraph_breaks() -> None:
    paragraphs = [f"Paragraph {n} " + "word " * 30 for n in range(6)]  # ~190 chars each
    text = "\n\n".join(p.strip() for p in paragraphs)
    chunks = chunk_text(text, chunk_size=450, overlap=0)
    assert len(chunks) > 1
    assert all(chunk.endswith("word") for chunk in chunks)
    assert all(chunk.startswith("Paragraph") for chunk in chunks)


def test_chunks_prefer_sentence_breaks_over_word_breaks() -> None:
    text = " ".join(f"Sentence number {n} talks about topic {n} in some detail." for n in range(40))
    chunks = chunk_text(text, chunk_size=200, overlap=0)
    assert len(chunks) > 1
    assert all(chunk.endswith(".") for chunk in chunks)


def test_words_are_not_split_when_spaces_exist() -> None:
    text = " ".join(f"supercalifragilistic{n}" for n in range(200))
    chunks = chunk_text(text, chunk_size=100, overlap=30)
    words = set(text.split())
    for chunk in chunks:
        assert set(chunk.split()) <= words


def test_one_huge_word_terminates_and_covers_the_text() -> None:
    text = "".join(str(n % 10) for n in range(10_000))
    chunks = chunk_text(text, chunk_size=1000, overlap=200)
    assert all(len(chunk) == 1000 or chunk == chunks[-1] for chunk in chunks)
    assert chunks[0] == text[:1000]
    assert chunks[-1] == text[-len(chunks[-1]) :]
    # Character overlap: each chunk starts 200 characters before the previous one ended.
    assert chunks[1] == text[800:1800]
    assert len(chunks) == 13


def test_huge_word_with_maximal_overlap_terminates() -> None:
    chunks = chunk_text("z" * 2000, chunk_size=10, overlap=9)
    assert len(chunks) == 1991
    assert all(chunk == "z" * 10 for chunk in chunks)


def test_long_sample_document_yields_several_chunks() -> None:
    doc = samples.sample_documents()[0]
    text = extract_text(doc.data, doc.file_name, doc.mime_type)
    chunks = chunk_text(text)
    assert len(chunks) > 1
    assert doc.topic_sentence in " ".join(chunks[0].split())


@pytest.mark.parametrize(
    ("chunk_size", "overlap"), [(0, 0), (-5, 0), (100, -1), (100, 100), (100, 150)]
)
def test_invalid_arguments_raise_value_error(chunk_size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk_size|overlap"):
        chunk_text("some text", chunk_size=chunk_size, overlap=overlap)
