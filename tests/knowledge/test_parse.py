"""Documents into titled sections and passages: HTML (broken too), Markdown, text; junk refused with a reason."""

from __future__ import annotations

import pytest

from bot.knowledge.chunk import MAX_PASSAGE_CHARS, passages
from bot.knowledge.errors import DocumentError
from bot.knowledge.parse import MAX_DOCUMENT_BYTES, decode, kind_of, parse
from tests.knowledge.conftest import DOCS


def test_html_keeps_title_and_headings_and_drops_scripts_styles_and_navigation() -> None:
    document = parse("sync.html", DOCS["guides/sync.html"], "html")
    assert document.title == "Sync across devices"
    headings = [section.heading for section in document.sections]
    assert headings == ["", "Resolving a sync conflict", "Offline mode"]
    text = document.text
    assert "conflict copy" in text and "Home | Guides" not in text and "tracking" not in text
    assert "color: red" not in text and "© Quillpad" not in text


def test_broken_html_still_gives_its_text() -> None:
    broken = ("<html><head><title>Half a page</title><body></div><h2 class=x>Setup</h3><p>Install the <b>app "
              "<div><p>then sign in<table><tr><td>cell</p></span>")
    document = parse("broken.html", broken, "html")
    assert document.title == "Half a page"
    assert [section.heading for section in document.sections] == ["Setup"]
    assert "Install the app" in document.text and "then sign in" in document.text and "cell" in document.text


def test_markdown_sections_front_matter_title_links_and_code_fences() -> None:
    text = ("---\ntitle: Deploying\n---\nIntro with a [link](https://example.com) and **bold**.\n\n"
            "## Steps\n\n```sh\n# not a heading\nquill deploy --prod\n```\n\nSetext heading\n---\n\nLast words.\n")
    document = parse("deploy.md", text, "markdown")
    assert document.title == "Deploying"
    assert [s.heading for s in document.sections] == ["", "Steps", "Setext heading"]
    assert document.sections[0].blocks[0].text == "Intro with a link and bold."
    assert document.sections[1].blocks[0].text == "# not a heading\nquill deploy --prod"


def test_first_markdown_h1_is_the_title_and_text_files_take_their_first_line() -> None:
    assert parse("refunds.md", DOCS["billing/refunds.md"], "markdown").title == "Refunds and invoices"
    assert parse("export.txt", DOCS["guides/export.txt"], "text").title == "Exporting notes"
    assert parse("notes-on_setup.txt", "one long paragraph " * 20, "text").title == "notes on setup"


def test_passages_keep_title_and_heading_and_split_long_sections_at_block_boundaries() -> None:
    paragraphs = "\n\n".join(f"Paragraph {i}: " + "words that go on " * 12 for i in range(12))
    document = parse("long.md", f"# Long page\n\n## Big section\n\n{paragraphs}\n", "markdown")
    drafts = passages(document)
    assert len(drafts) > 2
    assert all(d.title == "Long page" and d.heading == "Big section" for d in drafts)
    assert all(len(d.text) <= MAX_PASSAGE_CHARS for d in drafts)
    assert all(d.text.startswith("Paragraph") for d in drafts)
    assert [d.position for d in drafts] == list(range(len(drafts)))


def test_a_definition_term_stays_with_its_definition() -> None:
    items = "".join(f"<dt>--option-{i}</dt><dd><p>{'Explains the option at length. ' * 6}</p></dd>" for i in range(8))
    drafts = passages(parse("options.html", f"<h2>OPTIONS</h2><dl>{items}</dl>", "html"))
    assert len(drafts) > 1
    assert all(not d.text.rstrip().split("\n")[-1].startswith("--option") for d in drafts)


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", bytes(range(256)) * 40])
def test_binary_data_is_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(DocumentError, match="binary"):
        decode("logo.md", data)


def test_a_huge_document_is_refused_with_its_size() -> None:
    with pytest.raises(DocumentError, match="too large"):
        decode("dump.txt", b"a" * (MAX_DOCUMENT_BYTES + 1))


def test_declared_charset_and_latin1_text_decode() -> None:
    assert decode("cafe.txt", "café".encode("latin-1"), "iso-8859-1") == "café"
    assert decode("cafe.txt", "café".encode("cp1252")) == "café"


def test_kinds_by_name_and_content_type() -> None:
    assert kind_of("a/b/guide.MD") == "markdown" and kind_of("x.htm") == "html" and kind_of("notes.txt") == "text"
    assert kind_of("photo.png") is None
    assert kind_of("/docs/page", "text/html; charset=utf-8") == "html"
    assert kind_of("/docs/readme.md", "text/plain") == "markdown"
    assert kind_of("/file", "application/octet-stream") is None
