"""The formats of issue 12 (PPTX, XLSX, ODT, RTF, EPUB, EML, MSG, XML): text, order,
sections and pages of real generated files; corrupt files, zip and XML bombs."""

from __future__ import annotations

import email
import email.policy
import io
import time
import zipfile
from email.message import EmailMessage
from pathlib import Path

import olefile
import pytest

from devtools import samples
from devtools.cfb import write_cfb
from ingest.errors import ProcessingError
from ingest.mail.render import SUGGESTIONS
from ingest.pipeline.extract import SUPPORTED_EXTENSIONS, extract_blocks, extract_text
from ingest.pipeline.formats.base import Block, ExtractLimits


def _blocks(doc: samples.SampleDocument) -> list[Block]:
    return extract_blocks(doc.data, doc.file_name, doc.mime_type)


def _sample(extension: str) -> samples.SampleDocument:
    (doc,) = [d for d in samples.format_samples() if d.file_name.endswith(extension)]
    return doc


# --- text, order, sections, pages ---------------------------------------------------------


def test_pptx_slides_in_order_with_titles_tables_groups_and_notes() -> None:
    blocks = _blocks(_sample(".pptx"))
    assert [(b.section, b.page) for b in blocks] == [
        ("Q3 Sales Kickoff", 1), ("Regional targets", 2), ("Regional targets", 2),
        ("Incentives", 3)]
    assert "Welcome to the third-quarter kickoff" in blocks[0].text
    assert samples.SALES_SENTENCE in blocks[1].text
    assert "Nordics | 4.2 M EUR" in blocks[1].text  # a table row
    assert blocks[2].text == ("Notes: Remind the Benelux team that partner deals count at "
                              "half value.")
    assert "President's club trip to Lisbon\nTop seller" in blocks[3].text  # grouped shapes
    assert all(b.section not in b.text for b in blocks)  # the title is the section only


def test_xlsx_sheets_as_sections_with_header_aware_rows() -> None:
    desks, chairs = _blocks(_sample(".xlsx"))
    assert (desks.section, desks.page, chairs.section, chairs.page) == ("Desks", 1, "Chairs", 2)
    assert desks.text.split("\n\n")[0] == (
        f"Product: Orion X2 standing desk\nUnit price (EUR): 649\nNotes: {samples.PRICE_SENTENCE}")
    assert chairs.text == "Product: Vega ergonomic chair\nUnit price (EUR): 299"
    # The formula cell was saved without a cached value: skipped, never shown as "=SUM(...)".
    assert desks.text.split("\n\n")[-1] == "Product: Total"
    assert "SUM" not in desks.text


def test_xlsx_formula_gives_its_cached_value() -> None:
    data = samples.make_xlsx({"Desks": samples.PRICE_SHEETS["Desks"]})
    formula = b"<f>SUM(B2:B3)</f>"  # saved by openpyxl with an empty value; Excel caches one
    cached = _rewrite_member(data, "xl/worksheets/sheet1.xml", formula + b"<v></v>",
                             formula + b"<v>1038</v>")
    (block,) = extract_blocks(cached, "prices.xlsx")
    assert block.text.split("\n\n")[-1] == "Product: Total\nUnit price (EUR): 1038"


def _rewrite_member(data: bytes, name: str, old: bytes, new: bytes) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            member = source.read(info)
            if info.filename == name:
                assert old in member
                member = member.replace(old, new)
            target.writestr(info, member)
    return out.getvalue()


def test_xlsx_declaring_the_largest_sheet_size_is_read_as_it_is() -> None:
    """10,000 real rows: 0.5 s; padded to the declared 16,384 columns each, about 12 s."""
    rows = [["Product", "Price"]] + [[f"chair {n}", n] for n in range(10_000)]
    data = samples.make_xlsx({"Chairs": rows})
    huge = _rewrite_member(data, "xl/worksheets/sheet1.xml", b'<dimension ref="A1:B10001"/>',
                           b'<dimension ref="A1:XFD1048576"/>')
    started = time.monotonic()
    (block,) = extract_blocks(huge, "chairs.xlsx")
    assert time.monotonic() - started < 3
    assert block.text.split("\n\n")[-1] == "Product: chair 9999\nPrice: 9999"


