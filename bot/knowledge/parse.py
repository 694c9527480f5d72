"""Documents (HTML, Markdown, plain text) parsed into a title and sections under their headings."""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from lxml import etree

from bot.knowledge.errors import DocumentError

DocumentKind = Literal["html", "markdown", "text"]

# git-config.html, among the largest manual pages there are, is 0.4 MB; a bigger file is almost surely
# not documentation (a log, a dump) and would flood the index.
MAX_DOCUMENT_BYTES = 5 * 1024 * 1024
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
TEXT_SUFFIXES = frozenset({".txt", ".text", ".rst", ".adoc", ""})
SUPPORTED_SUFFIXES = MARKDOWN_SUFFIXES | HTML_SUFFIXES | TEXT_SUFFIXES


@dataclass(frozen=True)
class Block:
    """A paragraph-like unit; a `term` (a definition list's term) belongs with the block after it."""

    text: str
    term: bool = False


@dataclass(frozen=True)
class Section:
    """The blocks under one heading; `heading` is "" before the first heading."""

    heading: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    sections: tuple[Section, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(block.text for section in self.sections for block in section.blocks)


def kind_of(name: str, content_type: str | None = None) -> DocumentKind | None:
    """The parser for a file name or a Content-Type; None for what the knowledge base does not read."""
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media in ("text/html", "application/xhtml+xml"):
            return "html"
        if media in ("text/markdown", "text/x-markdown"):
            return "markdown"
        if media == "text/plain":
            suffix = PurePosixPath(name).suffix.lower()
            return "markdown" if suffix in MARKDOWN_SUFFIXES else "text"
        return None
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in TEXT_SUFFIXES:
        return "text"
    return None


def decode(location: str, data: bytes, charset: str | None = None) -> str:
    """Text of a document's bytes; binary data or an oversized document is refused with the reason."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentError(location, f"too large ({len(data) / 1e6:.1f} MB; the limit is "
                                      f"{MAX_DOCUMENT_BYTES / 1e6:.0f} MB)")
    head = data[:8192]
    if b"\x00" in head:
        raise DocumentError(location, "binary data, not a text document")
    for candidate in (charset, "utf-8"):
        if candidate:
            try:
                codecs.lookup(candidate)
                return data.decode(candidate).removeprefix("\ufeff")
            except (LookupError, UnicodeDecodeError):
                continue
    text = data.decode("cp1252", errors="replace")
    controls = sum(1 for char in text[:8192] if ord(char) < 32 and char not in "\t\n\r\f")
    if controls > len(text[:8192]) * 0.05:
        raise DocumentError(location, "binary data, not a text document")
    return text


def parse(location: str, text: str, kind: DocumentKind) -> ParsedDocument:
    """Title and sections of a document; the title falls back to the file name."""
    if kind == "html":
        parsed = _parse_html(text)
    elif kind == "markdown":
        parsed = _parse_markdown(text)
    else:
        parsed = _parse_text(text)
    title = parsed.title or _name_title(location)
    sections = tuple(section for section in parsed.sections if section.blocks)
    return ParsedDocument(title=title, sections=sections)


def _name_title(location: str) -> str:
    stem = PurePosixPath(location.rstrip("/").split("?", 1)[0]).stem or location
    return stem.replace("_", " ").replace("-", " ").strip() or location


_SPACES = re.compile(r"\s+")


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


# --------------------------------------------------------------------------- HTML

_SKIPPED = frozenset({"head", "script", "style", "noscript", "template", "svg", "nav", "footer", "button",
                      "select", "iframe", "object", "canvas", "math"})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
                   "source", "track", "wbr"})
_BLOCKS = frozenset({"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "pre", "table", "tr", "td", "th",
                     "blockquote", "section", "article", "main", "header", "aside", "figure", "figcaption",
                     "br", "hr", "tbody", "thead", "caption", "details", "summary", "body", "html"})
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# Deeper headings stay inside their section: a passage per h5 would be a sentence.
_SECTION_LEVELS = 4


class _HTMLSections:
    """lxml parser target: collects visible text in blocks under the nearest heading."""

    def __init__(self) -> None:
        self.title = ""
        self.first_h1 = ""
        self.sections: list[tuple[str, list[Block], bool]] = []
        self._heading_path: list[tuple[int, str]] = []
        self._blocks: list[Block] = []
        self._buffer: list[str] = []
        self._skip_depth = 0
        self._skip_stack: list[str] = []
        self._in_title = False
        self._title_parts: list[str] = []
        self._heading_level = 0
        self._heading_parts: list[str] = []
        self._pre_depth = 0
        self._term = False
        self._main_depth = 0
        self._section_in_main = False
        self.has_main = False

    # -- tags

    def start(self, tag: str, attrs: Mapping[str, str]) -> None:
        tag = tag.lower()
        if tag in _VOID:
            if tag in ("br", "hr"):
                self._buffer.append("\n" if self._pre_depth else " ")
            return
        if tag == "title":
            self._in_title = True
            return
        if self._skip_depth:
            if tag in _SKIPPED:
                self._skip_stack.append(tag)
                self._skip_depth += 1
            return
        if tag in _SKIPPED:
            self._skip_stack.append(tag)
            self._skip_depth += 1
            return
        if tag in ("main", "article") or attrs.get("role") == "main":
            self._main_depth += 1
            self.has_main = True
        level = _HEADINGS.get(tag)
        if level is not None:
            self._flush()
            self._heading_level = level
            self._heading_parts = []
            return
        if tag == "pre":
            self._flush()
            self._pre_depth += 1
        elif tag in _BLOCKS:
            self._flush()
            self._term = tag == "dt"

    def end(self, tag: str) -> None:
        tag = tag.lower()
        if tag in _VOID and tag not in ("br", "hr"):
            return
        if tag == "title":
            self._in_title = False
            self.title = self.title or _collapse("".join(self._title_parts))
            return
        if self._skip_depth:
            if tag in self._skip_stack:
                while self._skip_stack:
                    self._skip_depth -= 1
                    if self._skip_stack.pop() == tag:
                        break
            return
        if tag in _HEADINGS and self._heading_level:
            self._start_section(self._heading_level, _collapse("".join(self._heading_parts)))
            self._heading_level = 0
            return
        if tag == "pre":
            self._flush()
            self._pre_depth = max(0, self._pre_depth - 1)
        elif tag in _BLOCKS:
            self._flush()
        if tag in ("main", "article") and self._main_depth:
            self._main_depth -= 1

    def data(self, data: str) -> None:
        if self._in_title:
            self._title_parts.append(data)
        elif self._skip_depth:
            return
        elif self._heading_level:
            self._heading_parts.append(data)
        else:
            self._buffer.append(data)

    # -- structure

    def _flush(self) -> None:
        raw = "".join(self._buffer)
        self._buffer = []
        text = _collapse_pre(raw) if self._pre_depth else _collapse(raw)
        if text:
            self._blocks.append(Block(text=text, term=self._term))
            self._section_in_main = self._section_in_main or self._main_depth > 0
        self._term = False

    def _start_section(self, level: int, heading: str) -> None:
        self._close_section()
        if level == 1 and not self.first_h1:
            self.first_h1 = heading
        while self._heading_path and self._heading_path[-1][0] >= level:
            self._heading_path.pop()
        if heading and level <= _SECTION_LEVELS:
            self._heading_path.append((level, heading))
        elif heading:
            self._blocks.append(Block(text=heading, term=True))

    def _close_section(self) -> None:
        self._flush()
        # The page title is the h1 in most sites: the sections below it need not repeat it.
        path = [text for level, text in self._heading_path if not (level == 1 and text == self.first_h1)]
        self.sections.append((" › ".join(path[-2:]), self._blocks, self._section_in_main))
        self._blocks = []
        self._section_in_main = self._main_depth > 0

    def close(self) -> None:
        if self._heading_level:
            self._start_section(self._heading_level, _collapse("".join(self._heading_parts)))
        self._close_section()


def _collapse_pre(text: str) -> str:
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    return "\n".join(lines).strip()


def _parse_html(text: str) -> ParsedDocument:
    parser = _HTMLSections()
    # libxml2's HTML parser (via lxml) recovers from broken markup like browsers do, and is fast; it is fed
    # UTF-8 bytes because it refuses str input that carries an encoding declaration.
    feeder = etree.HTMLParser(target=parser, encoding="utf-8", recover=True, no_network=True,
                              remove_comments=True, remove_pis=True)
    try:
        feeder.feed(text.encode("utf-8", errors="replace"))
        feeder.close()
    except etree.LxmlError:
        parser.close()
    sections: list[Section] = []
    for heading, blocks, in_main in parser.sections:
        if parser.has_main and not in_main:
            continue
        if sections and sections[-1].heading == heading:
            sections[-1] = Section(heading, sections[-1].blocks + tuple(blocks))
        else:
            sections.append(Section(heading, tuple(blocks)))
    title = parser.title or parser.first_h1
    return ParsedDocument(title=title, sections=tuple(sections))


# --------------------------------------------------------------------------- Markdown

_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_FRONT_MATTER_TITLE = re.compile(r"^title:\s*[\"']?(.*?)[\"']?\s*$", re.IGNORECASE)
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)|\[([^\]]+)\]\[[^\]]*\]")
_MD_REF = re.compile(r"^ {0,3}\[[^\]]+\]:\s+\S+.*$")
_MD_EMPHASIS = re.compile(r"(\*\*|__|(?<!\w)[*_](?=\S))|((?<=\S)[*_](?!\w))")
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


def _inline_markdown(text: str) -> str:
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(lambda m: m.group(1) or m.group(2), text)
    text = _HTML_TAG.sub(" ", text)
    return _MD_EMPHASIS.sub("", text)


def _parse_markdown(text: str) -> ParsedDocument:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    title = ""
    if lines and lines[0].strip() == "---":
        for end in range(1, min(len(lines), 200)):
            if lines[end].strip() in ("---", "..."):
                for line in lines[1:end]:
                    match = _FRONT_MATTER_TITLE.match(line)
                    if match:
                        title = match.group(1)
                lines = lines[end + 1 :]
                break
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    blocks: list[Block] = []
    paragraph: list[str] = []
    fence: str | None = None
    code: list[str] = []

    def flush() -> None:
        if paragraph:
            joined = _collapse(_inline_markdown(" ".join(paragraph)))
            if joined:
                blocks.append(Block(joined))
            paragraph.clear()

    def start(level: int, heading: str) -> None:
        nonlocal title, blocks
        flush()
        sections.append(Section(" › ".join(h for _, h in path[-2:]), tuple(blocks)))
        blocks = []
        if level == 1 and not title:
            title = heading
            path.clear()
            return
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading))

    for index, line in enumerate(lines):
        if fence is not None:
            if line.strip().startswith(fence):
                if code:
                    blocks.append(Block("\n".join(code).strip("\n")))
                code, fence = [], None
            else:
                code.append(line)
            continue
        fence_match = _FENCE.match(line)
        if fence_match:
            flush()
            fence = fence_match.group(1)
            continue
        atx = _ATX.match(line)
        if atx:
            start(len(atx.group(1)), _collapse(_inline_markdown(atx.group(2))))
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if paragraph == [] and line.strip() and _SETEXT.match(following) and not _LIST_ITEM.match(line):
            start(1 if following.strip().startswith("=") else 2, _collapse(_inline_markdown(line)))
            continue
        if _SETEXT.match(line) and not paragraph and sections and not blocks:
            continue
        if not line.strip() or _MD_REF.match(line):
            flush()
            continue
        if _LIST_ITEM.match(line):
            flush()
        paragraph.append(line.strip())
    if code:
        blocks.append(Block("\n".join(code).strip("\n")))
    flush()
    sections.append(Section(" › ".join(h for _, h in path[-2:]), tuple(blocks)))
    return ParsedDocument(title=title, sections=tuple(sections))


# --------------------------------------------------------------------------- plain text


def _parse_text(text: str) -> ParsedDocument:
    paragraphs = [_collapse(part) for part in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    paragraphs = [part for part in paragraphs if part]
    title = ""
    if paragraphs and len(paragraphs[0]) <= 100 and "\n" not in text.strip().split("\n\n", 1)[0]:
        title = paragraphs.pop(0)
    return ParsedDocument(title=title, sections=(Section("", tuple(Block(p) for p in paragraphs)),))
