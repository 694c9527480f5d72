"""Passages cut from a parsed document: sections by heading, long ones split at block boundaries."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bot.knowledge.parse import Block, ParsedDocument

# Long enough to hold an answer with its context, short enough that a prompt can carry several and that
# one relevant paragraph is not drowned in a long section when ranked.
MAX_PASSAGE_CHARS = 1200
# A block longer than a passage (a long listing) is cut at a line or word boundary.
MIN_CUT_CHARS = MAX_PASSAGE_CHARS // 2
MAX_TITLE_CHARS = 300
MAX_HEADING_CHARS = 300


@dataclass(frozen=True)
class PassageDraft:
    """A passage before it is stored: the page title and heading stay with its text."""

    title: str
    heading: str
    text: str
    position: int


def passages(document: ParsedDocument) -> list[PassageDraft]:
    """The document's passages in reading order, numbered from 0."""
    title = document.title[:MAX_TITLE_CHARS]
    drafts: list[PassageDraft] = []
    for section in document.sections:
        heading = section.heading[:MAX_HEADING_CHARS]
        for text in _pack(section.blocks):
            drafts.append(PassageDraft(title=title, heading=heading, text=text, position=len(drafts)))
    return drafts


def _pack(blocks: tuple[Block, ...]) -> Iterator[str]:
    """Blocks joined into passages of at most MAX_PASSAGE_CHARS; a term is never left at a passage's end."""
    current: list[str] = []
    size = 0
    for index, block in enumerate(blocks):
        for piece in _cut(block.text):
            if current and size + len(piece) > MAX_PASSAGE_CHARS and not _ends_with_term(current, blocks, index):
                yield "\n\n".join(current)
                current, size = [], 0
            current.append(piece)
            size += len(piece) + 2
    if current:
        yield "\n\n".join(current)


def _ends_with_term(current: list[str], blocks: tuple[Block, ...], index: int) -> bool:
    """True when the block just before `index` is a term that must stay with this block."""
    return index > 0 and blocks[index - 1].term and current[-1] == blocks[index - 1].text


def _cut(text: str) -> Iterator[str]:
    """The text in pieces of at most MAX_PASSAGE_CHARS, cut after a line or a word where possible."""
    while len(text) > MAX_PASSAGE_CHARS:
        window = text[:MAX_PASSAGE_CHARS]
        cut = window.rfind("\n", MIN_CUT_CHARS)
        if cut < 0:
            cut = window.rfind(". ", MIN_CUT_CHARS) + 1
        if cut <= 0:
            cut = window.rfind(" ", MIN_CUT_CHARS)
        if cut <= 0:
            cut = MAX_PASSAGE_CHARS
        yield text[:cut].strip()
        text = text[cut:].strip()
    if text:
        yield text
