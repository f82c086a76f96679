"""Chunking: characters (the hashing fallback) and the model's tokens (no truncation,
token overlap, whole words, one section per chunk, heading prefix)."""

from __future__ import annotations

import random
import re

import pytest

from devtools import samples
from ingest.pipeline.chunking import Chunk, chunk_blocks, chunk_blocks_by_chars, chunk_text
from ingest.pipeline.extract import extract_blocks, extract_text
from ingest.pipeline.formats.base import Block
from ingest.pipeline.tokens import ModelTokenizer, minilm_tokenizer

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


# --- token-aware chunks (the real all-MiniLM-L6-v2 tokenizer) -----------------------------

TECH = ("kubectl", "rollout", "restart", "deployment/ingress-nginx", "--namespace=edge",
        "TLS_HANDSHAKE_TIMEOUT=30s", "0x7f3a9c2e", "p99-latency", "µs", "naïve", "re-index",
        "PostgreSQL", "WAL-segments", "fsync()", "ß-Straße", "Überprüfung", "idempotency-key",
        "sha256:9f86d081884c7d659a2feaa0c55ad015", "[ERROR]", "{\"retry\":3}", "↔")  # fmt: skip
URLS = ("https://docs.example.com/runbooks/edge/ingress?tab=rollback&lang=en#step-4",
        "s3://kb-ingest/companies/42/bots/7/2026/11/29/report-final-v3.pdf")
CJK = "東京大学の研究者は新しい検索方式を発表した。한국어 문장도 포함됩니다。混合テキスト"
CODE = ("def handler(event, context):\n    return {'statusCode': 200, 'body': json.dumps(x)}\n"
        "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }\n")
TABLE = "| host | port | owner |\n|---|---|---|\n| db-01.internal | 5432 | payments |\n"


@pytest.fixture(scope="module")
def tok() -> ModelTokenizer:
    return minilm_tokenizer()


def _generated(seed: int) -> str:
    """Dense, varied text: technical prose, URLs, CJK, code, tables and long words."""
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(rng.randint(3, 25)):
        kind = rng.random()
        if kind < 0.45:
            words = [rng.choice(TECH + WORDS) for _ in range(rng.randint(5, 160))]
            paragraphs.append(" ".join(words) + ".")
        elif kind < 0.55:
            paragraphs.append(" ".join(rng.choice(URLS) for _ in range(rng.randint(1, 30))))
        elif kind < 0.65:
            paragraphs.append(CJK * rng.randint(1, 12))
        elif kind < 0.75:
            paragraphs.append(CODE * rng.randint(1, 8))
        elif kind < 0.85:
            paragraphs.append(TABLE * rng.randint(1, 20))
        else:  # one word longer than the whole window
            paragraphs.append("".join(rng.choice("abcdefghij0123456789") for _ in
                                      range(rng.randint(300, 3000))))
    return "\n\n".join(paragraphs)


def _body(chunk: Chunk) -> str:
    return chunk.text.removeprefix(f"{chunk.section}\n\n") if chunk.section else chunk.text