def test_xlsx_rows_stop_at_the_character_limit() -> None:
    rows = [["Item", "Price"]] + [[f"item {n}", n] for n in range(5_000)]
    data = samples.make_xlsx({"Big": rows})
    with pytest.raises(ProcessingError, match="XLSX is too large"):
        extract_blocks(data, "big.xlsx", limits=ExtractLimits(max_chars=10_000))


def test_odt_headings_are_sections_over_paragraphs_lists_and_tables() -> None:
    blocks = _blocks(_sample(".odt"))
    assert [b.section for b in blocks] == ["Fire safety procedure", "When the alarm sounds",
                                           "Wardens per floor"]
    assert blocks[0].text == samples.FIRE_SENTENCE
    assert blocks[1].text.splitlines() == samples.FIRE_PROCEDURE[3][1]
    assert blocks[2].text.splitlines() == ["Floor | Warden", "Ground | Lena Berg",
                                           "First | Omar Haddad"]


def test_rtf_text_with_escapes_and_code_page() -> None:
    text = extract_text(_sample(".rtf").data, "note.rtf")
    assert text.splitlines() == [
        "Visitor Wi-Fi at the caf\u00e9 and the offices", samples.WIFI_SENTENCE,
        "Staff devices use the {corporate} network with their own credentials, never the "
        "guest one."]
    assert "metadata not text" not in text and "Helvetica" not in text


def test_epub_chapters_in_spine_order_with_heading_paths() -> None:
    blocks = _blocks(_sample(".epub"))
    assert [(b.section, b.page) for b in blocks] == [
        ("The early years", 1), ("Growth > Going abroad", 2), ("Growth > Going public", 2)]
    assert blocks[0].text.startswith(samples.HISTORY_SENTENCE)
    assert blocks[2].text == "Northwind listed on the Amsterdam exchange in 2004."


def test_xml_leaves_with_their_element_names() -> None:
    text = extract_text(_sample(".xml").data, "fleet.xml")
    assert f"fleet.vehicle.service: {samples.FLEET_SENTENCE}" in text.splitlines()
    assert "fleet.vehicle@id: 2" in text.splitlines()
    assert text.index("KB-101-X") < text.index("KB-204-Y")


def test_xml_mixed_content_keeps_its_text() -> None:
    text = extract_text(b"<doc><p>Refunds take <b>five</b> working days.</p></doc>", "a.xml")
    assert text.splitlines() == ["doc.p: Refunds take working days.", "doc.p.b: five"]


# --- e-mail -------------------------------------------------------------------------------


def test_eml_headers_body_and_attachments() -> None:
    blocks = _blocks(_sample(".eml"))
    subject = "All-hands moves to the Atrium"
    assert blocks[0] == Block("From: Dana Office <dana@example.com>\nTo: all-staff@example.com\n"
                              "Date: Mon, 03 Mar 2025 09:30:00 +0000\nSubject: " + subject,
                              subject)
    assert samples.ALL_HANDS_SENTENCE in blocks[1].text and blocks[1].section == subject
    assert blocks[2].section == "Attachment: agenda.txt"
    assert samples.AGENDA_SENTENCE in blocks[2].text
    assert blocks[3] == Block("Attachments not extracted: floorplan.bin", subject)


def test_eml_prefers_plain_text_and_falls_back_to_html() -> None:
    both = samples.make_eml("Menu", "Plain lunch menu.", html_body="<p>HTML lunch menu.</p>")
    assert "Plain lunch menu." in extract_text(both, "a.eml")
    assert "HTML lunch menu." not in extract_text(both, "a.eml")
    html_only = samples.make_eml("Menu", "", html_body=(
        "<html><head><style>p {color: red}</style></head><body><h2>Friday</h2>"
        "<p>Fish and chips.</p></body></html>"))
    blocks = extract_blocks(html_only, "a.eml")
    assert Block("Fish and chips.", "Friday") in blocks
    assert "color" not in extract_text(html_only, "a.eml")


