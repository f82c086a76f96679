"""Retrieval quality of the old chunking (characters) against the new (tokens, headings).

Generates a corpus of documents in every format ``devtools.samples`` can make (one entry per
format in :func:`_formats`; a format whose sample maker or extractor is missing is skipped
with a note). Each document buries known, unique facts ("The access code for the Falcon
project is 4821-QX.") in filler prose of varied length that names the same projects and
attributes; tabular documents (CSV, JSON, XLSX, XML) hold them as rows among rows of the
same shape. One question per fact is embedded with the real all-MiniLM-L6-v2 and asked of
an in-process Chroma collection per chunking; a hit is a retrieved chunk holding the
fact's value. Both chunkings cut the same extracted blocks, in one run:

- old: ``chunk_text`` of the joined text, 1000/200 characters, no headings;
- new: ``chunk_blocks`` with the model's tokenizer (overlap a quarter of the size, one
  record per chunk), at the model's window (256), at 128, 64, 48 and 32 tokens.

Chroma's collection is configured as kb-ingest configures its own (``HNSW`` in
``ingest/adapters/vectors.py``).

Filler sentences name the document's own projects (80 %) or any other project (20 %).

    .venv/bin/python bench/retrieval.py [--docs 220] [--seed 12]      (make bench-retrieval)
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from devtools import samples
from ingest.adapters.vectors import HNSW
from ingest.errors import ProcessingError
from ingest.pipeline.chunking import chunk_blocks, chunk_text
from ingest.pipeline.extract import extract_blocks
from ingest.pipeline.formats.base import Block
from ingest.pipeline.tokens import minilm_tokenizer
from ingest.settings import Settings


def _words(text: str, separator: str | None = None) -> list[str]:
    return text.split(separator)


PROJECTS = _words("""
Falcon Heron Osprey Kestrel Condor Pelican Puffin Albatross Cormorant Egret Ibis
Kingfisher Lapwing Magpie Nightjar Oriole Plover Quail Raven Sparrow Swift Tern Vulture Warbler
Wren Avocet Bittern Bunting Curlew Dipper Dunlin Finch Gannet Godwit Grebe Harrier Hobby Jackdaw
Kite Linnet Merlin Nuthatch Ouzel Peregrine Pipit Rook Sanderling Shrike Siskin Skua Snipe
Starling Stonechat Swallow Teal Thrush Turnstone Wagtail Whimbrel Wigeon Woodcock Yellowhammer
Amber Basalt Cobalt Dolomite Emerald Feldspar Garnet Hematite Jasper Kyanite Lapis Malachite
Obsidian Onyx Opal Pyrite Quartz Ruby Sapphire Topaz Tourmaline Zircon Agate Beryl Citrine
Andes Alps Atlas Carpathian Dolomites Himalaya Pyrenees Rockies Sierra Tatra Ural Vosges
Danube Elbe Ganges Indus Loire Mekong Nile Oder Rhine Rhone Seine Tagus Thames Volga Yukon
Altair Antares Arcturus Bellatrix Betelgeuse Canopus Capella Castor Deneb Fomalhaut Mira Mizar
Polaris Pollux Procyon Regulus Rigel Sirius Spica Vega Aldebaran Achernar Hadar Mimosa Shaula
Acacia Birch Cedar Cypress Elm Hazel Hemlock Juniper Larch Linden Maple Oak Poplar Rowan Spruce
Sycamore Willow Yew Alder Aspen Baobab Banyan Cork Ebony Fir Ginkgo Holly Laurel Magnolia Olive
""")

FIRST = _words("Ana Bela Carl Dmitri Elena Farid Greta Hiro Ines Jonas Kaito Lena Marta Nils Omar")
LAST = _words("Berg Costa Duarte Eklund Fischer Garcia Haas Ito Jansen Kowalski Lindqvist Moreau")
CITIES = _words("Lisbon Porto Madrid Berlin Hamburg Munich Vienna Zurich Lyon Milan Turin Oslo "
          "Bergen Gdansk Krakow Prague Brno Ghent Leeds Cork")
VENDORS = _words("Northwind Sensorik, Helix Instruments, Quanta Devices, Orbital Metrics, "
                 "Vantor Labs, "
           "Brightline Systems, Kestrel Optics, Meridian Controls, Polar Circuits, Tessera "
           "Industrial", ", ")


def _code(rng: random.Random) -> str:
    return f"{rng.randint(1000, 9999)}-{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}" \
           f"{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}"


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}-{rng.randint(10, 99)}"


# (attribute, statement, question, value maker): each (project, attribute) is asked once.
ATTRIBUTES: list[tuple[str, str, str, Callable[[random.Random], str]]] = [
    ("access code", "The access code for the {p} project is {v}.",
     "What is the access code for the {p} project?", _code),
    ("budget owner", "The budget owner of the {p} project is {v}.",
     "Who is the budget owner of the {p} project?", _name),
    ("launch date", "The {p} project launches on {v}.", "When does the {p} project launch?",
     lambda r: f"{r.randint(1, 28)} {r.choice(['March', 'May', 'July', 'October'])} "
               f"{r.randint(2027, 2039)}"),
    ("server room", "The servers of the {p} project stand in room {v}.",
     "In which room are the servers of the {p} project?",
     lambda r: f"{r.choice('BCDFGK')}{r.randint(100, 999)}"),
    ("sensor vendor", "The {p} project buys its sensors from {v}.",
     "Which vendor supplies the sensors of the {p} project?",
     lambda r: f"{r.choice(VENDORS)} {r.choice(['GmbH', 'Ltd', 'SA', 'AB', 'BV'])} "
               f"{r.randint(2, 98)}"),
    ("support hotline", "The support hotline of the {p} project is {v}.",
     "What is the support hotline number of the {p} project?",
     lambda r: f"+351 21 {r.randint(100, 999)} {r.randint(1000, 9999)}"),
    ("annual budget", "The {p} project has an annual budget of {v}.",
     "What is the annual budget of the {p} project?",
     lambda r: f"EUR {r.randint(11, 989)},{r.randint(100, 999)}"),
    ("home office", "The {p} project team works from the office at {v}.",
     "Which office does the {p} project team work from?",
     lambda r: f"{r.choice(CITIES)} building {r.randint(2, 60)}"),
]
# Row-shaped filler of tabular documents: same projects, attributes never asked about.
FILLER_ATTRIBUTES = ("parking spaces", "licence seats", "backup window", "audit cycle",
                     "printer quota", "insurance class")

FILLER = [
    "The {p} team reviewed the quarterly roadmap with the steering committee and agreed to "
    "revisit the staffing plan after the next release.",
    "Procurement reminded every project, {p} included, that purchase orders above the "
    "threshold need a second signature from finance.",
    "During the retrospective the {p} engineers noted that the integration tests took too "
    "long and proposed splitting them into smaller suites.",
    "Facilities will repaint the corridors near the {p} area over the weekend, so desks "
    "should be cleared by Friday evening.",
    "The security office asked all teams to rotate credentials regularly; the {p} project "
    "confirmed its rotation schedule is documented in the wiki.",
    "Budget discussions for {p} continue next month, once the revised forecasts from the "
    "regional offices have been consolidated.",
    "Customers of the {p} pilot asked for clearer onboarding material, and the documentation "
    "group will draft a short guide with screenshots.",
    "The hardware refresh delayed several projects; {p} expects its replacement laptops to "
    "arrive in two shipments.",
    "An external auditor will visit the {p} project to sample expense reports and check the "
    "approval trail against the policy.",
    "Vendors presenting to {p} must register at reception and wear a visitor badge at all "
    "times while on the premises.",
    "Support volumes for {p} rose after the holiday period, mostly password resets and "
    "questions about the new reporting dashboard.",
    "The data protection officer reminded the {p} team that exports of customer records "
    "require a ticket and a documented purpose.",
]
HEADINGS = ["Overview", "Status update", "Operations", "Contacts and access", "Budget notes",
            "Infrastructure", "Schedule", "Suppliers", "Open questions", "Appendix"]


@dataclass
class Fact:
    project: str
    attribute: str
    statement: str
    question: str
    value: str
    doc: str = ""


@dataclass
class Doc:
    """A generated document: sections of paragraphs (prose) or records (tabular)."""

    title: str
    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    records: list[dict[str, str]] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)

    def paragraphs(self) -> list[str]:
        return [p for _, ps in self.sections for p in ps]

    def text(self, headings: bool = True) -> str:
        parts = [self.title]
        for heading, paragraphs in self.sections:
            parts += ([heading] if headings else []) + paragraphs
        return "\n\n".join(parts)


# --- format table: (label, extension, maker or None, tabular?) ----------------------------


def _docx(doc: Doc) -> bytes:
    from docx import Document

    document = Document()
    document.add_heading(doc.title, level=0)
    for heading, paragraphs in doc.sections:
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _html(doc: Doc) -> bytes:
    import html

    body = "".join(f"<h2>{html.escape(h)}</h2>" + "".join(f"<p>{html.escape(p)}</p>" for p in ps)
                   for h, ps in doc.sections)
    return (f"<html><head><title>{html.escape(doc.title)}</title></head><body>"
            f"<h1>{html.escape(doc.title)}</h1>{body}</body></html>").encode()


def _md(doc: Doc) -> bytes:
    return samples.make_md(f"# {doc.title}\n\n" + "\n\n".join(
        f"## {h}\n\n" + "\n\n".join(ps) for h, ps in doc.sections))


def _rows(doc: Doc) -> list[list[str]]:
    header = list(doc.records[0])
    return [header] + [[r[k] for k in header] for r in doc.records]


def _maker(name: str) -> Callable[..., bytes] | None:
    return getattr(samples, name, None)


def _formats() -> list[tuple[str, str, Callable[[Doc], bytes] | None, bool]]:
    m = _maker
    return [
        ("txt", ".txt", lambda d: samples.make_txt(d.text()), False),
        ("md", ".md", _md, False),
        ("html", ".html", _html, False),
        ("docx", ".docx", _docx, False),
        ("pdf", ".pdf", lambda d: samples.make_pdf(d.text()), False),
        ("csv", ".csv", lambda d: samples.make_csv(_rows(d)), True),
        ("json", ".json", lambda d: samples.make_json({"title": d.title,
                                                       "records": d.records}), True),
        ("pptx", ".pptx", m("make_pptx") and (lambda d: m("make_pptx")(
            [{"title": h, "bullets": ps} for h, ps in d.sections])), False),
        ("xlsx", ".xlsx", m("make_xlsx") and (lambda d: m("make_xlsx")(
            {"Register": _rows(d)})), True),
        ("odt", ".odt", m("make_odt") and (lambda d: m("make_odt")(
            [it for h, ps in d.sections for it in [("h", h)] + [("p", p) for p in ps]])), False),
        ("rtf", ".rtf", m("make_rtf") and (lambda d: m("make_rtf")(d.text().split("\n\n"))),
         False),
        ("epub", ".epub", m("make_epub") and (lambda d: m("make_epub")(
            d.title, [(h, "\n\n".join(ps)) for h, ps in d.sections])), False),
        ("eml", ".eml", m("make_eml") and (lambda d: m("make_eml")(d.title, d.text())), False),
        ("msg", ".msg", m("make_msg") and (lambda d: m("make_msg")(d.title, d.text())), False),
        ("xml", ".xml", m("make_xml") and (lambda d: m("make_xml")("register", d.records)),
         True),
        ("png", ".png", m("make_png_of_text") and (lambda d: m("make_png_of_text")(
            d.text())), False),
        ("scanned-pdf", ".pdf", m("make_scanned_pdf") and (lambda d: m("make_scanned_pdf")(
            [d.text()])), False),
    ]


OCR_LABELS = {"png", "scanned-pdf"}  # slow (Tesseract): short documents, a few of them


# --- corpus -------------------------------------------------------------------------------


def build_corpus(n_docs: int, rng: random.Random, labels: list[str]) -> list[tuple[str, Doc]]:
    """``n_docs`` documents spread over ``labels`` (round robin), facts unique."""
    combos = [(p, a) for p in PROJECTS for a in range(len(ATTRIBUTES))]
    rng.shuffle(combos)
    values: set[str] = set()

    def fact() -> Fact:
        project, index = combos.pop()
        attribute, statement, question, maker = ATTRIBUTES[index]
        while (value := maker(rng)) in values:
            pass
        values.add(value)
        return Fact(project, attribute, statement.format(p=project, v=value),
                    question.format(p=project), value)

    docs = []
    for number in range(n_docs):
        label = labels[number % len(labels)]
        ocr = label in OCR_LABELS
        doc = Doc(title=f"{rng.choice(['Quarterly', 'Programme', 'Team', 'Site'])} report "
                        f"{number:03d}")
        doc.facts = [fact() for _ in range(2 if ocr else rng.randint(2, 4))]
        if label in TABULAR:
            doc.records = _records(doc.facts, rng)
        else:
            doc.sections = _sections(doc.facts, rng, short=ocr)
        docs.append((label, doc))
    return docs


TABULAR: set[str] = set()


def _records(facts: list[Fact], rng: random.Random) -> list[dict[str, str]]:
    rows = [{"project": f.project, "attribute": f.attribute, "value": f.value,
             "reviewed": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"}
            for f in facts]
    for _ in range(rng.randint(15, 60)):
        rows.append({"project": rng.choice(PROJECTS), "attribute": rng.choice(FILLER_ATTRIBUTES),
                     "value": str(rng.randint(2, 400)),
                     "reviewed": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"})
    rng.shuffle(rows)
    return rows


def _sections(facts: list[Fact], rng: random.Random, short: bool) -> list[tuple[str, list[str]]]:
    """Filler paragraphs (varied length, naming other projects) with the facts buried."""
    n_paragraphs = rng.randint(2, 3) if short else rng.choice([4, 8, 16, 30, 45])
    own = [f.project for f in facts]
    paragraphs = []
    for _ in range(n_paragraphs):
        sentences = [rng.choice(FILLER).format(p=rng.choice(
            own if rng.random() < 0.8 else PROJECTS)) for _ in range(rng.randint(2, 6))]
        paragraphs.append(sentences)
    for f in facts:  # inside a paragraph, among the filler sentences
        sentences = rng.choice(paragraphs)
        sentences.insert(rng.randint(0, len(sentences)), f.statement)
    texts = [" ".join(s) for s in paragraphs]
    n_sections = max(1, min(len(HEADINGS), len(texts) // rng.randint(2, 5)))
    headings = rng.sample(HEADINGS, n_sections)
    cuts = sorted(rng.sample(range(1, len(texts)), n_sections - 1)) if n_sections > 1 else []
    bounds = [0, *cuts, len(texts)]
    return [(headings[i], texts[bounds[i]:bounds[i + 1]]) for i in range(n_sections)]


# --- retrieval ----------------------------------------------------------------------------


def evaluate(chunks: list[tuple[str, str]], facts: list[Fact], model, label: str,
             tokenizer) -> dict[str, float]:
    """Index (doc, text) chunks in an in-process Chroma; hit@1, hit@3, MRR@10 of the facts."""
    import chromadb

    client = chromadb.EphemeralClient()
    name = f"bench_{label}_{int(time.time() * 1000)}"
    collection = client.create_collection(name, configuration={"hnsw": HNSW})  # kb-ingest's
    started = time.perf_counter()
    vectors = model.encode([t for _, t in chunks], batch_size=32, normalize_embeddings=True)
    embed_seconds = time.perf_counter() - started
    for start in range(0, len(chunks), 2000):
        part = chunks[start:start + 2000]
        collection.add(ids=[str(start + i) for i in range(len(part))],
                       embeddings=[list(map(float, v)) for v in vectors[start:start + 2000]],
                       documents=[t for _, t in part], metadatas=[{"doc": d} for d, _ in part])
    questions = model.encode([f.question for f in facts], normalize_embeddings=True)
    found = collection.query(query_embeddings=[list(map(float, q)) for q in questions],
                             n_results=10, include=["documents", "metadatas"])
    ranks = []
    for f, texts, metas in zip(facts, found["documents"], found["metadatas"], strict=True):
        rank = next((n for n, (t, m) in enumerate(zip(texts, metas, strict=True), start=1)
                     if m["doc"] == f.doc and f.value in " ".join(t.split())), None)
        ranks.append(rank)
    client.delete_collection(name)
    counts = [len(tokenizer.encode(t).ids) + tokenizer.specials for _, t in chunks]
    return {
        "chunks": len(chunks),
        "hit@1": sum(r == 1 for r in ranks if r) / len(ranks),
        "hit@3": sum(r <= 3 for r in ranks if r) / len(ranks),
        "mrr": sum(1 / r for r in ranks if r) / len(ranks),
        "max_tokens": max(counts),
        "median_tokens": statistics.median(counts),
        "truncated": sum(c > tokenizer.window for c in counts) / len(counts),
        "embed_s": embed_seconds,
        "ranks": ranks,  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=220)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    formats = _formats()
    available, notes = [], []
    for label, extension, maker, tabular in formats:
        if maker is None:
            notes.append(f"{label}: skipped, devtools.samples has no sample maker yet")
            continue
        probe = Doc("probe", [("Probe", ["A probe paragraph about the Falcon project."])],
                    [{"project": "Falcon", "attribute": "probe", "value": "1"}])
        try:
            extract_blocks(maker(probe), f"probe{extension}")
        except ProcessingError as exc:
            notes.append(f"{label}: skipped, not extracted here ({str(exc)[:80]})")
            continue
        available.append((label, extension, maker))
        if tabular:
            TABULAR.add(label)
    labels = [label for label, _, _ in available]
    corpus = build_corpus(args.docs, rng, labels)

    from ingest.pipeline.embedding import get_embedder

    model = get_embedder("minilm").model  # type: ignore[attr-defined]
    tokenizer = minilm_tokenizer()
    makers = {label: (extension, maker) for label, extension, maker in available}
    default = Settings().chunk_tokens
    variants = {f"new {t} tok{' (default)' if t == default else ''}": (t, 0)
                for t in (256, 128, 64, 48, 40, 32)}
    old: list[tuple[str, str]] = []
    new: dict[str, list[tuple[str, str]]] = {v: [] for v in variants}
    facts: list[Fact] = []
    fact_format: dict[int, str] = {}
    started = time.perf_counter()
    for number, (label, doc) in enumerate(corpus):
        extension, maker = makers[label]
        name = f"doc{number:03d}{extension}"
        blocks: list[Block] = extract_blocks(maker(doc), name)
        text = "\n\n".join(b.text for b in blocks)
        old += [(name, c) for c in chunk_text(text, 1000, 200)]
        for variant, (max_tokens, record_tokens) in variants.items():
            new[variant] += [(name, c.text) for c in chunk_blocks(
                blocks, tokenizer, max_tokens, max_tokens // 4, record_tokens)]
        for f in doc.facts:
            f.doc = name
            fact_format[len(facts)] = label
            facts.append(f)
    print(f"corpus: {len(corpus)} documents, {len(facts)} facts/questions, formats: "
          f"{', '.join(labels)} (made and extracted in {time.perf_counter() - started:.0f} s)")
    for note in notes:
        print(f"  note: {note}")

    results = {"old 1000/200 chars": evaluate(old, facts, model, "old", tokenizer)}
    for number, (variant, chunks) in enumerate(new.items()):
        results[variant] = evaluate(chunks, facts, model, f"new{number}", tokenizer)
    print(f"\n{'chunking':<26}{'chunks':>7}{'hit@1':>7}{'hit@3':>7}{'MRR':>7}"
          f"{'max tok':>8}{'median':>7}{'> window':>9}")
    for name, r in results.items():
        print(f"{name:<26}{r['chunks']:>7}{r['hit@1']:>7.3f}{r['hit@3']:>7.3f}{r['mrr']:>7.3f}"
              f"{r['max_tokens']:>8}{r['median_tokens']:>7.0f}{r['truncated']:>9.1%}")
    print(f"\nhit@3 per format ({' | '.join(results)}), {len(facts)} questions:")
    per: dict[str, list[int]] = defaultdict(list)
    for index, label in fact_format.items():
        per[label].append(index)
    for label in labels:
        line = []
        for r in results.values():
            ranks = [r["ranks"][i] for i in per[label]]  # type: ignore[index]
            line.append(f"{sum(1 for k in ranks if k and k <= 3) / len(ranks):.3f}")
        print(f"  {label:<12} {' | '.join(line)}  ({len(per[label])} questions)")


if __name__ == "__main__":
    main()