@pytest.mark.parametrize("max_tokens", [0, 128, 64])
def test_no_token_chunk_exceeds_the_window_with_specials_and_heading(
        tok: ModelTokenizer, max_tokens: int) -> None:
    limit = max_tokens or tok.window
    assert tok.window == 256  # read from the model's sentence_bert_config.json
    headings = [None, "Rollback", "Ingress controller upgrade: every step in order " * 20]
    for seed in range(40):
        blocks = [Block(_generated(seed), headings[seed % 3], seed % 4 or None)]
        chunks = chunk_blocks(blocks, tok, max_tokens, overlap=min(32, limit // 4))
        assert chunks
        for chunk in chunks:
            assert tok.count(chunk.text) <= limit, chunk.text[:200]
            assert chunk.text == chunk.text.strip()


def test_the_model_reads_every_chunk_whole(tok: ModelTokenizer) -> None:
    """Embedding a chunk with the model's window equals embedding it with a window raised to
    512 (its position limit): nothing was truncated. Today's character chunks of the same
    text fail this check."""
    from ingest.pipeline.embedding import get_embedder

    model = get_embedder("minilm").model  # type: ignore[attr-defined]
    text = "\n\n".join(_generated(seed) for seed in (3, 11))
    new = [c.text for c in chunk_blocks([Block(text, "Edge runbook")], tok)]
    old = chunk_text(text, 1000, 200)

    def truncated(chunks: list[str]) -> list[bool]:
        window = model.max_seq_length
        try:
            short = model.encode(chunks, normalize_embeddings=True)
            model.max_seq_length = 512  # its position embeddings
            whole = model.encode(chunks, normalize_embeddings=True)
        finally:
            model.max_seq_length = window
        return [a != pytest.approx(b, abs=1e-5) for a, b in zip(short, whole, strict=True)]

    assert not any(truncated(new))
    assert any(truncated(old))  # the check would catch today's chunker
    for chunk in new:  # and the model's own tokenizer, truncation off, agrees
        assert len(model.tokenizer(chunk, truncation=False)["input_ids"]) <= model.max_seq_length


def test_consecutive_token_chunks_overlap_from_a_sentence_start(tok: ModelTokenizer) -> None:
    text = _prose(3000)
    sentences = [s for p in text.split("\n\n") for s in re.split(r"(?<=[.?!]) ", p)]
    chunks = chunk_blocks([Block(text)], tok, overlap=32)
    assert len(chunks) >= 5
    overlapping = 0
    for previous, following in zip(chunks, chunks[1:], strict=False):
        assert any(following.text.startswith(s) for s in sentences)  # never mid-sentence
        shared = _shared_length(previous.text, following.text)
        assert len(tok.encode(following.text[:shared]).ids) <= 2 * 32
        overlapping += shared > 0
    assert overlapping >= len(chunks) // 2  # the overlap is there, not given up
    # every sentence short enough to fit is whole in some chunk
    assert all(any(s in c.text for c in chunks) for s in sentences)


def test_zero_token_overlap_partitions_the_words(tok: ModelTokenizer) -> None:
    text = _prose(3000)
    chunks = chunk_blocks([Block(text)], tok, overlap=0)
    assert " ".join(c.text for c in chunks).split() == text.split()


def test_token_chunks_cut_only_between_words(tok: ModelTokenizer) -> None:
    text = _prose(3000, seed=3)  # every word unique: each chunk has one place in the text
    for chunk in chunk_blocks([Block(text)], tok, max_tokens=100, overlap=20):
        start = text.index(chunk.text)
        end = start + len(chunk.text)
        assert start == 0 or text[start - 1].isspace()
        assert end == len(text) or text[end].isspace()


def test_token_chunks_prefer_paragraph_then_sentence_breaks(tok: ModelTokenizer) -> None:
    paragraphs = "\n\n".join(f"Paragraph {n} " + "word " * 60 for n in range(8))
    assert all(c.text.startswith("Paragraph") and c.text.endswith("word")
               for c in chunk_blocks([Block(paragraphs)], tok, overlap=0))
    sentences = " ".join(f"Sentence number {n} talks about topic {n} in detail." for n in
                         range(120))
    assert all(c.text.endswith(".") for c in chunk_blocks([Block(sentences)], tok, overlap=0))


def test_only_a_word_longer_than_the_window_is_split(tok: ModelTokenizer) -> None:
    # WordPiece reads a run of letters over 100 characters as one [UNK]; a whitespace-free
    # run with punctuation (a URL, a path) is many words of the tokenizer and can be long.
    assert len(tok.encode("x" * 3000).ids) == 1
    giant = ".".join(f"seg{n}qx" for n in range(600))
    text = f"before the giant {giant} after the giant"
    chunks = chunk_blocks([Block(text)], tok, overlap=32)
    assert len(chunks) > 3
    assert all(tok.count(c.text) <= tok.window for c in chunks)
    assert chunks[0].text == "before the giant"  # the word is not glued to its neighbours
    assert chunks[-1].text.endswith("after the giant")
    assert giant in "".join(c.text for c in chunks if c.text not in ("before the giant",))


def test_cjk_text_without_spaces_is_cut_between_characters(tok: ModelTokenizer) -> None:
    text = "東京大学の研究者は新しい検索方式を発表した" * 60
    chunks = chunk_blocks([Block(text)], tok, overlap=0)
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks) == text
    assert all(tok.count(c.text) <= tok.window for c in chunks)


def test_sections_are_never_mixed_and_each_chunk_carries_its_heading(tok: ModelTokenizer) -> None:
    blocks = [Block(_prose(700, seed=1)), Block(_prose(40, seed=2), "Install", 1),
              Block(_prose(900, seed=3), "Install", 1), Block(_prose(500, seed=4), "Rollback", 2)]
    chunks = chunk_blocks(blocks, tok)
    words = {(b.section, b.page): set() for b in blocks}
    for block in blocks:
        words[(block.section, block.page)] |= set(block.text.split())
    assert [c.section for c in chunks][0] is None
    assert {(c.section, c.page) for c in chunks} == set(words)
    for chunk in chunks:
        if chunk.section:
            assert chunk.text.startswith(f"{chunk.section}\n\n")
        assert set(_body(chunk).split()) <= words[(chunk.section, chunk.page)]
    # consecutive blocks of one section are chunked together (not one tiny chunk each)
    install = [c for c in chunks if c.section == "Install"]
    assert tok.count(install[0].text) > tok.window // 2


def test_invalid_token_arguments_raise_value_error(tok: ModelTokenizer) -> None:
    for max_tokens, overlap in [(0, 128), (64, 40), (8, 0), (0, -1)]:
        with pytest.raises(ValueError, match="max_tokens|overlap"):
            chunk_blocks([Block("text")], tok, max_tokens, overlap)


def test_hashing_fallback_chunks_by_characters_and_keeps_sections() -> None:
    blocks = [Block(_prose(900, seed=5), "Payroll", 3), Block(_prose(900, seed=6), "Leave")]
    chunks = chunk_blocks_by_chars(blocks, chunk_size=400, overlap=50)
    assert len(chunks) > 6
    assert all(len(c.text) <= 400 for c in chunks)
    assert {(c.section, c.page) for c in chunks} == {("Payroll", 3), ("Leave", None)}
    assert all(c.text.startswith(f"{c.section}\n\n") for c in chunks)


# --- sections from the extractors ---------------------------------------------------------


def test_markdown_headings_become_sections() -> None:
    text = ("Intro line.\n\n# Install\n\nRun the installer.\n\n```\n# not a heading\n```\n\n"
            "Setup guide\n===========\n\nClick next.\n\n## Empty\n## Rollback ##\nUndo it.\n")
    blocks = extract_blocks(text.encode(), "guide.md")
    assert [(b.section, b.text) for b in blocks] == [
        (None, "Intro line."),
        ("Install", "Run the installer.\n\n```\n# not a heading\n```"),
        ("Setup guide", "Click next."),
        ("Empty", "Empty"),
        ("Rollback", "Undo it."),
    ]


def test_html_headings_become_sections() -> None:
    page = (b"<html><head><title>Handbook</title></head><body><p>Welcome.</p>"
            b"<h2>Parking <em>rules</em></h2><p>Show the permit.</p><div>Level -2.</div>"
            b"<h3>Bikes</h3><p>Racks at the back.</p></body></html>")
    blocks = extract_blocks(page, "handbook.html")
    assert [(b.section, b.text) for b in blocks] == [
        (None, "Handbook\n\nWelcome."),
        ("Parking rules", "Show the permit.\n\nLevel -2."),
        ("Parking rules > Bikes", "Racks at the back."),  # the heading path
    ]


def test_docx_heading_styles_become_sections() -> None:
    import io

    from docx import Document

    document = Document()
    document.add_paragraph("Preamble.")
    document.add_heading("Travel policy", level=1)
    document.add_paragraph("Book trains over flights.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "Budget", "120 EUR"
    document.add_heading("Expenses", level=2)
    document.add_paragraph("Submit receipts monthly.")
    buffer = io.BytesIO()
    document.save(buffer)
    blocks = extract_blocks(buffer.getvalue(), "policy.docx")
    assert [(b.section, b.text) for b in blocks] == [
        (None, "Preamble."),
        ("Travel policy", "Book trains over flights.\n\nBudget | 120 EUR"),
        ("Expenses", "Submit receipts monthly."),
    ]


# --- records (CSV rows, JSON objects) -----------------------------------------------------


def test_csv_rows_are_chunked_one_row_each(tok: ModelTokenizer) -> None:
    rows = [["project", "attribute", "value"]] + [[f"P{n}", "room", f"R{n:03d}"]
                                                  for n in range(40)]
    blocks = extract_blocks(samples.make_csv(rows), "register.csv")
    chunks = chunk_blocks(blocks, tok)
    assert [c.text for c in chunks] == [f"project: P{n}\nattribute: room\nvalue: R{n:03d}"
                                        for n in range(40)]


def test_records_pack_whole_up_to_record_tokens(tok: ModelTokenizer) -> None:
    rows = [["project", "attribute", "value"]] + [[f"P{n}", "room", f"R{n:03d}"]
                                                  for n in range(40)]
    blocks = extract_blocks(samples.make_csv(rows), "register.csv")
    chunks = chunk_blocks(blocks, tok, record_tokens=64)
    assert 1 < len(chunks) < 40
    assert all(len(tok.encode(c.text).ids) <= 64 for c in chunks)
    rows = [row for c in chunks for row in c.text.split("\n\n")]
    assert rows == blocks[0].text.split("\n\n")  # whole rows, in order, no overlap


def test_json_leaves_of_one_object_form_one_record(tok: ModelTokenizer) -> None:
    data = samples.make_json({"staff": [{"name": f"N{n}", "desk": f"D{n}"} for n in range(5)]})
    chunks = chunk_blocks(extract_blocks(data, "staff.json"), tok)
    assert [c.text for c in chunks] == [f"name: N{n}\ndesk: D{n}" for n in range(5)]


def test_prose_with_colons_is_not_taken_for_records(tok: ModelTokenizer) -> None:
    text = "Note: the deadline moved.\n\nTip: ask early.\n\nWarning: " + _prose(400)
    chunks = chunk_blocks([Block(text)], tok)
    assert chunks[0].text.startswith("Note: the deadline moved.\n\nTip: ask early.")


@pytest.mark.parametrize(("env", "named"), [
    ({"CHUNK_TOKENS": "20"}, "CHUNK_TOKENS"),
    ({"CHUNK_TOKENS": "128", "CHUNK_OVERLAP_TOKENS": "64"}, "CHUNK_OVERLAP_TOKENS"),
    ({"CHUNK_OVERLAP_TOKENS": "-1"}, "CHUNK_OVERLAP_TOKENS"),
    ({"CHUNK_RECORD_TOKENS": "-5"}, "CHUNK_RECORD_TOKENS"),
])
def test_bad_token_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch,
                                              env: dict[str, str], named: str) -> None:
    from ingest.settings import SettingsError, load_settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_a_heading_without_a_body_is_not_repeated(tok: ModelTokenizer) -> None:
    blocks = extract_blocks(b"# Title\n\n## Parking\n\nShow the permit.\n", "h.md")
    chunks = chunk_blocks(blocks, tok)
    assert [(c.section, c.text) for c in chunks] == [
        ("Title", "Title"), ("Parking", "Parking\n\nShow the permit.")]
    assert [c.text for c in chunk_blocks_by_chars(blocks)] == ["Title",
                                                               "Parking\n\nShow the permit."]


def test_xml_elements_and_xlsx_rows_are_records(tok: ModelTokenizer) -> None:
    records = [{"project": f"P{n}", "room": f"R{n}"} for n in range(4)]
    chunks = chunk_blocks(extract_blocks(samples.make_xml("register", records), "r.xml"), tok)
    assert [c.text for c in chunks] == [
        f"id: {n + 1}\nproject: P{n}\nroom: R{n}" for n in range(4)]
    sheet = [["project", "room"]] + [[f"P{n}", f"R{n}"] for n in range(4)]
    chunks = chunk_blocks(extract_blocks(samples.make_xlsx({"Rooms": sheet}), "r.xlsx"), tok)
    assert [(c.text, c.section, c.page) for c in chunks] == [
        (f"Rooms\n\nproject: P{n}\nroom: R{n}", "Rooms", 1) for n in range(4)]
