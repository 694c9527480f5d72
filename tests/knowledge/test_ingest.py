"""Adding and syncing sources on SQLite and PostgreSQL: no duplicates, only changes re-indexed, bad files skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.knowledge.errors import SourceError
from bot.knowledge.parse import MAX_DOCUMENT_BYTES
from bot.knowledge.service import DirectDocument, KnowledgeBase
from tests.knowledge.conftest import DOCS, INJECTION


async def counts(kb: KnowledgeBase) -> dict[str, tuple[int, int]]:
    return {s.name: (s.documents, s.passages) for s in await kb.sources()}


async def test_adding_a_folder_indexes_every_supported_file(kb: KnowledgeBase, docs: Path) -> None:
    (docs / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (docs / ".git").mkdir()
    (docs / ".git" / "HEAD.md").write_text("# not docs")
    report = await kb.add([str(docs)], name="handbook")
    assert (report.added, report.errors) == (len(DOCS), [])
    [source] = await kb.sources()
    assert (source.name, source.kind, source.documents, source.routes) == ("handbook", "files", len(DOCS), [])
    assert source.passages >= len(DOCS) and source.last_sync_at is not None


async def test_adding_the_same_docs_again_never_duplicates(kb: KnowledgeBase, docs: Path) -> None:
    await kb.add([str(docs)], name="handbook")
    before = await counts(kb)
    again = await kb.add([str(docs)], name="handbook")
    also = await kb.add([str(docs / "guides")], name="handbook")
    assert (again.added, again.updated, again.unchanged) == (0, 0, len(DOCS))
    assert (also.added, also.updated) == (0, 0)
    assert await counts(kb) == before
    hits = (await kb.search("how do I get a refund", min_score=0.0, limit=10)).hits
    assert [hit.source for hit in hits].count(str(docs / "billing" / "refunds.md")) == 1


async def test_sync_reindexes_only_what_changed_and_drops_what_disappeared(kb: KnowledgeBase, docs: Path) -> None:
    await kb.add([str(docs)], name="handbook")
    (docs / "guides" / "export.txt").write_text("Exporting notes\n\nExports now support the EPUB format.\n")
    (docs / "security" / "two-factor.md").unlink()
    (docs / "guides" / "shortcuts.md").write_text("# Keyboard shortcuts\n\nPress Ctrl+K to search every notebook.\n")
    [report] = await kb.sync("handbook")
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, len(DOCS) - 2)
    assert (await counts(kb))["handbook"][0] == len(DOCS)
    found = await kb.search("can I export to epub", min_score=0.0)
    assert found.hits[0].source.endswith("export.txt") and "EPUB" in found.hits[0].text
    lost = await kb.search("recovery codes for two-factor authentication", min_score=0.0, limit=10)
    assert all("two-factor" not in hit.source for hit in lost.ranked)


async def test_bad_files_are_reported_with_their_path_and_the_rest_is_indexed(kb: KnowledgeBase, docs: Path) -> None:
    junk = docs / "guides" / "corrupt.md"
    junk.write_bytes(bytes(range(256)) * 64)
    huge = docs / "huge.txt"
    huge.write_bytes(b"word " * (MAX_DOCUMENT_BYTES // 5 + 10))
    empty = docs / "empty.md"
    empty.write_text("   \n")
    report = await kb.add([str(docs)], name="handbook")
    reasons = {error["location"]: error["error"] for error in report.errors}
    assert set(reasons) == {str(junk), str(huge), str(empty)}
    assert "binary" in reasons[str(junk)] and "too large" in reasons[str(huge)] and "empty" in reasons[str(empty)]
    assert report.added == len(DOCS)
    [source] = await kb.sources()
    assert source.documents == len(DOCS) and len(source.errors) == 3


async def test_a_document_that_cannot_be_read_this_time_is_kept(kb: KnowledgeBase, docs: Path) -> None:
    await kb.add([str(docs)], name="handbook")
    (docs / "billing" / "refunds.md").write_bytes(b"\x00\x01binary now")
    [report] = await kb.sync("handbook")
    assert report.errors and report.removed == 0
    still = await kb.search("refund within 14 days", min_score=0.0)
    assert still.hits[0].source.endswith("refunds.md")


async def test_prompt_injection_in_a_page_is_stored_as_plain_text(kb: KnowledgeBase, tmp_path: Path) -> None:
    page = tmp_path / "faq.html"
    page.write_text(f"<html><head><title>FAQ</title></head><body><h2>Setup</h2><p>{INJECTION.replace('<', '&lt;')}"
                    "</p><p>Install the desktop app.</p></body></html>")
    await kb.add([str(page)], name="faq")
    result = await kb.search("ignore previous instructions developer mode", min_score=0.0)
    assert INJECTION in result.hits[0].text


async def test_remove_deletes_a_source_and_its_passages(kb: KnowledgeBase, docs: Path) -> None:
    await kb.add([str(docs / "billing")], name="billing")
    await kb.add([str(docs / "guides")], name="guides")
    await kb.remove("billing")
    assert list(await counts(kb)) == ["guides"]
    result = await kb.search("refund within 14 days", min_score=0.0, limit=10)
    assert all(hit.source_name == "guides" for hit in result.ranked)
    with pytest.raises(SourceError, match="no knowledge source named 'billing'"):
        await kb.remove("billing")


async def test_bad_locations_names_and_routes_are_refused_clearly(kb: KnowledgeBase, docs: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        await kb.add([str(docs / "missing")])
    with pytest.raises(SourceError, match="not a valid source name"):
        await kb.add([str(docs)], name="bad name!")
    with pytest.raises(SourceError, match="unknown route"):
        await kb.add([str(docs)], name="handbook", routes=["refunds"])
    with pytest.raises(SourceError, match="no knowledge source named"):
        await kb.sync("nothing")
    assert await kb.sources() == []


async def test_texts_given_directly_are_searchable_replaceable_and_cited_by_link(kb: KnowledgeBase) -> None:
    answer = DirectDocument(link="https://support.example.com/answers/17", title="Moving notebooks between teams",
                            text="Export the notebook, then import it from the other team's workspace.")
    first = await kb.index_documents("answers", [answer])
    again = await kb.index_documents("answers", [answer])
    assert (first.added, again.unchanged) == (1, 1)
    found = await kb.search("how do I move a notebook to another team", min_score=0.0)
    assert found.hits[0].source == answer.link and found.hits[0].title == answer.title
    assert found.hits[0].source_name == "answers"
    changed = DirectDocument(link=answer.link, title=answer.title, text="Use Move to team in the notebook menu.")
    assert (await kb.index_documents("answers", [changed])).updated == 1
    assert await kb.remove_documents("answers", [answer.link]) == 1
    assert (await counts(kb))["answers"] == (0, 0)
    with pytest.raises(SourceError, match="nothing to fetch"):
        await kb.sync("answers")
