"""Reading documents from their locations: files and folders on disk, web pages and sitemaps over HTTP.

HTTP is bounded and polite: a User-Agent that says who we are, robots.txt honoured, a few requests at a
time, timeouts, a size cap read as the body streams in, and a limit on redirects.
"""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import aiohttp

from bot.knowledge.errors import SourceError
from bot.knowledge.parse import MAX_DOCUMENT_BYTES, SUPPORTED_SUFFIXES, DocumentKind, kind_of

USER_AGENT = "supportbot-kb/0.1 (knowledge base indexer; +https://github.com/supportbot)"
CONCURRENCY = 4
TIMEOUT_S = 20.0
MAX_REDIRECTS = 5
MAX_SITEMAP_URLS = 5000
MAX_SITEMAP_DEPTH = 3
MAX_FOLDER_FILES = 20_000


@dataclass(frozen=True)
class Fetched:
    """A document's bytes, where they came from, and how to read them."""

    location: str
    data: bytes
    kind: DocumentKind
    charset: str | None = None


@dataclass(frozen=True)
class Failed:
    """A document that could not be read; its location is kept so that sync does not drop what it had."""

    location: str
    reason: str


def is_url(location: str) -> bool:
    return urlsplit(location).scheme in ("http", "https")


def normalize_location(location: str) -> str:
    """URLs as given (without a fragment); paths made absolute, so a source syncs from any directory."""
    if is_url(location):
        return urldefrag(location.strip())[0]
    return str(Path(location).expanduser().resolve())