def test_eml_attachments_nest_at_most_two_deep_and_bad_ones_are_listed() -> None:
    deepest = samples.make_eml("Level 2", "Body of the mail two levels down.",
                               [("deep.txt", "text/plain", b"Text three levels down.")])
    middle = EmailMessage()
    middle["Subject"], middle["From"] = "Level 1", "a@example.com"
    middle.set_content("Body of the attached mail.")
    middle.add_attachment(deepest, maintype="application", subtype="octet-stream",
                          filename="level2.eml")
    top = samples.make_eml("Level 0", "Top body.", [
        ("broken.pdf", "application/pdf", samples.make_corrupt_pdf()),
        ("empty.txt", "text/plain", b""),
    ])
    top_message = email.message_from_bytes(top, policy=email.policy.default)
    top_message.add_attachment(middle)  # a message/rfc822 part
    text = extract_text(bytes(top_message), "top.eml")
    assert "Body of the attached mail." in text
    assert "Body of the mail two levels down." in text
    assert "Text three levels down." not in text
    assert "Attachments not extracted: deep.txt" in text
    assert "Attachments not extracted: broken.pdf, empty.txt" in text


def test_msg_headers_body_and_attachments() -> None:
    blocks = _blocks(_sample(".msg"))
    subject = "Quarterly badge review"
    assert blocks[0] == Block("From: Sam Security <sam@example.com>\nTo: IT Operations\n"
                              "Date: Mon, 03 Mar 2025 09:30:00 +0000\nSubject: " + subject,
                              subject)
    assert samples.BADGE_SENTENCE in blocks[1].text
    assert blocks[2] == Block("step: Export badge log\nowner: Security\n\nstep: Revoke badges of "
                              "leavers within 24 hours\nowner: IT Operations",
                              "Attachment: checklist.csv")


def test_msg_8bit_properties_html_body_and_a_big_attachment() -> None:
    big = samples.make_docx(["Warehouse shelving inspection report."] + ["filler"] * 400)
    assert len(big) > 4096  # a regular stream, outside the mini stream
    data = write_cfb({
        "__properties_version1.0": b"\0" * 32,
        "__substg1.0_0037001E": "Shelving caf\xe9".encode("cp1252"),
        "__substg1.0_10130102": b"<html><body><h1>Report</h1><p>See attached.</p></body></html>",
        "__attach_version1.0_#00000000/__substg1.0_3704001E": b"REPORT.DOCX",
        "__attach_version1.0_#00000000/__substg1.0_37010102": big,
    })
    blocks = extract_blocks(data, "report.msg")
    assert blocks[0] == Block("Subject: Shelving caf\u00e9", "Shelving caf\u00e9")
    assert Block("See attached.", "Report") in blocks
    assert any(b.section == "Attachment: REPORT.DOCX" and "shelving inspection" in b.text
               for b in blocks)


def test_cfb_writer_output_opens_strictly_with_olefile() -> None:
    streams = {"small": b"s" * 100, "dir/big": bytes(range(256)) * 40, "dir/sub/tiny": b"t"}
    data = write_cfb(streams)
    with olefile.OleFileIO(io.BytesIO(data), raise_defects=olefile.DEFECT_INCORRECT) as ole:
        assert sorted("/".join(p) for p in ole.listdir()) == sorted(streams)
        for path, content in streams.items():
            assert ole.openstream(path).read() == content


# --- detection, corrupt input, bombs ------------------------------------------------------


@pytest.mark.parametrize("doc", samples.format_samples(), ids=lambda d: d.file_name)
def test_the_mime_type_alone_picks_the_extractor(doc: samples.SampleDocument) -> None:
    assert doc.topic_sentence in " ".join(extract_text(doc.data, "upload", doc.mime_type).split())


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


