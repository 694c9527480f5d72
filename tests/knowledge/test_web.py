"""Web pages and sitemaps from a local HTTP server: polite, bounded, and every failure reported by URL."""

from __future__ import annotations

from bot.knowledge.fetch import USER_AGENT
from bot.knowledge.service import KnowledgeBase
from tests.knowledge.conftest import DOCS, DocsSite


def sitemap(*urls: str, index: bool = False) -> str:
    tag, item = ("sitemapindex", "sitemap") if index else ("urlset", "url")
    body = "".join(f"<{item}><loc>{url}</loc></{item}>" for url in urls)
    return f'<?xml version="1.0" encoding="UTF-8"?><{tag} xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</{tag}>'


async def test_a_web_page_is_indexed_and_cited_by_its_url(kb: KnowledgeBase, site: DocsSite) -> None:
    url = site.page("/guides/sync", DOCS["guides/sync.html"])
    report = await kb.add([url], name="site")
    assert (report.added, report.errors) == (1, [])
    result = await kb.search("resolve a sync conflict copy", min_score=0.0)
    assert result.hits[0].source == url and result.hits[0].title == "Sync across devices"
    assert all(agent == USER_AGENT for _, agent in site.requests)
    [source] = await kb.sources()
    assert (source.kind, source.locations) == ("web", [url])


async def test_a_sitemap_index_brings_every_page_and_robots_txt_is_honoured(kb: KnowledgeBase, site: DocsSite) -> None:
    sync = site.page("/guides/sync", DOCS["guides/sync.html"])
    refunds = site.page("/billing/refunds.md", DOCS["billing/refunds.md"], "text/markdown")
    secret = site.page("/private/roadmap", "<h1>Roadmap</h1><p>Unreleased plans.</p>")
    pages = site.page("/sitemap-pages.xml", sitemap(sync, refunds, secret), "application/xml")
    root = site.page("/sitemap.xml", sitemap(pages, index=True), "application/xml")
    report = await kb.add([root], name="site")
    assert report.added == 2
    assert report.errors == [{"location": secret, "error": "disallowed by the site's robots.txt"}]
    assert "/private/roadmap" not in [path for path, _ in site.requests]
    result = await kb.search("refund within 14 days", min_score=0.0)
    assert result.hits[0].source == refunds


async def test_sync_follows_changes_on_the_site(kb: KnowledgeBase, site: DocsSite) -> None:
    url = site.page("/guides/sync", DOCS["guides/sync.html"])
    gone = site.page("/guides/old", "<h1>Old page</h1><p>Legacy importer for Evernote files.</p>")
    await kb.add([url, gone], name="site")
    site.page("/guides/sync", DOCS["guides/sync.html"].replace("both versions", "both versions for 30 days"))
    del site.pages["/guides/old"]
    [report] = await kb.sync("site")
    assert (report.updated, report.unchanged, report.removed) == (1, 0, 0)
    assert report.errors == [{"location": gone, "error": "HTTP 404"}]
    [again] = await kb.sync("site")
    assert (again.updated, again.unchanged) == (0, 1)


async def test_redirects_are_followed_and_loops_huge_pages_and_binary_types_reported(
    kb: KnowledgeBase, site: DocsSite
) -> None:
    target = site.page("/export", DOCS["guides/export.txt"], "text/plain")
    image = site.page("/logo.png", "\x89PNG", "image/png")
    moved = f"{site.url}/redirect/export"
    report = await kb.add([moved, f"{site.url}/loop", f"{site.url}/huge.html", image], name="site")
    reasons = {error["location"]: error["error"] for error in report.errors}
    assert report.added == 1
    assert "redirects" in reasons[f"{site.url}/loop"]
    assert "too large" in reasons[f"{site.url}/huge.html"]
    assert "unsupported content type" in reasons[image]
    result = await kb.search("export a notebook as markdown", min_score=0.0)
    assert result.hits[0].source == moved and target.endswith("/export")


async def test_an_unreachable_site_is_reported_and_keeps_what_was_indexed(kb: KnowledgeBase, site: DocsSite) -> None:
    url = site.page("/guides/sync", DOCS["guides/sync.html"])
    await kb.add([url], name="site")
    site.pages.clear()
    site.robots = ""
    [report] = await kb.sync("site")
    assert report.errors and report.removed == 0
    assert (await kb.search("sync conflict", min_score=0.0)).hits[0].source == url