async def read_locations(locations: Sequence[str]) -> AsyncIterator[Fetched | Failed]:
    """Every document under `locations`, in order; unreadable ones as Failed. Raises SourceError when a
    location itself is missing (a path that does not exist, a URL that is not http(s))."""
    web: list[str] = []
    for location in locations:
        if is_url(location):
            web.append(location)
            continue
        path = Path(location)
        if not await asyncio.to_thread(path.exists):
            raise SourceError(f"{location}: no such file or folder")
        for item in await asyncio.to_thread(_files_under, path):
            yield await asyncio.to_thread(_read_file, item)
    if web:
        async with WebReader() as reader:
            async for result in reader.read(web):
                yield result


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    found: list[Path] = []
    for root, folders, files in os.walk(path):
        # Hidden folders (.git, .venv) are never documentation.
        folders[:] = sorted(folder for folder in folders if not folder.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_SUFFIXES - {""}:
                found.append(Path(root) / name)
                if len(found) >= MAX_FOLDER_FILES:
                    return found
    return found


def _read_file(path: Path) -> Fetched | Failed:
    location = str(path)
    kind = kind_of(path.name)
    if kind is None:
        return Failed(location, f"unsupported file type {path.suffix!r} (Markdown, HTML and text are read)")
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            return Failed(location, f"too large ({size / 1e6:.1f} MB; the limit is {MAX_DOCUMENT_BYTES / 1e6:.0f} MB)")
        return Fetched(location, path.read_bytes(), kind)
    except OSError as exc:
        return Failed(location, f"cannot read: {exc.strerror or exc}")


class WebReader:
    """An HTTP client session for one sync: shared connections, robots.txt cached per host."""

    def __init__(self, *, concurrency: int = CONCURRENCY, timeout_s: float = TIMEOUT_S) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(10.0, timeout_s))
        self._limit = asyncio.Semaphore(concurrency)
        self._robots: dict[str, RobotFileParser | None] = {}
        self._robots_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> WebReader:
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers={"User-Agent": USER_AGENT},
                                              connector=aiohttp.TCPConnector(limit=CONCURRENCY * 2))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def read(self, urls: Sequence[str]) -> AsyncIterator[Fetched | Failed]:
        pages: list[str] = []
        for url in urls:
            if _looks_like_sitemap(url):
                found = await self._sitemap(url, depth=0)
                if isinstance(found, Failed):
                    yield found
                    continue
                pages.extend(found)
            else:
                pages.append(url)
        tasks = [asyncio.ensure_future(self._page(url)) for url in dict.fromkeys(pages)]
        try:
            for task in tasks:
                yield await task
        finally:
            for task in tasks:
                task.cancel()

    async def _page(self, url: str) -> Fetched | Failed:
        got = await self._get(url)
        if isinstance(got, Failed):
            return got
        data, content_type, charset = got
        kind = kind_of(urlsplit(url).path, content_type)
        if kind is None:
            return Failed(url, f"unsupported content type {content_type!r}")
        return Fetched(url, data, kind, charset)

    async def _sitemap(self, url: str, depth: int) -> list[str] | Failed:
        got = await self._get(url)
        if isinstance(got, Failed):
            return got
        try:
            root = ElementTree.fromstring(got[0])
        except ElementTree.ParseError as exc:
            return Failed(url, f"not a valid sitemap: {exc}")
        locations = [element.text.strip() for element in root.iter() if element.tag.endswith("loc") and element.text]
        locations = [urljoin(url, loc) for loc in locations if is_url(urljoin(url, loc))][:MAX_SITEMAP_URLS]
        if not root.tag.endswith("sitemapindex"):
            return locations
        if depth + 1 >= MAX_SITEMAP_DEPTH:
            return Failed(url, "sitemap indexes nested too deep")
        pages: list[str] = []
        for child in locations:
            found = await self._sitemap(child, depth + 1)
            if isinstance(found, list):
                pages.extend(found)
            if len(pages) >= MAX_SITEMAP_URLS:
                break
        return pages[:MAX_SITEMAP_URLS]

    async def _allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        async with self._robots_lock:
            if origin not in self._robots:
                self._robots[origin] = await self._fetch_robots(origin)
        robots = self._robots[origin]
        return robots is None or robots.can_fetch(USER_AGENT, url)

    async def _fetch_robots(self, origin: str) -> RobotFileParser | None:
        assert self._session is not None
        try:
            async with self._limit, self._session.get(origin + "/robots.txt", max_redirects=MAX_REDIRECTS) as reply:
                if reply.status >= 400:
                    return None
                body = await _read_capped(reply, 512 * 1024) or b""
        except (aiohttp.ClientError, TimeoutError):
            return None
        parser = RobotFileParser()
        # A truncated robots.txt still gives its first rules; a missing one (404) allows everything.
        parser.parse(body.decode("utf-8", errors="replace").splitlines())
        return parser

    async def _get(self, url: str) -> tuple[bytes, str | None, str | None] | Failed:
        assert self._session is not None
        if not await self._allowed(url):
            return Failed(url, "disallowed by the site's robots.txt")
        try:
            async with self._limit, self._session.get(url, max_redirects=MAX_REDIRECTS) as reply:
                if reply.status >= 400:
                    return Failed(url, f"HTTP {reply.status}")
                if not is_url(str(reply.url)):
                    return Failed(url, f"redirected to {reply.url}, which is not http(s)")
                declared = reply.content_length
                if declared is not None and declared > MAX_DOCUMENT_BYTES:
                    return Failed(url, f"too large ({declared / 1e6:.1f} MB; the limit is "
                                       f"{MAX_DOCUMENT_BYTES / 1e6:.0f} MB)")
                data = await _read_capped(reply, MAX_DOCUMENT_BYTES)
                if data is None:
                    return Failed(url, f"too large (over {MAX_DOCUMENT_BYTES / 1e6:.0f} MB)")
                return data, reply.headers.get("Content-Type"), reply.charset
        except aiohttp.TooManyRedirects:
            return Failed(url, f"more than {MAX_REDIRECTS} redirects")
        except TimeoutError:
            return Failed(url, f"no complete answer within {self._timeout.total:g} s")
        except aiohttp.ClientError as exc:
            return Failed(url, f"cannot fetch: {type(exc).__name__}: {exc}")


async def _read_capped(reply: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The body as it streams in, or None as soon as it passes `cap` bytes (whatever Content-Length said)."""
    body = bytearray()
    async for chunk in reply.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > cap:
            return None
    return bytes(body)


def _looks_like_sitemap(url: str) -> bool:
    path = urlsplit(url).path.lower()
    return path.endswith(".xml") and "sitemap" in path.rsplit("/", 1)[-1]