CORRUPT = [
    *((f"truncated{ext}", _sample(ext).data[: len(_sample(ext).data) // 2])
      for ext in (".pptx", ".xlsx", ".odt", ".epub")),
    *((f"foreign-zip{ext}", _zip({"hello.txt": b"hi"}))
      for ext in (".pptx", ".xlsx", ".odt", ".epub")),
    ("docx-renamed.pptx", samples.make_docx(["A Word file."])),
    ("docx-renamed.xlsx", samples.make_docx(["A Word file."])),
    ("bad-spine.epub", _zip({"META-INF/container.xml": b"<container/>"})),
    ("odt-bad-xml.odt", _zip({"META-INF/manifest.xml": b"<x", "content.xml": b"<x"})),
    ("not-rtf.rtf", b"plain words, no RTF header"),
    ("no-headers.eml", b"\x00\x01\x02\xff binary noise"),
    ("not-ole.msg", b"garbage " * 300),
    ("ole-not-msg.msg", write_cfb({"WordDocument": b"x" * 600})),
    ("malformed.xml", b"<a><b></a>"),
]


@pytest.mark.parametrize(("name", "data"), CORRUPT, ids=[name for name, _ in CORRUPT])
def test_corrupt_files_are_processing_errors(name: str, data: bytes) -> None:
    with pytest.raises(ProcessingError, match="corrupt or unreadable"):
        extract_blocks(data, name)


def test_a_truncated_msg_is_a_processing_error() -> None:
    """olefile reads what is left leniently: the streams are gone, so no text is found."""
    with pytest.raises(ProcessingError, match="no text could be extracted"):
        extract_blocks(_sample(".msg").data[:1536], "truncated.msg")


@pytest.mark.parametrize("extension", [".pptx", ".xlsx", ".odt", ".epub"])
def test_zip_bombs_are_rejected_by_the_zip_check(extension: str) -> None:
    """A real package plus a member declaring 2 MB, against a 1 MB unzipped limit."""
    source = zipfile.ZipFile(io.BytesIO(_sample(extension).data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            archive.writestr(info, source.read(info))
        archive.writestr("filler.xml", b"<a>" + b" " * 2_000_000 + b"</a>")
    with pytest.raises(ProcessingError, match="too large.*MAX_UNZIPPED_BYTES"):
        extract_blocks(out.getvalue(), f"bomb{extension}",
                       limits=ExtractLimits(max_unzipped_bytes=1_000_000))


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">
""" + b"".join(
    b'<!ENTITY lol%d "%s">\n' % (n, (b"&lol%d;" % (n - 1) if n > 1 else b"&lol;") * 10)
    for n in range(1, 10)) + b"]>\n<lolz><title>Laughs</title><body>&lol9;</body></lolz>"


def test_an_xml_entity_bomb_fails_quickly_as_a_processing_error() -> None:
    started = time.monotonic()
    with pytest.raises(ProcessingError, match="corrupt or unreadable XML: .*amplification"):
        extract_text(BILLION_LAUGHS, "bomb.xml")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(("extension", "member"), [
    (".pptx", "ppt/slides/slide1.xml"), (".xlsx", "xl/worksheets/sheet1.xml"),
    (".odt", "content.xml"), (".epub", "OEBPS/text/chapter1.xhtml")])
def test_an_entity_bomb_inside_a_package_is_never_expanded(extension: str, member: str) -> None:
    source = zipfile.ZipFile(io.BytesIO(_sample(extension).data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            archive.writestr(info, BILLION_LAUGHS if info.filename == member
                             else source.read(info))
    started = time.monotonic()
    if extension == ".epub":  # chapters are read as HTML, which has no DTD entities at all
        text = extract_text(out.getvalue(), f"bomb{extension}")
        assert "Laughs" in text and "lollol" not in text
    else:  # the library's own XML parser refuses it
        with pytest.raises(ProcessingError, match="corrupt or unreadable"):
            extract_blocks(out.getvalue(), f"bomb{extension}")
    assert time.monotonic() - started < 2


def test_xml_internal_entities_are_not_expanded() -> None:
    data = b'<!DOCTYPE r [<!ENTITY e "EXPANDED">]><r><a>kept</a><b>&e; and &e;</b></r>'
    assert extract_text(data, "e.xml").splitlines() == ["r.a: kept", "r.b: and"]


def test_xml_external_entities_are_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    data = (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
            f"<r><a>visible</a><b>&x;</b></r>").encode()
    text = extract_text(data, "xxe.xml")
    assert "TOP-SECRET-VALUE" not in text and "r.a: visible" in text


def test_the_failure_suggestion_lists_every_supported_extension() -> None:
    suggestion = " ".join(SUGGESTIONS["processing_error"].split())
    assert " ".join(SUPPORTED_EXTENSIONS) in suggestion
